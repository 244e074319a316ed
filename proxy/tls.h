/*
 * tls - OpenSSL contexts from the policy file, and STARTTLS / implicit TLS
 * for client sessions (private to proxy/)
 *
 * SYNOPSIS
 *	int tls_conf_setup(struct conf *c, char *err, size_t errlen);
 *	struct ssl_st *tls_client_ssl(const struct conf *c);
 *
 * DESCRIPTION
 *	tls_conf_setup() builds the server context (tls-certificate, tls-key,
 *	tls-chain, tls-min-version, tls-ciphers, tls-client-ca) and, when
 *	upstream-tls is not none, the client context for the upstream. It
 *	runs at start-up, for moatd -n, and on every SIGHUP reload, so new
 *	certificates are picked up by a reload; a file that does not load
 *	refuses the reload like a syntax error. The contexts belong to the
 *	configuration (freed with its last reference), so a session keeps
 *	the context it started with. Without tls-certificate no TLS is
 *	offered to clients (STARTTLS is not in the EHLO reply).
 *
 *	Both contexts: TLS 1.2 or later by default, no renegotiation, no
 *	compression, server cipher preference, partial writes, buffers
 *	released while idle (an idle TLS session costs little more than a
 *	plaintext one). Resumption: the server keeps a session cache and
 *	issues TLS 1.3 tickets; both die with the configuration.
 */
#ifndef MOAT_TLS_H
#define MOAT_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

struct ssl_st;
struct session;
struct smtp_cmd;
struct rules_facts;

/* what a finished handshake told us (a session's s->tls) */
struct sess_tls {
	char version[16];		/* "TLSv1.3" */
	char cipher[64];		/* "TLS_AES_256_GCM_SHA384" */
	char client_cert[65];		/* CN of a client certificate that verified, or "" */
	bool resumed;			/* a resumed TLS session */
};

int tls_conf_setup(struct conf *c, char *err, size_t errlen);
struct ssl_st *tls_client_ssl(const struct conf *c);

/* sessions (smtp_server.c calls these) */
bool tls_offered(const struct session *s);
bool check_starttls(struct session *s, const struct smtp_cmd *c);
void proceed_starttls(struct session *s, const struct smtp_cmd *c);
void tls_sess_implicit(struct session *s);
void tls_sess_event(struct session *s, bool ok);
void tls_engine_sync(struct session *s);
/* tls_log_fields - the session's TLS for its disconnect line:
 * " tls=starttls|implicit tls-version=V tls-cipher=C tls-resumed=0|1
 * tls-client-cert=CN|none", or "" in plaintext */
void tls_log_fields(const struct session *s, char *out, size_t size);
void tls_sess_free(struct session *s);

#endif
