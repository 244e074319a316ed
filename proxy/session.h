/*
 * session - the state of one client session in moatd (private to proxy/)
 *
 * DESCRIPTION
 *	A session is owned by its worker thread and touched only there. It
 *	is freed on one path only, sess_free(), which runs from its own
 *	event (never nested inside another callback of the session), after
 *	sess_close() has stopped all I/O. Callbacks of the session's own
 *	connection and timer check s->closing first.
 *
 *	Replies to the client go through an ordered queue of slots: a slot
 *	is filled at once (a local reply) or later, when the upstream answers
 *	the command that the slot stands for. Filled slots are written from
 *	the head in one go, so pipelined commands are answered in order and
 *	in as few writes as possible.
 *
 *	Where the session is in the dialogue is s->phase (enum sess_phase
 *	below), changed only by sess_enter_phase(). The session owns its
 *	upstream side (upstream.h) and is its owner: upstream.c calls back
 *	only through struct ups_owner (sess_ups_* in smtp_server.c). auth.c
 *	and tls.c are parts of the session: their verbs are rows of its verb
 *	table, and they share this struct.
 *
 *	Memory: an idle session holds the struct, its connection and one
 *	timer; the message transaction (struct txn) exists only between MAIL
 *	and the end of the transaction, the upstream (struct ups) only from
 *	the first MAIL (or AUTH) on.
 */
#ifndef MOAT_SESSION_H
#define MOAT_SESSION_H

#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "reply.h"
#include "rules.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "upstream.h"

struct worker;
struct conn;
struct rules_facts;
struct spool;
struct eng_sess;
struct eng_msg;

/*
 * Where the session is in the SMTP dialogue. Every change goes through
 * sess_enter_phase(), which logs "phase OLD -> NEW" at debug level. The
 * transaction (s->txn) exists exactly in the phases of sess_phase_txn().
 */
enum sess_phase {
	SP_CONNECTED = 0,	/* accepted, no greeting yet (greet-delay, connect rules) */
	SP_TLS,			/* a TLS handshake runs: implicit TLS, or after STARTTLS */
	SP_GREETED,		/* 220 sent; no HELO/EHLO accepted (again, after STARTTLS) */
	SP_HELO,		/* HELO/EHLO accepted; no transaction */
	SP_AUTH,		/* an AUTH exchange is on (auth.c) */
	SP_MAIL,		/* a transaction: MAIL given, no recipient sent yet */
	SP_RCPT,		/* a transaction with a recipient sent upstream */
	SP_DATA,		/* message content is read, after our 354 */
	SP_DATA_END,		/* the end of data is in: the message is judged */
	SP_CLOSING,		/* the last reply is flushed, then the session closes */
};

/* sess_phase_txn - is a transaction open (s->txn set) in this phase? */
static inline bool
sess_phase_txn(enum sess_phase p)
{
	return p == SP_MAIL || p == SP_RCPT || p == SP_DATA || p == SP_DATA_END;
}

/* RFC 4954 4: an AUTH initial response may be 12288 octets long */
#define SESS_AUTH_IR_MAX 12288
#define SESS_AUTH_LINE_MAX (SESS_AUTH_IR_MAX + 64 + 2)	/* "AUTH MECH " and CRLF */

/*
 * What the one line reader (smtp_server.c) found in the client's input,
 * for a command or a line of an AUTH exchange. Its cap, CRLF included,
 * depends on the phase: SMTP_CMD_LINE_MAX for a command,
 * SESS_AUTH_LINE_MAX for an AUTH command, SASL_LINE_MAX + 2 for a line of
 * the exchange. The caller answers LONG and BARE_LF in its own words.
 */
enum sess_line {
	SESS_LINE_NONE = 0,	/* no complete line yet */
	SESS_LINE_OK,		/* a line, without its CRLF */
	SESS_LINE_LONG,		/* over the cap: dropped, and its rest as it arrives */
	SESS_LINE_BARE_LF,	/* ended by a bare LF: dropped, never guessed at */
};

/* protocol-hygiene facts about the session (rules will read them) */
#define SESS_F_NOT_LAST        0x01u	/* input behind a command that must end a group (RFC 2920 3.1) */
#define SESS_F_DATA_PIPELINED    0x02u	/* content sent with DATA before our 354 */
#define SESS_F_BARE_LF_CMD       0x04u	/* a command line ended in bare LF */
#define SESS_F_AFTER_DOT         0x08u	/* commands pipelined right after the end of data */
#define SESS_F_NON_SMTP          0x10u	/* HTTP or PROXY bytes */
#define SESS_F_EARLY             0x20u	/* the client talked before the greeting */
#define SESS_F_STARTTLS_INJECT   0x40u	/* bytes came after STARTTLS, before TLS (dropped) */

struct slot {
	struct slot *next;
	bool filled;
	bool close_after;	/* close the session once this reply is written */
	unsigned short len;
	char *text;		/* owned; CRLF-terminated lines */
};

/* The transaction: from MAIL to the end of the message. */
struct txn {
	char sender[SMTP_PATH_MAX + 8];	/* rendered "<a@b>" */
	struct smtp_addr from;		/* parsed once: engine, relay */
	struct smtp_mail_params mp;
	struct smtp_addr rcpt;		/* the RCPT being judged, parsed once */
	struct smtp_rcpt_params rp;
	unsigned nrcpt;			/* recipients sent upstream (pending or accepted) */
	unsigned nrcpt_ok;		/* recipients the upstream accepted */
	bool mail_failed;		/* the upstream refused MAIL, or was lost */
	bool lost;			/* the upstream connection was lost */
	struct data_dec dd;
	struct spool *spool;
	struct eng_msg *msg;		/* what the checks take from the message */
	uint64_t data_start_ms;
};

struct session {
	uint64_t id;
	struct worker *w;
	struct conf *conf;		/* reference, for the whole session */
	struct conn *conn;
	struct event *ev_timer;
	struct session *prev, *next;	/* worker's list */

	struct sockaddr_storage peer, local;
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;

	enum sess_phase phase;		/* changed by sess_enter_phase() only */
	enum rules_stage waiting;	/* the stage waiting for the engine's verdict
					 * (no command is read meanwhile); RS__COUNT: none */
	bool closing;			/* sess_close() ran: I/O stopped, the free is pending */
	bool in_input;			/* inside sess_process_input() */
	bool discard;			/* discarding the rest of an over-long line */
	bool esmtp;			/* the greeting was EHLO (not HELO) */
	bool quit;			/* the client said QUIT: the close's reason */
	bool via_tls;			/* the PROXY v2 header said the client used TLS */
	const char *close_reason;	/* sess_close()'s, for the disconnect line */
	char *via;			/* owned: the balancer ("IP:PORT") a PROXY header came from */
	bool drain_waits;		/* drain-timeout passed: waits for the upstream's answer */
	char *helo;			/* owned, as sent (may be odd); set from SP_HELO on */
	unsigned facts;			/* SESS_F_* */
	struct eng_sess *eng;		/* the engine's side (engine.h), made on first use (sess_eng) */
	unsigned short bare_lf_cmds;	/* command lines ended by a bare LF */
	unsigned short unknown_cmds;	/* commands not recognised */
	bool auth_quiet;		/* after AUTH: lines are not logged until a
					 * recognised command (they may be secrets) */
	unsigned lines_suppressed;	/* lines left out of the log meanwhile */
	uint64_t greet_at_ms;		/* greet-delay: not before this */
	unsigned errors, junk, ncmds, nmsgs;

	uint64_t start_ms;
	uint64_t cmd_deadline_ms;	/* 0 = not waiting for a command */

	struct slot *sq_head, *sq_tail;
	unsigned nslots;		/* slots not yet written */
	unsigned npending;		/* slots still waiting for the upstream */

	struct txn *txn;
	struct ups *ups;		/* the upstream side (upstream.h), from sess_upstream() */

	unsigned lflags;		/* CONF_LISTEN_* of the listener it came in on */
	struct sess_tls *tls;		/* the handshake's facts (tls.c), NULL in plaintext */
	struct sess_auth *auth;		/* AUTH state and login (auth.c), or NULL */
};

/* smtp_server.c */
uint64_t sess_now_ms(void);
const char *sess_phase_name(enum sess_phase p);
void sess_enter_phase(struct session *s, enum sess_phase p);
struct listen_origin;
void sess_start(struct worker *w, struct conf *c, int fd,
	const struct sockaddr *sa, socklen_t salen, unsigned lflags,
	const struct listen_origin *o);
void sess_begin(struct session *s);
void sess_arm_timer(struct session *s);
bool sess_error(struct session *s);
void sess_reply_close(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void sess_close(struct session *s, const char *reason);
struct slot *sess_slot_new(struct session *s);
void sess_slot_fill(struct session *s, struct slot *sl, const char *text, size_t len);
void sess_slot_fillf(struct session *s, struct slot *sl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void sess_replyf(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void sess_flush(struct session *s);
void sess_txn_free(struct session *s);
void sess_txn_abort(struct session *s);
void sess_drain(struct session *s);

/* smtp_server.c: the session's upstream side (upstream.h), made on first use */
struct ups *sess_upstream(struct session *s);

/* smtp_server.c: the engine's resume callback */
void sess_resume(void *arg);

#endif
