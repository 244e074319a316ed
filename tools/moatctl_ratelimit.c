/*
 * moatctl ratelimit - look at and reset the rate limits shared in Redis
 *
 * SYNOPSIS
 *	moatctl ratelimit -f FILE list [N] | show KEY | reset KEY
 *
 * DESCRIPTION
 *	Reads the policy file (the full parser: its ratelimit declarations
 *	and its redis setting) and talks to the Redis master with hiredis's
 *	blocking API (rds_sync_connect). KEY is a limit's key as list shows
 *	it, without the prefix (redis-prefix and "rl:", so "moat:rl:" by
 *	default): NAME|PART|..., e.g.
 *	"net|192.0.2.0/24" or "sub|alice".
 *
 *	list SCANs the keys (never KEYS), at most N (default 1000), and
 *	prints one line per key: the key, how much of its burst is in use
 *	(decisions that would be refused now, rounded up), the rate and
 *	burst of its declaration, and the milliseconds until it is empty
 *	again. show prints that line for one key ("KEY unused" when none).
 *	reset deletes the key: the next decision starts with a full burst.
 *
 *	In-process limits (no redis setting) live in each moatd and are not
 *	reachable here. Exit status: 0 done, 1 failed (unreachable, no such
 *	key for reset), 2 usage or settings.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "conf.h"
#include "log.h"
#include "moatctl.h"
#include "ratelimit.h"
#include "redis.h"

/* the policy file's redis-prefix */
static const char *rl_redis_prefix;

/* rl_usage - how to call */
static int
rl_usage(void)
{
	return moatctl_usage("ratelimit");
}

/* rl_now - Redis's clock, ms; -1 on error */
static int64_t
rl_now(redisContext *rc)
{
	redisReply *r = redisCommand(rc, "TIME");
	int64_t now = -1;

	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
		now = strtoll(r->element[0]->str, NULL, 10) * 1000 +
		    strtoll(r->element[1]->str, NULL, 10) / 1000;
	freeReplyObject(r);
	return now;
}

/* rl_line - one key's line; false when the key is not there */
static bool
rl_line(redisContext *rc, const struct rl_set *set, const char *key, int64_t now)
{
	char pfx[RL_PREFIX_MAX];
	redisReply *r;

	rl_prefix(rl_redis_prefix, pfx, sizeof(pfx));
	r = redisCommand(rc, "GET %s%s", pfx, key);
	const struct rl_def *d = NULL;
	size_t nl = strcspn(key, "|");
	int64_t tat, ahead;
	bool found = false;

	if (r != NULL && r->type == REDIS_REPLY_STRING) {
		found = true;
		tat = strtoll(r->str, NULL, 10);
		ahead = tat > now ? tat - now : 0;
		for (int i = 0; set != NULL && i < set->n; i++)
			if (strlen(set->d[i].name) == nl && strncmp(set->d[i].name, key, nl) == 0)
				d = &set->d[i];
		if (d != NULL)
			printf("%s used=%" PRId64 "/%u rate=%u/%llus burst=%u empty-in=%" PRId64 "ms\n",
			    key, (ahead + d->emit_ms - 1) / d->emit_ms, d->burst, d->rate,
			    (unsigned long long)(d->dur_ms / 1000), d->burst, ahead);
		else
			printf("%s undeclared empty-in=%" PRId64 "ms\n", key, ahead);
	}
	freeReplyObject(r);
	return found;
}

/* moatctl_ratelimit - the subcommand (see the head of this file) */
int
moatctl_ratelimit(int argc, char **argv)
{
	struct conf *c;
	char *errs = NULL, err[256];
	redisContext *rc;
	int64_t now;
	int status = 0;

	log_init("moatctl", false, LOG_L_WARN);
	if (argc < 5 || strcmp(argv[2], "-f") != 0)
		return rl_usage();
	if (!((strcmp(argv[4], "list") == 0 && argc <= 6) ||
	    ((strcmp(argv[4], "show") == 0 || strcmp(argv[4], "reset") == 0) && argc == 6)))
		return rl_usage();
	c = conf_load(argv[3], &errs);
	if (c == NULL) {
		fprintf(stderr, "%s", errs ? errs : "moatctl: cannot load the policy\n");
		free(errs);
		return 2;
	}
	free(errs);
	rl_redis_prefix = c->greylist.prefix;
	if (!rds_conf_enabled(&c->greylist.redis)) {
		fprintf(stderr, "moatctl: %s has no redis setting: its rate limits live in each "
		    "moatd's memory\n", argv[3]);
		conf_unref(c);
		return 2;
	}
	rc = rds_sync_connect(&c->greylist.redis, err, sizeof(err));
	if (rc == NULL) {
		fprintf(stderr, "moatctl: redis: %s\n", err);
		conf_unref(c);
		return 1;
	}
	now = rl_now(rc);
	if (now < 0) {
		fprintf(stderr, "moatctl: redis: TIME failed\n");
		status = 1;
	} else if (strcmp(argv[4], "show") == 0) {
		if (!rl_line(rc, c->ratelimits, argv[5], now))
			printf("%s unused\n", argv[5]);
	} else if (strcmp(argv[4], "reset") == 0) {
		char pfx[RL_PREFIX_MAX];
		redisReply *r;

		rl_prefix(rl_redis_prefix, pfx, sizeof(pfx));
		r = redisCommand(rc, "DEL %s%s", pfx, argv[5]);

		if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
			fprintf(stderr, "moatctl: redis: DEL failed\n");
			status = 1;
		} else if (r->integer == 0) {
			fprintf(stderr, "moatctl: %s: no such key\n", argv[5]);
			status = 1;
		} else {
			printf("reset %s\n", argv[5]);
		}
		freeReplyObject(r);
	} else {
		long max = argc == 6 ? strtol(argv[5], NULL, 10) : 1000, shown = 0;
		char cursor[32] = "0", pfx[RL_PREFIX_MAX], match[2 * RL_PREFIX_MAX + 2];
		size_t pl, ml = 0;

		/* SCAN's MATCH is a glob: the prefix's own * ? [ ] \ escaped */
		rl_prefix(rl_redis_prefix, pfx, sizeof(pfx));
		pl = strlen(pfx);
		for (size_t i = 0; i < pl; i++) {
			if (strchr("*?[]\\", pfx[i]) != NULL)
				match[ml++] = '\\';
			match[ml++] = pfx[i];
		}
		match[ml++] = '*';
		match[ml] = 0;

		do {
			redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 500", cursor, match);

			if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
				fprintf(stderr, "moatctl: redis: SCAN failed\n");
				freeReplyObject(r);
				status = 1;
				break;
			}
			snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
			for (size_t i = 0; i < r->element[1]->elements && shown < max; i++) {
				const char *k = r->element[1]->element[i]->str;

				if (strncmp(k, pfx, pl) == 0 && strpbrk(k, "\r\n") == NULL &&
				    rl_line(rc, c->ratelimits, k + pl, now))
					shown++;
			}
			freeReplyObject(r);
		} while (strcmp(cursor, "0") != 0 && shown < max);
	}
	redisFree(rc);
	conf_unref(c);
	return status;
}
