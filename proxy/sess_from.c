/*
 * sess_from - the header From of a message, for the fact "from" at data
 *
 * DESCRIPTION
 *	Only when a rule reads "from" (rules_reads_from), the decoder's output
 *	is copied up to the end of the header block (the first empty line),
 *	at most SESS_FROM_HDR_MAX bytes, beside the spool. At the end of data
 *	owner_from_parse() takes the mailboxes of the one From field; a
 *	missing, doubled or unreadable From gives no mailbox, and then
 *	"from owned-by MAP" is false and "from in LIST" is false.
 */
#include <stdlib.h>
#include <string.h>

#include "owner.h"
#include "rules.h"
#include "session.h"
#include "xalloc.h"

#define SESS_FROM_HDR_MAX (64 * 1024)

/* sess_from_tap - decoder output: keep the header block */
void
sess_from_tap(struct txn *t, const unsigned char *buf, size_t len)
{
	size_t take = len, old = t->hdr_len;

	if (t->hdr_done)
		return;
	if (old + take > SESS_FROM_HDR_MAX) {
		take = SESS_FROM_HDR_MAX - old;
		t->hdr_done = true;
	}
	t->hdr = xrealloc(t->hdr, old + take + 1);
	memcpy(t->hdr + old, buf, take);
	t->hdr_len = old + take;
	/* the empty line may straddle two chunks: look a little back */
	{
		size_t from = old > 3 ? old - 3 : 0;
		if (t->hdr_len >= 2 && memcmp(t->hdr, "\r\n", 2) == 0)
			t->hdr_done = true;
		for (size_t i = from; i + 4 <= t->hdr_len && !t->hdr_done; i++)
			if (memcmp(t->hdr + i, "\r\n\r\n", 4) == 0)
				t->hdr_done = true;
	}
}

/* sess_from_facts - the From mailboxes into the data facts */
void
sess_from_facts(const struct txn *t, struct rules_facts *f, struct owner_from *of)
{
	if (t->hdr == NULL)
		return;
	f->have_from = true;
	if (owner_from_parse(t->hdr, t->hdr_len, of) <= 0)
		return;
	f->from_count = of->n;
	f->from_all = of->all;
	f->from_local = of->all[0];
	f->from_llen = strlen(of->all[0]);
	f->from_domain = of->all[1];
	f->from_dlen = strlen(of->all[1]);
}
