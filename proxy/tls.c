/*
 * tls - OpenSSL contexts and STARTTLS / implicit TLS (see tls.h)
 *
 * STARTTLS (RFC 3207)
 *	STARTTLS is a barrier: it runs once every earlier reply is known.
 *	moat answers 220, throws away every byte the client sent after the
 *	command (conn_starttls() drops the buffered input: CVE-2011-0411
 *	command injection), forgets the whole SMTP state (HELO, the
 *	transaction, which is also aborted upstream, and any login), and
 *	reads nothing more until the 220 is written; then the handshake runs
 *	under tls-handshake-timeout. The client must say EHLO again; that
 *	EHLO no longer offers STARTTLS and now offers AUTH on a submission
 *	listener. A failed handshake closes the connection.
 *
 * IMPLICIT TLS (RFC 8314)
 *	On a listener with implicit-tls the handshake runs before anything
 *	else; the connect rules, the checks and the greeting follow it.
 *	Plaintext there fails the handshake and closes the connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "auth.h"
#include "conn.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "rules.h"
#include "session.h"
#include "tls.h"
#include "xalloc.h"

struct tls_conf {
	SSL_CTX *server;	/* NULL: no certificate, no TLS for clients */
	SSL_CTX *client;	/* NULL: upstream-tls none */
};

/* tls_err - the last OpenSSL error as text, into buf */
static const char *
tls_err(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, size, "unknown error");
	else
		ERR_error_string_n(e, buf, size);
	ERR_clear_error();
	return buf;
}

/* tls_conf_free - both contexts */
static void
tls_conf_free(struct tls_conf *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->server);
	SSL_CTX_free(t->client);
	free(t);
}

/* tls_verify_any - client certificates: the handshake goes on whatever
 * the verdict; SSL_get_verify_result() tells afterwards */
static int
tls_verify_any(int ok, X509_STORE_CTX *x)
{
	(void)ok;
	(void)x;
	return 1;
}

/* tls_ctx_common - what both directions share */
static void
tls_ctx_common(SSL_CTX *ctx, const struct conf *c)
{
	SSL_CTX_set_min_proto_version(ctx, c->tls_min_version);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
}

/* tls_server_ctx - the server context from the files, or NULL */
static SSL_CTX *
tls_server_ctx(const struct conf *c, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char e[256];
	const char *key = c->tls_key ? c->tls_key : c->tls_cert;

	if (ctx == NULL) {
		snprintf(err, errlen, "tls: SSL_CTX_new: %s", tls_err(e, sizeof(e)));
		return NULL;
	}
	tls_ctx_common(ctx, c);
	if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1) {
		snprintf(err, errlen, "tls-certificate %s: %s", c->tls_cert, tls_err(e, sizeof(e)));
		goto fail;
	}
	if (c->tls_chain != NULL) {
		FILE *f = fopen(c->tls_chain, "re");
		X509 *x;
		int n = 0;

		if (f == NULL) {
			snprintf(err, errlen, "tls-chain %s: %s", c->tls_chain, strerror(errno));
			goto fail;
		}
		while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
			if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
				X509_free(x);
				fclose(f);
				snprintf(err, errlen, "tls-chain %s: %s", c->tls_chain, tls_err(e, sizeof(e)));
				goto fail;
			}
			n++;
		}
		fclose(f);
		ERR_clear_error();	/* the end of the file reads as an error */
		if (n == 0) {
			snprintf(err, errlen, "tls-chain %s: no PEM certificate in it", c->tls_chain);
			goto fail;
		}
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "tls-key %s: %s", key, tls_err(e, sizeof(e)));
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "tls-key %s: does not match tls-certificate %s", key, c->tls_cert);
		goto fail;
	}
	if (c->tls_ciphers != NULL && SSL_CTX_set_cipher_list(ctx, c->tls_ciphers) != 1) {
		snprintf(err, errlen, "tls-ciphers \"%s\": no cipher matches", c->tls_ciphers);
		goto fail;
	}
	if (c->tls_client_ca != NULL) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->tls_client_ca);
		if (names == NULL || SSL_CTX_load_verify_locations(ctx, c->tls_client_ca, NULL) != 1) {
			if (names)
				sk_X509_NAME_pop_free(names, X509_NAME_free);
			snprintf(err, errlen, "tls-client-ca %s: %s", c->tls_client_ca, tls_err(e, sizeof(e)));
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_any);
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, 20000);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"moatd", 5);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* tls_client_ctx - towards the upstream */
static SSL_CTX *
tls_client_ctx(const struct conf *c, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char e[256];

	if (ctx == NULL) {
		snprintf(err, errlen, "tls: SSL_CTX_new: %s", tls_err(e, sizeof(e)));
		return NULL;
	}
	tls_ctx_common(ctx, c);
	if (c->upstream_tls_ca != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, c->upstream_tls_ca, NULL) != 1) {
			snprintf(err, errlen, "upstream-tls-ca %s: %s", c->upstream_tls_ca,
			    tls_err(e, sizeof(e)));
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
}

/* tls_conf_setup - see tls.h */
int
tls_conf_setup(struct conf *c, char *err, size_t errlen)
{
	struct tls_conf *t;

	if (c->tls != NULL)
		return 0;
	if (c->tls_cert == NULL && c->upstream_tls == CONF_UTLS_NONE)
		return 0;
	t = xcalloc(1, sizeof(*t));
	if (c->tls_cert != NULL && (t->server = tls_server_ctx(c, err, errlen)) == NULL) {
		tls_conf_free(t);
		return -1;
	}
	if (c->upstream_tls != CONF_UTLS_NONE && (t->client = tls_client_ctx(c, err, errlen)) == NULL) {
		tls_conf_free(t);
		return -1;
	}
	c->tls = t;
	c->tls_free = tls_conf_free;
	return 0;
}

/* tls_client_ssl - a new TLS object towards the upstream, or NULL */
SSL *
tls_client_ssl(const struct conf *c)
{
	return c->tls != NULL && c->tls->client != NULL ? SSL_new(c->tls->client) : NULL;
}

/* tls_server_ssl - a new TLS object for a client, or NULL */
static SSL *
tls_server_ssl(const struct conf *c)
{
	return c->tls != NULL && c->tls->server != NULL ? SSL_new(c->tls->server) : NULL;
}

/* ---------------------------------------------------------------------
 * Sessions
 */

/* tls_offered - may this session say STARTTLS now? */
bool
tls_offered(const struct session *s)
{
	return s->tls == NULL && s->conf->tls != NULL && s->conf->tls->server != NULL &&
	    !(s->lflags & (CONF_LISTEN_NO_STARTTLS | CONF_LISTEN_IMPLICIT_TLS));
}

/* check_starttls - no argument, not inside TLS, offered here */
bool
check_starttls(struct session *s, const struct smtp_cmd *c)
{
	if (c->arglen != 0) {
		sess_replyf(s, "501 5.5.4 Syntax: STARTTLS");
		return sess_error(s), false;
	}
	if (s->tls != NULL) {
		sess_replyf(s, "503 5.5.1 Error: TLS already active");
		return sess_error(s), false;
	}
	if (!tls_offered(s)) {
		sess_replyf(s, "502 5.5.1 Error: command not implemented");
		return sess_error(s), false;
	}
	return true;
}

/* tls_handshake_begin - hand the connection to OpenSSL, with a deadline */
static void
tls_handshake_begin(struct session *s, SSL *ssl)
{
	size_t dropped;

	sess_enter_phase(s, SP_TLS);
	s->cmd_deadline_ms = sess_now_ms() + s->conf->tls_handshake_ms;
	dropped = conn_starttls(s->conn, ssl, true);
	if (dropped > 0) {
		s->facts |= SESS_F_STARTTLS_INJECT;
		log_msg(LOG_L_INFO, s->id, "protocol fact=starttls-injection discarded=%zu", dropped);
	}
	sess_arm_timer(s);
}

/* proceed_starttls - 220, forget everything, then the handshake */
void
proceed_starttls(struct session *s, const struct smtp_cmd *c)
{
	SSL *ssl = tls_server_ssl(s->conf);

	(void)c;
	if (ssl == NULL) {
		log_msg(LOG_L_ERROR, s->id, "tls error=ssl-new");
		sess_replyf(s, "454 4.7.0 TLS not available due to local problem");
		return;
	}
	sess_replyf(s, "220 2.0.0 Ready to start TLS");
	/* RFC 3207 4.2: the client must forget what it learned, and so do we */
	sess_txn_abort(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = false;
	auth_reset(s);
	tls_handshake_begin(s, ssl);
}

/* tls_sess_implicit - an implicit-TLS listener: the handshake first */
void
tls_sess_implicit(struct session *s)
{
	SSL *ssl = tls_server_ssl(s->conf);

	if (ssl == NULL) {
		log_msg(LOG_L_ERROR, s->id, "tls error=ssl-new");
		sess_close(s, "tls-unavailable");
		return;
	}
	tls_handshake_begin(s, ssl);
}

/* tls_sess_event - the handshake is over */
void
tls_sess_event(struct session *s, bool ok)
{
	SSL *ssl;
	X509 *peer;
	struct sess_tls *t;
	const char *why;

	if (s->phase != SP_TLS)
		return;
	if (!ok) {
		why = conn_tls_error(s->conn);
		log_msg(LOG_L_INFO, s->id, "tls handshake=failed reason=\"%s\"", why ? why : "?");
		metrics_inc(MF_TLS_FAILURES, NULL, NULL);
		sess_close(s, "tls-failed");
		return;
	}
	ssl = conn_ssl(s->conn);
	t = xcalloc(1, sizeof(*t));
	snprintf(t->version, sizeof(t->version), "%s", SSL_get_version(ssl));
	snprintf(t->cipher, sizeof(t->cipher), "%s", SSL_get_cipher_name(ssl));
	peer = SSL_get1_peer_certificate(ssl);
	if (peer != NULL) {
		if (SSL_get_verify_result(ssl) == X509_V_OK) {
			char cn[256] = "";
			int n = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
			    cn, sizeof(cn));
			/* a name we can show and match: printable, no blanks */
			for (int i = 0; i < n && i < (int)sizeof(t->client_cert) - 1; i++)
				t->client_cert[i] = cn[i] > 0x20 && cn[i] < 0x7f ? cn[i] : '?';
			if (n <= 0)
				snprintf(t->client_cert, sizeof(t->client_cert), "?");
		}
		X509_free(peer);
	}
	t->resumed = SSL_session_reused(ssl) == 1;
	s->tls = t;
	metrics_inc(MF_TLS_HANDSHAKES, NULL, NULL);
	/* at info the disconnect line carries these (tls_log_fields) */
	log_msg(LOG_L_DEBUG, s->id, "tls version=%s cipher=%s resumed=%d client-cert=%s",
	    t->version, t->cipher, t->resumed, t->client_cert[0] ? t->client_cert : "none");
	s->cmd_deadline_ms = sess_now_ms() + s->conf->command_deadline_ms;
	if (s->lflags & CONF_LISTEN_IMPLICIT_TLS) {
		/* implicit TLS (never STARTTLS there): now the session starts */
		sess_enter_phase(s, SP_CONNECTED);
		sess_begin(s);
		return;
	}
	sess_enter_phase(s, SP_GREETED);	/* the client says EHLO again */
	sess_arm_timer(s);
}

/* tls_engine_sync - tls, tls-version, tls-cipher, tls-client-cert for
 * the engine's facts */
void
tls_engine_sync(struct session *s)
{
	if (s->tls == NULL) {
		engine_set_tls(s->eng, NULL, NULL, NULL);
		return;
	}
	engine_set_tls(s->eng, s->tls->version, s->tls->cipher,
	    s->tls->client_cert[0] ? s->tls->client_cert : NULL);
}

/* tls_log_fields - the session's TLS, for its disconnect line */
void
tls_log_fields(const struct session *s, char *out, size_t size)
{
	const struct sess_tls *t = s->tls;

	if (t == NULL) {
		out[0] = 0;
		return;
	}
	snprintf(out, size, " tls=%s tls-version=%s tls-cipher=%s tls-resumed=%d tls-client-cert=%s",
	    s->lflags & CONF_LISTEN_IMPLICIT_TLS ? "implicit" : "starttls", t->version, t->cipher,
	    t->resumed, t->client_cert[0] ? t->client_cert : "none");
}

/* tls_sess_free - the session ends (the SSL object goes with its conn) */
void
tls_sess_free(struct session *s)
{
	free(s->tls);
	s->tls = NULL;
}
