/*
 * dnsname - names for reverse lookups (see dns.h: dns_reverse_name);
 * pure, so that the DNSBL parser's fuzz target links it alone
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "dns.h"

int
dns_reverse_name(int family, const void *addr, const char *suffix, char *out, size_t size)
{
	const unsigned char *b = addr;
	size_t o = 0;
	int r;

	if (family == AF_INET) {
		r = snprintf(out, size, "%u.%u.%u.%u", b[3], b[2], b[1], b[0]);
		if (r < 0 || (size_t)r >= size)
			return -1;
		o = (size_t)r;
	} else {
		static const char hex[] = "0123456789abcdef";

		if (size < 64)
			return -1;
		for (int i = 15; i >= 0; i--) {
			out[o++] = hex[b[i] & 15];
			out[o++] = '.';
			out[o++] = hex[b[i] >> 4];
			out[o++] = '.';
		}
		out[--o] = '\0';
	}
	if (suffix != NULL && suffix[0] != '\0') {
		r = snprintf(out + o, size - o, ".%s", suffix);
		if (r < 0 || (size_t)r >= size - o)
			return -1;
		o += (size_t)r;
	}
	return (int)o;
}
