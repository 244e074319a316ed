/*
 * siphash - SipHash-2-4, a keyed hash for tables whose keys come from
 * peers (a random key per table: no one can aim at one bucket)
 *
 *	uint64_t siphash24(uint64_t k0, uint64_t k1, const void *in, size_t len);
 *	void siphash_key(uint64_t *k0, uint64_t *k1);
 *
 * siphash_key() draws a table's key from getrandom(2) (the clock, the
 * pid and where the key lives, when the kernel will not give one).
 */
#ifndef MOAT_SIPHASH_H
#define MOAT_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t siphash24(uint64_t k0, uint64_t k1, const void *in, size_t len);
void siphash_key(uint64_t *k0, uint64_t *k1);

#endif
