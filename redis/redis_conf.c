/*
 * redis_conf - the redis settings and addresses (see redis.h); pure, so
 * that the policy parser's fuzz target links it without hiredis
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "redis.h"

/* rds_errf - fill an error buffer (redis.h) */
void
rds_errf(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
}

/* rds_conf_init - defaults */
void
rds_conf_init(struct rds_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->timeout_ms = 200;
	c->connect_timeout_ms = 1000;
	c->backoff_min_ms = 100;
	c->backoff_max_ms = 5000;
	c->max_pending = 1024;
}

/* rds_conf_enabled - is a server or a sentinel set? */
bool
rds_conf_enabled(const struct rds_conf *c)
{
	return c->nsentinel > 0 || c->server.host[0] != '\0' || c->server.path[0] != '\0';
}

/* rds_addr_parse - IP, IP:PORT, [IPv6]:PORT, IPv6 or /path */
int
rds_addr_parse(const char *word, int defport, struct rds_addr *a, char *why, size_t whysize)
{
	char host[48];
	const char *port = NULL, *colon;
	size_t hl;
	unsigned char buf[16];
	long p = defport;

	memset(a, 0, sizeof(*a));
	if (word[0] == '/') {
		if (strlen(word) >= sizeof(a->path)) {
			rds_errf(why, whysize, "unix socket path too long");
			return -1;
		}
		snprintf(a->path, sizeof(a->path), "%s", word);
		return 0;
	}
	if (word[0] == '[') {
		const char *close = strchr(word, ']');

		if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
			rds_errf(why, whysize, "\"%.80s\": expected [IPv6]:PORT", word);
			return -1;
		}
		hl = (size_t)(close - word - 1);
		if (hl >= sizeof(host))
			goto bad;
		memcpy(host, word + 1, hl);
		host[hl] = '\0';
		if (close[1] == ':')
			port = close + 2;
	} else {
		colon = strchr(word, ':');
		if (colon != NULL && strchr(colon + 1, ':') == NULL) {
			hl = (size_t)(colon - word);
			port = colon + 1;
		} else
			hl = strlen(word);
		if (hl >= sizeof(host))
			goto bad;
		memcpy(host, word, hl);
		host[hl] = '\0';
	}
	if (port != NULL) {
		char *end;

		errno = 0;
		p = strtol(port, &end, 10);
		if (port[0] == '\0' || *end != '\0' || errno != 0 || p < 1 || p > 65535) {
			rds_errf(why, whysize, "\"%.80s\": bad port", word);
			return -1;
		}
	}
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1)
		goto bad;
	snprintf(a->host, sizeof(a->host), "%s", host);
	a->port = (int)p;
	return 0;
bad:
	rds_errf(why, whysize, "\"%.80s\": expected an IP address with an optional :PORT, or "
	    "a unix socket path (host names are not resolved: that would block)", word);
	return -1;
}

/* rds_addr_format - for logs and messages */
void
rds_addr_format(const struct rds_addr *a, char *out, size_t size)
{
	if (a->path[0])
		snprintf(out, size, "%s", a->path);
	else if (a->host[0] == '\0')
		snprintf(out, size, "%s", "");
	else if (strchr(a->host, ':'))
		snprintf(out, size, "[%s]:%d", a->host, a->port);
	else
		snprintf(out, size, "%s:%d", a->host, a->port);
}

/* rds_conf_parse - the words of the "redis" setting */
int
rds_conf_parse(struct rds_conf *c, const char *const *words, int nwords, char *why,
	size_t whysize)
{
	int i;

	if (nwords < 1) {
		rds_errf(why, whysize, "expected ADDR or \"sentinel ADDR ... master NAME\"");
		return -1;
	}
	if (strcmp(words[0], "sentinel") != 0) {
		if (nwords != 1) {
			rds_errf(why, whysize, "expected one ADDR (or \"sentinel ADDR ... master "
			    "NAME\")");
			return -1;
		}
		if (rds_addr_parse(words[0], RDS_DEFAULT_PORT, &c->server, why, whysize) != 0)
			return -1;
		c->nsentinel = 0;
		return 0;
	}
	c->nsentinel = 0;
	memset(&c->server, 0, sizeof(c->server));
	for (i = 1; i < nwords && strcmp(words[i], "master") != 0; i++) {
		if (c->nsentinel == RDS_SENTINEL_MAX) {
			rds_errf(why, whysize, "at most %d sentinels", RDS_SENTINEL_MAX);
			return -1;
		}
		if (rds_addr_parse(words[i], RDS_SENTINEL_PORT, &c->sentinel[c->nsentinel], why,
		    whysize) != 0)
			return -1;
		c->nsentinel++;
	}
	if (c->nsentinel == 0 || i + 2 != nwords) {
		c->nsentinel = 0;
		rds_errf(why, whysize, "expected \"sentinel ADDR ... master NAME\"");
		return -1;
	}
	if (strlen(words[i + 1]) >= sizeof(c->master) || words[i + 1][0] == '\0' ||
	    strpbrk(words[i + 1], " \t\r\n") != NULL) {
		c->nsentinel = 0;
		rds_errf(why, whysize, "bad master name");
		return -1;
	}
	snprintf(c->master, sizeof(c->master), "%s", words[i + 1]);
	return 0;
}
