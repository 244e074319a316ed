/*
 * dkim - DKIM verification over libopendkim; see dkim.h for the contract
 *
 * NAMES. libopendkim owns the dkim_* namespace (dkim_verify, dkim_free,
 * struct dkim, ...), so this module's symbols are dkimv_* ("verify").
 *
 * STREAMING. dkimv_msg_feed() runs on the event loop. It splits the
 * header into fields (a field ends at a line end not followed by SP or
 * HTAB) and passes each whole field to dkim_header(); at the blank line
 * it calls dkim_eoh(). With DKIM_LIBFLAGS_DELAYSIGPROC libopendkim
 * processes signatures (and so fetches keys) only in dkim_eom(), which
 * dkimv_msg_finish() calls on the work pool. Body bytes go straight to
 * dkim_body(), whose canonicalisers keep their own state across calls,
 * so chunk boundaries do not matter. Nothing of the body is stored.
 *
 * BOUNDS. The field being collected is the only buffer; it grows to at
 * most max_field_bytes. Bytes and fields of the whole header are
 * counted. Over a bound the message is done with (DKIMV_TOO_BIG): moat
 * never verifies a header it cut. At most max_signatures signatures are
 * processed (the prescreen ignores the rest), so a message with 1,000
 * DKIM-Signature fields costs at most that many key lookups.
 *
 * KEYS. libopendkim calls key_lookup() for each signature it processes.
 * It asks moat's hook (DNS by default), remembers per signature what the
 * lookup said (so a DNS timeout is a temperror, not a "no key"), and
 * rewrites a bare PKCS#1 RSAPublicKey in p= to SubjectPublicKeyInfo,
 * the only form libopendkim's d2i_PUBKEY reads.
 */
#include "dkim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <dlfcn.h>
#include <pthread.h>

#include <opendkim/dkim.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dmarc_record.h"
#include "dns.h"
#include "siphash.h"
#include "xalloc.h"

#define TRACK_MAX	(2 * DKIMV_MAX_SIGS)

struct dkimv {
	DKIM_LIB *lib;
	struct dkimv_conf c;
};

enum msg_state {
	MS_HEADER = 0,		/* collecting header fields */
	MS_BODY,		/* hashing the body */
	MS_NOSIG,		/* no signature: nothing to hash */
	MS_BADSIGS,		/* only signatures libopendkim refused at once */
	MS_DONE,		/* finished */
	MS_TOO_BIG,		/* a header bound was passed */
	MS_ERROR		/* libopendkim failed */
};

struct track {
	DKIM_SIGINFO *sig;
	bool sha1;			/* ignored by the prescreen for rsa-sha1 */
	bool looked_up;
	bool bad_domain;		/* d= or s= not a name: never looked up */
	enum dkimv_key key;
};

/* the length of the canonicalised body, counted as it streams by, so an
 * l= can be compared with all of it (libopendkim only reports the raw
 * length and what it hashed) */
struct canon_len {
	uint64_t done;			/* through the last non-empty line */
	uint64_t empty;			/* empty lines since then */
	uint64_t line;			/* bytes of the current line */
	bool ws;			/* relaxed: white space pending */
};

struct dkimv_msg {
	struct dkimv *v;
	DKIM *dkim;
	enum msg_state st;
	char *field;
	size_t flen, fcap;
	bool pending;			/* field holds a field not yet handed over */
	bool bol;			/* at the beginning of a header line */
	bool cr;			/* a CR waits for its LF */
	size_t hbytes;
	unsigned nfields;
	struct track t[TRACK_MAX];
	int nt;
	struct canon_len simple, relaxed;
	bool body_cr;			/* a body CR waits for its LF */
	bool count_canon;		/* a signature has l=: the body's length matters */
};

const char *
dkimv_result_name(enum dkimv_result r)
{
	static const char *const n[] = { "none", "pass", "fail", "neutral", "policy",
		"temperror", "permerror" };

	return (unsigned)r < sizeof n / sizeof n[0] ? n[r] : "none";
}

const char *
dkimv_alg_name(enum dkimv_alg a)
{
	switch (a) {
	case DKIMV_ALG_RSA_SHA1:
		return "rsa-sha1";
	case DKIMV_ALG_RSA_SHA256:
		return "rsa-sha256";
	case DKIMV_ALG_ED25519_SHA256:
		return "ed25519-sha256";
	default:
		return "unknown";
	}
}

/* unconst - libopendkim takes u_char * for input it only reads */
static u_char *
unconst(const void *p)
{
	return (u_char *)(uintptr_t)p;
}

/* track_of - the tracking slot of a signature (created when add) */
static struct track *
track_of(struct dkimv_msg *m, DKIM_SIGINFO *sig, bool add)
{
	for (int i = 0; i < m->nt; i++)
		if (m->t[i].sig == sig)
			return &m->t[i];
	if (!add || m->nt >= TRACK_MAX)
		return NULL;
	memset(&m->t[m->nt], 0, sizeof m->t[0]);
	m->t[m->nt].sig = sig;
	return &m->t[m->nt++];
}

/* ------------------------------------------------------------------ */
/* keys */

enum dkimv_key
dkimv_resolver_key(void *ctx, const char *name, char *out, size_t size)
{
	const struct dkimv_conf *c = ctx;
	struct dns_answer *a = NULL;
	enum dkimv_key k;

	dns_query_sync(name, DNS_T_TXT, c != NULL && c->timeout_ms ? c->timeout_ms : 5000, &a);
	if (a == NULL)
		return DKIMV_KEY_TEMPERROR;
	switch (a->status) {
	case DNS_OK:
		if (a->n > 1)
			k = DKIMV_KEY_MULTIPLE;
		else if (dns_rr_txt(a, 0, out, size) < 0)
			k = DKIMV_KEY_TOOBIG;
		else
			k = DKIMV_KEY_FOUND;
		break;
	case DNS_NODATA:
	case DNS_NXDOMAIN:
		k = DKIMV_KEY_NONE;
		break;
	default:
		k = DKIMV_KEY_TEMPERROR;
		break;
	}
	dns_answer_free(a);
	return k;
}

/* is_selector - dot-separated labels of letters, digits, '-', '_' */
static bool
is_selector(const char *s)
{
	size_t lab = 0, n = 0;

	for (; *s; s++, n++) {
		char c = *s;
		if (c == '.') {
			if (lab == 0)
				return false;
			lab = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_') {
			if (++lab > 63)
				return false;
		} else {
			return false;
		}
	}
	return lab > 0 && n < 64;
}

/*
 * Parsed keys, kept. libopendkim turns each signature's key record into an
 * EVP_PKEY with OpenSSL's d2i_PUBKEY_bio() every time it verifies, and
 * OpenSSL 3's generic decoder makes that about 250 microseconds: most of a
 * verification. This definition stands in front of libcrypto's (the
 * dynamic linker binds libopendkim's call to the executable's symbol
 * first): a key already seen is handed out again with one more reference
 * (libopendkim's EVP_PKEY_free drops it), a new one is parsed by the real
 * function and kept. Only plain calls on memory BIOs (libopendkim's) are
 * cached; any other goes straight through. A verification only reads the
 * key, which OpenSSL allows from several threads at once.
 */
#define KEYCACHE_MAX 64

struct keycache_ent {
	uint64_t h, used;
	unsigned char *der;
	size_t len;
	EVP_PKEY *pkey;
};

static struct keycache_ent keycache[KEYCACHE_MAX];
static uint64_t keycache_tick, keycache_k0, keycache_k1;
static pthread_mutex_t keycache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t keycache_once = PTHREAD_ONCE_INIT;
static EVP_PKEY *(*real_d2i_PUBKEY_bio)(BIO *, EVP_PKEY **);

EVP_PKEY *d2i_PUBKEY_bio(BIO *bp, EVP_PKEY **a);

static void
keycache_init(void)
{
	real_d2i_PUBKEY_bio = (EVP_PKEY *(*)(BIO *, EVP_PKEY **))dlsym(RTLD_NEXT, "d2i_PUBKEY_bio");
	keycache_k0 = (uint64_t)(uintptr_t)&keycache ^ (uint64_t)time(NULL);
	keycache_k1 = keycache_k0 * 0x9e3779b97f4a7c15ULL;
}

EVP_PKEY *
d2i_PUBKEY_bio(BIO *bp, EVP_PKEY **a)
{
	char *data = NULL;
	long n;
	uint64_t h;
	EVP_PKEY *k = NULL;
	int slot = 0;

	pthread_once(&keycache_once, keycache_init);
	if (real_d2i_PUBKEY_bio == NULL)
		return NULL;
	if (a != NULL || BIO_method_type(bp) != BIO_TYPE_MEM ||
	    (n = BIO_get_mem_data(bp, &data)) <= 0 || n > 4096 || data == NULL)
		return real_d2i_PUBKEY_bio(bp, a);
	h = siphash24(keycache_k0, keycache_k1, data, (size_t)n);
	pthread_mutex_lock(&keycache_lock);
	for (int i = 0; i < KEYCACHE_MAX; i++) {
		struct keycache_ent *e = &keycache[i];

		if (e->pkey != NULL && e->h == h && e->len == (size_t)n &&
		    memcmp(e->der, data, (size_t)n) == 0) {
			e->used = ++keycache_tick;
			if (EVP_PKEY_up_ref(e->pkey) == 1)
				k = e->pkey;
			break;
		}
		if (keycache[i].used < keycache[slot].used)
			slot = i;	/* the least recently used, to replace */
	}
	pthread_mutex_unlock(&keycache_lock);
	if (k != NULL)
		return k;
	k = real_d2i_PUBKEY_bio(bp, NULL);
	if (k == NULL || EVP_PKEY_up_ref(k) != 1)
		return k;
	pthread_mutex_lock(&keycache_lock);
	{
		struct keycache_ent *e = &keycache[slot];
		EVP_PKEY *old = e->pkey;
		unsigned char *oldder = e->der;

		e->pkey = k;
		e->der = (unsigned char *)xmemdup(data, (size_t)n);
		e->len = (size_t)n;
		e->h = h;
		e->used = ++keycache_tick;
		pthread_mutex_unlock(&keycache_lock);
		EVP_PKEY_free(old);
		free(oldder);
	}
	return k;
}

/* pkcs1_fix - when p= holds a bare PKCS#1 RSAPublicKey, rewrite it as
 * SubjectPublicKeyInfo; the record is rewritten in place (rec, size).
 * Any other record is left as it is. */
static void
pkcs1_fix(char *rec, size_t size)
{
	char *p = NULL, *e, *s;
	unsigned char der[2048], spki[2560], *q;
	char b64[3500];
	size_t dl = 0;
	int n;
	EVP_PKEY *key;
	const unsigned char *cp;

	/* find the p= tag (a tag name starts the record or follows ';') */
	for (s = rec; *s; s++) {
		char *t = s;
		while (*t == ' ' || *t == '\t')
			t++;
		if (t[0] == 'p' && (t[1] == '=' || t[1] == ' ' || t[1] == '\t')) {
			t++;
			while (*t == ' ' || *t == '\t')
				t++;
			if (*t == '=') {
				p = t + 1;
				break;
			}
		}
		s = strchr(s, ';');
		if (s == NULL)
			break;
	}
	if (p == NULL)
		return;
	for (e = p; *e && *e != ';'; e++)
		;
	/* base64 without the white space */
	{
		char clean[3500];
		size_t cl = 0;
		for (char *x = p; x < e; x++) {
			if (*x == ' ' || *x == '\t' || *x == '\r' || *x == '\n')
				continue;
			if (cl + 1 >= sizeof clean)
				return;
			clean[cl++] = *x;
		}
		if (cl == 0 || cl % 4 != 0 || cl / 4 * 3 > sizeof der)
			return;
		n = EVP_DecodeBlock(der, (const unsigned char *)clean, (int)cl);
		if (n < 0)
			return;
		dl = (size_t)n;
		if (cl >= 1 && clean[cl - 1] == '=')
			dl--;
		if (cl >= 2 && clean[cl - 2] == '=')
			dl--;
	}
	/* SubjectPublicKeyInfo is SEQUENCE { SEQUENCE { algorithm ... } ... },
	 * PKCS#1 RSAPublicKey is SEQUENCE { INTEGER n, INTEGER e }: the tag
	 * after the outer header tells them apart without a full parse
	 * (OpenSSL 3's generic decoder costs hundreds of microseconds) */
	{
		size_t h = 2;

		if (dl < 4 || der[0] != 0x30)
			return;
		if (der[1] & 0x80) {
			size_t nl = der[1] & 0x7f;

			if (nl < 1 || nl > 2)
				return;
			h = 2 + nl;
		}
		if (h >= dl || der[h] != 0x02)
			return;		/* SubjectPublicKeyInfo (or garbage): left as it is */
	}
	cp = der;
	key = d2i_PublicKey(EVP_PKEY_RSA, NULL, &cp, (long)dl);
	if (key == NULL)
		return;		/* garbage: libopendkim will say so */
	n = i2d_PUBKEY(key, NULL);
	if (n <= 0 || (size_t)n > sizeof spki) {
		EVP_PKEY_free(key);
		return;
	}
	q = spki;
	n = i2d_PUBKEY(key, &q);
	EVP_PKEY_free(key);
	if (n <= 0 || (size_t)(4 * ((n + 2) / 3)) + 1 > sizeof b64)
		return;
	EVP_EncodeBlock((unsigned char *)b64, spki, n);
	{
		size_t head = (size_t)(p - rec), bl = strlen(b64), tail = strlen(e);
		if (head + bl + tail + 1 > size)
			return;
		memmove(rec + head + bl, e, tail + 1);
		memcpy(rec + head, b64, bl);
	}
}

/* key_lookup - libopendkim's key hook: moat's resolver, never its own */
static DKIM_CBSTAT
key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	struct dkimv_msg *m = dkim_get_user_context(dkim);
	const char *d = (const char *)dkim_sig_getdomain(sig);
	const char *s = (const char *)dkim_sig_getselector(sig);
	char name[600], norm[DMARC_DOMAIN_SIZE], rec[DKIMV_KEY_MAX + 1];
	struct track *t;
	dkimv_key_fn fn;
	void *ctx;
	enum dkimv_key k;

	if (m == NULL)
		return DKIM_CBSTAT_NOTFOUND;
	if (d == NULL || s == NULL || !is_selector(s) ||
	    dmarc_domain_norm(d, strlen(d), norm, sizeof norm) < 0) {
		if ((t = track_of(m, sig, true)) != NULL)
			t->bad_domain = true;
		return DKIM_CBSTAT_NOTFOUND;
	}
	snprintf(name, sizeof name, "%s._domainkey.%s", s, norm);
	fn = m->v->c.key_lookup ? m->v->c.key_lookup : dkimv_resolver_key;
	ctx = m->v->c.key_lookup ? m->v->c.key_ctx : &m->v->c;
	k = fn(ctx, name, rec, sizeof rec);
	if ((t = track_of(m, sig, true)) != NULL) {
		t->looked_up = true;
		t->key = k;
	}
	switch (k) {
	case DKIMV_KEY_FOUND:
		break;
	case DKIMV_KEY_NONE:
		return DKIM_CBSTAT_NOTFOUND;
	default:
		return DKIM_CBSTAT_ERROR;
	}
	pkcs1_fix(rec, sizeof rec);
	if (strlen(rec) + 1 > buflen) {
		if (t != NULL)
			t->key = DKIMV_KEY_TOOBIG;
		return DKIM_CBSTAT_ERROR;
	}
	memcpy(buf, rec, strlen(rec) + 1);
	return DKIM_CBSTAT_CONTINUE;
}

/* prescreen - cap the signatures; refuse rsa-sha1 unless allowed */
static DKIM_CBSTAT
prescreen(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
	struct dkimv_msg *m = dkim_get_user_context(dkim);
	unsigned max;

	if (m == NULL)
		return DKIM_CBSTAT_CONTINUE;
	max = m->v->c.max_signatures;
	for (int i = 0; i < nsigs; i++) {
		dkim_alg_t alg = DKIM_SIGN_UNKNOWN;

		if ((unsigned)i >= max) {
			dkim_sig_ignore(sigs[i]);	/* counted by finish */
			continue;
		}
		/* a signature libopendkim already refused keeps its own error */
		if (dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_UNKNOWN &&
		    dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_OK)
			continue;
		if (!m->v->c.allow_rsa_sha1 && dkim_sig_getsignalg(sigs[i], &alg) == DKIM_STAT_OK &&
		    alg == DKIM_SIGN_RSASHA1) {
			struct track *t = track_of(m, sigs[i], true);
			if (t != NULL)
				t->sha1 = true;
			dkim_sig_ignore(sigs[i]);
		}
	}
	return DKIM_CBSTAT_CONTINUE;
}

/* ------------------------------------------------------------------ */
/* library handle */

struct dkimv *
dkimv_new(const struct dkimv_conf *c, char *err, size_t errlen)
{
	struct dkimv *v = xcalloc(1, sizeof *v);
	unsigned int flags = DKIM_LIBFLAGS_DELAYSIGPROC | DKIM_LIBFLAGS_BADSIGHANDLES;
	unsigned int bits;

	if (c != NULL)
		v->c = *c;
	if (v->c.min_key_bits < 1024)
		v->c.min_key_bits = 1024;
	if (v->c.max_signatures == 0 || v->c.max_signatures > DKIMV_MAX_SIGS)
		v->c.max_signatures = DKIMV_MAX_SIGS;
	if (v->c.max_field_bytes == 0)
		v->c.max_field_bytes = 102400;
	if (v->c.max_header_bytes == 0)
		v->c.max_header_bytes = 1024 * 1024;
	if (v->c.max_fields == 0)
		v->c.max_fields = 1000;
	v->lib = dkim_init(NULL, NULL);
	if (v->lib == NULL) {
		snprintf(err, errlen, "libopendkim: dkim_init failed");
		free(v);
		return NULL;
	}
	bits = v->c.min_key_bits;
	if (dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof flags) !=
	    DKIM_STAT_OK ||
	    dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &bits, sizeof bits) !=
	    DKIM_STAT_OK) {
		snprintf(err, errlen, "libopendkim: cannot set options");
		dkimv_free(v);
		return NULL;
	}
	if (v->c.fixed_time != 0) {
		uint64_t t = v->c.fixed_time, drift = 300;
		time_t now = time(NULL);
		/* libopendkim checks x= and t= against time(), not its fixed
		 * time: widen the allowed drift by how far the pin lies behind */
		if (now > 0 && (uint64_t)now > t)
			drift += (uint64_t)now - t;
		if (dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_FIXEDTIME, &t, sizeof t) !=
		    DKIM_STAT_OK ||
		    dkim_options(v->lib, DKIM_OP_SETOPT, DKIM_OPTS_CLOCKDRIFT, &drift, sizeof drift) !=
		    DKIM_STAT_OK) {
			snprintf(err, errlen, "libopendkim: cannot pin the clock");
			dkimv_free(v);
			return NULL;
		}
	}
	dkim_set_key_lookup(v->lib, key_lookup);
	dkim_set_prescreen(v->lib, prescreen);
	return v;
}

void
dkimv_free(struct dkimv *v)
{
	if (v == NULL)
		return;
	if (v->lib != NULL)
		dkim_close(v->lib);
	free(v);
}

/* ------------------------------------------------------------------ */
/* one message */

struct dkimv_msg *
dkimv_msg_new(struct dkimv *v)
{
	struct dkimv_msg *m = xcalloc(1, sizeof *m);
	DKIM_STAT st = DKIM_STAT_OK;

	m->v = v;
	m->bol = true;
	m->dkim = dkim_verify(v->lib, (const u_char *)"moat", NULL, &st);
	if (m->dkim == NULL)
		m->st = MS_ERROR;
	else
		dkim_set_user_context(m->dkim, m);
	return m;
}

void
dkimv_msg_free(struct dkimv_msg *m)
{
	if (m == NULL)
		return;
	if (m->dkim != NULL)
		dkim_free(m->dkim);
	free(m->field);
	free(m);
}

/* field_addn - k bytes into the field being collected, within
 * max_field_bytes (false: over it, nothing added) */
static bool
field_addn(struct dkimv_msg *m, const char *p, size_t k)
{
	if (m->flen + k > m->v->c.max_field_bytes)
		return false;
	if (m->flen + k > m->fcap) {
		size_t nc = m->fcap ? m->fcap : 256;

		while (nc < m->flen + k)
			nc *= 2;
		if (nc > m->v->c.max_field_bytes)
			nc = m->v->c.max_field_bytes;
		m->field = xrealloc(m->field, nc);
		m->fcap = nc;
	}
	memcpy(m->field + m->flen, p, k);
	m->flen += k;
	return true;
}

/* field_add - one byte into the field being collected */
static bool
field_add(struct dkimv_msg *m, char c)
{
	return field_addn(m, &c, 1);
}

/* field_flush - hand the collected field to libopendkim */
static void
field_flush(struct dkimv_msg *m)
{
	DKIM_STAT st;

	if (!m->pending)
		return;
	m->pending = false;
	if (++m->nfields > m->v->c.max_fields) {
		m->st = MS_TOO_BIG;
		return;
	}
	/* a field libopendkim finds malformed (no colon) is skipped; only a
	 * resource failure ends verification */
	st = dkim_header(m->dkim, unconst(m->field), m->flen);
	if (st == DKIM_STAT_NORESOURCE || st == DKIM_STAT_INTERNAL)
		m->st = MS_ERROR;
	m->flen = 0;
}

/* end_of_header - the blank line (or the end of a header-only message) */
static void
end_of_header(struct dkimv_msg *m)
{
	DKIM_STAT st;

	field_flush(m);
	if (m->st != MS_HEADER)
		return;
	st = dkim_eoh(m->dkim);
	if (st == DKIM_STAT_OK) {
		DKIM_SIGINFO **sigs = NULL;
		int n = 0;
		u_char ltag[] = "l";

		m->st = MS_BODY;
		/* the canonical body length is counted only for an l= signature */
		if (dkim_getsiglist(m->dkim, &sigs, &n) == DKIM_STAT_OK)
			for (int i = 0; i < n && sigs != NULL; i++)
				if (dkim_sig_gettagvalue(sigs[i], false, ltag) != NULL)
					m->count_canon = true;
	}
	else if (st == DKIM_STAT_NOSIG) {
		DKIM_SIGINFO **sigs = NULL;
		int n = 0;
		/* every signature failed its syntax checks (or none exists) */
		if (dkim_getsiglist(m->dkim, &sigs, &n) == DKIM_STAT_OK && n > 0)
			m->st = MS_BADSIGS;
		else
			m->st = MS_NOSIG;
	}
	else
		m->st = MS_ERROR;
}

/* header_byte - one header byte; returns true at the end of the header */
static bool
header_byte(struct dkimv_msg *m, char c)
{
	bool eol = false;

	if (m->cr) {
		m->cr = false;
		if (c == '\n') {
			eol = true;
		} else {
			/* a lone CR stays in the field */
			if (m->bol) {
				field_flush(m);
				m->pending = true;
				m->bol = false;
			}
			if (!field_add(m, '\r')) {
				m->st = MS_TOO_BIG;
				return false;
			}
		}
	}
	if (!eol && c == '\r') {
		m->cr = true;
		return false;
	}
	if (!eol && c == '\n')
		eol = true;
	if (m->bol) {
		if (eol) {
			end_of_header(m);
			return true;
		}
		if ((c == ' ' || c == '\t') && m->pending) {
			if (!field_add(m, '\r') || !field_add(m, '\n'))
				m->st = MS_TOO_BIG;
		} else {
			field_flush(m);
			if (m->st != MS_HEADER)
				return false;
			m->pending = true;
		}
		m->bol = false;
	} else if (eol) {
		m->bol = true;
		return false;
	}
	if (!field_add(m, c))
		m->st = MS_TOO_BIG;
	return false;
}

/* canon_eol - a body line ended */
static void
canon_eol(struct canon_len *c)
{
	if (c->line == 0) {
		c->empty++;
	} else {
		c->done += 2 * c->empty + c->line + 2;
		c->empty = 0;
	}
	c->line = 0;
	c->ws = false;
}

/* canon_byte - one byte of a body line (not the CRLF) */
static void
canon_byte(struct dkimv_msg *m, unsigned char c)
{
	m->simple.line++;
	if (c == ' ' || c == '\t') {
		m->relaxed.ws = true;
		return;
	}
	if (m->relaxed.ws) {
		m->relaxed.line++;
		m->relaxed.ws = false;
	}
	m->relaxed.line++;
}

/* canon_count - body bytes into both counters */
static void
canon_count(struct dkimv_msg *m, const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (m->body_cr) {
			m->body_cr = false;
			if (c == '\n') {
				canon_eol(&m->simple);
				canon_eol(&m->relaxed);
				continue;
			}
			canon_byte(m, '\r');
		}
		if (c == '\r')
			m->body_cr = true;
		else
			canon_byte(m, c);
	}
}

/* canon_total - the canonical body length once the body has ended */
static uint64_t
canon_total(const struct dkimv_msg *m, bool relaxed)
{
	const struct canon_len *c = relaxed ? &m->relaxed : &m->simple;
	uint64_t line = c->line + (m->body_cr ? 1 : 0);

	if (line > 0)
		return c->done + 2 * c->empty + line + 2;	/* a CRLF is added */
	if (c->done == 0)
		return relaxed ? 0 : 2;		/* empty body */
	return c->done;
}

int
dkimv_msg_feed(struct dkimv_msg *m, const char *buf, size_t len)
{
	size_t i = 0;

	while (m->st == MS_HEADER && i < len) {
		if (!m->bol && !m->cr) {
			/* inside a line: up to its CR or LF the bytes only go
			 * into the field (header_byte() would add them one by
			 * one), within the header's byte bound */
			size_t k = 0, room = m->v->c.max_header_bytes - m->hbytes;

			while (i + k < len && k < room && buf[i + k] != '\r' && buf[i + k] != '\n')
				k++;
			if (k > 0) {
				m->hbytes += k;
				if (!field_addn(m, buf + i, k)) {
					m->st = MS_TOO_BIG;
					break;
				}
				i += k;
				continue;
			}
		}
		if (++m->hbytes > m->v->c.max_header_bytes) {
			m->st = MS_TOO_BIG;
			break;
		}
		if (header_byte(m, buf[i++]))
			break;
	}
	if (m->st == MS_BODY && i < len) {
		if (m->count_canon)
			canon_count(m, buf + i, len - i);
		if (dkim_body(m->dkim, unconst(buf + i), len - i) != DKIM_STAT_OK)
			m->st = MS_ERROR;
	}
	return m->st == MS_TOO_BIG ? -1 : 0;
}

/* map_error - a libopendkim signature error as a result and a reason */
static enum dkimv_result
map_error(int err, const char **why)
{
	switch (err) {
	case DKIM_SIGERROR_BADSIG:
		*why = "signature did not verify";
		return DKIMV_FAIL;
	case DKIM_SIGERROR_TOOLARGE_L:
		*why = "l= exceeds the body";
		return DKIMV_FAIL;
	case DKIM_SIGERROR_EXPIRED:
		*why = "signature expired";
		return DKIMV_FAIL;
	case DKIM_SIGERROR_FUTURE:
		*why = "signature in the future";
		return DKIMV_FAIL;
	case DKIM_SIGERROR_TIMESTAMPS:
		*why = "x= before t=";
		return DKIMV_FAIL;
	case DKIM_SIGERROR_DOMAIN:
		*why = "invalid d= or i=";
		return DKIMV_FAIL;
	case DKIM_SIGERROR_SUBDOMAIN:
		*why = "i= not within d=";
		return DKIMV_FAIL;
	case DKIM_SIGERROR_KEYTOOSMALL:
		*why = "key too small";
		return DKIMV_POLICY;
	case DKIM_SIGERROR_NOKEY:
		*why = "no key";
		return DKIMV_PERMERROR;
	case DKIM_SIGERROR_KEYFAIL:
		*why = "key lookup failed";
		return DKIMV_TEMPERROR;
	case DKIM_SIGERROR_KEYREVOKED:
		*why = "key revoked";
		return DKIMV_PERMERROR;
	case DKIM_SIGERROR_MULTIREPLY:
		*why = "several key records";
		return DKIMV_PERMERROR;
	case DKIM_SIGERROR_DNSSYNTAX:
	case DKIM_SIGERROR_KEYVERSION:
	case DKIM_SIGERROR_KEYUNKNOWNHASH:
	case DKIM_SIGERROR_KEYHASHMISMATCH:
	case DKIM_SIGERROR_NOTEMAILKEY:
	case DKIM_SIGERROR_KEYTYPEMISSING:
	case DKIM_SIGERROR_KEYTYPEUNKNOWN:
	case DKIM_SIGERROR_KEYDECODE:
		*why = dkim_sig_geterrorstr(err);
		if (*why == NULL)
			*why = "unusable key";
		return DKIMV_PERMERROR;
	default:
		*why = dkim_sig_geterrorstr(err);
		if (*why == NULL)
			*why = "signature syntax error";
		return DKIMV_NEUTRAL;
	}
}

/* sig_result - one signature's entry */
static void
sig_result(struct dkimv_msg *m, DKIM_SIGINFO *sig, struct dkimv_sig *r)
{
	unsigned flags = dkim_sig_getflags(sig);
	int err = dkim_sig_geterror(sig);
	struct track *t = track_of(m, sig, false);
	const char *d = (const char *)dkim_sig_getdomain(sig);
	const char *s = (const char *)dkim_sig_getselector(sig);
	u_char btag[] = "b";
	const char *b = (const char *)dkim_sig_gettagvalue(sig, false, btag);
	u_char atag[] = "a";
	const char *a = (const char *)dkim_sig_gettagvalue(sig, false, atag);
	unsigned int bits = 0;
	ssize_t msglen = -1, canonlen = -1, signlen = -1;
	dkim_canon_t hc = DKIM_CANON_SIMPLE, bc = DKIM_CANON_SIMPLE;

	memset(r, 0, sizeof *r);
	if (d == NULL || dmarc_domain_norm(d, strlen(d), r->domain, sizeof r->domain) < 0)
		r->domain[0] = '\0';
	if (s != NULL && is_selector(s))
		snprintf(r->selector, sizeof r->selector, "%s", s);
	for (size_t k = 0, o = 0; b != NULL && b[k] && o < 12; k++) {
		char c = b[k];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '+' || c == '/')
			r->b_prefix[o++] = c;
	}
	/* from the a= text: libopendkim fills its code only for signatures
	 * that passed its syntax checks */
	if (a != NULL)
		r->alg = strcasecmp(a, "rsa-sha256") == 0 ? DKIMV_ALG_RSA_SHA256 :
		    strcasecmp(a, "rsa-sha1") == 0 ? DKIMV_ALG_RSA_SHA1 :
		    strcasecmp(a, "ed25519-sha256") == 0 ? DKIMV_ALG_ED25519_SHA256 :
		    DKIMV_ALG_UNKNOWN;
	if (dkim_sig_getkeysize(sig, &bits) == DKIM_STAT_OK)
		r->key_bits = bits;

	if (t != NULL && t->sha1) {
		r->result = DKIMV_POLICY;
		r->reason = "rsa-sha1 not accepted";
		return;
	}
	if (t != NULL && t->bad_domain) {
		r->result = DKIMV_FAIL;
		r->reason = "invalid d= or s=";
		return;
	}
	if (t != NULL && t->looked_up && t->key != DKIMV_KEY_FOUND) {
		switch (t->key) {
		case DKIMV_KEY_NONE:
			r->result = DKIMV_PERMERROR;
			r->reason = "no key";
			break;
		case DKIMV_KEY_MULTIPLE:
			r->result = DKIMV_PERMERROR;
			r->reason = "several key records";
			break;
		case DKIMV_KEY_TOOBIG:
			r->result = DKIMV_PERMERROR;
			r->reason = "key record too large";
			break;
		default:
			r->result = DKIMV_TEMPERROR;
			r->reason = "key lookup failed";
			break;
		}
		return;
	}
	if (err == DKIM_SIGERROR_BADSIG && dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH) {
		r->result = DKIMV_FAIL;
		r->reason = "body hash did not verify";
		return;
	}
	if (err != DKIM_SIGERROR_OK && err != DKIM_SIGERROR_UNKNOWN) {
		r->result = map_error(err, &r->reason);
		return;
	}
	if (!(flags & DKIM_SIGFLAG_PROCESSED)) {
		r->result = DKIMV_NEUTRAL;
		r->reason = "not verified";
		return;
	}
	if (dkim_sig_getbh(sig) != DKIM_SIGBH_MATCH) {
		r->result = DKIMV_FAIL;
		r->reason = "body hash did not verify";
		return;
	}
	if (!(flags & DKIM_SIGFLAG_PASSED)) {
		r->result = DKIMV_FAIL;
		r->reason = "signature did not verify";
		return;
	}
	if (r->alg != DKIMV_ALG_ED25519_SHA256 && bits != 0 && bits < m->v->c.min_key_bits) {
		r->result = DKIMV_POLICY;
		r->reason = "key too small";
		return;
	}
	r->result = DKIMV_PASS;
	/* l= shorter than the canonicalised body: content past it is not
	 * authenticated (RFC 6376 8.2; D5) */
	if (dkim_sig_getcanonlen(m->dkim, sig, &msglen, &canonlen, &signlen) == DKIM_STAT_OK &&
	    signlen >= 0 && dkim_sig_getcanons(sig, &hc, &bc) == DKIM_STAT_OK &&
	    (uint64_t)signlen < canon_total(m, bc == DKIM_CANON_RELAXED)) {
		r->partial = true;
		if (!m->v->c.accept_partial_body) {
			r->result = DKIMV_POLICY;
			r->reason = "l= covers only part of the body";
		}
	}
}

void
dkimv_msg_finish(struct dkimv_msg *m, struct dkimv_outcome *out)
{
	DKIM_SIGINFO **sigs = NULL;
	int nsigs = 0;

	memset(out, 0, sizeof *out);
	if (m->st == MS_HEADER) {
		if (m->cr) {
			m->cr = false;
			header_byte(m, '\n');
		}
		if (m->st == MS_HEADER)
			end_of_header(m);
	}
	switch (m->st) {
	case MS_TOO_BIG:
		out->status = DKIMV_TOO_BIG;
		return;
	case MS_ERROR:
		out->status = DKIMV_ERROR;
		return;
	case MS_NOSIG:
	case MS_DONE:
		return;
	case MS_BODY:
		(void)dkim_eom(m->dkim, NULL);
		break;
	default:
		break;
	}
	m->st = MS_DONE;	/* a second finish reports nothing */
	if (dkim_getsiglist(m->dkim, &sigs, &nsigs) != DKIM_STAT_OK || sigs == NULL)
		return;
	for (int i = 0; i < nsigs; i++) {
		/* the prescreen ignored these (past max_signatures) */
		if ((unsigned)i >= m->v->c.max_signatures || out->nsigs >= DKIMV_MAX_SIGS) {
			out->nignored++;
			continue;
		}
		sig_result(m, sigs[i], &out->sigs[out->nsigs++]);
	}
}

void
dkimv_authres(const struct dkimv_outcome *o, struct authres *a)
{
	if (o->status == DKIMV_TOO_BIG) {
		authres_add(a, "dkim", "permerror", "message header too large");
		return;
	}
	if (o->status == DKIMV_ERROR) {
		authres_add(a, "dkim", "temperror", "verifier error");
		return;
	}
	if (o->nsigs == 0) {
		authres_add(a, "dkim", "none", NULL);
		return;
	}
	for (int i = 0; i < o->nsigs; i++) {
		const struct dkimv_sig *s = &o->sigs[i];
		int k = authres_add(a, "dkim", dkimv_result_name(s->result), s->reason);

		if (k < 0)
			return;
		if (s->domain[0])
			authres_prop(a, k, "header.d", s->domain, strlen(s->domain));
		if (s->selector[0])
			authres_prop(a, k, "header.s", s->selector, strlen(s->selector));
		if (s->b_prefix[0])
			authres_prop(a, k, "header.b", s->b_prefix, strlen(s->b_prefix));
	}
}

/* dkimv_msg_in_header - see dkim.h */
bool
dkimv_msg_in_header(const struct dkimv_msg *m)
{
	return m != NULL && m->st == MS_HEADER;
}

/* dkimv_msg_keynames - see dkim.h */
int
dkimv_msg_keynames(struct dkimv_msg *m, char (*out)[320], int max)
{
	DKIM_SIGINFO **sigs = NULL;
	int nsigs = 0, n = 0;

	if (m == NULL || m->st != MS_BODY ||
	    dkim_getsiglist(m->dkim, &sigs, &nsigs) != DKIM_STAT_OK || sigs == NULL)
		return 0;
	for (int i = 0; i < nsigs && n < max && n < (int)m->v->c.max_signatures; i++) {
		const char *d = (const char *)dkim_sig_getdomain(sigs[i]);
		const char *sel = (const char *)dkim_sig_getselector(sigs[i]);
		char dom[256];
		int r;

		if (d == NULL || sel == NULL || !is_selector(sel) ||
		    dmarc_domain_norm(d, strlen(d), dom, sizeof dom) < 0)
			continue;
		r = snprintf(out[n], 320, "%s._domainkey.%s", sel, dom);
		if (r > 0 && r < 320)
			n++;
	}
	return n;
}
