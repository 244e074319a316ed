/*
 * filter - the checks that rules ask for, run only when a rule needs them
 *
 * SYNOPSIS
 *	int check_start(struct workq_loop *l, enum check_id id, uint64_t sid,
 *	                const struct sockaddr *client, check_done_fn done, void *ctx);
 *	const char *check_name(enum check_id id);
 *
 * DESCRIPTION
 *	The rule engine evaluates a stage's rules with the facts the session
 *	has. When a rule reaches a fact that comes from a check not yet run,
 *	evaluation stops with "wait for check N" (rules.h: RV_WAIT); the
 *	session starts the check with check_start(), stops reading commands,
 *	and evaluates the stage again from the top when the result is in.
 *	So a check runs at most once per session, only if some rule needs it,
 *	and never on the event loop: it runs on the bounded pool (workq.h),
 *	and done() comes back on the loop's thread with the session's id
 *	(never a pointer: the session may be gone, and then the result is
 *	dropped). check_start() returns -1 when the pool is full: the caller
 *	records a temporary error at once. The session also bounds the wait
 *	with its own deadline.
 *
 * CHECKS
 *	CHECK_FCRDNS	forward-confirmed reverse DNS of the client: a PTR
 *			name that is a valid host name and that resolves back
 *			to the client's address. Result: pass (with the name),
 *			fail (no name, or it does not confirm), temperror.
 *			Through the system resolver for now (getnameinfo,
 *			getaddrinfo on the pool); moat's own asynchronous
 *			resolver replaces it.
 */
#ifndef MOAT_FILTER_H
#define MOAT_FILTER_H

#include <stdint.h>
#include <sys/socket.h>

#include "workq.h"

enum check_id { CHECK_FCRDNS = 0, CHECK__COUNT };
enum check_state { CHECK_NONE = 0, CHECK_PENDING, CHECK_DONE };
enum check_status { CHECK_PASS = 0, CHECK_FAIL, CHECK_TEMPERROR };

struct check_result {
	enum check_state state;
	enum check_status status;
	char name[256];		/* fcrdns: the confirmed name, lower case */
};

typedef void (*check_done_fn)(void *ctx, uint64_t sid, enum check_id id,
	const struct check_result *r);

int check_start(struct workq_loop *l, enum check_id id, uint64_t sid,
	const struct sockaddr *client, check_done_fn done, void *ctx);
const char *check_name(enum check_id id);

/* fcrdns_lookup - the blocking part, exposed for tests */
void fcrdns_lookup(const struct sockaddr *client, struct check_result *r);

#endif
