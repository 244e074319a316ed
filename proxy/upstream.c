/*
 * upstream - the client side: one connection to the upstream MTA per
 * client session, driven in lockstep with it
 *
 * SYNOPSIS
 *	see upstream.h: the owner (a client session) and its callbacks
 *
 * DESCRIPTION
 *	Each session has one struct ups (made on its first use) that holds
 *	the owner's callbacks and at most one connection (struct ups_conn)
 *	at a time; a connection can go (it failed, or STARTTLS dropped an
 *	authenticated one) and a later command opens the next, while the
 *	owner keeps the same struct ups. The first ups_submit() (or, with
 *	upstream-connect helo, ups_prepare() at the client's accepted HELO
 *	or EHLO) connects:
 *	greeting (220), EHLO with our hostname, then the client's identity
 *	(XCLIENT, answered by a new 220 and followed by a second EHLO, or a
 *	PROXY v1/v2 header sent before anything else; asked from the owner
 *	when it is written), and only then the queued commands. Commands
 *	wait in an out-queue until the connection is ready; they are
 *	pipelined when the upstream offers PIPELINING, and sent one at a
 *	time otherwise. DATA is a barrier: nothing follows it until its 354
 *	arrived and the message and its dot are written.
 *
 *	XCLIENT's HELO name and protocol are kept with the connection: one
 *	set up at the client's first MAIL (or its first EHLO) may serve a
 *	client that greeted again since (another name; STARTTLS and its
 *	EHLO). Before MAIL or AUTH goes, a different name or protocol sends
 *	XCLIENT and the EHLO after it again (the connection back in setup;
 *	MAIL waits in the out-queue). The login needs no such check: it is
 *	set only by the upstream's 235 on this very connection, and STARTTLS,
 *	which drops it, drops that connection too (auth.c).
 *
 *	When the upstream offers CHUNKING and the message is spooled in
 *	memory, DATA goes as one "BDAT n LAST" (RFC 3030) instead: the
 *	command and the whole message in one write, no 354 to wait for (a
 *	round trip less). The spool holds the message dot-stuffed for DATA
 *	(smtp_data.h); ups_unstuff() takes the stuffing dot off each line
 *	that has one, so n counts the bytes the upstream stores. BDAT's
 *	reply is the dot's (UK_DOT); a refused BDAT is followed by an RSET
 *	of upstream.c's own, as a DATA refused before its content is. A
 *	message spooled to a file still goes as DATA (sendfile, no copy).
 *
 *	Every command sent has one entry in the in-flight queue; each reply
 *	is matched to the oldest entry and goes to the owner's reply
 *	callback with that entry's client slot (internal commands, RSET,
 *	QUIT and the setup, have none and are not passed on).
 *	Replies are parsed strictly (reply.c). A reply that makes no sense
 *	for its command (a 354 to RCPT, a 250 to DATA), a reply nobody asked
 *	for, an over-long or malformed line, a timeout or a lost connection
 *	end this upstream connection: the owner hears lost (its
 *	transaction is dropped), then every waiting slot gets a 4xx through
 *	error, never a 2xx. A later MAIL may connect again (the owner
 *	stops after three: ups_gave_up()).
 *
 * REUSE
 *	When a session ends with nothing of its own on its upstream connection
 *	(no command queued or unanswered but upstream.c's own RSET or NOOP,
 *	or the XCLIENT and EHLO of a setup the owner did not wait for, no
 *	DATA under way), and the identity can be changed on it (XCLIENT,
 *	or none), the connection is parked in its worker's pool (at most
 *	UPS_POOL_MAX, for at most UPS_POOL_IDLE_MS) instead of being closed.
 *	A transaction the upstream still has open (moat refused the
 *	recipient or the message after the upstream accepted MAIL, and the
 *	client left) gets an RSET as it is parked. The pool keeps the
 *	connection's in-flight queue: the replies it is owed (that RSET, or
 *	an RSET or keepalive NOOP sent before) are matched to them in order,
 *	and each must be a 2xx; anything else it hears (a byte with nothing
 *	owed, a 421, an error, EOF) closes it. The next session of that
 *	worker that needs the upstream takes a parked connection, one that
 *	owes nothing first, and sends XCLIENT with its own client's identity
 *	(Postfix resets the session for it), then EHLO: a TCP connect and a
 *	greeting saved. A connection still owed a reply keeps it at the head
 *	of the in-flight queue, so it is matched before anything of the new
 *	session's and never reaches it; XCLIENT goes behind it (pipelined
 *	when the upstream offers PIPELINING, else once the reply is in).
 *	Those owed commands are marked as the connection's own (own): if a
 *	reused connection fails before it answered anything of this session
 *	(closed, reset, 421, an error to the owed RSET: the upstream's idle
 *	timeout ended it as it was taken), the session's commands, sent or
 *	queued, move in order to a fresh connection (ups_retry_fresh()), the
 *	connection's own and setup commands do not; only the fresh one's
 *	failure reaches the client.
 *
 * THE EHLO AFTER XCLIENT
 *	A reused connection knows its capabilities from its earlier EHLO,
 *	and Postfix (3.7) takes MAIL with SIZE=, BODY= and SMTPUTF8 right
 *	after XCLIENT's 220 when XCLIENT gave HELO= and PROTO=ESMTP: the
 *	Received: field is the same. The second EHLO is kept anyway, one
 *	round trip per session, because it is where Postfix applies
 *	smtpd_helo_restrictions when smtpd_delay_reject is no (without it a
 *	HELO name the upstream refuses gets through), where its milters
 *	hear the HELO (XCLIENT gives them a new connect event only), and
 *	what makes pipelining legal for a client that said HELO (PROTO=SMTP:
 *	"improper command pipelining", and a disconnect under
 *	smtpd_forbid_unauth_pipelining, the default from Postfix 3.9); and
 *	a client without a valid HELO name would have none upstream (503
 *	"send HELO/EHLO first" under smtpd_helo_required).
 *
 * KEEPALIVE
 *	The session spools the whole message before it says DATA upstream,
 *	so the upstream's side is idle while a slow client sends its
 *	message (and while the checks at the end of data run). An idle
 *	connection's read timeout is upstream-keepalive: when it fires, NOOP
 *	goes upstream (not passed to the owner) so that the upstream's own
 *	idle timeout (Postfix's smtpd_timeout) does not end the transaction.
 *
 * TLS
 *	With upstream-tls opportunistic or required, a fresh connection says
 *	EHLO, then STARTTLS when offered; once the 220 is in, whatever else
 *	the upstream sent in plaintext is thrown away (conn_starttls():
 *	response injection, TLS-09), the handshake runs, and EHLO is said
 *	again inside TLS before XCLIENT. With required, no STARTTLS in the
 *	EHLO reply, a refused STARTTLS or a failed handshake end the
 *	connection and the client gets a 4xx: never a silent fallback to
 *	plaintext. With opportunistic only a missing or refused STARTTLS
 *	goes on in plaintext (a failed handshake cannot).
 *
 * AUTH
 *	AUTH and the exchange's lines (auth.c) go in lockstep like MAIL;
 *	their replies go to the owner like the others. They are never
 *	logged. A connection on which the upstream said 235 is never parked
 *	for reuse.
 *
 * LIFETIME
 *	A failed connection is retired, not freed: its connection is
 *	disabled and the memory goes back from an event of its own, so no
 *	callback below ever runs on freed memory. At the end of a session
 *	an idle connection is parked, or sent QUIT and closed once the QUIT
 *	is written. The connection's callbacks carry the struct ups, which
 *	lives as long as its owner; after ups_owner_closing() they neither
 *	read nor send, and call the owner back no more.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "identity.h"
#include "log.h"
#include "metrics.h"
#include "moatd.h"
#include "smtp_parse.h"
#include "spool.h"
#include "tls.h"
#include "upstream.h"
#include "xalloc.h"

#define UPS_LINE_MAX (REPLY_LINE_MAX + 2)
#define UPS_QUIT_MS  5000
#define UPS_POOL_MAX 32		/* idle connections kept per worker */
#define UPS_POOL_IDLE_MS 30000	/* well below Postfix's smtpd_timeout */

enum ups_state { UPS_CONNECTING = 0, UPS_SETUP, UPS_TLS, UPS_READY, UPS_DEAD };

struct ups_cmd {
	struct ups_cmd *next;
	enum ups_kind kind;
	struct slot *slot;	/* client reply, or NULL for an internal command */
	struct spool *spool;	/* UK_DATA: the message */
	bool own;		/* the connection's own (an RSET or NOOP it was parked
				 * with): belongs to no session, never carried over */
	bool bdat;		/* UK_DOT: the message went as BDAT n LAST */
	size_t len;
	char line[];
};

/* one connection to the upstream */
struct ups_conn {
	struct conn *conn;
	enum ups_state st;
	struct ups_cmd *out_h, *out_t;	/* not yet sent */
	struct ups_cmd *inf_h, *inf_t;	/* sent, waiting for their reply */
	unsigned ninflight;
	unsigned caps;
	uint64_t size;
	bool in_txn;		/* MAIL accepted, not yet ended by a dot or RSET */
	bool blocked;		/* DATA sent: nothing more until its dot is written */
	char xclient[128];	/* the attributes offered after XCLIENT */
	bool reused;		/* taken from the worker's pool */
	bool answered;		/* a reply to one of the owner's commands came */
	bool tls_settled;	/* STARTTLS done, or (opportunistic) not possible */
	bool authed;		/* the upstream said 235 to AUTH: never reused */
	bool xclient_due;	/* taken with replies owed, no PIPELINING: XCLIENT
				 * goes once they are in */
	char helo_sent[SMTP_DOMAIN_MAX + 1];	/* the HELO name XCLIENT gave */
	size_t helo_sent_len;
	bool esmtp_sent;	/* and its protocol */
	struct worker *w;	/* while pooled */
	struct ups_conn *pprev, *pnext;
	struct reply r;
};

/* a session's upstream side (upstream.h) */
struct ups {
	struct ups_owner o;
	struct worker *w;
	const struct conf *conf;	/* the owner's reference */
	uint64_t sid;			/* for log lines */
	struct ups_conn *c;		/* the connection, or NULL */
	unsigned connects;		/* connections opened or taken from the pool */
	bool closing;			/* ups_owner_closing(): nothing more either way */
};

/* an upstream connection saying QUIT after its session ended */
struct ups_closer {
	struct ups_closer *prev, *next;
	struct conn *conn;
	struct worker *w;
};

static unsigned ups_caps_seen;	/* atomic: UPS_CAP_* of the last EHLO */
static uint64_t ups_size_seen;	/* atomic */

/*
 * The XCLIENT attributes the upstream offered last time. Once known, a new
 * connection sends XCLIENT right after the greeting (Postfix takes XCLIENT
 * outside a transaction, EHLO or not) and skips one EHLO round trip; the
 * EHLO after XCLIENT tells the capabilities. A refused XCLIENT forgets
 * them, so the next connection asks again.
 */
static pthread_mutex_t ups_xclient_lock = PTHREAD_MUTEX_INITIALIZER;
static char ups_xclient_seen[128];
static char ups_auth_seen[128];		/* the AUTH mechanisms offered last time */
static bool ups_auth_known;

/* ups_xclient_remember - keep (or, with NULL, forget) the offered list */
static void
ups_xclient_remember(const char *attrs)
{
	pthread_mutex_lock(&ups_xclient_lock);
	snprintf(ups_xclient_seen, sizeof(ups_xclient_seen), "%s", attrs ? attrs : "");
	pthread_mutex_unlock(&ups_xclient_lock);
}

/* ups_xclient_recall - the offered list into buf; false if unknown */
static bool
ups_xclient_recall(char *buf, size_t size)
{
	pthread_mutex_lock(&ups_xclient_lock);
	snprintf(buf, size, "%s", ups_xclient_seen);
	pthread_mutex_unlock(&ups_xclient_lock);
	return buf[0] != 0;
}

static void ups_fail(struct ups *h, const char *why, const struct reply *r);
static void ups_connect(struct ups *h, bool fresh);
static bool ups_pool_take(struct ups *h);
static bool ups_send_xclient(struct ups *h);
static bool ups_ident_stale(struct ups *h);
static void ups_closer_free(struct ups_closer *cl);
static void ups_quit_cb(struct conn *cn, void *arg);
static void ups_quit_event_cb(struct conn *cn, enum conn_ev what, void *arg);

/* ups_auth_remember - the AUTH keyword's mechanisms of the last EHLO */
static void
ups_auth_remember(const char *p, size_t len)
{
	pthread_mutex_lock(&ups_xclient_lock);
	if (len >= sizeof(ups_auth_seen))
		len = sizeof(ups_auth_seen) - 1;
	memcpy(ups_auth_seen, p ? p : "", p ? len : 0);
	ups_auth_seen[p ? len : 0] = 0;
	ups_auth_known = true;
	pthread_mutex_unlock(&ups_xclient_lock);
}

/* ups_auth_offered - did the upstream offer this mechanism last time (or
 * has it not been asked yet)? */
bool
ups_auth_offered(const char *mech, size_t len)
{
	bool ok;

	pthread_mutex_lock(&ups_xclient_lock);
	ok = !ups_auth_known;
	for (const char *p = ups_auth_seen; !ok && *p; ) {
		size_t n = strcspn(p, " ");
		if (n == len && strncasecmp(p, mech, len) == 0)
			ok = true;
		p += n;
		while (*p == ' ')
			p++;
	}
	pthread_mutex_unlock(&ups_xclient_lock);
	return ok;
}

/* ups_tls_wanted - must this connection still say STARTTLS? */
static bool
ups_tls_wanted(const struct ups *h)
{
	return h->conf->upstream_tls != CONF_UTLS_NONE && h->c != NULL && !h->c->tls_settled;
}

/* ups_known_caps - what the upstream offered last time we asked */
unsigned
ups_known_caps(uint64_t *size)
{
	if (size)
		*size = __atomic_load_n(&ups_size_seen, __ATOMIC_RELAXED);
	return __atomic_load_n(&ups_caps_seen, __ATOMIC_RELAXED);
}

/* ups_new - a session's upstream side; no connection yet */
struct ups *
ups_new(struct worker *w, const struct conf *c, uint64_t sid, const struct ups_owner *o)
{
	struct ups *h = xcalloc(1, sizeof(*h));

	h->o = *o;
	h->w = w;
	h->conf = c;
	h->sid = sid;
	return h;
}

/* ups_owner_closing - the owner closes: no callback any more, nothing
 * read or sent until ups_free() */
void
ups_owner_closing(struct ups *h)
{
	if (h != NULL)
		h->closing = true;
}

/* ups_gave_up - have three connections been used, and none is left? */
bool
ups_gave_up(const struct ups *h)
{
	return h != NULL && h->connects >= 3 && h->c == NULL;
}

/* ups_reply - the upstream's reply r to an owner's command */
static void
ups_reply(struct ups *h, enum ups_kind k, struct slot *sl, const struct reply *r)
{
	if (!h->closing)
		h->o.reply(h->o.arg, k, sl, r);
}

/* ups_error - a reply of our own for the owner's slot sl (if any) */
static void __attribute__((format(printf, 5, 6)))
ups_error(struct ups *h, enum ups_kind k, struct slot *sl, bool close, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	if (sl == NULL || h->closing)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(buf) - 3)
		n = (int)(sizeof(buf) - 3);
	buf[n++] = '\r';
	buf[n++] = '\n';
	buf[n] = 0;
	h->o.error(h->o.arg, k, sl, buf, (size_t)n, close);
}

/* ups_ident - the client's identity, from the owner */
static void
ups_ident(struct ups *h, struct ident_client *ic)
{
	memset(ic, 0, sizeof(*ic));
	h->o.ident(h->o.arg, ic);
}

/* ups_has_txn - is a transaction open (or being opened) upstream? */
bool
ups_has_txn(const struct ups *h)
{
	const struct ups_conn *u = h != NULL ? h->c : NULL;
	const struct ups_cmd *c;

	if (u == NULL || u->st == UPS_DEAD)
		return false;
	if (u->in_txn)
		return true;
	for (c = u->inf_h; c; c = c->next)
		if (c->kind == UK_MAIL)
			return true;
	for (c = u->out_h; c; c = c->next)
		if (c->kind == UK_MAIL)
			return true;
	return false;
}

/* ups_dot_pending - has the owner's message gone to the upstream (DATA
 * queued or sent, or its dot) with the answer still to come? */
bool
ups_dot_pending(const struct ups *h)
{
	const struct ups_conn *u = h != NULL ? h->c : NULL;
	const struct ups_cmd *c;

	if (u == NULL || u->st == UPS_DEAD)
		return false;
	for (c = u->inf_h; c; c = c->next)
		if (c->kind == UK_DATA || c->kind == UK_DOT)
			return true;
	for (c = u->out_h; c; c = c->next)
		if (c->kind == UK_DATA)
			return true;
	return false;
}

/* ups_cmd_new - a command with its line copied */
static struct ups_cmd *
ups_cmd_new(enum ups_kind kind, const char *line, size_t len, struct slot *sl, struct spool *sp)
{
	struct ups_cmd *c = xmalloc(sizeof(*c) + len + 1);

	c->next = NULL;
	c->kind = kind;
	c->slot = sl;
	c->spool = sp;
	c->own = false;
	c->bdat = false;
	c->len = len;
	memcpy(c->line, line, len);
	c->line[len] = 0;
	return c;
}

/* ups_cmd_free - free a command that never got its reply */
static void
ups_cmd_free(struct ups_cmd *c)
{
	spool_free(c->spool);
	free(c);
}

/* ups_timeouts - reply deadline while waiting, none while idle */
static void
ups_timeouts(struct ups *h)
{
	struct ups_conn *u = h->c;
	uint64_t ms = u->st == UPS_CONNECTING ? h->conf->upstream_connect_ms :
	    h->conf->upstream_timeout_ms;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	/* idle: no reply is owed; the read timeout is the keepalive (a
	 * NOOP, ups_event_cb()), or a long one rather than none, so
	 * switching costs no system call */
	uint64_t ka = h->conf->upstream_keepalive_ms;
	struct timeval idle = { 86400, 0 };

	if (ka > 0) {
		idle.tv_sec = (time_t)(ka / 1000);
		idle.tv_usec = (suseconds_t)(ka % 1000) * 1000;
	}
	if (u->ninflight > 0 || u->st != UPS_READY)
		conn_set_timeouts(u->conn, &tv, &tv);
	else
		conn_set_timeouts(u->conn, &idle, &tv);
}

/* ups_send - write one command and wait for its reply */
static void
ups_send(struct ups *h, struct ups_cmd *c)
{
	struct ups_conn *u = h->c;
	char esc[LOG_ESC_SIZE];

	c->next = NULL;
	if (u->inf_t)
		u->inf_t->next = c;
	else
		u->inf_h = c;
	u->inf_t = c;
	u->ninflight++;
	if (c->len > 0)
		conn_write(u->conn, c->line, c->len);
	if (log_enabled(LOG_L_DEBUG) && c->len > 2) {
		size_t shown = c->len - 2;
		if (c->kind == UK_AUTHDATA)
			shown = 0;	/* credentials */
		else if (c->kind == UK_AUTH && shown > 5) {
			const char *sp = memchr(c->line + 5, ' ', shown - 5);
			if (sp != NULL)
				shown = (size_t)(sp - c->line);
		}
		log_escape(esc, sizeof(esc), c->line, shown);
		log_msg(LOG_L_DEBUG, h->sid, "upstream send=\"%s\"", esc);
	}
}

/* ups_send_line - an internal command */
static void
ups_send_line(struct ups *h, enum ups_kind kind, const char *line, size_t len)
{
	ups_send(h, ups_cmd_new(kind, line, len, NULL, NULL));
}

/*
 * ups_unstuff - move in to out, without the spool's dot-stuffing: every
 * line of the spool that begins with "." had one added (smtp_data.h),
 * lines end in CR LF, and so does the last one
 */
static void
ups_unstuff(struct evbuffer *in, struct evbuffer *out)
{
	unsigned char first;

	if (evbuffer_copyout(in, &first, 1) == 1 && first == '.')
		evbuffer_drain(in, 1);
	for (;;) {
		struct evbuffer_ptr p = evbuffer_search(in, "\r\n.", 3, NULL);

		if (p.pos < 0) {
			evbuffer_remove_buffer(in, out, evbuffer_get_length(in));
			return;
		}
		evbuffer_remove_buffer(in, out, (size_t)p.pos + 2);
		evbuffer_drain(in, 1);
	}
}

/* ups_send_bdat - the message of DATA command c (spooled in memory) as
 * one "BDAT n LAST" (RFC 3030), its content unstuffed, in one write: no
 * 354 to wait for. Its reply is the dot's (UK_DOT); false when the
 * message could not be read (the upstream connection is over) */
static bool
ups_send_bdat(struct ups *h, struct ups_cmd *c)
{
	struct ups_conn *u = h->c;
	struct evbuffer *raw = evbuffer_new(), *out = evbuffer_new();
	struct ups_cmd *last;
	char line[48];
	int n;

	if (raw == NULL || out == NULL || spool_send(c->spool, raw) != 0) {
		if (raw != NULL)
			evbuffer_free(raw);
		if (out != NULL)
			evbuffer_free(out);
		ups_error(h, UK_DOT, c->slot, false,
		    "451 4.3.0 Error: local error reading the message, try again later");
		ups_cmd_free(c);
		ups_fail(h, "spool-read", NULL);
		return false;
	}
	ups_unstuff(raw, out);
	evbuffer_free(raw);
	n = snprintf(line, sizeof(line), "BDAT %zu LAST\r\n", evbuffer_get_length(out));
	last = ups_cmd_new(UK_DOT, line, (size_t)n, c->slot, NULL);
	last->bdat = true;
	ups_cmd_free(c);
	ups_send(h, last);
	conn_write_buffer(u->conn, out);
	evbuffer_free(out);
	return true;
}

/* ups_pump - send what may be sent now */
static void
ups_pump(struct ups *h)
{
	struct ups_conn *u = h->c;

	while (u->st == UPS_READY && u->out_h != NULL && !u->blocked) {
		struct ups_cmd *c = u->out_h;
		if (!(u->caps & UPS_CAP_PIPELINING) && u->ninflight > 0)
			break;
		if (c->kind == UK_DATA && u->ninflight > 0)
			break;	/* DATA goes alone, after every earlier reply */
		if ((c->kind == UK_MAIL || c->kind == UK_AUTH) && ups_ident_stale(h)) {
			/* the connection was set up for the client as it was
			 * (its first MAIL, or EHLO): XCLIENT again,
			 * then EHLO, before what begins the transaction or
			 * the AUTH exchange; outside a transaction, as
			 * Postfix wants */
			log_msg(LOG_L_DEBUG, h->sid, "upstream identity=changed");
			u->st = UPS_SETUP;
			if (u->ninflight > 0 && !(u->caps & UPS_CAP_PIPELINING))
				u->xclient_due = true;
			else if (!ups_send_xclient(h)) {
				ups_fail(h, "xclient-too-long", NULL);
				return;
			}
			break;
		}
		u->out_h = c->next;
		if (u->out_h == NULL)
			u->out_t = NULL;
		if (c->kind == UK_DATA && (u->caps & UPS_CAP_CHUNKING) && !spool_on_disk(c->spool)) {
			if (!ups_send_bdat(h, c))
				return;
			continue;
		}
		if (c->kind == UK_DATA)
			u->blocked = true;
		ups_send(h, c);
	}
	ups_timeouts(h);
}

/* ups_parse_caps - EHLO keywords that matter to us */
static void
ups_parse_caps(struct ups_conn *u)
{
	size_t plen;
	const char *p;

	u->caps = UPS_CAP_KNOWN;
	u->size = 0;
	u->xclient[0] = 0;
	if (reply_ehlo_has(&u->r, "PIPELINING", &plen))
		u->caps |= UPS_CAP_PIPELINING;
	if ((p = reply_ehlo_has(&u->r, "SIZE", &plen)) != NULL) {
		u->caps |= UPS_CAP_SIZE;
		for (size_t i = 0; i < plen && p[i] >= '0' && p[i] <= '9' &&
		    u->size < UINT64_MAX / 10 - 10; i++)
			u->size = u->size * 10 + (uint64_t)(p[i] - '0');
	}
	if (reply_ehlo_has(&u->r, "8BITMIME", &plen))
		u->caps |= UPS_CAP_8BITMIME;
	if (reply_ehlo_has(&u->r, "SMTPUTF8", &plen))
		u->caps |= UPS_CAP_SMTPUTF8;
	if (reply_ehlo_has(&u->r, "DSN", &plen))
		u->caps |= UPS_CAP_DSN;
	if (reply_ehlo_has(&u->r, "ENHANCEDSTATUSCODES", &plen))
		u->caps |= UPS_CAP_ENHANCED;
	if (reply_ehlo_has(&u->r, "STARTTLS", &plen))
		u->caps |= UPS_CAP_STARTTLS;
	if (reply_ehlo_has(&u->r, "CHUNKING", &plen))
		u->caps |= UPS_CAP_CHUNKING;
	p = reply_ehlo_has(&u->r, "AUTH", &plen);
	ups_auth_remember(p, p ? plen : 0);
	if ((p = reply_ehlo_has(&u->r, "XCLIENT", &plen)) != NULL) {
		u->caps |= UPS_CAP_XCLIENT;
		if (plen >= sizeof(u->xclient))
			plen = sizeof(u->xclient) - 1;
		memcpy(u->xclient, p, plen);
		u->xclient[plen] = 0;
		ups_xclient_remember(u->xclient);
	}
	__atomic_store_n(&ups_caps_seen, u->caps, __ATOMIC_RELAXED);
	__atomic_store_n(&ups_size_seen, u->size, __ATOMIC_RELAXED);
}

/* ups_send_ehlo2 - EHLO after XCLIENT: the client's HELO name if it is
 * a valid one, else ours */
static void
ups_send_ehlo2(struct ups *h)
{
	char line[SMTP_DOMAIN_MAX + 16];
	const char *name = h->conf->hostname;
	size_t nlen = strlen(name);
	struct ident_client ic;
	int n;

	ups_ident(h, &ic);
	if (ic.helo != NULL && smtp_helo_valid(ic.helo, ic.helolen)) {
		name = ic.helo;
		nlen = ic.helolen;
	}
	n = snprintf(line, sizeof(line), "EHLO %.*s\r\n", (int)nlen, name);
	ups_send_line(h, UK_EHLO2, line, (size_t)n);
}

/* ups_send_xclient - pass the client's identity */
static bool
ups_send_xclient(struct ups *h)
{
	struct ups_conn *u = h->c;
	struct ident_client ic;
	char line[1024];
	int n;

	ups_ident(h, &ic);
	n = ident_xclient(u->xclient, strlen(u->xclient), &ic, line, sizeof(line));
	if (n < 0)
		return false;
	/* what can change in a session (proceed_helo() bounds the name) */
	u->helo_sent_len = ic.helo != NULL && ic.helolen < sizeof(u->helo_sent) ? ic.helolen : 0;
	memcpy(u->helo_sent, ic.helo != NULL ? ic.helo : "", u->helo_sent_len);
	u->esmtp_sent = ic.esmtp;
	ups_send_line(h, UK_XCLIENT, line, (size_t)n);
	return true;
}

/* ups_ident_stale - has the client greeted with another name or protocol
 * since XCLIENT gave them (a second HELO or EHLO, STARTTLS and the EHLO
 * after it)? Never on a connection the upstream said 235 on: XCLIENT
 * would restart its session, and the login with it */
static bool
ups_ident_stale(struct ups *h)
{
	const struct ups_conn *u = h->c;
	struct ident_client ic;
	size_t len;

	if (h->conf->identity != CONF_ID_XCLIENT || u->authed)
		return false;
	ups_ident(h, &ic);
	len = ic.helo != NULL ? ic.helolen : 0;
	return ic.esmtp != u->esmtp_sent || len != u->helo_sent_len ||
	    memcmp(ic.helo != NULL ? ic.helo : "", u->helo_sent, len) != 0;
}

/* ups_ready - setup done: send what the owner queued */
static void
ups_ready(struct ups *h)
{
	h->c->st = UPS_READY;
	log_msg(LOG_L_DEBUG, h->sid, "upstream ready caps=0x%x", h->c->caps);
	ups_pump(h);
}

/* ups_identify - EHLO done (TLS settled): pass the client's identity
 * with XCLIENT when the policy says so, or be ready; false when that
 * failed the upstream (ups_fail) */
static bool
ups_identify(struct ups *h)
{
	if (h->conf->identity != CONF_ID_XCLIENT) {
		ups_ready(h);
		return true;
	}
	if (!(h->c->caps & UPS_CAP_XCLIENT)) {
		ups_fail(h, "xclient-not-offered", NULL);
		return false;
	}
	if (!ups_send_xclient(h)) {
		ups_fail(h, "xclient-too-long", NULL);
		return false;
	}
	return true;
}

/* ups_class_ok - may this reply code answer this command? */
static bool
ups_class_ok(enum ups_kind k, int code)
{
	int c = code / 100;

	switch (k) {
	case UK_GREETING:
	case UK_XCLIENT:
		return c == 2 || c == 4 || c == 5;
	case UK_DATA:
		return code == 354 || c == 4 || c == 5;
	case UK_AUTH:
	case UK_AUTHDATA:
		return code == 334 || c == 2 || c == 4 || c == 5;
	case UK_QUIT:
		return true;
	default:
		return c == 2 || c == 4 || c == 5;
	}
}

/* ups_dispatch - one complete reply for the oldest command in flight */
static void
ups_dispatch(struct ups *h)
{
	struct ups_conn *u = h->c;
	struct ups_cmd *c = u->inf_h;
	const struct reply *r = &u->r;
	int code = r->code, cls = code / 100;
	char esc[LOG_ESC_SIZE];
	size_t l0;
	const char *t0;

	if (!ups_class_ok(c->kind, code)) {
		ups_fail(h, "unexpected-reply", r);
		return;
	}
	if (code == 421 && u->reused && !u->answered) {
		/* a parked connection the upstream is closing (its idle
		 * timeout, a restart): not this session's answer */
		ups_fail(h, "closed-on-reuse", r);
		return;
	}
	if (c->slot != NULL || code == 354)
		u->answered = true;
	u->inf_h = c->next;
	if (u->inf_h == NULL)
		u->inf_t = NULL;
	u->ninflight--;
	switch (c->kind) {
	case UK_GREETING:
		if (code != 220) {
			free(c);
			ups_fail(h, "greeting", r);
			return;
		}
		u->st = UPS_SETUP;
		if (h->conf->identity == CONF_ID_XCLIENT && !ups_tls_wanted(h) &&
		    ups_xclient_recall(u->xclient, sizeof(u->xclient))) {
			if (!ups_send_xclient(h)) {
				free(c);
				ups_fail(h, "xclient-too-long", NULL);
				return;
			}
		} else {
			char line[300];
			int n = snprintf(line, sizeof(line), "EHLO %s\r\n", h->conf->hostname);
			ups_send_line(h, UK_EHLO, line, (size_t)n);
		}
		break;
	case UK_EHLO:
	case UK_EHLO2:
		if (cls != 2) {
			free(c);
			ups_fail(h, "ehlo", r);
			return;
		}
		ups_parse_caps(u);
		if (c->kind == UK_EHLO && ups_tls_wanted(h)) {
			if (u->caps & UPS_CAP_STARTTLS) {
				ups_send_line(h, UK_STARTTLS, "STARTTLS\r\n", 10);
				break;
			}
			if (h->conf->upstream_tls == CONF_UTLS_REQUIRED) {
				free(c);
				ups_fail(h, "starttls-not-offered", NULL);
				return;
			}
			log_msg(LOG_L_INFO, h->sid, "upstream tls=none reason=starttls-not-offered");
			u->tls_settled = true;	/* plaintext it is, on this connection */
		}
		if (c->kind == UK_EHLO2)
			ups_ready(h);	/* the EHLO after XCLIENT's new greeting */
		else if (!ups_identify(h)) {
			free(c);
			return;
		}
		break;
	case UK_XCLIENT:
		/* Postfix answers with a new 220 greeting, smtp-sink with 250 */
		if (cls != 2) {
			ups_xclient_remember(NULL);
			free(c);
			ups_fail(h, "xclient-refused", r);
			return;
		}
		ups_send_ehlo2(h);
		break;
	case UK_MAIL:
		u->in_txn = u->in_txn || cls == 2;
		ups_reply(h, c->kind, c->slot, r);
		break;
	case UK_RCPT:
		ups_reply(h, c->kind, c->slot, r);
		break;
	case UK_DATA:
		if (code == 354) {
			struct ups_cmd *dot = ups_cmd_new(UK_DOT, ".\r\n", 3, c->slot, NULL);
			struct evbuffer *out = evbuffer_new();
			if (out == NULL || spool_send(c->spool, out) != 0) {
				if (out)
					evbuffer_free(out);
				/* the message is lost locally: do not end it upstream */
				ups_error(h, UK_DOT, c->slot, false,
				    "451 4.3.0 Error: local error reading the message, try again later");
				dot->slot = NULL;
				spool_free(c->spool);
				free(c);
				free(dot);
				ups_fail(h, "spool-read", NULL);
				return;
			}
			conn_write_buffer(u->conn, out);
			evbuffer_free(out);
			spool_free(c->spool);
			u->blocked = false;
			ups_send(h, dot);
		} else {
			/* refused before the content: the transaction is still
			 * open upstream, end it; the RSET goes before the owner
			 * hears the reply and perhaps sends its next MAIL */
			spool_free(c->spool);
			u->blocked = false;
			u->in_txn = false;
			ups_send_line(h, UK_RSET, "RSET\r\n", 6);
			ups_reply(h, c->kind, c->slot, r);
		}
		break;
	case UK_DOT:
		u->in_txn = false;
		t0 = reply_line(r, 0, &l0);
		log_escape(esc, sizeof(esc), t0, l0);
		/* debug: the verdict line says the same at info */
		log_msg(LOG_L_DEBUG, h->sid, "relayed upstream_code=%d upstream_reply=\"%s%s%s\"",
		    code, r->enh, r->enh[0] ? " " : "", esc);
		if (c->bdat && cls != 2)
			/* a refused BDAT may leave the transaction open
			 * (RFC 3030 2: no more chunks; RSET ends it); sent
			 * before the owner hears the reply and perhaps
			 * sends its next MAIL */
			ups_send_line(h, UK_RSET, "RSET\r\n", 6);
		ups_reply(h, c->kind, c->slot, r);
		break;
	case UK_RSET:
		u->in_txn = false;
		if (cls != 2) {
			free(c);
			ups_fail(h, "rset", r);
			return;
		}
		break;
	case UK_QUIT:
		break;
	case UK_NOOP:
		if (cls != 2) {
			free(c);
			ups_fail(h, "noop", r);
			return;
		}
		break;
	case UK_STARTTLS:
		if (code == 220) {
			SSL * ssl = tls_client_ssl(h->conf);
			size_t dropped;
			if (ssl == NULL) {
				free(c);
				ups_fail(h, "tls-unavailable", NULL);
				return;
			}
			dropped = conn_starttls(u->conn, ssl, false);
			if (dropped > 0)
				log_msg(LOG_L_WARN, h->sid, "upstream protocol=starttls-response-injection "
				    "discarded=%zu", dropped);
			u->st = UPS_TLS;
			break;
		}
		if (h->conf->upstream_tls == CONF_UTLS_REQUIRED) {
			free(c);
			ups_fail(h, "starttls-refused", r);
			return;
		}
		log_msg(LOG_L_INFO, h->sid, "upstream tls=none reason=starttls-refused code=%d", code);
		u->tls_settled = true;
		if (!ups_identify(h)) {
			free(c);
			return;
		}
		break;
	case UK_AUTH:
	case UK_AUTHDATA:
		if (code == 235)
			u->authed = true;	/* this connection carries a login now */
		ups_reply(h, c->kind, c->slot, r);
		break;
	}
	free(c);
	if (u->xclient_due && u->ninflight == 0 && h->c == u && u->st == UPS_SETUP) {
		/* a pooled connection's RSET or NOOP is answered: now the
		 * new session's identity (ups_pool_take()) */
		u->xclient_due = false;
		if (!ups_send_xclient(h)) {
			ups_fail(h, "xclient-too-long", NULL);
			return;
		}
		ups_timeouts(h);
	}
	if (h->c == u && !h->closing && u->st != UPS_DEAD)
		ups_pump(h);
}

/* ups_take_line - one reply line out of in (CR LF taken off) into line
 * (UPS_LINE_MAX + 1 bytes), its length in *len: 1; 0 when no whole line
 * is in yet; -1 when the line is over UPS_LINE_MAX (in or coming) */
static int
ups_take_line(struct evbuffer *in, char *line, size_t *len)
{
	size_t eol_len = 0;
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);

	if (p.pos < 0)
		return evbuffer_get_length(in) > UPS_LINE_MAX ? -1 : 0;
	if ((size_t)p.pos > UPS_LINE_MAX)
		return -1;
	*len = (size_t)p.pos;
	evbuffer_remove(in, line, *len);
	evbuffer_drain(in, eol_len);
	return 1;
}

/* ups_read_cb - reply lines from the upstream */
static void
ups_read_cb(struct conn *cn, void *arg)
{
	struct ups *h = arg;
	struct ups_conn *u = h->c;
	struct evbuffer *in = conn_input(cn);
	char line[UPS_LINE_MAX + 1];

	while (!h->closing && h->c == u && u != NULL && u->conn == cn && u->st != UPS_DEAD) {
		size_t len;
		int got = ups_take_line(in, line, &len);

		if (got <= 0) {
			if (got < 0)
				ups_fail(h, "line-too-long", NULL);
			return;
		}
		if (u->inf_h == NULL) {
			ups_fail(h, "unsolicited-reply", NULL);
			return;
		}
		switch (reply_feed_line(&u->r, line, len)) {
		case REPLY_MORE:
			break;
		case REPLY_ERROR:
			ups_fail(h, "malformed-reply", NULL);
			return;
		case REPLY_DONE:
			ups_dispatch(h);
			if (h->c == u && u->st != UPS_DEAD)
				reply_init(&u->r);
			break;
		}
	}
}

/* ups_event_cb - connected, EOF, error or timeout */
static void
ups_event_cb(struct conn *cn, enum conn_ev what, void *arg)
{
	struct ups *h = arg;
	struct ups_conn *u = h->c;

	if (h->closing || u == NULL || u->conn != cn || u->st == UPS_DEAD)
		return;
	if (what == CONN_EV_CONNECTED)
		return;
	if (what == CONN_EV_TLS_READY) {
		char line[300];
		int n = snprintf(line, sizeof(line), "EHLO %s\r\n", h->conf->hostname);
		SSL * ssl = conn_ssl(cn);
		u->tls_settled = true;
		u->st = UPS_SETUP;
		log_msg(LOG_L_INFO, h->sid, "upstream tls version=%s cipher=%s", SSL_get_version(ssl),
		    SSL_get_cipher_name(ssl));
		ups_send_line(h, UK_EHLO, line, (size_t)n);
		ups_timeouts(h);
		return;
	}
	if (what == CONN_EV_TLS_FAILED) {
		const char *why = conn_tls_error(cn);
		log_msg(LOG_L_WARN, h->sid, "upstream tls=failed reason=\"%s\"", why ? why : "?");
		ups_fail(h, "tls-handshake-failed", NULL);
		return;
	}
	if (what == CONN_EV_TIMEOUT && u->st == UPS_READY && u->ninflight == 0 &&
	    h->conf->upstream_keepalive_ms > 0) {
		/* idle for upstream-keepalive (a client's slow DATA, checks
		 * at the end of data): NOOP, so that the upstream's own idle
		 * timeout does not end the transaction under us */
		log_msg(LOG_L_DEBUG, h->sid, "upstream keepalive=noop");
		ups_send_line(h, UK_NOOP, "NOOP\r\n", 6);
		ups_timeouts(h);
		return;
	}
	if (what == CONN_EV_TIMEOUT)
		ups_fail(h, u->st == UPS_CONNECTING ? "connect-timeout" : "timeout", NULL);
	else if (what == CONN_EV_EOF)
		ups_fail(h, "connection-closed", NULL);
	else
		ups_fail(h, u->st == UPS_CONNECTING && u->ninflight == 1 &&
		    u->inf_h->kind == UK_GREETING ? "connect-failed" : "connection-error", NULL);
}

/* ups_retire_cb - free a retired connection from its own event */
static void
ups_retire_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ups_conn *u = arg;

	(void)fd;
	(void)what;
	conn_free(u->conn);
	free(u);
}

/* ups_retire - take the connection away from its owner, free it later */
static void
ups_retire(struct ups *h)
{
	struct ups_conn *u = h->c;
	struct timeval zero = { 0, 0 };
	struct ups_cmd *c, *next;

	if (u == NULL)
		return;
	h->c = NULL;
	for (c = u->inf_h; c; c = next) {
		next = c->next;
		ups_cmd_free(c);
	}
	for (c = u->out_h; c; c = next) {
		next = c->next;
		ups_cmd_free(c);
	}
	u->inf_h = u->out_h = NULL;
	conn_setcb(u->conn, NULL, NULL, NULL, NULL);
	conn_read_enable(u->conn, false);
	if (event_base_once(h->w->base, -1, EV_TIMEOUT, ups_retire_cb, u, &zero) != 0)
		panic("event_base_once failed");
}

/* ups_cmd_setup - a command of upstream.c's own that belongs to one
 * connection (its setup, a keepalive, the RSET it was parked with):
 * nothing to carry to another */
static bool
ups_cmd_setup(const struct ups_cmd *c)
{
	enum ups_kind k = c->kind;

	return c->own || k == UK_GREETING || k == UK_EHLO || k == UK_XCLIENT ||
	    k == UK_EHLO2 || k == UK_STARTTLS || k == UK_NOOP;
}

/* ups_retry_fresh - may u's commands go again on a fresh connection? It
 * came from the pool, gave no answer to this session, and what was sent
 * on it is setup or a command that opens a transaction or an AUTH (no
 * message content, no answer anybody heard) */
static bool
ups_retry_fresh(const struct ups_conn *u)
{
	if (!u->reused || u->answered)
		return false;
	for (const struct ups_cmd *c = u->inf_h; c; c = c->next)
		if (!ups_cmd_setup(c) && c->kind != UK_MAIL && c->kind != UK_RCPT &&
		    c->kind != UK_AUTH && c->kind != UK_RSET && c->kind != UK_QUIT)
			return false;
	return true;
}

/* ups_owned - is anything of the owner's on u (a command of its, sent or
 * queued; a transaction or a login the upstream holds)? A connection
 * taken ahead of the first command (ups_prepare()) that fails has
 * nothing: the owner need not hear of it, the next command connects */
static bool
ups_owned(const struct ups_conn *u)
{
	if (u->in_txn || u->authed)
		return true;
	for (int i = 0; i < 2; i++)
		for (const struct ups_cmd *c = i == 0 ? u->inf_h : u->out_h; c; c = c->next)
			if (!ups_cmd_setup(c) && c->kind != UK_RSET && c->kind != UK_QUIT)
				return true;
	return false;
}

/* ups_fail - this upstream connection is over: 4xx for everything waiting */
static void
ups_fail(struct ups *h, const char *why, const struct reply *r)
{
	struct ups_conn *u = h->c;
	struct ups_cmd *list[2], *c;
	bool setup = u->st != UPS_READY;
	bool owned = ups_owned(u);
	char esc[LOG_ESC_SIZE] = "";
	size_t l0 = 0;
	const char *t0;

	if (r != NULL && r->code != 0) {
		t0 = reply_line(r, 0, &l0);
		log_escape(esc, sizeof(esc), t0, l0);
	}
	if (r != NULL)
		log_msg(LOG_L_WARN, h->sid, "upstream error=%s state=%s code=%d text=\"%s\"",
		    why, setup ? "setup" : "ready", r->code, esc);
	else
		log_msg(LOG_L_WARN, h->sid, "upstream error=%s state=%s", why,
		    setup ? "setup" : "ready");
	if (setup && !u->reused)
		metrics_inc(MF_UPS_CONNECT_FAILURES, NULL, NULL);
	u->st = UPS_DEAD;
	conn_setcb(u->conn, NULL, NULL, NULL, NULL);
	conn_read_enable(u->conn, false);
	if (ups_retry_fresh(u) && !h->closing) {
		/* a parked connection went stale before it answered anything
		 * of this session (closed, reset, 421): the owner's commands,
		 * those sent and those queued, move in order to a fresh
		 * connection; its own setup commands are dropped */
		struct ups_cmd *out = NULL, **tail = &out, *c2, *next;
		for (int i = 0; i < 2; i++) {
			for (c2 = i == 0 ? u->inf_h : u->out_h; c2; c2 = next) {
				next = c2->next;
				if (i == 0 && ups_cmd_setup(c2)) {
					ups_cmd_free(c2);
					continue;
				}
				c2->next = NULL;
				*tail = c2;
				tail = &c2->next;
			}
		}
		u->inf_h = u->inf_t = u->out_h = u->out_t = NULL;
		u->ninflight = 0;
		log_msg(LOG_L_INFO, h->sid, "upstream retry reason=pooled-connection-failed");
		ups_retire(h);
		ups_connect(h, true);
		for (c2 = out; c2; c2 = next) {
			next = c2->next;
			c2->next = NULL;
			if (h->c == NULL || h->c->st == UPS_DEAD) {
				ups_error(h, c2->kind, c2->slot, true,
				    "421 4.4.1 %s Error: upstream unavailable, closing connection",
				    h->conf->hostname);
				ups_cmd_free(c2);
				continue;
			}
			if (h->c->out_t)
				h->c->out_t->next = c2;
			else
				h->c->out_h = c2;
			h->c->out_t = c2;
		}
		return;
	}
	/* detach both queues first: a reply to the owner may run more
	 * commands */
	list[0] = u->inf_h;
	list[1] = u->out_h;
	u->inf_h = u->inf_t = u->out_h = u->out_t = NULL;
	u->ninflight = 0;
	if (!h->closing && owned)
		h->o.lost(h->o.arg);
	for (int i = 0; i < 2; i++) {
		while ((c = list[i]) != NULL) {
			list[i] = c->next;
			if (setup)
				/* UPS-01..03: the client should come back later */
				ups_error(h, c->kind, c->slot, true,
				    "421 4.4.1 %s Error: upstream unavailable, closing connection",
				    h->conf->hostname);
			else if (c->kind == UK_DATA || c->kind == UK_DOT)
				ups_error(h, c->kind, c->slot, false,
				    "451 4.4.2 Error: upstream failed, message not accepted, try again later");
			else
				ups_error(h, c->kind, c->slot, false,
				    "451 4.4.2 Error: upstream connection lost, try again later");
			ups_cmd_free(c);
		}
	}
}

/* ups_goodbye - QUIT on an idle connection, closed once written */
static void
ups_goodbye(struct worker *w, struct conn *cn)
{
	struct timeval tv = { UPS_QUIT_MS / 1000, 0 };
	struct ups_closer *cl = xcalloc(1, sizeof(*cl));

	/* a small closer the worker knows of (it waits for them, bounded,
	 * at shutdown) */
	cl->conn = cn;
	cl->w = w;
	cl->next = w->closers;
	if (cl->next)
		cl->next->prev = cl;
	w->closers = cl;
	w->nclosers++;
	conn_setcb(cn, NULL, ups_quit_cb, ups_quit_event_cb, cl);
	conn_set_timeouts(cn, NULL, &tv);
	conn_read_enable(cn, false);
	conn_write(cn, "QUIT\r\n", 6);
}

/* ups_pool_unlink - take u out of its worker's pool */
static void
ups_pool_unlink(struct ups_conn *u)
{
	struct worker *w = u->w;

	if (u->pprev)
		u->pprev->pnext = u->pnext;
	else
		w->ups_pool = u->pnext;
	if (u->pnext)
		u->pnext->pprev = u->pprev;
	u->pprev = u->pnext = NULL;
	w->nups_pool--;
}

/* ups_conn_cmds_free - free u's commands, sent or not */
static void
ups_conn_cmds_free(struct ups_conn *u)
{
	struct ups_cmd *c, *next;

	for (int i = 0; i < 2; i++) {
		for (c = i == 0 ? u->inf_h : u->out_h; c; c = next) {
			next = c->next;
			ups_cmd_free(c);
		}
	}
	u->inf_h = u->inf_t = u->out_h = u->out_t = NULL;
	u->ninflight = 0;
}

/* ups_pool_drop - a parked connection goes (closed, or QUIT first) */
static void
ups_pool_drop(struct ups_conn *u, bool quit, const char *why)
{
	struct worker *w = u->w;

	log_msg(LOG_L_DEBUG, 0, "upstream pooled=dropped reason=%s", why);
	ups_pool_unlink(u);
	ups_conn_cmds_free(u);
	if (quit)
		ups_goodbye(w, u->conn);
	else
		conn_free(u->conn);
	free(u);
}

/*
 * ups_pool_feed - a parked connection's input: the replies it is owed
 * (the RSET or NOOP it was parked with), matched in order like a
 * session's; each must be a 2xx. Anything else (a byte with nothing
 * owed, a 421, an error, a malformed or over-long line) ends it. False
 * when it was dropped.
 */
static bool
ups_pool_feed(struct ups_conn *u)
{
	struct evbuffer *in = conn_input(u->conn);
	char line[UPS_LINE_MAX + 1];

	while (evbuffer_get_length(in) > 0) {
		size_t len;
		int got;
		struct ups_cmd *c = u->inf_h;

		if (c == NULL) {
			ups_pool_drop(u, false, "unsolicited");
			return false;
		}
		got = ups_take_line(in, line, &len);
		if (got == 0)
			return true;	/* the rest of the line later */
		if (got < 0) {
			ups_pool_drop(u, false, "line-too-long");
			return false;
		}
		switch (reply_feed_line(&u->r, line, len)) {
		case REPLY_MORE:
			break;
		case REPLY_ERROR:
			ups_pool_drop(u, false, "malformed-reply");
			return false;
		case REPLY_DONE:
			if (u->r.code / 100 != 2) {
				/* a 421 (the upstream's timeout), an error to
				 * RSET: nothing to reuse */
				ups_pool_drop(u, u->r.code != 421, c->kind == UK_RSET ? "rset" : "noop");
				return false;
			}
			u->inf_h = c->next;
			if (u->inf_h == NULL)
				u->inf_t = NULL;
			u->ninflight--;
			ups_cmd_free(c);
			reply_init(&u->r);
			break;
		}
	}
	return true;
}

/* ups_pool_read_cb - a parked connection heard something */
static void
ups_pool_read_cb(struct conn *cn, void *arg)
{
	(void)cn;
	ups_pool_feed(arg);
}

/* ups_pool_event_cb - EOF, error, or idle too long (or an owed reply
 * late): drop it */
static void
ups_pool_event_cb(struct conn *cn, enum conn_ev what, void *arg)
{
	(void)cn;
	ups_pool_drop(arg, what == CONN_EV_TIMEOUT, what == CONN_EV_TIMEOUT ? "idle" :
	    what == CONN_EV_EOF ? "closed" : "error");
}

/* ups_parkable - nothing of the owner's on u: no command queued or
 * unanswered but upstream.c's own RSET or NOOP, no DATA under way; or,
 * on a connection whose capabilities are known (the owner left while its
 * identity was being passed), the XCLIENT and the EHLO after it: their
 * 2xx are awaited in the pool like an RSET's */
static bool
ups_parkable(const struct ups_conn *u)
{
	bool setup = u->st == UPS_SETUP && (u->caps & UPS_CAP_KNOWN);

	if ((u->st != UPS_READY && !setup) || u->blocked || u->out_h != NULL)
		return false;
	for (const struct ups_cmd *c = u->inf_h; c; c = c->next) {
		if (c->slot != NULL)
			return false;
		if (c->kind != UK_RSET && c->kind != UK_NOOP &&
		    (!setup || (c->kind != UK_XCLIENT && c->kind != UK_EHLO2)))
			return false;
	}
	return true;
}

/* ups_pool_put - park a connection with no owner's command on it (an
 * open transaction gets an RSET, whose 250 the pool awaits); false if it
 * cannot be parked */
static bool
ups_pool_put(struct ups *h)
{
	struct ups_conn *u = h->c;
	struct worker *w = h->w;
	struct timeval idle = { UPS_POOL_IDLE_MS / 1000, 0 };
	struct timeval wr = { UPS_QUIT_MS / 1000, 0 };

	if (w->draining || w->nups_pool >= UPS_POOL_MAX || u->authed || !ups_parkable(u) ||
	    conn_error(u->conn) != 0)
		return false;
	if (u->ninflight == 0 && evbuffer_get_length(conn_input(u->conn)) > 0)
		return false;	/* heard something nobody asked for */
	if (u->in_txn && u->ninflight > 0 && !(u->caps & UPS_CAP_PIPELINING))
		return false;	/* the RSET would have to wait */
	if (h->conf->identity == CONF_ID_XCLIENT ? !(u->caps & UPS_CAP_XCLIENT) :
	    h->conf->identity != CONF_ID_NONE)
		return false;
	if (u->in_txn) {
		/* MAIL was accepted and the transaction not ended (moat
		 * refused a recipient or the message, the client left): the
		 * next session must not inherit it */
		ups_send_line(h, UK_RSET, "RSET\r\n", 6);
		u->in_txn = false;
	}
	for (struct ups_cmd *c = u->inf_h; c; c = c->next)
		c->own = true;	/* the next owner's retry leaves them behind */
	u->xclient_due = false;	/* not sent: the next owner sends its own */
	u->st = UPS_READY;
	h->c = NULL;
	u->w = w;
	u->pnext = w->ups_pool;
	if (u->pnext)
		u->pnext->pprev = u;
	w->ups_pool = u;
	w->nups_pool++;
	conn_setcb(u->conn, ups_pool_read_cb, NULL, ups_pool_event_cb, u);
	conn_set_timeouts(u->conn, &idle, &wr);
	conn_read_enable(u->conn, true);
	/* replies that came while the owner was closing are still unread */
	ups_pool_feed(u);
	return true;
}

/* ups_pool_take - give the owner a parked connection; false if none.
 * One that owes no reply comes first; one still owed its RSET's (or
 * NOOP's) reply keeps it in the in-flight queue, matched before
 * anything of the new owner's, and XCLIENT goes behind it (at once with
 * PIPELINING, else once it is in) */
static bool
ups_pool_take(struct ups *h)
{
	struct worker *w = h->w;
	struct ups_conn *u = w->ups_pool;

	if (u == NULL || h->conf->identity == CONF_ID_PROXY_V1 ||
	    h->conf->identity == CONF_ID_PROXY_V2)
		return false;
	for (struct ups_conn *v = u; v != NULL; v = v->pnext)
		if (v->ninflight == 0) {
			u = v;
			break;
		}
	ups_pool_unlink(u);
	log_msg(LOG_L_DEBUG, h->sid, "upstream reused pooled=%u owed=%u", w->nups_pool,
	    u->ninflight);
	metrics_inc(MF_UPS_REUSES, NULL, NULL);
	u->w = NULL;
	u->reused = true;
	u->answered = false;	/* nothing yet for this session */
	h->c = u;
	h->connects++;
	if (u->ninflight == 0)
		reply_init(&u->r);	/* else a reply may be half read */
	conn_setcb(u->conn, ups_read_cb, NULL, ups_event_cb, h);
	if (h->conf->identity == CONF_ID_XCLIENT) {
		u->st = UPS_SETUP;
		if (u->ninflight > 0 && !(u->caps & UPS_CAP_PIPELINING)) {
			u->xclient_due = true;
		} else if (!ups_send_xclient(h)) {
			ups_fail(h, "xclient-too-long", NULL);
			return true;
		}
	} else {
		u->st = UPS_READY;
	}
	ups_timeouts(h);
	return true;
}

/* ups_pool_drain - shutting down: say goodbye to every parked connection */
void
ups_pool_drain(struct worker *w)
{
	while (w->ups_pool != NULL)
		ups_pool_drop(w->ups_pool, true, "draining");
}

/* ups_connect - open the owner's connection (fresh: not from the pool) */
static void
ups_connect(struct ups *h, bool fresh)
{
	struct ups_conn *u;
	const struct conf_addr *a = &h->conf->upstream;

	if (!fresh && ups_pool_take(h))
		return;
	u = xcalloc(1, sizeof(*u));
	h->c = u;
	h->connects++;
	reply_init(&u->r);
	u->conn = conn_new(h->w->base, -1, 64 * 1024);
	conn_setcb(u->conn, ups_read_cb, NULL, ups_event_cb, h);
	u->st = UPS_CONNECTING;
	ups_send_line(h, UK_GREETING, "", 0);
	if (h->conf->identity == CONF_ID_PROXY_V1 || h->conf->identity == CONF_ID_PROXY_V2) {
		struct ident_client ic;

		ups_ident(h, &ic);
		if (h->conf->identity == CONF_ID_PROXY_V1) {
			char hdr[IDENT_PROXY_V1_MAX + 1];
			int n = ident_proxy_v1(ic.src, ic.dst, hdr, sizeof(hdr));
			if (n > 0)
				conn_write(u->conn, hdr, (size_t)n);
		} else {
			unsigned char hdr[64];
			int n = ident_proxy_v2(ic.src, ic.dst, hdr, sizeof(hdr));
			if (n > 0)
				conn_write(u->conn, hdr, (size_t)n);
		}
	}
	ups_timeouts(h);
	conn_read_enable(u->conn, true);
	metrics_inc(MF_UPS_CONNECTS, NULL, NULL);
	if (conn_connect(u->conn, (const struct sockaddr *)&a->sa, a->salen) != 0) {
		log_errno(LOG_L_WARN, h->sid, "upstream error=connect addr=%s", a->text);
		/* the error event has been or will be reported; make sure */
		if (h->c == u && u->st != UPS_DEAD)
			ups_fail(h, "connect-failed", NULL);
	}
}

/* ups_prepare - take the connection now (from the pool, or a new one) and
 * set it up, so that it is ready when the owner's first command comes;
 * nothing when there is one, or three were used */
void
ups_prepare(struct ups *h)
{
	if (h->closing)
		return;
	if (h->c != NULL && h->c->st == UPS_DEAD)
		ups_retire(h);
	if (h->c != NULL || h->connects >= 3)
		return;
	log_msg(LOG_L_DEBUG, h->sid, "upstream prepare");
	ups_connect(h, false);
}

/* ups_submit - queue a command for the upstream, connecting if needed */
void
ups_submit(struct ups *h, enum ups_kind kind, const char *line, size_t len,
	struct slot *sl, struct spool *sp)
{
	struct ups_cmd *c;

	if (h->c != NULL && h->c->st == UPS_DEAD)
		ups_retire(h);
	if (h->c == NULL) {
		if (kind == UK_RSET || kind == UK_QUIT) {
			spool_free(sp);
			return;
		}
		if (kind == UK_DATA || kind == UK_RCPT) {
			/* no transaction upstream any more (it failed) */
			ups_error(h, kind, sl, false,
			    "451 4.4.2 Error: upstream connection lost, try again later");
			spool_free(sp);
			return;
		}
		ups_connect(h, false);
		if (h->c == NULL || h->c->st == UPS_DEAD) {
			ups_error(h, kind, sl, true,
			    "421 4.4.1 %s Error: upstream unavailable, closing connection",
			    h->conf->hostname);
			spool_free(sp);
			return;
		}
	}
	c = ups_cmd_new(kind, line, len, sl, sp);
	if (h->c->out_t)
		h->c->out_t->next = c;
	else
		h->c->out_h = c;
	h->c->out_t = c;
	ups_pump(h);
}

/* ups_closer_free - the goodbye is over: close and forget */
static void
ups_closer_free(struct ups_closer *cl)
{
	struct worker *w = cl->w;

	if (cl->prev)
		cl->prev->next = cl->next;
	else
		w->closers = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	w->nclosers--;
	conn_free(cl->conn);
	free(cl);
	moatd_worker_idle(w);
}

/* ups_closers_free - stopping: end every goodbye still going */
void
ups_closers_free(struct worker *w)
{
	while (w->closers != NULL)
		ups_closer_free(w->closers);
}

/* ups_quit_cb - the QUIT is written: close */
static void
ups_quit_cb(struct conn *cn, void *arg)
{
	(void)cn;
	ups_closer_free(arg);
}

/* ups_quit_event_cb - error or timeout while saying goodbye */
static void
ups_quit_event_cb(struct conn *cn, enum conn_ev what, void *arg)
{
	(void)cn;
	(void)what;
	ups_closer_free(arg);
}

/* ups_disconnect - the connection goes now: parked when nothing of the
 * owner's is on it and it is reusable, else QUIT when idle, else retired;
 * a later command connects again */
void
ups_disconnect(struct ups *h)
{
	struct ups_conn *u = h != NULL ? h->c : NULL;

	if (u == NULL)
		return;
	if (ups_parkable(u) && ups_pool_put(h))
		return;
	if (u->st == UPS_READY && !u->in_txn && u->ninflight == 0 && u->out_h == NULL) {
		ups_goodbye(h->w, u->conn);
		u->conn = NULL;
		h->c = NULL;
		free(u);
		return;
	}
	ups_retire(h);
}

/* ups_free - the owner ends: its connection goes, then its struct ups */
void
ups_free(struct ups *h)
{
	if (h == NULL)
		return;
	ups_disconnect(h);
	free(h);
}
