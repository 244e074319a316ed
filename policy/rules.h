/*
 * rules - named lists and per-stage rules of the policy file, and their
 * evaluation
 *
 * SYNOPSIS
 *	struct rules *rules_new(void);
 *	int rules_parse_list(struct rules *r, struct lexer *lx, const struct lex_token *kw,
 *	                     lex_err_fn err, void *arg);
 *	int rules_parse_on(struct rules *r, struct lexer *lx, const struct lex_token *kw,
 *	                   lex_err_fn err, void *arg);
 *	void rules_eval(const struct rules *r, enum rules_stage st,
 *	                const struct rules_facts *f, struct rules_result *res);
 *	void rules_free(struct rules *r);
 *
 * GRAMMAR (one statement per line; a list's braces may span lines)
 *	list NAME KIND { ITEM ... }
 *	list NAME KIND file "PATH"
 *		KIND is net, domain, address, word (lists.h) or login-map
 *		(filters/owner.h: LOGIN: ITEM ..., read by "sender owned-by
 *		NAME" and "from owned-by NAME").
 *	on STAGE [monitor|off] CONDITION ACTION
 *		STAGE is connect, helo, mail, rcpt or data.
 *		CONDITION := TERM { or TERM }
 *		TERM      := FACTOR { and FACTOR }
 *		FACTOR    := not FACTOR | ( CONDITION ) | true | ratelimit NAME | FACT
 *		           | FACT in LIST | FACT is WORD
 *		           | FACT (== != < <= > >=) NUMBER
 *		ACTIONS   := { score (+N|-N) | add-header NAME "VALUE" | tag WORD | sign }
 *		             [FINAL]
 *		           (sign: data only; DKIM-sign the message with the keys
 *		             of its header From domain, engine.h)
 *		FINAL     := accept | reject CODE ENH "TEXT" | tempfail CODE ENH "TEXT"
 *		           | greylist (rcpt: 451 4.7.1 while the triplet is
 *		             greylisted, else the next rules run)
 *	Rules run top to bottom per stage. score and add-header act and let
 *	the evaluation go on; the first matching rule with a final action
 *	decides (accept ends the stage's rules and lets the command go on). A
 *	monitor rule logs what it would have done and changes nothing; an
 *	off rule is checked at load and never run.
 *
 * CHECKS AT LOAD
 *	Unknown facts, lists and words; a fact used before the stage where
 *	it is known (rcpt-domain at mail); a list of the wrong kind for the
 *	fact; reject codes outside 5xx (tempfail: 4xx), an enhanced code of
 *	another class, reply texts with control bytes or over 400 bytes; a
 *	list name given twice. Each error is reported through err() with the
 *	token's line and column.
 */
#ifndef MOAT_RULES_H
#define MOAT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lex.h"

enum rules_stage { RS_CONNECT = 0, RS_HELO, RS_MAIL, RS_RCPT, RS_DATA, RS__COUNT };

enum rules_verdict { RV_CONTINUE = 0, RV_ACCEPT, RV_REJECT, RV_TEMPFAIL,
	RV_WAIT			/* a rule needs a check's result: res->need */
};

/* What the front-end knows at a stage; unknown strings are NULL/0. */
struct rules_facts {
	const struct sockaddr *client;
	const char *helo;
	size_t helolen;
	bool have_sender;		/* MAIL given (the null sender too) */
	const char *sender_local, *sender_domain;
	size_t sender_llen, sender_dlen;
	const char *rcpt_local, *rcpt_domain;
	size_t rcpt_llen, rcpt_dlen;
	unsigned rcpt_count;		/* recipients before this one */
	uint64_t declared_size;		/* SIZE= at MAIL, 0 if none */
	uint64_t size;			/* message size at data */
	bool auth;
	const char *login;		/* the authenticated login, or NULL */
	size_t loginlen;
	bool tls;
	const char *tls_version;	/* "TLSv1.3", or NULL */
	const char *tls_cipher;		/* OpenSSL's name, or NULL */
	const char *tls_client_cert;	/* CN of a verified client certificate, or NULL */
	bool have_from;			/* data: the header From was read */
	const char *from_local, *from_domain;	/* its (first) mailbox */
	size_t from_llen, from_dlen;
	unsigned from_count;		/* mailboxes in From (owned-by wants all owned) */
	const char *const *from_all;	/* from_count pairs local, domain (NUL-terminated) */
	int64_t score;			/* the session's score so far */
	bool pipelining_violation;	/* RFC 2920 3.1 broken so far in the session */
	bool pipelined_after_dot;	/* commands came with an end-of-data dot */
	bool bare_lf;			/* data: the message had bare LF line ends */
	bool helo_valid;		/* the HELO name is a domain or address literal */
	bool fcrdns_known;		/* the fcrdns check (filter.h) has its result */
	bool fcrdns;			/* the client's name is forward-confirmed */
	const char *client_name;	/* that name, or NULL */
	size_t client_nlen;
	bool dnsbl_known;		/* every DNSBL lookup of the stage is answered */
	int64_t dnsbl_score;		/* the weights of the listing zones */
	bool dnsbl_error;		/* a lookup failed or answered nonsense */
	const char *dnsbl_hits;		/* "zen,sbl": the listing zones' names, or NULL */
	const char *dnsbl_reply;	/* the heaviest listing's reply text, or NULL */
	bool early_talker;		/* the client talked before the greeting */
	bool submission;		/* the session came in on a submission listener */
	unsigned bare_lf_commands;	/* command lines ended in a bare LF */
	unsigned unknown_commands;	/* unknown or unimplemented commands */
	bool greylist_known;		/* rcpt: this recipient's greylist decision is in */
	bool greylist_tempfail;		/* ... and it says 451 */
	const char *greylist_text;	/* the 451's text ("greylisted, please retry in ...") */
	bool spf_known;			/* the SPF results of the stage are in */
	const char *spf;		/* mail: MAIL FROM's result (none, pass, fail, ...) */
	const char *spf_helo;		/* helo: the HELO identity's result */
	bool sauth_known;		/* data: DKIM and DMARC are in */
	const char *dkim;		/* pass (a full signature verified), fail, none, ... */
	const char *dmarc;		/* pass, fail, none, temperror, permerror */
	const char *dmarc_policy;	/* the policy to apply: none, quarantine, reject */
	const char *dmarc_from_domain;	/* the RFC5322.From domain DMARC found, or NULL */
	const char *spf_explanation;	/* mail: MAIL FROM's SPF fail explanation, or NULL */
	bool rl_known;			/* the stage's rate limits are counted */
	uint32_t rl_exceeded;		/* bit i: limit i (rules_add_ratelimit) is exceeded */
};

#define RULES_HDR_MAX 8		/* header fields one stage may add */

struct rules_result {
	enum rules_verdict verdict;
	int code;			/* reject/tempfail */
	const char *enh;		/* borrowed from the rules */
	const char *text;		/* template, borrowed: expand with rules_expand() */
	const char *file;		/* the deciding rule */
	int line;
	int monitored;			/* monitor rules that matched on the way */
	int64_t score;			/* what matching rules added */
	int need;			/* RV_WAIT: the check (filter.h enum check_id) */
	bool sign;			/* a matching rule said sign (data) */
	int nhdr;			/* header fields to add: names and value templates */
	const char *hdr_name[RULES_HDR_MAX];
	const char *hdr_value[RULES_HDR_MAX];
};

struct rules;


/* One call per rule looked at by rules_eval_trace(): where it is, its
 * mode (0 enforce, 1 monitor, 2 off), whether its condition held, and
 * its condition and action as written (normalised). */
struct rules_trace {
	const char *file;
	int line;
	int mode;
	bool matched;
	const char *text;
	const char *why;	/* each term: "fact=value test: yes|no", "; " between */
};
typedef void (*rules_trace_fn)(void *arg, const struct rules_trace *t);

struct rules *rules_new(const char *file);
int rules_parse_list(struct rules *r, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg);
int rules_parse_on(struct rules *r, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg);
size_t rules_count(const struct rules *r, enum rules_stage st);
bool rules_reads_from(const struct rules *r);
/* Does a reply or header text use $spf-explanation? (SPF then fetches
 * the explanation of a fail; spf.h) */
bool rules_uses_spf_explanation(const struct rules *r);
/* rules_signs - has a data rule (not off) the sign action? */
bool rules_signs(const struct rules *r);
void rules_eval(const struct rules *r, enum rules_stage st, const struct rules_facts *f,
	struct rules_result *res, uint64_t sid);
void rules_eval_trace(const struct rules *r, enum rules_stage st, const struct rules_facts *f,
	struct rules_result *res, uint64_t sid, rules_trace_fn trace, void *arg);
const char *rules_stage_name(enum rules_stage st);

/* rate limits (policy/conf_ratelimit.c declares them, "ratelimit NAME"
 * in a rule reads one): add a name with its index (the next one), the
 * first stage that may read it; 0, or -1 (a name given twice). The
 * limits a stage's rules (not off) read, as a bit mask. */
int rules_add_ratelimit(struct rules *r, const char *name, int index, enum rules_stage from,
	bool per_rcpt);
uint32_t rules_stage_ratelimits(const struct rules *r, enum rules_stage st);

/* Does a rule of this stage (not off) read the facts of this check
 * (filter.h enum check_id)? The front-end runs the check first. */
bool rules_stage_needs(const struct rules *r, enum rules_stage st, int check);
/* With these facts, do the stage's rules reach a fact of the check (or of
 * another check not in yet) before a rule decides? Conditions only: no
 * action, no log. So "client-ip in trusted accept" first means trusted
 * clients never wait for DNS. */
bool rules_stage_wants(const struct rules *r, enum rules_stage st, const struct rules_facts *f,
	int check);
/* The first check the stage's rules reach with these facts, or -1. */
int rules_stage_first_need(const struct rules *r, enum rules_stage st, const struct rules_facts *f);

/* Expand $ip $helo $sender $sender-domain $rcpt $rcpt-domain $score $size
 * ($$ is a dollar) in a template checked at load. What comes from the
 * peer is cut and made printable ASCII (others become '?'), so no CR, LF
 * or NUL ever reaches a reply or a header. Returns the length; out is
 * always terminated. */
size_t rules_expand(const char *tmpl, const struct rules_facts *f, char *out, size_t size);
/* Append "Name: value" CRLF to a header buffer unless it is there
 * already; the buffer stays under 64 KiB. */
void rules_header_add(char **buf, size_t *len, const char *name, const char *value);
/* Facts of checks not awaited become failed lookups (greylist: 1 = tempfail). */
void rules_facts_unawaited(struct rules_facts *f, bool dnsbl_on, bool dnsbl_error,
	int greylist_on_error);
/* rules_blocker - the first enforced rule of the stage that decides for
 * every session (*catch_all: a final action on "true") or for many (a
 * greylist rule), its line and *file; 0 if none. conf.c warns about an
 * include after it. */
int rules_blocker(const struct rules *r, enum rules_stage st, bool *catch_all, const char **file);
/* rules_fact_word_ok - is word one of the fact's words (spf: pass,
 * fail, ...; any word for a fact without a fixed vocabulary)? If not,
 * false with the valid words, comma-separated, in valid */
bool rules_fact_word_ok(const char *fact, const char *word, char *valid, size_t size);
/* rules_set_dry - the rules parsed from now on are dry (an include with
 * "monitor"); returns the setting it replaces. A dry rule that matches
 * and would reject or tempfail (or greylist a triplet the greylist check
 * says is greylisted: the check still runs and records it) is logged as
 * "policy ... mode=dry-run would=reject reply=..." and the next rules
 * run, as if it had not matched; accept, score, add-header and sign act
 * as always. */
bool rules_set_dry(struct rules *r, bool dry);
/* rules_set_dry_all - every rule dry: policy-mode monitor */
void rules_set_dry_all(struct rules *r);
/* rules_file_rules - the line of the first rule (not off; accept rules
 * only if asked) of the stage read from file (the same interned name), or 0 */
int rules_file_rules(const struct rules *r, enum rules_stage st, const char *file, bool accept_only);
void rules_free(struct rules *r);

#endif
