/*
 * moatd - process-wide state of the proxy daemon (private to proxy/)
 *
 * DESCRIPTION
 *	One event loop per worker thread; each worker has its own listening
 *	sockets (SO_REUSEPORT) and owns the sessions it accepted. The
 *	current configuration is swapped under moatd_conf_lock on SIGHUP;
 *	a session takes a reference when it starts and keeps it.
 *	Counters shared by the workers are atomics; the per-client session
 *	counts live in clients.c under their own lock.
 */
#ifndef MOAT_MOATD_H
#define MOAT_MOATD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"

struct session;
struct ups_conn;
struct ups_closer;
struct engine_loop;

struct worker {
	int idx;
	pthread_t thread;
	struct event_base *base;
	struct evconnlistener *lev[CONF_LISTEN_MAX];
	int nlev;
	struct event *ev_wake;		/* reads wake_fd; also made active in-thread */
	struct engine_loop *eng;	/* the engine's parts for this loop (engine.h) */
	int wake_fd;			/* eventfd the main thread writes to */
	struct session *sessions;	/* list of live sessions */
	unsigned nsessions;
	struct ups_closer *closers;	/* upstream goodbyes in progress (upstream.c) */
	struct ups_conn *ups_pool;	/* idle upstream connections to reuse (upstream.c) */
	unsigned nups_pool;
	unsigned nclosers;
	bool draining;
	bool stopping;			/* set by the main thread before a wake */
	bool done;			/* atomic: the loop has ended */
};

struct moatd_state {
	pthread_mutex_t conf_lock;
	struct conf *conf;		/* current; under conf_lock */
	struct worker *workers;
	int nworkers;
	unsigned sessions;		/* atomic: live sessions, all workers */
	uint64_t next_sid;		/* atomic */
	bool draining;			/* atomic */
	unsigned fd_session_cap;	/* sessions the fd limit allows */
};

extern struct moatd_state moatd;

struct conf *moatd_conf_get(void);	/* a new reference to the current conf */
uint64_t moatd_new_sid(void);

/* clients.c: sessions per client address (IPv4 /32, IPv6 /prefix) */
void clients_init(void);
bool clients_enter(const struct sockaddr *sa, unsigned max, unsigned v6prefix);
void clients_leave(const struct sockaddr *sa, unsigned v6prefix);

/* control.c: the control socket, on the main loop */
int control_open(struct event_base *base, const char *path, char *err, size_t errlen);
void control_chown(uid_t uid, gid_t gid);
void control_close(void);

/* listen.c */
int listen_open(const struct conf_addr *a, bool check, char *err, size_t errlen);
void listen_attach(struct worker *w, int fd);
void listen_pause(struct worker *w, bool pause);

#endif
