/*
 * test_identity - XCLIENT commands and PROXY v1/v2 headers (IDN-04..07, IDN-10)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "identity.h"
#include "t.h"

static struct sockaddr_in
v4(const char *a, unsigned port)
{
	struct sockaddr_in s;

	memset(&s, 0, sizeof(s));
	s.sin_family = AF_INET;
	s.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, a, &s.sin_addr);
	return s;
}

static struct sockaddr_in6
v6(const char *a, unsigned port)
{
	struct sockaddr_in6 s;

	memset(&s, 0, sizeof(s));
	s.sin6_family = AF_INET6;
	s.sin6_port = htons((uint16_t)port);
	inet_pton(AF_INET6, a, &s.sin6_addr);
	return s;
}

#define POSTFIX_ATTRS "NAME ADDR PORT PROTO HELO REVERSE_NAME LOGIN DESTADDR DESTPORT"

static void
test_xclient_postfix(void)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 25);
	struct ident_client c = { (struct sockaddr *)&src, (struct sockaddr *)&dst, NULL,
	    "mail.example.test", 17, true, NULL };
	char out[512];
	int n = ident_xclient(POSTFIX_ATTRS, strlen(POSTFIX_ATTRS), &c, out, sizeof(out));

	T_CHECK(n > 0);
	T_CHECKF(strcmp(out, "XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40000 PROTO=ESMTP "
	    "HELO=mail.example.test DESTADDR=127.0.0.1 DESTPORT=25\r\n") == 0, "%s", out);
	T_CHECK(n == (int)strlen(out));
}

static void
test_xclient_only_offered(void)
{
	struct sockaddr_in src = v4("192.0.2.7", 1), dst = v4("127.0.0.1", 25);
	struct ident_client c = { (struct sockaddr *)&src, (struct sockaddr *)&dst, NULL,
	    "x.test", 6, false, "alice" };
	char out[512];

	T_CHECK(ident_xclient("NAME HELO", 9, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT NAME=[UNAVAILABLE] HELO=x.test\r\n") == 0, "%s", out);
	T_CHECK(ident_xclient("addr proto login", 16, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT ADDR=192.0.2.7 PROTO=SMTP LOGIN=alice\r\n") == 0, "%s", out);
}

static void
test_xclient_hostile_helo(void)
{
	/* IDN-04/05: spaces, '+', '=', ADDR= inside the HELO never become attributes */
	struct sockaddr_in src = v4("192.0.2.7", 1), dst = v4("127.0.0.1", 25);
	const char *h = "x ADDR=1.2.3.4 NAME=trusted.test";
	struct ident_client c = { (struct sockaddr *)&src, (struct sockaddr *)&dst, NULL,
	    h, strlen(h), true, NULL };
	char out[512], big[300];

	T_CHECK(ident_xclient("ADDR HELO", 9, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT ADDR=192.0.2.7 HELO=[UNAVAILABLE]\r\n") == 0, "%s", out);
	memset(big, 'a', sizeof(big));
	c.helo = big;
	c.helolen = 256;	/* over 255: Postfix would refuse the XCLIENT */
	T_CHECK(ident_xclient("HELO", 4, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT HELO=[UNAVAILABLE]\r\n") == 0, "%s", out);
	c.helo = "[127.0.0.1]";
	c.helolen = 11;
	T_CHECK(ident_xclient("HELO", 4, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT HELO=[127.0.0.1]\r\n") == 0, "%s", out);
	c.login = "a+b=c d";
	T_CHECK(ident_xclient("LOGIN", 5, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT LOGIN=a+2Bb+3Dc+20d\r\n") == 0, "%s", out);
}

static void
test_xclient_ipv6(void)
{
	/* IDN-07: IPv6 as IPV6:..., IPv4-mapped as IPv4 */
	struct sockaddr_in6 src = v6("2001:db8::1", 5), dst = v6("::1", 25);
	struct sockaddr_in6 msrc = v6("::ffff:192.0.2.9", 6);
	struct ident_client c = { (struct sockaddr *)&src, (struct sockaddr *)&dst, NULL,
	    NULL, 0, true, NULL };
	char out[512];

	T_CHECK(ident_xclient("ADDR DESTADDR HELO", 18, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT ADDR=IPV6:2001:db8::1 HELO=[UNAVAILABLE] DESTADDR=IPV6:::1\r\n") == 0,
	    "%s", out);
	c.src = (struct sockaddr *)&msrc;
	T_CHECK(ident_xclient("ADDR", 4, &c, out, sizeof(out)) > 0);
	T_CHECKF(strcmp(out, "XCLIENT ADDR=192.0.2.9\r\n") == 0, "%s", out);
	T_CHECK(ident_xclient(POSTFIX_ATTRS, strlen(POSTFIX_ATTRS), &c, out, 20) == -1);
}

static void
test_proxy_v1(void)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 25);
	struct sockaddr_in6 s6 = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	struct sockaddr_in6 d6 = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	char out[128];
	int n;

	n = ident_proxy_v1((struct sockaddr *)&src, (struct sockaddr *)&dst, out, sizeof(out));
	T_CHECK(n > 0 && strcmp(out, "PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n") == 0);
	n = ident_proxy_v1((struct sockaddr *)&s6, (struct sockaddr *)&d6, out, sizeof(out));
	T_CHECKF(n > 0 && n <= 107, "n=%d", n);
	T_CHECK(strncmp(out, "PROXY TCP6 ffff:", 16) == 0);
	/* mixed families cannot be described: UNKNOWN */
	n = ident_proxy_v1((struct sockaddr *)&src, (struct sockaddr *)&d6, out, sizeof(out));
	T_CHECK(n > 0 && strcmp(out, "PROXY UNKNOWN\r\n") == 0);
}

static void
test_proxy_v2(void)
{
	struct sockaddr_in src = v4("192.0.2.7", 0x1234), dst = v4("127.0.0.1", 25);
	struct sockaddr_in6 s6 = v6("2001:db8::1", 1), d6 = v6("::1", 2);
	unsigned char out[64];
	static const unsigned char want4[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x11, 0x00, 0x0c, 192, 0, 2, 7, 127, 0, 0, 1, 0x12, 0x34, 0x00, 25
	};
	int n = ident_proxy_v2((struct sockaddr *)&src, (struct sockaddr *)&dst, out, sizeof(out));

	T_CHECK(n == (int)sizeof(want4) && memcmp(out, want4, sizeof(want4)) == 0);
	n = ident_proxy_v2((struct sockaddr *)&s6, (struct sockaddr *)&d6, out, sizeof(out));
	T_CHECK(n == 52 && out[13] == 0x21 && out[14] == 0 && out[15] == 36);
	T_CHECK(out[16] == 0x20 && out[17] == 0x01 && out[51] == 2);
	T_CHECK(ident_proxy_v2((struct sockaddr *)&s6, (struct sockaddr *)&d6, out, 40) == -1);
}

int
main(void)
{
	T_RUN(test_xclient_postfix);
	T_RUN(test_xclient_only_offered);
	T_RUN(test_xclient_hostile_helo);
	T_RUN(test_xclient_ipv6);
	T_RUN(test_proxy_v1);
	T_RUN(test_proxy_v2);
	return T_DONE("identity");
}
