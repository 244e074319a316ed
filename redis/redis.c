/*
 * redis - moat's Redis client (see redis.h for the contract)
 *
 * WHY OUR OWN TIMERS
 *	hiredis 0.14 has no connect or command timeout in its asynchronous
 *	API, and when a connection fails it calls every pending callback
 *	with a NULL reply and leaves reconnecting to us. So every command
 *	carries a libevent timer; when one fires, the whole connection is
 *	freed (redisAsyncFree), which makes hiredis call back every command
 *	still on it at once. Dropping the connection is the only way to be
 *	sure a late reply is never matched to a later command.
 *
 * CALLBACK DISCIPLINE
 *	hiredis may call us while it is inside its own code: reply
 *	callbacks, onConnect, onDisconnect. The rules we keep:
 *	- before freeing a context we stop pointing at it (r->ac = NULL),
 *	  so callbacks that the free triggers see a stale context and only
 *	  finish their own request;
 *	- we free a context inside one of its reply callbacks only through
 *	  redisAsyncFree(), which hiredis defers until the callback has
 *	  returned; never inside onConnect (hiredis 0.14 would go on using
 *	  the freed context);
 *	- a request sent to hiredis is freed only in its hiredis callback
 *	  (which always comes, with a reply or NULL), so hiredis never holds
 *	  a dangling privdata; rds_free() marks requests cancelled first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <openssl/evp.h>

#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "xalloc.h"

#define RDS_SYNC_TIMEOUT_MIN_MS	2000

enum rds_where { RQ_WAITING = 0, RQ_SENT, RQ_FAILING };

struct rds_req {
	TAILQ_ENTRY(rds_req) link;	/* r->waiting or r->failing; not when sent */
	struct rds *r;
	rds_cb cb;
	void *ctx;
	struct event *timer;
	enum rds_where where;
	int script;			/* -1: a plain command */
	bool timed_out, cancelled, retried;
	bool moved;			/* sent again after -READONLY/-MASTERDOWN */
	const char *fail_why;
	int argc;
	const char **argv;		/* into the same allocation */
	size_t *lens;
	char *cmd;			/* the command in the protocol, formatted once (hiredis) */
	size_t cmdlen;
	uint64_t t0_us;			/* made at (metrics: latency) */
};

TAILQ_HEAD(rds_reqs, rds_req);

enum rds_hs { RDS_HS_AUTH = 1, RDS_HS_SELECT, RDS_HS_ROLE, RDS_HS_SCRIPT };

struct rds {
	struct event_base *base;
	struct rds_conf conf;
	enum rds_state state;
	redisAsyncContext *ac;		/* the data connection */
	redisAsyncContext *sac;		/* the sentinel being asked */
	redisAsyncContext *pac[RDS_SENTINEL_MAX];	/* subscribed to each sentinel */
	struct event *sub_ev;		/* subscribe again to those not connected */
	bool hold;			/* a failover runs: send nothing, wait */
	struct event *hold_ev;		/* the longest hold */
	struct rds_addr addr;		/* the server in use or last tried */
	bool addr_from_sentinel;
	int sidx, stried;		/* sentinel to ask; tried this round */
	int hs_pending;
	unsigned backoff_ms;
	uint64_t started_ms;		/* the last connection attempt began */
	struct event *retry_ev, *conn_timer;
	struct rds_reqs waiting, failing;
	unsigned npending;		/* requests not yet called back */
	const char *scripts[RDS_SCRIPT_MAX];	/* borrowed texts */
	char sha[RDS_SCRIPT_MAX][41];
	int nscripts;
	struct rds_counters n;
	bool freeing;
	const struct timeval *common_tv;	/* redis-timeout as a libevent common timeout */
};

/* ---- settings ---- */

/* ---- bounded replies ---- */

static redisReplyObjectFunctions *rds_default_fns;
static redisReplyObjectFunctions rds_bounded_fns;
static pthread_once_t rds_fns_once = PTHREAD_ONCE_INIT;

/* rds_create_string - refuse oversized strings */
static void *
rds_create_string(const redisReadTask *task, char *str, size_t len)
{
	if (len > RDS_REPLY_STRING_MAX)
		return NULL;
	return rds_default_fns->createString(task, str, len);
}

/* rds_create_array - refuse arrays with too many elements, before allocating */
static void *
rds_create_array(const redisReadTask *task, int elements)
{
	if (elements < 0 || elements > RDS_REPLY_ELEMENTS_MAX)
		return NULL;
	return rds_default_fns->createArray(task, elements);
}

/* rds_fns_init - hiredis's reply constructors, wrapped */
static void
rds_fns_init(void)
{
	redisReader *rd = redisReaderCreate();

	if (rd == NULL)
		panic("redis: cannot create a reply reader");
	rds_default_fns = rd->fn;
	redisReaderFree(rd);
	rds_bounded_fns = *rds_default_fns;
	rds_bounded_fns.createString = rds_create_string;
	rds_bounded_fns.createArray = rds_create_array;
}

/* rds_bound_reader - make a context's reader refuse oversized replies */
static void
rds_bound_reader(redisContext *c)
{
	pthread_once(&rds_fns_once, rds_fns_init);
	if (c->reader != NULL && c->reader->fn == rds_default_fns)
		c->reader->fn = &rds_bounded_fns;
}

/* ---- the asynchronous client ---- */

static void rds_start(struct rds *r);
static void rds_send(struct rds *r, struct rds_req *q);
static void rds_flush_waiting(struct rds *r);
static uint64_t rds_now_ms(void);

/* rds_state_name - for logs */
const char *
rds_state_name(enum rds_state st)
{
	switch (st) {
	case RDS_ST_DOWN:
		return "down";
	case RDS_ST_DISCOVER:
		return "discover";
	case RDS_ST_CONNECTING:
		return "connecting";
	case RDS_ST_READY:
		return "ready";
	}
	return "?";
}

/* rds_enter_state - every state change goes through here */
static void
rds_enter_state(struct rds *r, enum rds_state st)
{
	if (r->state != st && log_enabled(LOG_L_DEBUG)) {
		char a[160];

		rds_addr_format(&r->addr, a, sizeof(a));
		log_msg(LOG_L_DEBUG, 0, "redis state %s -> %s addr=%s", rds_state_name(r->state),
		    rds_state_name(st), a);
	}
	r->state = st;
}

/*
 * A request is one allocation: the struct, its timer (libevent's struct
 * event, assigned in place rather than allocated by evtimer_new) and its
 * arguments. The timer of the usual deadline (redis-timeout) is a
 * libevent common timeout: one queue for the client, every request
 * appended in order, in place of an entry each in the timer heap.
 */
static size_t rds_ev_size;	/* event_get_struct_event_size(), rounded up */
static pthread_once_t rds_ev_size_once = PTHREAD_ONCE_INIT;

static void
rds_ev_size_init(void)
{
	size_t a = _Alignof(max_align_t);

	rds_ev_size = (event_get_struct_event_size() + a - 1) / a * a;
}

#define RDS_REQ_HEAD	((sizeof(struct rds_req) + _Alignof(max_align_t) - 1) / \
			    _Alignof(max_align_t) * _Alignof(max_align_t))

/* rds_req_free - the end of a request */
static void
rds_req_free(struct rds_req *q)
{
	q->r->npending--;
	event_del(q->timer);
	redisFreeCommand(q->cmd);
	free(q);
}

/* rds_finish - call back (unless cancelled) and free a request not in a list */
static void
rds_finish(struct rds_req *q, const redisReply *reply, const char *err)
{
	struct rds *r = q->r;

	if (!q->cancelled && !r->freeing) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		metrics_inc(MF_REDIS_CALLS, NULL, NULL);
		metrics_observe(MF_REDIS_LATENCY, NULL, (uint64_t)ts.tv_sec * 1000000 +
		    (uint64_t)ts.tv_nsec / 1000 - q->t0_us);
		if (reply != NULL) {
			r->n.replies++;
			if (reply->type == REDIS_REPLY_ERROR) {
				r->n.errors++;
				metrics_inc(MF_REDIS_ERRORS, NULL, NULL);
			}
		} else {
			r->n.errors++;
			metrics_inc(MF_REDIS_ERRORS, NULL, NULL);
		}
		q->cb(q->ctx, reply, err);
	}
	rds_req_free(q);
}

/* rds_fail_soon - finish a request with err on the next loop turn */
static void
rds_fail_soon(struct rds *r, struct rds_req *q, const char *why)
{
	struct timeval now = { 0, 0 };

	q->where = RQ_FAILING;
	q->fail_why = why;
	TAILQ_INSERT_TAIL(&r->failing, q, link);
	evtimer_add(q->timer, &now);
}

/* rds_fail_waiting - every waiting request fails soon */
static void
rds_fail_waiting(struct rds *r, const char *why)
{
	struct rds_req *q;

	while ((q = TAILQ_FIRST(&r->waiting)) != NULL) {
		TAILQ_REMOVE(&r->waiting, q, link);
		rds_fail_soon(r, q, why);
	}
}

/* rds_down - no connection: retry after the backoff */
static void
rds_down(struct rds *r, const char *why)
{
	struct timeval tv;

	evtimer_del(r->conn_timer);
	rds_enter_state(r, RDS_ST_DOWN);
	if (!r->hold)
		rds_fail_waiting(r, why);	/* in a failover they wait for the new master */
	if (r->freeing)
		return;
	tv.tv_sec = r->backoff_ms / 1000;
	tv.tv_usec = (r->backoff_ms % 1000) * 1000;
	evtimer_add(r->retry_ev, &tv);
	r->backoff_ms = r->backoff_ms * 2 > r->conf.backoff_max_ms ? r->conf.backoff_max_ms :
	    r->backoff_ms * 2;
}

/* rds_drop - free the data connection; its commands are called back at once
 * (or, inside one of its callbacks, as soon as that returns) */
static void
rds_drop(struct rds *r, const char *why)
{
	redisAsyncContext *ac = r->ac;

	if (ac == NULL)
		return;
	r->ac = NULL;
	r->n.drops++;
	log_msg(LOG_L_DEBUG, 0, "redis drop reason=%s", why);
	rds_down(r, why);
	redisAsyncFree(ac);
}

/* rds_on_connect - hiredis: the TCP connection is up or failed */
static void
rds_on_connect(const redisAsyncContext *ac, int status)
{
	struct rds *r = ac->data;

	if (status == REDIS_OK || r->ac != ac)
		return;
	/* hiredis frees ac when we return; never free it here */
	r->ac = NULL;
	rds_down(r, "connect failed");
}

/* rds_on_disconnect - hiredis: the connection ended */
static void
rds_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rds *r = ac->data;

	(void)status;
	if (r->ac != ac)
		return;
	r->ac = NULL;
	r->n.drops++;
	rds_down(r, "disconnected");
}

/* rds_on_hs - a handshake reply */
static void
rds_on_hs(redisAsyncContext *ac, void *reply_, void *priv)
{
	struct rds *r = ac->data;
	const redisReply *reply = reply_;
	enum rds_hs kind = (enum rds_hs)(uintptr_t)priv;
	const char *bad = NULL;

	if (r->ac != ac || reply == NULL)
		return;
	switch (kind) {
	case RDS_HS_AUTH:
	case RDS_HS_SELECT:
		if (reply->type != REDIS_REPLY_STATUS)
			bad = kind == RDS_HS_AUTH ? "AUTH refused" : "SELECT refused";
		break;
	case RDS_HS_ROLE:
		if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
		    (reply->element[0]->type != REDIS_REPLY_STRING &&
		    reply->element[0]->type != REDIS_REPLY_STATUS) ||
		    strcmp(reply->element[0]->str, "master") != 0)
			bad = "not a master";
		break;
	case RDS_HS_SCRIPT:
		if (reply->type != REDIS_REPLY_STRING || reply->len != 40)
			bad = "SCRIPT LOAD failed";
		break;
	}
	if (bad != NULL) {
		log_msg(LOG_L_DEBUG, 0, "redis handshake failed: %s", bad);
		rds_drop(r, bad);
		return;
	}
	if (--r->hs_pending == 0) {
		evtimer_del(r->conn_timer);
		r->backoff_ms = r->conf.backoff_min_ms;
		r->n.ready++;
		rds_enter_state(r, RDS_ST_READY);
	}
}

/* rds_async_connect - a new context, attached to the loop; NULL on failure */
/*
 * The event glue of a hiredis connection (in place of hiredis's libevent
 * adapter, with two savings per command). The read event is persistent,
 * not deleted and added again around every reply (two epoll_ctl calls
 * each, libevent's epoll back-end applying changes at once). A command
 * hiredis queues on a connected socket is written at the end of the loop
 * turn (a deferred event, rds_ev_flush) rather than when epoll reports
 * the socket writable: what every session sent in that turn goes in one
 * write, without arming and disarming the write event (two more
 * epoll_ctl) and without a wake-up of the loop for it. The write event
 * is armed only for a connect in progress (hiredis must not take it for
 * done before the socket says so) and for a write that did not finish.
 */
struct rds_evs {
	redisAsyncContext *ac;
	struct event *rev, *wev, *fev;
	bool rarmed, warmed;
};

/* inside hiredis's write handling, on this loop's thread: a write still
 * wanted arms the real write event */
static _Thread_local bool rds_ev_writing;

static void
rds_ev_read(evutil_socket_t fd, short what, void *arg)
{
	struct rds_evs *e = arg;

	(void)fd;
	(void)what;
	redisAsyncHandleRead(e->ac);
}

/* rds_ev_write - the socket is writable (connect done, or room again) */
static void
rds_ev_write(evutil_socket_t fd, short what, void *arg)
{
	struct rds_evs *e = arg;

	(void)fd;
	(void)what;
	e->warmed = false;	/* not persistent: libevent took it off */
	rds_ev_writing = true;
	redisAsyncHandleWrite(e->ac);	/* e may be gone after this */
	rds_ev_writing = false;
}

/* rds_ev_flush - the end of the loop turn: write what was queued */
static void
rds_ev_flush(evutil_socket_t fd, short what, void *arg)
{
	struct rds_evs *e = arg;

	(void)fd;
	(void)what;
	rds_ev_writing = true;
	redisAsyncHandleWrite(e->ac);
	rds_ev_writing = false;
}

static void
rds_ev_add_read(void *data)
{
	struct rds_evs *e = data;

	if (!e->rarmed) {
		event_add(e->rev, NULL);
		e->rarmed = true;
	}
}

static void
rds_ev_del_read(void *data)
{
	struct rds_evs *e = data;

	if (e->rarmed) {
		event_del(e->rev);
		e->rarmed = false;
	}
}

static void
rds_ev_add_write(void *data)
{
	struct rds_evs *e = data;

	if ((e->ac->c.flags & REDIS_CONNECTED) && !rds_ev_writing) {
		event_active(e->fev, 0, 0);	/* at the end of this turn */
	} else if (!e->warmed) {
		event_add(e->wev, NULL);
		e->warmed = true;
	}
}

static void
rds_ev_del_write(void *data)
{
	struct rds_evs *e = data;

	if (e->warmed) {
		event_del(e->wev);
		e->warmed = false;
	}
}

static void
rds_ev_cleanup(void *data)
{
	struct rds_evs *e = data;

	event_free(e->rev);
	event_free(e->wev);
	event_free(e->fev);
	free(e);
}

/* rds_ev_attach - the glue above on base; -1 on failure */
static int
rds_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
	struct rds_evs *e;

	if (ac->ev.data != NULL)
		return -1;
	e = xcalloc(1, sizeof(*e));
	e->ac = ac;
	e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, rds_ev_read, e);
	e->wev = event_new(base, ac->c.fd, EV_WRITE, rds_ev_write, e);
	e->fev = event_new(base, -1, 0, rds_ev_flush, e);
	if (e->rev == NULL || e->wev == NULL || e->fev == NULL)
		panic("redis: cannot create events");
	ac->ev.data = e;
	ac->ev.addRead = rds_ev_add_read;
	ac->ev.delRead = rds_ev_del_read;
	ac->ev.addWrite = rds_ev_add_write;
	ac->ev.delWrite = rds_ev_del_write;
	ac->ev.cleanup = rds_ev_cleanup;
	rds_ev_add_read(e);
	rds_ev_add_write(e);	/* not connected yet: the write event tells */
	return 0;
}

static redisAsyncContext *
rds_async_connect(struct rds *r, const struct rds_addr *a)
{
	redisAsyncContext *ac;

	ac = a->path[0] ? redisAsyncConnectUnix(a->path) : redisAsyncConnect(a->host, a->port);
	if (ac == NULL)
		return NULL;
	if (ac->err) {
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = r;
	rds_bound_reader(&ac->c);
	if (rds_ev_attach(ac, r->base) != 0) {
		redisAsyncFree(ac);
		return NULL;
	}
	return ac;
}

/* rds_arm - a timer in milliseconds */
static void
rds_arm(struct event *ev, unsigned ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

/* rds_connect - connect to r->addr and pipeline the handshake */
static void
rds_connect(struct rds *r)
{
	redisAsyncContext *ac;
	int rc = REDIS_OK;

	r->n.connects++;
	ac = rds_async_connect(r, &r->addr);
	if (ac == NULL) {
		rds_down(r, "connect failed");
		return;
	}
	redisAsyncSetConnectCallback(ac, rds_on_connect);
	redisAsyncSetDisconnectCallback(ac, rds_on_disconnect);
	r->ac = ac;
	r->hs_pending = 0;
	rds_enter_state(r, RDS_ST_CONNECTING);
	rds_arm(r->conn_timer, r->conf.connect_timeout_ms);
	if (r->conf.password[0]) {
		rc |= redisAsyncCommand(ac, rds_on_hs, (void *)(uintptr_t)RDS_HS_AUTH, "AUTH %s",
		    r->conf.password);
		r->hs_pending++;
	}
	if (r->conf.db != 0) {
		rc |= redisAsyncCommand(ac, rds_on_hs, (void *)(uintptr_t)RDS_HS_SELECT,
		    "SELECT %d", r->conf.db);
		r->hs_pending++;
	}
	if (r->addr_from_sentinel) {
		rc |= redisAsyncCommand(ac, rds_on_hs, (void *)(uintptr_t)RDS_HS_ROLE, "ROLE");
		r->hs_pending++;
	}
	for (int i = 0; i < r->nscripts; i++) {
		rc |= redisAsyncCommand(ac, rds_on_hs, (void *)(uintptr_t)RDS_HS_SCRIPT,
		    "SCRIPT LOAD %s", r->scripts[i]);
		r->hs_pending++;
	}
	if (rc != REDIS_OK) {
		rds_drop(r, "handshake failed");
		return;
	}
	if (r->hs_pending == 0) {
		/* nothing to wait for: commands simply follow the connect */
		r->backoff_ms = r->conf.backoff_min_ms;
		rds_enter_state(r, RDS_ST_READY);
		evtimer_del(r->conn_timer);
	}
	rds_flush_waiting(r);
}

static void rds_discover(struct rds *r);

/* rds_addr_of - a host and a port as a sentinel names them; -1 when unusable */
static int
rds_addr_of(const char *h, size_t hlen, const char *p, size_t plen, struct rds_addr *a)
{
	char word[128];
	int n;

	if (hlen == 0 || hlen > 45 || plen == 0 || plen > 5 ||
	    memchr(h, '\0', hlen) != NULL || memchr(p, '\0', plen) != NULL)
		return -1;
	n = snprintf(word, sizeof(word), memchr(h, ':', hlen) ? "[%.*s]:%.*s" : "%.*s:%.*s",
	    (int)hlen, h, (int)plen, p);
	if (n < 0 || (size_t)n >= sizeof(word))
		return -1;
	return rds_addr_parse(word, RDS_DEFAULT_PORT, a, NULL, 0);
}

/* rds_master_reply - the sentinel's answer as an address; -1 when unusable */
static int
rds_master_reply(const redisReply *reply, struct rds_addr *a)
{
	const redisReply *h, *p;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
		return -1;
	h = reply->element[0];
	p = reply->element[1];
	if (h->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_STRING)
		return -1;
	return rds_addr_of(h->str, h->len, p->str, p->len, a);
}

/* rds_on_sentinel - a sentinel answered (or failed) */
static void
rds_on_sentinel(redisAsyncContext *sac, void *reply_, void *priv)
{
	struct rds *r = sac->data;
	const redisReply *reply = reply_;
	struct rds_addr a;
	int ok;

	(void)priv;
	if (r->sac != sac)
		return;
	r->sac = NULL;
	evtimer_del(r->conn_timer);
	ok = rds_master_reply(reply, &a) == 0;
	if (reply != NULL)
		redisAsyncFree(sac);	/* deferred by hiredis until we return */
	if (ok) {
		r->addr = a;
		r->addr_from_sentinel = true;
		rds_connect(r);
		return;
	}
	r->stried++;
	r->sidx = (r->sidx + 1) % r->conf.nsentinel;
	rds_discover(r);
}

/* rds_discover - ask the next sentinel not yet tried in this round */
static void
rds_discover(struct rds *r)
{
	redisAsyncContext *sac;

	for (; r->stried < r->conf.nsentinel; r->stried++,
	    r->sidx = (r->sidx + 1) % r->conf.nsentinel) {
		sac = rds_async_connect(r, &r->conf.sentinel[r->sidx]);
		if (sac == NULL)
			continue;
		if (redisAsyncCommand(sac, rds_on_sentinel, NULL,
		    "SENTINEL get-master-addr-by-name %s", r->conf.master) != REDIS_OK) {
			redisAsyncFree(sac);
			continue;
		}
		r->sac = sac;
		r->n.discoveries++;
		rds_enter_state(r, RDS_ST_DISCOVER);
		rds_arm(r->conn_timer, r->conf.connect_timeout_ms);
		return;
	}
	rds_down(r, "no sentinel knows the master");
}

/* rds_now_ms - a monotonic clock */
static uint64_t
rds_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* rds_start - begin a connection attempt */
static void
rds_start(struct rds *r)
{
	r->started_ms = rds_now_ms();
	if (r->conf.nsentinel > 0) {
		r->stried = 0;
		rds_discover(r);
	} else {
		r->addr = r->conf.server;
		r->addr_from_sentinel = false;
		rds_connect(r);
	}
}

/* rds_on_retry - the backoff is over */
static void
rds_on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rds_start(arg);
}

/* rds_on_conn_timer - a sentinel or the server did not answer in time */
static void
rds_on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
	struct rds *r = arg;
	redisAsyncContext *sac;

	(void)fd;
	(void)what;
	if (r->state == RDS_ST_DISCOVER && r->sac != NULL) {
		sac = r->sac;
		r->sac = NULL;
		redisAsyncFree(sac);	/* its callback sees a stale context */
		r->stried++;
		r->sidx = (r->sidx + 1) % r->conf.nsentinel;
		rds_discover(r);
	} else if (r->state == RDS_ST_CONNECTING) {
		r->n.timeouts++;
		rds_drop(r, "connect timeout");
	}
}

/* ---- following the sentinels ----
 *
 * Every sentinel is subscribed to, on a connection of its own. The
 * sentinel leading a failover publishes +selected-slave just before it
 * promotes a replica; every sentinel publishes +switch-master once the
 * new master is in place. From the first, the client holds: nothing is
 * sent, commands wait within their own deadline, because what the old
 * master takes from then on is lost when Sentinel demotes it. On the
 * second it connects to the new master (ROLE checked in the handshake)
 * and sends them there. An aborted failover ends the hold on the same
 * connection; none within RDS_HOLD_MAX_MS makes it ask the sentinels.
 */

#define RDS_HOLD_MAX_MS		5000

/* rds_flush_waiting - send the waiting requests, unless in a hold or
 * without a connection */
static void
rds_flush_waiting(struct rds *r)
{
	struct rds_req *q;

	if (r->hold || (r->state != RDS_ST_CONNECTING && r->state != RDS_ST_READY))
		return;
	while ((q = TAILQ_FIRST(&r->waiting)) != NULL) {
		TAILQ_REMOVE(&r->waiting, q, link);
		rds_send(r, q);
	}
}

/* rds_detach - leave the data connection and any discovery; waiting
 * requests stay, sent ones are called back "disconnected" */
static void
rds_detach(struct rds *r)
{
	redisAsyncContext *ac;

	evtimer_del(r->retry_ev);
	evtimer_del(r->conn_timer);
	rds_enter_state(r, RDS_ST_DOWN);
	/* a callback that the frees below run and that submits again gets
	 * "unavailable", never an attempt of its own under the caller */
	r->started_ms = rds_now_ms();
	if ((ac = r->sac) != NULL) {
		r->sac = NULL;
		redisAsyncFree(ac);	/* its callback sees a stale context */
	}
	if ((ac = r->ac) != NULL) {
		r->ac = NULL;
		r->n.drops++;
		redisAsyncFree(ac);	/* deferred by hiredis inside its callback */
	}
}

/* rds_hold_end - the failover ended; ask: the sentinels are asked again */
static void
rds_hold_end(struct rds *r, bool ask)
{
	if (!r->hold)
		return;
	r->hold = false;
	evtimer_del(r->hold_ev);
	if (ask) {
		rds_detach(r);
		rds_start(r);
	} else {
		rds_flush_waiting(r);
	}
}

/* rds_on_hold_timer - no +switch-master came */
static void
rds_on_hold_timer(evutil_socket_t fd, short what, void *arg)
{
	struct rds *r = arg;

	(void)fd;
	(void)what;
	log_msg(LOG_L_WARN, 0, "redis failover master=%s: no new master within %d ms, "
	    "asking the sentinels", r->conf.master, RDS_HOLD_MAX_MS);
	rds_hold_end(r, true);
}

/* rds_switch - the sentinels name a new master: go there now */
static void
rds_switch(struct rds *r, const struct rds_addr *a)
{
	char from[160], to[160];

	if (r->hold) {
		r->hold = false;
		evtimer_del(r->hold_ev);
	}
	if (memcmp(&r->addr, a, sizeof(*a)) == 0 && r->addr_from_sentinel &&
	    (r->state == RDS_ST_READY || r->state == RDS_ST_CONNECTING)) {
		rds_flush_waiting(r);	/* already there (another sentinel told) */
		return;
	}
	rds_addr_format(&r->addr, from, sizeof(from));
	rds_addr_format(a, to, sizeof(to));
	log_msg(LOG_L_INFO, 0, "redis failover master=%s from=%s to=%s", r->conf.master, from, to);
	r->n.switches++;
	rds_detach(r);
	r->addr = *a;
	r->addr_from_sentinel = true;
	r->backoff_ms = r->conf.backoff_min_ms;
	rds_connect(r);
}

/* rds_word - the next space-separated word of an event; false at the end */
static bool
rds_word(const char **p, const char *end, const char **w, size_t *wlen)
{
	while (*p < end && **p == ' ')
		(*p)++;
	if (*p >= end)
		return false;
	*w = *p;
	while (*p < end && **p != ' ')
		(*p)++;
	*wlen = (size_t)(*p - *w);
	return true;
}

/* rds_event - one sentinel event: "+switch-master NAME OLDIP OLDPORT
 * NEWIP NEWPORT"; "+selected-slave" and "-failover-abort-*" name the
 * master after an "@" (instance details) or as "master NAME ..." */
static void
rds_event(struct rds *r, const char *ch, size_t chlen, const char *msg, size_t mlen)
{
	const char *p = msg, *end = msg + mlen, *w[8];
	size_t wl[8], mn = strlen(r->conf.master);
	int n = 0;
	const char *name = NULL;
	size_t namelen = 0;

	while (n < 8 && rds_word(&p, end, &w[n], &wl[n]))
		n++;
	if (chlen == 14 && memcmp(ch, "+switch-master", 14) == 0) {
		struct rds_addr a;

		if (n == 5 && wl[0] == mn && memcmp(w[0], r->conf.master, mn) == 0 &&
		    rds_addr_of(w[3], wl[3], w[4], wl[4], &a) == 0)
			rds_switch(r, &a);
		return;
	}
	for (int i = 0; i + 1 < n; i++)
		if ((wl[i] == 1 && w[i][0] == '@') ||
		    (i == 0 && wl[0] == 6 && memcmp(w[0], "master", 6) == 0)) {
			name = w[i + 1];
			namelen = wl[i + 1];
			break;
		}
	if (name == NULL || namelen != mn || memcmp(name, r->conf.master, mn) != 0)
		return;
	if (ch[0] == '-') {
		if (r->hold)
			log_msg(LOG_L_INFO, 0, "redis failover master=%s aborted (%.*s)",
			    r->conf.master, (int)chlen, ch);
		rds_hold_end(r, false);
	} else if (!r->hold) {
		log_msg(LOG_L_INFO, 0, "redis failover master=%s begins: commands wait for "
		    "the new master", r->conf.master);
		r->hold = true;
		rds_arm(r->hold_ev, RDS_HOLD_MAX_MS);
	}
}

/* rds_sub_index - which sentinel a subscription is on; -1: stale */
static int
rds_sub_index(const struct rds *r, const redisAsyncContext *ac)
{
	for (int i = 0; i < r->conf.nsentinel; i++)
		if (r->pac[i] == ac)
			return i;
	return -1;
}

/* rds_on_event - hiredis: a message on a subscription (or its end) */
static void
rds_on_event(redisAsyncContext *ac, void *reply_, void *priv)
{
	struct rds *r = ac->data;
	const redisReply *rep = reply_, *ch, *msg;

	(void)priv;
	if (rep == NULL || r->freeing || rds_sub_index(r, ac) < 0 ||
	    rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (rep->elements == 3 && strcmp(rep->element[0]->str, "message") == 0) {
		ch = rep->element[1];
		msg = rep->element[2];
	} else if (rep->elements == 4 && strcmp(rep->element[0]->str, "pmessage") == 0) {
		ch = rep->element[2];
		msg = rep->element[3];
	} else {
		return;			/* (p)subscribe confirmations */
	}
	if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING || ch->len == 0)
		return;
	rds_event(r, ch->str, ch->len, msg->str, msg->len);
}

/* rds_sub_lost - a subscription failed or ended: subscribe again later */
static void
rds_sub_lost(const redisAsyncContext *ac)
{
	struct rds *r = ac->data;
	int i = rds_sub_index(r, ac);

	if (i < 0)
		return;
	r->pac[i] = NULL;		/* hiredis frees ac when we return */
	if (!r->freeing && !evtimer_pending(r->sub_ev, NULL))
		rds_arm(r->sub_ev, r->conf.backoff_max_ms);
}

static void
rds_on_sub_connect(const redisAsyncContext *ac, int status)
{
	if (status != REDIS_OK)
		rds_sub_lost(ac);
}

static void
rds_on_sub_disconnect(const redisAsyncContext *ac, int status)
{
	(void)status;
	rds_sub_lost(ac);
}

/* rds_sub_start - subscribe to every sentinel not subscribed to */
static void
rds_sub_start(struct rds *r)
{
	bool missing = false;

	for (int i = 0; i < r->conf.nsentinel; i++) {
		redisAsyncContext *ac;

		if (r->pac[i] != NULL)
			continue;
		ac = rds_async_connect(r, &r->conf.sentinel[i]);
		if (ac == NULL) {
			missing = true;
			continue;
		}
		redisAsyncSetConnectCallback(ac, rds_on_sub_connect);
		redisAsyncSetDisconnectCallback(ac, rds_on_sub_disconnect);
		r->pac[i] = ac;
		if (redisAsyncCommand(ac, rds_on_event, NULL,
		    "SUBSCRIBE +switch-master +selected-slave +failover-state-send-slaveof-noone")
		    != REDIS_OK ||
		    redisAsyncCommand(ac, rds_on_event, NULL, "PSUBSCRIBE -failover-abort-*")
		    != REDIS_OK) {
			r->pac[i] = NULL;
			redisAsyncFree(ac);
			missing = true;
		}
	}
	if (missing)
		rds_arm(r->sub_ev, r->conf.backoff_max_ms);
}

/* rds_on_sub_timer - subscribe again */
static void
rds_on_sub_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rds_sub_start(arg);
}

/* rds_on_reply - hiredis: a command's reply, or NULL when its connection ended */
static void
rds_on_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
	struct rds_req *q = priv;
	struct rds *r = q->r;
	const redisReply *reply = reply_;
	bool readonly = false;

	if (q->cancelled || r->freeing) {
		rds_req_free(q);
		return;
	}
	if (reply == NULL) {
		evtimer_del(q->timer);
		rds_finish(q, NULL, q->timed_out ? "timeout" : "disconnected");
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR && reply->str != NULL) {
		if (q->script >= 0 && !q->retried && r->ac == ac &&
		    strncmp(reply->str, "NOSCRIPT", 8) == 0) {
			/* the same call as EVAL: the script is cached again */
			q->retried = true;
			r->n.noscript++;
			q->argv[0] = "EVAL";
			q->lens[0] = 4;
			q->argv[1] = r->scripts[q->script];
			q->lens[1] = strlen(r->scripts[q->script]);
			if (redisAsyncCommandArgv(ac, rds_on_reply, q, q->argc, q->argv,
			    q->lens) == REDIS_OK)
				return;		/* the same deadline keeps running */
		}
		readonly = strncmp(reply->str, "READONLY", 8) == 0 ||
		    strncmp(reply->str, "MASTERDOWN", 10) == 0;
	}
	if (readonly && r->ac == ac && !q->moved && r->conf.nsentinel > 0) {
		/* not the master (any more): it wrote nothing. The request
		 * waits (its deadline runs on) while the sentinels are asked
		 * again and the master's ROLE is checked, then goes there */
		q->moved = true;
		r->n.moved++;
		rds_drop(r, "server is read-only");
		q->where = RQ_WAITING;
		TAILQ_INSERT_TAIL(&r->waiting, q, link);
		if (!r->hold) {
			evtimer_del(r->retry_ev);
			rds_start(r);
		}
		return;
	}
	evtimer_del(q->timer);
	rds_finish(q, reply, NULL);
	if (readonly && r->ac == ac)
		rds_drop(r, "server is read-only");
}

/* rds_on_req_timer - a request's deadline, or its deferred failure */
static void
rds_on_req_timer(evutil_socket_t fd, short what, void *arg)
{
	struct rds_req *q = arg;
	struct rds *r = q->r;

	(void)fd;
	(void)what;
	switch (q->where) {
	case RQ_FAILING:
		TAILQ_REMOVE(&r->failing, q, link);
		rds_finish(q, NULL, q->fail_why);
		break;
	case RQ_WAITING:
		TAILQ_REMOVE(&r->waiting, q, link);
		r->n.timeouts++;
		rds_finish(q, NULL, "timeout");
		break;
	case RQ_SENT:
		/* drop the connection: hiredis calls this request back with
		 * NULL (and every other one on the connection) */
		q->timed_out = true;
		r->n.timeouts++;
		if (r->ac != NULL)
			rds_drop(r, "timeout");
		break;
	}
}

/* rds_send - hand a request to the connection, or fail it soon (the
 * command as formatted at submission; after the EVAL retry, its new
 * arguments) */
static void
rds_send(struct rds *r, struct rds_req *q)
{
	if (r->ac == NULL) {
		rds_fail_soon(r, q, "unavailable");
		return;
	}
	if ((q->retried ? redisAsyncCommandArgv(r->ac, rds_on_reply, q, q->argc, q->argv,
	    q->lens) : redisAsyncFormattedCommand(r->ac, rds_on_reply, q, q->cmd, q->cmdlen)) !=
	    REDIS_OK) {
		rds_fail_soon(r, q, "unavailable");
		return;
	}
	q->where = RQ_SENT;
}

/* rds_submit - a new request (argv[0..1] may be replaced later by EVAL) */
static int
rds_submit(struct rds *r, int script, unsigned timeout_ms, rds_cb cb, void *ctx, int argc,
	const char *const *argv, const size_t *lens)
{
	struct rds_req *q;
	size_t bytes = 0;
	long long n;
	char *p;

	if (argc < 1 || argc > RDS_ARGS_MAX || r->npending >= r->conf.max_pending ||
	    r->freeing) {
		r->n.refused++;
		return -1;
	}
	for (int i = 0; i < argc; i++) {
		if (lens[i] > RDS_ARG_MAX && !(script >= 0 && i == 1)) {
			r->n.refused++;
			return -1;
		}
		bytes += lens[i] + 1;
	}
	pthread_once(&rds_ev_size_once, rds_ev_size_init);
	q = xcalloc(1, RDS_REQ_HEAD + rds_ev_size + argc * (sizeof(char *) + sizeof(size_t)) +
	    bytes);
	q->timer = (struct event *)(void *)((char *)q + RDS_REQ_HEAD);
	q->r = r;
	q->cb = cb;
	q->ctx = ctx;
	q->script = script;
	q->argc = argc;
	q->argv = (const char **)(void *)((char *)q->timer + rds_ev_size);
	q->lens = (size_t *)(void *)(q->argv + argc);
	p = (char *)(q->lens + argc);
	for (int i = 0; i < argc; i++) {
		memcpy(p, argv[i], lens[i]);
		p[lens[i]] = '\0';
		q->argv[i] = p;
		q->lens[i] = lens[i];
		p += lens[i] + 1;
	}
	/* the command in the protocol, made once (hiredis's formatter):
	 * sent as it is, again after a reconnection too */
	if ((n = redisFormatCommandArgv(&q->cmd, argc, q->argv, q->lens)) < 0)
		panic("redis: out of memory");
	q->cmdlen = (size_t)n;
	if (evtimer_assign(q->timer, r->base, rds_on_req_timer, q) != 0)
		panic("redis: cannot create a timer");
	{
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		q->t0_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	}
	r->npending++;
	r->n.commands++;
	if ((timeout_ms == 0 || timeout_ms == r->conf.timeout_ms) && r->common_tv != NULL)
		evtimer_add(q->timer, r->common_tv);
	else
		rds_arm(q->timer, timeout_ms ? timeout_ms : r->conf.timeout_ms);
	if (r->state == RDS_ST_DOWN && !r->hold &&
	    rds_now_ms() - r->started_ms >= r->conf.backoff_min_ms) {
		/* A request while the backoff runs tries at once (at most once
		 * per backoff-min): after a long stall the backoff has grown to
		 * its maximum, and a server that answers again must not see
		 * every decision fail until the timer ends. The request rides
		 * on the attempt, within its own deadline. */
		evtimer_del(r->retry_ev);
		rds_start(r);
	}
	if (r->hold) {
		q->where = RQ_WAITING;	/* a failover runs: wait for the new master */
		TAILQ_INSERT_TAIL(&r->waiting, q, link);
		return 0;
	}
	switch (r->state) {
	case RDS_ST_DOWN:
		rds_fail_soon(r, q, "unavailable");
		break;
	case RDS_ST_DISCOVER:
		q->where = RQ_WAITING;
		TAILQ_INSERT_TAIL(&r->waiting, q, link);
		break;
	case RDS_ST_CONNECTING:
	case RDS_ST_READY:
		rds_send(r, q);
		break;
	}
	return 0;
}

/* rds_eval - run a script by EVALSHA (see redis.h) */
int
rds_eval(struct rds *r, int script, unsigned timeout_ms, rds_cb cb, void *ctx, int nkeys,
	int nargs, const char *const *args, const size_t *lens)
{
	const char *argv[RDS_ARGS_MAX];
	size_t alen[RDS_ARGS_MAX];
	char nk[16];

	if (script < 0 || script >= r->nscripts || nargs < 0 || nargs + 3 > RDS_ARGS_MAX ||
	    nkeys < 0 || nkeys > nargs) {
		r->n.refused++;
		return -1;
	}
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVALSHA";
	alen[0] = 7;
	argv[1] = r->sha[script];
	alen[1] = 40;
	argv[2] = nk;
	alen[2] = strlen(nk);
	for (int i = 0; i < nargs; i++) {
		argv[3 + i] = args[i];
		alen[3 + i] = lens[i];
	}
	return rds_submit(r, script, timeout_ms, cb, ctx, nargs + 3, argv, alen);
}

/* rds_command - any other command (see redis.h) */
int
rds_command(struct rds *r, unsigned timeout_ms, rds_cb cb, void *ctx, int argc,
	const char *const *argv, const size_t *lens)
{
	return rds_submit(r, -1, timeout_ms, cb, ctx, argc, argv, lens);
}

/* rds_sha1 - a script's SHA1 in hex, as Redis names it */
static void
rds_sha1(const char *body, char out[41])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (EVP_Digest(body, strlen(body), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
		panic("redis: SHA1 unavailable");
	for (unsigned i = 0; i < 20; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* rds_new - a client on this loop; connecting starts now (see redis.h) */
struct rds *
rds_new(struct event_base *base, const struct rds_conf *c, const char *const *scripts,
	int nscripts)
{
	struct rds *r = xcalloc(1, sizeof(*r));

	r->base = base;
	r->conf = *c;
	if (r->conf.timeout_ms == 0)
		r->conf.timeout_ms = 200;
	if (r->conf.connect_timeout_ms == 0)
		r->conf.connect_timeout_ms = 1000;
	if (r->conf.backoff_min_ms == 0)
		r->conf.backoff_min_ms = 100;
	if (r->conf.backoff_max_ms < r->conf.backoff_min_ms)
		r->conf.backoff_max_ms = r->conf.backoff_min_ms;
	if (r->conf.max_pending == 0)
		r->conf.max_pending = 1024;
	r->backoff_ms = r->conf.backoff_min_ms;
	{
		struct timeval tv = { (time_t)(r->conf.timeout_ms / 1000),
		    (suseconds_t)(r->conf.timeout_ms % 1000) * 1000 };

		r->common_tv = event_base_init_common_timeout(base, &tv);	/* NULL: the heap */
	}
	TAILQ_INIT(&r->waiting);
	TAILQ_INIT(&r->failing);
	r->nscripts = nscripts > RDS_SCRIPT_MAX ? RDS_SCRIPT_MAX : nscripts;
	for (int i = 0; i < r->nscripts; i++) {
		r->scripts[i] = scripts[i];
		rds_sha1(scripts[i], r->sha[i]);
	}
	r->retry_ev = evtimer_new(base, rds_on_retry, r);
	r->conn_timer = evtimer_new(base, rds_on_conn_timer, r);
	r->sub_ev = evtimer_new(base, rds_on_sub_timer, r);
	r->hold_ev = evtimer_new(base, rds_on_hold_timer, r);
	if (r->retry_ev == NULL || r->conn_timer == NULL || r->sub_ev == NULL || r->hold_ev == NULL)
		panic("redis: cannot create timers");
	r->state = RDS_ST_DOWN;
	rds_sub_start(r);
	rds_start(r);
	return r;
}

/* rds_free - drop everything; pending callbacks are not called */
void
rds_free(struct rds *r)
{
	struct rds_req *q;
	redisAsyncContext *ac;

	if (r == NULL)
		return;
	r->freeing = true;
	evtimer_del(r->retry_ev);
	evtimer_del(r->conn_timer);
	evtimer_del(r->sub_ev);
	evtimer_del(r->hold_ev);
	for (int i = 0; i < r->conf.nsentinel; i++)
		if ((ac = r->pac[i]) != NULL) {
			r->pac[i] = NULL;
			redisAsyncFree(ac);
		}
	if ((ac = r->sac) != NULL) {
		r->sac = NULL;
		redisAsyncFree(ac);
	}
	if ((ac = r->ac) != NULL) {
		r->ac = NULL;
		redisAsyncFree(ac);	/* sent requests are freed in rds_on_reply */
	}
	while ((q = TAILQ_FIRST(&r->waiting)) != NULL) {
		TAILQ_REMOVE(&r->waiting, q, link);
		rds_req_free(q);
	}
	while ((q = TAILQ_FIRST(&r->failing)) != NULL) {
		TAILQ_REMOVE(&r->failing, q, link);
		rds_req_free(q);
	}
	event_free(r->retry_ev);
	event_free(r->conn_timer);
	event_free(r->sub_ev);
	event_free(r->hold_ev);
	free(r);
}

/* rds_get_state - for tests and stats */
enum rds_state
rds_get_state(const struct rds *r)
{
	return r->state;
}

/* rds_get_counters - for stats */
void
rds_get_counters(const struct rds *r, struct rds_counters *out)
{
	*out = r->n;
}

/* rds_current_addr - the server in use or last tried */
void
rds_current_addr(const struct rds *r, char *out, size_t size)
{
	rds_addr_format(&r->addr, out, size);
}

/* ---- the synchronous client (moatctl) ---- */

/* rds_sync_open - a blocking connection with timeouts; NULL with err */
static redisContext *
rds_sync_open(const struct rds_addr *a, unsigned ms, char *err, size_t errsize)
{
	struct timeval ctv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	unsigned cms = ms < RDS_SYNC_TIMEOUT_MIN_MS ? RDS_SYNC_TIMEOUT_MIN_MS : ms;
	struct timeval tv = { (time_t)(cms / 1000), (suseconds_t)(cms % 1000) * 1000 };
	redisContext *c;
	char name[160];

	rds_addr_format(a, name, sizeof(name));
	c = a->path[0] ? redisConnectUnixWithTimeout(a->path, ctv) :
	    redisConnectWithTimeout(a->host, a->port, ctv);
	if (c == NULL || c->err) {
		rds_errf(err, errsize, "%s: %s", name, c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return NULL;
	}
	rds_bound_reader(c);
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		rds_errf(err, errsize, "%s: cannot set a timeout", name);
		redisFree(c);
		return NULL;
	}
	return c;
}

/* rds_sync_expect - run a command; 0 when the reply is of type want */
static int
rds_sync_expect(redisContext *c, int want, const char *what, char *err, size_t errsize,
	const char *fmt, ...)
{
	va_list ap;
	redisReply *reply;
	int rc = -1;

	va_start(ap, fmt);
	reply = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (reply == NULL)
		rds_errf(err, errsize, "%s: %s", what, c->errstr);
	else if (reply->type == REDIS_REPLY_ERROR)
		rds_errf(err, errsize, "%s: %.200s", what, reply->str);
	else if (reply->type != want)
		rds_errf(err, errsize, "%s: unexpected reply", what);
	else if (want == REDIS_REPLY_ARRAY && (reply->elements < 1 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "master") != 0))
		rds_errf(err, errsize, "%s: not a master", what);
	else
		rc = 0;
	if (reply)
		freeReplyObject(reply);
	return rc;
}

/* rds_sync_connect - a blocking connection to the master (see redis.h) */
redisContext *
rds_sync_connect(const struct rds_conf *conf, char *err, size_t errsize)
{
	struct rds_addr a = conf->server;
	unsigned ms = conf->connect_timeout_ms ? conf->connect_timeout_ms : 1000;
	redisContext *c;
	char why[256] = "";

	if (conf->nsentinel > 0) {
		int i;

		for (i = 0; i < conf->nsentinel; i++) {
			redisReply *reply;
			int ok;

			c = rds_sync_open(&conf->sentinel[i], ms, why, sizeof(why));
			if (c == NULL)
				continue;
			reply = redisCommand(c, "SENTINEL get-master-addr-by-name %s", conf->master);
			ok = rds_master_reply(reply, &a) == 0;
			if (!ok)
				rds_errf(why, sizeof(why), "sentinel did not name master \"%s\"",
				    conf->master);
			if (reply)
				freeReplyObject(reply);
			redisFree(c);
			if (ok)
				break;
		}
		if (i == conf->nsentinel) {
			rds_errf(err, errsize, "no sentinel gave the master's address (%s)", why);
			return NULL;
		}
	}
	c = rds_sync_open(&a, ms, err, errsize);
	if (c == NULL)
		return NULL;
	if ((conf->password[0] && rds_sync_expect(c, REDIS_REPLY_STATUS, "AUTH", err, errsize,
	    "AUTH %s", conf->password) != 0) ||
	    (conf->db != 0 && rds_sync_expect(c, REDIS_REPLY_STATUS, "SELECT", err, errsize,
	    "SELECT %d", conf->db) != 0) ||
	    (conf->nsentinel > 0 && rds_sync_expect(c, REDIS_REPLY_ARRAY, "ROLE", err, errsize,
	    "ROLE") != 0)) {
		redisFree(c);
		return NULL;
	}
	return c;
}
