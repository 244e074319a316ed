/*
 * test_log - the sink (log_set_sink): each line that passes the threshold
 * reaches it with its level, session id and the bare message (no program,
 * pid, level or id in front), CR and LF blanked, errno appended; lines
 * below the threshold never do; NULL gives stderr back. On stderr: the
 * program, pid, level and session id in front, log_text as log_msg "%s",
 * a long line cut at the limit with its newline.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "t.h"

static struct {
	int n;
	enum log_level lvl;
	uint64_t sid;
	char msg[256];
} got;

static void
sink(void *arg, enum log_level lvl, uint64_t sid, const char *msg)
{
	(void)arg;
	got.n++;
	got.lvl = lvl;
	got.sid = sid;
	snprintf(got.msg, sizeof(got.msg), "%s", msg);
}

static void
test_sink_gets_the_bare_line(void)
{
	static const struct {
		const char *name;
		enum log_level lvl;
		uint64_t sid;
		const char *text;		/* given as "%s" */
		const char *want;
	} cases[] = {
		{ "info with session", LOG_L_INFO, 0x1234, "check dnsbl zone=bl.test result=clear",
		  "check dnsbl zone=bl.test result=clear" },
		{ "debug, no session", LOG_L_DEBUG, 0, "check fcrdns=pass", "check fcrdns=pass" },
		{ "CR and LF blanked", LOG_L_WARN, 7, "a\r\nb", "a  b" },
	};

	memset(&got, 0, sizeof(got));
	log_set_level(LOG_L_DEBUG);
	log_set_sink(sink, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int before = got.n;

		log_msg(cases[i].lvl, cases[i].sid, "%s", cases[i].text);
		T_CHECKF(got.n == before + 1, "%s: not delivered", cases[i].name);
		T_CHECKF(got.lvl == cases[i].lvl && got.sid == cases[i].sid, "%s: lvl %d sid %llx",
		    cases[i].name, (int)got.lvl, (unsigned long long)got.sid);
		T_CHECKF(strcmp(got.msg, cases[i].want) == 0, "%s: \"%s\"", cases[i].name, got.msg);
	}
	log_set_sink(NULL, NULL);
}

static void
test_threshold_and_errno(void)
{
	memset(&got, 0, sizeof(got));
	log_set_level(LOG_L_WARN);
	log_set_sink(sink, NULL);
	log_msg(LOG_L_INFO, 1, "below the threshold");
	T_CHECK(got.n == 0);
	errno = ENOENT;
	log_errno(LOG_L_ERROR, 0, "open x");
	T_CHECK(got.n == 1);
	T_CHECKF(strcmp(got.msg, "open x: No such file or directory") == 0, "\"%s\"", got.msg);
	log_set_sink(NULL, NULL);
	{
		/* back to stderr (here /dev/null), not to the sink */
		int saved = dup(STDERR_FILENO), nul = open("/dev/null", O_WRONLY);

		T_CHECK(saved >= 0 && nul >= 0 && dup2(nul, STDERR_FILENO) == STDERR_FILENO);
		log_msg(LOG_L_ERROR, 0, "to stderr again");
		dup2(saved, STDERR_FILENO);
		close(saved);
		close(nul);
	}
	T_CHECK(got.n == 1);
}

/* stderr_lines - what the calls in fn wrote to stderr (into out) */
static size_t
stderr_lines(void (*fn)(void), char *out, size_t size)
{
	char path[] = "/tmp/test_log.XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	ssize_t r;

	T_CHECK(fd >= 0 && saved >= 0 && dup2(fd, STDERR_FILENO) == STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	r = pread(fd, out, size - 1, 0);
	close(fd);
	unlink(path);
	out[r > 0 ? r : 0] = 0;
	return r > 0 ? (size_t)r : 0;
}

static void
write_some(void)
{
	char big[3000];

	log_msg(LOG_L_INFO, 0x1234, "hello %d", 5);
	log_msg(LOG_L_WARN, 0, "no session");
	log_text(LOG_L_INFO, 0xfedcba9876543210ull, "made\r\nbefore", 12);
	log_text(LOG_L_DEBUG, 1, "below the threshold", 19);
	memset(big, 'x', sizeof(big));
	log_text(LOG_L_ERROR, 2, big, sizeof(big));
}

/* the lines on stderr: program, pid, level, the session id in 16 hex
 * digits, the message; log_text as log_msg "%s"; a long line cut at
 * the line limit, still ending in its newline */
static void
test_stderr_lines(void)
{
	char out[8192], want[256];
	size_t n, k;
	const char *p;

	log_set_level(LOG_L_INFO);
	n = stderr_lines(write_some, out, sizeof(out));
	k = (size_t)snprintf(want, sizeof(want), "test_log[%ld]: info: 0000000000001234 hello 5\n"
	    "test_log[%ld]: warn: no session\n"
	    "test_log[%ld]: info: fedcba9876543210 made  before\n", (long)getpid(), (long)getpid(),
	    (long)getpid());
	T_CHECKF(n > k && memcmp(out, want, k) == 0, "got:\n%.*s", (int)(n < k ? n : k), out);
	p = out + k;
	T_CHECKF(strncmp(p, "test_log[", 9) == 0 && strstr(p, "]: error: 0000000000000002 xxx") != NULL,
	    "long line: %.60s", p);
	T_CHECKF(out[n - 1] == '\n' && strchr(p, '\n') == out + n - 1 && out + n - p == 2047,
	    "long line: %zu bytes", (size_t)(out + n - p));
}

static void
test_level_names(void)
{
	T_CHECK(strcmp(log_level_name(LOG_L_DEBUG), "debug") == 0);
	T_CHECK(strcmp(log_level_name(LOG_L_WARN), "warn") == 0);
	T_CHECK(strcmp(log_level_name(LOG_L_PANIC), "panic") == 0);
}

int
main(void)
{
	log_init("test_log", false, LOG_L_INFO);
	T_RUN(test_sink_gets_the_bare_line);
	T_RUN(test_threshold_and_errno);
	T_RUN(test_level_names);
	T_RUN(test_stderr_lines);
	return T_DONE("test_log");
}
