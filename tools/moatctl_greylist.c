/*
 * moatctl greylist - inspect and edit greylisting state
 *
 * SYNOPSIS
 *	moatctl greylist [-f FILE] [--redis ADDR | --sentinel ADDR[,ADDR...] --master NAME |
 *	                 --socket PATH] [--prefix P] [--password W] [--db N]
 *	                 [--v4-prefix N] [--v6-prefix N] COMMAND [ARGS]
 *	COMMAND: list [N] | allow ID [DURATION] | delete KEY|ID | stats
 *
 * DESCRIPTION
 *	With Redis (a redis setting in FILE, or --redis/--sentinel), moatctl
 *	talks to the Redis master itself, with hiredis's blocking API and
 *	timeouts (rds_sync_connect): list SCANs the keys under the prefix
 *	(never KEYS), allow and delete write the client's record, stats
 *	counts records. Its output is the embedded store's (glstore.h,
 *	CONTROL), so scripts need not care which store is in use.
 *
 *	With the embedded store, the state lives inside moatd: --socket PATH
 *	sends the command to moatd's control socket, one line, and prints
 *	the reply, lines up to one holding a single "." (a reply line that
 *	starts with "." comes with one more "." in front, removed here).
 *
 *	-f FILE reads the greylist settings (redis, redis-*, greylist-*) and
 *	control-socket from
 *	the policy file by a plain line scan (words split at blanks, "#"
 *	comments, double quotes removed; include is not followed) until the
 *	policy parser carries them; options given after it win. A file that
 *	names no Redis but a control-socket sends the command there (moatd's
 *	or moat-milter's embedded store).
 *
 *	ID is an address (its network is used, as the key is built), ADDR/LEN
 *	with the configured length, spf:DOMAIN or org:DOMAIN. KEY is a key
 *	as list shows it ("t:{...}|...|..." or "c:{...}").
 *
 *	Exit status: 0 done, 1 the command failed (unreachable, refused), 2
 *	usage or settings.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "glstore.h"
#include "greylist.h"
#include "log.h"
#include "moatctl.h"
#include "redis.h"

#define CTL_TIMEOUT_MS	10000
#define CTL_REPLY_MAX	(64 * 1024 * 1024)
#define CTL_SCAN_MAX	10000000	/* keys looked at, at most */

/* gl_usage - how to call */
static int
gl_usage(void)
{
	return moatctl_usage("greylist");
}

/* the control-socket a policy file named (-f), for its embedded store */
static char gl_file_socket[1024];

/* gl_read_policy - the greylist settings of a policy file (interim scan) */
static int
gl_read_policy(const char *path, struct greylist_conf *g)
{
	FILE *f = fopen(path, "r");
	char line[4096], why[256];
	int lineno = 0, bad = 0;

	if (f == NULL) {
		fprintf(stderr, "moatctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		const char *w[32];
		char *p = line, *save = NULL, *tok, *hash;
		int n = 0, rc;

		lineno++;
		if ((hash = strchr(p, '#')) != NULL)
			*hash = '\0';
		for (tok = strtok_r(p, " \t\r\n", &save); tok && n < 32;
		    tok = strtok_r(NULL, " \t\r\n", &save)) {
			size_t len = strlen(tok);

			if (len >= 2 && tok[0] == '"' && tok[len - 1] == '"') {
				tok[len - 1] = '\0';
				tok++;
			}
			w[n++] = tok;
		}
		if (n == 2 && strcmp(w[0], "control-socket") == 0) {
			snprintf(gl_file_socket, sizeof(gl_file_socket), "%s", w[1]);
			continue;
		}
		if (n == 0 || (strncmp(w[0], "redis", 5) != 0 && strncmp(w[0], "greylist-", 9) != 0))
			continue;
		rc = greylist_conf_set(g, w[0], w + 1, n - 1, why, sizeof(why));
		if (rc < 0) {
			fprintf(stderr, "%s:%d: error: %s\n", path, lineno, why);
			bad = 1;
		}
	}
	fclose(f);
	return bad ? -1 : 0;
}

/* gl_print_safe - a line from elsewhere, control bytes shown as \xHH */
static void
gl_print_safe(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n' || (c >= ' ' && c < 0x7f) || c == '\t')
			putchar(c);
		else
			printf("\\x%02X", c);
	}
}

/* moatctl_socket - one command through the control socket of moatd or
 * moat-milter: the reply printed; 0, 1 when it failed or (status) a line
 * says "status degraded", 2 usage */
int
moatctl_socket(const char *path, const char *cmd)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char buf[4096], *acc = NULL;
	size_t len = 0, cap = 0, start = 0;
	int fd, rc = 1, first = 1, failed = 0;
	struct pollfd pfd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "moatctl: %s: path too long\n", path);
		return 2;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		fprintf(stderr, "moatctl: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if (write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd) || write(fd, "\n", 1) != 1) {
		fprintf(stderr, "moatctl: %s: %s\n", path, strerror(errno));
		close(fd);
		return 1;
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	for (;;) {
		ssize_t n;
		char *nl;

		if (poll(&pfd, 1, CTL_TIMEOUT_MS) <= 0) {
			fprintf(stderr, "moatctl: %s: no complete reply within %d s\n", path,
			    CTL_TIMEOUT_MS / 1000);
			break;
		}
		n = read(fd, buf, sizeof(buf));
		if (n <= 0) {
			fprintf(stderr, "moatctl: %s: the reply ended early\n", path);
			break;
		}
		if (len + (size_t)n > CTL_REPLY_MAX) {
			fprintf(stderr, "moatctl: %s: reply too long\n", path);
			break;
		}
		if (len + (size_t)n + 1 > cap) {
			cap = (len + (size_t)n + 1) * 2;
			acc = realloc(acc, cap);
			if (acc == NULL) {
				fprintf(stderr, "moatctl: out of memory\n");
				close(fd);
				return 1;
			}
		}
		memcpy(acc + len, buf, (size_t)n);
		len += (size_t)n;
		while ((nl = memchr(acc + start, '\n', len - start)) != NULL) {
			char *line = acc + start;
			size_t ll = (size_t)(nl - line);

			if (ll > 0 && line[ll - 1] == '\r')
				ll--;
			start = (size_t)(nl - acc) + 1;
			if (ll == 1 && line[0] == '.') {
				rc = failed ? 1 : 0;
				goto done;
			}
			if (line[0] == '.') {
				line++;
				ll--;
			}
			if (first && ll >= 6 && strncmp(line, "error:", 6) == 0)
				failed = 1;
			if (ll >= 15 && strncmp(line, "status degraded", 15) == 0)
				failed = 1;
			first = 0;
			gl_print_safe(line, ll);
			putchar('\n');
		}
	}
done:
	free(acc);
	close(fd);
	return rc;
}

/* gl_reply_num - a hash field as a number (nil, absent or junk: 0) */
static int64_t
gl_reply_num(const redisReply *r)
{
	if (r == NULL || r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
		return 0;
	return strtoll(r->str, NULL, 10);
}

/* gl_redis_fields - a record's three fields; -1 when it is not a moat hash */
static int
gl_redis_fields(redisContext *c, const char *key, size_t klen, bool triplet, int64_t v[3])
{
	const char *argv[5] = { "HMGET", key, triplet ? "f" : "n", triplet ? "p" : "u", "x" };
	size_t lens[5] = { 5, klen, 1, 1, 1 };
	redisReply *r = redisCommandArgv(c, 5, argv, lens);
	int rc = -1;

	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
		for (int i = 0; i < 3; i++)
			v[i] = gl_reply_num(r->element[i]);
		rc = 0;
	}
	if (r)
		freeReplyObject(r);
	return rc;
}

struct gl_scan_state {
	long shown, limit;
	uint64_t total, triplets, clients, allowlisted;
	int64_t now;
	bool print, classify;
};

/* gl_redis_scan - walk the keys under the prefix; -1 on a Redis failure */
static int
gl_redis_scan(redisContext *c, const char *prefix, struct gl_scan_state *st)
{
	char cursor[32] = "0", pattern[GREYLIST_PREFIX_MAX + 8];
	size_t plen = strlen(prefix);
	uint64_t looked = 0;

	snprintf(pattern, sizeof(pattern), "%s*", prefix);
	do {
		redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
		redisReply *keys;

		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[1]->type != REDIS_REPLY_ARRAY || r->element[0]->len >= sizeof(cursor)) {
			fprintf(stderr, "moatctl: SCAN: %s\n", r == NULL ? c->errstr :
			    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
			if (r)
				freeReplyObject(r);
			return -1;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
		keys = r->element[1];
		for (size_t i = 0; i < keys->elements; i++) {
			const redisReply *k = keys->element[i];
			const char *key;
			bool triplet;
			int64_t v[3];
			char line[GLSTORE_KEY_MAX + 160];

			if (k->type != REDIS_REPLY_STRING || k->len <= plen + 2)
				continue;
			key = k->str + plen;
			triplet = strncmp(key, "t:", 2) == 0;
			if (!triplet && strncmp(key, "c:", 2) != 0)
				continue;
			st->total++;
			if (triplet)
				st->triplets++;
			else
				st->clients++;
			if ((!st->print || st->shown >= st->limit) && (!st->classify || triplet))
				continue;
			if (gl_redis_fields(c, k->str, k->len, triplet, v) != 0)
				continue;
			if (st->classify && !triplet && v[1] > st->now)
				st->allowlisted++;
			if (st->print && st->shown < st->limit && v[2] > st->now &&
			    memchr(key, '\0', k->len - plen) == NULL &&
			    glstore_format_record(key, v[0], v[1], v[2], line, sizeof(line)) == 0) {
				gl_print_safe(line, strlen(line));
				st->shown++;
			}
		}
		looked += keys->elements;
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0 && looked < CTL_SCAN_MAX);
	return 0;
}

/* gl_redis_key - a client key from an ID, or a given record key */
static int
gl_redis_key(const struct greylist_conf *g, const char *word, char *key, size_t size)
{
	char id[GLSTORE_ID_MAX], why[256];

	if (strncmp(word, "t:", 2) == 0 || strncmp(word, "c:", 2) == 0) {
		if ((size_t)snprintf(key, size, "%s%s", g->prefix, word) >= size) {
			fprintf(stderr, "moatctl: key too long\n");
			return -1;
		}
		return 0;
	}
	if (glstore_client_parse(word, g->v4_prefix, g->v6_prefix, id, sizeof(id), why,
	    sizeof(why)) != 0) {
		fprintf(stderr, "moatctl: %s\n", why);
		return -1;
	}
	snprintf(key, size, "%sc:{%s}", g->prefix, id);
	return 0;
}

/* gl_redis - one command against Redis */
static int
gl_redis(const struct greylist_conf *g, int argc, char **argv)
{
	char err[256], key[GREYLIST_PREFIX_MAX + GLSTORE_KEY_MAX], server[160];
	redisContext *c;
	struct gl_scan_state st = { 0 };
	int rc = 1;

	st.now = (int64_t)time(NULL);
	c = rds_sync_connect(&g->redis, err, sizeof(err));
	if (c == NULL) {
		fprintf(stderr, "moatctl: redis: %s\n", err);
		return 1;
	}
	if (strcmp(argv[0], "list") == 0 && argc <= 2) {
		char *end;

		st.limit = 100;
		if (argc == 2) {
			st.limit = strtol(argv[1], &end, 10);
			if (*end != '\0' || st.limit < 1 || st.limit > 1000000) {
				fprintf(stderr, "moatctl: list: N must be 1 to 1000000\n");
				redisFree(c);
				return 2;
			}
		}
		st.print = true;
		if (gl_redis_scan(c, g->prefix, &st) == 0) {
			printf("total %" PRIu64 "\n", st.total);
			rc = 0;
		}
	} else if (strcmp(argv[0], "stats") == 0 && argc == 1) {
		st.classify = true;
		if (gl_redis_scan(c, g->prefix, &st) == 0) {
			rds_addr_format(g->redis.nsentinel ? &g->redis.sentinel[0] : &g->redis.server,
			    server, sizeof(server));
			printf("store redis\n%s %s\nrecords %" PRIu64 "\ntriplets %" PRIu64
			    "\nclients %" PRIu64 "\nallowlisted %" PRIu64 "\n",
			    g->redis.nsentinel ? "sentinel" : "server", server, st.total, st.triplets,
			    st.clients, st.allowlisted);
			rc = 0;
		}
	} else if (strcmp(argv[0], "allow") == 0 && (argc == 2 || argc == 3)) {
		uint64_t ms = (uint64_t)g->allow_lifetime * 1000;
		int64_t until;
		char u[24], ttl[24];
		redisReply *r;

		if (argc == 3 && (glstore_duration(argv[2], &ms) != 0 || ms < 1000 ||
		    ms > 3650ull * 86400 * 1000)) {
			fprintf(stderr, "moatctl: allow: bad duration \"%s\"\n", argv[2]);
			redisFree(c);
			return 2;
		}
		if (strncmp(argv[1], "t:", 2) == 0 || strncmp(argv[1], "c:", 2) == 0 ||
		    gl_redis_key(g, argv[1], key, sizeof(key)) != 0) {
			if (strncmp(argv[1], "t:", 2) == 0 || strncmp(argv[1], "c:", 2) == 0)
				fprintf(stderr, "moatctl: allow takes a client, not a key\n");
			redisFree(c);
			return 2;
		}
		until = st.now + (int64_t)(ms / 1000);
		snprintf(u, sizeof(u), "%" PRId64, until);
		snprintf(ttl, sizeof(ttl), "%" PRIu64, ms / 1000);
		r = redisCommand(c, "HSET %s u %s x %s", key, u, u);
		if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
			freeReplyObject(r);
			r = redisCommand(c, "EXPIRE %s %s", key, ttl);
		}
		if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
			char line[GLSTORE_KEY_MAX + 160];

			glstore_format_record(key + strlen(g->prefix), 0, until, until, line,
			    sizeof(line));
			printf("allowed %s", line);
			rc = 0;
		} else
			fprintf(stderr, "moatctl: allow: %s\n", r == NULL ? c->errstr :
			    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		if (r)
			freeReplyObject(r);
	} else if (strcmp(argv[0], "delete") == 0 && argc == 2) {
		redisReply *r;

		if (gl_redis_key(g, argv[1], key, sizeof(key)) != 0) {
			redisFree(c);
			return 2;
		}
		r = redisCommand(c, "DEL %s", key);
		if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
			printf("deleted %lld\n", r->integer);
			rc = 0;
		} else
			fprintf(stderr, "moatctl: delete: %s\n", r == NULL ? c->errstr :
			    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		if (r)
			freeReplyObject(r);
	} else {
		redisFree(c);
		return gl_usage();
	}
	redisFree(c);
	return rc;
}

/* gl_option - one option with its value; 1 used, 0 not ours, -1 bad */
static int
gl_option(struct greylist_conf *g, const char *opt, const char *val, const char **sock,
	char *master, size_t msize, char *sentinels, size_t ssize)
{
	char why[256];
	const char *w[1] = { val };
	int rc = 0;

	if (strcmp(opt, "-f") == 0)
		return gl_read_policy(val, g) == 0 ? 1 : -1;
	if (strcmp(opt, "--socket") == 0) {
		*sock = val;
		return 1;
	}
	if (strcmp(opt, "--master") == 0) {
		snprintf(master, msize, "%s", val);
		return 1;
	}
	if (strcmp(opt, "--sentinel") == 0) {
		snprintf(sentinels, ssize, "%s", val);
		return 1;
	}
	if (strcmp(opt, "--redis") == 0)
		rc = greylist_conf_set(g, "redis", w, 1, why, sizeof(why));
	else if (strcmp(opt, "--prefix") == 0)
		rc = greylist_conf_set(g, "redis-prefix", w, 1, why, sizeof(why));
	else if (strcmp(opt, "--password") == 0)
		rc = greylist_conf_set(g, "redis-password", w, 1, why, sizeof(why));
	else if (strcmp(opt, "--db") == 0)
		rc = greylist_conf_set(g, "redis-db", w, 1, why, sizeof(why));
	else if (strcmp(opt, "--v4-prefix") == 0)
		rc = greylist_conf_set(g, "greylist-v4-prefix", w, 1, why, sizeof(why));
	else if (strcmp(opt, "--v6-prefix") == 0)
		rc = greylist_conf_set(g, "greylist-v6-prefix", w, 1, why, sizeof(why));
	else
		return 0;
	if (rc < 0)
		fprintf(stderr, "moatctl: %s: %s\n", opt, why);
	return rc;
}

/* moatctl_greylist - the subcommand (see the head of this file) */
int
moatctl_greylist(int argc, char **argv)
{
	struct greylist_conf g;
	const char *sock = NULL;
	char master[64] = "", sentinels[1024] = "", cmd[2048];
	int i;
	size_t len = 0;

	log_init("moatctl", false, LOG_L_WARN);
	greylist_conf_init(&g);
	for (i = 2; i < argc && argv[i][0] == '-'; i += 2) {
		int rc;

		if (i + 1 >= argc)
			return gl_usage();
		rc = gl_option(&g, argv[i], argv[i + 1], &sock, master, sizeof(master), sentinels,
		    sizeof(sentinels));
		if (rc == 0)
			return gl_usage();
		if (rc < 0)
			return 2;
	}
	if (i >= argc)
		return gl_usage();
	if (sentinels[0] || master[0]) {
		const char *w[RDS_SENTINEL_MAX + 3];
		char *save = NULL, *tok, why[256];
		int n = 0;

		w[n++] = "sentinel";
		for (tok = strtok_r(sentinels, ",", &save); tok && n < RDS_SENTINEL_MAX + 1;
		    tok = strtok_r(NULL, ",", &save))
			w[n++] = tok;
		w[n++] = "master";
		w[n++] = master;
		if (greylist_conf_set(&g, "redis", w, n, why, sizeof(why)) != 1) {
			fprintf(stderr, "moatctl: --sentinel/--master: %s\n", why);
			return 2;
		}
	}
	if (sock == NULL && !rds_conf_enabled(&g.redis) && gl_file_socket[0])
		sock = gl_file_socket;	/* -f FILE: no Redis there, its control socket */
	if (sock != NULL) {
		for (int j = i; j < argc; j++) {
			int n = snprintf(cmd + len, sizeof(cmd) - len, "%s%s", j > i ? " " : "",
			    argv[j]);

			if (n < 0 || (size_t)n >= sizeof(cmd) - len || strpbrk(argv[j], "\r\n")) {
				fprintf(stderr, "moatctl: command too long or with a line break\n");
				return 2;
			}
			len += (size_t)n;
		}
		return moatctl_socket(sock, cmd);
	}
	if (!rds_conf_enabled(&g.redis)) {
		fprintf(stderr, "moatctl: no redis setting: give --redis ADDR, --sentinel ADDR "
		    "--master NAME, -f FILE, or --socket PATH to reach moatd's embedded store\n");
		return 2;
	}
	return gl_redis(&g, argc - i, argv + i);
}
