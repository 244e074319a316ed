/*
 * engine_check - what moat needs from outside, checked at start-up and
 * by "moatd -n": the upstream answers EHLO, Redis answers PING, the
 * resolver answers, the greylist store and the spool directory can be
 * written by the configured user
 *
 * SYNOPSIS
 *	int engine_startup_checks(const struct conf *c, bool upstream, bool resolver);
 *	void engine_resolver_probe_result(const struct conf *c, const struct dns_answer *a);
 *	char *engine_health(const struct conf *c, bool upstream, bool *bad);
 *
 * DESCRIPTION
 *	Each failure is one log line, "check NAME ... error=... errno=N
 *	(text)", naming the address or the path. They are warnings: moat
 *	starts anyway, and the checks' on-error policy decides while the
 *	part is down (a greylist rule with Redis gone follows greylist
 *	on-error; DNS failures are temperror). The return value is the
 *	number of warnings.
 *
 *	The calls block (connect, read, PING, one DNS query), each bounded
 *	by its own timeout: run this on the main thread before the loops
 *	start. upstream: moatd's check of its upstream (moat-milter has none).
 *	resolver: probe the resolver here, blocking (-n); at start-up the
 *	probe goes out from engine_timers_start() instead, without waiting,
 *	and engine_resolver_probe_result() logs its answer. When the resolver
 *	is not up yet (moatd -n) it is started for the probe and stopped
 *	after. The policy's startup-checks no turns the checks at start-up
 *	off (-n runs them always).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "conf_reload.h"
#include "dns.h"
#include "engine.h"
#include "engine_int.h"
#include "log.h"
#include "redis.h"
#include "xalloc.h"

#define CHECK_TIMEOUT_MS 5000

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* wait_fd - poll one descriptor until the deadline: 1 ready, 0 timeout, -1 error */
static int
wait_fd(int fd, short ev, uint64_t deadline)
{
	for (;;) {
		uint64_t now = mono_ms();
		struct pollfd p = { fd, ev, 0 };
		int r;

		if (now >= deadline)
			return 0;
		r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		return r < 0 ? -1 : r;
	}
}

/* read_reply - an SMTP reply's code (the last line's), 0 on timeout or EOF */
static int
read_reply(int fd, uint64_t deadline)
{
	char buf[4096];
	size_t n = 0;

	for (;;) {
		char *line = buf, *nl;
		ssize_t r;

		if (wait_fd(fd, POLLIN, deadline) <= 0)
			return 0;
		r = read(fd, buf + n, sizeof(buf) - 1 - n);
		if (r <= 0)
			return 0;
		n += (size_t)r;
		buf[n] = 0;
		while ((nl = strchr(line, '\n')) != NULL) {
			if (nl - line >= 4 && line[3] == ' ')
				return atoi(line);
			if (nl - line < 4 || line[3] != '-')
				return -1;	/* not SMTP */
			line = nl + 1;
		}
		if (n == sizeof(buf) - 1)
			return -1;
	}
}

/* probe_upstream - connect, greeting, EHLO: 0, or -1 with why */
static int
probe_upstream(const struct conf *c, char *why, size_t size)
{
	const struct conf_addr *a = &c->upstream;
	uint64_t ms = c->upstream_connect_ms < CHECK_TIMEOUT_MS ? c->upstream_connect_ms :
	    CHECK_TIMEOUT_MS;
	uint64_t deadline = mono_ms() + ms;
	int fd, code, err = 0;
	socklen_t el = sizeof(err);
	char ehlo[300];

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, size, "error=socket errno=%d: %s", errno, strerror(errno));
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)&a->sa, a->salen) != 0 && errno != EINPROGRESS)
		err = errno;
	else if (wait_fd(fd, POLLOUT, deadline) <= 0)
		err = ETIMEDOUT;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
		err = errno;
	if (err != 0) {
		snprintf(why, size, "error=connect errno=%d: %s", err, strerror(err));
		close(fd);
		return -1;
	}
	if (c->identity == CONF_ID_PROXY_V1) {
		(void)!write(fd, "PROXY UNKNOWN\r\n", 15);
	} else if (c->identity == CONF_ID_PROXY_V2) {
		/* a LOCAL command: the connection is the proxy's own (health check) */
		static const unsigned char v2[16] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a,
		    0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00 };
		(void)!write(fd, v2, sizeof(v2));
	}
	code = read_reply(fd, deadline);
	if (code != 220) {
		snprintf(why, size, "error=greeting code=%d%s", code,
		    code == 0 ? " (no reply in time, or closed)" : "");
		close(fd);
		return -1;
	}
	snprintf(ehlo, sizeof(ehlo), "EHLO %s\r\n", c->hostname ? c->hostname : "localhost");
	if (write(fd, ehlo, strlen(ehlo)) < 0 || (code = read_reply(fd, deadline)) != 250) {
		snprintf(why, size, "error=ehlo code=%d", code);
		close(fd);
		return -1;
	}
	(void)!write(fd, "QUIT\r\n", 6);
	close(fd);
	return 0;
}

/* check_upstream - the start-up line */
static int
check_upstream(const struct conf *c)
{
	char why[200];

	if (c->upstream.salen == 0)
		return 0;
	if (probe_upstream(c, why, sizeof(why)) != 0) {
		log_msg(LOG_L_WARN, 0, "check upstream addr=%s %s", c->upstream.text, why);
		return 1;
	}
	log_msg(LOG_L_INFO, 0, "check upstream addr=%s ok", c->upstream.text);
	return 0;
}

/* redis_used - does the policy greylist with Redis? */
static bool
redis_used(const struct conf *c)
{
	return rds_conf_enabled(&c->greylist.redis) && conf_greylist_wanted(c);
}

/* redis_where - "addr=HOST:PORT" or "sentinel=HOST:PORT master=NAME" */
static void
redis_where(const struct conf *c, char *out, size_t size)
{
	const struct rds_conf *rc = &c->greylist.redis;

	if (rc->nsentinel > 0)
		snprintf(out, size, "sentinel=%s:%d master=%s", rc->sentinel[0].host,
		    rc->sentinel[0].port, rc->master);
	else
		snprintf(out, size, "addr=%s:%d", rc->server.host, rc->server.port);
}

/* probe_redis - PING through the synchronous client: 0, or -1 with why */
static int
probe_redis(const struct conf *c, char *why, size_t size)
{
	char err[256] = "";
	redisContext *ctx;
	redisReply *r;
	int rc = 0;

	ctx = rds_sync_connect(&c->greylist.redis, err, sizeof(err));
	if (ctx == NULL) {
		snprintf(why, size, "error=\"%s\"", err);
		return -1;
	}
	r = redisCommand(ctx, "PING");
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		snprintf(why, size, "error=\"%s\"", r != NULL && r->str ? r->str : ctx->errstr);
		rc = -1;
	}
	if (r != NULL)
		freeReplyObject(r);
	redisFree(ctx);
	return rc;
}

/* check_redis - the start-up line */
static int
check_redis(const struct conf *c)
{
	char why[300], where[200];

	if (!redis_used(c))
		return 0;
	redis_where(c, where, sizeof(where));
	if (probe_redis(c, why, sizeof(why)) != 0) {
		log_msg(LOG_L_WARN, 0, "check redis %s %s: greylist on-error applies until it "
		    "answers", where, why);
		return 1;
	}
	log_msg(LOG_L_INFO, 0, "check redis %s ok", where);
	return 0;
}

/* engine_health - what moatctl status shows of the parts outside, found
 * out now (blocks: run it on the work pool); the caller frees it */
char *
engine_health(const struct conf *c, bool upstream, bool *bad)
{
	char why[300], where[200], *out;
	size_t n = 0, cap = 1024;

	out = xmalloc(cap);
	out[0] = 0;
	if (upstream && c->upstream.salen != 0) {
		if (probe_upstream(c, why, sizeof(why)) != 0) {
			*bad = true;
			n += (size_t)snprintf(out + n, cap - n, "upstream addr=%s reachable=no %s\n",
			    c->upstream.text, why);
		} else
			n += (size_t)snprintf(out + n, cap - n, "upstream addr=%s reachable=yes\n",
			    c->upstream.text);
	}
	if (redis_used(c)) {
		redis_where(c, where, sizeof(where));
		if (probe_redis(c, why, sizeof(why)) != 0) {
			*bad = true;
			snprintf(out + n, cap - n, "redis %s reachable=no %s\n", where, why);
		} else
			snprintf(out + n, cap - n, "redis %s reachable=yes\n", where);
	} else
		snprintf(out + n, cap - n, "redis none (%s)\n", conf_greylist_wanted(c) ?
		    "greylist store in memory" : "no greylist rule");
	return out;
}

/* engine_resolver_probe_result - an answer to the probe: logged */
void
engine_resolver_probe_result(const struct conf *c, const struct dns_answer *a)
{
	if (a == NULL || (a->status == DNS_TEMPERROR && a->rcode == 0))
		log_msg(LOG_L_WARN, 0, "check resolver mode=%s error=%s: DNS checks give temperror "
		    "while it does not answer", dns_mode_name(c->resolver.mode),
		    a != NULL && a->why ? a->why : "no-answer");
	else
		log_msg(LOG_L_INFO, 0, "check resolver mode=%s ok", dns_mode_name(c->resolver.mode));
}

static int
check_resolver(const struct conf *c)
{
	struct dns_answer *a = NULL;
	bool started = false;
	int bad = 0;

	if (!engine_g.dns_up) {
		char *derr = NULL;

		if (dns_init(&c->resolver, &derr) != 0) {
			log_msg(LOG_L_WARN, 0, "check resolver mode=%s error=\"%s\": DNS checks "
			    "give temperror", dns_mode_name(c->resolver.mode), derr ? derr : "?");
			free(derr);
			return 1;
		}
		started = true;
	}
	dns_query_sync(".", DNS_T_NS, (unsigned)c->dns_timeout_ms, &a);
	engine_resolver_probe_result(c, a);
	bad = a == NULL || (a->status == DNS_TEMPERROR && a->rcode == 0);
	dns_answer_free(a);
	if (started)
		dns_shutdown();
	return bad;
}

/* writable_by - may user (NULL: the current one) create files in dir? 0,
 * or an errno */
static int
writable_by(const char *dir, const char *user)
{
	struct stat st;
	struct passwd *pw;
	gid_t groups[256];
	int ng = 256;

	if (stat(dir, &st) != 0)
		return errno;
	if (!S_ISDIR(st.st_mode))
		return ENOTDIR;
	pw = user != NULL ? getpwnam(user) : getpwuid(geteuid());
	if (pw == NULL)
		return ENOENT;
	if (pw->pw_uid == 0)
		return access(dir, W_OK | X_OK) == 0 ? 0 : errno;	/* a read-only file system */
	if (st.st_uid == pw->pw_uid)
		return (st.st_mode & S_IWUSR) && (st.st_mode & S_IXUSR) ? 0 : EACCES;
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) < 0)
		ng = 0;
	for (int i = 0; i < ng; i++)
		if (groups[i] == st.st_gid)
			return (st.st_mode & S_IWGRP) && (st.st_mode & S_IXGRP) ? 0 : EACCES;
	return (st.st_mode & S_IWOTH) && (st.st_mode & S_IXOTH) ? 0 : EACCES;
}

/* check_dir - one directory moat writes into, as user */
static int
check_dir(const char *what, const char *path, const char *dir, const char *user)
{
	int e = writable_by(dir, user);

	if (e == 0)
		return 0;
	log_msg(LOG_L_WARN, 0, "check %s path=%s error=not-writable user=%s dir=%s errno=%d (%s)",
	    what, path, user ? user : "(current)", dir, e, strerror(e));
	return 1;
}

int
engine_startup_checks(const struct conf *c, bool upstream, bool resolver)
{
	int n = 0;

	if (upstream)
		n += check_upstream(c);
	n += check_redis(c);
	if (resolver && !engine_g.opts.no_network)
		n += check_resolver(c);
	if (conf_greylist_wanted(c) && !rds_conf_enabled(&c->greylist.redis) &&
	    c->greylist.store_path[0]) {
		char dir[PATH_MAX];
		const char *slash = strrchr(c->greylist.store_path, '/');

		if (slash == NULL)
			snprintf(dir, sizeof(dir), ".");
		else if (slash == c->greylist.store_path)
			snprintf(dir, sizeof(dir), "/");
		else
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - c->greylist.store_path),
			    c->greylist.store_path);
		n += check_dir("greylist-store", c->greylist.store_path, dir, c->user);
	}
	if (c->spool_dir != NULL && upstream)
		n += check_dir("spool-dir", c->spool_dir, c->spool_dir, c->user);
	return n;
}
