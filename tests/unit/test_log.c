/*
 * test_log - the sink (log_set_sink): each line that passes the threshold
 * reaches it with its level, session id and the bare message (no program,
 * pid, level or id in front), CR and LF blanked, errno appended; lines
 * below the threshold never do; NULL gives stderr back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
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
	return T_DONE("test_log");
}
