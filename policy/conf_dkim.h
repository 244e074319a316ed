/*
 * conf_dkim - the policy file's dkim-key statement: a DKIM signing key,
 * loaded and checked (filters/dkim_key.h) as the policy is read
 *
 * SYNOPSIS
 *	int conf_dkim_parse(struct dkim_keys **keys, struct lexer *lx,
 *	                    const struct lex_token *kw, lex_err_fn err, void *arg);
 *
 *	(policy file; one statement per key)
 *	dkim-key DOMAIN SELECTOR rsa-sha256|ed25519-sha256 "KEYFILE" [subdomains]
 *
 * DESCRIPTION
 *	conf_dkim_parse() reads one statement from lx (kw is "dkim-key"),
 *	loads the key file and adds the key to *keys (made on the first
 *	key; the caller frees it with dkim_keys_free()). A domain may have
 *	several keys (RSA and Ed25519 dual signing, RFC 8463): each signs.
 *	"subdomains": the key also signs mail whose header From is at a
 *	domain below DOMAIN, with d=DOMAIN (DMARC relaxed alignment).
 *	Errors go through err(arg, line, col, msg) at the token at fault (a
 *	key file's error at its name) and return -1; a warning (an RSA key
 *	under 2048 bits) goes through err with a "warning: " prefix.
 */
#ifndef MOAT_CONF_DKIM_H
#define MOAT_CONF_DKIM_H

#include "dkim_key.h"
#include "lex.h"

int conf_dkim_parse(struct dkim_keys **keys, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg);

#endif
