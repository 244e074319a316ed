/*
 * test_dkim - the streaming DKIM verifier (filters/dkim.c) with keys
 * from a table through the key hook (no DNS)
 *
 * Messages are the conformance data (../shared/conformance/dkim, or
 * $MOAT_CONFORMANCE/dkim), made CRLF as moatd's DATA reader makes them.
 * Cases: RFC 6376 and RFC 8463 examples pass; every chunk size from 1 to
 * 97 gives the same verdicts; an altered body or header fails; the bare
 * PKCS#1 key passes; the expired signature passes only at the pinned
 * clock; the key hook's answers map to permerror/temperror; header
 * bounds (field size, field count, total) end verification instead of
 * cutting; an unsigned message has no result; A-R rendering.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim.h"
#include "t.h"

struct keytab {
	const char *name;
	const char *value;
};

static const struct keytab *keys;
static enum dkimv_key forced = DKIMV_KEY_FOUND;
static int lookups;

static enum dkimv_key
tab_lookup(void *ctx, const char *name, char *out, size_t size)
{
	(void)ctx;
	lookups++;
	if (forced != DKIMV_KEY_FOUND)
		return forced;
	for (int i = 0; keys != NULL && keys[i].name != NULL; i++)
		if (strcasecmp(keys[i].name, name) == 0) {
			snprintf(out, size, "%s", keys[i].value);
			return DKIMV_KEY_FOUND;
		}
	return DKIMV_KEY_NONE;
}

static const struct keytab rfc_keys[] = {
	{ "brisbane._domainkey.example.com", "v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/"
	  "UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lW"
	  "T947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB" },
	{ "brisbane._domainkey.football.example.com",
	  "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" },
	{ "test._domainkey.football.example.com", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBi"
	  "QKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC"
	  "/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB" },
	{ NULL, NULL }
};

/* load - a conformance file as CRLF; with inline keys (mail-auth) the
 * key lines before the first blank line are returned separately */
static char *
load(const char *rel, size_t *len, bool inline_keys, char *keybuf, size_t keysize)
{
	const char *d = getenv("MOAT_CONFORMANCE");
	char path[512];
	FILE *f;
	char *raw, *out;
	size_t n = 0, o = 0, start = 0;

	snprintf(path, sizeof path, "%s/dkim/%s", d ? d : "../shared/conformance", rel);
	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	raw = malloc(1 << 20);
	n = fread(raw, 1, (1 << 20) - 1, f);
	fclose(f);
	raw[n] = '\0';
	if (inline_keys) {
		char *blank = strstr(raw, "\n\n");
		if (blank == NULL) {
			free(raw);
			return NULL;
		}
		snprintf(keybuf, keysize, "%.*s", (int)(blank - raw), raw);
		start = (size_t)(blank - raw) + 2;
	}
	out = malloc(2 * n + 1);
	for (size_t i = start; i < n; i++) {
		if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r'))
			out[o++] = '\r';
		out[o++] = raw[i];
	}
	out[o] = '\0';
	free(raw);
	*len = o;
	return out;
}

static struct dkimv *
verifier(uint64_t now)
{
	struct dkimv_conf c;
	char err[128];
	struct dkimv *v;

	memset(&c, 0, sizeof c);
	c.key_lookup = tab_lookup;
	c.fixed_time = now;
	v = dkimv_new(&c, err, sizeof err);
	T_CHECKF(v != NULL, "%s", err);
	return v;
}

static void
verify(struct dkimv *v, const char *msg, size_t len, size_t chunk, struct dkimv_outcome *out)
{
	struct dkimv_msg *m = dkimv_msg_new(v);

	for (size_t off = 0; off < len; off += chunk)
		dkimv_msg_feed(m, msg + off, len - off < chunk ? len - off : chunk);
	dkimv_msg_finish(m, out);
	dkimv_msg_free(m);
}

static void
test_rfc_examples_any_chunking(void)
{
	struct dkimv *v = verifier(0);
	struct dkimv_outcome o;
	size_t l1, l2;
	char *a2 = load("rfc6376/rfc6376-a2-signed.eml", &l1, false, NULL, 0);
	char *a3 = load("rfc8463/rfc8463-a3-signed.eml", &l2, false, NULL, 0);

	keys = rfc_keys;
	T_CHECK(a2 != NULL && a3 != NULL);
	if (v == NULL || a2 == NULL || a3 == NULL)
		goto out;
	for (size_t chunk = 1; chunk <= 97; chunk++) {
		verify(v, a2, l1, chunk, &o);
		T_CHECKF(o.status == DKIMV_OK && o.nsigs == 1 && o.sigs[0].result == DKIMV_PASS,
		    "A.2 chunk %zu: %s", chunk, dkimv_result_name(o.sigs[0].result));
		verify(v, a3, l2, chunk, &o);
		T_CHECKF(o.nsigs == 2 && o.sigs[0].result == DKIMV_PASS &&
		    o.sigs[1].result == DKIMV_PASS, "A.3 chunk %zu", chunk);
	}
	T_CHECK(strcmp(o.sigs[0].domain, "football.example.com") == 0 &&
	    strcmp(o.sigs[0].selector, "brisbane") == 0 && o.sigs[0].alg == DKIMV_ALG_ED25519_SHA256 &&
	    o.sigs[1].alg == DKIMV_ALG_RSA_SHA256 && o.sigs[1].key_bits == 1024 &&
	    strcmp(o.sigs[0].b_prefix, "/gCrinpcQOoI") == 0);
	/* one whole-message feed as well; the feed (on the event loop in
	 * moatd) never looks a key up, finish does */
	{
		struct dkimv_msg *m = dkimv_msg_new(v);
		lookups = 0;
		dkimv_msg_feed(m, a3, l2);
		T_CHECK(lookups == 0);
		dkimv_msg_finish(m, &o);
		T_CHECK(lookups == 2 && o.sigs[0].result == DKIMV_PASS);
		dkimv_msg_free(m);
	}
out:
	free(a2);
	free(a3);
	dkimv_free(v);
}

static void
test_altered(void)
{
	struct dkimv *v = verifier(0);
	struct dkimv_outcome o;
	size_t len;
	char *a2 = load("rfc6376/rfc6376-a2-signed.eml", &len, false, NULL, 0), *p;

	keys = rfc_keys;
	if (v == NULL || a2 == NULL) {
		T_CHECK(a2 != NULL);
		goto out;
	}
	p = strstr(a2, "We lost the game");
	T_CHECK(p != NULL);
	if (p) {
		p[3] = 'w';
		verify(v, a2, len, 13, &o);
		T_CHECK(o.sigs[0].result == DKIMV_FAIL && o.sigs[0].reason != NULL &&
		    strstr(o.sigs[0].reason, "body hash") != NULL);
		p[3] = 'l';
	}
	p = strstr(a2, "Subject: Is dinner ready?");
	T_CHECK(p != NULL);
	if (p) {
		p[9] = 'i';
		verify(v, a2, len, 13, &o);
		T_CHECK(o.sigs[0].result == DKIMV_FAIL);
	}
out:
	free(a2);
	dkimv_free(v);
}

static void
test_pkcs1_and_pinned_clock(void)
{
	char kb[8192], name[256];
	struct keytab tab[4];
	size_t len;
	char *msg;
	struct dkimv_outcome o;
	struct dkimv *v;

	/* 002: p= holds a bare PKCS#1 RSAPublicKey */
	msg = load("mail-auth/002.txt", &len, true, kb, sizeof kb);
	T_CHECK(msg != NULL);
	if (msg != NULL) {
		char *sp = strchr(kb, ' ');
		*sp = '\0';
		tab[0].name = kb;
		tab[0].value = sp + 1;
		tab[1].name = NULL;
		keys = tab;
		v = verifier(0);
		verify(v, msg, len, 100, &o);
		T_CHECKF(o.nsigs == 1 && o.sigs[0].result == DKIMV_PASS, "002: %s",
		    dkimv_result_name(o.sigs[0].result));
		dkimv_free(v);
		free(msg);
	}
	/* 005: x= expired; passes only at the pinned clock */
	msg = load("mail-auth/005.txt", &len, true, kb, sizeof kb);
	T_CHECK(msg != NULL);
	if (msg != NULL) {
		char *sp = strchr(kb, ' ');
		*sp = '\0';
		snprintf(name, sizeof name, "%.200s", kb);
		tab[0].name = name;
		tab[0].value = sp + 1;
		tab[1].name = NULL;
		keys = tab;
		v = verifier(1667843664);
		verify(v, msg, len, 4096, &o);
		T_CHECKF(o.nsigs == 1 && o.sigs[0].result == DKIMV_PASS, "005 pinned: %s",
		    dkimv_result_name(o.sigs[0].result));
		dkimv_free(v);
		v = verifier(0);
		verify(v, msg, len, 4096, &o);
		T_CHECK(o.nsigs == 1 && o.sigs[0].result == DKIMV_FAIL &&
		    strcmp(o.sigs[0].reason, "signature expired") == 0);
		dkimv_free(v);
		free(msg);
	}
}

static void
test_key_answers(void)
{
	static const struct { enum dkimv_key k; enum dkimv_result want; } cases[] = {
		{ DKIMV_KEY_NONE, DKIMV_PERMERROR },
		{ DKIMV_KEY_TEMPERROR, DKIMV_TEMPERROR },
		{ DKIMV_KEY_MULTIPLE, DKIMV_PERMERROR },
		{ DKIMV_KEY_TOOBIG, DKIMV_PERMERROR },
	};
	static const struct keytab revoked[] = {
		{ "brisbane._domainkey.example.com", "v=DKIM1; p=" }, { NULL, NULL } };
	static const struct keytab garbage[] = {
		{ "brisbane._domainkey.example.com", "v=DKIM1; k=rsa; p=@@@@" }, { NULL, NULL } };
	struct dkimv *v = verifier(0);
	struct dkimv_outcome o;
	size_t len;
	char *a2 = load("rfc6376/rfc6376-a2-signed.eml", &len, false, NULL, 0);

	if (v == NULL || a2 == NULL) {
		T_CHECK(a2 != NULL);
		goto out;
	}
	keys = rfc_keys;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		forced = cases[i].k;
		verify(v, a2, len, len, &o);
		T_CHECKF(o.nsigs == 1 && o.sigs[0].result == cases[i].want, "key answer %d: %s",
		    cases[i].k, dkimv_result_name(o.sigs[0].result));
	}
	forced = DKIMV_KEY_FOUND;
	keys = revoked;
	verify(v, a2, len, len, &o);
	T_CHECK(o.sigs[0].result == DKIMV_PERMERROR && strstr(o.sigs[0].reason, "revoked"));
	keys = garbage;
	verify(v, a2, len, len, &o);
	T_CHECK(o.sigs[0].result == DKIMV_PERMERROR);
out:
	forced = DKIMV_KEY_FOUND;
	keys = rfc_keys;
	free(a2);
	dkimv_free(v);
}

static void
test_header_bounds(void)
{
	struct dkimv_conf c;
	struct dkimv *v;
	struct dkimv_msg *m;
	struct dkimv_outcome o;
	char err[128], *big;
	size_t len;
	char *a2 = load("rfc6376/rfc6376-a2-signed.eml", &len, false, NULL, 0);
	int rc = 0;

	memset(&c, 0, sizeof c);
	c.key_lookup = tab_lookup;
	c.max_fields = 20;
	c.max_field_bytes = 4096;
	c.max_header_bytes = 16384;
	v = dkimv_new(&c, err, sizeof err);
	T_CHECK(v != NULL && a2 != NULL);
	if (v == NULL || a2 == NULL)
		goto out;
	keys = rfc_keys;
	/* within the bounds: passes */
	verify(v, a2, len, 50, &o);
	T_CHECK(o.status == DKIMV_OK && o.sigs[0].result == DKIMV_PASS);
	/* 21 fields on top of a signed message */
	m = dkimv_msg_new(v);
	for (int i = 0; i < 21; i++)
		rc |= dkimv_msg_feed(m, "X-Pad: x\r\n", 10);
	rc |= dkimv_msg_feed(m, a2, len);
	dkimv_msg_finish(m, &o);
	dkimv_msg_free(m);
	T_CHECK(rc == -1 && o.status == DKIMV_TOO_BIG && o.nsigs == 0);
	/* one folded field of 5000 bytes */
	big = malloc(6000);
	memcpy(big, "X-Big: ", 7);
	for (int i = 7; i < 5000; i++)
		big[i] = (i % 70 == 0) ? '\n' : (i % 70 == 1 ? ' ' : 'a');
	for (int i = 7; i < 5000; i++)
		if (big[i] == '\n')
			big[i - 1] = '\r';
	memcpy(big + 5000, "\r\n", 2);
	m = dkimv_msg_new(v);
	dkimv_msg_feed(m, big, 5002);
	dkimv_msg_feed(m, a2, len);
	dkimv_msg_finish(m, &o);
	dkimv_msg_free(m);
	T_CHECK(o.status == DKIMV_TOO_BIG);
	/* a field of exactly max_field_bytes (its CRLF not counted) is
	 * taken, one byte more is not: fed whole (inside a line the bytes
	 * go into the field at once) and byte by byte alike */
	free(big);
	for (int extra = 0; extra <= 1; extra++)
		for (size_t chunk = 1; chunk <= 4200; chunk += 4199) {
			size_t fl = 4096 + (size_t)extra;

			big = malloc(fl + 2);
			memcpy(big, "X-Edge: ", 8);
			memset(big + 8, 'e', fl - 8);
			memcpy(big + fl, "\r\n", 2);
			m = dkimv_msg_new(v);
			rc = 0;
			for (size_t off = 0; off < fl + 2; off += chunk)
				rc |= dkimv_msg_feed(m, big + off, fl + 2 - off < chunk ? fl + 2 - off :
				    chunk);
			rc |= dkimv_msg_feed(m, a2, len);
			dkimv_msg_finish(m, &o);
			dkimv_msg_free(m);
			free(big);
			T_CHECKF(extra ? rc == -1 && o.status == DKIMV_TOO_BIG :
			    rc == 0 && o.status == DKIMV_OK && o.sigs[0].result == DKIMV_PASS,
			    "field of %zu bytes, chunk %zu", fl, chunk);
		}
	big = malloc(6000);
	/* a "header" line of 20000 bytes without a colon or an end */
	m = dkimv_msg_new(v);
	memset(big, 'x', 6000);
	for (int i = 0; i < 4; i++)
		dkimv_msg_feed(m, big, 5000);
	dkimv_msg_finish(m, &o);
	dkimv_msg_free(m);
	T_CHECK(o.status == DKIMV_TOO_BIG);
	free(big);
out:
	free(a2);
	dkimv_free(v);
}

static void
test_unsigned_and_odd(void)
{
	static const char *msgs[] = {
		"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n",
		"From: a@example.com\r\n",				/* header only */
		"From: a@example.com",					/* no line end */
		"",							/* nothing */
		"\r\n\r\nbody only\r\n",
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n\r\nx\r\n",
		"DKIM-Signature: garbage\r\nFrom: a@example.com\r\n\r\nx\r\n",
		"DKIM-Signature: v=1; a=rsa-sha256; c=simple; d=example.com; s=brisbane; h=subject; "
		"bh=AAAA; b=AAAA\r\nFrom: a@example.com\r\nSubject: s\r\n\r\nx\r\n",	/* h= without from */
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=brisbane; l=99999999999999999999; "
		"h=from; bh=AAAA; b=AAAA\r\nFrom: a@example.com\r\n\r\nx\r\n",
	};
	static const int want_sigs[] = { 0, 0, 0, 0, 0, 1, 1, 1, 1 };
	struct dkimv *v = verifier(0);
	struct dkimv_outcome o;

	keys = rfc_keys;
	for (size_t i = 0; v != NULL && i < sizeof msgs / sizeof msgs[0]; i++) {
		lookups = 0;
		verify(v, msgs[i], strlen(msgs[i]), 3, &o);
		T_CHECKF(o.status == DKIMV_OK && o.nsigs == want_sigs[i], "msg %zu: status %d sigs %d",
		    i, o.status, o.nsigs);
		if (o.nsigs == 1) {
			T_CHECKF(o.sigs[0].result != DKIMV_PASS && o.sigs[0].reason != NULL,
			    "msg %zu passed", i);
		}
	}
	dkimv_free(v);
}

static void
test_authres(void)
{
	struct dkimv_outcome o;
	struct authres a;
	char out[1024];

	memset(&o, 0, sizeof o);
	o.nsigs = 2;
	o.sigs[0].result = DKIMV_PASS;
	strcpy(o.sigs[0].domain, "example.com");
	strcpy(o.sigs[0].selector, "sel");
	strcpy(o.sigs[0].b_prefix, "abcdefgh1234");
	o.sigs[1].result = DKIMV_POLICY;
	o.sigs[1].partial = true;
	o.sigs[1].reason = "l= covers only part of the body";
	strcpy(o.sigs[1].domain, "example.net");
	authres_init(&a);
	dkimv_authres(&o, &a);
	authres_render(&a, "mx.test", "\n", out, sizeof out);
	T_CHECKF(strcmp(out, "mx.test;\n\tdkim=pass\n\t header.d=example.com\n\t header.s=sel\n\t "
	    "header.b=abcdefgh1234;\n\tdkim=policy\n\t reason=\"l= covers only part of the body\"\n\t "
	    "header.d=example.net") == 0, "%s", out);
	memset(&o, 0, sizeof o);
	o.status = DKIMV_TOO_BIG;
	authres_init(&a);
	dkimv_authres(&o, &a);
	authres_render(&a, "mx.test", "\n", out, sizeof out);
	T_CHECK(strstr(out, "dkim=permerror") != NULL);
}

int
main(void)
{
	T_RUN(test_rfc_examples_any_chunking);
	T_RUN(test_altered);
	T_RUN(test_pkcs1_and_pinned_clock);
	T_RUN(test_key_answers);
	T_RUN(test_header_bounds);
	T_RUN(test_unsigned_and_odd);
	T_RUN(test_authres);
	return T_DONE("test_dkim");
}
