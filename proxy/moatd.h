/*
 * moatd - process-wide state of the proxy daemon (private to proxy/)
 *
 * DESCRIPTION
 *	One event loop per worker thread; each worker has its own listening
 *	sockets (SO_REUSEPORT) and owns the sessions it accepted. The
 *	current configuration is swapped under a lock on SIGHUP
 *	(moatd_conf_get() takes a reference; a session keeps it for its
 *	whole life). main.c's own state (the configuration, the workers,
 *	the drain) is private to main.c: other files see their worker and
 *	the functions below. The session counts (in all and per client)
 *	live in clients.c, which admits new connections.
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
struct pdel_conn;

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
	struct pdel_conn *pdels;	/* policy delegation connections (pdel.c) */
	unsigned npdels;
	bool draining;
	bool stopping;			/* set by the main thread before a wake */
	bool done;			/* atomic: the loop has ended */
};

struct conf *moatd_conf_get(void);	/* a new reference to the current conf */
uint64_t moatd_new_sid(void);
void moatd_worker_idle(struct worker *w);	/* a session or a goodbye of w ended */

/* clients.c: admission, sessions in all and per client address (IPv4
 * /32, IPv6 /prefix) */
enum clients_admit { CLIENTS_OK = 0, CLIENTS_FULL, CLIENTS_PER_CLIENT };
void clients_init(unsigned fd_cap);
enum clients_admit clients_enter(const struct sockaddr *sa, const struct conf *c, unsigned *live);
void clients_leave(const struct sockaddr *sa, unsigned v6prefix);
unsigned clients_sessions(void);

/* pdel.c: the policy delegation front-end (listen ... policy) */
void pdel_start(struct worker *w, struct conf *c, int fd, const struct sockaddr *sa,
	unsigned lflags);
void pdel_drain(struct worker *w);
void pdel_close_all(struct worker *w);

/* listen.c */
/* where a connection came from when a PROXY protocol header named the
 * client (ppin.c); NULL for a direct one */
struct listen_origin {
	struct sockaddr_storage local;	/* the claimed destination */
	socklen_t locallen;		/* 0: keep getsockname()'s */
	char via[56];			/* the balancer, "IP:PORT" */
	int version;			/* of the header, 1 or 2 */
	bool ssl;			/* the v2 SSL TLV said TLS */
};
void listen_admit(struct worker *w, struct conf *c, int fd, const struct sockaddr *sa,
	socklen_t salen, unsigned lflags, const struct listen_origin *o);
int listen_backlog(const struct conf *c);
int listen_open(const struct conf_addr *a, int backlog, bool check, char *err, size_t errlen);
void listen_attach(struct worker *w, int fd);
void listen_pause(struct worker *w, bool pause);

/* ppin.c: the inbound PROXY protocol header (listen ... proxy-protocol) */
void ppin_start(struct worker *w, struct conf *c, int fd, const struct sockaddr *peer,
	socklen_t peerlen, unsigned lflags);
void ppin_free_all(struct worker *w);

#endif
