/*
 * upstream - the connection to the upstream MTA that one client session
 * drives in lockstep (private to proxy/)
 *
 * SYNOPSIS
 *	struct ups *ups_new(struct worker *w, const struct conf *c, uint64_t sid,
 *	                    const struct ups_owner *o);
 *	void ups_submit(struct ups *u, enum ups_kind kind, const char *line,
 *	                size_t len, struct slot *sl, struct spool *sp);
 *	void ups_free(struct ups *u);
 *
 * DESCRIPTION
 *	The session (smtp_server.c) is the owner: it makes its struct ups on
 *	first use and talks to it only through the functions below; the
 *	upstream side talks back only through struct ups_owner, so
 *	upstream.c knows nothing of the session's insides. A struct slot is
 *	the owner's place for a client reply: upstream.c only hands it back.
 *
 *	ups_prepare() connects (or takes a parked connection) and sets it
 *	up ahead of any command, so that the first one finds it ready (the
 *	session calls it once the client's HELO or EHLO is accepted, with
 *	upstream-connect helo); a connection set up so that fails before
 *	the owner sent anything is not the owner's loss (no lost callback):
 *	the next command connects again.
 *
 *	ups_submit() queues a command (the line with its CRLF, copied) and
 *	connects first when needed; sl is the slot its reply goes to (NULL
 *	for RSET and QUIT, which are answered by nobody); sp is the message
 *	of UK_DATA (owned by upstream.c from then on). The callbacks:
 *
 *	reply	the upstream's reply r to a command of the owner (MAIL, RCPT,
 *		DATA refused before the content, the dot, AUTH and its lines;
 *		sl NULL for the "*" the owner sent on its own). The owner
 *		relays it (reply_render() sanitises) and notes what it means.
 *	error	a reply of upstream.c's own for sl, one CRLF line, to the
 *		command of kind k: the connection failed (4xx), the message
 *		could not be read; with close the client session must end
 *		after it.
 *	lost	the connection failed: what was open on it (the transaction,
 *		an AUTH exchange) is gone. Comes before the error replies.
 *	ident	who the client is now (address, HELO, login), asked when
 *		XCLIENT, a PROXY header or the EHLO after XCLIENT is written.
 *
 *	Callbacks may run the owner's input further (more ups_submit()
 *	calls) and may make it close, never free it: the owner frees its
 *	struct ups with itself, from an event of its own, after
 *	ups_owner_closing() (sess_close()) has told upstream.c to call back
 *	no more.
 */
#ifndef MOAT_UPSTREAM_H
#define MOAT_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "identity.h"
#include "reply.h"

struct slot;
struct spool;
struct worker;
struct ups;

enum ups_kind {
	UK_GREETING = 0, UK_EHLO, UK_XCLIENT, UK_EHLO2,
	UK_MAIL, UK_RCPT, UK_DATA, UK_DOT, UK_RSET, UK_QUIT,
	UK_STARTTLS, UK_AUTH, UK_AUTHDATA, UK_NOOP
};

struct ups_owner {
	void *arg;
	void (*reply)(void *arg, enum ups_kind k, struct slot *sl, const struct reply *r);
	void (*error)(void *arg, enum ups_kind k, struct slot *sl, const char *text, size_t len,
	    bool close);
	void (*lost)(void *arg);
	void (*ident)(void *arg, struct ident_client *ic);
};

struct ups *ups_new(struct worker *w, const struct conf *c, uint64_t sid,
	const struct ups_owner *o);
void ups_submit(struct ups *u, enum ups_kind kind, const char *line, size_t len,
	struct slot *sl, struct spool *sp);
void ups_prepare(struct ups *u);		/* connect and set up now, ahead of a command */
bool ups_has_txn(const struct ups *u);		/* a transaction open or opening; NULL: false */
bool ups_dot_pending(const struct ups *u);	/* the message went upstream, no answer yet */
bool ups_gave_up(const struct ups *u);		/* three connections used, none left */
void ups_disconnect(struct ups *u);		/* drop the connection now; NULL: nothing */
void ups_owner_closing(struct ups *u);		/* no callback any more; NULL: nothing */
void ups_free(struct ups *u);			/* the owner ends; NULL: nothing */

/* what the upstream offered in its last EHLO, process-wide */
unsigned ups_known_caps(uint64_t *size);
bool ups_auth_offered(const char *mech, size_t len);

#define UPS_CAP_PIPELINING 0x01u
#define UPS_CAP_SIZE       0x02u
#define UPS_CAP_8BITMIME   0x04u
#define UPS_CAP_SMTPUTF8   0x08u
#define UPS_CAP_DSN        0x10u
#define UPS_CAP_XCLIENT    0x20u
#define UPS_CAP_ENHANCED   0x40u
#define UPS_CAP_KNOWN      0x80u	/* learned from a real EHLO */
#define UPS_CAP_STARTTLS   0x100u
#define UPS_CAP_CHUNKING   0x200u	/* BDAT (RFC 3030) */

/* the worker's idle connections and goodbyes (main.c at drain and stop) */
void ups_pool_drain(struct worker *w);
void ups_closers_free(struct worker *w);

#endif
