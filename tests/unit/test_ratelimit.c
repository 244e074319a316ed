/*
 * test_ratelimit - rate limit declarations (policy/conf_ratelimit.c),
 * their keys and the in-process GCRA (filters/ratelimit.c), and the
 * "ratelimit NAME" condition (policy/rules.c)
 */
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "ratelimit.h"
#include "rules.h"
#include "t.h"

static const char base[] = "listen 127.0.0.1:2525\nupstream 127.0.0.1:2526\n";

static struct conf *
load(const char *text, char **errs)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s%s", base, text);
	*errs = NULL;
	return conf_load_buffer("t.conf", buf, strlen(buf), errs);
}

static void
test_declare(void)
{
	char *errs;
	struct conf *c = load("ratelimit perip key client-net/24/48 rate 10/1m\n"
	    "ratelimit sub key login rate 100/1h burst 20 per recipient\n"
	    "ratelimit pair key client-ip+sender-domain rate 5/10s\n"
	    "on mail ratelimit perip tempfail 451 4.7.1 \"slow down\"\n"
	    "on rcpt ratelimit sub or ratelimit pair tempfail 451 4.7.1 \"too many\"\n", &errs);

	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	if (c == NULL) {
		free(errs);
		return;
	}
	T_CHECK(c->ratelimits != NULL && c->ratelimits->n == 3);
	T_CHECK(c->ratelimits->d[0].emit_ms == 6000 && c->ratelimits->d[0].tau_ms == 60000);
	T_CHECK(c->ratelimits->d[0].v4_prefix == 24 && c->ratelimits->d[0].v6_prefix == 48);
	T_CHECK(c->ratelimits->d[1].per_rcpt && c->ratelimits->d[1].burst == 20);
	T_CHECK(c->ratelimits->d[1].tau_ms == 36000u * 20);
	T_CHECK(c->ratelimits->d[2].parts == (RL_CLIENT | RL_SENDER_DOMAIN));
	T_CHECK(rules_stage_ratelimits(c->rules, RS_MAIL) == 1u);
	T_CHECK(rules_stage_ratelimits(c->rules, RS_RCPT) == 6u);
	T_CHECK(rules_stage_needs(c->rules, RS_RCPT, 5));
	conf_unref(c);
}

static void
test_declare_errors(void)
{
	static const struct { const char *text, *want; } cases[] = {
		{ "ratelimit a key client-net rate 10\n", "expected a rate" },
		{ "ratelimit a key client-net rate 10/1y\n", "expected a rate" },
		{ "ratelimit a key client-net rate 10/8d\n", "expected a rate" },
		{ "ratelimit a key bogus rate 10/1m\n", "unknown key part" },
		{ "ratelimit a key client-net/33 rate 10/1m\n", "unknown key part" },
		{ "ratelimit a rate 10/1m\n", "needs a key" },
		{ "ratelimit a key login\n", "needs a rate" },
		{ "ratelimit a key login rate 1/1m per day\n", "per message or per recipient" },
		{ "ratelimit a key login rate 1/1m\nratelimit a key sender rate 1/1m\n", "declared twice" },
		{ "on mail ratelimit nope reject 550 5.7.1 \"x\"\n", "unknown rate limit \"nope\"" },
		{ "ratelimit s key sender rate 1/1m\non connect ratelimit s reject 550 5.7.1 \"x\"\n",
		  "use it in \"on mail\" rules or later" },
		{ "ratelimit r key login rate 1/1m per recipient\non mail ratelimit r reject 550 5.7.1 \"x\"\n",
		  "\"on rcpt\"" },
		{ "ratelimit-node-share 26\n", "value out of range \"26\" (0 to 25)" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *errs;
		struct conf *c = load(cases[i].text, &errs);

		T_CHECKF(c == NULL, "case %zu loaded", i);
		T_CHECKF(errs != NULL && strstr(errs, cases[i].want) != NULL && strstr(errs, "t.conf:") != NULL,
		    "case %zu: %s", i, errs ? errs : "(none)");
		if (c)
			conf_unref(c);
		free(errs);
	}
}

static void
test_keys(void)
{
	struct sockaddr_storage ss, ss6;
	struct rl_def d;
	struct rl_subject s = { 0 };
	char k[RL_KEY_MAX];

	memset(&d, 0, sizeof(d));
	snprintf(d.name, sizeof(d.name), "n");
	d.parts = RL_CLIENT | RL_SENDER_DOMAIN;
	d.v4_prefix = 24;
	d.v6_prefix = 48;
	s.client = t_sockaddr("192.0.2.77", &ss);
	s.sender_domain = "Example.ORG";
	T_CHECK(rl_key(&d, &s, k, sizeof(k)) > 0 && strcmp(k, "n|192.0.2.0/24|example.org") == 0);
	s.client = t_sockaddr("2001:db8:1:2::5", &ss6);
	T_CHECK(rl_key(&d, &s, k, sizeof(k)) > 0 && strcmp(k, "n|2001:db8:1::/48|example.org") == 0);
	s.sender_domain = NULL;		/* the null sender: not counted */
	T_CHECK(rl_key(&d, &s, k, sizeof(k)) == 0);
	d.parts = RL_LOGIN;
	T_CHECK(rl_key(&d, &s, k, sizeof(k)) == 0);
	s.login = "Alice";
	T_CHECK(rl_key(&d, &s, k, sizeof(k)) > 0 && strcmp(k, "n|alice") == 0);
	T_CHECK(rl_key(&d, &s, k, 4) == -1);
	s.login = "a|b%c";		/* no value poses as two parts */
	T_CHECK(rl_key(&d, &s, k, sizeof(k)) > 0 && strcmp(k, "n|a%7cb%25c") == 0);
	T_CHECK(rl_key(&d, &s, k, 8) == -1);
}

static void
test_gcra_local(void)
{
	/* 5 per 10 s, burst 5: five at once, the sixth refused; one more
	 * after 2 s; a refused one does not move the limit */
	unsigned T = 2000, tau = 10000;
	uint64_t now = 1000000;
	int r;

	rl_local_reset();
	for (int i = 0; i < 5; i++)
		T_CHECKF(rl_local_take("k1", T, tau, 1, now) == 0, "take %d", i);
	T_CHECK(rl_local_take("k1", T, tau, 1, now) == 1);
	T_CHECK(rl_local_take("k1", T, tau, 1, now + 1000) == 1);
	T_CHECK(rl_local_take("k1", T, tau, 1, now + 2000) == 0);
	T_CHECK(rl_local_take("k1", T, tau, 1, now + 2000) == 1);
	T_CHECK(rl_local_take("k2", T, tau, 1, now) == 0);	/* another key */
	r = rl_local_take("k3", T, tau, 6, now);		/* a cost over the burst */
	T_CHECK(r == 1);
	T_CHECK(rl_local_take("k1", T, tau, 1, now + 60000) == 0);	/* long after: full again */
}

static void
test_block(void)
{
	/* ratelimit-node-share: burst x PCT / 100, none below 2 */
	struct rl_def d = { .burst = 1000000 };

	T_CHECK(rl_block(&d, 0) == 0);
	T_CHECK(rl_block(&d, 1) == 10000);
	d.burst = 199;
	T_CHECK(rl_block(&d, 1) == 0);		/* 1.99: exact */
	d.burst = 200;
	T_CHECK(rl_block(&d, 1) == 2);
	d.burst = 3;
	T_CHECK(rl_block(&d, 25) == 0);		/* a small limit stays exact */
	d.burst = 40;
	T_CHECK(rl_block(&d, 10) == 4);
	d.burst = 4000000000u;
	T_CHECK(rl_block(&d, 25) == 1000000);	/* capped */
}

int
main(void)
{
	T_RUN(test_declare);
	T_RUN(test_declare_errors);
	T_RUN(test_keys);
	T_RUN(test_gcra_local);
	T_RUN(test_block);
	return T_DONE("test_ratelimit");
}
