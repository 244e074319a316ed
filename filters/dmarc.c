/*
 * dmarc - DMARC evaluation over moat's own record parser (dmarc_record.c)
 * and moat's resolver; see dmarc.h for the contract
 *
 * WHY NOT LIBOPENDMARC'S POLICY CODE. libopendmarc 1.4.2 as Debian ships
 * it still has CVE-2024-25768 (opendmarc_policy_fetch_ruf with a NULL
 * buffer), its parser accepts abbreviations the RFC does not ("p=n"),
 * and its own lookups are synchronous res_query calls. Evaluation is
 * small, so moat does it here: records come from moat's resolver, are
 * parsed by moat's fuzzed parser, and no libopendmarc function is called.
 *
 * STATE. One struct walk per dmarc_check() call, on the caller's thread:
 * a cache of the lookups made (so a tree walk for the From domain and
 * for an aligned identifier share answers) with a hard budget of
 * DMARC_MAX_QUERIES, and one heap buffer for the TXT answer being read.
 */
#include "dmarc.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "xalloc.h"

enum disc_status { DISC_NONE = 0, DISC_FOUND, DISC_TEMP, DISC_INVALID };

struct qent {
	char name[DMARC_DOMAIN_SIZE + 8];
	int rrtype;
	enum dmarc_dns st;
	int ndmarc;			/* DMARC records at the name */
	enum dmarc_rec_status rs;	/* of the one record when ndmarc == 1 */
	struct dmarc_record rec;
};

struct walk {
	const struct dmarc_conf *c;
	struct dmarc_txt *txt;
	struct qent q[DMARC_MAX_QUERIES];
	int nq;
};

struct disc {
	enum disc_status st;
	char policy_domain[DMARC_DOMAIN_SIZE];
	char org[DMARC_DOMAIN_SIZE];
	struct dmarc_record rec;
	const char *why;
};

const char *
dmarc_result_name(enum dmarc_result r)
{
	switch (r) {
	case DMARC_RES_PASS:
		return "pass";
	case DMARC_RES_FAIL:
		return "fail";
	case DMARC_RES_TEMPERROR:
		return "temperror";
	case DMARC_RES_PERMERROR:
		return "permerror";
	default:
		return "none";
	}
}

enum dmarc_dns
dmarc_resolver_lookup(void *ctx, const char *name, int rrtype, struct dmarc_txt *out)
{
	const struct dmarc_conf *c = ctx;
	struct dns_answer *a = NULL;
	enum dmarc_dns st;

	out->n = out->total = 0;
	dns_query_sync(name, rrtype, c != NULL && c->timeout_ms ? c->timeout_ms : 5000, &a);
	if (a == NULL)
		return DMARC_DNS_TEMPERROR;
	switch (a->status) {
	case DNS_OK:
		st = DMARC_DNS_OK;
		break;
	case DNS_NODATA:
		st = DMARC_DNS_NODATA;
		break;
	case DNS_NXDOMAIN:
		st = DMARC_DNS_NXDOMAIN;
		break;
	default:
		st = DMARC_DNS_TEMPERROR;
		break;
	}
	if (st == DMARC_DNS_OK && rrtype == DNS_T_TXT) {
		out->total = a->n;
		for (int i = 0; i < a->n && out->n < DMARC_TXT_MAX; i++) {
			int k = out->n;
			int l = dns_rr_txt(a, i, out->rec[k], sizeof out->rec[k]);
			if (l < 0) {
				/* longer than DMARC_RECORD_MAX: keep the head */
				const unsigned char *p = (const unsigned char *)a->data[i];
				size_t n = (size_t)a->len[i], pos = 0, o = 0;
				while (pos < n && o < DMARC_RECORD_MAX) {
					size_t sl = p[pos++], take;
					if (pos + sl > n)
						break;
					take = sl > DMARC_RECORD_MAX - o ? DMARC_RECORD_MAX - o : sl;
					memcpy(out->rec[k] + o, p + pos, take);
					o += take;
					pos += sl;
				}
				out->rec[k][o] = '\0';
				out->len[k] = o;
				out->toolong[k] = true;
			} else {
				out->len[k] = (size_t)l;
				out->toolong[k] = false;
			}
			out->n++;
		}
	}
	dns_answer_free(a);
	return st;
}

/* lookup - one cached query; NULL when the budget is spent */
static const struct qent *
lookup(struct walk *w, const char *name, int rrtype)
{
	struct qent *e;
	dmarc_lookup_fn fn = w->c->lookup ? w->c->lookup : dmarc_resolver_lookup;
	void *fctx = w->c->lookup ? w->c->lookup_ctx : (void *)(uintptr_t)w->c;

	for (int i = 0; i < w->nq; i++)
		if (w->q[i].rrtype == rrtype && strcmp(w->q[i].name, name) == 0)
			return &w->q[i];
	if (w->nq >= DMARC_MAX_QUERIES || strlen(name) >= sizeof w->q[0].name)
		return NULL;
	e = &w->q[w->nq++];
	memset(e, 0, sizeof *e);
	memcpy(e->name, name, strlen(name) + 1);
	e->rrtype = rrtype;
	memset(w->txt, 0, offsetof(struct dmarc_txt, rec));
	e->st = fn(fctx, name, rrtype, w->txt);
	if (e->st != DMARC_DNS_OK || rrtype != DNS_T_TXT)
		return e;
	for (int i = 0; i < w->txt->n && i < DMARC_TXT_MAX; i++) {
		struct dmarc_record r;
		size_t len = w->txt->len[i] > DMARC_RECORD_MAX ? DMARC_RECORD_MAX : w->txt->len[i];
		enum dmarc_rec_status rs = dmarc_record_parse(w->txt->rec[i], len,
		    w->c->mode == DMARC_MODE_BIS, &r);

		if (rs == DMARC_REC_NOT_DMARC)
			continue;
		if (w->txt->toolong[i]) {
			rs = DMARC_REC_INVALID;
			r.why = "record too long";
		}
		if (e->ndmarc++ == 0) {
			e->rs = rs;
			e->rec = r;
		}
	}
	return e;
}

/* q_dmarc - the _dmarc record of domain */
static const struct qent *
q_dmarc(struct walk *w, const char *domain)
{
	char name[DMARC_DOMAIN_SIZE + 8];

	snprintf(name, sizeof name, "_dmarc.%s", domain);
	return lookup(w, name, DNS_T_TXT);
}

static int
count_labels(const char *d)
{
	int n = 1;

	for (; *d; d++)
		if (*d == '.')
			n++;
	return n;
}

/* last_labels - the suffix of d with k labels */
static const char *
last_labels(const char *d, int k)
{
	int n = count_labels(d);
	const char *p = d;

	while (n > k && (p = strchr(p, '.')) != NULL) {
		p++;
		n--;
	}
	return p != NULL ? p : d;
}

static void
copy_domain(char *dst, const char *src)
{
	snprintf(dst, DMARC_DOMAIN_SIZE, "%s", src);
}

/* psl_org - RFC 7489 organizational domain; a public suffix is its own */
static void
psl_org(const struct dmarc_conf *c, const char *d, char *out)
{
	if (c->psl == NULL || dmarc_psl_orgdomain(c->psl, d, out, DMARC_DOMAIN_SIZE) < 0)
		copy_domain(out, d);
}

/* discover_7489 - _dmarc.<d>, then _dmarc.<org(d)> */
static void
discover_7489(struct walk *w, const char *d, struct disc *r)
{
	const struct qent *e;
	char org[DMARC_DOMAIN_SIZE];

	psl_org(w->c, d, org);
	copy_domain(r->org, org);
	for (int step = 0; step < 2; step++) {
		const char *t = step == 0 ? d : org;

		if (step == 1 && strcmp(org, d) == 0)
			break;
		if ((e = q_dmarc(w, t)) == NULL || e->st == DMARC_DNS_TEMPERROR) {
			r->st = DISC_TEMP;
			r->why = "DNS error looking up the DMARC record";
			return;
		}
		if (e->ndmarc > 1) {
			r->st = DISC_NONE;
			r->why = "several DMARC records";
			return;
		}
		if (e->ndmarc == 1) {
			copy_domain(r->policy_domain, t);
			r->rec = e->rec;
			r->st = e->rs == DMARC_REC_OK ? DISC_FOUND : DISC_INVALID;
			r->why = e->rs == DMARC_REC_OK ? NULL : e->rec.why;
			return;
		}
	}
	r->st = DISC_NONE;
	r->why = "no DMARC record";
}

/* discover_bis - the DMARCbis DNS tree walk from d */
static void
discover_bis(struct walk *w, const char *d, struct disc *r)
{
	const char *target = d;
	int queries = 0, fewest = 0;
	bool org_set = false;

	copy_domain(r->org, d);
	r->st = DISC_NONE;
	r->why = "no DMARC record";
	for (;;) {
		const struct qent *e = q_dmarc(w, target);
		int labels = count_labels(target);

		queries++;
		if (e == NULL || e->st == DMARC_DNS_TEMPERROR) {
			if (r->st == DISC_NONE || !org_set) {
				r->st = DISC_TEMP;
				r->why = "DNS error looking up the DMARC record";
				return;
			}
			break;
		}
		if (e->ndmarc == 1) {
			if (r->st == DISC_NONE) {
				copy_domain(r->policy_domain, target);
				r->rec = e->rec;
				r->st = e->rs == DMARC_REC_OK ? DISC_FOUND : DISC_INVALID;
				r->why = e->rs == DMARC_REC_OK ? NULL : e->rec.why;
			}
			if (e->rs == DMARC_REC_OK) {
				if (e->rec.psd == DMARC_PSD_NO) {
					copy_domain(r->org, target);
					return;
				}
				if (e->rec.psd == DMARC_PSD_YES && target != d) {
					copy_domain(r->org, last_labels(d, labels + 1));
					return;
				}
				if (fewest == 0 || labels < fewest) {
					fewest = labels;
					copy_domain(r->org, target);
					org_set = true;
				}
			}
		}
		if (labels <= 1 || queries >= DMARC_WALK_MAX)
			break;
		target = last_labels(target, labels > 7 ? 7 : labels - 1);
	}
}

static void
discover(struct walk *w, const char *d, struct disc *r)
{
	memset(r, 0, sizeof *r);
	if (w->c->mode == DMARC_MODE_BIS)
		discover_bis(w, d, r);
	else
		discover_7489(w, d, r);
}

/* org_of - the organizational domain of an identifier; false when it
 * cannot be known (DNS trouble, budget) */
static bool
org_of(struct walk *w, const char *d, char *out)
{
	struct disc r;

	if (w->c->mode != DMARC_MODE_BIS) {
		psl_org(w->c, d, out);
		return true;
	}
	discover(w, d, &r);
	if (r.st == DISC_TEMP)
		return false;
	copy_domain(out, r.org);
	return true;
}

/* aligned - identifier id against the author domain (org: its org) */
static bool
aligned(struct walk *w, const char *id, const char *author, const char *author_org,
	enum dmarc_align mode)
{
	char d[DMARC_DOMAIN_SIZE], o[DMARC_DOMAIN_SIZE];

	if (id == NULL || dmarc_domain_norm(id, strlen(id), d, sizeof d) < 0)
		return false;
	if (strcmp(d, author) == 0)
		return true;
	if (mode == DMARC_ALIGN_STRICT)
		return false;
	return org_of(w, d, o) && strcmp(o, author_org) == 0;
}

static enum dmarc_policy
step_down(enum dmarc_policy p)
{
	if (p == DMARC_POLICY_REJECT)
		return DMARC_POLICY_QUARANTINE;
	return DMARC_POLICY_NONE;
}

/* policy_for - the policy a failing message of author d gets */
static enum dmarc_policy
policy_for(struct walk *w, const struct disc *r, const char *d, unsigned roll,
	enum dmarc_policy *published, bool *sampled)
{
	enum dmarc_policy p = r->rec.p;

	if (strcmp(r->policy_domain, d) != 0) {
		if (r->rec.sp != DMARC_POLICY_UNSET)
			p = r->rec.sp;
		if (r->rec.np != DMARC_POLICY_UNSET) {
			const struct qent *e = lookup(w, d, DNS_T_A);
			if (e != NULL && e->st == DMARC_DNS_NXDOMAIN)
				p = r->rec.np;
		}
	}
	*published = p;
	*sampled = false;
	if (w->c->mode == DMARC_MODE_BIS) {
		if (r->rec.testing && p != DMARC_POLICY_NONE) {
			p = step_down(p);
			*sampled = true;
		}
	} else if (r->rec.pct < 100 && roll >= (unsigned)r->rec.pct && p != DMARC_POLICY_NONE) {
		p = step_down(p);
		*sampled = true;
	}
	return p;
}

static void
set_reason(struct dmarc_outcome *out, const char *why)
{
	if (why != NULL)
		snprintf(out->reason, sizeof out->reason, "%s", why);
}

/* check_one - the usual case: one author domain */
static void
check_one(struct walk *w, const struct dmarc_input *in, struct dmarc_outcome *out)
{
	struct disc r;
	const char *d = out->from_domain;

	discover(w, d, &r);
	copy_domain(out->org_domain, r.org);
	copy_domain(out->policy_domain, r.policy_domain);
	switch (r.st) {
	case DISC_TEMP:
		out->result = DMARC_RES_TEMPERROR;
		set_reason(out, r.why);
		return;
	case DISC_INVALID:
		out->result = DMARC_RES_PERMERROR;
		set_reason(out, r.why);
		return;
	case DISC_NONE:
		out->result = DMARC_RES_NONE;
		set_reason(out, r.why);
		return;
	case DISC_FOUND:
		break;
	}
	if (in->spf_pass)
		out->spf_aligned = aligned(w, in->spf_domain, d, r.org, r.rec.aspf);
	for (int i = 0; i < in->ndkim && in->dkim != NULL && !out->dkim_aligned; i++)
		if (in->dkim[i].pass)
			out->dkim_aligned = aligned(w, in->dkim[i].domain, d, r.org, r.rec.adkim);
	if (out->spf_aligned || out->dkim_aligned) {
		out->result = DMARC_RES_PASS;
		out->published = r.rec.p;
		out->policy = DMARC_POLICY_NONE;
		return;
	}
	out->result = DMARC_RES_FAIL;
	out->policy = policy_for(w, &r, d, in->pct_roll % 100, &out->published, &out->sampled_out);
	set_reason(out, "no aligned SPF or DKIM identifier");
}

/* check_several - several From fields or mailboxes: a failure; the
 * strictest policy of all the author domains applies */
static void
check_several(struct walk *w, const struct dmarc_input *in, const struct dmarc_author *a,
	struct dmarc_outcome *out)
{
	out->result = DMARC_RES_FAIL;
	out->several_authors = true;
	set_reason(out, "several authors");
	for (int i = 0; i < a->ndomain; i++) {
		struct disc r;
		enum dmarc_policy pub, p;
		bool sampled;

		discover(w, a->domain[i], &r);
		if (r.st != DISC_FOUND)
			continue;
		p = policy_for(w, &r, a->domain[i], in->pct_roll % 100, &pub, &sampled);
		if (p > out->policy || out->policy_domain[0] == '\0') {
			out->policy = p;
			out->published = pub;
			out->sampled_out = sampled;
			copy_domain(out->policy_domain, r.policy_domain);
			copy_domain(out->org_domain, r.org);
		}
	}
	if (out->policy == DMARC_POLICY_UNSET)
		out->policy = DMARC_POLICY_NONE;
}

void
dmarc_check(const struct dmarc_conf *c, const struct dmarc_input *in, struct dmarc_outcome *out)
{
	struct dmarc_author a;
	struct walk *w;

	memset(out, 0, sizeof *out);
	out->policy = DMARC_POLICY_NONE;
	dmarc_author_init(&a);
	for (int i = 0; i < in->nfrom; i++)
		dmarc_author_add(&a, in->from[i], in->from_len[i]);
	if (a.ndomain > 0)
		copy_domain(out->from_domain, a.domain[0]);
	if (a.nfields == 0 || a.ndomain == 0 || (a.bad && a.nmailbox <= 1)) {
		out->result = DMARC_RES_PERMERROR;
		set_reason(out, a.nfields == 0 ? "no From field" : a.bad_idn ?
		    "From domain is not a valid IDN" : "no usable From domain");
		return;
	}
	if (c->mode == DMARC_MODE_RFC7489 && c->psl == NULL) {
		out->result = DMARC_RES_TEMPERROR;
		set_reason(out, "no public suffix list");
		return;
	}
	w = xmalloc(sizeof *w);		/* not zeroed: query() clears each entry it takes */
	w->nq = 0;
	w->c = c;
	w->txt = xmalloc(sizeof *w->txt);
	if (a.nfields > 1 || a.nmailbox > 1)
		check_several(w, in, &a, out);
	else
		check_one(w, in, out);
	if (out->published == DMARC_POLICY_UNSET && out->result != DMARC_RES_NONE &&
	    out->result != DMARC_RES_TEMPERROR && out->result != DMARC_RES_PERMERROR)
		out->published = DMARC_POLICY_NONE;
	free(w->txt);
	free(w);
}

/* comment text for "(p=X dis=Y)"; static, so a borrowed pointer is safe */
static const char *
policy_comment(enum dmarc_policy pub, enum dmarc_policy dis)
{
	static const char *const t[4][4] = {
		{ NULL, NULL, NULL, NULL },
		{ NULL, "p=none dis=none", "p=none dis=quarantine", "p=none dis=reject" },
		{ NULL, "p=quarantine dis=none", "p=quarantine dis=quarantine",
		  "p=quarantine dis=reject" },
		{ NULL, "p=reject dis=none", "p=reject dis=quarantine", "p=reject dis=reject" },
	};

	if ((int)pub < 0 || pub > DMARC_POLICY_REJECT || (int)dis < 0 || dis > DMARC_POLICY_REJECT)
		return NULL;
	return t[pub][dis];
}

void
dmarc_authres(const struct dmarc_outcome *o, struct authres *a)
{
	const char *reason = NULL;
	int i;

	if (o->result == DMARC_RES_TEMPERROR || o->result == DMARC_RES_PERMERROR ||
	    o->several_authors)
		reason = o->reason[0] ? o->reason : NULL;
	i = authres_add(a, "dmarc", dmarc_result_name(o->result), reason);
	if (i < 0)
		return;
	if (o->result == DMARC_RES_PASS || o->result == DMARC_RES_FAIL)
		authres_comment(a, i, policy_comment(o->published, o->policy));
	if (o->from_domain[0])
		authres_prop(a, i, "header.from", o->from_domain, strlen(o->from_domain));
	if (o->result == DMARC_RES_FAIL) {
		const char *p = dmarc_policy_name(o->policy);
		authres_prop(a, i, "policy.dmarc", p, strlen(p));
	}
}
