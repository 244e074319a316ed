/*
 * conf_dnsbl - the policy file's dnsbl and dnswl statements: one parsed
 * into a zone of a struct dnsbl_set (filters/dnsbl.h)
 *
 * SYNOPSIS
 *	int conf_dnsbl_parse(struct dnsbl_set *set, struct lexer *lx,
 *	                     const struct lex_token *kw,
 *	                     lex_err_fn err, void *arg);
 *
 *	(policy file; one statement, a block may span lines)
 *	dnsbl ZONE [name NAME] [key "KEY"] [type ip|helo|client-name|sender-domain]
 *	           [weight N] [codes RANGE ...] [reply "TEXT"] [probe yes|no]
 *	           [{ code RANGE ... weight N [reply "TEXT"] ... }]
 *	dnswl ZONE ...	(the same; weights are zero or negative, default -1)
 * DESCRIPTION
 *	conf_dnsbl_parse() reads one statement from lx, whose keyword
 *	(dnsbl or dnswl) is kw, and adds its zone to set (owned by set; the
 *	caller frees it with dnsbl_set_free()). Each error goes through
 *	err(arg, line, col, message); the statement then adds nothing, the
 *	lexer is left at the end of its line (or of its block) and -1 is
 *	returned. 0 when the zone was added. At most DNSBL_ZONES_MAX zones,
 *	names unique; weights from -1000 to 1000, reply texts at most 400
 *	printable bytes, the queried name ([KEY.]ZONE) at most 200 bytes.
 *
 *	RANGE is 127.0.0.2, 127.0.0.2-127.0.0.11 or 127.0.0.0/24. Without
 *	codes and without a block, any answer in 127.0.0.0/8 lists the
 *	client with the zone's weight (default 1 for dnsbl). With codes,
 *	only those answers do. With a block, each code line that matches one
 *	of the answers adds its weight (once), as postscreen's
 *	"zone=127.0.0.[2..11]*3" entries do, and its reply text is the one
 *	used for the zone when it is the heaviest match.
 *
 *	An answer outside 127.0.0.0/8, or in 127.255.255.0/24 (the "query
 *	refused", "typing error" and "excessive use" codes of public lists),
 *	is an error, never a listing: logged once per zone and counted.
 *
 *	KEY is a per-customer key that goes in front of the zone in queries
 *	(Spamhaus DQS: KEY.zen.dq.spamhaus.net). It never appears in SMTP
 *	replies or logs: they name a zone by NAME, which defaults to ZONE.
 *
 *	type: ip queries the client address (reversed octets, or the 32
 *	nibbles of an IPv6 address); helo, client-name (the forward-
 *	confirmed name) and sender-domain query that domain (RHSBL).
 *
 *	probe (default yes): RFC 5782 section 5 test points. An IP list must
 *	list 127.0.0.2 and must not list 127.0.0.1; a domain list must list
 *	"test" and must not list "invalid". A zone that fails is disabled
 *	(not queried, a log line at warn) until it passes again.
 */
#ifndef MOAT_CONF_DNSBL_H
#define MOAT_CONF_DNSBL_H

#include "dnsbl.h"
#include "lex.h"


/* conf_dnsbl_parse - one dnsbl/dnswl statement into set; 0 or -1 */
int conf_dnsbl_parse(struct dnsbl_set *set, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg);

#endif
