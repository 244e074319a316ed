/*
 * dnsbl - DNS block and allow lists (DNSBL, DNSWL, RHSBL): zones from the
 * policy file, the names to query, what an answer means, and each
 * zone's health
 *
 * SYNOPSIS (policy file; one statement, a block may span lines)
 *	dnsbl ZONE [name NAME] [key "KEY"] [type ip|helo|client-name|sender-domain]
 *	           [weight N] [codes RANGE ...] [reply "TEXT"] [probe yes|no]
 *	           [{ code RANGE ... weight N [reply "TEXT"] ... }]
 *	dnswl ZONE ...	(the same; weights are zero or negative, default -1)
 *
 *	RANGE is 127.0.0.2, 127.0.0.2-127.0.0.11 or 127.0.0.0/24. Without
 *	codes and without a block, any answer in 127.0.0.0/8 lists the
 *	client with the zone's weight (default 1 for dnsbl). With codes,
 *	only those answers do. With a block, each code line that matches one
 *	of the answers adds its weight (once), as postscreen's
 *	"zone=127.0.0.[2..11]*3" entries do, and its reply text is the one
 *	used for the zone when it is the heaviest match.
 *
 *	An answer outside 127.0.0.0/8, or in 127.255.255.0/24 (the "query
 *	refused", "typing error" and "excessive use" codes of public lists),
 *	is an error, never a listing: logged once per zone and counted.
 *
 *	KEY is a per-customer key that goes in front of the zone in queries
 *	(Spamhaus DQS: KEY.zen.dq.spamhaus.net). It never appears in SMTP
 *	replies or logs: they name a zone by NAME, which defaults to ZONE.
 *
 *	type: ip queries the client address (reversed octets, or the 32
 *	nibbles of an IPv6 address); helo, client-name (the forward-
 *	confirmed name) and sender-domain query that domain (RHSBL).
 *
 *	probe (default yes): RFC 5782 section 5 test points. An IP list must
 *	list 127.0.0.2 and must not list 127.0.0.1; a domain list must list
 *	"test" and must not list "invalid". A zone that fails is disabled
 *	(not queried, a log line at warn) until it passes again.
 */
#ifndef MOAT_DNSBL_H
#define MOAT_DNSBL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "lex.h"

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

typedef void (*dnsbl_err_fn)(void *arg, int line, int col, const char *msg);

/* dnsbl_parse - one dnsbl/dnswl statement; kw is that word. Errors go
 * through err() with line and column; returns 0 or -1. */
int dnsbl_parse(struct dnsbl_set *set, struct lexer *lx, const struct lex_token *kw,
	dnsbl_err_fn err, void *arg);
void dnsbl_set_free(struct dnsbl_set *set);
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
