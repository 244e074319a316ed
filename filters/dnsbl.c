/*
 * dnsbl - DNSBL/DNSWL/RHSBL zones: query names, answers, health
 * (see dnsbl.h; policy/conf_dnsbl.c parses the policy statements)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "dns.h"
#include "dnsbl.h"
#include "log.h"
#include "xalloc.h"

static const char *const type_names[DNSBL_T__COUNT] = {
	"ip", "helo", "client-name", "sender-domain"
};

const char *
dnsbl_type_name(int type)
{
	return type >= 0 && type < DNSBL_T__COUNT ? type_names[type] : "?";
}

/* ---------------------------------------------------------------------
 * shared with the statement parser (policy/conf_dnsbl.c)
 */

/* dnsbl_domain_ok - see dnsbl.h */
bool
dnsbl_domain_ok(const char *s, size_t len, size_t max)
{
	size_t lab = 0;

	if (len == 0 || len > max || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (lab == 0 || s[i - 1] == '-')
				return false;
			lab = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return false;
		if (c == '-' && lab == 0)
			return false;
		if (++lab > 63)
			return false;
	}
	return s[len - 1] != '-';
}

/* dnsbl_zone_free - see dnsbl.h */
void
dnsbl_zone_free(struct dnsbl_zone *z)
{
	free(z->name);
	free(z->zone);
	free(z->key);
	free(z->reply);
	for (int i = 0; i < z->ncodes; i++)
		free(z->codes[i].reply);
	free(z->codes);
	memset(z, 0, sizeof(*z));
}

void
dnsbl_set_free(struct dnsbl_set *set)
{
	if (set == NULL)
		return;
	for (int i = 0; i < set->n; i++)
		dnsbl_zone_free(&set->z[i]);
	free(set);
}

/* ---------------------------------------------------------------------
 * queries and answers
 */

int
dnsbl_query_name(const struct dnsbl_zone *z, int family, const void *addr,
	const char *domain, char *out, size_t size)
{
	size_t dl;
	int r;

	if (z->type == DNSBL_T_IP)
		return dns_reverse_name(family, addr, z->zone, out, size);
	if (domain == NULL || (dl = strlen(domain)) == 0)
		return -1;
	if (domain[dl - 1] == '.')
		dl--;
	if (!dnsbl_domain_ok(domain, dl, 253))
		return -1;
	r = snprintf(out, size, "%.*s.%s", (int)dl, domain, z->zone);
	if (r < 0 || (size_t)r >= size || r > 253)
		return -1;
	for (int i = 0; i < (int)dl; i++)
		out[i] = (char)tolower((unsigned char)out[i]);
	return r;
}

static bool
in_ranges(uint32_t a, const uint32_t *lo, const uint32_t *hi, int n)
{
	for (int i = 0; i < n; i++)
		if (a >= lo[i] && a <= hi[i])
			return true;
	return false;
}

/* dnsbl_eval_answer - see dnsbl.h */
void
dnsbl_eval_answer(const struct dnsbl_zone *z, const uint32_t *a, int n, struct dnsbl_eval *out)
{
	memset(out, 0, sizeof(*out));
	out->v = DNSBL_V_CLEAR;
	/* one bad record spoils the answer: it is an error, not a listing */
	for (int i = 0; i < n; i++)
		if ((a[i] >> 24) != 127 || (a[i] >> 8) == 0x7fffffu) {
			out->v = DNSBL_V_ERROR;
			out->code = a[i];
			return;
		}
	if (z->ncodes > 0) {
		int64_t best = 0;
		bool any = false;

		for (int c = 0; c < z->ncodes; c++) {
			const struct dnsbl_code *dc = &z->codes[c];

			for (int i = 0; i < n; i++)
				if (in_ranges(a[i], dc->lo, dc->hi, dc->nr)) {
					int64_t w = dc->weight < 0 ? -dc->weight : dc->weight;

					if (!any)
						out->code = a[i];
					any = true;
					out->weight += dc->weight;
					if (dc->reply && (out->reply == NULL || w > best)) {
						out->reply = dc->reply;
						best = w;
					}
					break;
				}
		}
		if (any) {
			out->v = DNSBL_V_LISTED;
			if (out->reply == NULL)
				out->reply = z->reply;
		}
		return;
	}
	for (int i = 0; i < n; i++)
		if (z->nc == 0 || in_ranges(a[i], z->clo, z->chi, z->nc)) {
			out->v = DNSBL_V_LISTED;
			out->weight = z->weight;
			out->reply = z->reply;
			out->code = a[i];
			return;
		}
}

/* dnsbl_summarise - the facts for rules from a session's results */
void
dnsbl_summarise(const struct dnsbl_set *set, const struct dnsbl_sess *s, struct dnsbl_summary *out)
{
	int64_t best = -1;
	size_t o = 0;

	memset(out, 0, sizeof(*out));
	if (set == NULL || s == NULL)
		return;
	for (int i = 0; i < set->n; i++) {
		const struct dnsbl_zres *r = &s->r[i];
		const struct dnsbl_zone *z = &set->z[i];
		int64_t w;

		if (r->state != DZ_DONE)
			continue;
		if (r->verdict == DNSBL_V_ERROR) {
			out->error = true;
			continue;
		}
		if (r->verdict != DNSBL_V_LISTED)
			continue;
		out->score += r->weight;
		size_t nl = strlen(z->name);
		if (o + nl + 2 < sizeof(out->hits)) {
			if (o)
				out->hits[o++] = ',';
			memcpy(out->hits + o, z->name, nl);
			o += nl;
			out->hits[o] = 0;
		}
		w = r->weight;
		if (!z->allow && w > best) {
			best = w;
			out->reply = r->reply;
			out->top = z->name;
		}
	}
}

bool
dnsbl_hits_has(const char *hits, const char *name, size_t len)
{
	const char *p = hits;

	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (n == len && strncasecmp(p, name, len) == 0)
			return true;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return false;
}

/* ---------------------------------------------------------------------
 * health and counters, process-wide, by zone name
 */

struct health {
	char name[256];		/* a zone's name: NAME, or the zone itself */
	atomic_bool disabled;
	atomic_bool error_logged;
	atomic_uint_fast64_t queries, listed, errors, temperrors;
	uint64_t logged_queries;	/* the probe loop's thread only */
};

static struct health health[DNSBL_ZONES_MAX * 4];
static int nhealth;
static pthread_mutex_t health_lock = PTHREAD_MUTEX_INITIALIZER;

/* health_of - the zone's entry, made on first use; NULL if full */
static struct health *
health_of(const struct dnsbl_zone *z)
{
	int n = __atomic_load_n(&nhealth, __ATOMIC_ACQUIRE);
	struct health *h = NULL;

	for (int i = 0; i < n; i++)
		if (strcmp(health[i].name, z->name) == 0)
			return &health[i];
	pthread_mutex_lock(&health_lock);
	for (int i = 0; i < nhealth; i++)
		if (strcmp(health[i].name, z->name) == 0) {
			h = &health[i];
			break;
		}
	if (h == NULL && nhealth < (int)(sizeof(health) / sizeof(health[0]))) {
		h = &health[nhealth];
		snprintf(h->name, sizeof(h->name), "%s", z->name);
		__atomic_store_n(&nhealth, nhealth + 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&health_lock);
	return h;
}

bool
dnsbl_zone_enabled(const struct dnsbl_zone *z)
{
	struct health *h = health_of(z);

	return h == NULL || !atomic_load(&h->disabled);
}

void
dnsbl_probe_result(const struct dnsbl_zone *z, bool listed_ok, bool unlisted_ok, bool temp)
{
	struct health *h = health_of(z);
	bool ok = listed_ok && unlisted_ok;

	if (h == NULL || temp)
		return;
	if (!ok && !atomic_exchange(&h->disabled, true))
		log_msg(LOG_L_WARN, 0, "dnsbl zone=%s state=disabled reason=%s", z->name,
		    !listed_ok ? "test-point-not-listed" : "everything-listed");
	else if (ok && atomic_exchange(&h->disabled, false))
		log_msg(LOG_L_WARN, 0, "dnsbl zone=%s state=enabled reason=probe-passed", z->name);
}

void
dnsbl_note_error(const struct dnsbl_zone *z, uint64_t sid, uint32_t code)
{
	struct health *h = health_of(z);

	if (h == NULL || atomic_exchange(&h->error_logged, true))
		return;
	log_msg(LOG_L_WARN, sid, "dnsbl zone=%s error=bad-answer answer=%u.%u.%u.%u "
	    "(not a listing: outside 127.0.0.0/8 or a refused-query code; logged once)",
	    z->name, code >> 24, (code >> 16) & 255, (code >> 8) & 255, code & 255);
}

void
dnsbl_count(const struct dnsbl_zone *z, const struct dnsbl_eval *e, bool temp)
{
	struct health *h = health_of(z);

	if (h == NULL)
		return;
	atomic_fetch_add(&h->queries, 1);
	if (temp)
		atomic_fetch_add(&h->temperrors, 1);
	else if (e->v == DNSBL_V_ERROR)
		atomic_fetch_add(&h->errors, 1);
	else if (e->v == DNSBL_V_LISTED)
		atomic_fetch_add(&h->listed, 1);
}

void
dnsbl_counters(const struct dnsbl_zone *z, uint64_t *queries, uint64_t *listed,
	uint64_t *errors, uint64_t *temperrors)
{
	struct health *h = health_of(z);

	*queries = h ? atomic_load(&h->queries) : 0;
	*listed = h ? atomic_load(&h->listed) : 0;
	*errors = h ? atomic_load(&h->errors) : 0;
	*temperrors = h ? atomic_load(&h->temperrors) : 0;
}

/* dnsbl_log_stats - the zone's counters, when they moved since last time */
void
dnsbl_log_stats(const struct dnsbl_zone *z)
{
	struct health *h = health_of(z);
	uint64_t q;

	if (h == NULL || (q = atomic_load(&h->queries)) == h->logged_queries)
		return;
	h->logged_queries = q;
	log_msg(LOG_L_INFO, 0, "stats dnsbl zone=%s state=%s queries=%llu listed=%llu "
	    "bad-answers=%llu temperrors=%llu", z->name,
	    atomic_load(&h->disabled) ? "disabled" : "enabled", (unsigned long long)q,
	    (unsigned long long)atomic_load(&h->listed), (unsigned long long)atomic_load(&h->errors),
	    (unsigned long long)atomic_load(&h->temperrors));
}

/* dnsbl_client_addr - the address IP zones ask about (v4-mapped is v4);
 * returns its family */
int
dnsbl_client_addr(const struct sockaddr *sa, unsigned char addr[16])
{
	const struct in6_addr *a6;

	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		memcpy(addr, a6->s6_addr + 12, 4);
		return AF_INET;
	}
	memcpy(addr, a6->s6_addr, 16);
	return AF_INET6;
}

/* dnsbl_sess_set - a zone's result into a session's results, counted
 * and logged */
void
dnsbl_sess_set(const struct dnsbl_set *set, struct dnsbl_sess *dz, int i,
	const struct dnsbl_eval *e, bool temp, uint64_t sid)
{
	const struct dnsbl_zone *z = &set->z[i];
	struct dnsbl_zres *r = &dz->r[i];

	if (r->state == DZ_PENDING && dz->pending > 0)
		dz->pending--;
	r->state = DZ_DONE;
	r->verdict = (unsigned char)e->v;
	r->temp = temp;
	r->weight = e->v == DNSBL_V_LISTED ? e->weight : 0;
	r->reply = e->reply;
	r->code = e->code;
	dnsbl_count(z, e, temp);
	if (e->v == DNSBL_V_ERROR && !temp)
		dnsbl_note_error(z, sid, e->code);
	if (e->v == DNSBL_V_LISTED)
		log_msg(LOG_L_INFO, sid, "check dnsbl zone=%s type=%s result=listed answer=%u.%u.%u.%u "
		    "weight=%lld", z->name, dnsbl_type_name(z->type), e->code >> 24,
		    (e->code >> 16) & 255, (e->code >> 8) & 255, e->code & 255, (long long)r->weight);
	else if (temp || e->v == DNSBL_V_ERROR)
		log_msg(LOG_L_INFO, sid, "check dnsbl zone=%s type=%s result=%s", z->name,
		    dnsbl_type_name(z->type), temp ? "temperror" : "error");
	else
		log_msg(LOG_L_DEBUG, sid, "check dnsbl zone=%s type=%s result=clear", z->name,
		    dnsbl_type_name(z->type));
}

/* dnsbl_sess_answer - what a resolver answer means for zone i */
void
dnsbl_sess_answer(const struct dnsbl_set *set, struct dnsbl_sess *dz, int i,
	const struct dns_answer *a, uint64_t sid)
{
	struct dnsbl_eval e;
	uint32_t addrs[16];
	int n = 0;

	memset(&e, 0, sizeof(e));
	switch (a->status) {
	case DNS_OK:
		for (int k = 0; k < a->n && n < 16; k++) {
			unsigned char b[4];

			if (dns_rr_a(a, k, b) == 0)
				addrs[n++] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
				    (uint32_t)b[2] << 8 | b[3];
		}
		dnsbl_eval_answer(&set->z[i], addrs, n, &e);
		dnsbl_sess_set(set, dz, i, &e, false, sid);
		break;
	case DNS_NXDOMAIN:
	case DNS_NODATA:
		e.v = DNSBL_V_CLEAR;
		dnsbl_sess_set(set, dz, i, &e, false, sid);
		break;
	case DNS_TEMPERROR:
		e.v = DNSBL_V_ERROR;
		dnsbl_sess_set(set, dz, i, &e, true, sid);
		break;
	}
}

/* dnsbl_sess_start - query every enabled zone of a type about a subject
 * (the client's address for ip zones, else domain); gen[i] is bumped so
 * answers to an older question can be told apart */
void
dnsbl_sess_start(const struct dnsbl_set *set, struct dnsbl_sess *dz, unsigned short *gen,
	int type, const struct sockaddr *client, const char *domain,
	dnsbl_send_fn send, void *arg, uint64_t sid)
{
	unsigned char addr[16];
	int family = AF_INET;

	memset(addr, 0, sizeof(addr));
	if (type == DNSBL_T_IP)
		family = dnsbl_client_addr(client, addr);
	for (int i = 0; i < set->n; i++) {
		const struct dnsbl_zone *z = &set->z[i];
		struct dnsbl_zres *r = &dz->r[i];
		struct dnsbl_eval e;
		char name[320];

		if (z->type != type)
			continue;
		if (r->state == DZ_PENDING && dz->pending > 0)
			dz->pending--;
		gen[i]++;
		memset(r, 0, sizeof(*r));
		memset(&e, 0, sizeof(e));
		if (!dnsbl_zone_enabled(z) ||
		    dnsbl_query_name(z, family, addr, domain, name, sizeof(name)) < 0) {
			r->state = DZ_SKIPPED;	/* disabled, or nothing to ask */
			continue;
		}
		r->state = DZ_PENDING;
		dz->pending++;
		if (send(arg, name, i, gen[i]) != 0) {
			e.v = DNSBL_V_ERROR;
			dnsbl_sess_set(set, dz, i, &e, true, sid);
		}
	}
}
