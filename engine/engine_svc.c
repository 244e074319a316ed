/*
 * engine_svc - the engine's process-wide services: the resolver, the work
 * pool, the DKIM verifier, the Public Suffix List, the embedded greylist
 * store and its periodic save, the DNSBL health probes; and what each
 * event loop needs to run sessions (struct engine_loop)
 *
 * SYNOPSIS
 *	int engine_init(struct conf *c, const struct engine_opts *o, char *err, size_t errlen);
 *	void engine_timers_start(struct event_base *base, struct conf *(*current)(void));
 *	void engine_timers_stop(void);
 *	void engine_shutdown(void);
 *	struct engine_loop *engine_loop_new(struct event_base *base, const struct conf *c);
 *
 * DESCRIPTION
 *	What the services are built from is the policy read at start: a
 *	reload (SIGHUP) does not rebuild the resolver, the verifier, the
 *	list or the store (conf_reload() warns when the new file changes
 *	them). A resolver that cannot start is not fatal: the DNS checks then
 *	give temperror and the rules decide.
 *
 *	The timers run on one loop the front-end names (moatd's main loop,
 *	moat-milter's engine loop): the DNSBL probes (RFC 5782 section 5) at
 *	once and then every dnsbl-probe-interval, over the zones of the
 *	policy then in force; each round ends with a "stats dnsbl" line for
 *	each zone whose counters moved and, when greylisting runs and its
 *	counters moved, a "stats greylist" line. The
 *	embedded greylist store is saved every greylist-store-save-interval
 *	and at engine_shutdown(), so a crash loses at most one interval.
 *
 *	engine_metrics_open() serves GET /metrics (metrics.h, the Prometheus
 *	text format) on metrics-listen, with libevent's evhttp on the loop
 *	given (moatd's main loop, moat-milter's engine loop). It binds before
 *	the privileges are dropped; the address of the policy at start holds
 *	for the process (a reload that changes it is warned about).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "conf_reload.h"
#include "dkim.h"
#include "dkim_sign.h"
#include "dmarc.h"
#include "dmarc_record.h"
#include "dns.h"
#include "dnsbl.h"
#include "engine.h"
#include "engine_int.h"
#include "glstore.h"
#include "greylist.h"
#include "ratelimit.h"
#include "log.h"
#include "metrics.h"
#include "workq.h"
#include "xalloc.h"

struct engine_g engine_g;

/* engine_init - the services the policy needs */
int
engine_init(struct conf *c, const struct engine_opts *o, char *err, size_t errlen)
{
	static const struct engine_opts none;

	engine_g.opts = o != NULL ? *o : none;
	engine_g.started = time(NULL);
	/* SPF, DKIM, DMARC: most of their lookups are fetched ahead from the
	 * loops; a job that still waits on DNS gets a thread of its own, up
	 * to check-threads; threads past 8 end after 10 s idle */
	engine_g.workq = workq_new_elastic(8, (int)(c->check_threads ? c->check_threads : 256),
	    10 * 1000, 4096);
	if (!engine_g.opts.no_network) {
		char *derr = NULL;
		struct dns_conf dc = c->resolver;

		dc.timeout_ms = c->dns_timeout_ms;
		if (dns_init(&dc, &derr) != 0) {
			if (!engine_g.opts.quiet_start)
				log_msg(LOG_L_ERROR, 0, "resolver error=\"%s\": DNS checks give temperror",
				    derr);
			free(derr);
		} else
			engine_g.dns_up = true;
	}
	if (c->dkim) {
		struct dkimv_conf dc;

		memset(&dc, 0, sizeof(dc));
		dc.min_key_bits = (unsigned)c->dkim_min_key_bits;
		dc.max_signatures = (unsigned)c->dkim_max_signatures;
		dc.allow_rsa_sha1 = c->dkim_allow_sha1 != 0;
		dc.timeout_ms = (unsigned)c->dns_timeout_ms;
		engine_g.dkim = dkimv_new(&dc, err, errlen);
		if (engine_g.dkim == NULL)
			return -1;
	}
	/* signing: no library handle until a message is signed, so always */
	engine_g.dkims = dkims_new(0, err, errlen);
	if (c->dmarc != CONF_DMARC_OFF || (conf_greylist_wanted(c) && conf_greylist_uses_org(c))) {
		char e[400] = "";

		/* DMARC without the list would guess organisational domains */
		engine_g.psl = dmarc_psl_load(c->psl_path, e, sizeof(e));
		if (engine_g.psl == NULL) {
			snprintf(err, errlen, "psl-file %s (install Debian's publicsuffix, "
			    "or set dmarc off)", e);
			return -1;
		}
	}
	if (conf_greylist_wanted(c) && !rds_conf_enabled(&c->greylist.redis) &&
	    (!engine_g.opts.greylist_offline || engine_g.opts.greylist_peek)) {
		char e[512] = "";
		const char *path = c->greylist.store_path[0] ? c->greylist.store_path : NULL;

		if (engine_g.opts.greylist_peek)	/* read the file, never write it */
			engine_g.store = glstore_open_ro(path, c->greylist.store_max,
			    (int64_t)time(NULL), e, sizeof(e));
		else
			engine_g.store = glstore_open(path, c->greylist.store_max,
			    (int64_t)time(NULL), e, sizeof(e));
		if (e[0])
			log_msg(LOG_L_ERROR, 0, "greylist store error=\"%s\": starting empty", e);
		if (engine_g.store != NULL)
			glstore_set_defaults(engine_g.store, c->greylist.v4_prefix, c->greylist.v6_prefix,
			    (int64_t)c->greylist.allow_lifetime);
	}
	engine_g.greylist = conf_greylist_wanted(c) &&
	    (!engine_g.opts.greylist_offline || engine_g.opts.greylist_peek);
	return 0;
}

struct glstore *
engine_glstore(void)
{
	return engine_g.store;
}

/* ---------------------------------------------------------------------
 * Loops
 */

/* engine_loop_new - on the main thread, before the loop runs; the loop's
 * parts are freed by engine_shutdown(), in the order their threads need */
struct engine_loop *
engine_loop_new(struct event_base *base, const struct conf *c)
{
	struct engine_loop *el = xcalloc(1, sizeof(*el));

	el->base = base;
	el->next = engine_g.loops;
	engine_g.loops = el;
	el->wq = workq_loop_new(engine_g.workq, base);
	el->dns = engine_g.dns_up ? dns_loop_new(base) : NULL;
	el->query = el->dns != NULL ? dns_query : NULL;
	if (engine_g.greylist) {
		el->gl = engine_g.opts.greylist_peek ?
		    greylist_new_peek(base, &c->greylist, engine_g.store) :
		    greylist_new(base, &c->greylist, engine_g.store);
		if (el->gl == NULL)
			fatal("greylist: cannot start (no redis and no store)");
	}
	if (c->ratelimits != NULL && c->ratelimits->n > 0 && rds_conf_enabled(&c->greylist.redis) &&
	    !engine_g.opts.greylist_offline)
		el->rl = ratelimit_new(base, &c->greylist.redis, c->greylist.prefix);
	return el;
}

/* engine_loop_set_query - a unit test answers the loop's DNS questions */
void
engine_loop_set_query(struct engine_loop *el, engine_query_fn fn)
{
	el->query = fn;
}

struct dns_loop *
engine_loop_dns(struct engine_loop *el)
{
	return el->dns;
}

struct greylist *
engine_loop_greylist(struct engine_loop *el)
{
	return el->gl;
}

/* ---------------------------------------------------------------------
 * DNSBL health probes (RFC 5782 section 5) and the stats lines
 */

struct probe_round {
	struct conf *c;
	int pending;
	struct { bool asked, listed_ok, unlisted_ok, temp; } z[DNSBL_ZONES_MAX];
};

struct probe_q {
	struct probe_round *pr;
	int zone;
	bool listed;		/* the test point that must be listed */
};

static struct {
	struct event_base *base;
	struct conf *(*current)(void);
	struct dns_loop *dns;
	struct event *ev_probe;
	struct event *ev_save;
	uint64_t last_gl_checks;
} tm;

/* stats_greylist - the greylist's counters, when they moved */
static void
stats_greylist(const struct conf *c)
{
	struct greylist_counters gc;

	if (!conf_greylist_wanted(c))
		return;
	greylist_counters(&gc);
	if (gc.checks == tm.last_gl_checks)
		return;
	tm.last_gl_checks = gc.checks;
	log_msg(LOG_L_INFO, 0, "stats greylist checks=%llu pass=%llu allowlisted=%llu "
	    "greylisted=%llu errors=%llu refused=%llu outages=%llu cached=%llu",
	    (unsigned long long)gc.checks, (unsigned long long)gc.pass,
	    (unsigned long long)gc.allowlisted, (unsigned long long)gc.greylisted,
	    (unsigned long long)gc.errors, (unsigned long long)gc.refused,
	    (unsigned long long)gc.outages, (unsigned long long)gc.cached);
}

/* probe_finish - every answer of a round is in: zones on or off, stats */
static void
probe_finish(struct probe_round *pr)
{
	for (int i = 0; pr->c->dnsbl != NULL && i < pr->c->dnsbl->n; i++) {
		if (pr->z[i].asked)
			dnsbl_probe_result(&pr->c->dnsbl->z[i], pr->z[i].listed_ok,
			    pr->z[i].unlisted_ok, pr->z[i].temp);
		dnsbl_log_stats(&pr->c->dnsbl->z[i]);
		metrics_set(MF_DNSBL_DISABLED, pr->c->dnsbl->z[i].name, NULL,
		    !dnsbl_zone_enabled(&pr->c->dnsbl->z[i]));
	}
	stats_greylist(pr->c);
	conf_unref(pr->c);
	free(pr);
}

static void
probe_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct probe_q *q = ctx;
	struct probe_round *pr = q->pr;

	(void)tag;
	if (a->status == DNS_TEMPERROR) {
		pr->z[q->zone].temp = true;
	} else if (q->listed) {
		for (int i = 0; i < a->n; i++) {
			unsigned char b[4];

			if (dns_rr_a(a, i, b) == 0 && b[0] == 127 && !(b[1] == 255 && b[2] == 255))
				pr->z[q->zone].listed_ok = true;
		}
	} else {
		pr->z[q->zone].unlisted_ok = a->status != DNS_OK;
	}
	free(q);
	if (--pr->pending == 0)
		probe_finish(pr);
}

/* probe_send - one test point of one zone */
static void
probe_send(struct probe_round *pr, int zone, bool listed)
{
	const struct dnsbl_zone *z = &pr->c->dnsbl->z[zone];
	static const unsigned char two[4] = { 127, 0, 0, 2 }, one[4] = { 127, 0, 0, 1 };
	struct probe_q *q = xcalloc(1, sizeof(*q));
	char name[320];

	q->pr = pr;
	q->zone = zone;
	q->listed = listed;
	if (tm.dns == NULL || dnsbl_query_name(z, AF_INET, listed ? two : one,
	    listed ? "test" : "invalid", name, sizeof(name)) < 0 ||
	    dns_query(tm.dns, name, DNS_T_A, (unsigned)pr->c->dns_timeout_ms, probe_done, q, 0) != 0) {
		pr->z[zone].temp = true;
		free(q);
		return;
	}
	pr->pending++;
}

/* probe_resolver_done - the start-up probe of the resolver */
static void
probe_resolver_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct conf *c = tm.current != NULL ? tm.current() : NULL;

	(void)ctx;
	(void)tag;
	if (c != NULL) {
		engine_resolver_probe_result(c, a);
		conf_unref(c);
	}
}

/* probe_cb - one round over the zones of the policy in force */
static void
probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe_round *pr = xcalloc(1, sizeof(*pr));
	struct timeval tv;

	(void)fd;
	(void)what;
	(void)arg;
	pr->c = tm.current();
	if (pr->c->dnsbl != NULL)
		for (int i = 0; i < pr->c->dnsbl->n; i++) {
			if (!pr->c->dnsbl->z[i].probe)
				continue;
			pr->z[i].asked = true;
			probe_send(pr, i, true);
			probe_send(pr, i, false);
		}
	tv.tv_sec = (time_t)(pr->c->dnsbl_probe_ms / 1000);
	tv.tv_usec = (suseconds_t)(pr->c->dnsbl_probe_ms % 1000) * 1000;
	evtimer_add(tm.ev_probe, &tv);
	pr->pending++;		/* held until every query is out */
	if (--pr->pending == 0)
		probe_finish(pr);
}

/* engine_store_save - the embedded greylist store to its file */
int
engine_store_save(void)
{
	char err[512] = "";

	if (engine_g.store == NULL)
		return 0;
	if (glstore_save(engine_g.store, (int64_t)time(NULL), err, sizeof(err)) != 0) {
		log_msg(LOG_L_ERROR, 0, "greylist store save error=\"%s\"", err);
		return -1;
	}
	return 0;
}

/* save_arm - the next save, greylist-store-save-interval from now */
static void
save_arm(void)
{
	struct conf *c = tm.current();
	struct timeval tv;

	tv.tv_sec = (time_t)(c->glstore_save_ms / 1000);
	tv.tv_usec = (suseconds_t)(c->glstore_save_ms % 1000) * 1000;
	conf_unref(c);
	evtimer_add(tm.ev_save, &tv);
}

static void
save_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	(void)engine_store_save();
	save_arm();
}

/* engine_timers_start - probes and the store's save, on base */
void
engine_timers_start(struct event_base *base, struct conf *(*current)(void))
{
	struct conf *c = current();

	tm.base = base;
	tm.current = current;
	tm.dns = engine_g.dns_up ? dns_loop_new(base) : NULL;
	tm.ev_probe = evtimer_new(base, probe_cb, NULL);
	tm.ev_save = evtimer_new(base, save_cb, NULL);
	if (tm.ev_probe == NULL || tm.ev_save == NULL)
		fatal("evtimer_new failed");
	if (engine_g.store != NULL)
		save_arm();
	if (c->startup_checks && tm.dns != NULL &&
	    dns_query(tm.dns, ".", DNS_T_NS, (unsigned)c->dns_timeout_ms, probe_resolver_done,
	    NULL, 0) != 0)
		engine_resolver_probe_result(c, NULL);
	if (c->dnsbl != NULL)
		event_active(tm.ev_probe, EV_TIMEOUT, 0);
	else {
		/* a reload may add zones: look again later */
		struct timeval tv = { (time_t)(c->dnsbl_probe_ms / 1000), 0 };

		evtimer_add(tm.ev_probe, &tv);
	}
	conf_unref(c);
}

/* engine_timers_stop - before the timers' loop goes */
void
engine_timers_stop(void)
{
	engine_metrics_close();
	if (tm.base == NULL)
		return;
	event_free(tm.ev_probe);
	event_free(tm.ev_save);
	tm.ev_probe = tm.ev_save = NULL;
	tm.base = NULL;
}

/* engine_shutdown - every loop has ended */
void
engine_shutdown(void)
{
	struct engine_loop *el, *next;

	workq_free(engine_g.workq);	/* finishes its jobs: no session is left */
	engine_g.workq = NULL;
	for (el = engine_g.loops; el; el = el->next)
		workq_loop_free(el->wq);
	/* queries still out are dropped, their callers told "shutdown" */
	dns_shutdown();
	for (el = engine_g.loops; el; el = next) {
		next = el->next;
		dns_loop_free(el->dns);
		greylist_free(el->gl);
		ratelimit_free(el->rl);
		free(el);
	}
	engine_g.loops = NULL;
	if (tm.dns != NULL) {
		dns_loop_free(tm.dns);
		tm.dns = NULL;
	}
	(void)engine_store_save();
	if (engine_g.store != NULL)
		glstore_close(engine_g.store);
	engine_g.store = NULL;
	if (engine_g.dkim != NULL)
		dkimv_free(engine_g.dkim);
	engine_g.dkim = NULL;
	dkims_free(engine_g.dkims);
	engine_g.dkims = NULL;
	dmarc_psl_free(engine_g.psl);
	engine_g.psl = NULL;
}

/* ---------------------------------------------------------------------
 * The metrics endpoint
 */

static struct evhttp *metrics_http;

/* metrics_cb - GET /metrics; 404 elsewhere, 405 for other methods */
static void
metrics_cb(struct evhttp_request *req, void *arg)
{
	const char *uri = evhttp_request_get_uri(req);
	struct evbuffer *b;
	char *text;
	size_t len;

	(void)arg;
	if (uri == NULL || (strcmp(uri, "/metrics") != 0 && strncmp(uri, "/metrics?", 9) != 0)) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	text = metrics_render(&len);
	b = evbuffer_new();
	if (b == NULL)
		panic("evbuffer_new failed");
	evbuffer_add(b, text, len);
	free(text);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

/* engine_metrics_open - serve /metrics on metrics-listen, if set */
int
engine_metrics_open(struct event_base *base, const struct conf *c, char *err, size_t errlen)
{
	const struct conf_addr *a = &c->metrics_listen;
	int fd, one = 1;

	if (a->salen == 0 || metrics_http != NULL)
		return 0;
	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (const struct sockaddr *)&a->sa, a->salen) != 0 || listen(fd, 64) != 0) {
		snprintf(err, errlen, "metrics-listen %s: %s", a->text, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	metrics_http = evhttp_new(base);
	if (metrics_http == NULL || evhttp_accept_socket(metrics_http, fd) != 0) {
		snprintf(err, errlen, "metrics-listen %s: evhttp failed", a->text);
		close(fd);
		return -1;
	}
	evhttp_set_timeout(metrics_http, 10);
	evhttp_set_max_headers_size(metrics_http, 8192);
	evhttp_set_max_body_size(metrics_http, 0);
	evhttp_set_allowed_methods(metrics_http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(metrics_http, metrics_cb, NULL);
	log_msg(LOG_L_INFO, 0, "metrics listen=%s path=/metrics", a->text);
	return 0;
}

/* engine_metrics_close - before the loop is freed */
void
engine_metrics_close(void)
{
	if (metrics_http != NULL)
		evhttp_free(metrics_http);
	metrics_http = NULL;
}
