/*
 * smtp_server - the server side of a client session (RFC 5321)
 *
 * SYNOPSIS
 *	void sess_start(struct worker *w, struct conf *c, int fd,
 *	                const struct sockaddr *sa, socklen_t salen, unsigned lflags,
 *	                const struct listen_origin *o);
 *
 * DESCRIPTION
 *	Reads command lines with a hard cap (SMTP_CMD_LINE_MAX), parses them
 *	with smtp_parse, and runs each through the verb table: check (syntax,
 *	ordering), then proceed; HELO/EHLO, MAIL, RCPT and DATA then get the
 *	engine's verdict for the policy stage named in their row (DATA's at
 *	the end of the content), and the row's finish acts on it. MAIL and
 *	RCPT go to the upstream in lockstep (upstream.c), each holding a
 *	reply slot that the upstream's answer fills; everything else is
 *	answered locally, in order behind any slot still waiting. DATA waits
 *	until every earlier reply is in (it must know whether any recipient
 *	was accepted), answers 354 itself and streams the content through
 *	the DATA decoder into the spool; at the end of data the message goes
 *	upstream and the client gets the upstream's reply to the dot, never
 *	an earlier 250.
 *
 * PHASES
 *	The session's place in the dialogue is one enum sess_phase
 *	(session.h), changed only by sess_enter_phase(), which logs
 *	"phase OLD -> NEW" at debug level:
 *
 *	connected -> greeted -> helo -> mail -> rcpt -> data -> data-end
 *	    -> helo ... -> closing
 *
 *	with tls for a handshake (implicit TLS before connected's greeting;
 *	STARTTLS from greeted or later, back to greeted) and auth for an
 *	AUTH exchange (from helo, back to helo). A refused HELO goes back to
 *	greeted; the end of a transaction (RSET, HELO, a MAIL the policy
 *	refused, the message judged) back to helo. The transaction (s->txn)
 *	exists exactly in mail, rcpt, data and data-end (a MAIL the upstream
 *	refused stays there, marked failed, until the next MAIL or RSET).
 *	What the phase does not say stays beside it: s->waiting (the stage
 *	whose verdict the engine owes; no command is read meanwhile),
 *	s->closing (sess_close() ran, the free is pending), s->quit (the
 *	close's reason), s->esmtp, s->discard (the line reader's).
 *
 * LIMITS
 *	One line reader (sess_line_read()) serves commands and the lines of
 *	an AUTH exchange, with the phase's cap: a command 512 bytes, an AUTH
 *	command SESS_AUTH_LINE_MAX, an exchange line SASL_LINE_MAX + 2 (CRLF
 *	included; longer: 500 5.5.2 or 5.5.6, the rest of the line is
 *	discarded; a line ended by a bare LF: 500 5.5.2, never guessed at);
 *	bad commands per session (max-errors, then 421); junk
 *	commands (max-junk-commands); recipients per message (452 4.5.3);
 *	replies outstanding (max-pending-commands: input is left unread
 *	until they are written); client input buffered (SESS_INPUT_MAX, the
 *	connection's read cap) and output (SESS_OUTPUT_MAX,
 *	then input stops). Time: a deadline per command that only a complete
 *	command (or our own reply) moves, a DATA deadline that grows only by
 *	bytes / data-min-rate, and a session deadline.
 *
 * LIFETIME
 *	sess_close() stops reading, lets the output drain (bounded by
 *	SESS_CLOSE_MS) and then frees the session from an event of its own:
 *	nothing is freed inside a callback that may still touch it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "auth.h"
#include "conn.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "moatd.h"
#include "rules.h"
#include "sasl.h"
#include "session.h"
#include "spool.h"
#include "textbuf.h"
#include "tls.h"
#include "xalloc.h"

#define SESS_INPUT_MAX   (64 * 1024)	/* client bytes read ahead of processing */
#define SESS_OUTPUT_MAX  (64 * 1024)	/* replies not yet taken by the client */
#define SESS_CLOSE_MS    10000		/* flushing the last reply */
#define SESS_REPLY_MAX   1024

static void sess_process_input(struct session *s);
static void sess_data_input(struct session *s);
static void sess_begin_close(struct session *s);
static void sess_greet(struct session *s);
static void data_finish(struct session *s, bool go);
static void helo_finish(struct session *s, bool go);
static void mail_finish(struct session *s, bool go);
static void rcpt_finish(struct session *s, bool go);
struct sess_verb;
static void sess_judge(struct session *s, const struct sess_verb *v);

/* sess_now_ms - monotonic milliseconds */
uint64_t
sess_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------
 * Phases
 */

static const char *const sess_phase_names[] = {
	[SP_CONNECTED] = "connected", [SP_TLS] = "tls", [SP_GREETED] = "greeted",
	[SP_HELO] = "helo", [SP_AUTH] = "auth", [SP_MAIL] = "mail", [SP_RCPT] = "rcpt",
	[SP_DATA] = "data", [SP_DATA_END] = "data-end", [SP_CLOSING] = "closing",
};

/* sess_phase_name - a phase's name, for logs */
const char *
sess_phase_name(enum sess_phase p)
{
	if ((size_t)p >= sizeof(sess_phase_names) / sizeof(sess_phase_names[0]) ||
	    sess_phase_names[p] == NULL)
		return "?";
	return sess_phase_names[p];
}

/* sess_enter_phase - the one place the phase changes, logged at debug */
void
sess_enter_phase(struct session *s, enum sess_phase p)
{
	if (s->phase == p)
		return;
	log_msg(LOG_L_DEBUG, s->id, "phase %s -> %s", sess_phase_name(s->phase),
	    sess_phase_name(p));
	s->phase = p;
}

/* sess_phase_cmd - is the next input a command (or an AUTH line)? Not in
 * the content, a handshake or the close. Before the greeting it is too,
 * but s->waiting holds it back. */
static bool
sess_phase_cmd(enum sess_phase p)
{
	return p != SP_DATA && p != SP_TLS && p != SP_CLOSING;
}

/* ---------------------------------------------------------------------
 * Reply slots
 */

/* sess_slot_new - a slot that a later reply fills */
struct slot *
sess_slot_new(struct session *s)
{
	struct slot *sl = xcalloc(1, sizeof(*sl));

	if (s->sq_tail)
		s->sq_tail->next = sl;
	else
		s->sq_head = sl;
	s->sq_tail = sl;
	s->nslots++;
	s->npending++;
	return sl;
}

/* sess_slot_fill - give a slot its reply text (CRLF lines) and flush */
void
sess_slot_fill(struct session *s, struct slot *sl, const char *text, size_t len)
{
	if (sl->filled)
		panic("slot filled twice");
	sl->text = xmemdup(text, len);
	sl->len = (unsigned short)(len > 0xffff ? 0xffff : len);
	sl->filled = true;
	s->npending--;
	sess_flush(s);
}

/* sess_vformat - format a reply, adding CRLF */
static size_t
sess_vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
	int n = vsnprintf(buf, size - 2, fmt, ap);

	if (n < 0)
		n = 0;
	if ((size_t)n > size - 3)
		n = (int)(size - 3);
	buf[n++] = '\r';
	buf[n++] = '\n';
	buf[n] = 0;
	return (size_t)n;
}

/* sess_slot_fillf - fill a slot with a formatted one-line reply */
void
sess_slot_fillf(struct session *s, struct slot *sl, const char *fmt, ...)
{
	char buf[SESS_REPLY_MAX];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = sess_vformat(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sess_slot_fill(s, sl, buf, n);
}

/* sess_reply_close - a local reply after which the session ends */
void
sess_reply_close(struct session *s, const char *fmt, ...)
{
	char buf[SESS_REPLY_MAX];
	va_list ap;
	size_t n;
	struct slot *sl;

	va_start(ap, fmt);
	n = sess_vformat(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sl = sess_slot_new(s);
	sl->close_after = true;
	sess_slot_fill(s, sl, buf, n);
}

/* sess_replyf - a local reply, in order behind pending slots */
void
sess_replyf(struct session *s, const char *fmt, ...)
{
	char buf[SESS_REPLY_MAX];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = sess_vformat(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (s->sq_head == NULL) {
		if (!s->closing)
			conn_write(s->conn, buf, n);
		return;
	}
	sess_slot_fill(s, sess_slot_new(s), buf, n);
}

/* sess_slots_free - drop every slot (closing) */
static void
sess_slots_free(struct session *s)
{
	struct slot *sl, *next;

	for (sl = s->sq_head; sl; sl = next) {
		next = sl->next;
		free(sl->text);
		free(sl);
	}
	s->sq_head = s->sq_tail = NULL;
	s->nslots = s->npending = 0;
}

/* sess_flush - write every filled slot at the head of the queue */
void
sess_flush(struct session *s)
{
	struct slot *sl;
	bool close_after = false;

	while (!s->closing && (sl = s->sq_head) != NULL && sl->filled) {
		conn_write(s->conn, sl->text, sl->len);
		s->sq_head = sl->next;
		if (s->sq_head == NULL)
			s->sq_tail = NULL;
		s->nslots--;
		close_after = sl->close_after;
		free(sl->text);
		free(sl);
		if (close_after) {
			sess_begin_close(s);
			return;
		}
	}
	if (s->closing)
		return;
	if (s->sq_head == NULL && sess_phase_cmd(s->phase)) {
		if (s->w->draining && !sess_phase_txn(s->phase)) {
			/* shutting down: the transaction is over, say goodbye */
			sess_drain(s);
			return;
		}
		s->cmd_deadline_ms = sess_now_ms() + s->conf->command_deadline_ms;
		sess_arm_timer(s);
	}
	if (!s->in_input)
		sess_process_input(s);
}

/* ---------------------------------------------------------------------
 * Errors and limits
 */

/* sess_error - count a bad command; true if the session must end */
bool
sess_error(struct session *s)
{
	if (++s->errors < s->conf->max_errors)
		return false;
	log_msg(LOG_L_INFO, s->id, "limit reason=errors count=%u", s->errors);
	sess_reply_close(s, "421 4.7.0 %s Error: too many errors", s->conf->hostname);
	return true;
}

/* sess_junk - count a NOOP/RSET/VRFY/HELP; true if the session must end */
static bool
sess_junk(struct session *s)
{
	if (++s->junk <= s->conf->max_junk)
		return false;
	log_msg(LOG_L_INFO, s->id, "limit reason=junk-commands count=%u", s->junk);
	sess_reply_close(s, "421 4.7.0 %s Error: too many commands", s->conf->hostname);
	return true;
}

/* ---------------------------------------------------------------------
 * Transactions
 */

/* sess_txn_free - forget the transaction (the upstream is reset apart):
 * back to SP_HELO, unless the session is closing */
void
sess_txn_free(struct session *s)
{
	if (!s->closing && sess_phase_txn(s->phase))
		sess_enter_phase(s, SP_HELO);
	if (s->txn == NULL)
		return;
	if (s->eng != NULL)
		engine_txn_end(s->eng);
	spool_free(s->txn->spool);
	engine_msg_free(s->txn->msg);
	free(s->txn);
	s->txn = NULL;
}

/* sess_txn_abort - forget the transaction and abort it upstream */
void
sess_txn_abort(struct session *s)
{
	sess_txn_free(s);
	if (ups_has_txn(s->ups))
		ups_submit(s->ups, UK_RSET, "RSET\r\n", 6, NULL, NULL);
}

/* ---------------------------------------------------------------------
 * The upstream side's owner callbacks (upstream.h)
 */

/* sess_ups_reply - the upstream's reply to a command of ours: what it
 * means for the transaction (or the AUTH exchange), then the client gets
 * it in its slot */
static void
sess_ups_reply(void *arg, enum ups_kind k, struct slot *sl, const struct reply *r)
{
	struct session *s = arg;
	char buf[REPLY_TEXT_MAX + REPLY_LINES_MAX * 16];
	bool ok = r->code / 100 == 2;
	int n;

	switch (k) {
	case UK_AUTH:
	case UK_AUTHDATA:
		auth_ups_reply(s, sl, r);
		return;
	case UK_MAIL:
		if (!ok && s->txn != NULL)
			s->txn->mail_failed = true;
		break;
	case UK_RCPT:
		if (ok && s->txn != NULL)
			s->txn->nrcpt_ok++;
		break;
	default:
		break;
	}
	if (s->eng != NULL && (k == UK_MAIL || k == UK_RCPT || k == UK_DATA || k == UK_DOT)) {
		/* the verdict line: the upstream's part */
		size_t l0;
		const char *t0 = reply_line(r, 0, &l0);

		engine_upstream_reply(s->eng, k == UK_MAIL ? RS_MAIL : k == UK_RCPT ? RS_RCPT : RS_DATA,
		    r->code, r->enh, t0, l0);
	}
	if (sl == NULL)
		return;
	n = reply_render(r, 0, true, buf, sizeof(buf));
	if (n < 0)
		sess_slot_fillf(s, sl, "451 4.4.0 Error: unreadable reply from upstream");
	else
		sess_slot_fill(s, sl, buf, (size_t)n);
}

/* sess_vlog_failed - the verdict line of a transaction whose command
 * got moat's own reply line (code, enhanced code, text, CRLF) because the
 * upstream failed (upstream), or that a limit of moat's ended */
static void
sess_vlog_failed(struct session *s, enum rules_stage st, bool upstream, const char *line,
	size_t len)
{
	char enh[12] = "";
	size_t i = 4, e;

	if (s->eng == NULL || len < 4)
		return;
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	for (e = i; e < len && line[e] != ' '; e++)
		;
	if (e > i && e - i < sizeof(enh) && line[i] >= '2' && line[i] <= '5' && line[i + 1] == '.') {
		memcpy(enh, line + i, e - i);
		enh[e - i] = 0;
		i = e + 1;
	}
	if (i > len)
		i = len;
	engine_txn_failed(s->eng, st, upstream, atoi(line), enh, line + i, len - i);
}

/* sess_ups_error - upstream.c's own reply for a slot (a 4xx) */
static void
sess_ups_error(void *arg, enum ups_kind k, struct slot *sl, const char *text, size_t len,
	bool close)
{
	struct session *s = arg;

	if (k == UK_MAIL || k == UK_RCPT || k == UK_DATA || k == UK_DOT)
		sess_vlog_failed(s, k == UK_MAIL ? RS_MAIL : k == UK_RCPT ? RS_RCPT : RS_DATA, true,
		    text, len);
	if (close)
		sl->close_after = true;
	sess_slot_fill(s, sl, text, len);
}

/* sess_ups_lost - the upstream failed: the open transaction is gone, and
 * what the client sends for it now gets a 4xx, never a 5xx; so is an
 * AUTH exchange */
static void
sess_ups_lost(void *arg)
{
	struct session *s = arg;

	if (s->txn != NULL) {
		s->txn->mail_failed = true;
		s->txn->lost = true;
	}
	if (s->eng != NULL)
		engine_upstream_lost(s->eng);
	auth_ups_lost(s);
}

/* sess_ups_ident - the client as it is now, for XCLIENT, PROXY and the
 * EHLO after XCLIENT (borrowed: valid until the session changes) */
static void
sess_ups_ident(void *arg, struct ident_client *ic)
{
	struct session *s = arg;

	ic->src = (const struct sockaddr *)&s->peer;
	ic->dst = (const struct sockaddr *)&s->local;
	ic->helo = s->helo;
	ic->helolen = s->helo ? strlen(s->helo) : 0;
	ic->esmtp = s->esmtp;
	ic->login = auth_login(s);
}

/* sess_upstream - the session's upstream side, made on first use */
struct ups *
sess_upstream(struct session *s)
{
	if (s->ups == NULL) {
		const struct ups_owner o = {
			.arg = s, .reply = sess_ups_reply, .error = sess_ups_error,
			.lost = sess_ups_lost, .ident = sess_ups_ident,
		};
		s->ups = ups_new(s->w, s->conf, s->id, &o);
	}
	return s->ups;
}

/* sess_reply_lost - the reply for a command of a transaction that the
 * upstream lost */
static void
sess_reply_lost(struct session *s, enum rules_stage st)
{
	static const char lost[] = "451 4.4.2 Error: upstream connection lost, try again later";

	sess_vlog_failed(s, st, true, lost, sizeof(lost) - 1);
	sess_replyf(s, "%s", lost);
}

/* ---------------------------------------------------------------------
 * Commands
 */

/*
 * A row of the verb table: check (syntax, order, TLS/AUTH required; it
 * answers a refusal itself), proceed, and for a verb the policy judges,
 * its stage and finish. proceed gives the engine the command's facts and
 * calls sess_judge(), which asks the verdict of the row's stage and runs
 * finish with go set, or clear after a refusal (the reply is given);
 * when the engine must wait, sess_resume() judges again later. DATA's
 * stage is judged at the end of the content.
 */
struct sess_verb {
	enum smtp_verb verb;
	enum rules_stage stage;	/* the policy stage that judges it; RS__COUNT: none */
	unsigned flags;
	bool (*check)(struct session *, const struct smtp_cmd *);
	void (*proceed)(struct session *, const struct smtp_cmd *);
	void (*finish)(struct session *, bool go);
	const char *reply;	/* proceed_fixed's answer */
};

#define VF_LAST     0x01u	/* must end a pipelined group (RFC 2920 3.1) */
#define VF_BARRIER  0x02u	/* wait for every earlier reply first */
#define VF_JUNK     0x04u	/* counts toward max-junk-commands */

/* sess_size_limit - our message size limit, or the upstream's if smaller */
static uint64_t
sess_size_limit(const struct session *s)
{
	uint64_t usize = 0;
	unsigned caps = ups_known_caps(&usize);
	uint64_t size = s->conf->max_message_size;

	if ((caps & UPS_CAP_KNOWN) && (caps & UPS_CAP_SIZE) && usize != 0 && usize < size)
		size = usize;
	return size;
}

/* sess_ehlo_reply - our capabilities, limited to what the upstream does */
static void
sess_ehlo_reply(struct session *s)
{
	char buf[SESS_REPLY_MAX], authl[128];
	unsigned caps = ups_known_caps(NULL);
	uint64_t size = sess_size_limit(s);
	int n;

	auth_ehlo(s, authl, sizeof(authl));
	n = snprintf(buf, sizeof(buf),
	    "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n%s%s%s%s%s250 ENHANCEDSTATUSCODES\r\n",
	    s->conf->hostname, (unsigned long long)size,
	    !(caps & UPS_CAP_KNOWN) || (caps & UPS_CAP_8BITMIME) ? "250-8BITMIME\r\n" : "",
	    !(caps & UPS_CAP_KNOWN) || (caps & UPS_CAP_SMTPUTF8) ? "250-SMTPUTF8\r\n" : "",
	    (caps & UPS_CAP_KNOWN) && (caps & UPS_CAP_DSN) ? "250-DSN\r\n" : "",
	    tls_offered(s) ? "250-STARTTLS\r\n" : "", authl);
	if (n < 0 || (size_t)n >= sizeof(buf))
		panic("EHLO reply too long");
	if (s->sq_head == NULL)
		conn_write(s->conn, buf, (size_t)n);
	else
		sess_slot_fill(s, sess_slot_new(s), buf, (size_t)n);
}

/* check_helo - HELO/EHLO need a name */
static bool
check_helo(struct session *s, const struct smtp_cmd *c)
{
	if (c->arglen == 0) {
		sess_replyf(s, "501 5.5.4 Syntax: %s hostname", smtp_verb_name(c->verb));
		return sess_error(s), false;
	}
	return true;
}

static const struct sess_verb *sess_verb_find(enum smtp_verb v);
static const struct sess_verb *sess_verb_of_stage(enum rules_stage st);

/* sess_resume - the engine's verdict can be had now (engine.h): what
 * waited for it goes on */
void
sess_resume(void *arg)
{
	struct session *s = arg;
	enum rules_stage st = s->waiting;

	if (s->closing || s->phase == SP_CLOSING)
		return;
	s->waiting = RS__COUNT;
	if (st == RS_CONNECT)
		sess_greet(s);
	else if (st != RS__COUNT)
		sess_judge(s, sess_verb_of_stage(st));
	if (!s->closing && s->waiting == RS__COUNT && sess_phase_cmd(s->phase))
		sess_process_input(s);
	if (!s->closing)
		sess_arm_timer(s);
}

/* sess_eng - the engine's side of the session, made on first use */
static struct eng_sess *
sess_eng(struct session *s)
{
	if (s->eng == NULL) {
		s->eng = engine_sess_new(s->w->eng, s->conf, s->id, (const struct sockaddr *)&s->peer,
		    (s->lflags & CONF_LISTEN_SUBMISSION) != 0, sess_resume, s);
		engine_upstream_replies(s->eng);
	}
	return s->eng;
}

/* sess_engine_sync - what the session saw, for the engine's facts */
static void
sess_engine_sync(struct session *s)
{
	struct eng_proto *p = engine_proto(sess_eng(s));

	p->pipelining_violation = (s->facts & (SESS_F_NOT_LAST | SESS_F_DATA_PIPELINED)) != 0;
	p->pipelined_after_dot = (s->facts & SESS_F_AFTER_DOT) != 0;
	p->early_talker = (s->facts & SESS_F_EARLY) != 0;
	p->bare_lf_commands = s->bare_lf_cmds;
	p->unknown_commands = s->unknown_cmds;
	tls_engine_sync(s);
	engine_set_login(sess_eng(s), auth_login(s));
}

/* sess_stage - the engine's verdict for a stage: ENG_CONTINUE, or
 * ENG_REFUSE (the reply is given), or ENG_WAIT (s->waiting holds the
 * stage: sess_resume() asks again) */
static enum eng_rc
sess_stage(struct session *s, enum rules_stage st)
{
	struct eng_verdict v;
	enum eng_rc rc;

	sess_engine_sync(s);
	rc = engine_stage(sess_eng(s), st, &v);
	if (rc == ENG_WAIT)
		s->waiting = st;	/* no command is read meanwhile */
	if (rc != ENG_REFUSE)
		return rc;
	if (st == RS_CONNECT)
		sess_reply_close(s, "%d %s %s", v.code, v.enh, v.text);
	else
		sess_replyf(s, "%d %s %s", v.code, v.enh, v.text);
	return rc;
}

/* sess_judge - the verdict of the verb's stage (the table's column), then
 * the verb's finish: go on, or clean up after a refusal; nothing yet
 * when the engine must wait */
static void
sess_judge(struct session *s, const struct sess_verb *v)
{
	switch (sess_stage(s, v->stage)) {
	case ENG_CONTINUE:
		v->finish(s, true);
		break;
	case ENG_REFUSE:
		v->finish(s, false);
		break;
	case ENG_WAIT:
		break;
	}
}

/* proceed_helo - a new greeting resets the transaction */
static void
proceed_helo(struct session *s, const struct smtp_cmd *c)
{
	char esc[LOG_ESC_SIZE];
	size_t len = c->arglen > SMTP_DOMAIN_MAX ? SMTP_DOMAIN_MAX : c->arglen;

	sess_txn_abort(s);
	free(s->helo);
	s->helo = xmemdup(c->arg, len);
	s->esmtp = c->verb == SMTP_V_EHLO;
	log_escape(esc, sizeof(esc), c->arg, c->arglen);
	log_msg(LOG_L_DEBUG, s->id, "helo name=\"%s\" esmtp=%d", esc, s->esmtp);
	engine_helo(sess_eng(s), s->helo, len);
	sess_judge(s, sess_verb_find(c->verb));
}

/* helo_finish - after the helo rules' verdict: our greeting */
static void
helo_finish(struct session *s, bool go)
{
	if (!go) {
		free(s->helo);	/* refused: as if no HELO was given */
		s->helo = NULL;
		sess_enter_phase(s, SP_GREETED);
		return;
	}
	sess_enter_phase(s, SP_HELO);
	if (s->esmtp)
		sess_ehlo_reply(s);
	else
		sess_replyf(s, "250 %s", s->conf->hostname);
	if (s->conf->upstream_connect == CONF_UCONN_HELO)
		/* XCLIENT and the EHLO after it while the client says
		 * MAIL and its checks run: MAIL finds the upstream ready */
		ups_prepare(sess_upstream(s));
}

/* sess_mail_line - render MAIL for the upstream from the parsed values */
static size_t
sess_mail_line(struct session *s, char *buf, size_t size)
{
	struct txn *t = s->txn;
	uint64_t usize = 0;
	unsigned caps = ups_known_caps(&usize);
	int n;
	size_t len;

	n = snprintf(buf, size, "MAIL FROM:%s", t->sender);
	len = n > 0 ? (size_t)n : 0;
	if (t->mp.has_size && (caps & UPS_CAP_SIZE) && len < size)
		len += (size_t)snprintf(buf + len, size - len, " SIZE=%llu",
		    (unsigned long long)t->mp.size);
	if (t->mp.body == SMTP_BODY_8BITMIME && (caps & UPS_CAP_8BITMIME) && len < size)
		len += (size_t)snprintf(buf + len, size - len, " BODY=8BITMIME");
	else if (t->mp.body == SMTP_BODY_7BIT && len < size)
		len += (size_t)snprintf(buf + len, size - len, " BODY=7BIT");
	if (t->mp.smtputf8 && len < size)
		len += (size_t)snprintf(buf + len, size - len, " SMTPUTF8");
	if ((caps & UPS_CAP_DSN) && t->mp.ret != SMTP_RET_NONE && len < size)
		len += (size_t)snprintf(buf + len, size - len, " RET=%s",
		    t->mp.ret == SMTP_RET_FULL ? "FULL" : "HDRS");
	if ((caps & UPS_CAP_DSN) && t->mp.envid_len > 0 && len + 8 < size) {
		int e = smtp_xtext_encode(t->mp.envid, t->mp.envid_len, buf + len + 7,
		    size - len - 7);
		if (e > 0) {
			memcpy(buf + len, " ENVID=", 7);
			len += 7 + (size_t)e;
		}
	}
	if (len + 2 >= size)
		return 0;
	buf[len++] = '\r';
	buf[len++] = '\n';
	return len;
}

/* check_mail - order, syntax, size, capabilities */
static bool
check_mail(struct session *s, const struct smtp_cmd *c)
{
	if (s->phase == SP_GREETED) {
		sess_replyf(s, "503 5.5.1 Error: send HELO/EHLO first");
		return sess_error(s), false;
	}
	if (sess_phase_txn(s->phase) && s->txn->mail_failed)
		sess_txn_free(s);	/* the last MAIL failed: a new one may start */
	if (sess_phase_txn(s->phase)) {
		sess_replyf(s, "503 5.5.1 Error: nested MAIL command");
		return sess_error(s), false;
	}
	return c != NULL;
}

/* sess_reject_syntax - an address or parameter the parser refused */
static void
sess_reject_syntax(struct session *s, const char *stage, const struct smtp_cmd *c,
	const struct smtp_reject *rj)
{
	char esc[LOG_ESC_SIZE];

	log_escape(esc, sizeof(esc), c->arg, c->arglen);
	log_msg(LOG_L_INFO, s->id, "reject stage=%s code=%d arg=\"%s\" reason=syntax",
	    stage, rj->code, esc);
	sess_replyf(s, "%d %s %s", rj->code, rj->enh, rj->text);
	sess_error(s);
}

/* proceed_mail - parse, then send MAIL upstream */
static void
proceed_mail(struct session *s, const struct smtp_cmd *c)
{
	struct smtp_addr addr;
	struct smtp_mail_params mp;
	const struct smtp_reject *rj;
	unsigned caps = ups_known_caps(NULL);

	memset(&mp, 0, sizeof(mp));
	rj = smtp_mail_parse(c->arg, c->arglen, &addr, &mp);
	if (rj != NULL) {
		sess_reject_syntax(s, "mail", c, rj);
		return;
	}
	if (mp.has_size && mp.size > sess_size_limit(s)) {
		sess_replyf(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	if (mp.body == SMTP_BODY_BINARYMIME) {
		sess_replyf(s, "555 5.5.4 Unsupported option: BODY=BINARYMIME");
		return;
	}
	if (mp.smtputf8 && (caps & UPS_CAP_KNOWN) && !(caps & UPS_CAP_SMTPUTF8)) {
		sess_replyf(s, "555 5.5.4 Unsupported option: SMTPUTF8");
		return;
	}
	if (ups_gave_up(s->ups)) {
		sess_reply_close(s, "421 4.4.2 %s Error: upstream unavailable", s->conf->hostname);
		return;
	}
	s->txn = xcalloc(1, sizeof(*s->txn));
	s->txn->mp = mp;
	s->txn->from = addr;
	sess_enter_phase(s, SP_MAIL);
	engine_mail(sess_eng(s), &s->txn->from, &s->txn->mp);
	sess_judge(s, sess_verb_find(c->verb));
}

/* mail_finish - after the mail rules' verdict: MAIL goes upstream */
static void
mail_finish(struct session *s, bool go)
{
	char line[SMTP_CMD_LINE_MAX + 256];
	char esc[LOG_ESC_SIZE];
	size_t n;

	if (!go) {
		sess_txn_free(s);
		return;
	}
	if (smtp_addr_render(&s->txn->from, s->txn->sender, sizeof(s->txn->sender)) < 0) {
		sess_txn_free(s);
		sess_replyf(s, "501 5.1.7 Bad sender address syntax");
		sess_error(s);
		return;
	}
	n = sess_mail_line(s, line, sizeof(line));
	if (n == 0) {
		sess_txn_free(s);
		sess_replyf(s, "501 5.5.4 Error: MAIL command too long");
		sess_error(s);
		return;
	}
	log_escape(esc, sizeof(esc), s->txn->sender, strlen(s->txn->sender));
	log_msg(LOG_L_DEBUG, s->id, "mail from=\"%s\"", esc);
	ups_submit(sess_upstream(s), UK_MAIL, line, n, sess_slot_new(s), NULL);
}

/* check_rcpt - order and the recipient limit */
static bool
check_rcpt(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	if (s->txn != NULL && s->txn->lost) {
		sess_reply_lost(s, RS_RCPT);
		return false;
	}
	if (!sess_phase_txn(s->phase) || s->txn->mail_failed) {
		sess_replyf(s, "503 5.5.1 Error: need MAIL command");
		return sess_error(s), false;
	}
	if (s->txn->nrcpt >= s->conf->max_recipients) {
		sess_replyf(s, "452 4.5.3 Error: too many recipients");
		return sess_error(s), false;
	}
	return true;
}

/* proceed_rcpt - parse, then send RCPT upstream */
static void
proceed_rcpt(struct session *s, const struct smtp_cmd *c)
{
	struct txn *t = s->txn;
	const struct smtp_reject *rj;

	memset(&t->rp, 0, sizeof(t->rp));
	rj = smtp_rcpt_parse(c->arg, c->arglen, &t->rcpt, &t->rp, t->mp.smtputf8);
	if (rj != NULL) {
		sess_reject_syntax(s, "rcpt", c, rj);
		return;
	}
	engine_rcpt(sess_eng(s), &t->rcpt, t->nrcpt);
	sess_judge(s, sess_verb_find(c->verb));
}

/* rcpt_finish - after the rcpt rules' verdict: RCPT goes upstream */
static void
rcpt_finish(struct session *s, bool go)
{
	const struct smtp_rcpt_params *rpp = &s->txn->rp;
	char line[SMTP_CMD_LINE_MAX + 512];
	int n;
	size_t len;
	unsigned caps = ups_known_caps(NULL);

	if (!go)
		return;
	memcpy(line, "RCPT TO:", 8);
	n = smtp_addr_render(&s->txn->rcpt, line + 8, sizeof(line) - 8);
	if (n < 0) {
		sess_replyf(s, "501 5.1.3 Bad recipient address syntax");
		sess_error(s);
		return;
	}
	len = 8 + (size_t)n;
	if ((caps & UPS_CAP_DSN) && rpp->notify != 0) {
		len += (size_t)snprintf(line + len, sizeof(line) - len, " NOTIFY=%s%s%s%s",
		    rpp->notify & SMTP_NOTIFY_NEVER ? "NEVER" : "",
		    rpp->notify & SMTP_NOTIFY_SUCCESS ? "SUCCESS" : "",
		    rpp->notify & SMTP_NOTIFY_FAILURE ? (rpp->notify & SMTP_NOTIFY_SUCCESS ? ",FAILURE" : "FAILURE") : "",
		    rpp->notify & SMTP_NOTIFY_DELAY ? (rpp->notify & (SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE) ? ",DELAY" : "DELAY") : "");
	}
	if ((caps & UPS_CAP_DSN) && rpp->orcpt_len > 0 && len + 16 < sizeof(line)) {
		size_t save = len;
		int e = snprintf(line + len, sizeof(line) - len, " ORCPT=%s;", rpp->orcpt_type);
		if (e > 0 && (size_t)e < sizeof(line) - len) {
			len += (size_t)e;
			e = smtp_xtext_encode(rpp->orcpt, rpp->orcpt_len, line + len, sizeof(line) - len);
		}
		len = e > 0 ? len + (size_t)e : save;	/* never a half parameter */
	}
	if (len + 2 >= sizeof(line)) {
		sess_replyf(s, "501 5.5.4 Error: RCPT command too long");
		sess_error(s);
		return;
	}
	line[len++] = '\r';
	line[len++] = '\n';
	s->txn->nrcpt++;
	sess_enter_phase(s, SP_RCPT);
	ups_submit(sess_upstream(s), UK_RCPT, line, len, sess_slot_new(s), NULL);
}

/* check_data - a transaction with at least one accepted recipient */
static bool
check_data(struct session *s, const struct smtp_cmd *c)
{
	if (c->arglen != 0) {
		sess_replyf(s, "501 5.5.4 Syntax: DATA");
		return sess_error(s), false;
	}
	if (s->txn != NULL && s->txn->lost) {
		sess_reply_lost(s, RS_DATA);
		return false;
	}
	if (!sess_phase_txn(s->phase) || s->txn->mail_failed) {
		sess_replyf(s, "503 5.5.1 Error: need MAIL command");
		return sess_error(s), false;
	}
	if (s->txn->nrcpt_ok == 0) {
		sess_replyf(s, "554 5.5.1 Error: no valid recipients");
		return sess_error(s), false;
	}
	return true;
}

/* sess_spool_put - the message as the engine's header scanner passes it
 * (forged Authentication-Results fields dropped) into the spool */
static void
sess_spool_put(void *arg, const unsigned char *buf, size_t len)
{
	struct txn *t = arg;

	spool_write(t->spool, buf, len);	/* errors are sticky, checked at the end */
}

/* proceed_data - 354 from us; the content goes to the spool */
static void
proceed_data(struct session *s, const struct smtp_cmd *c)
{
	struct txn *t = s->txn;

	(void)c;
	if (evbuffer_get_length(conn_input(s->conn)) > 0) {
		/* content before our 354 (RFC 2920 3.1): a fact for rules */
		s->facts |= SESS_F_DATA_PIPELINED;
		log_msg(LOG_L_INFO, s->id, "protocol fact=data-pipelined");
	}
	data_dec_init(&t->dd, s->conf->bare_lf == CONF_BARELF_REJECT ?
	    DATA_BARELF_REJECT : DATA_BARELF_NORMALISE,
	    sess_size_limit(s), (size_t)s->conf->max_line_length);
	t->spool = spool_new(s->conf->spool_dir, (size_t)s->conf->spool_memory);
	t->msg = engine_msg_new(s->conf, sess_spool_put, t);
	engine_msg_set_stuffed(t->msg);		/* the decoder's output is */
	t->data_start_ms = sess_now_ms();
	sess_enter_phase(s, SP_DATA);
	s->cmd_deadline_ms = 0;
	sess_replyf(s, "354 End data with <CR><LF>.<CR><LF>");
	sess_arm_timer(s);
}

/* check_noarg - commands that take no argument */
static bool
check_noarg(struct session *s, const struct smtp_cmd *c)
{
	if (c->arglen != 0) {
		sess_replyf(s, "501 5.5.4 Syntax: %s", smtp_verb_name(c->verb));
		return sess_error(s), false;
	}
	return true;
}

/* proceed_rset - forget the transaction, here and upstream */
static void
proceed_rset(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	sess_txn_abort(s);
	sess_replyf(s, "250 2.0.0 Ok");
}

/* proceed_quit - goodbye, after every earlier reply */
static void
proceed_quit(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	s->quit = true;
	sess_reply_close(s, "221 2.0.0 Bye");
}

/* proceed_fixed - NOOP, VRFY (RFC 5321 3.5.3: 252), HELP: the table's text */
static void
proceed_fixed(struct session *s, const struct smtp_cmd *c)
{
	sess_replyf(s, "%s", sess_verb_find(c->verb)->reply);
}

/* proceed_notimpl - known verbs moat does not offer */
static void
proceed_notimpl(struct session *s, const struct smtp_cmd *c)
{
	if (c->verb == SMTP_V_AUTH)
		sess_replyf(s, "503 5.5.1 Error: authentication not enabled");
	else
		sess_replyf(s, "502 5.5.1 Error: command not implemented");
	sess_error(s);
}

/* proceed_foreign - a PROXY header or an HTTP request: not SMTP, close */
static void
proceed_foreign(struct session *s, const struct smtp_cmd *c)
{
	s->facts |= SESS_F_NON_SMTP;
	log_msg(LOG_L_INFO, s->id, "reject reason=%s", c->verb == SMTP_V_PROXY ?
	    "proxy-header" : "http-request");
	if (c->verb == SMTP_V_PROXY)
		sess_reply_close(s, "500 5.5.1 Error: PROXY protocol is not accepted here");
	else
		sess_reply_close(s, "554 5.5.1 Error: this is an SMTP server, not HTTP");
}

#define NOSTAGE RS__COUNT

static const struct sess_verb sess_verbs[] = {
	{ SMTP_V_HELO, RS_HELO, VF_LAST, check_helo, proceed_helo, helo_finish, NULL },
	{ SMTP_V_EHLO, RS_HELO, VF_LAST, check_helo, proceed_helo, helo_finish, NULL },
	{ SMTP_V_MAIL, RS_MAIL, 0, check_mail, proceed_mail, mail_finish, NULL },
	{ SMTP_V_RCPT, RS_RCPT, 0, check_rcpt, proceed_rcpt, rcpt_finish, NULL },
	{ SMTP_V_DATA, RS_DATA, VF_LAST | VF_BARRIER, check_data, proceed_data, data_finish, NULL },
	{ SMTP_V_RSET, NOSTAGE, VF_JUNK, check_noarg, proceed_rset, NULL, NULL },
	{ SMTP_V_NOOP, NOSTAGE, VF_LAST | VF_JUNK, NULL, proceed_fixed, NULL, "250 2.0.0 Ok" },
	{ SMTP_V_QUIT, NOSTAGE, VF_LAST, NULL, proceed_quit, NULL, NULL },
	{ SMTP_V_VRFY, NOSTAGE, VF_LAST | VF_JUNK, NULL, proceed_fixed, NULL,
	  "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery" },
	{ SMTP_V_HELP, NOSTAGE, VF_LAST | VF_JUNK, NULL, proceed_fixed, NULL,
	  "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP" },
	{ SMTP_V_EXPN, NOSTAGE, VF_LAST, NULL, proceed_notimpl, NULL, NULL },
	{ SMTP_V_STARTTLS, NOSTAGE, VF_LAST | VF_BARRIER, check_starttls, proceed_starttls, NULL, NULL },
	{ SMTP_V_AUTH, NOSTAGE, VF_LAST | VF_BARRIER, check_auth, proceed_auth, NULL, NULL },
	{ SMTP_V_BDAT, NOSTAGE, VF_LAST, NULL, proceed_notimpl, NULL, NULL },
	{ SMTP_V_XCLIENT, NOSTAGE, VF_LAST, NULL, proceed_notimpl, NULL, NULL },
	{ SMTP_V_XFORWARD, NOSTAGE, VF_LAST, NULL, proceed_notimpl, NULL, NULL },
	{ SMTP_V_ETRN, NOSTAGE, VF_LAST, NULL, proceed_notimpl, NULL, NULL },
	{ SMTP_V_TURN, NOSTAGE, VF_LAST, NULL, proceed_notimpl, NULL, NULL },
	{ SMTP_V_PROXY, NOSTAGE, VF_LAST, NULL, proceed_foreign, NULL, NULL },
	{ SMTP_V_HTTP, NOSTAGE, VF_LAST, NULL, proceed_foreign, NULL, NULL },
};

/* sess_verb_find - the table row of a verb */
static const struct sess_verb *
sess_verb_find(enum smtp_verb v)
{
	for (size_t i = 0; i < sizeof(sess_verbs) / sizeof(sess_verbs[0]); i++)
		if (sess_verbs[i].verb == v)
			return &sess_verbs[i];
	return NULL;
}

/* sess_verb_of_stage - the first row the stage judges (HELO's for helo) */
static const struct sess_verb *
sess_verb_of_stage(enum rules_stage st)
{
	for (size_t i = 0; i < sizeof(sess_verbs) / sizeof(sess_verbs[0]); i++)
		if (sess_verbs[i].stage == st)
			return &sess_verbs[i];
	panic("no verb for stage %d", (int)st);
}

/* sess_quiet_end - the lines after an AUTH are logged again */
static void
sess_quiet_end(struct session *s)
{
	if (s->lines_suppressed > 0)
		log_msg(LOG_L_INFO, s->id, "auth lines_suppressed=%u", s->lines_suppressed);
	s->auth_quiet = false;
	s->lines_suppressed = 0;
}

/* sess_command - one complete command line (no line end), parsed */
static void
sess_command(struct session *s, const char *line, size_t len, enum smtp_perr pe,
	const struct smtp_cmd *cp)
{
	struct smtp_cmd c = *cp;
	const struct sess_verb *v;
	char esc[LOG_ESC_SIZE];

	s->ncmds++;
	if (s->auth_quiet) {
		/* after an AUTH, a line that is no command we know may be the
		 * client's secret sent anyway (after a 530, 503 or cancel):
		 * counted, never logged, until a recognised command comes */
		if (pe != SMTP_P_OK || sess_verb_find(c.verb) == NULL) {
			s->lines_suppressed++;
			goto logged;
		}
		sess_quiet_end(s);
	}
	if (log_enabled(LOG_L_DEBUG)) {
		/* an AUTH line carries credentials: its verb and mechanism only */
		if (pe == SMTP_P_OK && c.verb == SMTP_V_AUTH) {
			const char *sp = memchr(c.arg, ' ', c.arglen);
			len = (size_t)((sp ? sp : c.arg + c.arglen) - line);
		}
		log_escape(esc, sizeof(esc), line, len);
		log_msg(LOG_L_DEBUG, s->id, "command line=\"%s\"", esc);
	}
logged:
	if (pe == SMTP_P_OK && c.verb == SMTP_V_AUTH)
		s->auth_quiet = true;
	switch (pe) {
	case SMTP_P_OK:
		break;
	case SMTP_P_BADCHAR:
		sess_replyf(s, "500 5.5.2 Error: bad character in command");
		sess_error(s);
		return;
	case SMTP_P_TOOLONG:
		sess_replyf(s, "500 5.5.2 Error: line too long");
		sess_error(s);
		return;
	case SMTP_P_EMPTY:
		sess_replyf(s, "500 5.5.2 Error: bad syntax");
		sess_error(s);
		return;
	case SMTP_P_SYNTAX:
		sess_replyf(s, "501 5.5.4 Syntax: %s", c.verb == SMTP_V_MAIL ?
		    "MAIL FROM:<address>" : c.verb == SMTP_V_RCPT ? "RCPT TO:<address>" :
		    smtp_verb_name(c.verb));
		sess_error(s);
		return;
	}
	v = sess_verb_find(c.verb);
	if (v == NULL) {
		if (s->unknown_cmds < 0xffff)
			s->unknown_cmds++;
		sess_replyf(s, "500 5.5.2 Error: command not recognized");
		sess_error(s);
		return;
	}
	if ((v->flags & VF_JUNK) && sess_junk(s))
		return;
	if (v->check != NULL && !v->check(s, &c))
		return;
	v->proceed(s, &c);
	if ((v->flags & VF_LAST) && sess_phase_cmd(s->phase) && !s->closing &&
	    evbuffer_get_length(conn_input(s->conn)) > 0) {
		/* RFC 2920 3.1: this command must end a group */
		s->facts |= SESS_F_NOT_LAST;
		log_msg(LOG_L_DEBUG, s->id, "protocol fact=pipelined-after verb=%s",
		    smtp_verb_name(c.verb));
	}
}

/* ---------------------------------------------------------------------
 * The line reader: commands and the lines of an AUTH exchange
 */

/* sess_line_cap - the longest line the session takes now, CRLF included:
 * a line of an AUTH exchange SASL_LINE_MAX + 2; an AUTH command
 * SESS_AUTH_LINE_MAX (RFC 4954 4: its initial response may be 12288
 * octets); any other command SMTP_CMD_LINE_MAX (RFC 5321 4.5.3.1.4) */
static size_t
sess_line_cap(const struct session *s, struct evbuffer *in)
{
	char head[5];

	if (s->phase == SP_AUTH)
		return SASL_LINE_MAX + 2;
	if (evbuffer_copyout(in, head, 5) == 5 && strncasecmp(head, "AUTH ", 5) == 0)
		return SESS_AUTH_LINE_MAX;
	return SMTP_CMD_LINE_MAX;
}

/*
 * sess_line_read - the next line of the client's input (enum sess_line):
 * OK copies it into line (at least SESS_AUTH_LINE_MAX bytes) without its
 * CRLF, *len its length, and leaves it in the input until
 * sess_line_done(); LONG and BARE_LF have dropped it (*len: its length
 * when its end was seen, else 0). *cap is the cap that applied. The cap
 * is checked while no line end has arrived too, so a line never grows
 * past it in the buffer.
 */
static enum sess_line
sess_line_read(struct session *s, char *line, size_t *len, size_t *cap)
{
	struct evbuffer *in = conn_input(s->conn);

	for (;;) {
		size_t avail = evbuffer_get_length(in), eol_len = 0, raw;
		struct evbuffer_ptr p;

		*len = 0;
		*cap = sess_line_cap(s, in);
		if (avail == 0)
			return SESS_LINE_NONE;
		p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (p.pos < 0) {
			if (s->discard) {
				evbuffer_drain(in, avail);
				return SESS_LINE_NONE;
			}
			if (avail < *cap)
				return SESS_LINE_NONE;	/* the rest of the line is to come */
			/* no line end within the cap: refused now, the rest of
			 * the line thrown away as it arrives */
			evbuffer_drain(in, avail);
			s->discard = true;
			return SESS_LINE_LONG;
		}
		raw = (size_t)p.pos;	/* bytes before the LF */
		if (s->discard) {
			evbuffer_drain(in, raw + 1);	/* the end of an over-long line */
			s->discard = false;
			continue;
		}
		*len = raw;
		if (raw > *cap - 1) {
			evbuffer_drain(in, raw + 1);
			return SESS_LINE_LONG;
		}
		evbuffer_copyout(in, line, raw);
		if (raw == 0 || line[raw - 1] != '\r') {
			evbuffer_drain(in, raw + 1);
			return SESS_LINE_BARE_LF;
		}
		*len = raw - 1;
		return SESS_LINE_OK;
	}
}

/* sess_line_done - the line sess_line_read() gave (len bytes) is used */
static void
sess_line_done(struct session *s, size_t len)
{
	evbuffer_drain(conn_input(s->conn), len + 2);
}

/* sess_command_line - what the reader gave where a command is due:
 * answer a line it refused, or parse and run the command; false when
 * the command must wait for every earlier reply first (a barrier: it
 * stays in the input) */
static bool
sess_command_line(struct session *s, enum sess_line r, char *line, size_t len, size_t cap)
{
	bool is_auth = cap == SESS_AUTH_LINE_MAX;
	struct smtp_cmd c;
	enum smtp_perr pe;
	const struct sess_verb *v;

	switch (r) {
	case SESS_LINE_NONE:
		return false;
	case SESS_LINE_LONG:
		if (len == 0)
			log_msg(LOG_L_INFO, s->id, "reject reason=line-too-long%s",
			    is_auth ? " verb=AUTH" : "");
		else
			log_msg(LOG_L_INFO, s->id, "reject reason=line-too-long bytes=%zu", len);
		if (is_auth)
			sess_replyf(s, "500 5.5.6 Authentication Exchange line is too long");
		else
			sess_replyf(s, "500 5.5.2 Error: line too long");
		sess_error(s);
		return true;
	case SESS_LINE_BARE_LF:
		/* a command ended by a bare LF: refuse it, never guess */
		s->facts |= SESS_F_BARE_LF_CMD;
		if (s->bare_lf_cmds < 0xffff)
			s->bare_lf_cmds++;
		log_msg(LOG_L_INFO, s->id, "reject reason=bare-lf-command");
		sess_replyf(s, "500 5.5.2 Error: bare <LF> received, use <CR><LF>");
		sess_error(s);
		return true;
	case SESS_LINE_OK:
		break;
	}
	if (len > SMTP_CMD_LINE_MAX - 2 && is_auth) {
		/* a long AUTH: the verb and mechanism are parsed from the
		 * head; the initial response must be base64 text */
		pe = smtp_cmd_parse(line, SMTP_CMD_LINE_MAX - 2, &c);
		if (pe == SMTP_P_OK && c.verb == SMTP_V_AUTH) {
			size_t from = (size_t)(c.arg - line);
			const char *sp = memchr(c.arg, ' ', len - from);

			for (size_t i = SMTP_CMD_LINE_MAX - 2; i < len; i++)
				if ((unsigned char)line[i] <= 0x20 || (unsigned char)line[i] >= 0x7f)
					pe = SMTP_P_BADCHAR;
			c.arglen = len - from;
			if (sp != NULL && (size_t)(line + len - sp - 1) > SESS_AUTH_IR_MAX) {
				sess_line_done(s, len);
				log_msg(LOG_L_INFO, s->id, "reject reason=line-too-long verb=AUTH");
				sess_replyf(s, "500 5.5.6 Authentication Exchange line is too long");
				sess_error(s);
				return true;
			}
		}
	} else
		pe = smtp_cmd_parse(line, len, &c);
	v = pe == SMTP_P_OK ? sess_verb_find(c.verb) : NULL;
	if (v != NULL && (v->flags & VF_BARRIER) && s->npending > 0)
		return false;	/* e.g. DATA: every earlier reply must be known */
	sess_line_done(s, len);
	sess_command(s, line, len, pe, &c);
	if (s->phase != SP_TLS)		/* STARTTLS set the handshake's deadline */
		s->cmd_deadline_ms = sess_now_ms() + s->conf->command_deadline_ms;
	return true;
}

/* sess_process_input - run every complete line we may run now: commands,
 * or in SP_AUTH the client's turns of the exchange (auth.c) */
static void
sess_process_input(struct session *s)
{
	char line[SESS_AUTH_LINE_MAX + 1];

	if (s->closing || s->in_input || !sess_phase_cmd(s->phase) || s->waiting != RS__COUNT)
		return;
	s->in_input = true;
	while (!s->closing && sess_phase_cmd(s->phase) && s->waiting == RS__COUNT) {
		enum sess_line r;
		size_t len, cap;
		bool go;

		if (s->nslots >= s->conf->max_pending ||
		    conn_output_len(s->conn) > SESS_OUTPUT_MAX)
			break;	/* resumed by sess_flush or the write callback */
		if (s->phase == SP_AUTH && !auth_wants_line(s))
			break;	/* resumed when the upstream answers */
		r = sess_line_read(s, line, &len, &cap);
		if (r == SESS_LINE_NONE)
			break;
		if (s->phase == SP_AUTH) {
			if (r == SESS_LINE_OK)
				sess_line_done(s, len);
			auth_line(s, r, line, len);
			go = true;
		} else {
			go = sess_command_line(s, r, line, len, cap);
		}
		if (cap != SMTP_CMD_LINE_MAX && r != SESS_LINE_LONG)
			explicit_bzero(line, len + 1);	/* AUTH: credentials do not linger */
		if (!go)
			break;
	}
	s->in_input = false;
	if (!s->closing && s->phase == SP_DATA)
		sess_data_input(s);
	if (!s->closing) {
		conn_input_drained(s->conn);
		sess_arm_timer(s);
	}
}

/* ---------------------------------------------------------------------
 * DATA
 */

/* sess_spool_out - decoder output: to the engine's message (DKIM, the
 * header scanner, the header block), which passes it to the spool; once
 * the header section is in, the DKIM keys and DMARC records are asked
 * while the body streams in */
static void
sess_spool_out(void *arg, const unsigned char *buf, size_t len)
{
	struct session *s = arg;
	struct eng_ahead *a;

	engine_msg_feed(s->txn->msg, buf, len);
	if ((a = engine_msg_ahead(s->txn->msg)) != NULL)
		engine_ahead(sess_eng(s), a);
}

/* sess_data_end - the terminator was seen: judge, then send upstream */
static void
sess_data_end(struct session *s)
{
	struct txn *t = s->txn;
	const struct data_verdict *v = data_dec_verdict(&t->dd);

	sess_enter_phase(s, SP_DATA_END);
	s->nmsgs++;
	if (evbuffer_get_length(conn_input(s->conn)) > 0) {
		s->facts |= SESS_F_AFTER_DOT;
		log_msg(LOG_L_DEBUG, s->id, "protocol fact=pipelined-after-dot");
	}
	if (v != NULL) {
		log_msg(LOG_L_INFO, s->id, "reject stage=data code=%d reason=\"%s\" size=%llu flags=0x%x",
		    v->code, v->text, (unsigned long long)t->dd.size, t->dd.flags);
		if (s->eng != NULL)
			engine_txn_failed(s->eng, RS_DATA, false, v->code, v->enh, v->text,
			    strlen(v->text));
		sess_replyf(s, "%d %s %s", v->code, v->enh, v->text);
		sess_txn_abort(s);
		return;
	}
	if (t->lost) {
		log_msg(LOG_L_INFO, s->id, "tempfail stage=data reason=upstream-lost");
		sess_reply_lost(s, RS_DATA);
		sess_txn_free(s);
		return;
	}
	engine_data(sess_eng(s), t->msg, t->dd.size, t->nrcpt_ok, (t->dd.flags & DATA_F_BARE_LF) != 0);
	t->msg = NULL;		/* the engine's now */
	sess_judge(s, sess_verb_find(SMTP_V_DATA));
}

/* data_finish - after the data rules' verdict: the message goes upstream */
static void
data_finish(struct session *s, bool go)
{
	struct txn *t = s->txn;
	struct spool *sp;
	char *h;
	size_t hlen;
	unsigned removed;

	if (!go) {
		sess_txn_abort(s);
		return;
	}
	if (spool_finish(t->spool) != 0) {
		log_msg(LOG_L_ERROR, s->id, "tempfail stage=data reason=spool-error");
		sess_replyf(s, "451 4.3.0 Error: local error writing the message, try again later");
		sess_txn_abort(s);
		return;
	}
	/* moat's header fields go first, ahead of the client's, with
	 * Authentication-Results on top */
	h = engine_headers(sess_eng(s), &hlen, &removed);
	if (h != NULL)
		spool_set_prefix(t->spool, h, hlen);
	free(h);
	/* debug: the verdict line carries the size at info, and a line
	 * fewer per message is a write fewer (bench/FEATURES.md,
	 * observability) */
	log_msg(LOG_L_DEBUG, s->id, "message size=%llu rcpts=%u spooled=%s",
	    (unsigned long long)t->dd.size, t->nrcpt_ok, spool_on_disk(t->spool) ? "file" : "memory");
	sp = t->spool;
	t->spool = NULL;
	sess_txn_free(s);
	ups_submit(sess_upstream(s), UK_DATA, "DATA\r\n", 6, sess_slot_new(s), sp);
}

/* sess_data_input - feed the client's bytes to the decoder */
static void
sess_data_input(struct session *s)
{
	struct evbuffer *in = conn_input(s->conn);

	while (!s->closing && s->phase == SP_DATA) {
		struct evbuffer_iovec v;
		size_t used;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			break;
		used = data_dec_feed(&s->txn->dd, v.iov_base, v.iov_len,
		    sess_spool_out, s);
		evbuffer_drain(in, used);
		conn_input_drained(s->conn);
		if (s->txn->dd.done) {
			sess_data_end(s);
			s->cmd_deadline_ms = sess_now_ms() + s->conf->command_deadline_ms;
			sess_process_input(s);
			return;
		}
	}
}

/* ---------------------------------------------------------------------
 * Timers, I/O callbacks, lifetime
 */

/* sess_deadline - the next moment something must have happened */
static uint64_t
sess_deadline(const struct session *s)
{
	const struct conf *c = s->conf;
	uint64_t d = s->start_ms + c->session_deadline_ms, x;

	switch (s->phase) {
	case SP_DATA:
		x = s->txn->data_start_ms + c->command_deadline_ms;
		if (c->data_min_rate > 0)
			x += s->txn->dd.raw * 1000 / c->data_min_rate;
		else
			x = d;
		if (x < d)
			d = x;
		break;
	case SP_TLS:
		if (s->cmd_deadline_ms != 0 && s->cmd_deadline_ms < d)
			d = s->cmd_deadline_ms;
		break;
	case SP_CLOSING:
		break;
	case SP_CONNECTED:
	case SP_GREETED:
	case SP_HELO:
	case SP_AUTH:
	case SP_MAIL:
	case SP_RCPT:
	case SP_DATA_END:
		if (s->npending == 0 && s->cmd_deadline_ms != 0 && s->cmd_deadline_ms < d)
			d = s->cmd_deadline_ms;
		break;
	}
	if (s->waiting == RS_CONNECT && s->greet_at_ms != 0 && s->greet_at_ms < d)
		d = s->greet_at_ms;
	return d;
}

/* sess_arm_timer - (re)arm the session's one timer */
void
sess_arm_timer(struct session *s)
{
	uint64_t now = sess_now_ms(), d;
	struct timeval tv;

	if (s->closing || s->phase == SP_CLOSING)
		return;
	d = sess_deadline(s);
	d = d > now ? d - now : 0;
	tv.tv_sec = (time_t)(d / 1000);
	tv.tv_usec = (suseconds_t)(d % 1000) * 1000;
	evtimer_add(s->ev_timer, &tv);
}

/* sess_timer_cb - a deadline passed (or the timer was early) */
static void
sess_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	uint64_t now = sess_now_ms();
	const char *why;

	(void)fd;
	(void)what;
	if (s->closing)
		return;
	if (s->phase == SP_CLOSING) {
		sess_close(s, "flush-timeout");
		return;
	}
	if (s->waiting == RS_CONNECT && s->greet_at_ms != 0 && now >= s->greet_at_ms) {
		s->greet_at_ms = 0;	/* greet-delay passed */
		sess_resume(s);
		return;
	}
	if (now < sess_deadline(s)) {
		sess_arm_timer(s);
		return;
	}
	if (s->phase == SP_TLS) {
		/* no reply: the connection is neither plaintext nor TLS now */
		log_msg(LOG_L_INFO, s->id, "limit reason=tls-handshake-deadline");
		sess_close(s, "tls-handshake-timeout");
		return;
	}
	why = now >= s->start_ms + s->conf->session_deadline_ms ? "session-deadline" :
	    s->phase == SP_DATA ? "data-deadline" : "command-deadline";
	log_msg(LOG_L_INFO, s->id, "limit reason=%s", why);
	/* the client gets this at once, whatever is still pending */
	sess_slots_free(s);
	if (s->txn != NULL) {
		char line[300];
		int n = snprintf(line, sizeof(line), "421 4.4.2 %s Error: timeout exceeded",
		    s->conf->hostname);

		sess_vlog_failed(s, s->phase == SP_DATA ? RS_DATA : s->txn->nrcpt > 0 ? RS_RCPT :
		    RS_MAIL, false, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0);
	}
	sess_replyf(s, "421 4.4.2 %s Error: timeout exceeded", s->conf->hostname);
	sess_begin_close(s);
}

/* sess_log_end - the session's one info line of its own, at its end:
 * who (as its verdict lines name the client), why it ended, its counts
 * and length, its TLS and the balancer it came through. A session
 * without a transaction (a probe, a refusal at connect or HELO, a client
 * that only said QUIT) is seen here. */
static void
sess_log_end(const struct session *s)
{
	char who[ENG_WHO_SIZE], tls[200], line[ENG_WHO_SIZE + 600];
	uint64_t ms = sess_now_ms() - s->start_ms;
	struct textbuf b = TEXTBUF(line, sizeof(line));

	if (!log_enabled(LOG_L_INFO))
		return;
	engine_who(s->eng, (const struct sockaddr *)&s->peer, who, sizeof(who));
	tls_log_fields(s, tls, sizeof(tls));
	/* appended, not printf'd: a line for every session at info */
	tb_str(&b, "disconnect ");
	tb_str(&b, who);
	tb_str(&b, " reason=");
	tb_str(&b, s->close_reason ? s->close_reason : "closed");
	tb_str(&b, " commands=");
	tb_u64(&b, s->ncmds);
	tb_str(&b, " messages=");
	tb_u64(&b, s->nmsgs);
	tb_str(&b, " errors=");
	tb_u64(&b, s->errors);
	tb_str(&b, " time=");
	tb_secs(&b, ms);
	tb_str(&b, tls);
	if (s->via != NULL) {
		tb_str(&b, " via=");
		tb_str(&b, s->via);
	}
	if (s->via_tls)
		tb_str(&b, " proxy-tls=yes");
	log_text(LOG_L_INFO, s->id, line, b.n);
}

/* sess_free_cb - the one place a session is freed */
static void
sess_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	struct worker *w = s->w;

	(void)fd;
	(void)what;
	auth_free(s);
	ups_free(s->ups);
	s->ups = NULL;
	sess_txn_free(s);
	sess_log_end(s);	/* after every verdict line of the session */
	engine_sess_free(s->eng);	/* its answers in flight will find nobody */
	s->eng = NULL;
	sess_slots_free(s);
	tls_sess_free(s);
	if (s->ev_timer)
		event_free(s->ev_timer);
	conn_free(s->conn);
	clients_leave((struct sockaddr *)&s->peer, (unsigned)s->conf->client_v6_prefix);
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->nsessions--;
	metrics_add(MF_SESSIONS_ACTIVE, NULL, NULL, -1);
	conf_unref(s->conf);
	free(s->helo);
	free(s->via);
	free(s);
	moatd_worker_idle(w);
}

/* sess_close - stop all I/O now and free the session from its own event */
void
sess_close(struct session *s, const char *reason)
{
	struct timeval zero = { 0, 0 };

	if (s->closing)
		return;
	s->closing = true;
	s->close_reason = reason;	/* a constant: sess_log_end() writes it */
	ups_owner_closing(s->ups);
	sess_quiet_end(s);
	conn_setcb(s->conn, NULL, NULL, NULL, NULL);
	conn_read_enable(s->conn, false);
	evtimer_del(s->ev_timer);
	if (event_base_once(s->w->base, -1, EV_TIMEOUT, sess_free_cb, s, &zero) != 0)
		panic("event_base_once failed");
}

/* sess_begin_close - stop reading, flush what is written, then close */
static void
sess_begin_close(struct session *s)
{
	struct timeval tv = { SESS_CLOSE_MS / 1000, 0 };

	if (s->closing || s->phase == SP_CLOSING)
		return;
	sess_enter_phase(s, SP_CLOSING);
	conn_read_enable(s->conn, false);
	if (conn_output_len(s->conn) == 0) {
		sess_close(s, s->quit ? "quit" : "closed");
		return;
	}
	evtimer_add(s->ev_timer, &tv);
}

/* sess_read_cb - client bytes arrived */
static void
sess_read_cb(struct conn *cn, void *arg)
{
	struct session *s = arg;

	(void)cn;
	if (s->closing)
		return;
	if (s->phase == SP_CONNECTED) {
		/* bytes before the greeting: an early talker (pregreet) */
		if (!(s->facts & SESS_F_EARLY)) {
			s->facts |= SESS_F_EARLY;
			log_msg(LOG_L_INFO, s->id, "protocol fact=early-talker bytes=%zu",
			    evbuffer_get_length(conn_input(s->conn)));
			/* no need to wait out the delay: the rules can judge now */
			s->greet_at_ms = 0;
			if (s->waiting == RS_CONNECT)
				sess_resume(s);
		}
		return;
	}
	if (s->phase == SP_DATA)
		sess_data_input(s);
	else
		sess_process_input(s);
}

/* sess_write_cb - the output drained below the low-water mark */
static void
sess_write_cb(struct conn *cn, void *arg)
{
	struct session *s = arg;

	(void)cn;
	if (s->closing)
		return;
	if (s->phase == SP_CLOSING) {
		sess_close(s, s->quit ? "quit" : "closed");
		return;
	}
	sess_process_input(s);
}

/* sess_event_cb - EOF or error on the client socket */
static void
sess_event_cb(struct conn *cn, enum conn_ev what, void *arg)
{
	struct session *s = arg;

	(void)cn;
	if (s->closing)
		return;
	if (what == CONN_EV_EOF)
		sess_close(s, s->phase == SP_DATA ? "eof-in-data" : "eof");
	else if (what == CONN_EV_ERROR)
		sess_close(s, "socket-error");
	else if (what == CONN_EV_TIMEOUT)
		sess_close(s, "write-timeout");
	else if (what == CONN_EV_TLS_READY || what == CONN_EV_TLS_FAILED)
		tls_sess_event(s, what == CONN_EV_TLS_READY);
}

/* sess_drain - SIGTERM: an idle session is told 421 and closed now */
void
sess_drain(struct session *s)
{
	if (s->closing || !sess_phase_cmd(s->phase) || sess_phase_txn(s->phase) ||
	    s->npending > 0)
		return;	/* finishes what it does; the drain timeout bounds it */
	log_msg(LOG_L_INFO, s->id, "shutdown session=idle");
	conn_write(s->conn, "421 4.3.2 Service shutting down\r\n", 33);
	sess_begin_close(s);
}

/* sess_start - a new client connection, admitted (clients_enter()): its
 * end calls clients_leave(); o: what a PROXY protocol header said (the
 * client at sa, the local address it named), or NULL */
void
sess_start(struct worker *w, struct conf *c, int fd, const struct sockaddr *sa, socklen_t salen,
	unsigned lflags, const struct listen_origin *o)
{
	struct session *s = xcalloc(1, sizeof(*s));
	socklen_t llen = sizeof(s->local);
	struct timeval wt;
	int one = 1;

	s->id = moatd_new_sid();
	s->w = w;
	s->conf = c;
	s->phase = SP_CONNECTED;
	s->waiting = RS__COUNT;
	s->lflags = lflags;
	memcpy(&s->peer, sa, salen);
	getsockname(fd, (struct sockaddr *)&s->local, &llen);
	if (o != NULL && o->locallen > 0)
		memcpy(&s->local, &o->local, o->locallen);
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, s->ip, sizeof(s->ip));
		s->port = ntohs(sin->sin_port);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, s->ip, sizeof(s->ip));
		s->port = ntohs(sin6->sin6_port);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->conn = conn_new(w->base, fd, SESS_INPUT_MAX);
	s->ev_timer = evtimer_new(w->base, sess_timer_cb, s);
	if (s->ev_timer == NULL)
		panic("evtimer_new failed");
	s->next = w->sessions;
	if (s->next)
		s->next->prev = s;
	w->sessions = s;
	w->nsessions++;
	metrics_inc(MF_SESSIONS_OPENED, NULL, NULL);
	metrics_add(MF_SESSIONS_ACTIVE, NULL, NULL, 1);
	s->start_ms = sess_now_ms();
	s->cmd_deadline_ms = s->start_ms + c->command_deadline_ms;
	conn_setcb(s->conn, sess_read_cb, sess_write_cb, sess_event_cb, s);
	wt.tv_sec = (time_t)(c->command_deadline_ms / 1000);
	wt.tv_usec = (suseconds_t)(c->command_deadline_ms % 1000) * 1000;
	conn_set_timeouts(s->conn, NULL, &wt);
	if (o != NULL) {
		s->via = xstrdup(o->via);
		s->via_tls = o->ssl;
	}
	/* at info the disconnect line says all this (sess_log_end) */
	log_msg(LOG_L_DEBUG, s->id, "connect client=%s%s%s:%u%s%s%s%s",
	    sa->sa_family == AF_INET6 ? "[" : "", s->ip, sa->sa_family == AF_INET6 ? "]" : "",
	    s->port, lflags & CONF_LISTEN_IMPLICIT_TLS ? " tls=implicit" : "",
	    o != NULL ? " via=" : "", o != NULL ? o->via : "",
	    o != NULL && o->ssl ? " proxy-tls=yes" : "");
	if (lflags & CONF_LISTEN_IMPLICIT_TLS) {
		tls_sess_implicit(s);	/* sess_begin() once the handshake is done */
		return;
	}
	sess_begin(s);
}

/* sess_begin - the checks, the connect rules and the greeting */
void
sess_begin(struct session *s)
{
	const struct conf *c = s->conf;

	/* the connect checks start now, while the greeting goes out; a
	 * policy with nothing to do before HELO gets the engine's side of
	 * the session on first use (an idle session then costs it nothing) */
	if (engine_wanted_at_connect(c))
		(void)sess_eng(s);
	if (c->greet_delay_ms > 0) {
		/* read during the delay: a client that talks first is seen */
		s->greet_at_ms = sess_now_ms() + c->greet_delay_ms;
		conn_read_enable(s->conn, true);
		s->waiting = RS_CONNECT;	/* commands are read after the greeting */
		sess_arm_timer(s);
		return;
	}
	sess_greet(s);
}

/* sess_greet - the connect rules, then 220 (or their refusal) */
static void
sess_greet(struct session *s)
{
	if (s->greet_at_ms > sess_now_ms()) {
		s->waiting = RS_CONNECT;	/* greet-delay: not yet */
		return;
	}
	if (s->eng != NULL && sess_stage(s, RS_CONNECT) != ENG_CONTINUE)
		return;		/* refused (and closing), or waiting */
	sess_enter_phase(s, SP_GREETED);
	sess_replyf(s, "220 %s ESMTP moat", s->conf->hostname);
	conn_read_enable(s->conn, true);
	sess_arm_timer(s);
}
