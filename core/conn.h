/*
 * conn - a non-blocking TCP connection on a libevent loop
 *
 * SYNOPSIS
 *	struct conn *conn_new(struct event_base *base, int fd, size_t rcap);
 *	int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len);
 *	void conn_setcb(struct conn *c, conn_cb on_read, conn_cb on_drain,
 *	                conn_event_cb on_event, void *arg);
 *	void conn_write(struct conn *c, const void *data, size_t len);
 *	void conn_write_buffer(struct conn *c, struct evbuffer *buf);
 *	void conn_free(struct conn *c);
size_t conn_starttls(struct conn *c, struct ssl_st *ssl, bool server);
struct ssl_st *conn_ssl(const struct conn *c);
const char *conn_tls_error(const struct conn *c);
 *	size_t conn_starttls(struct conn *c, struct ssl_st *ssl, bool server);
 *
 * DESCRIPTION
 *	What moat needs of a socket, with fewer system calls than libevent's
 *	socket bufferevents (which arm and disarm EPOLLOUT around every write
 *	and read at most 4 KiB after an ioctl(FIONREAD) each time).
 *
 *	Writes are appended to the output buffer and flushed once per loop
 *	iteration: the write event is made active (no epoll_ctl), and its
 *	callback writes everything queued with one writev (or sendfile for a
 *	file segment). Only when the socket is full is EV_WRITE really
 *	armed, with the write timeout. So all replies produced while handling
 *	one batch of input leave in one write.
 *
 *	Reads take up to 64 KiB per recv(2), until the input buffer holds
 *	rcap bytes; then reading stops until conn_input_drained() sees it
 *	below rcap again (back-pressure: the rest waits in the socket).
 *
 *	Callbacks: on_read after new input; on_drain when the output buffer
 *	has become empty after holding data (never from inside conn_write);
 *	on_event with CONN_EV_CONNECTED, CONN_EV_EOF (after on_read has seen
 *	every byte before it), CONN_EV_ERROR or CONN_EV_TIMEOUT. conn_free()
 *	may be called from inside any callback: the memory goes when the
 *	callback returns. No locks: a conn belongs to one thread.
 *
 * TLS
 *	conn_starttls() hands the connection to OpenSSL (it takes ssl, and
 *	frees it with the connection). Every input byte buffered so far is
 *	discarded at once (STARTTLS command and response injection,
 *	CVE-2011-0411: what came in plaintext after the STARTTLS command or
 *	its 220 never counts), and the count returned for the log. Reading
 *	stops until the output queued so far (the 220) is written; then the
 *	handshake runs on the same events, and on_event hears
 *	CONN_EV_TLS_READY or CONN_EV_TLS_FAILED (conn_tls_error() says why).
 *	From then on reads and writes go through SSL_read/SSL_write, with
 *	the same batching: all output queued in a loop pass leaves in as few
 *	records as fit (16 KiB each). A plaintext connection never touches
 *	OpenSSL: the TLS branches are one pointer test.
 */
#ifndef MOAT_CONN_H
#define MOAT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/event.h>

struct conn;

enum conn_ev { CONN_EV_CONNECTED = 1, CONN_EV_EOF, CONN_EV_ERROR, CONN_EV_TIMEOUT,
	CONN_EV_TLS_READY, CONN_EV_TLS_FAILED };

struct ssl_st;

typedef void (*conn_cb)(struct conn *c, void *arg);
typedef void (*conn_event_cb)(struct conn *c, enum conn_ev ev, void *arg);

struct conn *conn_new(struct event_base *base, int fd, size_t rcap);
int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len);
void conn_setcb(struct conn *c, conn_cb on_read, conn_cb on_drain,
	conn_event_cb on_event, void *arg);
void conn_set_timeouts(struct conn *c, const struct timeval *rd, const struct timeval *wr);
void conn_read_enable(struct conn *c, bool on);
struct evbuffer *conn_input(struct conn *c);
size_t conn_output_len(const struct conn *c);
void conn_input_drained(struct conn *c);
void conn_write(struct conn *c, const void *data, size_t len);
void conn_write_buffer(struct conn *c, struct evbuffer *buf);
int conn_error(const struct conn *c);
void conn_free(struct conn *c);
size_t conn_starttls(struct conn *c, struct ssl_st *ssl, bool server);
struct ssl_st *conn_ssl(const struct conn *c);
const char *conn_tls_error(const struct conn *c);

#endif
