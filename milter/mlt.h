/*
 * mlt - moat-milter: libmilter's threads bridged to one engine loop
 * (private to milter/)
 *
 * DESCRIPTION
 *	libmilter runs each MTA connection on a thread of its own and calls
 *	the xxfi_* callbacks there (mlt_cb.c). Each callback that needs a
 *	verdict makes a request (struct mlt_req) for the engine
 *	(mlt_engine.c), which owns every check's state and runs the same
 *	filters and rules as moatd on one libevent loop. The request is
 *	taken on the callback's own thread when it gets the engine lock
 *	(the engine thread lets it go while it sleeps), else posted to the
 *	engine thread; either way the callback then waits for the answer on
 *	the request's done word (a futex) until the callback deadline, and
 *	an answer the engine had at once is there without a wait. A
 *	request owns its inputs (copies); it is freed by whichever of the
 *	two sides lets go last, so a callback that gave up never leaves the
 *	engine holding freed memory, and the engine may finish a request
 *	nobody waits for.
 *
 *	The engine's per-connection state (struct mlt_conn) is allocated by
 *	the callback side at connect, initialised and used by the engine
 *	only (with the engine lock), and freed by the engine when the CLOSE
 *	request arrives: CLOSE always goes through the FIFO mailbox, and a
 *	request is taken on a callback's thread only when none of its
 *	connection is still queued, so CLOSE comes after everything else of
 *	the connection.
 *
 *	The policy (struct conf, refcounted) is the one current when the
 *	connection began, for its whole life: the callbacks take a
 *	reference at connect (mlt_policy_get()) and hand one of their own
 *	to the engine with the CONNECT request; each side drops its own
 *	when the connection closes. A reload (SIGHUP, mlt_policy.c) only
 *	changes what later connections get.
 */
#ifndef MOAT_MLT_H
#define MOAT_MLT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mailbox.h"
#include "conf.h"

/* a request's done word (a futex) */
enum { MLT_PENDING = 0, MLT_SLEEPING, MLT_DONE };

enum mlt_stage { MS_CONNECT = 0, MS_HELO, MS_MAIL, MS_RCPT, MS_EOM, MS_ABORT, MS_CLOSE,
	MS_EOH };

struct mlt_conn;
struct eng_msg;
struct eng_ahead;

struct mlt_req {
	struct mbox_link link;		/* first: the engine's mailbox */
	enum mlt_stage stage;
	struct mlt_conn *mc;
	struct mlt_req *before;		/* MAIL's, kept back: taken first (a reference) */
	uint64_t id;			/* the connection's log id */
	/* inputs, owned by the request */
	struct conf *conf;		/* connect: a reference, taken by the engine */
	struct sockaddr_storage peer;	/* connect: AF_UNSPEC when unknown */
	/* text .. tls_cert: strings, not zeroed by mlt_req_new() (it clears
	 * their first byte and the fields around them): keep them together */
	char text[1024];		/* helo name, MAIL or RCPT argument */
	char login[256];		/* mail: {auth_authen}, "" if none */
	char tls_version[32], tls_cipher[64], tls_cert[256];	/* connect, helo, mail */
	bool submission;		/* connect */
	struct eng_msg *msg;		/* eom: the message the callbacks built (engine.h) */
	struct eng_ahead *ahead;	/* eoh: names to ask ahead (engine_msg_ahead) */
	uint64_t size;			/* eom */
	bool here;			/* taken on the caller's thread (the debug line) */
	/* outputs */
	int verdict;			/* enum rules_verdict: CONTINUE, REJECT, TEMPFAIL */
	int code;
	char enh[16];
	char reply[600];
	char *hdrs;			/* eom: fields for the top, CRLF lines, allocated */
	size_t hdrs_len;
	/* between the two threads, atomics (no lock) */
	int done;			/* futex word: MLT_PENDING, MLT_SLEEPING, MLT_DONE */
	int refs;
};

struct mlt_opts {
	unsigned max_conns;		/* connections served at once */
	unsigned deadline_ms;		/* per callback */
};

/* mlt_engine.c */
int mlt_engine_start(struct conf *c, char *err, size_t errlen);
void mlt_engine_stop(void);
struct mlt_conn *mlt_conn_new(void);
struct mlt_req *mlt_req_new(struct mlt_conn *mc, enum mlt_stage st, uint64_t id);
/* post and wait until the deadline: 0 answered, -1 deadline passed */
int mlt_req_call(struct mlt_req *rq, unsigned deadline_ms);
/* post without waiting (abort, close) */
void mlt_req_post(struct mlt_req *rq);
void mlt_req_unref(struct mlt_req *rq);
uint64_t mlt_new_id(void);

/* mlt_policy.c */
void mlt_policy_init(const char *path, struct conf *c);
struct conf *mlt_policy_get(void);
void mlt_policy_done(void);

/* mlt_cb.c */
extern struct mlt_opts mlt_opts;
struct smfiDesc;
extern struct smfiDesc mlt_desc;

#endif
