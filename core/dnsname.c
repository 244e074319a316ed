/*
 * dnsname - names for reverse lookups and the readers of answer records
 * (see dns.h: dns_reverse_name, dns_rr_*);
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

int
dns_rr_a(const struct dns_answer *a, int i, unsigned char out[4])
{
	if (i < 0 || i >= a->n || a->len[i] != 4)
		return -1;
	memcpy(out, a->data[i], 4);
	return 0;
}

int
dns_rr_aaaa(const struct dns_answer *a, int i, unsigned char out[16])
{
	if (i < 0 || i >= a->n || a->len[i] != 16)
		return -1;
	memcpy(out, a->data[i], 16);
	return 0;
}

int
dns_rr_name(const struct dns_answer *a, int i, int off, char *out, size_t size)
{
	const unsigned char *p;
	size_t n, o = 0;
	int pos;

	if (i < 0 || i >= a->n || off < 0 || size == 0)
		return -1;
	p = (const unsigned char *)a->data[i];
	n = (size_t)a->len[i];
	pos = off;
	for (;;) {
		size_t lab;

		if ((size_t)pos >= n)
			return -1;
		lab = p[pos++];
		if (lab == 0)
			break;
		if (lab > 63 || (size_t)pos + lab > n)
			return -1;	/* compression is not allowed here */
		if (o != 0) {
			if (o + 1 >= size)
				return -1;
			out[o++] = '.';
		}
		if (o + lab >= size)
			return -1;
		for (size_t k = 0; k < lab; k++) {
			unsigned char ch = p[pos + (int)k];

			if (ch >= 'A' && ch <= 'Z')
				ch = (unsigned char)(ch - 'A' + 'a');
			out[o++] = (char)ch;
		}
		pos += (int)lab;
	}
	out[o] = '\0';
	return (int)o;
}

int
dns_rr_txt(const struct dns_answer *a, int i, char *out, size_t size)
{
	const unsigned char *p;
	size_t n, pos = 0, o = 0;

	if (i < 0 || i >= a->n || size == 0)
		return -1;
	p = (const unsigned char *)a->data[i];
	n = (size_t)a->len[i];
	while (pos < n) {
		size_t sl = p[pos++];

		if (pos + sl > n || o + sl >= size)
			return -1;
		memcpy(out + o, p + pos, sl);
		o += sl;
		pos += sl;
	}
	out[o] = '\0';
	return (int)o;
}
