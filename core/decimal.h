/*
 * decimal - an unsigned number in decimal, without printf
 *
 * SYNOPSIS
 *	size_t dec_u64(char *out, uint64_t v);
 *
 * DESCRIPTION
 *	dec_u64() writes v in decimal at out (at most 20 characters, not
 *	terminated) and returns how many it wrote. For the hot paths that
 *	format numbers per call (the Redis protocol's lengths, the rate
 *	limits' arguments), where snprintf's parsing of a format costs more
 *	than the number.
 */
#ifndef MOAT_DECIMAL_H
#define MOAT_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

static inline size_t
dec_u64(char *out, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

#endif
