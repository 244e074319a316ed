/*
 * siphash - SipHash-2-4 (Aumasson and Bernstein), see siphash.h
 */
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "siphash.h"

/* siphash_key - see siphash.h */
void
siphash_key(uint64_t *k0, uint64_t *k1)
{
	if (getrandom(k0, sizeof(*k0), 0) != (ssize_t)sizeof(*k0) ||
	    getrandom(k1, sizeof(*k1), 0) != (ssize_t)sizeof(*k1)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		*k0 = ((uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)k0) * 0x9e3779b97f4a7c15ULL;
		*k1 = ((uint64_t)getpid() ^ (uint64_t)ts.tv_sec) * 0xc2b2ae3d27d4eb4fULL;
	}
}

static inline uint64_t
rotl(uint64_t v, int n)
{
	return (v << n) | (v >> (64 - n));
}

#define SIPROUND do { \
	v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32); \
	v2 += v3; v3 = rotl(v3, 16); v3 ^= v2; \
	v0 += v3; v3 = rotl(v3, 21); v3 ^= v0; \
	v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32); \
} while (0)

uint64_t
siphash24(uint64_t k0, uint64_t k1, const void *in, size_t len)
{
	const unsigned char *p = in;
	uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
	uint64_t m, last = (uint64_t)len << 56;
	size_t i, full = len - len % 8;

	for (i = 0; i < full; i += 8) {
		m = 0;
		for (int j = 7; j >= 0; j--)
			m = (m << 8) | p[i + (size_t)j];
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t j = 0; j < len % 8; j++)
		last |= (uint64_t)p[full + j] << (8 * j);
	v3 ^= last;
	SIPROUND;
	SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	for (int r = 0; r < 4; r++)
		SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}
