/*
 * conf_reload - what moatd and moat-milter do alike with a policy file at
 * start and when it is read again (SIGHUP)
 * SYNOPSIS
 *	struct conf *conf_load_report(const char *path);
 *	void conf_log_lines(enum log_level lvl, const char *text);
 *	bool conf_greylist_wanted(const struct conf *c);
 *	bool conf_greylist_uses_org(const struct conf *c);
 *	void conf_restart_warnings(const struct conf *n, const struct conf *old);
 *	struct conf *conf_current(pthread_mutex_t *lock, struct conf *const *cur);
 *	int conf_reload(const char *path, pthread_mutex_t *lock, struct conf **cur,
 *	                int (*setup)(struct conf *n, char *err, size_t errlen),
 *	                void (*warn)(const struct conf *n, const struct conf *old));
 * DESCRIPTION
 *	conf_load_report() reads the policy file at start: its errors (a
 *	NULL return) or warnings go to standard error, FILE:LINE:COL each.
 *
 *	conf_log_lines() logs each line of text (conf_load()'s errors or
 *	warnings, FILE:LINE:COL each) as its own log line; NULL logs nothing.
 *	conf_greylist_wanted() is true when a rule of c greylists (the
 *	greylist handle and store are opened at start only then).
 *	conf_greylist_uses_org() is true when greylist-key names org-domain
 *	(the public suffix list is then needed even with DMARC off).
 *	conf_restart_warnings() logs a warning for each group of settings
 *	that n changes from old and that only a restart applies, because the
 *	process builds them once at start: the resolver; dkim, dkim-*, dmarc
 *	on/off and public-suffix-list; redis and greylist-*, and greylisting
 *	turned on or off. The listener is the caller's (moatd's listen and
 *	workers; moat-milter's -l).
 *
 *	The current policy is *cur, changed only under lock.
 *	conf_current() returns a new reference to it (the caller drops it
 *	with conf_unref()). conf_reload() reads path again: a file with
 *	errors, or one that setup (the caller's extra step, e.g. moatd's TLS
 *	files; may be NULL) refuses, is logged line by line with "reload
 *	refused file=PATH: the running configuration stays" and -1 is
 *	returned; otherwise its warnings are logged, warn (may be NULL) and
 *	conf_restart_warnings() name what needs a restart, the new policy
 *	becomes *cur, the log level follows it, the old one loses the
 *	current reference (it lives on in the connections that hold one),
 *	"reload ok file=PATH" is logged and 0 returned.
 */
#ifndef MOAT_CONF_RELOAD_H
#define MOAT_CONF_RELOAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "log.h"

void conf_log_lines(enum log_level lvl, const char *text);
struct conf *conf_load_report(const char *path);
bool conf_greylist_wanted(const struct conf *c);
bool conf_greylist_uses_org(const struct conf *c);
void conf_restart_warnings(const struct conf *n, const struct conf *old);
struct conf *conf_current(pthread_mutex_t *lock, struct conf *const *cur);
int conf_reload(const char *path, pthread_mutex_t *lock, struct conf **cur,
	int (*setup)(struct conf *n, char *err, size_t errlen),
	void (*warn)(const struct conf *n, const struct conf *old));

#endif
