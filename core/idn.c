/*
 * idn - domain names to A-labels with libidn2 (see idn.h)
 */
#include "idn.h"

#include <idn2.h>
#include <stdint.h>
#include <string.h>

bool
idn_needs(const char *in, size_t len)
{
	bool start = true;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c >= 0x80)
			return true;
		if (start && len - i >= 4 && (in[i] | 0x20) == 'x' && (in[i + 1] | 0x20) == 'n' &&
		    in[i + 2] == '-' && in[i + 3] == '-')
			return true;
		start = c == '.';
	}
	return false;
}

int
idn_alabel(const char *in, size_t len, char *out, size_t size)
{
	char buf[IDN_INPUT_MAX + 1];
	char *res = NULL;
	size_t n;

	if (size == 0)
		return IDN_TOOLONG;
	out[0] = '\0';
	if (!idn_needs(in, len)) {
		if (len + 1 > size)
			return IDN_TOOLONG;
		memcpy(out, in, len);
		out[len] = '\0';
		return (int)len;
	}
	if (len > IDN_INPUT_MAX)
		return IDN_TOOLONG;
	if (memchr(in, '\0', len) != NULL)
		return IDN_INVALID;
	memcpy(buf, in, len);
	buf[len] = '\0';
	if (idn2_lookup_u8((const uint8_t *)buf, (uint8_t **)&res,
	    IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK || res == NULL) {
		idn2_free(res);
		return IDN_INVALID;
	}
	n = strlen(res);
	if (n + 1 > size) {
		idn2_free(res);
		return IDN_TOOLONG;
	}
	memcpy(out, res, n + 1);
	idn2_free(res);
	return (int)n;
}
