/*
 * proxyproto - the inbound PROXY protocol header (versions 1 and 2)
 *
 * SYNOPSIS
 *	int pp_parse(const unsigned char *buf, size_t len, struct pp_header *h);
 *
 * DESCRIPTION
 *	A pure parser (no I/O, no allocation) of the header a load balancer
 *	(haproxy "send-proxy" / "send-proxy-v2", nginx "proxy_protocol")
 *	puts before the client's bytes, after haproxy's proxy-protocol.txt.
 *	buf holds the first len bytes received on the connection. Returns:
 *
 *	  > 0	the header is complete and is that many bytes long (the
 *		client's own bytes start there); *h is filled.
 *	  0	not complete yet, and every byte of buf belongs to the
 *		header (so a reader may consume all of buf and read on).
 *	  -1	not a valid header; h->err names why. A connection that
 *		promised a header and sends this is closed.
 *
 *	The caps make "not complete" finite: a version 1 line is at most
 *	PP_V1_MAX bytes with its CRLF; a version 2 header at most
 *	PP_V2_MAX (its length field above PP_V2_MAX - 16 is refused at
 *	once, before the body arrives). So a reader never needs more than
 *	PP_MAX bytes of buffer.
 *
 *	Version 1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" with single
 *	spaces, addresses in the family named, ports 0..65535 in at most
 *	five digits; "PROXY UNKNOWN" followed by anything up to the CRLF
 *	says the balancer does not know the client: h->local is set and
 *	the connection's own addresses are to be used.
 *
 *	Version 2: the 12-byte signature, version 2, command LOCAL (the
 *	balancer's own connection, a health check: h->local, addresses
 *	ignored) or PROXY; any other version or command is refused. PROXY
 *	with family INET or INET6 over STREAM gives the addresses; any
 *	other family or transport (UNSPEC, UNIX, DGRAM) is accepted with
 *	h->local set, as the spec asks of a receiver that does not know
 *	them. An address block shorter than its family needs is refused.
 *	What follows the addresses is a sequence of TLVs, each of which
 *	must fit in the header (else refused); all are skipped except
 *	PP2_TYPE_SSL, whose client byte sets h->ssl (the client spoke TLS
 *	to the balancer) when its PP2_CLIENT_SSL bit is set. The CRC32C
 *	TLV is not verified.
 */
#ifndef MOAT_PROXYPROTO_H
#define MOAT_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PP_V1_MAX 107
#define PP_V2_MAX (16 + 1536)
#define PP_MAX PP_V2_MAX

struct pp_header {
	int version;			/* 1 or 2 */
	bool local;			/* LOCAL / UNKNOWN / unsupported family:
					 * use the connection's own addresses */
	bool ssl;			/* v2 SSL TLV: the client used TLS */
	struct sockaddr_storage src;	/* the client (unless local) */
	struct sockaddr_storage dst;	/* the address it connected to */
	socklen_t salen;
	const char *err;		/* static text, on -1 */
};

int pp_parse(const unsigned char *buf, size_t len, struct pp_header *h);

#endif
