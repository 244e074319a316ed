/*
 * sasl - the bytes of an AUTH exchange (RFC 4954), parsed (pure)
 *
 * SYNOPSIS
 *	enum sasl_mech sasl_mech_find(const char *name, size_t len);
 *	int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t size);
 *	int sasl_login(enum sasl_mech m, unsigned step, const unsigned char *msg,
 *	               size_t len, char *login, size_t size);
 *
 * DESCRIPTION
 *	moat relays AUTH to the upstream and must learn, without keeping or
 *	logging any secret, which login the upstream accepted. It relays only
 *	mechanisms whose client messages name the login: PLAIN (authzid, or
 *	authcid when authzid is empty), LOGIN (the first response), CRAM-MD5
 *	(the name before the digest) and SCRAM-* (n= of client-first, with
 *	=2C and =3D decoded). Others (GSSAPI, EXTERNAL, ...) are refused.
 *
 *	sasl_b64_decode() is strict: the base64 alphabet only, length a
 *	multiple of 4, '=' only as padding at the end, no blanks; "=" alone
 *	(RFC 4954's empty initial response) decodes to 0 bytes. Returns the
 *	decoded length, or -1.
 *
 *	sasl_login() looks at the decoded client message of a step (0 is the
 *	initial response, 1 the first response to a 334, ...). It returns 1
 *	and writes the login (NUL-terminated, printable ASCII or UTF-8 bytes
 *	>= 0x80, 1 to 255 bytes, no blank) when this message names it, 0 when
 *	this step does not name the login, -1 when the message is malformed
 *	or the login unusable (the exchange is then refused). The password
 *	is never copied out.
 */
#ifndef MOAT_SASL_H
#define MOAT_SASL_H

#include <stddef.h>

enum sasl_mech { SASL_NONE = 0, SASL_PLAIN, SASL_LOGIN, SASL_CRAM_MD5, SASL_SCRAM };

#define SASL_LOGIN_MAX 255
#define SASL_LINE_MAX 12288	/* an AUTH exchange line (Postfix's smtpd_sasl_response_limit) */

enum sasl_mech sasl_mech_find(const char *name, size_t len);
int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t size);
int sasl_login(enum sasl_mech m, unsigned step, const unsigned char *msg, size_t len,
	char *login, size_t size);

#endif
