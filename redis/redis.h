/*
 * redis - moat's Redis client: asynchronous on an event loop (moatd),
 * synchronous for moatctl; reconnect with backoff, a deadline on every
 * command, Sentinel discovery, Lua scripts by EVALSHA
 *
 * SYNOPSIS
 *	void rds_conf_init(struct rds_conf *c);
 *	int rds_conf_parse(struct rds_conf *c, const char *const *words, int nwords,
 *	                   char *why, size_t whysize);
 *	bool rds_conf_enabled(const struct rds_conf *c);
 *	int rds_addr_parse(const char *word, int defport, struct rds_addr *a,
 *	                   char *why, size_t whysize);
 *	void rds_addr_format(const struct rds_addr *a, char *out, size_t size);
 *
 *	struct rds *rds_new(struct event_base *base, const struct rds_conf *c,
 *	                    const char *const *scripts, int nscripts);
 *	int rds_eval(struct rds *r, int script, unsigned timeout_ms, rds_cb cb,
 *	             void *ctx, int nkeys, int nargs, const char *const *args,
 *	             const size_t *lens);
 *	int rds_command(struct rds *r, unsigned timeout_ms, rds_cb cb, void *ctx,
 *	                int argc, const char *const *argv, const size_t *lens);
 *	void rds_free(struct rds *r);
 *	enum rds_state rds_get_state(const struct rds *r);
 *	const char *rds_state_name(enum rds_state st);
 *	void rds_get_counters(const struct rds *r, struct rds_counters *out);
 *	void rds_current_addr(const struct rds *r, char *out, size_t size);
 *
 *	redisContext *rds_sync_connect(const struct rds_conf *c, char *err,
 *	                               size_t errsize);
 *
 * DESCRIPTION
 *	Settings. rds_conf_parse() reads the words of the policy file's
 *	"redis" setting: "ADDR" (one server) or "sentinel ADDR ... master
 *	NAME". ADDR is IP, IP:PORT, [IPv6]:PORT or an absolute path to a
 *	unix socket; host names are refused because resolving them would
 *	block the event loop (localhost means 127.0.0.1). Ports default to
 *	6379 (server) and 26379 (sentinel). It returns 0, or -1 with why.
 *
 *	Asynchronous client. One struct rds per event loop (moatd has one
 *	loop per worker thread; nothing here is shared between threads).
 *	rds_new() starts connecting at once and never fails; the client
 *	then lives through these states, each change logged at debug level:
 *	  DOWN        no connection; a retry is due after a backoff (from
 *	              backoff_min_ms, doubling up to backoff_max_ms; back to
 *	              the minimum once a connection is ready)
 *	  DISCOVER    asking a sentinel for the master's address (SENTINEL
 *	              get-master-addr-by-name), one sentinel after the other,
 *	              each within connect_timeout_ms, starting with the one
 *	              that answered last
 *	  CONNECTING  connecting; the handshake (AUTH, SELECT, ROLE when the
 *	              address came from a sentinel, SCRIPT LOAD of every
 *	              script) is pipelined ahead of any command; all of it
 *	              within connect_timeout_ms
 *	  READY       the handshake succeeded
 *	A failed handshake (a replica where a master was expected, AUTH
 *	refused, ...), a dropped connection, a timed-out command or a
 *	-READONLY reply drops the connection, and the next attempt (after
 *	the backoff) asks the sentinels again. A command submitted while
 *	DOWN starts that attempt at once (at most once per backoff_min_ms)
 *	and rides on it: after a long stall the backoff has grown to its
 *	maximum, and a server that answers again is used by the next
 *	command, not after the timer.
 *
 *	Following Sentinel: the client subscribes to every sentinel
 *	(+selected-slave, +failover-state-send-slaveof-noone,
 *	+switch-master, -failover-abort-*). When a failover of its master
 *	begins it holds: commands wait, within their deadline, and nothing
 *	is written to the old master (what it takes then is lost when it is
 *	demoted). +switch-master connects to the new master (ROLE checked)
 *	and sends them there; an abort resumes; no switch within 5 s asks
 *	the sentinels. A -READONLY or -MASTERDOWN reply means the server
 *	wrote nothing: with sentinels, that command (once) waits while the
 *	sentinels are asked again, then goes to the master they name.
 *
 *	rds_eval() runs script number `script` (an index into the scripts
 *	given to rds_new; the texts must outlive the client, the array need
 *	not) with EVALSHA; the SHA1 is computed here. A -NOSCRIPT reply (SCRIPT FLUSH, a restarted
 *	or new master) makes it send the same call once as EVAL, which
 *	also caches the script again; that is the only time a call takes
 *	two round trips. rds_command() sends any other command. Arguments
 *	are copied; they may contain any bytes.
 *
 *	Both return 0 when cb(ctx, reply, err) will be called exactly once,
 *	later, on the loop's thread: never before they return. They return
 *	-1 (cb is not called) when max_pending commands are already waiting
 *	or the arguments are too many. cb gets either a reply (err NULL;
 *	the reply is borrowed for the call, and may be an error reply:
 *	the caller checks its type) or err ("timeout", "unavailable",
 *	"disconnected", ...; reply NULL). A command that is not answered
 *	within timeout_ms (0: the setting's redis-timeout) gets "timeout" at
 *	that moment, and its connection is dropped, so that no late reply is
 *	ever taken for the answer to a later command; the other commands on
 *	that connection get "disconnected" at once. Commands are never
 *	replayed on another connection (no at-least-once surprises), except
 *	after -READONLY/-MASTERDOWN, which a server gives without running
 *	the command. While the client is DOWN (and no attempt can start),
 *	commands get "unavailable" on the next loop turn; while it is
 *	DISCOVER, or holding in a failover, they wait (within their
 *	deadline) for the connection.
 *
 *	cb may call rds_eval()/rds_command() again; it must NOT call
 *	rds_free() (it may run inside hiredis): defer that to another event.
 *	rds_free() drops the connection and frees everything; callbacks of
 *	commands still pending are not called. rds_free(NULL) is a no-op.
 *
 *	Replies are bounded: arrays of more than RDS_REPLY_ELEMENTS_MAX
 *	elements, strings over RDS_REPLY_STRING_MAX bytes and nesting
 *	deeper than hiredis's own limit are protocol errors that drop the
 *	connection. Redis itself stays trusted (loopback, a unix socket or
 *	a private network, with a password): a peer that streams a huge
 *	bulk is cut off only by the command's deadline.
 *
 *	rds_current_addr() writes the address of the server in use (or of
 *	the last one tried), "" before the first.
 *
 *	Synchronous client, for moatctl only (it blocks): rds_sync_connect()
 *	finds the master through the sentinels when there are some, connects
 *	with connect_timeout_ms, sets command timeouts of at least two
 *	seconds, authenticates, selects the database and checks the role.
 *	It returns a context for hiredis's redisCommand*() (the caller
 *	frees it with redisFree), or NULL with err.
 */
#ifndef MOAT_REDIS_H
#define MOAT_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#define RDS_SENTINEL_MAX	8
#define RDS_SCRIPT_MAX		4
#define RDS_ARGS_MAX		48	/* 3 + the most a script takes: 5n (limits), 4n + 10 (with greylist) */
#define RDS_ARG_MAX		4096	/* bytes in one argument (scripts aside) */
#define RDS_REPLY_ELEMENTS_MAX	1024
#define RDS_REPLY_STRING_MAX	(64 * 1024)
#define RDS_DEFAULT_PORT	6379
#define RDS_SENTINEL_PORT	26379

struct rds_addr {
	char host[48];		/* an IP address; "" when path is used */
	int port;
	char path[108];		/* a unix socket */
};

struct rds_conf {
	struct rds_addr server;			/* one server */
	struct rds_addr sentinel[RDS_SENTINEL_MAX];	/* or sentinels */
	int nsentinel;
	char master[64];			/* the sentinels' master name */
	char password[128];			/* AUTH when not empty */
	int db;					/* SELECT when not 0 */
	unsigned timeout_ms;			/* per command; default 200 */
	unsigned connect_timeout_ms;		/* connect + handshake; default 1000 */
	unsigned backoff_min_ms, backoff_max_ms;	/* default 100, 5000 */
	unsigned max_pending;			/* per client; default 1024 */
};

enum rds_state { RDS_ST_DOWN = 0, RDS_ST_DISCOVER, RDS_ST_CONNECTING, RDS_ST_READY };

struct rds_counters {
	uint64_t commands, replies, errors, timeouts, refused;
	uint64_t connects, ready, drops, discoveries, noscript;
	uint64_t switches, moved;	/* +switch-master followed; sent again after -READONLY */
};

typedef void (*rds_cb)(void *ctx, const redisReply *reply, const char *err);

struct rds;

void rds_conf_init(struct rds_conf *c);
int rds_conf_parse(struct rds_conf *c, const char *const *words, int nwords, char *why,
	size_t whysize);
bool rds_conf_enabled(const struct rds_conf *c);
int rds_addr_parse(const char *word, int defport, struct rds_addr *a, char *why, size_t whysize);
void rds_addr_format(const struct rds_addr *a, char *out, size_t size);
/* an error message into why (redis.c and redis_conf.c) */
void rds_errf(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct rds *rds_new(struct event_base *base, const struct rds_conf *c,
	const char *const *scripts, int nscripts);
int rds_eval(struct rds *r, int script, unsigned timeout_ms, rds_cb cb, void *ctx, int nkeys,
	int nargs, const char *const *args, const size_t *lens);
int rds_command(struct rds *r, unsigned timeout_ms, rds_cb cb, void *ctx, int argc,
	const char *const *argv, const size_t *lens);
void rds_free(struct rds *r);
enum rds_state rds_get_state(const struct rds *r);
const char *rds_state_name(enum rds_state st);
void rds_get_counters(const struct rds *r, struct rds_counters *out);
void rds_current_addr(const struct rds *r, char *out, size_t size);

redisContext *rds_sync_connect(const struct rds_conf *c, char *err, size_t errsize);

#endif
