/*
 * dns - moat's one resolver: libunbound, asynchronous, shared cache
 *
 * SYNOPSIS
 *	int dns_init(const struct dns_conf *c, char **err);
 *	void dns_shutdown(void);
 *
 *	struct dns_loop *dns_loop_new(struct event_base *base);
 *	void dns_loop_free(struct dns_loop *l);	(after dns_shutdown, before
 *						 the loop's event_base is freed)
 *	int dns_query(struct dns_loop *l, const char *name, int rrtype,
 *	              unsigned timeout_ms, dns_cb cb, void *ctx, uint64_t tag);
 *
 *	int dns_query_sync(const char *name, int rrtype, unsigned timeout_ms,
 *	                   struct dns_answer **out);
 *	void dns_answer_free(struct dns_answer *a);
 *
 * DESCRIPTION
 *	Every part of moat shares one front cache of recent answers (below).
 *	Behind it, each event loop has a libunbound context of its own,
 *	running inside the loop (ub_ctx_create_event: no resolver thread,
 *	no pipe); the work pool shares one more, which resolves on
 *	libunbound's thread and a small dispatcher thread of ours:
 *
 *	- an event loop (dns_query, on the loop's thread only): cb(ctx,
 *	  tag, answer) is called there, from the loop, never from inside
 *	  dns_query. The caller passes an id (a session's), never a pointer
 *	  that may be gone by then: the callback looks the id up and drops
 *	  the answer when nothing waits for it. The answer is borrowed for
 *	  the call only.
 *	- a thread that may block (dns_query_sync, on the work pool only,
 *	  never on an event loop): it waits on a condition variable.
 *
 *	Every query has a deadline: when it passes, the caller gets
 *	DNS_TEMPERROR at once and the query is cancelled inside libunbound.
 *	SERVFAIL, REFUSED, timeouts and answers libunbound could not parse
 *	are all DNS_TEMPERROR, never a stall. Queries in flight are bounded
 *	(dns_conf.max_inflight, across the process): past the bound a query
 *	fails at once with DNS_TEMPERROR, without being sent.
 *
 *	dns_query() returns 0 when cb will be called exactly once (always
 *	later, from the loop, never before dns_query returns), -1 when
 *	it was refused at once (bad name, too many in flight, no resolver):
 *	then cb is not called and the caller records a temporary error.
 *
 * MODES (resolver setting of the policy file)
 *	system		forward to the name servers of /etc/resolv.conf
 *	forward A@P ...	forward to the given servers (tests: a loopback server)
 *	recursive	full recursion from the root (DNSBL operators refuse
 *			queries that come through big public resolvers)
 */
#ifndef MOAT_DNS_H
#define MOAT_DNS_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#define DNS_FORWARD_MAX 8

enum dns_mode { DNS_MODE_SYSTEM = 0, DNS_MODE_FORWARD, DNS_MODE_RECURSIVE };

struct dns_conf {
	int mode;			/* enum dns_mode */
	char forward[DNS_FORWARD_MAX][64];	/* "ADDR" or "ADDR@PORT" */
	int nforward;
	unsigned max_inflight;		/* 0: 4096 */
	int max_negative_ttl;		/* seconds "no such name" stays cached */
	unsigned timeout_ms;		/* dns-timeout: libunbound's own timers
					 * wait this long for a server (0: 5s) */
};

/* record types moat asks for */
#define DNS_T_A		1
#define DNS_T_NS	2
#define DNS_T_CNAME	5
#define DNS_T_SOA	6
#define DNS_T_PTR	12
#define DNS_T_MX	15
#define DNS_T_TXT	16
#define DNS_T_AAAA	28
#define DNS_T_SPF	99

enum dns_status {
	DNS_OK = 0,		/* records of the type: n >= 1 */
	DNS_NODATA,		/* the name exists, no record of the type */
	DNS_NXDOMAIN,		/* no such name */
	DNS_TEMPERROR		/* SERVFAIL, REFUSED, timeout, garbage, overload */
};

struct dns_answer {
	enum dns_status status;
	int rrtype;
	int rcode;		/* the DNS rcode, when a server answered */
	int ttl;
	int n;			/* records */
	char **data;		/* rdata in wire form, names uncompressed */
	int *len;
	const char *why;	/* DNS_TEMPERROR: "timeout", "servfail", ... */
};

typedef void (*dns_cb)(void *ctx, uint64_t tag, const struct dns_answer *a);

struct dns_loop;

int dns_init(const struct dns_conf *c, char **err);
bool dns_ready(void);
void dns_shutdown(void);
const char *dns_mode_name(int mode);

struct dns_loop *dns_loop_new(struct event_base *base);
void dns_loop_free(struct dns_loop *l);
int dns_query(struct dns_loop *l, const char *name, int rrtype, unsigned timeout_ms,
	dns_cb cb, void *ctx, uint64_t tag);

int dns_query_sync(const char *name, int rrtype, unsigned timeout_ms, struct dns_answer **out);
void dns_answer_free(struct dns_answer *a);

/* Cache-only mode, for this thread: dns_query_sync answers from the front
 * cache, and a name not there is a DNS_TEMPERROR ("not-cached") at once,
 * remembered by dns_sync_missed(). An event loop runs a check this way
 * when its answers are likely cached (a library that asks synchronously
 * then never waits) and sends it to the work pool when one was missing,
 * or asks for the first name it missed (dns_sync_missed_name: its name
 * and type) with dns_query and runs the check again once it is cached. */
void dns_sync_cache_only(bool on);
bool dns_sync_missed(void);
bool dns_sync_missed_name(char *name, size_t size, int *rrtype);
/* Is a live answer (valid a second longer at least) in the front cache? */
bool dns_cached(const char *name, int rrtype);

/* Queries answered, failed and refused since start (for stats). */
void dns_counters(uint64_t *sent, uint64_t *temperror, uint64_t *refused);

/* Helpers over rdata. Each returns -1 when the record is malformed. */
int dns_rr_a(const struct dns_answer *a, int i, unsigned char out[4]);
int dns_rr_aaaa(const struct dns_answer *a, int i, unsigned char out[16]);
/* a domain name in rdata at off (PTR, CNAME, NS: off 0; MX: off 2) as
 * text, lower case, no trailing dot */
int dns_rr_name(const struct dns_answer *a, int i, int off, char *out, size_t size);
/* TXT: the character-strings concatenated (RFC 7208 3.3); -1 when over size */
int dns_rr_txt(const struct dns_answer *a, int i, char *out, size_t size);

/* The reverse name of an address: "4.3.2.1" or the 32 nibbles of IPv6,
 * followed by ".suffix" when suffix is not NULL. -1 when over size. */
int dns_reverse_name(int family, const void *addr, const char *suffix, char *out, size_t size);

#endif
