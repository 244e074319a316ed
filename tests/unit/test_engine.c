/*
 * test_engine - the engine driven as a front-end drives it, without
 * sockets: dialogues (connect, helo, mail, rcpt, data) against small
 * policies, each row one named case; waits and resumes with a stand-in
 * resolver that answers from the loop (or never); the check deadline;
 * answers that come after a deadline, a new question, the end of the
 * transaction or the session's free; greylisting on the embedded store
 * with a driven clock; SPF through the work pool with a stand-in for the
 * synchronous resolver; the message scanner (forged Authentication-
 * Results, the header From).
 *
 * The engine's services are process-wide (engine_g): each case opens
 * them for its policy (engine_init, a loop, the stand-in) and shuts them
 * down at its end, after every session is freed and every question the
 * stand-in still holds got its answer (a resolver always answers once).
 * dns-timeout is 100ms, so the check deadline is 700ms: the cases that
 * wait for it take about 0.7 and 1.4 seconds.
 *
 * A case that shows a known engine bug is marked with the bug (what and
 * where): while it fails it is reported as "KNOWN BUG (not counted)";
 * once the engine is fixed it fails until its mark is taken away.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf.h"
#include "dns.h"
#include "engine.h"
#include "engine_int.h"
#include "greylist.h"
#include "log.h"
#include "rules.h"
#include "smtp_parse.h"
#include "spf.h"
#include "t.h"

#define DEADLINE_MS 700		/* 2 * dns-timeout (100ms) + 500ms */

/* case_begin - start one named case (a table row counts as one) */
static void
case_begin(const char *name)
{
	t_cur = name;
	t_cur_failed = 0;
}

/* case_end - count it */
static void
case_end(void)
{
	if (t_cur_failed)
		t_fail++;
	else
		t_pass++;
}

/* case_end_bug - a case that shows a known engine bug (bug: what and
 * where; NULL: none). While it fails it is reported, not counted; once it
 * passes it fails, so that the mark is taken away with the fix. */
static void
case_end_bug(const char *bug)
{
	if (bug == NULL) {
		case_end();
	} else if (t_cur_failed) {
		fprintf(stderr, "KNOWN BUG (not counted) %s: %s\n", t_cur, bug);
	} else {
		fprintf(stderr, "FAIL %s: passes now: remove its known-bug mark (%s)\n", t_cur, bug);
		t_fail++;
	}
}

/* now_ms - monotonic milliseconds */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------
 * The engine's services, one policy at a time
 */

static struct {
	struct conf *c;
	struct event_base *base;
	struct engine_loop *el;
} env;

static const char *head =
    "listen 127.0.0.1:2525\n"
    "upstream 127.0.0.1:10025\n"
    "hostname mx.moat.test\n"
    "dns-timeout 100ms\n";

/* has_setting - does the policy text set this (a line that starts with it)? */
static bool
has_setting(const char *text, const char *name)
{
	size_t n = strlen(name);
	const char *p = text;

	while (p != NULL) {
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return true;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return false;
}

/* load - head, the checks this policy does not name turned off, and the
 * policy, from a temp file */
static struct conf *
load(const char *text, char **errs)
{
	char p[] = "/tmp/moat-test-engine-XXXXXX";
	int fd = mkstemp(p);
	struct conf *c;
	char offs[64];

	if (fd < 0)
		return NULL;
	snprintf(offs, sizeof(offs), "%s%s%s", has_setting(text, "spf") ? "" : "spf no\n",
	    has_setting(text, "dkim") ? "" : "dkim no\n",
	    has_setting(text, "dmarc") ? "" : "dmarc off\n");
	if (write(fd, head, strlen(head)) < 0 || write(fd, offs, strlen(offs)) < 0 ||
	    write(fd, text, strlen(text)) < 0) {
		close(fd);
		unlink(p);
		return NULL;
	}
	close(fd);
	c = conf_load(p, errs);
	unlink(p);
	return c;
}

static int fake_query(struct dns_loop *l, const char *name, int rrtype, unsigned timeout_ms,
	engine_dns_cb cb, void *ctx, uint64_t tag);
static void fake_reset(void);
static void fake_drain(void);
static void gate_set(bool open);

/* env_open - the services for this policy, a loop, the stand-in resolver */
static bool
env_open(const char *policy)
{
	struct engine_opts o = { .who = "test_engine", .no_network = true, .quiet_start = true };
	char *errs = NULL, err[512] = "";

	memset(&env, 0, sizeof(env));
	env.c = load(policy, &errs);
	T_CHECKF(env.c != NULL, "policy: %s", errs ? errs : "(no file)");
	free(errs);
	if (env.c == NULL)
		return false;
	if (engine_init(env.c, &o, err, sizeof(err)) != 0) {
		T_CHECKF(0, "engine_init: %s", err);
		engine_shutdown();
		conf_unref(env.c);
		return false;
	}
	env.base = event_base_new();
	env.el = engine_loop_new(env.base, env.c);
	fake_reset();
	engine_loop_set_query(env.el, fake_query);
	return true;
}

/* env_close - every session is gone: answer what is still asked, stop */
static void
env_close(void)
{
	gate_set(true);
	fake_drain();
	engine_shutdown();
	event_base_free(env.base);
	conf_unref(env.c);
	memset(&env, 0, sizeof(env));
}

/* guard_cb - run_until's time is up */
static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

/* run_until - the loop, until *count reaches want (NULL: never) or max_ms
 * passed; true when it was reached */
static bool
run_until(const int *count, int want, unsigned max_ms)
{
	bool expired = false;
	struct event *g = evtimer_new(env.base, guard_cb, &expired);
	struct timeval tv = { (time_t)(max_ms / 1000), (suseconds_t)(max_ms % 1000) * 1000 };

	evtimer_add(g, &tv);
	while ((count == NULL || *count < want) && !expired)
		event_base_loop(env.base, EVLOOP_ONCE);
	event_free(g);
	return count != NULL && *count >= want;
}

/* ---------------------------------------------------------------------
 * The stand-in resolver: keeps each question; answers those its table
 * knows from the loop (a zero-delay timer), the others when the test
 * says, or never (then env_close gives them the resolver's timeout)
 */

struct fans {
	const char *name;
	int rrtype;
	enum dns_status st;
	const char *value;	/* A: the address; PTR: the name */
};

#define FQ_MAX 64

struct fq {
	char name[320];
	int rrtype;
	engine_dns_cb cb;
	void *ctx;
	uint64_t tag;
	bool scheduled, answered;
	enum dns_status st;
	char value[256];
};

static struct {
	struct fq q[FQ_MAX];
	int n;
	int answered;
	bool refuse;			/* refuse every question (overload) */
	const struct fans *table;	/* answered at once, from the loop */
} fake;

/* fake_reset - no question asked yet */
static void
fake_reset(void)
{
	memset(&fake, 0, sizeof(fake));
}

/* deliver_cb - one answer, from the loop */
static void
deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fq *q = arg;
	struct dns_answer a;
	char rd[300], *data[1];
	int len[1];

	(void)fd;
	(void)what;
	memset(&a, 0, sizeof(a));
	a.status = q->st;
	a.rrtype = q->rrtype;
	if (q->st == DNS_OK) {
		if (q->rrtype == DNS_T_A) {
			inet_pton(AF_INET, q->value, rd);
			len[0] = 4;
		} else {
			len[0] = t_wire_name(q->value, rd);
		}
		data[0] = rd;
		a.data = data;
		a.len = len;
		a.n = 1;
	} else if (q->st == DNS_TEMPERROR) {
		a.why = "timeout";
	}
	q->answered = true;
	fake.answered++;
	q->cb(q->ctx, q->tag, &a);
}

/* fake_answer - answer question i from the loop, at its next turn */
static void
fake_answer(int i, enum dns_status st, const char *value)
{
	static const struct timeval zero = { 0, 0 };
	struct fq *q = &fake.q[i];

	if (i < 0 || i >= fake.n || q->scheduled)
		return;
	q->scheduled = true;
	q->st = st;
	snprintf(q->value, sizeof(q->value), "%s", value ? value : "");
	event_base_once(env.base, -1, EV_TIMEOUT, deliver_cb, q, &zero);
}

/* fake_query - the loop's engine_query_fn: keep the question */
static int
fake_query(struct dns_loop *l, const char *name, int rrtype, unsigned timeout_ms,
	engine_dns_cb cb, void *ctx, uint64_t tag)
{
	struct fq *q;

	(void)l;
	T_CHECKF(timeout_ms == 100, "query timeout %u", timeout_ms);
	if (fake.refuse)
		return -1;
	T_CHECK(fake.n < FQ_MAX);
	if (fake.n >= FQ_MAX)
		return -1;
	q = &fake.q[fake.n++];
	memset(q, 0, sizeof(*q));
	snprintf(q->name, sizeof(q->name), "%s", name);
	q->rrtype = rrtype;
	q->cb = cb;
	q->ctx = ctx;
	q->tag = tag;
	for (const struct fans *t = fake.table; t != NULL && t->name != NULL; t++)
		if (strcasecmp(t->name, name) == 0 && t->rrtype == rrtype) {
			fake_answer(fake.n - 1, t->st, t->value);
			break;
		}
	return 0;
}

/* fake_drain - what was never answered gets the resolver's timeout */
static void
fake_drain(void)
{
	for (int i = 0; i < fake.n; i++)
		fake_answer(i, DNS_TEMPERROR, NULL);
	run_until(&fake.answered, fake.n, 2000);
	T_CHECKF(fake.answered == fake.n, "%d of %d questions answered", fake.answered, fake.n);
}

/* ---------------------------------------------------------------------
 * The stand-in for SPF's synchronous resolver (spf_set_resolver): on the
 * loop (the engine's cache-only try) it hands over to dns_query_sync,
 * which finds nothing cached, so SPF goes to the work pool; there it
 * answers from a small zone. slow.test waits for the gate; nores.test
 * goes to dns_query_sync, which has no resolver: temperror.
 */

static pthread_t main_thread;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open = true;
static atomic_int slow_answered;

/* gate_set - let slow.test's SPF answer go (true) or hold it */
static void
gate_set(bool open)
{
	pthread_mutex_lock(&gate_lock);
	gate_open = open;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

struct spf_ans {
	struct dns_answer a;	/* first: freed as one */
	char *data[1];
	int len[1];
	char buf[300];
};

/* spf_query, spf_free - the stand-in (struct spf_resolver) */
static int
spf_query(void *ctx, const char *name, int rrtype, unsigned ms, struct dns_answer **out)
{
	static const struct { const char *name; const char *txt; } zone[] = {
		{ "pass.test", "v=spf1 +all" },
		{ "fail.test", "v=spf1 -all" },
		{ "slow.test", "v=spf1 -all" },
	};
	struct spf_ans *f;
	char n[300];
	size_t nl = strlen(name);
	bool slow;

	(void)ctx;
	snprintf(n, sizeof(n), "%.*s", (int)(nl > 0 && name[nl - 1] == '.' ? nl - 1 : nl), name);
	if (pthread_equal(pthread_self(), main_thread) || strcasecmp(n, "nores.test") == 0)
		return dns_query_sync(name, rrtype, ms, out);
	slow = strcasecmp(n, "slow.test") == 0;
	if (slow) {
		pthread_mutex_lock(&gate_lock);
		while (!gate_open)
			pthread_cond_wait(&gate_cond, &gate_lock);
		pthread_mutex_unlock(&gate_lock);
	}
	f = calloc(1, sizeof(*f));
	f->a.rrtype = rrtype;
	f->a.data = f->data;
	f->a.len = f->len;
	f->a.status = DNS_NXDOMAIN;
	for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++) {
		size_t tl = strlen(zone[i].txt);

		if (strcasecmp(zone[i].name, n) != 0)
			continue;
		f->a.status = DNS_NODATA;
		if (rrtype != DNS_T_TXT)
			break;
		f->buf[0] = (char)tl;
		memcpy(f->buf + 1, zone[i].txt, tl);
		f->data[0] = f->buf;
		f->len[0] = (int)tl + 1;
		f->a.n = 1;
		f->a.status = DNS_OK;
	}
	*out = &f->a;
	if (slow)
		atomic_fetch_add(&slow_answered, 1);
	return 0;
}

static void
spf_free(void *ctx, struct dns_answer *a)
{
	(void)ctx;
	free(a);	/* ours and dns_query_sync's are one allocation each */
}

static const struct spf_resolver spf_fake = { spf_query, spf_free, NULL };

/* ---------------------------------------------------------------------
 * A session as a front-end holds it
 */

struct sess {
	struct eng_sess *e;
	struct sockaddr_storage ss;
	int resumed;
	uint64_t t_resume;
	unsigned nrcpt;			/* recipients accepted */
	char out[4096];			/* the message as the scanner passed it */
	size_t outlen;
};

static bool in_engine;		/* resume must never come from inside an engine call */

/* on_resume - the engine's resume: counted and timed */
static void
on_resume(void *arg)
{
	struct sess *s = arg;

	T_CHECKF(!in_engine, "resume from inside an engine_* call");
	s->resumed++;
	s->t_resume = now_ms();
}

/* on_out - the message as the scanner passes it on */
static void
on_out(void *arg, const unsigned char *buf, size_t len)
{
	struct sess *s = arg;

	if (s->outlen + len < sizeof(s->out)) {
		memcpy(s->out + s->outlen, buf, len);
		s->outlen += len;
	}
}

/* sess_open - a session of the loop for ip (NULL: no address known) */
static void
sess_open(struct sess *s, const char *ip, uint64_t id)
{
	memset(s, 0, sizeof(*s));
	in_engine = true;
	s->e = engine_sess_new(env.el, env.c, id, ip ? t_sockaddr(ip, &s->ss) : NULL, false, on_resume,
	    s);
	in_engine = false;
}

/* sess_close - engine_sess_free; the struct stays for the checks after */
static void
sess_close(struct sess *s)
{
	engine_sess_free(s->e);
	s->e = NULL;
}

/* stage_once - one engine_stage() call, flagged as inside the engine */
static enum eng_rc
stage_once(struct sess *s, enum rules_stage st, struct eng_verdict *v)
{
	enum eng_rc rc;

	in_engine = true;
	rc = engine_stage(s->e, st, v);
	in_engine = false;
	return rc;
}

/* stage - a stage's verdict as a front-end gets it: on ENG_WAIT the loop
 * runs until resume, then the stage is asked again (which must not wait
 * again); *waited tells whether it waited */
static enum eng_rc
stage(struct sess *s, enum rules_stage st, struct eng_verdict *v, bool *waited)
{
	enum eng_rc rc = stage_once(s, st, v);
	int before = s->resumed;

	*waited = rc == ENG_WAIT;
	if (rc != ENG_WAIT)
		return rc;
	if (!run_until(&s->resumed, before + 1, 3 * DEADLINE_MS)) {
		T_CHECKF(0, "stage %s: no resume", rules_stage_name(st));
		return ENG_WAIT;
	}
	rc = stage_once(s, st, v);
	T_CHECKF(rc != ENG_WAIT, "stage %s waits again after resume", rules_stage_name(st));
	return rc;
}

/* do_helo, do_mail, do_rcpt, do_txn_end - the inputs, as a front-end
 * gives them once it has parsed the command */
static void
do_helo(struct sess *s, const char *name)
{
	in_engine = true;
	engine_helo(s->e, name, strlen(name));
	in_engine = false;
}

static void
do_mail(struct sess *s, const char *path)
{
	struct smtp_addr a;
	struct smtp_mail_params mp;

	memset(&mp, 0, sizeof(mp));
	T_CHECKF(smtp_mail_parse(path, strlen(path), &a, &mp) == NULL, "MAIL %s", path);
	in_engine = true;
	engine_mail(s->e, &a, &mp);
	in_engine = false;
}

static void
do_rcpt(struct sess *s, const char *path)
{
	struct smtp_addr a;
	struct smtp_rcpt_params rp;

	memset(&rp, 0, sizeof(rp));
	T_CHECKF(smtp_rcpt_parse(path, strlen(path), &a, &rp, false) == NULL, "RCPT %s", path);
	in_engine = true;
	engine_rcpt(s->e, &a, s->nrcpt);
	in_engine = false;
}

/* do_data - the message through the scanner in small chunks, then to the
 * engine; size: what the front-end counted (0: the message's length) */
static void
do_data(struct sess *s, const char *msg, uint64_t size)
{
	struct eng_msg *m = engine_msg_new(env.c, on_out, s);
	size_t len = strlen(msg);

	s->outlen = 0;
	for (size_t i = 0; i < len; i += 7)
		engine_msg_feed(m, msg + i, len - i < 7 ? len - i : 7);
	in_engine = true;
	engine_data(s->e, m, size ? size : len, s->nrcpt, false);
	in_engine = false;
}

static void
do_txn_end(struct sess *s)
{
	in_engine = true;
	engine_txn_end(s->e);
	in_engine = false;
}

/* reply_of - "CODE ENH TEXT" of a refusal, "" otherwise */
static void
reply_of(const struct eng_verdict *v, char *out, size_t size)
{
	out[0] = 0;
	if (v->verdict == RV_REJECT || v->verdict == RV_TEMPFAIL)
		snprintf(out, size, "%d %s %s", v->code, v->enh, v->text);
}

/* ---------------------------------------------------------------------
 * Dialogues: the steps a front-end takes, and what each must give
 */

enum op {
	OP_NONE = 0,
	OP_CONNECT,	/* arg: client address, NULL: none known */
	OP_HELO,	/* arg: the name */
	OP_MAIL,	/* arg: the path, as after "MAIL FROM:" */
	OP_RCPT,	/* arg: the path */
	OP_DATA,	/* arg: the message; n: the size the front-end counted (0: its length) */
	OP_END,		/* engine_txn_end */
	OP_HDRS,	/* arg: engine_headers() exactly (NULL: none); n: fields removed */
	OP_HDRS_HAS,	/* arg: a piece engine_headers() must hold */
	OP_OUT,		/* arg: what the scanner passed on, exactly */
	OP_TXN,		/* n: 1 in a transaction, 0 not */
	OP_NOQUERY,	/* the loop has no resolver (engine_loop_set_query(el, NULL)) */
	OP_ASKED,	/* arg: a question the stand-in was asked; n: its type */
};

enum { W_NO = 0, W_YES };

struct step {
	enum op op;
	const char *arg;
	int wait;			/* stages: W_NO, or W_YES (ENG_WAIT first) */
	enum rules_verdict verdict;	/* stages: what the verdict must be */
	const char *reply;		/* refusals: "CODE ENH TEXT", expanded */
	int n;
};

struct dialogue {
	const char *name;
	const char *policy;
	const struct fans *dns;		/* the stand-in's answers; others get none */
	struct step s[16];
};

/* a dialogue that shows a known engine bug (what and where): case_end_bug */
struct bug_dialogue {
	const char *bug;
	struct dialogue d;
};

#define CONNECT(ip, w, vd, r)	{ OP_CONNECT, ip, w, vd, r, 0 }
#define HELO(h, w, vd, r)	{ OP_HELO, h, w, vd, r, 0 }
#define MAIL(p, w, vd, r)	{ OP_MAIL, p, w, vd, r, 0 }
#define RCPT(p, w, vd, r)	{ OP_RCPT, p, w, vd, r, 0 }
#define DATA(m, w, vd, r)	{ OP_DATA, m, w, vd, r, 0 }
#define DATA_SIZE(m, sz, vd, r)	{ OP_DATA, m, W_NO, vd, r, sz }
#define END()			{ OP_END, NULL, 0, 0, NULL, 0 }
#define HDRS(h, removed)	{ OP_HDRS, h, 0, 0, NULL, removed }
#define HDRS_HAS(h)		{ OP_HDRS_HAS, h, 0, 0, NULL, 0 }
#define OUT(m)			{ OP_OUT, m, 0, 0, NULL, 0 }
#define TXN(yes)		{ OP_TXN, NULL, 0, 0, NULL, yes }
#define NOQUERY()		{ OP_NOQUERY, NULL, 0, 0, NULL, 0 }
#define ASKED(name, type)	{ OP_ASKED, name, 0, 0, NULL, type }

#define OK RV_CONTINUE

static const char *const verdict_names[] = { "continue", "accept", "reject", "tempfail", "wait" };

/* step_stage - run one stage step and check it */
static void
step_stage(struct sess *s, enum rules_stage st, const struct step *p, int i)
{
	struct eng_verdict v;
	char got[700];
	bool waited;
	int before = s->resumed;
	enum eng_rc rc = stage(s, st, &v, &waited);
	bool refusal = p->verdict == RV_REJECT || p->verdict == RV_TEMPFAIL;

	T_CHECKF(waited == (p->wait == W_YES), "step %d (%s): %s", i,
	    rules_stage_name(st), waited ? "waited" : "did not wait");
	T_CHECKF(s->resumed == before + (waited ? 1 : 0), "step %d: resumed %d times", i,
	    s->resumed - before);
	T_CHECKF(rc == (refusal ? ENG_REFUSE : ENG_CONTINUE), "step %d (%s): rc %d", i,
	    rules_stage_name(st), rc);
	T_CHECKF(v.verdict == p->verdict, "step %d (%s): verdict %s, want %s", i,
	    rules_stage_name(st), (unsigned)v.verdict < 5 ? verdict_names[v.verdict] : "?",
	    verdict_names[p->verdict]);
	reply_of(&v, got, sizeof(got));
	if (refusal)
		T_CHECKF(strcmp(got, p->reply) == 0, "step %d (%s): reply \"%s\", want \"%s\"", i,
		    rules_stage_name(st), got, p->reply);
	if (st == RS_RCPT && rc == ENG_CONTINUE)
		s->nrcpt++;
	if (st == RS_MAIL && rc == ENG_CONTINUE)
		s->nrcpt = 0;
}

/* run_dialogue - one dialogue, one case: its own services and session */
static void
run_dialogue(const struct dialogue *d, const char *bug)
{
	struct sess s;
	bool open = false;

	case_begin(d->name);
	if (!env_open(d->policy)) {
		case_end();
		return;
	}
	fake.table = d->dns;
	memset(&s, 0, sizeof(s));
	for (int i = 0; i < 16 && d->s[i].op != OP_NONE; i++) {
		const struct step *p = &d->s[i];

		if (p->op != OP_CONNECT && p->op != OP_NOQUERY && !open) {
			T_CHECKF(0, "step %d before the connect", i);
			break;
		}
		switch (p->op) {
		case OP_NOQUERY:
			engine_loop_set_query(env.el, NULL);
			break;
		case OP_CONNECT:
			sess_open(&s, p->arg, 0x1000 + (uint64_t)i);
			open = true;
			step_stage(&s, RS_CONNECT, p, i);
			break;
		case OP_HELO:
			do_helo(&s, p->arg);
			step_stage(&s, RS_HELO, p, i);
			break;
		case OP_MAIL:
			do_mail(&s, p->arg);
			step_stage(&s, RS_MAIL, p, i);
			break;
		case OP_RCPT:
			do_rcpt(&s, p->arg);
			step_stage(&s, RS_RCPT, p, i);
			break;
		case OP_DATA:
			do_data(&s, p->arg, (uint64_t)p->n);
			step_stage(&s, RS_DATA, p, i);
			break;
		case OP_END:
			do_txn_end(&s);
			break;
		case OP_HDRS:
		case OP_HDRS_HAS: {
			size_t len = 0;
			unsigned removed = 99;
			char *h = engine_headers(s.e, &len, &removed);
			char shown[2048];

			snprintf(shown, sizeof(shown), "%.*s", (int)len, h ? h : "");
			if (p->op == OP_HDRS_HAS) {
				T_CHECKF(h != NULL && strstr(shown, p->arg) != NULL,
				    "step %d: headers \"%s\" without \"%s\"", i, shown, p->arg);
			} else {
				T_CHECKF((h == NULL && p->arg == NULL) || (h != NULL && p->arg != NULL &&
				    len == strlen(p->arg) && memcmp(h, p->arg, len) == 0),
				    "step %d: headers \"%s\", want \"%s\"", i, h ? shown : "(none)",
				    p->arg ? p->arg : "(none)");
				T_CHECKF(removed == (unsigned)p->n, "step %d: removed %u, want %d", i,
				    removed, p->n);
			}
			free(h);
			break;
		}
		case OP_OUT:
			T_CHECKF(s.outlen == strlen(p->arg) && memcmp(s.out, p->arg, s.outlen) == 0,
			    "step %d: out \"%.*s\"", i, (int)s.outlen, s.out);
			break;
		case OP_TXN:
			T_CHECKF(engine_in_txn(s.e) == (p->n != 0), "step %d: in_txn %d", i,
			    engine_in_txn(s.e));
			break;
		case OP_ASKED: {
			bool asked = false;

			for (int k = 0; k < fake.n; k++)
				asked |= strcmp(fake.q[k].name, p->arg) == 0 && fake.q[k].rrtype == p->n;
			T_CHECKF(asked, "step %d: %s type %d not asked (%d questions, first %s)", i,
			    p->arg, p->n, fake.n, fake.n ? fake.q[0].name : "-");
			break;
		}
		case OP_NONE:
			break;
		}
	}
	if (open) {
		int r = s.resumed;

		sess_close(&s);
		env_close();		/* late answers: dropped, no resume */
		T_CHECKF(s.resumed == r, "resumed after engine_sess_free");
	} else {
		env_close();
	}
	case_end_bug(bug);
}

/* the policies */

static const char p_simple[] =
    "list bad net { 198.51.100.0/24 }\n"
    "list trusted net { 192.0.2.0/28 }\n"
    "list local domain { example.org }\n"
    "on connect client-ip in trusted accept\n"
    "on connect client-ip in bad reject 554 5.7.1 \"go away [$ip]\"\n"
    "on helo helo is \"bad.test\" tempfail 450 4.7.1 \"not as $helo from $ip\"\n"
    "on mail true add-header X-Helo \"[$helo]\"\n"
    "on mail helo is \"bad.test\" reject 550 5.7.1 \"helo $helo remembered\"\n"
    "on mail sender-domain is bad.test reject 553 5.7.1 \"no mail from $sender\"\n"
    "on rcpt not rcpt-domain in local reject 554 5.7.1 \"relay denied for <$rcpt>\"\n"
    "on rcpt rcpt-count >= 2 tempfail 452 4.5.3 \"two is enough, $sender-domain\"\n";

static const char p_score[] =
    "on connect true score +2 add-header X-Conn \"ip=$ip score=$score\"\n"
    "on helo true score +3 add-header X-Helo \"helo=$helo score=$score\"\n"
    "on mail true score +4 add-header X-Mail \"from=$sender score=$score\"\n"
    "on rcpt true score +1 add-header X-Rcpt \"rcpt=$rcpt\"\n"
    "on data score >= 10 add-header X-Total \"score=$score size=$size\"\n"
    "on data score >= 11 reject 550 5.7.1 \"score $score\"\n";

static const char p_dnsbl[] =
    "dnsbl bl.test weight 5\n"
    "on connect dnsbl-score >= 5 reject 554 5.7.1 \"[$ip] listed at $dnsbl\"\n"
    "on connect dnsbl-error tempfail 451 4.7.1 \"dnsbl error for $ip\"\n";

static const char p_trusted_first[] =
    "dnsbl bl.test weight 5\n"
    "list trusted net { 192.0.2.0/24 }\n"
    "on connect client-ip in trusted accept\n"
    "on connect dnsbl-score >= 5 reject 554 5.7.1 \"listed\"\n";

static const char p_fcrdns[] =
    "on connect not fcrdns reject 550 5.7.25 \"no name for $ip\"\n"
    "on connect true add-header X-Name \"$client-name\"\n";

static const char p_sender_zone[] =
    "dnsbl dbl.test type sender-domain weight 3\n"
    "on mail dnsbl-hit is dbl.test reject 554 5.7.1 \"$sender-domain listed at $dnsbl\"\n";

static const char p_size[] =
    "max-message-size 1k\n"
    "on data size > 100 add-header X-Size \"$size\"\n";

static const char p_from[] =
    "list badfrom domain { x.test }\n"
    "on data from in badfrom reject 550 5.7.1 \"author refused\"\n";

static const char p_from_domain[] =
    "dmarc rfc7489\n"
    "on data from-domain is x.test reject 550 5.7.1 \"from $from-domain refused\"\n";

static const char p_spf[] =
    "spf yes\n"
    "on mail spf is fail reject 550 5.7.23 \"spf $spf for $sender-domain\"\n"
    "on mail spf is temperror tempfail 451 4.7.24 \"spf $spf\"\n";

static const char p_dkim[] =
    "dkim yes\n"
    "on data dkim is temperror add-header X-Dkim \"$dkim\"\n";

static const struct fans dns_dkim[] = {
	{ "sel._domainkey.x.test", DNS_T_TXT, DNS_NXDOMAIN, NULL },
	{ NULL, 0, 0, NULL }
};

/* a signature whose key the stand-in says is not there; the pool's
 * lookup (dns_query_sync, no resolver) then gives temperror */
#define SIGNED "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=x.test; s=sel;\r\n" \
    " h=from:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n" \
    " b=dGVzdA==\r\nFrom: a@x.test\r\nSubject: s\r\n\r\nhi\r\n"

static const struct fans dns_listed[] = {
	{ "7.2.0.192.bl.test", DNS_T_A, DNS_OK, "127.0.0.2" },
	{ "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test", DNS_T_A,
	  DNS_OK, "127.0.0.2" },
	{ NULL, 0, 0, NULL }
};
static const struct fans dns_clear[] = {
	{ "7.2.0.192.bl.test", DNS_T_A, DNS_NXDOMAIN, NULL },
	{ NULL, 0, 0, NULL }
};
static const struct fans dns_bad_answer[] = {
	/* outside 127.0.0.0/8: not a listing (an error of the zone) */
	{ "7.2.0.192.bl.test", DNS_T_A, DNS_OK, "10.0.0.1" },
	{ NULL, 0, 0, NULL }
};
static const struct fans dns_fcrdns[] = {
	{ "7.2.0.192.in-addr.arpa", DNS_T_PTR, DNS_OK, "mx.s.test" },
	{ "mx.s.test", DNS_T_A, DNS_OK, "192.0.2.7" },
	{ "8.2.0.192.in-addr.arpa", DNS_T_PTR, DNS_NXDOMAIN, NULL },
	{ "9.2.0.192.in-addr.arpa", DNS_T_PTR, DNS_OK, "other.s.test" },
	{ "other.s.test", DNS_T_A, DNS_OK, "192.0.2.200" },
	{ NULL, 0, 0, NULL }
};
static const struct fans dns_sender[] = {
	{ "bad.test.dbl.test", DNS_T_A, DNS_OK, "127.0.0.2" },
	{ "good.test.dbl.test", DNS_T_A, DNS_NXDOMAIN, NULL },
	{ NULL, 0, 0, NULL }
};

#define FORGED "Authentication-Results: mx.moat.test; spf=pass smtp.mailfrom=a@x.test\r\n"
#define FORGED_FOLDED "Authentication-Results:\r\n mx.moat.test;\r\n\tdkim=pass header.d=x.test\r\n"
#define THEIRS "Authentication-Results: other.test; spf=fail\r\n"
#define REST_X "From: Alice <a@x.test>\r\nSubject: t\r\n\r\nbody\r\n"
#define REST_Y "From: Bob <b@y.test>\r\nSubject: t\r\n\r\nbody\r\n"

static const struct dialogue dialogues[] = {
	/* 1. stages without checks */
	{ "connect: trusted accepted before the reject rule", p_simple, NULL, {
		CONNECT("192.0.2.3", W_NO, RV_ACCEPT, NULL),
	} },
	{ "connect: reject with $ip expanded", p_simple, NULL, {
		CONNECT("198.51.100.7", W_NO, RV_REJECT, "554 5.7.1 go away [198.51.100.7]"),
	} },
	{ "connect: IPv6 client continues", p_simple, NULL, {
		CONNECT("2001:db8::5", W_NO, OK, NULL),
	} },
	{ "helo refused is forgotten: mail sees no helo", p_simple, NULL, {
		CONNECT("192.0.2.77", W_NO, OK, NULL),
		HELO("bad.test", W_NO, RV_TEMPFAIL, "450 4.7.1 not as bad.test from 192.0.2.77"),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		HDRS("X-Helo: []\r\n", 0),
		HELO("good.test", W_NO, OK, NULL),
		TXN(0),		/* HELO ended the transaction */
		MAIL("<a@s.test>", W_NO, OK, NULL),
		HDRS("X-Helo: [good.test]\r\n", 0),
	} },
	{ "mail refused ends the transaction", p_simple, NULL, {
		CONNECT("192.0.2.77", W_NO, OK, NULL),
		HELO("mx.s.test", W_NO, OK, NULL),
		MAIL("<Joe@Bad.Test>", W_NO, RV_REJECT, "553 5.7.1 no mail from Joe@bad.test"),
		TXN(0),
		HDRS(NULL, 0),
		MAIL("<joe@good.test>", W_NO, OK, NULL),
		TXN(1),
		HDRS("X-Helo: [mx.s.test]\r\n", 0),
	} },
	{ "rcpt: relay denied, rcpt-count counts the accepted", p_simple, NULL, {
		CONNECT("192.0.2.77", W_NO, OK, NULL),
		HELO("mx.s.test", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		RCPT("<v@other.test>", W_NO, RV_REJECT, "554 5.7.1 relay denied for <v@other.test>"),
		RCPT("<w@sub.example.org>", W_NO, OK, NULL),
		RCPT("<z@example.org>", W_NO, RV_TEMPFAIL, "452 4.5.3 two is enough, s.test"),
	} },
	{ "scores and fields: session from connect/helo, transaction from mail", p_score, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		HELO("mx.s.test", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA("Subject: x\r\n\r\nhi\r\n", W_NO, OK, NULL),
		HDRS("X-Conn: ip=192.0.2.7 score=2\r\n"
		     "X-Helo: helo=mx.s.test score=5\r\n"
		     "X-Mail: from=a@s.test score=9\r\n"
		     "X-Rcpt: rcpt=u@example.org\r\n"
		     "X-Total: score=10 size=18\r\n", 0),
		END(),
		HDRS("X-Conn: ip=192.0.2.7 score=2\r\n"
		     "X-Helo: helo=mx.s.test score=5\r\n", 0),
		/* a new transaction starts from the session's score */
		MAIL("<b@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		RCPT("<v@example.org>", W_NO, OK, NULL),
		DATA("Subject: x\r\n\r\nhi\r\n", W_NO, RV_REJECT, "550 5.7.1 score 11"),
	} },
	{ "data: max-message-size refuses before the rules", p_size, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA_SIZE("Subject: x\r\n\r\nhi\r\n", 1025, RV_REJECT,
		    "552 5.3.4 Message size exceeds fixed limit"),
		END(),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA_SIZE("Subject: x\r\n\r\nhi\r\n", 1024, OK, NULL),
		HDRS("X-Size: 1024\r\n", 0),
	} },

	/* 2. waits and resumes */
	{ "dnsbl listed: wait, resume, 554", p_dnsbl, dns_listed, {
		CONNECT("192.0.2.7", W_YES, RV_REJECT, "554 5.7.1 [192.0.2.7] listed at bl.test"),
		ASKED("7.2.0.192.bl.test", DNS_T_A),
	} },
	{ "dnsbl listed, IPv6 nibbles", p_dnsbl, dns_listed, {
		CONNECT("2001:db8::1", W_YES, RV_REJECT, "554 5.7.1 [2001:db8::1] listed at bl.test"),
		ASKED("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test", DNS_T_A),
	} },
	{ "dnsbl NXDOMAIN: wait, continue", p_dnsbl, dns_clear, {
		CONNECT("192.0.2.7", W_YES, OK, NULL),
		HELO("mx.s.test", W_NO, OK, NULL),
	} },
	{ "dnsbl answer outside 127/8: an error, not a listing", p_dnsbl, dns_bad_answer, {
		CONNECT("192.0.2.7", W_YES, RV_TEMPFAIL, "451 4.7.1 dnsbl error for 192.0.2.7"),
	} },
	{ "trusted first: no wait", p_trusted_first, NULL, {
		CONNECT("192.0.2.7", W_NO, RV_ACCEPT, NULL),
	} },
	{ "trusted first, other client: waits", p_trusted_first, dns_listed, {
		CONNECT("2001:db8::1", W_YES, RV_REJECT, "554 5.7.1 listed"),
	} },
	{ "fcrdns: PTR then A confirm; $client-name", p_fcrdns, dns_fcrdns, {
		CONNECT("192.0.2.7", W_YES, OK, NULL),
		ASKED("7.2.0.192.in-addr.arpa", DNS_T_PTR),
		ASKED("mx.s.test", DNS_T_A),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		HDRS("X-Name: mx.s.test\r\n", 0),
	} },
	{ "fcrdns: no PTR", p_fcrdns, dns_fcrdns, {
		CONNECT("192.0.2.8", W_YES, RV_REJECT, "550 5.7.25 no name for 192.0.2.8"),
	} },
	{ "fcrdns: the name does not confirm", p_fcrdns, dns_fcrdns, {
		CONNECT("192.0.2.9", W_YES, RV_REJECT, "550 5.7.25 no name for 192.0.2.9"),
	} },
	{ "sender-domain zone: listed, then a clear one", p_sender_zone, dns_sender, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@Bad.Test>", W_YES, RV_REJECT, "554 5.7.1 bad.test listed at dbl.test"),
		ASKED("bad.test.dbl.test", DNS_T_A),
		MAIL("<a@good.test>", W_YES, OK, NULL),
	} },

	/* 4. error paths */
	{ "no client address: zones temperror without a wait", p_dnsbl, dns_listed, {
		CONNECT(NULL, W_NO, RV_TEMPFAIL, "451 4.7.1 dnsbl error for "),
	} },
	{ "no client address: fcrdns fails without a wait", p_fcrdns, dns_fcrdns, {
		CONNECT(NULL, W_NO, RV_REJECT, "550 5.7.25 no name for "),
	} },
	{ "no resolver: temperror without a wait", p_dnsbl, dns_listed, {
		NOQUERY(),
		CONNECT("192.0.2.7", W_NO, RV_TEMPFAIL, "451 4.7.1 dnsbl error for 192.0.2.7"),
	} },
	{ "spf fail (work pool)", p_spf, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		HELO("mx.s.test", W_NO, OK, NULL),
		MAIL("<a@fail.test>", W_YES, RV_REJECT, "550 5.7.23 spf fail for fail.test"),
		TXN(0),
	} },
	{ "spf pass, Authentication-Results on top", p_spf, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		HELO("mx.s.test", W_NO, OK, NULL),
		MAIL("<a@pass.test>", W_YES, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA("From: a@pass.test\r\n\r\nhi\r\n", W_NO, OK, NULL),
		HDRS_HAS("Authentication-Results: mx.moat.test;"),
		HDRS_HAS("spf=pass"),
	} },
	{ "spf without a resolver: temperror", p_spf, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@nores.test>", W_YES, RV_TEMPFAIL, "451 4.7.24 spf temperror"),
	} },

	{ "dkim: the key asked ahead from the loop, then the pool", p_dkim, dns_dkim, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA(SIGNED, W_YES, OK, NULL),
		ASKED("sel._domainkey.x.test", DNS_T_TXT),
		/* Authentication-Results first, then the rule's field */
		HDRS_HAS("Authentication-Results: mx.moat.test;\r\n\tdkim=temperror"),
		HDRS_HAS("\r\nX-Dkim: temperror\r\n"),
	} },

	/* 5. the message */
	{ "forged Authentication-Results dropped; From refused", p_from, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA(FORGED THEIRS REST_X, W_NO, RV_REJECT, "550 5.7.1 author refused"),
		OUT(THEIRS REST_X),
	} },
	{ "forged fields (one folded) dropped; other From passes", p_from, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@x.test>", W_NO, OK, NULL),		/* the envelope does not count */
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA(FORGED_FOLDED THEIRS FORGED REST_Y, W_NO, OK, NULL),
		OUT(THEIRS REST_Y),
		HDRS(NULL, 2),
	} },
	{ "two From fields: no author, the rule does not match", p_from, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA("From: a@x.test\r\nFrom: b@x.test\r\n\r\nhi\r\n", W_NO, OK, NULL),
	} },
	{ "From folded over two lines", p_from, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA("Subject: s\r\nFrom: \"A\"\r\n <a@X.Test>\r\n\r\nhi\r\n", W_NO, RV_REJECT,
		    "550 5.7.1 author refused"),
	} },
	{ "from-domain (DMARC, work pool) waits and refuses", p_from_domain, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA(FORGED REST_X, W_YES, RV_REJECT, "550 5.7.1 from x.test refused"),
		OUT(REST_X),
	} },
	{ "from-domain, another author: Authentication-Results with dmarc", p_from_domain, NULL, {
		CONNECT("192.0.2.7", W_NO, OK, NULL),
		MAIL("<a@s.test>", W_NO, OK, NULL),
		RCPT("<u@example.org>", W_NO, OK, NULL),
		DATA(FORGED REST_Y, W_YES, OK, NULL),
		HDRS_HAS("Authentication-Results: mx.moat.test;"),
		HDRS_HAS("header.from=y.test"),
	} },
	{ "spf without a client address: temperror at once", p_spf, NULL, {
		CONNECT(NULL, W_NO, OK, NULL),
		MAIL("<a@pass.test>", W_NO, RV_TEMPFAIL, "451 4.7.24 spf temperror"),
	} },
};

/* test_dialogues - every dialogue, then those that show known bugs */
static void
test_dialogues(void)
{
	for (size_t i = 0; i < sizeof(dialogues) / sizeof(dialogues[0]); i++)
		run_dialogue(&dialogues[i], NULL);
}

/* ---------------------------------------------------------------------
 * Waits in detail
 */

/* test_wait_resume - the question, the wait, one resume, the verdict */
static void
test_wait_resume(void)
{
	struct sess s;
	struct eng_verdict v;
	char got[700];

	case_begin("wait: the question, one resume from the loop, the verdict");
	if (!env_open(p_dnsbl))
		goto out;
	sess_open(&s, "192.0.2.7", 42);
	T_CHECKF(fake.n == 1 && strcmp(fake.q[0].name, "7.2.0.192.bl.test") == 0 &&
	    fake.q[0].rrtype == DNS_T_A && fake.q[0].tag == 42, "%d %s", fake.n, fake.q[0].name);
	T_CHECK(engine_stage_may_refuse(env.c, RS_CONNECT) && !engine_stage_may_refuse(env.c, RS_MAIL));
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_WAIT);
	/* nothing answered: running the loop resumes nothing */
	run_until(NULL, 0, 20);
	T_CHECK(s.resumed == 0);
	fake_answer(0, DNS_OK, "127.0.0.2");
	T_CHECK(s.resumed == 0);		/* from the loop only */
	T_CHECK(run_until(&s.resumed, 1, 2000));
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_REFUSE);
	reply_of(&v, got, sizeof(got));
	T_CHECKF(strcmp(got, "554 5.7.1 [192.0.2.7] listed at bl.test") == 0, "%s", got);
	/* the deadline of that wait is off: no second resume */
	run_until(NULL, 0, 30);
	T_CHECK(s.resumed == 1);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* test_deadline - no answer: the deadline resumes, the zone counts as a
 * temporary error, and the answer that comes after is dropped */
static void
test_deadline(void)
{
	struct sess s;
	struct eng_verdict v;
	char got[700];
	uint64_t t0, took;

	case_begin("deadline: no answer, resume after 2*dns-timeout+500ms, dnsbl-error");
	if (!env_open(p_dnsbl))
		goto out;
	sess_open(&s, "192.0.2.7", 43);
	t0 = now_ms();
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_WAIT);
	T_CHECK(run_until(&s.resumed, 1, 3 * DEADLINE_MS));
	took = s.t_resume - t0;
	T_CHECKF(took >= DEADLINE_MS - 20 && took < DEADLINE_MS + 500, "resume after %llu ms",
	    (unsigned long long)took);
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_REFUSE);
	reply_of(&v, got, sizeof(got));
	T_CHECKF(strcmp(got, "451 4.7.1 dnsbl error for 192.0.2.7") == 0, "%s", got);
	/* the listing comes late: it changes nothing and resumes nothing */
	fake_answer(0, DNS_OK, "127.0.0.2");
	T_CHECK(run_until(&fake.answered, 1, 1000));
	T_CHECK(s.resumed == 1);
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_REFUSE && v.code == 451);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* test_free_in_flight - answers for a freed session are dropped */
static void
test_free_in_flight(void)
{
	struct sess a, b, c;
	struct eng_verdict v;

	case_begin("engine_sess_free with questions out: late answers dropped");
	if (!env_open(p_dnsbl))
		goto out;
	/* a waits at connect, then goes */
	sess_open(&a, "192.0.2.7", 50);
	T_CHECK(stage_once(&a, RS_CONNECT, &v) == ENG_WAIT);
	sess_close(&a);
	/* b never asked for a stage */
	sess_open(&b, "192.0.2.8", 51);
	sess_close(&b);
	T_CHECK(fake.n == 2);
	fake_answer(0, DNS_OK, "127.0.0.2");
	fake_answer(1, DNS_NXDOMAIN, NULL);
	T_CHECK(run_until(&fake.answered, 2, 1000));
	T_CHECK(a.resumed == 0 && b.resumed == 0);
	env_close();

	/* fcrdns: freed between the PTR answer and the A answer */
	if (!env_open(p_fcrdns))
		goto out;
	sess_open(&c, "192.0.2.7", 52);
	T_CHECK(stage_once(&c, RS_CONNECT, &v) == ENG_WAIT);
	T_CHECK(fake.n == 1 && fake.q[0].rrtype == DNS_T_PTR);
	fake_answer(0, DNS_OK, "mx.s.test");
	T_CHECK(run_until(&fake.answered, 1, 1000));
	T_CHECKF(fake.n == 2 && strcmp(fake.q[1].name, "mx.s.test") == 0, "%d", fake.n);
	T_CHECK(c.resumed == 0);
	sess_close(&c);
	fake_answer(1, DNS_OK, "192.0.2.7");
	T_CHECK(run_until(&fake.answered, 2, 1000));
	T_CHECK(c.resumed == 0);
	env_close();
out:
	case_end();
}

/* test_new_question - the sender zone asked again for another domain:
 * the answer about the first is ignored, only the second resumes */
static void
test_new_question(void)
{
	struct sess s;
	struct eng_verdict v;

	case_begin("a new MAIL: the answer about the old sender is ignored");
	if (!env_open(p_sender_zone))
		goto out;
	sess_open(&s, "192.0.2.7", 60);
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_CONTINUE);
	do_mail(&s, "<a@one.test>");
	do_txn_end(&s);
	do_mail(&s, "<a@two.test>");
	T_CHECKF(fake.n == 2 && strcmp(fake.q[0].name, "one.test.dbl.test") == 0 &&
	    strcmp(fake.q[1].name, "two.test.dbl.test") == 0, "%d", fake.n);
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_WAIT);
	fake_answer(0, DNS_OK, "127.0.0.2");		/* one.test is listed */
	T_CHECK(run_until(&fake.answered, 1, 1000));
	T_CHECK(s.resumed == 0);			/* still waiting for two.test */
	fake_answer(1, DNS_NXDOMAIN, NULL);
	T_CHECK(run_until(&s.resumed, 1, 1000));
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_CONTINUE && v.verdict == RV_CONTINUE);
	/* the same domain again: not asked again, the answer is kept */
	do_mail(&s, "<b@two.test>");
	T_CHECK(fake.n == 2);
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_CONTINUE);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* test_overload - the resolver refuses the question (too many in flight) */
static void
test_overload(void)
{
	struct sess s;
	struct eng_verdict v;

	case_begin("the resolver refuses the question: temperror without a wait");
	if (!env_open(p_dnsbl))
		goto out;
	fake.refuse = true;
	sess_open(&s, "192.0.2.7", 70);
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_REFUSE && v.code == 451);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* ---------------------------------------------------------------------
 * SPF in flight
 */

/* test_spf_txn_end - SPF of an ended transaction comes late: dropped */
static void
test_spf_txn_end(void)
{
	struct sess s;
	struct eng_verdict v;
	size_t len;
	unsigned removed;
	char *h;
	int slow0 = atomic_load(&slow_answered);

	case_begin("engine_txn_end with SPF out: its late answer is dropped");
	if (!env_open(p_spf))
		goto out;
	gate_set(false);
	sess_open(&s, "192.0.2.7", 80);
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_CONTINUE);
	do_mail(&s, "<a@slow.test>");			/* fail, once the gate opens */
	do_txn_end(&s);
	do_mail(&s, "<a@pass.test>");
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_WAIT);
	T_CHECK(run_until(&s.resumed, 1, 2000));
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_CONTINUE);
	gate_set(true);
	for (int i = 0; i < 200 && atomic_load(&slow_answered) == slow0; i++)
		run_until(NULL, 0, 5);
	run_until(NULL, 0, 50);		/* its completion reaches the loop */
	T_CHECK(atomic_load(&slow_answered) == slow0 + 1);
	T_CHECK(s.resumed == 1);
	do_rcpt(&s, "<u@example.org>");
	T_CHECK(stage_once(&s, RS_RCPT, &v) == ENG_CONTINUE);
	do_data(&s, "From: a@pass.test\r\n\r\nhi\r\n", 0);
	T_CHECK(stage_once(&s, RS_DATA, &v) == ENG_CONTINUE);
	h = engine_headers(s.e, &len, &removed);
	T_CHECKF(h != NULL && memmem(h, len, "spf=pass", 8) != NULL, "%.*s", (int)len,
	    h ? h : "");
	free(h);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* test_spf_free - the session goes while SPF is on the pool */
static void
test_spf_free(void)
{
	struct sess s;
	struct eng_verdict v;
	int slow0 = atomic_load(&slow_answered);

	case_begin("engine_sess_free with SPF out: no resume, no use after free");
	if (!env_open(p_spf))
		goto out;
	gate_set(false);
	sess_open(&s, "192.0.2.7", 81);
	do_mail(&s, "<a@slow.test>");
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_WAIT);
	sess_close(&s);
	gate_set(true);
	for (int i = 0; i < 200 && atomic_load(&slow_answered) == slow0; i++)
		run_until(NULL, 0, 5);
	run_until(NULL, 0, 50);
	T_CHECK(s.resumed == 0);
	env_close();
out:
	case_end();
}

/* test_spf_hung - SPF past both deadlines: the stage is decided with what
 * is in, the SPF fact a failed lookup (engine.c: "never as a pass"), so
 * the next rule decides */
static void
test_spf_hung(void)
{
	static const char *p =
	    "spf yes\n"
	    "on mail spf is pass accept\n"
	    "on mail sender-domain is slow.test reject 550 5.7.1 \"refused\"\n";
	struct sess s;
	struct eng_verdict v;
	char got[700];
	uint64_t t0, took;
	enum eng_rc rc;

	case_begin("SPF past both deadlines: decided without it, never a pass");
	if (!env_open(p))
		goto out;
	gate_set(false);
	sess_open(&s, "192.0.2.7", 82);
	do_mail(&s, "<a@slow.test>");
	t0 = now_ms();
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_WAIT);
	T_CHECK(run_until(&s.resumed, 1, 4 * DEADLINE_MS));
	took = s.t_resume - t0;
	T_CHECKF(took >= 2 * DEADLINE_MS - 20 && took < 2 * DEADLINE_MS + 600,
	    "resume after %llu ms", (unsigned long long)took);
	rc = stage_once(&s, RS_MAIL, &v);
	reply_of(&v, got, sizeof(got));
	T_CHECKF(rc == ENG_REFUSE && strcmp(got, "550 5.7.1 refused") == 0,
	    "rc %d verdict %d reply \"%s\"", rc, v.verdict, got);
	gate_set(true);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* ---------------------------------------------------------------------
 * Greylisting on the embedded store (greylist-store unset: memory only)
 */

static int64_t gl_now;

/* gl_clock - the greylist's driven clock (wall seconds) */
static int64_t
gl_clock(void *arg)
{
	(void)arg;
	return gl_now;
}

struct glcase {
	const char *name;
	const char *ip;			/* NULL: no address known */
	const char *sender, *rcpt;
	int64_t at;			/* seconds after the first */
	enum rules_verdict verdict;
};

/* run_greylist - one session per row, on one store; each row one case */
static void
run_greylist(const char *policy, const struct glcase *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct glcase *g = &cases[i];
		struct sess s;
		struct eng_verdict v;
		enum eng_rc rc;
		char got[700];

		case_begin(g->name);
		if (i == 0 && !env_open(policy)) {
			case_end();
			return;
		}
		if (i == 0) {
			T_CHECK(engine_loop_greylist(env.el) != NULL && engine_glstore() != NULL);
			greylist_set_clock(engine_loop_greylist(env.el), gl_clock, NULL);
		}
		gl_now = 1700000000 + g->at;
		sess_open(&s, g->ip, 0x2000 + i);
		T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_CONTINUE);
		do_mail(&s, g->sender);
		T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_CONTINUE);
		do_rcpt(&s, g->rcpt);
		rc = stage_once(&s, RS_RCPT, &v);	/* the store answers at once */
		reply_of(&v, got, sizeof(got));
		T_CHECKF(v.verdict == g->verdict, "verdict %d (%s)", v.verdict, got);
		if (g->verdict == RV_TEMPFAIL)
			T_CHECKF(rc == ENG_REFUSE && v.code == 451 && strcmp(v.enh, "4.7.1") == 0 &&
			    v.text[0] != 0, "rc %d %s", rc, got);
		else
			T_CHECKF(rc == ENG_CONTINUE, "rc %d", rc);
		sess_close(&s);
		if (i == n - 1)
			env_close();
		case_end();
	}
}

/* test_greylist - "on rcpt true greylist" on the embedded store */
static void
test_greylist(void)
{
	static const struct glcase accept_on_error[] = {
		{ "greylist: a new triplet", "192.0.2.7", "<a@s.test>", "<u@example.org>", 0,
		  RV_TEMPFAIL },
		{ "greylist: a retry too early", "192.0.2.7", "<a@s.test>", "<u@example.org>", 60,
		  RV_TEMPFAIL },
		{ "greylist: a retry after greylist-delay", "192.0.2.7", "<a@s.test>",
		  "<u@example.org>", 301, RV_CONTINUE },
		{ "greylist: known from then on", "192.0.2.7", "<a@s.test>", "<u@example.org>", 400,
		  RV_CONTINUE },
		{ "greylist: same /24", "192.0.2.99", "<a@s.test>", "<u@example.org>", 401,
		  RV_CONTINUE },
		{ "greylist: another recipient is new", "192.0.2.7", "<a@s.test>",
		  "<v@example.org>", 402, RV_TEMPFAIL },
		{ "greylist: no client address, on-error accept", NULL, "<a@s.test>",
		  "<u@example.org>", 403, RV_CONTINUE },
	};
	static const struct glcase tempfail_on_error[] = {
		{ "greylist: no client address, on-error tempfail", NULL, "<a@s.test>",
		  "<u@example.org>", 0, RV_TEMPFAIL },
	};

	run_greylist("on rcpt true greylist\n", accept_on_error,
	    sizeof(accept_on_error) / sizeof(accept_on_error[0]));
	run_greylist("greylist-on-error tempfail\non rcpt true greylist\n", tempfail_on_error,
	    sizeof(tempfail_on_error) / sizeof(tempfail_on_error[0]));
}

/* test_greylist_then_spf - the store passes the retry at once while SPF,
 * started at mail, is still on the pool: the later rule that reads SPF
 * waits for it (it was counted as a temperror, and an SPF fail passed) */
static void
test_greylist_then_spf(void)
{
	static const char *p =
	    "spf yes\n"
	    "on rcpt sender-domain is slow.test greylist\n"
	    "on rcpt spf is fail reject 550 5.7.23 \"spf $spf for $sender-domain\"\n";
	struct sess s;
	struct eng_verdict v;
	char got[700];
	enum eng_rc rc;
	int slow0 = atomic_load(&slow_answered);

	case_begin("greylist passed at once, SPF in flight: the SPF rule waits for it");
	if (!env_open(p))
		goto out;
	greylist_set_clock(engine_loop_greylist(env.el), gl_clock, NULL);
	gl_now = 1700000000;
	sess_open(&s, "192.0.2.7", 90);			/* the first attempt: new */
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_CONTINUE);
	do_mail(&s, "<a@slow.test>");
	do_rcpt(&s, "<u@example.org>");
	rc = stage_once(&s, RS_RCPT, &v);
	T_CHECKF(rc == ENG_REFUSE && v.code == 451, "rc %d code %d", rc, v.code);
	sess_close(&s);
	for (int i = 0; i < 200 && atomic_load(&slow_answered) == slow0; i++)
		run_until(NULL, 0, 5);
	run_until(NULL, 0, 50);

	gl_now += 301;					/* the retry, SPF held */
	gate_set(false);
	sess_open(&s, "192.0.2.7", 91);
	T_CHECK(stage_once(&s, RS_CONNECT, &v) == ENG_CONTINUE);
	do_mail(&s, "<a@slow.test>");
	do_rcpt(&s, "<u@example.org>");
	rc = stage_once(&s, RS_RCPT, &v);
	T_CHECKF(rc == ENG_WAIT, "rc %d verdict %d", rc, v.verdict);
	gate_set(true);
	if (rc == ENG_WAIT) {
		T_CHECK(run_until(&s.resumed, 1, 2000));
		rc = stage_once(&s, RS_RCPT, &v);
	}
	reply_of(&v, got, sizeof(got));
	T_CHECKF(rc == ENG_REFUSE && strcmp(got, "550 5.7.23 spf fail for slow.test") == 0,
	    "rc %d reply \"%s\"", rc, got);
	sess_close(&s);
	for (int i = 0; i < 200 && atomic_load(&slow_answered) < slow0 + 2; i++)
		run_until(NULL, 0, 5);
	run_until(NULL, 0, 50);
	env_close();
out:
	case_end();
}

/* ---------------------------------------------------------------------
 * The message alone
 */

/* test_msg_alone - engine_msg without a session, fed a byte at a time */
static void
test_msg_alone(void)
{
	static const char msg[] = FORGED_FOLDED THEIRS FORGED REST_X;
	struct sess s;
	struct eng_msg *m;
	char *errs = NULL;
	struct conf *c;

	case_begin("engine_msg byte by byte: forged fields out, the rest unchanged");
	c = load("on data true accept\n", &errs);
	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	free(errs);
	if (c == NULL)
		goto out;
	memset(&s, 0, sizeof(s));
	m = engine_msg_new(c, on_out, &s);
	for (size_t i = 0; i < sizeof(msg) - 1; i++)
		engine_msg_feed(m, msg + i, 1);
	engine_msg_finish(m);
	engine_msg_finish(m);		/* twice is once */
	T_CHECKF(s.outlen == strlen(THEIRS REST_X) && memcmp(s.out, THEIRS REST_X, s.outlen) == 0,
	    "%.*s", (int)s.outlen, s.out);
	engine_msg_free(m);
	engine_msg_free(NULL);
	/* a message that ends in its header: the held field goes out at the finish */
	s.outlen = 0;
	m = engine_msg_new(c, on_out, &s);
	engine_msg_feed(m, "Subject: x", 10);
	T_CHECK(s.outlen == 0);
	engine_msg_finish(m);
	T_CHECKF(s.outlen == 10 && memcmp(s.out, "Subject: x", 10) == 0, "%.*s", (int)s.outlen,
	    s.out);
	engine_msg_free(m);
	conf_unref(c);
out:
	case_end();
}

/* ---------------------------------------------------------------------
 * Names asked at the end of the header (engine_msg_ahead, engine_ahead)
 */

/* SIGNED cut after its header's empty line */
static size_t
signed_head_len(void)
{
	return (size_t)(strstr(SIGNED, "\r\n\r\n") + 4 - SIGNED);
}

/* feed_head - a message of the session fed up to the end of its header in
 * 7-byte chunks; the names it asks ahead go to the engine as soon as the
 * message says so (as moatd's decoder does); how many calls that took */
static struct eng_msg *
feed_head(struct sess *s, const char *msg, size_t len, int *calls_with_names)
{
	struct eng_msg *m = engine_msg_new(env.c, on_out, s);

	*calls_with_names = 0;
	s->outlen = 0;
	for (size_t i = 0; i < len; i += 7) {
		struct eng_ahead *a;

		engine_msg_feed(m, msg + i, len - i < 7 ? len - i : 7);
		if ((a = engine_msg_ahead(m)) != NULL) {
			(*calls_with_names)++;
			in_engine = true;
			engine_ahead(s->e, a);
			in_engine = false;
		}
	}
	return m;
}

/* feed_rest - the rest of the message, then engine_data */
static void
feed_rest(struct sess *s, struct eng_msg *m, const char *msg, size_t from)
{
	size_t len = strlen(msg);

	engine_msg_feed(m, msg + from, len - from);
	T_CHECK(engine_msg_ahead(m) == NULL);	/* once per message */
	in_engine = true;
	engine_data(s->e, m, len, s->nrcpt, false);
	in_engine = false;
}

/* sess_to_data - connect, MAIL, RCPT, all continuing at once */
static void
sess_to_data(struct sess *s, uint64_t id)
{
	struct eng_verdict v;

	sess_open(s, "192.0.2.7", id);
	T_CHECK(stage_once(s, RS_CONNECT, &v) == ENG_CONTINUE);
	do_mail(s, "<a@s.test>");
	T_CHECK(stage_once(s, RS_MAIL, &v) == ENG_CONTINUE);
	do_rcpt(s, "<u@example.org>");
	T_CHECK(stage_once(s, RS_RCPT, &v) == ENG_CONTINUE);
	s->nrcpt++;
}

/* test_ahead_at_eoh - the key is asked once the header is in, before the
 * end of the data; the end of the data waits only while it is in flight,
 * and never asks it again in the transaction */
static void
test_ahead_at_eoh(void)
{
	struct sess s;
	struct eng_verdict v;
	struct eng_msg *m;
	size_t hl = signed_head_len();
	int calls;
	bool waited;

	case_begin("dkim key asked at the end of the header, waited for at the end of data");
	if (!env_open(p_dkim))
		goto out;
	sess_to_data(&s, 60);
	/* not before the header's empty line */
	m = feed_head(&s, SIGNED, hl - 2, &calls);
	T_CHECKF(calls == 0 && fake.n == 0, "%d calls, %d questions before the header's end",
	    calls, fake.n);
	engine_msg_feed(m, SIGNED + hl - 2, 2);
	{
		struct eng_ahead *a = engine_msg_ahead(m);

		T_CHECK(a != NULL);
		in_engine = true;
		engine_ahead(s.e, a);
		in_engine = false;
	}
	T_CHECKF(fake.n == 1 && strcmp(fake.q[0].name, "sel._domainkey.x.test") == 0 &&
	    fake.q[0].rrtype == DNS_T_TXT, "%d questions, first %s", fake.n,
	    fake.n ? fake.q[0].name : "-");
	T_CHECK(s.resumed == 0);
	/* the end of the data while the key is in flight: waits for it, does
	 * not ask it again */
	feed_rest(&s, m, SIGNED, hl);
	T_CHECK(stage_once(&s, RS_DATA, &v) == ENG_WAIT);
	T_CHECKF(fake.n == 1, "%d questions", fake.n);
	fake_answer(0, DNS_NXDOMAIN, NULL);
	/* the answer (not cached by the stand-in) lets DKIM go to the pool,
	 * which finds no resolver: temperror; still one question */
	T_CHECK(run_until(&s.resumed, 1, 3 * DEADLINE_MS));
	T_CHECK(stage(&s, RS_DATA, &v, &waited) == ENG_CONTINUE);
	T_CHECKF(fake.n == 1, "%d questions", fake.n);
	{
		size_t len = 0;
		unsigned removed;
		char *h = engine_headers(s.e, &len, &removed);

		T_CHECKF(h != NULL && strstr(h, "dkim=temperror") != NULL, "%s", h ? h : "(none)");
		free(h);
	}
	sess_close(&s);
	env_close();

	/* answered before the dot: the end of the data does not wait for it */
	if (!env_open(p_dkim))
		goto out;
	sess_to_data(&s, 61);
	m = feed_head(&s, SIGNED, hl, &calls);
	T_CHECKF(calls == 1 && fake.n == 1, "%d calls, %d questions", calls, fake.n);
	fake_answer(0, DNS_NXDOMAIN, NULL);
	T_CHECK(run_until(&fake.answered, 1, 1000));
	T_CHECK(s.resumed == 0);
	feed_rest(&s, m, SIGNED, hl);
	T_CHECK(stage(&s, RS_DATA, &v, &waited) == ENG_CONTINUE);
	T_CHECKF(fake.n == 1, "asked again at the end of data: %d questions", fake.n);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* test_ahead_txn_end - the transaction ends (RSET, a new MAIL, the
 * session) with the key in flight: the late answer touches nothing; a
 * new transaction asks its own */
static void
test_ahead_txn_end(void)
{
	struct sess s;
	struct eng_verdict v;
	struct eng_msg *m;
	size_t hl = signed_head_len();
	int calls;
	bool waited;

	case_begin("dkim key asked ahead: transaction or session ends before the answer");
	if (!env_open(p_dkim))
		goto out;
	sess_to_data(&s, 62);
	m = feed_head(&s, SIGNED, hl, &calls);
	T_CHECK(fake.n == 1);
	engine_msg_free(m);		/* the client went away mid-body */
	do_txn_end(&s);			/* RSET */
	do_mail(&s, "<b@s.test>");
	T_CHECK(stage_once(&s, RS_MAIL, &v) == ENG_CONTINUE);
	do_rcpt(&s, "<u@example.org>");
	T_CHECK(stage_once(&s, RS_RCPT, &v) == ENG_CONTINUE);
	fake_answer(0, DNS_NXDOMAIN, NULL);
	T_CHECK(run_until(&fake.answered, 1, 1000));
	T_CHECK(s.resumed == 0);
	/* the new transaction's message asks its key again, and its end of
	 * data waits for that question, not the old one */
	m = feed_head(&s, SIGNED, hl, &calls);
	T_CHECKF(calls == 1 && fake.n == 2, "%d calls, %d questions", calls, fake.n);
	feed_rest(&s, m, SIGNED, hl);
	T_CHECK(stage_once(&s, RS_DATA, &v) == ENG_WAIT);
	T_CHECK(fake.n == 2);
	fake_answer(1, DNS_NXDOMAIN, NULL);
	T_CHECK(run_until(&s.resumed, 1, 3 * DEADLINE_MS));
	T_CHECK(stage(&s, RS_DATA, &v, &waited) == ENG_CONTINUE);
	/* the session goes with a key in flight */
	do_mail(&s, "<c@s.test>");
	m = feed_head(&s, SIGNED, hl, &calls);
	T_CHECK(fake.n == 3);
	engine_msg_free(m);
	sess_close(&s);
	fake_answer(2, DNS_NXDOMAIN, NULL);
	T_CHECK(run_until(&fake.answered, 3, 1000));
	env_close();
out:
	case_end();
}

/* test_ahead_bounds - a header of many signatures asks at most
 * max-signatures keys; a signature with a bad selector or domain asks
 * nothing; a message without the header's end asks nothing */
static void
test_ahead_bounds(void)
{
	char msg[8192];
	size_t o = 0;
	struct sess s;
	struct eng_msg *m;
	int calls;

	case_begin("dkim keys asked ahead: bounded, only well-formed names");
	if (!env_open(p_dkim))
		goto out;
	for (int i = 0; i < 20; i++)
		o += (size_t)snprintf(msg + o, sizeof(msg) - o, "DKIM-Signature: v=1; a=rsa-sha256; "
		    "d=d%d.test; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; "
		    "b=dGVzdA==\r\n", i);
	o += (size_t)snprintf(msg + o, sizeof(msg) - o, "DKIM-Signature: v=1; a=rsa-sha256; "
	    "d=bad..test; s=s$l; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; "
	    "b=dGVzdA==\r\nFrom: a@x.test\r\n\r\nhi\r\n");
	sess_to_data(&s, 63);
	m = feed_head(&s, msg, o, &calls);
	T_CHECKF(calls == 1 && fake.n == 8, "%d calls, %d questions (max-signatures 8)", calls,
	    fake.n);
	for (int i = 0; i < fake.n; i++)
		T_CHECKF(strncmp(fake.q[i].name, "sel._domainkey.d", 16) == 0, "asked %s",
		    fake.q[i].name);
	engine_msg_free(m);
	do_txn_end(&s);
	/* a header that never ends */
	do_mail(&s, "<a@s.test>");
	m = feed_head(&s, SIGNED, signed_head_len() - 2, &calls);
	T_CHECKF(calls == 0 && fake.n == 8, "%d calls, %d questions", calls, fake.n);
	engine_msg_free(m);
	sess_close(&s);
	env_close();
out:
	case_end();
}

/* test_ahead_dmarc - the DMARC records asked at the end of the header:
 * the From domain's and (RFC 7489) its organisational domain's; nothing
 * for several authors, no usable domain, or DMARC off */
static void
test_ahead_dmarc(void)
{
	static const struct {
		const char *name, *policy, *head;
		int n;
		const char *want[2];
	} cases[] = {
		{ "7489: domain and org", "dmarc rfc7489\n",
		  "From: A <a@Mail.Sub.Example.co.uk>\r\nSubject: s\r\n\r\n", 2,
		  { "_dmarc.mail.sub.example.co.uk", "_dmarc.example.co.uk" } },
		{ "7489: the org domain itself", "dmarc rfc7489\n",
		  "Subject: s\r\nFrom: a@example.org\r\n\r\n", 1, { "_dmarc.example.org", NULL } },
		{ "bis: the domain only", "dmarc dmarcbis\n",
		  "From: a@mail.example.org\r\n\r\n", 1, { "_dmarc.mail.example.org", NULL } },
		{ "two mailboxes", "dmarc rfc7489\n",
		  "From: a@x.example.org, b@y.example.org\r\n\r\n", 0, { NULL, NULL } },
		{ "two From fields", "dmarc rfc7489\n",
		  "From: a@x.example.org\r\nFrom: a@x.example.org\r\n\r\n", 0, { NULL, NULL } },
		{ "no usable domain", "dmarc rfc7489\n", "From: a@[192.0.2.1]\r\n\r\n", 0,
		  { NULL, NULL } },
		{ "no From", "dmarc rfc7489\n", "Subject: s\r\n\r\n", 0, { NULL, NULL } },
		{ "dmarc off", "", "From: a@mail.example.org\r\n\r\n", 0, { NULL, NULL } },
	};

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct eng_msg *m;
		struct eng_ahead *a;
		const char *h = cases[k].head;
		size_t len = strlen(h);

		case_begin(cases[k].name);
		if (!env_open(cases[k].policy)) {
			case_end();
			continue;
		}
		m = engine_msg_new(env.c, NULL, NULL);
		for (size_t i = 0; i < len; i += 5)
			engine_msg_feed(m, h + i, len - i < 5 ? len - i : 5);
		engine_msg_feed(m, "body\r\n", 6);
		a = engine_msg_ahead(m);
		T_CHECKF((a == NULL ? 0 : a->n) == cases[k].n, "%d names, want %d",
		    a == NULL ? 0 : a->n, cases[k].n);
		for (int i = 0; a != NULL && i < a->n && i < cases[k].n; i++)
			T_CHECKF(strcmp(a->name[i], cases[k].want[i]) == 0, "name %d: %s, want %s", i,
			    a->name[i], cases[k].want[i]);
		T_CHECK(engine_msg_ahead(m) == NULL);
		engine_ahead_free(a);
		engine_msg_free(m);
		env_close();
		case_end();
	}
}

/* engine_who without a session: the address as inet_ntop() writes it
 * (moat formats IPv4 itself), the port, no name, no HELO */
static void
test_who_addresses(void)
{
	static const char *const v4[] = { "0.0.0.0", "255.255.255.255", "10.20.3.100",
		"127.0.0.1", "1.2.3.4", "192.0.2.9", "100.10.1.0", "99.199.209.250" };
	char out[ENG_WHO_SIZE], want[ENG_WHO_SIZE];
	struct sockaddr_in6 s6;

	for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
		struct sockaddr_in sin;
		char ntop[INET_ADDRSTRLEN];

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)(1000 + i));
		T_CHECK(inet_pton(AF_INET, v4[i], &sin.sin_addr) == 1);
		inet_ntop(AF_INET, &sin.sin_addr, ntop, sizeof(ntop));
		snprintf(want, sizeof(want), "client=unknown[%s]:%u helo=<>", ntop, (unsigned)(1000 + i));
		engine_who(NULL, (const struct sockaddr *)&sin, out, sizeof(out));
		T_CHECKF(strcmp(out, want) == 0, "%s: \"%s\"", v4[i], out);
	}
	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	s6.sin6_port = htons(25);
	T_CHECK(inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr) == 1);
	engine_who(NULL, (const struct sockaddr *)&s6, out, sizeof(out));
	T_CHECKF(strcmp(out, "client=unknown[2001:db8::7]:25 helo=<>") == 0, "\"%s\"", out);
	engine_who(NULL, NULL, out, sizeof(out));
	T_CHECKF(strcmp(out, "client=unknown[unknown]:0 helo=<>") == 0, "\"%s\"", out);
}

int
main(void)
{
	uint64_t t0 = now_ms();

	log_init("test_engine", false, getenv("MOAT_TEST_LOG") ? LOG_L_DEBUG : LOG_L_ERROR);
	main_thread = pthread_self();
	spf_set_resolver(&spf_fake);
	test_dialogues();
	test_wait_resume();
	test_deadline();
	test_free_in_flight();
	test_new_question();
	test_overload();
	test_spf_txn_end();
	test_spf_free();
	test_spf_hung();
	test_greylist();
	test_greylist_then_spf();
	test_msg_alone();
	test_ahead_at_eoh();
	test_ahead_txn_end();
	test_ahead_bounds();
	test_ahead_dmarc();
	test_who_addresses();
	spf_set_resolver(NULL);
	fprintf(stderr, "test_engine: %llu ms\n", (unsigned long long)(now_ms() - t0));
	return T_DONE("test_engine");
}
