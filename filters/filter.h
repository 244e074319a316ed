/*
 * filter - the checks that rules ask for, and how a session runs them
 *
 * SYNOPSIS
 *	typedef int (*check_send_fn)(void *arg, const char *name, int rrtype, int index);
 *
 *	int fcrdns_begin(struct fcrdns *f, const struct sockaddr *client,
 *	                 check_send_fn send, void *arg);
 *	void fcrdns_answer(struct fcrdns *f, int index, const struct dns_answer *a,
 *	                   check_send_fn send, void *arg);
 *	const char *check_name(enum check_id id);
 *
 * DESCRIPTION
 *	The rule engine evaluates a stage's rules with the facts the session
 *	has. When a rule reaches a fact that comes from a check not yet
 *	done, evaluation stops with "wait for check N" (rules.h: RV_WAIT);
 *	the session starts the check if it has not, stops reading commands,
 *	and evaluates the stage again from the top when the result is in.
 *	Some checks start before any rule asks (the DNSBL queries at connect,
 *	so their answers come while the greeting is sent); none ever blocks
 *	an event loop.
 *
 *	The DNS checks are small state machines driven by the session: a
 *	check asks for a name through send(arg, name, rrtype, index), which
 *	returns 0 when the query is on its way (its answer will be given to
 *	the check's answer function with the same index, on the loop's
 *	thread) or -1 when it could not be sent (treated as a temporary
 *	error). The session routes answers back by its id (core/dns.h), so
 *	an answer for a session that is gone is dropped.
 *
 * CHECKS
 *	CHECK_FCRDNS	forward-confirmed reverse DNS of the client: one of at
 *			most FCRDNS_NAMES_MAX PTR names that is a valid host name
 *			and whose A (or AAAA) records hold the client's address.
 *			Result: pass (with the name), fail (no name, or none
 *			confirms), temperror (a lookup failed and nothing
 *			confirmed).
 *	CHECK_DNSBL	the DNSBL/DNSWL/RHSBL zones (dnsbl.h): the sum of the
 *			weights of the zones that list the client, their names,
 *			whether a lookup failed.
 *	CHECK_GREYLIST	the greylist decision for one recipient's triplet
 *			(greylist.h), asked when a "greylist" rule matches.
 *	CHECK_SPF	SPF (spf.h) of the HELO name and of MAIL FROM, on the
 *			work pool, started as the command is read.
 *	CHECK_AUTH	DKIM (fed as the message arrives) and DMARC, on the
 *			work pool at the end of the data.
 */
#ifndef MOAT_FILTER_H
#define MOAT_FILTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dns.h"

enum check_id { CHECK_FCRDNS = 0, CHECK_DNSBL, CHECK_GREYLIST, CHECK_SPF, CHECK_AUTH, CHECK__COUNT };
enum check_state { CHECK_NONE = 0, CHECK_PENDING, CHECK_DONE };
enum check_status { CHECK_PASS = 0, CHECK_FAIL, CHECK_TEMPERROR };

typedef int (*check_send_fn)(void *arg, const char *name, int rrtype, int index);

#define FCRDNS_NAMES_MAX 4

struct fcrdns {
	int family;			/* AF_INET or AF_INET6 (v4-mapped is v4) */
	unsigned char addr[16];
	int pending;			/* queries not answered yet */
	int nnames;
	char names[FCRDNS_NAMES_MAX][256];
	bool temp;			/* some lookup failed */
	bool done;
	enum check_status status;
	char name[256];			/* pass: the confirmed name, lower case */
};

/* fcrdns_begin - send the PTR query; 0, or -1 when done at once (f->done) */
int fcrdns_begin(struct fcrdns *f, const struct sockaddr *client, check_send_fn send, void *arg);
/* fcrdns_answer - one answer (index 0: PTR, 1 + k: names[k]'s addresses) */
void fcrdns_answer(struct fcrdns *f, int index, const struct dns_answer *a,
	check_send_fn send, void *arg);
/* fcrdns_host_ok - a host name acceptable from a PTR record */
bool fcrdns_host_ok(const char *n);

const char *check_name(enum check_id id);
const char *check_status_name(enum check_status st);

#endif
