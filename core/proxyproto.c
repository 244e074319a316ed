/*
 * proxyproto - the inbound PROXY protocol header (see proxyproto.h)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "proxyproto.h"

static const unsigned char pp_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

#define PP2_TYPE_SSL 0x20
#define PP2_CLIENT_SSL 0x01

/* pp_fail - -1 with a reason */
static int
pp_fail(struct pp_header *h, const char *why)
{
	h->err = why;
	return -1;
}

/* pp_v1_addr - one address token of family af into sa; false if bad */
static bool
pp_v1_addr(const unsigned char *p, size_t n, int af, struct sockaddr_storage *ss)
{
	char tmp[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, p, n);
	tmp[n] = 0;
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		return inet_pton(AF_INET, tmp, &sin->sin_addr) == 1;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		return inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1;
	}
}

/* pp_v1_port - a decimal port of 1..5 digits, 0..65535; -1 if bad */
static long
pp_v1_port(const unsigned char *p, size_t n)
{
	long v = 0;

	if (n == 0 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v > 65535 ? -1 : v;
}

/* pp_set_port - the port of a filled sockaddr */
static void
pp_set_port(struct sockaddr_storage *ss, unsigned port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* pp_parse_v1 - "PROXY ...\r\n" */
static int
pp_parse_v1(const unsigned char *buf, size_t len, struct pp_header *h)
{
	const unsigned char *tok[5];
	size_t toklen[5], end = 0, i, start;
	int ntok = 0, af;
	long sport, dport;

	h->version = 1;
	/* the line ends at the first LF, which must follow a CR */
	for (i = 0; i < len && i < PP_V1_MAX; i++)
		if (buf[i] == '\n')
			break;
	if (i == len) {
		if (len >= PP_V1_MAX)
			return pp_fail(h, "version 1 line longer than 107 bytes");
		/* nothing inside the line may be a NUL or a stray CR meanwhile */
		for (size_t j = 6; j < len; j++)
			if (buf[j] == 0 || (buf[j] == '\r' && j + 1 < len))
				return pp_fail(h, "control byte in version 1 line");
		return 0;
	}
	if (i >= PP_V1_MAX)
		return pp_fail(h, "version 1 line longer than 107 bytes");
	if (i < 7 || buf[i - 1] != '\r')
		return pp_fail(h, "version 1 line not ended by CRLF");
	end = i - 1;		/* the CR */
	for (size_t j = 6; j < end; j++)
		if (buf[j] == 0 || buf[j] == '\r')
			return pp_fail(h, "control byte in version 1 line");
	if (end - 6 >= 7 && memcmp(buf + 6, "UNKNOWN", 7) == 0 &&
	    (end == 13 || buf[13] == ' ')) {
		/* the rest of the line is to be ignored */
		h->local = true;
		return (int)(i + 1);
	}
	/* PROXY TCPx SRC DST SPORT DPORT: exactly five tokens after "PROXY " */
	start = 6;
	for (size_t j = 6; j <= end; j++) {
		if (j < end && buf[j] != ' ') {
			if (buf[j] < 0x21 || buf[j] > 0x7e)
				return pp_fail(h, "control byte in version 1 line");
			continue;
		}
		if (j == start || ntok == 5)
			return pp_fail(h, "version 1 line: not \"TCP4|TCP6 SRC DST SPORT DPORT\"");
		tok[ntok] = buf + start;
		toklen[ntok++] = j - start;
		start = j + 1;
	}
	if (ntok != 5)
		return pp_fail(h, "version 1 line: not \"TCP4|TCP6 SRC DST SPORT DPORT\"");
	if (toklen[0] == 4 && memcmp(tok[0], "TCP4", 4) == 0)
		af = AF_INET;
	else if (toklen[0] == 4 && memcmp(tok[0], "TCP6", 4) == 0)
		af = AF_INET6;
	else
		return pp_fail(h, "version 1 protocol is not TCP4, TCP6 or UNKNOWN");
	if (!pp_v1_addr(tok[1], toklen[1], af, &h->src) || !pp_v1_addr(tok[2], toklen[2], af, &h->dst))
		return pp_fail(h, "version 1 address not of the family named");
	sport = pp_v1_port(tok[3], toklen[3]);
	dport = pp_v1_port(tok[4], toklen[4]);
	if (sport < 0 || dport < 0)
		return pp_fail(h, "version 1 port not 0..65535");
	pp_set_port(&h->src, (unsigned)sport);
	pp_set_port(&h->dst, (unsigned)dport);
	h->salen = af == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	return (int)(i + 1);
}

/* pp_tlvs - walk the TLVs of a version 2 header; -1 if one overruns */
static int
pp_tlvs(const unsigned char *p, size_t n, struct pp_header *h)
{
	size_t off = 0;

	while (off < n) {
		size_t vlen;

		if (n - off < 3)
			return pp_fail(h, "version 2 TLV header cut short");
		vlen = (size_t)p[off + 1] << 8 | p[off + 2];
		if (vlen > n - off - 3)
			return pp_fail(h, "version 2 TLV longer than the header");
		if (p[off] == PP2_TYPE_SSL && vlen >= 1 && (p[off + 3] & PP2_CLIENT_SSL))
			h->ssl = true;
		off += 3 + vlen;
	}
	return 0;
}

/* pp_parse_v2 - the binary header */
static int
pp_parse_v2(const unsigned char *buf, size_t len, struct pp_header *h)
{
	size_t body, need;
	unsigned cmd, fam, proto;
	const unsigned char *a;

	h->version = 2;
	if (len < 16)
		return 0;
	if ((buf[12] >> 4) != 2)
		return pp_fail(h, "version 2 signature with a version other than 2");
	cmd = buf[12] & 0x0f;
	if (cmd > 1)
		return pp_fail(h, "version 2 command neither LOCAL nor PROXY");
	body = (size_t)buf[14] << 8 | buf[15];
	if (body > PP_V2_MAX - 16)
		return pp_fail(h, "version 2 header longer than 1552 bytes");
	if (len < 16 + body)
		return 0;
	fam = buf[13] >> 4;
	proto = buf[13] & 0x0f;
	a = buf + 16;
	need = fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
	if (body < need)
		return pp_fail(h, "version 2 address block shorter than its family needs");
	if (fam > 3 || proto > 2)
		return pp_fail(h, "version 2 family or transport unknown");
	if (pp_tlvs(a + need, body - need, h) != 0)
		return -1;
	if (cmd == 0 || fam == 0 || fam == 3 || proto != 1) {
		/* LOCAL, or a family/transport we do not take: own addresses */
		h->local = true;
		return (int)(16 + body);
	}
	if (fam == 1) {
		struct sockaddr_in *s = (struct sockaddr_in *)&h->src, *d = (struct sockaddr_in *)&h->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		h->salen = sizeof(struct sockaddr_in);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->src, *d = (struct sockaddr_in6 *)&h->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		h->salen = sizeof(struct sockaddr_in6);
	}
	return (int)(16 + body);
}

/* pp_parse - see proxyproto.h */
int
pp_parse(const unsigned char *buf, size_t len, struct pp_header *h)
{
	size_t n;

	memset(h, 0, sizeof(*h));
	if (len == 0)
		return 0;
	if (buf[0] == 'P') {
		n = len < 6 ? len : 6;
		if (memcmp(buf, "PROXY ", n) != 0)
			return pp_fail(h, "not a PROXY protocol header");
		if (len < 6)
			return 0;
		return pp_parse_v1(buf, len, h);
	}
	n = len < sizeof(pp_sig) ? len : sizeof(pp_sig);
	if (memcmp(buf, pp_sig, n) != 0)
		return pp_fail(h, "not a PROXY protocol header");
	if (len < sizeof(pp_sig))
		return 0;
	return pp_parse_v2(buf, len, h);
}
