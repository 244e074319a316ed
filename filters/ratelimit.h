/*
 * ratelimit - named rate limits, shared in Redis or kept in the process
 *
 * SYNOPSIS
 *	int rl_key(const struct rl_def *d, const struct rl_subject *s, char *out, size_t size);
 *	int rl_local_take(const char *key, unsigned emit_ms, unsigned tau_ms, unsigned cost,
 *	                  uint64_t now_ms);
 *	const char *rl_script(void);
 *	struct ratelimit *ratelimit_new(struct event_base *base, const struct rds_conf *c);
 *	int ratelimit_check(struct ratelimit *r, int n, const char *const *keys,
 *	                    const unsigned *emit_ms, const unsigned *tau_ms, const unsigned *cost,
 *	                    unsigned timeout_ms, ratelimit_cb cb, void *ctx);
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
 *	of rl_script() (the TAT keys "moat:rl:" KEY; Redis's clock, so
 *	every node agrees); cb gets a bit mask of the exceeded ones, or an
 *	error text. It returns -1 (cb not called) when the client refuses
 *	the command (too many pending). Per event loop, like the greylist's
 *	client; a second connection to the same Redis.
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
#define RL_PREFIX	"moat:rl:"

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
struct ratelimit *ratelimit_new(struct event_base *base, const struct rds_conf *c);
int ratelimit_check(struct ratelimit *r, int n, const char *const *keys,
	const unsigned *emit_ms, const unsigned *tau_ms, const unsigned *cost,
	unsigned timeout_ms, ratelimit_cb cb, void *ctx);
void ratelimit_free(struct ratelimit *r);

#endif
