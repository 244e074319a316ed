/*
 * conf_ratelimit - the policy file's "ratelimit" declarations
 *
 * SYNOPSIS
 *	int conf_ratelimit_parse(struct rl_set *set, struct rules *r, struct lexer *lx,
 *	                         const struct lex_token *kw, lex_err_fn err, void *arg);
 *
 * DESCRIPTION
 *	ratelimit NAME key PART[+PART...] rate N/DURATION [burst B]
 *	          [per message|recipient]
 *
 *	PART is client-net[/V4LEN[/V6LEN]] (the client's network, default
 *	/24 and /64), client-ip (/32 and /128), sender, sender-domain, login
 *	or rcpt. DURATION is a number with s, m, h or d (1s to 7d); N is 1
 *	to 1000000; B (default N) 1 to 1000000. A limit "per recipient"
 *	counts each recipient (read at rcpt or data); "per message" (the
 *	default) counts a transaction once. The limit is added to set and its
 *	name to the rules (rules_add_ratelimit), which "ratelimit NAME" in a
 *	later rule reads. Errors go to err(arg, line, col, msg); 0 or -1.
 */
#ifndef MOAT_CONF_RATELIMIT_H
#define MOAT_CONF_RATELIMIT_H

#include "lex.h"
#include "ratelimit.h"
#include "rules.h"

int conf_ratelimit_parse(struct rl_set *set, struct rules *r, struct lexer *lx,
	const struct lex_token *kw, lex_err_fn err, void *arg);

#endif
