/*
 * mlt_engine - moat-milter's engine thread: one libevent loop that runs
 * the checks and the rules for every MTA connection
 *
 * SYNOPSIS
 *	int mlt_engine_start(struct conf *c, char *err, size_t errlen);
 *	void mlt_engine_stop(void);
 *	struct mlt_conn *mlt_conn_new(void);
 *	struct mlt_req *mlt_req_new(struct mlt_conn *mc, enum mlt_stage st, uint64_t id);
 *	int mlt_req_call(struct mlt_req *rq, unsigned deadline_ms);
 *	void mlt_req_post(struct mlt_req *rq);
 *	void mlt_req_unref(struct mlt_req *rq);
 *
 * DESCRIPTION
 *	Requests come in through a mailbox (core/mailbox.h). The engine
 *	takes a request's inputs into the connection's state (struct
 *	mlt_conn, touched by this thread only), starts what the stage
 *	needs exactly as moatd's session does (the DNSBL zones and FCrDNS
 *	at connect, the HELO and sender zones as those arrive, SPF of MAIL
 *	FROM on the work pool, the greylist at RCPT, DKIM's lookups and
 *	DMARC at the end of the message), waits only for what a rule of the
 *	stage reads, then runs the stage's rules and answers. The check
 *	deadline (twice dns-timeout plus half a second, as in moatd) turns
 *	what is still pending into temporary errors; the caller's own
 *	deadline (mlt_req_call) is the net under that.
 *
 *	Each connection runs under the policy its CONNECT request brought
 *	(a reference, mlt_cb.c) until it closes. What is engine-wide comes
 *	from the file read at start (mlt_engine_start's c): the resolver,
 *	the DKIM verifier, the public suffix list, the greylist handle and
 *	its store. A reload does not rebuild them, as in moatd (mlt_policy.c
 *	names them in a warning when the new file changes them); a greylist
 *	rule added by a reload to a start without one finds no handle and
 *	gets greylist's error outcome (greylist-on-error).
 *
 *	Answers find their connection through small contexts (struct
 *	mlt_q) on the connection's list; a connection freed first clears
 *	their pointer, so a late answer is dropped. A new transaction bumps
 *	a generation, so a late SPF or DKIM answer for the last one is
 *	ignored.
 *
 *	The same shared code as moatd decides: dnsbl_sess_*() (dnsbl.c),
 *	fcrdns_*(), greylist_check()/greylist_outcome(), spf_check(),
 *	sauth_*() (sauth.c), rules_eval(), rules_header_add() and
 *	rules_facts_unawaited() (rules.c).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf_reload.h"
#include "dkim.h"
#include "dmarc.h"
#include "dmarc_record.h"
#include "dnsbl.h"
#include "filter.h"
#include "greylist.h"
#include "log.h"
#include "mlt.h"
#include "owner.h"
#include "rules.h"
#include "sauth.h"
#include "smtp_parse.h"
#include "spf.h"
#include "workq.h"
#include "xalloc.h"

enum { MQ_FCRDNS = 0, MQ_ZONE, MQ_GREYLIST, MQ_SPF, MQ_SPF_HELO, MQ_AUTH };

struct mlt_q {
	struct mlt_q *prev, *next;
	struct mlt_conn *mc;		/* NULL once the connection is gone */
	unsigned char kind, index;
	unsigned short gen;
};

struct mlt_conn {
	uint64_t id;
	struct conf *conf;
	struct mlt_req *req;		/* the request being worked on */
	struct mlt_q *qs;		/* answers in flight */
	struct event *ev_deadline;
	uint64_t check_deadline_ms;
	/* session */
	struct sockaddr_storage peer;
	bool have_peer;
	char *helo;
	bool submission;
	char tls_version[32], tls_cipher[64], tls_cert[256];
	int64_t score;
	char *hdrs;
	size_t hdrs_len;
	/* DNS checks */
	unsigned char fc_state;
	struct fcrdns fc;
	char *client_name;
	struct dnsbl_sess dz;
	unsigned short gen[DNSBL_ZONES_MAX];
	bool name_started;
	char helo_q[256], sender_q[256];
	/* SPF of the HELO name */
	unsigned char spf_helo_state, spf_helo;
	unsigned short spf_helo_gen;
	/* the transaction */
	bool in_txn;
	struct smtp_addr from;
	uint64_t declared_size;
	char login[256];
	unsigned nrcpt;			/* recipients accepted so far */
	struct smtp_addr rcpt;
	int64_t txn_score;
	char *txn_hdrs;
	size_t txn_hdrs_len;
	unsigned short txn_gen;
	unsigned char gl_state;
	unsigned short gl_gen;
	bool gl_tempfail;
	char gl_rcpt[SMTP_PATH_MAX + 1];
	char gl_text[160];
	unsigned char spf_state;
	enum spf_res spf;
	char spf_domain[256], spf_reason[160], spf_for[SMTP_PATH_MAX + 2];
	unsigned char auth_state;
	struct sauth_work *work;	/* from EOM until the job takes it */
	struct dkimv_outcome *dkim;
	struct dmarc_outcome *dmarc;
	char dkim_word[16];
	char *hdr;			/* EOM: the header block */
	size_t hdr_len;
	uint64_t size;
};

static struct {
	pthread_mutex_t lock;
	struct mailbox *mbox;		/* requests, to the engine's thread */
	pthread_t thread;
	bool running;
	struct event_base *base;
	struct dns_loop *dns;
	struct workq *wq;
	struct workq_loop *wql;
	struct greylist *gl;
	struct glstore *store;
	struct dkimv *dkim;
	struct dmarc_psl *psl;
	uint64_t next_id;
} eng = { .lock = PTHREAD_MUTEX_INITIALIZER };

static struct mbox_link stop_item;	/* posted by mlt_engine_stop() */

static void mc_step(struct mlt_conn *mc);

/* now_ms - monotonic milliseconds */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

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
	struct mlt_req *rq = xcalloc(1, sizeof(*rq));

	rq->mc = mc;
	rq->stage = st;
	rq->id = id;
	rq->refs = 1;
	rq->peer.ss_family = AF_UNSPEC;
	pthread_cond_init(&rq->cv, NULL);
	return rq;
}

/* req_free - the last reference went */
static void
req_free(struct mlt_req *rq)
{
	if (rq->work != NULL) {
		if (rq->work->msg != NULL)
			dkimv_msg_free(rq->work->msg);
		free(rq->work);
	}
	free(rq->hdr);
	free(rq->hdrs);
	conf_unref(rq->conf);
	pthread_cond_destroy(&rq->cv);
	free(rq);
}

void
mlt_req_unref(struct mlt_req *rq)
{
	bool last;

	pthread_mutex_lock(&eng.lock);
	last = --rq->refs == 0;
	pthread_mutex_unlock(&eng.lock);
	if (last)
		req_free(rq);
}

/* enqueue - under the lock: to the engine, which holds one reference */
static void
enqueue(struct mlt_req *rq)
{
	rq->refs++;
	mailbox_post(eng.mbox, &rq->link);
}

/* mlt_req_post - to the engine, nobody waits; the caller's reference goes */
void
mlt_req_post(struct mlt_req *rq)
{
	pthread_mutex_lock(&eng.lock);
	enqueue(rq);
	pthread_mutex_unlock(&eng.lock);
	mlt_req_unref(rq);
}

/* mlt_req_call - to the engine, and wait for the answer until the
 * deadline; the caller keeps its reference */
int
mlt_req_call(struct mlt_req *rq, unsigned deadline_ms)
{
	struct timespec ts;
	bool done;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += deadline_ms / 1000;
	ts.tv_nsec += (long)(deadline_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&eng.lock);
	enqueue(rq);
	while (!rq->done)
		if (pthread_cond_timedwait(&rq->cv, &eng.lock, &ts) == ETIMEDOUT)
			break;
	done = rq->done;
	pthread_mutex_unlock(&eng.lock);
	return done ? 0 : -1;
}

/* req_complete - on the engine: the answer is in, the waiter wakes */
static void
req_complete(struct mlt_req *rq)
{
	bool last;

	pthread_mutex_lock(&eng.lock);
	rq->done = true;
	pthread_cond_signal(&rq->cv);
	last = --rq->refs == 0;
	pthread_mutex_unlock(&eng.lock);
	if (last)
		req_free(rq);
}

/* ---------------------------------------------------------------------
 * Answers in flight
 */

static struct mlt_q *
q_new(struct mlt_conn *mc, int kind, int index, unsigned short gen)
{
	struct mlt_q *q = xcalloc(1, sizeof(*q));

	q->mc = mc;
	q->kind = (unsigned char)kind;
	q->index = (unsigned char)index;
	q->gen = gen;
	q->next = mc->qs;
	if (q->next)
		q->next->prev = q;
	mc->qs = q;
	return q;
}

static void
q_unlink(struct mlt_q *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		q->mc->qs = q->next;
	if (q->next)
		q->next->prev = q->prev;
}

/* ---------------------------------------------------------------------
 * DNS checks: FCrDNS and the zones (moatd: proxy/sess_checks.c)
 */

static void fc_result(struct mlt_conn *mc);

static int
send_q(struct mlt_conn *mc, const char *name, int rrtype, int kind, int index, unsigned short gen);

/* fc_dns_done - fcrdns answers */
static void
fc_dns_done(void *ctx, uint64_t tag, const struct dns_answer *a);

static int
fc_send(void *arg, const char *name, int rrtype, int index)
{
	return send_q(arg, name, rrtype, MQ_FCRDNS, index, 0);
}

static void
zone_dns_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct mlt_q *q = ctx;
	struct mlt_conn *mc = q->mc;

	(void)tag;
	if (mc == NULL) {
		free(q);
		return;
	}
	q_unlink(q);
	if (q->gen == mc->gen[q->index] && mc->dz.r[q->index].state == DZ_PENDING)
		dnsbl_sess_answer(mc->conf->dnsbl, &mc->dz, q->index, a, mc->id);
	free(q);
	mc_step(mc);
}

static void
fc_dns_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct mlt_q *q = ctx;
	struct mlt_conn *mc = q->mc;

	(void)tag;
	if (mc == NULL) {
		free(q);
		return;
	}
	q_unlink(q);
	if (mc->fc_state == CHECK_PENDING) {
		fcrdns_answer(&mc->fc, q->index, a, fc_send, mc);
		if (mc->fc.done)
			fc_result(mc);
	}
	free(q);
	mc_step(mc);
}

static int
send_q(struct mlt_conn *mc, const char *name, int rrtype, int kind, int index, unsigned short gen)
{
	struct mlt_q *q;

	if (eng.dns == NULL)
		return -1;
	q = q_new(mc, kind, index, gen);
	if (dns_query(eng.dns, name, rrtype, (unsigned)mc->conf->dns_timeout_ms,
	    kind == MQ_FCRDNS ? fc_dns_done : zone_dns_done, q, mc->id) != 0) {
		q_unlink(q);
		free(q);
		return -1;
	}
	return 0;
}

static int
zone_send(void *arg, const char *name, int zone, unsigned short gen)
{
	return send_q(arg, name, DNS_T_A, MQ_ZONE, zone, gen);
}

static void
zones_start(struct mlt_conn *mc, int type, const char *domain)
{
	if (type == DNSBL_T_IP && !mc->have_peer)
		return;
	dnsbl_sess_start(mc->conf->dnsbl, &mc->dz, mc->gen, type, (const struct sockaddr *)&mc->peer,
	    domain, zone_send, mc, mc->id);
}

/* fc_result - fcrdns is done: log, keep the name, start its zones */
static void
fc_result(struct mlt_conn *mc)
{
	char esc[LOG_ESC_SIZE];

	mc->fc_state = CHECK_DONE;
	free(mc->client_name);
	mc->client_name = mc->fc.status == CHECK_PASS ? xstrdup(mc->fc.name) : NULL;
	log_escape(esc, sizeof(esc), mc->fc.name, strlen(mc->fc.name));
	log_msg(LOG_L_INFO, mc->id, "check fcrdns=%s%s%s", check_status_name(mc->fc.status),
	    mc->client_name ? " name=" : "", mc->client_name ? esc : "");
	if (mc->conf->dnsbl != NULL && (mc->conf->dnsbl->types & (1u << DNSBL_T_NAME)) &&
	    !mc->name_started) {
		mc->name_started = true;
		zones_start(mc, DNSBL_T_NAME, mc->client_name);
	}
}

static void
fc_start(struct mlt_conn *mc)
{
	if (mc->fc_state != CHECK_NONE)
		return;
	mc->fc_state = CHECK_PENDING;
	if (!mc->have_peer) {
		mc->fc.done = true;
		mc->fc.status = CHECK_TEMPERROR;
		fc_result(mc);
		return;
	}
	if (fcrdns_begin(&mc->fc, (const struct sockaddr *)&mc->peer, fc_send, mc) != 0)
		fc_result(mc);
}

static bool
fc_known(const struct mlt_conn *mc)
{
	return mc->fc_state == CHECK_DONE;
}

static bool
dnsbl_known(const struct mlt_conn *mc)
{
	const struct dnsbl_set *set = mc->conf->dnsbl;

	if (set == NULL)
		return true;
	if ((set->types & (1u << DNSBL_T_NAME)) && !mc->name_started)
		return false;
	return mc->dz.pending == 0;
}

/* ---------------------------------------------------------------------
 * Greylisting
 */

static void
gl_result(struct mlt_conn *mc, const struct greylist_verdict *v)
{
	mc->gl_state = CHECK_DONE;
	greylist_outcome(v, mc->conf->greylist.on_error, &mc->gl_tempfail, mc->gl_text,
	    sizeof(mc->gl_text), mc->id);
}

static void
gl_done(void *ctx, uint64_t tag, const struct greylist_verdict *v)
{
	struct mlt_q *q = ctx;
	struct mlt_conn *mc = q->mc;

	(void)tag;
	if (mc == NULL) {
		free(q);
		return;
	}
	q_unlink(q);
	if (mc->gl_state == CHECK_PENDING && q->gen == mc->gl_gen)
		gl_result(mc, v);
	free(q);
	mc_step(mc);
}

static void
addr_text(const struct smtp_addr *a, char *out, size_t size)
{
	out[0] = 0;
	if (!a->null && a->local_len + a->domain_len + 2 <= size)
		snprintf(out, size, "%.*s@%.*s", (int)a->local_len, a->local, (int)a->domain_len,
		    a->domain);
}

static void
gl_start(struct mlt_conn *mc, const char *rcpt)
{
	struct greylist_triplet t;
	struct greylist_verdict v;
	char sender[SMTP_PATH_MAX + 1], org[256];
	struct mlt_q *q;

	snprintf(mc->gl_rcpt, sizeof(mc->gl_rcpt), "%s", rcpt);
	mc->gl_state = CHECK_PENDING;
	mc->gl_gen++;
	addr_text(&mc->from, sender, sizeof(sender));
	memset(&t, 0, sizeof(t));
	t.client = (const struct sockaddr *)&mc->peer;
	t.sender = sender;
	t.rcpt = rcpt;
	/* a big sender's pool counts as one client, as in moatd */
	if (mc->spf_state == CHECK_DONE && mc->spf == SPF_RES_PASS && mc->spf_domain[0])
		t.spf_domain = mc->spf_domain;
	if (mc->client_name != NULL && eng.psl != NULL &&
	    dmarc_psl_orgdomain(eng.psl, mc->client_name, org, sizeof(org)) > 0)
		t.org_domain = org;
	if (eng.gl != NULL && mc->have_peer && greylist_decide_now(eng.gl, &t, &v) == 1) {
		gl_result(mc, &v);
		return;
	}
	q = q_new(mc, MQ_GREYLIST, 0, mc->gl_gen);
	if (eng.gl == NULL || !mc->have_peer || greylist_check(eng.gl, &t, gl_done, q, mc->id) != 0) {
		q_unlink(q);
		free(q);
		memset(&v, 0, sizeof(v));
		v.status = GL_ERROR;
		v.why = eng.gl == NULL ? "no greylist store" : !mc->have_peer ? "no client address" :
		    "overloaded";
		v.key = "";
		gl_result(mc, &v);
	}
}

/* ---------------------------------------------------------------------
 * SPF, DKIM, DMARC (moatd: proxy/sess_auth.c)
 */

struct spf_job {
	struct mlt_q *q;
	struct sauth_spf sp;
};

static void
spf_run(void *arg)
{
	struct spf_job *j = arg;

	sauth_spf_run(&j->sp);
}

static void
spf_done(void *arg)
{
	struct spf_job *j = arg;
	struct mlt_conn *mc = j->q->mc;
	const struct spf_outcome *o = &j->sp.out;

	if (mc == NULL)
		goto out;
	q_unlink(j->q);
	if (j->sp.id == SPF_ID_HELO) {
		if (j->q->gen == mc->spf_helo_gen) {
			mc->spf_helo_state = CHECK_DONE;
			mc->spf_helo = (unsigned char)o->res;
		}
	} else if (j->q->gen == mc->txn_gen) {
		mc->spf_state = CHECK_DONE;
		mc->spf = o->res;
		snprintf(mc->spf_domain, sizeof(mc->spf_domain), "%s", o->domain);
		snprintf(mc->spf_reason, sizeof(mc->spf_reason), "%s", o->reason);
	}
	sauth_spf_log(&j->sp, mc->id);
	mc_step(mc);
out:
	free(j->q);
	free(j);
}

static void
spf_start(struct mlt_conn *mc, enum spf_identity id, const char *sender, unsigned short gen)
{
	struct spf_job *j = xcalloc(1, sizeof(*j));
	int ok = mc->have_peer ? sauth_spf_init(&j->sp, id, (const struct sockaddr *)&mc->peer,
	    mc->helo, sender, (unsigned)mc->conf->spf_timeout_ms) : -1;

	j->q = q_new(mc, id == SPF_ID_HELO ? MQ_SPF_HELO : MQ_SPF, 0, gen);
	if (ok == 0 && sauth_spf_cached(&j->sp)) {
		spf_done(j);	/* every answer was cached: no pool */
		return;
	}
	if (ok != 0 || workq_submit(eng.wql, spf_run, spf_done, j) != 0) {
		j->sp.out.res = SPF_RES_TEMPERROR;
		snprintf(j->sp.out.reason, sizeof(j->sp.out.reason), "%s",
		    ok == 0 ? "work pool full" : "no client address");
		spf_done(j);
	}
}

static bool
auth_enabled(const struct mlt_conn *mc)
{
	return mc->conf->spf || (mc->conf->dkim && eng.dkim != NULL) ||
	    (mc->conf->dmarc != CONF_DMARC_OFF && eng.psl != NULL);
}

struct auth_job {
	struct mlt_q *q;
	struct sauth_work *w;
};

static void
auth_run(void *arg)
{
	struct auth_job *j = arg;

	sauth_run(j->w);
}

static void
auth_done(void *arg)
{
	struct auth_job *j = arg;
	struct mlt_conn *mc = j->q->mc;

	if (mc == NULL || j->q->gen != mc->txn_gen) {
		if (mc != NULL)
			q_unlink(j->q);
		goto out;
	}
	q_unlink(j->q);
	mc->auth_state = CHECK_DONE;
	if (j->w->have_dkim) {
		mc->dkim = xmalloc(sizeof(*mc->dkim));
		*mc->dkim = j->w->dkim;
	}
	snprintf(mc->dkim_word, sizeof(mc->dkim_word), "%s", sauth_dkim_word(mc->dkim));
	if (j->w->do_dmarc) {
		mc->dmarc = xmalloc(sizeof(*mc->dmarc));
		*mc->dmarc = j->w->dmarc;
	}
	sauth_log(j->w, mc->id);
	mc_step(mc);
out:
	if (j->w->msg != NULL)
		dkimv_msg_free(j->w->msg);
	free(j->w);
	free(j->q);
	free(j);
}

static void
auth_start(struct mlt_conn *mc)
{
	struct auth_job *j = xcalloc(1, sizeof(*j));

	mc->auth_state = CHECK_PENDING;
	j->w = mc->work;
	mc->work = NULL;
	j->w->do_dmarc = mc->conf->dmarc != CONF_DMARC_OFF && eng.psl != NULL;
	j->w->dmarc_bis = mc->conf->dmarc == CONF_DMARC_BIS;
	j->w->psl = eng.psl;
	j->w->spf_pass = mc->spf_state == CHECK_DONE && mc->spf == SPF_RES_PASS;
	if (mc->spf_state == CHECK_DONE)
		snprintf(j->w->spf_domain, sizeof(j->w->spf_domain), "%s", mc->spf_domain);
	j->q = q_new(mc, MQ_AUTH, 0, mc->txn_gen);
	if (workq_submit(eng.wql, auth_run, auth_done, j) != 0) {
		memset(&j->w->dkim, 0, sizeof(j->w->dkim));
		if (j->w->msg != NULL) {
			j->w->have_dkim = true;
			j->w->dkim.nsigs = 1;
			j->w->dkim.sigs[0].result = DKIMV_TEMPERROR;
			j->w->dkim.sigs[0].reason = "work pool full";
		}
		j->w->dmarc.result = DMARC_RES_TEMPERROR;
		j->w->dmarc.policy = DMARC_POLICY_NONE;
		auth_done(j);
	}
}

/* auth_wait - must the end of the message wait for DKIM and DMARC? */
static bool
auth_wait(struct mlt_conn *mc)
{
	if (!auth_enabled(mc))
		return false;
	if (mc->spf_state == CHECK_PENDING)
		return true;
	if (mc->auth_state == CHECK_NONE && mc->work != NULL &&
	    ((mc->conf->dkim && eng.dkim != NULL) ||
	    (mc->conf->dmarc != CONF_DMARC_OFF && eng.psl != NULL)))
		auth_start(mc);
	return mc->auth_state == CHECK_PENDING;
}

/* auth_header - the Authentication-Results field, or NULL */
static char *
auth_header(const struct mlt_conn *mc, size_t *len)
{
	char sender[SMTP_PATH_MAX + 1];
	struct sauth_hdr h;

	*len = 0;
	if (!auth_enabled(mc))
		return NULL;
	memset(&h, 0, sizeof(h));
	h.authserv_id = mc->conf->authserv_id;
	h.spf_done = mc->conf->spf && mc->spf_state == CHECK_DONE;
	h.spf = spf_res_name(mc->spf);
	addr_text(&mc->from, sender, sizeof(sender));
	h.mailfrom = sender[0] ? sender : NULL;
	h.helo = mc->helo;
	h.dkim = mc->dkim;
	h.dkim_on = mc->conf->dkim && eng.dkim != NULL;
	h.dmarc = mc->dmarc;
	return sauth_header(&h, len);
}

/* ---------------------------------------------------------------------
 * Transactions, facts, stages
 */

static void
txn_end(struct mlt_conn *mc)
{
	if (mc->work != NULL) {
		if (mc->work->msg != NULL)
			dkimv_msg_free(mc->work->msg);
		free(mc->work);
		mc->work = NULL;
	}
	free(mc->dkim);
	free(mc->dmarc);
	free(mc->txn_hdrs);
	free(mc->hdr);
	mc->dkim = NULL;
	mc->dmarc = NULL;
	mc->txn_hdrs = NULL;
	mc->txn_hdrs_len = 0;
	mc->hdr = NULL;
	mc->hdr_len = 0;
	mc->size = 0;
	mc->in_txn = false;
	memset(&mc->from, 0, sizeof(mc->from));
	mc->declared_size = 0;
	mc->login[0] = 0;
	mc->nrcpt = 0;
	mc->txn_score = 0;
	mc->txn_gen++;		/* late answers are dropped */
	mc->gl_state = CHECK_NONE;
	mc->gl_gen++;
	mc->spf_state = CHECK_NONE;
	mc->auth_state = CHECK_NONE;
	mc->dkim_word[0] = 0;
	mc->spf_for[0] = 0;
}

/* mc_facts - what the connection knows, for the rules of a stage */
static void
mc_facts(const struct mlt_conn *mc, int st, struct rules_facts *f, struct dnsbl_summary *sum)
{
	f->client = mc->have_peer ? (const struct sockaddr *)&mc->peer : NULL;
	f->helo = mc->helo;
	f->helolen = mc->helo ? strlen(mc->helo) : 0;
	f->helo_valid = mc->helo != NULL && smtp_helo_valid(mc->helo, strlen(mc->helo));
	if (mc->in_txn && st >= RS_MAIL) {
		f->have_sender = true;
		f->sender_local = mc->from.local;
		f->sender_llen = mc->from.local_len;
		f->sender_domain = mc->from.domain;
		f->sender_dlen = mc->from.domain_len;
		f->declared_size = mc->declared_size;
	}
	f->score = mc->score + (mc->in_txn ? mc->txn_score : 0);
	f->submission = mc->submission;
	if (mc->tls_version[0]) {
		f->tls = true;
		f->tls_version = mc->tls_version;
		f->tls_cipher = mc->tls_cipher[0] ? mc->tls_cipher : NULL;
		f->tls_client_cert = mc->tls_cert[0] ? mc->tls_cert : NULL;
	}
	if (mc->login[0]) {
		f->auth = true;
		f->login = mc->login;
		f->loginlen = strlen(mc->login);
	}
	/* the checks */
	f->fcrdns_known = fc_known(mc);
	f->fcrdns = f->fcrdns_known && mc->fc.status == CHECK_PASS;
	f->client_name = mc->client_name;
	f->client_nlen = mc->client_name ? strlen(mc->client_name) : 0;
	f->dnsbl_known = dnsbl_known(mc);
	memset(sum, 0, sizeof(*sum));
	if (mc->conf->dnsbl != NULL) {
		dnsbl_summarise(mc->conf->dnsbl, &mc->dz, sum);
		f->dnsbl_score = sum->score;
		f->dnsbl_error = sum->error;
		f->dnsbl_hits = sum->hits[0] ? sum->hits : NULL;
		f->dnsbl_reply = sum->reply;
	}
	f->spf_known = true;
	if (st == RS_HELO) {
		f->spf_known = mc->spf_helo_state != CHECK_PENDING;
		if (mc->spf_helo_state == CHECK_DONE)
			f->spf_helo = spf_res_name((enum spf_res)mc->spf_helo);
	}
	if (st >= RS_MAIL) {
		f->spf_known = mc->spf_state != CHECK_PENDING;
		f->spf = mc->spf_state == CHECK_DONE ? spf_res_name(mc->spf) : "none";
		if (mc->spf_helo_state == CHECK_DONE)
			f->spf_helo = spf_res_name((enum spf_res)mc->spf_helo);
	}
	if (st == RS_RCPT) {
		f->rcpt_local = mc->rcpt.local;
		f->rcpt_llen = mc->rcpt.local_len;
		f->rcpt_domain = mc->rcpt.domain;
		f->rcpt_dlen = mc->rcpt.domain_len;
		f->rcpt_count = mc->nrcpt;
		if (mc->gl_state == CHECK_DONE) {
			char r[SMTP_PATH_MAX + 1];

			addr_text(&mc->rcpt, r, sizeof(r));
			if (strcmp(r, mc->gl_rcpt) == 0) {
				f->greylist_known = true;
				f->greylist_tempfail = mc->gl_tempfail;
				f->greylist_text = mc->gl_text;
			}
		}
	}
	if (st == RS_DATA) {
		f->auth_known = mc->auth_state != CHECK_PENDING;
		f->dkim = mc->dkim_word[0] ? mc->dkim_word : "none";
		f->dmarc = mc->dmarc ? dmarc_result_name(mc->dmarc->result) : "none";
		f->dmarc_policy = mc->dmarc ? dmarc_policy_name(mc->dmarc->policy) : "none";
		f->dmarc_from_domain = mc->dmarc && mc->dmarc->from_domain[0] ?
		    mc->dmarc->from_domain : NULL;
		f->size = mc->size;
		f->rcpt_count = mc->nrcpt;
	}
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

/* gl_key_pending - does the greylist key wait for SPF or FCrDNS (a big
 * sender's pool counts as one client by either)? Starts FCrDNS if needed. */
static bool
gl_key_pending(struct mlt_conn *mc)
{
	const struct greylist_conf *g = &mc->conf->greylist;

	for (int i = 0; i < g->nclient_part; i++) {
		if (g->client_part[i] == GL_KEY_SPF && mc->conf->spf &&
		    mc->spf_state == CHECK_PENDING)
			return true;
		if (g->client_part[i] == GL_KEY_ORG && !fc_known(mc)) {
			fc_start(mc);
			if (!fc_known(mc))
				return true;
		}
	}
	return false;
}

/* mc_wait - must the stage wait for a check? Starts what it needs. */
static bool
mc_wait(struct mlt_conn *mc, enum rules_stage st)
{
	const struct rules *r = mc->conf->rules;
	struct rules_facts f;
	struct dnsbl_summary sum;
	bool wait = false, want_fc, want_bl;

	if (r != NULL) {
		memset(&f, 0, sizeof(f));
		mc_facts(mc, st, &f, &sum);
		if (st == RS_CONNECT || st == RS_HELO) {
			want_fc = !f.fcrdns_known && rules_stage_wants(r, st, &f, CHECK_FCRDNS);
			want_bl = !f.dnsbl_known && rules_stage_wants(r, st, &f, CHECK_DNSBL);
		} else {
			want_fc = rules_stage_needs(r, st, CHECK_FCRDNS);
			want_bl = rules_stage_needs(r, st, CHECK_DNSBL);
		}
		if (want_fc && !fc_known(mc)) {
			fc_start(mc);
			wait |= !fc_known(mc);
		}
		if (want_bl && !dnsbl_known(mc)) {
			if (mc->conf->dnsbl->types & (1u << DNSBL_T_NAME))
				fc_start(mc);
			wait |= !dnsbl_known(mc);
		}
		if ((st == RS_HELO || st == RS_MAIL || st == RS_RCPT) &&
		    rules_stage_needs(r, st, CHECK_SPF) &&
		    (st == RS_HELO ? mc->spf_helo_state : mc->spf_state) == CHECK_PENDING)
			wait = true;
	}
	if (st == RS_DATA && auth_wait(mc))
		wait = true;
	if (!wait && st == RS_RCPT && r != NULL && rules_stage_needs(r, RS_RCPT, CHECK_GREYLIST)) {
		char rcpt[SMTP_PATH_MAX + 1];

		addr_text(&mc->rcpt, rcpt, sizeof(rcpt));
		if (mc->gl_state != CHECK_NONE && strcmp(mc->gl_rcpt, rcpt) == 0) {
			wait = mc->gl_state == CHECK_PENDING;
		} else if (rcpt[0] && gl_key_pending(mc)) {
			wait = true;	/* the key wants SPF's or FCrDNS's answer first */
		} else if (rcpt[0]) {
			memset(&f, 0, sizeof(f));
			mc_facts(mc, RS_RCPT, &f, &sum);
			if (rules_stage_first_need(r, RS_RCPT, &f) == CHECK_GREYLIST) {
				gl_start(mc, rcpt);
				wait = mc->gl_state == CHECK_PENDING;
			}
		}
	}
	return wait;
}

/* mc_expire - the check deadline passed: what is pending fails */
static void
mc_expire(struct mlt_conn *mc)
{
	if (mc->fc_state == CHECK_PENDING) {
		log_msg(LOG_L_INFO, mc->id, "check fcrdns error=deadline");
		mc->fc.done = true;
		mc->fc.status = CHECK_TEMPERROR;
		mc->fc.name[0] = 0;
		fc_result(mc);
	}
	if (mc->gl_state == CHECK_PENDING) {
		struct greylist_verdict v = { .status = GL_ERROR, .why = "deadline", .key = "" };

		mc->gl_gen++;
		gl_result(mc, &v);
	}
	if (mc->conf->dnsbl != NULL)
		for (int i = 0; i < mc->conf->dnsbl->n; i++)
			if (mc->dz.r[i].state == DZ_PENDING) {
				struct dnsbl_eval e = { .v = DNSBL_V_ERROR };

				mc->gen[i]++;
				dnsbl_sess_set(mc->conf->dnsbl, &mc->dz, i, &e, true, mc->id);
			}
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mlt_conn *mc = arg;

	(void)fd;
	(void)what;
	if (mc->req == NULL)
		return;
	log_msg(LOG_L_INFO, mc->id, "check deadline passed stage=%s",
	    rules_stage_name(rules_stage_of(mc->req->stage)));
	mc_expire(mc);
	mc->check_deadline_ms = 1;	/* expired: no new deadline for this request */
	mc_step(mc);
}

/* mc_policy - the stage's rules with what the connection knows: the
 * verdict and reply into the request; scores and header fields to the
 * session (connect, helo) or the transaction */
static void
mc_policy(struct mlt_conn *mc, enum rules_stage st, struct mlt_req *rq)
{
	struct rules_facts f;
	struct rules_result res;
	struct dnsbl_summary sum;
	struct owner_from of;
	char text[600];
	char **hb;
	size_t *hl;

	rq->verdict = RV_CONTINUE;
	if (mc->conf->rules == NULL || rules_count(mc->conf->rules, st) == 0)
		return;
	memset(&f, 0, sizeof(f));
	mc_facts(mc, st, &f, &sum);
	if (st == RS_DATA && mc->hdr != NULL) {
		f.have_from = true;
		if (owner_from_parse(mc->hdr, mc->hdr_len, &of) > 0) {
			f.from_count = of.n;
			f.from_all = of.all;
			f.from_local = of.all[0];
			f.from_llen = strlen(of.all[0]);
			f.from_domain = of.all[1];
			f.from_dlen = strlen(of.all[1]);
		}
	}
	rules_eval(mc->conf->rules, st, &f, &res, mc->id);
	if (res.verdict == RV_WAIT) {
		log_msg(LOG_L_WARN, mc->id, "policy stage=%s check=%s not awaited: counted as temperror",
		    rules_stage_name(st), check_name((enum check_id)res.need));
		rules_facts_unawaited(&f, mc->conf->dnsbl != NULL, sum.error,
		    mc->conf->greylist.on_error);
		rules_eval(mc->conf->rules, st, &f, &res, mc->id);
	}
	if (st >= RS_MAIL) {
		mc->txn_score += res.score;
		hb = &mc->txn_hdrs;
		hl = &mc->txn_hdrs_len;
	} else {
		mc->score += res.score;
		hb = &mc->hdrs;
		hl = &mc->hdrs_len;
	}
	f.score += res.score;
	for (int i = 0; i < res.nhdr; i++) {
		rules_expand(res.hdr_value[i], &f, text, sizeof(text));
		rules_header_add(hb, hl, res.hdr_name[i], text);
	}
	if (res.verdict != RV_REJECT && res.verdict != RV_TEMPFAIL)
		return;
	rq->verdict = res.verdict;
	rq->code = res.code;
	snprintf(rq->enh, sizeof(rq->enh), "%s", res.enh);
	rules_expand(res.text, &f, rq->reply, sizeof(rq->reply));
}

/* mc_eom - the data rules, then the header fields for the top */
static void
mc_eom(struct mlt_conn *mc, struct mlt_req *rq)
{
	size_t arlen = 0, n;
	char *ar;

	if (mc->size > mc->conf->max_message_size) {
		rq->verdict = RV_REJECT;
		rq->code = 552;
		snprintf(rq->enh, sizeof(rq->enh), "5.3.4");
		snprintf(rq->reply, sizeof(rq->reply), "Message size exceeds fixed limit");
		log_msg(LOG_L_INFO, mc->id, "reject stage=data code=552 reason=size size=%llu",
		    (unsigned long long)mc->size);
		return;
	}
	mc_policy(mc, RS_DATA, rq);
	if (rq->verdict == RV_REJECT || rq->verdict == RV_TEMPFAIL)
		return;
	ar = auth_header(mc, &arlen);
	n = arlen + mc->hdrs_len + mc->txn_hdrs_len;
	if (n > 0) {
		rq->hdrs = xmalloc(n);
		if (arlen)
			memcpy(rq->hdrs, ar, arlen);
		if (mc->hdrs_len)
			memcpy(rq->hdrs + arlen, mc->hdrs, mc->hdrs_len);
		if (mc->txn_hdrs_len)
			memcpy(rq->hdrs + arlen + mc->hdrs_len, mc->txn_hdrs, mc->txn_hdrs_len);
		rq->hdrs_len = n;
	}
	free(ar);
	log_msg(LOG_L_INFO, mc->id, "message size=%llu rcpts=%u", (unsigned long long)mc->size,
	    mc->nrcpt);
}

/* mc_step - run the request being worked on as far as it goes */
static void
mc_step(struct mlt_conn *mc)
{
	struct mlt_req *rq = mc->req;
	enum rules_stage st;

	if (rq == NULL)
		return;
	st = rules_stage_of(rq->stage);
	if (mc_wait(mc, st)) {
		if (mc->check_deadline_ms == 0) {
			struct timeval tv;
			uint64_t d = mc->conf->dns_timeout_ms * 2 + 500;

			mc->check_deadline_ms = now_ms() + d;
			tv.tv_sec = (time_t)(d / 1000);
			tv.tv_usec = (suseconds_t)(d % 1000) * 1000;
			evtimer_add(mc->ev_deadline, &tv);
		}
		if (mc->check_deadline_ms != 1)
			return;
		/* past the deadline: SPF or the auth job still out, decide now */
		log_msg(LOG_L_INFO, mc->id, "check deadline: deciding with what is in");
	}
	evtimer_del(mc->ev_deadline);
	mc->check_deadline_ms = 0;
	mc->req = NULL;
	switch (rq->stage) {
	case MS_EOM:
		mc_eom(mc, rq);
		txn_end(mc);
		break;
	case MS_RCPT:
		mc_policy(mc, st, rq);
		if (rq->verdict == RV_CONTINUE)
			mc->nrcpt++;
		break;
	case MS_MAIL:
		mc_policy(mc, st, rq);
		if (rq->verdict != RV_CONTINUE)
			txn_end(mc);
		break;
	case MS_HELO:
		mc_policy(mc, st, rq);
		if (rq->verdict != RV_CONTINUE) {
			free(mc->helo);	/* refused: as if no HELO was given */
			mc->helo = NULL;
		}
		break;
	default:
		mc_policy(mc, st, rq);
		break;
	}
	if (rq->verdict == RV_REJECT || rq->verdict == RV_TEMPFAIL)
		log_msg(LOG_L_INFO, mc->id, "%s stage=%s code=%d",
		    rq->verdict == RV_REJECT ? "reject" : "tempfail", rules_stage_name(st), rq->code);
	req_complete(rq);
}

/* mc_intake - a request's inputs into the connection; starts its checks */
static void
mc_intake(struct mlt_conn *mc, struct mlt_req *rq)
{
	const struct dnsbl_set *set = mc->conf ? mc->conf->dnsbl : NULL;

	switch (rq->stage) {
	case MS_CONNECT:
		mc->id = rq->id;
		mc->conf = rq->conf;	/* the policy at connect, for the whole connection */
		rq->conf = NULL;
		if (mc->conf == NULL)
			panic("connect request without a policy");
		set = mc->conf->dnsbl;
		mc->ev_deadline = evtimer_new(eng.base, deadline_cb, mc);
		if (mc->ev_deadline == NULL)
			panic("evtimer_new failed");
		mc->have_peer = rq->peer.ss_family == AF_INET || rq->peer.ss_family == AF_INET6;
		memcpy(&mc->peer, &rq->peer, sizeof(mc->peer));
		mc->submission = rq->submission;
		if (set != NULL && (set->types & (1u << DNSBL_T_IP)))
			zones_start(mc, DNSBL_T_IP, NULL);
		{
			bool fc = set != NULL && (set->types & (1u << DNSBL_T_NAME));

			for (int st = 0; st < RS__COUNT && !fc && mc->conf->rules; st++)
				fc = rules_stage_needs(mc->conf->rules, (enum rules_stage)st, CHECK_FCRDNS);
			if (fc)
				fc_start(mc);
		}
		break;
	case MS_HELO: {
		size_t n = strnlen(rq->text, SMTP_DOMAIN_MAX);

		txn_end(mc);		/* HELO ends any transaction */
		free(mc->helo);
		mc->helo = xmemdup(rq->text, n);
		if (rq->tls_version[0]) {
			snprintf(mc->tls_version, sizeof(mc->tls_version), "%s", rq->tls_version);
			snprintf(mc->tls_cipher, sizeof(mc->tls_cipher), "%s", rq->tls_cipher);
			snprintf(mc->tls_cert, sizeof(mc->tls_cert), "%s", rq->tls_cert);
		}
		if (set != NULL && (set->types & (1u << DNSBL_T_HELO)) &&
		    (mc->helo_q[0] == 0 || strcmp(mc->helo_q, mc->helo) != 0)) {
			snprintf(mc->helo_q, sizeof(mc->helo_q), "%s", mc->helo);
			zones_start(mc, DNSBL_T_HELO, smtp_helo_valid(mc->helo, n) && mc->helo[0] != '[' ?
			    mc->helo : NULL);
		}
		if (mc->conf->spf && n > 0 && mc->conf->rules != NULL &&
		    rules_stage_needs(mc->conf->rules, RS_HELO, CHECK_SPF)) {
			mc->spf_helo_gen++;
			mc->spf_helo_state = CHECK_PENDING;
			spf_start(mc, SPF_ID_HELO, NULL, mc->spf_helo_gen);
		}
		break;
	}
	case MS_MAIL: {
		struct smtp_mail_params mp;
		char sender[SMTP_PATH_MAX + 1];

		txn_end(mc);
		mc->in_txn = true;
		if (smtp_mail_parse(rq->text, strlen(rq->text), &mc->from, &mp) != NULL) {
			log_msg(LOG_L_INFO, mc->id, "mail sender unparsed: taken as unknown");
			memset(&mc->from, 0, sizeof(mc->from));
			memset(&mp, 0, sizeof(mp));
		}
		mc->declared_size = mp.has_size ? mp.size : 0;
		snprintf(mc->login, sizeof(mc->login), "%s", rq->login);
		if (rq->tls_version[0]) {
			snprintf(mc->tls_version, sizeof(mc->tls_version), "%s", rq->tls_version);
			snprintf(mc->tls_cipher, sizeof(mc->tls_cipher), "%s", rq->tls_cipher);
			snprintf(mc->tls_cert, sizeof(mc->tls_cert), "%s", rq->tls_cert);
		}
		if (set != NULL && (set->types & (1u << DNSBL_T_SENDER))) {
			char d[256] = "";

			if (!mc->from.null && !mc->from.literal && mc->from.domain_len > 0 &&
			    mc->from.domain_len < sizeof(d))
				snprintf(d, sizeof(d), "%s", mc->from.domain);
			if (mc->sender_q[0] == 0 || strcmp(mc->sender_q, d[0] ? d : "-") != 0) {
				snprintf(mc->sender_q, sizeof(mc->sender_q), "%s", d[0] ? d : "-");
				zones_start(mc, DNSBL_T_SENDER, d[0] ? d : NULL);
			}
		}
		if (mc->conf->spf) {
			addr_text(&mc->from, sender, sizeof(sender));
			snprintf(mc->spf_for, sizeof(mc->spf_for), "%s", sender[0] ? sender : "<>");
			mc->spf_state = CHECK_PENDING;
			spf_start(mc, SPF_ID_MAILFROM, sender, mc->txn_gen);
		}
		break;
	}
	case MS_RCPT: {
		struct smtp_rcpt_params rp;

		memset(&rp, 0, sizeof(rp));
		if (smtp_rcpt_parse(rq->text, strlen(rq->text), &mc->rcpt, &rp, true) != NULL)
			memset(&mc->rcpt, 0, sizeof(mc->rcpt));
		if (!mc->in_txn) {	/* a milter that missed MAIL: a null sender */
			mc->in_txn = true;
			mc->from.null = true;
		}
		break;
	}
	case MS_EOM:
		mc->work = rq->work;
		rq->work = NULL;
		mc->hdr = rq->hdr;
		mc->hdr_len = rq->hdr_len;
		rq->hdr = NULL;
		mc->size = rq->size;
		if (!mc->in_txn) {
			mc->in_txn = true;
			mc->from.null = true;
		}
		break;
	default:
		break;
	}
}

/* mc_free - the connection ends: answers in flight will find nobody */
static void
mc_free(struct mlt_conn *mc)
{
	for (struct mlt_q *q = mc->qs, *next; q; q = next) {
		next = q->next;
		q->mc = NULL;
		q->prev = q->next = NULL;
	}
	txn_end(mc);
	if (mc->ev_deadline)
		event_free(mc->ev_deadline);
	free(mc->helo);
	free(mc->client_name);
	free(mc->hdrs);
	if (mc->conf)
		conf_unref(mc->conf);
	free(mc);
}

/* take - one request from the queue */
static void
take(struct mlt_req *rq)
{
	struct mlt_conn *mc = rq->mc;

	if (mc->req != NULL) {
		/* the caller of the last request gave up; it ends now */
		struct mlt_req *old = mc->req;

		mc->req = NULL;
		evtimer_del(mc->ev_deadline);
		mc->check_deadline_ms = 0;
		old->verdict = RV_TEMPFAIL;
		req_complete(old);
	}
	switch (rq->stage) {
	case MS_CLOSE:
		mc_free(mc);
		req_complete(rq);
		return;
	case MS_ABORT:
		if (mc->conf != NULL)
			txn_end(mc);
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
	if (item == &stop_item)
		event_base_loopbreak(eng.base);
	else
		take((struct mlt_req *)(void *)item);
}

static void *
engine_main(void *arg)
{
	(void)arg;
	event_base_dispatch(eng.base);
	return NULL;
}

/* ---------------------------------------------------------------------
 * Start and stop
 */

int
mlt_engine_start(struct conf *c, char *err, size_t errlen)
{
	char *derr = NULL;

	if (getrandom(&eng.next_id, sizeof(eng.next_id), 0) != sizeof(eng.next_id))
		eng.next_id = (uint64_t)getpid() << 32;
	eng.next_id &= 0xffffffffff000000ull;
	eng.wq = workq_new(8, 4096);
	if (dns_init(&c->resolver, &derr) != 0) {
		log_msg(LOG_L_ERROR, 0, "resolver error=\"%s\": DNS checks give temperror", derr);
		free(derr);
	}
	if (c->dkim) {
		struct dkimv_conf dc;

		memset(&dc, 0, sizeof(dc));
		dc.min_key_bits = (unsigned)c->dkim_min_key_bits;
		dc.max_signatures = (unsigned)c->dkim_max_signatures;
		dc.allow_rsa_sha1 = c->dkim_allow_sha1 != 0;
		dc.timeout_ms = (unsigned)c->dns_timeout_ms;
		eng.dkim = dkimv_new(&dc, err, errlen);
		if (eng.dkim == NULL)
			return -1;
	}
	if (c->dmarc != CONF_DMARC_OFF || (conf_greylist_wanted(c) && conf_greylist_uses_org(c))) {
		char e[400] = "";

		eng.psl = dmarc_psl_load(c->psl_path, e, sizeof(e));
		if (eng.psl == NULL) {
			snprintf(err, errlen, "public-suffix-list %s: %s (install Debian's "
			    "publicsuffix, or set dmarc off)", c->psl_path, e);
			return -1;
		}
	}
	eng.base = event_base_new();
	if (eng.base == NULL) {
		snprintf(err, errlen, "event_base_new failed");
		return -1;
	}
	if (c->rules != NULL && rules_stage_needs(c->rules, RS_RCPT, CHECK_GREYLIST)) {
		if (!rds_conf_enabled(&c->greylist.redis)) {
			char e[512] = "";

			eng.store = glstore_open(c->greylist.store_path[0] ? c->greylist.store_path : NULL,
			    c->greylist.store_max, (int64_t)time(NULL), e, sizeof(e));
			if (e[0])
				log_msg(LOG_L_ERROR, 0, "greylist store error=\"%s\": starting empty", e);
			if (eng.store != NULL)
				glstore_set_defaults(eng.store, c->greylist.v4_prefix, c->greylist.v6_prefix,
				    (int64_t)c->greylist.allow_lifetime);
		}
		eng.gl = greylist_new(eng.base, &c->greylist, eng.store);
		if (eng.gl == NULL) {
			snprintf(err, errlen, "greylist: cannot start (no redis and no store)");
			return -1;
		}
	}
	eng.dns = dns_loop_new(eng.base);
	eng.wql = workq_loop_new(eng.wq, eng.base);
	eng.mbox = mailbox_new(eng.base, wake_cb, NULL);
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
	workq_free(eng.wq);
	workq_loop_free(eng.wql);
	dns_shutdown();
	dns_loop_free(eng.dns);
	greylist_free(eng.gl);
	if (eng.store != NULL) {
		char err[512] = "";

		if (glstore_save(eng.store, (int64_t)time(NULL), err, sizeof(err)) != 0)
			log_msg(LOG_L_ERROR, 0, "greylist store save error=\"%s\"", err);
		glstore_close(eng.store);
	}
	if (eng.dkim != NULL)
		dkimv_free(eng.dkim);
	dmarc_psl_free(eng.psl);
	mailbox_free(eng.mbox);
	event_base_free(eng.base);
}

/* mlt_dkim - the verifier, for the callbacks that feed a message */
struct dkimv *
mlt_dkim(void)
{
	return eng.dkim;
}
