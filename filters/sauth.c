/*
 * sauth - end-of-data sender authentication shared by moatd and
 * moat-milter (see sauth.h)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/random.h>

#include "authres.h"
#include "dns.h"
#include "log.h"
#include "sauth.h"
#include "xalloc.h"

/* sauth_work_from - the From values the header scanner kept */
void
sauth_work_from(struct sauth_work *w, const struct hdrscan *hs)
{
	w->nfrom = hs ? hs->nfrom : 0;
	w->from_cut = hs ? hs->from_cut : false;
	for (int i = 0; hs && i < hs->nfrom && i < HDRSCAN_FROM_MAX; i++) {
		memcpy(w->from[i], hs->from[i], hs->from_len[i] + 1);
		w->from_len[i] = hs->from_len[i];
	}
}

/* sauth_run - DKIM's key lookups and DMARC, on a pool thread */
void
sauth_run(struct sauth_work *j)
{
	sauth_run_dkim(j);
	sauth_run_dmarc(j);
}

/* sauth_run_dkim - DKIM's key lookups and verdicts (see sauth.h) */
void
sauth_run_dkim(struct sauth_work *j)
{
	if (j->msg != NULL && !j->have_dkim) {
		dkimv_msg_finish(j->msg, &j->dkim);
		j->have_dkim = true;
	}
}

/* sauth_run_dmarc - DMARC with the DKIM results and SPF (see sauth.h) */
void
sauth_run_dmarc(struct sauth_work *j)
{
	struct dmarc_input in;
	struct dmarc_dkim_in dk[DKIMV_MAX_SIGS];
	const char *fv[HDRSCAN_FROM_MAX];
	size_t fl[HDRSCAN_FROM_MAX];
	struct dmarc_conf dc;
	unsigned roll;

	if (!j->do_dmarc)
		return;
	memset(&in, 0, sizeof(in));
	for (int i = 0; i < j->nfrom && i < HDRSCAN_FROM_MAX; i++) {
		fv[i] = j->from[i];
		fl[i] = j->from_len[i];
	}
	in.from = fv;
	in.from_len = fl;
	/* every From field counts (several are a failure), even those not kept */
	in.nfrom = j->nfrom < HDRSCAN_FROM_MAX ? j->nfrom : HDRSCAN_FROM_MAX;
	in.spf_pass = j->spf_pass;
	in.spf_domain = j->spf_domain[0] ? j->spf_domain : NULL;
	for (int i = 0; j->have_dkim && i < j->dkim.nsigs && i < DKIMV_MAX_SIGS; i++) {
		dk[i].domain = j->dkim.sigs[i].domain;
		dk[i].pass = j->dkim.sigs[i].result == DKIMV_PASS && !j->dkim.sigs[i].partial;
		in.ndkim++;
	}
	in.dkim = dk;
	if (getrandom(&roll, sizeof(roll), 0) != sizeof(roll))
		roll = 0;
	in.pct_roll = roll % 100;
	memset(&dc, 0, sizeof(dc));
	dc.mode = j->dmarc_bis ? DMARC_MODE_BIS : DMARC_MODE_RFC7489;
	dc.psl = j->psl;
	dmarc_check(&dc, &in, &j->dmarc);
	if (j->nfrom > HDRSCAN_FROM_MAX && j->dmarc.result != DMARC_RES_TEMPERROR)
		j->dmarc.result = DMARC_RES_FAIL;	/* several authors, more than kept */
}

/* sauth_log - one line per signature, one for DMARC */
void
sauth_log(const struct sauth_work *j, uint64_t sid)
{
	for (int i = 0; j->have_dkim && i < j->dkim.nsigs; i++)
		log_msg(LOG_L_INFO, sid, "check dkim=%s d=%s s=%s a=%s%s%s%s",
		    dkimv_result_name(j->dkim.sigs[i].result), j->dkim.sigs[i].domain,
		    j->dkim.sigs[i].selector, dkimv_alg_name(j->dkim.sigs[i].alg),
		    j->dkim.sigs[i].partial ? " partial=yes" : "",
		    j->dkim.sigs[i].reason ? " reason=" : "",
		    j->dkim.sigs[i].reason ? j->dkim.sigs[i].reason : "");
	if (j->do_dmarc)
		log_msg(LOG_L_INFO, sid, "check dmarc=%s policy=%s from-domain=%s%s%s",
		    dmarc_result_name(j->dmarc.result), dmarc_policy_name(j->dmarc.policy),
		    j->dmarc.from_domain[0] ? j->dmarc.from_domain : "-",
		    j->dmarc.reason[0] ? " reason=" : "", j->dmarc.reason);
}

/* sauth_dkim_word - one word for rules: pass when a full signature verified */
const char *
sauth_dkim_word(const struct dkimv_outcome *o)
{
	static const enum dkimv_result order[] = { DKIMV_PASS, DKIMV_FAIL, DKIMV_TEMPERROR,
	    DKIMV_PERMERROR, DKIMV_POLICY, DKIMV_NEUTRAL };

	if (o == NULL || o->nsigs == 0)
		return "none";
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++)
		for (int i = 0; i < o->nsigs; i++)
			if (o->sigs[i].result == order[k] && !(order[k] == DKIMV_PASS && o->sigs[i].partial))
				return dkimv_result_name(order[k]);
	return "policy";
}

/* sauth_header - the Authentication-Results field with CRLF, allocated */
char *
sauth_header(const struct sauth_hdr *h, size_t *len)
{
	struct authres ar;
	char *buf;
	size_t n, cap = 8192;
	int i;

	*len = 0;
	authres_init(&ar);
	if (h->spf_done) {
		i = authres_add(&ar, "spf", h->spf, NULL);
		if (i >= 0 && h->mailfrom != NULL)
			authres_prop(&ar, i, "smtp.mailfrom", h->mailfrom, strlen(h->mailfrom));
		else if (i >= 0 && h->helo != NULL)
			authres_prop(&ar, i, "smtp.helo", h->helo, strlen(h->helo));
	}
	if (h->dkim != NULL)
		dkimv_authres(h->dkim, &ar);
	else if (h->dkim_on)
		authres_add(&ar, "dkim", "none", NULL);
	if (h->dmarc != NULL)
		dmarc_authres(h->dmarc, &ar);
	if (h->auth != NULL) {
		/* RFC 8601 2.7.4: the identity the client authenticated as */
		i = authres_add(&ar, "auth", "pass", NULL);
		if (i >= 0)
			authres_prop(&ar, i, "smtp.auth", h->auth, strlen(h->auth));
	}
	if (ar.n == 0)
		authres_add(&ar, "none", NULL, NULL);
	buf = xmalloc(cap);
	memcpy(buf, "Authentication-Results: ", 24);
	n = authres_render(&ar, h->authserv_id, "\r\n", buf + 24, cap - 26);
	if (n == 0) {
		free(buf);
		return NULL;
	}
	n += 24;
	buf[n++] = '\r';
	buf[n++] = '\n';
	*len = n;
	return buf;
}

/* ---------------------------------------------------------------------
 * SPF, for both front-ends
 */

int
sauth_spf_init(struct sauth_spf *j, enum spf_identity id, const struct sockaddr *client,
	const char *helo, const char *sender, unsigned timeout_ms)
{
	memset(j, 0, sizeof(*j));
	j->id = id;
	snprintf(j->helo, sizeof(j->helo), "%s", helo ? helo : "");
	snprintf(j->sender, sizeof(j->sender), "%s", sender ? sender : "");
	j->rq.helo = j->helo;
	j->rq.sender = j->sender;
	j->rq.timeout_ms = timeout_ms;
	if (client->sa_family == AF_INET) {
		j->rq.family = AF_INET;
		memcpy(j->rq.addr, &((const struct sockaddr_in *)client)->sin_addr, 4);
	} else if (client->sa_family == AF_INET6) {
		j->rq.family = AF_INET6;
		memcpy(j->rq.addr, &((const struct sockaddr_in6 *)client)->sin6_addr, 16);
	} else {
		j->out.res = SPF_RES_TEMPERROR;
		snprintf(j->out.reason, sizeof(j->out.reason), "no client address");
		return -1;
	}
	return 0;
}

bool
sauth_spf_cached(struct sauth_spf *j)
{
	dns_sync_cache_only(true);
	spf_check(&j->rq, j->id, &j->out);
	dns_sync_cache_only(false);
	if (!dns_sync_missed())
		return true;
	memset(&j->out, 0, sizeof(j->out));
	return false;
}

void
sauth_spf_run(struct sauth_spf *j)
{
	spf_check(&j->rq, j->id, &j->out);
}

void
sauth_spf_log(const struct sauth_spf *j, uint64_t sid)
{
	char esc[LOG_ESC_SIZE];

	if (!log_enabled(LOG_L_INFO))
		return;		/* the reason is escaped only for a line written */
	log_escape(esc, sizeof(esc), j->out.reason, strlen(j->out.reason));
	log_msg(LOG_L_INFO, sid, "check spf %s=%s domain=%s queries=%u reason=\"%s\"",
	    spf_identity_name(j->id), spf_res_name(j->out.res), j->out.domain, j->out.queries, esc);
}
