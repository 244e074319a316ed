/*
 * test_redis - greylisting through a real redis-server (and redis-sentinel)
 * on loopback ports picked here: the lifecycle through the Lua script
 * (and the same table through the embedded store, for parity), one round
 * trip per decision (INFO commandstats), SCRIPT FLUSH and a restart
 * (NOSCRIPT), Redis down at start, stopped, SIGSTOP'd (GL_ERROR within the
 * deadline, recovery with the same client), an error reply, and a
 * Sentinel failover that the client follows, keeping the state.
 *
 * Every process started here is stopped here, by its PID; every wait is
 * bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "greylist.h"
#include "log.h"
#include "redis.h"
#include "t.h"

#define T0		1700000000LL
#define TIMEOUT_MS	300		/* redis-timeout in these tests */
#define SLACK_MS	150		/* scheduling slack on a busy (ASan) host */
#define PROC_MAX	8

static char tmpdir[64];
static struct event_base *base;
static pid_t procs[PROC_MAX];
static int64_t fake_now = T0;

/* ---- processes ---- */

/* mono_ms - a monotonic clock */
static long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* free_port - a loopback port nobody listens on right now */
static int
free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* scmd - one command on a fresh blocking connection; NULL on failure */
static redisReply *
scmd(int port, const char *fmt, ...)
{
	struct timeval tv = { 2, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *r;
	va_list ap;

	if (c == NULL || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	redisFree(c);
	return r;
}

/* ping_ok - the server answers PING */
static int
ping_ok(int port)
{
	redisReply *r = scmd(port, "PING");
	int ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;

	if (r)
		freeReplyObject(r);
	return ok;
}

/* spawn - start a program with its output in tmpdir/NAME.log; its PID */
static pid_t
spawn(const char *name, char *const argv[])
{
	char logf[128];
	pid_t pid;

	snprintf(logf, sizeof(logf), "%s/%s.log", tmpdir, name);
	pid = fork();
	if (pid == 0) {
		int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0600);

		/* should this test die without stopping it, it goes too */
		prctl(PR_SET_PDEATHSIG, SIGKILL);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	for (int i = 0; pid > 0 && i < PROC_MAX; i++)
		if (procs[i] == 0) {
			procs[i] = pid;
			break;
		}
	return pid;
}

/* stop - end a process we started, by its PID, and reap it (bounded) */
static void
stop(pid_t pid)
{
	int st;

	if (pid <= 0)
		return;
	kill(pid, SIGCONT);
	kill(pid, SIGTERM);
	for (int i = 0; i < 300; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			goto reaped;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
reaped:
	for (int i = 0; i < PROC_MAX; i++)
		if (procs[i] == pid)
			procs[i] = 0;
}

/* stop_all - whatever is still running at exit */
static void
stop_all(void)
{
	for (int i = 0; i < PROC_MAX; i++)
		stop(procs[i]);
}

/* redis_start - a redis-server on port (a replica of master when > 0) */
static pid_t
redis_start(int port, int master)
{
	char p[16], m[16], name[32];
	char *argv[24];
	int n = 0;
	pid_t pid;

	snprintf(p, sizeof(p), "%d", port);
	snprintf(m, sizeof(m), "%d", master);
	snprintf(name, sizeof(name), "redis-%d", port);
	argv[n++] = (char *)"redis-server";
	argv[n++] = (char *)"--port";
	argv[n++] = p;
	argv[n++] = (char *)"--bind";
	argv[n++] = (char *)"127.0.0.1";
	argv[n++] = (char *)"--save";
	argv[n++] = (char *)"";
	argv[n++] = (char *)"--appendonly";
	argv[n++] = (char *)"no";
	argv[n++] = (char *)"--dir";
	argv[n++] = tmpdir;
	argv[n++] = (char *)"--dbfilename";
	argv[n++] = name;
	if (master > 0) {
		argv[n++] = (char *)"--replicaof";
		argv[n++] = (char *)"127.0.0.1";
		argv[n++] = m;
	}
	argv[n] = NULL;
	pid = spawn(name, argv);
	for (int i = 0; i < 500 && !ping_ok(port); i++)
		usleep(10000);
	return pid;
}

/* ---- decisions ---- */

struct wait {
	int done;
	struct greylist_verdict v;
	char why[GREYLIST_WHY_MAX];
	bool skipped;			/* limits: the triplet was not decided */
	uint32_t exceeded;		/* limits: those exceeded */
	bool lerr;			/* limits: the call failed */
};

/* decide() asks greylist_check_limits() with these when set */
static const struct greylist_limits *decide_limits;

static void
wait_limits_cb(void *ctx, uint64_t tag, uint32_t ex, const char *err,
	const struct greylist_verdict *v)
{
	struct wait *w = ctx;

	(void)tag;
	w->done = 1;
	w->exceeded = ex;
	w->lerr = err != NULL;
	w->skipped = v == NULL;
	if (v != NULL) {
		w->v = *v;
		snprintf(w->why, sizeof(w->why), "%s", v->why);
		w->v.why = w->why;
		w->v.key = "";
	}
}

static void
wait_cb(void *ctx, uint64_t tag, const struct greylist_verdict *v)
{
	struct wait *w = ctx;

	(void)tag;
	w->done = 1;
	w->v = *v;
	snprintf(w->why, sizeof(w->why), "%s", v->why);
	w->v.why = w->why;
	w->v.key = "";
}

static int guard_fired;

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	guard_fired = 1;
}

static int64_t
clock_cb(void *arg)
{
	(void)arg;
	return fake_now;
}

/* decide - one decision, waited for (bounded); its time in *ms */
static int
decide(struct greylist *g, const char *ip, const char *rcpt, struct wait *w, long *ms)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct greylist_triplet t = { (const struct sockaddr *)&ss, "s@y.org", rcpt, NULL, NULL };
	struct timeval five = { 5, 0 };
	struct event *guard;
	long start = mono_ms();

	memset(&ss, 0, sizeof(ss));
	s4->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &s4->sin_addr);
	memset(w, 0, sizeof(*w));
	if (decide_limits != NULL ? greylist_check_limits(g, &t, decide_limits, wait_limits_cb, w,
	    7) != 0 : greylist_check(g, &t, wait_cb, w, 7) != 0)
		return -1;
	if (w->done)
		return -1;		/* called back too early */
	guard_fired = 0;
	guard = evtimer_new(base, guard_cb, NULL);
	evtimer_add(guard, &five);
	while (!w->done && !guard_fired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(guard);
	if (ms)
		*ms = mono_ms() - start;
	return w->done ? 0 : -1;
}

/* run_for - let the loop run for ms */
static void
run_for(long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* until_ok - probe until a decision succeeds; ms it took, or -1 */
static long
until_ok(struct greylist *g, long max_ms)
{
	long start = mono_ms();
	struct wait w;

	while (mono_ms() - start < max_ms) {
		if (decide(g, "203.0.113.1", "probe@x.org", &w, NULL) == 0 &&
		    w.v.status != GL_ERROR)
			return mono_ms() - start;
		run_for(20);
	}
	return -1;
}

/* test_conf - settings for a server on port */
static void
test_conf(struct greylist_conf *c, int port, const char *prefix)
{
	char addr[32], why[128];
	const char *w[1] = { addr };

	greylist_conf_init(c);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	if (greylist_conf_set(c, "redis", w, 1, why, sizeof(why)) != 1)
		fprintf(stderr, "redis setting: %s\n", why);
	snprintf(c->prefix, sizeof(c->prefix), "%s", prefix);
	c->redis.timeout_ms = TIMEOUT_MS;
	c->redis.connect_timeout_ms = 500;
	c->redis.backoff_min_ms = 50;
	c->redis.backoff_max_ms = 400;
	c->delay = 10;
	c->window = 100;
	c->lifetime = 1000;
	c->allow_after = 2;
	c->allow_lifetime = 5000;
	c->cache = 0;		/* every decision asks Redis; test_cache turns it on */
}

/* cmdstat - calls of one command, as INFO commandstats names it */
static long long
cmdstat(int port, const char *name)
{
	redisReply *r = scmd(port, "INFO commandstats");
	long long total = 0;
	char pat[64];
	const char *p;

	if (r == NULL || r->type != REDIS_REPLY_STRING) {
		if (r)
			freeReplyObject(r);
		return -1;
	}
	snprintf(pat, sizeof(pat), "cmdstat_%s:calls=", name);
	p = strstr(r->str, pat);
	total = p ? atoll(p + strlen(pat)) : 0;
	freeReplyObject(r);
	return total;
}

/* monitor_open - a connection in MONITOR mode, or NULL */
static redisContext *
monitor_open(int port)
{
	struct timeval tv = { 2, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *r;

	if (c == NULL || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	r = redisCommand(c, "MONITOR");
	if (r == NULL || r->type != REDIS_REPLY_STATUS) {
		if (r)
			freeReplyObject(r);
		redisFree(c);
		return NULL;
	}
	freeReplyObject(r);
	return c;
}

/* monitor_count - what MONITOR saw: commands sent by clients (not those a
 * script ran), and how many of them were EVALSHA; closes c */
static void
monitor_count(redisContext *c, int *client_cmds, int *evalsha)
{
	struct timeval tv = { 0, 300000 };
	void *reply;

	*client_cmds = *evalsha = 0;
	if (c == NULL)
		return;
	redisSetTimeout(c, tv);
	for (int i = 0; i < 100000 && redisGetReply(c, &reply) == REDIS_OK; i++) {
		redisReply *r = reply;

		if (r->type == REDIS_REPLY_STATUS && strstr(r->str, " lua]") == NULL) {
			(*client_cmds)++;
			if (strcasestr(r->str, "\"evalsha\"") != NULL)
				(*evalsha)++;
		}
		freeReplyObject(r);
	}
	redisFree(c);
}

/* ---- the lifecycle table (the same as test_greylist.c's) ---- */

struct lc_step {
	int64_t at;
	const char *ip, *rcpt;
	enum gl_status status;
	enum gl_reason reason;
	unsigned retry_in, passes;
};

static const struct lc_step lifecycle[] = {
	{ 0, "192.0.2.10", "r1@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },
	{ 4, "192.0.2.10", "r1@x.org", GL_GREYLISTED, GL_R_EARLY, 6, 0 },
	{ 10, "192.0.2.10", "r1@x.org", GL_PASS, GL_R_RETRIED, 0, 1 },
	{ 11, "192.0.2.10", "r1@x.org", GL_PASS, GL_R_KNOWN, 0, 1 },
	{ 12, "192.0.2.10", "r2@x.org", GL_GREYLISTED, GL_R_NEW, 10, 1 },
	{ 12, "192.0.2.99", "r2@x.org", GL_GREYLISTED, GL_R_EARLY, 10, 1 },
	{ 22, "192.0.2.200", "r2@x.org", GL_PASS, GL_R_NOW_ALLOWLISTED, 0, 2 },
	{ 23, "192.0.2.10", "r3@x.org", GL_ALLOWLISTED, GL_R_ALLOWLISTED, 0, 2 },
	{ 30, "198.51.100.7", "r4@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },
	{ 200, "198.51.100.7", "r4@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },
	{ 210, "198.51.100.7", "r4@x.org", GL_PASS, GL_R_RETRIED, 0, 1 },
	{ 5100, "192.0.2.10", "r3@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },
	{ 5101, "192.0.2.10", "r1@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },
};

/* lc_step_check - one step's verdict through g */
static void
lc_step_check(struct greylist *g, const struct lc_step *st, const char *what, size_t i)
{
	struct wait w;

	T_CHECKF(decide(g, st->ip, st->rcpt, &w, NULL) == 0, "%s step %zu", what, i);
	T_CHECKF(w.v.status == st->status && w.v.reason == st->reason &&
	    w.v.retry_in == st->retry_in && w.v.passes == st->passes,
	    "%s step %zu: %s/%s retry %u passes %u %s", what, i,
	    greylist_status_name(w.v.status), greylist_reason_name(w.v.reason),
	    w.v.retry_in, w.v.passes, w.why);
}

/* run_lifecycle - the table through one handle; before each step the
 * read-only handle pk (greylist_new_peek) must foresee the same verdict,
 * and the step's own verdict shows it changed nothing */
static void
run_lifecycle(struct greylist *g, struct greylist *pk, const char *what)
{
	char peek[64];

	snprintf(peek, sizeof(peek), "%s read-only", what);
	for (size_t i = 0; i < sizeof(lifecycle) / sizeof(lifecycle[0]); i++) {
		fake_now = T0 + lifecycle[i].at;
		lc_step_check(pk, &lifecycle[i], peek, i);
		lc_step_check(g, &lifecycle[i], what, i);
	}
}

static int port1;
static pid_t pid1;

static void
test_lifecycle_both_backends(void)
{
	struct greylist_conf c;
	struct greylist *g, *pk;
	struct glstore *s;
	redisReply *r;

	test_conf(&c, port1, "lc:");
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	pk = greylist_new_peek(base, &c, NULL);
	greylist_set_clock(pk, clock_cb, NULL);
	fake_now = T0 - 100;
	T_CHECK(until_ok(g, 3000) >= 0);
	T_CHECK(until_ok(pk, 3000) >= 0);
	run_lifecycle(g, pk, "redis");
	r = scmd(port1, "HGET %s p", "lc:t:{192.0.2.0/24}|s@y.org|r2@x.org");
	T_CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "1") == 0);
	if (r)
		freeReplyObject(r);
	r = scmd(port1, "TTL %s", "lc:c:{192.0.2.0/24}");
	T_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 4000 && r->integer <= 5000);
	if (r)
		freeReplyObject(r);
	greylist_free(g);
	greylist_free(pk);

	/* parity: the same table through the embedded store */
	c.redis.server.host[0] = '\0';
	s = glstore_open(NULL, 1000, T0, NULL, 0);
	g = greylist_new(base, &c, s);
	greylist_set_clock(g, clock_cb, NULL);
	pk = greylist_new_peek(base, &c, s);
	greylist_set_clock(pk, clock_cb, NULL);
	run_lifecycle(g, pk, "embedded");
	greylist_free(g);
	greylist_free(pk);
	glstore_close(s);
}

/* test_limits_combined - the limits and the triplet in one EVALSHA of
 * the combined script: the lifecycle table gives the same verdicts (its
 * greylist part is the deciding script's own code); a limit that is
 * exceeded where the table says so leaves the triplet alone; the keys
 * take redis-prefix; -NOSCRIPT falls back to EVAL once */
static void
test_limits_combined(void)
{
	struct greylist_conf c;
	struct greylist *g;
	struct wait w;
	redisReply *r;
	const char *keys[2] = { "a|192.0.2.0/24", "b|s@y.org" };
	unsigned emit[2] = { 1, 1000000 }, tau[2] = { 1000000000, 1000000 }, cost[2] = { 1, 1 };
	struct greylist_limits l = { 2, keys, emit, tau, cost, "1111" };
	long long e0, e1, x0;

	test_conf(&c, port1, "cl:");
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	fake_now = T0 - 100;
	T_CHECK(until_ok(g, 3000) >= 0);
	/* limit a never runs out; limit b allows one, then one per 1000 s */
	e0 = cmdstat(port1, "evalsha");
	decide_limits = &l;
	for (size_t i = 0; i < sizeof(lifecycle) / sizeof(lifecycle[0]); i++) {
		fake_now = T0 + lifecycle[i].at;
		lc_step_check(g, &lifecycle[i], "limits+greylist", i);
	}
	decide_limits = NULL;
	e1 = cmdstat(port1, "evalsha");
	T_CHECKF(e1 - e0 == (long long)(sizeof(lifecycle) / sizeof(lifecycle[0])),
	    "%lld EVALSHA", e1 - e0);
	r = scmd(port1, "EXISTS %s %s", "cl:rl:a|192.0.2.0/24", "cl:rl:b|s@y.org");
	T_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 2);
	if (r)
		freeReplyObject(r);
	/* b is spent (13 decisions): with "decide only when none is
	 * exceeded" the triplet is not asked and not recorded */
	l.when = "1000";
	decide_limits = &l;
	fake_now = T0 + 6000;
	T_CHECK(decide(g, "198.51.100.50", "new@x.org", &w, NULL) == 0);
	T_CHECKF(w.skipped && w.exceeded == 2 && !w.lerr, "skipped %d exceeded %u",
	    (int)w.skipped, w.exceeded);
	r = scmd(port1, "EXISTS %s", "cl:t:{198.51.100.0/24}|s@y.org|new@x.org");
	T_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
	if (r)
		freeReplyObject(r);
	/* "whatever the limits say": decided and recorded */
	l.when = "1111";
	T_CHECK(decide(g, "198.51.100.50", "new@x.org", &w, NULL) == 0);
	T_CHECKF(!w.skipped && w.exceeded == 2 && w.v.status == GL_GREYLISTED &&
	    w.v.reason == GL_R_NEW, "skipped %d %s", (int)w.skipped,
	    greylist_status_name(w.v.status));
	/* a table that does not fit is refused at once */
	l.when = "11";
	T_CHECK(greylist_check_limits(g, NULL, &l, wait_limits_cb, &w, 1) == -1);
	l.when = "1111";
	/* -NOSCRIPT: the same call once as EVAL */
	r = scmd(port1, "SCRIPT FLUSH");
	if (r)
		freeReplyObject(r);
	x0 = cmdstat(port1, "eval");
	T_CHECK(decide(g, "198.51.100.50", "new2@x.org", &w, NULL) == 0);
	T_CHECKF(!w.skipped && !w.lerr && w.v.status == GL_GREYLISTED, "%s %s",
	    greylist_status_name(w.v.status), w.why);
	T_CHECKF(cmdstat(port1, "eval") - x0 == 1, "%lld EVAL", cmdstat(port1, "eval") - x0);
	decide_limits = NULL;
	greylist_free(g);
}

static void
test_one_round_trip(void)
{
	struct greylist_conf c;
	struct greylist *g;
	long long ev0, ev1;
	struct wait w;
	char rcpt[32];
	int n = 200, ok = 0, sent, evalsha;
	long worst = 0, ms;
	redisContext *mon;

	test_conf(&c, port1, "rt:");
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	fake_now = T0;
	T_CHECK(until_ok(g, 3000) >= 0);
	ev0 = cmdstat(port1, "evalsha");
	mon = monitor_open(port1);
	T_CHECK(mon != NULL);
	for (int i = 0; i < n; i++) {
		snprintf(rcpt, sizeof(rcpt), "r%d@x.org", i % 50);	/* new and known */
		fake_now = T0 + i;
		if (decide(g, "192.0.2.1", rcpt, &w, &ms) == 0 && w.v.status != GL_ERROR)
			ok++;
		if (ms > worst)
			worst = ms;
	}
	monitor_count(mon, &sent, &evalsha);
	ev1 = cmdstat(port1, "evalsha");
	T_CHECKF(ok == n, "%d of %d decided", ok, n);
	T_CHECKF(sent == n && evalsha == n && ev1 - ev0 == n, "MONITOR: %d commands, %d EVALSHA; "
	    "commandstats: %lld EVALSHA; for %d decisions", sent, evalsha, ev1 - ev0, n);
	printf("test_redis: %d decisions, %d commands seen by MONITOR, all EVALSHA (%.2f round "
	    "trips per decision), slowest %ld ms\n", n, sent, (double)sent / n, worst);
	greylist_free(g);
}

/* test_cache - greylist-cache: passes answered locally, the rest by Redis */
static void
test_cache(void)
{
	struct greylist_conf c;
	struct greylist *g;
	struct greylist_counters k0, k1;
	struct wait w;
	long long e0;

	test_conf(&c, port1, "gc:");
	c.cache = 30;
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	fake_now = T0;
	T_CHECK(until_ok(g, 3000) >= 0);
	greylist_counters(&k0);
	e0 = cmdstat(port1, "evalsha");
	/* new, then retried too early: greylisted answers are never remembered */
	T_CHECK(decide(g, "192.0.2.7", "a@x.org", &w, NULL) == 0 && w.v.status == GL_GREYLISTED &&
	    w.v.reason == GL_R_NEW);
	T_CHECK(decide(g, "192.0.2.7", "a@x.org", &w, NULL) == 0 && w.v.status == GL_GREYLISTED &&
	    w.v.reason == GL_R_EARLY);
	T_CHECKF(cmdstat(port1, "evalsha") - e0 == 2, "%lld", cmdstat(port1, "evalsha") - e0);
	/* the retry passes through Redis; the next ones come from memory */
	fake_now = T0 + 11;
	T_CHECK(decide(g, "192.0.2.7", "a@x.org", &w, NULL) == 0 && w.v.status == GL_PASS &&
	    w.v.reason == GL_R_RETRIED && w.v.passes == 1);
	for (int i = 0; i < 5; i++) {
		fake_now = T0 + 12 + i;
		T_CHECK(decide(g, "192.0.2.7", "a@x.org", &w, NULL) == 0 &&
		    w.v.status == GL_PASS && w.v.reason == GL_R_KNOWN && w.v.passes == 1);
	}
	T_CHECKF(cmdstat(port1, "evalsha") - e0 == 3, "%lld", cmdstat(port1, "evalsha") - e0);
	/* another address of the same /24 shares the triplet's key */
	T_CHECK(decide(g, "192.0.2.8", "a@x.org", &w, NULL) == 0 && w.v.status == GL_PASS);
	T_CHECK(cmdstat(port1, "evalsha") - e0 == 3);
	/* past greylist-cache, Redis is asked again (and refreshes its record) */
	fake_now = T0 + 11 + 30;
	T_CHECK(decide(g, "192.0.2.7", "a@x.org", &w, NULL) == 0 && w.v.status == GL_PASS &&
	    w.v.reason == GL_R_KNOWN);
	T_CHECK(cmdstat(port1, "evalsha") - e0 == 4);
	/* a second triplet passing makes the client allowlisted (allow_after 2):
	 * then any recipient passes from memory */
	T_CHECK(decide(g, "192.0.2.7", "b@x.org", &w, NULL) == 0 && w.v.status == GL_GREYLISTED);
	fake_now += 11;
	T_CHECK(decide(g, "192.0.2.7", "b@x.org", &w, NULL) == 0 && w.v.status == GL_PASS &&
	    w.v.reason == GL_R_NOW_ALLOWLISTED && w.v.passes == 2);
	T_CHECK(decide(g, "192.0.2.7", "new@x.org", &w, NULL) == 0 &&
	    w.v.status == GL_ALLOWLISTED && w.v.passes == 2);
	{
		/* the same, at once; a client the memory does not hold needs Redis */
		struct sockaddr_storage ss;
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		struct greylist_triplet t = { (const struct sockaddr *)&ss, "s@y.org", "other@x.org",
		    NULL, NULL };
		struct greylist_verdict v;

		memset(&ss, 0, sizeof(ss));
		s4->sin_family = AF_INET;
		inet_pton(AF_INET, "192.0.2.7", &s4->sin_addr);
		T_CHECK(greylist_decide_now(g, &t, &v) == 1 && v.status == GL_ALLOWLISTED &&
		    v.cached && v.passes == 2);
		inet_pton(AF_INET, "198.51.100.7", &s4->sin_addr);
		T_CHECK(greylist_decide_now(g, &t, &v) == 0);
	}
	T_CHECKF(cmdstat(port1, "evalsha") - e0 == 6, "%lld", cmdstat(port1, "evalsha") - e0);
	greylist_counters(&k1);
	T_CHECKF(k1.cached - k0.cached == 8, "cached %llu",
	    (unsigned long long)(k1.cached - k0.cached));
	T_CHECK(k1.checks - k0.checks == 14);
	greylist_free(g);
}

static void
test_noscript(void)
{
	struct greylist_conf c;
	struct greylist *g;
	struct wait w;
	redisReply *r;
	long long e0, e1, e2;

	test_conf(&c, port1, "ns:");
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	fake_now = T0;
	T_CHECK(until_ok(g, 3000) >= 0);
	r = scmd(port1, "SCRIPT FLUSH");
	T_CHECK(r && r->type == REDIS_REPLY_STATUS);
	if (r)
		freeReplyObject(r);
	e0 = cmdstat(port1, "eval");
	T_CHECK(decide(g, "192.0.2.1", "a@x.org", &w, NULL) == 0);
	T_CHECKF(w.v.status == GL_GREYLISTED && w.v.reason == GL_R_NEW, "%s %s",
	    greylist_status_name(w.v.status), w.why);
	e1 = cmdstat(port1, "eval");
	T_CHECKF(e1 - e0 == 1, "EVAL after NOSCRIPT: %lld", e1 - e0);
	/* EVAL cached the script again: back to EVALSHA alone */
	T_CHECK(decide(g, "192.0.2.1", "a@x.org", &w, NULL) == 0 && w.v.status == GL_GREYLISTED);
	e2 = cmdstat(port1, "eval");
	T_CHECKF(e2 == e1, "EVAL again: %lld", e2 - e1);
	greylist_free(g);
}

static void
test_stopped_and_restarted(void)
{
	struct greylist_conf c;
	struct greylist *g;
	struct greylist_counters k0, k1;
	struct wait w;
	long ms, worst = 0, rec;
	int errors = 0;

	test_conf(&c, port1, "rs:");
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	T_CHECK(until_ok(g, 3000) >= 0);
	greylist_counters(&k0);
	stop(pid1);
	pid1 = 0;
	for (int i = 0; i < 10; i++) {
		T_CHECK(decide(g, "192.0.2.1", "a@x.org", &w, &ms) == 0);
		if (w.v.status == GL_ERROR)
			errors++;
		if (ms > worst)
			worst = ms;
		run_for(30);
	}
	T_CHECKF(errors == 10, "%d errors", errors);
	T_CHECKF(worst <= TIMEOUT_MS + SLACK_MS, "a decision took %ld ms", worst);
	greylist_counters(&k1);
	T_CHECKF(k1.outages - k0.outages == 1, "outages %llu",
	    (unsigned long long)(k1.outages - k0.outages));
	T_CHECK(k1.errors - k0.errors >= 10);

	/* back on the same port: the same handle recovers, script loaded on connect */
	pid1 = redis_start(port1, 0);
	rec = until_ok(g, 5000);
	T_CHECKF(rec >= 0, "no recovery");
	T_CHECK(cmdstat(port1, "script|load") >= 1);
	T_CHECK(decide(g, "192.0.2.1", "b@x.org", &w, NULL) == 0 && w.v.status == GL_GREYLISTED);
	T_CHECK(cmdstat(port1, "eval") == 0);		/* no NOSCRIPT after a restart */
	printf("test_redis: redis stopped: %d of 10 decisions GL_ERROR, slowest %ld ms "
	    "(deadline %d ms); restarted: recovered in %ld ms\n", errors, worst, TIMEOUT_MS, rec);
	greylist_free(g);
}

/* open_fds - descriptors this process has open */
static int
open_fds(void)
{
	char p[64];
	int n = 0;

	for (int fd = 0; fd < 1024; fd++) {
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		if (access(p, F_OK) == 0)
			n++;
	}
	return n;
}

static int burst_done, burst_errors;

static void
burst_cb(void *ctx, uint64_t tag, const struct greylist_verdict *v)
{
	(void)ctx;
	(void)tag;
	burst_done++;
	if (v->status == GL_ERROR)
		burst_errors++;
}

static void
test_sigstop(void)
{
	struct greylist_conf c;
	struct greylist *g;
	struct wait w;
	long ms, worst = 0, rec, t0;
	int errors = 0, fds0, fds1, accepted = 0, refused = 0;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct greylist_triplet t = { (const struct sockaddr *)&sin, "s@y.org", "b@x.org", NULL,
	    NULL };

	test_conf(&c, port1, "st:");
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	T_CHECK(until_ok(g, 3000) >= 0);
	fds0 = open_fds();
	kill(pid1, SIGSTOP);

	/* a burst: pending decisions are bounded, and all end within the deadline */
	sin.sin_addr.s_addr = htonl(0xc0000201);
	burst_done = burst_errors = 0;
	for (int i = 0; i < GREYLIST_PENDING_MAX + 100; i++) {
		if (greylist_check(g, &t, burst_cb, NULL, (uint64_t)i) == 0)
			accepted++;
		else
			refused++;
	}
	T_CHECKF(accepted == GREYLIST_PENDING_MAX && refused == 100, "%d accepted, %d refused",
	    accepted, refused);
	t0 = mono_ms();
	for (int i = 0; i < 1000 && burst_done < accepted; i++)
		event_base_loop(base, EVLOOP_ONCE);
	T_CHECKF(burst_done == accepted && burst_errors == accepted, "%d done, %d errors",
	    burst_done, burst_errors);
	T_CHECKF(mono_ms() - t0 <= TIMEOUT_MS + SLACK_MS, "the burst took %ld ms",
	    mono_ms() - t0);

	for (int i = 0; i < 6; i++) {
		T_CHECK(decide(g, "192.0.2.1", "a@x.org", &w, &ms) == 0);
		if (w.v.status == GL_ERROR)
			errors++;
		if (ms > worst)
			worst = ms;
		run_for(100);
	}
	T_CHECKF(errors == 6, "%d errors", errors);
	T_CHECKF(worst <= TIMEOUT_MS + SLACK_MS, "a decision took %ld ms", worst);
	kill(pid1, SIGCONT);
	rec = until_ok(g, 5000);
	T_CHECKF(rec >= 0, "no recovery after SIGCONT");
	fds1 = open_fds();
	T_CHECKF(fds1 == fds0, "descriptors %d before, %d after", fds0, fds1);
	printf("test_redis: redis SIGSTOP'd: %d decisions at once: %d refused, the rest "
	    "GL_ERROR within the deadline; then %d of 6 decisions GL_ERROR, slowest %ld ms; "
	    "SIGCONT: recovered in %ld ms, no descriptor leaked\n", accepted + refused, refused,
	    errors, worst, rec);
	greylist_free(g);
}

static void
test_error_reply(void)
{
	struct greylist_conf c;
	struct greylist *g;
	struct wait w;
	redisReply *r;

	test_conf(&c, port1, "wt:");
	g = greylist_new(base, &c, NULL);
	T_CHECK(until_ok(g, 3000) >= 0);
	r = scmd(port1, "SET %s %s", "wt:c:{192.0.2.0/24}", "not a hash");
	if (r)
		freeReplyObject(r);
	T_CHECK(decide(g, "192.0.2.1", "a@x.org", &w, NULL) == 0);
	T_CHECKF(w.v.status == GL_ERROR && strstr(w.why, "WRONGTYPE"), "%s: %s",
	    greylist_status_name(w.v.status), w.why);
	/* an error reply is not an outage of the connection */
	T_CHECK(decide(g, "198.51.100.1", "a@x.org", &w, NULL) == 0 && w.v.status != GL_ERROR);
	greylist_free(g);
}

static void
test_down_at_start(void)
{
	struct greylist_conf c;
	struct greylist *g;
	struct wait w;
	long ms;

	test_conf(&c, free_port(), "ds:");
	g = greylist_new(base, &c, NULL);
	T_CHECK(decide(g, "192.0.2.1", "a@x.org", &w, &ms) == 0);
	T_CHECK(w.v.status == GL_ERROR && ms <= TIMEOUT_MS + SLACK_MS);
	run_for(200);
	T_CHECK(decide(g, "192.0.2.1", "a@x.org", &w, &ms) == 0);
	T_CHECK(w.v.status == GL_ERROR && ms <= TIMEOUT_MS + SLACK_MS);
	greylist_free(g);
}

/* sentinel_master_port - the port the sentinel names for mm, or -1 */
static int
sentinel_master_port(int sport)
{
	redisReply *r = scmd(sport, "SENTINEL get-master-addr-by-name mm");
	int port = -1;

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		port = atoi(r->element[1]->str);
	if (r)
		freeReplyObject(r);
	return port;
}

/* sentinel_knows_replica - the sentinel lists a healthy replica */
static int
sentinel_knows_replica(int sport)
{
	redisReply *r = scmd(sport, "SENTINEL replicas mm");
	int ok = 0;

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1) {
		redisReply *e = r->element[0];

		for (size_t i = 0; e->type == REDIS_REPLY_ARRAY && i + 1 < e->elements; i += 2)
			if (strcmp(e->element[i]->str, "master-link-status") == 0 &&
			    strcmp(e->element[i + 1]->str, "ok") == 0)
				ok = 1;
	}
	if (r)
		freeReplyObject(r);
	return ok;
}

static void
test_sentinel_failover(void)
{
	int pm = free_port(), pr = free_port(), ps = free_port();
	char conf[128], sp[16], addr[32], why[128];
	const char *w[4] = { "sentinel", addr, "master", "mm" };
	pid_t m, rp, sp_pid;
	struct greylist_conf c;
	struct greylist *g;
	struct wait wt;
	redisReply *r;
	FILE *f;
	long t0, rec;
	int i;

	m = redis_start(pm, 0);
	rp = redis_start(pr, pm);
	snprintf(conf, sizeof(conf), "%s/sentinel.conf", tmpdir);
	f = fopen(conf, "w");
	if (f == NULL) {
		T_CHECK(f != NULL);
		return;
	}
	fprintf(f, "port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mm 127.0.0.1 %d 1\n"
	    "sentinel down-after-milliseconds mm 400\nsentinel failover-timeout mm 3000\n",
	    ps, tmpdir, pm);
	fclose(f);
	snprintf(sp, sizeof(sp), "%d", ps);
	{
		char *argv[] = { (char *)"redis-sentinel", conf, NULL };

		sp_pid = spawn("sentinel", argv);
	}
	for (i = 0; i < 1000 && !sentinel_knows_replica(ps); i++)
		usleep(10000);
	T_CHECKF(i < 1000, "the sentinel never saw the replica");

	/* a replica named directly: the script's writes are refused (READONLY) */
	test_conf(&c, pr, "ro:");
	g = greylist_new(base, &c, NULL);
	for (i = 0; i < 100; i++) {
		T_CHECK(decide(g, "192.0.2.1", "ro@x.org", &wt, NULL) == 0);
		if (wt.v.status == GL_ERROR && strstr(wt.why, "READONLY"))
			break;
		run_for(20);
	}
	T_CHECKF(wt.v.status == GL_ERROR && strstr(wt.why, "READONLY"), "%s: %s",
	    greylist_status_name(wt.v.status), wt.why);
	greylist_free(g);

	test_conf(&c, pm, "sf:");
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ps);
	T_CHECK(greylist_conf_set(&c, "redis", w, 4, why, sizeof(why)) == 1);
	g = greylist_new(base, &c, NULL);
	greylist_set_clock(g, clock_cb, NULL);
	fake_now = T0;
	T_CHECK(until_ok(g, 3000) >= 0);
	T_CHECK(decide(g, "192.0.2.1", "f@x.org", &wt, NULL) == 0 &&
	    wt.v.status == GL_GREYLISTED && wt.v.reason == GL_R_NEW);
	r = scmd(pm, "WAIT 1 2000");		/* the replica has it */
	T_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
	if (r)
		freeReplyObject(r);

	/* the master goes away; the sentinel promotes the replica */
	t0 = mono_ms();
	stop(m);
	r = scmd(ps, "SENTINEL FAILOVER mm");
	if (r)
		freeReplyObject(r);
	for (i = 0; i < 1500 && sentinel_master_port(ps) != pr; i++) {
		run_for(10);
		if (i % 50 == 49) {
			r = scmd(ps, "SENTINEL FAILOVER mm");	/* in case it was too early */
			if (r)
				freeReplyObject(r);
		}
	}
	T_CHECKF(sentinel_master_port(ps) == pr, "no failover");
	rec = until_ok(g, 8000);
	T_CHECKF(rec >= 0, "the client did not follow the failover");
	/* the state came along: the retry passes */
	fake_now = T0 + 10;
	T_CHECK(decide(g, "192.0.2.1", "f@x.org", &wt, NULL) == 0);
	T_CHECKF(wt.v.status == GL_PASS && wt.v.reason == GL_R_RETRIED, "%s/%s %s",
	    greylist_status_name(wt.v.status), greylist_reason_name(wt.v.reason), wt.why);
	printf("test_redis: sentinel failover: master stopped, new master in use after "
	    "%ld ms, state kept\n", mono_ms() - t0);
	greylist_free(g);
	stop(sp_pid);
	stop(rp);
}

static void
test_sync_client(void)
{
	struct rds_conf rc;
	redisContext *ctx;
	char err[256];
	const char *w[1];
	char addr[32];

	rds_conf_init(&rc);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port1);
	w[0] = addr;
	T_CHECK(rds_conf_parse(&rc, w, 1, err, sizeof(err)) == 0);
	ctx = rds_sync_connect(&rc, err, sizeof(err));
	T_CHECKF(ctx != NULL, "%s", err);
	if (ctx)
		redisFree(ctx);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", free_port());
	T_CHECK(rds_conf_parse(&rc, w, 1, err, sizeof(err)) == 0);
	ctx = rds_sync_connect(&rc, err, sizeof(err));
	T_CHECK(ctx == NULL && err[0] != '\0');
}

int
main(void)
{
	log_init("test_redis", false, LOG_L_ERROR);
	signal(SIGPIPE, SIG_IGN);
	if (access("/usr/bin/redis-server", X_OK) != 0) {
		printf("test_redis: redis-server not installed, skipped\n");
		return T_DONE("test_redis");
	}
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_redis.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	atexit(stop_all);
	base = event_base_new();
	port1 = free_port();
	pid1 = redis_start(port1, 0);
	T_RUN(test_lifecycle_both_backends);
	T_RUN(test_one_round_trip);
	T_RUN(test_limits_combined);
	T_RUN(test_cache);
	T_RUN(test_noscript);
	T_RUN(test_error_reply);
	T_RUN(test_sync_client);
	T_RUN(test_down_at_start);
	T_RUN(test_stopped_and_restarted);
	T_RUN(test_sigstop);
	stop(pid1);
	T_RUN(test_sentinel_failover);
	event_base_free(base);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmpdir);
	}
	return T_DONE("test_redis");
}
