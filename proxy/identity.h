/*
 * identity - how the upstream learns who the real client is (pure)
 *
 * SYNOPSIS
 *	int ident_proxy_v1(const struct sockaddr *src, const struct sockaddr *dst,
 *	                   char *out, size_t size);
 *	int ident_proxy_v2(const struct sockaddr *src, const struct sockaddr *dst,
 *	                   unsigned char *out, size_t size);
 *	int ident_xclient(const char *offered, size_t olen,
 *	                  const struct ident_client *c, char *out, size_t size);
 *
 * DESCRIPTION
 *	Each writes one complete header or command (with CRLF where the
 *	protocol has one) and returns its length, or -1 when it does not fit.
 *	IPv4-mapped IPv6 addresses are written as IPv4. ident_xclient() sends
 *	only the attributes that the upstream listed after XCLIENT in its
 *	EHLO reply (offered); values are xtext-encoded (RFC 3461); a HELO
 *	name that is not a valid domain or address literal is sent as
 *	[UNAVAILABLE], as is an unknown reverse name.
 */
#ifndef MOAT_IDENTITY_H
#define MOAT_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct ident_client {
	const struct sockaddr *src;	/* the client */
	const struct sockaddr *dst;	/* where it connected to */
	const char *name;		/* verified reverse name, or NULL */
	const char *helo;		/* as sent, or NULL */
	size_t helolen;
	bool esmtp;
	const char *login;		/* authenticated login, or NULL */
};

#define IDENT_PROXY_V1_MAX 107	/* the spec's bound, CRLF included */

int ident_proxy_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out, size_t size);
int ident_proxy_v2(const struct sockaddr *src, const struct sockaddr *dst,
	unsigned char *out, size_t size);
int ident_xclient(const char *offered, size_t olen, const struct ident_client *c,
	char *out, size_t size);

#endif
