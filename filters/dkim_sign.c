/*
 * dkim_sign - DKIM signing (see dkim_sign.h)
 *
 * Both algorithms are signed here, with OpenSSL and dkim_canon.c, not
 * with libopendkim's signing API, which moat tried first:
 *  - Debian 12's libopendkim (2.11.0~beta2) signs with Ed25519 but loses
 *    the key it loads for every such signature (about 500 bytes a
 *    message, found by LeakSanitizer), which a daemon cannot afford;
 *  - it parses the PEM key again for every message: an rsa-sha256
 *    signature cost about 950 us of CPU through it against about 280 us
 *    here, where the key is parsed once, when the policy is loaded
 *    (bench/FEATURES.md, "DKIM signing").
 * libopendkim still verifies (filters/dkim.c): the tests check moat's
 * signatures with it and with dkimpy.
 *
 * The canonicalisation is relaxed/relaxed; one body hash (SHA-256)
 * serves every key of the message. The header data is the signed fields
 * (each present one from the bottom up, then the name once more: over-
 * signing, RFC 6376 8.15), then this DKIM-Signature field with b= empty,
 * relaxed, without its CRLF (RFC 6376 3.7). rsa-sha256 signs that data
 * (RSASSA-PKCS1-v1_5 with SHA-256); ed25519-sha256 signs its SHA-256
 * hash (PureEdDSA, RFC 8463 3).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <time.h>

#include <openssl/evp.h>

#include "dkim_canon.h"
#include "dkim_sign.h"
#include "owner.h"
#include "xalloc.h"

struct dkims {
	uint64_t fixed_time;
};

struct dkims_msg {
	struct dkims *s;
	const struct dkim_keys *keys;
	uint64_t expiry_s;
	bool hdr_done;
	bool failed;			/* header too big, no From, no key, ... */
	const char *why;		/* static: why nothing is signed */
	char *hdr;
	size_t hdr_len;
	char from_domain[256];
	int nkeys;
	const struct dkim_key *key[DKIM_KEYS_PER_DOMAIN];
	EVP_MD_CTX *bh;			/* the body hash */
	size_t bhn;			/* canonical body bytes in bhbuf, not hashed yet */
	unsigned char bhbuf[2048];	/* the hash takes them in big pieces: an
					 * EVP_DigestUpdate() per line cost more than
					 * the hashing */
	struct dkim_bcanon bc;
	char *hdata;			/* the signed fields, relaxed, in h= order */
	size_t hdata_len;
	char *hlist;			/* h=, folded */
};

/* the fields signed, each also over-signed (names match without regard
 * to case) */
static const char *sign_fields[] = {
	"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "Content-ID", "Content-Description",
	"Content-Disposition", "Content-Language", "List-Id", "List-Help",
	"List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post",
	"List-Owner", "List-Archive", NULL
};

/* dkims_new - the signer; fixed_time pins t= (tests), 0: the clock */
struct dkims *
dkims_new(uint64_t fixed_time, char *err, size_t errlen)
{
	struct dkims *s = xcalloc(1, sizeof(*s));

	(void)err;
	(void)errlen;
	s->fixed_time = fixed_time;
	return s;
}

void
dkims_free(struct dkims *s)
{
	free(s);
}

/* dkims_msg_new - a message to sign, if its From domain has keys */
struct dkims_msg *
dkims_msg_new(struct dkims *s, const struct dkim_keys *keys, uint64_t expiry_s)
{
	struct dkims_msg *m = xcalloc(1, sizeof(*m));

	m->s = s;
	m->keys = keys;
	m->expiry_s = expiry_s;
	return m;
}

/* own_free - our signer's state */
static void
own_free(struct dkims_msg *m)
{
	EVP_MD_CTX_free(m->bh);
	m->bh = NULL;
	free(m->hdata);
	m->hdata = NULL;
	free(m->hlist);
	m->hlist = NULL;
}

void
dkims_msg_free(struct dkims_msg *m)
{
	if (m == NULL)
		return;
	own_free(m);
	free(m->hdr);
	free(m);
}

/* fail - nothing will be signed */
static void
fail(struct dkims_msg *m, const char *why)
{
	own_free(m);
	m->nkeys = 0;
	m->failed = true;
	m->why = why;
	m->hdr_done = true;
	free(m->hdr);
	m->hdr = NULL;
}

/* a header field's bounds in m->hdr (without its final CRLF) */
struct field {
	size_t at, len, nlen;	/* nlen: the name, without whitespace before ':' */
};

#define FIELDS_MAX 1000

/* split_fields - the header block into fields; -1 when over FIELDS_MAX */
static int
split_fields(const char *h, size_t hlen, struct field *f, int max)
{
	int n = 0;

	for (size_t a = 0; a < hlen; ) {
		size_t b = a, flen;
		const char *colon;

		for (;;) {
			const char *nl = memchr(h + b, '\n', hlen - b);

			b = nl != NULL ? (size_t)(nl - h) + 1 : hlen;
			if (b >= hlen || (h[b] != ' ' && h[b] != '\t'))
				break;
		}
		flen = b - a;
		if (flen >= 2 && h[b - 2] == '\r' && h[b - 1] == '\n')
			flen -= 2;
		if (flen > 0) {
			if (n == max)
				return -1;
			f[n].at = a;
			f[n].len = flen;
			colon = memchr(h + a, ':', flen);
			f[n].nlen = colon != NULL ? (size_t)(colon - (h + a)) : 0;
			while (f[n].nlen > 0 && (h[a + f[n].nlen - 1] == ' ' ||
			    h[a + f[n].nlen - 1] == '\t'))
				f[n].nlen--;
			n++;
		}
		a = b;
	}
	return n;
}

/* append - bytes to a growing buffer */
static void
append(char **buf, size_t *len, const void *p, size_t n)
{
	*buf = xrealloc(*buf, *len + n + 1);
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = 0;
}

/* own_start - our signer: the fields to sign (each present one from the
 * bottom up, and each name once more), h=, the body hash */
static int
own_start(struct dkims_msg *m, const struct field *f, int nf)
{
	size_t hl = 0, line = 2;	/* "h=" */
	char canon[DKIMS_HEADER_MAX > 102400 ? 102400 : DKIMS_HEADER_MAX];

	m->hlist = xstrdup("h=");
	for (int s = 0; sign_fields[s] != NULL; s++) {
		const char *name = sign_fields[s];
		size_t nl = strlen(name);
		int count = 0;

		for (int i = nf - 1; i >= 0; i--) {
			size_t cl;

			if (f[i].nlen != nl || strncasecmp(m->hdr + f[i].at, name, nl) != 0)
				continue;
			cl = dkim_hcanon(m->hdr + f[i].at, f[i].len, canon, sizeof(canon));
			if (cl == 0)
				return -1;
			append(&m->hdata, &m->hdata_len, canon, cl);
			count++;
		}
		hl = strlen(m->hlist);
		for (int k = 0; k <= count; k++) {
			if (m->hlist[hl - 1] != '=') {
				append(&m->hlist, &hl, ":", 1);
				line++;
			}
			if (line + nl > 72) {
				append(&m->hlist, &hl, "\r\n\t", 3);
				line = 1;
			}
			append(&m->hlist, &hl, name, nl);
			line += nl;
		}
	}
	if (m->hdata == NULL)
		m->hdata = xstrdup("");
	m->bh = EVP_MD_CTX_new();
	if (m->bh == NULL || EVP_DigestInit_ex(m->bh, EVP_sha256(), NULL) != 1)
		return -1;
	dkim_bcanon_init(&m->bc);
	return 0;
}

/* bh_flush - the buffered canonical body bytes into the body hash */
static void
bh_flush(struct dkims_msg *m)
{
	if (m->bhn > 0)
		(void)EVP_DigestUpdate(m->bh, m->bhbuf, m->bhn);
	m->bhn = 0;
}

/* bh_out - canonical body bytes for the body hash */
static void
bh_out(void *arg, const void *buf, size_t len)
{
	struct dkims_msg *m = arg;

	if (m->bhn + len > sizeof(m->bhbuf)) {
		bh_flush(m);
		if (len > sizeof(m->bhbuf)) {
			(void)EVP_DigestUpdate(m->bh, buf, len);
			return;
		}
	}
	memcpy(m->bhbuf + m->bhn, buf, len);
	m->bhn += len;
}

/* end_of_header - find the keys, select the fields to sign */
static void
end_of_header(struct dkims_msg *m, size_t hlen)
{
	struct owner_from of;
	struct field *f;
	int n, nf;

	m->hdr_done = true;
	if (owner_from_parse(m->hdr, hlen, &of) != 1) {
		fail(m, "no single From mailbox");
		return;
	}
	snprintf(m->from_domain, sizeof(m->from_domain), "%s", of.all[1]);
	n = dkim_keys_for(m->keys, m->from_domain, m->key, DKIM_KEYS_PER_DOMAIN);
	if (n == 0) {
		fail(m, "no key for the From domain");
		return;
	}
	m->nkeys = n;
	f = xmalloc(sizeof(*f) * FIELDS_MAX);
	nf = split_fields(m->hdr, hlen, f, FIELDS_MAX);
	if (nf < 0)
		fail(m, "more than 1000 header fields");
	else if (own_start(m, f, nf) != 0)
		fail(m, "a header field to sign is too long");
	free(f);
	if (m->failed)
		return;
	free(m->hdr);
	m->hdr = NULL;
}

/* body - bytes after the header's empty line */
static void
body(struct dkims_msg *m, const char *buf, size_t len)
{
	dkim_bcanon_feed(&m->bc, buf, len, bh_out, m);
}

/* dkims_msg_feed - decoded message bytes */
void
dkims_msg_feed(struct dkims_msg *m, const char *buf, size_t len)
{
	size_t old, start;

	if (m->failed || len == 0)
		return;
	if (m->hdr_done) {
		body(m, buf, len);
		return;
	}
	old = m->hdr_len;
	if (old + len > DKIMS_HEADER_MAX) {
		fail(m, "header over 256 KiB");
		return;
	}
	m->hdr = xrealloc(m->hdr, old + len + 1);
	memcpy(m->hdr + old, buf, len);
	m->hdr_len = old + len;
	m->hdr[m->hdr_len] = 0;
	if (m->hdr_len >= 2 && memcmp(m->hdr, "\r\n", 2) == 0) {
		fail(m, "no header");
		return;
	}
	start = old > 3 ? old - 3 : 0;
	for (size_t i = start; i + 4 <= m->hdr_len; i++)
		if (memcmp(m->hdr + i, "\r\n\r\n", 4) == 0) {
			size_t body_at = i + 4;
			size_t rest = m->hdr_len - body_at;

			/* the body's first bytes are in this chunk's tail */
			end_of_header(m, i + 2);
			if (!m->failed && rest > 0)
				body(m, buf + (len - rest), rest);
			return;
		}
}

const char *
dkims_msg_from_domain(const struct dkims_msg *m)
{
	return m != NULL && m->hdr_done && !m->failed ? m->from_domain : NULL;
}

/* header_hash_sign - the signature of the header data (the signed fields,
 * then canon: this field, b= empty, relaxed, CRLF dropped) into sig */
static bool
header_hash_sign(const struct dkims_msg *m, const struct dkim_key *k, const char *canon,
	size_t cl, unsigned char *sig, size_t *siglen)
{
	unsigned char digest[32];
	unsigned dlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	if (k->alg == DKIM_KEY_RSA_SHA256) {
		/* RSASSA-PKCS1-v1_5 with SHA-256 over the data */
		ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
		    EVP_DigestSignUpdate(ctx, m->hdata, m->hdata_len) == 1 &&
		    EVP_DigestSignUpdate(ctx, canon, cl) == 1 &&
		    EVP_DigestSignFinal(ctx, sig, siglen) == 1;
		EVP_MD_CTX_free(ctx);
		return ok;
	}
	/* RFC 8463: PureEdDSA over the SHA-256 hash of the data */
	ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, m->hdata, m->hdata_len) == 1 &&
	    EVP_DigestUpdate(ctx, canon, cl) == 1 &&
	    EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == sizeof(digest);
	EVP_MD_CTX_free(ctx);
	ctx = ok ? EVP_MD_CTX_new() : NULL;
	ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
	    EVP_DigestSign(ctx, sig, siglen, digest, sizeof(digest)) == 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* own_sign - the DKIM-Signature field for key k (CRLF-terminated,
 * allocated), or NULL. bh: the body hash in base64. */
static char *
own_sign(struct dkims_msg *m, const struct dkim_key *k, const char *bh, size_t *len)
{
	char head[1024], canon[8192], b64[1400];
	unsigned char sig[1024];	/* RSA 8192 */
	size_t hlen, cl, siglen = sizeof(sig), blen;
	char *field = NULL;
	size_t flen = 0;
	uint64_t t = m->s->fixed_time > 0 ? m->s->fixed_time : (uint64_t)time(NULL);
	char x[40] = "";

	if (m->expiry_s > 0)
		snprintf(x, sizeof(x), " x=%llu;", (unsigned long long)(t + m->expiry_s));
	hlen = (size_t)snprintf(head, sizeof(head), "DKIM-Signature: v=1; a=%s; "
	    "c=relaxed/relaxed; d=%s;\r\n\ts=%s; t=%llu;%s\r\n\t", dkim_key_alg_name(k->alg),
	    k->domain, k->selector, (unsigned long long)t, x);
	if (hlen >= sizeof(head))
		return NULL;
	append(&field, &flen, head, hlen);
	append(&field, &flen, m->hlist, strlen(m->hlist));
	append(&field, &flen, ";\r\n\tbh=", 7);
	append(&field, &flen, bh, strlen(bh));
	append(&field, &flen, ";\r\n\tb=", 6);
	cl = dkim_hcanon(field, flen, canon, sizeof(canon));
	if (cl < 2 || !header_hash_sign(m, k, canon, cl - 2, sig, &siglen) ||
	    4 * ((siglen + 2) / 3) >= sizeof(b64)) {
		free(field);
		return NULL;
	}
	blen = (size_t)EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
	/* b= folded: 72 characters a line after the first */
	for (size_t o = 0; o < blen; o += 72) {
		if (o > 0)
			append(&field, &flen, "\r\n\t ", 4);
		append(&field, &flen, b64 + o, blen - o < 72 ? blen - o : 72);
	}
	append(&field, &flen, "\r\n", 2);
	*len = flen;
	return field;
}

/* dkims_msg_finish - the DKIM-Signature fields, or NULL */
char *
dkims_msg_finish(struct dkims_msg *m, size_t *len, char *info, size_t infolen)
{
	char *out = NULL, bh64[48] = "";
	size_t olen = 0, ilen = 0;

	*len = 0;
	info[0] = 0;
	if (!m->hdr_done && !m->failed && m->hdr != NULL && m->hdr_len >= 2 &&
	    memcmp(m->hdr + m->hdr_len - 2, "\r\n", 2) == 0)
		end_of_header(m, m->hdr_len);	/* a message of header fields only */
	if (!m->hdr_done || m->failed) {
		snprintf(info, infolen, "%s", m->why ? m->why : "no end of header");
		return NULL;
	}
	{
		unsigned char d[32];
		unsigned dl = 0;

		dkim_bcanon_end(&m->bc, bh_out, m);
		bh_flush(m);
		if (EVP_DigestFinal_ex(m->bh, d, &dl) != 1 || dl != sizeof(d)) {
			snprintf(info, infolen, "OpenSSL could not hash the body");
			return NULL;
		}
		EVP_EncodeBlock((unsigned char *)bh64, d, (int)dl);
	}
	for (int i = 0; i < m->nkeys; i++) {
		size_t flen = 0;
		char *f = own_sign(m, m->key[i], bh64, &flen);

		if (f == NULL) {
			snprintf(info, infolen, "could not sign with %s", m->key[i]->selector);
			free(out);
			*len = 0;
			return NULL;
		}
		out = xrealloc(out, olen + flen);
		memcpy(out + olen, f, flen);
		olen += flen;
		free(f);
		if (ilen < infolen) {
			int w = snprintf(info + ilen, infolen - ilen, "%sd=%s s=%s a=%s",
			    i ? " " : "", m->key[i]->domain, m->key[i]->selector,
			    dkim_key_alg_name(m->key[i]->alg));
			if (w > 0)
				ilen += (size_t)w;
		}
	}
	*len = olen;
	return out;
}
