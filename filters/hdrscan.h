/*
 * hdrscan - the message's header section as it streams by: forged
 * Authentication-Results fields out, From field values kept
 *
 * SYNOPSIS
 *	void hdrscan_init(struct hdrscan *h, const char *authserv_id,
 *	                  hdrscan_out_fn out, void *arg);
 *	void hdrscan_feed(struct hdrscan *h, const unsigned char *buf, size_t len);
 *	void hdrscan_finish(struct hdrscan *h);
 *	bool hdrscan_in_body(const struct hdrscan *h);
 *	void hdrscan_free(struct hdrscan *h);
 *
 * DESCRIPTION
 *	The input is the message as moat decoded it (CRLF line ends, dot-
 *	stuffing removed), in chunks cut anywhere. Everything goes to out()
 *	unchanged and in order, except header fields named
 *	Authentication-Results whose authserv-id is ours (authres.h): those
 *	are dropped (RFC 8601 section 5: a receiver removes fields that claim
 *	its own id), and counted in h->removed.
 *
 *	A header field is held until its end is known (the next line that
 *	does not start with a blank). A field longer than HDRSCAN_FIELD_MAX
 *	is decided on its first HDRSCAN_FIELD_MAX bytes (the authserv-id comes
 *	first), then the rest follows that decision without being held.
 *	The header section ends at the first empty line (or at a line that
 *	cannot be a header field); the body is passed through without a look.
 *
 *	The values of From fields (unfolded: CRLF before a blank removed) are
 *	kept for DMARC: at most HDRSCAN_FROM_MAX fields of at most
 *	HDRSCAN_FROM_LEN bytes each; nfrom counts every From field seen, and
 *	from_cut says one was longer than kept.
 *
 *	hdrscan_finish() flushes a field still held (a message that ends in
 *	its header section). Memory: the held field, allocated on demand.
 */
#ifndef MOAT_HDRSCAN_H
#define MOAT_HDRSCAN_H

#include <stdbool.h>
#include <stddef.h>

#define HDRSCAN_FIELD_MAX (64 * 1024)
#define HDRSCAN_FROM_MAX 4
#define HDRSCAN_FROM_LEN 2048
#define HDRSCAN_ID_MAX 256

typedef void (*hdrscan_out_fn)(void *arg, const unsigned char *buf, size_t len);

struct hdrscan {
	char authserv_id[HDRSCAN_ID_MAX];
	hdrscan_out_fn out;
	void *arg;
	int state;		/* private */
	bool bol;		/* at the beginning of a line */
	bool dropping;		/* an over-long field being dropped */
	char *field;		/* the field being held */
	size_t flen, fcap;
	unsigned removed;	/* forged fields dropped */
	int nfrom;		/* From fields seen */
	bool from_cut;
	char from[HDRSCAN_FROM_MAX][HDRSCAN_FROM_LEN];
	size_t from_len[HDRSCAN_FROM_MAX];
};

void hdrscan_init(struct hdrscan *h, const char *authserv_id, hdrscan_out_fn out, void *arg);
void hdrscan_feed(struct hdrscan *h, const unsigned char *buf, size_t len);
void hdrscan_finish(struct hdrscan *h);
/* hdrscan_in_body - the header section has ended (its empty line was
 * fed): the From values are complete */
bool hdrscan_in_body(const struct hdrscan *h);
void hdrscan_free(struct hdrscan *h);

#endif
