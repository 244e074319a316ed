/*
 * filter - the checks (filters) that rules ask for: their names, the
 * state a session keeps for each, and how a DNS check sends its queries
 *
 * SYNOPSIS
 *	const char *check_name(enum check_id id);
 *	const char *check_status_name(enum check_status st);
 *	typedef int (*check_send_fn)(void *arg, const char *name, int rrtype, int index);
 *
 * DESCRIPTION
 *	The rule engine evaluates a stage's rules with the facts the session
 *	has. When a rule reaches a fact that comes from a check not yet
 *	done, evaluation stops with "wait for check N" (rules.h: RV_WAIT);
 *	the engine (engine/engine.h) starts the check if it has not, and
 *	runs the stage again when the result is in. Some checks start
 *	before any rule asks (the DNSBL queries at connect, so their answers
 *	come while the greeting is sent); none ever blocks an event loop.
 *
 *	The DNS checks are small state machines driven by the engine: a
 *	check asks for a name through send(arg, name, rrtype, index), which
 *	returns 0 when the query is on its way (its answer will be given to
 *	the check's answer function with the same index, on the loop's
 *	thread) or -1 when it could not be sent (treated as a temporary
 *	error).
 *
 * CHECKS
 *	CHECK_FCRDNS	forward-confirmed reverse DNS of the client (fcrdns.h).
 *	CHECK_DNSBL	the DNSBL/DNSWL/RHSBL zones (dnsbl.h): the sum of the
 *			weights of the zones that list the client, their names,
 *			whether a lookup failed.
 *	CHECK_GREYLIST	the greylist decision for one recipient's triplet
 *			(greylist.h), asked when a "greylist" rule is reached.
 *	CHECK_SPF	SPF (spf.h) of the HELO name and of MAIL FROM, on the
 *			work pool, started as the command is read.
 *	CHECK_SAUTH	sender authentication of the message: DKIM (fed as the
 *			message arrives) and DMARC, at the end of the data
 *			(sauth.h).
 *	CHECK_RATELIMIT	the rate limits a stage's rules read (ratelimit.h),
 *			all counted in one call when a rule reaches one.
 *
 *	Names: "auth" is SMTP AUTH only (the login, the fact auth); sender
 *	authentication (SPF, DKIM, DMARC) is "sauth".
 */
#ifndef MOAT_FILTER_H
#define MOAT_FILTER_H

enum check_id { CHECK_FCRDNS = 0, CHECK_DNSBL, CHECK_GREYLIST, CHECK_SPF, CHECK_SAUTH,
	CHECK_RATELIMIT, CHECK__COUNT };
enum check_state { CHECK_NONE = 0, CHECK_PENDING, CHECK_DONE };
enum check_status { CHECK_PASS = 0, CHECK_FAIL, CHECK_TEMPERROR };

typedef int (*check_send_fn)(void *arg, const char *name, int rrtype, int index);

const char *check_name(enum check_id id);
const char *check_status_name(enum check_status st);

#endif
