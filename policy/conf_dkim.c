/*
 * conf_dkim - the dkim-key statement (see conf_dkim.h)
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_dkim.h"
#include "dnsbl.h"
#include "log.h"
#include "xalloc.h"

/* conf_dkim_parse - one dkim-key statement */
int
conf_dkim_parse(struct dkim_keys **keys, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg)
{
	struct lex_parser p = { .lx = lx, .err = err, .arg = arg };
	struct lex_token pt;
	struct dkim_key k;
	char shown[LOG_ESC_SIZE], path[4096], why[600], warn[600];
	const char *bad;

	memset(&k, 0, sizeof(k));
	lex_next(lx, &p.t);
	/* d= and s= in A-labels, as in the DNS (RFC 5890, RFC 6376 3.5) */
	bad = p.t.type != LEX_WORD ? "" : dkim_name_alabel(p.t.text, p.t.len, sizeof(k.domain) - 1,
	    k.domain, sizeof(k.domain));
	if (bad != NULL || strchr(k.domain, '.') == NULL) {
		lex_error(&p, &p.t, "expected the signing domain (d=) after dkim-key, found %s%s%s",
		    lex_shown(&p.t, shown, sizeof(shown)), bad && bad[0] ? ": " : "", bad ? bad : "");
		goto skip;
	}
	for (size_t i = 0; k.domain[i]; i++)
		k.domain[i] = (char)tolower((unsigned char)k.domain[i]);
	lex_next(lx, &p.t);
	bad = p.t.type != LEX_WORD ? "" : dkim_name_alabel(p.t.text, p.t.len, sizeof(k.selector) - 1,
	    k.selector, sizeof(k.selector));
	if (bad != NULL) {
		lex_error(&p, &p.t, "expected a selector (s=: letters, digits, '-', '_', dots, or "
		    "an internationalised name), found %s%s%s", lex_shown(&p.t, shown, sizeof(shown)),
		    bad[0] ? ": " : "", bad);
		goto skip;
	}
	lex_next(lx, &p.t);
	if (lex_is(&p.t, "rsa-sha256"))
		k.alg = DKIM_KEY_RSA_SHA256;
	else if (lex_is(&p.t, "ed25519-sha256"))
		k.alg = DKIM_KEY_ED25519_SHA256;
	else {
		lex_error(&p, &p.t, "expected rsa-sha256 or ed25519-sha256, found %s",
		    lex_shown(&p.t, shown, sizeof(shown)));
		goto skip;
	}
	lex_next(lx, &pt);
	if (pt.type != LEX_STRING || pt.len == 0 || pt.len >= sizeof(path) ||
	    memchr(pt.text, 0, pt.len) != NULL) {
		lex_error(&p, &pt, "expected the private key file in double quotes, found %s",
		    lex_shown(&pt, shown, sizeof(shown)));
		p.t = pt;
		goto skip;
	}
	memcpy(path, pt.text, pt.len);
	path[pt.len] = 0;
	lex_next(lx, &p.t);
	if (lex_is(&p.t, "subdomains")) {
		k.subdomains = true;
		lex_next(lx, &p.t);
	}
	if (p.t.type != LEX_NL && p.t.type != LEX_EOF) {
		lex_error(&p, &p.t, "unexpected %s after the key file (only \"subdomains\" may "
		    "follow)", lex_shown(&p.t, shown, sizeof(shown)));
		goto skip;
	}
	if (dkim_key_load(&k, path, why, sizeof(why), warn, sizeof(warn)) != 0) {
		lex_error(&p, &pt, "%s", why);
		return -1;
	}
	if (warn[0])
		lex_error(&p, &pt, "warning: %s", warn);
	if (*keys == NULL)
		*keys = xcalloc(1, sizeof(**keys));
	if (dkim_keys_add(*keys, &k) != 0) {
		lex_error(&p, kw, "dkim-key %s %s given twice", k.domain, k.selector);
		dkim_key_clear(&k);
		return -1;
	}
	return 0;
skip:
	while (p.t.type != LEX_NL && p.t.type != LEX_EOF)
		lex_next(lx, &p.t);
	return -1;
}
