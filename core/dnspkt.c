/*
 * dnspkt - the answer to one question, read from a DNS response packet
 * (see dnspkt.h)
 *
 * Every read is bounded by the packet's length; a compression pointer
 * must point before itself, and a name is at most 255 bytes expanded,
 * so expanding one ends after at most 127 pointers.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnspkt.h"
#include "xalloc.h"

#define WIRE_NAME_MAX	255
#define HDR_LEN		12
#define T_OPT		41
#define C_IN		1

/* name_read - the name at *pos, expanded in wire form into out (at most
 * 255 bytes with its final 0; lower case when fold); *pos moves past it.
 * The part of the name before its first pointer must end by lim. -1
 * when it does not parse. */
static int
name_read(const unsigned char *p, size_t len, size_t lim, size_t *pos,
    unsigned char *out, size_t *outlen, bool fold)
{
	size_t i = *pos, o = 0, end = 0;
	bool jumped = false;

	for (;;) {
		unsigned c;

		if (i >= (jumped ? len : lim))
			return -1;
		c = p[i];
		if ((c & 0xc0) == 0xc0) {
			size_t t;

			if (i + 1 >= (jumped ? len : lim))
				return -1;
			t = ((size_t)(c & 0x3f) << 8) | p[i + 1];
			if (t >= i)	/* backward only: no loops */
				return -1;
			if (!jumped)
				end = i + 2;
			jumped = true;
			i = t;
			continue;
		}
		if ((c & 0xc0) != 0)	/* 0x40, 0x80: no such label types */
			return -1;
		if (c == 0) {
			out[o++] = 0;
			break;
		}
		if (i + 1 + c > (jumped ? len : lim) || o + 1 + c + 1 > WIRE_NAME_MAX)
			return -1;
		out[o++] = (unsigned char)c;
		for (unsigned k = 0; k < c; k++) {
			unsigned char ch = p[i + 1 + k];

			if (fold && ch >= 'A' && ch <= 'Z')
				ch = (unsigned char)(ch - 'A' + 'a');
			out[o++] = ch;
		}
		i += 1 + c;
	}
	*pos = jumped ? end : i + 1;
	*outlen = o;
	return 0;
}

static unsigned
get16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* names_in - how many names a type's rdata holds where RFC 1035 lets
 * them be compressed, and the fixed bytes before them (MX) or after
 * them (SOA); 0 names: copied as it is */
static int
names_in(int type, size_t *before, size_t *after)
{
	*before = *after = 0;
	switch (type) {
	case 2: case 3: case 4: case 5: case 7: case 8: case 9: case 12:
		return 1;	/* NS MD MF CNAME MB MG MR PTR */
	case 14:
		return 2;	/* MINFO */
	case 6:
		*after = 20;	/* SOA: serial refresh retry expire minimum */
		return 2;
	case 15:
		*before = 2;	/* MX: preference */
		return 1;
	default:
		return 0;
	}
}

/* rdata_expand - a record's rdata with its names expanded, into out (room
 * for rdlen + 2 * 255); its length, or -1 when the names and fixed
 * fields do not fill the rdata exactly */
static long
rdata_expand(const unsigned char *p, size_t len, int type, size_t off, size_t rdlen,
    unsigned char *out)
{
	size_t before, after, pos = off, o = 0, end = off + rdlen, n;
	int names = names_in(type, &before, &after);

	if (names == 0) {
		if (out != NULL)
			memcpy(out, p + off, rdlen);
		return (long)rdlen;
	}
	if (rdlen < before + after)
		return -1;
	if (out != NULL)
		memcpy(out, p + pos, before);
	pos += before;
	o += before;
	for (int k = 0; k < names; k++) {
		unsigned char tmp[WIRE_NAME_MAX];

		if (name_read(p, len, end - after, &pos, tmp, &n, false) != 0)
			return -1;
		if (out != NULL)
			memcpy(out + o, tmp, n);
		o += n;
	}
	if (pos + after != end)
		return -1;
	if (out != NULL)
		memcpy(out + o, p + pos, after);
	return (long)(o + after);
}

struct kept {
	size_t off, len;	/* rdata in the packet */
	int type;
};

/* empty - an answer without records (its data and len lists hold only
 * their ends) */
static struct dns_answer *
empty(int status, int qtype, int rcode, const char *why, int ttl)
{
	struct dns_answer *a = xcalloc(1, sizeof(*a) + sizeof(char *) + sizeof(int));

	a->status = status;
	a->rrtype = qtype;
	a->rcode = rcode;
	a->why = why;
	a->ttl = ttl;
	a->data = (char **)(void *)(a + 1);
	a->len = (int *)(void *)(a->data + 1);
	return a;
}

static struct dns_answer *
fail(int qtype, int rcode, const char *why)
{
	return empty(DNS_TEMPERROR, qtype, rcode, why, 0);
}

/* dnspkt_answer - see dnspkt.h */
struct dns_answer *
dnspkt_answer(const unsigned char *p, size_t len, int qtype)
{
	unsigned flags, qd, an, ns, ar, rcode;
	unsigned char sname[WIRE_NAME_MAX], owner[WIRE_NAME_MAX];
	size_t snlen, ownlen, pos = HDR_LEN, nk = 0, bytes = 0, off;
	uint32_t ttl_an = UINT32_MAX, ttl_all = UINT32_MAX;
	bool matched = false;
	struct kept *k = NULL;
	struct dns_answer *a;
	char *d;

	if (p == NULL || len < HDR_LEN)
		return fail(qtype, 0, "malformed");
	flags = get16(p + 2);
	qd = get16(p + 4);
	an = get16(p + 6);
	ns = get16(p + 8);
	ar = get16(p + 10);
	rcode = flags & 0xf;
	if (!(flags & 0x8000) || qd != 1)
		return fail(qtype, (int)rcode, "malformed");
	if (flags & 0x0200)
		return fail(qtype, (int)rcode, "truncated");
	/* the question */
	if (name_read(p, len, len, &pos, sname, &snlen, true) != 0 || pos + 4 > len ||
	    get16(p + pos) != (unsigned)qtype || get16(p + pos + 2) != C_IN)
		return fail(qtype, (int)rcode, "malformed");
	pos += 4;
	switch (rcode) {
	case 0:
	case 3:
		break;
	case 2:
		return fail(qtype, 2, "servfail");
	case 5:
		return fail(qtype, 5, "refused");
	default:
		return fail(qtype, (int)rcode, "rcode");
	}
	/* every record is at least 11 bytes: the counts are bounded by len */
	if ((size_t)an + ns + ar > (len - pos) / 11)
		return fail(qtype, (int)rcode, "malformed");
	if (an > 0)
		k = xmalloc(sizeof(*k) * an);
	for (unsigned i = 0; i < an + ns + ar; i++) {
		unsigned type, class;
		uint32_t ttl;
		size_t rdlen;

		if (name_read(p, len, len, &pos, owner, &ownlen, true) != 0 || pos + 10 > len)
			goto malformed;
		type = get16(p + pos);
		class = get16(p + pos + 2);
		ttl = get32(p + pos + 4);
		rdlen = get16(p + pos + 8);
		pos += 10;
		if (pos + rdlen > len)
			goto malformed;
		if (ttl > 0x7fffffffU)	/* RFC 2181 8 */
			ttl = 0;
		/* every name-bearing record parses, wherever it is */
		if (rdata_expand(p, len, (int)type, pos, rdlen, NULL) < 0)
			goto malformed;
		if (type != T_OPT && ttl < ttl_all)
			ttl_all = ttl;
		if (i < an) {
			if (type != T_OPT && ttl < ttl_an)
				ttl_an = ttl;
			if (class == C_IN && ownlen == snlen && memcmp(owner, sname, snlen) == 0) {
				if (type == (unsigned)qtype) {
					size_t b, af;

					matched = true;
					k[nk].off = pos;
					k[nk].len = rdlen;
					k[nk].type = (int)type;
					nk++;
					bytes += rdlen + (names_in((int)type, &b, &af) ?
					    2 * WIRE_NAME_MAX : 0);
				} else if (type == 5 && !matched) {
					/* CNAME: the chain goes on at its target */
					size_t tp = pos;

					if (name_read(p, len, pos + rdlen, &tp, sname, &snlen,
					    true) != 0)
						goto malformed;
				}
			}
		}
		pos += rdlen;
	}
	if (rcode == 3 || nk == 0) {
		free(k);
		return empty(rcode == 3 ? DNS_NXDOMAIN : DNS_NODATA, qtype, (int)rcode, NULL,
		    ttl_all == UINT32_MAX ? 0 : (int)ttl_all);
	}
	off = sizeof(*a) + sizeof(char *) * (nk + 1) + sizeof(int) * (nk + 1);
	a = xmalloc(off + bytes + 1);
	memset(a, 0, sizeof(*a));
	a->status = DNS_OK;
	a->rrtype = qtype;
	a->rcode = 0;
	a->ttl = (int)ttl_an;
	a->n = (int)nk;
	a->data = (char **)(void *)(a + 1);
	a->len = (int *)(void *)(a->data + nk + 1);
	d = (char *)a + off;
	for (size_t i = 0; i < nk; i++) {
		long n = rdata_expand(p, len, k[i].type, k[i].off, k[i].len, (unsigned char *)d);

		/* (n >= 0: every record was checked above) */
		a->data[i] = d;
		a->len[i] = (int)n;
		d += n;
	}
	a->data[nk] = NULL;
	a->len[nk] = 0;
	free(k);
	return a;

malformed:
	free(k);
	return fail(qtype, (int)rcode, "malformed");
}
