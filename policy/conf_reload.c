/*
 * conf_reload - shared steps of a policy reload (see conf_reload.h)
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conf_reload.h"
#include "filter.h"
#include "rules.h"

/* conf_log_lines - each line of an error (or warning) text, to the log */
void
conf_log_lines(enum log_level lvl, const char *text)
{
	const char *p = text, *nl;

	while (p && *p) {
		nl = strchr(p, '\n');
		log_msg(lvl, 0, "%.*s", (int)(nl ? nl - p : (ptrdiff_t)strlen(p)), p);
		p = nl ? nl + 1 : NULL;
	}
}

/* conf_load_report - the policy at start; errors and warnings to stderr */
struct conf *
conf_load_report(const char *path)
{
	char *errs = NULL;
	struct conf *c = conf_load(path, &errs);

	if (c == NULL)
		fputs(errs ? errs : "unknown error\n", stderr);
	else if (errs != NULL)
		fputs(errs, stderr);	/* warnings */
	free(errs);
	return c;
}

/* conf_greylist_wanted - does a rule of this file greylist? */
bool
conf_greylist_wanted(const struct conf *c)
{
	return c->rules != NULL && rules_stage_needs(c->rules, RS_RCPT, CHECK_GREYLIST);
}

/* conf_greylist_uses_org - does the greylist key want organisational
 * domains (so the public suffix list is needed)? */
bool
conf_greylist_uses_org(const struct conf *c)
{
	for (int i = 0; i < c->greylist.nclient_part; i++)
		if (c->greylist.client_part[i] == GL_KEY_ORG)
			return true;
	return false;
}

/* conf_restart_warnings - what n changes that only a restart applies */
void
conf_restart_warnings(const struct conf *n, const struct conf *old)
{
	if (memcmp(&n->resolver, &old->resolver, sizeof(n->resolver)) != 0)
		log_msg(LOG_L_WARN, 0, "reload: resolver changes take effect at restart");
	if (n->check_threads != old->check_threads)
		log_msg(LOG_L_WARN, 0, "reload: check-threads changes take effect at restart");
	if (n->dkim != old->dkim || n->dkim_min_key_bits != old->dkim_min_key_bits ||
	    n->dkim_max_signatures != old->dkim_max_signatures ||
	    n->dkim_allow_sha1 != old->dkim_allow_sha1 ||
	    (n->dmarc != CONF_DMARC_OFF) != (old->dmarc != CONF_DMARC_OFF) ||
	    strcmp(n->psl_path, old->psl_path) != 0)
		log_msg(LOG_L_WARN, 0, "reload: dkim, dkim-* and dmarc on/off and "
		    "public-suffix-list changes take effect at restart");
	if (memcmp(&n->greylist, &old->greylist, sizeof(n->greylist)) != 0 ||
	    conf_greylist_wanted(n) != conf_greylist_wanted(old))
		log_msg(LOG_L_WARN, 0, "reload: redis and greylist-* changes, and greylisting "
		    "turned on or off, take effect at restart");
	if (strcmp(n->metrics_listen.text, old->metrics_listen.text) != 0 ||
	    (n->control_socket == NULL) != (old->control_socket == NULL) ||
	    (n->control_socket != NULL && strcmp(n->control_socket, old->control_socket) != 0))
		log_msg(LOG_L_WARN, 0, "reload: metrics-listen and control-socket changes take "
		    "effect at restart");
	if (strcmp(n->user, old->user) != 0)
		log_msg(LOG_L_WARN, 0, "reload: user changes take effect at restart (root was "
		    "given up at start)");
}

/* conf_current - a reference to the current policy (owned) */
struct conf *
conf_current(pthread_mutex_t *lock, struct conf *const *cur)
{
	struct conf *c;

	pthread_mutex_lock(lock);
	c = conf_ref(*cur);
	pthread_mutex_unlock(lock);
	return c;
}

/* conf_reload - the file again: made current, or refused with its errors */
int
conf_reload(const char *path, pthread_mutex_t *lock, struct conf **cur,
	int (*setup)(struct conf *n, char *err, size_t errlen),
	void (*warn)(const struct conf *n, const struct conf *old))
{
	char *errs = NULL, serr[512];
	struct conf *n = conf_load(path, &errs), *old;

	if (n != NULL && setup != NULL && setup(n, serr, sizeof(serr)) != 0) {
		free(errs);
		errs = NULL;
		conf_log_lines(LOG_L_ERROR, serr);
		conf_unref(n);
		n = NULL;
	}
	if (n == NULL) {
		conf_log_lines(LOG_L_ERROR, errs);
		free(errs);
		log_msg(LOG_L_ERROR, 0, "reload refused file=%s: the running configuration stays",
		    path);
		return -1;
	}
	conf_log_lines(LOG_L_WARN, errs);	/* warnings */
	free(errs);
	pthread_mutex_lock(lock);
	old = *cur;
	*cur = n;
	pthread_mutex_unlock(lock);
	if (warn != NULL)
		warn(n, old);
	conf_restart_warnings(n, old);
	log_set_level((enum log_level)n->log_level);
	conf_unref(old);
	log_msg(LOG_L_INFO, 0, "reload ok file=%s", path);
	return 0;
}
