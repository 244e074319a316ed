/*
 * test_greylist - greylisting without Redis: durations and settings, key
 * building, the embedded store's decisions on a driven clock, delivery
 * through greylist_check(), persistence, refused files, the memory
 * bound, control commands and the script reply parser.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "glcache.h"
#include "greylist.h"
#include "glstore.h"
#include "log.h"
#include "t.h"

#define T0 1700000000LL

static char tmpdir[64];

static void
test_durations(void)
{
	static const struct { const char *in; int rc; uint64_t ms; } cases[] = {
		{ "300", 0, 300000 }, { "300s", 0, 300000 }, { "5m", 0, 300000 },
		{ "4h", 0, 14400000 }, { "36d", 0, 36ull * 86400000 }, { "200ms", 0, 200 },
		{ "0", 0, 0 }, { "", -1, 0 }, { "m", -1, 0 }, { "5x", -1, 0 }, { "-5", -1, 0 },
		{ "5 m", -1, 0 }, { "1234567890123", -1, 0 }, { "5mm", -1, 0 }, { "5M", -1, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 0;
		int rc = glstore_duration(cases[i].in, &ms);

		T_CHECKF(rc == cases[i].rc, "\"%s\" rc %d", cases[i].in, rc);
		if (rc == 0)
			T_CHECKF(ms == cases[i].ms, "\"%s\" = %llu", cases[i].in,
			    (unsigned long long)ms);
	}
}

/* test_glcache - the local memory of passes: expiry, replacement, bound */
static void
test_glcache(void)
{
	struct glcache *c = glcache_new(100);		/* 128 slots */
	struct greylist_conf g;
	unsigned passes = 0;
	char key[64];

	greylist_conf_init(&g);
	T_CHECK(g.cache == 60);
	T_CHECK(!glcache_get(c, "t:{192.0.2.0/24}|a|b", T0, NULL));
	glcache_put(c, "t:{192.0.2.0/24}|a|b", T0 + 60, 3);
	T_CHECK(glcache_get(c, "t:{192.0.2.0/24}|a|b", T0, &passes) && passes == 3);
	T_CHECK(glcache_get(c, "t:{192.0.2.0/24}|a|b", T0 + 59, NULL));
	T_CHECK(!glcache_get(c, "t:{192.0.2.0/24}|a|B", T0, NULL));	/* exact keys */
	T_CHECK(!glcache_get(c, "t:{192.0.2.0/24}|a|b", T0 + 60, NULL));	/* until is exclusive */
	T_CHECK(!glcache_get(c, "t:{192.0.2.0/24}|a|b", T0, NULL));	/* and it went */
	glcache_put(c, "c:{192.0.2.0/24}", T0 + 60, 5);
	glcache_put(c, "c:{192.0.2.0/24}", T0 + 90, 6);		/* same key: updated */
	T_CHECK(glcache_get(c, "c:{192.0.2.0/24}", T0 + 80, &passes) && passes == 6);
	/* many keys: never more live entries than slots, each one found or not,
	 * never another key's entry */
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "t:{10.%d.0.0/24}||r", i);
		glcache_put(c, key, T0 + 100, (unsigned)i);
	}
	T_CHECKF(glcache_count(c, T0) <= 128 && glcache_count(c, T0) >= 40, "%u",
	    glcache_count(c, T0));
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "t:{10.%d.0.0/24}||r", i);
		if (glcache_get(c, key, T0, &passes))
			T_CHECK(passes == (unsigned)i);
	}
	snprintf(key, sizeof(key), "t:{10.%d.0.0/24}||r", 4999);
	T_CHECK(glcache_get(c, key, T0, NULL));			/* the last one put stays */
	T_CHECK(glcache_count(c, T0 + 100) == 0);
	glcache_clear(c);
	T_CHECK(glcache_count(c, T0) == 0);
	glcache_free(c);
	glcache_free(NULL);
}

static void
test_settings(void)
{
	static const struct {
		const char *name;
		const char *w[6];
		int nw, rc;
	} cases[] = {
		{ "greylist-delay", { "5m" }, 1, 1 },
		{ "greylist-delay", { "200ms" }, 1, -1 },	/* whole seconds */
		{ "greylist-delay", { "2d" }, 1, -1 },
		{ "greylist-delay", { "5m", "6m" }, 2, -1 },
		{ "greylist-window", { "4h" }, 1, 1 },
		{ "greylist-window", { "30s" }, 1, -1 },
		{ "greylist-lifetime", { "36d" }, 1, 1 },
		{ "greylist-allow-after", { "5" }, 1, 1 },
		{ "greylist-allow-after", { "-1" }, 1, -1 },
		{ "greylist-allow-after", { "five" }, 1, -1 },
		{ "greylist-allow-lifetime", { "10d" }, 1, 1 },
		{ "greylist-key", { "net,sender,rcpt" }, 1, 1 },
		{ "greylist-key", { "org-domain", "net", "rcpt" }, 3, 1 },
		{ "greylist-key", { "sender,rcpt" }, 1, -1 },	/* no client */
		{ "greylist-key", { "net,net" }, 1, -1 },
		{ "greylist-key", { "net,helo" }, 1, -1 },
		{ "greylist-v4-prefix", { "24" }, 1, 1 },
		{ "greylist-v4-prefix", { "33" }, 1, -1 },
		{ "greylist-v6-prefix", { "48" }, 1, 1 },
		{ "greylist-cache", { "5m" }, 1, 1 },
		{ "greylist-cache", { "0" }, 1, 1 },
		{ "greylist-cache", { "2h" }, 1, -1 },
		{ "greylist-cache", { "500ms" }, 1, -1 },	/* whole seconds */
		{ "greylist-on-error", { "tempfail" }, 1, 1 },
		{ "greylist-on-error", { "reject" }, 1, -1 },
		{ "greylist-store", { "/var/lib/moat/greylist" }, 1, 1 },
		{ "greylist-store", { "relative" }, 1, -1 },
		{ "greylist-store", { "none" }, 1, 1 },
		{ "greylist-store-max", { "50" }, 1, -1 },
		{ "greylist-store-max", { "1000" }, 1, 1 },
		{ "redis", { "127.0.0.1:6390" }, 1, 1 },
		{ "redis", { "[::1]:6390" }, 1, 1 },
		{ "redis", { "/run/redis/redis.sock" }, 1, 1 },
		{ "redis", { "redis.example.com:6379" }, 1, -1 },	/* would block */
		{ "redis", { "127.0.0.1:0" }, 1, -1 },
		{ "redis", { "sentinel", "127.0.0.1:26379", "10.0.0.2", "master", "mymaster" },
		    5, 1 },
		{ "redis", { "sentinel", "127.0.0.1:26379", "master" }, 3, -1 },
		{ "redis", { "sentinel", "master", "m" }, 3, -1 },
		{ "redis-timeout", { "200ms" }, 1, 1 },
		{ "redis-timeout", { "1ms" }, 1, -1 },
		{ "redis-prefix", { "moat:" }, 1, 1 },
		{ "redis-prefix", { "has space" }, 1, -1 },
		{ "redis-db", { "3" }, 1, 1 },
		{ "redis-password", { "secret" }, 1, 1 },
		{ "listen", { "127.0.0.1:25" }, 1, 0 },		/* not ours */
	};
	struct greylist_conf g;
	char why[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		greylist_conf_init(&g);
		why[0] = '\0';
		rc = greylist_conf_set(&g, cases[i].name, cases[i].w, cases[i].nw, why, sizeof(why));
		T_CHECKF(rc == cases[i].rc, "%s %s: rc %d (%s)", cases[i].name, cases[i].w[0], rc,
		    why);
		if (rc == -1)
			T_CHECKF(why[0] != '\0', "%s: no message", cases[i].name);
	}

	greylist_conf_init(&g);
	T_CHECK(g.delay == 300 && g.window == 86400 && g.lifetime == 36 * 86400);
	T_CHECK(g.allow_after == 5 && g.v4_prefix == 24 && g.v6_prefix == 64);
	T_CHECK(g.on_error == GL_ON_ERROR_ACCEPT && strcmp(g.prefix, "moat:") == 0);
	T_CHECK(g.redis.timeout_ms == 200 && !rds_conf_enabled(&g.redis));
	T_CHECK(greylist_conf_check(&g, why, sizeof(why)) == 0);
	{
		const char *w[] = { "2h" };
		const char *w2[] = { "1h" };

		T_CHECK(greylist_conf_set(&g, "greylist-delay", w, 1, why, sizeof(why)) == 1);
		T_CHECK(greylist_conf_set(&g, "greylist-window", w2, 1, why, sizeof(why)) == 1);
		T_CHECK(greylist_conf_check(&g, why, sizeof(why)) == -1 && strstr(why, "window"));
	}
	{
		const char *w[] = { "sentinel", "127.0.0.1:26379", "[::1]", "master", "mm" };

		greylist_conf_init(&g);
		T_CHECK(greylist_conf_set(&g, "redis", w, 5, why, sizeof(why)) == 1);
		T_CHECK(g.redis.nsentinel == 2 && strcmp(g.redis.master, "mm") == 0);
		T_CHECK(g.redis.sentinel[1].port == 26379 && strcmp(g.redis.sentinel[1].host,
		    "::1") == 0);
	}
}

static void
test_keys(void)
{
	struct greylist_conf c;
	struct sockaddr_storage ss;
	char ck[GLSTORE_KEY_MAX], tk[GLSTORE_KEY_MAX], longs[600];
	struct greylist_triplet t = { NULL, "Alice@Example.COM", "bob@example.net", NULL, NULL };
	const char *w[] = { "org-domain,sender-domain-spf,net,rcpt" };
	char why[128];

	greylist_conf_init(&c);
	t.client = t_sockaddr("192.0.2.77", &ss);
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{192.0.2.0/24}") == 0, "%s", ck);
	T_CHECKF(strcmp(tk, "t:{192.0.2.0/24}|alice@example.com|bob@example.net") == 0, "%s", tk);

	t.client = t_sockaddr("2001:db8:1:2:3:4:5:6", &ss);
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{2001:db8:1:2::/64}") == 0, "%s", ck);

	t.client = t_sockaddr("::ffff:198.51.100.9", &ss);
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{198.51.100.0/24}") == 0, "%s", ck);

	t.sender = "";
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(tk, "t:{198.51.100.0/24}|<>|bob@example.net") == 0, "%s", tk);

	/* bytes that would break a key, a line or a log are escaped */
	t.sender = "a b|c%d{e}\x01\xc3\xa9";
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(tk, "t:{198.51.100.0/24}|a%20b%7Cc%25d%7Be%7D%01%C3%A9|bob@example.net")
	    == 0, "%s", tk);

	/* a long part is cut and ends in a hash of the whole; distinct stays distinct */
	memset(longs, 'x', sizeof(longs) - 1);
	longs[sizeof(longs) - 1] = '\0';
	t.sender = longs;
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECK(strlen(tk) < 40 + GLSTORE_PART_MAX * 2);
	{
		char tk2[GLSTORE_KEY_MAX];

		longs[500] = 'y';
		T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk2, sizeof(tk2)) == 0);
		T_CHECK(strcmp(tk, tk2) != 0 && strlen(tk) == strlen(tk2));
	}

	/* org domain first, then SPF domain, then the network */
	T_CHECK(greylist_conf_set(&c, "greylist-key", w, 1, why, sizeof(why)) == 1);
	t.sender = "alice@example.com";
	t.spf_domain = "Example.COM.";
	t.org_domain = NULL;
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{spf:example.com}") == 0, "%s", ck);
	T_CHECKF(strcmp(tk, "t:{spf:example.com}||bob@example.net") == 0, "%s", tk);
	t.org_domain = "google.com";
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{org:google.com}") == 0, "%s", ck);
	t.org_domain = t.spf_domain = NULL;
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{198.51.100.0/24}") == 0, "%s", ck);

	/* other prefix lengths */
	greylist_conf_init(&c);
	c.v4_prefix = 32;
	c.v6_prefix = 48;
	t.client = t_sockaddr("192.0.2.77", &ss);
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{192.0.2.77/32}") == 0, "%s", ck);
	t.client = t_sockaddr("2001:db8:1:2::1", &ss);
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{2001:db8:1::/48}") == 0, "%s", ck);
	c.v4_prefix = 20;
	t.client = t_sockaddr("192.0.31.77", &ss);
	T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
	T_CHECKF(strcmp(ck, "c:{192.0.16.0/20}") == 0, "%s", ck);
}

static void
test_client_parse(void)
{
	static const struct { const char *in; int rc; const char *out; } cases[] = {
		{ "192.0.2.77", 0, "192.0.2.0/24" }, { "192.0.2.0/24", 0, "192.0.2.0/24" },
		{ "192.0.2.0/16", -1, NULL }, { "2001:db8::1", 0, "2001:db8::/64" },
		{ "::ffff:192.0.2.1", 0, "192.0.2.0/24" }, { "spf:Example.com", 0, "spf:example.com" },
		{ "org:example.com.", 0, "org:example.com" }, { "org:bad domain", -1, NULL },
		{ "example.com", -1, NULL }, { "192.0.2.1/", -1, NULL }, { "192.0.2.1/x", -1, NULL },
	};
	char out[GLSTORE_ID_MAX], why[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = glstore_client_parse(cases[i].in, 24, 64, out, sizeof(out), why,
		    sizeof(why));

		T_CHECKF(rc == cases[i].rc, "%s: rc %d", cases[i].in, rc);
		if (rc == 0)
			T_CHECKF(strcmp(out, cases[i].out) == 0, "%s: %s", cases[i].in, out);
		else
			T_CHECKF(why[0] != '\0', "%s: no message", cases[i].in);
	}
}

/* The lifecycle every backend must follow (test_redis.c runs the same). */
struct lc_step {
	int64_t at;
	const char *ip, *rcpt;
	enum gl_status status;
	enum gl_reason reason;
	unsigned retry_in, passes;
};

static const struct lc_step lifecycle[] = {
	{ 0, "192.0.2.10", "r1@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },
	{ 4, "192.0.2.10", "r1@x.org", GL_GREYLISTED, GL_R_EARLY, 6, 0 },
	{ 10, "192.0.2.10", "r1@x.org", GL_PASS, GL_R_RETRIED, 0, 1 },
	{ 11, "192.0.2.10", "r1@x.org", GL_PASS, GL_R_KNOWN, 0, 1 },
	{ 12, "192.0.2.10", "r2@x.org", GL_GREYLISTED, GL_R_NEW, 10, 1 },
	{ 12, "192.0.2.99", "r2@x.org", GL_GREYLISTED, GL_R_EARLY, 10, 1 },	/* same /24 */
	{ 22, "192.0.2.200", "r2@x.org", GL_PASS, GL_R_NOW_ALLOWLISTED, 0, 2 },
	{ 23, "192.0.2.10", "r3@x.org", GL_ALLOWLISTED, GL_R_ALLOWLISTED, 0, 2 },
	{ 30, "198.51.100.7", "r4@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },
	{ 200, "198.51.100.7", "r4@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },	/* window */
	{ 210, "198.51.100.7", "r4@x.org", GL_PASS, GL_R_RETRIED, 0, 1 },
	{ 5100, "192.0.2.10", "r3@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },	/* allow over */
	{ 5101, "192.0.2.10", "r1@x.org", GL_GREYLISTED, GL_R_NEW, 10, 0 },	/* lifetime */
};

/* lc_conf - the timings of the lifecycle table */
static void
lc_conf(struct greylist_conf *c)
{
	greylist_conf_init(c);
	c->delay = 10;
	c->window = 100;
	c->lifetime = 1000;
	c->allow_after = 2;
	c->allow_lifetime = 5000;
}

static void
test_store_lifecycle(void)
{
	struct greylist_conf c;
	struct glstore_params p;
	struct glstore *s;
	char err[256];

	lc_conf(&c);
	greylist_store_params(&c, &p);
	s = glstore_open(NULL, 1000, T0, err, sizeof(err));
	T_CHECK(s != NULL && err[0] == '\0');
	for (size_t i = 0; i < sizeof(lifecycle) / sizeof(lifecycle[0]); i++) {
		const struct lc_step *st = &lifecycle[i];
		struct sockaddr_storage ss;
		struct greylist_triplet t = { t_sockaddr(st->ip, &ss), "s@y.org", st->rcpt, NULL, NULL };
		char ck[GLSTORE_KEY_MAX], tk[GLSTORE_KEY_MAX];
		struct gl_decision d;
		struct glstore_stats before, after;

		T_CHECK(greylist_key(&c, &t, ck, sizeof(ck), tk, sizeof(tk)) == 0);
		/* read-only first: the same verdict, and nothing changed */
		glstore_stats(s, &before);
		glstore_peek(s, ck, tk, T0 + st->at, &p, &d);
		glstore_stats(s, &after);
		T_CHECKF(d.status == st->status && d.reason == st->reason &&
		    d.retry_in == st->retry_in && d.passes == st->passes,
		    "peek %zu: %s/%s retry %u passes %u", i, greylist_status_name(d.status),
		    greylist_reason_name(d.reason), d.retry_in, d.passes);
		T_CHECKF(memcmp(&before, &after, sizeof(before)) == 0, "peek %zu changed the store", i);
		glstore_decide(s, ck, tk, T0 + st->at, &p, &d);
		T_CHECKF(d.status == st->status && d.reason == st->reason &&
		    d.retry_in == st->retry_in && d.passes == st->passes,
		    "step %zu: %s/%s retry %u passes %u", i, greylist_status_name(d.status),
		    greylist_reason_name(d.reason), d.retry_in, d.passes);
	}
	glstore_close(s);
}

static int64_t fake_now;

static int64_t
fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

struct got {
	int calls;
	uint64_t tag;
	struct greylist_verdict v;
	char key[GLSTORE_KEY_MAX];
	struct greylist *free_me;
};

static void
got_cb(void *ctx, uint64_t tag, const struct greylist_verdict *v)
{
	struct got *g = ctx;

	g->calls++;
	g->tag = tag;
	g->v = *v;
	snprintf(g->key, sizeof(g->key), "%s", v->key);
	g->v.key = g->key;
	g->v.why = "";
	if (g->free_me) {
		greylist_free(g->free_me);
		g->free_me = NULL;
	}
}

static void
test_check_embedded(void)
{
	struct event_base *base = event_base_new();
	struct greylist_conf c;
	struct glstore *s = glstore_open(NULL, 1000, T0, NULL, 0);
	struct greylist *g;
	struct sockaddr_storage ss;
	struct greylist_triplet t = { t_sockaddr("192.0.2.10", &ss), "s@y.org", "r@x.org", NULL, NULL };
	struct got got = { 0 }, got2 = { 0 };
	char text[128];

	lc_conf(&c);
	T_CHECK(greylist_new(base, &c, NULL) == NULL);	/* neither redis nor store */
	g = greylist_new(base, &c, s);
	greylist_set_clock(g, fake_clock, NULL);
	fake_now = T0;
	T_CHECK(greylist_check(g, &t, got_cb, &got, 42) == 0);
	T_CHECK(got.calls == 0);		/* never before greylist_check returns */
	for (int i = 0; i < 10 && got.calls == 0; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	T_CHECK(got.calls == 1 && got.tag == 42);
	T_CHECK(got.v.status == GL_GREYLISTED && got.v.retry_in == 10);
	T_CHECKF(strcmp(got.key, "t:{192.0.2.0/24}|s@y.org|r@x.org") == 0, "%s", got.key);
	T_CHECK(greylist_reply_text(&got.v, text, sizeof(text)) == 0);
	T_CHECKF(strcmp(text, "greylisted, please retry in 10 seconds") == 0, "%s", text);

	/* freeing inside the callback: the second verdict is never delivered */
	fake_now = T0 + 10;
	got.free_me = g;
	T_CHECK(greylist_check(g, &t, got_cb, &got, 43) == 0);
	T_CHECK(greylist_check(g, &t, got_cb, &got2, 44) == 0);
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	T_CHECK(got.calls == 2 && got.tag == 43 && got.v.status == GL_PASS);
	T_CHECK(got2.calls == 0);

	/* the same decisions at once, without the loop */
	g = greylist_new(base, &c, s);
	greylist_set_clock(g, fake_clock, NULL);
	{
		struct greylist_triplet t2 = t;
		struct greylist_verdict v;
		struct greylist_counters k0, k1;

		greylist_counters(&k0);
		t2.rcpt = "now@x.org";
		fake_now = T0 + 100;
		T_CHECK(greylist_decide_now(g, &t2, &v) == 1 && v.status == GL_GREYLISTED &&
		    v.reason == GL_R_NEW && v.retry_in == 10 && !v.cached);
		T_CHECKF(strcmp(v.key, "t:{192.0.2.0/24}|s@y.org|now@x.org") == 0, "%s", v.key);
		fake_now = T0 + 111;
		T_CHECK(greylist_decide_now(g, &t2, &v) == 1 && v.status == GL_PASS &&
		    v.reason == GL_R_NOW_ALLOWLISTED);	/* the second pass: allow_after 2 */
		greylist_counters(&k1);
		T_CHECK(k1.checks - k0.checks == 2 && k1.greylisted - k0.greylisted == 1 &&
		    k1.pass - k0.pass == 1);
	}
	greylist_free(g);

	/* freeing with verdicts pending cancels them */
	g = greylist_new(base, &c, s);
	got2.calls = 0;
	T_CHECK(greylist_check(g, &t, got_cb, &got2, 45) == 0);
	greylist_free(g);
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	T_CHECK(got2.calls == 0);
	greylist_free(NULL);
	glstore_close(s);
	event_base_free(base);
}

/* path - a file in the test's directory */
static const char *
path(const char *name)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s/%s", tmpdir, name);
	return buf;
}

/* write_file - put text in a file */
static void
write_file(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static void
test_persistence(void)
{
	struct greylist_conf c;
	struct glstore_params p;
	struct glstore *s;
	struct glstore_stats st;
	char err[512], file[256];
	struct gl_decision d;
	struct stat sb;

	lc_conf(&c);
	greylist_store_params(&c, &p);
	snprintf(file, sizeof(file), "%s", path("store"));
	s = glstore_open(file, 1000, T0, err, sizeof(err));
	T_CHECKF(s != NULL && err[0] == '\0', "%s", err);	/* a missing file is fine */
	glstore_decide(s, "c:{192.0.2.0/24}", "t:{192.0.2.0/24}|a|b", T0, &p, &d);
	T_CHECK(d.status == GL_GREYLISTED);
	glstore_decide(s, "c:{192.0.2.0/24}", "t:{192.0.2.0/24}|a|c", T0, &p, &d);
	glstore_decide(s, "c:{192.0.2.0/24}", "t:{192.0.2.0/24}|a|c", T0 + 10, &p, &d);
	T_CHECK(d.status == GL_PASS && d.passes == 1);
	glstore_decide(s, "c:{10.0.0.0/24}", "t:{10.0.0.0/24}|x|y", T0, &p, &d);
	T_CHECK(glstore_save(s, T0 + 10, err, sizeof(err)) == 0);
	glstore_close(s);
	T_CHECK(stat(file, &sb) == 0 && (sb.st_mode & 077) == 0);

	/* reloaded: the waiting triplet passes after its delay; the client kept its count */
	s = glstore_open(file, 1000, T0 + 11, err, sizeof(err));
	T_CHECKF(err[0] == '\0', "%s", err);
	glstore_stats(s, &st);
	T_CHECKF(st.records == 4 && st.triplets == 3 && st.clients == 1, "%llu records",
	    (unsigned long long)st.records);
	glstore_decide(s, "c:{192.0.2.0/24}", "t:{192.0.2.0/24}|a|b", T0 + 11, &p, &d);
	T_CHECK(d.status == GL_PASS && d.reason == GL_R_NOW_ALLOWLISTED && d.passes == 2);
	/* records expired by the time of loading are not loaded */
	T_CHECK(glstore_save(s, T0 + 11, err, sizeof(err)) == 0);
	glstore_close(s);
	s = glstore_open(file, 1000, T0 + 500, err, sizeof(err));
	glstore_stats(s, &st);
	T_CHECKF(st.records == 3, "%llu records", (unsigned long long)st.records);	/* 10.0.0.0 gone */
	glstore_close(s);
	unlink(file);
}

static void
test_corrupt_refused(void)
{
	static const char *const bad[] = {
		"",
		"moat-greylist 2\nend 0\n",
		"moat-greylist 1\n",					/* no end */
		"moat-greylist 1\nc:{1.2.3.0/24} 1 0 1800000000\n",	/* truncated */
		"moat-greylist 1\nc:{1.2.3.0/24} 1 0 1800000000\nend 2\n",
		"moat-greylist 1\nc:{1.2.3.0/24} 1 0 18000000x0\nend 1\n",
		"moat-greylist 1\nc:{1.2.3.0/24} 1 0\nend 1\n",
		"moat-greylist 1\nx:{1.2.3.0/24} 1 0 1800000000\nend 1\n",
		"moat-greylist 1\nt:{1.2.3.0/24}|a 1 0 1800000000\nend 1\n",
		"moat-greylist 1\nt:{1.2.3.0/24}|a|b 1 7 1800000000\nend 1\n",
		"moat-greylist 1\nc:{1.2.3.0/24} 1 0 1800000000\nend 1\nextra\n",
		"moat-greylist 1\nc:{1.2.3.0/24} 1 0 1800000000\nc:{1.2.3.0/24} 1 0 1800000000\n"
		    "end 2\n",
		"moat-greylist 1\nc:{1.2.3.0/24} 1 0 1800000000\r\nend 1\n",
		"moat-greylist 1\nc:{1.2.3.0/24} 99999999999999999 0 1800000000\nend 1\n",
	};
	char err[512], file[256], badfile[300];
	struct glstore_stats st;

	snprintf(file, sizeof(file), "%s", path("corrupt"));
	snprintf(badfile, sizeof(badfile), "%s.bad", file);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct glstore *s;

		write_file(file, bad[i]);
		s = glstore_open(file, 1000, T0, err, sizeof(err));
		T_CHECKF(s != NULL, "case %zu", i);
		if (s == NULL)
			continue;
		T_CHECKF(err[0] != '\0' && strstr(err, "refused") && strstr(err, "line"),
		    "case %zu: \"%s\"", i, err);
		glstore_stats(s, &st);
		T_CHECKF(st.records == 0, "case %zu: %llu records", i,
		    (unsigned long long)st.records);
		T_CHECKF(access(badfile, F_OK) == 0 && access(file, F_OK) != 0,
		    "case %zu: not moved aside", i);
		glstore_close(s);
		unlink(badfile);
	}
	/* the good version of the same is accepted */
	write_file(file, "moat-greylist 1\nc:{1.2.3.0/24} 1 0 1800000000\nend 1\n");
	{
		struct glstore *s = glstore_open(file, 1000, T0, err, sizeof(err));

		T_CHECKF(err[0] == '\0', "%s", err);
		glstore_stats(s, &st);
		T_CHECK(st.records == 1);
		glstore_close(s);
	}
	unlink(file);
}

static void
test_memory_bound(void)
{
	struct greylist_conf c;
	struct glstore_params p;
	struct glstore *s = glstore_open(NULL, 100, T0, NULL, 0);
	struct glstore_stats st;
	struct gl_decision d;
	char ck[64], tk[96];

	lc_conf(&c);
	greylist_store_params(&c, &p);
	for (int i = 0; i < 5000; i++) {
		snprintf(ck, sizeof(ck), "c:{10.%d.%d.0/24}", i / 256, i % 256);
		snprintf(tk, sizeof(tk), "t:{10.%d.%d.0/24}|s|r%d", i / 256, i % 256, i);
		glstore_decide(s, ck, tk, T0, &p, &d);
		T_CHECK(d.status == GL_GREYLISTED);
	}
	glstore_stats(s, &st);
	T_CHECKF(st.records <= 100 && st.evicted >= 4900, "%llu records, %llu evicted",
	    (unsigned long long)st.records, (unsigned long long)st.evicted);
	/* the newest survive: the last one retried passes */
	glstore_decide(s, ck, tk, T0 + 10, &p, &d);
	T_CHECK(d.status == GL_PASS);
	/* expired records are swept without being asked for */
	for (int i = 0; i < 200; i++) {
		snprintf(tk, sizeof(tk), "t:{10.0.0.0/24}|s|z%d", i % 3);
		glstore_decide(s, "c:{10.0.0.0/24}", tk, T0 + 100000, &p, &d);
	}
	glstore_stats(s, &st);
	T_CHECKF(st.records <= 8, "%llu records left", (unsigned long long)st.records);
	glstore_close(s);
}

/* ctl - run one control command; the reply (static) */
static const char *
ctl(struct glstore *s, const char *cmd, int want)
{
	static char last[4096];
	char *out = NULL;
	int rc = glstore_control(s, cmd, &out);

	T_CHECKF(rc == want, "\"%s\": rc %d: %s", cmd, rc, out ? out : "(null)");
	T_CHECKF(out != NULL && out[0] != '.', "\"%s\"", cmd);
	snprintf(last, sizeof(last), "%s", out ? out : "");
	free(out);
	return last;
}

static void
test_control(void)
{
	struct greylist_conf c;
	struct glstore_params p;
	struct glstore *s = glstore_open(NULL, 1000, T0, NULL, 0);
	struct gl_decision d;
	const char *r;

	lc_conf(&c);
	greylist_store_params(&c, &p);
	glstore_set_clock(s, fake_clock, NULL);
	glstore_set_defaults(s, 24, 64, 5000);
	fake_now = T0;
	glstore_decide(s, "c:{192.0.2.0/24}", "t:{192.0.2.0/24}|a|b", T0, &p, &d);
	r = ctl(s, "list", 0);
	T_CHECKF(strstr(r, "t:{192.0.2.0/24}|a|b first=2023-11-14T22:13:20Z passed=no "
	    "expires=2023-11-14T22:15:00Z\n") != NULL, "%s", r);
	T_CHECK(strstr(r, "total 1\n") != NULL);
	r = ctl(s, "allow 198.51.100.9", 0);
	T_CHECKF(strncmp(r, "allowed c:{198.51.100.0/24} until ", 34) == 0, "%s", r);
	glstore_decide(s, "c:{198.51.100.0/24}", "t:{198.51.100.0/24}|a|b", T0 + 1, &p, &d);
	T_CHECK(d.status == GL_ALLOWLISTED);
	r = ctl(s, "allow org:Example.com 2h", 0);
	T_CHECKF(strstr(r, "c:{org:example.com} until 2023-11-15T00:13:20Z") != NULL, "%s", r);
	r = ctl(s, "stats", 0);
	T_CHECKF(strstr(r, "records 3\n") && strstr(r, "allowlisted 2\n") &&
	    strstr(r, "triplets 1\n"), "%s", r);
	r = ctl(s, "list 1", 0);
	T_CHECKF(strncmp(r, "c:{org:example.com} passes=0 ", 29) == 0, "%s", r);
	r = ctl(s, "delete t:{192.0.2.0/24}|a|b", 0);
	T_CHECK(strcmp(r, "deleted 1\n") == 0);
	r = ctl(s, "delete 198.51.100.0/24", 0);
	T_CHECK(strcmp(r, "deleted 1\n") == 0);
	r = ctl(s, "delete 198.51.100.0/24", 0);
	T_CHECK(strcmp(r, "deleted 0\n") == 0);
	ctl(s, "allow 198.51.100.0/16", -1);
	ctl(s, "allow", -1);
	ctl(s, "allow 1.2.3.4 forever", -1);
	ctl(s, "list 0", -1);
	ctl(s, "list 1 2", -1);
	ctl(s, "frobnicate", -1);
	ctl(s, "", -1);
	ctl(s, "list\x1b[2J", -1);
	r = ctl(s, "stats now", -1);
	T_CHECK(strncmp(r, "error: ", 7) == 0);
	glstore_close(s);
}

/* an integer reply element */
static redisReply *
ri(long long v)
{
	static redisReply pool[64];
	static int n;
	redisReply *r = &pool[n++ % 64];

	memset(r, 0, sizeof(*r));
	r->type = REDIS_REPLY_INTEGER;
	r->integer = v;
	return r;
}

static void
test_reply_parse(void)
{
	static const struct { long long v[4]; int rc; } cases[] = {
		{ { 2, 0, 300, 0 }, 0 }, { { 2, 1, 12, 3 }, 0 }, { { 0, 2, 0, 1 }, 0 },
		{ { 0, 3, 0, 1 }, 0 }, { { 0, 4, 0, 5 }, 0 }, { { 1, 5, 0, 5 }, 0 },
		{ { 3, 6, 0, 0 }, -1 }, { { 0, 0, 0, 0 }, -1 }, { { 1, 2, 0, 0 }, -1 },
		{ { 2, 0, -1, 0 }, -1 }, { { 2, 0, 1LL << 40, 0 }, -1 }, { { 0, 2, 0, -3 }, -1 },
		{ { -1, 0, 0, 0 }, -1 },
	};
	redisReply arr, *el[4], str, err;
	struct gl_decision d;
	char why[GREYLIST_WHY_MAX];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&arr, 0, sizeof(arr));
		arr.type = REDIS_REPLY_ARRAY;
		arr.elements = 4;
		arr.element = el;
		for (int j = 0; j < 4; j++)
			el[j] = ri(cases[i].v[j]);
		T_CHECKF(greylist_reply_parse(&arr, &d, why, sizeof(why)) == cases[i].rc,
		    "case %zu", i);
		if (cases[i].rc == 0)
			T_CHECK(d.status == cases[i].v[0] && d.passes == cases[i].v[3]);
		else
			T_CHECK(d.status == GL_ERROR);
	}
	arr.elements = 3;
	T_CHECK(greylist_reply_parse(&arr, &d, why, sizeof(why)) == -1);
	arr.elements = 4;
	memset(&str, 0, sizeof(str));
	str.type = REDIS_REPLY_STRING;
	str.str = (char *)"2";
	str.len = 1;
	el[0] = &str;
	T_CHECK(greylist_reply_parse(&arr, &d, why, sizeof(why)) == -1);
	memset(&err, 0, sizeof(err));
	err.type = REDIS_REPLY_ERROR;
	err.str = (char *)"WRONGTYPE Operation\r\nagainst a key";
	err.len = strlen(err.str);
	T_CHECK(greylist_reply_parse(&err, &d, why, sizeof(why)) == -1);
	T_CHECKF(strstr(why, "WRONGTYPE") && !strchr(why, '\r') && !strchr(why, '\n'), "%s", why);
	T_CHECK(greylist_reply_parse(NULL, &d, why, sizeof(why)) == -1);
	T_CHECK(greylist_reply_parse(&str, &d, why, sizeof(why)) == -1);
}

static void
test_reply_text(void)
{
	struct greylist_verdict v = { .status = GL_GREYLISTED, .reason = GL_R_NEW, .retry_in = 300,
	    .why = "", .key = "" };
	char out[128];

	T_CHECK(greylist_reply_text(&v, out, sizeof(out)) == 0);
	T_CHECKF(strcmp(out, "greylisted, please retry in 5 minutes") == 0, "%s", out);
	v.retry_in = 7201;
	greylist_reply_text(&v, out, sizeof(out));
	T_CHECKF(strcmp(out, "greylisted, please retry in 3 hours") == 0, "%s", out);
	v.retry_in = 61;
	greylist_reply_text(&v, out, sizeof(out));
	T_CHECKF(strcmp(out, "greylisted, please retry in 61 seconds") == 0, "%s", out);
	T_CHECK(greylist_reply_text(&v, out, 8) == -1);
}

int
main(void)
{
	log_init("test_greylist", false, LOG_L_ERROR);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_greylist.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	T_RUN(test_durations);
	T_RUN(test_settings);
	T_RUN(test_glcache);
	T_RUN(test_keys);
	T_RUN(test_client_parse);
	T_RUN(test_store_lifecycle);
	T_RUN(test_check_embedded);
	T_RUN(test_persistence);
	T_RUN(test_corrupt_refused);
	T_RUN(test_memory_bound);
	T_RUN(test_control);
	T_RUN(test_reply_parse);
	T_RUN(test_reply_text);
	rmdir(tmpdir);
	return T_DONE("test_greylist");
}
