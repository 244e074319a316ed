/*
 * test_textbuf - a line appended piece by piece: numbers as printf would
 * write them, seconds with three decimals, and a piece that does not fit
 * left out whole with nothing after it
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "t.h"
#include "textbuf.h"

static void
test_numbers_as_printf_writes_them(void)
{
	static const long long vals[] = { 0, 7, -1, 10, 999, -1000, 1234567890123LL,
		INT64_MAX, INT64_MIN };
	char buf[64], want[64];

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		struct textbuf b = TEXTBUF(buf, sizeof(buf));

		tb_ll(&b, vals[i]);
		snprintf(want, sizeof(want), "%lld", vals[i]);
		T_CHECKF(b.n == strlen(want) && memcmp(buf, want, b.n) == 0, "%lld: %.*s", vals[i],
		    (int)b.n, buf);
	}
}

static void
test_seconds_with_three_decimals(void)
{
	static const struct {
		uint64_t ms;
		const char *want;
	} cases[] = {
		{ 0, "0.000" }, { 5, "0.005" }, { 40, "0.040" }, { 999, "0.999" },
		{ 1000, "1.000" }, { 1234, "1.234" }, { 3600001, "3600.001" },
	};
	char buf[32];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct textbuf b = TEXTBUF(buf, sizeof(buf));

		tb_secs(&b, cases[i].ms);
		T_CHECKF(b.n == strlen(cases[i].want) && memcmp(buf, cases[i].want, b.n) == 0,
		    "%llu ms: %.*s", (unsigned long long)cases[i].ms, (int)b.n, buf);
	}
}

static void
test_piece_that_does_not_fit_ends_the_line(void)
{
	char buf[10];
	struct textbuf b = TEXTBUF(buf, sizeof(buf));

	tb_str(&b, "abc ");
	tb_str(&b, "defghijk");	/* 12 > 10: left out whole */
	tb_str(&b, "x");	/* and nothing after it */
	T_CHECK(b.full);
	T_CHECK(b.n == 4 && memcmp(buf, "abc ", 4) == 0);
	b = (struct textbuf)TEXTBUF(buf, sizeof(buf));
	tb_str(&b, "0123456789");	/* exactly the room */
	T_CHECK(!b.full && b.n == 10);
}

int
main(void)
{
	T_RUN(test_numbers_as_printf_writes_them);
	T_RUN(test_seconds_with_three_decimals);
	T_RUN(test_piece_that_does_not_fit_ends_the_line);
	return T_DONE("test_textbuf");
}
