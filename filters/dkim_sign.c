/*
 * dkim_sign - DKIM signing with libopendkim (see dkim_sign.h)
 *
 * libopendkim 2.11 (Debian 12) signs both rsa-sha256 and ed25519-sha256
 * (DKIM_SIGN_ED25519SHA256, keys as PEM), so one code path serves both.
 * Its header list and over-signing list are options of the library
 * handle, as is the signature lifetime (x=); a struct dkims therefore
 * keeps one handle per lifetime in use (a reload may change it), made on
 * first use under a lock and kept until dkims_free().
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opendkim/dkim.h>

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
	DKIM *dkim[DKIM_KEYS_PER_DOMAIN];
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

void
dkims_msg_free(struct dkims_msg *m)
{
	if (m == NULL)
		return;
	for (int i = 0; i < m->nkeys; i++)
		if (m->dkim[i] != NULL)
			dkim_free(m->dkim[i]);
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
	m->nkeys = 0;
	m->failed = true;
	m->why = why;
	m->hdr_done = true;
	free(m->hdr);
	m->hdr = NULL;
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
	for (int i = 0; i < n; i++) {
		DKIM_STAT st;

		m->key[i] = k[i];
		m->dkim[i] = dkim_sign(lib, unconst("moat"), NULL, unconst(k[i]->pem),
		    unconst(k[i]->selector), unconst(k[i]->domain), DKIM_CANON_RELAXED,
		    DKIM_CANON_RELAXED, k[i]->alg == DKIM_KEY_ED25519_SHA256 ?
		    DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256, -1, &st);
		m->nkeys = i + 1;
		if (m->dkim[i] == NULL) {
			fail(m, "libopendkim refused the key");
			return;
		}
	}
	/* each field without its final CRLF; folds stay */
	for (size_t a = 0; a < hlen; ) {
		size_t b = a;

		for (;;) {
			const char *nl = memchr(m->hdr + b, '\n', hlen - b);

			b = nl != NULL ? (size_t)(nl - m->hdr) + 1 : hlen;
			if (b >= hlen || (m->hdr[b] != ' ' && m->hdr[b] != '\t'))
				break;
		}
		size_t flen = b - a;
		if (flen >= 2 && m->hdr[b - 2] == '\r' && m->hdr[b - 1] == '\n')
			flen -= 2;
		for (int i = 0; i < m->nkeys; i++)
			if (flen > 0 && dkim_header(m->dkim[i], unconst(m->hdr + a), flen) !=
			    DKIM_STAT_OK) {
				fail(m, "libopendkim refused a header field");
				return;
			}
		a = b;
	}
	for (int i = 0; i < m->nkeys; i++)
		if (dkim_eoh(m->dkim[i]) != DKIM_STAT_OK) {
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
	for (int i = 0; i < m->nkeys && len > 0; i++)
		if (dkim_body(m->dkim[i], unconst(buf), len) != DKIM_STAT_OK) {
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

/* dkims_msg_finish - the DKIM-Signature fields, or NULL */
char *
dkims_msg_finish(struct dkims_msg *m, size_t *len, char *info, size_t infolen)
{
	static const char name[] = "DKIM-Signature: ";
	char *out = NULL;
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
	for (int i = 0; i < m->nkeys; i++) {
		u_char *sig = NULL;
		size_t slen = 0;

		if (dkim_eom(m->dkim[i], NULL) != DKIM_STAT_OK ||
		    dkim_getsighdr_d(m->dkim[i], sizeof(name) - 1, &sig, &slen) != DKIM_STAT_OK ||
		    sig == NULL) {
			snprintf(info, infolen, "libopendkim could not sign with %s",
			    m->key[i]->selector);
			free(out);
			*len = 0;
			return NULL;
		}
		out = xrealloc(out, olen + sizeof(name) + 2 * slen + 3);
		memcpy(out + olen, name, sizeof(name) - 1);
		olen += sizeof(name) - 1;
		for (size_t j = 0; j < slen; j++) {
			if (sig[j] == '\r')
				continue;
			if (sig[j] == '\n')
				out[olen++] = '\r';
			out[olen++] = (char)sig[j];
		}
		out[olen++] = '\r';
		out[olen++] = '\n';
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
