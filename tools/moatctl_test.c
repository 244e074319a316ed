/*
 * moatctl_test - policy tests: scenarios walked through moatctl explain's
 * engine path, each reply compared with what the scenario expects
 *
 * SYNOPSIS
 *	moatctl test FILE
 *
 * FILE (one statement a line; '#' starts a comment line; blank lines
 * are ignored)
 *	policy PATH		the policy file, once, before the first test
 *				(relative to FILE's directory)
 *	test NAME		starts a scenario; then its lines:
 *	  ip ADDRESS		the client (required)
 *	  helo NAME		HELO/EHLO
 *	  from <ADDR>		MAIL FROM's argument ("<>" the null sender)
 *	  rcpt <ADDR>		RCPT TO's argument; repeat for more
 *	  auth LOGIN		the session logged in as LOGIN
 *	  message PATH		the message (relative to FILE's directory)
 *	  assume NAME=VALUE ...	results taken as given, as explain's
 *				--NAME VALUE: spf, spf-helo, dkim, dmarc,
 *				dmarc-policy, from-domain, greylist, fcrdns,
 *				client-name, dnsbl (dnsbl=ZONE=ANSWER)
 *	  expect STAGE OUTCOME	connect, helo, mail, rcpt (once per
 *				recipient, in order), data or result; OUTCOME
 *				is continue, accept, or reject|tempfail CODE
 *				ENH TEXT (result: accept or reject|tempfail
 *				CODE ENH TEXT)
 *
 * DESCRIPTION
 *	Each scenario runs as "moatctl explain POLICY --no-network ..." with
 *	its assumptions (moatctl_explain_conf: the same engine, the same
 *	offline checks): a check not assumed gives what explain gives
 *	offline (DNS: temperror; greylist: passed, said so). The outcomes
 *	of the stages a scenario names are compared with what the walk
 *	printed ("  verdict ..." lines, "result: ..."): a stage named is
 *	compared in full (every recipient's outcome). Prints "PASS NAME" or
 *	"FAIL NAME" with "- expected" and "+ got" lines, then "N passed,
 *	N failed". Exit 0 when all passed, 1 when one failed, 2 when the
 *	file or the policy cannot be read.
 *
 * LIMITS
 *	Lines up to 4096 bytes, 200 recipients and 100 expectations a
 *	scenario; the walk's output (captured through a temporary file) is
 *	read up to 1 MiB.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "moatctl.h"
#include "xalloc.h"

#define T_LINE 4096
#define T_ARGS 600
#define T_EXPECT 100
#define T_OUT_MAX (1024 * 1024)

struct scenario {
	char *name;
	int line;
	char *argv[T_ARGS];
	int argc;
	char *expect[T_EXPECT];		/* "rcpt reject 554 5.7.1 text" */
	int nexpect;
	bool has_ip;
};

/* t_arg - add one argument (copied) */
static int
t_arg(struct scenario *s, const char *v)
{
	if (s->argc >= T_ARGS - 1)
		return -1;
	s->argv[s->argc++] = xstrdup(v);
	return 0;
}

/* t_reset - free a scenario and make it empty */
static void
t_reset(struct scenario *s)
{
	for (int i = 0; i < s->argc; i++)
		free(s->argv[i]);
	for (int i = 0; i < s->nexpect; i++)
		free(s->expect[i]);
	free(s->name);
	memset(s, 0, sizeof(*s));
}

/* t_trim - blanks off both ends, in place */
static char *
t_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

/* t_squeeze - runs of blanks become one space */
static void
t_squeeze(char *s)
{
	char *o = s;
	bool blank = false;

	for (; *s; s++) {
		if (*s == ' ' || *s == '\t') {
			blank = true;
			continue;
		}
		if (blank && o != s)
			*o++ = ' ';
		blank = false;
		*o++ = *s;
	}
	*o = 0;
}

/* t_path - PATH relative to the test file's directory */
static char *
t_path(const char *file, const char *p)
{
	const char *slash = strrchr(file, '/');
	size_t n = slash ? (size_t)(slash - file) + 1 : 0;
	char *out;

	if (p[0] == '/' || n == 0)
		return xstrdup(p);
	out = xmalloc(n + strlen(p) + 1);
	memcpy(out, file, n);
	strcpy(out + n, p);
	return out;
}

/* t_outcomes - the stage outcomes of a walk's output, one per line
 * "STAGE OUTCOME", in order */
static int
t_outcomes(const char *out, char **got, int max)
{
	char stage[16] = "?";
	int n = 0;

	for (const char *l = out; *l && n < max; ) {
		const char *e = strchr(l, '\n');
		size_t len = e ? (size_t)(e - l) : strlen(l);
		char line[T_LINE];

		if (len >= sizeof(line))
			len = sizeof(line) - 1;
		memcpy(line, l, len);
		line[len] = 0;
		l += len + (e != NULL);
		if (strncmp(line, "stage ", 6) == 0) {
			sscanf(line + 6, "%15s", stage);
		} else if (strncmp(line, "  verdict ", 10) == 0) {
			char *v = line + 10, buf[T_LINE + 32];
			if (strncmp(v, "accept rule ", 12) == 0)
				v[6] = 0;
			else if (strncmp(v, "reject reply \"", 14) == 0 ||
			    strncmp(v, "tempfail reply \"", 16) == 0) {
				char *q = strchr(v, '"');
				size_t vl = strlen(q + 1);
				if (vl > 0 && q[vl] == '"')
					q[vl] = 0;
				memmove(strstr(v, " reply ") + 1, q + 1, strlen(q + 1) + 1);
			}
			snprintf(buf, sizeof(buf), "%s %s", stage, v);
			got[n++] = xstrdup(buf);
		} else if (strncmp(line, "result: ", 8) == 0) {
			char buf[T_LINE + 16];
			snprintf(buf, sizeof(buf), "result %s", line + 8);
			got[n++] = xstrdup(buf);
		}
	}
	return n;
}

/* t_stage_of - the first word */
static size_t
t_stage_len(const char *s)
{
	const char *sp = strchr(s, ' ');
	return sp ? (size_t)(sp - s) : strlen(s);
}

/* t_run - one scenario: 1 passed, 0 failed */
static int
t_run(struct conf *c, struct scenario *s)
{
	char *got[T_EXPECT * 4], *buf = NULL;
	int ngot = 0, saved, ok = 1;
	FILE *tf = tmpfile();
	size_t n = 0;

	if (tf == NULL) {
		fprintf(stderr, "moatctl: a temporary file: %s\n", strerror(errno));
		return 0;
	}
	fflush(stdout);
	saved = dup(1);
	if (saved < 0 || dup2(fileno(tf), 1) < 0) {
		fprintf(stderr, "moatctl: cannot capture the walk: %s\n", strerror(errno));
		fclose(tf);
		if (saved >= 0)
			close(saved);
		return 0;
	}
	s->argv[s->argc] = NULL;
	(void)moatctl_explain_conf(c, s->argc, s->argv);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	rewind(tf);
	buf = xmalloc(T_OUT_MAX + 1);
	n = fread(buf, 1, T_OUT_MAX, tf);
	buf[n] = 0;
	fclose(tf);
	ngot = t_outcomes(buf, got, (int)(sizeof(got) / sizeof(got[0])));
	/* every stage the scenario names, compared in full */
	for (int i = 0; i < s->nexpect && ok; i++) {
		size_t sl = t_stage_len(s->expect[i]);
		int ke = 0, kg = 0;
		for (int j = 0; j < s->nexpect; j++)
			if (t_stage_len(s->expect[j]) == sl && strncmp(s->expect[j], s->expect[i], sl) == 0)
				ke++;
		for (int j = 0; j < ngot; j++)
			if (t_stage_len(got[j]) == sl && strncmp(got[j], s->expect[i], sl) == 0)
				kg++;
		if (ke != kg)
			ok = 0;
		for (int j = 0, e = 0, g = 0; ok && j < ke; j++) {
			while (t_stage_len(s->expect[e]) != sl || strncmp(s->expect[e], s->expect[i], sl))
				e++;
			while (t_stage_len(got[g]) != sl || strncmp(got[g], s->expect[i], sl))
				g++;
			if (strcmp(s->expect[e++], got[g++]) != 0)
				ok = 0;
		}
	}
	printf("%s %s\n", ok ? "PASS" : "FAIL", s->name);
	if (!ok) {
		for (int i = 0; i < s->nexpect; i++)
			printf("  - %s\n", s->expect[i]);
		for (int i = 0; i < ngot; i++)
			printf("  + %s\n", got[i]);
		if (ngot == 0)	/* the walk did not run: say why */
			printf("%s", buf);
	}
	for (int i = 0; i < ngot; i++)
		free(got[i]);
	free(buf);
	return ok;
}

/* t_line - one line of a scenario; -1 with a message on a bad one */
static int
t_line(struct scenario *s, const char *file, char *key, char *val)
{
	static const char *const stages[] = { "connect", "helo", "mail", "rcpt", "data", "result" };
	const struct { const char *key, *opt; } opts[] = {
		{ "ip", "--ip" }, { "helo", "--helo" }, { "from", "--from" }, { "rcpt", "--rcpt" },
		{ "auth", "--auth" },
	};

	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (strcmp(key, opts[i].key) == 0) {
			if (strcmp(key, "ip") == 0)
				s->has_ip = true;
			return t_arg(s, opts[i].opt) || t_arg(s, val) ? -1 : 0;
		}
	if (strcmp(key, "message") == 0) {
		char *p = t_path(file, val);
		int r = t_arg(s, "--message") || t_arg(s, p) ? -1 : 0;
		free(p);
		return r;
	}
	if (strcmp(key, "assume") == 0) {
		for (char *w = strtok(val, " \t"); w != NULL; w = strtok(NULL, " \t")) {
			char opt[64], *eq = strchr(w, '=');
			if (eq == NULL || eq == w || (size_t)(eq - w) > 40)
				return -1;
			snprintf(opt, sizeof(opt), "--%.*s", (int)(eq - w), w);
			if (t_arg(s, opt) || t_arg(s, eq + 1))
				return -1;
		}
		return 0;
	}
	if (strcmp(key, "expect") == 0) {
		size_t sl = t_stage_len(val);
		bool known = false;
		for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++)
			known = known || (strlen(stages[i]) == sl && strncmp(stages[i], val, sl) == 0);
		if (!known || s->nexpect >= T_EXPECT)
			return -1;
		t_squeeze(val);
		s->expect[s->nexpect++] = xstrdup(val);
		return 0;
	}
	return -1;
}

/* moatctl_test - see the top */
int
moatctl_test(int argc, char **argv)
{
	struct scenario s;
	struct conf *c = NULL;
	char line[T_LINE], *policy = NULL, *errs = NULL;
	int lineno = 0, passed = 0, failed = 0, rc = 2;
	FILE *fp;

	if (argc != 3) {
		return moatctl_usage("test");
	}
	fp = fopen(argv[2], "r");
	if (fp == NULL) {
		fprintf(stderr, "moatctl: %s: %s\n", argv[2], strerror(errno));
		return 2;
	}
	memset(&s, 0, sizeof(s));
	for (;;) {
		char *l = fgets(line, sizeof(line), fp), *key = NULL, *val = NULL;
		bool eof = l == NULL;

		if (!eof) {
			lineno++;
			l = t_trim(line);
			if (*l == 0 || *l == '#')
				continue;
			key = l;
			val = key + strcspn(key, " \t");
			if (*val)
				*val++ = 0;
			val = t_trim(val);
		}
		if (eof || key == NULL || strcmp(key, "test") == 0) {
			if (s.name != NULL) {
				if (!s.has_ip) {
					fprintf(stderr, "%s:%d: test %s has no ip\n", argv[2], s.line, s.name);
					goto out;
				}
				if (t_run(c, &s))
					passed++;
				else
					failed++;
			}
			t_reset(&s);
			if (eof)
				break;
			if (c == NULL) {
				fprintf(stderr, "%s:%d: \"policy PATH\" must come before the first test\n",
				    argv[2], lineno);
				goto out;
			}
			s.name = xstrdup(*val ? val : "(unnamed)");
			s.line = lineno;
			t_arg(&s, "moatctl");
			t_arg(&s, "explain");
			t_arg(&s, policy);
			t_arg(&s, "--no-network");
			continue;
		}
		if (strcmp(key, "policy") == 0 && c == NULL && s.name == NULL) {
			policy = t_path(argv[2], val);
			c = conf_load(policy, &errs);
			if (c == NULL) {
				fputs(errs ? errs : "unknown error\n", stderr);
				goto out;
			}
			free(errs);
			errs = NULL;
			continue;
		}
		if (s.name == NULL || t_line(&s, argv[2], key, val) != 0) {
			fprintf(stderr, "%s:%d: expected policy, test, ip, helo, from, rcpt, auth, "
			    "message, assume NAME=VALUE ... or expect STAGE OUTCOME, found \"%s\"\n",
			    argv[2], lineno, key);
			goto out;
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	rc = failed > 0 || passed == 0 ? 1 : 0;
out:
	t_reset(&s);
	free(errs);
	free(policy);
	if (c != NULL)
		conf_unref(c);
	fclose(fp);
	return rc;
}
