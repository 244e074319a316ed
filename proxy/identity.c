/*
 * identity - XCLIENT and PROXY protocol headers (see identity.h)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "identity.h"
#include "smtp_parse.h"

/* ident_addr - family, text and port of an address; IPv4-mapped as IPv4 */
static int
ident_addr(const struct sockaddr *sa, char *text, size_t size, unsigned *port,
	unsigned char raw[16])
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, text, (socklen_t)size);
		*port = ntohs(sin->sin_port);
		if (raw)
			memcpy(raw, &sin->sin_addr, 4);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		*port = ntohs(sin6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			inet_ntop(AF_INET, sin6->sin6_addr.s6_addr + 12, text, (socklen_t)size);
			if (raw)
				memcpy(raw, sin6->sin6_addr.s6_addr + 12, 4);
			return AF_INET;
		}
		inet_ntop(AF_INET6, &sin6->sin6_addr, text, (socklen_t)size);
		if (raw)
			memcpy(raw, &sin6->sin6_addr, 16);
		return AF_INET6;
	}
	return -1;
}

/* ident_proxy_v1 - "PROXY TCP4 src dst sport dport\r\n" */
int
ident_proxy_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out, size_t size)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	unsigned sp, dp;
	int fs = ident_addr(src, s, sizeof(s), &sp, NULL);
	int fd = ident_addr(dst, d, sizeof(d), &dp, NULL);
	int n;

	if (fs < 0 || fs != fd)
		n = snprintf(out, size, "PROXY UNKNOWN\r\n");
	else
		n = snprintf(out, size, "PROXY %s %s %s %u %u\r\n",
		    fs == AF_INET ? "TCP4" : "TCP6", s, d, sp, dp);
	if (n < 0 || (size_t)n >= size || n > IDENT_PROXY_V1_MAX)
		return -1;
	return n;
}

/* ident_proxy_v2 - the binary header, PROXY command over TCP */
int
ident_proxy_v2(const struct sockaddr *src, const struct sockaddr *dst,
	unsigned char *out, size_t size)
{
	static const unsigned char sig[12] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
	};
	char t[INET6_ADDRSTRLEN];
	unsigned char sraw[16], draw[16];
	unsigned sp, dp;
	int fs = ident_addr(src, t, sizeof(t), &sp, sraw);
	int fd = ident_addr(dst, t, sizeof(t), &dp, draw);
	size_t alen, n = 16;

	if (fs < 0 || fs != fd)
		return -1;
	alen = fs == AF_INET ? 12 : 36;
	if (size < 16 + alen)
		return -1;
	memcpy(out, sig, 12);
	out[12] = 0x21;				/* version 2, PROXY */
	out[13] = fs == AF_INET ? 0x11 : 0x21;	/* TCP over IPv4 / IPv6 */
	out[14] = (unsigned char)(alen >> 8);
	out[15] = (unsigned char)alen;
	memcpy(out + n, sraw, fs == AF_INET ? 4 : 16);
	n += fs == AF_INET ? 4 : 16;
	memcpy(out + n, draw, fs == AF_INET ? 4 : 16);
	n += fs == AF_INET ? 4 : 16;
	out[n++] = (unsigned char)(sp >> 8);
	out[n++] = (unsigned char)sp;
	out[n++] = (unsigned char)(dp >> 8);
	out[n++] = (unsigned char)dp;
	return (int)n;
}

/* ident_offered - is this attribute in the upstream's XCLIENT list? */
static bool
ident_offered(const char *offered, size_t olen, const char *attr)
{
	size_t alen = strlen(attr), i = 0;

	while (i < olen) {
		while (i < olen && offered[i] == ' ')
			i++;
		size_t start = i;
		while (i < olen && offered[i] != ' ')
			i++;
		if (i - start == alen && strncasecmp(offered + start, attr, alen) == 0)
			return true;
	}
	return false;
}

/* ident_put - append " NAME=xtext(value)" */
static int
ident_put(char *out, size_t size, size_t *n, const char *name, const char *val, size_t vlen)
{
	int r = snprintf(out + *n, size - *n, " %s=", name);

	if (r < 0 || (size_t)r >= size - *n)
		return -1;
	*n += (size_t)r;
	r = smtp_xtext_encode((const unsigned char *)val, vlen, out + *n, size - *n);
	if (r < 0)
		return -1;
	*n += (size_t)r;
	return 0;
}

/* ident_xclient - "XCLIENT NAME=.. ADDR=.. PORT=.. PROTO=.. HELO=..\r\n" */
int
ident_xclient(const char *offered, size_t olen, const struct ident_client *c,
	char *out, size_t size)
{
	char a[INET6_ADDRSTRLEN + 8], d[INET6_ADDRSTRLEN + 8], num[16];
	unsigned sp, dp;
	size_t n = 7;
	int fs, fd;
	const char *helo = "[UNAVAILABLE]";
	size_t hlen = 13;

	if (size < 16)
		return -1;
	memcpy(out, "XCLIENT", 7);
	fs = ident_addr(c->src, a + 5, sizeof(a) - 5, &sp, NULL);
	fd = ident_addr(c->dst, d + 5, sizeof(d) - 5, &dp, NULL);
	if (fs < 0)
		return -1;
	if (ident_offered(offered, olen, "NAME")) {
		const char *nm = c->name ? c->name : "[UNAVAILABLE]";
		if (ident_put(out, size, &n, "NAME", nm, strlen(nm)) != 0)
			return -1;
	}
	if (ident_offered(offered, olen, "ADDR")) {
		const char *v = a + 5;
		if (fs == AF_INET6) {
			memcpy(a, "IPV6:", 5);
			v = a;
		}
		if (ident_put(out, size, &n, "ADDR", v, strlen(v)) != 0)
			return -1;
	}
	if (ident_offered(offered, olen, "PORT")) {
		snprintf(num, sizeof(num), "%u", sp);
		if (ident_put(out, size, &n, "PORT", num, strlen(num)) != 0)
			return -1;
	}
	if (ident_offered(offered, olen, "PROTO")) {
		const char *p = c->esmtp ? "ESMTP" : "SMTP";
		if (ident_put(out, size, &n, "PROTO", p, strlen(p)) != 0)
			return -1;
	}
	if (ident_offered(offered, olen, "HELO")) {
		if (c->helo != NULL && smtp_helo_valid(c->helo, c->helolen)) {
			helo = c->helo;
			hlen = c->helolen;
		}
		if (ident_put(out, size, &n, "HELO", helo, hlen) != 0)
			return -1;
	}
	if (c->login != NULL && ident_offered(offered, olen, "LOGIN")) {
		if (ident_put(out, size, &n, "LOGIN", c->login, strlen(c->login)) != 0)
			return -1;
	}
	if (fd > 0 && ident_offered(offered, olen, "DESTADDR")) {
		const char *v = d + 5;
		if (fd == AF_INET6) {
			memcpy(d, "IPV6:", 5);
			v = d;
		}
		if (ident_put(out, size, &n, "DESTADDR", v, strlen(v)) != 0)
			return -1;
	}
	if (fd > 0 && ident_offered(offered, olen, "DESTPORT")) {
		snprintf(num, sizeof(num), "%u", dp);
		if (ident_put(out, size, &n, "DESTPORT", num, strlen(num)) != 0)
			return -1;
	}
	if (n + 3 > size)
		return -1;
	out[n++] = '\r';
	out[n++] = '\n';
	out[n] = 0;
	return (int)n;
}
