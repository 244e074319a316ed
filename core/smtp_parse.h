/*
 * smtp_parse - pure parsers for the SMTP server side (no I/O, no clock)
 *
 * SYNOPSIS
 *	#include "smtp_parse.h"
 *
 *	enum smtp_perr smtp_cmd_parse(const char *line, size_t len,
 *	                              struct smtp_cmd *cmd);
 *	const struct smtp_reject *smtp_mail_parse(const char *arg, size_t len,
 *	                              struct smtp_addr *addr,
 *	                              struct smtp_mail_params *p);
 *	const struct smtp_reject *smtp_rcpt_parse(const char *arg, size_t len,
 *	                              struct smtp_addr *addr,
 *	                              struct smtp_rcpt_params *p, bool smtputf8);
 *	int smtp_addr_render(const struct smtp_addr *a, char *out, size_t size);
 *	int smtp_xtext_encode(const unsigned char *in, size_t len,
 *	                      char *out, size_t size);
 *	int smtp_xtext_decode(const char *in, size_t len,
 *	                      unsigned char *out, size_t size);
 *
 * DESCRIPTION
 *	All input is bytes plus a length: lines may contain NUL and are never
 *	treated as C strings. Nothing is allocated; results live in the
 *	caller's structures (arguments are borrowed pointers into the line).
 *	See core/smtp_parse.c for the grammar that is accepted.
 */
#ifndef MOAT_SMTP_PARSE_H
#define MOAT_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_CMD_LINE_MAX  512	/* RFC 5321 4.5.3.1.4, incl. CRLF */
#define SMTP_LOCAL_MAX     64	/* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX    255	/* RFC 5321 4.5.3.1.2 */
#define SMTP_PATH_MAX      256	/* RFC 5321 4.5.3.1.3, incl. <> */
#define SMTP_XTEXT_MAX     100	/* ENVID / ORCPT decoded bound (RFC 3461) */

enum smtp_verb {
	SMTP_V_UNKNOWN = 0,
	SMTP_V_HELO, SMTP_V_EHLO, SMTP_V_MAIL, SMTP_V_RCPT, SMTP_V_DATA,
	SMTP_V_RSET, SMTP_V_NOOP, SMTP_V_QUIT, SMTP_V_VRFY, SMTP_V_EXPN,
	SMTP_V_HELP, SMTP_V_STARTTLS, SMTP_V_AUTH, SMTP_V_BDAT,
	SMTP_V_XCLIENT, SMTP_V_XFORWARD, SMTP_V_ETRN, SMTP_V_TURN,
	SMTP_V_PROXY,		/* "PROXY " header sent by a client: never honoured */
	SMTP_V_HTTP,		/* GET/POST/HEAD/PUT/CONNECT/OPTIONS/...: not SMTP */
	SMTP_V__COUNT
};

/* Result of smtp_cmd_parse(). */
enum smtp_perr {
	SMTP_P_OK = 0,
	SMTP_P_EMPTY,		/* empty line */
	SMTP_P_BADCHAR,		/* NUL, CR, LF or other control byte in the line */
	SMTP_P_TOOLONG,		/* longer than SMTP_CMD_LINE_MAX - 2 */
	SMTP_P_SYNTAX,		/* verb known but malformed (e.g. "MAIL TO:", "MAILFROM") */
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;	/* borrowed: after the verb (after "FROM:"/"TO:"
				 * for MAIL/RCPT), leading blanks skipped */
	size_t arglen;		/* trailing blanks removed */
};

/* A reply the caller sends for a parse failure (static storage). */
struct smtp_reject {
	int code;		/* 501, 553, 555, 552 ... */
	const char *enh;	/* "5.1.7" */
	const char *text;	/* "Bad sender address syntax" */
};

struct smtp_addr {
	bool null;		/* <> */
	bool utf8;		/* contains 8-bit bytes (valid UTF-8) */
	bool literal;		/* domain is an address literal [..] */
	bool quoted;		/* local part was a quoted string */
	bool had_route;		/* a source route was present and dropped */
	size_t local_len;	/* decoded local part (quotes and \ removed) */
	size_t domain_len;	/* domain, ASCII lower-cased, trailing dot removed */
	char local[SMTP_LOCAL_MAX + 1];
	char domain[SMTP_DOMAIN_MAX + 1];
};

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

struct smtp_mail_params {
	bool has_size;
	uint64_t size;
	enum smtp_body body;
	bool smtputf8;
	enum smtp_ret ret;
	size_t envid_len;	/* 0 = absent; decoded (xtext) value */
	unsigned char envid[SMTP_XTEXT_MAX + 1];
	bool has_auth;		/* AUTH=<mailbox> (RFC 4954), decoded */
	size_t auth_len;
	unsigned char auth[SMTP_PATH_MAX + 1];
};

#define SMTP_NOTIFY_NEVER   1u
#define SMTP_NOTIFY_SUCCESS 2u
#define SMTP_NOTIFY_FAILURE 4u
#define SMTP_NOTIFY_DELAY   8u

struct smtp_rcpt_params {
	unsigned notify;	/* 0 = absent */
	size_t orcpt_len;	/* 0 = absent; length of the decoded address */
	char orcpt_type[16];	/* addr-type, lower case, e.g. "rfc822" */
	unsigned char orcpt[SMTP_XTEXT_MAX * 5 + 1];
};

/* Parse one command line (without its CRLF). */
enum smtp_perr smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd);

/* Name of a verb, upper case ("MAIL"); "?" for unknown. */
const char *smtp_verb_name(enum smtp_verb v);

/*
 * Parse the argument of MAIL (what follows "FROM:") and of RCPT (what
 * follows "TO:"): a path, then ESMTP parameters. Return NULL on success, or
 * the reply to send. Unknown parameters: 555 5.5.4. Duplicated parameter:
 * 501 5.5.4. 8-bit in the address without SMTPUTF8: 553 5.6.7. RCPT <>: 501.
 * RCPT "<postmaster>" (no domain) is accepted with domain_len 0.
 */
const struct smtp_reject *smtp_mail_parse(const char *arg, size_t len,
	struct smtp_addr *addr, struct smtp_mail_params *p);
const struct smtp_reject *smtp_rcpt_parse(const char *arg, size_t len,
	struct smtp_addr *addr, struct smtp_rcpt_params *p, bool smtputf8);

/* Render "<local@domain>" (local part re-quoted when needed) into out;
 * returns the length or -1 when it does not fit. NUL-terminates. */
int smtp_addr_render(const struct smtp_addr *a, char *out, size_t size);

/* RFC 3461 xtext. Return the output length or -1 (bad input / no room).
 * encode NUL-terminates its output. */
int smtp_xtext_encode(const unsigned char *in, size_t len, char *out, size_t size);
int smtp_xtext_decode(const char *in, size_t len, unsigned char *out, size_t size);

/* Is [s, s+len) a syntactically valid HELO/EHLO argument (domain or address
 * literal, ASCII, <= 255)? Used to decide what the upstream is told. */
bool smtp_helo_valid(const char *s, size_t len);

#endif
