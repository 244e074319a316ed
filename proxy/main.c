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
 *	what is left (except a session whose message went upstream: it
 *	waits for the answer, bounded by upstream-timeout) and exit 0.
 *	SIGPIPE is ignored. moatd stays in the foreground: a service
 *	manager runs it. Under systemd (Type=notify,
 *	$NOTIFY_SOCKET) it says READY=1 once listening with the policy
 *	loaded, RELOADING=1 then READY=1 around a SIGHUP reload, and
 *	STOPPING=1 when the drain begins; without systemd these do nothing.
 */
#include <errno.h>
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
#include <systemd/sd-daemon.h>

#include "conf.h"
#include "conf_reload.h"
#include "dns.h"
#include "dnsbl.h"
#include "engine.h"
#include "log.h"
#include "moatd.h"
#include "rules.h"
#include "session.h"
#include "tls.h"
#include "upstream.h"
#include "xalloc.h"

/* the process's state: main.c's alone (moatd.h) */
static struct moatd_state {
	pthread_mutex_t conf_lock;
	struct conf *conf;		/* current; under conf_lock */
	struct worker *workers;
	int nworkers;
	uint64_t next_sid;		/* atomic */
	bool draining;			/* atomic */
} moatd = { .conf_lock = PTHREAD_MUTEX_INITIALIZER };

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

/* moatd_worker_idle - a session or an upstream goodbye of w ended: when
 * w drains and nothing is left, its loop is woken to end (in w's thread) */
void
moatd_worker_idle(struct worker *w)
{
	if (w->draining && w->nsessions == 0 && w->nclosers == 0 && w->npdels == 0)
		event_active(w->ev_wake, EV_READ, 0);
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
		pdel_drain(w);
		for (s = w->sessions; s; s = next) {
			next = s->next;
			sess_drain(s);
		}
	}
	if (w->stopping) {
		pdel_close_all(w);
		for (s = w->sessions; s; s = next) {
			next = s->next;
			if (!s->closing && ups_dot_pending(s->ups)) {
				/* the message went upstream: closing now could
				 * deliver it unanswered, and the client would
				 * send it again. It waits for the upstream's
				 * answer (bounded by upstream-timeout), relays
				 * it, then gets 421 (sess_flush()). */
				if (!s->drain_waits)
					log_msg(LOG_L_INFO, s->id, "shutdown session=waiting-upstream");
				s->drain_waits = true;
				continue;
			}
			sess_close(s, "shutdown");
		}
	}
	if (w->stopping)
		ups_closers_free(w);
	if ((w->draining && w->nsessions == 0 && w->nclosers == 0 && w->npdels == 0) ||
	    (w->stopping && w->sessions == NULL && w->pdels == NULL))
		event_base_loopexit(w->base, NULL);
}

/* worker_main - one event loop */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->base);
	ppin_free_all(w);	/* PROXY protocol headers still awaited */
	ups_pool_drain(w);
	/* stopped while goodbyes were still pending: close them now */
	ups_closers_free(w);
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
	    sizeof(n->listen[0]) * (size_t)n->nlisten) != 0 || n->workers != old->workers ||
	    n->listen_backlog != old->listen_backlog)
		log_msg(LOG_L_WARN, 0, "reload: listen, listen-backlog and workers changes "
		    "take effect at restart");
}

/* signal_cb - SIGTERM/SIGINT drain, SIGHUP reload */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGHUP) {
		/* systemd (Type=notify): reloading, then ready again */
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		    (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000);
		(void)conf_reload(conf_path, &moatd.conf_lock, &moatd.conf, tls_conf_setup,
		    listen_warning);
		sd_notify(0, "READY=1");
		return;
	}
	if (__atomic_load_n(&moatd.draining, __ATOMIC_RELAXED)) {
		drain_timer_cb(-1, 0, NULL);
		return;
	}
	log_msg(LOG_L_INFO, 0, "shutdown signal=%d sessions=%u drain-timeout=%llums", (int)sig,
	    clients_sessions(),
	    (unsigned long long)moatd.conf->drain_ms);
	__atomic_store_n(&moatd.draining, true, __ATOMIC_RELAXED);
	sd_notify(0, "STOPPING=1");
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

/* fd_limits - raise RLIMIT_NOFILE and derive the session cap (returned)
 *
 * An idle session holds one descriptor; from its first MAIL on it holds a
 * second one (the upstream), and a third while a big message is spooled to
 * a file. Sessions are capped at one descriptor each (less a reserve), so
 * that idle and slow clients can be held in numbers; a session that then
 * cannot open its upstream or spool file gets a 4xx, never a crash. The
 * warning says when max-sessions busy sessions would not fit. */
static unsigned
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
	return cap > 0xffffffffu ? 0xffffffffu : (unsigned)cap;
}

int
main(int argc, char **argv)
{
	struct conf *c;
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
	c = conf_load_report(conf_path);
	if (c == NULL)
		return 1;
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
		/* what the policy needs from outside: warnings, not errors */
		engine_startup_checks(c, true, true);
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
	clients_init(fd_limits(c));

	nworkers = (int)c->workers;
	if (nworkers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		nworkers = n > 0 ? (int)(n > 64 ? 64 : n) : 1;
	}
	moatd.nworkers = nworkers;
	{
		/* the engine's services: resolver, pool, DKIM, PSL, the store */
		struct engine_opts eo = { .who = "moatd" };
		char err[512] = "";

		if (engine_init(c, &eo, err, sizeof(err)) != 0)
			fatal("%s", err);
		if (c->startup_checks)
			engine_startup_checks(c, true, false);
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
		w->eng = engine_loop_new(w->base, c);
		event_add(w->ev_wake, NULL);
		for (int j = 0; j < c->nlisten; j++) {
			char err[256];
			int fd = listen_open(&c->listen[j], listen_backlog(c), i == 0, err,
			    sizeof(err));
			if (fd < 0)
				fatal("%s", err);
			listen_attach(w, fd);
		}
	}
	main_base = event_base_new();
	if (main_base == NULL)
		fatal("event_base_new failed");
	if (c->control_socket != NULL) {
		const struct control_info ci = { "moatd", true, moatd_conf_get };
		char err[512];

		if (control_open(main_base, c->control_socket, &ci, err, sizeof(err)) != 0)
			fatal("%s", err);
	}
	{
		char err[512];

		if (engine_metrics_open(main_base, c, err, sizeof(err)) != 0)
			fatal("%s", err);
		if (engine_drop_privileges(c, "moatd", err, sizeof(err)) != 0)
			fatal("%s", err);
	}

	struct event *sigs[3] = {
		evsignal_new(main_base, SIGTERM, signal_cb, NULL),
		evsignal_new(main_base, SIGINT, signal_cb, NULL),
		evsignal_new(main_base, SIGHUP, signal_cb, NULL),
	};
	for (int i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);
	ev_drain_timer = evtimer_new(main_base, drain_timer_cb, NULL);
	ev_drain_tick = event_new(main_base, -1, EV_PERSIST, drain_tick_cb, NULL);
	engine_timers_start(main_base, moatd_conf_get);	/* DNSBL probes, the store's save */

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
		/* systemd (Type=notify): listening, policy loaded, user dropped */
		sd_notify(0, "READY=1");
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
	engine_timers_stop();
	engine_shutdown();	/* the pool's jobs, the resolver, the loops' parts, the store */
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
