/*
 * dns - moat's one resolver over libunbound (see dns.h)
 *
 * Threads: each event loop has its own libunbound context, made with
 * ub_ctx_create_event on the loop's event_base: its queries are sent,
 * timed and answered by libunbound's state machines on that loop, with
 * no thread of libunbound's and no pipe. The answer comes as a packet
 * (ub_resolve_event), read by dnspkt_answer(). libunbound may answer
 * before ub_resolve_event returns (its cache, local data), and its
 * callback runs inside its own processing: so the answer is only kept
 * there, and the caller is called back from the loop's "ready" event
 * (event_active: no system call), as front-cache hits are.
 *
 * Synchronous queries (the work pool) go through one more context,
 * resolving on libunbound's own thread (ub_ctx_async): our dispatcher
 * thread waits on ub_fd and calls ub_process, which runs ub_done for
 * each finished query and wakes its waiter.
 *
 * A query's deadline is kept by whoever asked: the loop's timer or the
 * waiter's timed wait. When it passes, the caller gets DNS_TEMPERROR
 * and the query is cancelled in libunbound. On a loop's context,
 * ub_cancel succeeds for every query not answered yet (its callback is
 * then never called); an answered one is on the ready list already and
 * is dropped there. On the shared context, ub_cancel succeeds only while
 * the query is still unanswered; when it fails, ub_done is already on
 * its way and the waiter waits for it. So every query is freed exactly
 * once, by one thread, and a late answer is dropped.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <unbound.h>
#include <unbound-event.h>

#include "dns.h"
#include "dnspkt.h"
#include "monotime.h"
#include "log.h"
#include "siphash.h"
#include "xalloc.h"

#define DNS_NAME_MAX 253
#define DNS_INFLIGHT_DEFAULT 4096

struct dns_q {
	struct dns_q *lprev, *lnext;	/* the loop's live queries */
	struct dns_q *rnext;		/* the loop's ready list */
	struct dns_loop *loop;		/* NULL: a synchronous query */
	dns_cb cb;
	void *ctx;
	uint64_t tag;
	int rrtype;
	int ubid;
	struct event *timer;
	bool expired;			/* loop: the caller already got a timeout */
	struct dns_answer *hit;		/* answered from the front cache */
	bool counted;			/* holds an in-flight slot */
	bool answered;			/* loop: ev_done came (ans is set) */
	struct dns_answer *ans;		/* loop: what ev_done read */
	char name[DNS_NAME_MAX + 2];	/* asked, for the front cache */
	/* set by ub_done */
	int err;
	struct ub_result *res;
	/* synchronous */
	bool done;
	pthread_cond_t cond;
};

struct dns_loop {
	struct event_base *base;
	struct ub_ctx *ub;		/* this loop's context (event mode) */
	struct event *ready_ev;		/* calls back what is on the ready list */
	struct dns_q *ready, *ready_tail;
	struct dns_q *live;		/* loop thread only */
};

/*
 * The front cache: answers seen lately, by name and type, kept as copies
 * (one allocation each) so that a repeated question is answered without
 * asking libunbound (on a loop) or two thread hops (the pool), and every
 * loop sees what another learnt; libunbound's own caches stay behind it. TTL-bound (capped at CACHE_TTL_MAX; negative answers at
 * dns-negative-ttl), at most CACHE_MAX entries (least recently used out),
 * keyed by SipHash under a random key. Temporary errors are not kept.
 */
#define CACHE_MAX	16384
#define CACHE_BUCKETS	8192
#define CACHE_TTL_MAX	3600

struct cache_ent {
	struct cache_ent *hnext, *lprev, *lnext;
	uint64_t h;
	int rrtype;
	uint64_t expires_ms;
	struct dns_answer *ans;		/* a copy (answer_copy) */
	char name[];
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cache_ent *cache_tab[CACHE_BUCKETS];
static struct cache_ent *lru_head, *lru_tail;	/* head: most recent */
static unsigned cache_n;
static uint64_t cache_k0, cache_k1;
static int cache_neg_ttl;
static atomic_uint_fast64_t n_cache_hits;

static uint64_t now_ms(void);
static void cache_clear(void);

/* cache-only mode of dns_query_sync, per thread (dns.h) */
static _Thread_local bool tl_cache_only, tl_missed;
static _Thread_local char tl_missed_name[DNS_NAME_MAX + 2];	/* the first */
static _Thread_local int tl_missed_type;

static struct ub_ctx *ub;
static pthread_t dispatcher;
static int stop_efd = -1;
static bool running;
static unsigned max_inflight;
static atomic_uint inflight;
static atomic_uint_fast64_t n_sent, n_temperror, n_refused;
static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dns_conf ub_conf;		/* dns_init's, for the loops' contexts */
/* libunbound sets process-wide state (its log, verbosity) when a context
 * is made and deleted: one at a time, whichever thread */
static pthread_mutex_t ub_make_lock = PTHREAD_MUTEX_INITIALIZER;

static void
ub_delete(struct ub_ctx *ctx)
{
	pthread_mutex_lock(&ub_make_lock);
	ub_ctx_delete(ctx);
	pthread_mutex_unlock(&ub_make_lock);
}

const char *
dns_mode_name(int mode)
{
	switch (mode) {
	case DNS_MODE_FORWARD: return "forward";
	case DNS_MODE_RECURSIVE: return "recursive";
	default: return "system";
	}
}

/* dispatch - the dispatcher thread: finished answers out of libunbound */
static void *
dispatch(void *arg)
{
	struct pollfd p[2];

	(void)arg;
	p[0].fd = ub_fd(ub);
	p[0].events = POLLIN;
	p[1].fd = stop_efd;
	p[1].events = POLLIN;
	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_msg(LOG_L_ERROR, 0, "dns error=poll reason=\"%s\"", strerror(errno));
			return NULL;
		}
		if (p[1].revents)
			return NULL;
		if (p[0].revents) {
			int r = ub_process(ub);

			if (r != 0)
				log_msg(LOG_L_WARN, 0, "dns error=process reason=\"%s\"",
				    ub_strerror(r));
		}
	}
}

/* special-use zones libunbound answers itself unless told not to */
static const char *const own_zones[] = { "localhost.", "test.", "invalid.", "home.arpa.",
    "127.in-addr.arpa.",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa." };

/* set - one libunbound option; a failure is a bug in this file */
static int
set(struct ub_ctx *c, const char *opt, const char *val, char **err)
{
	int r = ub_ctx_set_option(c, opt, val);

	if (r != 0) {
		if (err)
			*err = xasprintf("resolver option %s %s: %s", opt, val, ub_strerror(r));
		return -1;
	}
	return 0;
}

/* configure - every option of c on a new context (the shared one and
 * each loop's), so that all resolve alike; -1 and *err on a failure */
static int
configure(struct ub_ctx *ctx, const struct dns_conf *c, char **err)
{
	int r;

	/* no trust anchor: no validator; forwarders and local name servers
	 * may be on loopback; a server that stopped answering is tried
	 * again soon, not shunned for 15 minutes */
	if (set(ctx, "module-config:", "iterator", err) ||
	    set(ctx, "do-not-query-localhost:", "no", err) ||
	    set(ctx, "infra-keep-probing:", "yes", err) ||
	    set(ctx, "infra-host-ttl:", "30", err) ||
	    set(ctx, "outgoing-range:", "1024", err))
		return -1;
	{
		/* libunbound's own timers agree with dns-timeout. Left alone,
		 * it waits 376 ms for a server it does not know, then sends
		 * the query again from a new port, doubling, and drops the
		 * answer to every earlier try: a server that answers each
		 * query in 3 s was never heard. With both the first wait and
		 * the smallest retransmit timeout at dns-timeout, an answer
		 * that comes within it is taken; the caller's own deadline
		 * (the same dns-timeout) cancels the query past it. */
		char v[16];
		unsigned t = c->timeout_ms ? c->timeout_ms : 5000;

		snprintf(v, sizeof(v), "%u", t);
		if (set(ctx, "unknown-server-time-limit:", v, err) ||
		    set(ctx, "infra-cache-min-rtt:", v, err))
			return -1;
		/* (dns-timeout is at most 60 s: under infra-cache-max-rtt) */
	}
	{
		/* how long "no such name" is believed: a delisted address
		 * and a zone's test points are seen again within that */
		char v[16];

		snprintf(v, sizeof(v), "%d", c->max_negative_ttl);
		if (set(ctx, "cache-max-negative-ttl:", v, err))
			return -1;
	}
	/* Through a forwarder or the system's resolver, that server answers
	 * for the special-use names libunbound would answer itself (test.,
	 * 127.in-addr.arpa, the private ranges' reverse zones): it knows the
	 * site's names, and tests serve their zones under test. */
	if (c->mode != DNS_MODE_RECURSIVE) {
		if (set(ctx, "unblock-lan-zones:", "yes", err) ||
		    set(ctx, "insecure-lan-zones:", "yes", err))
			return -1;
	}
	switch (c->mode) {
	case DNS_MODE_FORWARD:
		for (int i = 0; i < c->nforward; i++)
			if ((r = ub_ctx_set_fwd(ctx, c->forward[i])) != 0) {
				*err = xasprintf("resolver forward %s: %s", c->forward[i],
				    ub_strerror(r));
				return -1;
			}
		break;
	case DNS_MODE_RECURSIVE:
		break;
	default:
		if ((r = ub_ctx_resolvconf(ctx, NULL)) != 0) {
			*err = xasprintf("resolver system: /etc/resolv.conf: %s", ub_strerror(r));
			return -1;
		}
		(void)ub_ctx_hosts(ctx, NULL);
		break;
	}
	if (c->mode != DNS_MODE_RECURSIVE) {
		/* after every option: removing a zone finalises the context */
		for (size_t i = 0; i < sizeof(own_zones) / sizeof(own_zones[0]); i++)
			(void)ub_ctx_zone_remove(ctx, own_zones[i]);
	}
	return 0;
}

/* dns_init - see dns.h */
int
dns_init(const struct dns_conf *c, char **err)
{
	struct ub_ctx *ctx;
	int r;

	*err = NULL;
	if (running)
		return 0;
	pthread_mutex_lock(&ub_make_lock);
	ctx = ub_ctx_create();
	pthread_mutex_unlock(&ub_make_lock);
	if (ctx == NULL) {
		*err = xstrdup("resolver: cannot create a libunbound context");
		return -1;
	}
	/* answers come back through ub_fd, resolved on libunbound's thread */
	if ((r = ub_ctx_async(ctx, 1)) != 0) {
		*err = xasprintf("resolver: %s", ub_strerror(r));
		ub_delete(ctx);
		return -1;
	}
	if (configure(ctx, c, err) != 0) {
		ub_delete(ctx);
		return -1;
	}
	stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (stop_efd < 0) {
		*err = xasprintf("resolver: eventfd: %s", strerror(errno));
		ub_delete(ctx);
		return -1;
	}
	ub = ctx;
	ub_conf = *c;		/* for each loop's context */
	max_inflight = c->max_inflight ? c->max_inflight : DNS_INFLIGHT_DEFAULT;
	cache_neg_ttl = c->max_negative_ttl;
	siphash_key(&cache_k0, &cache_k1);
	if ((r = pthread_create(&dispatcher, NULL, dispatch, NULL)) != 0) {
		*err = xasprintf("resolver: pthread_create: %s", strerror(r));
		ub_delete(ctx);
		ub = NULL;
		close(stop_efd);
		stop_efd = -1;
		return -1;
	}
	running = true;
	return 0;
}

bool
dns_ready(void)
{
	return running;
}

/* dns_shutdown - stop the dispatcher and libunbound. Queries still in
 * flight are never answered; dns_loop_free() frees them. */
void
dns_shutdown(void)
{
	uint64_t one = 1;
	ssize_t w;

	if (!running)
		return;
	w = write(stop_efd, &one, sizeof(one));
	(void)w;
	pthread_join(dispatcher, NULL);
	ub_delete(ub);
	ub = NULL;
	close(stop_efd);
	stop_efd = -1;
	running = false;
	cache_clear();
}

void
dns_counters(uint64_t *sent, uint64_t *temperror, uint64_t *refused)
{
	*sent = atomic_load(&n_sent);
	*temperror = atomic_load(&n_temperror);
	*refused = atomic_load(&n_refused);
}

static uint64_t
now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* answer_copy - an answer in one allocation (data and lengths inside) */
static struct dns_answer *
answer_copy(const struct dns_answer *a)
{
	size_t bytes = 0, off;
	struct dns_answer *c;
	char *p;

	for (int i = 0; i < a->n; i++)
		bytes += (size_t)a->len[i];
	off = sizeof(*c) + sizeof(char *) * (size_t)(a->n + 1) + sizeof(int) * (size_t)(a->n + 1);
	c = xmalloc(off + bytes + 1);
	*c = *a;
	c->data = (char **)(void *)(c + 1);
	c->len = (int *)(void *)(c->data + a->n + 1);
	p = (char *)c + off;
	for (int i = 0; i < a->n; i++) {
		memcpy(p, a->data[i], (size_t)a->len[i]);
		c->data[i] = p;
		c->len[i] = a->len[i];
		p += a->len[i];
	}
	c->data[a->n] = NULL;
	c->len[a->n] = 0;
	return c;
}

static uint64_t
cache_hash(const char *name, int rrtype)
{
	char k[DNS_NAME_MAX + 8];
	size_t n = strlen(name);

	if (n > DNS_NAME_MAX + 1)
		n = DNS_NAME_MAX + 1;
	for (size_t i = 0; i < n; i++)
		k[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
	if (n > 0 && k[n - 1] == '.')
		n--;
	k[n] = (char)(rrtype & 0xff);
	k[n + 1] = (char)(rrtype >> 8);
	return siphash24(cache_k0, cache_k1, k, n + 2);
}

static bool
cache_same(const struct cache_ent *e, const char *name, int rrtype)
{
	size_t a = strlen(e->name), b = strlen(name);

	if (b > 0 && name[b - 1] == '.')
		b--;
	return e->rrtype == rrtype && a == b && strncasecmp(e->name, name, a) == 0;
}

static void
cache_unlink(struct cache_ent *e)
{
	struct cache_ent **pp = &cache_tab[e->h % CACHE_BUCKETS];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->lprev)
		e->lprev->lnext = e->lnext;
	else
		lru_head = e->lnext;
	if (e->lnext)
		e->lnext->lprev = e->lprev;
	else
		lru_tail = e->lprev;
	cache_n--;
	free(e->ans);
	free(e);
}

/* cache_get - a copy of a live cached answer, or NULL */
static struct dns_answer *
cache_get(const char *name, int rrtype)
{
	uint64_t h = cache_hash(name, rrtype), now = now_ms();
	struct dns_answer *c = NULL;
	struct cache_ent *e;

	pthread_mutex_lock(&cache_lock);
	for (e = cache_tab[h % CACHE_BUCKETS]; e; e = e->hnext)
		if (e->h == h && cache_same(e, name, rrtype))
			break;
	if (e != NULL && e->expires_ms <= now) {
		cache_unlink(e);
		e = NULL;
	}
	if (e != NULL) {
		if (e != lru_head) {	/* to the front */
			e->lprev->lnext = e->lnext;
			if (e->lnext)
				e->lnext->lprev = e->lprev;
			else
				lru_tail = e->lprev;
			e->lprev = NULL;
			e->lnext = lru_head;
			lru_head->lprev = e;
			lru_head = e;
		}
		c = answer_copy(e->ans);
		c->ttl = (int)((e->expires_ms - now) / 1000);
	}
	pthread_mutex_unlock(&cache_lock);
	if (c != NULL)
		atomic_fetch_add(&n_cache_hits, 1);
	return c;
}

/* cache_put - keep an answer (not a temporary error, not TTL 0) */
static void
cache_put(const char *name, int rrtype, const struct dns_answer *a)
{
	int ttl = a->ttl;
	size_t n = strlen(name);
	uint64_t h;
	struct cache_ent *e;

	if (a->status == DNS_TEMPERROR)
		return;
	if (a->status != DNS_OK && ttl > cache_neg_ttl)
		ttl = cache_neg_ttl;
	if (ttl > CACHE_TTL_MAX)
		ttl = CACHE_TTL_MAX;
	if (ttl <= 0 || n > DNS_NAME_MAX + 1)
		return;
	if (n > 0 && name[n - 1] == '.')
		n--;
	h = cache_hash(name, rrtype);
	e = xmalloc(sizeof(*e) + n + 1);
	memcpy(e->name, name, n);
	e->name[n] = 0;
	e->h = h;
	e->rrtype = rrtype;
	e->expires_ms = now_ms() + (uint64_t)ttl * 1000;
	e->ans = answer_copy(a);
	e->ans->why = NULL;
	pthread_mutex_lock(&cache_lock);
	for (struct cache_ent *o = cache_tab[h % CACHE_BUCKETS]; o; o = o->hnext)
		if (o->h == h && cache_same(o, e->name, rrtype)) {
			cache_unlink(o);	/* a fresher answer */
			break;
		}
	while (cache_n >= CACHE_MAX && lru_tail != NULL)
		cache_unlink(lru_tail);
	e->hnext = cache_tab[h % CACHE_BUCKETS];
	cache_tab[h % CACHE_BUCKETS] = e;
	e->lprev = NULL;
	e->lnext = lru_head;
	if (lru_head)
		lru_head->lprev = e;
	lru_head = e;
	if (lru_tail == NULL)
		lru_tail = e;
	cache_n++;
	pthread_mutex_unlock(&cache_lock);
}

static void
cache_clear(void)
{
	pthread_mutex_lock(&cache_lock);
	while (lru_tail != NULL)
		cache_unlink(lru_tail);
	pthread_mutex_unlock(&cache_lock);
}

/* fill - an answer from what libunbound gave */
static void
fill(struct dns_answer *a, int rrtype, int err, struct ub_result *res)
{
	memset(a, 0, sizeof(*a));
	a->rrtype = rrtype;
	a->status = DNS_TEMPERROR;
	if (err != 0 || res == NULL) {
		a->why = err == UB_NOMEM ? "nomem" : "resolver";
		return;
	}
	a->rcode = res->rcode;
	a->ttl = res->ttl;
	switch (res->rcode) {
	case 0:
		if (res->havedata) {
			a->status = DNS_OK;
			a->data = res->data;
			a->len = res->len;
			while (a->data[a->n] != NULL)
				a->n++;
		} else
			a->status = DNS_NODATA;
		break;
	case 3:
		a->status = DNS_NXDOMAIN;
		break;
	case 2:
		a->why = "servfail";
		break;
	case 5:
		a->why = "refused";
		break;
	default:
		a->why = "rcode";
		break;
	}
}

/* q_free - the last of a query, by whichever side holds it last */
static void
q_free(struct dns_q *q)
{
	if (q->res)
		ub_resolve_free(q->res);
	if (q->timer)
		event_free(q->timer);
	if (q->loop == NULL)
		pthread_cond_destroy(&q->cond);
	if (q->counted)
		atomic_fetch_sub(&inflight, 1);
	free(q->hit);
	free(q->ans);
	free(q);
}

/* ub_done - the shared context's callback, on the dispatcher thread */
static void
ub_done(void *arg, int err, struct ub_result *res)
{
	struct dns_q *q = arg;

	q->err = err;
	q->res = res;
	pthread_mutex_lock(&sync_lock);
	q->done = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&sync_lock);
}

static void
live_unlink(struct dns_q *q)
{
	if (q->lprev)
		q->lprev->lnext = q->lnext;
	else
		q->loop->live = q->lnext;
	if (q->lnext)
		q->lnext->lprev = q->lprev;
	q->lprev = q->lnext = NULL;
}

static void
live_link(struct dns_loop *l, struct dns_q *q)
{
	q->lprev = NULL;
	q->lnext = l->live;
	if (l->live)
		l->live->lprev = q;
	l->live = q;
}

/* ready_add - to be called back from the loop, soon (never from here) */
static void
ready_add(struct dns_loop *l, struct dns_q *q)
{
	q->rnext = NULL;
	if (l->ready_tail)
		l->ready_tail->rnext = q;
	else
		l->ready = q;
	l->ready_tail = q;
	event_active(l->ready_ev, EV_TIMEOUT, 0);
}

/* ready_run - the loop's answers: call back, on the loop's thread. The
 * list is taken first: a callback may ask again (that answer waits for
 * the next round). */
static void
ready_run(evutil_socket_t fd, short what, void *arg)
{
	struct dns_loop *l = arg;
	struct dns_q *q = l->ready, *next;

	(void)fd;
	(void)what;
	l->ready = l->ready_tail = NULL;
	for (; q != NULL; q = next) {
		next = q->rnext;
		live_unlink(q);
		if (q->hit != NULL) {
			q->cb(q->ctx, q->tag, q->hit);
		} else if (!q->expired) {
			evtimer_del(q->timer);
			if (q->ans->status == DNS_TEMPERROR)
				atomic_fetch_add(&n_temperror, 1);
			else
				cache_put(q->name, q->rrtype, q->ans);
			q->cb(q->ctx, q->tag, q->ans);
		}
		q_free(q);
	}
}

/* ev_done - a loop context's callback, inside libunbound's processing
 * (or inside ub_resolve_event): read the answer, call back later. The
 * packet is libunbound's, valid for this call only. */
static void
ev_done(void *arg, int rcode, void *packet, int len, int sec, char *why_bogus,
    int was_ratelimited)
{
	struct dns_q *q = arg;

	(void)sec;
	(void)why_bogus;
	(void)was_ratelimited;
	if (rcode != 0 || packet == NULL || len < 0) {
		/* libunbound's own failure: servfail, or a delete */
		struct dns_answer a;

		memset(&a, 0, sizeof(a));
		a.rrtype = q->rrtype;
		a.rcode = rcode;
		a.status = rcode == 3 ? DNS_NXDOMAIN : DNS_TEMPERROR;
		a.why = a.status == DNS_NXDOMAIN ? NULL : rcode == 5 ? "refused" :
		    rcode == 2 || rcode == 0 ? "servfail" : "rcode";
		q->ans = answer_copy(&a);
	} else
		q->ans = dnspkt_answer(packet, (size_t)len, q->rrtype);
	q->answered = true;
	ready_add(q->loop, q);
}

/* loop_timeout - the deadline passed: answer now, cancel inside */
static void
loop_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dns_q *q = arg;
	struct dns_answer a;

	(void)fd;
	(void)what;
	memset(&a, 0, sizeof(a));
	a.status = DNS_TEMPERROR;
	a.rrtype = q->rrtype;
	a.why = "timeout";
	q->expired = true;
	atomic_fetch_add(&n_temperror, 1);
	q->cb(q->ctx, q->tag, &a);
	if (q->answered)
		return;		/* on the ready list: ready_run frees it */
	/* not answered: after ub_cancel libunbound never calls ev_done */
	(void)ub_cancel(q->loop->ub, q->ubid);
	live_unlink(q);
	q_free(q);
}

/* dns_loop_new - on any thread; the loop's context is used on the loop's
 * thread only */
struct dns_loop *
dns_loop_new(struct event_base *base)
{
	struct dns_loop *l = xcalloc(1, sizeof(*l));
	char *err = NULL;

	l->base = base;
	l->ready_ev = event_new(base, -1, 0, ready_run, l);
	if (l->ready_ev == NULL)
		fatal("resolver: event_new failed");
	if (!running)
		return l;	/* dns_query refuses */
	pthread_mutex_lock(&ub_make_lock);
	l->ub = ub_ctx_create_event(base);
	pthread_mutex_unlock(&ub_make_lock);
	/* the options were taken by dns_init already: a failure here is
	 * memory, or /etc/resolv.conf changed since; this loop's lookups
	 * are then temporary errors, as with no resolver at all */
	if (l->ub == NULL)
		err = xstrdup("resolver: cannot create a libunbound context");
	else if (configure(l->ub, &ub_conf, &err) != 0) {
		ub_delete(l->ub);
		l->ub = NULL;
	}
	if (err != NULL) {
		log_msg(LOG_L_ERROR, 0, "dns error=loop reason=\"%s\"", err);
		free(err);
	}
	return l;
}

/* dns_loop_free - after dns_shutdown() (nothing is asked any more), on
 * the loop's thread or after it ended, before its event_base is freed;
 * the queries still out get DNS_TEMPERROR "shutdown" */
void
dns_loop_free(struct dns_loop *l)
{
	struct dns_q *q, *next;

	if (l == NULL)
		return;
	for (q = l->live; q; q = next) {
		next = q->lnext;
		if (!q->expired) {
			struct dns_answer a;

			memset(&a, 0, sizeof(a));
			a.status = DNS_TEMPERROR;
			a.rrtype = q->rrtype;
			a.why = "shutdown";
			q->cb(q->ctx, q->tag, &a);	/* so the caller frees its context */
		}
		if (!q->answered && q->hit == NULL)
			(void)ub_cancel(l->ub, q->ubid);
		q_free(q);
	}
	l->live = NULL;
	l->ready = l->ready_tail = NULL;	/* those were live too: freed above */
	if (l->ub != NULL)
		ub_delete(l->ub);
	event_free(l->ready_ev);
	free(l);
}

/* name_escape - the name as libunbound's text form: labels of at most
 * 63 bytes, at most 253 in all; any byte but the dot is allowed in a label
 * (SPF macros expand to anything) and goes out as \DDD unless it is a
 * letter, digit, '-' or '_'. -1 when the name cannot be a DNS name. */
static int
name_escape(const char *name, char *out, size_t size)
{
	size_t n = strlen(name), lab = 0, o = 0;

	if (n == 0 || n > DNS_NAME_MAX + 1 || (n == DNS_NAME_MAX + 1 && name[n - 1] != '.'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];

		if (ch == '.') {
			if (lab == 0 && !(i == n - 1 && n == 1))
				return -1;
			lab = 0;
			if (o + 2 > size)
				return -1;
			out[o++] = '.';
			continue;
		}
		if (++lab > 63)
			return -1;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_') {
			if (o + 2 > size)
				return -1;
			out[o++] = (char)ch;
		} else {
			if (o + 5 > size)
				return -1;
			snprintf(out + o, size - o, "\\%03u", ch);
			o += 4;
		}
	}
	out[o] = 0;
	return 0;
}

/* submit - count and start one query: on the loop's context (l), or on
 * the shared one (a synchronous query) */
static int
submit(struct dns_loop *l, struct dns_q *q, const char *name)
{
	char esc[DNS_NAME_MAX * 4 + 8];
	int r;

	if (!running || (l != NULL && l->ub == NULL) ||
	    name_escape(name, esc, sizeof(esc)) != 0) {
		atomic_fetch_add(&n_refused, 1);
		return -1;
	}
	if (atomic_fetch_add(&inflight, 1) >= max_inflight) {
		atomic_fetch_sub(&inflight, 1);
		atomic_fetch_add(&n_refused, 1);
		return -1;
	}
	snprintf(q->name, sizeof(q->name), "%s", name);
	q->counted = true;
	if (l != NULL)
		r = ub_resolve_event(l->ub, esc, q->rrtype, 1, q, ev_done, &q->ubid);
	else
		r = ub_resolve_async(ub, esc, q->rrtype, 1, q, ub_done, &q->ubid);
	if (r != 0) {
		q->counted = false;
		atomic_fetch_sub(&inflight, 1);
		atomic_fetch_add(&n_refused, 1);
		log_msg(LOG_L_WARN, 0, "dns error=submit reason=\"%s\"", ub_strerror(r));
		return -1;
	}
	atomic_fetch_add(&n_sent, 1);
	return 0;
}

/* dns_query - see dns.h; on the loop's thread */
int
dns_query(struct dns_loop *l, const char *name, int rrtype, unsigned timeout_ms,
    dns_cb cb, void *ctx, uint64_t tag)
{
	struct dns_q *q = xcalloc(1, sizeof(*q));
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	q->loop = l;
	q->cb = cb;
	q->ctx = ctx;
	q->tag = tag;
	q->rrtype = rrtype;
	if (running && (q->hit = cache_get(name, rrtype)) != NULL) {
		/* answered now, called back from the loop (never from here) */
		live_link(l, q);
		ready_add(l, q);
		return 0;
	}
	q->timer = evtimer_new(l->base, loop_timeout, q);
	if (q->timer == NULL)
		fatal("resolver: evtimer_new failed");
	/* live first: libunbound may answer inside submit (ev_done) */
	live_link(l, q);
	if (submit(l, q, name) != 0) {
		live_unlink(q);
		event_free(q->timer);
		free(q);
		return -1;
	}
	if (!q->answered)
		evtimer_add(q->timer, &tv);
	return 0;
}

/* dns_query_sync - see dns.h */
int
dns_query_sync(const char *name, int rrtype, unsigned timeout_ms, struct dns_answer **out)
{
	struct dns_q *q;
	struct dns_answer fail, a;
	struct timespec dl;
	pthread_condattr_t ca;

	memset(&fail, 0, sizeof(fail));
	fail.status = DNS_TEMPERROR;
	fail.rrtype = rrtype;
	if (running && (*out = cache_get(name, rrtype)) != NULL)
		return 0;
	if (tl_cache_only) {
		/* the caller runs on an event loop: it never waits */
		if (!tl_missed) {
			snprintf(tl_missed_name, sizeof(tl_missed_name), "%s", name);
			tl_missed_type = rrtype;
		}
		tl_missed = true;
		fail.why = "not-cached";
		*out = answer_copy(&fail);
		return 0;
	}
	q = xcalloc(1, sizeof(*q));
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	q->rrtype = rrtype;
	if (submit(NULL, q, name) != 0) {
		pthread_cond_destroy(&q->cond);
		free(q);
		fail.why = running ? "refused-local" : "no-resolver";
		*out = answer_copy(&fail);
		return -1;
	}
	mono_deadline(&dl, timeout_ms);
	pthread_mutex_lock(&sync_lock);
	while (!q->done)
		if (pthread_cond_timedwait(&q->cond, &sync_lock, &dl) == ETIMEDOUT)
			break;
	if (!q->done) {
		pthread_mutex_unlock(&sync_lock);
		atomic_fetch_add(&n_temperror, 1);
		fail.why = "timeout";
		*out = answer_copy(&fail);
		if (ub_cancel(ub, q->ubid) == 0) {
			q_free(q);
			return 0;
		}
		/* the answer is being delivered: wait for it, then drop it */
		pthread_mutex_lock(&sync_lock);
		while (!q->done)
			pthread_cond_wait(&q->cond, &sync_lock);
		pthread_mutex_unlock(&sync_lock);
		q_free(q);
		return 0;
	}
	pthread_mutex_unlock(&sync_lock);
	fill(&a, rrtype, q->err, q->res);
	if (a.status == DNS_TEMPERROR)
		atomic_fetch_add(&n_temperror, 1);
	else
		cache_put(q->name, rrtype, &a);
	*out = answer_copy(&a);
	q_free(q);
	return 0;
}

void
dns_answer_free(struct dns_answer *a)
{
	free(a);	/* one allocation (answer_copy) */
}





void
dns_sync_cache_only(bool on)
{
	tl_cache_only = on;
	if (on)
		tl_missed = false;
}

bool
dns_sync_missed(void)
{
	return tl_missed;
}

bool
dns_sync_missed_name(char *name, size_t size, int *rrtype)
{
	if (!tl_missed || strlen(tl_missed_name) >= size)
		return false;
	memcpy(name, tl_missed_name, strlen(tl_missed_name) + 1);
	*rrtype = tl_missed_type;
	return true;
}

/* dns_cached - a live answer for name and type is in the front cache */
bool
dns_cached(const char *name, int rrtype)
{
	uint64_t h = cache_hash(name, rrtype), now = now_ms();
	bool yes = false;

	pthread_mutex_lock(&cache_lock);
	for (struct cache_ent *e = cache_tab[h % CACHE_BUCKETS]; e; e = e->hnext)
		if (e->h == h && cache_same(e, name, rrtype)) {
			/* a second of margin: the caller is about to use it */
			yes = e->expires_ms > now + 1000;
			break;
		}
	pthread_mutex_unlock(&cache_lock);
	return yes;
}
