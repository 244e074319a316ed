/*
 * siphash - SipHash-2-4, a keyed hash for tables whose keys come from
 * peers (a random key per table: no one can aim at one bucket)
 *
 *	uint64_t siphash24(uint64_t k0, uint64_t k1, const void *in, size_t len);
 */
#ifndef MOAT_SIPHASH_H
#define MOAT_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t siphash24(uint64_t k0, uint64_t k1, const void *in, size_t len);

#endif
