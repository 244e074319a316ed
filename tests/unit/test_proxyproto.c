/*
 * test_proxyproto - the inbound PROXY protocol header parser
 * (core/proxyproto.c)
 */
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"
#include "t.h"

static struct pp_header h;

static int
parse(const char *s, size_t len)
{
	return pp_parse((const unsigned char *)s, len, &h);
}

#define PARSE(lit) parse(lit, sizeof(lit) - 1)

static const char *
src_ip(char *buf, size_t len)
{
	if (h.src.ss_family == AF_INET)
		return inet_ntop(AF_INET, &((struct sockaddr_in *)&h.src)->sin_addr, buf, (socklen_t)len);
	return inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&h.src)->sin6_addr, buf, (socklen_t)len);
}

static unsigned
src_port(void)
{
	if (h.src.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&h.src)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&h.src)->sin6_port);
}

static void
test_v1(void)
{
	char ip[64];
	const char *l = "PROXY TCP4 192.0.2.7 198.51.100.2 40001 25\r\nEHLO x\r\n";
	int n = (int)(strstr(l, "EHLO") - l);

	T_CHECK(parse(l, strlen(l)) == n);
	T_CHECK(h.version == 1 && !h.local);
	T_CHECK(strcmp(src_ip(ip, sizeof(ip)), "192.0.2.7") == 0 && src_port() == 40001);
	for (int k = 0; k < n; k++)
		T_CHECKF(parse(l, (size_t)k) == 0, "prefix %d", k);
	T_CHECK(PARSE("PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n") == 44);
	T_CHECK(strcmp(src_ip(ip, sizeof(ip)), "2001:db8::1") == 0 && src_port() == 0);
	T_CHECK(PARSE("PROXY UNKNOWN\r\n") == 15 && h.local);
	T_CHECK(PARSE("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n") > 0 && h.local);
}

static void
test_v1_bad(void)
{
	char longl[200];

	T_CHECK(PARSE("PROXY TCP4 192.0.2.7 198.51.100.2 40001 25\n") == -1);	/* bare LF */
	T_CHECK(PARSE("PROXY TCP4 2001:db8::1 198.51.100.2 1 25\r\n") == -1);	/* family */
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7 198.51.100.2 65536 25\r\n") == -1);
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7 198.51.100.2 -1 25\r\n") == -1);
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7  198.51.100.2 1 25\r\n") == -1);	/* two spaces */
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7 198.51.100.2 1\r\n") == -1);
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7 198.51.100.2 1 2 3\r\n") == -1);
	T_CHECK(PARSE("PROXY UDP4 192.0.2.7 198.51.100.2 1 2\r\n") == -1);
	T_CHECK(PARSE("PROXY UNKNOWNX\r\n") == -1);
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7\r198.51.100.2 1 2\r\n") == -1);
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7\r") == 0);		/* may still be the CRLF */
	T_CHECK(PARSE("PROXY TCP4 192.0.2.7\rx") == -1);
	T_CHECK(PARSE("EHLO x\r\n") == -1 && h.err != NULL);
	T_CHECK(PARSE("PROXX") == -1);
	T_CHECK(PARSE("PROX") == 0);
	memset(longl, 'a', sizeof(longl));
	memcpy(longl, "PROXY UNKNOWN ", 14);
	T_CHECK(parse(longl, 106) == 0);
	T_CHECK(parse(longl, 107) == -1);
	T_CHECK(parse(longl, sizeof(longl)) == -1);
}

/* v2 - a version 2 header: command, family byte, body */
static size_t
v2(unsigned char *out, unsigned vercmd, unsigned fam, const unsigned char *body, size_t blen)
{
	static const unsigned char sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

	memcpy(out, sig, 12);
	out[12] = (unsigned char)vercmd;
	out[13] = (unsigned char)fam;
	out[14] = (unsigned char)(blen >> 8);
	out[15] = (unsigned char)blen;
	memcpy(out + 16, body, blen);
	return 16 + blen;
}

static void
test_v2(void)
{
	unsigned char b[2048], body[1600];
	char ip[64];
	size_t n;
	/* 192.0.2.9:40002 -> 198.51.100.2:25, then a NOOP TLV and an SSL TLV */
	const unsigned char in4[] = { 192, 0, 2, 9, 198, 51, 100, 2, 0x9c, 0x42, 0, 25,
	    0x04, 0, 2, 'a', 'b', 0x20, 0, 5, 0x01, 0, 0, 0, 0 };

	n = v2(b, 0x21, 0x11, in4, sizeof(in4));
	T_CHECK(pp_parse(b, n, &h) == (int)n);
	T_CHECK(h.version == 2 && !h.local && h.ssl);
	T_CHECK(strcmp(src_ip(ip, sizeof(ip)), "192.0.2.9") == 0 && src_port() == 40002);
	for (size_t k = 0; k < n; k++)
		T_CHECKF(pp_parse(b, k, &h) == 0, "prefix %zu", k);
	/* TLV overrunning the header */
	n = v2(b, 0x21, 0x11, in4, 12 + 4);
	b[16 + 12 + 2] = 9;
	T_CHECK(pp_parse(b, n, &h) == -1);
	/* IPv6 */
	memset(body, 0, 36);
	body[0] = 0x20; body[1] = 0x01; body[2] = 0x0d; body[3] = 0xb8; body[15] = 5;
	body[32] = 0x01; body[33] = 0x02;
	n = v2(b, 0x21, 0x21, body, 36);
	T_CHECK(pp_parse(b, n, &h) == (int)n && !h.local);
	T_CHECK(strcmp(src_ip(ip, sizeof(ip)), "2001:db8::5") == 0 && src_port() == 258);
	/* LOCAL: addresses ignored; UNSPEC and UNIX and DGRAM: own addresses */
	n = v2(b, 0x20, 0x00, body, 0);
	T_CHECK(pp_parse(b, n, &h) == 16 && h.local);
	n = v2(b, 0x21, 0x00, body, 0);
	T_CHECK(pp_parse(b, n, &h) == 16 && h.local);
	memset(body, 0, 216);
	n = v2(b, 0x21, 0x31, body, 216);
	T_CHECK(pp_parse(b, n, &h) == (int)n && h.local);
	n = v2(b, 0x21, 0x12, in4, 12);
	T_CHECK(pp_parse(b, n, &h) == (int)n && h.local);
	/* refused: version 1 in the binary form, command 2, short block,
	 * unknown family, over-long */
	n = v2(b, 0x11, 0x11, in4, 12);
	T_CHECK(pp_parse(b, n, &h) == -1);
	n = v2(b, 0x22, 0x11, in4, 12);
	T_CHECK(pp_parse(b, n, &h) == -1);
	n = v2(b, 0x21, 0x11, in4, 11);
	T_CHECK(pp_parse(b, n, &h) == -1);
	n = v2(b, 0x21, 0x41, in4, 12);
	T_CHECK(pp_parse(b, n, &h) == -1);
	memset(body, 0, sizeof(body));
	n = v2(b, 0x21, 0x11, body, 1537);
	T_CHECK(pp_parse(b, 16, &h) == -1);		/* at once, from the length */
	n = v2(b, 0x21, 0x11, body, 1536);
	body[12] = 0x04; body[13] = (1536 - 15) >> 8; body[14] = (1536 - 15) & 0xff;
	n = v2(b, 0x21, 0x11, body, 1536);
	T_CHECK(pp_parse(b, n, &h) == (int)n && n == PP_MAX);
}

int
main(void)
{
	T_RUN(test_v1);
	T_RUN(test_v1_bad);
	T_RUN(test_v2);
	return T_DONE("test_proxyproto");
}
