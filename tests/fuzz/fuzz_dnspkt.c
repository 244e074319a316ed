// sources: core/dnspkt.c core/dnsname.c core/xalloc.c core/log.c
/*
 * fuzz_dnspkt - the answer read from a DNS response packet (core/dnspkt.c:
 * the bytes libunbound's event API hands back, from any server's answer)
 *
 * Input: the first byte picks the question type asked (A, NS, CNAME, SOA,
 * PTR, MX, TXT, AAAA, MINFO, other); the rest is the packet.
 * Properties, each an abort() when violated:
 *   - an answer always comes back, with the type asked and a known status;
 *   - DNS_OK has n >= 1 records, every other status none; data[n] is NULL;
 *   - a temporary error says why; the TTL is never negative;
 *   - each record fits what the packet could expand to (its bytes plus
 *     two 255-byte names), and the names of NS, CNAME, PTR, MX and SOA
 *     records read back with dns_rr_name (no compression left in them).
 */
#include "dns.h"
#include "dnspkt.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static const int types[] = { DNS_T_A, DNS_T_NS, DNS_T_CNAME, DNS_T_SOA, DNS_T_PTR,
    DNS_T_MX, DNS_T_TXT, DNS_T_AAAA, 14, 257 };

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct dns_answer *a;
	int qtype;
	char name[256];

	if (size < 1)
		return 0;
	qtype = types[data[0] % (sizeof(types) / sizeof(types[0]))];
	a = dnspkt_answer(data + 1, size - 1, qtype);
	if (a == NULL || a->rrtype != qtype || a->ttl < 0)
		abort();
	switch (a->status) {
	case DNS_OK:
		if (a->n < 1)
			abort();
		break;
	case DNS_NODATA:
	case DNS_NXDOMAIN:
		if (a->n != 0)
			abort();
		break;
	case DNS_TEMPERROR:
		if (a->n != 0 || a->why == NULL || a->why[0] == 0)
			abort();
		break;
	default:
		abort();
	}
	if (a->data[a->n] != NULL)
		abort();
	for (int i = 0; i < a->n; i++) {
		if (a->len[i] < 0 || (size_t)a->len[i] > size + 2 * 255)
			abort();
		if (a->len[i] > 0 && a->data[i][a->len[i] - 1] != a->data[i][a->len[i] - 1])
			abort();	/* (reads the last byte: ASan checks the bound) */
		switch (qtype) {
		case DNS_T_NS:
		case DNS_T_CNAME:
		case DNS_T_PTR:
		case DNS_T_SOA:
			if (dns_rr_name(a, i, 0, name, sizeof(name)) < 0)
				abort();
			break;
		case DNS_T_MX:
			if (dns_rr_name(a, i, 2, name, sizeof(name)) < 0)
				abort();
			break;
		default:
			break;
		}
	}
	free(a);	/* one allocation (dnspkt.h) */
	return 0;
}
