/*
 * engine_ctl - the control socket of moatd and moat-milter: one command
 * per connection
 *
 * DESCRIPTION
 *	A unix stream socket (control-socket in the policy file, mode 0600,
 *	owned by the user moat runs as) on the loop the front-end gives
 *	(moatd's main loop, moat-milter's engine loop).
 *	A client sends one line (at most CONTROL_LINE_MAX bytes, within
 *	CONTROL_TIMEOUT_S seconds) and gets reply lines, each line that
 *	starts with "." sent with one more "." in front, then a line ".",
 *	and the connection is closed. Commands:
 *
 *	  [greylist] list [N] | allow ID [DURATION] | delete KEY | stats
 *		the embedded greylist store (glstore.h, CONTROL); with Redis
 *		moatctl talks to Redis itself
 *	  ping	answers "pong"
 *	  status	health: up since, the policy file and when it was loaded,
 *		the upstream (moatd) and Redis reachable now (checked on the
 *		work pool, bounded), DNSBL zones enabled, sessions active;
 *		the last line "status ok" or "status degraded reason=..."
 *
 *	Anything else answers "error: unknown command". Connections are
 *	bounded (CONTROL_CONNS_MAX at once).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "dnsbl.h"
#include "engine.h"
#include "engine_int.h"
#include "glstore.h"
#include "log.h"
#include "metrics.h"
#include "privs.h"
#include "workq.h"
#include "xalloc.h"

#define CONTROL_LINE_MAX	1024
#define CONTROL_TIMEOUT_S	10
#define CONTROL_CONNS_MAX	16

static struct evconnlistener *ctl_lev;
static int ctl_conns;
static char *ctl_path;
static struct control_info ctl_info;
static struct workq_loop *ctl_wq;

/* a status waiting for the work pool's checks */
struct ctl_job {
	struct ctl_job *prev, *next;
	struct bufferevent *bev;	/* NULL once the client is gone */
	struct conf *c;
	bool bad;
	char *health;
};
static struct ctl_job *ctl_jobs;

static void ctl_write_cb(struct bufferevent *bev, void *arg);
static void ctl_event_cb(struct bufferevent *bev, short what, void *arg);

/* ctl_reply - the lines, dot-stuffed, then "." */
static void
ctl_reply(struct bufferevent *bev, const char *text)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	const char *p = text;

	while (p != NULL && *p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);

		if (n > 0 && p[0] == '.')
			evbuffer_add(out, ".", 1);
		evbuffer_add(out, p, n);
		evbuffer_add(out, "\n", 1);
		p = nl ? nl + 1 : p + n;
	}
	evbuffer_add(out, ".\n", 2);
}

static void
ctl_close(struct bufferevent *bev)
{
	bufferevent_free(bev);
	ctl_conns--;
}

static void
ctl_write_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		ctl_close(bev);
}

static void
ctl_job_free(struct ctl_job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		ctl_jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	conf_unref(j->c);
	free(j->health);
	free(j);
}

/* ctl_time - ISO 8601, UTC */
static void
ctl_time(time_t t, char *out, size_t size)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ctl_status_run - the checks that block, on a pool thread */
static void
ctl_status_run(void *arg)
{
	struct ctl_job *j = arg;

	j->health = engine_health(j->c, ctl_info.upstream, &j->bad);
}

/* ctl_status_done - back on the loop: the reply */
static void
ctl_status_done(void *arg)
{
	struct ctl_job *j = arg;
	const struct dnsbl_set *set = j->c->dnsbl;
	char up[32], loaded[32], *out, dis[512] = "", why[32] = "";
	size_t n = 0, cap = 4096, dl = 0;
	int on = 0, nz = set != NULL ? set->n : 0;
	time_t now = time(NULL);
	const char *h = j->health ? j->health : "";

	if (j->bev == NULL) {
		ctl_job_free(j);
		return;
	}
	for (int i = 0; i < nz; i++) {
		if (dnsbl_zone_enabled(&set->z[i]))
			on++;
		else if (dl + strlen(set->z[i].name) + 2 < sizeof(dis))
			dl += (size_t)snprintf(dis + dl, sizeof(dis) - dl, "%s%s", dl ? "," : "",
			    set->z[i].name);
	}
	if (strstr(h, "upstream addr=") && strstr(strstr(h, "upstream addr="), "reachable=no") &&
	    (strstr(h, "\nredis") == NULL || strstr(strstr(h, "upstream addr="), "reachable=no") <
	    strstr(h, "\nredis")))
		snprintf(why, sizeof(why), "upstream");
	if (strstr(h, "\nredis") ? strstr(strstr(h, "\nredis"), "reachable=no") != NULL :
	    strncmp(h, "redis", 5) == 0 && strstr(h, "reachable=no") != NULL)
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "%sredis", why[0] ? "," : "");
	ctl_time(engine_g.started, up, sizeof(up));
	ctl_time(j->c->loaded_at, loaded, sizeof(loaded));
	out = xmalloc(cap);
	n += (size_t)snprintf(out + n, cap - n, "who %s pid=%ld\nup-since %s uptime=%llds\n"
	    "policy %s loaded=%s\n%s", ctl_info.who, (long)getpid(), up,
	    (long long)(now - engine_g.started), j->c->path ? j->c->path : "-", loaded, h);
	n += (size_t)snprintf(out + n, cap - n, "dnsbl zones=%d enabled=%d%s%s\n", nz, on,
	    dis[0] ? " disabled=" : "", dis);
	n += (size_t)snprintf(out + n, cap - n, "sessions active=%lld\n",
	    (long long)metrics_get(MF_SESSIONS_ACTIVE, NULL, NULL));
	if (j->bad)
		snprintf(out + n, cap - n, "status degraded reason=%s", why[0] ? why : "checks");
	else
		snprintf(out + n, cap - n, "status ok");
	ctl_reply(j->bev, out);
	free(out);
	bufferevent_setcb(j->bev, NULL, ctl_write_cb, ctl_event_cb, NULL);
	j->bev = NULL;
	ctl_job_free(j);
}

/* ctl_status - start the checks; the reply comes from ctl_status_done */
static bool
ctl_status(struct bufferevent *bev)
{
	struct ctl_job *j = xcalloc(1, sizeof(*j));

	j->bev = bev;
	j->c = ctl_info.current();
	j->next = ctl_jobs;
	if (j->next)
		j->next->prev = j;
	ctl_jobs = j;
	if (ctl_wq == NULL || workq_submit(ctl_wq, ctl_status_run, ctl_status_done, j) != 0) {
		j->bev = NULL;
		ctl_job_free(j);
		ctl_reply(bev, "error: the work pool is busy, try again");
		return false;
	}
	bufferevent_setcb(bev, NULL, NULL, ctl_event_cb, j);
	return true;
}

/* ctl_command - one line */
static void
ctl_command(struct bufferevent *bev, char *line)
{
	char *out = NULL;
	char esc[LOG_ESC_SIZE];

	log_escape(esc, sizeof(esc), line, strlen(line));
	log_msg(LOG_L_INFO, 0, "control command=\"%s\"", esc);
	if (strncmp(line, "greylist ", 9) == 0)
		line += 9;
	if (strcmp(line, "ping") == 0) {
		ctl_reply(bev, "pong");
	} else if (strcmp(line, "status") == 0) {
		if (ctl_status(bev)) {
			bufferevent_disable(bev, EV_READ);
			return;		/* the reply comes when the checks are done */
		}
	} else if (engine_glstore() == NULL) {
		ctl_reply(bev, ctl_info.upstream ? "error: no embedded greylist store in this moatd "
		    "(greylisting is off, or it uses Redis: ask Redis)" : "error: no embedded "
		    "greylist store in this moat-milter (greylisting is off, or it uses Redis: ask "
		    "Redis)");
	} else {
		glstore_control(engine_glstore(), line, &out);
		ctl_reply(bev, out ? out : "error: no reply");
		free(out);
	}
	bufferevent_setcb(bev, NULL, ctl_write_cb, NULL, NULL);
	bufferevent_disable(bev, EV_READ);
}

static void
ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	(void)arg;
	line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX) {
			ctl_reply(bev, "error: line too long");
			bufferevent_setcb(bev, NULL, ctl_write_cb, NULL, NULL);
			bufferevent_disable(bev, EV_READ);
		}
		return;
	}
	if (n > CONTROL_LINE_MAX || memchr(line, 0, n) != NULL) {
		ctl_reply(bev, "error: bad line");
		bufferevent_setcb(bev, NULL, ctl_write_cb, NULL, NULL);
		bufferevent_disable(bev, EV_READ);
	} else
		ctl_command(bev, line);
	free(line);
}

static void
ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_job *j = arg;	/* a status still being checked, or NULL */

	(void)what;
	if (j != NULL)
		j->bev = NULL;
	ctl_close(bev);
}

static void
ctl_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen,
	void *arg)
{
	struct bufferevent *bev;
	struct timeval tv = { CONTROL_TIMEOUT_S, 0 };

	(void)sa;
	(void)salen;
	(void)arg;
	if (ctl_conns >= CONTROL_CONNS_MAX) {
		close(fd);
		return;
	}
	bev = bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return;
	}
	ctl_conns++;
	bufferevent_setcb(bev, ctl_read_cb, NULL, ctl_event_cb, NULL);
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_enable(bev, EV_READ);
}

/* control_open - listen on path (an old socket file there is replaced);
 * -1 and err when it cannot */
int
control_open(struct event_base *base, const char *path, const struct control_info *info,
	char *err, size_t errlen)
{
	struct sockaddr_un sun;
	mode_t old;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control-socket %s: path too long", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	(void)unlink(path);
	old = umask(077);
	ctl_lev = evconnlistener_new_bind(base, ctl_accept, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (ctl_lev == NULL) {
		snprintf(err, errlen, "control-socket %s: %s", path, strerror(errno));
		return -1;
	}
	ctl_path = xstrdup(path);
	ctl_info = *info;
	ctl_wq = engine_g.workq != NULL ? workq_loop_new(engine_g.workq, base) : NULL;
	return 0;
}

/* control_chown - the socket belongs to the user moatd becomes */
void
control_chown(uid_t uid, gid_t gid)
{
	if (ctl_path != NULL && chown(ctl_path, uid, gid) != 0)
		log_msg(LOG_L_WARN, 0, "control-socket %s: chown: %s", ctl_path, strerror(errno));
}

/* engine_drop_privileges - see engine.h */
int
engine_drop_privileges(const struct conf *c, const char *who, char *err, size_t errlen)
{
	switch (privs_drop(c->user, control_chown, err, errlen)) {
	case PRIVS_ERROR:
		return -1;
	case PRIVS_KEPT_ROOT:
		log_msg(LOG_L_WARN, 0, "user root: %s keeps running as root", who);
		return 0;
	default:
		return 0;
	}
}

void
control_close(void)
{
	/* after engine_shutdown(): the pool is gone, a status still waiting
	 * gets no answer */
	while (ctl_jobs != NULL) {
		if (ctl_jobs->bev != NULL) {
			bufferevent_free(ctl_jobs->bev);
			ctl_conns--;
		}
		ctl_job_free(ctl_jobs);
	}
	if (ctl_wq != NULL)
		workq_loop_free(ctl_wq);
	ctl_wq = NULL;
	if (ctl_lev == NULL)
		return;
	evconnlistener_free(ctl_lev);
	ctl_lev = NULL;
	(void)unlink(ctl_path);
	free(ctl_path);
	ctl_path = NULL;
}
