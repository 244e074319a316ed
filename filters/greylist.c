/*
 * greylist - settings, keys, the Lua script and the decision through Redis
 * or the embedded store (see greylist.h for the contract)
 *
 * ONE ROUND TRIP
 *	The script reads and writes both records of a decision (the client's
 *	and the triplet's) inside Redis, atomically, and returns the verdict:
 *	one EVALSHA per decision, whatever the answer. Times come from the
 *	caller (ARGV[1]) and are stored in the records ('x' is when a record
 *	stops counting), so the logic never depends on Redis expiry, which
 *	only collects garbage; hence tests can drive the clock, and the
 *	embedded store (glstore_decide) runs the very same logic.
 *
 * DELIVERY
 *	Verdicts reach the caller from an event of our own (done_ev), never
 *	from inside hiredis or from greylist_check() itself, so a caller may
 *	do anything in its callback, including freeing the handle.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "glcache.h"
#include "greylist.h"
#include "log.h"
#include "ratelimit.h"
#include "xalloc.h"

#define GL_DAY	86400u

/*
 * KEYS[1] the client record {n passes, u allowlisted until, x valid until}
 * KEYS[2] the triplet record {f first seen, p passed 0|1, x valid until}
 * ARGV now, delay, window, lifetime, allow_after, allow_lifetime
 * returns {status, reason, seconds to wait, passes} (glstore.h numbers)
 */
/* the start of both scripts: the arguments and the client's record */
#define GL_LUA_HEAD \
	"local now = tonumber(ARGV[1])\n" \
	"local delay = tonumber(ARGV[2])\n" \
	"local window = tonumber(ARGV[3])\n" \
	"local life = tonumber(ARGV[4])\n" \
	"local after = tonumber(ARGV[5])\n" \
	"local alife = tonumber(ARGV[6])\n" \
	"local n, u = 0, 0\n" \
	"local c = redis.call('HMGET', KEYS[1], 'n', 'u', 'x')\n" \
	"if (tonumber(c[3]) or 0) > now then\n" \
	"  n = tonumber(c[1]) or 0\n" \
	"  u = tonumber(c[2]) or 0\n" \
	"end\n"

/* the rest of the deciding script */
#define GL_LUA_DECIDE \
	"if u > now then\n" \
	"  redis.call('HSET', KEYS[1], 'u', now + alife, 'x', now + alife)\n" \
	"  redis.call('EXPIRE', KEYS[1], alife)\n" \
	"  return {1, 5, 0, n}\n" \
	"end\n" \
	"local t = redis.call('HMGET', KEYS[2], 'f', 'p', 'x')\n" \
	"local f = tonumber(t[1])\n" \
	"if f == nil or (tonumber(t[3]) or 0) <= now then\n" \
	"  redis.call('HSET', KEYS[2], 'f', now, 'p', 0, 'x', now + window)\n" \
	"  redis.call('EXPIRE', KEYS[2], window)\n" \
	"  return {2, 0, delay, n}\n" \
	"end\n" \
	"if t[2] == '1' then\n" \
	"  redis.call('HSET', KEYS[2], 'x', now + life)\n" \
	"  redis.call('EXPIRE', KEYS[2], life)\n" \
	"  return {0, 3, 0, n}\n" \
	"end\n" \
	"if now < f + delay then\n" \
	"  return {2, 1, f + delay - now, n}\n" \
	"end\n" \
	"n = n + 1\n" \
	"redis.call('HSET', KEYS[2], 'p', 1, 'x', now + life)\n" \
	"redis.call('EXPIRE', KEYS[2], life)\n" \
	"if after > 0 and n >= after then\n" \
	"  redis.call('HSET', KEYS[1], 'n', n, 'u', now + alife, 'x', now + alife)\n" \
	"  redis.call('EXPIRE', KEYS[1], alife)\n" \
	"  return {0, 4, 0, n}\n" \
	"end\n" \
	"redis.call('HSET', KEYS[1], 'n', n, 'u', 0, 'x', now + life)\n" \
	"redis.call('EXPIRE', KEYS[1], life)\n" \
	"return {0, 2, 0, n}\n"

static const char greylist_lua[] =
	GL_LUA_HEAD
	GL_LUA_DECIDE;

/*
 * The rate limits of a decision and its triplet in one call
 * (greylist_check_limits): KEYS[1..nl] the limits' TATs, KEYS[nl+1] and
 * KEYS[nl+2] the client and triplet records; ARGV[1] nl, ARGV[2..3nl+1]
 * the limits (RL_LUA_LIMITS), ARGV[3nl+2] the table "when" (its
 * character m+1 is '1' when the triplet is to be decided if the
 * exceeded limits are the bit mask m), ARGV[3nl+3..3nl+8] the greylist's
 * six. The limits are counted first; the triplet is then decided (and
 * recorded) only as the table says, by the very deciding script above,
 * its KEYS and ARGV given as a function's parameters. Returns the nl
 * limit answers (0/1) and the greylist's four integers, {-1, 0, 0, 0}
 * when it was not decided.
 */
static const char greylist_limits_lua[] =
	"local nl, o, xa = tonumber(ARGV[1]), 1, nil\n"
	RL_LUA_LIMITS
	"local g = {-1, 0, 0, 0}\n"
	"if string.sub(ARGV[3*nl+2], m+1, m+1) == '1' then\n"
	"  local ga = {}\n"
	"  for i = 1, 6 do ga[i] = ARGV[3*nl+2+i] end\n"
	"  g = (function(KEYS, ARGV)\n"
	GL_LUA_HEAD
	GL_LUA_DECIDE
	"  end)({KEYS[nl+1], KEYS[nl+2]}, ga)\n"
	"end\n"
	"for i = 1, 4 do out[nl+i] = g[i] end\n"
	"return out\n";

/*
 * The same decision, read-only (explain --live): the same KEYS and ARGV,
 * only HMGET; returns what the script above would return now, and
 * changes nothing (no record made, renewed or counted).
 */
static const char greylist_peek_lua[] =
	GL_LUA_HEAD
	"if u > now then return {1, 5, 0, n} end\n"
	"local t = redis.call('HMGET', KEYS[2], 'f', 'p', 'x')\n"
	"local f = tonumber(t[1])\n"
	"if f == nil or (tonumber(t[3]) or 0) <= now then return {2, 0, delay, n} end\n"
	"if t[2] == '1' then return {0, 3, 0, n} end\n"
	"if now < f + delay then return {2, 1, f + delay - now, n} end\n"
	"n = n + 1\n"
	"if after > 0 and n >= after then return {0, 4, 0, n} end\n"
	"return {0, 2, 0, n}\n";

struct gl_req {
	TAILQ_ENTRY(gl_req) link;	/* g->pending, then g->done */
	struct greylist *g;
	greylist_cb cb;
	void *ctx;
	uint64_t tag;
	bool via_redis;
	bool cached;			/* answered by g->cache */
	bool limits;			/* greylist_check_limits() */
	bool skipped;			/* ... and the triplet was not decided */
	bool lerr;			/* ... and the call failed as a whole */
	int nl;				/* ... its limits */
	uint32_t exceeded;		/* ... those exceeded */
	greylist_limits_cb lcb;
	int64_t now;			/* when it was asked */
	struct gl_decision d;
	char why[GREYLIST_WHY_MAX];
	char key[GLSTORE_KEY_MAX];
	char ckey[GLSTORE_ID_MAX + 8];
};

TAILQ_HEAD(gl_reqs, gl_req);

struct greylist {
	struct event_base *base;
	struct greylist_conf conf;
	struct rds *rds;
	struct glstore *store;
	struct glcache *cache;		/* Redis only, with greylist-cache */
	struct gl_req now_req;		/* greylist_decide_now()'s, borrowed by its verdict */
	struct event *done_ev;
	struct gl_reqs pending, done;
	unsigned npending;
	int in_drain;
	bool dying;
	bool peek;			/* greylist_new_peek: read-only */
	int64_t (*now)(void *);
	void *now_arg;
};

/* process-wide counters and the outage flag (logged once per change) */
static atomic_uint_fast64_t gl_n_checks, gl_n_pass, gl_n_allow, gl_n_grey, gl_n_err,
	gl_n_refused, gl_n_outages, gl_n_cached;
static atomic_int gl_outage;

/* ---- settings ---- */

/* greylist_script - the Lua script's text */
const char *
greylist_script(void)
{
	return greylist_lua;
}

/* greylist_peek_script - the read-only script's text */
const char *
greylist_peek_script(void)
{
	return greylist_peek_lua;
}

/* ---- keys ---- */

/* gl_domain_id - "spf:DOMAIN" / "org:DOMAIN" */
static int
gl_domain_id(const char *tag, const char *dom, char *out, size_t size)
{
	char esc[GLSTORE_PART_MAX + 1];
	size_t n = glstore_escape(esc, sizeof(esc), dom, true);

	while (n > 0 && esc[n - 1] == '.')
		esc[--n] = '\0';
	if (n == 0)
		return -1;
	return snprintf(out, size, "%s:%s", tag, esc) < (int)size ? 0 : -1;
}

/* greylist_key - both keys of a decision (see greylist.h) */
int
greylist_key(const struct greylist_conf *c, const struct greylist_triplet *t, char *ckey,
	size_t csize, char *tkey, size_t tsize)
{
	char id[GLSTORE_ID_MAX], s[GLSTORE_PART_MAX + 1], r[GLSTORE_PART_MAX + 1];
	bool have = false;
	int n;

	for (int i = 0; i < c->nclient_part && !have; i++) {
		switch (c->client_part[i]) {
		case GL_KEY_SPF:
			have = t->spf_domain && t->spf_domain[0] &&
			    gl_domain_id("spf", t->spf_domain, id, sizeof(id)) == 0;
			break;
		case GL_KEY_ORG:
			have = t->org_domain && t->org_domain[0] &&
			    gl_domain_id("org", t->org_domain, id, sizeof(id)) == 0;
			break;
		default:
			break;
		}
	}
	if (!have && glstore_client_net(t->client, c->v4_prefix, c->v6_prefix, id,
	    sizeof(id)) != 0)
		return -1;
	s[0] = r[0] = '\0';
	if (c->key_sender) {
		if (t->sender == NULL || t->sender[0] == '\0')
			snprintf(s, sizeof(s), "<>");
		else
			glstore_escape(s, sizeof(s), t->sender, true);
	}
	if (c->key_rcpt && t->rcpt != NULL)
		glstore_escape(r, sizeof(r), t->rcpt, true);
	n = snprintf(ckey, csize, "c:{%s}", id);
	if (n < 0 || (size_t)n >= csize)
		return -1;
	n = snprintf(tkey, tsize, "t:{%s}|%s|%s", id, s, r);
	return n < 0 || (size_t)n >= tsize ? -1 : 0;
}

/* ---- decisions ---- */

/* greylist_counters - the process-wide counters */
void
greylist_counters(struct greylist_counters *out)
{
	out->checks = atomic_load(&gl_n_checks);
	out->pass = atomic_load(&gl_n_pass);
	out->allowlisted = atomic_load(&gl_n_allow);
	out->greylisted = atomic_load(&gl_n_grey);
	out->errors = atomic_load(&gl_n_err);
	out->refused = atomic_load(&gl_n_refused);
	out->outages = atomic_load(&gl_n_outages);
	out->cached = atomic_load(&gl_n_cached);
}

/* gl_now - the decision clock */
static int64_t
gl_now(const struct greylist *g)
{
	return g->now ? g->now(g->now_arg) : (int64_t)time(NULL);
}

/* gl_outage_note - log the first error after a success and the reverse */
static void
gl_outage_note(const struct greylist *g, const struct gl_req *q)
{
	if (q->d.status == GL_ERROR) {
		if (atomic_exchange(&gl_outage, 1) == 0) {
			atomic_fetch_add(&gl_n_outages, 1);
			log_msg(LOG_L_WARN, 0, "greylist redis unavailable reason=\"%s\" on-error=%s "
			    "(logged once until it recovers)", q->why,
			    g->conf.on_error == GL_ON_ERROR_TEMPFAIL ? "tempfail" : "accept");
		}
	} else if (atomic_exchange(&gl_outage, 0) == 1) {
		log_msg(LOG_L_INFO, 0, "greylist redis available again errors=%" PRIu64,
		    (uint64_t)atomic_load(&gl_n_err));
	}
}

/* gl_destroy - free the handle; nothing is called back */
static void
gl_destroy(struct greylist *g)
{
	struct gl_req *q;

	rds_free(g->rds);
	g->rds = NULL;
	glcache_free(g->cache);
	g->cache = NULL;
	while ((q = TAILQ_FIRST(&g->pending)) != NULL) {
		TAILQ_REMOVE(&g->pending, q, link);
		free(q);
	}
	while ((q = TAILQ_FIRST(&g->done)) != NULL) {
		TAILQ_REMOVE(&g->done, q, link);
		free(q);
	}
	event_free(g->done_ev);
	free(g);
}

/* gl_count - one more verdict of this kind */
static void
gl_count(enum gl_status st)
{
	switch (st) {
	case GL_PASS:
		atomic_fetch_add(&gl_n_pass, 1);
		break;
	case GL_ALLOWLISTED:
		atomic_fetch_add(&gl_n_allow, 1);
		break;
	case GL_GREYLISTED:
		atomic_fetch_add(&gl_n_grey, 1);
		break;
	case GL_ERROR:
		atomic_fetch_add(&gl_n_err, 1);
		break;
	}
}

/* gl_verdict - what the caller is given of a decided request (its
 * strings stay the request's) */
static void
gl_verdict(const struct gl_req *q, struct greylist_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->status = q->d.status;
	v->reason = q->d.reason;
	v->retry_in = q->d.retry_in;
	v->passes = q->d.passes;
	v->why = q->why;
	v->key = q->key;
	v->cached = q->cached;
}

/* gl_on_done - deliver finished verdicts, from our own event */
static void
gl_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct greylist *g = arg;
	struct gl_reqs batch;
	struct gl_req *q;
	struct greylist_verdict v;

	(void)fd;
	(void)what;
	TAILQ_INIT(&batch);
	TAILQ_CONCAT(&batch, &g->done, link);
	g->in_drain++;
	while ((q = TAILQ_FIRST(&batch)) != NULL) {
		TAILQ_REMOVE(&batch, q, link);
		if (!g->dying && q->limits) {
			gl_outage_note(g, q);
			if (!q->skipped) {
				atomic_fetch_add(&gl_n_checks, 1);
				gl_count(q->d.status);
			}
			gl_verdict(q, &v);
			q->lcb(q->ctx, q->tag, q->exceeded, q->lerr ? q->why : NULL,
			    q->skipped ? NULL : &v);
		} else if (!g->dying) {
			gl_count(q->d.status);
			if (q->via_redis)
				gl_outage_note(g, q);
			gl_verdict(q, &v);
			q->cb(q->ctx, q->tag, &v);
		}
		free(q);
	}
	g->in_drain--;
	if (g->dying && g->in_drain == 0)
		gl_destroy(g);
}

/* gl_done - a request has its verdict: deliver it from done_ev */
static void
gl_done(struct greylist *g, struct gl_req *q)
{
	TAILQ_REMOVE(&g->pending, q, link);
	g->npending--;
	TAILQ_INSERT_TAIL(&g->done, q, link);
	event_active(g->done_ev, 0, 0);
}

/* gl_remember - a pass Redis gave, kept for greylist-cache seconds: an
 * allowlisted client by its client key, a passed triplet by its own */
static void
gl_remember(struct greylist *g, const struct gl_req *q)
{
	int64_t until = q->now + (int64_t)g->conf.cache;

	if (q->d.status == GL_ALLOWLISTED || (q->d.status == GL_PASS &&
	    q->d.reason == GL_R_NOW_ALLOWLISTED))
		glcache_put(g->cache, q->ckey, until, q->d.passes);
	else if (q->d.status == GL_PASS)
		glcache_put(g->cache, q->key, until, q->d.passes);
}

/* gl_recall - a decision the local memory can give (see glcache.h) */
static bool
gl_recall(struct greylist *g, struct gl_req *q)
{
	unsigned passes;

	if (glcache_get(g->cache, q->ckey, q->now, &passes)) {
		q->d.status = GL_ALLOWLISTED;
		q->d.reason = GL_R_ALLOWLISTED;
	} else if (glcache_get(g->cache, q->key, q->now, &passes)) {
		q->d.status = GL_PASS;
		q->d.reason = GL_R_KNOWN;
	} else
		return false;
	q->d.retry_in = 0;
	q->d.passes = passes;
	q->cached = true;
	atomic_fetch_add(&gl_n_cached, 1);
	return true;
}

/* gl_decide_local - a decision without a Redis round trip: the embedded
 * store's, or a pass the local memory holds; false when Redis must answer */
static bool
gl_decide_local(struct greylist *g, struct gl_req *q)
{
	struct glstore_params p;

	if (g->rds != NULL)
		return g->cache != NULL && gl_recall(g, q);
	greylist_store_params(&g->conf, &p);
	if (g->peek)
		glstore_peek(g->store, q->ckey, q->key, q->now, &p, &q->d);
	else
		glstore_decide(g->store, q->ckey, q->key, q->now, &p, &q->d);
	return true;
}

/* gl_on_reply - the script's answer (or Redis's failure) */
static void
gl_on_reply(void *ctx, const redisReply *reply, const char *err)
{
	struct gl_req *q = ctx;

	if (reply == NULL) {
		q->d.status = GL_ERROR;
		q->d.reason = GL_R_ERROR;
		snprintf(q->why, sizeof(q->why), "redis %s", err ? err : "failed");
		q->lerr = true;
	} else if (q->limits) {
		q->lerr = greylist_limits_reply_parse(reply, q->nl, &q->exceeded, &q->skipped,
		    &q->d, q->why, sizeof(q->why)) != 0;
		if (!q->skipped && q->g->cache != NULL && !q->g->dying)
			gl_remember(q->g, q);
	} else if (greylist_reply_parse(reply, &q->d, q->why, sizeof(q->why)) == 0 &&
	    q->g->cache != NULL && !q->g->dying)
		gl_remember(q->g, q);
	gl_done(q->g, q);
}

/* gl_new - a handle, deciding or read-only */
static struct greylist *
gl_new(struct event_base *base, const struct greylist_conf *c, struct glstore *store, bool peek)
{
	struct greylist *g;
	const char *scripts[2] = { peek ? greylist_peek_lua : greylist_lua, greylist_limits_lua };

	if (!rds_conf_enabled(&c->redis) && store == NULL)
		return NULL;
	g = xcalloc(1, sizeof(*g));
	g->base = base;
	g->conf = *c;
	g->peek = peek;
	TAILQ_INIT(&g->pending);
	TAILQ_INIT(&g->done);
	g->done_ev = event_new(base, -1, 0, gl_on_done, g);
	if (g->done_ev == NULL)
		panic("greylist: cannot create an event");
	if (rds_conf_enabled(&c->redis)) {
		g->rds = rds_new(base, &c->redis, scripts, peek ? 1 : 2);
		if (c->cache > 0 && !peek)
			g->cache = glcache_new(GREYLIST_CACHE_SLOTS);
	} else
		g->store = store;
	return g;
}

/* greylist_new - a handle for this loop (see greylist.h) */
struct greylist *
greylist_new(struct event_base *base, const struct greylist_conf *c, struct glstore *store)
{
	return gl_new(base, c, store, false);
}

/* greylist_new_peek - a read-only handle (see greylist.h) */
struct greylist *
greylist_new_peek(struct event_base *base, const struct greylist_conf *c, struct glstore *store)
{
	return gl_new(base, c, store, true);
}

/* greylist_set_clock - tests drive time */
void
greylist_set_clock(struct greylist *g, int64_t (*now)(void *), void *arg)
{
	g->now = now;
	g->now_arg = arg;
}

/* gl_req_new - a pending request for the triplet, or NULL when refused
 * (counted); with its keys, or its verdict already given (decided true:
 * a key error, or a decision made here) */
static struct gl_req *
gl_req_new(struct greylist *g, const struct greylist_triplet *t, void *ctx, uint64_t tag,
	bool *decided)
{
	struct gl_req *q;

	*decided = false;
	if (g->dying || g->npending >= GREYLIST_PENDING_MAX) {
		atomic_fetch_add(&gl_n_refused, 1);
		return NULL;
	}
	q = xcalloc(1, sizeof(*q));
	q->g = g;
	q->ctx = ctx;
	q->tag = tag;
	q->now = gl_now(g);
	TAILQ_INSERT_TAIL(&g->pending, q, link);
	g->npending++;
	if (greylist_key(&g->conf, t, q->ckey, sizeof(q->ckey), q->key, sizeof(q->key)) != 0) {
		q->d.status = GL_ERROR;
		q->d.reason = GL_R_ERROR;
		snprintf(q->why, sizeof(q->why), "no key for this client address");
		*decided = true;
	}
	return q;
}

/* gl_args - the greylist's two keys and six numbers of a script call;
 * the buffers are the caller's */
static void
gl_args(const struct greylist *g, const struct gl_req *q, const char **args, size_t *lens,
	char *k1, size_t k1size, char *k2, size_t k2size, char num[6][24])
{
	int64_t vals[6] = { q->now, g->conf.delay, g->conf.window, g->conf.lifetime,
	    g->conf.allow_after, g->conf.allow_lifetime };

	args[0] = k1;
	lens[0] = (size_t)snprintf(k1, k1size, "%s%s", g->conf.prefix, q->ckey);
	args[1] = k2;
	lens[1] = (size_t)snprintf(k2, k2size, "%s%s", g->conf.prefix, q->key);
	for (int i = 0; i < 6; i++) {
		args[2 + i] = num[i];
		lens[2 + i] = (size_t)snprintf(num[i], sizeof(num[i]), "%" PRId64, vals[i]);
	}
}

/* gl_send - the script call of a request; -1 when the client refused
 * it (the request is gone, counted as refused) */
static int
gl_send(struct greylist *g, struct gl_req *q, int script, int nkeys, int nargs,
	const char **args, const size_t *lens)
{
	q->via_redis = true;
	if (rds_eval(g->rds, script, 0, gl_on_reply, q, nkeys, nargs, args, lens) != 0) {
		TAILQ_REMOVE(&g->pending, q, link);
		g->npending--;
		free(q);
		atomic_fetch_add(&gl_n_refused, 1);
		return -1;
	}
	return 0;
}

/* greylist_check - decide one triplet (see greylist.h) */
int
greylist_check(struct greylist *g, const struct greylist_triplet *t, greylist_cb cb, void *ctx,
	uint64_t tag)
{
	struct gl_req *q;
	bool decided;
	char k1[GREYLIST_PREFIX_MAX + sizeof(q->ckey)], k2[GREYLIST_PREFIX_MAX + GLSTORE_KEY_MAX];
	char num[6][24];
	const char *args[8];
	size_t lens[8];

	q = gl_req_new(g, t, ctx, tag, &decided);
	if (q == NULL)
		return -1;
	atomic_fetch_add(&gl_n_checks, 1);
	q->cb = cb;
	if (decided || gl_decide_local(g, q)) {
		gl_done(g, q);
		return 0;
	}
	gl_args(g, q, args, lens, k1, sizeof(k1), k2, sizeof(k2), num);
	return gl_send(g, q, 0, 2, 8, args, lens);
}

/* greylist_asks_redis - see greylist.h */
bool
greylist_asks_redis(struct greylist *g, const struct greylist_triplet *t)
{
	char ckey[GLSTORE_ID_MAX + 8], key[GLSTORE_KEY_MAX];
	int64_t now;

	if (g->dying || g->peek || g->rds == NULL ||
	    greylist_key(&g->conf, t, ckey, sizeof(ckey), key, sizeof(key)) != 0)
		return false;
	if (g->cache == NULL)
		return true;
	now = gl_now(g);
	return !glcache_get(g->cache, ckey, now, NULL) && !glcache_get(g->cache, key, now, NULL);
}

/* greylist_check_limits - the limits and the triplet in one call (see
 * greylist.h) */
int
greylist_check_limits(struct greylist *g, const struct greylist_triplet *t,
	const struct greylist_limits *l, greylist_limits_cb cb, void *ctx, uint64_t tag)
{
	enum { NL = GREYLIST_LIMITS_MAX };
	char k1[GREYLIST_PREFIX_MAX + GLSTORE_ID_MAX + 8], k2[GREYLIST_PREFIX_MAX + GLSTORE_KEY_MAX];
	char kbuf[NL][RL_KEY_MAX + RL_PREFIX_MAX], num[6][24], lnum[3 * NL][16], nls[8], pfx[RL_PREFIX_MAX];
	const char *args[2 + NL + 3 * NL + 8];
	size_t lens[2 + NL + 3 * NL + 8];
	const char *gargs[8];
	size_t glens[8];
	struct gl_req *q;
	bool decided;
	int n = l->n, a = 0;

	if (g->peek || g->rds == NULL || n <= 0 || n > NL || strlen(l->when) != (size_t)1 << n)
		return -1;
	q = gl_req_new(g, t, ctx, tag, &decided);
	if (q == NULL)
		return -1;
	q->limits = true;
	q->lcb = cb;
	q->nl = n;
	if (decided) {
		/* no key for the triplet: the caller asks the limits alone */
		TAILQ_REMOVE(&g->pending, q, link);
		g->npending--;
		free(q);
		return -1;
	}
	rl_prefix(g->conf.prefix, pfx, sizeof(pfx));
	gl_args(g, q, gargs, glens, k1, sizeof(k1), k2, sizeof(k2), num);
	for (int i = 0; i < n; i++) {
		args[a] = kbuf[i];
		lens[a] = (size_t)snprintf(kbuf[i], sizeof(kbuf[i]), "%s%s", pfx, l->keys[i]);
		if (lens[a] >= sizeof(kbuf[i]))
			lens[a] = sizeof(kbuf[i]) - 1;
		a++;
	}
	args[a] = gargs[0];
	lens[a++] = glens[0];
	args[a] = gargs[1];
	lens[a++] = glens[1];
	args[a] = nls;
	lens[a++] = (size_t)snprintf(nls, sizeof(nls), "%d", n);
	for (int i = 0; i < n; i++) {
		unsigned v[3] = { l->emit_ms[i], l->tau_ms[i], l->cost[i] };

		for (int j = 0; j < 3; j++) {
			args[a] = lnum[3 * i + j];
			lens[a++] = (size_t)snprintf(lnum[3 * i + j], sizeof(lnum[0]), "%u", v[j]);
		}
	}
	args[a] = l->when;
	lens[a++] = strlen(l->when);
	for (int i = 2; i < 8; i++) {
		args[a] = gargs[i];
		lens[a++] = glens[i];
	}
	return gl_send(g, q, 1, n + 2, a, args, lens);
}

/* greylist_decide_now - the verdict at once when nothing is to wait for
 * (see greylist.h) */
int
greylist_decide_now(struct greylist *g, const struct greylist_triplet *t,
	struct greylist_verdict *v)
{
	struct gl_req *q = &g->now_req;

	if (g->dying || (g->rds != NULL && g->cache == NULL))
		return 0;	/* every decision is a Redis round trip */
	memset(q, 0, sizeof(*q));
	q->g = g;
	q->now = gl_now(g);
	if (greylist_key(&g->conf, t, q->ckey, sizeof(q->ckey), q->key, sizeof(q->key)) != 0 ||
	    !gl_decide_local(g, q))
		return 0;	/* greylist_check() asks Redis, or gives the key error */
	atomic_fetch_add(&gl_n_checks, 1);
	gl_count(q->d.status);
	gl_verdict(q, v);
	return 1;
}

/* greylist_free - cancel everything and free (see greylist.h) */
void
greylist_free(struct greylist *g)
{
	if (g == NULL)
		return;
	if (g->in_drain > 0) {
		/* inside a callback: finish in gl_on_done */
		g->dying = true;
		rds_free(g->rds);
		g->rds = NULL;
		return;
	}
	gl_destroy(g);
}
