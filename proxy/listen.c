/*
 * listen - listening sockets and accepting clients
 *
 * DESCRIPTION
 *	Every worker has its own socket per listen address, bound with
 *	SO_REUSEPORT, so the kernel spreads connections over the workers
 *	and no lock is taken on accept. Admission is clients.c's
 *	(clients_enter()): a new connection is refused with 421 4.7.0
 *	(written straight to the socket, no session created) when moatd
 *	holds max-sessions sessions (or as many as the descriptor limit
 *	allows), or the client's address (IPv6: its /64) holds
 *	max-sessions-per-client. When accept() fails for lack
 *	of file descriptors, the worker stops accepting for a second instead
 *	of spinning, and logs it once per pause. The accept queue is
 *	listen-backlog long (listen_backlog()), per worker socket.
 *
 *	A policy listener ("listen ... policy": Postfix policy delegation,
 *	pdel.c) takes its connections past admission (Postfix's processes
 *	all come from one address); it may be a unix socket, which cannot
 *	be bound once per worker: it is bound once (a stale socket file
 *	that nothing answers on is replaced), made mode 0666 (the directory
 *	guards it), and every worker accepts on a dup() of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/listener.h>

#include "engine.h"
#include "log.h"
#include "moatd.h"
#include "session.h"

#define LISTEN_BACKLOG 1024	/* listen-backlog 0: this, or somaxconn if smaller */
#define LISTEN_PAUSE_MS 1000

/*
 * listen_taken - does something already accept connections there?
 * SO_REUSEPORT would let a second moatd of the same user bind the same
 * address and silently share the traffic; a connect() at start-up (to
 * loopback for a wildcard address) finds the first one. Local addresses
 * answer at once, so the blocking connect is bounded.
 */
static bool
listen_taken(const struct conf_addr *a)
{
	struct sockaddr_storage ss = a->sa;
	int fd, r;

	if (ss.ss_family == AF_UNIX) {
		/* nothing to rewrite */
	} else if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
			sin6->sin6_addr = in6addr_loopback;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	r = connect(fd, (struct sockaddr *)&ss, a->salen);
	close(fd);
	return r == 0;
}

/* listen_open_unix - the unix socket at a's path, bound once; later
 * calls (the other workers) get a dup() of it */
static int
listen_open_unix(const struct conf_addr *a, int backlog, char *err, size_t errlen)
{
	static struct { char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; int fd; } opened[CONF_LISTEN_MAX];
	static int nopened;
	const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->sa;
	int fd;

	for (int i = 0; i < nopened; i++)
		if (strcmp(opened[i].path, sun->sun_path) == 0) {
			fd = fcntl(opened[i].fd, F_DUPFD_CLOEXEC, 0);
			if (fd < 0)
				snprintf(err, errlen, "dup %s: %s", a->text, strerror(errno));
			return fd;
		}
	if (listen_taken(a)) {
		snprintf(err, errlen, "listen %s: something already accepts connections there "
		    "(another moatd?)", a->text);
		return -1;
	}
	unlink(sun->sun_path);		/* a stale socket file: nothing answered on it */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) != 0 ||
	    chmod(sun->sun_path, 0666) != 0 || listen(fd, backlog) != 0) {
		snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	if (nopened < CONF_LISTEN_MAX) {
		snprintf(opened[nopened].path, sizeof(opened[nopened].path), "%s", sun->sun_path);
		opened[nopened++].fd = fd;
	}
	return fd;
}

/* listen_backlog - the queue length for listen(): listen-backlog, or
 * (0) LISTEN_BACKLOG capped by net.core.somaxconn, which the kernel
 * would apply anyway (and so would hide) */
int
listen_backlog(const struct conf *c)
{
	FILE *f;
	long max = 0;

	if (c->listen_backlog > 0)
		return (int)c->listen_backlog;
	f = fopen("/proc/sys/net/core/somaxconn", "r");
	if (f != NULL) {
		if (fscanf(f, "%ld", &max) != 1)
			max = 0;
		fclose(f);
	}
	return max > 0 && max < LISTEN_BACKLOG ? (int)max : LISTEN_BACKLOG;
}

/* listen_open - a bound, listening, non-blocking socket, or -1;
 * check: refuse an address that something else already listens on */
int
listen_open(const struct conf_addr *a, int backlog, bool check, char *err, size_t errlen)
{
	int fd, one = 1;

	if (a->sa.ss_family == AF_UNIX)
		return listen_open_unix(a, backlog, err, errlen);
	if (check && listen_taken(a)) {
		snprintf(err, errlen, "listen %s: something already accepts connections there "
		    "(another moatd?)", a->text);
		return -1;
	}

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
		snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (a->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) != 0) {
		snprintf(err, errlen, "bind %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, backlog) != 0) {
		snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* listen_refuse - 421 without a session, then close */
static void
listen_refuse(int fd, const char *text)
{
	ssize_t r = send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);

	(void)r;
	close(fd);
}

/* listen_accept_cb - a client connected */
static void
listen_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
	int salen, void *arg)
{
	struct worker *w = arg;
	struct conf *c;
	unsigned lflags = 0;

	c = moatd_conf_get();
	/* which listener: its options (submission, implicit-tls, policy) */
	for (int i = 0; i < w->nlev && i < c->nlisten; i++)
		if (w->lev[i] == lev)
			lflags = c->listen_flags[i];
	if (lflags & CONF_LISTEN_PROXYPROTO) {
		ppin_start(w, c, fd, sa, (socklen_t)salen, lflags);	/* takes c */
		return;
	}
	listen_admit(w, c, fd, sa, (socklen_t)salen, lflags, NULL);
}

/* listen_admit - a connection from the client at sa (the one a PROXY
 * protocol header named, o != NULL): drain, admission, then its session
 * or policy connection; takes c */
void
listen_admit(struct worker *w, struct conf *c, int fd, const struct sockaddr *sa,
	socklen_t salen, unsigned lflags, const struct listen_origin *o)
{
	unsigned live;
	char who[ENG_WHO_SIZE];

	if (lflags & CONF_LISTEN_POLICY) {
		pdel_start(w, c, fd, sa, lflags);	/* takes c */
		return;
	}
	if (w->draining) {
		conf_unref(c);
		listen_refuse(fd, "421 4.3.2 Service shutting down\r\n");
		return;
	}
	switch (clients_enter(sa, c, &live)) {
	case CLIENTS_OK:
		break;
	case CLIENTS_FULL:
		if (log_enabled(LOG_L_INFO)) {
			engine_who(NULL, sa, who, sizeof(who));
			log_msg(LOG_L_INFO, 0, "refuse reason=max-sessions %s sessions=%u", who, live);
		}
		listen_refuse(fd, "421 4.7.0 Error: too many connections, try again later\r\n");
		conf_unref(c);
		return;
	case CLIENTS_PER_CLIENT:
		if (log_enabled(LOG_L_INFO)) {
			engine_who(NULL, sa, who, sizeof(who));
			log_msg(LOG_L_INFO, 0, "refuse reason=max-sessions-per-client %s", who);
		}
		listen_refuse(fd, "421 4.7.0 Error: too many connections from your address\r\n");
		conf_unref(c);
		return;
	}
	sess_start(w, c, fd, sa, salen, lflags, o);
}

/* listen_resume_cb - accept again after a pause */
static void
listen_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	if (!w->draining)
		listen_pause(w, false);
}

/* listen_error_cb - accept() failed: EMFILE and friends */
static void
listen_error_cb(struct evconnlistener *lev, void *arg)
{
	struct worker *w = arg;
	struct timeval tv = { LISTEN_PAUSE_MS / 1000, (LISTEN_PAUSE_MS % 1000) * 1000 };
	int err = EVUTIL_SOCKET_ERROR();

	(void)lev;
	log_msg(LOG_L_WARN, 0, "accept error=\"%s\" action=pause-1s", strerror(err));
	listen_pause(w, true);
	event_base_once(w->base, -1, EV_TIMEOUT, listen_resume_cb, w, &tv);
}

/* listen_attach - accept on fd (listening already) in this worker's loop */
void
listen_attach(struct worker *w, int fd)
{
	/* backlog 0: libevent leaves the socket as listen_open() made it
	 * (-1 would call listen() again with 128) */
	struct evconnlistener *lev = evconnlistener_new(w->base, listen_accept_cb, w,
	    LEV_OPT_CLOSE_ON_FREE, 0, fd);

	if (lev == NULL)
		fatal("evconnlistener_new failed");
	evconnlistener_set_error_cb(lev, listen_error_cb);
	w->lev[w->nlev++] = lev;
}

/* listen_pause - stop or restart accepting in this worker */
void
listen_pause(struct worker *w, bool pause)
{
	for (int i = 0; i < w->nlev; i++) {
		if (pause)
			evconnlistener_disable(w->lev[i]);
		else
			evconnlistener_enable(w->lev[i]);
	}
}
