/*
 * engine - a session's facts, its checks, waits and deadlines, and the
 * policy's verdict at each stage (the interface and contract: engine.h)
 *
 * DESCRIPTION
 *	Checks and when they start:
 *	  connect  the DNSBL zones of the address (in parallel, while the
 *	           front-end greets), FCrDNS when a client-name zone or a
 *	           rule reads it
 *	  helo     the HELO zones; SPF of the name when a helo rule reads
 *	           spf-helo
 *	  mail     the sender-domain zones; SPF of MAIL FROM
 *	  rcpt     the greylist, when a greylist rule is reached for this
 *	           recipient with the facts known (its key may want SPF's or
 *	           FCrDNS's answer first)
 *	  header   (engine_ahead, once the header section is in) the DKIM
 *	           keys and the DMARC records of the From domain, asked from
 *	           the loop into the resolver's cache; nothing waits there
 *	  data     DKIM's key lookups and DMARC: on the loop when every
 *	           answer is in the resolver's cache (cache-only: nothing can
 *	           wait), else on the work pool; what is missing is asked from
 *	           the loop, or waited for when it was asked ahead and is on
 *	           its way (each name once per transaction)
 *
 *	Whether a stage waits, at every stage: the rules are run in order
 *	over the facts known now (rules_stage_first_need); the first rule
 *	that reaches a check's fact not in yet names the one check waited
 *	for, and when it answers the rules are asked again (at once when
 *	it answers in the same turn: a cache, the embedded greylist store,
 *	so that a later rule's check still in flight is waited for). A rule that
 *	decides before any such fact means no wait, so "client-ip in
 *	trusted accept" first means trusted clients never wait for DNS or
 *	SPF, whatever later rules read. The end of the data also waits for
 *	DKIM and DMARC (Authentication-Results needs them).
 *
 *	The check deadline (twice dns-timeout plus half a second) turns the
 *	DNS checks and the greylist still pending into temporary errors;
 *	SPF and the DKIM/DMARC job have deadlines of their own (spf-timeout,
 *	dns-timeout per lookup) and are waited for until a second deadline,
 *	after which the stage is decided with what is in: a fact not in
 *	counts as a failed lookup, never as a pass.
 *
 *	A rule that reads a check the wait decision did not expect (the
 *	facts changed between the two) gets that check's facts as failed
 *	lookups, with a warn line: never a pass, never a stall.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "decimal.h"
#include "dkim.h"
#include "dkim_sign.h"
#include "dmarc.h"
#include "dmarc_record.h"
#include "dns.h"
#include "dnsbl.h"
#include "engine.h"
#include "engine_int.h"
#include "fcrdns.h"
#include "filter.h"
#include "greylist.h"
#include "log.h"
#include "metrics.h"
#include "owner.h"
#include "ratelimit.h"
#include "rules.h"
#include "sauth.h"
#include "spf.h"
#include "textbuf.h"
#include "workq.h"
#include "xalloc.h"

/* what an answer in flight is for */
enum { EQ_FCRDNS = 0, EQ_ZONE, EQ_GREYLIST, EQ_SPF, EQ_SPF_HELO, EQ_SAUTH, EQ_KEY, EQ_RATELIMIT };

struct eng_q {
	struct eng_q *prev, *next;	/* the session's list */
	struct eng_sess *e;		/* NULL once the session is gone */
	unsigned char kind;		/* EQ_* */
	unsigned char index;		/* fcrdns step, or zone */
	unsigned short gen;		/* the question it answers */
	unsigned short gen2;		/* limits with the greylist: the greylist's */
	uint32_t sent_ms;		/* a zone's query: when it went (latency) */
};

/* the DNS checks: FCrDNS and the zones (made on first use) */
struct eng_dns {
	unsigned char fc_state;		/* enum check_state */
	struct fcrdns fc;
	struct dnsbl_sess dz;
	unsigned short zgen[DNSBL_ZONES_MAX];
	bool name_started;		/* the client-name zones (after FCrDNS) */
	char helo_q[256];		/* what the helo zones were asked about */
	char sender_q[256];		/* and the sender-domain zones */
};

/* names a transaction asks ahead, at most: two DMARC records at MAIL,
 * the keys and two DMARC records at the end of the header, what the end
 * of the data finds missing */
#define ENG_ASK_MAX 20

/* the transaction: from MAIL to its end */
struct eng_txn {
	unsigned short gen;		/* answers for an older one are dropped */
	struct smtp_addr from;
	uint64_t declared_size;
	int64_t score;
	char *hdrs;			/* fields the rules added */
	size_t hdrs_len;
	struct smtp_addr rcpt;		/* the recipient being judged */
	unsigned nrcpt;			/* recipients before it */
	/* greylisting: the decision for that recipient */
	unsigned char gl_state;		/* enum check_state */
	unsigned short gl_gen;
	bool gl_tempfail;
	char gl_rcpt[SMTP_PATH_MAX + 1];
	char gl_text[160];
	char gl_word[16];		/* the last decision, for the verdict line */
	/* SPF of MAIL FROM */
	unsigned char spf_state;
	enum spf_res spf;
	char spf_domain[256];
	char spf_exp[SPF_EXP_MAX + 1];	/* the fail's explanation, or "" */
	/* the end of the data */
	bool have_data;
	struct eng_msg *msg;
	uint64_t size;
	unsigned nrcpt_ok;
	bool bare_lf;
	/* names asked ahead from the loop into the resolver's cache (DMARC
	 * records at MAIL, DKIM keys and DMARC records at the end of the
	 * header and of the data): each once per transaction */
	uint64_t ask_h[ENG_ASK_MAX];	/* their hashes */
	unsigned char ask_n;
	uint32_t ask_inflight;		/* bit i: ask_h[i] not answered yet */
	bool sauth_names;		/* sauth_state pending for names in flight */
	unsigned char sauth_state;	/* enum check_state: DKIM + DMARC */
	struct dkimv_outcome *dkim;	/* results, or NULL */
	struct dmarc_outcome *dmarc;
	char dkim_word[16];
	/* a data rule said sign: the From domain its facts had */
	bool sign;
	char sign_from[256];
	/* rate limits counted per message: done once per transaction */
	uint32_t rl_msg_done, rl_msg_ex;
};

struct eng_sess {
	uint64_t id;
	struct engine_loop *el;
	struct conf *conf;		/* a reference, for the whole session */
	eng_resume_fn resume;
	void *arg;
	rules_trace_fn trace;
	void *trace_arg;
	const struct eng_assume *assume;	/* explain, moatctl test: assumed results */
	struct eng_q *qs;		/* answers in flight */
	/* a stage waiting */
	bool waiting;
	unsigned char wait_stage;	/* enum rules_stage */
	unsigned char expired;		/* deadlines passed during this wait */
	uint64_t deadline_ms;		/* 0: none armed */
	struct event *ev_deadline;	/* made on the first wait */
	/* the client */
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} peer;				/* not sockaddr_storage: an idle session stays small */
	bool have_peer;
	bool submission;
	char *helo;			/* owned, as sent */
	char *tls_version, *tls_cipher, *tls_cert;
	char *login;
	struct eng_proto proto;
	int64_t score;			/* connect and helo rules */
	char *hdrs;
	size_t hdrs_len;
	char *client_name;		/* forward-confirmed, owned */
	struct eng_dns *dns;
	/* SPF of the HELO name */
	unsigned char spf_helo_state;
	unsigned char spf_helo;		/* enum spf_res */
	unsigned short spf_helo_gen;
	unsigned short txn_gen;
	struct eng_txn *txn;
	struct vl_sess *vl;		/* the verdict lines' records (engine_vlog.c) */
	/* the rate limits of the decision under way (reset when it ends) */
	unsigned char rl_state;		/* enum check_state */
	unsigned short rl_gen;
	uint32_t rl_exceeded;		/* bit i: limit i of conf->ratelimits */
	uint32_t rl_msg;		/* the per-message limits asked */
	uint32_t rl_local;		/* limits answered by this loop's reserved blocks */
	unsigned char rl_n;		/* limits in the call in flight */
	unsigned char rl_idx[8];	/* their indexes */
};

static void eng_answered(struct eng_sess *e);
static void arm_deadline(struct eng_sess *e);
static void vlog_who(const struct eng_sess *e, char *out, size_t size);
struct vl_summary;
static void vlog_summary(const struct eng_sess *e, struct vl_summary *out);
struct vl_line_in;
static void vlog_in(const struct eng_sess *e, enum rules_stage st, struct vl_line_in *in,
	char *who, size_t size);

/* now_ms - monotonic milliseconds */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* addr_text - "local@domain", "" for the null path or nothing */
static void
addr_text(const struct smtp_addr *a, char *out, size_t size)
{
	size_t l, d;

	out[0] = 0;
	if (a == NULL || a->null || a->local_len + a->domain_len == 0 ||
	    a->local_len + a->domain_len + 2 > size)
		return;
	/* what "%.*s@%.*s" gives, without printf's cost (several per message) */
	l = strnlen(a->local, a->local_len);
	d = strnlen(a->domain, a->domain_len);
	memcpy(out, a->local, l);
	out[l] = '@';
	memcpy(out + l + 1, a->domain, d);
	out[l + 1 + d] = 0;
}

/* ---------------------------------------------------------------------
 * Answers in flight
 */

static struct eng_q *
q_new(struct eng_sess *e, int kind, int index, unsigned short gen)
{
	struct eng_q *q = xcalloc(1, sizeof(*q));

	q->e = e;
	q->kind = (unsigned char)kind;
	q->index = (unsigned char)index;
	q->gen = gen;
	q->next = e->qs;
	if (q->next)
		q->next->prev = q;
	e->qs = q;
	return q;
}

/* q_unlink - the answer is in: off the session's list */
static void
q_unlink(struct eng_q *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		q->e->qs = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

/* ---------------------------------------------------------------------
 * DNS checks: FCrDNS and the zones
 */

static struct eng_dns *
dns_of(struct eng_sess *e)
{
	if (e->dns == NULL)
		e->dns = xcalloc(1, sizeof(*e->dns));
	return e->dns;
}

static void fc_result(struct eng_sess *e);
static void zone_answer(struct eng_sess *e, int zone, const struct dns_answer *a);

static int fc_send(void *arg, const char *name, int rrtype, int index);

/* dns_done - an answer for one of the session's queries */
static void
dns_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct eng_q *q = ctx;
	struct eng_sess *e = q->e;

	(void)tag;
	if (e == NULL) {		/* the session is gone */
		free(q);
		return;
	}
	q_unlink(q);
	if (q->kind == EQ_FCRDNS) {
		if (e->dns->fc_state == CHECK_PENDING) {
			fcrdns_answer(&e->dns->fc, q->index, a, fc_send, e);
			if (e->dns->fc.done)
				fc_result(e);
		}
	} else if (q->gen == e->dns->zgen[q->index] && e->dns->dz.r[q->index].state == DZ_PENDING) {
		const char *zn = e->conf->dnsbl->z[q->index].name;

		metrics_observe(MF_DNSBL_LATENCY, zn, (uint64_t)((uint32_t)now_ms() - q->sent_ms) * 1000);
		zone_answer(e, q->index, a);
		if (e->dns->dz.r[q->index].verdict == DNSBL_V_ERROR)
			metrics_inc(MF_DNSBL_ERRORS, zn, NULL);
		else if (e->dns->dz.r[q->index].verdict == DNSBL_V_LISTED)
			metrics_inc(MF_DNSBL_LISTED, zn, NULL);
	}
	free(q);
	eng_answered(e);
}

/* send_q - one DNS query for the session */
static int
send_q(struct eng_sess *e, const char *name, int rrtype, int kind, int index, unsigned short gen)
{
	struct eng_q *q;

	if (e->el->query == NULL)
		return -1;
	q = q_new(e, kind, index, gen);
	q->sent_ms = (uint32_t)now_ms();
	if (e->el->query(e->el->dns, name, rrtype, (unsigned)e->conf->dns_timeout_ms, dns_done, q,
	    e->id) != 0) {
		q_unlink(q);
		free(q);
		return -1;
	}
	return 0;
}

/* fc_send - fcrdns's way out (filter.h check_send_fn) */
static int
fc_send(void *arg, const char *name, int rrtype, int index)
{
	return send_q(arg, name, rrtype, EQ_FCRDNS, index, 0);
}

static void
zone_answer(struct eng_sess *e, int zone, const struct dns_answer *a)
{
	dnsbl_sess_answer(e->conf->dnsbl, &e->dns->dz, zone, a, e->id);
}

/* zone_send - one zone's query (dnsbl_send_fn) */
static int
zone_send(void *arg, const char *name, int zone, unsigned short gen)
{
	struct eng_sess *e = arg;
	int rc = send_q(e, name, DNS_T_A, EQ_ZONE, zone, gen);

	if (rc == 0)
		metrics_inc(MF_DNSBL_QUERIES, e->conf->dnsbl->z[zone].name, NULL);
	return rc;
}

/* zones_start - query every enabled zone of a type about a subject */
static void
zones_start(struct eng_sess *e, int type, const char *domain)
{
	struct eng_dns *d = dns_of(e);

	if (type == DNSBL_T_IP && !e->have_peer) {
		/* no address: each zone of the address is a temporary error */
		struct dnsbl_eval ev = { .v = DNSBL_V_ERROR };

		for (int i = 0; i < e->conf->dnsbl->n; i++)
			if (e->conf->dnsbl->z[i].type == DNSBL_T_IP)
				dnsbl_sess_set(e->conf->dnsbl, &d->dz, i, &ev, true, e->id);
		return;
	}
	dnsbl_sess_start(e->conf->dnsbl, &d->dz, d->zgen, type, &e->peer.sa,
	    domain, zone_send, e, e->id);
}

/* fc_result - FCrDNS is done: log, keep the name, start its zones */
static void
fc_result(struct eng_sess *e)
{
	struct eng_dns *d = e->dns;
	char esc[LOG_ESC_SIZE];

	d->fc_state = CHECK_DONE;
	free(e->client_name);
	e->client_name = d->fc.status == CHECK_PASS ? xstrdup(d->fc.name) : NULL;
	log_escape(esc, sizeof(esc), d->fc.name, strlen(d->fc.name));
	log_msg(LOG_L_INFO, e->id, "check fcrdns=%s%s%s", check_status_name(d->fc.status),
	    e->client_name ? " name=" : "", e->client_name ? esc : "");
	if (e->conf->dnsbl != NULL && (e->conf->dnsbl->types & (1u << DNSBL_T_NAME)) &&
	    !d->name_started) {
		d->name_started = true;
		zones_start(e, DNSBL_T_NAME, e->client_name);
	}
}

/* fc_start - send the PTR query, once */
static void
fc_start(struct eng_sess *e)
{
	struct eng_dns *d = dns_of(e);

	if (d->fc_state != CHECK_NONE)
		return;
	d->fc_state = CHECK_PENDING;
	if (!e->have_peer) {
		d->fc.done = true;
		d->fc.status = CHECK_TEMPERROR;
		fc_result(e);
		return;
	}
	if (fcrdns_begin(&d->fc, &e->peer.sa, fc_send, e) != 0)
		fc_result(e);
}

static bool
fc_known(const struct eng_sess *e)
{
	return e->dns != NULL && e->dns->fc_state == CHECK_DONE;
}

/* dnsbl_known - every zone asked so far has answered */
static bool
dnsbl_known(const struct eng_sess *e)
{
	const struct dnsbl_set *set = e->conf->dnsbl;

	if (set == NULL)
		return true;
	if (e->dns == NULL)
		return false;
	if ((set->types & (1u << DNSBL_T_NAME)) && !e->dns->name_started)
		return false;
	return e->dns->dz.pending == 0;
}

/* ---------------------------------------------------------------------
 * SPF
 */

/* the lookups a check may fetch ahead from the loop, one after the
 * other (each run of the check from the cache tells the next name it
 * misses), before the rest goes to the pool */
#define AHEAD_ROUNDS_MAX 16

/* what a check fetched last from the loop: missed again once its answer
 * came (not cacheable, a temporary error), the check goes to the pool */
struct ahead {
	unsigned char rounds;
	int type;
	char name[320];
};

/* ahead_next - the name the last cache-only run missed, when it is worth
 * asking from the loop: a resolver, rounds left, not the name just asked */
static bool
ahead_next(struct eng_sess *e, struct ahead *a, char *name, size_t size, int *type)
{
	if (e->el->dns == NULL || e->el->query == NULL || a->rounds >= AHEAD_ROUNDS_MAX ||
	    !dns_sync_missed_name(name, size, type))
		return false;
	if (a->rounds > 0 && *type == a->type && strcmp(name, a->name) == 0)
		return false;
	a->rounds++;
	a->type = *type;
	snprintf(a->name, sizeof(a->name), "%s", name);
	return true;
}

struct spf_job {
	struct eng_q *q;
	struct sauth_spf sp;
	struct ahead ah;
	uint64_t started_ms;
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
	struct eng_sess *e = j->q->e;
	const struct spf_outcome *o = &j->sp.out;

	if (e == NULL)
		goto out;
	q_unlink(j->q);
	if (j->sp.id == SPF_ID_HELO) {
		if (j->q->gen == e->spf_helo_gen) {
			e->spf_helo_state = CHECK_DONE;
			e->spf_helo = (unsigned char)o->res;
		}
	} else if (e->txn != NULL && j->q->gen == e->txn->gen) {
		e->txn->spf_state = CHECK_DONE;
		e->txn->spf = o->res;
		metrics_inc(MF_SPF, spf_res_name(o->res), NULL);
		snprintf(e->txn->spf_domain, sizeof(e->txn->spf_domain), "%s", o->domain);
		snprintf(e->txn->spf_exp, sizeof(e->txn->spf_exp), "%s", o->explanation);
	}
	sauth_spf_log(&j->sp, e->id);
	eng_answered(e);
out:
	free(j->q);
	free(j);
}

static void spf_go(struct spf_job *j);

/* spf_fetched - a record the check missed is in the resolver's cache
 * (or failed): the check again */
static void
spf_fetched(void *ctx, uint64_t tag, const struct dns_answer *ans)
{
	struct spf_job *j = ctx;

	(void)tag;
	(void)ans;
	if (j->q->e == NULL)
		spf_done(j);		/* the session is gone: frees */
	else
		spf_go(j);
}

/* spf_go - the check from the cache (never waiting); the first record it
 * missed is asked from the loop and the check runs again when it is in,
 * so a slow name server holds up no thread and no other session. What
 * this cannot finish (a record not cacheable, too many rounds) runs on
 * the pool. */
static void
spf_go(struct spf_job *j)
{
	struct eng_sess *e = j->q->e;
	uint64_t spent = now_ms() - j->started_ms;
	char name[320];
	int type;

	if (sauth_spf_cached(&j->sp)) {
		spf_done(j);
		return;
	}
	if (spent >= (uint64_t)e->conf->spf_timeout_ms) {
		j->sp.out.res = SPF_RES_TEMPERROR;
		snprintf(j->sp.out.reason, sizeof(j->sp.out.reason), "timeout");
		spf_done(j);
		return;
	}
	if (ahead_next(e, &j->ah, name, sizeof(name), &type)) {
		uint64_t left = (uint64_t)e->conf->spf_timeout_ms - spent;
		unsigned tmo = (unsigned)(left < e->conf->dns_timeout_ms ? left :
		    e->conf->dns_timeout_ms);

		if (e->el->query(e->el->dns, name, type, tmo, spf_fetched, j, e->id) == 0)
			return;
	}
	if (workq_submit(e->el->wq, spf_run, spf_done, j) != 0) {
		/* the pool is full: a temporary error, at once */
		j->sp.out.res = SPF_RES_TEMPERROR;
		snprintf(j->sp.out.reason, sizeof(j->sp.out.reason), "%s", "work pool full");
		spf_done(j);
	}
}

/* spf_start - one identity: from the cache, with what it misses fetched
 * ahead from the loop (spf_go) */
static void
spf_start(struct eng_sess *e, enum spf_identity id, const char *sender, unsigned short gen)
{
	struct spf_job *j = xcalloc(1, sizeof(*j));
	int ok = e->have_peer ? sauth_spf_init(&j->sp, id, &e->peer.sa,
	    e->helo, sender, (unsigned)e->conf->spf_timeout_ms) : -1;

	j->sp.id = id;		/* also when sauth_spf_init() was not called */
	/* the explanation of a fail, only for a policy that shows it */
	j->sp.rq.want_exp = id == SPF_ID_MAILFROM && rules_uses_spf_explanation(e->conf->rules);
	j->q = q_new(e, id == SPF_ID_HELO ? EQ_SPF_HELO : EQ_SPF, 0, gen);
	j->started_ms = now_ms();
	if (ok != 0) {
		j->sp.out.res = SPF_RES_TEMPERROR;
		snprintf(j->sp.out.reason, sizeof(j->sp.out.reason), "%s", "no client address");
		spf_done(j);
		return;
	}
	spf_go(j);
}

/* spf_pending - rules at a stage that read spf wait for this */
static bool
spf_pending(const struct eng_sess *e, enum rules_stage st)
{
	if (st == RS_HELO)
		return e->spf_helo_state == CHECK_PENDING;
	return e->txn != NULL && e->txn->spf_state == CHECK_PENDING;
}

/* spf_domain_passed - the sender's domain when SPF passed, else NULL */
static const char *
spf_domain_passed(const struct eng_sess *e)
{
	const struct eng_txn *t = e->txn;

	return t != NULL && t->spf_state == CHECK_DONE && t->spf == SPF_RES_PASS &&
	    t->spf_domain[0] ? t->spf_domain : NULL;
}

/* ---------------------------------------------------------------------
 * DKIM and DMARC at the end of the data
 */

struct sauth_job {
	struct eng_q *q;
	struct sauth_work w;
	struct ahead ah;
};

static bool
sauth_enabled(const struct eng_sess *e)
{
	return e->conf->spf || (e->conf->dkim && engine_g.dkim != NULL) ||
	    (e->conf->dmarc != CONF_DMARC_OFF && engine_g.psl != NULL);
}

static bool
sauth_job_wanted(const struct eng_sess *e)
{
	return (e->conf->dkim && engine_g.dkim != NULL) ||
	    (e->conf->dmarc != CONF_DMARC_OFF && engine_g.psl != NULL);
}

static void
sauth_run_job(void *arg)
{
	struct sauth_job *j = arg;

	sauth_run(&j->w);
}

static void
sauth_done(void *arg)
{
	struct sauth_job *j = arg;
	struct eng_sess *e = j->q->e;
	struct eng_txn *t;

	if (e != NULL)
		q_unlink(j->q);
	if (e == NULL || e->txn == NULL || j->q->gen != e->txn->gen)
		goto out;
	t = e->txn;
	t->sauth_state = CHECK_DONE;
	if (j->w.have_dkim) {
		t->dkim = xmalloc(sizeof(*t->dkim));
		*t->dkim = j->w.dkim;
	}
	snprintf(t->dkim_word, sizeof(t->dkim_word), "%s", sauth_dkim_word(t->dkim));
	if (j->w.have_dkim)
		metrics_inc(MF_DKIM, t->dkim_word, NULL);
	if (j->w.do_dmarc) {
		t->dmarc = xmalloc(sizeof(*t->dmarc));
		*t->dmarc = j->w.dmarc;
		metrics_inc(MF_DMARC, dmarc_result_name(t->dmarc->result), NULL);
	}
	sauth_log(&j->w, e->id);
	eng_answered(e);
out:
	if (j->w.msg != NULL)
		dkimv_msg_free(j->w.msg);
	free(j->q);
	free(j);
}

/* name_hash - FNV-1a of a name, for "asked already" (a collision only
 * means a name is not asked ahead: the end of the data asks it) */
static uint64_t
name_hash(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ (*p >= 'A' && *p <= 'Z' ? *p + 32 : *p)) * 0x100000001b3ull;
	return h;
}

/* key_fetched - a record asked ahead is in the resolver's cache (or
 * failed); the end of the data, waiting for it, looks again */
static void
key_fetched(void *ctx, uint64_t tag, const struct dns_answer *ans)
{
	struct eng_q *q = ctx;
	struct eng_sess *e = q->e;
	struct eng_txn *t;

	(void)tag;
	(void)ans;
	if (e != NULL) {
		q_unlink(q);
		t = e->txn;
		if (t != NULL && q->gen == t->gen) {
			t->ask_inflight &= ~(1u << q->index);
			if (t->sauth_names && t->sauth_state == CHECK_PENDING) {
				t->sauth_names = false;
				t->sauth_state = CHECK_NONE;	/* sauth_start() again */
				eng_answered(e);
			}
		}
	}
	free(q);
}

/* ask_ahead - a TXT record into the resolver's cache, asked from the loop
 * for the transaction unless it is cached or was asked in it already;
 * nothing waits for it here. True while it is in flight. */
static bool
ask_ahead(struct eng_sess *e, const char *name)
{
	struct eng_txn *t = e->txn;
	uint64_t h = name_hash(name);
	struct eng_q *q;
	int i;

	for (i = 0; i < t->ask_n; i++)
		if (t->ask_h[i] == h)
			return (t->ask_inflight >> i) & 1;
	if (t->ask_n >= ENG_ASK_MAX || e->el->query == NULL || dns_cached(name, DNS_T_TXT))
		return false;
	/* marked first: an answer never comes inside query(), but if it did
	 * it would find its slot */
	t->ask_h[i] = h;
	t->ask_n++;
	t->ask_inflight |= 1u << i;
	q = q_new(e, EQ_KEY, i, t->gen);
	if (e->el->query(e->el->dns, name, DNS_T_TXT, (unsigned)e->conf->dns_timeout_ms,
	    key_fetched, q, e->id) != 0) {
		q_unlink(q);
		free(q);
		t->ask_inflight &= ~(1u << i);
		t->ask_n--;
		return false;
	}
	return true;
}

/* keys_ahead - the DKIM keys not in the resolver's cache asked from the
 * loop (once per transaction: what failed goes to the pool); true while
 * some are on their way */
static bool
keys_ahead(struct eng_sess *e, bool *all_cached)
{
	struct eng_txn *t = e->txn;
	char names[DKIMV_MAX_SIGS][320];
	int n = dkimv_msg_keynames(t->msg->dkim, names, DKIMV_MAX_SIGS);
	bool pending = false;

	*all_cached = true;
	for (int i = 0; i < n; i++) {
		if (dns_cached(names[i], DNS_T_TXT))
			continue;
		*all_cached = false;
		if (ask_ahead(e, names[i]))
			pending = true;
	}
	return pending;
}

/* dmarc_ahead - DMARC once from the cache (without DKIM results: the
 * record's lookup comes first); the record it missed is asked from the
 * loop, or waited for when it was asked ahead and is on its way. True
 * while it is. */
static bool
dmarc_ahead(struct eng_sess *e)
{
	struct eng_txn *t = e->txn;
	struct sauth_work *w;
	char name[320];
	int type;

	if (e->conf->dmarc == CONF_DMARC_OFF || engine_g.psl == NULL || e->el->dns == NULL ||
	    e->el->query == NULL || t->msg == NULL)
		return false;
	w = xcalloc(1, sizeof(*w));
	sauth_work_from(w, &t->msg->hs);
	w->do_dmarc = true;
	w->dmarc_bis = e->conf->dmarc == CONF_DMARC_BIS;
	w->psl = engine_g.psl;
	dns_sync_cache_only(true);
	sauth_run_dmarc(w);
	dns_sync_cache_only(false);
	free(w);
	if (!dns_sync_missed_name(name, sizeof(name), &type) || type != DNS_T_TXT)
		return false;
	return ask_ahead(e, name);
}

/* dmarc_prefetch - at MAIL FROM: the DMARC records of the sender's domain
 * (usually the From domain as well) and, for RFC 7489, of its
 * organisational domain, asked from the loop into the resolver's cache,
 * so that DMARC at the end of the data runs from the cache */
static void
dmarc_prefetch(struct eng_sess *e, const char *domain)
{
	char d[DMARC_DOMAIN_SIZE], names[2][320];
	int n;

	if (e->conf->dmarc == CONF_DMARC_OFF || engine_g.psl == NULL || e->el->dns == NULL ||
	    e->el->query == NULL || dmarc_domain_norm(domain, strlen(domain), d, sizeof(d)) < 0)
		return;
	n = eng_dmarc_names(e->conf->dmarc, d, names);
	for (int i = 0; i < n; i++)
		(void)ask_ahead(e, names[i]);
}

/* engine_ahead - see engine.h */
void
engine_ahead(struct eng_sess *e, struct eng_ahead *a)
{
	struct eng_txn *t = e->txn;

	if (a != NULL && t != NULL && !t->have_data)
		for (int i = 0; i < a->n; i++)
			(void)ask_ahead(e, a->name[i]);
	engine_ahead_free(a);
}

static void sauth_pool(struct sauth_job *j);
static void sauth_fetched(void *ctx, uint64_t tag, const struct dns_answer *ans);

/* sauth_dmarc_go - DMARC from the cache (DKIM is done); the first record
 * it missed is asked from the loop and DMARC runs again when it is in
 * (sauth_fetched); what this cannot finish runs on the pool */
static void
sauth_dmarc_go(struct sauth_job *j)
{
	struct eng_sess *e = j->q->e;
	char name[320];
	int type;

	dns_sync_cache_only(true);
	sauth_run_dmarc(&j->w);
	dns_sync_cache_only(false);
	if (!dns_sync_missed()) {
		sauth_done(j);
		return;
	}
	if (ahead_next(e, &j->ah, name, sizeof(name), &type) &&
	    e->el->query(e->el->dns, name, type, (unsigned)e->conf->dns_timeout_ms,
	    sauth_fetched, j, e->id) == 0)
		return;
	sauth_pool(j);
}

/* sauth_fetched - a record DMARC missed is in (or failed) */
static void
sauth_fetched(void *ctx, uint64_t tag, const struct dns_answer *ans)
{
	struct sauth_job *j = ctx;
	struct eng_sess *e = j->q->e;

	(void)tag;
	(void)ans;
	if (e == NULL || e->txn == NULL || j->q->gen != e->txn->gen)
		sauth_done(j);		/* nothing waits for it: frees */
	else
		sauth_dmarc_go(j);
}

/* sauth_start - DKIM's lookups and DMARC: the keys (and DMARC's record)
 * are fetched ahead from the loop; with every key in the resolver's cache
 * they run here (cache-only: nothing can wait), DMARC's further records
 * asked from the loop too (sauth_fetched); what is left, on the pool */
static void
sauth_start(struct eng_sess *e)
{
	struct eng_txn *t = e->txn;
	struct sauth_job *j;
	bool cached = true, names = false;

	/* the keys, and DMARC's first record, when they are on their way
	 * (asked ahead at MAIL, at the end of the header, or now) */
	if (t->msg != NULL && t->msg->dkim != NULL)
		names = keys_ahead(e, &cached);
	if (names || t->ask_inflight != 0)
		names |= dmarc_ahead(e);
	if (names) {
		t->sauth_names = true;
		t->sauth_state = CHECK_PENDING;		/* key_fetched() comes back */
		return;
	}
	j = xcalloc(1, sizeof(*j));
	t->sauth_state = CHECK_PENDING;
	if (t->msg != NULL) {
		j->w.msg = t->msg->dkim;
		t->msg->dkim = NULL;
		sauth_work_from(&j->w, &t->msg->hs);
	}
	j->w.do_dmarc = e->conf->dmarc != CONF_DMARC_OFF && engine_g.psl != NULL;
	j->w.dmarc_bis = e->conf->dmarc == CONF_DMARC_BIS;
	j->w.psl = engine_g.psl;
	j->w.spf_pass = t->spf_state == CHECK_DONE && t->spf == SPF_RES_PASS;
	if (t->spf_state == CHECK_DONE)
		snprintf(j->w.spf_domain, sizeof(j->w.spf_domain), "%s", t->spf_domain);
	j->q = q_new(e, EQ_SAUTH, 0, t->gen);
	if (cached && e->el->dns != NULL) {
		dns_sync_cache_only(true);
		sauth_run_dkim(&j->w);
		dns_sync_cache_only(false);
		if (j->w.msg != NULL) {
			dkimv_msg_free(j->w.msg);	/* consumed */
			j->w.msg = NULL;
		}
		sauth_dmarc_go(j);
		return;
	}
	sauth_pool(j);
}

/* sauth_pool - what could not run from the cache: on the pool */
static void
sauth_pool(struct sauth_job *j)
{
	struct eng_sess *e = j->q->e;

	if (workq_submit(e->el->wq, sauth_run_job, sauth_done, j) != 0) {
		/* pool full: no verdict, temporary errors (never a 5xx) */
		if (!j->w.have_dkim)
			memset(&j->w.dkim, 0, sizeof(j->w.dkim));
		if (j->w.msg != NULL) {
			j->w.have_dkim = true;
			j->w.dkim.nsigs = 1;
			j->w.dkim.sigs[0].result = DKIMV_TEMPERROR;
			j->w.dkim.sigs[0].reason = "work pool full";
		}
		j->w.dmarc.result = DMARC_RES_TEMPERROR;
		j->w.dmarc.policy = DMARC_POLICY_NONE;
		sauth_done(j);
	}
}

/* sauth_wait - must the end of the data wait? Starts the job once SPF
 * is in. */
static bool
sauth_wait(struct eng_sess *e)
{
	struct eng_txn *t = e->txn;

	if (t == NULL || !t->have_data || !sauth_enabled(e))
		return false;
	if (t->spf_state == CHECK_PENDING)
		return true;
	if (t->sauth_state == CHECK_NONE && sauth_job_wanted(e))
		sauth_start(e);
	return t->sauth_state == CHECK_PENDING;
}

/* ---------------------------------------------------------------------
 * Greylisting
 */

/* gl_result - the decision for the recipient, logged */
static void
gl_result(struct eng_sess *e, const struct greylist_verdict *v)
{
	struct eng_txn *t = e->txn;

	t->gl_state = CHECK_DONE;
	if (engine_g.opts.greylist_offline && !engine_g.opts.greylist_peek) {
		t->gl_tempfail = false;
		snprintf(t->gl_text, sizeof(t->gl_text), "not asked (offline)");
		return;
	}
	greylist_outcome(v, e->conf->greylist.on_error, &t->gl_tempfail, t->gl_text,
	    sizeof(t->gl_text), e->id);
	snprintf(t->gl_word, sizeof(t->gl_word), "%s", v->status == GL_GREYLISTED ?
	    greylist_reason_name(v->reason) : v->status == GL_PASS ? "passed" :
	    greylist_status_name(v->status));
	metrics_inc(MF_GREYLIST, t->gl_word, NULL);
}

/* gl_done - the greylist's decision, on the session's loop */
static void
gl_done(void *ctx, uint64_t tag, const struct greylist_verdict *v)
{
	struct eng_q *q = ctx;
	struct eng_sess *e = q->e;

	(void)tag;
	if (e == NULL) {
		free(q);
		return;
	}
	q_unlink(q);
	if (e->txn != NULL && e->txn->gl_state == CHECK_PENDING && q->gen == e->txn->gl_gen)
		gl_result(e, v);
	free(q);
	eng_answered(e);
}

/* gl_triplet - the triplet of (client, sender, rcpt); sender and org
 * are the caller's buffers (SMTP_PATH_MAX + 1 and 256 bytes) */
static void
gl_triplet(struct eng_sess *e, const char *rcpt, struct greylist_triplet *tr, char *sender,
	char *org)
{
	addr_text(&e->txn->from, sender, SMTP_PATH_MAX + 1);
	memset(tr, 0, sizeof(*tr));
	tr->client = &e->peer.sa;
	tr->sender = sender;
	tr->rcpt = rcpt;
	/* a big sender's pool counts as one client: by its SPF-validated
	 * domain, or by the organisational domain of its confirmed name */
	tr->spf_domain = spf_domain_passed(e);
	if (e->client_name != NULL && engine_g.psl != NULL &&
	    dmarc_psl_orgdomain(engine_g.psl, e->client_name, org, 256) > 0)
		tr->org_domain = org;
}

/* gl_start - ask for the decision on (client, sender, rcpt) */
static void
gl_start(struct eng_sess *e, const char *rcpt)
{
	struct eng_txn *t = e->txn;
	struct greylist_triplet tr;
	struct greylist_verdict v;
	char sender[SMTP_PATH_MAX + 1], org[256];
	struct eng_q *q;

	snprintf(t->gl_rcpt, sizeof(t->gl_rcpt), "%s", rcpt);
	t->gl_state = CHECK_PENDING;
	t->gl_gen++;
	gl_triplet(e, rcpt, &tr, sender, org);
	memset(&v, 0, sizeof(v));
	if (e->el->gl != NULL && e->have_peer && greylist_decide_now(e->el->gl, &tr, &v) == 1) {
		gl_result(e, &v);	/* answered in this loop turn */
		return;
	}
	q = q_new(e, EQ_GREYLIST, 0, t->gl_gen);
	if (e->el->gl == NULL || !e->have_peer ||
	    greylist_check(e->el->gl, &tr, gl_done, q, e->id) != 0) {
		q_unlink(q);
		free(q);
		memset(&v, 0, sizeof(v));
		v.status = GL_ERROR;
		v.why = e->el->gl == NULL ? "no greylist store" : !e->have_peer ? "no client address" :
		    "overloaded";
		v.key = "";
		gl_result(e, &v);
	}
}

/* gl_key_pending - does the greylist key wait for SPF or FCrDNS (a big
 * sender's pool counts as one client by either)? Starts FCrDNS if needed. */
static bool
gl_key_pending(struct eng_sess *e)
{
	const struct greylist_conf *g = &e->conf->greylist;

	for (int i = 0; i < g->nclient_part; i++) {
		if (g->client_part[i] == GL_KEY_SPF && spf_pending(e, RS_MAIL))
			return true;
		if (g->client_part[i] == GL_KEY_ORG && !fc_known(e)) {
			fc_start(e);
			if (!fc_known(e))
				return true;
		}
	}
	return false;
}

/* ---------------------------------------------------------------------
 * Rate limits
 */

static void eng_facts(const struct eng_sess *e, enum rules_stage st, struct rules_facts *f,
	struct dnsbl_summary *sum);

/* rl_result - the decision's limits are counted (ex: bit i of limit i,
 * of those in asked); on an error, ratelimit-on-error says */
static void
rl_result(struct eng_sess *e, uint32_t asked, uint32_t ex, const char *err)
{
	const struct rl_set *set = e->conf->ratelimits;

	if (err != NULL) {
		bool exc = e->conf->ratelimit_on_error == RL_ON_ERROR_EXCEEDED;

		log_msg(LOG_L_WARN, e->id, "check ratelimit error=\"%s\" counted-as=%s", err,
		    exc ? "exceeded" : "not-exceeded");
		ex = exc ? asked : 0;
	}
	ex &= asked;
	e->rl_exceeded |= ex;
	e->rl_state = CHECK_DONE;
	if (e->txn != NULL) {
		e->txn->rl_msg_done |= asked & e->rl_msg;
		e->txn->rl_msg_ex |= ex & e->rl_msg;
	}
	for (int i = 0; set != NULL && i < set->n; i++)
		if (ex & (1u << i))
			log_msg(LOG_L_INFO, e->id, "ratelimit exceeded name=%s rate=%u/%llus burst=%u",
			    set->d[i].name, set->d[i].rate,
			    (unsigned long long)(set->d[i].dur_ms / 1000), set->d[i].burst);
}

/* rl_answer - Redis's answer for the call in flight (ex: bit j of the
 * call's limit j), when it is still the one waited for */
static void
rl_answer(struct eng_sess *e, unsigned short gen, uint32_t ex, const char *err)
{
	uint32_t asked = 0, mapped = 0;

	if (e->rl_state != CHECK_PENDING || gen != e->rl_gen)
		return;
	asked = e->rl_local;	/* counted here, not exceeded */
	for (int j = 0; j < e->rl_n; j++) {
		asked |= 1u << e->rl_idx[j];
		if (ex & (1u << j))
			mapped |= 1u << e->rl_idx[j];
	}
	rl_result(e, asked, mapped, err);
}

/* rl_done - Redis counted them, on the session's loop */
static void
rl_done(void *ctx, uint32_t ex, const char *err)
{
	struct eng_q *q = ctx;
	struct eng_sess *e = q->e;

	if (e == NULL) {
		free(q);
		return;
	}
	q_unlink(q);
	rl_answer(e, q->gen, ex, err);
	free(q);
	eng_answered(e);
}

/* rlgl_done - the limits and the greylist, answered together (v NULL:
 * the triplet was not decided, the policy stops before the greylist) */
static void
rlgl_done(void *ctx, uint64_t tag, uint32_t ex, const char *err, const struct greylist_verdict *v)
{
	struct eng_q *q = ctx;
	struct eng_sess *e = q->e;

	if (e != NULL) {
		rl_answer(e, q->gen, ex, err);
		if (v == NULL && e->txn != NULL && e->txn->gl_state == CHECK_PENDING &&
		    q->gen2 == e->txn->gl_gen)
			e->txn->gl_state = CHECK_NONE;
	}
	q->gen = q->gen2;
	gl_done(q, tag, v);	/* the greylist's part, and the rest */
}

/* rlgl_start - at RCPT, the limits (already keyed) and the greylist
 * triplet in one Redis call when the rules reach the greylist right
 * after the limits for some of their answers: the triplet is decided
 * (and recorded) for exactly those answers, a table the rules give
 * here for every combination of exceeded limits. False (nothing sent)
 * when it does not apply: the caller asks the limits alone. */
static bool
rlgl_start(struct eng_sess *e, int n, const char *const *kp, const unsigned *emit,
	const unsigned *tau, const unsigned *cost)
{
	struct eng_txn *t = e->txn;
	struct greylist_limits l;
	struct greylist_triplet tr;
	struct rules_facts f;
	struct dnsbl_summary sum;
	char rcpt[SMTP_PATH_MAX + 1], sender[SMTP_PATH_MAX + 1], org[256];
	char when[(1 << GREYLIST_LIMITS_MAX) + 1];
	uint32_t base = e->rl_exceeded;
	bool any = false;
	struct eng_q *q;

	if (t == NULL || e->el->gl == NULL || !e->have_peer || n > GREYLIST_LIMITS_MAX ||
	    !rules_stage_needs(e->conf->rules, RS_RCPT, CHECK_GREYLIST))
		return false;
	addr_text(&t->rcpt, rcpt, sizeof(rcpt));
	if (rcpt[0] == 0 || (t->gl_state != CHECK_NONE && strcmp(t->gl_rcpt, rcpt) == 0))
		return false;
	if (gl_key_pending(e))
		return false;	/* the key waits for SPF or FCrDNS */
	gl_triplet(e, rcpt, &tr, sender, org);
	if (!greylist_asks_redis(e->el->gl, &tr))
		return false;	/* the pass memory answers the greylist */
	eng_facts(e, RS_RCPT, &f, &sum);
	f.rl_known = true;
	for (unsigned m = 0; m < 1u << n; m++) {
		f.rl_exceeded = base;
		for (int j = 0; j < n; j++)
			if (m & (1u << j))
				f.rl_exceeded |= 1u << e->rl_idx[j];
		when[m] = rules_stage_first_need(e->conf->rules, RS_RCPT, &f) == CHECK_GREYLIST ?
		    '1' : '0';
		any |= when[m] == '1';
	}
	when[1u << n] = 0;
	if (!any)
		return false;	/* the policy stops before the greylist whatever they say */
	l = (struct greylist_limits){ .n = n, .keys = kp, .emit_ms = emit, .tau_ms = tau,
	    .cost = cost, .when = when };
	snprintf(t->gl_rcpt, sizeof(t->gl_rcpt), "%s", rcpt);
	t->gl_state = CHECK_PENDING;
	t->gl_gen++;
	e->rl_state = CHECK_PENDING;
	q = q_new(e, EQ_RATELIMIT, 0, e->rl_gen);
	q->gen2 = t->gl_gen;
	if (greylist_check_limits(e->el->gl, &tr, &l, rlgl_done, q, e->id) != 0) {
		q_unlink(q);
		free(q);
		t->gl_state = CHECK_NONE;
		e->rl_state = CHECK_DONE;
		return false;
	}
	return true;
}

/* rl_start - count every limit the stage's rules read, in one call (a
 * per-message limit once per transaction: a later recipient reuses it) */
static void
rl_start(struct eng_sess *e, enum rules_stage st)
{
	const struct rl_set *set = e->conf->ratelimits;
	uint32_t mask = rules_stage_ratelimits(e->conf->rules, st), asked = 0, ex = 0;
	struct eng_txn *t = e->txn;
	char keys[8][RL_KEY_MAX], sender[SMTP_PATH_MAX + 1], sdom[256], rcpt[SMTP_PATH_MAX + 1];
	const char *kp[8];
	unsigned emit[8], tau[8], cost[8], block[8];
	struct rl_subject sj;
	bool blocks = false;
	struct eng_q *q;
	int n = 0;

	e->rl_gen++;
	e->rl_state = CHECK_DONE;
	e->rl_exceeded = 0;
	e->rl_msg = 0;
	e->rl_n = 0;
	e->rl_local = 0;
	if (set == NULL || engine_g.opts.greylist_offline)
		return;		/* explain: nothing counted, none exceeded */
	memset(&sj, 0, sizeof(sj));
	sj.client = e->have_peer ? &e->peer.sa : NULL;
	sj.login = e->login;
	if (t != NULL && st >= RS_MAIL && !t->from.null) {
		addr_text(&t->from, sender, sizeof(sender));
		snprintf(sdom, sizeof(sdom), "%.*s", (int)t->from.domain_len, t->from.domain);
		sj.sender = sender;
		sj.sender_domain = sdom;
	}
	if (t != NULL && st == RS_RCPT) {
		addr_text(&t->rcpt, rcpt, sizeof(rcpt));
		sj.rcpt = rcpt;
	}
	for (int i = 0; i < set->n; i++) {
		const struct rl_def *d = &set->d[i];
		unsigned c = 1;

		if (!(mask & (1u << i)))
			continue;
		if (!d->per_rcpt && t != NULL && st >= RS_MAIL) {
			if (t->rl_msg_done & (1u << i)) {
				e->rl_exceeded |= t->rl_msg_ex & (1u << i);
				continue;
			}
			e->rl_msg |= 1u << i;
		}
		if (d->per_rcpt && st == RS_DATA)
			c = t != NULL ? t->nrcpt_ok : 0;
		if (c == 0 || n == 8 || rl_key(d, &sj, keys[n], sizeof(keys[n])) <= 0)
			continue;	/* a part missing: not counted, not limited */
		block[n] = e->el->rl != NULL ? rl_block(d, (unsigned)e->conf->ratelimit_node_share) : 0;
		if (block[n] > 0 && ratelimit_take_local(e->el->rl, keys[n], c)) {
			e->rl_local |= 1u << i;	/* from this loop's block: no call */
			asked |= 1u << i;
			continue;
		}
		blocks |= block[n] > 0;
		kp[n] = keys[n];
		emit[n] = d->emit_ms;
		tau[n] = d->tau_ms;
		cost[n] = c;
		e->rl_idx[n++] = (unsigned char)i;
		asked |= 1u << i;
	}
	e->rl_n = (unsigned char)n;
	if (n == 0) {
		if (e->rl_local)
			rl_result(e, e->rl_local, 0, NULL);
		return;
	}
	if (e->el->rl == NULL) {
		/* no Redis: in this process (per host) */
		uint64_t now = now_ms();
		const char *err = NULL;

		for (int j = 0; j < n; j++) {
			int r = rl_local_take(kp[j], emit[j], tau[j], cost[j], now);
			if (r < 0)
				err = "in-process table full";
			else if (r == 1)
				ex |= 1u << e->rl_idx[j];
		}
		rl_result(e, asked, ex, err);
		return;
	}
	if (st == RS_RCPT && rlgl_start(e, n, kp, emit, tau, cost))
		return;		/* with the greylist, in one call (no blocks reserved) */
	e->rl_state = CHECK_PENDING;
	q = q_new(e, EQ_RATELIMIT, 0, e->rl_gen);
	if (ratelimit_check(e->el->rl, n, kp, emit, tau, cost, blocks ? block : NULL, 0, rl_done,
	    q) != 0) {
		q_unlink(q);
		free(q);
		rl_result(e, asked, 0, "overloaded");
	}
}

/* ---------------------------------------------------------------------
 * Facts
 */

static void eng_assumed(const struct eng_assume *a, enum rules_stage st, struct rules_facts *f);

/* eng_facts - what the session knows, for the rules of a stage; sum
 * holds the DNSBL summary the facts point into */
static void
eng_facts(const struct eng_sess *e, enum rules_stage st, struct rules_facts *f,
	struct dnsbl_summary *sum)
{
	const struct eng_txn *t = e->txn;

	memset(f, 0, sizeof(*f));
	f->client = e->have_peer ? &e->peer.sa : NULL;
	f->helo = e->helo;
	f->helolen = e->helo ? strlen(e->helo) : 0;
	f->helo_valid = e->helo != NULL && smtp_helo_valid(e->helo, f->helolen);
	f->submission = e->submission;
	f->pipelining_violation = e->proto.pipelining_violation;
	f->pipelined_after_dot = e->proto.pipelined_after_dot;
	f->early_talker = e->proto.early_talker;
	f->bare_lf_commands = e->proto.bare_lf_commands;
	f->unknown_commands = e->proto.unknown_commands;
	if (e->tls_version != NULL) {
		f->tls = true;
		f->tls_version = e->tls_version;
		f->tls_cipher = e->tls_cipher;
		f->tls_client_cert = e->tls_cert;
	}
	if (e->login != NULL) {
		f->auth = true;
		f->login = e->login;
		f->loginlen = strlen(e->login);
	}
	f->score = e->score + (t != NULL ? t->score : 0);
	f->rl_known = e->rl_state == CHECK_DONE;
	f->rl_exceeded = e->rl_exceeded;
	if (t != NULL && st >= RS_MAIL) {
		f->have_sender = true;
		f->sender_local = t->from.local;
		f->sender_llen = t->from.local_len;
		f->sender_domain = t->from.domain;
		f->sender_dlen = t->from.domain_len;
		f->declared_size = t->declared_size;
	}
	/* the DNS checks */
	f->fcrdns_known = fc_known(e);
	f->fcrdns = f->fcrdns_known && e->dns->fc.status == CHECK_PASS;
	f->client_name = e->client_name;
	f->client_nlen = e->client_name ? strlen(e->client_name) : 0;
	f->dnsbl_known = dnsbl_known(e);
	memset(sum, 0, sizeof(*sum));
	if (e->conf->dnsbl != NULL && e->dns != NULL) {
		dnsbl_summarise(e->conf->dnsbl, &e->dns->dz, sum);
		f->dnsbl_score = sum->score;
		f->dnsbl_error = sum->error;
		f->dnsbl_hits = sum->hits[0] ? sum->hits : NULL;
		f->dnsbl_reply = sum->reply;
	}
	/* SPF */
	f->spf_known = true;
	if (st == RS_HELO) {
		f->spf_known = e->spf_helo_state != CHECK_PENDING;
		if (e->spf_helo_state == CHECK_DONE)
			f->spf_helo = spf_res_name((enum spf_res)e->spf_helo);
	}
	if (st >= RS_MAIL) {
		f->spf_known = t == NULL || t->spf_state != CHECK_PENDING;
		f->spf = t != NULL && t->spf_state == CHECK_DONE ? spf_res_name(t->spf) : "none";
		f->spf_explanation = t != NULL && t->spf_state == CHECK_DONE ? t->spf_exp : NULL;
		if (e->spf_helo_state == CHECK_DONE)
			f->spf_helo = spf_res_name((enum spf_res)e->spf_helo);
	}
	if (st == RS_RCPT && t != NULL) {
		f->rcpt_local = t->rcpt.local;
		f->rcpt_llen = t->rcpt.local_len;
		f->rcpt_domain = t->rcpt.domain;
		f->rcpt_dlen = t->rcpt.domain_len;
		f->rcpt_count = t->nrcpt;
		if (t->gl_state == CHECK_DONE) {
			char r[SMTP_PATH_MAX + 1];

			addr_text(&t->rcpt, r, sizeof(r));
			if (strcmp(r, t->gl_rcpt) == 0) {
				f->greylist_known = true;
				f->greylist_tempfail = t->gl_tempfail;
				f->greylist_text = t->gl_text;
			}
		}
	}
	if (st == RS_DATA && t != NULL) {
		f->sauth_known = t->sauth_state != CHECK_PENDING;
		f->dkim = t->dkim_word[0] ? t->dkim_word : "none";
		f->dmarc = t->dmarc ? dmarc_result_name(t->dmarc->result) : "none";
		f->dmarc_policy = t->dmarc ? dmarc_policy_name(t->dmarc->policy) : "none";
		f->dmarc_from_domain = t->dmarc && t->dmarc->from_domain[0] ?
		    t->dmarc->from_domain : NULL;
		f->size = t->size;
		f->rcpt_count = t->nrcpt_ok;
		f->bare_lf = t->bare_lf;
	}
	if (e->assume != NULL)
		eng_assumed(e->assume, st, f);
}

/* ---------------------------------------------------------------------
 * Waiting
 */

/* rcpt_greylist_wait - does this recipient need a greylist decision
 * first? Asks for it when a greylist rule will be reached. */
static bool
rcpt_greylist_wait(struct eng_sess *e)
{
	struct eng_txn *t = e->txn;
	struct rules_facts f;
	struct dnsbl_summary sum;
	char rcpt[SMTP_PATH_MAX + 1];

	if (t == NULL || !rules_stage_needs(e->conf->rules, RS_RCPT, CHECK_GREYLIST))
		return false;
	addr_text(&t->rcpt, rcpt, sizeof(rcpt));
	if (rcpt[0] == 0)
		return false;
	if (t->gl_state != CHECK_NONE && strcmp(t->gl_rcpt, rcpt) == 0)
		return t->gl_state == CHECK_PENDING;
	if (gl_key_pending(e))
		return true;	/* the key wants SPF's or FCrDNS's answer first */
	eng_facts(e, RS_RCPT, &f, &sum);
	if (rules_stage_first_need(e->conf->rules, RS_RCPT, &f) != CHECK_GREYLIST)
		return false;
	gl_start(e, rcpt);
	return t->gl_state == CHECK_PENDING;
}

/* must_wait - must the stage wait before its rules run? The rules are
 * run, in order, over the facts known now: the first rule that reaches a
 * check's fact not in yet names the one check waited for (and started);
 * a rule that decides before any such fact means no wait at all, so a
 * trusted client decided by the first rule never waits for DNS or SPF.
 * When the awaited answer comes, this runs again and may name the next
 * check a later rule reads. */
static bool
must_wait(struct eng_sess *e, enum rules_stage st)
{
	const struct rules *r = e->conf->rules;
	/* the end of the data waits for DKIM and DMARC in any case
	 * (Authentication-Results), started beside what the rules read */
	bool wait = st == RS_DATA && sauth_wait(e);
	bool gl_asked = false;

	/* a check that a start completes at once (cache) lets the rules go
	 * further: ask again, a bounded number of times */
	for (int i = 0; r != NULL && i <= CHECK__COUNT; i++) {
		struct rules_facts f;
		struct dnsbl_summary sum;
		int need;

		eng_facts(e, st, &f, &sum);
		need = rules_stage_first_need(r, st, &f);
		if (need == CHECK_FCRDNS) {
			fc_start(e);
			if (!fc_known(e))
				return true;
		} else if (need == CHECK_DNSBL) {
			if (e->conf->dnsbl != NULL && (e->conf->dnsbl->types & (1u << DNSBL_T_NAME)))
				fc_start(e);
			if (!dnsbl_known(e))
				return true;
		} else if (need == CHECK_RATELIMIT) {
			if (e->rl_state == CHECK_NONE)
				rl_start(e, st);
			if (e->rl_state == CHECK_PENDING)
				return true;
		} else if (need == CHECK_SPF && st != RS_DATA) {
			if (spf_pending(e, st))
				return true;
			break;
		} else if (need == CHECK_GREYLIST && st == RS_RCPT && !gl_asked) {
			/* answered in this turn (the embedded store, a pass
			 * from greylist-cache, offline): a later rule may read
			 * a check still in flight, SPF started at mail */
			gl_asked = true;
			if (rcpt_greylist_wait(e))
				return true;
		} else {
			break;	/* none, the greylist (below) or DKIM/DMARC */
		}
	}
	if (wait)
		return true;
	/* the greylist is asked once the facts before it are in, and only
	 * when a greylist rule will be reached for this recipient */
	if (st == RS_RCPT && r != NULL)
		return rcpt_greylist_wait(e);
	return false;
}

/* expire - the check deadline passed: the DNS checks and the greylist
 * still pending become temporary errors */
static void
expire(struct eng_sess *e)
{
	struct eng_dns *d = e->dns;

	if (d != NULL && d->fc_state == CHECK_PENDING) {
		log_msg(LOG_L_INFO, e->id, "check fcrdns error=deadline");
		d->fc.done = true;
		d->fc.status = CHECK_TEMPERROR;
		d->fc.name[0] = 0;
		fc_result(e);
	}
	if (e->rl_state == CHECK_PENDING) {
		uint32_t asked = 0;

		for (int j = 0; j < e->rl_n; j++)
			asked |= 1u << e->rl_idx[j];
		e->rl_gen++;
		rl_result(e, asked, 0, "deadline");
	}
	if (e->txn != NULL && e->txn->gl_state == CHECK_PENDING) {
		struct greylist_verdict v = { .status = GL_ERROR, .why = "deadline", .key = "" };

		e->txn->gl_gen++;
		gl_result(e, &v);
	}
	if (d != NULL && e->conf->dnsbl != NULL)
		for (int i = 0; i < e->conf->dnsbl->n; i++)
			if (d->dz.r[i].state == DZ_PENDING) {
				struct dnsbl_eval ev = { .v = DNSBL_V_ERROR };

				d->zgen[i]++;
				dnsbl_sess_set(e->conf->dnsbl, &d->dz, i, &ev, true, e->id);
			}
}

/* deadline_cb - the check deadline of a waiting stage passed: what is
 * pending becomes a temporary error; SPF and DKIM/DMARC, which have
 * deadlines of their own, get one more; then the stage is decided */
static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct eng_sess *e = arg;

	(void)fd;
	(void)what;
	if (!e->waiting)
		return;
	log_msg(LOG_L_INFO, e->id, "check deadline passed stage=%s",
	    rules_stage_name((enum rules_stage)e->wait_stage));
	expire(e);
	e->deadline_ms = 0;
	e->expired++;
	e->waiting = false;
	if (e->expired < 2 && must_wait(e, (enum rules_stage)e->wait_stage)) {
		arm_deadline(e);
		e->waiting = true;
		return;
	}
	e->resume(e->arg);
}

/* arm_deadline - a stage starts waiting */
static void
arm_deadline(struct eng_sess *e)
{
	uint64_t d = e->conf->dns_timeout_ms * 2 + 500;
	struct timeval tv;

	if (e->deadline_ms != 0)
		return;
	if (e->ev_deadline == NULL) {
		e->ev_deadline = evtimer_new(e->el->base, deadline_cb, e);
		if (e->ev_deadline == NULL)
			panic("evtimer_new failed");
	}
	e->deadline_ms = now_ms() + d;
	tv.tv_sec = (time_t)(d / 1000);
	tv.tv_usec = (suseconds_t)(d % 1000) * 1000;
	evtimer_add(e->ev_deadline, &tv);
}

/* eng_answered - an answer came in: a waiting stage goes on when it
 * need not wait any longer. It runs from the answer's own event, never
 * inside an engine_* call; waiting is off while must_wait() runs, so an
 * answer that a check it starts gives at once does not come back here. */
static void
eng_answered(struct eng_sess *e)
{
	if (!e->waiting)
		return;
	e->waiting = false;
	if (must_wait(e, (enum rules_stage)e->wait_stage)) {
		e->waiting = true;
		return;
	}
	e->resume(e->arg);
}

/* ---------------------------------------------------------------------
 * Sessions
 */

struct eng_sess *
engine_sess_new(struct engine_loop *el, struct conf *c, uint64_t id,
	const struct sockaddr *client, bool submission, eng_resume_fn resume, void *arg)
{
	struct eng_sess *e = xcalloc(1, sizeof(*e));

	e->vl = vl_new();
	const struct dnsbl_set *set = c->dnsbl;
	bool fc;

	e->id = id;
	e->el = el;
	e->conf = conf_ref(c);
	e->resume = resume;
	e->arg = arg;
	e->submission = submission;
	if (client != NULL && client->sa_family == AF_INET) {
		memcpy(&e->peer.sin, client, sizeof(struct sockaddr_in));
		e->have_peer = true;
	} else if (client != NULL && client->sa_family == AF_INET6) {
		memcpy(&e->peer.sin6, client, sizeof(struct sockaddr_in6));
		e->have_peer = true;
	}
	/* what starts with the session */
	if (set != NULL && (set->types & (1u << DNSBL_T_IP)))
		zones_start(e, DNSBL_T_IP, NULL);
	fc = set != NULL && (set->types & (1u << DNSBL_T_NAME));
	for (int st = 0; st < RS__COUNT && !fc && c->rules; st++)
		fc = rules_stage_needs(c->rules, (enum rules_stage)st, CHECK_FCRDNS);
	if (fc)
		fc_start(e);
	return e;
}

/* txn_free - the transaction's state goes */
static void
txn_free(struct eng_txn *t)
{
	if (t == NULL)
		return;
	engine_msg_free(t->msg);
	free(t->dkim);
	free(t->dmarc);
	free(t->hdrs);
	free(t);
}

void
engine_sess_free(struct eng_sess *e)
{
	if (e == NULL)
		return;
	for (struct eng_q *q = e->qs, *next; q; q = next) {
		next = q->next;
		q->e = NULL;
		q->prev = q->next = NULL;
	}
	if (e->ev_deadline != NULL)
		event_free(e->ev_deadline);
	txn_free(e->txn);
	free(e->dns);
	free(e->helo);
	free(e->tls_version);
	free(e->tls_cipher);
	free(e->tls_cert);
	free(e->login);
	free(e->hdrs);
	free(e->client_name);
	conf_unref(e->conf);
	vl_free(e->vl);
	free(e);
}

/* set_str - replace an owned string (NULL or "" clears it) */
static void
set_str(char **p, const char *v)
{
	if (*p != NULL && v != NULL && strcmp(*p, v) == 0)
		return;
	free(*p);
	*p = v != NULL && v[0] ? xstrdup(v) : NULL;
}

void
engine_set_tls(struct eng_sess *e, const char *version, const char *cipher, const char *client_cert)
{
	set_str(&e->tls_version, version);
	set_str(&e->tls_cipher, version ? cipher : NULL);
	set_str(&e->tls_cert, version ? client_cert : NULL);
}

void
engine_set_login(struct eng_sess *e, const char *login)
{
	set_str(&e->login, login);
}

struct eng_proto *
engine_proto(struct eng_sess *e)
{
	return &e->proto;
}

void
engine_set_trace(struct eng_sess *e, rules_trace_fn fn, void *arg)
{
	e->trace = fn;
	e->trace_arg = arg;
}

/* engine_set_assume - see engine.h */
void
engine_set_assume(struct eng_sess *e, struct eng_assume *a)
{
	if (a != NULL && (a->greylist == ENG_GL_NEW || a->greylist == ENG_GL_EARLY)) {
		/* the text moatd's greylist gives (greylist_reply_text) */
		struct greylist_verdict v = { .status = GL_GREYLISTED,
		    .retry_in = a->greylist_retry ? a->greylist_retry : e->conf->greylist.delay };
		greylist_reply_text(&v, a->gl_text, sizeof(a->gl_text));
	}
	e->assume = a;
}

/* eng_assumed - the assumed results over the checks' own (eng_facts) */
static void
eng_assumed(const struct eng_assume *a, enum rules_stage st, struct rules_facts *f)
{
	if (a->fcrdns >= 0) {
		f->fcrdns_known = true;
		f->fcrdns = a->fcrdns == 1;
		f->client_name = a->fcrdns == 1 ? a->client_name : NULL;
		f->client_nlen = f->client_name ? strlen(f->client_name) : 0;
	}
	if (a->dnsbl) {
		f->dnsbl_known = true;
		f->dnsbl_score = a->dnsbl_score;
		f->dnsbl_hits = a->dnsbl_hits;
		f->dnsbl_reply = a->dnsbl_reply;
		f->dnsbl_error = a->dnsbl_error;
	}
	if (st >= RS_HELO && a->spf_helo != NULL) {
		f->spf_helo = a->spf_helo;
		if (st == RS_HELO)
			f->spf_known = true;
	}
	if (st >= RS_MAIL && a->spf != NULL) {
		f->spf_known = true;
		f->spf = a->spf;
		f->spf_explanation = NULL;
	}
	if (st == RS_RCPT && a->greylist != ENG_GL_ASK) {
		f->greylist_known = true;
		f->greylist_tempfail = a->greylist == ENG_GL_NEW || a->greylist == ENG_GL_EARLY;
		f->greylist_text = f->greylist_tempfail ? a->gl_text : "";
	}
	if (st == RS_DATA && (a->dkim || a->dmarc || a->dmarc_policy)) {
		f->sauth_known = true;
		if (a->dkim)
			f->dkim = a->dkim;
		if (a->dmarc)
			f->dmarc = a->dmarc;
		if (a->dmarc_policy)
			f->dmarc_policy = a->dmarc_policy;
		if (a->from_domain)
			f->dmarc_from_domain = a->from_domain;
	}
}

bool
engine_in_txn(const struct eng_sess *e)
{
	return e->txn != NULL;
}

/* engine_txn_end - the transaction is over */
void
engine_txn_end(struct eng_sess *e)
{
	if (e->txn == NULL)
		return;
	if (vl_abandoned(e->vl) && log_enabled(LOG_L_INFO) && !engine_g.opts.greylist_offline) {
		/* RSET, QUIT, a new MAIL or HELO, a lost connection: the
		 * transaction's line all the same */
		char who[ENG_WHO_SIZE];
		struct vl_summary sum;
		struct vl_line_in in;

		vlog_in(e, RS_RCPT, &in, who, sizeof(who));
		vlog_summary(e, &sum);
		in.summary = &sum;
		in.abandoned = true;
		vl_abandon_line(e->vl, &in, now_ms());
	}
	vl_end(e->vl);
	txn_free(e->txn);
	e->txn = NULL;
	e->txn_gen++;		/* late answers are dropped */
}

/* engine_helo - the HELO/EHLO name */
void
engine_helo(struct eng_sess *e, const char *name, size_t len)
{
	const struct dnsbl_set *set = e->conf->dnsbl;
	char d[256];

	if (len > SMTP_DOMAIN_MAX)
		len = SMTP_DOMAIN_MAX;
	engine_txn_end(e);		/* HELO ends any transaction */
	if (e->helo != NULL && strlen(e->helo) == len && memcmp(e->helo, name, len) == 0 &&
	    e->spf_helo_state != CHECK_NONE)
		return;			/* asked already for this name */
	free(e->helo);
	e->helo = xmemdup(name, len);
	if (set != NULL && (set->types & (1u << DNSBL_T_HELO))) {
		struct eng_dns *dn = dns_of(e);
		size_t n = len < sizeof(d) - 1 ? len : sizeof(d) - 1;

		memcpy(d, name, n);
		d[n] = 0;
		if (dn->helo_q[0] == 0 || strcmp(dn->helo_q, d) != 0) {
			snprintf(dn->helo_q, sizeof(dn->helo_q), "%s", d);
			/* an address literal or a bad name is not looked up */
			zones_start(e, DNSBL_T_HELO, smtp_helo_valid(d, n) && d[0] != '[' ? d : NULL);
		}
	}
	if (e->conf->spf && len > 0 && e->conf->rules != NULL &&
	    rules_stage_needs(e->conf->rules, RS_HELO, CHECK_SPF)) {
		e->spf_helo_gen++;
		e->spf_helo_state = CHECK_PENDING;
		spf_start(e, SPF_ID_HELO, NULL, e->spf_helo_gen);
	}
}

/* engine_mail - a new transaction */
void
engine_mail(struct eng_sess *e, const struct smtp_addr *from, const struct smtp_mail_params *mp)
{
	const struct dnsbl_set *set = e->conf->dnsbl;
	struct eng_txn *t;

	engine_txn_end(e);
	t = e->txn = xcalloc(1, sizeof(*t));
	t->gen = ++e->txn_gen;
	if (from != NULL)
		t->from = *from;
	{
		char sender[SMTP_PATH_MAX + 1];

		addr_text(&t->from, sender, sizeof(sender));
		vl_begin(e->vl, sender, now_ms());
	}
	t->declared_size = mp != NULL && mp->has_size ? mp->size : 0;
	if (set != NULL && (set->types & (1u << DNSBL_T_SENDER))) {
		struct eng_dns *dn = dns_of(e);
		char d[256] = "";

		if (!t->from.null && !t->from.literal && t->from.domain_len > 0 &&
		    t->from.domain_len < sizeof(d))
			snprintf(d, sizeof(d), "%s", t->from.domain);
		if (dn->sender_q[0] == 0 || strcmp(dn->sender_q, d[0] ? d : "-") != 0) {
			snprintf(dn->sender_q, sizeof(dn->sender_q), "%s", d[0] ? d : "-");
			zones_start(e, DNSBL_T_SENDER, d[0] ? d : NULL);
		}
	}
	if (e->conf->spf) {
		char sender[SMTP_PATH_MAX + 1];

		addr_text(&t->from, sender, sizeof(sender));
		t->spf_state = CHECK_PENDING;
		spf_start(e, SPF_ID_MAILFROM, sender, t->gen);
	}
	if (!t->from.null && !t->from.literal && t->from.domain_len > 0) {
		dmarc_prefetch(e, t->from.domain);
	}
}

/* engine_rcpt - the recipient the rcpt stage judges next */
void
engine_rcpt(struct eng_sess *e, const struct smtp_addr *rcpt, unsigned nrcpt)
{
	if (e->txn == NULL)
		engine_mail(e, NULL, NULL);
	e->txn->rcpt = *rcpt;
	e->txn->nrcpt = nrcpt;
}

/* engine_data - the end of the data */
void
engine_data(struct eng_sess *e, struct eng_msg *m, uint64_t size, unsigned nrcpt, bool bare_lf)
{
	struct eng_txn *t;

	if (e->txn == NULL)
		engine_mail(e, NULL, NULL);
	t = e->txn;
	engine_msg_free(t->msg);
	t->msg = m;
	if (m != NULL)
		engine_msg_finish(m);
	t->have_data = true;
	t->size = size;
	t->nrcpt_ok = nrcpt;
	t->bare_lf = bare_lf;
}

/* engine_wanted_at_connect - does a session under c start anything, or
 * run a rule, before its HELO? When not, a front-end may make the
 * session on first use (an idle connection then costs nothing here) */
bool
engine_wanted_at_connect(const struct conf *c)
{
	bool fc = c->dnsbl != NULL;

	for (int st = 0; st < RS__COUNT && !fc && c->rules; st++)
		fc = rules_stage_needs(c->rules, (enum rules_stage)st, CHECK_FCRDNS);
	return fc || engine_stage_may_refuse(c, RS_CONNECT);
}

/* engine_stage_may_refuse - has policy c a rule at this stage? */
bool
engine_stage_may_refuse(const struct conf *c, enum rules_stage st)
{
	return c->rules != NULL && rules_count(c->rules, st) > 0;
}

/* from_facts - the header From's mailboxes into the data facts */
static void
from_facts(const struct eng_txn *t, struct rules_facts *f, struct owner_from *of)
{
	if (t == NULL || t->msg == NULL || t->msg->hdr == NULL)
		return;
	f->have_from = true;
	if (owner_from_parse(t->msg->hdr, t->msg->hdr_len, of) <= 0)
		return;
	f->from_count = of->n;
	f->from_all = of->all;
	f->from_local = of->all[0];
	f->from_llen = strlen(of->all[0]);
	f->from_domain = of->all[1];
	f->from_dlen = strlen(of->all[1]);
}

/* eval - run the rules, with the trace when explain asked for it */
static void
eval(struct eng_sess *e, enum rules_stage st, const struct rules_facts *f, struct rules_result *res)
{
	if (e->trace != NULL)
		rules_eval_trace(e->conf->rules, st, f, res, e->id, e->trace, e->trace_arg);
	else
		rules_eval(e->conf->rules, st, f, res, e->id);
}

/* policy - the stage's rules with what the session knows: the verdict
 * into v; scores and header fields to the session or the transaction */
static void
policy(struct eng_sess *e, enum rules_stage st, struct eng_verdict *v)
{
	struct rules_facts f;
	struct rules_result res;
	struct dnsbl_summary sum;
	struct owner_from of;
	char text[600];
	char **hb;
	size_t *hl;

	if (!engine_stage_may_refuse(e->conf, st))
		return;
	eng_facts(e, st, &f, &sum);
	if (st == RS_DATA)
		from_facts(e->txn, &f, &of);
	eval(e, st, &f, &res);
	if (res.verdict == RV_WAIT) {
		/* the wait decision judged no rule would read the check; if
		 * one does after all, its facts count as failed lookups */
		log_msg(LOG_L_WARN, e->id, "policy stage=%s check=%s not awaited: counted as temperror",
		    rules_stage_name(st), check_name((enum check_id)res.need));
		rules_facts_unawaited(&f, e->conf->dnsbl != NULL, sum.error,
		    e->conf->greylist.on_error);
		eval(e, st, &f, &res);
		if (res.verdict == RV_WAIT) {
			/* every fact is known now: this cannot happen; never let
			 * a rule be skipped silently */
			log_msg(LOG_L_ERROR, e->id, "policy stage=%s still waits: tempfail",
			    rules_stage_name(st));
			res.verdict = RV_TEMPFAIL;
			res.code = 451;
			res.enh = "4.3.0";
			res.text = "Error: policy checks unavailable, try again later";
		}
	}
	if (st >= RS_MAIL && e->txn != NULL) {
		e->txn->score += res.score;
		hb = &e->txn->hdrs;
		hl = &e->txn->hdrs_len;
	} else {
		e->score += res.score;
		hb = &e->hdrs;
		hl = &e->hdrs_len;
	}
	f.score += res.score;
	if (st == RS_DATA && res.sign && e->txn != NULL && f.from_count == 1 &&
	    f.from_dlen < sizeof(e->txn->sign_from)) {
		e->txn->sign = true;
		memcpy(e->txn->sign_from, f.from_domain, f.from_dlen);
		e->txn->sign_from[f.from_dlen] = 0;
	}
	for (int i = 0; i < res.nhdr; i++) {
		rules_expand(res.hdr_value[i], &f, text, sizeof(text));
		rules_header_add(hb, hl, res.hdr_name[i], text);
	}
	v->verdict = res.verdict;
	v->rule_file = res.file;
	v->rule_line = res.line;
	if (res.verdict != RV_REJECT && res.verdict != RV_TEMPFAIL)
		return;
	v->code = res.code;
	snprintf(v->enh, sizeof(v->enh), "%s", res.enh);
	rules_expand(res.text, &f, v->text, sizeof(v->text));
}

/* builtin_data - what the engine refuses at the end of the data before
 * the rules run: a message over max-message-size (moatd's decoder
 * refuses it earlier; a milter learns the size here) */
static bool
builtin_data(struct eng_sess *e, struct eng_verdict *v)
{
	if (e->txn == NULL || e->txn->size <= e->conf->max_message_size)
		return false;
	v->verdict = RV_REJECT;
	v->code = 552;
	snprintf(v->enh, sizeof(v->enh), "5.3.4");
	snprintf(v->text, sizeof(v->text), "Message size exceeds fixed limit");
	log_msg(LOG_L_INFO, e->id, "reject stage=data code=552 reason=size size=%llu",
	    (unsigned long long)e->txn->size);
	return true;
}

/* ---------------------------------------------------------------------
 * The verdict line (engine_vlog.c keeps the records)
 */

/* ip4_text - dotted quad, as inet_ntop() writes it (which goes through
 * sprintf: ten times the work, four times a message) */
static void
ip4_text(const struct in_addr *a, char *out)
{
	const unsigned char *b = (const unsigned char *)&a->s_addr;
	char *p = out;

	for (int i = 0; i < 4; i++) {
		p += dec_u64(p, b[i]);
		*p++ = i < 3 ? '.' : 0;
	}
}

/* who_text - "client=NAME[ADDR]:PORT helo=<...>" from its parts (sa,
 * name, helo may be NULL) */
static void
who_text(const struct sockaddr *sa, const char *client_name, const char *helo, char *out,
	size_t size)
{
	char addr[INET6_ADDRSTRLEN] = "unknown", esc[LOG_ESC_SIZE], name[LOG_ESC_SIZE];
	unsigned port = 0;
	struct textbuf b = TEXTBUF(out, size - 1);
	size_t kn, kh;

	if (sa != NULL && sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

		ip4_text(&sin->sin_addr, addr);
		port = ntohs(sin->sin_port);
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
		port = ntohs(sin6->sin6_port);
	}
	kn = log_escape(name, sizeof(name), client_name ? client_name : "unknown",
	    strlen(client_name ? client_name : "unknown"));
	kh = log_escape(esc, sizeof(esc), helo ? helo : "", helo ? strlen(helo) : 0);

	tb_str(&b, "client=");
	tb_put(&b, name, kn);
	tb_put(&b, "[", 1);
	tb_str(&b, addr);
	tb_put(&b, "]:", 2);
	tb_u64(&b, port);
	tb_str(&b, " helo=<");
	tb_put(&b, esc, kh);
	tb_put(&b, ">", 1);
	out[b.n] = 0;		/* size is ENG_WHO_SIZE: everything fits */
}

/* vlog_who - "client=NAME[ADDR]:PORT helo=<...>" */
static void
vlog_who(const struct eng_sess *e, char *out, size_t size)
{
	who_text(e->have_peer ? &e->peer.sa : NULL, e->client_name, e->helo, out, size);
}

_Static_assert(ENG_WHO_SIZE >= 2 * LOG_ESC_SIZE + 96, "ENG_WHO_SIZE too small for who_text");

/* engine_who - the client as the verdict line names it, for a
 * front-end's own lines (the disconnect line) */
void
engine_who(const struct eng_sess *e, const struct sockaddr *peer, char *out, size_t size)
{
	if (e != NULL)
		vlog_who(e, out, size);
	else
		who_text(peer, NULL, NULL, out, size);
}

/* word_copy - a short word into a buffer, cut to fit */
static void
word_copy(char *out, size_t size, const char *w)
{
	size_t n = strnlen(w, size - 1);

	memcpy(out, w, n);
	out[n] = 0;
}

/* vlog_summary - the checks, one word each (as values: the text is made
 * only for a line that is written) */
static void
vlog_summary(const struct eng_sess *e, struct vl_summary *out)
{
	const struct eng_txn *t = e->txn;

	out->set = true;
	out->dnsbl = 0;
	if (e->dns != NULL && e->conf->dnsbl != NULL) {
		struct dnsbl_summary sum;

		dnsbl_summarise(e->conf->dnsbl, &e->dns->dz, &sum);
		out->dnsbl = (long long)sum.score;
	}
	out->spf = t != NULL && t->spf_state == CHECK_DONE ? spf_res_name(t->spf) : "none";
	out->dmarc = t != NULL && t->dmarc != NULL ? dmarc_result_name(t->dmarc->result) : "none";
	word_copy(out->dkim, sizeof(out->dkim), t != NULL && t->dkim_word[0] ? t->dkim_word :
	    "none");
	word_copy(out->gl, sizeof(out->gl), t != NULL && t->gl_word[0] ? t->gl_word : "none");
}

/* vlog_in - a verdict line's common fields: who, session, stage (who only
 * when lines at info are written: NULL otherwise, and vl_line() writes
 * none) */
static void
vlog_in(const struct eng_sess *e, enum rules_stage st, struct vl_line_in *in, char *who,
	size_t size)
{
	memset(in, 0, sizeof(*in));
	in->sid = e->id;
	in->stage = st;
	if (log_enabled(LOG_L_INFO)) {
		vlog_who(e, who, size);
		in->who = who;
	}
}

/* vlog_stage - the stage's verdict into the records; a refusal's line */
static void
vlog_stage(struct eng_sess *e, enum rules_stage st, const struct eng_verdict *v, bool refused)
{
	char rcpt[SMTP_PATH_MAX + 1], who[ENG_WHO_SIZE];
	struct vl_summary sum;
	struct vl_line_in in;

	if (engine_g.opts.greylist_offline)
		return;		/* explain: it prints its own trace */
	if (st == RS_RCPT && e->txn != NULL) {
		addr_text(&e->txn->rcpt, rcpt, sizeof(rcpt));
		vl_rcpt(e->vl, rcpt, refused ? v->code : 0, v->enh);
	}
	vlog_summary(e, &sum);
	if (!refused) {
		if (st == RS_MAIL) {
			vl_mail_passed(e->vl);
			metrics_inc(MF_TRANSACTIONS, NULL, NULL);
		}
		else if (st == RS_DATA && e->txn != NULL)
			vl_data(e->vl, e->txn->size, &sum, v->rule_file, v->rule_line);
		return;
	}
	if (st == RS_DATA && e->txn != NULL)
		vl_data(e->vl, e->txn->size, &sum, v->rule_file, v->rule_line);
	vlog_in(e, st, &in, who, sizeof(who));
	in.code = v->code;
	in.enh = v->enh;
	in.text = v->text;
	in.len = strlen(v->text);
	in.rule_file = v->rule_file;
	in.rule_line = v->rule_line;
	in.summary = &sum;
	vl_refusal(e->vl, &in, now_ms());
}

/* engine_upstream_replies - the front-end reports the upstream's replies */
void
engine_upstream_replies(struct eng_sess *e)
{
	vl_set_upstream(e->vl);
}

/* a reply's verdict line: what vlog_in() gives, and the reply as sent */
struct reply_line {
	struct vl_line_in in;
	char who[ENG_WHO_SIZE];
	struct vl_summary sum;
};

static void
reply_in(struct eng_sess *e, enum rules_stage st, struct reply_line *r, int code,
	const char *enh, const char *text, size_t len, bool upstream)
{
	vlog_in(e, st, &r->in, r->who, sizeof(r->who));
	vlog_summary(e, &r->sum);
	r->in.code = code;
	r->in.enh = enh;
	r->in.text = text;
	r->in.len = len;
	r->in.upstream = upstream;
	r->in.summary = &r->sum;
}

/* engine_upstream_reply - the upstream answered MAIL, RCPT, DATA or the
 * end of the data (RS_DATA for both) */
void
engine_upstream_reply(struct eng_sess *e, enum rules_stage st, int code, const char *enh,
	const char *text, size_t len)
{
	struct reply_line r;

	if (st != RS_DATA || code != 354) {
		char cls[4] = { (char)('0' + (code / 100) % 10), 'x', 'x', 0 };

		metrics_inc(MF_UPS_REPLIES, cls, NULL);
	}
	reply_in(e, st, &r, code, enh, text, len, true);	/* the data's summary replaces r's */
	vl_upstream(e->vl, &r.in, now_ms());
}

/* engine_upstream_lost - nothing more comes from the upstream */
void
engine_upstream_lost(struct eng_sess *e)
{
	vl_lost(e->vl);
}

/* engine_txn_failed - moat's own reply that ends a transaction outside
 * the rules (the upstream lost, moat's limits) */
void
engine_txn_failed(struct eng_sess *e, enum rules_stage st, bool upstream, int code,
	const char *enh, const char *text, size_t len)
{
	struct reply_line r;

	reply_in(e, st, &r, code, enh, text, len, upstream);
	vl_failed(e->vl, &r.in, now_ms());
}

/* engine_txn_accepted - a front-end without an upstream let the message
 * go (before engine_txn_end) */
void
engine_txn_accepted(struct eng_sess *e, const char *queue_id)
{
	char who[ENG_WHO_SIZE];
	struct vl_line_in in;

	vlog_in(e, RS_DATA, &in, who, sizeof(who));
	in.queue_id = queue_id;
	vl_accepted(e->vl, &in, now_ms());
}

/* engine_stage - a stage's verdict, or a wait */
enum eng_rc
engine_stage(struct eng_sess *e, enum rules_stage st, struct eng_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->verdict = RV_CONTINUE;
	e->waiting = false;
	if (must_wait(e, st)) {
		if (e->expired < 2) {
			arm_deadline(e);
			e->waiting = true;
			e->wait_stage = (unsigned char)st;
			return ENG_WAIT;
		}
		/* the deadlines passed: decide with what is in */
		log_msg(LOG_L_INFO, e->id, "check deadline: deciding stage=%s with what is in",
		    rules_stage_name(st));
	}
	e->expired = 0;
	e->deadline_ms = 0;
	if (e->ev_deadline != NULL)
		evtimer_del(e->ev_deadline);
	if (!(st == RS_DATA && builtin_data(e, v)))
		policy(e, st, v);
	e->rl_state = CHECK_NONE;	/* the next decision counts its own */
	if (v->verdict != RV_REJECT && v->verdict != RV_TEMPFAIL) {
		vlog_stage(e, st, v, false);
		return ENG_CONTINUE;
	}
	vlog_stage(e, st, v, true);
	if (st == RS_HELO) {
		free(e->helo);	/* refused: as if no HELO was given */
		e->helo = NULL;
		e->spf_helo_state = CHECK_NONE;
		e->spf_helo_gen++;
	} else if (st == RS_MAIL)
		engine_txn_end(e);
	return ENG_REFUSE;
}

/* sign - the DKIM-Signature fields when a data rule said sign, or NULL.
 * Only the From domain the rules judged is signed for: the signer reads
 * the same From from the same bytes; should they differ (a header block
 * past what the rules keep), nothing is signed. */
static char *
sign(struct eng_sess *e, size_t *len)
{
	struct eng_txn *t = e->txn;
	const char *dom;
	char info[300];
	char *sig;

	*len = 0;
	if (t == NULL || !t->sign)
		return NULL;
	t->sign = false;	/* once: finishing ends the hashes */
	if (t->msg == NULL || t->msg->sign == NULL) {
		/* the policy has no dkim-key at all */
		log_msg(LOG_L_DEBUG, e->id, "dkim-sign skipped reason=\"no dkim-key\"");
		return NULL;
	}
	dom = dkims_msg_from_domain(t->msg->sign);
	if (dom != NULL && strcmp(dom, t->sign_from) != 0) {
		log_msg(LOG_L_WARN, e->id, "dkim-sign skipped reason=\"From read twice differently\"");
		return NULL;
	}
	sig = dkims_msg_finish(t->msg->sign, len, info, sizeof(info));
	if (sig == NULL)
		log_msg(LOG_L_INFO, e->id, "dkim-sign skipped reason=\"%s\"", info);
	else
		log_msg(LOG_L_INFO, e->id, "dkim-sign %s", info);
	return sig;
}

/* engine_headers - the fields for the top of the message */
char *
engine_headers(struct eng_sess *e, size_t *len, unsigned *removed)
{
	struct eng_txn *t = e->txn;
	size_t arlen = 0, tl = t != NULL ? t->hdrs_len : 0, n, siglen = 0;
	char *ar = NULL, *h, *sig;

	*len = 0;
	*removed = t != NULL && t->msg != NULL ? t->msg->hs.removed : 0;
	if (*removed > 0)
		log_msg(LOG_L_INFO, e->id, "message removed=%u field=Authentication-Results "
		    "reason=forged-authserv-id", *removed);
	if (t != NULL && sauth_enabled(e)) {
		char sender[SMTP_PATH_MAX + 1];
		struct sauth_hdr sh;

		memset(&sh, 0, sizeof(sh));
		sh.authserv_id = e->conf->authserv_id;
		sh.spf_done = e->conf->spf && t->spf_state == CHECK_DONE;
		sh.spf = spf_res_name(t->spf);
		addr_text(&t->from, sender, sizeof(sender));
		sh.mailfrom = sender[0] ? sender : NULL;
		sh.helo = e->helo;
		sh.dkim = t->dkim;
		sh.dkim_on = e->conf->dkim && engine_g.dkim != NULL;
		sh.dmarc = t->dmarc;
		sh.auth = e->login;
		ar = sauth_header(&sh, &arlen);
	}
	sig = sign(e, &siglen);
	n = siglen + arlen + e->hdrs_len + tl;
	if (n == 0) {
		free(ar);
		return NULL;
	}
	/* the signatures on top, over what moat added too (not in h=) */
	h = xmalloc(n);
	if (siglen)
		memcpy(h, sig, siglen);
	if (arlen)
		memcpy(h + siglen, ar, arlen);
	if (e->hdrs_len)
		memcpy(h + siglen + arlen, e->hdrs, e->hdrs_len);
	if (tl)
		memcpy(h + siglen + arlen + e->hdrs_len, t->hdrs, tl);
	free(ar);
	free(sig);
	*len = n;
	return h;
}
