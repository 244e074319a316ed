/*
 * pdel_req - the request parser of Postfix's policy delegation protocol
 *
 * DESCRIPTION
 *	See pdel_req.h. Bytes are copied into the request's buffer as they
 *	come; a line is judged when its LF arrives (or as soon as it is too
 *	long): its '=' becomes the name's end and its LF the value's, so
 *	values are terminated strings in place. Nothing is allocated and the
 *	buffer is never cleared: a request costs what it sent.
 */
#include <string.h>

#include "pdel_req.h"

static const char *const pdel_names[PDEL_A__COUNT] = {
	"request", "protocol_state", "protocol_name", "helo_name", "queue_id", "sender",
	"recipient", "recipient_count", "client_address", "client_name",
	"reverse_client_name", "client_port", "instance", "sasl_method", "sasl_username",
	"sasl_sender", "size", "ccert_subject", "ccert_issuer", "ccert_fingerprint",
	"encryption_protocol", "encryption_cipher", "encryption_keysize",
};

/* pdel_attr_name - the attribute's name in the protocol */
const char *
pdel_attr_name(enum pdel_attr a)
{
	return a < PDEL_A__COUNT ? pdel_names[a] : "?";
}

/* pdel_req_init - ready for a new request */
void
pdel_req_init(struct pdel_req *r)
{
	r->len = 0;
	r->line_start = 0;
	r->nattr = 0;
	r->err = NULL;
	r->done = false;
	memset(r->val, 0, sizeof(r->val));
}

/* pdel_line - judge the complete line buf[line_start, end) (LF at end,
 * not included): 0, or -1 with r->err */
static int
pdel_line(struct pdel_req *r, size_t end)
{
	char *l = r->buf + r->line_start;
	size_t n = end - r->line_start, nl;
	char *eq;

	if (n > 0 && l[n - 1] == '\r')
		n--;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)l[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			r->err = "control byte in a line";
			return -1;
		}
	}
	eq = memchr(l, '=', n);
	if (eq == NULL) {
		r->err = "a line without '='";
		return -1;
	}
	nl = (size_t)(eq - l);
	if (nl == 0) {
		r->err = "an attribute without a name";
		return -1;
	}
	if (++r->nattr > PDEL_ATTR_MAX) {
		r->err = "too many attributes";
		return -1;
	}
	*eq = 0;
	l[n] = 0;
	for (int a = 0; a < PDEL_A__COUNT; a++)
		if (strlen(pdel_names[a]) == nl && memcmp(pdel_names[a], l, nl) == 0) {
			r->val[a] = (uint16_t)(eq + 1 - r->buf + 1);
			break;
		}
	return 0;
}

/* pdel_req_feed - take bytes; see pdel_req.h */
size_t
pdel_req_feed(struct pdel_req *r, const char *buf, size_t len, enum pdel_rc *rc)
{
	size_t used = 0;

	*rc = PDEL_MORE;
	if (r->done) {
		*rc = r->err != NULL ? PDEL_BAD : PDEL_DONE;
		return 0;
	}
	while (used < len) {
		const char *lf = memchr(buf + used, '\n', len - used);
		size_t take = lf != NULL ? (size_t)(lf - (buf + used)) + 1 : len - used;
		size_t cur = r->len - r->line_start;	/* the line's bytes so far */

		size_t room_line = PDEL_LINE_MAX - cur, room_req = PDEL_REQ_MAX - r->len;

		/* the line's cap (LF included) and the request's: the error
		 * and the bytes taken are the same however the input is cut
		 * (the bytes up to the cap, then the first cap reached) */
		if (take > room_line || take > room_req) {
			r->err = room_line <= room_req ? "line too long" : "request too long";
			used += room_line <= room_req ? room_line : room_req;
			break;
		}
		memcpy(r->buf + r->len, buf + used, take);
		r->len += take;
		used += take;
		if (lf == NULL)
			return used;			/* the line goes on */
		{
			size_t end = r->len - 1;	/* the LF */
			size_t n = end - r->line_start;

			if (n == 0 || (n == 1 && r->buf[r->line_start] == '\r')) {
				r->done = true;
				*rc = PDEL_DONE;
				return used;		/* the empty line: the end */
			}
			if (pdel_line(r, end) != 0) {
				r->done = true;
				*rc = PDEL_BAD;
				return used;
			}
			r->line_start = r->len;
		}
	}
	if (r->err != NULL) {
		r->done = true;
		*rc = PDEL_BAD;
	}
	return used;
}

/* pdel_req_get - a known attribute's value, or NULL */
const char *
pdel_req_get(const struct pdel_req *r, enum pdel_attr a)
{
	if (a >= PDEL_A__COUNT || r->val[a] == 0)
		return NULL;
	return r->buf + r->val[a] - 1;
}

/* pdel_req_state - protocol_state as an enum (EHLO and HELO are one) */
enum pdel_state
pdel_req_state(const struct pdel_req *r)
{
	static const struct { const char *name; enum pdel_state st; } states[] = {
		{ "CONNECT", PDEL_ST_CONNECT }, { "EHLO", PDEL_ST_HELO }, { "HELO", PDEL_ST_HELO },
		{ "MAIL", PDEL_ST_MAIL }, { "RCPT", PDEL_ST_RCPT }, { "DATA", PDEL_ST_DATA },
		{ "END-OF-MESSAGE", PDEL_ST_EOM },
	};
	const char *s = pdel_req_get(r, PDEL_A_PROTOCOL_STATE);

	if (s == NULL || s[0] == 0)
		return PDEL_ST_NONE;
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (strcmp(states[i].name, s) == 0)
			return states[i].st;
	return PDEL_ST_OTHER;
}
