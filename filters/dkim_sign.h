/*
 * dkim_sign - DKIM signing (RFC 6376, RFC 8463) with OpenSSL: the message
 * hashed while DATA streams in, one signature per key of its header From
 * domain
 *
 * SYNOPSIS
 *	#include "dkim_sign.h"
 *
 *	struct dkims *dkims_new(uint64_t fixed_time, char *err, size_t errlen);
 *	void dkims_free(struct dkims *s);
 *
 *	struct dkims_msg *dkims_msg_new(struct dkims *s, const struct dkim_keys *keys,
 *	                                uint64_t expiry_s);
 *	void dkims_msg_feed(struct dkims_msg *m, const char *buf, size_t len);
 *	const char *dkims_msg_from_domain(const struct dkims_msg *m);
 *	char *dkims_msg_finish(struct dkims_msg *m, size_t *len, char *info, size_t infolen);
 *	void dkims_msg_free(struct dkims_msg *m);
 *
 * DESCRIPTION
 *	A struct dkims holds what every signature shares: relaxed/relaxed,
 *	SHA-256, t= (fixed_time pins it for tests; 0: the clock), and the
 *	header fields to sign: From, Sender, Reply-To, To,
 *	Cc, Subject, Date, Message-ID, In-Reply-To, References, the MIME
 *	fields (MIME-Version, Content-*) and the List-* fields, each
 *	over-signed (named once more than it occurs, RFC 6376 8.15), so that
 *	none can be added below the signature later. Make one at start and
 *	share it between threads.
 *
 *	A struct dkims_msg signs one message. feed takes the message as the
 *	upstream receives it apart from moat's added fields (CRLF lines,
 *	dot-unstuffed, cut anywhere). The header block is held (at most
 *	DKIMS_HEADER_MAX bytes, else nothing is signed); at its end the
 *	From field is read (filters/owner.h: exactly one mailbox, else
 *	nothing is signed), the keys of its domain are found
 *	(dkim_keys_for) and the fields to sign are put in canonical form;
 *	body bytes then go to the one body hash at once, nothing kept. dkims_msg_from_domain() gives the From domain found (NULL
 *	before the end of the header or when none can be signed for).
 *
 *	dkims_msg_finish() ends the body and gives the DKIM-Signature fields
 *	(CRLF lines, folded, allocated: the caller frees), or NULL when
 *	nothing was signed; info gets a short reason or the keys used, for
 *	the log. expiry_s > 0 adds x= that many seconds after t=.
 *
 * THREADS
 *	A dkims_msg is fed on one thread at a time; finish and free may run
 *	on another. It does no I/O.
 */
#ifndef MOAT_DKIM_SIGN_H
#define MOAT_DKIM_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "dkim_key.h"

#define DKIMS_HEADER_MAX (256 * 1024)

struct dkims;
struct dkims_msg;

struct dkims *dkims_new(uint64_t fixed_time, char *err, size_t errlen);
void dkims_free(struct dkims *s);
struct dkims_msg *dkims_msg_new(struct dkims *s, const struct dkim_keys *keys, uint64_t expiry_s);
void dkims_msg_feed(struct dkims_msg *m, const char *buf, size_t len);
const char *dkims_msg_from_domain(const struct dkims_msg *m);
char *dkims_msg_finish(struct dkims_msg *m, size_t *len, char *info, size_t infolen);
void dkims_msg_free(struct dkims_msg *m);

#endif
