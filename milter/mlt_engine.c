/*
 * mlt_engine - moat-milter's engine thread: one libevent loop that runs
 * the engine (engine/engine.h) for every MTA connection
 *
 * SYNOPSIS
 *	int mlt_engine_start(struct conf *c, char *err, size_t errlen);
 *	void mlt_engine_stop(void);
 *	struct mlt_conn *mlt_conn_new(void);
 *	struct mlt_req *mlt_req_new(struct mlt_conn *mc, enum mlt_stage st, uint64_t id);
 *	int mlt_req_call(struct mlt_req *rq, unsigned deadline_ms);
 *	void mlt_req_post(struct mlt_req *rq);
 *	void mlt_req_unref(struct mlt_req *rq);
 *	int epoll_wait(int epfd, struct epoll_event *ev, int maxevents, int timeout);
 *
 * DESCRIPTION
 *	A request is taken (take()) either on the caller's own thread or on
 *	the engine thread (below, THREADS). Taking it gives its inputs to the connection's engine session
 *	(the HELO name, the MAIL and RCPT arguments parsed once here, the
 *	message the callbacks built) and asks the engine for the stage's
 *	verdict; when the engine must wait for a check, the request waits
 *	with it and is answered from the engine's resume callback. Checks,
 *	waits, deadlines, verdicts and header fields are the engine's, the
 *	same as moatd's; the caller's own deadline (mlt_req_call) is the net
 *	under the engine's check deadline.
 *
 *	Each connection runs under the policy its CONNECT request brought
 *	(a reference, mlt_cb.c) until it closes. What is process-wide (the
 *	resolver, the DKIM verifier, the public suffix list, the greylist
 *	store and its periodic save, the DNSBL health probes) is the
 *	engine's services, started from the file read at start
 *	(engine_svc.c), with their timers on this thread's loop.
 *
 * THREADS
 *	The engine, its loop (a libevent base) and everything on it (the
 *	sessions, the libunbound context, the Redis connection, the
 *	greylist handle, timers) are not thread-safe. They belong to
 *	whoever holds the engine lock (eng.lock), and nobody touches them
 *	without it. The engine thread holds it from its start to its end,
 *	except while it sleeps in epoll_wait(): libevent's call to
 *	epoll_wait() binds to the definition here (the program's comes
 *	before libc's, as mlt_policy.c's sigwait() does; ld exports it
 *	because libevent, a library of the link, refers to it), which on
 *	the engine thread lets the lock go around a wait that may sleep
 *	(timeout not 0) and takes it back before libevent looks at what
 *	came. So when a callback holds the lock, the engine thread is
 *	asleep in the kernel or waiting for the lock: neither libevent,
 *	libunbound, hiredis nor the engine runs anywhere else.
 *
 *	A callback with a request (mlt_req_call, mlt_req_post) takes the
 *	lock (run_here()) and takes the request itself: intake, the
 *	engine's stage, and, when the engine needs no wait, the answer; no
 *	hand-over, no wake-up, no context switch. With every check of the
 *	stage answered from the caches (the resolver's, the embedded
 *	greylist store, SPF and DKIM/DMARC run cache-only) that is every
 *	stage of a message. When the stage must wait, the request stays the
 *	connection's (mc->req) as before and the engine thread answers it
 *	from the resume callback; the caller sleeps on the done word.
 *	Whatever the callback added to the loop while the engine thread
 *	slept (a query's socket and timer, a deadline, an activated event:
 *	the base's count of events changed, or the stage waits) was not in
 *	that epoll_wait() call's set or timeout: nudge() posts one item to
 *	the mailbox, so the loop turns and sees it.
 *
 *	The mailbox stays the way when the lock cannot be had: the engine
 *	thread never let it go (a libevent that does not wait in
 *	epoll_wait(): the lock is never given, so no callback ever waits
 *	for it), it is waiting for the lock after its wait (engine_wants:
 *	callbacks step aside so the loop is not starved), the lock is not
 *	had by the callback deadline (a post takes it only when free), an
 *	earlier request of the connection is still in the mailbox (queued:
 *	requests of a connection are taken in order), or the request is an
 *	abort or a close (they free the session, whose queries the loop may
 *	still report: the engine thread's). No thread takes it while it
 *	holds another lock of moat's: the others (the resolver's cache, the
 *	pool's, the mailboxes', the greylist store's) come after it, or
 *	without it (the pool's threads never take it).
 *
 *	libmilter calls one callback at a time per connection, so a
 *	connection's requests come one after the other whichever thread
 *	takes them; a request's inputs and outputs are the request's, its
 *	done word and references atomics (mlt.h), as before.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sys/epoll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "engine.h"
#include "log.h"
#include "monotime.h"
#include "mlt.h"
#include "rules.h"
#include "smtp_parse.h"
#include "textbuf.h"
#include "xalloc.h"

struct mlt_conn {
	uint64_t id;
	struct conf *conf;		/* NULL until CONNECT set it up */
	struct eng_sess *e;
	struct mlt_req *req;		/* the request being worked on */
	unsigned nrcpt;			/* recipients accepted in the transaction */
	unsigned nmsgs;			/* ends of message seen */
	bool submission;
	uint64_t start_ms;
	char *name;			/* owned: the MTA's name for the client */
	unsigned queued;		/* atomic: requests in the mailbox, not taken yet */
};

static struct {
	struct mailbox *mbox;		/* requests, to the engine's thread */
	pthread_t thread;
	/* the engine lock: whoever holds it owns the engine, the loop and
	 * everything on it (see DESCRIPTION); the engine thread holds it
	 * but while it sleeps in epoll_wait() */
	pthread_mutex_t lock;
	bool lock_given;		/* atomic: the engine thread has let it go
					 * once in epoll_wait(): callbacks may take it */
	bool engine_wants;		/* atomic: the engine thread waits for the lock */
	bool nudged;			/* atomic: nudge_item is in the mailbox */
	bool running;
	struct event_base *base;
	struct engine_loop *loop;
	uint64_t next_id;
} eng;

static struct mbox_link stop_item;	/* posted by mlt_engine_stop() */
static struct mbox_link nudge_item;	/* wakes the loop: a callback changed its events */
static _Thread_local bool on_engine_thread;

/* mlt_new_id - a log id for a connection */
uint64_t
mlt_new_id(void)
{
	return __atomic_add_fetch(&eng.next_id, 1, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------
 * Requests between the two threads
 */

/* mlt_conn_new - an engine connection, set up by its CONNECT request */
struct mlt_conn *
mlt_conn_new(void)
{
	return xcalloc(1, sizeof(struct mlt_conn));
}

struct mlt_req *
mlt_req_new(struct mlt_conn *mc, enum mlt_stage st, uint64_t id)
{
	struct mlt_req *rq = xmalloc(sizeof(*rq));

	/* zeroed but for the text buffers (2 KiB a request, three requests
	 * a message), which are read only up to their NUL: empty strings */
	memset(rq, 0, offsetof(struct mlt_req, text));
	rq->text[0] = rq->login[0] = 0;
	rq->tls_version[0] = rq->tls_cipher[0] = rq->tls_cert[0] = 0;
	memset(&rq->submission, 0, sizeof(*rq) - offsetof(struct mlt_req, submission));

	rq->mc = mc;
	rq->stage = st;
	rq->id = id;
	rq->refs = 1;
	rq->done = MLT_PENDING;
	rq->peer.ss_family = AF_UNSPEC;
	return rq;
}

/* req_free - the last reference went */
static void
req_free(struct mlt_req *rq)
{
	if (rq->before != NULL)
		mlt_req_unref(rq->before);	/* never taken (the engine stopped) */
	engine_msg_free(rq->msg);
	engine_ahead_free(rq->ahead);
	free(rq->hdrs);
	conf_unref(rq->conf);
	free(rq);
}

void
mlt_req_unref(struct mlt_req *rq)
{
	if (__atomic_sub_fetch(&rq->refs, 1, __ATOMIC_ACQ_REL) == 0)
		req_free(rq);
}

/* enqueue - to the engine, which holds one reference */
static void
enqueue(struct mlt_req *rq)
{
	__atomic_add_fetch(&rq->refs, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&rq->mc->queued, 1, __ATOMIC_RELAXED);
	mailbox_post(eng.mbox, &rq->link);
}

static bool run_here(struct mlt_req *rq, const struct timespec *end);

/* mlt_req_post - to the engine, nobody waits; the caller's reference goes */
void
mlt_req_post(struct mlt_req *rq)
{
	if (!run_here(rq, NULL))	/* the lock if free now: a post never waits */
		enqueue(rq);
	mlt_req_unref(rq);
}

/* futex - wait while *w is val (until the relative timeout), or wake one */
static void
futex_wait(int *w, int val, const struct timespec *rel)
{
	(void)syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, rel, NULL, 0);
}

static void
futex_wake(int *w)
{
	(void)syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ms_left - the time from now until the monotonic deadline end, as a
 * relative timespec; false when it has passed */
static bool
ms_left(const struct timespec *end, struct timespec *rel)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	rel->tv_sec = end->tv_sec - now.tv_sec;
	rel->tv_nsec = end->tv_nsec - now.tv_nsec;
	if (rel->tv_nsec < 0) {
		rel->tv_sec--;
		rel->tv_nsec += 1000000000L;
	}
	return rel->tv_sec >= 0 && (rel->tv_sec > 0 || rel->tv_nsec > 0);
}

/* mlt_req_call - to the engine, and wait for the answer until the
 * deadline; the caller keeps its reference. The done word goes from
 * MLT_PENDING to MLT_SLEEPING when the caller is about to sleep on it,
 * and to MLT_DONE when the engine answers, which wakes the caller only
 * when it sleeps (no system call otherwise, and no lock either way) */
int
mlt_req_call(struct mlt_req *rq, unsigned deadline_ms)
{
	struct timespec end, rel;
	int v;

	mono_deadline(&end, deadline_ms);
	if (!run_here(rq, &end))
		enqueue(rq);
	for (;;) {
		v = MLT_PENDING;
		if (!__atomic_compare_exchange_n(&rq->done, &v, MLT_SLEEPING, false, __ATOMIC_ACQ_REL,
		    __ATOMIC_ACQUIRE) && v == MLT_DONE)
			return 0;
		if (!ms_left(&end, &rel))
			break;
		futex_wait(&rq->done, MLT_SLEEPING, &rel);
	}
	return __atomic_load_n(&rq->done, __ATOMIC_ACQUIRE) == MLT_DONE ? 0 : -1;
}

/* req_complete - on the engine: the answer is in, a sleeping caller
 * wakes (the engine's reference keeps the word alive until then) */
static void
req_complete(struct mlt_req *rq)
{
	if (__atomic_exchange_n(&rq->done, MLT_DONE, __ATOMIC_ACQ_REL) == MLT_SLEEPING)
		futex_wake(&rq->done);
	mlt_req_unref(rq);
}

/* ---------------------------------------------------------------------
 * Stages
 */

static const char *
stage_name(enum mlt_stage st)
{
	static const char *const names[] = { "connect", "helo", "mail", "rcpt", "data", "abort",
	    "close", "eoh" };

	return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static enum rules_stage
rules_stage_of(enum mlt_stage st)
{
	switch (st) {
	case MS_CONNECT: return RS_CONNECT;
	case MS_HELO: return RS_HELO;
	case MS_MAIL: return RS_MAIL;
	case MS_RCPT: return RS_RCPT;
	default: return RS_DATA;
	}
}

/* mc_step - the engine's verdict for the request being worked on; a
 * wait ends in mc_resume(), which comes back here */
static void
mc_step(struct mlt_conn *mc)
{
	struct mlt_req *rq = mc->req;
	struct eng_verdict v;
	enum eng_rc rc;

	if (rq == NULL)
		return;
	rc = engine_stage(mc->e, rules_stage_of(rq->stage), &v);
	if (rc == ENG_WAIT)
		return;
	mc->req = NULL;
	rq->verdict = v.verdict == RV_REJECT || v.verdict == RV_TEMPFAIL ? (int)v.verdict :
	    RV_CONTINUE;
	rq->code = v.code;
	snprintf(rq->enh, sizeof(rq->enh), "%s", v.enh);
	snprintf(rq->reply, sizeof(rq->reply), "%s", v.text);
	switch (rq->stage) {
	case MS_EOM:
		mc->nmsgs++;
		if (rc == ENG_CONTINUE) {
			unsigned removed;

			rq->hdrs = engine_headers(mc->e, &rq->hdrs_len, &removed);
			engine_txn_accepted(mc->e, rq->text);
			/* the verdict line has the size and every recipient */
			log_msg(LOG_L_DEBUG, mc->id, "message size=%llu rcpts=%u",
			    (unsigned long long)rq->size, mc->nrcpt);
		}
		engine_txn_end(mc->e);
		mc->nrcpt = 0;
		break;
	case MS_RCPT:
		if (rc == ENG_CONTINUE)
			mc->nrcpt++;
		break;
	default:
		break;
	}
	log_msg(LOG_L_DEBUG, mc->id, "milter stage=%s taken-on=%s answered-on=%s",
	    stage_name(rq->stage), rq->here ? "callback" : "engine",
	    on_engine_thread ? "engine" : "callback");
	req_complete(rq);
}

/* mc_resume - the engine's verdict can be had now */
static void
mc_resume(void *arg)
{
	mc_step(arg);
}

/* mc_intake - a request's inputs into the engine session */
static void
mc_intake(struct mlt_conn *mc, struct mlt_req *rq)
{
	switch (rq->stage) {
	case MS_CONNECT:
		mc->id = rq->id;
		mc->conf = rq->conf;	/* the policy at connect, for the whole connection */
		rq->conf = NULL;
		if (mc->conf == NULL)
			panic("connect request without a policy");
		mc->e = engine_sess_new(eng.loop, mc->conf, mc->id,
		    rq->peer.ss_family == AF_UNSPEC ? NULL : (const struct sockaddr *)&rq->peer,
		    rq->submission, mc_resume, mc);
		mc->submission = rq->submission;
		mc->start_ms = mono_ms();
		mc->name = xstrdup(rq->text);
		break;
	case MS_HELO:
		if (rq->tls_version[0])
			engine_set_tls(mc->e, rq->tls_version, rq->tls_cipher, rq->tls_cert);
		engine_helo(mc->e, rq->text, strnlen(rq->text, SMTP_DOMAIN_MAX));
		break;
	case MS_MAIL: {
		struct smtp_addr from;
		struct smtp_mail_params mp;

		memset(&mp, 0, sizeof(mp));
		if (smtp_mail_parse(rq->text, strlen(rq->text), &from, &mp) != NULL) {
			log_msg(LOG_L_INFO, mc->id, "mail sender unparsed: taken as unknown");
			memset(&from, 0, sizeof(from));
			memset(&mp, 0, sizeof(mp));
		}
		engine_set_login(mc->e, rq->login[0] ? rq->login : NULL);
		if (rq->tls_version[0])
			engine_set_tls(mc->e, rq->tls_version, rq->tls_cipher, rq->tls_cert);
		engine_mail(mc->e, &from, &mp);
		mc->nrcpt = 0;
		break;
	}
	case MS_RCPT: {
		struct smtp_addr rcpt;
		struct smtp_rcpt_params rp;

		memset(&rp, 0, sizeof(rp));
		if (smtp_rcpt_parse(rq->text, strlen(rq->text), &rcpt, &rp, true) != NULL)
			memset(&rcpt, 0, sizeof(rcpt));
		if (!engine_in_txn(mc->e)) {
			/* a milter that missed MAIL: a null sender */
			struct smtp_addr null = { .null = true };

			engine_mail(mc->e, &null, NULL);
			mc->nrcpt = 0;
		}
		engine_rcpt(mc->e, &rcpt, mc->nrcpt);
		break;
	}
	case MS_EOM:
		if (!engine_in_txn(mc->e)) {
			struct smtp_addr null = { .null = true };

			engine_mail(mc->e, &null, NULL);
			mc->nrcpt = 0;
		}
		engine_data(mc->e, rq->msg, rq->size, mc->nrcpt, false);
		rq->msg = NULL;		/* the engine's now */
		break;
	default:
		break;
	}
}

/* mc_log_end - the connection's one info line of its own, at its end,
 * after its verdict lines: who (as those name the client), why it ended
 * (the MTA closed it; refused: moat-milter refused it at connect), its
 * count of messages and length, and what the MTA said at connect */
static void
mc_log_end(struct mlt_conn *mc, const struct mlt_req *rq)
{
	char who[ENG_WHO_SIZE], esc[LOG_ESC_SIZE], line[ENG_WHO_SIZE + LOG_ESC_SIZE + 100];
	struct textbuf b = TEXTBUF(line, sizeof(line));

	if (mc->e == NULL)
		return;		/* never set up */
	engine_txn_end(mc->e);	/* a transaction still open: its line first */
	if (!log_enabled(LOG_L_INFO))
		return;
	engine_who(mc->e, NULL, who, sizeof(who));
	log_escape(esc, sizeof(esc), mc->name ? mc->name : "", mc->name ? strlen(mc->name) : 0);
	/* appended, not printf'd: a line for every connection at info */
	tb_str(&b, "disconnect ");
	tb_str(&b, who);
	tb_str(&b, rq->code != 0 ? " reason=refused" : " reason=close");
	tb_str(&b, " messages=");
	tb_u64(&b, mc->nmsgs);
	tb_str(&b, " time=");
	tb_secs(&b, mono_ms() - mc->start_ms);
	tb_str(&b, " name=\"");
	tb_str(&b, esc);
	tb_str(&b, "\"");
	if (mc->submission)
		tb_str(&b, " submission=yes");
	log_text(LOG_L_INFO, mc->id, line, b.n);
}

/* mc_free - the connection ends: answers in flight will find nobody */
static void
mc_free(struct mlt_conn *mc)
{
	engine_sess_free(mc->e);
	if (mc->conf)
		conf_unref(mc->conf);
	free(mc->name);
	free(mc);
}

/* take - one request from the queue */
static void
take(struct mlt_req *rq)
{
	struct mlt_conn *mc = rq->mc;

	if (rq->before != NULL) {
		/* MAIL's request, kept back by the callbacks: first */
		struct mlt_req *b = rq->before;

		rq->before = NULL;
		b->here = rq->here;
		take(b);
	}
	if (rq->stage == MS_EOH) {
		/* the header is in: its DKIM keys and DMARC records are asked
		 * ahead; nobody waits, and a request being worked on goes on */
		if (mc->conf != NULL)
			engine_ahead(mc->e, rq->ahead);
		else
			engine_ahead_free(rq->ahead);
		rq->ahead = NULL;
		req_complete(rq);
		return;
	}
	if (mc->req != NULL) {
		/* the caller of the last request gave up; it ends now */
		struct mlt_req *old = mc->req;

		mc->req = NULL;
		old->verdict = RV_TEMPFAIL;
		req_complete(old);
	}
	switch (rq->stage) {
	case MS_CLOSE:
		mc_log_end(mc, rq);
		mc_free(mc);
		req_complete(rq);
		return;
	case MS_ABORT:
		if (mc->e != NULL)
			engine_txn_end(mc->e);
		mc->nrcpt = 0;
		req_complete(rq);
		return;
	default:
		break;
	}
	if (mc->conf == NULL && rq->stage != MS_CONNECT) {
		rq->verdict = RV_CONTINUE;	/* never set up: nothing to judge */
		req_complete(rq);
		return;
	}
	mc_intake(mc, rq);
	mc->req = rq;
	mc_step(mc);
}

/* wake_cb - a request (or the stop) for the engine, on its thread */
static void
wake_cb(struct mbox_link *item, void *arg)
{
	(void)arg;
	if (item == &stop_item) {
		event_base_loopbreak(eng.base);
	} else if (item == &nudge_item) {
		/* nothing to do: the loop's next turn sees the events a
		 * callback added while it slept */
		__atomic_store_n(&eng.nudged, false, __ATOMIC_RELEASE);
	} else {
		struct mlt_req *rq = (struct mlt_req *)(void *)item;

		__atomic_sub_fetch(&rq->mc->queued, 1, __ATOMIC_RELAXED);	/* before CLOSE frees it */
		take(rq);
	}
}

/* nudge - wake the engine thread's loop (once for any number of calls
 * until it ran) */
static void
nudge(void)
{
	if (!__atomic_exchange_n(&eng.nudged, true, __ATOMIC_ACQ_REL))
		mailbox_post(eng.mbox, &nudge_item);
}

static int
base_events(void)
{
	return event_base_get_num_events(eng.base, EVENT_BASE_COUNT_ACTIVE |
	    EVENT_BASE_COUNT_VIRTUAL | EVENT_BASE_COUNT_ADDED);
}

/* run_here - the request taken on the caller's thread, with the engine
 * lock (see DESCRIPTION); false when it must go through the mailbox: the
 * engine thread has never let the lock go (its loop does not sleep in
 * epoll_wait), the lock is not had by end, an earlier request of the
 * connection is still in the mailbox, or the request is an abort or a
 * close (they free what the loop may still report: the engine thread's).
 * end NULL: only a lock free at once (a post, which never waits) */
static bool
run_here(struct mlt_req *rq, const struct timespec *end)
{
	int n;
	bool wake;

	if (rq->stage == MS_ABORT || rq->stage == MS_CLOSE ||
	    !__atomic_load_n(&eng.running, __ATOMIC_ACQUIRE) ||
	    !__atomic_load_n(&eng.lock_given, __ATOMIC_ACQUIRE) ||
	    __atomic_load_n(&eng.engine_wants, __ATOMIC_ACQUIRE))
		return false;
	if (pthread_mutex_trylock(&eng.lock) != 0) {
		/* held: by the engine thread in a turn of its loop, or by
		 * another connection's callback; waited for until end (a
		 * wall-clock deadline: the monotonic one's time left) */
		struct timespec rel, abs;

		if (end == NULL || !ms_left(end, &rel))
			return false;
		clock_gettime(CLOCK_REALTIME, &abs);
		abs.tv_sec += rel.tv_sec;
		abs.tv_nsec += rel.tv_nsec;
		if (abs.tv_nsec >= 1000000000L) {
			abs.tv_sec++;
			abs.tv_nsec -= 1000000000L;
		}
		if (pthread_mutex_timedlock(&eng.lock, &abs) != 0)
			return false;
	}
	if (__atomic_load_n(&rq->mc->queued, __ATOMIC_RELAXED) != 0) {
		pthread_mutex_unlock(&eng.lock);
		return false;	/* after those, in order */
	}
	n = base_events();
	__atomic_add_fetch(&rq->refs, 1, __ATOMIC_RELAXED);	/* the engine's, as enqueue() */
	rq->here = true;
	take(rq);
	/* a check started, a timer armed, a stage waiting: the loop sleeps
	 * with a timeout and a set of events from before, so it must turn */
	wake = base_events() != n || __atomic_load_n(&rq->done, __ATOMIC_ACQUIRE) != MLT_DONE;
	pthread_mutex_unlock(&eng.lock);
	if (wake)
		nudge();
	return true;
}

/* epoll_wait - libevent's wait for its loop: this definition in the
 * program is the one libevent's call resolves to. On the engine thread,
 * a wait that may sleep lets the engine lock go and takes it back before
 * libevent looks at what came; any other caller just waits. */
int
epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	int rc, err;

	if (!on_engine_thread || timeout == 0)
		return epoll_pwait(epfd, events, maxevents, timeout, NULL);
	__atomic_store_n(&eng.lock_given, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&eng.lock);
	rc = epoll_pwait(epfd, events, maxevents, timeout, NULL);
	err = errno;
	/* callbacks take the mailbox's way until the loop has the lock */
	__atomic_store_n(&eng.engine_wants, true, __ATOMIC_RELEASE);
	pthread_mutex_lock(&eng.lock);
	__atomic_store_n(&eng.engine_wants, false, __ATOMIC_RELEASE);
	errno = err;
	return rc;
}

static void *
engine_main(void *arg)
{
	(void)arg;
	on_engine_thread = true;
	pthread_mutex_lock(&eng.lock);
	event_base_dispatch(eng.base);
	pthread_mutex_unlock(&eng.lock);
	return NULL;
}

/* ---------------------------------------------------------------------
 * Start and stop
 */

int
mlt_engine_start(struct conf *c, char *err, size_t errlen)
{
	struct engine_opts eo = { .who = "moat-milter" };

	if (getrandom(&eng.next_id, sizeof(eng.next_id), 0) != sizeof(eng.next_id))
		eng.next_id = (uint64_t)getpid() << 32;
	eng.next_id &= 0xffffffffff000000ull;
	if (engine_init(c, &eo, err, errlen) != 0)
		return -1;
	eng.base = event_base_new();
	if (eng.base == NULL) {
		snprintf(err, errlen, "event_base_new failed");
		return -1;
	}
	if (engine_metrics_open(eng.base, c, err, errlen) != 0)
		return -1;
	if (c->control_socket != NULL) {
		/* moatctl status and greylist, on this loop (the store's own) */
		const struct control_info ci = { "moat-milter", false, mlt_policy_get };

		if (control_open(eng.base, c->control_socket, &ci, err, errlen) != 0)
			return -1;
	}
	eng.loop = engine_loop_new(eng.base, c);
	/* the DNSBL probes and the greylist store's save run on this loop */
	engine_timers_start(eng.base, mlt_policy_get);
	eng.mbox = mailbox_new(eng.base, wake_cb, NULL);
	pthread_mutex_init(&eng.lock, NULL);
	eng.running = true;
	if (pthread_create(&eng.thread, NULL, engine_main, NULL) != 0) {
		snprintf(err, errlen, "pthread_create failed");
		return -1;
	}
	return 0;
}

/* mlt_engine_stop - after libmilter stopped: no callback runs any more */
void
mlt_engine_stop(void)
{
	__atomic_store_n(&eng.running, false, __ATOMIC_RELEASE);
	mailbox_post(eng.mbox, &stop_item);
	pthread_join(eng.thread, NULL);
	/* a callback still inside run_here() (libmilter has stopped: none
	 * should be) finishes before the engine goes; none starts again */
	pthread_mutex_lock(&eng.lock);
	pthread_mutex_unlock(&eng.lock);
	engine_timers_stop();
	engine_shutdown();	/* the pool, the resolver, the loop's parts, the store saved */
	control_close();
	mailbox_free(eng.mbox);
	event_base_free(eng.base);
}
