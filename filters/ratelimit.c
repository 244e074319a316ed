/*
 * ratelimit - named rate limits, shared in Redis or kept in the process
 * (see ratelimit.h)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decimal.h"
#include "monotime.h"
#include "ratelimit.h"
#include "siphash.h"
#include "xalloc.h"

/*
 * KEYS[i]: the TAT of limit i; ARGV[3i-2], ARGV[3i-1], ARGV[3i]: its
 * emission interval T and tolerance tau (ms) and the decision's cost.
 * ARGV[3n+i], when given: a block of units for limit i to reserve beyond
 * the cost (ratelimit-node-share). Returns one integer: the exceeded
 * limits as a bit mask (bit i-1: limit i), plus the reserved blocks as a
 * mask shifted left by n. Redis's clock (TIME), so every node agrees. The loop is RL_LUA_LIMITS (ratelimit.h), shared
 * with the greylist's combined script.
 */
static const char rl_lua[] =
	"local nl, o = #KEYS, 0\n"
	"local xa = #ARGV > 3 * nl and 3 * nl or nil\n"
	RL_LUA_LIMITS
	"return m + g * 2 ^ nl\n";

/* rl_script - the Lua text */
const char *
rl_script(void)
{
	return rl_lua;
}

/* rl_prefix - see ratelimit.h */
void
rl_prefix(const char *redis_prefix, char *out, size_t size)
{
	snprintf(out, size, "%s" RL_PREFIX_TAIL, redis_prefix != NULL ? redis_prefix : "moat:");
}

/* rl_lower - append s lower-cased (ASCII), '|' and '%' as %7c and %25
 * (a value cannot pose as two parts); off == size - 1 when cut */
static size_t
rl_lower(char *out, size_t off, size_t size, const char *s)
{
	for (; *s && off + 1 < size; s++) {
		if (*s == '|' || *s == '%') {
			if (off + 4 > size)
				return size - 1;
			memcpy(out + off, *s == '|' ? "%7c" : "%25", 3);
			off += 3;
		} else {
			out[off++] = (char)tolower((unsigned char)*s);
		}
	}
	return *s ? size - 1 : off;
}

/* rl_key - see ratelimit.h */
int
rl_key(const struct rl_def *d, const struct rl_subject *s, char *out, size_t size)
{
	size_t off;
	int n;

	n = snprintf(out, size, "%s", d->name);
	if (n < 0 || (size_t)n >= size)
		return -1;
	off = (size_t)n;
	if (d->parts & RL_CLIENT) {
		char ip[INET6_ADDRSTRLEN];
		int plen;

		if (s->client == NULL)
			return 0;
		if (s->client->sa_family == AF_INET) {
			struct in_addr a = ((const struct sockaddr_in *)s->client)->sin_addr;
			uint32_t m = d->v4_prefix == 0 ? 0 : htonl(0xffffffffu << (32 - d->v4_prefix));

			a.s_addr &= m;
			inet_ntop(AF_INET, &a, ip, sizeof(ip));
			plen = d->v4_prefix;
		} else if (s->client->sa_family == AF_INET6) {
			struct in6_addr a = ((const struct sockaddr_in6 *)s->client)->sin6_addr;

			for (int i = 0; i < 16; i++) {
				int bits = d->v6_prefix - i * 8;
				a.s6_addr[i] &= bits >= 8 ? 0xff : bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
			}
			inet_ntop(AF_INET6, &a, ip, sizeof(ip));
			plen = d->v6_prefix;
		} else {
			return 0;
		}
		n = snprintf(out + off, size - off, "|%s/%d", ip, plen);
		if (n < 0 || (size_t)n >= size - off)
			return -1;
		off += (size_t)n;
	}
	{
		static const unsigned order[] = { RL_SENDER, RL_SENDER_DOMAIN, RL_LOGIN, RL_RCPT };
		for (int i = 0; i < 4; i++) {
			const char *v;

			if (!(d->parts & order[i]))
				continue;
			v = order[i] == RL_SENDER ? s->sender : order[i] == RL_SENDER_DOMAIN ?
			    s->sender_domain : order[i] == RL_LOGIN ? s->login : s->rcpt;
			if (v == NULL || v[0] == 0)
				return 0;
			if (off + 2 >= size)
				return -1;
			out[off++] = '|';
			off = rl_lower(out, off, size, v);
			if (off + 1 >= size)
				return -1;
		}
	}
	out[off] = 0;
	return (int)off;
}

/* rl_block - see ratelimit.h */
unsigned
rl_block(const struct rl_def *d, unsigned share_pct)
{
	uint64_t b = (uint64_t)d->burst * share_pct / 100;

	return b < 2 ? 0 : b > 1000000 ? 1000000 : (unsigned)b;
}

/* ---------------------------------------------------------------------
 * In the process
 */

struct rl_slot {
	uint64_t h;		/* the key's hash; 0: free */
	uint64_t tat;		/* ms */
};

static struct rl_slot *rl_table;
static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rl_k0, rl_k1;

#define RL_PROBE 16

/* rl_local_take - see ratelimit.h */
int
rl_local_take(const char *key, unsigned emit_ms, unsigned tau_ms, unsigned cost, uint64_t now_ms)
{
	uint64_t h, tat, nt;
	struct rl_slot *free_slot = NULL, *sl = NULL;
	int r;

	pthread_mutex_lock(&rl_lock);
	if (rl_table == NULL) {
		rl_table = xcalloc(RL_LOCAL_SLOTS, sizeof(*rl_table));
		siphash_key(&rl_k0, &rl_k1);
	}
	h = siphash24(rl_k0, rl_k1, key, strlen(key)) | 1;
	for (unsigned i = 0; i < RL_PROBE; i++) {
		struct rl_slot *s = &rl_table[(h + i) & (RL_LOCAL_SLOTS - 1)];

		if (s->h == h) {
			sl = s;
			break;
		}
		if (free_slot == NULL && (s->h == 0 || s->tat <= now_ms))
			free_slot = s;
	}
	if (sl == NULL) {
		if (free_slot == NULL) {
			pthread_mutex_unlock(&rl_lock);
			return -1;
		}
		sl = free_slot;
		sl->h = h;
		sl->tat = 0;
	}
	tat = sl->tat < now_ms ? now_ms : sl->tat;
	nt = tat + (uint64_t)emit_ms * cost;
	if (nt - now_ms > tau_ms) {
		r = 1;
	} else {
		r = 0;
		sl->tat = nt;
	}
	pthread_mutex_unlock(&rl_lock);
	return r;
}

/* rl_local_reset - forget every key (tests) */
void
rl_local_reset(void)
{
	pthread_mutex_lock(&rl_lock);
	if (rl_table != NULL)
		memset(rl_table, 0, RL_LOCAL_SLOTS * sizeof(*rl_table));
	pthread_mutex_unlock(&rl_lock);
}

/* ---------------------------------------------------------------------
 * In Redis
 */

struct rl_q {
	struct rl_q *prev, *next;	/* the client's pending calls */
	struct ratelimit *r;
	ratelimit_cb cb;
	void *ctx;
	int n;
	uint64_t h[8];			/* the keys' hashes, for a reserved block */
	unsigned extra[8], emit_ms[8];
};

/* a block of units this loop reserved in Redis (ratelimit-node-share) */
struct rl_allow {
	uint64_t h;			/* the key's hash; 0: free */
	uint64_t until_ms;		/* dropped after (monotonic) */
	unsigned left;
};

#define RL_ALLOW_SLOTS	4096
#define RL_ALLOW_PROBE	8

struct ratelimit {
	struct rds *rds;
	char prefix[RL_PREFIX_MAX];	/* redis-prefix "rl:" */
	size_t plen;
	struct rl_q *pending;		/* freed by ratelimit_free (rds_free calls no callback) */
	struct rl_allow *allow;		/* RL_ALLOW_SLOTS, made with the first block */
	uint64_t k0, k1;
};

/* rl_hash - a key's hash for the allowance table (never 0) */
static uint64_t
rl_hash(const struct ratelimit *r, const char *key)
{
	return siphash24(r->k0, r->k1, key, strlen(key)) | 1;
}

/* ratelimit_take_local - see ratelimit.h */
bool
ratelimit_take_local(struct ratelimit *r, const char *key, unsigned cost)
{
	uint64_t h, now;

	if (r->allow == NULL)
		return false;
	h = rl_hash(r, key);
	now = mono_ms();
	for (unsigned i = 0; i < RL_ALLOW_PROBE; i++) {
		struct rl_allow *a = &r->allow[(h + i) & (RL_ALLOW_SLOTS - 1)];

		if (a->h != h)
			continue;
		if (a->until_ms <= now || a->left < cost) {
			a->h = 0;	/* spent or stale: the next decision asks Redis */
			return false;
		}
		a->left -= cost;
		return true;
	}
	return false;
}

/* rl_allow_put - Redis reserved a block of units for key h */
static void
rl_allow_put(struct ratelimit *r, uint64_t h, unsigned units, unsigned emit_ms)
{
	uint64_t now = mono_ms();
	struct rl_allow *slot = NULL;

	for (unsigned i = 0; i < RL_ALLOW_PROBE; i++) {
		struct rl_allow *a = &r->allow[(h + i) & (RL_ALLOW_SLOTS - 1)];

		if (a->h == h) {
			slot = a;
			break;
		}
		if (slot == NULL && (a->h == 0 || a->until_ms <= now))
			slot = a;
	}
	if (slot == NULL)
		return;		/* the table is full here: those units go unused */
	slot->h = h;
	slot->left = units;
	slot->until_ms = now + (uint64_t)units * emit_ms;
}

/* rl_q_unlink - off the pending list */
static void
rl_q_unlink(struct rl_q *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		q->r->pending = q->next;
	if (q->next)
		q->next->prev = q->prev;
}

/* ratelimit_new - a client for this loop */
struct ratelimit *
ratelimit_new(struct event_base *base, const struct rds_conf *c, const char *prefix)
{
	struct ratelimit *r = xcalloc(1, sizeof(*r));
	const char *scripts[1] = { rl_lua };

	rl_prefix(prefix, r->prefix, sizeof(r->prefix));
	r->plen = strlen(r->prefix);
	r->rds = rds_new(base, c, scripts, 1);
	return r;
}

/* rl_on_reply - the script's answer: the exceeded limits as a bit mask */
static void
rl_on_reply(void *ctx, const redisReply *reply, const char *err)
{
	struct rl_q *q = ctx;
	uint32_t mask = (1u << q->n) - 1;

	rl_q_unlink(q);
	if (err != NULL) {
		q->cb(q->ctx, 0, err);
	} else if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0 ||
	    reply->integer >= (long long)1 << (2 * q->n)) {
		q->cb(q->ctx, 0, reply->type == REDIS_REPLY_ERROR ? "script error" : "bad reply");
	} else {
		uint32_t granted = (uint32_t)(reply->integer >> q->n) & mask;

		for (int i = 0; i < q->n; i++)
			if ((granted & (1u << i)) && q->extra[i] > 0 && q->r->allow != NULL)
				rl_allow_put(q->r, q->h[i], q->extra[i], q->emit_ms[i]);
		q->cb(q->ctx, (uint32_t)reply->integer & mask, NULL);
	}
	free(q);
}

/* ratelimit_check - see ratelimit.h */
int
ratelimit_check(struct ratelimit *r, int n, const char *const *keys, const unsigned *emit_ms,
	const unsigned *tau_ms, const unsigned *cost, const unsigned *extra, unsigned timeout_ms,
	ratelimit_cb cb, void *ctx)
{
	const char *args[RDS_ARGS_MAX];
	size_t lens[RDS_ARGS_MAX], plen = r->plen;
	char kbuf[8][RL_KEY_MAX + RL_PREFIX_MAX], num[32][20];
	struct rl_q *q;
	int nargs = 4 * n;
	bool blocks = false;

	if (n <= 0 || n > 8)
		return -1;
	for (int i = 0; extra != NULL && i < n; i++)
		blocks |= extra[i] > 0;
	for (int i = 0; i < n; i++) {
		size_t klen = strnlen(keys[i], RL_KEY_MAX - 1);

		memcpy(kbuf[i], r->prefix, plen);
		memcpy(kbuf[i] + plen, keys[i], klen);
		args[i] = kbuf[i];
		lens[i] = plen + klen;
		args[n + 3 * i] = num[3 * i];
		lens[n + 3 * i] = dec_u64(num[3 * i], emit_ms[i]);
		args[n + 3 * i + 1] = num[3 * i + 1];
		lens[n + 3 * i + 1] = dec_u64(num[3 * i + 1], tau_ms[i]);
		args[n + 3 * i + 2] = num[3 * i + 2];
		lens[n + 3 * i + 2] = dec_u64(num[3 * i + 2], cost[i]);
		if (blocks) {
			args[4 * n + i] = num[3 * n + i];
			lens[4 * n + i] = dec_u64(num[3 * n + i], extra[i]);
		}
	}
	q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->cb = cb;
	q->ctx = ctx;
	q->n = n;
	if (blocks) {
		nargs += n;
		if (r->allow == NULL) {
			r->allow = xcalloc(RL_ALLOW_SLOTS, sizeof(*r->allow));
			siphash_key(&r->k0, &r->k1);
		}
		for (int i = 0; i < n; i++) {
			q->extra[i] = extra[i];
			q->emit_ms[i] = emit_ms[i];
			if (extra[i] > 0)
				q->h[i] = rl_hash(r, keys[i]);
		}
	}
	if (rds_eval(r->rds, 0, timeout_ms, rl_on_reply, q, n, nargs, args, lens) != 0) {
		free(q);
		return -1;
	}
	q->next = r->pending;
	if (q->next)
		q->next->prev = q;
	r->pending = q;
	return 0;
}

/* ratelimit_free - NULL is fine */
void
ratelimit_free(struct ratelimit *r)
{
	if (r == NULL)
		return;
	rds_free(r->rds);
	while (r->pending != NULL) {
		struct rl_q *q = r->pending;

		r->pending = q->next;
		free(q);
	}
	free(r->allow);
	free(r);
}
