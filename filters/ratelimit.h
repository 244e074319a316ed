/*
 * ratelimit - named rate limits, shared in Redis or kept in the process
 *
 * SYNOPSIS
 *	int rl_key(const struct rl_def *d, const struct rl_subject *s, char *out, size_t size);
 *	int rl_local_take(const char *key, unsigned emit_ms, unsigned tau_ms, unsigned cost,
 *	                  uint64_t now_ms);
 *	const char *rl_script(void);
 *	void rl_prefix(const char *redis_prefix, char *out, size_t size);
 *	struct ratelimit *ratelimit_new(struct event_base *base, const struct rds_conf *c,
 *	                                const char *redis_prefix);
 *	int ratelimit_check(struct ratelimit *r, int n, const char *const *keys,
 *	                    const unsigned *emit_ms, const unsigned *tau_ms, const unsigned *cost,
 *	                    const unsigned *extra, unsigned timeout_ms, ratelimit_cb cb,
 *	                    void *ctx);
 *	bool ratelimit_take_local(struct ratelimit *r, const char *key, unsigned cost);
 *	unsigned rl_block(const struct rl_def *d, unsigned share_pct);
 *	void ratelimit_free(struct ratelimit *r);
 *
 * DESCRIPTION
 *	A limit (the policy file's "ratelimit NAME key PART+... rate N/DUR
 *	[burst B] [per message|recipient]", policy/conf_ratelimit.c) allows
 *	B decisions at once (B defaults to N) and N per DUR after that:
 *	GCRA, the generic cell rate algorithm, which keeps one number per
 *	key (the theoretical arrival time, TAT) and needs no clean-up: a
 *	decision of cost c at time now moves TAT to max(TAT, now) + c * T
 *	(T = DUR / N, the emission interval) and is allowed when the new
 *	TAT is at most now + B * T (tau); a refused decision leaves TAT as
 *	it was. The key expires when TAT has passed.
 *
 *	rl_key() writes the limit's key for the decision's subject: the
 *	limit's name and each part of its key, joined with '|' (client
 *	network as "192.0.2.0/24", sender and recipient lower-cased, sender
 *	domain, login; '|' and '%' inside a value written %7c and %25, so
 *	that no value can pose as two parts). It returns the length, 0 when a part is missing
 *	(no login when the key has login, the null sender when it has
 *	sender or sender domain, no client address): that decision is not
 *	counted and not limited. -1 when out is too small.
 *
 *	rl_local_take() is the in-process store (no Redis): one table for
 *	the process, under a lock, RL_LOCAL_SLOTS keys (a slot whose TAT
 *	has passed is free); 1 exceeded, 0 allowed, -1 no room (an error).
 *	Limits kept so are per host: several moatd each count on their own.
 *
 *	ratelimit_check() sends every limit of one decision in one EVALSHA
 *	of rl_script() (the TAT keys are redis-prefix, "rl:" and KEY, so
 *	"moat:rl:" KEY by default, as rl_prefix() writes the front; Redis's
 *	clock, so every node agrees); cb gets a bit mask of the exceeded ones, or an
 *	error text. It returns -1 (cb not called) when the client refuses
 *	the command (too many pending). Per event loop, like the greylist's
 *	client; a second connection to the same Redis. At RCPT, when the
 *	greylist is asked too, the engine sends the limits with the triplet
 *	in one call of the greylist's combined script instead
 *	(greylist_check_limits(), greylist.h), which runs the same loop
 *	(RL_LUA_LIMITS) first.
 *
 *	Node share (ratelimit-node-share PCT, moat.conf(5)): extra, when not
 *	NULL, gives for each limit a block of units to reserve in the same
 *	call beyond the decision's cost (0: none). The script takes cost plus
 *	block when the limit has room for both, else the cost alone (or
 *	refuses, as without a block); a block taken is kept in this client's
 *	table (per event loop, 4096 keys) and spent by
 *	ratelimit_take_local(), which answers "not exceeded" without Redis
 *	while the block lasts (true), for at most block x T milliseconds.
 *	The units are counted in Redis when reserved, so the limit is never
 *	exceeded; a limit can refuse early, by at most the units the other
 *	loops of every node hold. rl_block() is a limit's block: burst x PCT
 *	/ 100, or 0 when that is below 2 (small limits stay exact).
 *
 *	rl_prefix() writes the front of every limit key: redis-prefix (NULL:
 *	the default "moat:") and "rl:". moatctl ratelimit uses it too.
 */
#ifndef MOAT_RATELIMIT_H
#define MOAT_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "redis.h"

#define RL_MAX		32		/* limits in one policy */
#define RL_NAME_MAX	48
#define RL_KEY_MAX	600
#define RL_LOCAL_SLOTS	65536
#define RL_PREFIX_TAIL	"rl:"		/* after redis-prefix */
#define RL_PREFIX_MAX	72		/* redis-prefix (< 64) and the tail */

/*
 * The limits' loop of a Lua script: nl limits, their TAT keys KEYS[1..nl],
 * their arguments from ARGV[o+1] (T, tau, cost each); leaves out[i] = 1
 * for an exceeded limit, 0 otherwise, and m, the exceeded ones as a bit
 * mask (bit i-1: limit i). A refused decision changes nothing. With
 * xa set, ARGV[xa+i] is a block of e units to reserve beyond the cost
 * (ratelimit-node-share): taken too when the limit has room for both,
 * and then bit i-1 of g is set. The TATs
 * are read in one MGET and each allowed one written with one PSETEX
 * (TIME, MGET and a PSETEX per counted limit: Redis's commands are the
 * script's cost, not its Lua).
 */
#define RL_LUA_LIMITS \
	"local t = redis.call('TIME')\n" \
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n" \
	"local tats = redis.call('MGET', unpack(KEYS, 1, nl))\n" \
	"local out, m, g, b = {}, 0, 0, 1\n" \
	"for i = 1, nl do\n" \
	"  local j = o + 3 * i\n" \
	"  local c = tonumber(ARGV[j])\n" \
	"  local tat = tonumber(tats[i]) or 0\n" \
	"  if tat < now then tat = now end\n" \
	"  local new = tat + ARGV[j-2] * c\n" \
	"  if new - now > tonumber(ARGV[j-1]) then\n" \
	"    out[i] = 1\n" \
	"    m = m + b\n" \
	"  else\n" \
	"    out[i] = 0\n" \
	"    local e = xa and tonumber(ARGV[xa+i]) or 0\n" \
	"    if e > 0 and new + ARGV[j-2] * e - now <= tonumber(ARGV[j-1]) then\n" \
	"      new = new + ARGV[j-2] * e\n" \
	"      g = g + b\n" \
	"    end\n" \
	"    if new > tat then redis.call('PSETEX', KEYS[i], new - now + 1000, new) end\n" \
	"  end\n" \
	"  b = b * 2\n" \
	"end\n"

enum rl_part { RL_CLIENT = 1, RL_SENDER = 2, RL_SENDER_DOMAIN = 4, RL_LOGIN = 8, RL_RCPT = 16 };
enum rl_on_error { RL_ON_ERROR_NOT_EXCEEDED = 0, RL_ON_ERROR_EXCEEDED };

struct rl_def {
	char name[RL_NAME_MAX];
	unsigned parts;			/* enum rl_part bits */
	int v4_prefix, v6_prefix;	/* RL_CLIENT */
	unsigned emit_ms;		/* T = duration / N */
	unsigned tau_ms;		/* burst * T */
	bool per_rcpt;			/* per recipient, else per message */
	unsigned rate, burst;		/* as written, for logs and moatctl */
	uint64_t dur_ms;
};

struct rl_set {
	int n;
	struct rl_def d[RL_MAX];
};

/* what a decision's keys are made of; NULL: not known */
struct rl_subject {
	const struct sockaddr *client;
	const char *sender;		/* "local@domain"; "" for <> */
	const char *sender_domain;
	const char *login;
	const char *rcpt;
};

typedef void (*ratelimit_cb)(void *ctx, uint32_t exceeded, const char *err);

struct ratelimit;

int rl_key(const struct rl_def *d, const struct rl_subject *s, char *out, size_t size);
int rl_local_take(const char *key, unsigned emit_ms, unsigned tau_ms, unsigned cost,
	uint64_t now_ms);
void rl_local_reset(void);
const char *rl_script(void);
void rl_prefix(const char *redis_prefix, char *out, size_t size);
struct ratelimit *ratelimit_new(struct event_base *base, const struct rds_conf *c,
	const char *redis_prefix);
int ratelimit_check(struct ratelimit *r, int n, const char *const *keys,
	const unsigned *emit_ms, const unsigned *tau_ms, const unsigned *cost,
	const unsigned *extra, unsigned timeout_ms, ratelimit_cb cb, void *ctx);
bool ratelimit_take_local(struct ratelimit *r, const char *key, unsigned cost);
unsigned rl_block(const struct rl_def *d, unsigned share_pct);
void ratelimit_free(struct ratelimit *r);

#endif
