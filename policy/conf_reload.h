/*
 * conf_reload - what moatd and moat-milter do alike with a policy file at
 * start and when it is read again (SIGHUP)
 * SYNOPSIS
 *	void conf_log_lines(enum log_level lvl, const char *text);
 *	bool conf_greylist_wanted(const struct conf *c);
 *	bool conf_greylist_uses_org(const struct conf *c);
 *	void conf_restart_warnings(const struct conf *n, const struct conf *old);
 * DESCRIPTION
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
 */
#ifndef MOAT_CONF_RELOAD_H
#define MOAT_CONF_RELOAD_H

#include <stdbool.h>

#include "conf.h"
#include "log.h"

void conf_log_lines(enum log_level lvl, const char *text);
bool conf_greylist_wanted(const struct conf *c);
bool conf_greylist_uses_org(const struct conf *c);
void conf_restart_warnings(const struct conf *n, const struct conf *old);

#endif
