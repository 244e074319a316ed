/*
 * glcache - a short local memory of greylist passes, in front of Redis
 * SYNOPSIS
 *	struct glcache *glcache_new(unsigned slots);
 *	void glcache_put(struct glcache *c, const char *key, int64_t until,
 *	                 unsigned passes);
 *	bool glcache_get(struct glcache *c, const char *key, int64_t now,
 *	                 unsigned *passes);
 *	void glcache_clear(struct glcache *c);
 *	unsigned glcache_count(const struct glcache *c, int64_t now);
 *	void glcache_free(struct glcache *c);
 * DESCRIPTION
 *	A busy MX sees the same senders all day: a mailing list, a partner,
 *	a client Redis has already allowlisted. With greylist-cache set,
 *	a greylist handle (one per event loop, so no lock) remembers for that
 *	long the decisions that can only be "pass" for a while: a triplet
 *	that passed (key "t:...") and an allowlisted client ("c:..."). A hit
 *	answers without a Redis round trip; a miss asks Redis as before.
 *	Only passes are remembered: a greylisted or new triplet, or an error,
 *	always goes to Redis, so the delay and the counts of first passes
 *	(which make auto-allowlisting) are Redis's alone. What the memory
 *	skips is the lifetime refresh of records that stay valid for days.
 *
 *	The table is direct-mapped: slots (a power of two, at least 64)
 *	entries, a key's slot chosen by SipHash under a random key picked at
 *	glcache_new(), so a sender cannot aim its triplets at one slot; a new
 *	key takes its slot's place. Memory is bounded by slots times
 *	(GLSTORE_KEY_MAX + 32) bytes at most.
 *
 *	glcache_put() remembers key until the wall-clock second until
 *	(exclusive), with the client's pass count for the verdict;
 *	glcache_get() is true when key is remembered and now < until, and
 *	gives passes back (may be NULL). glcache_clear() drops all. glcache_count() counts live entries
 *	(tests, stats). glcache_free(NULL) is a no-op.
 */
#ifndef MOAT_GLCACHE_H
#define MOAT_GLCACHE_H

#include <stdbool.h>
#include <stdint.h>

struct glcache;

struct glcache *glcache_new(unsigned slots);
void glcache_put(struct glcache *c, const char *key, int64_t until, unsigned passes);
bool glcache_get(struct glcache *c, const char *key, int64_t now, unsigned *passes);
void glcache_clear(struct glcache *c);
unsigned glcache_count(const struct glcache *c, int64_t now);
void glcache_free(struct glcache *c);

#endif
