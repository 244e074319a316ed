/*
 * log - one line per event, to stderr, syslog or a sink (see log.h)
 *
 * The level threshold is read without a lock (an int written once per
 * reload); lines are assembled in a stack buffer and written whole. The
 * sink is set once, before any thread that logs starts. What goes in
 * front of each line on stderr (program, pid, level) is made once by
 * log_init(), and the session id is written without printf: a busy
 * moatd writes two lines a message at info.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX 2048

static const char *log_prog = "moat";
static bool log_syslog;
static bool log_no_socket;	/* syslog, but no /dev/log: errors also to stderr */
static pid_t log_pid;		/* set by log_init */
/* the threshold: set at start and by a reload (SIGHUP, on one thread)
 * while other threads read it for every line: atomic, relaxed (a line
 * written at the old level around a reload is fine) */
static int log_min = LOG_L_INFO;

static inline int
log_min_now(void)
{
	return __atomic_load_n(&log_min, __ATOMIC_RELAXED);
}
static log_sink_fn log_sink;
static void *log_sink_arg;
static char log_heads[LOG_L_PANIC + 1][96];	/* "PROG[PID]: LEVEL: ", by log_init */
static size_t log_head_len[LOG_L_PANIC + 1];	/* 0: not made (too long, or no log_init) */

static const char *const log_names[] = {
	"debug", "info", "warn", "error", "fatal", "panic"
};
static const int log_prio[] = {
	LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT, LOG_ALERT
};

/* log_init - choose the destination and threshold */
void
log_init(const char *prog, bool use_syslog, enum log_level min)
{
	log_prog = prog;
	log_pid = getpid();	/* a syscall a line otherwise; moat never forks */
	for (int i = 0; i <= LOG_L_PANIC; i++) {
		int r = snprintf(log_heads[i], sizeof(log_heads[i]), "%s[%ld]: %s: ", prog,
		    (long)log_pid, log_names[i]);

		log_head_len[i] = r > 0 && (size_t)r < sizeof(log_heads[i]) ? (size_t)r : 0;
	}
	log_syslog = use_syslog;
	__atomic_store_n(&log_min, (int)min, __ATOMIC_RELAXED);
	if (use_syslog)
		openlog(prog, LOG_PID | LOG_NDELAY, LOG_MAIL);
	/* syslog(3) drops lines silently when nothing listens: an error, or
	 * the reason a start fails, must be seen somewhere */
	log_no_socket = use_syslog && access("/dev/log", W_OK) != 0;
}

/* log_set_level - change the threshold (reload) */
void
log_set_level(enum log_level min)
{
	__atomic_store_n(&log_min, (int)min, __ATOMIC_RELAXED);
}

/* log_set_sink - each line to fn (its level, session id and message)
 * instead of stderr or syslog; NULL: back to those */
void
log_set_sink(log_sink_fn fn, void *arg)
{
	log_sink = fn;
	log_sink_arg = arg;
}

/* log_level_name - "debug" ... "panic" */
const char *
log_level_name(enum log_level lvl)
{
	return (unsigned)lvl < sizeof(log_names) / sizeof(log_names[0]) ? log_names[lvl] : "?";
}

/* log_enabled - would a line of this level be written? */
bool
log_enabled(enum log_level lvl)
{
	return (int)lvl >= log_min_now();
}

/* log_head - what goes in front of the message on stderr: "PROG[PID]:
 * LEVEL: " (made once, by log_init) and the session id; returns its
 * length */
static size_t
log_head(enum log_level lvl, uint64_t sid, char *line, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	int r;

	if (!log_syslog && log_sink == NULL) {
		if (log_head_len[lvl] > 0) {
			memcpy(line, log_heads[lvl], log_head_len[lvl]);
			n = log_head_len[lvl];
		} else {
			r = snprintf(line, size, "%s[%ld]: %s: ", log_prog, (long)getpid(),
			    log_names[lvl]);
			n = r > 0 ? (size_t)r : 0;
		}
	}
	if (sid != 0 && log_sink == NULL && n + 17 < size) {
		for (int i = 15; i >= 0; i--, sid >>= 4)
			line[n + (size_t)i] = hex[sid & 15];
		line[n + 16] = ' ';
		n += 17;
	}
	return n;
}

/* log_finish - errno's text, CR/LF blanked in what follows body, then the
 * line goes out with a single write(2) (or to syslog, or the sink) */
static void
log_finish(enum log_level lvl, uint64_t sid, int err, char *line, size_t n, size_t body)
{
	int r;

	if (err && n < LOG_LINE_MAX) {
		r = snprintf(line + n, LOG_LINE_MAX - n, ": %s", strerror(err));
		n += r > 0 ? (size_t)r : 0;
	}
	if (n > LOG_LINE_MAX - 2)
		n = LOG_LINE_MAX - 2;
	/* a line never carries CR/LF of its own: the format strings are ours
	 * and peer text is escaped, but be sure */
	for (char *p = line + body; (p = memchr(p, '\n', (size_t)(line + n - p))) != NULL; )
		*p = ' ';
	for (char *p = line + body; (p = memchr(p, '\r', (size_t)(line + n - p))) != NULL; )
		*p = ' ';
	if (log_sink != NULL) {
		line[n] = 0;
		log_sink(log_sink_arg, lvl, sid, line);
		return;
	}
	if (log_syslog) {
		line[n] = 0;
		if (lvl == LOG_L_INFO)
			syslog(log_prio[lvl], "%s", line);
		else
			syslog(log_prio[lvl], "%s: %s", log_names[lvl], line);
		if (log_no_socket && lvl >= LOG_L_ERROR) {
			char head[96];
			int h = snprintf(head, sizeof(head), "%s[%ld]: %s: ", log_prog,
			    (long)(log_pid ? log_pid : getpid()), log_names[lvl]);
			ssize_t w = write(STDERR_FILENO, head, h > 0 ? (size_t)h : 0);
			line[n++] = '\n';
			w = write(STDERR_FILENO, line, n);
			(void)w;
		}
		return;
	}
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

/* log_vline - format and write one line */
static void
log_vline(enum log_level lvl, uint64_t sid, int err, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	size_t n = log_head(lvl, sid, line, sizeof(line)), body = n;
	int r;

	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	n += r > 0 ? (size_t)r : 0;
	log_finish(lvl, sid, err, line, n, body);
}

/* log_text - log one event line already made (len bytes of text): what
 * log_msg(lvl, sid, "%s", text) writes, without formatting it again */
void
log_text(enum log_level lvl, uint64_t sid, const char *text, size_t len)
{
	char line[LOG_LINE_MAX];
	size_t n, body;

	if ((int)lvl < log_min_now())
		return;
	n = body = log_head(lvl, sid, line, sizeof(line));
	if (len > sizeof(line) - 2 - n)
		len = sizeof(line) - 2 - n;
	memcpy(line + n, text, len);
	log_finish(lvl, sid, 0, line, n + len, body);
}

/* log_msg - log one event line */
void
log_msg(enum log_level lvl, uint64_t sid, const char *fmt, ...)
{
	va_list ap;

	if ((int)lvl < log_min_now())
		return;
	va_start(ap, fmt);
	log_vline(lvl, sid, 0, fmt, ap);
	va_end(ap);
}

/* log_errno - log one event line with strerror(errno) appended */
void
log_errno(enum log_level lvl, uint64_t sid, const char *fmt, ...)
{
	va_list ap;
	int err = errno;

	if ((int)lvl < log_min_now())
		return;
	va_start(ap, fmt);
	log_vline(lvl, sid, err, fmt, ap);
	va_end(ap);
}

/* log_escape - render peer bytes printable, cut at LOG_PEER_MAX */
size_t
log_escape(char *out, size_t size, const void *in, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = in;
	size_t n = 0, lim = len > LOG_PEER_MAX ? LOG_PEER_MAX : len;

	if (size == 0)
		return 0;
	for (size_t i = 0; i < lim; i++) {
		unsigned char c = p[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
			if (n + 1 >= size)
				break;
			out[n++] = (char)c;
		} else {
			if (n + 4 >= size)
				break;
			out[n++] = '\\';
			out[n++] = 'x';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		}
	}
	if (lim < len && n + 3 < size) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = 0;
	return n;
}

/* fatal - startup error: log and exit */
void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vline(LOG_L_FATAL, 0, 0, fmt, ap);
	va_end(ap);
	exit(1);
}

/* panic - our own invariant is broken: log and dump core */
void
panic(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vline(LOG_L_PANIC, 0, 0, fmt, ap);
	va_end(ap);
	abort();
}
