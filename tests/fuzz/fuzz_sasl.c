// sources: proxy/sasl.c
/*
 * fuzz_sasl - libFuzzer harness for the AUTH exchange parser (proxy/sasl.c:
 * mechanism names, strict base64, the login named by a client message)
 *
 * Input: byte 0 picks the mechanism (low 3 bits: PLAIN, LOGIN, CRAM-MD5,
 * SCRAM, NONE) and the step (next 2 bits); the rest is one line of the
 * exchange as the client sent it (base64), which is also tried as a
 * mechanism name and, raw, as a decoded client message.
 *
 * Properties (abort() on a violation):
 *   - sasl_mech_find() agrees with a plain reference;
 *   - sasl_b64_decode() accepts only lengths that are multiples of 4 (or
 *     "=") and alphabet bytes, never writes past its buffer (a buffer cut
 *     short fails, never overflows), and what it decodes encodes back to
 *     a string that decodes to the same bytes, of the input's length;
 *   - sasl_login() returns -1, 0 or 1; on 1 the login is NUL-terminated,
 *     1..SASL_LOGIN_MAX bytes, with no byte <= 0x20 or 0x7f, and appears
 *     in the message (for SCRAM with ',' and '=' written as =2C and =3D);
 *     it never reads past len (ASan) and never writes past size.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ref_mech - what sasl_mech_find() must say */
static enum sasl_mech
ref_mech(const char *p, size_t n)
{
	if (n == 5 && strncasecmp(p, "PLAIN", 5) == 0)
		return SASL_PLAIN;
	if (n == 5 && strncasecmp(p, "LOGIN", 5) == 0)
		return SASL_LOGIN;
	if (n == 8 && strncasecmp(p, "CRAM-MD5", 8) == 0)
		return SASL_CRAM_MD5;
	if (n < 7 || n > 20 || strncasecmp(p, "SCRAM-", 6) != 0)
		return SASL_NONE;
	for (size_t i = 6; i < n; i++)
		if (!(p[i] == '-' || (p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'Z') ||
		    (p[i] >= 'a' && p[i] <= 'z')))
			return SASL_NONE;
	return SASL_SCRAM;
}

/* encode - base64 with padding; returns the length */
static size_t
encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? b64[v & 63] : '=';
	}
	return o;
}

/* contains - is needle (len nl) inside hay (len hl)? */
static bool
contains(const unsigned char *hay, size_t hl, const unsigned char *needle, size_t nl)
{
	if (nl > hl)
		return false;
	for (size_t i = 0; i + nl <= hl; i++)
		if (memcmp(hay + i, needle, nl) == 0)
			return true;
	return false;
}

/* check_login - sasl_login() on msg, and what its answer must be */
static void
check_login(enum sasl_mech m, unsigned step, const unsigned char *msg, size_t len)
{
	char login[SASL_LOGIN_MAX + 1 + 8];
	unsigned char esc[SASL_LOGIN_MAX * 3];
	size_t ln, e = 0;
	int r;

	memset(login, 'X', sizeof(login));
	r = sasl_login(m, step, msg, len, login, SASL_LOGIN_MAX + 1);
	if (r < -1 || r > 1)
		abort();
	for (size_t i = SASL_LOGIN_MAX + 1; i < sizeof(login); i++)
		if (login[i] != 'X')
			abort();	/* wrote past size */
	if (r != 1)
		return;
	ln = strnlen(login, SASL_LOGIN_MAX + 1);
	if (ln == 0 || ln > SASL_LOGIN_MAX)
		abort();
	for (size_t i = 0; i < ln; i++) {
		unsigned char c = (unsigned char)login[i];
		if (c <= 0x20 || c == 0x7f)
			abort();
		if (m == SASL_SCRAM && (c == ',' || c == '=')) {
			esc[e++] = '=';
			esc[e++] = c == ',' ? '2' : '3';
			esc[e++] = c == ',' ? 'C' : 'D';
		} else {
			esc[e++] = c;
		}
	}
	if (!contains(msg, len, esc, e))
		abort();
	if (m == SASL_NONE)
		abort();	/* no mechanism names a login */
	/* a buffer one byte short fails rather than cut the login */
	if (sasl_login(m, step, msg, len, login, ln) != -1)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum sasl_mech mechs[8] = { SASL_PLAIN, SASL_LOGIN, SASL_CRAM_MD5,
	    SASL_SCRAM, SASL_NONE, SASL_PLAIN, SASL_LOGIN, SASL_SCRAM };
	enum sasl_mech m;
	unsigned step;
	const char *line;
	size_t len;
	unsigned char *dec, *dec2;
	char *enc;
	int n, n2;

	if (size < 1 || size > SASL_LINE_MAX + 1)
		return 0;
	m = mechs[data[0] & 7];
	step = (unsigned)(data[0] >> 3) & 3;
	line = (const char *)data + 1;
	len = size - 1;

	if (sasl_mech_find(line, len) != ref_mech(line, len))
		abort();

	/* the decoded message gets its own allocation: ASan sees over-reads */
	dec = malloc(len + 1);
	if (dec == NULL)
		return 0;
	n = sasl_b64_decode(line, len, dec, len);
	if (n >= 0) {
		if (!(len == 1 && line[0] == '=') && (len % 4 != 0 || (size_t)n > len / 4 * 3 ||
		    (size_t)n + 2 < len / 4 * 3))
			abort();
		for (size_t i = 0; i < len; i++)
			if (line[i] != '=' && memchr(b64, line[i], 64) == NULL)
				abort();
		if (n > 0) {
			unsigned char *exact = malloc((size_t)n);
			if (exact == NULL)
				abort();
			if (sasl_b64_decode(line, len, exact, (size_t)n) != n ||
			    memcmp(exact, dec, (size_t)n) != 0)
				abort();
			if (sasl_b64_decode(line, len, exact, (size_t)n - 1) != -1)
				abort();	/* too small a buffer must fail */
			free(exact);
			enc = malloc(len + 4);
			dec2 = malloc(len + 4);
			if (enc == NULL || dec2 == NULL)
				abort();
			size_t el = encode(dec, (size_t)n, enc);
			if (el != len)
				abort();
			n2 = sasl_b64_decode(enc, el, dec2, len + 4);
			if (n2 != n || memcmp(dec2, dec, (size_t)n) != 0)
				abort();
			free(enc);
			free(dec2);
		}
		{
			unsigned char *msg = malloc(n > 0 ? (size_t)n : 1);
			if (msg == NULL)
				abort();
			memcpy(msg, dec, (size_t)n);
			check_login(m, step, msg, (size_t)n);
			free(msg);
		}
	}
	free(dec);

	/* the raw bytes as a decoded message too: the parser's worst input */
	{
		unsigned char *raw = malloc(len ? len : 1);
		if (raw == NULL)
			abort();
		memcpy(raw, line, len);
		check_login(m, step, raw, len);
		free(raw);
	}
	return 0;
}
