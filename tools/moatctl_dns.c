/*
 * moatctl query - ask moat's resolver (core/dns.c), as moatd would
 *
 * SYNOPSIS
 *	moatctl query [--resolver system|recursive|ADDR[@PORT]] [--timeout MS]
 *	              [--sync] [--type T] NAME ...
 *
 * DESCRIPTION
 *	Sends every NAME at once through the same resolver, cache and
 *	deadline moatd uses, from an event loop (or, with --sync, one after
 *	the other from a blocking thread, the path the checks on the work
 *	pool take), and prints each answer as it arrives:
 *
 *	NAME TYPE status=ok|nodata|nxdomain|temperror [why=W] ms=N
 *	  TYPE VALUE            (one line per record)
 *
 *	T is A (default), AAAA, TXT, MX, PTR, NS or CNAME. Exit 0 when every
 *	name got an answer that is not temperror, 1 otherwise, 2 on usage.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "dns.h"
#include "moatctl.h"

#define QUERY_MAX 256

struct qstate {
	const char *names[QUERY_MAX];
	int n, left, bad, type;
	struct timespec t0;
	struct event_base *base;
};

static const struct { const char *name; int type; } qtypes[] = {
	{ "A", DNS_T_A }, { "AAAA", DNS_T_AAAA }, { "TXT", DNS_T_TXT }, { "MX", DNS_T_MX },
	{ "PTR", DNS_T_PTR }, { "NS", DNS_T_NS }, { "CNAME", DNS_T_CNAME },
};

static const char *
qtype_name(int t)
{
	for (size_t i = 0; i < sizeof(qtypes) / sizeof(qtypes[0]); i++)
		if (qtypes[i].type == t)
			return qtypes[i].name;
	return "?";
}

static long
elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* put_txt - a TXT value, printable, quoted */
static void
put_txt(const char *s, int n)
{
	putchar('"');
	for (int i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			printf("\\%03u", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* print_answer - the stable output format */
static void
print_answer(const char *name, const struct dns_answer *a, long ms)
{
	static const char *const st[] = { "ok", "nodata", "nxdomain", "temperror" };
	char buf[4096];

	printf("%s %s status=%s", name, qtype_name(a->rrtype), st[a->status]);
	if (a->status == DNS_TEMPERROR && a->why)
		printf(" why=%s", a->why);
	printf(" ms=%ld\n", ms);
	for (int i = 0; i < a->n; i++) {
		unsigned char b[16];
		int r;

		printf("  %s ", qtype_name(a->rrtype));
		switch (a->rrtype) {
		case DNS_T_A:
			if (dns_rr_a(a, i, b) == 0 && inet_ntop(AF_INET, b, buf, sizeof(buf)))
				fputs(buf, stdout);
			else
				fputs("malformed", stdout);
			break;
		case DNS_T_AAAA:
			if (dns_rr_aaaa(a, i, b) == 0 && inet_ntop(AF_INET6, b, buf, sizeof(buf)))
				fputs(buf, stdout);
			else
				fputs("malformed", stdout);
			break;
		case DNS_T_TXT:
			r = dns_rr_txt(a, i, buf, sizeof(buf));
			if (r >= 0)
				put_txt(buf, r);
			else
				fputs("malformed", stdout);
			break;
		case DNS_T_MX:
			if (a->len[i] >= 2 && dns_rr_name(a, i, 2, buf, sizeof(buf)) >= 0)
				printf("%u %s", ((unsigned char)a->data[i][0] << 8) |
				    (unsigned char)a->data[i][1], buf);
			else
				fputs("malformed", stdout);
			break;
		default:
			if (dns_rr_name(a, i, 0, buf, sizeof(buf)) >= 0)
				fputs(buf, stdout);
			else
				fputs("malformed", stdout);
			break;
		}
		putchar('\n');
	}
	fflush(stdout);
}

static void
query_done(void *ctx, uint64_t tag, const struct dns_answer *a)
{
	struct qstate *s = ctx;

	print_answer(s->names[tag], a, elapsed_ms(&s->t0));
	if (a->status == DNS_TEMPERROR)
		s->bad++;
	if (--s->left == 0)
		event_base_loopbreak(s->base);
}

/* moatctl_resolver_word - one --resolver value into dc: system,
 * recursive or ADDR[@PORT] (a forwarder; given again, one more); -1 when
 * it does not fit */
int
moatctl_resolver_word(const char *v, struct dns_conf *dc)
{
	if (strcmp(v, "system") == 0)
		dc->mode = DNS_MODE_SYSTEM;
	else if (strcmp(v, "recursive") == 0)
		dc->mode = DNS_MODE_RECURSIVE;
	else if (dc->nforward < DNS_FORWARD_MAX && strlen(v) < sizeof(dc->forward[0])) {
		dc->mode = DNS_MODE_FORWARD;
		strcpy(dc->forward[dc->nforward++], v);
	} else
		return -1;
	return 0;
}

/* moatctl_query - see the synopsis */
int
moatctl_query(int argc, char **argv)
{
	struct dns_conf dc;
	struct qstate s;
	unsigned timeout = 5000;
	int sync = 0;
	char *err = NULL;
	struct dns_loop *l;

	memset(&dc, 0, sizeof(dc));
	memset(&s, 0, sizeof(s));
	s.type = DNS_T_A;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--resolver") == 0 && i + 1 < argc) {
			if (moatctl_resolver_word(argv[++i], &dc) != 0)
				goto usage;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			timeout = (unsigned)strtoul(argv[++i], NULL, 10);
			if (timeout == 0 || timeout > 120000)
				goto usage;
		} else if (strcmp(argv[i], "--sync") == 0) {
			sync = 1;
		} else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
			size_t k;

			i++;
			for (k = 0; k < sizeof(qtypes) / sizeof(qtypes[0]); k++)
				if (strcasecmp(qtypes[k].name, argv[i]) == 0)
					break;
			if (k == sizeof(qtypes) / sizeof(qtypes[0]))
				goto usage;
			s.type = qtypes[k].type;
		} else if (argv[i][0] == '-') {
			goto usage;
		} else if (s.n < QUERY_MAX) {
			s.names[s.n++] = argv[i];
		} else
			goto usage;
	}
	if (s.n == 0)
		goto usage;
	if (dns_init(&dc, &err) != 0) {
		fprintf(stderr, "moatctl: %s\n", err);
		free(err);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &s.t0);
	if (sync) {
		for (int i = 0; i < s.n; i++) {
			struct dns_answer *a;

			dns_query_sync(s.names[i], s.type, timeout, &a);
			print_answer(s.names[i], a, elapsed_ms(&s.t0));
			if (a->status == DNS_TEMPERROR)
				s.bad++;
			dns_answer_free(a);
		}
		dns_shutdown();
		return s.bad ? 1 : 0;
	}
	s.base = event_base_new();
	l = dns_loop_new(s.base);
	for (int i = 0; i < s.n; i++) {
		if (dns_query(l, s.names[i], s.type, timeout, query_done, &s, (uint64_t)i) != 0) {
			printf("%s %s status=temperror why=refused-local ms=0\n", s.names[i],
			    qtype_name(s.type));
			s.bad++;
		} else
			s.left++;
	}
	if (s.left > 0)
		event_base_dispatch(s.base);
	dns_shutdown();
	dns_loop_free(l);
	event_base_free(s.base);
	return s.bad ? 1 : 0;
usage:
	return moatctl_usage("query");
}
