/*
 * engine - the one engine behind every front-end (moatd, moat-milter,
 * moatctl explain): a session's facts, its checks, waits and deadlines,
 * the policy's verdict and the header fields it adds
 *
 * SYNOPSIS
 *	Process-wide services (engine_svc.c), once per process:
 *	int engine_init(struct conf *c, const struct engine_opts *o, char *err, size_t errlen);
 *	void engine_timers_start(struct event_base *base, struct conf *(*current)(void));
 *	void engine_shutdown(void);
 *
 *	One per event loop that runs sessions:
 *	struct engine_loop *engine_loop_new(struct event_base *base, const struct conf *c);
 *
 *	One per client session (SMTP connection, milter connection, explain walk):
 *	struct eng_sess *engine_sess_new(struct engine_loop *el, struct conf *c, uint64_t id,
 *	                                 const struct sockaddr *client, eng_resume_fn resume, void *arg);
 *	void engine_sess_free(struct eng_sess *e);
 *
 *	Inputs, each parsed once by the front-end:
 *	void engine_helo(e, name, len);   engine_mail(e, from, mp);   engine_rcpt(e, rcpt);
 *	void engine_data(e, msg, size);   engine_txn_end(e);
 *	void engine_set_tls(...);  engine_set_login(...);  engine_proto(e)->...
 *
 *	The stage:
 *	enum eng_rc engine_stage(struct eng_sess *e, enum rules_stage st, struct eng_verdict *v);
 *	char *engine_headers(struct eng_sess *e, size_t *len);
 *
 * DESCRIPTION
 *	A front-end gives the engine what the client said (the HELO name,
 *	the parsed MAIL and RCPT addresses, the message) and then asks for
 *	the verdict of the stage. The engine starts the checks as soon as
 *	their inputs are known (the DNSBL zones of the address and FCrDNS at
 *	connect, the HELO and sender zones and SPF as those commands come,
 *	DKIM and DMARC at the end of the data, the greylist when a greylist
 *	rule is reached for a recipient), and waits only for what a rule of
 *	the stage reads.
 *
 *	engine_stage() answers at once (ENG_CONTINUE, ENG_REFUSE with the
 *	reply in *v) or says ENG_WAIT: a check the stage needs is out. Then
 *	the engine calls resume(arg) on the session's loop once nothing the
 *	stage needs is pending, or once the check deadline (twice
 *	dns-timeout plus half a second) has passed and what is still pending
 *	became a temporary error; the front-end then calls engine_stage()
 *	again with the same stage, which does not wait again. resume is never
 *	called from inside an engine_* call, and never after engine_sess_free().
 *
 *	Scores and header fields added by the rules of connect and helo
 *	belong to the session, the others to the transaction (engine_mail()
 *	opens one, engine_txn_end() ends it). engine_headers() gives, at the
 *	end of the data, the fields that go on top of the message: the
 *	DKIM-Signature fields when a data rule said sign (filters/dkim_sign.h:
 *	the keys of the header From domain), then Authentication-Results,
 *	then those the rules added.
 *
 *	A session holds a reference to its policy (c) for its whole life.
 *	Answers in flight find their session through small contexts the
 *	session keeps on a list; engine_sess_free() detaches them, so a late
 *	answer is dropped. A new HELO, MAIL or transaction bumps a
 *	generation, so an answer to an older question is ignored.
 *
 * MESSAGES
 *	struct eng_msg gathers what the checks need from the message as it
 *	streams by (engine_msg.c): DKIM hashing, the header scanner (which
 *	drops Authentication-Results fields with our authserv-id from what
 *	it passes on, and keeps the From values), and the header block when
 *	a rule reads "from". It touches no loop state: moat-milter builds it
 *	on libmilter's thread, moatd on its worker's loop, explain from a
 *	file. engine_data() takes it over. Once its header section is in,
 *	engine_msg_ahead() names the DKIM keys and DMARC records not yet
 *	cached, which the front-end hands to engine_ahead() on the loop
 *	(moatd at once, moat-milter in a request that nobody waits for).
 *
 * THREADS
 *	Everything but eng_msg runs on the session's loop: on the loop's
 *	thread, or on a thread that has the loop to itself at that moment
 *	(moat-milter's callbacks with its engine lock, while the loop's
 *	thread sleeps in epoll_wait() without it: milter/mlt_engine.c).
 *	engine_init() and engine_shutdown() run on the main thread, before
 *	the loops start and after they ended.
 */
#ifndef MOAT_ENGINE_H
#define MOAT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "conf.h"
#include "rules.h"
#include "smtp_parse.h"

struct event_base;
struct dns_loop;
struct workq_loop;
struct greylist;
struct glstore;
struct engine_loop;
struct eng_sess;
struct eng_msg;
struct dkimv;

/* ---------------------------------------------------------------------
 * Process-wide services
 */

struct engine_opts {
	const char *who;		/* "moatd", "moat-milter", "moatctl" (logs) */
	bool no_network;		/* explain --no-network: no resolver, DNS gives temperror */
	bool greylist_offline;		/* explain: no store, no Redis: a greylist rule passes */
	bool greylist_peek;		/* explain --live (with greylist_offline): the greylist
					 * is asked read-only (greylist_new_peek): Redis as
					 * the policy says, or the store file as last saved */
	bool quiet_start;		/* no "resolver error" log line (explain prints its own) */
};

/* engine_init - the resolver, the work pool, the DKIM verifier, the Public
 * Suffix List and the embedded greylist store, from the policy at start.
 * -1 with err set when one that the policy needs cannot start. */
int engine_init(struct conf *c, const struct engine_opts *o, char *err, size_t errlen);
/* engine_timers_start - on the given loop (moatd's main loop, the milter's
 * engine loop): DNSBL health probes (at once, then every
 * dnsbl-probe-interval) with their "stats" lines, and the embedded
 * greylist store's save every greylist-store-save-interval. current()
 * returns a new reference to the policy in force. */
void engine_timers_start(struct event_base *base, struct conf *(*current)(void));
/* engine_timers_stop - before that loop is freed */
void engine_timers_stop(void);
/* engine_shutdown - after every loop has ended, before their event
 * bases are freed: finish the pool's jobs, stop the resolver, free the
 * loops' parts, save and close the store, free the rest */
void engine_shutdown(void);
/* control_open - the control socket (engine_ctl.c) on that loop; info
 * says who answers and how to get the policy in force. control_chown()
 * gives it to the user moat becomes; control_close() after
 * engine_shutdown(), before the loop is freed. */
struct control_info {
	const char *who;		/* "moatd", "moat-milter" */
	bool upstream;			/* status checks the upstream (moatd) */
	struct conf *(*current)(void);	/* a new reference to the policy in force */
};
int control_open(struct event_base *base, const char *path, const struct control_info *info,
	char *err, size_t errlen);
void control_chown(uid_t uid, gid_t gid);
void control_close(void);
/* engine_drop_privileges - become the policy's user once the listening
 * sockets are open, the control socket handed over first (privs.h); a
 * warning naming who when that user is root; -1 with err when it fails
 * (the caller does not start) */
int engine_drop_privileges(const struct conf *c, const char *who, char *err, size_t errlen);
/* engine_startup_checks - the upstream (when upstream: moatd), Redis, the
 * resolver, the greylist store's and spool directory's permissions for
 * user: one warning line each that fails (engine_check.c); blocks,
 * bounded: call before the loops start. Returns the number of warnings. */
int engine_startup_checks(const struct conf *c, bool upstream, bool resolver);
/* engine_metrics_open - serve GET /metrics on the policy's metrics-listen
 * (nothing when unset), on that loop; -1 with err when it cannot bind.
 * engine_metrics_close() before the loop is freed. */
int engine_metrics_open(struct event_base *base, const struct conf *c, char *err, size_t errlen);
void engine_metrics_close(void);
/* engine_store_save - save the embedded greylist store now (0, or -1 logged) */
int engine_store_save(void);
struct glstore *engine_glstore(void);

/* ---------------------------------------------------------------------
 * Loops
 */

/* engine_loop_new - what a loop needs to run sessions: its resolver
 * mailbox, its work-pool mailbox, its greylist handle. Made on the main
 * thread before the loop runs; engine_shutdown() frees it, after the
 * loop ended and before its event base is freed. */
struct engine_loop *engine_loop_new(struct event_base *base, const struct conf *c);
/* engine_loop_set_query - the function that sends the loop's sessions'
 * DNS questions (dns_query by default; NULL: none can be sent, every
 * lookup is a temporary error at once). Unit tests give their own, which
 * keeps the callbacks and answers them (or not) from the loop later. */
struct dns_answer;
typedef void (*engine_dns_cb)(void *ctx, uint64_t tag, const struct dns_answer *a);
typedef int (*engine_query_fn)(struct dns_loop *l, const char *name, int rrtype,
	unsigned timeout_ms, engine_dns_cb cb, void *ctx, uint64_t tag);
void engine_loop_set_query(struct engine_loop *el, engine_query_fn fn);
/* the parts, for the loop's other users */
struct dns_loop *engine_loop_dns(struct engine_loop *el);
struct greylist *engine_loop_greylist(struct engine_loop *el);

/* ---------------------------------------------------------------------
 * Sessions
 */

typedef void (*eng_resume_fn)(void *arg);

/* protocol facts a front-end observes (moatd's session; others leave 0) */
struct eng_proto {
	bool pipelining_violation;	/* RFC 2920 3.1 broken */
	bool pipelined_after_dot;
	bool early_talker;
	unsigned bare_lf_commands;
	unsigned unknown_commands;
};

enum eng_rc { ENG_CONTINUE = 0, ENG_REFUSE, ENG_WAIT };

struct eng_verdict {
	enum rules_verdict verdict;	/* RV_CONTINUE, RV_ACCEPT, RV_REJECT, RV_TEMPFAIL */
	int code;			/* refusals: 4xx/5xx */
	char enh[16];
	char text[600];			/* expanded, printable */
	const char *rule_file;		/* the deciding rule (borrowed from the policy), or NULL */
	int rule_line;
};

/* engine_sess_new - a session; client may be NULL (unknown: the checks of
 * the address give temperror). Starts the connect checks. c: the
 * session takes its own reference. */
struct eng_sess *engine_sess_new(struct engine_loop *el, struct conf *c, uint64_t id,
	const struct sockaddr *client, bool submission, eng_resume_fn resume, void *arg);
void engine_sess_free(struct eng_sess *e);

/* the session's facts that the front-end knows */
void engine_set_tls(struct eng_sess *e, const char *version, const char *cipher,
	const char *client_cert);
void engine_set_login(struct eng_sess *e, const char *login);	/* NULL: none */
struct eng_proto *engine_proto(struct eng_sess *e);
/* engine_set_trace - explain: every rule looked at goes to fn */
void engine_set_trace(struct eng_sess *e, rules_trace_fn fn, void *arg);

/* Check results that moatctl explain and moatctl test assume (given on
 * the command line or in a scenario) instead of the check's own answer:
 * the facts the rules see are these, known at once; a NULL word or a -1
 * leaves that check as it is. Words are checked by the caller
 * (rules_fact_word_ok). */
enum eng_gl_assume { ENG_GL_ASK = -1, ENG_GL_NEW, ENG_GL_EARLY, ENG_GL_PASSED,
	ENG_GL_ALLOWLISTED };
struct eng_assume {
	const char *spf, *spf_helo;		/* mail, helo */
	const char *dkim, *dmarc, *dmarc_policy, *from_domain;	/* data */
	int greylist;				/* enum eng_gl_assume */
	unsigned greylist_retry;		/* new/early: seconds in the 451 (0: the delay) */
	int fcrdns;				/* -1, 0 fail, 1 pass */
	const char *client_name;		/* with fcrdns 1 */
	bool dnsbl;				/* the DNSBL facts below are assumed */
	int64_t dnsbl_score;
	const char *dnsbl_hits;			/* "zen,sbl" or NULL */
	const char *dnsbl_reply;
	bool dnsbl_error;
	char gl_text[80];			/* engine_set_assume: the 451's text */
};
/* engine_set_assume - borrowed: a must outlive the session */
void engine_set_assume(struct eng_sess *e, struct eng_assume *a);

/* engine_helo - HELO/EHLO name (as sent; cut at SMTP_DOMAIN_MAX): ends
 * any transaction, starts the HELO zones and SPF of the name when a
 * helo rule reads spf-helo */
void engine_helo(struct eng_sess *e, const char *name, size_t len);
/* engine_mail - a new transaction with this sender (NULL: unknown, as a
 * milter that could not parse it); starts the sender zones and SPF */
void engine_mail(struct eng_sess *e, const struct smtp_addr *from,
	const struct smtp_mail_params *mp);
/* engine_rcpt - the recipient the next rcpt stage judges; nrcpt is how
 * many recipients went before it (the fact rcpt-count) */
void engine_rcpt(struct eng_sess *e, const struct smtp_addr *rcpt, unsigned nrcpt);
/* engine_data - the end of the data: the message (taken over, may be
 * NULL), its size, recipients accepted, bare LF seen */
void engine_data(struct eng_sess *e, struct eng_msg *m, uint64_t size, unsigned nrcpt,
	bool bare_lf);
/* engine_txn_end - the transaction is over (RSET, the end of a message,
 * a refused MAIL, an abort): its checks' late answers are dropped */
void engine_txn_end(struct eng_sess *e);
bool engine_in_txn(const struct eng_sess *e);

/* engine_stage - the verdict of a stage's rules, or ENG_WAIT (above). A
 * refused HELO is forgotten (as if none was given); a refused MAIL ends
 * the transaction. */
enum eng_rc engine_stage(struct eng_sess *e, enum rules_stage st, struct eng_verdict *v);
/* engine_wanted_at_connect - does a session under c start a check or run
 * a rule before its HELO? When not, a front-end may make the session on
 * first use (an idle connection then costs the engine nothing) */
bool engine_wanted_at_connect(const struct conf *c);
/* engine_stage_may_refuse - has policy c a rule at this stage? When it
 * has none, engine_stage() can only continue: a front-end on another
 * thread (moat-milter's callbacks) need not wait for the answer */
bool engine_stage_may_refuse(const struct conf *c, enum rules_stage st);
/* engine_headers - the end of the data, after a verdict that let the
 * message go: the fields for the top of the message (CRLF lines,
 * allocated, the caller frees), NULL when none; *removed: forged
 * Authentication-Results fields the scanner dropped */
char *engine_headers(struct eng_sess *e, size_t *len, unsigned *removed);

/* ---------------------------------------------------------------------
 * The verdict line
 *
 * One info line per refusal (moat's or the upstream's) and one per
 * transaction that reached the end of its data, the same from every
 * front-end, e.g.
 *
 *   verdict=reject by=moat stage=rcpt client=NAME[ADDR]:PORT helo=<h>
 *   from=<a@b> to=<c@d>:451:4.7.1 code=451 enh=4.7.1 reply="..." rule=FILE:LINE
 *   spf=pass dkim=none dmarc=none dnsbl=0 greylist=new time=0.012
 *
 * verdict= follows the reply's code (2xx accept, 4xx tempfail, 5xx
 * reject); reply= is the text as sent, escaped. engine_stage() writes
 * moat's refusals itself. A front-end that relays to an upstream calls
 * engine_upstream_replies() once, then engine_upstream_reply() with each
 * upstream reply to MAIL, RCPT, DATA and the end of the data (RS_DATA),
 * in the order they come (a refusal gets its line, by=upstream; the
 * reply after the data gives the transaction's line, with the queue id
 * of a 250), engine_upstream_lost() when the upstream is gone and
 * engine_txn_failed() with each reply moat sends for it then. A
 * front-end without one (moat-milter) calls engine_txn_accepted() when
 * it lets a message go. A transaction with recipients that ends before
 * its data gets a verdict=abandoned line from engine_txn_end().
 */
void engine_upstream_replies(struct eng_sess *e);
void engine_upstream_reply(struct eng_sess *e, enum rules_stage st, int code, const char *enh,
	const char *text, size_t len);
void engine_upstream_lost(struct eng_sess *e);
/* engine_txn_failed - moat's own reply (code, enhanced code, text as
 * sent) that ends a transaction outside the rules: with upstream, to MAIL,
 * RCPT, DATA or the end of the data (RS_DATA) because the upstream was
 * lost, timed out or could not be reached (by=upstream); without, moat's
 * own limit (a timeout, the message size) at stage st (by=moat). The
 * transaction's line, once per transaction */
void engine_txn_failed(struct eng_sess *e, enum rules_stage st, bool upstream, int code,
	const char *enh, const char *text, size_t len);
void engine_txn_accepted(struct eng_sess *e, const char *queue_id);
/* engine_who - "client=NAME[ADDR]:PORT helo=<h>" as the verdict line
 * writes it (escaped; NAME is "unknown" unless forward-confirmed), for a
 * front-end's own lines about the session (the disconnect line, a
 * refusal before the session): e's facts, or with e NULL (a session the
 * engine never saw) the address of peer (NULL: unknown), no name, no
 * HELO. size: ENG_WHO_SIZE is always enough. */
#define ENG_WHO_SIZE 912	/* 2 * LOG_ESC_SIZE + 96 */
void engine_who(const struct eng_sess *e, const struct sockaddr *peer, char *out, size_t size);

/* ---------------------------------------------------------------------
 * Messages (any thread)
 */

typedef void (*eng_msg_out_fn)(void *arg, const unsigned char *buf, size_t len);

/* engine_msg_new - out receives the message as the header scanner passes
 * it (forged Authentication-Results fields dropped); NULL: nothing out */
struct eng_msg *engine_msg_new(const struct conf *c, eng_msg_out_fn out, void *arg);
/* engine_msg_set_stuffed - what will be fed is stuffed again for the wire
 * (every line that starts with "." has one more): DKIM gets it unstuffed */
void engine_msg_set_stuffed(struct eng_msg *m);
/* engine_msg_feed - decoded message bytes (CRLF line ends, no dot-stuffing) */
void engine_msg_feed(struct eng_msg *m, const void *buf, size_t len);
/* engine_msg_finish - the message is complete: a header field still held
 * goes out (to out) now */
void engine_msg_finish(struct eng_msg *m);
void engine_msg_free(struct eng_msg *m);
/* engine_msg_ahead - after engine_msg_feed(), on the feeding thread: as
 * soon as the message's header section is in, the names its end of data
 * will look up and the resolver's cache lacks (the key records of its
 * DKIM signatures, as the verifier parsed and bounds them; the DMARC
 * records of its one From domain: the domain's and, for RFC 7489, its
 * organisational domain's), allocated, for engine_ahead() on the
 * session's loop. NULL before the header section has ended, after the
 * first call that saw it end, and when nothing is missing. */
struct eng_ahead;
struct eng_ahead *engine_msg_ahead(struct eng_msg *m);
/* engine_ahead - on the session's loop, while the transaction the
 * message belongs to is open: those names are asked into the resolver's
 * cache, nothing waits for them here; the end of the data then runs from
 * the cache or waits only for what it needs that is still in flight.
 * Each name is asked once per transaction (the DMARC records asked at
 * MAIL included). Takes a over (NULL: nothing). */
void engine_ahead(struct eng_sess *e, struct eng_ahead *a);
void engine_ahead_free(struct eng_ahead *a);

#endif
