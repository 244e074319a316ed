/*
 * sess_checks - a session's DNS checks: FCrDNS and the DNSBL/DNSWL/RHSBL
 * zones, started early, awaited only when a rule needs them
 *
 * DESCRIPTION
 *	At connect the address zones are queried at once (in parallel, while
 *	the greeting goes out), and FCrDNS too when a client-name zone or a
 *	rule will want it. The HELO and sender-domain zones start when the
 *	HELO or MAIL command is read, before it runs. A stage's rules wait
 *	only for what they read (rules_stage_needs); the session stops
 *	reading commands meanwhile and runs the stage again when the answers
 *	are in (sess_resume), or when the check deadline passes: what is
 *	still pending then becomes a temporary error.
 *
 *	Each query carries a small context that points at the session; the
 *	session keeps a list of them and, when it is freed first, clears
 *	their pointer, so a late answer is dropped without a search.
 *	A zone's queries carry a generation: a new HELO or MAIL restarts
 *	that zone, and answers to the old question are ignored.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "dnsbl.h"
#include "filter.h"
#include "log.h"
#include "rules.h"
#include "moatd.h"
#include "session.h"
#include "smtp_parse.h"
#include "dmarc_record.h"
#include "greylist.h"
#include "xalloc.h"


struct sess_checks {
	unsigned char fc_state;		/* enum check_state */
	struct fcrdns fc;
	struct dnsbl_sess dz;
	unsigned short gen[DNSBL_ZONES_MAX];
	char helo_q[256];		/* what the helo zones were asked about */
	char sender_q[256];		/* and the sender-domain zones */
	bool name_started;		/* client-name zones (after fcrdns) */
	/* greylisting: the decision for the recipient being read */
	unsigned char gl_state;		/* enum check_state */
	unsigned short gl_gen;
	bool gl_tempfail;
	char gl_rcpt[SMTP_PATH_MAX + 1];
	char gl_text[160];
};

static void zone_answer(struct session *s, int zone, const struct dns_answer *a);

/* sess_ck - the session's check state, made on first use */
static struct sess_checks *
sess_ck(struct session *s)
{
	if (s->ck == NULL)
		s->ck = xcalloc(1, sizeof(*s->ck));
	return s->ck;
}

/* sess_q_unlink - a query's answer is in: off the session's list */
void
sess_q_unlink(struct sess_dnsq *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		q->s->dnsq = q->next;
	if (q->next)
		q->next->prev = q->prev;
}

/* sess_q_new - a query context on the session's list */
struct sess_dnsq *
sess_q_new(struct session *s, int kind, int index, unsigned short gen)
{
	struct sess_dnsq *q = xcalloc(1, sizeof(*q));

	q->s = s;
	q->kind = (unsigned char)kind;
	q->index = (unsigned char)index;
	q->gen = gen;
	q->next = s->dnsq;
	if (q->next)
		q->next->prev = q;
	s->dnsq = q;
	return q;
}

/* dns_done - an answer for a session's query, on the worker's thread */
static void
dns_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct sess_dnsq *q = ctx;
	struct session *s = q->s;

	(void)tag;
	if (s == NULL) {		/* the session is gone */
		free(q);
		return;
	}
	sess_q_unlink(q);
	if (q->kind == QK_FCRDNS) {
		struct sess_checks *ck = s->ck;

		if (ck->fc_state == CHECK_PENDING) {
			fcrdns_answer(&ck->fc, q->index, a, sess_fc_send, s);
			if (ck->fc.done)
				sess_fc_result(s);
		}
	} else if (q->gen == s->ck->gen[q->index] && s->ck->dz.r[q->index].state == DZ_PENDING) {
		zone_answer(s, q->index, a);
	}
	free(q);
	if (s->waiting != SW_NONE && !s->closing)
		sess_resume(s);
}

/* send_q - one query for the session */
static int
send_q(struct session *s, const char *name, int rrtype, int kind, int index, unsigned short gen)
{
	struct sess_dnsq *q;

	if (s->w->dns == NULL)
		return -1;
	q = sess_q_new(s, kind, index, gen);
	if (dns_query(s->w->dns, name, rrtype, (unsigned)s->conf->dns_timeout_ms,
	    dns_done, q, s->id) != 0) {
		sess_q_unlink(q);
		free(q);
		return -1;
	}
	return 0;
}

/* sess_fc_send - fcrdns's way out (filter.h check_send_fn) */
int
sess_fc_send(void *arg, const char *name, int rrtype, int index)
{
	return send_q(arg, name, rrtype, QK_FCRDNS, index, 0);
}

/* zone_set - a zone's result, counted and logged */
static void
zone_set(struct session *s, int i, const struct dnsbl_eval *e, bool temp)
{
	dnsbl_sess_set(s->conf->dnsbl, &s->ck->dz, i, e, temp, s->id);
}

/* zone_answer - what an answer means for the zone */
static void
zone_answer(struct session *s, int zone, const struct dns_answer *a)
{
	dnsbl_sess_answer(s->conf->dnsbl, &s->ck->dz, zone, a, s->id);
}

/* zone_send - one zone's query (dnsbl_send_fn) */
static int
zone_send(void *arg, const char *name, int zone, unsigned short gen)
{
	return send_q(arg, name, DNS_T_A, QK_ZONE, zone, gen);
}

/* zones_start - query every enabled zone of a type about a subject */
static void
zones_start(struct session *s, int type, const char *domain)
{
	struct sess_checks *ck = sess_ck(s);

	dnsbl_sess_start(s->conf->dnsbl, &ck->dz, ck->gen, type, (const struct sockaddr *)&s->peer,
	    domain, zone_send, s, s->id);
}

/* sess_fc_result - fcrdns is done: log, keep the name, start its zones */
void
sess_fc_result(struct session *s)
{
	struct sess_checks *ck = s->ck;
	char esc[LOG_ESC_SIZE];

	ck->fc_state = CHECK_DONE;
	free(s->client_name);
	s->client_name = ck->fc.status == CHECK_PASS ? xstrdup(ck->fc.name) : NULL;
	log_escape(esc, sizeof(esc), ck->fc.name, strlen(ck->fc.name));
	log_msg(LOG_L_INFO, s->id, "check fcrdns=%s%s%s", check_status_name(ck->fc.status),
	    s->client_name ? " name=" : "", s->client_name ? esc : "");
	if (s->conf->dnsbl != NULL && (s->conf->dnsbl->types & (1u << DNSBL_T_NAME)) &&
	    !ck->name_started) {
		ck->name_started = true;
		zones_start(s, DNSBL_T_NAME, s->client_name);
	}
}

/* fc_start - send the PTR query, once */
static void
fc_start(struct session *s)
{
	struct sess_checks *ck = sess_ck(s);

	if (ck->fc_state != CHECK_NONE)
		return;
	ck->fc_state = CHECK_PENDING;
	if (fcrdns_begin(&ck->fc, (const struct sockaddr *)&s->peer, sess_fc_send, s) != 0)
		sess_fc_result(s);
}

/* sess_checks_connect - what starts with the session */
void
sess_checks_connect(struct session *s)
{
	const struct dnsbl_set *set = s->conf->dnsbl;
	bool fc = false;

	if (set != NULL && (set->types & (1u << DNSBL_T_IP)))
		zones_start(s, DNSBL_T_IP, NULL);
	if (set != NULL && (set->types & (1u << DNSBL_T_NAME)))
		fc = true;
	for (int st = 0; st < RS__COUNT && !fc && s->conf->rules; st++)
		fc = rules_stage_needs(s->conf->rules, (enum rules_stage)st, CHECK_FCRDNS);
	if (fc)
		fc_start(s);
}

/* sess_fc_known - fcrdns has its result */
static bool
sess_fc_known(const struct session *s)
{
	return s->ck != NULL && s->ck->fc_state == CHECK_DONE;
}

/* sess_dnsbl_known - every zone asked so far has answered */
static bool
sess_dnsbl_known(const struct session *s)
{
	const struct dnsbl_set *set = s->conf->dnsbl;

	if (set == NULL)
		return true;
	if (s->ck == NULL)
		return false;
	if ((set->types & (1u << DNSBL_T_NAME)) && !s->ck->name_started)
		return false;
	return s->ck->dz.pending == 0;
}

/* command_zones - the HELO and MAIL zones start when the command is read */
static void
command_zones(struct session *s, enum rules_stage st, const struct smtp_cmd *c)
{
	const struct dnsbl_set *set = s->conf->dnsbl;
	struct sess_checks *ck;
	char d[256];

	if (set == NULL || c == NULL)
		return;
	if (st == RS_HELO && (set->types & (1u << DNSBL_T_HELO))) {
		size_t n = c->arglen < sizeof(d) - 1 ? c->arglen : sizeof(d) - 1;

		memcpy(d, c->arg, n);
		d[n] = 0;
		ck = sess_ck(s);
		if (strcmp(ck->helo_q, d) != 0 || ck->helo_q[0] == 0) {
			snprintf(ck->helo_q, sizeof(ck->helo_q), "%s", d);
			/* an address literal or a bad name is not looked up */
			zones_start(s, DNSBL_T_HELO, smtp_helo_valid(d, n) && d[0] != '[' ? d : NULL);
		}
	} else if (st == RS_MAIL && (set->types & (1u << DNSBL_T_SENDER))) {
		struct smtp_addr a;
		struct smtp_mail_params mp;


		if (smtp_mail_parse(c->arg, c->arglen, &a, &mp) != NULL || a.null || a.literal ||
		    a.domain_len == 0 || a.domain_len >= sizeof(d))
			d[0] = 0;
		else {
			memcpy(d, a.domain, a.domain_len);
			d[a.domain_len] = 0;
		}
		ck = sess_ck(s);
		if (strcmp(ck->sender_q, d) != 0 || ck->sender_q[0] == 0) {
			snprintf(ck->sender_q, sizeof(ck->sender_q), "%s", d[0] ? d : "-");
			zones_start(s, DNSBL_T_SENDER, d[0] ? d : NULL);
		}
	}
}

/* gl_result - the decision for the recipient, logged */
static void
gl_result(struct session *s, const struct greylist_verdict *v)
{
	struct sess_checks *ck = s->ck;

	ck->gl_state = CHECK_DONE;
	greylist_outcome(v, s->conf->greylist.on_error, &ck->gl_tempfail, ck->gl_text,
	    sizeof(ck->gl_text), s->id);
}

/* gl_done - the greylist's decision, on the worker's thread */
static void
gl_done(void *ctx, uint64_t tag, const struct greylist_verdict *v)
{
	struct sess_dnsq *q = ctx;
	struct session *s = q->s;

	(void)tag;
	if (s == NULL) {
		free(q);
		return;
	}
	sess_q_unlink(q);
	if (s->ck->gl_state == CHECK_PENDING && q->gen == s->ck->gl_gen)
		gl_result(s, v);
	free(q);
	if (s->waiting != SW_NONE && !s->closing)
		sess_resume(s);
}

/* gl_start - ask for the decision on (client, sender, rcpt) */
static void
gl_start(struct session *s, const char *rcpt)
{
	struct sess_checks *ck = sess_ck(s);
	struct greylist_triplet t;
	struct greylist_verdict v;
	char sender[SMTP_PATH_MAX + 1] = "", org[256];
	struct sess_dnsq *q;

	snprintf(ck->gl_rcpt, sizeof(ck->gl_rcpt), "%s", rcpt);
	ck->gl_state = CHECK_PENDING;
	ck->gl_gen++;
	if (s->txn != NULL && !s->txn->from.null && s->txn->from.local_len + s->txn->from.domain_len + 2 <
	    sizeof(sender))
		snprintf(sender, sizeof(sender), "%.*s@%.*s", (int)s->txn->from.local_len,
		    s->txn->from.local, (int)s->txn->from.domain_len, s->txn->from.domain);
	memset(&t, 0, sizeof(t));
	t.client = (const struct sockaddr *)&s->peer;
	t.sender = sender;
	t.rcpt = rcpt;
	/* a big sender's pool counts as one client: by its SPF-validated
	 * domain, or by the organisational domain of its confirmed name */
	t.spf_domain = sess_auth_spf_domain(s);
	if (s->client_name != NULL && moatd.psl != NULL &&
	    dmarc_psl_orgdomain(moatd.psl, s->client_name, org, sizeof(org)) > 0)
		t.org_domain = org;
	if (s->w->gl != NULL && greylist_decide_now(s->w->gl, &t, &v) == 1) {
		gl_result(s, &v);	/* the RCPT is answered in this loop turn */
		return;
	}
	q = sess_q_new(s, QK_GREYLIST, 0, ck->gl_gen);
	if (s->w->gl == NULL || greylist_check(s->w->gl, &t, gl_done, q, s->id) != 0) {
		sess_q_unlink(q);
		free(q);
		memset(&v, 0, sizeof(v));
		v.status = GL_ERROR;
		v.why = s->w->gl == NULL ? "no greylist store" : "overloaded";
		v.key = "";
		gl_result(s, &v);
	}
}

/* rcpt_text - "local@domain" of a RCPT command, or -1 */
static int
rcpt_text(const struct session *s, const struct smtp_cmd *c, struct smtp_addr *a, char *out,
	size_t size)
{
	struct smtp_rcpt_params rp;

	memset(&rp, 0, sizeof(rp));
	if (s->txn == NULL || smtp_rcpt_parse(c->arg, c->arglen, a, &rp, s->txn->mp.smtputf8) != NULL)
		return -1;
	if (a->local_len + a->domain_len + 2 > size)
		return -1;
	snprintf(out, size, "%.*s@%.*s", (int)a->local_len, a->local, (int)a->domain_len, a->domain);
	return 0;
}

/* sess_greylist_facts - the recipient's decision, when it is in */
void
sess_greylist_facts(const struct session *s, struct rules_facts *f, const struct smtp_addr *a)
{
	char r[SMTP_PATH_MAX + 1];

	if (s->ck == NULL || s->ck->gl_state != CHECK_DONE ||
	    a->local_len + a->domain_len + 2 > sizeof(r))
		return;
	snprintf(r, sizeof(r), "%.*s@%.*s", (int)a->local_len, a->local, (int)a->domain_len, a->domain);
	if (strcmp(r, s->ck->gl_rcpt) != 0)
		return;
	f->greylist_known = true;
	f->greylist_tempfail = s->ck->gl_tempfail;
	f->greylist_text = s->ck->gl_text;
}

/* rcpt_greylist_wait - does this RCPT need a greylist decision first? */
static bool
rcpt_greylist_wait(struct session *s, const struct smtp_cmd *c)
{
	struct rules_facts f;
	struct dnsbl_summary sum;
	struct smtp_addr a;
	char rcpt[SMTP_PATH_MAX + 1];

	if (s->txn == NULL || !rules_stage_needs(s->conf->rules, RS_RCPT, CHECK_GREYLIST) ||
	    rcpt_text(s, c, &a, rcpt, sizeof(rcpt)) != 0)
		return false;
	if (s->ck != NULL && s->ck->gl_state != CHECK_NONE && strcmp(s->ck->gl_rcpt, rcpt) == 0)
		return s->ck->gl_state == CHECK_PENDING;
	/* the key wants SPF's or FCrDNS's answer: those first */
	for (int i = 0; i < s->conf->greylist.nclient_part; i++) {
		if (s->conf->greylist.client_part[i] == GL_KEY_SPF && sess_auth_spf_pending(s, RS_MAIL))
			return true;
		if (s->conf->greylist.client_part[i] == GL_KEY_ORG && !sess_fc_known(s)) {
			fc_start(s);
			if (!sess_fc_known(s))
				return true;
		}
	}
	/* the facts proceed_rcpt will give the rules */
	memset(&f, 0, sizeof(f));
	sess_facts(s, RS_RCPT, &f, &sum);
	f.rcpt_local = a.local;
	f.rcpt_llen = a.local_len;
	f.rcpt_domain = a.domain;
	f.rcpt_dlen = a.domain_len;
	f.rcpt_count = s->txn->nrcpt;
	if (rules_stage_first_need(s->conf->rules, RS_RCPT, &f) != CHECK_GREYLIST)
		return false;
	gl_start(s, rcpt);
	return s->ck->gl_state == CHECK_PENDING;
}

/* sess_check_wait - must this stage wait before its rules run? Starts
 * what the stage needs. c is the command about to run, or NULL. At
 * connect and helo the rules are asked, with the facts they will see,
 * whether they reach a check's fact at all; at the later stages any rule
 * of the stage that reads a check's fact makes it wait. */
bool
sess_check_wait(struct session *s, int st, const struct smtp_cmd *c)
{
	const struct rules *r = s->conf->rules;
	uint64_t now = sess_now_ms();
	bool wait = false;

	command_zones(s, (enum rules_stage)st, c);
	if (st == RS_MAIL && c != NULL) {
		/* SPF of the sender starts as MAIL is read */
		struct smtp_addr a;
		struct smtp_mail_params mp;

		if (smtp_mail_parse(c->arg, c->arglen, &a, &mp) == NULL)
			sess_auth_mail(s, &a);
	}
	if (st == RS_HELO && c != NULL && c->arglen > 0 && rules_stage_needs(r, RS_HELO, CHECK_SPF) &&
	    s->spf_helo_state != CHECK_PENDING) {
		/* spf-helo: asked for the name this HELO gives */
		size_t n = c->arglen > SMTP_DOMAIN_MAX ? SMTP_DOMAIN_MAX : c->arglen;

		if (s->helo == NULL || strlen(s->helo) != n || memcmp(s->helo, c->arg, n) != 0 ||
		    s->spf_helo_state == CHECK_NONE) {
			free(s->helo);	/* the name SPF checks is the one proceed_helo keeps */
			s->helo = xmemdup(c->arg, n);
			sess_auth_helo(s);
		}
	}
	if (st == RS_CONNECT && s->greet_at_ms > now)
		wait = true;
	if (r != NULL && st < RS__COUNT) {
		struct rules_facts f;
		struct dnsbl_summary sum;
		bool want_fc, want_bl;

		/* at connect every fact the rules may read is known, so they
		 * can tell whether they reach a check's fact at all; later
		 * stages run with the command not yet taken in: wait for any
		 * check a rule of the stage reads */
		if (st == RS_CONNECT || (st == RS_HELO && c != NULL)) {
			char helo[SMTP_DOMAIN_MAX + 1];

			memset(&f, 0, sizeof(f));
			sess_facts(s, st, &f, &sum);
			if (st == RS_HELO) {
				/* the facts proceed_helo will give the rules */
				size_t n = c->arglen > SMTP_DOMAIN_MAX ? SMTP_DOMAIN_MAX : c->arglen;

				memcpy(helo, c->arg, n);
				helo[n] = 0;
				f.helo = helo;
				f.helolen = n;
				f.helo_valid = smtp_helo_valid(helo, n);
				f.score = s->score;	/* HELO ends any transaction */
			}
			want_fc = !f.fcrdns_known && rules_stage_wants(r, (enum rules_stage)st, &f,
			    CHECK_FCRDNS);
			want_bl = !f.dnsbl_known && rules_stage_wants(r, (enum rules_stage)st, &f,
			    CHECK_DNSBL);
		} else {
			want_fc = rules_stage_needs(r, (enum rules_stage)st, CHECK_FCRDNS);
			want_bl = rules_stage_needs(r, (enum rules_stage)st, CHECK_DNSBL);
		}
		if (want_fc && !sess_fc_known(s)) {
			fc_start(s);
			if (!sess_fc_known(s))
				wait = true;
		}
		if (want_bl && !sess_dnsbl_known(s)) {
			if (s->conf->dnsbl->types & (1u << DNSBL_T_NAME))
				fc_start(s);
			if (!sess_dnsbl_known(s))
				wait = true;
		}
	}
	if (r != NULL && (st == RS_HELO || st == RS_MAIL || st == RS_RCPT) &&
	    rules_stage_needs(r, (enum rules_stage)st, CHECK_SPF) && sess_auth_spf_pending(s, st))
		wait = true;
	if (st == RS_DATA && sess_auth_wait(s))
		wait = true;	/* Authentication-Results needs DKIM and DMARC */
	/* the greylist is asked once the DNS facts are in, and only when a
	 * greylist rule will be reached for this recipient */
	if (!wait && st == RS_RCPT && c != NULL && r != NULL)
		wait = rcpt_greylist_wait(s, c);
	if (!wait) {
		s->check_deadline_ms = 0;
		return false;
	}
	if (s->check_deadline_ms == 0)
		s->check_deadline_ms = now + s->conf->dns_timeout_ms * 2 + 500;
	return true;
}

/* sess_checks_expire - the check deadline passed: what is pending fails */
void
sess_checks_expire(struct session *s)
{
	struct sess_checks *ck = s->ck;

	if (ck == NULL)
		return;
	if (ck->fc_state == CHECK_PENDING) {
		log_msg(LOG_L_INFO, s->id, "check fcrdns error=deadline");
		ck->fc.done = true;
		ck->fc.status = CHECK_TEMPERROR;
		ck->fc.name[0] = 0;
		sess_fc_result(s);
	}
	if (ck->gl_state == CHECK_PENDING) {
		struct greylist_verdict v = { .status = GL_ERROR, .why = "deadline", .key = "" };

		ck->gl_gen++;
		gl_result(s, &v);
	}
	if (s->conf->dnsbl != NULL)
		for (int i = 0; i < s->conf->dnsbl->n; i++)
			if (ck->dz.r[i].state == DZ_PENDING) {
				struct dnsbl_eval e = { .v = DNSBL_V_ERROR };

				ck->gen[i]++;
				zone_set(s, i, &e, true);
			}
}

/* sess_checks_facts - what the checks tell the rules */
void
sess_checks_facts(const struct session *s, struct rules_facts *f, struct dnsbl_summary *sum)
{
	f->fcrdns_known = sess_fc_known(s);
	f->fcrdns = f->fcrdns_known && s->ck->fc.status == CHECK_PASS;
	f->client_name = s->client_name;
	f->client_nlen = s->client_name ? strlen(s->client_name) : 0;
	f->dnsbl_known = sess_dnsbl_known(s);
	if (s->conf->dnsbl == NULL || s->ck == NULL) {
		memset(sum, 0, sizeof(*sum));
		return;
	}
	dnsbl_summarise(s->conf->dnsbl, &s->ck->dz, sum);
	f->dnsbl_score = sum->score;
	f->dnsbl_error = sum->error;
	f->dnsbl_hits = sum->hits[0] ? sum->hits : NULL;
	f->dnsbl_reply = sum->reply;
}

/* sess_checks_txn_end - a greylist decision belongs to its transaction */
void
sess_checks_txn_end(struct session *s)
{
	if (s->ck != NULL && s->ck->gl_state != CHECK_NONE) {
		s->ck->gl_state = CHECK_NONE;
		s->ck->gl_gen++;	/* an answer still on its way is dropped */
	}
}

/* sess_checks_free - the session goes: its answers will find nobody */
void
sess_checks_free(struct session *s)
{
	for (struct sess_dnsq *q = s->dnsq, *next; q; q = next) {
		next = q->next;
		q->s = NULL;
		q->prev = q->next = NULL;
	}
	s->dnsq = NULL;
	free(s->ck);
	s->ck = NULL;
}
