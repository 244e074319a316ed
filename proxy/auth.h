/*
 * auth - AUTH on submission listeners, relayed to the upstream (private
 * to proxy/)
 *
 * SYNOPSIS
 *	bool check_auth(struct session *s, const struct smtp_cmd *c);
 *	void proceed_auth(struct session *s, const struct smtp_cmd *c);
 *	bool auth_wants_line(const struct session *s);
 *	void auth_line(struct session *s, enum sess_line r, const char *line,
 *	               size_t len);
 *	void auth_ups_reply(struct session *s, struct slot *sl, const struct reply *r);
 *	const char *auth_login(const struct session *s);
 *	bool auth_login_plausible(const char *login);
 *
 * DESCRIPTION
 *	moat holds no passwords: the exchange goes to the upstream MTA
 *	(Postfix with Dovecot or Cyrus SASL) line by line, in lockstep, and
 *	the upstream's 235 makes the login the session's (the facts auth and
 *	login; XCLIENT LOGIN= on later upstream connections). The login is
 *	read from the client's own messages (sasl.h); mechanisms that do not
 *	name it are not offered and are refused. Neither the AUTH command's
 *	argument nor any response line is ever logged; the log says the
 *	mechanism, the login and the outcome. A failed login is logged as
 *	login="..." only when auth_login_plausible() finds it reads as a
 *	mail address; anything else may be a password typed as the user
 *	name and is logged as login_hash= (SipHash, key random per process).
 *	After an AUTH command (refused, failed, cancelled or not), the
 *	session's lines are not logged, even at debug level, until a
 *	recognised command comes; they are counted (lines_suppressed=N).
 *
 *	While an exchange is on (SP_AUTH), the session's line reader
 *	(smtp_server.c, the same that reads commands) hands each response
 *	line to auth_line() whenever auth_wants_line() says it is the
 *	client's turn; the command loop waits otherwise. A response line is
 *	capped at SASL_LINE_MAX (500 5.5.6 beyond), one ended by a bare LF
 *	is refused (500 5.5.2); either ends the exchange upstream with "*".
 *
 * LIMITS
 *	Failed exchanges (the upstream's 535, and other 5xx but 501/504)
 *	are counted per client address (IPv6: its /64, like the session
 *	limit) in a table shared by the workers, for auth-failure-window.
 *	Each failure's reply waits auth-failure-delay; at auth-max-failures
 *	the client gets 421 4.7.0 and is disconnected, and any AUTH from that
 *	address within the window gets the same before anything goes
 *	upstream. The table holds AUTH_TABLE_MAX addresses; the oldest entry
 *	makes way.
 */
#ifndef MOAT_AUTH_H
#define MOAT_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "session.h"

struct session;
struct smtp_cmd;
struct slot;
struct reply;
struct rules_facts;

bool check_auth(struct session *s, const struct smtp_cmd *c);
void proceed_auth(struct session *s, const struct smtp_cmd *c);
bool auth_wants_line(const struct session *s);
void auth_line(struct session *s, enum sess_line r, const char *line, size_t len);
void auth_ups_reply(struct session *s, struct slot *sl, const struct reply *r);
void auth_ups_lost(struct session *s);
size_t auth_ehlo(const struct session *s, char *buf, size_t size);
const char *auth_login(const struct session *s);
bool auth_login_plausible(const char *login);
void auth_reset(struct session *s);
void auth_free(struct session *s);

#endif
