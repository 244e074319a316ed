/*
 * moatctl - the operator's tool
 *
 * SYNOPSIS
 *	moatctl check FILE
 *	moatctl explain FILE --ip A [--helo H [--from S [--rcpt R ... [--message F]]]]
 *	                     [--auth LOGIN] [--no-network]
 *
 * DESCRIPTION
 *	check: reads the policy file as moatd would and prints every error
 *	(FILE:LINE:COL: error: ...) or "configuration OK". Exit 0 when the
 *	file is good, 1 when it is not, 2 on bad usage.
 *
 *	explain: walks one SMTP session through the stages as moatd does
 *	(connect, helo, mail, rcpt per recipient, data) with the facts
 *	moatd would have, prints every rule looked at (rules_eval_trace)
 *	and each stage's outcome, and stops where moatd would: a refused
 *	connect, HELO or MAIL ends the walk, a refused RCPT only drops that
 *	recipient. Besides the rules it repeats moatd's built-in checks that
 *	depend on the configuration alone (address syntax, SIZE= and the
 *	message against max-message-size, max-recipients, NUL, bare CR and
 *	line length in the message). Checks that depend on the upstream
 *	(its SIZE limit, SMTPUTF8, its own replies) are not repeated: the
 *	upstream is assumed to accept everything.
 *	Exit 0 when nothing is refused (the message would be relayed), 1
 *	when the session is refused or tempfailed, 2 on usage or
 *	configuration errors.
 *
 * OUTPUT (stable, one fact per line, meant for grep)
 *	policy FILE
 *	stage NAME FACT=VALUE ...
 *	  rule FILE:LINE MODE matched: TEXT      (MODE enforce|monitor|off)
 *	  rule FILE:LINE MODE no-match: TEXT
 *	  check NAME                             (a built-in check that refused)
 *	  verdict continue|accept rule FILE:LINE|reject reply "..."|tempfail reply "..."
 *	verdict: ...                              (a sentence for humans)
 *	result: accept | result: reject CODE ENH TEXT | result: tempfail CODE ENH TEXT
 *
 * OWNERSHIP AND LIMITS
 *	Everything lives on the stack of cmd_explain or in the loaded
 *	configuration; the message file is read in a stream (any size).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conf.h"
#include "dns.h"
#include "dnsbl.h"
#include "moatctl.h"
#include "filter.h"
#include "log.h"
#include "rules.h"
#include "smtp_parse.h"

#define EXPLAIN_RCPT_MAX 1000

/* usage - how to call */
static int
usage(void)
{
	fprintf(stderr, "usage: moatctl check FILE\n"
	    "       moatctl explain FILE --ip A [--helo H] [--from S] [--rcpt R ...]\n"
	    "                       [--auth LOGIN] [--message FILE.eml] [--no-network]\n");
	return 2;
}

/* cmd_check - load and report */
static int
cmd_check(const char *path)
{
	char *errs = NULL;
	struct conf *c = conf_load(path, &errs);

	if (c == NULL) {
		fputs(errs ? errs : "unknown error\n", stderr);
		free(errs);
		return 1;
	}
	if (errs != NULL)
		fputs(errs, stderr);	/* warnings */
	free(errs);
	conf_unref(c);
	printf("%s: configuration OK\n", path);
	return 0;
}

/* ---------------------------------------------------------------------
 * explain
 */

enum explain_outcome { EX_PASS = 0, EX_REFUSED };

struct explain_args {
	const char *file;
	const char *ip;
	const char *helo;
	const char *from;
	const char *rcpt[EXPLAIN_RCPT_MAX];
	size_t nrcpt;
	const char *auth;
	const char *message;
	bool no_network;
};

/* A refusal: what moatd would answer. */
struct explain_reply {
	bool set;
	bool temp;
	int code;
	char enh[16];
	char text[512];
};

/* explain_put_escaped - print bytes with controls and 8-bit as \xNN */
static void
explain_put_escaped(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

/* explain_mode_name - a rule's mode as written */
static const char *
explain_mode_name(int mode)
{
	switch (mode) {
	case 0: return "enforce";
	case 1: return "monitor";
	case 2: return "off";
	default: return "mode?";
	}
}

/* explain_trace - one "rule" line per rule looked at */
static void
explain_trace(void *arg, const struct rules_trace *t)
{
	(void)arg;
	printf("  rule %s:%d %s %s: %s\n", t->file ? t->file : "?", t->line,
	    explain_mode_name(t->mode), t->matched ? "matched" : "no-match",
	    t->text ? t->text : "");
}

/* explain_refuse - record and print a refusal reply */
static void
explain_refuse(struct explain_reply *r, bool temp, int code, const char *enh, const char *text)
{
	r->set = true;
	r->temp = temp;
	r->code = code;
	snprintf(r->enh, sizeof(r->enh), "%s", enh ? enh : "");
	snprintf(r->text, sizeof(r->text), "%s", text ? text : "");
	printf("  verdict %s reply \"%d %s %s\"\n", temp ? "tempfail" : "reject", code,
	    r->enh, r->text);
}

/* explain_builtin - a built-in check of moatd refused the command */
static enum explain_outcome
explain_builtin(struct explain_reply *r, const char *check, int code, const char *enh,
	const char *text)
{
	printf("  check %s\n", check);
	explain_refuse(r, code / 100 == 4, code, enh, text);
	return EX_REFUSED;
}

/* explain_stage - run one stage's rules with the trace on */
static enum explain_outcome
explain_stage(const struct conf *c, enum rules_stage st, const struct rules_facts *f,
	struct explain_reply *r)
{
	struct rules_result res;
	char text[600] = "";

	rules_eval_trace(c->rules, st, f, &res, 0, explain_trace, NULL);
	if (res.text != NULL)
		rules_expand(res.text, f, text, sizeof(text));	/* as moatd sends it */
	if (res.monitored > 0)
		printf("  monitor %d rule%s matched (logged only)\n", res.monitored,
		    res.monitored == 1 ? "" : "s");
	switch (res.verdict) {
	case RV_CONTINUE:
		printf("  verdict continue\n");
		return EX_PASS;
	case RV_ACCEPT:
		printf("  verdict accept rule %s:%d\n", res.file ? res.file : "?", res.line);
		return EX_PASS;
	case RV_REJECT:
		explain_refuse(r, false, res.code, res.enh, text);
		return EX_REFUSED;
	case RV_TEMPFAIL:
		explain_refuse(r, true, res.code, res.enh, text);
		return EX_REFUSED;
	default:
		/* a verdict this tool does not know yet: say so, do not guess */
		printf("  verdict unknown(%d) rule %s:%d (moatctl does not know it; treated as continue)\n",
		    (int)res.verdict, res.file ? res.file : "?", res.line);
		return EX_PASS;
	}
}

/* explain_addr - "<local@domain>" of a parsed path */
static void
explain_addr(const struct smtp_addr *a, char *out, size_t size)
{
	if (smtp_addr_render(a, out, size) < 0)
		snprintf(out, size, "<?>");
}

/* Message facts as moatd's data decoder counts them. */
struct explain_msg {
	uint64_t size;
	bool nul, bare_cr, long_line;
};

/* explain_read_message - size with CRLF line ends, as moatd decodes it */
static int
explain_read_message(const char *path, uint64_t max_line, struct explain_msg *m)
{
	FILE *fp = fopen(path, "rb");
	unsigned char buf[65536];
	size_t n;
	uint64_t linelen = 0;
	bool pending_cr = false, at_bol = true;

	memset(m, 0, sizeof(*m));
	if (fp == NULL) {
		fprintf(stderr, "moatctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = buf[i];
			if (pending_cr) {
				pending_cr = false;
				if (ch == '\n') {
					m->size += 2;
					linelen = 0;
					at_bol = true;
					continue;
				}
				m->bare_cr = true;	/* a CR alone is content */
				m->size++;
				linelen++;
				at_bol = false;
			}
			if (ch == '\r') {
				pending_cr = true;
				continue;
			}
			if (ch == '\n') {	/* a bare LF: the client sends CRLF */
				m->size += 2;
				linelen = 0;
				at_bol = true;
				continue;
			}
			if (ch == 0)
				m->nul = true;
			m->size++;
			linelen++;
			at_bol = false;
			if (max_line != 0 && linelen > max_line)
				m->long_line = true;
		}
	}
	if (ferror(fp)) {
		fprintf(stderr, "moatctl: %s: read error\n", path);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	if (pending_cr) {
		m->bare_cr = true;
		m->size++;
		at_bol = false;
	}
	if (!at_bol)
		m->size += 2;	/* the client ends the last line before the dot */
	return 0;
}

/* explain_parse_args - the options after FILE; -1 on a usage error */
static int
explain_parse_args(int argc, char **argv, struct explain_args *a)
{
	memset(a, 0, sizeof(*a));
	if (argc < 3)
		return -1;
	a->file = argv[2];
	for (int i = 3; i < argc; i++) {
		const char *o = argv[i];
		const char **dst = NULL;

		if (strcmp(o, "--no-network") == 0) {
			a->no_network = true;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "moatctl: %s needs a value\n", o);
			return -1;
		}
		if (strcmp(o, "--ip") == 0)
			dst = &a->ip;
		else if (strcmp(o, "--helo") == 0)
			dst = &a->helo;
		else if (strcmp(o, "--from") == 0)
			dst = &a->from;
		else if (strcmp(o, "--auth") == 0)
			dst = &a->auth;
		else if (strcmp(o, "--message") == 0)
			dst = &a->message;
		else if (strcmp(o, "--rcpt") == 0) {
			if (a->nrcpt >= EXPLAIN_RCPT_MAX) {
				fprintf(stderr, "moatctl: more than %d --rcpt\n", EXPLAIN_RCPT_MAX);
				return -1;
			}
			a->rcpt[a->nrcpt++] = argv[++i];
			continue;
		} else {
			fprintf(stderr, "moatctl: unknown option %s\n", o);
			return -1;
		}
		if (*dst != NULL) {
			fprintf(stderr, "moatctl: %s given twice\n", o);
			return -1;
		}
		*dst = argv[++i];
	}
	if (a->ip == NULL) {
		fprintf(stderr, "moatctl: explain needs --ip\n");
		return -1;
	}
	if (a->from != NULL && a->helo == NULL) {
		fprintf(stderr, "moatctl: --from needs --helo (moatd wants HELO before MAIL)\n");
		return -1;
	}
	if (a->nrcpt > 0 && a->from == NULL) {
		fprintf(stderr, "moatctl: --rcpt needs --from (use --from \"<>\" for the null sender)\n");
		return -1;
	}
	if (a->message != NULL && a->nrcpt == 0) {
		fprintf(stderr, "moatctl: --message needs --rcpt\n");
		return -1;
	}
	return 0;
}

/* explain_client - parse the client address into a sockaddr */
static int
explain_client(const char *ip, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		return 0;
	}
	return -1;
}

/* explain_zones - the DNSBL zones of one type, then the facts so far */
static struct dnsbl_sess explain_ds;
static struct dnsbl_summary explain_sum;

static void
explain_zones(const struct conf *c, const struct explain_args *a, int type,
	const struct sockaddr *client, const char *domain, struct rules_facts *f)
{
	if (c->dnsbl == NULL) {
		f->dnsbl_known = true;
		return;
	}
	if (!(c->dnsbl->types & (1u << type)))
		goto facts;
	if (a->no_network) {
		for (int i = 0; i < c->dnsbl->n; i++)
			if (c->dnsbl->z[i].type == type) {
				explain_ds.r[i].state = DZ_DONE;
				explain_ds.r[i].verdict = DNSBL_V_ERROR;
				explain_ds.r[i].temp = true;
				printf("check dnsbl zone=%s type=%s result=temperror (--no-network)\n",
				    c->dnsbl->z[i].name, dnsbl_type_name(type));
			}
	} else
		ctl_dnsbl(c->dnsbl, type, client, domain, (unsigned)c->dns_timeout_ms, &explain_ds);
facts:
	dnsbl_summarise(c->dnsbl, &explain_ds, &explain_sum);
	f->dnsbl_known = true;
	f->dnsbl_score = explain_sum.score;
	f->dnsbl_error = explain_sum.error;
	f->dnsbl_hits = explain_sum.hits[0] ? explain_sum.hits : NULL;
	f->dnsbl_reply = explain_sum.reply;
}

/* explain_result - the last lines and the exit code */
static int
explain_result(const struct explain_reply *r, const char *stage, const char *why)
{
	if (r->set) {
		printf("verdict: refused at %s\n", stage);
		printf("result: %s %d %s %s\n", r->temp ? "tempfail" : "reject", r->code, r->enh,
		    r->text);
		return 1;
	}
	printf("verdict: %s\n", why);
	printf("result: accept\n");
	return 0;
}

/* explain_walk - the stages, in moatd's order */
static int
explain_walk(const struct conf *c, const struct explain_args *a)
{
	struct sockaddr_storage ss;
	struct rules_facts f;
	struct explain_reply r, last_rcpt;
	struct smtp_addr from, to;
	struct smtp_mail_params mp;
	struct fcrdns fcr;
	char spf_domain[256] = "", from_dom[256] = "";
	char sender[SMTP_PATH_MAX + 8], rcpt[SMTP_PATH_MAX + 8];
	const struct smtp_reject *rj;
	struct explain_msg m;
	unsigned nsubmitted = 0;
	size_t helolen;

	memset(&r, 0, sizeof(r));
	memset(&last_rcpt, 0, sizeof(last_rcpt));
	if (explain_client(a->ip, &ss) != 0) {
		fprintf(stderr, "moatctl: --ip %s: not an IPv4 or IPv6 address\n", a->ip);
		return 2;
	}
	memset(&m, 0, sizeof(m));	/* without --message: an empty message */
	if (a->message != NULL && explain_read_message(a->message, c->max_line_length, &m) != 0)
		return 2;
	printf("policy %s\n", a->file);

	/* connect */
	memset(&f, 0, sizeof(f));
	f.client = (const struct sockaddr *)&ss;
	f.auth = a->auth != NULL;
	f.login = a->auth;
	f.loginlen = a->auth ? strlen(a->auth) : 0;
	{
		/* moatd runs the checks when a stage's rules need them (the
		 * DNSBL zones always); here they run up front, through moat's
		 * resolver, unless told not to touch the network */
		bool fc = c->dnsbl != NULL && (c->dnsbl->types & (1u << DNSBL_T_NAME));

		for (int st = 0; st < RS__COUNT; st++)
			fc = fc || rules_stage_needs(c->rules, (enum rules_stage)st, CHECK_FCRDNS);
		if (!a->no_network && (fc || c->dnsbl != NULL || c->spf || c->dkim ||
		    c->dmarc != CONF_DMARC_OFF)) {
			char *err = NULL;

			if (dns_init(&c->resolver, &err) != 0) {
				fprintf(stderr, "moatctl: %s: DNS checks give temperror\n", err);
				free(err);
			}
		}
		if (fc) {
			if (a->no_network) {
				memset(&fcr, 0, sizeof(fcr));
				fcr.status = CHECK_TEMPERROR;
			} else
				ctl_fcrdns(f.client, (unsigned)c->dns_timeout_ms, &fcr);
			f.fcrdns_known = true;
			f.fcrdns = fcr.status == CHECK_PASS;
			f.client_name = fcr.status == CHECK_PASS ? fcr.name : NULL;
			f.client_nlen = f.client_name ? strlen(fcr.name) : 0;
			printf("check fcrdns=%s%s%s%s\n", check_status_name(fcr.status),
			    f.client_name ? " name=" : "", f.client_name ? fcr.name : "",
			    a->no_network ? " (--no-network)" : "");
		}
		explain_zones(c, a, DNSBL_T_IP, f.client, NULL, &f);
		explain_zones(c, a, DNSBL_T_NAME, f.client, f.client_name, &f);
	}
	printf("stage connect client-ip=%s auth=%s tls=no\n", a->ip, f.auth ? "yes" : "no");
	if (explain_stage(c, RS_CONNECT, &f, &r) == EX_REFUSED)
		return explain_result(&r, "connect", NULL);
	if (a->helo == NULL)
		return explain_result(&r, NULL, "not refused at connect (no --helo: the walk stops here)");

	/* helo */
	helolen = strlen(a->helo);
	printf("stage helo helo=\"");
	explain_put_escaped(a->helo, helolen);
	printf("\"\n");
	if (helolen == 0) {
		explain_builtin(&r, "helo-syntax", 501, "5.5.4", "Syntax: EHLO hostname");
		return explain_result(&r, "helo", NULL);
	}
	if (helolen > SMTP_DOMAIN_MAX)
		helolen = SMTP_DOMAIN_MAX;	/* moatd keeps that much */
	f.helo = a->helo;
	f.helolen = helolen;
	f.helo_valid = smtp_helo_valid(a->helo, helolen);
	explain_zones(c, a, DNSBL_T_HELO, f.client, f.helo_valid && a->helo[0] != '[' ? a->helo : NULL,
	    &f);
	f.spf_known = true;
	if (c->spf && rules_stage_needs(c->rules, RS_HELO, CHECK_SPF)) {
		if (a->no_network)
			f.spf_helo = "temperror";
		else
			f.spf_helo = ctl_spf(f.client, a->helo, NULL, (unsigned)c->spf_timeout_ms, true,
			    spf_domain, sizeof(spf_domain));
	}
	if (explain_stage(c, RS_HELO, &f, &r) == EX_REFUSED)
		return explain_result(&r, "helo", NULL);
	if (a->from == NULL)
		return explain_result(&r, NULL, "not refused up to helo (no --from: the walk stops here)");

	/* mail */
	memset(&mp, 0, sizeof(mp));
	rj = smtp_mail_parse(a->from, strlen(a->from), &from, &mp);
	printf("stage mail sender=");
	if (rj == NULL) {
		explain_addr(&from, sender, sizeof(sender));
		explain_put_escaped(sender, strlen(sender));
		printf(" null-sender=%s declared-size=%llu\n", from.null ? "yes" : "no",
		    (unsigned long long)(mp.has_size ? mp.size : 0));
	} else {
		printf("\"");
		explain_put_escaped(a->from, strlen(a->from));
		printf("\"\n");
		explain_builtin(&r, "mail-syntax", rj->code, rj->enh, rj->text);
		return explain_result(&r, "mail", NULL);
	}
	if (mp.has_size && c->max_message_size != 0 && mp.size > c->max_message_size) {
		explain_builtin(&r, "max-message-size", 552, "5.3.4", "Message size exceeds fixed limit");
		return explain_result(&r, "mail", NULL);
	}
	if (mp.body == SMTP_BODY_BINARYMIME) {
		explain_builtin(&r, "body", 555, "5.5.4", "Unsupported option: BODY=BINARYMIME");
		return explain_result(&r, "mail", NULL);
	}
	f.have_sender = true;
	f.sender_local = from.local;
	f.sender_llen = from.local_len;
	f.sender_domain = from.domain;
	f.sender_dlen = from.domain_len;
	f.declared_size = mp.has_size ? mp.size : 0;
	{
		char d[256] = "";

		if (!from.null && !from.literal && from.domain_len > 0 && from.domain_len < sizeof(d)) {
			memcpy(d, from.domain, from.domain_len);
			d[from.domain_len] = 0;
		}
		explain_zones(c, a, DNSBL_T_SENDER, f.client, d[0] ? d : NULL, &f);
	}
	f.spf = "none";
	spf_domain[0] = 0;
	if (c->spf && a->no_network) {
		f.spf = "temperror";
		printf("check spf mailfrom=temperror (--no-network)\n");
	} else if (c->spf) {
		char snd[SMTP_PATH_MAX + 1] = "";

		if (!from.null && from.local_len + from.domain_len + 2 <= sizeof(snd))
			snprintf(snd, sizeof(snd), "%.*s@%.*s", (int)from.local_len, from.local,
			    (int)from.domain_len, from.domain);
		f.spf = ctl_spf(f.client, a->helo, snd, (unsigned)c->spf_timeout_ms, false, spf_domain,
		    sizeof(spf_domain));
	}
	if (explain_stage(c, RS_MAIL, &f, &r) == EX_REFUSED)
		return explain_result(&r, "mail", NULL);
	if (a->nrcpt == 0)
		return explain_result(&r, NULL, "not refused up to mail (no --rcpt: the walk stops here)");

	/* rcpt, once per recipient; a refusal drops only that one */
	for (size_t i = 0; i < a->nrcpt; i++) {
		struct smtp_rcpt_params rp;
		struct explain_reply rr;

		memset(&rr, 0, sizeof(rr));
		memset(&rp, 0, sizeof(rp));
		rj = smtp_rcpt_parse(a->rcpt[i], strlen(a->rcpt[i]), &to, &rp, mp.smtputf8);
		printf("stage rcpt rcpt=");
		if (rj != NULL) {
			printf("\"");
			explain_put_escaped(a->rcpt[i], strlen(a->rcpt[i]));
			printf("\" rcpt-count=%u\n", nsubmitted);
			explain_builtin(&rr, "rcpt-syntax", rj->code, rj->enh, rj->text);
			last_rcpt = rr;
			continue;
		}
		explain_addr(&to, rcpt, sizeof(rcpt));
		explain_put_escaped(rcpt, strlen(rcpt));
		printf(" rcpt-count=%u\n", nsubmitted);
		if (nsubmitted >= c->max_recipients) {
			explain_builtin(&rr, "max-recipients", 452, "4.5.3", "Error: too many recipients");
			last_rcpt = rr;
			continue;
		}
		f.rcpt_local = to.local;
		f.rcpt_llen = to.local_len;
		f.rcpt_domain = to.domain;
		f.rcpt_dlen = to.domain_len;
		f.rcpt_count = nsubmitted;
		/* the greylist lives in moatd's store or Redis: not asked here */
		f.greylist_known = true;
		f.greylist_tempfail = false;
		if (rules_stage_needs(c->rules, RS_RCPT, CHECK_GREYLIST))
			printf("check greylist=not-asked (offline: counted as a pass)\n");
		if (explain_stage(c, RS_RCPT, &f, &rr) == EX_REFUSED) {
			last_rcpt = rr;
			continue;
		}
		nsubmitted++;
	}
	if (nsubmitted == 0) {
		printf("stage data skipped: no recipient accepted (moatd answers DATA with "
		    "\"554 5.5.1 Error: no valid recipients\")\n");
		return explain_result(&last_rcpt, "rcpt", NULL);
	}

	/* data: moatd knows no recipient here, only how many */
	f.rcpt_local = f.rcpt_domain = NULL;
	f.rcpt_llen = f.rcpt_dlen = 0;
	f.rcpt_count = nsubmitted;
	{
		printf("stage data size=%llu rcpt-count=%u message=%s\n", (unsigned long long)m.size,
		    nsubmitted, a->message ? a->message : "(empty)");
		if (m.nul) {
			explain_builtin(&r, "nul", 550, "5.6.0", "Message contains NUL");
			return explain_result(&r, "data", NULL);
		}
		if (m.bare_cr) {
			explain_builtin(&r, "bare-cr", 550, "5.6.0", "Message contains bare CR");
			return explain_result(&r, "data", NULL);
		}
		if (c->max_message_size != 0 && m.size > c->max_message_size) {
			explain_builtin(&r, "max-message-size", 552, "5.3.4",
			    "Message size exceeds fixed limit");
			return explain_result(&r, "data", NULL);
		}
		if (m.long_line) {
			explain_builtin(&r, "max-line-length", 550, "5.5.2", "Message line too long");
			return explain_result(&r, "data", NULL);
		}
		f.size = m.size;
	}
	f.auth_known = true;
	f.dkim = f.dmarc = f.dmarc_policy = "none";
	if (a->message != NULL && !a->no_network && (c->dkim || c->dmarc != CONF_DMARC_OFF))
		ctl_auth(c->dkim != 0, c->dmarc, c->psl_path, (unsigned)c->dkim_min_key_bits,
		    (unsigned)c->dkim_max_signatures, c->dkim_allow_sha1 != 0,
		    (unsigned)c->dns_timeout_ms, a->message, f.spf != NULL && strcmp(f.spf, "pass") == 0,
		    spf_domain, &f.dkim, &f.dmarc, &f.dmarc_policy, from_dom, sizeof(from_dom));
	f.dmarc_from_domain = from_dom[0] ? from_dom : NULL;
	if (explain_stage(c, RS_DATA, &f, &r) == EX_REFUSED)
		return explain_result(&r, "data", NULL);
	return explain_result(&r, NULL,
	    "accepted (moatd relays it and the client gets the upstream's reply)");
}

/* cmd_explain - load the policy, then walk a session through it */
static int
cmd_explain(int argc, char **argv)
{
	struct explain_args a;
	char *errs = NULL;
	struct conf *c;
	int rc;

	if (explain_parse_args(argc, argv, &a) != 0)
		return usage();
	c = conf_load(a.file, &errs);
	if (c == NULL) {
		fputs(errs ? errs : "unknown error\n", stderr);
		free(errs);
		return 2;
	}
	free(errs);
	rc = explain_walk(c, &a);
	conf_unref(c);
	return rc;
}

int
main(int argc, char **argv)
{
	log_init("moatctl", false, LOG_L_WARN);
	if (argc == 3 && strcmp(argv[1], "check") == 0)
		return cmd_check(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "explain") == 0)
		return cmd_explain(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "query") == 0)
		return moatctl_query(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "spf") == 0)
		return moatctl_spf(argc, argv);
	if (argc >= 2 && (strcmp(argv[1], "dkim") == 0 || strcmp(argv[1], "dmarc") == 0))
		return moatctl_auth(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "greylist") == 0)
		return moatctl_greylist(argc, argv);
	return usage();
}
