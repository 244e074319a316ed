// sources: filters/authres.c
/*
 * fuzz_authres - moat's Authentication-Results renderer and the check
 * for forged fields (filters/authres.c)
 *
 * Input: split at the first two NUL bytes into a HELO value, a MAIL FROM
 * value and the rest; the rest is also read as an incoming field.
 * Properties, each an abort() when violated:
 *   - authres_field_is_ours / authres_is_ours never read out of bounds
 *     and agree: a field is ours only if its value is;
 *   - the rendered field has no NUL, and every CR is a CRLF followed by
 *     a TAB (a fold: no value can end the field or start another);
 *   - outside quoted strings and comments it holds exactly one ';' per
 *     result set (no value adds a result set);
 *   - no line reaches 998 octets;
 *   - the rendered field is recognised as ours, and not as someone
 *     else's.
 */
#include "authres.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define ID "mx.moat.test"

static void
check_rendered(const char *out, size_t n, int nsets)
{
	bool q = false;
	int depth = 0, semis = 0;
	size_t line = 0;

	if (strlen(out) != n)
		abort();
	for (size_t i = 0; i < n; i++) {
		char c = out[i];
		if (c == '\r') {
			if (i + 2 >= n || out[i + 1] != '\n' || out[i + 2] != '\t')
				abort();
			line = 0;
			i++;
			continue;
		}
		if (c == '\n')
			abort();
		if (++line >= 998)
			abort();
		if (q) {
			if (c == '\\')
				i++;
			else if (c == '"')
				q = false;
			continue;
		}
		if (depth > 0) {
			if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (c == '"')
			q = true;
		else if (c == '(')
			depth++;
		else if (c == ';')
			semis++;
	}
	if (q || depth != 0 || semis != nsets)
		abort();
	if (!authres_is_ours(out, n, ID) || authres_is_ours(out, n, "mx.other.test"))
		abort();
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	const char *s = (const char *)data, *z1, *z2;
	const char *helo = s, *from = "", *rest = "";
	size_t hl = size, fl = 0, rl = 0;
	struct authres a;
	static char out[65536];
	size_t n;
	int i;

	if ((z1 = memchr(s, '\0', size)) != NULL) {
		hl = (size_t)(z1 - s);
		from = z1 + 1;
		fl = size - hl - 1;
		if ((z2 = memchr(from, '\0', fl)) != NULL) {
			rest = z2 + 1;
			rl = fl - (size_t)(z2 - from) - 1;
			fl = (size_t)(z2 - from);
		}
	}
	if (authres_field_is_ours(s, size, ID) &&
	    !(size > 22 && memchr(s, ':', size) != NULL))
		abort();
	(void)authres_is_ours(rest, rl, ID);

	authres_init(&a);
	i = authres_add(&a, "spf", "pass", NULL);
	(void)authres_prop(&a, i, "smtp.helo", helo, hl);
	(void)authres_prop(&a, i, "smtp.mailfrom", from, fl);
	i = authres_add(&a, "dkim", "fail", "a reason; with \"quotes\"");
	(void)authres_prop(&a, i, "header.d", rest, rl);
	(void)authres_comment(&a, i, "(nested) comment\\");
	n = authres_render(&a, ID, "\r\n", out, sizeof out);
	if (n == 0)
		abort();	/* values are capped: it always fits */
	check_rendered(out, n, a.n);
	return 0;
}
