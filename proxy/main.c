/*
 * main - moatd: start-up, worker threads, signals
 *
 * SYNOPSIS
 *	moatd [-n] [-f FILE]
 *
 * DESCRIPTION
 *	Reads and checks the policy file (-n: only that, then "configuration
 *	OK"), raises the descriptor limit and checks it against max-sessions,
 *	binds every listener once per worker (SO_REUSEPORT), drops root for
 *	the configured user, starts the workers and waits for signals in the
 *	main thread: SIGHUP reloads the file (a bad file is refused, its
 *	errors logged, and the old configuration stays), SIGTERM and SIGINT
 *	stop accepting, let sessions finish within drain-timeout, then close
 *	what is left and exit 0. SIGPIPE is ignored. moatd stays in the
 *	foreground: a service manager runs it.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sys/eventfd.h>

#include "conf.h"
#include "conf_reload.h"
#include "dns.h"
#include "dkim.h"
#include "dmarc.h"
#include "dnsbl.h"
#include "filter.h"
#include "glstore.h"
#include "greylist.h"
#include "log.h"
#include "moatd.h"
#include "rules.h"
#include "session.h"
#include "tls.h"
#include "xalloc.h"

struct moatd_state moatd = { .conf_lock = PTHREAD_MUTEX_INITIALIZER };

static struct event_base *main_base;
static struct event *ev_drain_timer;
static struct event *ev_drain_tick;
static const char *conf_path = "/etc/moat/moat.conf";

/* moatd_conf_get - a reference to the current configuration */
struct conf *
moatd_conf_get(void)
{
	return conf_current(&moatd.conf_lock, &moatd.conf);
}

/* moatd_new_sid - a session id unique in this process and unlikely to
 * repeat across restarts (random start) */
uint64_t
moatd_new_sid(void)
{
	return __atomic_add_fetch(&moatd.next_sid, 1, __ATOMIC_RELAXED);
}

/* usage - how to call */
static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: moatd [-n] [-f FILE]\n"
	    "  -f FILE  policy file (default /etc/moat/moat.conf)\n"
	    "  -n       check the policy file and exit\n");
	exit(2);
}

/* worker_wake_cb - the main thread asks this worker to drain or stop */
static void
worker_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct session *s, *next;

	uint64_t n;
	ssize_t r;

	(void)what;
	if (fd >= 0)
		r = read(fd, &n, sizeof(n));	/* reset the eventfd; EAGAIN is fine */
	(void)r;
	if (__atomic_load_n(&moatd.draining, __ATOMIC_RELAXED) && !w->draining) {
		w->draining = true;
		listen_pause(w, true);
		ups_pool_drain(w);
		for (s = w->sessions; s; s = next) {
			next = s->next;
			sess_drain(s);
		}
	}
	if (w->stopping) {
		for (s = w->sessions; s; s = next) {
			next = s->next;
			sess_close(s, "shutdown");
		}
	}
	if (w->stopping) {
		while (w->closers != NULL)
			ups_closer_free(w->closers);
	}
	if ((w->draining && w->nsessions == 0 && w->nclosers == 0) ||
	    (w->stopping && w->sessions == NULL))
		event_base_loopexit(w->base, NULL);
}

/* ---------------------------------------------------------------------
 * DNSBL health probes (RFC 5782 section 5), on the main loop: at start,
 * then every dnsbl-probe-interval, for the zones of the current file.
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

static struct dns_loop *main_dns;
static struct event *ev_probe;

static void
probe_finish(struct probe_round *pr)
{
	for (int i = 0; pr->c->dnsbl != NULL && i < pr->c->dnsbl->n; i++) {
		if (pr->z[i].asked)
			dnsbl_probe_result(&pr->c->dnsbl->z[i], pr->z[i].listed_ok,
			    pr->z[i].unlisted_ok, pr->z[i].temp);
		dnsbl_log_stats(&pr->c->dnsbl->z[i]);
	}
	if (conf_greylist_wanted(pr->c)) {
		static uint64_t last;
		struct greylist_counters gc;

		greylist_counters(&gc);
		if (gc.checks != last) {
			last = gc.checks;
			log_msg(LOG_L_INFO, 0, "stats greylist checks=%llu pass=%llu allowlisted=%llu "
			    "greylisted=%llu errors=%llu refused=%llu outages=%llu cached=%llu",
			    (unsigned long long)gc.checks, (unsigned long long)gc.pass,
			    (unsigned long long)gc.allowlisted, (unsigned long long)gc.greylisted,
			    (unsigned long long)gc.errors, (unsigned long long)gc.refused,
			    (unsigned long long)gc.outages, (unsigned long long)gc.cached);
		}
	}
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
	if (dnsbl_query_name(z, AF_INET, listed ? two : one, listed ? "test" : "invalid",
	    name, sizeof(name)) < 0 ||
	    dns_query(main_dns, name, DNS_T_A, (unsigned)pr->c->dns_timeout_ms, probe_done, q, 0) != 0) {
		pr->z[zone].temp = true;
		free(q);
		return;
	}
	pr->pending++;
}

/* probe_cb - one round over the zones of the current configuration */
static void
probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe_round *pr = xcalloc(1, sizeof(*pr));
	struct timeval tv;

	(void)fd;
	(void)what;
	(void)arg;
	pr->c = moatd_conf_get();
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
	evtimer_add(ev_probe, &tv);
	pr->pending++;		/* held until every query is out */
	if (--pr->pending == 0)
		probe_finish(pr);
}

/* store_save - the embedded greylist store to its file */
static void
store_save(void)
{
	char err[512] = "";

	if (moatd.glstore != NULL && glstore_save(moatd.glstore, (int64_t)time(NULL), err,
	    sizeof(err)) != 0)
		log_msg(LOG_L_ERROR, 0, "greylist store save error=\"%s\"", err);
}

static struct event *ev_save;

static void
save_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timeval tv = { 600, 0 };

	(void)fd;
	(void)what;
	(void)arg;
	store_save();
	evtimer_add(ev_save, &tv);
}

/* worker_main - one event loop */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->base);
	ups_pool_drain(w);
	/* stopped while goodbyes were still pending: close them now */
	while (w->closers != NULL)
		ups_closer_free(w->closers);
	__atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/* wake_all - nudge every worker */
static void
wake_all(void)
{
	uint64_t one = 1;

	for (int i = 0; i < moatd.nworkers; i++) {
		ssize_t r = write(moatd.workers[i].wake_fd, &one, sizeof(one));
		(void)r;
	}
}

/* drain_timer_cb - drain-timeout passed: close what is left */
static void
drain_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_msg(LOG_L_INFO, 0, "shutdown drain-timeout passed, closing remaining sessions");
	for (int i = 0; i < moatd.nworkers; i++)
		moatd.workers[i].stopping = true;
	wake_all();
}

/* drain_tick_cb - nothing: it only wakes the main loop to look */
static void
drain_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* listen_warning - a reload cannot move listeners or add workers */
static void
listen_warning(const struct conf *n, const struct conf *old)
{
	if (n->nlisten != old->nlisten || memcmp(n->listen, old->listen,
	    sizeof(n->listen[0]) * (size_t)n->nlisten) != 0 || n->workers != old->workers)
		log_msg(LOG_L_WARN, 0, "reload: listen and workers changes take effect at restart");
}

/* signal_cb - SIGTERM/SIGINT drain, SIGHUP reload */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGHUP) {
		(void)conf_reload(conf_path, &moatd.conf_lock, &moatd.conf, tls_conf_setup,
		    listen_warning);
		return;
	}
	if (__atomic_load_n(&moatd.draining, __ATOMIC_RELAXED)) {
		drain_timer_cb(-1, 0, NULL);
		return;
	}
	log_msg(LOG_L_INFO, 0, "shutdown signal=%d sessions=%u drain-timeout=%llums", (int)sig,
	    __atomic_load_n(&moatd.sessions, __ATOMIC_RELAXED),
	    (unsigned long long)moatd.conf->drain_ms);
	__atomic_store_n(&moatd.draining, true, __ATOMIC_RELAXED);
	wake_all();
	{
		/* the main loop looks at the workers' progress every 50 ms */
		struct timeval tick = { 0, 50000 };
		event_add(ev_drain_tick, &tick);
	}
	{
		struct timeval tv = { (time_t)(moatd.conf->drain_ms / 1000),
		    (suseconds_t)(moatd.conf->drain_ms % 1000) * 1000 };
		evtimer_add(ev_drain_timer, &tv);
	}
}

/* fd_limits - raise RLIMIT_NOFILE and derive the session cap
 *
 * An idle session holds one descriptor; from its first MAIL on it holds a
 * second one (the upstream), and a third while a big message is spooled to
 * a file. Sessions are capped at one descriptor each (less a reserve), so
 * that idle and slow clients can be held in numbers; a session that then
 * cannot open its upstream or spool file gets a 4xx, never a crash. The
 * warning says when max-sessions busy sessions would not fit. */
static void
fd_limits(const struct conf *c)
{
	struct rlimit rl;
	uint64_t need = c->max_sessions * 2 + 64, cap;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		fatal("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur < need) {
		rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	cap = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : rl.rlim_cur / 2;
	if (rl.rlim_cur < need)
		log_msg(LOG_L_WARN, 0, "limit fd=%llu: max-sessions %llu busy sessions need %llu "
		    "(client and upstream each); sessions beyond %llu are refused, and busy ones "
		    "beyond the limit get 4xx",
		    (unsigned long long)rl.rlim_cur, (unsigned long long)c->max_sessions,
		    (unsigned long long)need, (unsigned long long)cap);
	moatd.fd_session_cap = cap > 0xffffffffu ? 0xffffffffu : (unsigned)cap;
}

/* drop_privileges - become the configured user once the sockets are bound */
static void
drop_privileges(const struct conf *c)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return;
	if (strcmp(c->user, "root") == 0) {
		log_msg(LOG_L_WARN, 0, "user root: moatd keeps running as root");
		return;
	}
	pw = getpwnam(c->user);
	if (pw == NULL)
		fatal("user %s: no such user", c->user);
	control_chown(pw->pw_uid, pw->pw_gid);
	if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
		fatal("cannot become user %s: %s", c->user, strerror(errno));
	if (setuid(0) == 0)
		fatal("could regain root after dropping it");
}

int
main(int argc, char **argv)
{
	struct conf *c;
	char *errs = NULL;
	bool check_only = false;
	int opt, nworkers;
	uint64_t seed = 0;

	while ((opt = getopt(argc, argv, "f:nh")) != -1) {
		switch (opt) {
		case 'f': conf_path = optarg; break;
		case 'n': check_only = true; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	log_init("moatd", false, LOG_L_INFO);
	c = conf_load(conf_path, &errs);
	if (c == NULL) {
		fputs(errs ? errs : "unknown error\n", stderr);
		free(errs);
		return 1;
	}
	if (errs != NULL)
		fputs(errs, stderr);	/* warnings */
	free(errs);
	{
		/* certificates and keys load now, or moatd does not start */
		char terr[512];
		if (tls_conf_setup(c, terr, sizeof(terr)) != 0) {
			fprintf(stderr, "%s: %s\n", conf_path, terr);
			conf_unref(c);
			return 1;
		}
	}
	if (check_only) {
		printf("%s: configuration OK\n", conf_path);
		conf_unref(c);
		return 0;
	}
	log_init("moatd", c->log_dest == CONF_LOG_SYSLOG, (enum log_level)c->log_level);
	signal(SIGPIPE, SIG_IGN);
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint64_t)getpid() << 32;
	moatd.next_sid = seed & 0xffffffffff000000ull;
	moatd.conf = c;
	fd_limits(c);
	clients_init();

	nworkers = (int)c->workers;
	if (nworkers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		nworkers = n > 0 ? (int)(n > 64 ? 64 : n) : 1;
	}
	moatd.nworkers = nworkers;
	moatd.workq = workq_new(8, 4096);	/* SPF, DKIM, DMARC: they wait on DNS */
	{
		/* a resolver that cannot start is not fatal: the DNS checks
		 * then give temperror, and the rules decide (DNS-14) */
		char *err = NULL;

		if (dns_init(&c->resolver, &err) != 0) {
			log_msg(LOG_L_ERROR, 0, "resolver error=\"%s\": DNS checks give temperror", err);
			free(err);
		}
	}
	if (c->dkim) {
		struct dkimv_conf dc;
		char err[512] = "";

		memset(&dc, 0, sizeof(dc));
		dc.min_key_bits = (unsigned)c->dkim_min_key_bits;
		dc.max_signatures = (unsigned)c->dkim_max_signatures;
		dc.allow_rsa_sha1 = c->dkim_allow_sha1 != 0;
		dc.timeout_ms = (unsigned)c->dns_timeout_ms;
		moatd.dkim = dkimv_new(&dc, err, sizeof(err));
		if (moatd.dkim == NULL)
			fatal("dkim: %s", err);
	}
	if (c->dmarc != CONF_DMARC_OFF || (conf_greylist_wanted(c) && conf_greylist_uses_org(c))) {
		char err[512] = "";

		/* DMARC without the list would guess organisational domains */
		moatd.psl = dmarc_psl_load(c->psl_path, err, sizeof(err));
		if (moatd.psl == NULL)
			fatal("public-suffix-list %s: %s (install Debian's publicsuffix, or set "
			    "dmarc off)", c->psl_path, err);
	}
	if (conf_greylist_wanted(c) && !rds_conf_enabled(&c->greylist.redis)) {
		char err[512] = "";

		moatd.glstore = glstore_open(c->greylist.store_path[0] ? c->greylist.store_path : NULL,
		    c->greylist.store_max, (int64_t)time(NULL), err, sizeof(err));
		if (err[0])
			log_msg(LOG_L_ERROR, 0, "greylist store error=\"%s\": starting empty", err);
		if (moatd.glstore != NULL)
			glstore_set_defaults(moatd.glstore, c->greylist.v4_prefix, c->greylist.v6_prefix,
			    (int64_t)c->greylist.allow_lifetime);
	}
	moatd.workers = xcalloc((size_t)nworkers, sizeof(struct worker));
	for (int i = 0; i < nworkers; i++) {
		struct worker *w = &moatd.workers[i];
		w->idx = i;
		w->base = event_base_new();
		if (w->base == NULL)
			fatal("event_base_new failed");
		/* the main thread wakes the worker through an eventfd: the
		 * event bases have no locks, nothing else crosses threads */
		w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->wake_fd < 0)
			fatal("eventfd: %s", strerror(errno));
		w->ev_wake = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, worker_wake_cb, w);
		w->wq = workq_loop_new(moatd.workq, w->base);
		w->dns = dns_loop_new(w->base);
		if (conf_greylist_wanted(c)) {
			w->gl = greylist_new(w->base, &c->greylist, moatd.glstore);
			if (w->gl == NULL)
				fatal("greylist: cannot start (no redis and no store)");
		}
		event_add(w->ev_wake, NULL);
		for (int j = 0; j < c->nlisten; j++) {
			char err[256];
			int fd = listen_open(&c->listen[j], i == 0, err, sizeof(err));
			if (fd < 0)
				fatal("%s", err);
			listen_attach(w, fd);
		}
	}
	main_base = event_base_new();
	if (main_base == NULL)
		fatal("event_base_new failed");
	if (c->control_socket != NULL) {
		char err[512];

		if (control_open(main_base, c->control_socket, err, sizeof(err)) != 0)
			fatal("%s", err);
	}
	drop_privileges(c);

	struct event *sigs[3] = {
		evsignal_new(main_base, SIGTERM, signal_cb, NULL),
		evsignal_new(main_base, SIGINT, signal_cb, NULL),
		evsignal_new(main_base, SIGHUP, signal_cb, NULL),
	};
	for (int i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);
	ev_drain_timer = evtimer_new(main_base, drain_timer_cb, NULL);
	ev_drain_tick = event_new(main_base, -1, EV_PERSIST, drain_tick_cb, NULL);
	main_dns = dns_loop_new(main_base);
	ev_save = evtimer_new(main_base, save_cb, NULL);
	if (moatd.glstore != NULL) {
		struct timeval tv = { 600, 0 };

		evtimer_add(ev_save, &tv);
	}
	ev_probe = evtimer_new(main_base, probe_cb, NULL);
	if (c->dnsbl != NULL)
		event_active(ev_probe, EV_TIMEOUT, 0);
	else {
		/* a reload may add zones: look again later */
		struct timeval tv = { (time_t)(c->dnsbl_probe_ms / 1000), 0 };
		evtimer_add(ev_probe, &tv);
	}

	for (int i = 0; i < nworkers; i++)
		if (pthread_create(&moatd.workers[i].thread, NULL, worker_main, &moatd.workers[i]) != 0)
			fatal("pthread_create failed");
	{
		char list[CONF_LISTEN_MAX * 82] = "";
		size_t n = 0;
		for (int j = 0; j < c->nlisten && n < sizeof(list); j++)
			n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", j ? "," : "",
			    c->listen[j].text);
		log_msg(LOG_L_INFO, 0, "ready listen=%s workers=%d upstream=%s identity=%s resolver=%s "
		    "dnsbl-zones=%d", list, nworkers, c->upstream.text, conf_identity_name(c->identity),
		    dns_mode_name(c->resolver.mode), c->dnsbl ? c->dnsbl->n : 0);
	}

	/* the main loop ends when every worker has ended */
	while (true) {
		event_base_loop(main_base, EVLOOP_ONCE);
		if (!__atomic_load_n(&moatd.draining, __ATOMIC_RELAXED))
			continue;
		bool all_done = true;
		for (int i = 0; i < nworkers; i++)
			if (!__atomic_load_n(&moatd.workers[i].done, __ATOMIC_ACQUIRE))
				all_done = false;
		if (all_done)
			break;
	}
	for (int i = 0; i < nworkers; i++)
		pthread_join(moatd.workers[i].thread, NULL);
	workq_free(moatd.workq);	/* finishes its jobs: no session is left */
	for (int i = 0; i < nworkers; i++)
		workq_loop_free(moatd.workers[i].wq);
	/* no loop runs any more: queries still out are dropped, their
	 * callers told "shutdown" */
	dns_shutdown();
	for (int i = 0; i < nworkers; i++)
		dns_loop_free(moatd.workers[i].dns);
	dns_loop_free(main_dns);
	event_free(ev_probe);
	for (int i = 0; i < nworkers; i++)
		greylist_free(moatd.workers[i].gl);
	store_save();
	if (moatd.glstore != NULL)
		glstore_close(moatd.glstore);
	if (moatd.dkim != NULL)
		dkimv_free(moatd.dkim);
	if (moatd.psl != NULL)
		dmarc_psl_free(moatd.psl);
	event_free(ev_save);
	control_close();
	for (int i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_free(ev_drain_timer);
	event_free(ev_drain_tick);
	event_base_free(main_base);
	for (int i = 0; i < nworkers; i++) {
		struct worker *w = &moatd.workers[i];
		for (int j = 0; j < w->nlev; j++)
			evconnlistener_free(w->lev[j]);
		event_free(w->ev_wake);
		close(w->wake_fd);
		event_base_free(w->base);
	}
	free(moatd.workers);
	log_msg(LOG_L_INFO, 0, "stopped");
	conf_unref(moatd.conf);
	return 0;
}
