/*
 * conf_dkim - the dkim-key statement (see conf_dkim.h)
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_dkim.h"
#include "dnsbl.h"
#include "log.h"
#include "xalloc.h"

/* cd_error - one message at a token */
static void __attribute__((format(printf, 4, 5)))
cd_error(conf_dkim_err_fn err, void *arg, const struct lex_token *t, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err(arg, t->line, t->col, msg);
}

/* cd_shown - a token for a message */
static const char *
cd_shown(const struct lex_token *t, char *buf, size_t size)
{
	if (t->type == LEX_WORD || t->type == LEX_STRING)
		log_escape(buf, size, t->text, t->len);
	else
		snprintf(buf, size, "%s", lex_tok_name(t->type));
	return buf;
}

static bool
cd_is(const struct lex_token *t, const char *w)
{
	return t->type == LEX_WORD && t->len == strlen(w) && memcmp(t->text, w, t->len) == 0;
}

/* conf_dkim_parse - one dkim-key statement */
int
conf_dkim_parse(struct dkim_keys **keys, struct lexer *lx, const struct lex_token *kw,
	conf_dkim_err_fn err, void *arg)
{
	struct lex_token t, pt;
	struct dkim_key k;
	char shown[LOG_ESC_SIZE], path[4096], why[600], warn[600];

	memset(&k, 0, sizeof(k));
	lex_next(lx, &t);
	if (t.type != LEX_WORD || t.len >= sizeof(k.domain) || !dnsbl_domain_ok(t.text, t.len,
	    sizeof(k.domain) - 1) || memchr(t.text, '.', t.len) == NULL) {
		cd_error(err, arg, &t, "expected the signing domain (d=) after dkim-key, found %s",
		    cd_shown(&t, shown, sizeof(shown)));
		goto skip;
	}
	for (size_t i = 0; i < t.len; i++)
		k.domain[i] = (char)tolower((unsigned char)t.text[i]);
	if (k.domain[t.len - 1] == '.')
		t.len--;
	k.domain[t.len] = 0;
	lex_next(lx, &t);
	if (t.type != LEX_WORD || !dkim_selector_ok(t.text, t.len)) {
		cd_error(err, arg, &t, "expected a selector (s=: letters, digits, '-', '_', dots), found %s",
		    cd_shown(&t, shown, sizeof(shown)));
		goto skip;
	}
	memcpy(k.selector, t.text, t.len);
	lex_next(lx, &t);
	if (cd_is(&t, "rsa-sha256"))
		k.alg = DKIM_KEY_RSA_SHA256;
	else if (cd_is(&t, "ed25519-sha256"))
		k.alg = DKIM_KEY_ED25519_SHA256;
	else {
		cd_error(err, arg, &t, "expected rsa-sha256 or ed25519-sha256, found %s",
		    cd_shown(&t, shown, sizeof(shown)));
		goto skip;
	}
	lex_next(lx, &pt);
	if (pt.type != LEX_STRING || pt.len == 0 || pt.len >= sizeof(path) ||
	    memchr(pt.text, 0, pt.len) != NULL) {
		cd_error(err, arg, &pt, "expected the private key file in double quotes, found %s",
		    cd_shown(&pt, shown, sizeof(shown)));
		t = pt;
		goto skip;
	}
	memcpy(path, pt.text, pt.len);
	path[pt.len] = 0;
	lex_next(lx, &t);
	if (cd_is(&t, "subdomains")) {
		k.subdomains = true;
		lex_next(lx, &t);
	}
	if (t.type != LEX_NL && t.type != LEX_EOF) {
		cd_error(err, arg, &t, "unexpected %s after the key file (only \"subdomains\" may "
		    "follow)", cd_shown(&t, shown, sizeof(shown)));
		goto skip;
	}
	if (dkim_key_load(&k, path, why, sizeof(why), warn, sizeof(warn)) != 0) {
		cd_error(err, arg, &pt, "%s", why);
		return -1;
	}
	if (warn[0])
		cd_error(err, arg, &pt, "warning: %s", warn);
	if (*keys == NULL)
		*keys = xcalloc(1, sizeof(**keys));
	if (dkim_keys_add(*keys, &k) != 0) {
		cd_error(err, arg, kw, "dkim-key %s %s given twice", k.domain, k.selector);
		dkim_key_clear(&k);
		return -1;
	}
	return 0;
skip:
	while (t.type != LEX_NL && t.type != LEX_EOF)
		lex_next(lx, &t);
	return -1;
}
