/*
 * idn - internationalised domain names to their A-label (xn--) form,
 * through libidn2 (IDNA2008, UTS #46 non-transitional processing)
 *
 * SYNOPSIS
 *	#include "idn.h"
 *
 *	int idn_alabel(const char *in, size_t len, char *out, size_t size);
 *	bool idn_needs(const char *in, size_t len);
 *
 * DESCRIPTION
 *	idn_alabel() writes the A-label form of the domain in[0..len) into
 *	out (NUL-terminated) and returns its length. A name that
 *	idn_needs() says nothing about (ASCII only, no label starting with
 *	"xn--") is copied as it is, byte for byte (the caller lower-cases
 *	and checks host-name syntax as before). Otherwise libidn2 maps it
 *	(UTS #46 non-transitional, NFC, lower case: "Faß.de" is
 *	"xn--fa-hia.de") and checks every label, A-labels included: an
 *	invalid xn-- label is refused, never passed on. Returns
 *	IDN_INVALID for bytes that are not UTF-8, an embedded NUL, a
 *	code point IDNA2008 disallows, bad Punycode, or any other IDNA
 *	error; IDN_TOOLONG when the result does not fit in size or the
 *	input is over IDN_INPUT_MAX bytes. out is then "".
 *
 *	idn_needs() is true when in has a byte over 0x7f or a label that
 *	starts with "xn--" (any case).
 *
 * THREADS AND MEMORY
 *	Pure; thread-safe (libidn2 keeps no state); nothing to free.
 */
#ifndef MOAT_IDN_H
#define MOAT_IDN_H

#include <stdbool.h>
#include <stddef.h>

#define IDN_INPUT_MAX	1024
#define IDN_INVALID	(-1)
#define IDN_TOOLONG	(-2)

int idn_alabel(const char *in, size_t len, char *out, size_t size);
bool idn_needs(const char *in, size_t len);

#endif
