/*
 * moatctl_dkimkey - "moatctl dkim-keygen" and "moatctl dkim --check-key":
 * make a DKIM signing key and its DNS record; compare a published record
 * with the key file
 *
 * SYNOPSIS
 *	moatctl dkim-keygen DOMAIN SELECTOR [--algorithm rsa-sha256|ed25519-sha256]
 *	                    [--bits N] [--dir D]
 *	moatctl dkim --check-key DOMAIN SELECTOR [--dir D | --key FILE]
 *	             [--resolver system|recursive|ADDR[@PORT]] [--timeout MS]
 *
 * DESCRIPTION
 *	DOMAIN and SELECTOR may be written with U-labels: both commands use
 *	their A-label form (libidn2, UTS #46), as moatd does with dkim-key.
 *
 *	dkim-keygen writes a new private key to D/DOMAIN.SELECTOR.key
 *	(default D: /etc/moat/dkim; mode 0600, never over an existing file;
 *	RSA of --bits, default 2048, 1024 to 8192), then prints the
 *	dkim-key line for the policy file and the record to publish:
 *	  SELECTOR._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=..."
 *	(the value cut in strings of at most 255 bytes).
 *
 *	dkim --check-key reads the key file (the same checks as moatd's:
 *	mode, type, size), asks moat's resolver (the system's, or
 *	--resolver) for SELECTOR._domainkey.DOMAIN's TXT record and compares
 *	its k= and p= with the key's public half: "check-key ok ..." and
 *	exit 0 when they match, "check-key mismatch|missing|temperror ..."
 *	and exit 1 otherwise, 2 on bad usage.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim.h"
#include "dkim_key.h"
#include "dns.h"
#include "dnsbl.h"
#include "moatctl.h"
#include "xalloc.h"

#define DKIM_DIR_DEFAULT "/etc/moat/dkim"

/* names_alabel - DOMAIN (at least two labels) and SELECTOR in A-labels,
 * as moatd takes them from dkim-key (RFC 5890, RFC 6376 3.5): into d and
 * s; false, with a message, when one is bad */
static bool
names_alabel(const char *cmd, const char *domain, const char *sel, char *d, size_t dsize,
	char *s, size_t ssize)
{
	const char *why;

	if ((why = dkim_name_alabel(domain, strlen(domain), 253, d, dsize)) != NULL ||
	    strchr(d, '.') == NULL) {
		fprintf(stderr, "moatctl: %s: bad domain: %s\n", cmd, why ? why : "one label only");
		return false;
	}
	for (char *p = d; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if ((why = dkim_name_alabel(sel, strlen(sel), 63, s, ssize)) != NULL) {
		fprintf(stderr, "moatctl: %s: bad selector: %s\n", cmd, why);
		return false;
	}
	return true;
}

/* key_path - DIR/DOMAIN.SELECTOR.key */
static int
key_path(char *out, size_t size, const char *dir, const char *domain, const char *sel)
{
	return (size_t)snprintf(out, size, "%s/%s.%s.key", dir, domain, sel) < size ? 0 : -1;
}

static int
usage_keygen(void)
{
	return moatctl_usage("dkim-keygen");
}

/* moatctl_dkim_keygen - a new key file and its record */
int
moatctl_dkim_keygen(int argc, char **argv)
{
	const char *dir = DKIM_DIR_DEFAULT, *domain, *sel;
	enum dkim_key_alg alg = DKIM_KEY_RSA_SHA256;
	unsigned long bits = 2048;
	char path[4096], err[512], rec[4096], dom_a[256], sel_a[64];
	struct dkim_key k;
	char warn[512];
	size_t len;

	if (argc < 4)
		return usage_keygen();
	domain = argv[2];
	sel = argv[3];
	for (int i = 4; i < argc; i++) {
		const char *nx = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--algorithm") == 0 && nx) {
			if (strcmp(nx, "rsa-sha256") == 0)
				alg = DKIM_KEY_RSA_SHA256;
			else if (strcmp(nx, "ed25519-sha256") == 0)
				alg = DKIM_KEY_ED25519_SHA256;
			else
				return usage_keygen();
			i++;
		} else if (strcmp(argv[i], "--bits") == 0 && nx) {
			char *end;

			bits = strtoul(nx, &end, 10);
			if (*end || bits < 1024 || bits > 8192) {
				fprintf(stderr, "moatctl: --bits: 1024 to 8192\n");
				return 2;
			}
			i++;
		} else if (strcmp(argv[i], "--dir") == 0 && nx) {
			dir = nx;
			i++;
		} else
			return usage_keygen();
	}
	if (!names_alabel("dkim-keygen", domain, sel, dom_a, sizeof(dom_a), sel_a, sizeof(sel_a)))
		return 2;
	domain = dom_a;
	sel = sel_a;
	if (key_path(path, sizeof(path), dir, domain, sel) != 0) {
		fprintf(stderr, "moatctl: dkim-keygen: directory name too long\n");
		return 2;
	}
	if (dkim_key_generate(alg, (unsigned)bits, path, err, sizeof(err)) != 0) {
		fprintf(stderr, "moatctl: dkim-keygen: %s\n", err);
		return 1;
	}
	memset(&k, 0, sizeof(k));
	k.alg = alg;
	if (dkim_key_load(&k, path, err, sizeof(err), warn, sizeof(warn)) != 0 ||
	    dkim_key_record(k.pem, k.pemlen, rec, sizeof(rec), err, sizeof(err)) != 0) {
		fprintf(stderr, "moatctl: dkim-keygen: %s\n", err);
		dkim_key_clear(&k);
		return 1;
	}
	dkim_key_clear(&k);
	printf("# key written to %s (mode 0600: chown it to moat's user)\n", path);
	printf("# policy file:\n");
	printf("dkim-key %s %s %s \"%s\"\n", domain, sel, dkim_key_alg_name(alg), path);
	printf("# DNS:\n%s._domainkey.%s. IN TXT (", sel, domain);
	len = strlen(rec);
	for (size_t o = 0; o < len; o += 255)
		printf(" \"%.*s\"", (int)(len - o > 255 ? 255 : len - o), rec + o);
	printf(" )\n");
	return 0;
}

/* tag_value - the value of tag t in a DKIM key record, spaces dropped */
static void
tag_value(const char *rec, const char *t, char *out, size_t size)
{
	size_t tl = strlen(t), o = 0;
	const char *p = rec;

	out[0] = 0;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		if (strncmp(p, t, tl) == 0) {
			const char *q = p + tl;

			while (*q == ' ' || *q == '\t')
				q++;
			if (*q == '=') {
				for (q++; *q && *q != ';' && o + 1 < size; q++)
					if (!isspace((unsigned char)*q))
						out[o++] = *q;
				out[o] = 0;
				return;
			}
		}
		p = strchr(p, ';');
		if (p == NULL)
			return;
	}
}

static int
usage_check(void)
{
	return moatctl_usage("dkim");
}

/* moatctl_dkim_check_key - the published record against the key file */
int
moatctl_dkim_check_key(int argc, char **argv)
{
	const char *dir = DKIM_DIR_DEFAULT, *file = NULL, *resolver = NULL, *domain, *sel;
	char path[4096], err[512], warn[512], mine[4096], pub[4096], name[400];
	char mk[32], mp[2048], pk[32], pp[2048], dom_a[256], sel_a[64];
	unsigned long timeout = 5000;
	struct dns_conf dc;
	struct dkim_key k;
	char *derr = NULL;
	enum dkimv_key r;
	struct dkimv_conf vc;

	if (argc < 5)
		return usage_check();
	domain = argv[3];
	sel = argv[4];
	for (int i = 5; i < argc; i++) {
		const char *nx = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--dir") == 0 && nx)
			dir = argv[++i];
		else if (strcmp(argv[i], "--key") == 0 && nx)
			file = argv[++i];
		else if (strcmp(argv[i], "--resolver") == 0 && nx)
			resolver = argv[++i];
		else if (strcmp(argv[i], "--timeout") == 0 && nx) {
			char *end;

			timeout = strtoul(argv[++i], &end, 10);
			if (*end || timeout < 100 || timeout > 60000)
				return usage_check();
		} else
			return usage_check();
	}
	if (!names_alabel("dkim --check-key", domain, sel, dom_a, sizeof(dom_a), sel_a,
	    sizeof(sel_a)))
		return 2;
	domain = dom_a;
	sel = sel_a;
	if (file == NULL) {
		if (key_path(path, sizeof(path), dir, domain, sel) != 0)
			return usage_check();
		file = path;
	}
	memset(&k, 0, sizeof(k));
	k.alg = DKIM_KEY_RSA_SHA256;
	if (dkim_key_load(&k, file, err, sizeof(err), warn, sizeof(warn)) != 0) {
		/* not RSA: try Ed25519 before giving up */
		k.alg = DKIM_KEY_ED25519_SHA256;
		if (dkim_key_load(&k, file, err, sizeof(err), warn, sizeof(warn)) != 0) {
			fprintf(stderr, "moatctl: %s\n", err);
			return 1;
		}
	}
	if (dkim_key_record(k.pem, k.pemlen, mine, sizeof(mine), err, sizeof(err)) != 0) {
		fprintf(stderr, "moatctl: %s: %s\n", file, err);
		dkim_key_clear(&k);
		return 1;
	}
	dkim_key_clear(&k);
	memset(&dc, 0, sizeof(dc));
	dc.mode = DNS_MODE_SYSTEM;
	if (resolver != NULL && moatctl_resolver_word(resolver, &dc) != 0)
		return usage_check();
	if (dns_init(&dc, &derr) != 0) {
		fprintf(stderr, "moatctl: resolver: %s\n", derr ? derr : "cannot start");
		free(derr);
		return 1;
	}
	snprintf(name, sizeof(name), "%s._domainkey.%s", sel, domain);
	memset(&vc, 0, sizeof(vc));
	vc.timeout_ms = (unsigned)timeout;
	r = dkimv_resolver_key(&vc, name, pub, sizeof(pub));
	dns_shutdown();
	if (r != DKIMV_KEY_FOUND) {
		printf("check-key %s name=%s\n", r == DKIMV_KEY_TEMPERROR ? "temperror" :
		    r == DKIMV_KEY_NONE ? "missing" : "mismatch", name);
		return 1;
	}
	tag_value(mine, "k", mk, sizeof(mk));
	tag_value(mine, "p", mp, sizeof(mp));
	tag_value(pub, "k", pk, sizeof(pk));
	tag_value(pub, "p", pp, sizeof(pp));
	if (pk[0] == 0)
		snprintf(pk, sizeof(pk), "rsa");	/* k= defaults to rsa */
	if (strcmp(mk, pk) != 0 || strcmp(mp, pp) != 0) {
		printf("check-key mismatch name=%s published-k=%s key-k=%s%s\n", name, pk, mk,
		    strcmp(mp, pp) != 0 ? " reason=\"p= differs\"" : "");
		printf("expected: %s\n", mine);
		return 1;
	}
	printf("check-key ok name=%s k=%s file=%s\n", name, mk, file);
	return 0;
}
