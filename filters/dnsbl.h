/*
 * dnsbl - DNS block and allow lists (DNSBL, DNSWL, RHSBL): the zones, the
 * names to query, what an answer means, and each zone's health
 *
 * DESCRIPTION
 *	A struct dnsbl_set holds the zones of the policy file's dnsbl and
 *	dnswl statements; policy/conf_dnsbl.c parses them (the grammar is in
 *	conf_dnsbl.h) and this module runs them.
 *
 *	An answer outside 127.0.0.0/8, or in 127.255.255.0/24 (the "query
 *	refused", "typing error" and "excessive use" codes of public lists),
 *	is an error, never a listing: logged once per zone and counted.
 *	A zone's key never appears in SMTP replies or logs: they name a zone
 *	by its name. A zone with probes on that fails its RFC 5782 test
 *	points is disabled (not queried, a log line at warn) until it passes
 *	again.
 */
#ifndef MOAT_DNSBL_H
#define MOAT_DNSBL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#define DNSBL_ZONES_MAX 32
#define DNSBL_CODES_MAX 32
#define DNSBL_NAME_MAX 64

enum dnsbl_type { DNSBL_T_IP = 0, DNSBL_T_HELO, DNSBL_T_NAME, DNSBL_T_SENDER, DNSBL_T__COUNT };

struct dnsbl_code {
	uint32_t lo[8], hi[8];	/* ranges, host byte order */
	int nr;
	int64_t weight;
	char *reply;
};

struct dnsbl_zone {
	char *name;		/* in logs, replies and rules */
	char *zone;		/* queried: [KEY.]ZONE */
	char *key;		/* secret, or NULL */
	int type;		/* enum dnsbl_type */
	bool allow;		/* dnswl */
	bool probe;
	int64_t weight;
	char *reply;
	uint32_t clo[8], chi[8];	/* codes RANGE...: what counts */
	int nc;
	struct dnsbl_code *codes;	/* the block's code lines */
	int ncodes;
	int line;		/* where it was defined */
};

struct dnsbl_set {
	struct dnsbl_zone z[DNSBL_ZONES_MAX];
	int n;
	unsigned types;		/* 1 << enum dnsbl_type present */
};

/* dnsbl_set_free - the set and every zone in it; NULL is a no-op */
void dnsbl_set_free(struct dnsbl_set *set);
/* dnsbl_zone_free - the strings and code lines a zone owns; zeroes it */
void dnsbl_zone_free(struct dnsbl_zone *z);
/* dnsbl_domain_ok - letters, digits, '-', '_', dots between labels of at
 * most 63; no leading or trailing dot or hyphen; 1 to max bytes */
bool dnsbl_domain_ok(const char *s, size_t len, size_t max);
const char *dnsbl_type_name(int type);

/* dnsbl_query_name - the name to look up for a zone: the reversed
 * address (family AF_INET/AF_INET6, addr its bytes) for ip zones, the
 * domain for the others. -1 when it cannot be formed (too long, empty). */
int dnsbl_query_name(const struct dnsbl_zone *z, int family, const void *addr,
	const char *domain, char *out, size_t size);

enum dnsbl_verdict { DNSBL_V_CLEAR = 0, DNSBL_V_LISTED, DNSBL_V_ERROR };

struct dnsbl_eval {
	enum dnsbl_verdict v;
	int64_t weight;
	const char *reply;	/* borrowed from the zone, or NULL */
	uint32_t code;		/* the first answer that counted, or the bad one */
};

/* dnsbl_eval_answer - what the A records (host order) of an answer mean */
void dnsbl_eval_answer(const struct dnsbl_zone *z, const uint32_t *a, int n,
	struct dnsbl_eval *out);

/* Per-session results. */
enum dnsbl_zstate { DZ_NONE = 0, DZ_PENDING, DZ_DONE, DZ_SKIPPED };

struct dnsbl_zres {
	unsigned char state;	/* enum dnsbl_zstate */
	unsigned char verdict;	/* enum dnsbl_verdict; DNSBL_V_ERROR also for temperror */
	bool temp;		/* the lookup failed (timeout, servfail) */
	int64_t weight;
	const char *reply;
	uint32_t code;
};

struct dnsbl_sess {
	struct dnsbl_zres r[DNSBL_ZONES_MAX];
	int pending;
};

struct dnsbl_summary {
	int64_t score;		/* the weights of every listed zone */
	bool error;		/* some lookup failed or gave a bad answer */
	char hits[512];		/* names of listing zones, comma-separated */
	const char *reply;	/* the heaviest listing's reply, or NULL */
	const char *top;	/* its zone name */
};

void dnsbl_summarise(const struct dnsbl_set *set, const struct dnsbl_sess *s,
	struct dnsbl_summary *out);
/* Running a session's zones (the front-ends share these): send(arg,
 * name, zone, gen) queries an A record and returns 0, or -1 when it could
 * not be sent (a temporary error at once). The answer goes to
 * dnsbl_sess_answer() when gen[zone] is still the one sent. */
struct dns_answer;
struct sockaddr;
typedef int (*dnsbl_send_fn)(void *arg, const char *name, int zone, unsigned short gen);
int dnsbl_client_addr(const struct sockaddr *sa, unsigned char addr[16]);
void dnsbl_sess_start(const struct dnsbl_set *set, struct dnsbl_sess *dz, unsigned short *gen,
	int type, const struct sockaddr *client, const char *domain,
	dnsbl_send_fn send, void *arg, uint64_t sid);
void dnsbl_sess_answer(const struct dnsbl_set *set, struct dnsbl_sess *dz, int i,
	const struct dns_answer *a, uint64_t sid);
void dnsbl_sess_set(const struct dnsbl_set *set, struct dnsbl_sess *dz, int i,
	const struct dnsbl_eval *e, bool temp, uint64_t sid);

/* does the comma list of hits hold this name? */
bool dnsbl_hits_has(const char *hits, const char *name, size_t len);

/* Health of a zone, shared by the whole process and kept across
 * reloads (by name). */
bool dnsbl_zone_enabled(const struct dnsbl_zone *z);
/* a probe's outcome: listed_ok (the test point was listed), unlisted_ok
 * (the other was not); temp: a lookup failed, which changes nothing */
void dnsbl_probe_result(const struct dnsbl_zone *z, bool listed_ok, bool unlisted_ok, bool temp);
/* a bad answer (outside 127/8, 127.255.255.x): logged once per zone */
void dnsbl_note_error(const struct dnsbl_zone *z, uint64_t sid, uint32_t code);
void dnsbl_counters(const struct dnsbl_zone *z, uint64_t *queries, uint64_t *listed,
	uint64_t *errors, uint64_t *temperrors);
void dnsbl_count(const struct dnsbl_zone *z, const struct dnsbl_eval *e, bool temp);
/* a "stats dnsbl" log line when the counters moved (one thread only) */
void dnsbl_log_stats(const struct dnsbl_zone *z);

#endif
