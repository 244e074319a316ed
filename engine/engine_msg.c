/*
 * engine_msg - what the checks need from a message as it streams by:
 * DKIM's hashing (verifying, and signing when a rule may sign), the
 * header scanner, the header block for "from" rules
 *
 * SYNOPSIS
 *	struct eng_msg *engine_msg_new(const struct conf *c, eng_msg_out_fn out, void *arg);
 *	void engine_msg_set_stuffed(struct eng_msg *m);
 *	void engine_msg_feed(struct eng_msg *m, const void *buf, size_t len);
 *	void engine_msg_finish(struct eng_msg *m);
 *	void engine_msg_free(struct eng_msg *m);
 *	struct eng_ahead *engine_msg_ahead(struct eng_msg *m);
 *
 * DESCRIPTION
 *	The input is the message as moat decoded it: CRLF line ends, dot-
 *	stuffing removed, cut anywhere (or, after engine_msg_set_stuffed(),
 *	stuffed again for the wire, as moatd's decoder gives it: the verifier
 *	and the signer then get it without the stuffing dots). Every byte
 *	goes to DKIM (hashing only: no lookups here) and to the header
 *	scanner (filters/hdrscan.c), which passes the message on to out() without the Authentication-
 *	Results fields that claim our authserv-id and keeps the From values
 *	for DMARC. When a rule reads "from", the header block (up to the
 *	first empty line, at most ENG_HDR_MAX bytes) is kept too; at the end
 *	of the data the engine parses its From field (owner_from_parse): a
 *	missing, doubled or unreadable From gives no mailbox, and then "from
 *	owned-by MAP" and "from in LIST" are false.
 *
 *	Once the header section has ended (the scanner and the verifier
 *	both past its empty line), engine_msg_ahead() gives the names the end
 *	of the data will look up that the resolver's cache lacks: the key
 *	records of the signatures the verifier parsed (at most
 *	max-signatures, selector and domain checked: dkimv_msg_keynames) and
 *	the DMARC records of the From domain, when there is exactly one From
 *	field with one mailbox of a valid domain (several authors are left
 *	to the end of the data). Once per message.
 *
 *	No loop state is touched: any one thread may build and feed a
 *	message; engine_data() hands it to the engine's loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim.h"
#include "dkim_sign.h"
#include "dmarc.h"
#include "dmarc_record.h"
#include "dns.h"
#include "engine.h"
#include "engine_int.h"
#include "hdrscan.h"
#include "rules.h"
#include "xalloc.h"

static void
msg_discard(void *arg, const unsigned char *buf, size_t len)
{
	(void)arg;
	(void)buf;
	(void)len;
}

/* engine_msg_new - a message of a session under policy c */
struct eng_msg *
engine_msg_new(const struct conf *c, eng_msg_out_fn out, void *arg)
{
	/* not calloc: the scanner's From buffers (8 KiB) need no zeroing */
	struct eng_msg *m = xmalloc(sizeof(*m));

	hdrscan_init(&m->hs, c->authserv_id, out != NULL ? out : msg_discard, arg);
	m->out = out;
	m->arg = arg;
	m->finished = false;
	m->stuffed = false;
	m->bol = true;
	m->dkim = c->dkim && engine_g.dkim != NULL ? dkimv_msg_new(engine_g.dkim) : NULL;
	/* signing hashes as the data streams in, before the rules decide */
	m->sign = c->dkim_keys != NULL && engine_g.dkims != NULL && rules_signs(c->rules) ?
	    dkims_msg_new(engine_g.dkims, c->dkim_keys, c->dkim_sign_expiry_ms / 1000) : NULL;
	m->capture = rules_reads_from(c->rules) || m->sign != NULL;
	m->hdr_done = false;
	m->hdr = NULL;
	m->hdr_len = 0;
	m->ahead_done = false;
	m->dmarc_mode = (unsigned char)(engine_g.psl != NULL ? c->dmarc : CONF_DMARC_OFF);
	return m;
}

/* capture - keep the header block, up to its empty line */
static void
capture(struct eng_msg *m, const unsigned char *buf, size_t len)
{
	size_t take = len, old = m->hdr_len;

	if (m->hdr_done)
		return;
	if (old + take > ENG_HDR_MAX) {
		take = ENG_HDR_MAX - old;
		m->hdr_done = true;
	}
	m->hdr = xrealloc(m->hdr, old + take + 1);
	memcpy(m->hdr + old, buf, take);
	m->hdr_len = old + take;
	m->hdr[m->hdr_len] = 0;
	/* the empty line may straddle two chunks: look a little back */
	if (m->hdr_len >= 2 && memcmp(m->hdr, "\r\n", 2) == 0)
		m->hdr_done = true;
	for (size_t i = old > 3 ? old - 3 : 0; i + 4 <= m->hdr_len && !m->hdr_done; i++)
		if (memcmp(m->hdr + i, "\r\n\r\n", 4) == 0)
			m->hdr_done = true;
}

/* content - message content (no stuffing) to the DKIM verifier and signer */
static void
content(struct eng_msg *m, const void *buf, size_t len)
{
	if (m->dkim != NULL)
		(void)dkimv_msg_feed(m->dkim, buf, len);	/* -1: permerror later */
	if (m->sign != NULL)
		dkims_msg_feed(m->sign, buf, len);
}

/* engine_msg_set_stuffed - the bytes fed are stuffed for the wire */
void
engine_msg_set_stuffed(struct eng_msg *m)
{
	m->stuffed = true;
}

/* engine_msg_feed - decoded message bytes */
void
engine_msg_feed(struct eng_msg *m, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (!m->stuffed)
		content(m, buf, len);
	else if (m->dkim != NULL || m->sign != NULL) {
		/* a line's leading '.' is the stuffing one: DKIM hashes
		 * content. Line by line (memchr), not byte by byte: a 100 KiB
		 * message cost 50-80 us more CPU with the byte loop, even with
		 * neither verifier nor signer to feed */
		size_t i = 0, start = 0;

		while (i < len) {
			const unsigned char *nl;

			if (m->bol && p[i] == '.') {
				if (i > start)
					content(m, p + start, i - start);
				start = i + 1;
			}
			nl = memchr(p + i, '\n', len - i);
			if (nl == NULL) {
				m->bol = false;
				break;
			}
			i = (size_t)(nl - p) + 1;
			m->bol = true;
		}
		if (len > start)
			content(m, p + start, len - start);
	}
	hdrscan_feed(&m->hs, buf, len);
	if (m->capture)
		capture(m, buf, len);
}

/* engine_msg_finish - a header field still held goes out */
void
engine_msg_finish(struct eng_msg *m)
{
	if (m->finished)
		return;
	hdrscan_finish(&m->hs);
	m->finished = true;
}

void
engine_msg_free(struct eng_msg *m)
{
	if (m == NULL)
		return;
	if (m->dkim != NULL)
		dkimv_msg_free(m->dkim);
	dkims_msg_free(m->sign);
	hdrscan_free(&m->hs);
	free(m->hdr);
	free(m);
}

/* eng_dmarc_names - see engine_int.h */
int
eng_dmarc_names(int mode, const char *d, char (*out)[320])
{
	char org[DMARC_DOMAIN_SIZE];
	int n = 0;

	if (mode == CONF_DMARC_OFF || engine_g.psl == NULL || d[0] == 0)
		return 0;
	snprintf(out[n++], 320, "_dmarc.%s", d);
	if (mode == CONF_DMARC_7489 &&
	    dmarc_psl_orgdomain(engine_g.psl, d, org, sizeof(org)) >= 0 && strcmp(org, d) != 0)
		snprintf(out[n++], 320, "_dmarc.%s", org);
	return n;
}

/* from_domain - the one author domain of the header (A-labels), or "" */
static void
from_domain(const struct hdrscan *hs, char *out, size_t size)
{
	struct dmarc_author a;

	out[0] = 0;
	if (hs->nfrom != 1 || hs->from_cut)
		return;
	dmarc_author_init(&a);
	dmarc_author_add(&a, hs->from[0], hs->from_len[0]);
	if (a.nmailbox == 1 && !a.bad && a.ndomain == 1 && strlen(a.domain[0]) < size)
		memcpy(out, a.domain[0], strlen(a.domain[0]) + 1);
}

/* ahead_add - a name not in the resolver's cache into *a (made on first use) */
static void
ahead_add(struct eng_ahead **a, const char *name)
{
	if (dns_cached(name, DNS_T_TXT))
		return;
	if (*a == NULL) {
		*a = xmalloc(sizeof(**a));
		(*a)->n = 0;
	}
	if ((*a)->n < ENG_AHEAD_MAX)
		memcpy((*a)->name[(*a)->n++], name, strlen(name) + 1);
}

/* engine_msg_ahead - see engine.h */
struct eng_ahead *
engine_msg_ahead(struct eng_msg *m)
{
	char keys[DKIMV_MAX_SIGS][320], dm[2][320], d[DMARC_DOMAIN_SIZE];
	struct eng_ahead *a = NULL;
	int nk = 0, nd = 0;

	if (m == NULL || m->ahead_done || !hdrscan_in_body(&m->hs) || dkimv_msg_in_header(m->dkim))
		return NULL;
	m->ahead_done = true;
	if (m->dkim != NULL)
		nk = dkimv_msg_keynames(m->dkim, keys, DKIMV_MAX_SIGS);
	if (m->dmarc_mode != CONF_DMARC_OFF) {
		from_domain(&m->hs, d, sizeof(d));
		nd = eng_dmarc_names(m->dmarc_mode, d, dm);
	}
	for (int i = 0; i < nk; i++)
		ahead_add(&a, keys[i]);
	for (int i = 0; i < nd; i++)
		ahead_add(&a, dm[i]);
	return a;
}

void
engine_ahead_free(struct eng_ahead *a)
{
	free(a);
}
