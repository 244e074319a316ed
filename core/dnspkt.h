/*
 * dnspkt - the answer to one question, read from a DNS response packet
 *
 * SYNOPSIS
 *	struct dns_answer *dnspkt_answer(const unsigned char *pkt, size_t len, int qtype);
 *
 * DESCRIPTION
 *	libunbound's event API (ub_resolve_event, core/dns.c) hands back
 *	the answer as a wire-format packet, not as a parsed result. This
 *	reads it the way libunbound fills a struct ub_result:
 *
 *	- the question must be one, of type qtype and class IN;
 *	- the records are those of type qtype and class IN owned by the
 *	  question's name, or by the end of the CNAME chain that starts at
 *	  it, followed through the answer section in order;
 *	- their rdata is returned with the names of the RFC 1035 types
 *	  (NS, CNAME, SOA, PTR, MX, MINFO, MB, MD, MF, MG, MR) uncompressed;
 *	- TTL: with records, the smallest TTL in the answer section; without,
 *	  the smallest of every record in the packet (the SOA's, for a
 *	  negative answer), 0 when there is none; a TTL over 2^31-1 is 0;
 *	- rcode 0 without records is DNS_NODATA, rcode 3 DNS_NXDOMAIN, any
 *	  other rcode DNS_TEMPERROR ("servfail", "refused", "rcode");
 *	- a truncated (TC) packet is DNS_TEMPERROR "truncated"; one that does
 *	  not parse (short, a name pointing forward or past the end, a label
 *	  over 63 bytes, a name over 255, rdata past its record, a record of
 *	  a name type whose names do not fill it exactly, the wrong
 *	  question) is DNS_TEMPERROR "malformed".
 *
 *	The answer is one allocation (free() or dns_answer_free()), never
 *	NULL; data[n] is NULL. A pure function: no I/O, no state.
 */
#ifndef MOAT_DNSPKT_H
#define MOAT_DNSPKT_H

#include <stddef.h>

#include "dns.h"

struct dns_answer *dnspkt_answer(const unsigned char *pkt, size_t len, int qtype);

#endif
