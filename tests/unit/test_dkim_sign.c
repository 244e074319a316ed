/*
 * test_dkim_sign - DKIM signing (filters/dkim_sign.c, dkim_key.c,
 * dkim_canon.c): relaxed canonicalisation vectors, key lookup by From
 * domain, and signatures (RSA and Ed25519, made by moat) that
 * moat's own verifier (filters/dkim.c) passes, the same whatever the
 * chunking, and that fail once a signed field or the body changes.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkim.h"
#include "dkim_canon.h"
#include "dkim_key.h"
#include "dkim_sign.h"
#include "t.h"

struct sink {
	char b[4096];
	size_t n;
};

static void
put(void *arg, const void *p, size_t n)
{
	struct sink *s = arg;

	if (s->n + n <= sizeof(s->b)) {
		memcpy(s->b + s->n, p, n);
		s->n += n;
	}
}

static void
test_body_canon(void)
{
	static const struct { const char *name, *in, *out; } cases[] = {
		{ "empty", "", "" },
		{ "only_empty_lines", "\r\n\r\n\r\n", "" },
		{ "trailing_empty_lines_go", "a\r\n\r\n\r\n", "a\r\n" },
		{ "inner_empty_lines_stay", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n" },
		{ "wsp_runs", "a  \t b\r\n", "a b\r\n" },
		{ "leading_wsp_one_sp", " \t a\r\n", " a\r\n" },
		{ "trailing_wsp_goes", "a \t\r\n", "a\r\n" },
		{ "wsp_only_line_is_empty", "a\r\n \t\r\nb\r\n", "a\r\n\r\nb\r\n" },
		{ "no_final_crlf", "a\r\nb", "a\r\nb\r\n" },
		{ "rfc6376_3.4.5", " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n" },
		{ "bare_cr_in_a_run", "abc\rdef \r\nxy\r\rz\r\n", "abc\rdef\r\nxy\r\rz\r\n" },
		{ "long_runs", "0123456789abcdef\x7f\x80\xff 0123456789\t\r\n\x01\x1f\r\n",
		  "0123456789abcdef\x7f\x80\xff 0123456789\r\n\x01\x1f\r\n" },
	};
	static const size_t chunks[] = { 1, 4, 7, 100 };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
			size_t chunk = chunks[c];
			struct dkim_bcanon b;
			struct sink s = { .n = 0 };
			size_t len = strlen(cases[i].in);

			dkim_bcanon_init(&b);
			for (size_t o = 0; o < len; o += chunk)
				dkim_bcanon_feed(&b, cases[i].in + o, len - o < chunk ? len - o : chunk,
				    put, &s);
			dkim_bcanon_end(&b, put, &s);
			T_CHECKF(s.n == strlen(cases[i].out) && memcmp(s.b, cases[i].out, s.n) == 0,
			    "%s chunk %zu: got %.*s", cases[i].name, chunk, (int)s.n, s.b);
		}
}

static void
test_header_canon(void)
{
	static const struct { const char *name, *in, *out; } cases[] = {
		{ "rfc6376_3.4.5_a", "A: X\r\n", "a:X\r\n" },
		{ "rfc6376_3.4.5_b", "B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n" },
		{ "no_crlf", "Subject:  hello   world ", "subject:hello world\r\n" },
		{ "empty_value", "X-Empty:", "x-empty:\r\n" },
		{ "no_colon", "garbage", "" },
		{ "ctl_in_name", "Fr\rom: x", "" },
	};
	char out[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = dkim_hcanon(cases[i].in, strlen(cases[i].in), out, sizeof(out));

		T_CHECKF(n == strlen(cases[i].out) && memcmp(out, cases[i].out, n) == 0,
		    "%s: got %.*s", cases[i].name, (int)n, out);
	}
}

static struct dkim_key *
make_key(struct dkim_keys *ks, const char *dir, const char *domain, const char *sel,
	enum dkim_key_alg alg, bool sub, char *rec, size_t recsize)
{
	char path[512], err[512], warn[512];
	struct dkim_key k;

	snprintf(path, sizeof(path), "%s/%s.%s.key", dir, domain, sel);
	T_CHECKF(dkim_key_generate(alg, 2048, path, err, sizeof(err)) == 0, "%s", err);
	memset(&k, 0, sizeof(k));
	snprintf(k.domain, sizeof(k.domain), "%s", domain);
	snprintf(k.selector, sizeof(k.selector), "%s", sel);
	k.alg = alg;
	k.subdomains = sub;
	T_CHECKF(dkim_key_load(&k, path, err, sizeof(err), warn, sizeof(warn)) == 0, "%s", err);
	T_CHECK(warn[0] == 0);
	T_CHECK(dkim_key_record(k.pem, k.pemlen, rec, recsize, err, sizeof(err)) == 0);
	T_CHECK(dkim_keys_add(ks, &k) == 0);
	T_CHECK(dkim_keys_add(ks, &k) == -1);	/* the same domain and selector */
	unlink(path);
	return ks->tail;
}

/* the published records, for the verifier's key lookups */
static char rec_rsa[2048], rec_ed[256];

static enum dkimv_key
lookup(void *ctx, const char *name, char *out, size_t size)
{
	(void)ctx;
	if (strcmp(name, "r1._domainkey.example.test") == 0)
		snprintf(out, size, "%s", rec_rsa);
	else if (strcmp(name, "e1._domainkey.example.test") == 0)
		snprintf(out, size, "%s", rec_ed);
	else
		return DKIMV_KEY_NONE;
	return DKIMV_KEY_FOUND;
}

static char *
sign(struct dkims *s, const struct dkim_keys *ks, const char *msg, size_t chunk, size_t *len,
	char *info, size_t infolen)
{
	struct dkims_msg *m = dkims_msg_new(s, ks, 3600);
	size_t ml = strlen(msg);
	char *sig;

	for (size_t o = 0; o < ml; o += chunk)
		dkims_msg_feed(m, msg + o, ml - o < chunk ? ml - o : chunk);
	sig = dkims_msg_finish(m, len, info, infolen);
	dkims_msg_free(m);
	return sig;
}

static void
verify(const char *sig, size_t siglen, const char *msg, struct dkimv_outcome *o)
{
	struct dkimv_conf c;
	char err[128];
	struct dkimv *v;
	struct dkimv_msg *vm;

	memset(&c, 0, sizeof(c));
	c.key_lookup = lookup;
	c.fixed_time = 1796560000;
	v = dkimv_new(&c, err, sizeof(err));
	vm = dkimv_msg_new(v);
	dkimv_msg_feed(vm, sig, siglen);
	dkimv_msg_feed(vm, msg, strlen(msg));
	dkimv_msg_finish(vm, o);
	dkimv_msg_free(vm);
	dkimv_free(v);
}

static void
test_sign_and_verify(void)
{
	static const char msg[] =
	    "From: Alice <alice@example.test>\r\n"
	    "To: bob@example.org\r\n"
	    "Subject:  a   test\r\n"
	    "\tfolded\r\n"
	    "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n"
	    "Message-ID: <1@example.test>\r\n"
	    "\r\n"
	    "Hello  \t there\r\n"
	    ".a line with a dot\r\n"
	    "\r\n\r\n";
	char tmpl[] = "/tmp/moat-dkim-sign-XXXXXX", info[300], info2[300];
	struct dkim_keys *ks = calloc(1, sizeof(*ks));
	const struct dkim_key *found[4];
	struct dkims *s = dkims_new(1796560000, info, sizeof(info));
	struct dkimv_outcome o;
	char *dir = mkdtemp(tmpl), *sig1, *sig;
	size_t len1, len;

	T_CHECK(dir != NULL);
	make_key(ks, dir, "example.test", "r1", DKIM_KEY_RSA_SHA256, false, rec_rsa, sizeof(rec_rsa));
	make_key(ks, dir, "example.test", "e1", DKIM_KEY_ED25519_SHA256, true, rec_ed, sizeof(rec_ed));
	rmdir(dir);
	T_CHECK(strncmp(rec_rsa, "v=DKIM1; k=rsa; p=MII", 21) == 0);
	T_CHECK(strncmp(rec_ed, "v=DKIM1; k=ed25519; p=", 22) == 0 && strlen(rec_ed) == 66);
	/* keys by From domain: exact, then a parent's "subdomains" keys */
	T_CHECK(dkim_keys_for(ks, "example.test", found, 4) == 2);
	T_CHECK(dkim_keys_for(ks, "a.b.example.test", found, 4) == 1 &&
	    found[0]->alg == DKIM_KEY_ED25519_SHA256);
	T_CHECK(dkim_keys_for(ks, "other.test", found, 4) == 0);
	T_CHECK(dkim_keys_for(ks, "xexample.test", found, 4) == 0);

	sig1 = sign(s, ks, msg, 100000, &len1, info, sizeof(info));
	T_CHECKF(sig1 != NULL, "%s", info);
	T_CHECKF(strcmp(info, "d=example.test s=r1 a=rsa-sha256 d=example.test s=e1 "
	    "a=ed25519-sha256") == 0, "%s", info);
	if (sig1 == NULL)
		goto out;
	T_CHECK(strstr(sig1, "x=1796563600;") != NULL);
	/* deterministic (t= pinned): the same fields whatever the chunking */
	for (size_t chunk = 1; chunk < 40; chunk += 13) {
		sig = sign(s, ks, msg, chunk, &len, info2, sizeof(info2));
		T_CHECKF(sig != NULL && len == len1 && memcmp(sig, sig1, len) == 0, "chunk %zu", chunk);
		free(sig);
	}
	verify(sig1, len1, msg, &o);
	T_CHECKF(o.nsigs == 2, "%d", o.nsigs);
	for (int i = 0; i < o.nsigs; i++)
		T_CHECKF(o.sigs[i].result == DKIMV_PASS, "sig %d: %s %s", i,
		    dkimv_result_name(o.sigs[i].result), o.sigs[i].reason ? o.sigs[i].reason : "");
	/* a From added under the signature, or a changed body, fails both */
	{
		char *m2 = malloc(sizeof(msg) + 64);

		snprintf(m2, sizeof(msg) + 64, "From: mallory@evil.test\r\n%s", msg);
		verify(sig1, len1, m2, &o);
		for (int i = 0; i < o.nsigs; i++)
			T_CHECK(o.sigs[i].result == DKIMV_FAIL);
		snprintf(m2, sizeof(msg) + 64, "%sP.S.\r\n", msg);
		verify(sig1, len1, m2, &o);
		for (int i = 0; i < o.nsigs; i++)
			T_CHECK(o.sigs[i].result == DKIMV_FAIL);
		free(m2);
	}
	/* nothing for a From with no key, two mailboxes, or no header end */
	sig = sign(s, ks, "From: a@other.test\r\n\r\nx\r\n", 5, &len, info2, sizeof(info2));
	T_CHECK(sig == NULL && strcmp(info2, "no key for the From domain") == 0);
	sig = sign(s, ks, "From: a@example.test, b@example.test\r\n\r\nx\r\n", 5, &len, info2,
	    sizeof(info2));
	T_CHECK(sig == NULL && strcmp(info2, "no single From mailbox") == 0);
	free(sig1);
out:
	dkims_free(s);
	dkim_keys_free(ks);
}

int
main(void)
{
	T_RUN(test_body_canon);
	T_RUN(test_header_canon);
	T_RUN(test_sign_and_verify);
	return T_DONE("dkim_sign");
}
