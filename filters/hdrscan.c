/*
 * hdrscan - forged Authentication-Results out, From values kept, as the
 * header section streams by (see hdrscan.h)
 */
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "authres.h"
#include "hdrscan.h"

enum { HS_HEADER = 0, HS_BODY };

void
hdrscan_init(struct hdrscan *h, const char *authserv_id, hdrscan_out_fn out, void *arg)
{
	size_t n = strlen(authserv_id);

	/* the From buffers are written before they are read (nfrom says
	 * how many): zeroing them would cost 8 KiB a message */
	memset(h, 0, offsetof(struct hdrscan, from));
	memset(h->from_len, 0, sizeof(h->from_len));
	if (n >= sizeof(h->authserv_id))
		n = sizeof(h->authserv_id) - 1;
	memcpy(h->authserv_id, authserv_id, n);
	h->out = out;
	h->arg = arg;
	h->bol = true;
}

/* name_is - the field's name (before optional blanks and ':') is name */
static bool
name_is(const char *f, size_t len, const char *name)
{
	size_t n = strlen(name), i;

	if (len <= n || strncasecmp(f, name, n) != 0)
		return false;
	for (i = n; i < len && (f[i] == ' ' || f[i] == '\t'); i++)
		;
	return i < len && f[i] == ':';
}

/* keep_from - a From field's value, unfolded, for DMARC */
static void
keep_from(struct hdrscan *h, const char *f, size_t len, bool cut)
{
	const char *colon = memchr(f, ':', len);
	char *dst;
	size_t o = 0;

	if (h->nfrom++ >= HDRSCAN_FROM_MAX) {
		h->from_cut = true;
		return;
	}
	dst = h->from[h->nfrom - 1];
	for (size_t i = (size_t)(colon - f) + 1; i < len; i++) {
		if (f[i] == '\r' || f[i] == '\n')
			continue;	/* unfold; the blank after stays */
		if (o == HDRSCAN_FROM_LEN - 1) {
			cut = true;
			break;
		}
		dst[o++] = f[i];
	}
	dst[o] = 0;
	h->from_len[h->nfrom - 1] = o;
	if (cut)
		h->from_cut = true;
}

/* decide - a whole field (or the first HDRSCAN_FIELD_MAX bytes of one):
 * true when it is to be dropped */
static bool
decide(struct hdrscan *h, bool cut)
{
	if (name_is(h->field, h->flen, "From"))
		keep_from(h, h->field, h->flen, cut);
	if (h->authserv_id[0] != 0 && name_is(h->field, h->flen, "Authentication-Results") &&
	    authres_field_is_ours(h->field, h->flen, h->authserv_id)) {
		h->removed++;
		return true;
	}
	return false;
}

/* field_end - the held field is complete */
static void
field_end(struct hdrscan *h)
{
	if (h->flen > 0 && !decide(h, false))
		h->out(h->arg, (const unsigned char *)h->field, h->flen);
	h->flen = 0;
	h->dropping = false;
	h->state &= ~0x100;	/* no longer passing an over-long field through */
}

/* field_add - bytes of the current field */
static void
field_add(struct hdrscan *h, const unsigned char *p, size_t n)
{
	if (h->dropping)
		return;
	if (h->state & 0x100) {		/* over-long, kept: straight through */
		h->out(h->arg, p, n);
		return;
	}
	if (h->flen + n > HDRSCAN_FIELD_MAX) {
		size_t take = HDRSCAN_FIELD_MAX - h->flen;

		if (h->fcap < HDRSCAN_FIELD_MAX) {
			h->field = realloc(h->field, HDRSCAN_FIELD_MAX);
			if (h->field == NULL)
				abort();
			h->fcap = HDRSCAN_FIELD_MAX;
		}
		memcpy(h->field + h->flen, p, take);
		h->flen += take;
		if (decide(h, true)) {
			h->dropping = true;
		} else {
			h->out(h->arg, (const unsigned char *)h->field, h->flen);
			h->out(h->arg, p + take, n - take);
			h->state |= 0x100;
		}
		h->flen = 0;
		return;
	}
	if (h->flen + n > h->fcap) {
		size_t cap = h->fcap ? h->fcap : 1024;

		while (cap < h->flen + n)
			cap *= 2;
		if (cap > HDRSCAN_FIELD_MAX)
			cap = HDRSCAN_FIELD_MAX;
		h->field = realloc(h->field, cap);
		if (h->field == NULL)
			abort();
		h->fcap = cap;
	}
	memcpy(h->field + h->flen, p, n);
	h->flen += n;
}

void
hdrscan_feed(struct hdrscan *h, const unsigned char *buf, size_t len)
{
	while (len > 0) {
		const unsigned char *nl;
		size_t n;

		if ((h->state & 0xff) == HS_BODY) {
			h->out(h->arg, buf, len);
			return;
		}
		if (h->bol) {
			if (buf[0] != ' ' && buf[0] != '\t') {
				field_end(h);
				if (buf[0] == '\r' || buf[0] == '\n') {
					/* the empty line: the body starts (it goes out with it) */
					h->state = HS_BODY;
					continue;
				}
			}
			h->bol = false;
		}
		nl = memchr(buf, '\n', len);
		n = nl ? (size_t)(nl - buf) + 1 : len;
		field_add(h, buf, n);
		if (nl)
			h->bol = true;
		buf += n;
		len -= n;
	}
}

void
hdrscan_finish(struct hdrscan *h)
{
	if ((h->state & 0xff) == HS_HEADER)
		field_end(h);
}

bool
hdrscan_in_body(const struct hdrscan *h)
{
	return (h->state & 0xff) == HS_BODY;
}

void
hdrscan_free(struct hdrscan *h)
{
	free(h->field);
	h->field = NULL;
	h->flen = h->fcap = 0;
}
