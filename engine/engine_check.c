/*
 * engine_check - what moat needs from outside, checked at start-up and
 * by "moatd -n": the upstream answers EHLO, Redis answers PING, the
 * resolver answers, the greylist store and the spool directory can be
 * written by the configured user
 *
 * SYNOPSIS
 *	int engine_startup_checks(const struct conf *c, bool upstream, bool resolver);
 *	void engine_resolver_probe_result(const struct conf *c, const struct dns_answer *a);
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

/* check_upstream - connect, greeting, EHLO */
static int
check_upstream(const struct conf *c)
{
	const struct conf_addr *a = &c->upstream;
	uint64_t ms = c->upstream_connect_ms < CHECK_TIMEOUT_MS ? c->upstream_connect_ms :
	    CHECK_TIMEOUT_MS;
	uint64_t deadline = mono_ms() + ms;
	int fd, code, err = 0;
	socklen_t el = sizeof(err);
	char ehlo[300];

	if (a->salen == 0)
		return 0;
	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_errno(LOG_L_WARN, 0, "check upstream addr=%s error=socket errno=%d", a->text, errno);
		return 1;
	}
	if (connect(fd, (const struct sockaddr *)&a->sa, a->salen) != 0 && errno != EINPROGRESS)
		err = errno;
	else if (wait_fd(fd, POLLOUT, deadline) <= 0)
		err = ETIMEDOUT;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
		err = errno;
	if (err != 0) {
		errno = err;
		log_errno(LOG_L_WARN, 0, "check upstream addr=%s error=connect errno=%d", a->text, err);
		close(fd);
		return 1;
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
		log_msg(LOG_L_WARN, 0, "check upstream addr=%s error=greeting code=%d%s", a->text,
		    code, code == 0 ? " (no reply in time, or closed)" : "");
		close(fd);
		return 1;
	}
	snprintf(ehlo, sizeof(ehlo), "EHLO %s\r\n", c->hostname ? c->hostname : "localhost");
	if (write(fd, ehlo, strlen(ehlo)) < 0 || (code = read_reply(fd, deadline)) != 250) {
		log_msg(LOG_L_WARN, 0, "check upstream addr=%s error=ehlo code=%d", a->text, code);
		close(fd);
		return 1;
	}
	(void)!write(fd, "QUIT\r\n", 6);
	close(fd);
	log_msg(LOG_L_INFO, 0, "check upstream addr=%s ok", a->text);
	return 0;
}

/* check_redis - PING through the synchronous client */
static int
check_redis(const struct conf *c)
{
	const struct rds_conf *rc = &c->greylist.redis;
	char err[256] = "", where[160];
	redisContext *ctx;
	redisReply *r;
	int bad = 0;

	if (!rds_conf_enabled(rc) || !conf_greylist_wanted(c))
		return 0;
	if (rc->nsentinel > 0)
		snprintf(where, sizeof(where), "sentinel=%s:%d master=%s", rc->sentinel[0].host,
		    rc->sentinel[0].port, rc->master);
	else
		snprintf(where, sizeof(where), "addr=%s:%d", rc->server.host, rc->server.port);
	ctx = rds_sync_connect(rc, err, sizeof(err));
	if (ctx == NULL) {
		log_msg(LOG_L_WARN, 0, "check redis %s error=\"%s\": greylist on-error applies "
		    "until it answers", where, err);
		return 1;
	}
	r = redisCommand(ctx, "PING");
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		log_msg(LOG_L_WARN, 0, "check redis %s error=\"%s\"", where,
		    r != NULL && r->str ? r->str : ctx->errstr);
		bad = 1;
	} else
		log_msg(LOG_L_INFO, 0, "check redis %s ok", where);
	if (r != NULL)
		freeReplyObject(r);
	redisFree(ctx);
	return bad;
}

/* check_resolver - one query: the root's NS (any answer from a server counts) */
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
