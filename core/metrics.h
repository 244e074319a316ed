/*
 * metrics - process-wide counters for the Prometheus endpoint, shared by
 * every layer and both front-ends
 *
 * SYNOPSIS
 *	void metrics_inc(enum m_family f, const char *l1, const char *l2);
 *	void metrics_add(enum m_family f, const char *l1, const char *l2, int64_t d);
 *	void metrics_set(enum m_family f, const char *l1, const char *l2, int64_t v);
 *	void metrics_observe(enum m_family f, const char *l1, uint64_t us);
 *	char *metrics_render(size_t *len);
 *	int64_t metrics_get(enum m_family f, const char *l1, const char *l2);
 *
 * DESCRIPTION
 *	A family has a fixed name, help text, type and up to two label
 *	names (the table in metrics.c). A series is a family plus its label
 *	values (NULL for a family without labels). Label values are moat's
 *	own words (results, classes, stages), policy rule ids (file:line)
 *	and DNSBL zone names from the policy: never a client address, a
 *	domain or anything else a peer chooses, so the number of series is
 *	bounded; past METRICS_SERIES_MAX series a new one is not made and
 *	moat_metrics_dropped_total counts it.
 *
 *	Counters live for the process: a reload (SIGHUP) keeps them.
 *	Updates are atomic and may come from any thread (moat-milter's
 *	libmilter threads, moatd's workers); finding a series takes a mutex
 *	only for a series not seen before (a lock-free read first).
 *
 *	metrics_render() writes the text exposition format (version 0.0.4):
 *	"# HELP", "# TYPE", then one line per series; histograms in seconds
 *	with their _bucket{le=...}, _sum and _count. The caller frees it.
 */
#ifndef MOAT_METRICS_H
#define MOAT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_SERIES_MAX 2048

enum m_family {
	MF_SESSIONS_OPENED = 0,
	MF_SESSIONS_ACTIVE,
	MF_TRANSACTIONS,		/* MAIL let through */
	MF_MESSAGES,			/* result, by: a transaction's end */
	MF_REFUSALS,			/* stage, by: each refusal line */
	MF_RULE_HITS,			/* rule (file:line), verdict */
	MF_SPF,				/* result */
	MF_DKIM,
	MF_DMARC,
	MF_DNSBL_QUERIES,		/* zone */
	MF_DNSBL_LISTED,
	MF_DNSBL_ERRORS,
	MF_DNSBL_LATENCY,		/* zone: histogram */
	MF_DNSBL_DISABLED,		/* zone: gauge 0/1 */
	MF_REDIS_CALLS,
	MF_REDIS_ERRORS,
	MF_REDIS_LATENCY,		/* histogram */
	MF_GREYLIST,			/* outcome */
	MF_UPS_CONNECTS,
	MF_UPS_CONNECT_FAILURES,
	MF_UPS_REUSES,
	MF_UPS_REPLIES,			/* class */
	MF_TLS_HANDSHAKES,
	MF_TLS_FAILURES,
	MF_AUTH,			/* result */
	MF_DROPPED,
	MF__COUNT
};

void metrics_inc(enum m_family f, const char *l1, const char *l2);
void metrics_add(enum m_family f, const char *l1, const char *l2, int64_t d);
void metrics_set(enum m_family f, const char *l1, const char *l2, int64_t v);
void metrics_observe(enum m_family f, const char *l1, uint64_t us);
char *metrics_render(size_t *len);
int64_t metrics_get(enum m_family f, const char *l1, const char *l2);

#endif
