/*
 * greylist - greylisting of (client, sender, recipient) triplets, through
 * Redis (one Lua script call per decision) or the embedded store
 *
 * SYNOPSIS
 *	void greylist_conf_init(struct greylist_conf *g);
 *	int greylist_conf_set(struct greylist_conf *g, const char *name,
 *	                      const char *const *words, int nwords,
 *	                      char *why, size_t whysize);
 *	int greylist_conf_check(const struct greylist_conf *g, char *why, size_t whysize);
 *	void greylist_store_params(const struct greylist_conf *g, struct glstore_params *p);
 *
 *	struct greylist *greylist_new(struct event_base *base,
 *	                              const struct greylist_conf *c, struct glstore *store);
 *	struct greylist *greylist_new_peek(struct event_base *base,
 *	                              const struct greylist_conf *c, struct glstore *store);
 *	int greylist_check(struct greylist *g, const struct greylist_triplet *t,
 *	                   greylist_cb cb, void *ctx, uint64_t tag);
 *	int greylist_decide_now(struct greylist *g, const struct greylist_triplet *t,
 *	                        struct greylist_verdict *v);
 *	bool greylist_asks_redis(struct greylist *g, const struct greylist_triplet *t);
 *	int greylist_check_limits(struct greylist *g, const struct greylist_triplet *t,
 *	                          const struct greylist_limits *l, greylist_limits_cb cb,
 *	                          void *ctx, uint64_t tag);
 *	void greylist_free(struct greylist *g);
 *	void greylist_set_clock(struct greylist *g, int64_t (*now)(void *), void *arg);
 *
 *	int greylist_key(const struct greylist_conf *c, const struct greylist_triplet *t,
 *	                 char *ckey, size_t csize, char *tkey, size_t tsize);
 *	int greylist_reply_text(const struct greylist_verdict *v, char *out, size_t size);
 *	void greylist_outcome(const struct greylist_verdict *v, int on_error, bool *tempfail,
 *	                      char *text, size_t size, uint64_t sid);
 *	const char *greylist_status_name(enum gl_status s);
 *	const char *greylist_reason_name(enum gl_reason r);
 *	void greylist_counters(struct greylist_counters *out);
 *	const char *greylist_script(void);
 *	const char *greylist_peek_script(void);
 *	int greylist_reply_parse(const redisReply *r, struct gl_decision *d,
 *	                         char *why, size_t whysize);
 *	int greylist_limits_reply_parse(const redisReply *r, int nl, uint32_t *exceeded,
 *	                         bool *skipped, struct gl_decision *d, char *why,
 *	                         size_t whysize);
 *
 * SETTINGS (policy file; greylist_conf_set() handles these names)
 *	redis ADDR | redis sentinel ADDR ... master NAME
 *				Redis in use (see redis.h for ADDR); without it
 *				the embedded store decides (default: none)
 *	redis-timeout DURATION	deadline of one decision (200ms; 10ms..10s)
 *	redis-connect-timeout DURATION
 *				connect + handshake, or one sentinel (1s)
 *	redis-password WORD	AUTH on connect (none)
 *	redis-db N		SELECT on connect (0)
 *	redis-prefix TEXT	prefix of every key, the rate limits' too (moat:)
 *	greylist-delay DURATION	how long a new triplet waits (5m; 0..1d)
 *	greylist-window DURATION
 *				a retry passes only within this time of the
 *				first attempt, else the triplet starts over
 *				(24h; 1m..30d; must be above the delay)
 *	greylist-lifetime DURATION
 *				a triplet that passed is remembered this long
 *				after its last message (36d; 1h..365d)
 *	greylist-allow-after N	after N passed retries (distinct triplets) the
 *				client is allowlisted (5; 0 = never; ..1000)
 *	greylist-allow-lifetime DURATION
 *				how long allowlisting lasts after the client's
 *				last message (36d; 1h..365d)
 *	greylist-key PART,...	key parts (net,sender,rcpt). The client part is
 *				the first of net, sender-domain-spf, org-domain
 *				in the order given whose value the caller has;
 *				net always has one and is the fallback. sender
 *				and rcpt add those addresses. Words may be
 *				separated by commas or spaces.
 *	greylist-v4-prefix N	client network length for IPv4 (24; 8..32)
 *	greylist-v6-prefix N	client network length for IPv6 (64; 16..128)
 *	greylist-cache DURATION	with Redis: how long a handle remembers a pass
 *				(a triplet that passed, an allowlisted client)
 *				and answers it without asking Redis again
 *				(1m; 0 = never; ..1h); see glcache.h
 *	greylist-on-error accept|tempfail
 *				what the caller does on GL_ERROR (accept)
 *	greylist-store FILE|none
 *				embedded store file, loaded at start and saved
 *				at shutdown (none: memory only; default none)
 *	greylist-store-max N	embedded store records (100000; 100..10000000)
 *	DURATION: digits followed by nothing or s, ms, m, h, d (300, 300s, 5m,
 *	4h, 36d, 200ms); greylist durations are whole seconds.
 *	greylist_conf_set() returns 1 when it handled the setting, 0 when the
 *	name is not one of these, -1 on a bad value (why says what was
 *	expected). greylist_conf_check() checks the settings together (call
 *	it once all are read); 0, or -1 with why.
 *
 * KEYS
 *	A client ID is its network ("192.0.2.0/24", "2001:db8::/64"), or
 *	"spf:DOMAIN" (the SPF-validated sender domain) or "org:DOMAIN" (the
 *	organisational domain of a forward-confirmed reverse name): then a
 *	big sender's pool of addresses counts as one client, so its retry
 *	from another address passes. Keys are "c:{ID}" (the client's count
 *	and allowlisting) and "t:{ID}|SENDER|RCPT" (one triplet; a part not
 *	in greylist-key is empty; the null sender is "<>"), with
 *	redis-prefix in front in Redis. Addresses and domains are lower-cased
 *	and escaped (glstore_escape), so keys are printable ASCII without
 *	spaces, and each part is bounded (GLSTORE_PART_MAX). The braces make
 *	both keys of a decision share a Redis Cluster slot. greylist_key()
 *	builds both; -1 when the client address is not IPv4 or IPv6.
 *
 * DECISIONS
 *	greylist_new() makes a handle for one event loop (a worker's). With
 *	a redis setting it owns a Redis client on that loop (redis.h), whose
 *	connection loads the script (SCRIPT LOAD) on each connect; each
 *	decision is one EVALSHA (EVAL once after a -NOSCRIPT). Otherwise it
 *	uses store, the process-wide embedded store (glstore.h), which the
 *	caller opens once and closes after every handle is freed; NULL is
 *	returned when there is neither. The configuration is copied.
 *
 *	greylist_check() decides one triplet (t and its strings are copied
 *	or used before it returns). It returns 0 when cb(ctx, tag, verdict)
 *	will be called exactly once, on this loop's thread and never before
 *	greylist_check() returns; -1 when refused at once (more than
 *	GREYLIST_PENDING_MAX decisions waiting on this handle, or the handle
 *	is being freed): cb is not called and the caller treats it as
 *	GL_ERROR. The caller passes an id (tag), not a pointer that may be
 *	gone when cb runs. The verdict is borrowed for the call:
 *	    GL_PASS		pass (reason RETRIED, KNOWN, NOW_ALLOWLISTED)
 *	    GL_ALLOWLISTED	the client is allowlisted
 *	    GL_GREYLISTED	tempfail; retry_in seconds until a retry can
 *				pass (reason NEW or EARLY)
 *	    GL_ERROR		no decision (Redis unreachable, slow past
 *				redis-timeout, an error or malformed reply);
 *				why says which. The caller applies
 *				greylist-on-error (accept by default), never a
 *				5xx. The first error after a success is logged
 *				once (warning) and the first success after
 *				errors once (info), across the process;
 *				every error is counted.
 *	A decision never takes longer than redis-timeout (the embedded store
 *	answers on the next loop turn).
 *
 *	greylist_decide_now() gives the verdict at once when no wait is
 *	needed: with the embedded store, or with Redis when the local memory
 *	(greylist-cache) holds a pass for the triplet or its client. It
 *	returns 1 with *v filled (its strings belong to g, valid until the
 *	next call on g), counted like any decision; 0 when the caller must
 *	ask greylist_check() (nothing was counted). A caller that answers the
 *	command in the same loop turn spares it one turn of the loop, which
 *	other sessions' events would fill first.
 *	greylist_asks_redis() is true when a decision on t now would be a
 *	Redis round trip (Redis in use, not read-only, and the local memory
 *	holds no pass for t or its client); it counts and changes nothing.
 *
 *	greylist_check_limits() is the rate limits of a decision and the
 *	triplet in ONE Redis call (one EVALSHA of a third script): l->n
 *	limits (1..GREYLIST_LIMITS_MAX; keys as rl_key() writes them, which
 *	get redis-prefix and "rl:" here, and their T, tau and cost, as
 *	ratelimit_check() takes them) are counted first, then the triplet
 *	is decided by the deciding script's own code only when l->when says
 *	so: it has 2^n characters, and character m (0-based) is '1' when
 *	the triplet is to be decided if the exceeded limits are the bit
 *	mask m (bit i: limit i), anything else when not. The caller writes
 *	it from its policy (the engine runs its rules for every m), so a
 *	triplet is recorded exactly when the policy would reach the
 *	greylist after those limits, never for a recipient a limit refuses
 *	first. cb(ctx, tag, exceeded, err, v) is called once, like
 *	greylist_check()'s: exceeded the bit mask of exceeded limits; err
 *	non-NULL when the call failed as a whole (the limits' answer is
 *	then unknown, and v is GL_ERROR with the same why); v NULL when the
 *	triplet was not decided (nothing recorded, nothing counted). It
 *	returns -1 (cb not called) when refused (as greylist_check()), when
 *	the handle has no Redis or is read-only, when n or when does not
 *	fit, or when the triplet has no key: the caller asks the two apart.
 *	The pass memory is not consulted: ask greylist_asks_redis() first.
 *
 *	greylist_new_peek() makes a read-only handle (moatctl explain
 *	--live): its decisions are what a decision would answer now, and
 *	change nothing. With Redis it runs a second script that only reads
 *	the two records (HMGET) and mirrors the deciding script's logic
 *	(greylist_peek_script(); tests/unit/test_redis.c runs the table of
 *	cases through it); it never remembers passes (no greylist-cache).
 *	With the embedded store it asks glstore_peek().
 *	cb may call greylist_check() and greylist_free() on its handle.
 *	greylist_free() cancels what is pending: those callbacks are never
 *	called. greylist_free(NULL) is a no-op. greylist_set_clock() sets
 *	the clock (wall seconds) decisions use; tests only.
 *
 *	greylist_reply_text() writes the text of the 451 4.7.1 reply for a
 *	GL_GREYLISTED verdict ("greylisted, please retry in 5 minutes"); the
 *	caller adds the codes. greylist_counters() reads the process-wide
 *	counters. greylist_reply_parse() turns the script's reply into a
 *	decision: an array of four integers in range, nothing else (0, or
 *	-1 with why); it is fuzzed (tests/fuzz/fuzz_glstore.c).
 *	greylist_limits_reply_parse() reads the combined script's reply: nl
 *	integers 0 or 1 (*exceeded gets them as bits), then the greylist's
 *	four, or -1 first when the triplet was not decided (*skipped). 0
 *	when the limits' answers are there (d may still be GL_ERROR, the
 *	greylist's part malformed); -1 when the reply as a whole is not the
 *	script's (d GL_ERROR, why says so, *exceeded 0). Fuzzed too.
 */
#ifndef MOAT_GREYLIST_H
#define MOAT_GREYLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "glstore.h"
#include "redis.h"

#define GREYLIST_PENDING_MAX	1024
#define GREYLIST_PREFIX_MAX	64
#define GREYLIST_WHY_MAX	160
#define GREYLIST_CACHE_SLOTS	16384
#define GREYLIST_LIMITS_MAX	5	/* greylist_check_limits: 4n + 10 arguments */

enum gl_key_part { GL_KEY_NET = 1, GL_KEY_SPF = 2, GL_KEY_ORG = 4, GL_KEY_SENDER = 8,
	GL_KEY_RCPT = 16 };
enum gl_on_error { GL_ON_ERROR_ACCEPT = 0, GL_ON_ERROR_TEMPFAIL };

struct greylist_conf {
	struct rds_conf redis;
	char prefix[GREYLIST_PREFIX_MAX];
	unsigned delay, window, lifetime, allow_lifetime;	/* seconds */
	unsigned cache;			/* seconds; 0: every decision asks Redis */
	unsigned allow_after;
	int v4_prefix, v6_prefix;
	int client_part[3];		/* GL_KEY_NET/SPF/ORG in the order given */
	int nclient_part;
	bool key_sender, key_rcpt;
	int on_error;			/* enum gl_on_error */
	char store_path[1024];		/* "" : memory only */
	size_t store_max;
};

struct greylist_triplet {
	const struct sockaddr *client;	/* AF_INET or AF_INET6 */
	const char *sender;		/* MAIL FROM address, "" for <> */
	const char *rcpt;		/* RCPT TO address */
	const char *spf_domain;		/* SPF pass: the sender's domain, or NULL */
	const char *org_domain;		/* FCrDNS pass: its org domain, or NULL */
};

struct greylist_verdict {
	enum gl_status status;
	enum gl_reason reason;
	unsigned retry_in;		/* GL_GREYLISTED: seconds */
	unsigned passes;		/* the client's passed retries */
	const char *why;		/* GL_ERROR: why; "" otherwise */
	const char *key;		/* the triplet key */
	bool cached;			/* answered by the local memory (glcache.h) */
};

struct greylist_counters {
	uint64_t checks, pass, allowlisted, greylisted, errors, refused, outages;
	uint64_t cached;		/* answered by the local memory (glcache.h) */
};

typedef void (*greylist_cb)(void *ctx, uint64_t tag, const struct greylist_verdict *v);
typedef void (*greylist_limits_cb)(void *ctx, uint64_t tag, uint32_t exceeded, const char *err,
	const struct greylist_verdict *v);

/* greylist_check_limits: the limits asked with the triplet */
struct greylist_limits {
	int n;
	const char *const *keys;	/* rl_key()'s, without the prefix */
	const unsigned *emit_ms, *tau_ms, *cost;
	const char *when;		/* 2^n characters, see above */
};

struct greylist;

void greylist_conf_init(struct greylist_conf *g);
int greylist_conf_set(struct greylist_conf *g, const char *name, const char *const *words,
	int nwords, char *why, size_t whysize);
int greylist_conf_check(const struct greylist_conf *g, char *why, size_t whysize);
void greylist_store_params(const struct greylist_conf *g, struct glstore_params *p);

struct greylist *greylist_new(struct event_base *base, const struct greylist_conf *c,
	struct glstore *store);
struct greylist *greylist_new_peek(struct event_base *base, const struct greylist_conf *c,
	struct glstore *store);
int greylist_decide_now(struct greylist *g, const struct greylist_triplet *t,
	struct greylist_verdict *v);
int greylist_check(struct greylist *g, const struct greylist_triplet *t, greylist_cb cb,
	void *ctx, uint64_t tag);
bool greylist_asks_redis(struct greylist *g, const struct greylist_triplet *t);
int greylist_check_limits(struct greylist *g, const struct greylist_triplet *t,
	const struct greylist_limits *l, greylist_limits_cb cb, void *ctx, uint64_t tag);
void greylist_free(struct greylist *g);
void greylist_set_clock(struct greylist *g, int64_t (*now)(void *), void *arg);

int greylist_key(const struct greylist_conf *c, const struct greylist_triplet *t,
	char *ckey, size_t csize, char *tkey, size_t tsize);
int greylist_reply_text(const struct greylist_verdict *v, char *out, size_t size);
void greylist_outcome(const struct greylist_verdict *v, int on_error, bool *tempfail, char *text,
	size_t size, uint64_t sid);
const char *greylist_status_name(enum gl_status s);
const char *greylist_reason_name(enum gl_reason r);
void greylist_counters(struct greylist_counters *out);
const char *greylist_script(void);
const char *greylist_peek_script(void);
int greylist_reply_parse(const redisReply *r, struct gl_decision *d, char *why, size_t whysize);
int greylist_limits_reply_parse(const redisReply *r, int nl, uint32_t *exceeded, bool *skipped,
	struct gl_decision *d, char *why, size_t whysize);

#endif
