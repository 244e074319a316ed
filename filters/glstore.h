/*
 * glstore - the embedded greylist store: the greylisting decision in
 * process memory, shared by every worker thread, kept in a file across
 * restarts
 *
 * SYNOPSIS
 *	struct glstore *glstore_open(const char *path, size_t max, int64_t now,
 *	                             char *err, size_t errsize);
 *	struct glstore *glstore_open_ro(const char *path, size_t max, int64_t now,
 *	                                char *err, size_t errsize);
 *	struct glstore *glstore_open_ro(const char *path, size_t max, int64_t now, char *err,
	size_t errsize);
int glstore_save(struct glstore *s, int64_t now, char *err, size_t errsize);
 *	void glstore_close(struct glstore *s);
 *
 *	void glstore_decide(struct glstore *s, const char *ckey, const char *tkey,
 *	                    int64_t now, const struct glstore_params *p,
 *	                    struct gl_decision *d);
 *	void glstore_peek(struct glstore *s, const char *ckey, const char *tkey,
 *	                  int64_t now, const struct glstore_params *p,
 *	                  struct gl_decision *d);
 *	int glstore_control(struct glstore *s, const char *line, char **out);
 *	void glstore_set_defaults(struct glstore *s, int v4_prefix, int v6_prefix,
 *	                          int64_t allow_lifetime);
 *	void glstore_set_clock(struct glstore *s, int64_t (*now)(void *), void *arg);
 *	void glstore_stats(struct glstore *s, struct glstore_stats *st);
 *
 *	int glstore_load_buf(struct glstore *s, const char *buf, size_t len,
 *	                     int64_t now, char *err, size_t errsize);
 *
 *	int glstore_client_net(const struct sockaddr *sa, int v4_prefix, int v6_prefix,
 *	                       char *out, size_t size);
 *	int glstore_client_parse(const char *word, int v4_prefix, int v6_prefix,
 *	                         char *out, size_t size, char *why, size_t whysize);
 *	size_t glstore_escape(char *out, size_t size, const char *in, bool lower);
 *	int glstore_format_record(const char *key, int64_t a, int64_t b, int64_t x,
 *	                          char *out, size_t size);
 *	int glstore_duration(const char *word, uint64_t *ms);
 *
 * DESCRIPTION
 *	Records are keyed by text (see greylist.h, KEYS): "c:{ID}" holds a
 *	client's count of passed retries and, once allowlisted, until when;
 *	"t:{ID}|SENDER|RCPT" holds a triplet's first sighting and whether it
 *	has passed. Each record carries the time it stops counting (x); a
 *	record past it is treated as absent and dropped when met. Times are
 *	wall-clock seconds since the epoch, passed in by the caller (now), so
 *	tests drive the clock.
 *
 *	glstore_decide() runs the same decision as the Lua script of
 *	greylist.c (the two are kept equal; tests/unit/test_redis.c runs one
 *	table of cases through both): an allowlisted client passes and its
 *	allowlisting is extended; a triplet first seen (or past its retry
 *	window) is recorded and greylisted for the delay; a retry before
 *	the delay is greylisted for the seconds left; the first retry after
 *	it passes, the triplet is kept for the record lifetime and the
 *	client's count goes up (at allow_after the client is allowlisted for
 *	allow_lifetime); a triplet that passed before passes again and its
 *	lifetime is renewed. Decisions never fail.
 *
 *	glstore_peek() gives the decision glstore_decide() would give now,
 *	and changes nothing: no record is made, renewed, counted, moved in
 *	the use order or dropped (moatctl explain --live).
 *
 *	THREADS: one store serves the whole process. Every function except
 *	glstore_open/glstore_close takes the store's mutex, so workers call
 *	glstore_decide() from their own threads; each call does a bounded
 *	amount of work (two lookups, at most two evictions, a sweep of four
 *	hash buckets) under the lock.
 *
 *	MEMORY: at most max records (the oldest-used record is evicted to
 *	make room), each at most GLSTORE_KEY_MAX bytes of key plus about 60
 *	bytes, plus one pointer per record for the hash table. Keys hash with
 *	SipHash under a random key chosen at open, so senders cannot aim at
 *	one hash chain.
 *
 *	FILE: glstore_open() loads path when it exists. A file that is not
 *	exactly what glstore_save() writes (header "moat-greylist 1", lines
 *	"KEY A B X", trailer "end COUNT") is refused as a whole: the store
 *	starts empty, err says file:line and why, and the file is renamed to
 *	path.bad so the next save does not destroy it. A missing file is no
 *	error. Any other failure (unreadable, too big) fills err too and the
 *	store starts empty. glstore_open() returns NULL only when max is 0;
 *	the caller logs err when err[0] is not NUL; none of this is fatal.
 *	Expired records are not loaded. glstore_save() writes a temporary
 *	file next to path (mode 0600), fsyncs it and renames it over path,
 *	so a crash leaves either the old or the new file; -1 and err on
 *	failure. path NULL or "" keeps the store in memory only (save is a
 *	no-op).
 *
 *	CONTROL: glstore_control() runs one command line and sets *out to
 *	its reply, lines each ending in "\n", allocated (the caller frees
 *	it, whatever the result); no line starts with ".". It returns 0, or
 *	-1 when the command failed (the reply is one line "error: ...").
 *	    list [N]		the N (default 100) most recently used records,
 *				one line each (glstore_format_record), then
 *				"total N"
 *	    allow ID [DURATION]	allowlist a client (ID: an address, a network
 *				ADDR/LEN with the configured length, spf:DOMAIN
 *				or org:DOMAIN) for DURATION (default: the
 *				configured allow lifetime)
 *	    delete KEY|ID	delete a record ("t:..." or "c:..."), or a
 *				client's record by its ID
 *	    stats		"NAME VALUE" lines
 *	glstore_set_defaults() gives control the key's network lengths and
 *	the allow lifetime (default 24, 64, 36 days).
 *
 *	glstore_client_net() writes a client's network as the greylist key
 *	names it ("192.0.2.0/24", "2001:db8:1:2::/64"; IPv4-mapped IPv6 is
 *	IPv4). glstore_client_parse() normalises an operator's ID the same
 *	way. glstore_escape() copies text for a key: ASCII lower-cased when
 *	lower, every byte outside '!'..'~' and each of "%|{}" as %XX; input
 *	longer than GLSTORE_PART_MAX once escaped is cut and ends in "#" and
 *	16 hex digits of a hash of the whole; it returns the length written
 *	(out is always terminated; size must be > GLSTORE_PART_MAX).
 *	glstore_format_record() writes the "list" line of one record (-1
 *	when it does not fit). glstore_duration() reads a duration: digits
 *	followed by nothing or s (seconds), ms, m, h or d; 0 and *ms, or -1.
 *
 *	glstore_load_buf() is the file parser on its own (fuzzed by
 *	tests/fuzz/fuzz_glstore.c): on success it adds the records to the
 *	store and returns 0; otherwise it leaves the store unchanged,
 *	returns -1 and writes "line N: why" to err.
 */
#ifndef MOAT_GLSTORE_H
#define MOAT_GLSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define GLSTORE_KEY_MAX		1024	/* a key, with its NUL */
#define GLSTORE_PART_MAX	256	/* one escaped key part, without NUL */
#define GLSTORE_ID_MAX		(GLSTORE_PART_MAX + 8)
#define GLSTORE_MAX_DEFAULT	100000

/* Decisions; the numbers are those the Lua script returns. */
enum gl_status { GL_PASS = 0, GL_ALLOWLISTED = 1, GL_GREYLISTED = 2, GL_ERROR = 3 };
enum gl_reason {
	GL_R_NEW = 0,		/* greylisted: first seen (or its window passed) */
	GL_R_EARLY = 1,		/* greylisted: retried before the delay */
	GL_R_RETRIED = 2,	/* passed: the first retry after the delay */
	GL_R_KNOWN = 3,		/* passed: the triplet passed before */
	GL_R_NOW_ALLOWLISTED = 4, /* passed, and the client reached allow_after */
	GL_R_ALLOWLISTED = 5,	/* the client is allowlisted */
	GL_R_ERROR = 6		/* no decision (Redis) */
};

struct gl_decision {
	enum gl_status status;
	enum gl_reason reason;
	unsigned retry_in;	/* GL_GREYLISTED: seconds until a retry may pass */
	unsigned passes;	/* the client's passed retries */
};

struct glstore_params {
	int64_t delay, window, lifetime, allow_lifetime;	/* seconds */
	unsigned allow_after;	/* 0: never allowlist */
};

struct glstore_stats {
	uint64_t records, max, triplets, clients, allowlisted;
	uint64_t inserted, evicted, expired, decisions;
};

struct glstore;

struct glstore *glstore_open(const char *path, size_t max, int64_t now, char *err, size_t errsize);
struct glstore *glstore_open_ro(const char *path, size_t max, int64_t now, char *err,
	size_t errsize);
int glstore_save(struct glstore *s, int64_t now, char *err, size_t errsize);
void glstore_close(struct glstore *s);

void glstore_decide(struct glstore *s, const char *ckey, const char *tkey, int64_t now,
	const struct glstore_params *p, struct gl_decision *d);
void glstore_peek(struct glstore *s, const char *ckey, const char *tkey, int64_t now,
	const struct glstore_params *p, struct gl_decision *d);
int glstore_control(struct glstore *s, const char *line, char **out);
void glstore_set_defaults(struct glstore *s, int v4_prefix, int v6_prefix, int64_t allow_lifetime);
void glstore_set_clock(struct glstore *s, int64_t (*now)(void *), void *arg);
void glstore_stats(struct glstore *s, struct glstore_stats *st);

int glstore_load_buf(struct glstore *s, const char *buf, size_t len, int64_t now,
	char *err, size_t errsize);

int glstore_client_net(const struct sockaddr *sa, int v4_prefix, int v6_prefix, char *out,
	size_t size);
int glstore_client_parse(const char *word, int v4_prefix, int v6_prefix, char *out, size_t size,
	char *why, size_t whysize);
size_t glstore_escape(char *out, size_t size, const char *in, bool lower);
int glstore_format_record(const char *key, int64_t a, int64_t b, int64_t x, char *out,
	size_t size);
int glstore_duration(const char *word, uint64_t *ms);

#endif
