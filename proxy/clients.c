/*
 * clients - admission: live sessions in all, and per client address
 *
 * SYNOPSIS
 *	void clients_init(unsigned fd_cap);
 *	enum clients_admit clients_enter(const struct sockaddr *sa,
 *	                                 const struct conf *c, unsigned *live);
 *	void clients_leave(const struct sockaddr *sa, unsigned v6prefix);
 *	unsigned clients_sessions(void);
 *
 * DESCRIPTION
 *	clients_enter() admits a new connection (CLIENTS_OK: one more
 *	session counted in all and for its address) or says why not:
 *	CLIENTS_FULL at max-sessions or the cap the descriptor limit allows
 *	(fd_cap, from main.c), CLIENTS_PER_CLIENT at max-sessions-per-client
 *	(nothing counted then). clients_leave() is the session's end, once
 *	for every CLIENTS_OK. The total is an atomic counter; the workers
 *	share it.
 *
 *	Per address: a hash table keyed by the client's address (IPv4, or the IPv6
 *	prefix of client-ipv6-prefix bits, /64 by default, so that a client
 *	cannot escape the limit by rotating addresses within its network;
 *	IPv4-mapped IPv6 addresses count as IPv4). An entry exists only
 *	while its count is above zero, so the table never holds more
 *	entries than there are sessions: memory is bounded by max-sessions.
 *	One mutex guards it; the critical sections are a few dozen
 *	instructions at accept and close.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "moatd.h"
#include "xalloc.h"

#define CLIENTS_BUCKETS 4096

struct client_ent {
	struct client_ent *next;
	unsigned char key[16];
	unsigned count;
};

static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static struct client_ent *clients_tab[CLIENTS_BUCKETS];
static unsigned clients_live;		/* atomic: live sessions, all workers */
static unsigned clients_fd_cap;		/* sessions the descriptor limit allows */

/* clients_init - the cap the descriptor limit allows (before any worker) */
void
clients_init(unsigned fd_cap)
{
	clients_fd_cap = fd_cap;
}

/* clients_sessions - live sessions, all workers */
unsigned
clients_sessions(void)
{
	return __atomic_load_n(&clients_live, __ATOMIC_RELAXED);
}

/* clients_key - the 16-byte key and its bucket */
static unsigned
clients_key(const struct sockaddr *sa, unsigned v6prefix, unsigned char key[16])
{
	unsigned h = 2166136261u;

	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		key[10] = key[11] = 0xff;
	} else {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		memcpy(key, a, 16);
		if (!IN6_IS_ADDR_V4MAPPED(a)) {
			for (unsigned bit = v6prefix; bit < 128; bit++)
				key[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
		}
	}
	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % CLIENTS_BUCKETS;
}

/* clients_addr_enter - count one more session of this address; false
 * when it holds max already */
static bool
clients_addr_enter(const struct sockaddr *sa, unsigned max, unsigned v6prefix)
{
	unsigned char key[16];
	unsigned b = clients_key(sa, v6prefix, key);
	struct client_ent *e;
	bool ok = true;

	pthread_mutex_lock(&clients_lock);
	for (e = clients_tab[b]; e; e = e->next)
		if (memcmp(e->key, key, 16) == 0)
			break;
	if (e == NULL) {
		e = xcalloc(1, sizeof(*e));
		memcpy(e->key, key, 16);
		e->next = clients_tab[b];
		clients_tab[b] = e;
	}
	if (e->count >= max)
		ok = false;
	else
		e->count++;
	if (e->count == 0) {
		clients_tab[b] = e->next;	/* only just created */
		free(e);
	}
	pthread_mutex_unlock(&clients_lock);
	return ok;
}

/* clients_enter - admit a new session, or say why not (*live: the
 * sessions there were, for the log) */
enum clients_admit
clients_enter(const struct sockaddr *sa, const struct conf *c, unsigned *live)
{
	unsigned n = __atomic_add_fetch(&clients_live, 1, __ATOMIC_RELAXED);

	*live = n - 1;
	if (n > c->max_sessions || n > clients_fd_cap) {
		__atomic_sub_fetch(&clients_live, 1, __ATOMIC_RELAXED);
		return CLIENTS_FULL;
	}
	if (!clients_addr_enter(sa, (unsigned)c->max_per_client, (unsigned)c->client_v6_prefix)) {
		__atomic_sub_fetch(&clients_live, 1, __ATOMIC_RELAXED);
		return CLIENTS_PER_CLIENT;
	}
	return CLIENTS_OK;
}

/* clients_leave - a session admitted by clients_enter() ends */
void
clients_leave(const struct sockaddr *sa, unsigned v6prefix)
{
	unsigned char key[16];
	unsigned b = clients_key(sa, v6prefix, key);
	struct client_ent **pp, *e;

	pthread_mutex_lock(&clients_lock);
	for (pp = &clients_tab[b]; (e = *pp) != NULL; pp = &e->next) {
		if (memcmp(e->key, key, 16) != 0)
			continue;
		if (--e->count == 0) {
			*pp = e->next;
			free(e);
		}
		break;
	}
	pthread_mutex_unlock(&clients_lock);
	__atomic_sub_fetch(&clients_live, 1, __ATOMIC_RELAXED);
}
