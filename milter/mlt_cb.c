/*
 * mlt_cb - moat-milter's libmilter callbacks: macros and arguments into
 * requests for the engine, its verdicts into milter replies
 *
 * DESCRIPTION
 *	libmilter calls these on its thread for the MTA connection, one at a
 *	time per connection. connect, helo, envfrom, envrcpt and eom make a
 *	request and wait for the engine's answer until the callback deadline
 *	(mlt_opts.deadline_ms); past it the MTA gets 451 4.4.3 (a tempfail,
 *	never a hang). abort and close post without waiting. The engine
 *	takes a request on this thread when it can have the engine lock,
 *	and answers at once when the stage needs no wait (mlt_engine.c,
 *	THREADS): then no other thread is involved.
 *
 *	A stage at which the policy has no rule (engine_stage_may_refuse())
 *	cannot refuse: connect and helo are then posted without waiting, and
 *	MAIL's request is kept here and rides on the next request of the
 *	connection (RCPT, or whatever comes instead: HELO, another MAIL, the
 *	end of the header's ask-ahead, the end of message, abort, close:
 *	mail_attach()), which the engine takes
 *	after it, in the same hand-over (one wake-up of the engine thread
 *	for both when they go through its mailbox). Only the checks that
 *	MAIL starts (SPF, the sender-domain zones) start at RCPT. The MTA
 *	hands RCPT over right after MAIL when the client pipelines (RFC
 *	2920); a client that does not pipeline has them start one round
 *	trip of its own later.
 *
 *	The message is rebuilt from the header and body callbacks as the
 *	client sent it (the MTA is asked for header values with their
 *	leading space, SMFIP_HDR_LEADSPC) and fed to DKIM (hashing only)
 *	and to the header scanner, which keeps the From values; forged
 *	Authentication-Results fields (our authserv-id) are noted by their
 *	index and removed at the end with smfi_chgheader(..., NULL), the
 *	highest index first so that no removal shifts another.
 *
 *	The policy is the one current at connect (mlt_policy_get()): the
 *	connection keeps that reference until close and gives the engine one
 *	of its own with the CONNECT request, so a reload (SIGHUP) never
 *	changes the rules, the authserv-id or the DKIM switch under a
 *	connection in flight.
 *
 *	smfi_setreply() is not allowed at connect: a refusal of the connect
 *	rules is kept and given at every later callback (HELO, MAIL, RCPT),
 *	so nothing gets through, with moatd's code and text.
 *
 *	Every string passed back to the MTA (reply texts, header values) has
 *	no CR, LF or NUL (HDR-08): the rules' texts are made printable when
 *	they are expanded, and the callbacks check again.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libmilter/mfapi.h>

#include "authres.h"
#include "engine.h"
#include "hdrscan.h"
#include "log.h"
#include "metrics.h"
#include "mlt.h"
#include "rules.h"
#include "xalloc.h"

#define MLT_FORGED_MAX	64		/* forged A-R fields removed per message */
#define MLT_HDR_MAX	(64 * 1024)	/* header block kept for "from" rules */

struct mlt_opts mlt_opts = { 256, 20000 };

static unsigned mlt_conns;		/* atomic: connections being served */

struct mlt_priv {
	struct mlt_conn *mc;
	struct conf *conf;		/* the policy at connect, a reference; with mc */
	uint64_t id;
	bool counted;
	bool leadspc;			/* the MTA sends header values with their space */
	bool noreply;			/* headers, their end and the body need no reply */
	struct mlt_req *mail;		/* MAIL's request, kept back until the next one */
	/* a refusal kept from connect, or a deadline missed there */
	int held;			/* 0, or SMFIS_REJECT / SMFIS_TEMPFAIL */
	int held_code;
	char held_enh[16];
	char held_text[600];
	/* the message, for the engine (engine.h: DKIM, the header scanner,
	 * the header block for "from" rules) */
	struct eng_msg *msg;
	uint64_t size;
	unsigned nar;			/* Authentication-Results fields seen */
	int forged[MLT_FORGED_MAX];
	int nforged;
};

/* ---------------------------------------------------------------------
 * Helpers
 */

static struct mlt_priv *
priv_of(SMFICTX *ctx)
{
	struct mlt_priv *p = smfi_getpriv(ctx);

	if (p == NULL) {
		p = xcalloc(1, sizeof(*p));
		p->id = mlt_new_id();
		p->leadspc = true;
		smfi_setpriv(ctx, p);
	}
	return p;
}

/* macro - a macro's value, or NULL when absent or empty */
static const char *
macro(SMFICTX *ctx, const char *name)
{
	char n[64];
	const char *v;

	snprintf(n, sizeof(n), "%s", name);
	v = smfi_getsymval(ctx, n);
	return v != NULL && v[0] ? v : NULL;
}

/* copy_macro - a macro into a buffer, made printable */
static void
copy_macro(SMFICTX *ctx, const char *name, char *out, size_t size)
{
	const char *v = macro(ctx, name);
	size_t i = 0;

	for (; v != NULL && v[i] && i + 1 < size; i++)
		out[i] = v[i] > 32 && v[i] < 127 ? v[i] : '?';
	out[i] = 0;
}

/* set_reply - smfi_setreply with a checked code and a clean text */
static void
set_reply(SMFICTX *ctx, int code, const char *enh, const char *text)
{
	char rcode[4], xcode[16], msg[1000];
	size_t o = 0;

	if (code < 400 || code > 599)
		code = 451;
	snprintf(rcode, sizeof(rcode), "%d", code);
	snprintf(xcode, sizeof(xcode), "%s", enh && enh[0] == rcode[0] ? enh : code >= 500 ?
	    "5.7.1" : "4.7.1");
	for (size_t i = 0; text[i] && o + 3 < sizeof(msg) && o < 900; i++) {
		unsigned char ch = (unsigned char)text[i];

		if (ch == '%')
			msg[o++] = '%';		/* libmilter: % doubled */
		msg[o++] = ch >= 32 && ch < 127 ? (char)ch : '?';
	}
	msg[o] = 0;
	smfi_setreply(ctx, rcode, xcode, msg);
}

/* answer - what the engine said, as a milter status */
static sfsistat
answer(SMFICTX *ctx, struct mlt_priv *p, struct mlt_req *rq, int rc, const char *stage)
{
	sfsistat st = SMFIS_CONTINUE;

	if (rc != 0) {
		log_msg(LOG_L_WARN, p->id, "tempfail stage=%s reason=deadline deadline-ms=%u", stage,
		    mlt_opts.deadline_ms);
		set_reply(ctx, 451, "4.4.3", "Error: policy checks timed out, try again later");
		st = SMFIS_TEMPFAIL;
	} else if (rq->verdict == RV_REJECT || rq->verdict == RV_TEMPFAIL) {
		set_reply(ctx, rq->code, rq->enh, rq->reply);
		st = rq->verdict == RV_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
	}
	mlt_req_unref(rq);
	return st;
}

/* held - the connect stage's refusal, given again (and a connection whose
 * start the callbacks never saw is refused the same way); true when the
 * callback answers *st */
static bool
held(SMFICTX *ctx, struct mlt_priv *p, sfsistat *st)
{
	if (p->held == 0 && p->mc == NULL) {
		/* no CONNECT reached the callbacks (an MTA that sent commands
		 * out of order, which libmilter then skips): nothing passes
		 * that the policy did not see */
		p->held = SMFIS_TEMPFAIL;
		p->held_code = 451;
		snprintf(p->held_enh, sizeof(p->held_enh), "4.7.0");
		snprintf(p->held_text, sizeof(p->held_text), "Error: the policy service did not see "
		    "this connection start, try again later");
		log_msg(LOG_L_WARN, p->id, "tempfail reason=no-connect (the MTA's commands came out "
		    "of order)");
	}
	if (p->held == 0)
		return false;
	set_reply(ctx, p->held_code, p->held_enh, p->held_text);
	*st = p->held;
	return true;
}

/* msg_reset - the message state goes (end, abort, close) */
static void
msg_reset(struct mlt_priv *p)
{
	engine_msg_free(p->msg);
	p->msg = NULL;
	p->size = 0;
	p->nar = 0;
	p->nforged = 0;
}

/* msg_begin - the first header of a message */
static void
msg_begin(struct mlt_priv *p)
{
	if (p->msg == NULL)
		p->msg = engine_msg_new(p->conf, NULL, NULL);
}

static void mail_attach(struct mlt_priv *p, struct mlt_req *rq);

/* msg_feed - message bytes as the client sent them; once the header is
 * in (the end-of-header callback, or the first body chunk), the names
 * the end of the message will look up and the cache lacks go to the
 * engine, which asks them while the body comes (nobody waits) */
static void
msg_feed(struct mlt_priv *p, const void *buf, size_t len)
{
	struct eng_ahead *a;

	p->size += len;
	engine_msg_feed(p->msg, buf, len);
	if ((a = engine_msg_ahead(p->msg)) != NULL) {
		struct mlt_req *rq;

		rq = mlt_req_new(p->mc, MS_EOH, p->id);
		mail_attach(p, rq);	/* MAIL's request first: the transaction */
		rq->ahead = a;
		mlt_req_post(rq);
	}
}

/* mail_attach - MAIL's request kept back goes to the engine with the
 * connection's next request, rq, which carries it: taken first, in the
 * same hand-over (one wake-up of the engine thread for both, or none) */
static void
mail_attach(struct mlt_priv *p, struct mlt_req *rq)
{
	rq->before = p->mail;
	p->mail = NULL;
}

/* ---------------------------------------------------------------------
 * Callbacks
 */

static sfsistat
cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
	unsigned long f3, unsigned long *pf0, unsigned long *pf1, unsigned long *pf2,
	unsigned long *pf3)
{
	struct mlt_priv *p = priv_of(ctx);
	char conn[] = "{client_addr} {daemon_port} {daemon_name}";
	char helo[] = "{tls_version} {cipher} {cert_subject}";
	char mail[] = "i {auth_authen} {tls_version} {cipher} {cert_subject}";

	(void)f2;
	(void)f3;
	*pf0 = (SMFIF_ADDHDRS | SMFIF_CHGHDRS) & f0;
	/* headers, the end of headers and body chunks always continue: the
	 * MTA need not wait for an answer to each (a round trip apiece) */
	*pf1 = (SMFIP_HDR_LEADSPC | SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_NR_HDR | SMFIP_NR_EOH |
	    SMFIP_NR_BODY) & f1;
	*pf2 = 0;
	*pf3 = 0;
	p->leadspc = (f1 & SMFIP_HDR_LEADSPC) != 0;
	p->noreply = (f1 & (SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY)) ==
	    (SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY);
	if (!p->noreply)
		*pf1 &= ~(unsigned long)(SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY);
	/* ask for the macros moat reads (the MTA may ignore this) */
	smfi_setsymlist(ctx, SMFIM_CONNECT, conn);
	smfi_setsymlist(ctx, SMFIM_HELO, helo);
	smfi_setsymlist(ctx, SMFIM_ENVFROM, mail);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
	struct mlt_priv *p = priv_of(ctx);
	struct mlt_req *rq;
	struct sockaddr_storage peer;
	const char *port, *v;
	int rc;

	memset(&peer, 0, sizeof(peer));	/* AF_UNSPEC: unknown */
	if (sa != NULL && sa->sa_family == AF_INET)
		memcpy(&peer, sa, sizeof(struct sockaddr_in));
	else if (sa != NULL && sa->sa_family == AF_INET6)
		memcpy(&peer, sa, sizeof(struct sockaddr_in6));
	else if ((v = macro(ctx, "{client_addr}")) != NULL) {
		/* no usable address argument: the macro, IPv4 or IPv6 */
		struct sockaddr_in *s4 = (struct sockaddr_in *)&peer;
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&peer;

		if (strncasecmp(v, "IPv6:", 5) == 0)
			v += 5;
		if (inet_pton(AF_INET, v, &s4->sin_addr) == 1)
			s4->sin_family = AF_INET;
		else if (inet_pton(AF_INET6, v, &s6->sin6_addr) == 1)
			s6->sin6_family = AF_INET6;
	}
	if (__atomic_add_fetch(&mlt_conns, 1, __ATOMIC_RELAXED) > mlt_opts.max_conns) {
		char who[ENG_WHO_SIZE];

		__atomic_sub_fetch(&mlt_conns, 1, __ATOMIC_RELAXED);
		engine_who(NULL, peer.ss_family == AF_UNSPEC ? NULL : (struct sockaddr *)&peer, who,
		    sizeof(who));
		log_msg(LOG_L_WARN, p->id, "tempfail stage=connect reason=max-connections max=%u %s",
		    mlt_opts.max_conns, who);
		p->held = SMFIS_TEMPFAIL;
		p->held_code = 421;
		snprintf(p->held_enh, sizeof(p->held_enh), "4.7.0");
		snprintf(p->held_text, sizeof(p->held_text), "Error: too many connections to the "
		    "policy service, try again later");
		return SMFIS_CONTINUE;	/* the reply can only be set at a later callback */
	}
	p->counted = true;
	metrics_inc(MF_SESSIONS_OPENED, NULL, NULL);
	metrics_add(MF_SESSIONS_ACTIVE, NULL, NULL, 1);
	p->conf = mlt_policy_get();	/* for the whole connection */
	p->mc = mlt_conn_new();
	rq = mlt_req_new(p->mc, MS_CONNECT, p->id);
	rq->conf = conf_ref(p->conf);	/* the engine's own */
	memcpy(&rq->peer, &peer, sizeof(peer));
	/* the MTA's name for the client, for the disconnect line */
	snprintf(rq->text, sizeof(rq->text), "%s", hostname ? hostname : "");
	port = macro(ctx, "{daemon_port}");
	rq->submission = port != NULL && (strcmp(port, "587") == 0 || strcmp(port, "465") == 0);
	if (log_enabled(LOG_L_DEBUG)) {
		/* at info the disconnect line says all this */
		char ip[INET6_ADDRSTRLEN] = "unknown", esc[LOG_ESC_SIZE];

		if (rq->peer.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&rq->peer)->sin_addr, ip, sizeof(ip));
		else if (rq->peer.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&rq->peer)->sin6_addr, ip, sizeof(ip));
		log_escape(esc, sizeof(esc), hostname ? hostname : "", hostname ? strlen(hostname) : 0);
		log_msg(LOG_L_DEBUG, p->id, "connect client=%s name=\"%s\"%s", ip, esc,
		    rq->submission ? " submission=yes" : "");
	}
	if (!engine_stage_may_refuse(p->conf, RS_CONNECT)) {
		mlt_req_post(rq);	/* nothing at connect can refuse: no wait */
		return SMFIS_CONTINUE;
	}
	rc = mlt_req_call(rq, mlt_opts.deadline_ms);
	if (rc != 0 || rq->verdict == RV_REJECT || rq->verdict == RV_TEMPFAIL) {
		/* kept for the next callbacks: no reply text at connect */
		p->held = rc != 0 || rq->verdict == RV_TEMPFAIL ? SMFIS_TEMPFAIL : SMFIS_REJECT;
		p->held_code = rc != 0 ? 451 : rq->code;
		snprintf(p->held_enh, sizeof(p->held_enh), "%s", rc != 0 ? "4.4.3" : rq->enh);
		snprintf(p->held_text, sizeof(p->held_text), "%s", rc != 0 ?
		    "Error: policy checks timed out, try again later" : rq->reply);
		if (rc != 0)
			log_msg(LOG_L_WARN, p->id, "tempfail stage=connect reason=deadline");
	}
	mlt_req_unref(rq);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_helo(SMFICTX *ctx, char *name)
{
	struct mlt_priv *p = priv_of(ctx);
	struct mlt_req *rq;
	sfsistat st = SMFIS_CONTINUE;

	if (held(ctx, p, &st))
		return st;
	rq = mlt_req_new(p->mc, MS_HELO, p->id);
	mail_attach(p, rq);
	snprintf(rq->text, sizeof(rq->text), "%s", name ? name : "");
	copy_macro(ctx, "{tls_version}", rq->tls_version, sizeof(rq->tls_version));
	copy_macro(ctx, "{cipher}", rq->tls_cipher, sizeof(rq->tls_cipher));
	copy_macro(ctx, "{cert_subject}", rq->tls_cert, sizeof(rq->tls_cert));
	if (!engine_stage_may_refuse(p->conf, RS_HELO)) {
		mlt_req_post(rq);	/* the engine takes it in order; nothing to wait for */
		return SMFIS_CONTINUE;
	}
	return answer(ctx, p, rq, mlt_req_call(rq, mlt_opts.deadline_ms), "helo");
}

/* join - the command's arguments, space-separated, bounded */
static void
join(char **argv, char *out, size_t size)
{
	size_t o = 0;

	out[0] = 0;
	for (int i = 0; argv != NULL && argv[i] != NULL && o + 1 < size; i++) {
		int n = snprintf(out + o, size - o, "%s%s", i ? " " : "", argv[i]);

		if (n < 0 || (size_t)n >= size - o) {
			out[o] = 0;
			break;
		}
		o += (size_t)n;
	}
}

static sfsistat
cb_envfrom(SMFICTX *ctx, char **argv)
{
	struct mlt_priv *p = priv_of(ctx);
	struct mlt_req *rq;
	sfsistat st = SMFIS_CONTINUE;

	msg_reset(p);
	if (held(ctx, p, &st))
		return st;
	rq = mlt_req_new(p->mc, MS_MAIL, p->id);
	mail_attach(p, rq);	/* a MAIL with no RCPT after it */
	join(argv, rq->text, sizeof(rq->text));
	copy_macro(ctx, "{auth_authen}", rq->login, sizeof(rq->login));
	copy_macro(ctx, "{tls_version}", rq->tls_version, sizeof(rq->tls_version));
	copy_macro(ctx, "{cipher}", rq->tls_cipher, sizeof(rq->tls_cipher));
	copy_macro(ctx, "{cert_subject}", rq->tls_cert, sizeof(rq->tls_cert));
	if (log_enabled(LOG_L_DEBUG)) {
		char qid[32];

		copy_macro(ctx, "i", qid, sizeof(qid));
		if (qid[0])
			log_msg(LOG_L_DEBUG, p->id, "mail queue-id=%s", qid);
	}
	if (!engine_stage_may_refuse(p->conf, RS_MAIL)) {
		p->mail = rq;	/* posted with the next request (see DESCRIPTION) */
		return SMFIS_CONTINUE;
	}
	return answer(ctx, p, rq, mlt_req_call(rq, mlt_opts.deadline_ms), "mail");
}

static sfsistat
cb_envrcpt(SMFICTX *ctx, char **argv)
{
	struct mlt_priv *p = priv_of(ctx);
	struct mlt_req *rq;
	sfsistat st = SMFIS_CONTINUE;

	if (held(ctx, p, &st))
		return st;
	rq = mlt_req_new(p->mc, MS_RCPT, p->id);
	mail_attach(p, rq);
	join(argv, rq->text, sizeof(rq->text));
	return answer(ctx, p, rq, mlt_req_call(rq, mlt_opts.deadline_ms), "rcpt");
}

static sfsistat
cb_header(SMFICTX *ctx, char *name, char *value)
{
	struct mlt_priv *p = priv_of(ctx);
	char sb[1024], *f;
	size_t nl, o = 0, vl, need;

	if (p->mc == NULL || name == NULL || value == NULL)
		return p->noreply ? SMFIS_NOREPLY : SMFIS_CONTINUE;
	msg_begin(p);
	nl = strlen(name);
	vl = strlen(value);
	if (nl + vl > HDRSCAN_FIELD_MAX)
		vl = HDRSCAN_FIELD_MAX - nl;
	/* "Name:" value CRLF, lone LFs of folded values made CRLF */
	need = nl + 2 * vl + 4;
	f = need <= sizeof(sb) ? sb : xmalloc(need);	/* most fields fit on the stack */
	memcpy(f, name, nl);
	o = nl;
	f[o++] = ':';
	if (!p->leadspc)
		f[o++] = ' ';
	for (size_t i = 0; i < vl; i++) {
		if (value[i] == '\n' && (i == 0 || value[i - 1] != '\r'))
			f[o++] = '\r';
		f[o++] = value[i];
	}
	f[o++] = '\r';
	f[o++] = '\n';
	if (strcasecmp(name, "Authentication-Results") == 0) {
		p->nar++;
		if (authres_field_is_ours(f, o, p->conf->authserv_id) && p->nforged < MLT_FORGED_MAX)
			p->forged[p->nforged++] = (int)p->nar;
	}
	msg_feed(p, f, o);
	if (f != sb)
		free(f);
	return p->noreply ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat
cb_eoh(SMFICTX *ctx)
{
	struct mlt_priv *p = priv_of(ctx);

	if (p->mc == NULL)
		return p->noreply ? SMFIS_NOREPLY : SMFIS_CONTINUE;
	msg_begin(p);
	msg_feed(p, "\r\n", 2);
	return p->noreply ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat
cb_body(SMFICTX *ctx, unsigned char *buf, size_t len)
{
	struct mlt_priv *p = priv_of(ctx);

	if (p->mc == NULL || p->msg == NULL)
		return p->noreply ? SMFIS_NOREPLY : SMFIS_CONTINUE;
	msg_feed(p, buf, len);
	return p->noreply ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

/* add_fields - the engine's fields (CRLF lines, folded) on top, in order */
static void
add_fields(SMFICTX *ctx, struct mlt_priv *p, const char *h, size_t len)
{
	size_t starts[64];
	int n = 0;

	/* field starts: a line that does not begin with white space */
	for (size_t i = 0; i < len && n < 64; ) {
		starts[n++] = i;
		do {
			const char *e = memchr(h + i, '\n', len - i);

			i = e ? (size_t)(e - h) + 1 : len;
		} while (i < len && (h[i] == ' ' || h[i] == '\t'));
	}
	/* index 0 puts a field on top: the last first */
	for (int k = n - 1; k >= 0; k--) {
		size_t end = k + 1 < n ? starts[k + 1] : len;
		const char *colon = memchr(h + starts[k], ':', end - starts[k]);
		char name[128], *value;
		size_t nl, o = 0;

		if (colon == NULL || (size_t)(colon - (h + starts[k])) >= sizeof(name))
			continue;
		nl = (size_t)(colon - (h + starts[k]));
		memcpy(name, h + starts[k], nl);
		name[nl] = 0;
		value = xmalloc(end - starts[k] + 2);
		if (p->leadspc)
			value[o++] = ' ';
		for (const char *c = colon + 1 + (colon[1] == ' '); c < h + end; c++) {
			if (*c == '\r' || *c == 0)
				continue;	/* folded lines: LF only, as milters send them */
			value[o++] = *c;
		}
		while (o > 0 && value[o - 1] == '\n')
			o--;
		value[o] = 0;
		if (smfi_insheader(ctx, 0, name, value) != MI_SUCCESS)
			log_msg(LOG_L_WARN, p->id, "milter insheader failed field=%s", name);
		free(value);
	}
}

static sfsistat
cb_eom(SMFICTX *ctx)
{
	struct mlt_priv *p = priv_of(ctx);
	struct mlt_req *rq;
	sfsistat st = SMFIS_CONTINUE;
	int rc;

	if (held(ctx, p, &st))
		return st;
	msg_begin(p);
	rq = mlt_req_new(p->mc, MS_EOM, p->id);
	mail_attach(p, rq);
	rq->msg = p->msg;	/* the engine's from now on */
	p->msg = NULL;
	rq->size = p->size;
	copy_macro(ctx, "i", rq->text, sizeof(rq->text));	/* the MTA's queue id */
	rc = mlt_req_call(rq, mlt_opts.deadline_ms);
	if (rc == 0 && rq->verdict != RV_REJECT && rq->verdict != RV_TEMPFAIL) {
		char an[] = "Authentication-Results";

		for (int i = p->nforged - 1; i >= 0; i--)
			if (smfi_chgheader(ctx, an, p->forged[i], NULL) != MI_SUCCESS)
				log_msg(LOG_L_WARN, p->id, "milter chgheader failed index=%d",
				    p->forged[i]);
		if (rq->hdrs_len > 0)
			add_fields(ctx, p, rq->hdrs, rq->hdrs_len);
	}
	st = answer(ctx, p, rq, rc, "data");
	msg_reset(p);
	return st;
}

static sfsistat
cb_abort(SMFICTX *ctx)
{
	struct mlt_priv *p = smfi_getpriv(ctx);

	if (p == NULL)
		return SMFIS_CONTINUE;
	msg_reset(p);
	if (p->mc != NULL) {
		struct mlt_req *rq = mlt_req_new(p->mc, MS_ABORT, p->id);

		mail_attach(p, rq);
		mlt_req_post(rq);
	}
	return SMFIS_CONTINUE;
}

static sfsistat
cb_close(SMFICTX *ctx)
{
	struct mlt_priv *p = smfi_getpriv(ctx);

	if (p == NULL)
		return SMFIS_CONTINUE;
	msg_reset(p);
	if (p->mc != NULL) {
		/* the engine's thread writes the disconnect line, after the
		 * connection's verdict lines */
		struct mlt_req *rq = mlt_req_new(p->mc, MS_CLOSE, p->id);

		mail_attach(p, rq);
		rq->code = p->held_code;	/* refused at connect */
		mlt_req_post(rq);
	}
	if (p->counted) {
		__atomic_sub_fetch(&mlt_conns, 1, __ATOMIC_RELAXED);
		metrics_add(MF_SESSIONS_ACTIVE, NULL, NULL, -1);
	}
	conf_unref(p->conf);
	smfi_setpriv(ctx, NULL);
	free(p);
	return SMFIS_CONTINUE;
}

static char mlt_name[] = "moat-milter";

struct smfiDesc mlt_desc = {
	.xxfi_name = mlt_name,
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS,
	.xxfi_connect = cb_connect,
	.xxfi_helo = cb_helo,
	.xxfi_envfrom = cb_envfrom,
	.xxfi_envrcpt = cb_envrcpt,
	.xxfi_header = cb_header,
	.xxfi_eoh = cb_eoh,
	.xxfi_body = cb_body,
	.xxfi_eom = cb_eom,
	.xxfi_abort = cb_abort,
	.xxfi_close = cb_close,
	.xxfi_unknown = NULL,
	.xxfi_data = NULL,
	.xxfi_negotiate = cb_negotiate,
};
