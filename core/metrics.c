/*
 * metrics - process-wide counters for the Prometheus endpoint (see
 * metrics.h)
 *
 * DESCRIPTION
 *	The series live in one open-addressing table of fixed size, never
 *	shrunk. A slot goes from empty to filling to ready once, under the
 *	mutex; readers look for a ready slot without it and take the mutex
 *	only when the series is not there yet. Values are C11 atomics with
 *	relaxed order: a scrape sees each value whole, not a snapshot of
 *	all of them at one instant.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "xalloc.h"

#define SLOTS (METRICS_SERIES_MAX * 2)
#define L1_MAX 160
#define L2_MAX 32
#define NBUCKETS 12

enum { S_EMPTY = 0, S_FILLING, S_READY };

struct family {
	const char *name;
	const char *help;
	const char *type;		/* counter, gauge, histogram */
	const char *l1, *l2;		/* label names, or NULL */
};

static const struct family fams[MF__COUNT] = {
	[MF_SESSIONS_OPENED] = { "moat_sessions_opened_total", "SMTP or milter sessions opened", "counter", NULL, NULL },
	[MF_SESSIONS_ACTIVE] = { "moat_sessions_active", "sessions open now", "gauge", NULL, NULL },
	[MF_TRANSACTIONS] = { "moat_transactions_total", "transactions whose MAIL moat let through", "counter", NULL, NULL },
	[MF_MESSAGES] = { "moat_messages_total", "transactions at their end of data, by final class and by whom", "counter", "result", "by" },
	[MF_REFUSALS] = { "moat_refusals_total", "refusals (verdict lines), by stage and by whom", "counter", "stage", "by" },
	[MF_RULE_HITS] = { "moat_rule_hits_total", "policy rules that matched, by rule (file:line)", "counter", "rule", "verdict" },
	[MF_SPF] = { "moat_spf_results_total", "SPF results of MAIL FROM", "counter", "result", NULL },
	[MF_DKIM] = { "moat_dkim_results_total", "DKIM results of messages", "counter", "result", NULL },
	[MF_DMARC] = { "moat_dmarc_results_total", "DMARC results of messages", "counter", "result", NULL },
	[MF_DNSBL_QUERIES] = { "moat_dnsbl_queries_total", "DNSBL/DNSWL queries sent", "counter", "zone", NULL },
	[MF_DNSBL_LISTED] = { "moat_dnsbl_listed_total", "DNSBL/DNSWL answers that list the subject", "counter", "zone", NULL },
	[MF_DNSBL_ERRORS] = { "moat_dnsbl_errors_total", "DNSBL/DNSWL lookups that failed", "counter", "zone", NULL },
	[MF_DNSBL_LATENCY] = { "moat_dnsbl_latency_seconds", "DNSBL/DNSWL answer time", "histogram", "zone", NULL },
	[MF_DNSBL_DISABLED] = { "moat_dnsbl_zone_disabled", "1 while the zone's health probe keeps it disabled", "gauge", "zone", NULL },
	[MF_REDIS_CALLS] = { "moat_redis_calls_total", "Redis commands sent", "counter", NULL, NULL },
	[MF_REDIS_ERRORS] = { "moat_redis_errors_total", "Redis commands that failed or timed out", "counter", NULL, NULL },
	[MF_REDIS_LATENCY] = { "moat_redis_latency_seconds", "Redis command answer time", "histogram", NULL, NULL },
	[MF_GREYLIST] = { "moat_greylist_total", "greylist decisions, by outcome", "counter", "outcome", NULL },
	[MF_UPS_CONNECTS] = { "moat_upstream_connects_total", "upstream connections made", "counter", NULL, NULL },
	[MF_UPS_CONNECT_FAILURES] = { "moat_upstream_connect_failures_total", "upstream connections that failed before EHLO", "counter", NULL, NULL },
	[MF_UPS_REUSES] = { "moat_upstream_reuses_total", "pooled upstream connections reused", "counter", NULL, NULL },
	[MF_UPS_REPLIES] = { "moat_upstream_replies_total", "upstream replies to MAIL, RCPT, DATA and the end of data, by class", "counter", "class", NULL },
	[MF_TLS_HANDSHAKES] = { "moat_tls_handshakes_total", "TLS handshakes with clients that succeeded", "counter", NULL, NULL },
	[MF_TLS_FAILURES] = { "moat_tls_failures_total", "TLS handshakes with clients that failed", "counter", NULL, NULL },
	[MF_AUTH] = { "moat_auth_total", "SMTP AUTH exchanges, by result", "counter", "result", NULL },
	[MF_DROPPED] = { "moat_metrics_dropped_total", "updates lost: the series table was full", "counter", NULL, NULL },
};

static const double bounds[NBUCKETS] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
	0.5, 1, 2.5, 5 };

struct series {
	_Atomic int state;
	unsigned char fam;
	char l1[L1_MAX];
	char l2[L2_MAX];
	_Atomic int64_t v;		/* counter, gauge; a histogram's count */
	_Atomic uint64_t sum_us;
	_Atomic uint64_t b[NBUCKETS];
};

static struct series table[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int nseries;
static _Atomic int64_t dropped;

static unsigned
hash(enum m_family f, const char *l1, const char *l2)
{
	uint32_t h = 2166136261u ^ (uint32_t)f;

	for (const char *p = l1; p && *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ 0xff) * 16777619u;
	for (const char *p = l2; p && *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % SLOTS;
}

static bool
same(const struct series *s, enum m_family f, const char *l1, const char *l2)
{
	return s->fam == f && strncmp(s->l1, l1 ? l1 : "", L1_MAX - 1) == 0 &&
	    strncmp(s->l2, l2 ? l2 : "", L2_MAX - 1) == 0;
}

/* find - the series, made when new; NULL when the table is full */
static struct series *
find(enum m_family f, const char *l1, const char *l2)
{
	unsigned h = hash(f, l1, l2), i;
	struct series *s;

	for (i = 0; i < SLOTS; i++) {
		s = &table[(h + i) % SLOTS];
		int st = atomic_load_explicit(&s->state, memory_order_acquire);
		if (st == S_EMPTY || st == S_FILLING)
			break;
		if (same(s, f, l1, l2))
			return s;
	}
	pthread_mutex_lock(&lock);
	for (i = 0; i < SLOTS; i++) {
		s = &table[(h + i) % SLOTS];
		int st = atomic_load_explicit(&s->state, memory_order_acquire);
		if (st == S_EMPTY)
			break;
		if (same(s, f, l1, l2)) {
			pthread_mutex_unlock(&lock);
			return s;
		}
	}
	if (i == SLOTS || atomic_load(&nseries) >= METRICS_SERIES_MAX) {
		pthread_mutex_unlock(&lock);
		atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
		return NULL;
	}
	atomic_store_explicit(&s->state, S_FILLING, memory_order_relaxed);
	s->fam = (unsigned char)f;
	snprintf(s->l1, sizeof(s->l1), "%s", l1 ? l1 : "");
	snprintf(s->l2, sizeof(s->l2), "%s", l2 ? l2 : "");
	atomic_fetch_add(&nseries, 1);
	atomic_store_explicit(&s->state, S_READY, memory_order_release);
	pthread_mutex_unlock(&lock);
	return s;
}

void
metrics_add(enum m_family f, const char *l1, const char *l2, int64_t d)
{
	struct series *s = find(f, l1, l2);

	if (s != NULL)
		atomic_fetch_add_explicit(&s->v, d, memory_order_relaxed);
}

/* metrics_get - a counter's or gauge's value now (0 when never set) */
int64_t
metrics_get(enum m_family f, const char *l1, const char *l2)
{
	struct series *s = find(f, l1, l2);

	return s != NULL ? atomic_load_explicit(&s->v, memory_order_relaxed) : 0;
}

void
metrics_inc(enum m_family f, const char *l1, const char *l2)
{
	metrics_add(f, l1, l2, 1);
}

void
metrics_set(enum m_family f, const char *l1, const char *l2, int64_t v)
{
	struct series *s = find(f, l1, l2);

	if (s != NULL)
		atomic_store_explicit(&s->v, v, memory_order_relaxed);
}

void
metrics_observe(enum m_family f, const char *l1, uint64_t us)
{
	struct series *s = find(f, l1, NULL);

	if (s == NULL)
		return;
	for (int i = 0; i < NBUCKETS; i++)
		if ((double)us <= bounds[i] * 1e6) {
			atomic_fetch_add_explicit(&s->b[i], 1, memory_order_relaxed);
			break;
		}
	atomic_fetch_add_explicit(&s->sum_us, us, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->v, 1, memory_order_relaxed);
}

/* out - a growing text buffer */
struct out {
	char *p;
	size_t n, cap;
};

static void
put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int k;

	for (;;) {
		va_start(ap, fmt);
		k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
		va_end(ap);
		if (k >= 0 && (size_t)k < o->cap - o->n) {
			o->n += (size_t)k;
			return;
		}
		o->cap *= 2;
		o->p = xrealloc(o->p, o->cap);
	}
}

/* esc - a label value in the exposition format's escaping */
static void
esc(char *dst, size_t size, const char *v)
{
	size_t j = 0;

	for (; *v && j + 3 < size; v++) {
		if (*v == '\\' || *v == '"') {
			dst[j++] = '\\';
			dst[j++] = *v;
		} else if (*v == '\n') {
			dst[j++] = '\\';
			dst[j++] = 'n';
		} else
			dst[j++] = *v;
	}
	dst[j] = 0;
}

/* labels - "{a=\"x\",b=\"y\"" without the closing brace, or "" */
static void
labels(const struct family *fm, const struct series *s, char *buf, size_t size)
{
	char e1[L1_MAX * 2], e2[L2_MAX * 2];

	buf[0] = 0;
	if (fm->l1 == NULL)
		return;
	esc(e1, sizeof(e1), s->l1);
	if (fm->l2 == NULL)
		snprintf(buf, size, "{%s=\"%s\"", fm->l1, e1);
	else {
		esc(e2, sizeof(e2), s->l2);
		snprintf(buf, size, "{%s=\"%s\",%s=\"%s\"", fm->l1, e1, fm->l2, e2);
	}
}

char *
metrics_render(size_t *len)
{
	struct out o = { xmalloc(16384), 0, 16384 };

	for (int f = 0; f < MF__COUNT; f++) {
		const struct family *fm = &fams[f];
		bool any = false;

		put(&o, "# HELP %s %s\n# TYPE %s %s\n", fm->name, fm->help, fm->name, fm->type);
		for (unsigned i = 0; i < SLOTS; i++) {
			const struct series *s = &table[i];
			char lb[L1_MAX * 2 + L2_MAX * 2 + 32];

			if (atomic_load_explicit(&s->state, memory_order_acquire) != S_READY ||
			    s->fam != f)
				continue;
			any = true;
			labels(fm, s, lb, sizeof(lb));
			if (strcmp(fm->type, "histogram") == 0) {
				uint64_t cum = 0;

				for (int b = 0; b < NBUCKETS; b++) {
					cum += atomic_load_explicit(&s->b[b], memory_order_relaxed);
					put(&o, "%s_bucket%s%sle=\"%g\"} %llu\n", fm->name, lb[0] ? lb : "{",
					    lb[0] ? "," : "", bounds[b], (unsigned long long)cum);
				}
				put(&o, "%s_bucket%s%sle=\"+Inf\"} %lld\n", fm->name, lb[0] ? lb : "{",
				    lb[0] ? "," : "", (long long)atomic_load(&s->v));
				put(&o, "%s_sum%s%s %.6f\n", fm->name, lb, lb[0] ? "}" : "",
				    (double)atomic_load(&s->sum_us) / 1e6);
				put(&o, "%s_count%s%s %lld\n", fm->name, lb, lb[0] ? "}" : "",
				    (long long)atomic_load(&s->v));
			} else {
				put(&o, "%s%s%s %lld\n", fm->name, lb, lb[0] ? "}" : "",
				    (long long)atomic_load(&s->v));
			}
		}
		if (!any && fm->l1 == NULL) {
			if (f == MF_DROPPED)
				put(&o, "%s %lld\n", fm->name, (long long)atomic_load(&dropped));
			else if (strcmp(fm->type, "histogram") == 0)
				put(&o, "%s_bucket{le=\"+Inf\"} 0\n%s_sum 0\n%s_count 0\n", fm->name,
				    fm->name, fm->name);
			else
				put(&o, "%s 0\n", fm->name);
		}
	}
	*len = o.n;
	return o.p;
}
