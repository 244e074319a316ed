/*
 * pdel_req - the request parser of Postfix's policy delegation protocol
 * (SMTPD_POLICY_README): no I/O, no allocation
 *
 * SYNOPSIS
 *	void pdel_req_init(struct pdel_req *r);
 *	size_t pdel_req_feed(struct pdel_req *r, const char *buf, size_t len,
 *	                     enum pdel_rc *rc);
 *	const char *pdel_req_get(const struct pdel_req *r, enum pdel_attr a);
 *	enum pdel_state pdel_req_state(const struct pdel_req *r);
 *
 * DESCRIPTION
 *	A request is "name=value" lines ended by LF (one CR before it is
 *	dropped), ended by an empty line. pdel_req_feed() takes bytes as they
 *	come, in chunks of any size, and returns how many it consumed: all of
 *	them with PDEL_MORE (the request is not complete), or up to the end
 *	of the request's empty line with PDEL_DONE (a good request: its
 *	attributes are read with pdel_req_get()) or PDEL_BAD (r->err says
 *	why; the caller answers and closes, since the framing can no longer
 *	be trusted). After DONE or BAD, pdel_req_init() starts the next one.
 *	The result does not depend on how the input was cut.
 *
 *	Limits: a line of PDEL_LINE_MAX bytes (LF included), PDEL_ATTR_MAX
 *	lines, PDEL_REQ_MAX bytes in all. A line without '=', with an empty
 *	name, or holding NUL or another control byte but TAB is bad. Unknown
 *	attributes are kept in the count and otherwise ignored (the README:
 *	a server ignores what it does not know); of a repeated known one the
 *	last counts. Values point into the request's own buffer, terminated.
 */
#ifndef MOAT_PDEL_REQ_H
#define MOAT_PDEL_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PDEL_LINE_MAX 2048
#define PDEL_ATTR_MAX 100
#define PDEL_REQ_MAX 16384

enum pdel_rc { PDEL_MORE = 0, PDEL_DONE, PDEL_BAD };

enum pdel_attr {
	PDEL_A_REQUEST = 0, PDEL_A_PROTOCOL_STATE, PDEL_A_PROTOCOL_NAME, PDEL_A_HELO_NAME,
	PDEL_A_QUEUE_ID, PDEL_A_SENDER, PDEL_A_RECIPIENT, PDEL_A_RECIPIENT_COUNT,
	PDEL_A_CLIENT_ADDRESS, PDEL_A_CLIENT_NAME, PDEL_A_REVERSE_CLIENT_NAME,
	PDEL_A_CLIENT_PORT, PDEL_A_INSTANCE, PDEL_A_SASL_METHOD, PDEL_A_SASL_USERNAME,
	PDEL_A_SASL_SENDER, PDEL_A_SIZE, PDEL_A_CCERT_SUBJECT, PDEL_A_CCERT_ISSUER,
	PDEL_A_CCERT_FINGERPRINT, PDEL_A_ENCRYPTION_PROTOCOL, PDEL_A_ENCRYPTION_CIPHER,
	PDEL_A_ENCRYPTION_KEYSIZE, PDEL_A__COUNT
};

/* the SMTP protocol state of a request (protocol_state) */
enum pdel_state { PDEL_ST_NONE = 0, PDEL_ST_CONNECT, PDEL_ST_HELO, PDEL_ST_MAIL,
	PDEL_ST_RCPT, PDEL_ST_DATA, PDEL_ST_EOM, PDEL_ST_OTHER };

struct pdel_req {
	size_t len;			/* bytes of buf in use */
	size_t line_start;		/* where the current line begins in buf */
	unsigned nattr;			/* lines taken */
	const char *err;		/* PDEL_BAD: why (static text) */
	bool done;			/* DONE or BAD given */
	uint16_t val[PDEL_A__COUNT];	/* offset of the value in buf + 1; 0: absent */
	char buf[PDEL_REQ_MAX];
};

void pdel_req_init(struct pdel_req *r);
size_t pdel_req_feed(struct pdel_req *r, const char *buf, size_t len, enum pdel_rc *rc);
/* pdel_req_get - the value (terminated), or NULL when the request had none */
const char *pdel_req_get(const struct pdel_req *r, enum pdel_attr a);
const char *pdel_attr_name(enum pdel_attr a);
enum pdel_state pdel_req_state(const struct pdel_req *r);

#endif
