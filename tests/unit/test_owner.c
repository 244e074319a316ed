/*
 * test_owner - login maps, header From mailboxes (filters/owner.c) and the
 * SASL helpers (proxy/sasl.c)
 */
#include <string.h>

#include "owner.h"
#include "sasl.h"
#include "t.h"

static struct owner_map *
map_of(const char *const *words)
{
	struct owner_map *m = owner_map_new();
	char err[300];

	for (int i = 0; words[i]; i++)
		if (owner_map_add_word(m, words[i], strlen(words[i]), err, sizeof(err)) != 0)
			fprintf(stderr, "add %s: %s\n", words[i], err);
	return m;
}

static bool
owns(const struct owner_map *m, const char *login, const char *addr)
{
	const char *at = strrchr(addr, '@');
	return owner_map_owns(m, login, strlen(login), addr, (size_t)(at - addr), at + 1, strlen(at + 1));
}

static void
test_map(void)
{
	static const char *const w[] = { "alice:", "alice@example.org", "alice+*@example.org",
		"=sales", "bob@x.test:", "%l", "@example.net", "sales:", "sales@example.org",
		"*:", "%u@users.example.org", "dave:", "dave@", NULL };
	struct owner_map *m = map_of(w);
	static const struct { const char *login, *addr; bool ok; } cases[] = {
		{ "alice", "alice@example.org", true }, { "ALICE", "Alice@EXAMPLE.org", true },
		{ "alice", "alice+x@example.org", true }, { "alice", "alice+@example.org", true },
		{ "alice", "alicex@example.org", false }, { "alice", "sales@example.org", true },
		{ "alice", "alice@users.example.org", true }, { "alice", "bob@example.org", false },
		{ "bob@x.test", "bob@x.test", true }, { "bob@x.test", "z@example.net", true },
		{ "bob@x.test", "z@sub.example.net", false }, { "bob@x.test", "bob@users.example.org", true },
		{ "sales", "alice@example.org", false }, { "dave", "dave@anything.test", true },
		{ "eve", "eve@users.example.org", true }, { "eve", "eve@example.org", false },
		{ "alice", "alice@example.org.", true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		T_CHECKF(owns(m, cases[i].login, cases[i].addr) == cases[i].ok, "%s %s",
		    cases[i].login, cases[i].addr);
	owner_map_free(m);
}

static void
test_map_errors(void)
{
	struct owner_map *m = owner_map_new();
	char err[300];

	T_CHECK(owner_map_add_word(m, "x@y", 3, err, sizeof(err)) != 0);	/* no login yet */
	T_CHECK(owner_map_add_word(m, "a:", 2, err, sizeof(err)) == 0);
	T_CHECK(owner_map_add_word(m, "A:", 2, err, sizeof(err)) != 0);	/* twice */
	T_CHECK(owner_map_add_word(m, "nodomain", 8, err, sizeof(err)) != 0);
	T_CHECK(owner_map_add_word(m, "a\"b@c", 5, err, sizeof(err)) != 0);
	T_CHECK(owner_map_add_word(m, "=", 1, err, sizeof(err)) != 0);
	owner_map_free(m);
}

static void
test_from(void)
{
	static const struct { const char *h; int n; const char *l0, *d0; } cases[] = {
		{ "From: a@b.test\r\n\r\n", 1, "a", "b.test" },
		{ "Subject: x\r\nfrom :  \"A, B\" <A@B.TEST.>\r\n\r\n", 1, "A", "b.test" },
		{ "From: (c) x@y.test (d)\r\n", 1, "x", "y.test" },
		{ "From: Name\r\n <n@z.test>\r\n\r\n", 1, "n", "z.test" },
		{ "From: <@r.test:u@v.test>\r\n", 1, "u", "v.test" },
		{ "From: \"q u\"@w.test\r\n", 1, "q u", "w.test" },
		{ "From: a@b.test, c@d.test\r\n", 2, "a", "b.test" },
		{ "From: grp: a@b.test, c@d.test;\r\n", 2, "a", "b.test" },
		{ "From: a@b.test\r\nFrom: c@d.test\r\n", 0, NULL, NULL },
		{ "Subject: none\r\n\r\nFrom: a@b.test\r\n", 0, NULL, NULL },
		{ "From: <a@b.test\r\n", 0, NULL, NULL },
		{ "From: nobody\r\n", 0, NULL, NULL },
		{ "From: \"unterminated <a@b.test>\r\n", 0, NULL, NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct owner_from of;
		int n = owner_from_parse(cases[i].h, strlen(cases[i].h), &of);
		T_CHECKF(n == cases[i].n, "case %zu: %d", i, n);
		if (n > 0 && cases[i].l0) {
			T_CHECKF(strcmp(of.all[0], cases[i].l0) == 0, "case %zu local %s", i, of.all[0]);
			T_CHECKF(strcmp(of.all[1], cases[i].d0) == 0, "case %zu domain %s", i, of.all[1]);
		}
	}
}

static void
test_b64(void)
{
	unsigned char out[64];

	T_CHECK(sasl_b64_decode("=", 1, out, sizeof(out)) == 0);
	T_CHECK(sasl_b64_decode("YWJj", 4, out, sizeof(out)) == 3 && memcmp(out, "abc", 3) == 0);
	T_CHECK(sasl_b64_decode("YWI=", 4, out, sizeof(out)) == 2);
	T_CHECK(sasl_b64_decode("YQ==", 4, out, sizeof(out)) == 1);
	T_CHECK(sasl_b64_decode("YQ=a", 4, out, sizeof(out)) < 0);
	T_CHECK(sasl_b64_decode("Y===", 4, out, sizeof(out)) < 0);
	T_CHECK(sasl_b64_decode("YWJ", 3, out, sizeof(out)) < 0);
	T_CHECK(sasl_b64_decode("YW J", 4, out, sizeof(out)) < 0);
	T_CHECK(sasl_b64_decode("", 0, out, sizeof(out)) < 0);
	T_CHECK(sasl_b64_decode("YQ==YQ==", 8, out, sizeof(out)) < 0);
}

static void
test_login(void)
{
	char l[256];

	T_CHECK(sasl_login(SASL_PLAIN, 0, (const unsigned char *)"\0alice\0pw", 9, l, sizeof(l)) == 1 &&
	    strcmp(l, "alice") == 0);
	T_CHECK(sasl_login(SASL_PLAIN, 0, (const unsigned char *)"boss\0alice\0pw", 13, l, sizeof(l)) == 1 &&
	    strcmp(l, "boss") == 0);
	T_CHECK(sasl_login(SASL_PLAIN, 0, (const unsigned char *)"\0\0pw", 4, l, sizeof(l)) < 0);
	T_CHECK(sasl_login(SASL_PLAIN, 0, (const unsigned char *)"alicepw", 7, l, sizeof(l)) < 0);
	T_CHECK(sasl_login(SASL_PLAIN, 0, (const unsigned char *)"", 0, l, sizeof(l)) == 0);
	T_CHECK(sasl_login(SASL_LOGIN, 1, (const unsigned char *)"bob", 3, l, sizeof(l)) == 1 &&
	    strcmp(l, "bob") == 0);
	T_CHECK(sasl_login(SASL_LOGIN, 1, (const unsigned char *)"b b", 3, l, sizeof(l)) < 0);
	T_CHECK(sasl_login(SASL_CRAM_MD5, 1, (const unsigned char *)"carol 0123abcd", 14, l, sizeof(l)) == 1 &&
	    strcmp(l, "carol") == 0);
	T_CHECK(sasl_login(SASL_SCRAM, 0, (const unsigned char *)"n,,n=d=2Cx,r=abc", 16, l, sizeof(l)) == 1 &&
	    strcmp(l, "d,x") == 0);
	T_CHECK(sasl_login(SASL_SCRAM, 0, (const unsigned char *)"p=tls-unique,,n=d,r=a", 21, l, sizeof(l)) < 0);
	T_CHECK(sasl_mech_find("plain", 5) == SASL_PLAIN);
	T_CHECK(sasl_mech_find("SCRAM-SHA-256", 13) == SASL_SCRAM);
	T_CHECK(sasl_mech_find("GSSAPI", 6) == SASL_NONE);
}

int
main(void)
{
	T_RUN(test_map);
	T_RUN(test_map_errors);
	T_RUN(test_from);
	T_RUN(test_b64);
	T_RUN(test_login);
	return T_DONE("test_owner");
}
