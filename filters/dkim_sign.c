/*
 * dkim_sign - DKIM signing (see dkim_sign.h)
 *
 * rsa-sha256 is signed by libopendkim. Its header list and over-signing
 * list are options of the library handle, as is the signature lifetime
 * (x=); a struct dkims therefore keeps one handle per lifetime in use (a
 * reload may change it), made on first use under a lock and kept until
 * dkims_free().
 *
 * ed25519-sha256 is signed here, with OpenSSL and dkim_canon.c: Debian
 * 12's libopendkim (2.11.0~beta2) can sign with Ed25519, but loses the
 * key it loads for every such signature (about 500 bytes a message,
 * found by LeakSanitizer), which a daemon cannot afford. The same
 * canonicalisation (relaxed/relaxed), the same header list and the same
 * over-signing give the same h= and bh= as libopendkim would; RFC 8463:
 * the Ed25519 signature is over the SHA-256 hash of the header data.
 * One body hash serves every Ed25519 key of the message.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <time.h>

#include <opendkim/dkim.h>
#include <openssl/evp.h>

#include "dkim_canon.h"
#include "dkim_sign.h"
#include "owner.h"
#include "xalloc.h"

#define DKIMS_LIBS 8

struct dkims {
	pthread_mutex_t lock;
	uint64_t fixed_time;
	int nlibs;
	uint64_t ttl[DKIMS_LIBS];
	DKIM_LIB *lib[DKIMS_LIBS];
};

struct dkims_msg {
	struct dkims *s;
	const struct dkim_keys *keys;
	uint64_t expiry_s;
	bool hdr_done;
	bool failed;			/* header too big, no From, libopendkim error */
	const char *why;		/* static: why nothing is signed */
	char *hdr;
	size_t hdr_len;
	char from_domain[256];
	int nkeys;
	const struct dkim_key *key[DKIM_KEYS_PER_DOMAIN];
	DKIM *dkim[DKIM_KEYS_PER_DOMAIN];	/* libopendkim's (RSA), or NULL: ours */
	/* our own signer (Ed25519): body hash, the header data, h= */
	EVP_MD_CTX *bh;
	struct dkim_bcanon bc;
	char *hdata;			/* the signed fields, relaxed, in h= order */
	size_t hdata_len;
	char *hlist;			/* h=, folded */
};

/* the fields signed, each also over-signed (libopendkim matches names
 * without regard to case) */
static const char *sign_fields[] = {
	"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "Content-ID", "Content-Description",
	"Content-Disposition", "Content-Language", "List-Id", "List-Help",
	"List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post",
	"List-Owner", "List-Archive", NULL
};

static u_char *
unconst(const void *p)
{
	u_char *u;

	memcpy(&u, &p, sizeof(u));
	return u;
}

/* dkims_new - the signer; its library handles come on first use */
struct dkims *
dkims_new(uint64_t fixed_time, char *err, size_t errlen)
{
	struct dkims *s = xcalloc(1, sizeof(*s));

	(void)err;
	(void)errlen;
	pthread_mutex_init(&s->lock, NULL);
	s->fixed_time = fixed_time;
	return s;
}

void
dkims_free(struct dkims *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < s->nlibs; i++)
		dkim_close(s->lib[i]);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* lib_for - the library handle for a signature lifetime, or NULL */
static DKIM_LIB *
lib_for(struct dkims *s, uint64_t ttl)
{
	DKIM_LIB *lib = NULL;

	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < s->nlibs && lib == NULL; i++)
		if (s->ttl[i] == ttl)
			lib = s->lib[i];
	if (lib == NULL && s->nlibs < DKIMS_LIBS) {
		const char **list = sign_fields;
		unsigned flags = DKIM_LIBFLAGS_FIXCRLF;

		lib = dkim_init(NULL, NULL);
		if (lib != NULL &&
		    (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags)) !=
		    DKIM_STAT_OK ||
		    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, list, sizeof(list)) !=
		    DKIM_STAT_OK ||
		    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, list, sizeof(list)) !=
		    DKIM_STAT_OK ||
		    (ttl > 0 && dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNATURETTL, &ttl,
		    sizeof(ttl)) != DKIM_STAT_OK) ||
		    (s->fixed_time > 0 && dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FIXEDTIME,
		    &s->fixed_time, sizeof(s->fixed_time)) != DKIM_STAT_OK))) {
			dkim_close(lib);
			lib = NULL;
		}
		if (lib != NULL) {
			s->ttl[s->nlibs] = ttl;
			s->lib[s->nlibs++] = lib;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return lib;
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
	for (int i = 0; i < m->nkeys; i++)
		if (m->dkim[i] != NULL)
			dkim_free(m->dkim[i]);
	own_free(m);
	free(m->hdr);
	free(m);
}

/* fail - nothing will be signed */
static void
fail(struct dkims_msg *m, const char *why)
{
	for (int i = 0; i < m->nkeys; i++)
		if (m->dkim[i] != NULL)
			dkim_free(m->dkim[i]);
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

/* bh_out - canonical body bytes into the body hash */
static void
bh_out(void *arg, const void *buf, size_t len)
{
	(void)EVP_DigestUpdate(arg, buf, len);
}

/* end_of_header - find the keys, start a handle for each, give it the fields */
static void
end_of_header(struct dkims_msg *m, size_t hlen)
{
	struct owner_from of;
	const struct dkim_key *k[DKIM_KEYS_PER_DOMAIN];
	DKIM_LIB *lib;
	int n;

	m->hdr_done = true;
	if (owner_from_parse(m->hdr, hlen, &of) != 1) {
		fail(m, "no single From mailbox");
		return;
	}
	snprintf(m->from_domain, sizeof(m->from_domain), "%s", of.all[1]);
	n = dkim_keys_for(m->keys, m->from_domain, k, DKIM_KEYS_PER_DOMAIN);
	if (n == 0) {
		fail(m, "no key for the From domain");
		return;
	}
	lib = lib_for(m->s, m->expiry_s);
	if (lib == NULL) {
		fail(m, "libopendkim refused its options");
		return;
	}
	bool own = false;
	for (int i = 0; i < n; i++) {
		DKIM_STAT st;

		m->key[i] = k[i];
		m->nkeys = i + 1;
		if (k[i]->alg == DKIM_KEY_ED25519_SHA256) {
			own = true;
			continue;
		}
		m->dkim[i] = dkim_sign(lib, unconst("moat"), NULL, unconst(k[i]->pem),
		    unconst(k[i]->selector), unconst(k[i]->domain), DKIM_CANON_RELAXED,
		    DKIM_CANON_RELAXED, k[i]->alg == DKIM_KEY_ED25519_SHA256 ?
		    DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256, -1, &st);
		if (m->dkim[i] == NULL) {
			fail(m, "libopendkim refused the key");
			return;
		}
	}
	/* each field without its final CRLF; folds stay */
	struct field *f = xmalloc(sizeof(*f) * FIELDS_MAX);
	int nf = split_fields(m->hdr, hlen, f, FIELDS_MAX);

	if (nf < 0) {
		free(f);
		fail(m, "more than 1000 header fields");
		return;
	}
	for (int j = 0; j < nf; j++)
		for (int i = 0; i < m->nkeys; i++)
			if (m->dkim[i] != NULL && dkim_header(m->dkim[i], unconst(m->hdr + f[j].at),
			    f[j].len) != DKIM_STAT_OK) {
				free(f);
				fail(m, "libopendkim refused a header field");
				return;
			}
	if (own && own_start(m, f, nf) != 0) {
		free(f);
		fail(m, "a header field to sign is too long");
		return;
	}
	free(f);
	for (int i = 0; i < m->nkeys; i++)
		if (m->dkim[i] != NULL && dkim_eoh(m->dkim[i]) != DKIM_STAT_OK) {
			fail(m, "libopendkim refused the header");
			return;
		}
	free(m->hdr);
	m->hdr = NULL;
}

/* body - bytes after the header's empty line */
static void
body(struct dkims_msg *m, const char *buf, size_t len)
{
	if (m->bh != NULL)
		dkim_bcanon_feed(&m->bc, buf, len, bh_out, m->bh);
	for (int i = 0; i < m->nkeys && len > 0; i++)
		if (m->dkim[i] != NULL && dkim_body(m->dkim[i], unconst(buf), len) != DKIM_STAT_OK) {
			fail(m, "libopendkim refused the body");
			return;
		}
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

/* own_sign - our DKIM-Signature field for key k (CRLF-terminated,
 * allocated), or NULL. bh: the body hash in base64. */
static char *
own_sign(struct dkims_msg *m, const struct dkim_key *k, const char *bh, size_t *len)
{
	char head[1024], canon[8192], b64[128];
	unsigned char digest[32], sig[64];
	size_t hlen, cl, siglen = sizeof(sig);
	unsigned dlen = 0;
	char *field = NULL, *out = NULL;
	size_t flen = 0;
	uint64_t t = m->s->fixed_time > 0 ? m->s->fixed_time : (uint64_t)time(NULL);
	EVP_MD_CTX *ctx;
	int ok;

	if (m->expiry_s > 0)
		hlen = (size_t)snprintf(head, sizeof(head), "DKIM-Signature: v=1; a=ed25519-sha256; "
		    "c=relaxed/relaxed; d=%s;\r\n\ts=%s; t=%llu; x=%llu;\r\n\t", k->domain,
		    k->selector, (unsigned long long)t, (unsigned long long)(t + m->expiry_s));
	else
		hlen = (size_t)snprintf(head, sizeof(head), "DKIM-Signature: v=1; a=ed25519-sha256; "
		    "c=relaxed/relaxed; d=%s;\r\n\ts=%s; t=%llu;\r\n\t", k->domain, k->selector,
		    (unsigned long long)t);
	if (hlen >= sizeof(head))
		return NULL;
	append(&field, &flen, head, hlen);
	append(&field, &flen, m->hlist, strlen(m->hlist));
	append(&field, &flen, ";\r\n\tbh=", 7);
	append(&field, &flen, bh, strlen(bh));
	append(&field, &flen, ";\r\n\tb=", 6);
	/* the header hash: the signed fields, then this one with b= empty,
	 * relaxed, without its CRLF (RFC 6376 3.7) */
	cl = dkim_hcanon(field, flen, canon, sizeof(canon));
	ctx = EVP_MD_CTX_new();
	ok = cl >= 2 && ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, m->hdata, m->hdata_len) == 1 &&
	    EVP_DigestUpdate(ctx, canon, cl - 2) == 1 &&
	    EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == sizeof(digest);
	EVP_MD_CTX_free(ctx);
	/* RFC 8463: PureEdDSA over the SHA-256 hash */
	ctx = ok ? EVP_MD_CTX_new() : NULL;
	ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
	    EVP_DigestSign(ctx, sig, &siglen, digest, sizeof(digest)) == 1 && siglen == 64;
	EVP_MD_CTX_free(ctx);
	if (ok) {
		EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
		append(&field, &flen, b64, strlen(b64));
		append(&field, &flen, "\r\n", 2);
		out = field;
		*len = flen;
	} else
		free(field);
	return out;
}

/* lib_sign - libopendkim's DKIM-Signature field (its LF folds made
 * CRLF; allocated), or NULL */
static char *
lib_sign(DKIM *dkim, size_t *len)
{
	static const char name[] = "DKIM-Signature: ";
	u_char *sig = NULL;
	size_t slen = 0, o;
	char *out;

	if (dkim_eom(dkim, NULL) != DKIM_STAT_OK ||
	    dkim_getsighdr_d(dkim, sizeof(name) - 1, &sig, &slen) != DKIM_STAT_OK || sig == NULL)
		return NULL;
	out = xmalloc(sizeof(name) + 2 * slen + 3);
	memcpy(out, name, sizeof(name) - 1);
	o = sizeof(name) - 1;
	for (size_t j = 0; j < slen; j++) {
		if (sig[j] == '\r')
			continue;
		if (sig[j] == '\n')
			out[o++] = '\r';
		out[o++] = (char)sig[j];
	}
	out[o++] = '\r';
	out[o++] = '\n';
	*len = o;
	return out;
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
	if (m->bh != NULL) {
		unsigned char d[32];
		unsigned dl = 0;

		dkim_bcanon_end(&m->bc, bh_out, m->bh);
		if (EVP_DigestFinal_ex(m->bh, d, &dl) != 1 || dl != sizeof(d)) {
			snprintf(info, infolen, "OpenSSL could not hash the body");
			return NULL;
		}
		EVP_EncodeBlock((unsigned char *)bh64, d, (int)dl);
	}
	for (int i = 0; i < m->nkeys; i++) {
		size_t flen = 0;
		char *f = m->dkim[i] == NULL ? own_sign(m, m->key[i], bh64, &flen) :
		    lib_sign(m->dkim[i], &flen);

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
