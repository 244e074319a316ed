/*
 * test_conf - the settings parser: good files, and bad files with the exact
 * message and position of every error
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "t.h"

/* load - write text to a temp file and load it; errors in *errs */
static struct conf *
load(const char *text, char **errs)
{
	static char path[] = "/tmp/moat-test-conf-XXXXXX";
	char p[sizeof(path)];
	int fd;
	struct conf *c;

	memcpy(p, path, sizeof(path));
	fd = mkstemp(p);
	if (fd < 0)
		return NULL;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		close(fd);
		return NULL;
	}
	close(fd);
	c = conf_load(p, errs);
	/* make messages independent of the temp name */
	if (*errs != NULL) {
		char *q;
		while ((q = strstr(*errs, p)) != NULL) {
			memcpy(q, "F", 1);
			memmove(q + 1, q + strlen(p), strlen(q + strlen(p)) + 1);
		}
	}
	unlink(p);
	return c;
}

static const char *base = "listen 127.0.0.1:2525\nupstream 127.0.0.1:10025\n";

static void
test_minimal_defaults(void)
{
	char *errs = NULL;
	struct conf *c = load(base, &errs);

	T_CHECK(c != NULL);
	if (c == NULL)
		return;
	T_CHECK(c->nlisten == 1);
	T_CHECK(c->max_message_size == 10u * 1024 * 1024);
	T_CHECK(c->command_deadline_ms == 300000);
	T_CHECK(c->session_deadline_ms == 3600000);
	T_CHECK(c->max_recipients == 1000);
	T_CHECK(c->check_threads == 256);
	T_CHECK(c->identity == CONF_ID_XCLIENT);
	T_CHECK(c->bare_lf == CONF_BARELF_NORMALISE);
	T_CHECK(strcmp(c->spool_dir, "/var/tmp") == 0);
	T_CHECK(c->hostname != NULL);
	conf_unref(c);
	free(errs);
}

static void
test_units(void)
{
	char text[1024], *errs = NULL;
	struct conf *c;

	snprintf(text, sizeof(text), "%s%s", base,
	    "max-message-size 20k\ncommand-deadline 2m\nsession-deadline 1500ms\n"
	    "spool-memory 2g\nupstream-timeout 10\nlisten [::1]:25\nlisten *:2526\n"
	    "upstream-identity proxy-v2\nbare-lf reject\n  # comment\nhostname  \"mx.test\"  # trailing\n"
	    "drain-timeout 1h\\\n\n");
	c = load(text, &errs);
	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	if (c == NULL)
		return;
	T_CHECK(c->max_message_size == 20480);
	T_CHECK(c->command_deadline_ms == 120000);
	T_CHECK(c->session_deadline_ms == 1500);
	T_CHECK(c->spool_memory == 2ull << 30);
	T_CHECK(c->upstream_timeout_ms == 10000);
	T_CHECK(c->nlisten == 3);
	T_CHECK(c->listen[1].sa.ss_family == AF_INET6);
	T_CHECK(c->identity == CONF_ID_PROXY_V2);
	T_CHECK(c->bare_lf == CONF_BARELF_REJECT);
	T_CHECK(strcmp(c->hostname, "mx.test") == 0);
	T_CHECK(c->drain_ms == 3600000);
	conf_unref(c);
	free(errs);
}

struct bad_case {
	const char *name;
	const char *text;	/* appended to base unless it starts with '!' */
	const char *error;	/* exact first error line */
};

static const struct bad_case bad_cases[] = {
	{ "unknown setting", "bogus 1\n", "F:3:1: error: unknown setting \"bogus\"" },
	{ "missing value", "workers\n", "F:3:8: error: expected a value for \"workers\", found end of line" },
	{ "two values", "workers 1 2\n", "F:3:11: error: workers takes one value; unexpected 2" },
	{ "negative", "max-sessions -1\n", "F:3:14: error: max-sessions: expected a whole number \"-1\"" },
	{ "range", "max-sessions 0\n", "F:3:14: error: max-sessions: value out of range \"0\" (1 to 1000000)" },
	{ "check-threads range", "check-threads 4\n", "F:3:15: error: check-threads: value out of range \"4\" (8 to 4096)" },
	{ "size unit", "max-message-size 10q\n", "F:3:18: error: max-message-size: expected a size: a number with an optional k, m or g \"10q\"" },
	{ "duration unit", "command-deadline 5x\n", "F:3:18: error: command-deadline: expected a duration: a number with ms, s, m, h or d \"5x\"" },
	{ "duration range", "command-deadline 1ms\n", "F:3:18: error: command-deadline: value out of range \"1ms\" (0 to 3600 seconds)" },
	{ "enum", "bare-lf maybe\n", "F:3:9: error: bare-lf: unknown word \"maybe\" (expected normalise, normalize or reject)" },
	{ "twice", "workers 1\nworkers 2\n", "F:4:1: error: \"workers\" given twice" },
	{ "no port", "upstream 127.0.0.1\n", "F:3:1: error: \"upstream\" given twice" },
	{ "bad port", "!listen 127.0.0.1:0\nupstream 127.0.0.1:25\n", "F:1:8: error: listen: expected a port number 1-65535 after ':' \"127.0.0.1:0\"" },
	{ "bad v4", "!listen 300.0.0.1:25\nupstream 127.0.0.1:25\n", "F:1:8: error: listen: expected an IPv4 address, [IPv6] or * before ':' \"300.0.0.1:25\"" },
	{ "bad v6", "!listen [::g]:25\nupstream 127.0.0.1:25\n", "F:1:8: error: listen: expected an IPv6 address in [brackets] \"[::g]:25\"" },
	{ "no listen", "!upstream 127.0.0.1:25\n", "F:1:1: error: no \"listen\" statement: moatd needs at least one" },
	{ "no upstream", "!listen 127.0.0.1:25\n", "F:1:1: error: no \"upstream\" statement: where should mail go?" },
	{ "unterminated string", "hostname \"abc\n", "F:3:14: error: unterminated string" },
	{ "bad escape", "hostname \"a\\qb\"\n", "F:3:13: error: unknown escape in string (use \\\" \\\\ \\t \\n)" },
	{ "bad hostname", "hostname a_b\n", "F:3:10: error: hostname: expected a host name (letters, digits, '-' and '.') \"a_b\"" },
	{ "brace", "{ x }\n", "F:3:1: error: expected a setting name, found '{'" },
	{ "control char", "workers \x01\n", "F:3:9: error: control character" },
	{ "escaped in message", "bo\x7fgus 1\n", "F:3:3: error: control character" },
};

static void
test_bad_files(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *bc = &bad_cases[i];
		char text[1024], *errs = NULL, first[512];
		struct conf *c;

		if (bc->text[0] == '!')
			snprintf(text, sizeof(text), "%s", bc->text + 1);
		else
			snprintf(text, sizeof(text), "%s%s", base, bc->text);
		c = load(text, &errs);
		T_CHECKF(c == NULL, "case %s: accepted", bc->name);
		conf_unref(c);
		t_first_line(errs, first, sizeof(first));
		T_CHECKF(strcmp(first, bc->error) == 0, "case %s: got \"%s\" want \"%s\"",
		    bc->name, first, bc->error);
		free(errs);
	}
}

static void
test_all_errors_reported(void)
{
	char *errs = NULL;
	struct conf *c = load("bogus 1\nworkers x\nlisten 1.2.3.4:5\nfoo\n", &errs);
	int lines = 0;

	T_CHECK(c == NULL);
	for (const char *p = errs; p && *p; p++)
		lines += *p == '\n';
	T_CHECKF(lines == 4, "got %d error lines: %s", lines, errs ? errs : "");
	free(errs);
}

static void
test_missing_file(void)
{
	char *errs = NULL;
	struct conf *c = conf_load("/nonexistent/moat.conf", &errs);

	T_CHECK(c == NULL);
	T_CHECK(errs != NULL && strstr(errs, "/nonexistent/moat.conf:0:0: error: cannot read: ") == errs);
	free(errs);
}

static void
test_refcount(void)
{
	char *errs = NULL;
	struct conf *c = load(base, &errs);

	T_CHECK(c != NULL);
	if (c == NULL)
		return;
	conf_ref(c);
	conf_unref(c);
	T_CHECK(c->refs == 1);
	conf_unref(c);
	conf_unref(NULL);
}

/* put - write a file */
static void
put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static void
test_include(void)
{
	char dir[] = "/tmp/moat-test-inc-XXXXXX", p[256], q[256], *errs = NULL;
	struct conf *c;

	if (mkdtemp(dir) == NULL)
		return;
	snprintf(p, sizeof(p), "%s/conf.d", dir);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/conf.d/10-up.conf", dir);
	put(p, "upstream 127.0.0.1:10025\n");
	snprintf(p, sizeof(p), "%s/conf.d/20-lists.conf", dir);
	put(p, "list local domain { example.org }\n");
	snprintf(p, sizeof(p), "%s/moat.conf", dir);
	put(p, "listen 127.0.0.1:2525\ninclude \"conf.d/*.conf\"\ninclude \"empty.d/*.conf\"\n"
	    "on rcpt not rcpt-domain in local reject 554 5.7.1 \"relay\"\n");
	c = conf_load(p, &errs);
	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	if (c != NULL)
		T_CHECK(c->upstream.salen != 0);
	conf_unref(c);
	free(errs);
	errs = NULL;

	/* an error inside an included file names that file */
	snprintf(q, sizeof(q), "%s/conf.d/30-bad.conf", dir);
	put(q, "\nworkers many\n");
	c = conf_load(p, &errs);
	T_CHECK(c == NULL);
	{
		char want[512];
		snprintf(want, sizeof(want), "%s:2:9: error: workers: expected a whole number \"many\"", q);
		T_CHECKF(errs != NULL && strstr(errs, want) != NULL, "%s", errs ? errs : "");
	}
	free(errs);
	errs = NULL;
	unlink(q);

	/* a missing literal file is an error; a loop is stopped */
	put(p, "listen 127.0.0.1:2525\nupstream 127.0.0.1:1\ninclude \"nope.conf\"\n");
	c = conf_load(p, &errs);
	T_CHECK(c == NULL && errs != NULL && strstr(errs, "nope.conf: no such file") != NULL);
	free(errs);
	errs = NULL;
	put(p, "listen 127.0.0.1:2525\nupstream 127.0.0.1:1\ninclude \"moat.conf\"\n");
	c = conf_load(p, &errs);
	T_CHECK(c == NULL && errs != NULL && strstr(errs, "includes nested deeper than 8") != NULL);
	free(errs);
	errs = NULL;

	/* no includes from a buffer */
	c = conf_load_buffer("B", "include \"x\"\n", 12, &errs);
	T_CHECK(c == NULL && errs != NULL && strstr(errs, "B:1:1: error: include is not allowed here") != NULL);
	free(errs);
	snprintf(q, sizeof(q), "rm -rf %s", dir);
	if (system(q) != 0)
		T_CHECK(0);
}

/* psl-file: Debian's DAFSA by default; the former name still read */
static void
test_psl_file(void)
{
	static const struct { const char *line, *want; } cases[] = {
		{ "", "/usr/share/publicsuffix/public_suffix_list.dafsa" },
		{ "psl-file /x/list.dat\n", "/x/list.dat" },
		{ "public-suffix-list /y/list.dat\n", "/y/list.dat" },
	};
	char text[4096];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *errs = NULL;
		struct conf *c;

		snprintf(text, sizeof(text), "%s%s", base, cases[i].line);
		c = load(text, &errs);
		T_CHECKF(c != NULL && c->psl_path != NULL && strcmp(c->psl_path, cases[i].want) == 0,
		    "[%s] %s", cases[i].line, c && c->psl_path ? c->psl_path : errs ? errs : "?");
		free(errs);
		conf_unref(c);
	}
}

int
main(void)
{
	log_init("test_conf", false, LOG_L_ERROR);
	T_RUN(test_minimal_defaults);
	T_RUN(test_psl_file);
	T_RUN(test_units);
	T_RUN(test_bad_files);
	T_RUN(test_all_errors_reported);
	T_RUN(test_missing_file);
	T_RUN(test_refcount);
	T_RUN(test_include);
	return T_DONE("conf");
}
