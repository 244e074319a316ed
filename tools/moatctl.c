/*
 * moatctl - the operator's tool
 *
 * SYNOPSIS
 *	moatctl check FILE
 *	moatctl explain FILE --ip A [--helo H [--from S [--rcpt R ... [--message F]]]]
 *	                     [--auth LOGIN] [--no-network] [--live]
 *
 * DESCRIPTION
 *	check: reads the policy file as moatd would and prints every error
 *	(FILE:LINE:COL: error: ...) or "configuration OK". Exit 0 when the
 *	file is good, 1 when it is not, 2 on bad usage.
 *
 *	explain: walks one SMTP session through the stages as moatd does
 *	(connect, helo, mail, rcpt per recipient, data), through the same
 *	engine (engine/engine.h): the same checks, waits, deadlines and
 *	verdicts, with explain's offline inputs. The engine runs with no
 *	greylist store and no Redis (a greylist rule passes unless
 *	--greylist gives its state) and, with --no-network, no resolver
 *	(every DNS check is a temporary error). With --live the greylist is
 *	asked read-only (engine_opts.greylist_peek): Redis or Sentinel as
 *	the policy configures it, or the embedded store's file
 *	(greylist-store) as the daemon last saved it; nothing is written,
 *	and the engine's "check greylist=" line becomes "live greylist=WORD
 *	..." (WORD new, early, passed, allowlisted or error).
 *	Every rule the engine looks at is printed (its trace), and so is
 *	each "check" line it logs (log_set_sink); then each stage's outcome.
 *	The walk stops where moatd would: a refused connect, HELO or MAIL
 *	ends it, a refused RCPT only drops that recipient. Before the
 *	engine, explain repeats moatd's front-end checks that depend on the
 *	configuration alone (address syntax, SIZE= and the message against
 *	max-message-size, max-recipients, NUL, bare CR and line length in
 *	the message). Checks that depend on the upstream (its SIZE limit,
 *	SMTPUTF8, its own replies) are not repeated: the upstream is assumed
 *	to accept everything.
 *	Exit 0 when nothing is refused (the message would be relayed), 1
 *	when the session is refused or tempfailed, 2 on usage or
 *	configuration errors.
 *
 * OUTPUT (stable, one fact per line, meant for grep)
 *	policy FILE
 *	stage NAME FACT=VALUE ...
 *	check ...                                (the engine's check lines, as they come in)
 *	  rule FILE:LINE MODE matched: TEXT      (MODE enforce|monitor|off)
 *	  rule FILE:LINE MODE no-match: TEXT
 *	  check NAME                             (a built-in check that refused)
 *	  verdict continue|accept rule FILE:LINE|reject reply "..."|tempfail reply "..."
 *	verdict: ...                              (a sentence for humans)
 *	result: accept | result: reject CODE ENH TEXT | result: tempfail CODE ENH TEXT
 *
 * OWNERSHIP AND LIMITS
 *	The walk's state lives on the stack of explain_walk, the session and
 *	the message in the engine (freed before engine_shutdown()); the
 *	message file is read in a stream (any size). A stage that waits runs
 *	the loop until the engine resumes it: its check deadline bounds that.
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

#include <event2/event.h>

#include "conf.h"
#include "dnsbl.h"
#include "engine.h"
#include "filter.h"
#include "log.h"
#include "moatctl.h"
#include "rules.h"
#include "smtp_parse.h"

#define EXPLAIN_RCPT_MAX 1000

/* usage - how to call */
static int
usage(void)
{
	moatctl_help_all(stderr);
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
	bool live;			/* --live: the greylist asked read-only */
	/* results assumed instead of asked (--spf pass, --greylist new, ...) */
	struct eng_assume as;
	bool assumed;
	const char *dnsbl[DNSBL_ZONES_MAX];	/* --dnsbl NAME=ANSWER|error|none */
	int ndnsbl;
	struct dnsbl_summary dsum;
};

/* A refusal: what moatd would answer. */
struct explain_reply {
	bool set;
	bool temp;
	int code;
	char enh[16];
	char text[600];
};

/* The walk: the engine's session and what its callbacks tell us. */
struct explain {
	struct explain_args *a;
	struct event_base *base;
	struct eng_sess *e;
	bool resumed;			/* the engine's resume callback fired */
	/* the stage's trace, for the lines after its verdict */
	int monitored;
	const char *last_file;		/* the last enforced rule that matched */
	int last_line;
	const struct conf *c;		/* the policy explained */
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

/* explain_trace - one "rule" line per rule the engine looked at */
static void
explain_trace(void *arg, const struct rules_trace *t)
{
	struct explain *x = arg;

	printf("  rule %s:%d %s %s: %s\n", t->file ? t->file : "?", t->line,
	    explain_mode_name(t->mode), t->matched ? "matched" : "no-match",
	    t->text ? t->text : "");
	if (t->why != NULL && t->why[0] != 0)
		printf("    why: %s\n", t->why);
	if (t->matched && t->mode == 1)
		x->monitored++;
	else if (t->matched && t->mode == 0) {
		x->last_file = t->file;
		x->last_line = t->line;
	}
}

/* explain_assumed_check - is this the engine's line of a check whose
 * result is assumed (the engine ran it; the rules see the assumption)? */
static bool
explain_assumed_check(const struct explain_args *a, const char *msg)
{
	const struct eng_assume *s = &a->as;

	return a->assumed && strncmp(msg, "check ", 6) == 0 &&
	    ((s->fcrdns >= 0 && strncmp(msg + 6, "fcrdns", 6) == 0) ||
	    (s->dnsbl && strncmp(msg + 6, "dnsbl", 5) == 0) ||
	    ((s->spf || s->spf_helo) && strncmp(msg + 6, "spf", 3) == 0) ||
	    ((s->dkim || s->dmarc || s->dmarc_policy) && (strncmp(msg + 6, "dkim", 4) == 0 ||
	    strncmp(msg + 6, "dmarc", 5) == 0)));
}

/* explain_live_greylist - the engine's "check greylist=STATUS
 * reason=REASON retry-in=N ..." line (greylist_outcome) as explain
 * --live's "live greylist=WORD retry-in=N ..." */
static void
explain_live_greylist(const char *m)
{
	const char *word = "error", *rest = strstr(m, " retry-in=");

	if (strncmp(m, "greylisted reason=new ", 22) == 0)
		word = "new";
	else if (strncmp(m, "greylisted reason=early ", 24) == 0)
		word = "early";
	else if (strncmp(m, "pass ", 5) == 0)
		word = "passed";
	else if (strncmp(m, "allowlisted ", 12) == 0)
		word = "allowlisted";
	printf("live greylist=%s%s (read-only: nothing recorded)\n", word, rest ? rest : "");
}

/* explain_log - the engine's log lines: its "check" lines to the output
 * (a temporary error marked when --no-network caused it), warnings and
 * errors to stderr, the rest dropped */
static void
explain_log(void *arg, enum log_level lvl, uint64_t sid, const char *msg)
{
	const struct explain *x = arg;

	(void)sid;
	if (explain_assumed_check(x->a, msg))
		return;		/* its "assume" line stands for it */
	if (x->a->live && strncmp(msg, "check greylist=", 15) == 0) {
		explain_live_greylist(msg + 15);
		return;
	}
	if (strncmp(msg, "check ", 6) == 0)
		printf("%s%s\n", msg, x->a->no_network && strstr(msg, "temperror") != NULL ?
		    " (--no-network)" : "");
	else if (lvl >= LOG_L_WARN)
		fprintf(stderr, "moatctl: %s: %s\n", log_level_name(lvl), msg);
}

/* explain_resume - the engine can give the waiting stage's verdict */
static void
explain_resume(void *arg)
{
	struct explain *x = arg;

	x->resumed = true;
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

/* explain_builtin - a built-in check of moatd's front-end refused the
 * command (the engine is not asked) */
static enum explain_outcome
explain_builtin(struct explain_reply *r, const char *check, int code, const char *enh,
	const char *text)
{
	printf("  check %s\n", check);
	explain_refuse(r, code / 100 == 4, code, enh, text);
	return EX_REFUSED;
}

/* explain_stage - the engine's verdict of one stage, waiting on the loop
 * as moatd does when a check the stage needs is out (the engine's check
 * deadline bounds the wait) */
static enum explain_outcome
explain_stage(struct explain *x, enum rules_stage st, struct explain_reply *r)
{
	struct eng_verdict v;
	enum eng_rc rc;

	x->monitored = 0;
	x->last_file = NULL;
	x->last_line = 0;
	/* rate limits live in Redis or in moatd: the engine, offline, counts
	 * nothing and takes none as exceeded */
	if (x->c != NULL && rules_stage_ratelimits(x->c->rules, st) != 0)
		printf("check ratelimit=not-asked (offline: counted as not exceeded)\n");
	while ((rc = engine_stage(x->e, st, &v)) == ENG_WAIT) {
		x->resumed = false;
		while (!x->resumed)
			if (event_base_loop(x->base, EVLOOP_ONCE) != 0)
				panic("explain: the loop ran dry while stage %s waited",
				    rules_stage_name(st));	/* the deadline is armed */
	}
	if (x->monitored > 0)
		printf("  monitor %d rule%s matched (logged only)\n", x->monitored,
		    x->monitored == 1 ? "" : "s");
	if (rc == ENG_REFUSE) {
		explain_refuse(r, v.verdict == RV_TEMPFAIL, v.code, v.enh, v.text);
		return EX_REFUSED;
	}
	if (v.verdict == RV_ACCEPT)
		printf("  verdict accept rule %s:%d\n", x->last_file ? x->last_file : "?",
		    x->last_line);
	else
		printf("  verdict continue\n");
	return EX_PASS;
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

/* explain_read_message - size with CRLF line ends, as moatd decodes it;
 * the decoded bytes (every LF a CRLF, as a client sends them) go to em */
static int
explain_read_message(const char *path, uint64_t max_line, struct explain_msg *m,
	struct eng_msg *em)
{
	FILE *fp = fopen(path, "rb");
	unsigned char buf[16384], out[2 * sizeof(buf) + 4];
	size_t n, o;
	uint64_t linelen = 0;
	bool pending_cr = false, at_bol = true;

	memset(m, 0, sizeof(*m));
	if (fp == NULL) {
		fprintf(stderr, "moatctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
		o = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = buf[i];
			if (pending_cr) {
				pending_cr = false;
				if (ch == '\n') {
					out[o++] = '\r';
					out[o++] = '\n';
					m->size += 2;
					linelen = 0;
					at_bol = true;
					continue;
				}
				m->bare_cr = true;	/* a CR alone is content */
				out[o++] = '\r';
				m->size++;
				linelen++;
				at_bol = false;
			}
			if (ch == '\r') {
				pending_cr = true;
				continue;
			}
			if (ch == '\n') {	/* a bare LF: the client sends CRLF */
				out[o++] = '\r';
				out[o++] = '\n';
				m->size += 2;
				linelen = 0;
				at_bol = true;
				continue;
			}
			if (ch == 0)
				m->nul = true;
			out[o++] = ch;
			m->size++;
			linelen++;
			at_bol = false;
			if (max_line != 0 && linelen > max_line)
				m->long_line = true;
		}
		engine_msg_feed(em, out, o);
	}
	if (ferror(fp)) {
		fprintf(stderr, "moatctl: %s: read error\n", path);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	o = 0;
	if (pending_cr) {
		m->bare_cr = true;
		out[o++] = '\r';
		m->size++;
		at_bol = false;
	}
	if (!at_bol) {
		out[o++] = '\r';	/* the client ends the last line before the dot */
		out[o++] = '\n';
		m->size += 2;
	}
	if (o > 0)
		engine_msg_feed(em, out, o);
	return 0;
}

/* explain_assume_opt - "--spf pass" and the like (name without the
 * dashes); 1 when it is such an option, 0 when not, -1 when its value is
 * bad (said on stderr) */
static int
explain_assume_opt(struct explain_args *a, const char *name, const char *v)
{
	static const char *const gl[] = { "new", "early", "passed", "allowlisted" };
	static const char *const words[] = { "spf", "spf-helo", "dkim", "dmarc", "dmarc-policy" };
	const char **dst[] = { &a->as.spf, &a->as.spf_helo, &a->as.dkim, &a->as.dmarc,
	    &a->as.dmarc_policy };
	char valid[256];

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (strcmp(name, words[i]) != 0)
			continue;
		if (!rules_fact_word_ok(name, v, valid, sizeof(valid))) {
			fprintf(stderr, "moatctl: --%s %s: %s is never that (valid: %s)\n", name, v,
			    name, valid);
			return -1;
		}
		*dst[i] = v;
		a->assumed = true;
		return 1;
	}
	if (strcmp(name, "greylist") == 0) {
		for (int i = 0; i < 4; i++)
			if (strcmp(v, gl[i]) == 0) {
				a->as.greylist = i;
				a->assumed = true;
				return 1;
			}
		fprintf(stderr, "moatctl: --greylist %s: expected new, early, passed or "
		    "allowlisted\n", v);
		return -1;
	}
	if (strcmp(name, "greylist-retry") == 0) {
		char *end;
		unsigned long n = strtoul(v, &end, 10);
		if (*v == 0 || *end != 0 || n > 86400) {
			fprintf(stderr, "moatctl: --greylist-retry %s: expected seconds, 0 to 86400\n", v);
			return -1;
		}
		a->as.greylist_retry = (unsigned)n;
		return 1;
	}
	if (strcmp(name, "fcrdns") == 0) {
		if (strcmp(v, "pass") != 0 && strcmp(v, "fail") != 0) {
			fprintf(stderr, "moatctl: --fcrdns %s: expected pass or fail\n", v);
			return -1;
		}
		a->as.fcrdns = v[0] == 'p';
		a->assumed = true;
		return 1;
	}
	if (strcmp(name, "client-name") == 0) {
		a->as.client_name = v;
		a->as.fcrdns = 1;
		a->assumed = true;
		return 1;
	}
	if (strcmp(name, "from-domain") == 0) {
		a->as.from_domain = v;
		a->assumed = true;
		return 1;
	}
	if (strcmp(name, "dnsbl") == 0) {
		if (a->ndnsbl >= DNSBL_ZONES_MAX) {
			fprintf(stderr, "moatctl: more than %d --dnsbl\n", DNSBL_ZONES_MAX);
			return -1;
		}
		a->dnsbl[a->ndnsbl++] = v;
		a->as.dnsbl = true;
		a->assumed = true;
		return 1;
	}
	return 0;
}

/* explain_assume_dnsbl - the DNSBL facts of --dnsbl NAME=ANSWER (a zone
 * listing with that A record, as its code lines weigh it), NAME=error (a
 * failed lookup) or "none" (no zone lists): the engine's own summary;
 * -1 on a name no zone has or a bad answer */
static int
explain_assume_dnsbl(const struct conf *c, struct explain_args *a)
{
	struct dnsbl_sess s;
	struct dnsbl_set empty;

	if (!a->as.dnsbl)
		return 0;
	memset(&s, 0, sizeof(s));
	memset(&empty, 0, sizeof(empty));
	for (int i = 0; i < a->ndnsbl; i++) {
		const char *eq = strchr(a->dnsbl[i], '=');
		size_t nl = eq ? (size_t)(eq - a->dnsbl[i]) : strlen(a->dnsbl[i]);
		int z = -1;
		struct in_addr ia;

		if (strcmp(a->dnsbl[i], "none") == 0)
			continue;
		for (int k = 0; c->dnsbl != NULL && k < c->dnsbl->n; k++)
			if (strlen(c->dnsbl->z[k].name) == nl &&
			    strncmp(c->dnsbl->z[k].name, a->dnsbl[i], nl) == 0)
				z = k;
		if (z < 0 || eq == NULL) {
			fprintf(stderr, "moatctl: --dnsbl %s: expected NAME=ANSWER, NAME=error or "
			    "none, NAME a dnsbl or dnswl of the policy\n", a->dnsbl[i]);
			return -1;
		}
		s.r[z].state = DZ_DONE;
		if (strcmp(eq + 1, "error") == 0) {
			s.r[z].verdict = DNSBL_V_ERROR;
			s.r[z].temp = true;
		} else if (inet_pton(AF_INET, eq + 1, &ia) == 1) {
			struct dnsbl_eval ev;
			uint32_t ans = ntohl(ia.s_addr);

			dnsbl_eval_answer(&c->dnsbl->z[z], &ans, 1, &ev);
			s.r[z].verdict = (unsigned char)ev.v;
			s.r[z].weight = ev.weight;
			s.r[z].reply = ev.reply;
			s.r[z].code = ev.code;
		} else {
			fprintf(stderr, "moatctl: --dnsbl %s: the answer is an IPv4 address or "
			    "error\n", a->dnsbl[i]);
			return -1;
		}
	}
	dnsbl_summarise(c->dnsbl != NULL ? c->dnsbl : &empty, &s, &a->dsum);
	a->as.dnsbl_score = a->dsum.score;
	a->as.dnsbl_error = a->dsum.error;
	a->as.dnsbl_hits = a->dsum.hits[0] ? a->dsum.hits : NULL;
	a->as.dnsbl_reply = a->dsum.reply;
	return 0;
}

/* explain_print_assumed - one "assume" line per result taken as given */
static void
explain_print_assumed(const struct explain_args *a)
{
	static const char *const gl[] = { "new", "early", "passed", "allowlisted" };
	const struct eng_assume *s = &a->as;

	if (!a->assumed)
		return;
	if (s->fcrdns >= 0)
		printf("assume fcrdns=%s client-name=%s\n", s->fcrdns ? "pass" : "fail",
		    s->client_name ? s->client_name : "-");
	if (s->dnsbl)
		printf("assume dnsbl-score=%lld dnsbl-hit=%s dnsbl-error=%s\n",
		    (long long)s->dnsbl_score, s->dnsbl_hits ? s->dnsbl_hits : "-",
		    s->dnsbl_error ? "yes" : "no");
	if (s->spf_helo)
		printf("assume spf-helo=%s\n", s->spf_helo);
	if (s->spf)
		printf("assume spf=%s\n", s->spf);
	if (s->greylist >= 0)
		printf("assume greylist=%s\n", gl[s->greylist]);
	if (s->dkim)
		printf("assume dkim=%s\n", s->dkim);
	if (s->dmarc)
		printf("assume dmarc=%s\n", s->dmarc);
	if (s->dmarc_policy)
		printf("assume dmarc-policy=%s\n", s->dmarc_policy);
}

/* explain_parse_args - the options after FILE; -1 on a usage error */
static int
explain_parse_args(int argc, char **argv, struct explain_args *a)
{
	memset(a, 0, sizeof(*a));
	a->as.greylist = ENG_GL_ASK;
	a->as.fcrdns = -1;
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
		if (strcmp(o, "--live") == 0) {
			a->live = true;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "moatctl: %s needs a value\n", o);
			return -1;
		}
		if (strncmp(o, "--", 2) == 0) {
			int r = explain_assume_opt(a, o + 2, argv[i + 1]);
			if (r < 0)
				return -1;
			if (r > 0) {
				i++;
				continue;
			}
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
	if (a->live && a->as.greylist != ENG_GL_ASK) {
		fprintf(stderr, "moatctl: --live asks the greylist, --greylist assumes it: "
		    "give one of them\n");
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

/* explain_session - the stages, in moatd's order, through the engine; *msg
 * (the message) goes to the engine at the data stage */
static int
explain_session(struct explain *x, struct conf *c, struct engine_loop *el,
	const struct sockaddr *client, const struct explain_msg *m, struct eng_msg **msg)
{
	const struct explain_args *a = x->a;
	struct explain_reply r, last_rcpt;
	struct smtp_addr from, to;
	struct smtp_mail_params mp;
	char sender[SMTP_PATH_MAX + 8], rcpt[SMTP_PATH_MAX + 8];
	const struct smtp_reject *rj;
	unsigned nsubmitted = 0;
	size_t helolen;

	memset(&r, 0, sizeof(r));
	memset(&last_rcpt, 0, sizeof(last_rcpt));
	printf("policy %s\n", a->file);
	explain_print_assumed(a);

	/* connect: the engine starts the address's checks with the session */
	printf("stage connect client-ip=%s auth=%s tls=no\n", a->ip, a->auth ? "yes" : "no");
	x->c = c;
	x->e = engine_sess_new(el, c, 0, client, false, explain_resume, x);
	engine_set_trace(x->e, explain_trace, x);
	engine_set_login(x->e, a->auth);
	if (a->assumed)
		engine_set_assume(x->e, &x->a->as);
	if (explain_stage(x, RS_CONNECT, &r) == EX_REFUSED)
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
	engine_helo(x->e, a->helo, helolen);	/* cut at SMTP_DOMAIN_MAX, as moatd keeps it */
	if (explain_stage(x, RS_HELO, &r) == EX_REFUSED)
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
	engine_mail(x->e, &from, &mp);
	if (explain_stage(x, RS_MAIL, &r) == EX_REFUSED)
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
		engine_rcpt(x->e, &to, nsubmitted);
		/* the greylist lives in moatd's store or Redis: offline, the
		 * engine takes the assumed state, or else a pass, and says so */
		if (rules_stage_needs(c->rules, RS_RCPT, CHECK_GREYLIST) && a->as.greylist < 0 &&
		    !a->live)
			printf("check greylist=not-asked (assumed passed: no --greylist "
			    "new|early|passed|allowlisted given)\n");
		if (explain_stage(x, RS_RCPT, &rr) == EX_REFUSED) {
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

	/* data: moatd's decoder refuses first, then the engine judges */
	printf("stage data size=%llu rcpt-count=%u message=%s\n", (unsigned long long)m->size,
	    nsubmitted, a->message ? a->message : "(empty)");
	if (m->nul) {
		explain_builtin(&r, "nul", 550, "5.6.0", "Message contains NUL");
		return explain_result(&r, "data", NULL);
	}
	if (m->bare_cr) {
		explain_builtin(&r, "bare-cr", 550, "5.6.0", "Message contains bare CR");
		return explain_result(&r, "data", NULL);
	}
	if (c->max_message_size != 0 && m->size > c->max_message_size) {
		explain_builtin(&r, "max-message-size", 552, "5.3.4",
		    "Message size exceeds fixed limit");
		return explain_result(&r, "data", NULL);
	}
	if (m->long_line) {
		explain_builtin(&r, "max-line-length", 550, "5.5.2", "Message line too long");
		return explain_result(&r, "data", NULL);
	}
	/* the line ends are the client's CRLF: no bare LF */
	engine_data(x->e, *msg, m->size, nsubmitted, false);
	*msg = NULL;		/* the engine's now */
	if (explain_stage(x, RS_DATA, &r) == EX_REFUSED)
		return explain_result(&r, "data", NULL);
	return explain_result(&r, NULL,
	    "accepted (moatd relays it and the client gets the upstream's reply)");
}

/* explain_walk - the engine for one session, as moatd sets it up (no
 * greylist store, and no network with --no-network); the walk; then
 * everything goes */
static int
explain_walk(struct conf *c, struct explain_args *a)
{
	struct engine_opts opts = { .who = "moatctl", .no_network = a->no_network,
	    .greylist_offline = true, .greylist_peek = a->live, .quiet_start = true };
	struct sockaddr_storage ss;
	struct explain x;
	struct explain_msg m;
	struct engine_loop *el;
	struct eng_msg *msg = NULL;
	char err[512] = "";
	int rc = 2;

	if (explain_client(a->ip, &ss) != 0) {
		fprintf(stderr, "moatctl: --ip %s: not an IPv4 or IPv6 address\n", a->ip);
		return 2;
	}
	/* the engine's "check" lines are explain's output */
	memset(&x, 0, sizeof(x));
	x.a = a;
	log_set_level(LOG_L_DEBUG);
	log_set_sink(explain_log, &x);
	if (engine_init(c, &opts, err, sizeof(err)) != 0) {
		fprintf(stderr, "moatctl: %s\n", err);
		goto out;
	}
	x.base = event_base_new();
	if (x.base == NULL) {
		fprintf(stderr, "moatctl: cannot make an event loop\n");
		goto out;
	}
	el = engine_loop_new(x.base, c);
	if (!a->no_network && engine_loop_dns(el) == NULL)
		fprintf(stderr, "moatctl: the resolver did not start: DNS checks give temperror\n");
	memset(&m, 0, sizeof(m));	/* without --message: an empty message */
	msg = engine_msg_new(c, NULL, NULL);
	if (a->message != NULL && explain_read_message(a->message, c->max_line_length, &m, msg) != 0)
		goto out;
	rc = explain_session(&x, c, el, (const struct sockaddr *)&ss, &m, &msg);
out:
	engine_sess_free(x.e);
	engine_msg_free(msg);
	engine_shutdown();
	if (x.base != NULL)
		event_base_free(x.base);
	log_set_sink(NULL, NULL);
	return rc;
}

/* moatctl_explain_conf - explain with the policy loaded (argv as for
 * "moatctl explain FILE ..."; FILE is only named): moatctl test's way in */
int
moatctl_explain_conf(struct conf *c, int argc, char **argv)
{
	struct explain_args a;

	if (explain_parse_args(argc, argv, &a) != 0)
		return moatctl_usage("explain");
	if (explain_assume_dnsbl(c, &a) != 0)
		return 2;
	return explain_walk(c, &a);
}

/* cmd_explain - load the policy, then walk a session through it */
static int
cmd_explain(int argc, char **argv)
{
	char *errs = NULL;
	struct conf *c;
	int rc;

	if (argc < 3)
		return moatctl_usage("explain");
	c = conf_load(argv[2], &errs);
	if (c == NULL) {
		fputs(errs ? errs : "unknown error\n", stderr);
		free(errs);
		return 2;
	}
	free(errs);
	rc = moatctl_explain_conf(c, argc, argv);
	conf_unref(c);
	return rc;
}

/* cmd_status - the health of a running moatd or moat-milter, through its
 * control socket: the socket given, or the control-socket of the policy
 * file (default /etc/moat/moat.conf); exit 0 ok, 1 degraded or
 * unreachable, 2 usage */
static int
cmd_status(int argc, char **argv)
{
	const char *file = "/etc/moat/moat.conf", *sock = NULL;
	int rc;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-f") == 0 && i + 1 < argc)
			file = argv[++i];
		else if ((strcmp(argv[i], "--socket") == 0 || strcmp(argv[i], "-s") == 0) &&
		    i + 1 < argc)
			sock = argv[++i];
		else
			return moatctl_usage("status");
	}
	if (sock == NULL) {
		char *errs = NULL;
		struct conf *c = conf_load(file, &errs);

		if (c == NULL) {
			fputs(errs ? errs : "unknown error\n", stderr);
			free(errs);
			return 2;
		}
		free(errs);
		if (c->control_socket == NULL) {
			fprintf(stderr, "moatctl: %s has no control-socket: give --socket PATH\n", file);
			conf_unref(c);
			return 2;
		}
		rc = moatctl_socket(c->control_socket, "status");
		conf_unref(c);
		return rc;
	}
	return moatctl_socket(sock, "status");
}

int
main(int argc, char **argv)
{
	log_init("moatctl", false, LOG_L_WARN);
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0)) {
		moatctl_help_all(stdout);
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "help") == 0 && moatctl_help_text(argv[2]) != NULL) {
		fputs(moatctl_help_text(argv[2]), stdout);
		return 0;
	}
	for (int i = 2; i < argc && moatctl_help_text(argv[1]) != NULL; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(moatctl_help_text(argv[1]), stdout);
			return 0;
		}
	if (argc == 3 && strcmp(argv[1], "check") == 0)
		return cmd_check(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "explain") == 0)
		return cmd_explain(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "test") == 0)
		return moatctl_test(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "query") == 0)
		return moatctl_query(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "spf") == 0)
		return moatctl_spf(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "dkim-keygen") == 0)
		return moatctl_dkim_keygen(argc, argv);
	if (argc >= 3 && strcmp(argv[1], "dkim") == 0 && strcmp(argv[2], "--check-key") == 0)
		return moatctl_dkim_check_key(argc, argv);
	if (argc >= 2 && (strcmp(argv[1], "dkim") == 0 || strcmp(argv[1], "dmarc") == 0))
		return moatctl_auth(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "greylist") == 0)
		return moatctl_greylist(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return cmd_status(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "ratelimit") == 0)
		return moatctl_ratelimit(argc, argv);
	return usage();
}
