/*
 * control - moatd's control socket: one command per connection
 *
 * DESCRIPTION
 *	A unix stream socket (control-socket in the policy file, mode 0600,
 *	owned by the user moatd runs as) on the main thread's event loop.
 *	A client sends one line (at most CONTROL_LINE_MAX bytes, within
 *	CONTROL_TIMEOUT_S seconds) and gets reply lines, each line that
 *	starts with "." sent with one more "." in front, then a line ".",
 *	and the connection is closed. Commands:
 *
 *	  [greylist] list [N] | allow ID [DURATION] | delete KEY | stats
 *		the embedded greylist store (glstore.h, CONTROL); with Redis
 *		moatctl talks to Redis itself
 *	  ping	answers "pong"
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
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "glstore.h"
#include "engine.h"
#include "log.h"
#include "moatd.h"
#include "xalloc.h"

#define CONTROL_LINE_MAX	1024
#define CONTROL_TIMEOUT_S	10
#define CONTROL_CONNS_MAX	16

static struct evconnlistener *ctl_lev;
static int ctl_conns;
static char *ctl_path;

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
	} else if (engine_glstore() == NULL) {
		ctl_reply(bev, "error: no embedded greylist store in this moatd "
		    "(greylisting is off, or it uses Redis: ask Redis)");
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
	if (n > CONTROL_LINE_MAX || memchr(line, 0, n) != NULL)
		ctl_reply(bev, "error: bad line");
	else
		ctl_command(bev, line);
	free(line);
	bufferevent_setcb(bev, NULL, ctl_write_cb, NULL, NULL);
	bufferevent_disable(bev, EV_READ);
}

static void
ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
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
control_open(struct event_base *base, const char *path, char *err, size_t errlen)
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
	return 0;
}

/* control_chown - the socket belongs to the user moatd becomes */
void
control_chown(uid_t uid, gid_t gid)
{
	if (ctl_path != NULL && chown(ctl_path, uid, gid) != 0)
		log_msg(LOG_L_WARN, 0, "control-socket %s: chown: %s", ctl_path, strerror(errno));
}

void
control_close(void)
{
	if (ctl_lev == NULL)
		return;
	evconnlistener_free(ctl_lev);
	ctl_lev = NULL;
	(void)unlink(ctl_path);
	free(ctl_path);
	ctl_path = NULL;
}
