/*
 * ppin - the inbound PROXY protocol header on a "listen ... proxy-protocol"
 *
 * SYNOPSIS
 *	void ppin_start(struct worker *w, struct conf *c, int fd,
 *	                const struct sockaddr *peer, socklen_t peerlen, unsigned lflags);
 *	void ppin_free_all(struct worker *w);
 *
 * DESCRIPTION
 *	A connection accepted on a proxy-protocol listener comes from a load
 *	balancer and starts with a PROXY protocol header (version 1 or 2,
 *	core/proxyproto.c) naming the real client. ppin_start() is called
 *	instead of admission: a peer that is not in proxy-protocol-from is
 *	logged ("proxy-protocol refuse peer=... reason=not-in-proxy-protocol-
 *	from") and closed at once, before any greeting, nothing read. For a
 *	trusted peer the header is read with a deadline of
 *	proxy-protocol-timeout for the whole of it: each read peeks at the
 *	socket, parses everything so far, and consumes exactly the header's
 *	bytes (a complete header) or all that was peeked (those all belong
 *	to it: proxyproto.h), so the client's own first bytes stay in the
 *	socket for the session. A malformed, over-long or truncated header,
 *	an EOF inside it or the deadline closes the connection with a log
 *	line naming why; no reply is written (the peer is a balancer, not a
 *	client). A close before any byte (a balancer's connect-only health
 *	check) is logged at debug level only.
 *
 *	A complete header hands the connection on to listen_admit() (the
 *	drain check, admission, then the session or the policy connection)
 *	with the claimed client address and port, and the claimed
 *	destination as the local address, so every fact, limit, log line
 *	and XCLIENT/PROXY toward the upstream carries them; the disconnect
 *	line (and the debug connect line) adds "via=" the balancer. A LOCAL
 *	(v2) or UNKNOWN (v1) header, or a family moatd does not take, keeps
 *	the connection's own addresses, as the spec asks. The SSL TLV only
 *	adds "proxy-tls=yes" to those lines.
 *
 *	Pending headers are kept on a per-thread list; ppin_free_all()
 *	closes those still waiting when the worker's loop has ended.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lists.h"
#include "log.h"
#include "moatd.h"
#include "proxyproto.h"
#include "xalloc.h"

struct ppin {
	struct ppin *next, *prev;
	struct worker *w;
	struct conf *c;
	int fd;
	unsigned lflags;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	char peer_text[INET6_ADDRSTRLEN + 8];
	struct event *ev_read, *ev_timer;
	size_t have;			/* header bytes consumed so far */
	unsigned char buf[PP_MAX];
};

static __thread struct ppin *ppin_list;

/* ppin_addr_text - "IP:PORT" or "[IP6]:PORT" */
static void
ppin_addr_text(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, ntohs(sin->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		snprintf(out, len, "?");
	}
}

/* ppin_free - unlink, free the events; close the socket if close_fd */
static void
ppin_free(struct ppin *p, bool close_fd)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		ppin_list = p->next;
	if (p->next)
		p->next->prev = p->prev;
	event_free(p->ev_read);
	event_free(p->ev_timer);
	if (close_fd)
		close(p->fd);
	conf_unref(p->c);
	free(p);
}

/* ppin_fail - log why and close */
static void
ppin_fail(struct ppin *p, const char *why)
{
	log_msg(LOG_L_WARN, 0, "proxy-protocol error peer=%s reason=\"%s\" bytes=%zu",
	    p->peer_text, why, p->have);
	ppin_free(p, true);
}

/* ppin_done - the header is in: on to admission with its addresses */
static void
ppin_done(struct ppin *p, const struct pp_header *h)
{
	struct listen_origin o;
	struct worker *w = p->w;
	struct conf *c = conf_ref(p->c);
	int fd = p->fd;
	unsigned lflags = p->lflags;
	struct sockaddr_storage peer = p->peer;
	socklen_t peerlen = p->peerlen;

	memset(&o, 0, sizeof(o));
	snprintf(o.via, sizeof(o.via), "%s", p->peer_text);
	o.ssl = h->ssl;
	o.version = h->version;
	ppin_free(p, false);
	if (h->local) {
		log_msg(LOG_L_DEBUG, 0, "proxy-protocol peer=%s version=%d local: own addresses",
		    o.via, o.version);
		o.locallen = 0;
		listen_admit(w, c, fd, (const struct sockaddr *)&peer, peerlen, lflags, &o);
		return;
	}
	o.local = h->dst;
	o.locallen = h->salen;
	listen_admit(w, c, fd, (const struct sockaddr *)&h->src, h->salen, lflags, &o);
}

/* ppin_read_cb - bytes (or EOF) from the balancer */
static void
ppin_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ppin *p = arg;
	struct pp_header h;
	ssize_t n;
	int r;

	(void)what;
	n = recv(fd, p->buf + p->have, sizeof(p->buf) - p->have, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n < 0) {
		ppin_fail(p, strerror(errno));
		return;
	}
	if (n == 0 && p->have == 0) {
		/* a balancer's connect-only health check */
		log_msg(LOG_L_DEBUG, 0, "proxy-protocol peer=%s closed before a header", p->peer_text);
		ppin_free(p, true);
		return;
	}
	if (n == 0) {
		ppin_fail(p, "closed inside the header");
		return;
	}
	r = pp_parse(p->buf, p->have + (size_t)n, &h);
	if (r < 0) {
		p->have += (size_t)n;
		ppin_fail(p, h.err);
		return;
	}
	/* consume what belongs to the header, exactly: it is in the socket */
	{
		size_t take = r > 0 ? (size_t)r - p->have : (size_t)n;
		unsigned char sink[PP_MAX];
		ssize_t got = recv(fd, sink, take, 0);

		if (got != (ssize_t)take) {
			ppin_fail(p, "short read of a peeked header");
			return;
		}
		p->have += take;
	}
	if (r > 0)
		ppin_done(p, &h);
}

/* ppin_timer_cb - the header did not arrive in time */
static void
ppin_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	ppin_fail(arg, "no complete header within proxy-protocol-timeout");
}

/* ppin_start - a connection on a proxy-protocol listener (takes c) */
void
ppin_start(struct worker *w, struct conf *c, int fd, const struct sockaddr *peer,
	socklen_t peerlen, unsigned lflags)
{
	struct ppin *p;
	char text[INET6_ADDRSTRLEN + 8];
	struct timeval tv;

	ppin_addr_text(peer, text, sizeof(text));
	if (c->pp_from == NULL || !list_match_addr(c->pp_from, peer)) {
		log_msg(LOG_L_WARN, 0, "proxy-protocol refuse peer=%s reason=not-in-proxy-protocol-from",
		    text);
		close(fd);
		conf_unref(c);
		return;
	}
	p = xcalloc(1, sizeof(*p));
	p->w = w;
	p->c = c;
	p->fd = fd;
	p->lflags = lflags;
	memcpy(&p->peer, peer, peerlen);
	p->peerlen = peerlen;
	memcpy(p->peer_text, text, sizeof(text));
	p->ev_read = event_new(w->base, fd, EV_READ | EV_PERSIST, ppin_read_cb, p);
	p->ev_timer = evtimer_new(w->base, ppin_timer_cb, p);
	if (p->ev_read == NULL || p->ev_timer == NULL)
		panic("event_new failed");
	p->next = ppin_list;
	if (p->next)
		p->next->prev = p;
	ppin_list = p;
	tv.tv_sec = (time_t)(c->pp_timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(c->pp_timeout_ms % 1000) * 1000;
	evtimer_add(p->ev_timer, &tv);
	event_add(p->ev_read, NULL);
}

/* ppin_free_all - close the headers still pending in this thread */
void
ppin_free_all(struct worker *w)
{
	struct ppin *p, *next;

	for (p = ppin_list; p; p = next) {
		next = p->next;
		if (p->w == w)
			ppin_free(p, true);
	}
}
