/*
 * log - one line per event, to stderr, syslog or a sink
 *
 * SYNOPSIS
 *	void log_init(const char *prog, bool use_syslog, enum log_level min);
 *	void log_msg(enum log_level lvl, uint64_t sid, const char *fmt, ...);
 *	void log_errno(enum log_level lvl, uint64_t sid, const char *fmt, ...);
 *	void log_text(enum log_level lvl, uint64_t sid, const char *text, size_t len);
 *	size_t log_escape(char *out, size_t size, const void *in, size_t len);
 *	void log_set_sink(log_sink_fn fn, void *arg);
 *	const char *log_level_name(enum log_level lvl);
 *	void fatal(const char *fmt, ...);	startup only
 *	void panic(const char *fmt, ...);	our own broken invariant
 *
 * DESCRIPTION
 *	Lines look like "moatd[PID]: info: 0123456789abcdef event k=v ...";
 *	sid 0 means "no session". Each line is written with a single write(2),
 *	so threads do not interleave. Text that came from a peer must go
 *	through log_escape() first: it escapes every byte outside printable
 *	ASCII (and '\\' and '"') as \xHH and cuts the result at LOG_PEER_MAX
 *	input bytes, marking the cut with "...". log_text() writes a line
 *	already made (as log_msg with "%s", without formatting it again).
 *
 *	log_set_sink() sends each line that passes the threshold to fn
 *	instead of stderr or syslog: its level, its session id (0: none) and
 *	the message alone (no program, pid, level or id in front; no CR/LF;
 *	borrowed for the call). moatctl explain reads the engine's "check"
 *	lines this way. fn runs on the thread that logs, so it must be
 *	thread-safe; set it (or NULL, back to stderr or syslog) before any
 *	other thread logs.
 */
#ifndef MOAT_LOG_H
#define MOAT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_L_DEBUG = 0, LOG_L_INFO, LOG_L_WARN, LOG_L_ERROR, LOG_L_FATAL, LOG_L_PANIC };

#define LOG_PEER_MAX 100	/* input bytes of peer text kept in a log line */
#define LOG_ESC_SIZE (LOG_PEER_MAX * 4 + 8)

typedef void (*log_sink_fn)(void *arg, enum log_level lvl, uint64_t sid, const char *msg);

void log_init(const char *prog, bool use_syslog, enum log_level min);
void log_set_sink(log_sink_fn fn, void *arg);
const char *log_level_name(enum log_level lvl);
void log_set_level(enum log_level min);
bool log_enabled(enum log_level lvl);
void log_msg(enum log_level lvl, uint64_t sid, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_errno(enum log_level lvl, uint64_t sid, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_text(enum log_level lvl, uint64_t sid, const char *text, size_t len);
size_t log_escape(char *out, size_t size, const void *in, size_t len);
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
