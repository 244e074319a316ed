/*
 * moatctl spf - run moat's SPF check (filters/spf.h) from the shell
 *
 * SYNOPSIS
 *	moatctl spf --resolver ADDR[@PORT] --ip IP [--helo NAME] [--from ADDR]
 *	            [--identity helo|mailfrom] [--timeout MS] [--explain]
 *	moatctl spf --resolver ADDR[@PORT] --batch [--timeout MS] [--explain]
 *
 * DESCRIPTION
 *	The first form checks one identity (default mailfrom; --from "" or no
 *	--from is the null sender, checked as postmaster@HELO) of a client
 *	address and prints one line:
 *
 *	    spf IDENTITY=RESULT domain=DOMAIN terms=N voids=N queries=N reason="TEXT"
 *
 *	RESULT is none, neutral, pass, fail, softfail, temperror or
 *	permerror; DOMAIN and TEXT are escaped (spf.h). Exit 0 whatever the
 *	result, 1 when the resolver cannot be set up, 2 on bad usage.
 *
 *	--batch reads one check per line from stdin, fields separated by a
 *	tab: ID, IP, HELO, FROM and optionally IDENTITY (an empty FROM is the
 *	null sender), and prints for each, in order:
 *
 *	    ID<tab>RESULT<tab>DOMAIN<tab>REASON
 *
 *	A line it cannot use gives "ID<tab>error<tab><tab>WHY". Lines are at
 *	most 2047 bytes; at most 100000 lines are read. The conformance test
 *	(tests/integration/test_spf_conformance.py) drives this form.
 *
 *	--explain fetches the explanation of a fail (exp=, as
 *	$spf-explanation does; spf.h) and adds it: explanation="TEXT" at the
 *	end of the line, or a fifth field in --batch output (empty when
 *	there is none).
 *
 *	--resolver forwards every query to that server (tests: a loopback
 *	DNS server); --timeout bounds each check (default 20000 ms).
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dns.h"
#include "moatctl.h"
#include "spf.h"

#define SPF_BATCH_LINE	2048
#define SPF_BATCH_MAX	100000

struct spf_args {
	const char *resolver, *ip, *helo, *from;
	enum spf_identity id;
	unsigned timeout_ms;
	int batch;
	bool explain;
};

static int
spf_usage(void)
{
	return moatctl_usage("spf");
}

/* spf_parse_args - the options; -1 on a usage error */
static int
spf_parse_args(int argc, char **argv, struct spf_args *a)
{
	memset(a, 0, sizeof(*a));
	a->id = SPF_ID_MAILFROM;
	for (int i = 2; i < argc; i++) {
		const char *o = argv[i];

		if (strcmp(o, "--batch") == 0) {
			a->batch = 1;
			continue;
		}
		if (strcmp(o, "--explain") == 0) {
			a->explain = true;
			continue;
		}
		if (i + 1 >= argc)
			return -1;
		if (strcmp(o, "--resolver") == 0)
			a->resolver = argv[++i];
		else if (strcmp(o, "--ip") == 0)
			a->ip = argv[++i];
		else if (strcmp(o, "--helo") == 0)
			a->helo = argv[++i];
		else if (strcmp(o, "--from") == 0)
			a->from = argv[++i];
		else if (strcmp(o, "--identity") == 0) {
			i++;
			if (strcmp(argv[i], "helo") == 0)
				a->id = SPF_ID_HELO;
			else if (strcmp(argv[i], "mailfrom") == 0)
				a->id = SPF_ID_MAILFROM;
			else
				return -1;
		} else if (strcmp(o, "--timeout") == 0) {
			char *end;
			unsigned long v = strtoul(argv[++i], &end, 10);

			if (*end != '\0' || v < 1 || v > 600000)
				return -1;
			a->timeout_ms = (unsigned)v;
		} else
			return -1;
	}
	if (a->resolver == NULL || (!a->batch && a->ip == NULL) || (a->batch && a->ip != NULL))
		return -1;
	return 0;
}

/* spf_ip - the client address; -1 when it is none */
static int
spf_ip(const char *s, struct spf_request *rq)
{
	if (inet_pton(AF_INET, s, rq->addr) == 1) {
		rq->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, rq->addr) == 1) {
		rq->family = AF_INET6;
		return 0;
	}
	return -1;
}

/* spf_batch_line - one tab-separated check; fields point into line */
static void
spf_batch_line(char *line, unsigned timeout_ms, bool explain)
{
	char *f[6];
	int n = 0;
	char *p = line;
	struct spf_request rq;
	struct spf_outcome out;
	enum spf_identity id = SPF_ID_MAILFROM;

	f[n++] = p;
	while (*p != '\0' && n < 6) {
		if (*p == '\t') {
			*p = '\0';
			f[n++] = p + 1;
		}
		p++;
	}
	if (n < 4 || n > 5) {
		printf("%s\terror\t\tneeds 4 or 5 tab-separated fields\n", f[0]);
		return;
	}
	if (n == 5) {
		if (strcmp(f[4], "helo") == 0)
			id = SPF_ID_HELO;
		else if (strcmp(f[4], "mailfrom") != 0) {
			printf("%s\terror\t\tbad identity\n", f[0]);
			return;
		}
	}
	memset(&rq, 0, sizeof(rq));
	if (spf_ip(f[1], &rq) != 0) {
		printf("%s\terror\t\tbad IP\n", f[0]);
		return;
	}
	rq.helo = f[2];
	rq.sender = f[3];
	rq.timeout_ms = timeout_ms;
	rq.want_exp = explain;
	spf_check(&rq, id, &out);
	if (explain)
		printf("%s\t%s\t%s\t%s\t%s\n", f[0], spf_res_name(out.res), out.domain, out.reason,
		    out.explanation);
	else
		printf("%s\t%s\t%s\t%s\n", f[0], spf_res_name(out.res), out.domain, out.reason);
}

/* spf_batch - every line of stdin */
static int
spf_batch(unsigned timeout_ms, bool explain)
{
	char line[SPF_BATCH_LINE];

	for (int n = 0; n < SPF_BATCH_MAX && fgets(line, sizeof(line), stdin) != NULL; n++) {
		size_t l = strlen(line);

		if (l > 0 && line[l - 1] != '\n' && !feof(stdin)) {
			int ch;

			while ((ch = getchar()) != EOF && ch != '\n')
				;
			printf("?\terror\t\tline too long\n");
			continue;
		}
		while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r'))
			line[--l] = '\0';
		if (l == 0)
			continue;
		spf_batch_line(line, timeout_ms, explain);
		fflush(stdout);
	}
	return 0;
}

int
moatctl_spf(int argc, char **argv)
{
	struct spf_args a;
	struct dns_conf conf;
	struct spf_request rq;
	struct spf_outcome out;
	char *err = NULL;
	int rc;

	if (spf_parse_args(argc, argv, &a) != 0)
		return spf_usage();
	memset(&conf, 0, sizeof(conf));
	if (moatctl_resolver_word(a.resolver, &conf) != 0)
		return spf_usage();
	if (dns_init(&conf, &err) != 0) {
		fprintf(stderr, "moatctl: spf: resolver %s: %s\n", a.resolver, err ? err : "failed");
		free(err);
		return 1;
	}
	free(err);
	if (a.batch) {
		rc = spf_batch(a.timeout_ms, a.explain);
		dns_shutdown();
		return rc;
	}
	memset(&rq, 0, sizeof(rq));
	if (spf_ip(a.ip, &rq) != 0) {
		dns_shutdown();
		fprintf(stderr, "moatctl: spf: bad --ip %s\n", a.ip);
		return 2;
	}
	rq.helo = a.helo;
	rq.sender = a.from != NULL ? a.from : "";
	rq.timeout_ms = a.timeout_ms;
	rq.want_exp = a.explain;
	spf_check(&rq, a.id, &out);
	printf("spf %s=%s domain=%s terms=%u voids=%u queries=%u reason=\"%s\"",
	    spf_identity_name(a.id), spf_res_name(out.res), out.domain, out.dns_terms,
	    out.void_lookups, out.queries, out.reason);
	if (a.explain)
		printf(" explanation=\"%s\"", out.explanation);
	printf("\n");
	dns_shutdown();
	return 0;
}
