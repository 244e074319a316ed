/*
 * conn - a non-blocking TCP connection on a libevent loop (see conn.h)
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "log.h"
#include "xalloc.h"

#define CONN_READ_CHUNK  (64 * 1024)
#define CONN_READS_MAX   4	/* recv calls per read event, for fairness */
#define CONN_TLS_READS_MAX 16	/* SSL_read calls (a record each) per read event */
#define CONN_TLS_RECORD  16384	/* bytes per SSL_write: one full record */

enum conn_tls { CT_NONE = 0, CT_PENDING, CT_HANDSHAKE, CT_ON };

struct conn {
	int fd;
	struct event ev_read, ev_write;
	struct evbuffer *in, *out;
	size_t rcap;
	conn_cb on_read, on_drain;
	conn_event_cb on_event;
	void *arg;
	struct timeval rd_tv, wr_tv;
	bool has_rd_tv, has_wr_tv;
	bool want_read;		/* the owner wants input */
	bool read_added;	/* ev_read is pending */
	bool write_added;	/* ev_write is pending (socket full, or connecting) */
	bool connecting;
	bool had_output;	/* on_drain owed when the output empties */
	int err;		/* sticky errno of a failed write or connect */
	int in_cb;
	bool free_pending;
	unsigned char tls;	/* enum conn_tls */
	bool tls_server;
	bool tls_wr_wants_read;	/* SSL_write asked for input first */
	SSL *ssl;		/* NULL: plaintext */
	const char *tls_why;	/* static text of a failed handshake */
};

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(evutil_socket_t fd, short what, void *arg);

/* conn_new - wrap a connected socket (or -1, for conn_connect) */
struct conn *
conn_new(struct event_base *base, int fd, size_t rcap)
{
	struct conn *c = xcalloc(1, sizeof(*c));

	c->fd = fd;
	c->rcap = rcap;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	if (c->in == NULL || c->out == NULL)
		panic("evbuffer_new failed");
	event_assign(&c->ev_read, base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	/* one-shot: a persistent event made active by hand would be re-added
	 * by libevent with its old timeout, and then fire on every pass */
	event_assign(&c->ev_write, base, fd, EV_WRITE, conn_write_cb, c);
	return c;
}

/* conn_real_free - release everything */
static void
conn_real_free(struct conn *c)
{
	event_del(&c->ev_read);
	event_del(&c->ev_write);
	evbuffer_free(c->in);
	evbuffer_free(c->out);
	if (c->ssl != NULL) {
		if (c->tls == CT_ON && c->err == 0) {
			/* close_notify, best effort: the socket is non-blocking */
			SSL_shutdown(c->ssl);
		}
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* conn_free - close; deferred to the end of a callback running for c */
void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->in_cb > 0) {
		c->free_pending = true;
		c->on_read = c->on_drain = NULL;
		c->on_event = NULL;
		event_del(&c->ev_read);
		event_del(&c->ev_write);
		return;
	}
	conn_real_free(c);
}

/* conn_leave - end of a callback: free now if asked to meanwhile */
static bool
conn_leave(struct conn *c)
{
	if (--c->in_cb == 0 && c->free_pending) {
		conn_real_free(c);
		return true;
	}
	return false;
}

/* conn_setcb - who hears about this connection */
void
conn_setcb(struct conn *c, conn_cb on_read, conn_cb on_drain, conn_event_cb on_event, void *arg)
{
	c->on_read = on_read;
	c->on_drain = on_drain;
	c->on_event = on_event;
	c->arg = arg;
}

/* conn_update_read - add or remove the read event as wanted */
static void
conn_update_read(struct conn *c)
{
	bool want = c->want_read && !c->connecting && !c->free_pending &&
	    evbuffer_get_length(c->in) < c->rcap && c->fd >= 0;

	if (c->tls == CT_PENDING)
		want = false;	/* nothing is read until the 220 is out */
	else if (c->tls == CT_HANDSHAKE)
		want = !c->free_pending && c->fd >= 0;

	if (want && !c->read_added) {
		/* event_add(NULL) would keep an old timeout: start clean */
		event_del(&c->ev_read);
		event_add(&c->ev_read, c->has_rd_tv ? &c->rd_tv : NULL);
		c->read_added = true;
	} else if (!want && c->read_added) {
		event_del(&c->ev_read);
		c->read_added = false;
	}
	/* decrypted bytes OpenSSL holds raise no epoll event: go and get them */
	if (want && c->tls == CT_ON && SSL_pending(c->ssl) > 0)
		event_active(&c->ev_read, EV_READ, 0);
}

/* conn_tv_same - are two optional timeouts equal? */
static bool
conn_tv_same(bool has_a, const struct timeval *a, const struct timeval *b)
{
	if (!has_a || b == NULL)
		return !has_a && b == NULL;
	return a->tv_sec == b->tv_sec && a->tv_usec == b->tv_usec;
}

/* conn_set_timeouts - read idle timeout, write stall timeout; NULL = none.
 * Changing a pending event's timeout to another timeout costs no system
 * call; dropping it (NULL) costs two, so callers that toggle often should
 * pass a long timeout rather than NULL. */
void
conn_set_timeouts(struct conn *c, const struct timeval *rd, const struct timeval *wr)
{
	bool rd_same = conn_tv_same(c->has_rd_tv, &c->rd_tv, rd);
	bool wr_same = conn_tv_same(c->has_wr_tv, &c->wr_tv, wr);

	c->has_rd_tv = rd != NULL;
	if (rd)
		c->rd_tv = *rd;
	c->has_wr_tv = wr != NULL;
	if (wr)
		c->wr_tv = *wr;
	if (!rd_same && c->read_added) {
		if (rd != NULL) {
			/* Its timeout may have fired in this loop pass, the
			 * callback still to run: libevent then holds it out of
			 * the I/O set, and event_add() would only take it off
			 * the active list, so no input would ever be read.
			 * Start clean then (the old deadline is moot). */
			if (!event_pending(&c->ev_read, EV_READ, NULL))
				event_del(&c->ev_read);
			event_add(&c->ev_read, &c->rd_tv);	/* new deadline, same fd */
		} else {
			c->read_added = false;
			conn_update_read(c);
		}
	}
	if (!wr_same && c->write_added) {
		if (wr == NULL)
			event_del(&c->ev_write);
		event_add(&c->ev_write, wr ? &c->wr_tv : NULL);
	}
}

/* conn_read_enable - start or stop taking input */
void
conn_read_enable(struct conn *c, bool on)
{
	c->want_read = on;
	conn_update_read(c);
}

/* conn_input - the input buffer (borrowed) */
struct evbuffer *
conn_input(struct conn *c)
{
	return c->in;
}

/* conn_output_len - bytes not yet written */
size_t
conn_output_len(const struct conn *c)
{
	return evbuffer_get_length(c->out);
}

/* conn_input_drained - the owner consumed input: read again if paused */
void
conn_input_drained(struct conn *c)
{
	if (!c->read_added)
		conn_update_read(c);
}

/* conn_error - the errno of a failed write or connect, or 0 */
int
conn_error(const struct conn *c)
{
	return c->err;
}

/* conn_schedule - have the write callback run in this loop iteration */
static void
conn_schedule(struct conn *c)
{
	c->had_output = true;
	/* before conn_connect() there is no socket: the bytes wait, and go
	 * once the connection is up */
	if (!c->write_added && !c->free_pending && c->fd >= 0)
		event_active(&c->ev_write, EV_WRITE, 0);
}

/* conn_write - queue bytes; they leave with everything else queued now */
void
conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->err || len == 0)
		return;
	if (evbuffer_add(c->out, data, len) != 0)
		panic("evbuffer_add failed");
	conn_schedule(c);
}

/* conn_write_buffer - queue a whole buffer (moved, file segments kept) */
void
conn_write_buffer(struct conn *c, struct evbuffer *buf)
{
	if (c->err) {
		evbuffer_drain(buf, evbuffer_get_length(buf));
		return;
	}
	if (evbuffer_add_buffer(c->out, buf) != 0)
		panic("evbuffer_add_buffer failed");
	conn_schedule(c);
}

/* conn_connect - start connecting; 0, or -1 with errno */
int
conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len)
{
	int fd, one = 1;
	struct event_base *base = event_get_base(&c->ev_read);

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	c->fd = fd;
	event_assign(&c->ev_read, base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	event_assign(&c->ev_write, base, fd, EV_WRITE, conn_write_cb, c);
	c->connecting = true;
	c->write_added = true;
	event_add(&c->ev_write, c->has_wr_tv ? &c->wr_tv : NULL);
	return 0;
}

/* conn_fire - report an event to the owner */
static void
conn_fire(struct conn *c, enum conn_ev ev)
{
	if (c->on_event && !c->free_pending)
		c->on_event(c, ev, c->arg);
}

/* conn_tls_fail - the handshake failed: say why once */
static void
conn_tls_fail(struct conn *c)
{
	unsigned long e = ERR_peek_error();
	const char *why = e != 0 ? ERR_reason_error_string(e) : NULL;

	c->tls_why = why != NULL ? why : "handshake failed";
	ERR_clear_error();
	c->err = EPROTO;
	c->tls = CT_NONE;	/* no close_notify, no more I/O */
	event_del(&c->ev_read);
	c->read_added = false;
	c->want_read = false;
	conn_fire(c, CONN_EV_TLS_FAILED);
}

/* conn_tls_step - drive the handshake as far as the socket allows */
static void
conn_tls_step(struct conn *c)
{
	int r, e;

	ERR_clear_error();
	r = c->tls_server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
	if (r == 1) {
		c->tls = CT_ON;
		conn_fire(c, CONN_EV_TLS_READY);
		if (!c->free_pending) {
			conn_update_read(c);
			if (evbuffer_get_length(c->out) > 0 && !c->write_added)
				event_active(&c->ev_write, EV_WRITE, 0);
		}
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		conn_update_read(c);
		return;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		if (!c->write_added) {
			event_add(&c->ev_write, c->has_wr_tv ? &c->wr_tv : NULL);
			c->write_added = true;
		}
		return;
	}
	conn_tls_fail(c);
}

/* conn_read_done - after a read pass (plain or TLS): hand what came to the
 * owner, then report the end or an error, or keep reading */
static void
conn_read_done(struct conn *c, bool got, bool eof, int err)
{
	if (got && c->on_read && !c->free_pending)
		c->on_read(c, c->arg);
	if (!c->free_pending) {
		if (eof || err) {
			event_del(&c->ev_read);
			c->read_added = false;
			c->want_read = false;
			if (err)
				c->err = err;
			conn_fire(c, eof ? CONN_EV_EOF : CONN_EV_ERROR);
		} else {
			conn_update_read(c);
		}
	}
}

/* conn_reserve - room in c->in for one read: up to the read cap, at most
 * CONN_READ_CHUNK bytes, in v (commit it with evbuffer_commit_space);
 * its size, 0 (nothing reserved) when the input is at its cap */
static size_t
conn_reserve(struct conn *c, struct evbuffer_iovec *v)
{
	size_t have = evbuffer_get_length(c->in), want;

	if (have >= c->rcap)
		return 0;
	want = c->rcap - have;
	if (want > CONN_READ_CHUNK)
		want = CONN_READ_CHUNK;
	if (evbuffer_reserve_space(c->in, (ev_ssize_t)want, v, 1) < 1)
		panic("evbuffer_reserve_space failed");
	if (v->iov_len > want)
		v->iov_len = want;
	return want;
}

/* conn_tls_read - TLS input (or handshake progress) on a read event */
static void
conn_tls_read(struct conn *c)
{
	bool eof = false, got = false;
	int err = 0;

	if (c->tls == CT_HANDSHAKE) {
		conn_tls_step(c);
		return;
	}
	if (c->tls != CT_ON)
		return;
	if (c->tls_wr_wants_read) {
		c->tls_wr_wants_read = false;
		if (!c->write_added)
			event_active(&c->ev_write, EV_WRITE, 0);
	}
	for (int i = 0; i < CONN_TLS_READS_MAX; i++) {
		struct evbuffer_iovec v;
		int r, e;

		if (conn_reserve(c, &v) == 0)
			break;
		ERR_clear_error();
		errno = 0;
		r = SSL_read(c->ssl, v.iov_base, (int)v.iov_len);
		if (r > 0) {
			v.iov_len = (size_t)r;
			evbuffer_commit_space(c->in, &v, 1);
			got = true;
			continue;
		}
		evbuffer_commit_space(c->in, &v, 0);
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_WANT_WRITE) {
			if (!c->write_added) {
				event_add(&c->ev_write, c->has_wr_tv ? &c->wr_tv : NULL);
				c->write_added = true;
			}
			break;
		}
		if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
			eof = true;
		else
			err = errno != 0 ? errno : EPROTO;
		ERR_clear_error();
		break;
	}
	conn_read_done(c, got, eof, err);
}

/* conn_starttls - see conn.h */
size_t
conn_starttls(struct conn *c, SSL *ssl, bool server)
{
	size_t dropped = evbuffer_get_length(c->in);

	evbuffer_drain(c->in, dropped);
	c->ssl = ssl;
	c->tls_server = server;
	c->tls = CT_PENDING;
	SSL_set_fd(ssl, c->fd);
	conn_update_read(c);
	/* the handshake begins in the write callback, once the output
	 * queued so far (the 220) is gone */
	if (!c->write_added && !c->free_pending)
		event_active(&c->ev_write, EV_WRITE, 0);
	return dropped;
}

/* conn_ssl - the TLS object, or NULL (borrowed) */
SSL *
conn_ssl(const struct conn *c)
{
	return c->tls == CT_ON ? c->ssl : NULL;
}

/* conn_tls_error - why the handshake failed (static text), or NULL */
const char *
conn_tls_error(const struct conn *c)
{
	return c->tls_why;
}

/* conn_read_cb - input, EOF or the read timeout */
static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	bool eof = false, got = false;
	int err = 0;

	c->in_cb++;
	if (what & EV_TIMEOUT) {
		conn_fire(c, CONN_EV_TIMEOUT);
		conn_leave(c);
		return;
	}
	if (c->ssl != NULL) {
		conn_tls_read(c);
		conn_leave(c);
		return;
	}
	for (int i = 0; i < CONN_READS_MAX; i++) {
		struct evbuffer_iovec v;
		size_t want;
		ssize_t r;

		if ((want = conn_reserve(c, &v)) == 0)
			break;
		r = recv(fd, v.iov_base, v.iov_len, 0);
		if (r > 0) {
			v.iov_len = (size_t)r;
			evbuffer_commit_space(c->in, &v, 1);
			got = true;
			if ((size_t)r < want)
				break;	/* the socket is most likely empty now */
			continue;
		}
		evbuffer_commit_space(c->in, &v, 0);
		if (r == 0)
			eof = true;
		else if (errno == EINTR)
			continue;
		else if (errno != EAGAIN && errno != EWOULDBLOCK)
			err = errno;
		break;
	}
	conn_read_done(c, got, eof, err);
	conn_leave(c);
}

/* conn_tls_flush - SSL_write what is queued, a full record at a time */
static bool
conn_tls_flush(struct conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		size_t n = evbuffer_get_length(c->out);
		unsigned char *p;
		int r, e;

		if (n > CONN_TLS_RECORD)
			n = CONN_TLS_RECORD;
		p = evbuffer_pullup(c->out, (ev_ssize_t)n);
		if (p == NULL)
			panic("evbuffer_pullup failed");
		ERR_clear_error();
		errno = 0;
		r = SSL_write(c->ssl, p, (int)n);
		if (r > 0) {
			evbuffer_drain(c->out, (size_t)r);
			continue;
		}
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_WRITE)
			return true;
		if (e == SSL_ERROR_WANT_READ) {
			c->tls_wr_wants_read = true;	/* the read callback resumes us */
			return true;
		}
		ERR_clear_error();
		c->err = errno != 0 ? errno : EPIPE;
		return false;
	}
	return true;
}

/* conn_flush - write what is queued; false on a fatal error */
static bool
conn_flush(struct conn *c)
{
	if (c->ssl != NULL && c->tls != CT_PENDING)	/* the 220 goes in plaintext */
		return c->tls == CT_ON ? conn_tls_flush(c) : true;
	while (evbuffer_get_length(c->out) > 0) {
		int r = evbuffer_write(c->out, c->fd);
		if (r > 0)
			continue;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		c->err = r < 0 ? errno : EPIPE;
		return false;
	}
	return true;
}

/* conn_write_cb - connected, writable, scheduled flush, or stalled */
static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	c->in_cb++;
	c->write_added = false;		/* a one-shot event is never pending here */
	if (c->connecting) {
		int e = 0;
		socklen_t el = sizeof(e);

		if (what & EV_TIMEOUT) {
			conn_fire(c, CONN_EV_TIMEOUT);
			conn_leave(c);
			return;
		}
		if (!(what & EV_WRITE)) {
			/* a scheduled flush: wait for the connect */
			event_add(&c->ev_write, c->has_wr_tv ? &c->wr_tv : NULL);
			c->write_added = true;
			conn_leave(c);
			return;
		}
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
			e = errno;
		if (e != 0) {
			c->err = e;
			conn_fire(c, CONN_EV_ERROR);
			conn_leave(c);
			return;
		}
		c->connecting = false;
		conn_fire(c, CONN_EV_CONNECTED);
		if (c->free_pending) {
			conn_leave(c);
			return;
		}
		conn_update_read(c);
	} else if ((what & EV_TIMEOUT) && !(what & EV_WRITE)) {
		conn_fire(c, CONN_EV_TIMEOUT);
		conn_leave(c);
		return;
	}
	if (c->free_pending) {
		conn_leave(c);
		return;
	}
	if (c->tls == CT_HANDSHAKE) {
		conn_tls_step(c);
		conn_leave(c);
		return;
	}
	if (!conn_flush(c)) {
		conn_fire(c, CONN_EV_ERROR);
		conn_leave(c);
		return;
	}
	if (evbuffer_get_length(c->out) > 0) {
		/* the socket is full: now, and only now, wait for EPOLLOUT */
		if (!c->tls_wr_wants_read) {
			event_add(&c->ev_write, c->has_wr_tv ? &c->wr_tv : NULL);
			c->write_added = true;
		}
	} else {
		if (c->had_output) {
			c->had_output = false;
			if (c->on_drain && !c->free_pending)
				c->on_drain(c, c->arg);
		}
		if (c->tls == CT_PENDING && !c->free_pending) {
			c->tls = CT_HANDSHAKE;
			conn_tls_step(c);
		}
	}
	conn_leave(c);
}
