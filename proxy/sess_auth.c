/*
 * sess_auth - a session's sender authentication: SPF, DKIM, DMARC and the
 * Authentication-Results field
 *
 * DESCRIPTION
 *	SPF of MAIL FROM starts on the work pool as the MAIL command is read
 *	(and of the HELO name when a helo rule reads spf-helo); libspf2 gets
 *	its answers from moat's resolver there (filters/spf.c). During DATA
 *	every decoded byte is fed to DKIM (hashing only: no lookups on the
 *	loop) and to the header scanner, which drops forged
 *	Authentication-Results fields and keeps the From values. At the end
 *	of the data one pool job finishes DKIM (key lookups) and runs DMARC
 *	with the SPF result; the end-of-data rules wait for it, and the
 *	message goes upstream with one Authentication-Results field on top.
 *
 *	A job owns what it works on (copies, the DKIM state) until its done
 *	callback runs on the worker's thread; a job whose session is gone by
 *	then frees its work and drops the result. A new transaction bumps
 *	the generation, so a late SPF answer for the last one is dropped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "authres.h"
#include "dkim.h"
#include "dmarc.h"
#include "filter.h"
#include "hdrscan.h"
#include "log.h"
#include "moatd.h"
#include "rules.h"
#include "sauth.h"
#include "session.h"
#include "spf.h"
#include "spool.h"
#include "workq.h"
#include "xalloc.h"

/* per transaction (and the HELO identity per session) */
struct sender_auth {
	unsigned short gen;
	/* SPF of MAIL FROM */
	unsigned char spf_state;	/* enum check_state */
	enum spf_res spf;
	char spf_domain[256];
	char spf_for[SMTP_PATH_MAX + 2];	/* the sender it was asked for ("<>" null) */
	/* DATA */
	struct dkimv_msg *dkim_msg;	/* fed during DATA; the job owns it after */
	struct hdrscan *hs;
	bool hs_done;
	bool keys_asked;		/* the DKIM keys were looked up ahead */
	int keys_pending;
	unsigned char auth_state;	/* enum check_state: DKIM + DMARC */
	struct dkimv_outcome *dkim;	/* results, or NULL */
	struct dmarc_outcome *dmarc;
	char dkim_word[16];
};

struct spf_job {
	struct sess_dnsq *q;
	struct sauth_spf sp;
};

struct auth_job {
	struct sess_dnsq *q;
	struct sauth_work w;
};

static struct sender_auth *
sender_auth_of(struct session *s)
{
	if (s->sender_auth == NULL)
		s->sender_auth = xcalloc(1, sizeof(*s->sender_auth));
	return s->sender_auth;
}

static const char *
spf_word(enum spf_res r)
{
	return spf_res_name(r);
}

/* ---------------------------------------------------------------------
 * SPF
 */

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
	struct session *s = j->q->s;
	const struct spf_outcome *o = &j->sp.out;

	if (s == NULL)
		goto out;
	sess_q_unlink(j->q);
	if (j->sp.id == SPF_ID_HELO) {
		if (j->q->gen == s->spf_helo_gen) {
			s->spf_helo_state = CHECK_DONE;
			s->spf_helo = (unsigned char)o->res;
		}
	} else if (s->sender_auth != NULL && j->q->gen == s->sender_auth->gen) {
		s->sender_auth->spf_state = CHECK_DONE;
		s->sender_auth->spf = o->res;
		snprintf(s->sender_auth->spf_domain, sizeof(s->sender_auth->spf_domain), "%s", o->domain);
	}
	sauth_spf_log(&j->sp, s->id);
	if (s->waiting != SW_NONE && !s->closing)
		sess_resume(s);
out:
	free(j->q);
	free(j);
}

/* spf_start - one identity on the pool */
static void
spf_start(struct session *s, enum spf_identity id, const char *sender, unsigned short gen)
{
	struct spf_job *j = xcalloc(1, sizeof(*j));

	sauth_spf_init(&j->sp, id, (const struct sockaddr *)&s->peer, s->helo, sender,
	    (unsigned)s->conf->spf_timeout_ms);
	j->q = sess_q_new(s, id == SPF_ID_HELO ? QK_SPF_HELO : QK_SPF, 0, gen);
	/* every answer SPF needs may be in the resolver's cache: then it runs
	 * here, at once, never waiting; the first miss sends it to the pool */
	if (sauth_spf_cached(&j->sp)) {
		spf_done(j);
		return;
	}
	if (workq_submit(s->w->wq, spf_run, spf_done, j) != 0) {
		/* the pool is full: a temporary error, at once */
		j->sp.out.res = SPF_RES_TEMPERROR;
		snprintf(j->sp.out.reason, sizeof(j->sp.out.reason), "work pool full");
		spf_done(j);
	}
}

/* sess_auth_mail - MAIL is being read: SPF of its sender starts now */
void
sess_auth_mail(struct session *s, const struct smtp_addr *from)
{
	struct sender_auth *a;
	char sender[SMTP_PATH_MAX + 1] = "";

	if (!s->conf->spf)
		return;
	a = sender_auth_of(s);
	if (!from->null && from->local_len + from->domain_len + 2 <= sizeof(sender))
		snprintf(sender, sizeof(sender), "%.*s@%.*s", (int)from->local_len, from->local,
		    (int)from->domain_len, from->domain);
	if (a->spf_state != CHECK_NONE && strcmp(a->spf_for, sender[0] ? sender : "<>") == 0)
		return;		/* asked already for this sender */
	if (a->spf_state != CHECK_NONE)
		a->gen++;	/* another MAIL after a refused one: start over */
	snprintf(a->spf_for, sizeof(a->spf_for), "%s", sender[0] ? sender : "<>");
	a->spf_state = CHECK_PENDING;
	spf_start(s, SPF_ID_MAILFROM, sender, a->gen);
}

/* sess_auth_helo - the HELO identity, when a helo rule reads it */
void
sess_auth_helo(struct session *s)
{
	if (!s->conf->spf || s->helo == NULL)
		return;
	s->spf_helo_gen++;
	s->spf_helo_state = CHECK_PENDING;
	spf_start(s, SPF_ID_HELO, NULL, s->spf_helo_gen);
}

/* ---------------------------------------------------------------------
 * DATA
 */

static void
spool_put(void *arg, const unsigned char *buf, size_t len)
{
	struct txn *t = arg;

	spool_write(t->spool, buf, len);	/* errors are sticky, checked at the end */
}

/* sess_auth_data - DATA starts: DKIM and the header scanner get the bytes */
void
sess_auth_data(struct session *s)
{
	struct sender_auth *a = sender_auth_of(s);

	a->hs = xmalloc(sizeof(*a->hs));
	hdrscan_init(a->hs, s->conf->authserv_id, spool_put, s->txn);
	if (s->conf->dkim && moatd.dkim != NULL)
		a->dkim_msg = dkimv_msg_new(moatd.dkim);
}

/* sess_auth_feed - decoded message bytes (the decoder's output) */
void
sess_auth_feed(struct session *s, const unsigned char *buf, size_t len)
{
	struct sender_auth *a = s->sender_auth;

	if (a == NULL || a->hs == NULL) {
		spool_write(s->txn->spool, buf, len);
		return;
	}
	if (a->dkim_msg != NULL)
		(void)dkimv_msg_feed(a->dkim_msg, (const char *)buf, len);	/* -1: permerror later */
	hdrscan_feed(a->hs, buf, len);
}

static void
auth_run(void *arg)
{
	struct auth_job *j = arg;

	sauth_run(&j->w);
}

static void
auth_done(void *arg)
{
	struct auth_job *j = arg;
	struct session *s = j->q->s;
	struct sender_auth *a;

	if (s == NULL || s->sender_auth == NULL || j->q->gen != s->sender_auth->gen) {
		if (s != NULL)
			sess_q_unlink(j->q);
		goto out;
	}
	sess_q_unlink(j->q);
	a = s->sender_auth;
	a->auth_state = CHECK_DONE;
	if (j->w.have_dkim) {
		a->dkim = xmalloc(sizeof(*a->dkim));
		*a->dkim = j->w.dkim;
	}
	snprintf(a->dkim_word, sizeof(a->dkim_word), "%s", sauth_dkim_word(a->dkim));
	if (j->w.do_dmarc) {
		a->dmarc = xmalloc(sizeof(*a->dmarc));
		*a->dmarc = j->w.dmarc;
	}
	sauth_log(&j->w, s->id);
	if (s->waiting != SW_NONE && !s->closing)
		sess_resume(s);
out:
	if (j->w.msg != NULL)
		dkimv_msg_free(j->w.msg);
	free(j->q);
	free(j);
}

/* key_fetched - a DKIM key record's answer (now in the resolver's cache) */
static void
key_fetched(void *ctx, uint64_t tag, const struct dns_answer *ans)
{
	struct sess_dnsq *q = ctx;
	struct session *s = q->s;

	(void)tag;
	(void)ans;
	if (s != NULL) {
		sess_q_unlink(q);
		if (s->sender_auth != NULL && q->gen == s->sender_auth->gen &&
		    --s->sender_auth->keys_pending == 0) {
			s->sender_auth->auth_state = CHECK_NONE;	/* auth_start again */
			if (s->waiting != SW_NONE && !s->closing)
				sess_resume(s);
		}
	}
	free(q);
}

/* keys_ahead - ask the resolver, from the loop, for the DKIM keys not in
 * its cache; true when some are on their way */
static bool
keys_ahead(struct session *s, bool *all_cached)
{
	struct sender_auth *a = s->sender_auth;
	char names[DKIMV_MAX_SIGS][320];
	int n = dkimv_msg_keynames(a->dkim_msg, names, DKIMV_MAX_SIGS);

	*all_cached = true;
	for (int i = 0; i < n; i++) {
		struct sess_dnsq *q;

		if (dns_cached(names[i], DNS_T_TXT))
			continue;
		*all_cached = false;
		if (a->keys_asked || s->w->dns == NULL)
			continue;	/* asked once: what failed goes to the pool */
		q = sess_q_new(s, QK_KEY, 0, a->gen);
		if (dns_query(s->w->dns, names[i], DNS_T_TXT, (unsigned)s->conf->dns_timeout_ms,
		    key_fetched, q, s->id) != 0) {
			sess_q_unlink(q);
			free(q);
			continue;
		}
		a->keys_pending++;
	}
	a->keys_asked = true;
	return a->keys_pending > 0;
}

/* auth_start - the end of the data: DKIM's lookups and DMARC. With every
 * key and record in the resolver's cache they run here, on the loop
 * (cache-only: nothing can wait); otherwise on the pool. */
static void
auth_start(struct session *s)
{
	struct sender_auth *a = s->sender_auth;
	struct auth_job *j;
	bool cached = true;

	if (a->dkim_msg != NULL && keys_ahead(s, &cached)) {
		a->auth_state = CHECK_PENDING;	/* key_fetched() comes back */
		return;
	}
	j = xcalloc(1, sizeof(*j));
	a->auth_state = CHECK_PENDING;
	j->w.msg = a->dkim_msg;
	a->dkim_msg = NULL;
	j->w.do_dmarc = s->conf->dmarc != CONF_DMARC_OFF && moatd.psl != NULL;
	j->w.dmarc_bis = s->conf->dmarc == CONF_DMARC_BIS;
	j->w.psl = moatd.psl;
	sauth_work_from(&j->w, a->hs);
	j->w.spf_pass = a->spf_state == CHECK_DONE && a->spf == SPF_RES_PASS;
	if (a->spf_state == CHECK_DONE)
		snprintf(j->w.spf_domain, sizeof(j->w.spf_domain), "%s", a->spf_domain);
	j->q = sess_q_new(s, QK_AUTH, 0, a->gen);
	if (cached) {
		dns_sync_cache_only(true);
		sauth_run_dkim(&j->w);
		if (j->w.msg != NULL) {
			dkimv_msg_free(j->w.msg);	/* consumed */
			j->w.msg = NULL;
		}
		sauth_run_dmarc(&j->w);
		dns_sync_cache_only(false);
		if (!dns_sync_missed()) {
			auth_done(j);
			return;
		}
		/* DKIM is done; DMARC wanted a record not cached: the pool */
	}
	if (workq_submit(s->w->wq, auth_run, auth_done, j) != 0) {
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
		auth_done(j);
	}
}

/* sess_auth_enabled - is anything to be checked at the end of the data? */
static bool
sess_auth_enabled(const struct session *s)
{
	return s->conf->spf || (s->conf->dkim && moatd.dkim != NULL) ||
	    (s->conf->dmarc != CONF_DMARC_OFF && moatd.psl != NULL);
}

/* sess_auth_wait - must the end of the data wait? Starts the job once
 * SPF is in. */
bool
sess_auth_wait(struct session *s)
{
	struct sender_auth *a = s->sender_auth;

	if (a == NULL)
		return false;
	if (a->hs != NULL && !a->hs_done) {
		hdrscan_finish(a->hs);	/* a field still held goes out */
		a->hs_done = true;
	}
	if (!sess_auth_enabled(s))
		return false;
	if (a->spf_state == CHECK_PENDING)
		return true;
	if (a->auth_state == CHECK_NONE && a->hs != NULL &&
	    ((s->conf->dkim && moatd.dkim != NULL) ||
	    (s->conf->dmarc != CONF_DMARC_OFF && moatd.psl != NULL)))
		auth_start(s);
	return a->auth_state == CHECK_PENDING;
}

/* sess_auth_spf_pending - rules at mail and rcpt that read spf wait */
bool
sess_auth_spf_pending(const struct session *s, int st)
{
	if (st == RS_HELO)
		return s->spf_helo_state == CHECK_PENDING;
	return s->sender_auth != NULL && s->sender_auth->spf_state == CHECK_PENDING;
}

/* sess_auth_spf_domain - the sender's domain when SPF passed, else NULL */
const char *
sess_auth_spf_domain(const struct session *s)
{
	const struct sender_auth *a = s->sender_auth;

	return a != NULL && a->spf_state == CHECK_DONE && a->spf == SPF_RES_PASS &&
	    a->spf_domain[0] ? a->spf_domain : NULL;
}

/* sess_auth_facts - what the checks tell the rules */
void
sess_auth_facts(const struct session *s, int st, struct rules_facts *f)
{
	const struct sender_auth *a = s->sender_auth;

	f->spf_known = true;
	if (st == RS_HELO) {
		f->spf_known = s->spf_helo_state != CHECK_PENDING;
		if (s->spf_helo_state == CHECK_DONE)
			f->spf_helo = spf_word((enum spf_res)s->spf_helo);
	}
	if (st >= RS_MAIL) {
		f->spf_known = a == NULL || a->spf_state != CHECK_PENDING;
		f->spf = a != NULL && a->spf_state == CHECK_DONE ? spf_word(a->spf) : "none";
		if (s->spf_helo_state == CHECK_DONE)
			f->spf_helo = spf_word((enum spf_res)s->spf_helo);
	}
	if (st == RS_DATA) {
		f->auth_known = a == NULL || a->auth_state != CHECK_PENDING;
		f->dkim = a != NULL && a->dkim_word[0] ? a->dkim_word : "none";
		f->dmarc = a != NULL && a->dmarc ? dmarc_result_name(a->dmarc->result) : "none";
		f->dmarc_policy = a != NULL && a->dmarc ? dmarc_policy_name(a->dmarc->policy) : "none";
		f->dmarc_from_domain = a != NULL && a->dmarc && a->dmarc->from_domain[0] ?
		    a->dmarc->from_domain : NULL;
	}
}

/* sess_auth_header - "Authentication-Results: ..." with CRLF, allocated,
 * or NULL when nothing was checked */
char *
sess_auth_header(struct session *s, size_t *len)
{
	struct sender_auth *a = s->sender_auth;
	const struct smtp_addr *from = s->txn != NULL ? &s->txn->from : NULL;
	char sender[SMTP_PATH_MAX + 1] = "";
	struct sauth_hdr h;

	*len = 0;
	if (a == NULL || !sess_auth_enabled(s))
		return NULL;
	memset(&h, 0, sizeof(h));
	h.authserv_id = s->conf->authserv_id;
	h.spf_done = s->conf->spf && a->spf_state == CHECK_DONE;
	h.spf = spf_res_name(a->spf);
	if (from != NULL && !from->null && from->local_len + from->domain_len + 2 <= sizeof(sender)) {
		snprintf(sender, sizeof(sender), "%.*s@%.*s", (int)from->local_len,
		    from->local, (int)from->domain_len, from->domain);
		h.mailfrom = sender;
	}
	h.helo = s->helo;
	h.dkim = a->dkim;
	h.dkim_on = s->conf->dkim && moatd.dkim != NULL;
	h.dmarc = a->dmarc;
	return sauth_header(&h, len);
}

/* sess_auth_removed - forged fields the scanner dropped */
unsigned
sess_auth_removed(const struct session *s)
{
	return s->sender_auth != NULL && s->sender_auth->hs != NULL ? s->sender_auth->hs->removed : 0;
}

/* sess_auth_txn_end - the transaction is over: its results go */
void
sess_auth_txn_end(struct session *s)
{
	struct sender_auth *a = s->sender_auth;
	unsigned short gen;

	if (a == NULL)
		return;
	gen = a->gen;
	if (a->dkim_msg != NULL)
		dkimv_msg_free(a->dkim_msg);
	if (a->hs != NULL) {
		hdrscan_free(a->hs);
		free(a->hs);
	}
	free(a->dkim);
	free(a->dmarc);
	memset(a, 0, sizeof(*a));
	a->gen = (unsigned short)(gen + 1);	/* late answers are dropped */
}

void
sess_auth_free(struct session *s)
{
	sess_auth_txn_end(s);
	free(s->sender_auth);
	s->sender_auth = NULL;
}
