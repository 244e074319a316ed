/*
 * greylist_conf - the greylist settings of the policy file (see
 * greylist.h); pure, so that the policy parser's fuzz target links it
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "greylist.h"

#define GL_DAY	86400u

/* greylist_conf_init - defaults (see greylist.h) */
void
greylist_conf_init(struct greylist_conf *g)
{
	memset(g, 0, sizeof(*g));
	rds_conf_init(&g->redis);
	snprintf(g->prefix, sizeof(g->prefix), "moat:");
	g->delay = 300;
	g->window = GL_DAY;
	g->lifetime = 36 * GL_DAY;
	g->allow_after = 5;
	g->allow_lifetime = 36 * GL_DAY;
	g->v4_prefix = 24;
	g->v6_prefix = 64;
	g->client_part[0] = GL_KEY_NET;
	g->nclient_part = 1;
	g->key_sender = true;
	g->key_rcpt = true;
	g->on_error = GL_ON_ERROR_ACCEPT;
	g->store_max = GLSTORE_MAX_DEFAULT;
	g->cache = 60;
}

/* gl_one_word - a setting that takes exactly one word */
static int
gl_one_word(const char *name, int nwords, char *why, size_t whysize)
{
	if (nwords == 1)
		return 0;
	snprintf(why, whysize, "%s takes one value", name);
	return -1;
}

/* gl_duration - a duration within [min, max] milliseconds */
static int
gl_duration(const char *name, const char *const *words, int nwords, uint64_t min, uint64_t max,
	bool whole_seconds, uint64_t *ms, char *why, size_t whysize)
{
	if (gl_one_word(name, nwords, why, whysize) != 0)
		return -1;
	if (glstore_duration(words[0], ms) != 0) {
		snprintf(why, whysize, "%s: \"%.40s\" is not a duration (e.g. 300, 300s, 5m, "
		    "4h, 36d, 200ms)", name, words[0]);
		return -1;
	}
	if (whole_seconds && *ms % 1000 != 0) {
		snprintf(why, whysize, "%s: whole seconds only", name);
		return -1;
	}
	if (*ms < min || *ms > max) {
		snprintf(why, whysize, "%s: between %" PRIu64 "ms and %" PRIu64 "s", name, min,
		    max / 1000);
		return -1;
	}
	return 0;
}

/* gl_number - an integer within [min, max] */
static int
gl_number(const char *name, const char *const *words, int nwords, long min, long max,
	long *v, char *why, size_t whysize)
{
	char *end;

	if (gl_one_word(name, nwords, why, whysize) != 0)
		return -1;
	*v = strtol(words[0], &end, 10);
	if (words[0][0] < '0' || words[0][0] > '9' || *end != '\0' || *v < min || *v > max) {
		snprintf(why, whysize, "%s: a number from %ld to %ld", name, min, max);
		return -1;
	}
	return 0;
}

/* gl_key_parts - the words of greylist-key */
static int
gl_key_parts(struct greylist_conf *g, const char *const *words, int nwords, char *why,
	size_t whysize)
{
	int seen = 0, client[3], nclient = 0;

	for (int i = 0; i < nwords; i++) {
		char buf[256], *save = NULL, *w;

		if (strlen(words[i]) >= sizeof(buf)) {
			snprintf(why, whysize, "greylist-key: word too long");
			return -1;
		}
		snprintf(buf, sizeof(buf), "%s", words[i]);
		for (w = strtok_r(buf, ",", &save); w != NULL; w = strtok_r(NULL, ",", &save)) {
			int part;

			if (strcmp(w, "net") == 0)
				part = GL_KEY_NET;
			else if (strcmp(w, "sender-domain-spf") == 0)
				part = GL_KEY_SPF;
			else if (strcmp(w, "org-domain") == 0)
				part = GL_KEY_ORG;
			else if (strcmp(w, "sender") == 0)
				part = GL_KEY_SENDER;
			else if (strcmp(w, "rcpt") == 0)
				part = GL_KEY_RCPT;
			else {
				snprintf(why, whysize, "greylist-key: \"%.40s\" is not a key part "
				    "(net, sender-domain-spf, org-domain, sender, rcpt)", w);
				return -1;
			}
			if (seen & part) {
				snprintf(why, whysize, "greylist-key: %s given twice", w);
				return -1;
			}
			seen |= part;
			if (part & (GL_KEY_NET | GL_KEY_SPF | GL_KEY_ORG))
				client[nclient++] = part;
		}
	}
	if (nclient == 0) {
		snprintf(why, whysize, "greylist-key: name the client: net, sender-domain-spf "
		    "or org-domain");
		return -1;
	}
	memcpy(g->client_part, client, sizeof(client));
	g->nclient_part = nclient;
	g->key_sender = (seen & GL_KEY_SENDER) != 0;
	g->key_rcpt = (seen & GL_KEY_RCPT) != 0;
	return 0;
}

/* greylist_conf_set - one setting of the policy file (see greylist.h) */
int
greylist_conf_set(struct greylist_conf *g, const char *name, const char *const *words,
	int nwords, char *why, size_t whysize)
{
	uint64_t ms;
	long v;

	if (strcmp(name, "redis") == 0)
		return rds_conf_parse(&g->redis, words, nwords, why, whysize) == 0 ? 1 : -1;
	if (strcmp(name, "redis-timeout") == 0) {
		if (gl_duration(name, words, nwords, 10, 10000, false, &ms, why, whysize) != 0)
			return -1;
		g->redis.timeout_ms = (unsigned)ms;
		return 1;
	}
	if (strcmp(name, "redis-connect-timeout") == 0) {
		if (gl_duration(name, words, nwords, 10, 60000, false, &ms, why, whysize) != 0)
			return -1;
		g->redis.connect_timeout_ms = (unsigned)ms;
		return 1;
	}
	if (strcmp(name, "redis-password") == 0) {
		if (gl_one_word(name, nwords, why, whysize) != 0)
			return -1;
		if (words[0][0] == '\0' || strlen(words[0]) >= sizeof(g->redis.password)) {
			snprintf(why, whysize, "redis-password: 1 to %zu bytes",
			    sizeof(g->redis.password) - 1);
			return -1;
		}
		snprintf(g->redis.password, sizeof(g->redis.password), "%s", words[0]);
		return 1;
	}
	if (strcmp(name, "redis-db") == 0) {
		if (gl_number(name, words, nwords, 0, 10000, &v, why, whysize) != 0)
			return -1;
		g->redis.db = (int)v;
		return 1;
	}
	if (strcmp(name, "redis-prefix") == 0) {
		if (gl_one_word(name, nwords, why, whysize) != 0)
			return -1;
		if (strlen(words[0]) >= sizeof(g->prefix)) {
			snprintf(why, whysize, "redis-prefix: at most %zu bytes",
			    sizeof(g->prefix) - 1);
			return -1;
		}
		for (const char *p = words[0]; *p; p++)
			if (*p < '!' || *p > '~') {
				snprintf(why, whysize, "redis-prefix: printable ASCII without spaces");
				return -1;
			}
		snprintf(g->prefix, sizeof(g->prefix), "%s", words[0]);
		return 1;
	}
	if (strcmp(name, "greylist-delay") == 0) {
		if (gl_duration(name, words, nwords, 0, GL_DAY * 1000ull, true, &ms, why,
		    whysize) != 0)
			return -1;
		g->delay = (unsigned)(ms / 1000);
		return 1;
	}
	if (strcmp(name, "greylist-cache") == 0) {
		if (gl_duration(name, words, nwords, 0, 3600000, true, &ms, why, whysize) != 0)
			return -1;
		g->cache = (unsigned)(ms / 1000);
		return 1;
	}
	if (strcmp(name, "greylist-window") == 0) {
		if (gl_duration(name, words, nwords, 60000, 30ull * GL_DAY * 1000, true, &ms, why,
		    whysize) != 0)
			return -1;
		g->window = (unsigned)(ms / 1000);
		return 1;
	}
	if (strcmp(name, "greylist-lifetime") == 0 ||
	    strcmp(name, "greylist-allow-lifetime") == 0) {
		if (gl_duration(name, words, nwords, 3600000, 365ull * GL_DAY * 1000, true, &ms,
		    why, whysize) != 0)
			return -1;
		if (strcmp(name, "greylist-lifetime") == 0)
			g->lifetime = (unsigned)(ms / 1000);
		else
			g->allow_lifetime = (unsigned)(ms / 1000);
		return 1;
	}
	if (strcmp(name, "greylist-allow-after") == 0) {
		if (gl_number(name, words, nwords, 0, 1000, &v, why, whysize) != 0)
			return -1;
		g->allow_after = (unsigned)v;
		return 1;
	}
	if (strcmp(name, "greylist-key") == 0) {
		if (nwords < 1) {
			snprintf(why, whysize, "greylist-key: expected parts, e.g. net,sender,rcpt");
			return -1;
		}
		return gl_key_parts(g, words, nwords, why, whysize) == 0 ? 1 : -1;
	}
	if (strcmp(name, "greylist-v4-prefix") == 0) {
		if (gl_number(name, words, nwords, 8, 32, &v, why, whysize) != 0)
			return -1;
		g->v4_prefix = (int)v;
		return 1;
	}
	if (strcmp(name, "greylist-v6-prefix") == 0) {
		if (gl_number(name, words, nwords, 16, 128, &v, why, whysize) != 0)
			return -1;
		g->v6_prefix = (int)v;
		return 1;
	}
	if (strcmp(name, "greylist-on-error") == 0) {
		if (gl_one_word(name, nwords, why, whysize) != 0)
			return -1;
		if (strcmp(words[0], "accept") == 0)
			g->on_error = GL_ON_ERROR_ACCEPT;
		else if (strcmp(words[0], "tempfail") == 0)
			g->on_error = GL_ON_ERROR_TEMPFAIL;
		else {
			snprintf(why, whysize, "greylist-on-error: accept or tempfail");
			return -1;
		}
		return 1;
	}
	if (strcmp(name, "greylist-store") == 0) {
		if (gl_one_word(name, nwords, why, whysize) != 0)
			return -1;
		if (strcmp(words[0], "none") == 0) {
			g->store_path[0] = '\0';
			return 1;
		}
		if (words[0][0] != '/' || strlen(words[0]) >= sizeof(g->store_path) - 32) {
			snprintf(why, whysize, "greylist-store: an absolute path (at most %zu "
			    "bytes) or none", sizeof(g->store_path) - 33);
			return -1;
		}
		snprintf(g->store_path, sizeof(g->store_path), "%s", words[0]);
		return 1;
	}
	if (strcmp(name, "greylist-store-max") == 0) {
		if (gl_number(name, words, nwords, 100, 10000000, &v, why, whysize) != 0)
			return -1;
		g->store_max = (size_t)v;
		return 1;
	}
	return 0;
}

/* greylist_conf_check - the settings together (see greylist.h) */
int
greylist_conf_check(const struct greylist_conf *g, char *why, size_t whysize)
{
	if (g->window <= g->delay) {
		snprintf(why, whysize, "greylist-window (%us) must be longer than greylist-delay "
		    "(%us), or no retry could ever pass", g->window, g->delay);
		return -1;
	}
	return 0;
}

/* greylist_store_params - the decision's timings for glstore_decide */
void
greylist_store_params(const struct greylist_conf *g, struct glstore_params *p)
{
	p->delay = g->delay;
	p->window = g->window;
	p->lifetime = g->lifetime;
	p->allow_after = g->allow_after;
	p->allow_lifetime = g->allow_lifetime;
}

