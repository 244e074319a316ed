/*
 * moatctl_auth - "moatctl dkim" and "moatctl dmarc": run moat's DKIM
 * verifier and DMARC evaluation on one message or one set of facts
 *
 * SYNOPSIS
 *	moatctl dkim [--resolver system|recursive|ADDR[@PORT] | --keys FILE] [--now UNIXTIME]
 *	             [--min-key-bits N] [--max-sigs N] [--allow-sha1]
 *	             [--accept-partial] [--chunk N] [--timeout MS]
 *	             [--authres ID] FILE|-
 *	moatctl dmarc [--resolver system|recursive|ADDR[@PORT]] [--mode rfc7489|dmarcbis] [--psl FILE]
 *	             --from-header VALUE [--from-header VALUE ...]
 *	             [--spf RESULT:DOMAIN] [--dkim RESULT:DOMAIN ...]
 *	             [--pct-roll N] [--timeout MS] [--authres ID]
 *
 * DESCRIPTION
 *	dkim reads a message (bare LF line ends become CRLF, as moatd's DATA
 *	reader makes them), feeds it to the verifier in --chunk byte pieces
 *	(default: all at once) and prints one line per signature:
 *	  dkim result=pass d=example.com s=sel a=rsa-sha256 bits=2048
 *	with " partial=yes" for an l= that covers part of the body and
 *	" reason=\"...\"" when not a pass; "dkim result=none" when the
 *	message has no signature; "dkim ignored=N" when signatures past the
 *	cap were left out. Keys come from DNS (--resolver, a forwarder such
 *	as a loopback test server) or from a keys file (--keys: lines
 *	"owner-name TXT-value", as libopendkim's DKIM_QUERY_FILE reads).
 *	--now pins the verifier's clock (expired-signature tests).
 *
 *	dmarc evaluates DMARC for the given From field values and moat's
 *	SPF and DKIM results (RESULT is pass or anything else) and prints
 *	  dmarc result=fail policy=reject published=reject domain=example.com
 *	        policy-domain=example.com org-domain=example.com
 *	        spf-aligned=no dkim-aligned=no [sampled=yes] [reason="..."]
 *	on one line. --mode picks RFC 7489 (Public Suffix List, default) or
 *	the DMARCbis tree walk; --psl names the list (default Debian's).
 *
 *	With --authres ID both also print the Authentication-Results field
 *	moatd would add, under authserv-id ID.
 *
 *	Exit status 0 when the check ran, 1 when it could not (no resolver,
 *	unreadable file, no public suffix list), 2 on bad usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authres.h"
#include "dkim.h"
#include "dmarc.h"
#include "dns.h"
#include "moatctl.h"
#include "xalloc.h"

#define MSG_MAX		(64u * 1024 * 1024)
#define KEYS_MAX	256
#define DKIM_IN_MAX	16

#define PSL_DEFAULT	"/usr/share/publicsuffix/public_suffix_list.dafsa"

struct keyfile {
	int n;
	char *name[KEYS_MAX];
	char *value[KEYS_MAX];
};

/* read_all - a whole file ("-": stdin); NULL on error */
static char *
read_all(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (f == NULL)
		return NULL;
	do {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 131072;
			if (cap > MSG_MAX + 131072) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = xrealloc(buf, cap);
		}
		got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
	} while (got > 0);
	if (buf != NULL && ferror(f)) {
		free(buf);
		buf = NULL;
	}
	if (f != stdin)
		fclose(f);
	if (buf != NULL) {
		buf[n] = '\0';
		*len = n;
	}
	return buf;
}

/* to_crlf - bare LF becomes CRLF (a new buffer) */
static char *
to_crlf(const char *in, size_t len, size_t *outlen)
{
	char *out = xmalloc(2 * len + 1);
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			out[o++] = '\r';
		out[o++] = in[i];
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

static enum dkimv_key
keyfile_lookup(void *ctx, const char *name, char *out, size_t size)
{
	const struct keyfile *k = ctx;
	int found = 0;

	for (int i = 0; i < k->n; i++)
		if (strcasecmp(k->name[i], name) == 0) {
			if (found++ == 0) {
				if (strlen(k->value[i]) + 1 > size)
					return DKIMV_KEY_TOOBIG;
				memcpy(out, k->value[i], strlen(k->value[i]) + 1);
			}
		}
	return found == 0 ? DKIMV_KEY_NONE : found > 1 ? DKIMV_KEY_MULTIPLE : DKIMV_KEY_FOUND;
}

static int
keyfile_load(struct keyfile *k, const char *path)
{
	size_t len;
	char *buf = read_all(path, &len), *line, *save = NULL;

	if (buf == NULL)
		return -1;
	for (line = strtok_r(buf, "\r\n", &save); line != NULL; line = strtok_r(NULL, "\r\n", &save)) {
		char *sp = strchr(line, ' ');
		if (sp == NULL || k->n >= KEYS_MAX || line[0] == '#')
			continue;
		*sp = '\0';
		k->name[k->n] = xstrdup(line);
		k->value[k->n] = xstrdup(sp + 1);
		k->n++;
	}
	free(buf);
	return 0;
}

static void
keyfile_free(struct keyfile *k)
{
	for (int i = 0; i < k->n; i++) {
		free(k->name[i]);
		free(k->value[i]);
	}
}

/* start_resolver - moat's resolver forwarding to addr */
static int
start_resolver(const char *addr)
{
	struct dns_conf dc;
	char *err = NULL;

	memset(&dc, 0, sizeof dc);
	if (moatctl_resolver_word(addr, &dc) != 0) {
		fprintf(stderr, "moatctl: --resolver: system, recursive or ADDR[@PORT]\n");
		return -1;
	}
	if (dns_init(&dc, &err) != 0) {
		fprintf(stderr, "moatctl: resolver: %s\n", err ? err : "cannot start");
		free(err);
		return -1;
	}
	return 0;
}

/* num_arg - a decimal option value within [min, max] */
static bool
num_arg(const char *opt, const char *s, unsigned long long min, unsigned long long max,
	unsigned long long *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	if (s == NULL || *s < '0' || *s > '9' ||
	    (v = strtoull(s, &end, 10), errno != 0) || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "moatctl: %s: expected a number from %llu to %llu\n", opt, min, max);
		return false;
	}
	*out = v;
	return true;
}

static void
print_authres(const struct authres *a, const char *id)
{
	char buf[16384];

	if (authres_render(a, id, "\r\n", buf, sizeof buf) == 0) {
		fprintf(stderr, "moatctl: Authentication-Results does not fit\n");
		return;
	}
	/* the field as it goes upstream, with CRLF shown as line ends */
	fputs("Authentication-Results: ", stdout);
	for (char *p = buf; *p; p++)
		if (*p != '\r')
			putchar(*p);
	putchar('\n');
}

static int
usage_dkim(void)
{
	return moatctl_usage("dkim");
}

static int
cmd_dkim(int argc, char **argv)
{
	struct dkimv_conf c;
	struct keyfile keys;
	const char *resolver = NULL, *keypath = NULL, *file = NULL, *authserv = NULL;
	unsigned long long v, chunk = 0;
	char err[256], *raw, *msg;
	size_t rawlen, len;
	struct dkimv *dv;
	struct dkimv_msg *m;
	struct dkimv_outcome out;
	int rc = 0;

	memset(&c, 0, sizeof c);
	memset(&keys, 0, sizeof keys);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *nx = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--resolver") == 0 && nx) {
			resolver = nx;
			i++;
		} else if (strcmp(a, "--keys") == 0 && nx) {
			keypath = nx;
			i++;
		} else if (strcmp(a, "--now") == 0) {
			if (!num_arg(a, nx, 1, 1ULL << 40, &v))
				return 2;
			c.fixed_time = v;
			i++;
		} else if (strcmp(a, "--min-key-bits") == 0) {
			if (!num_arg(a, nx, 1024, 16384, &v))
				return 2;
			c.min_key_bits = (unsigned)v;
			i++;
		} else if (strcmp(a, "--max-sigs") == 0) {
			if (!num_arg(a, nx, 1, DKIMV_MAX_SIGS, &v))
				return 2;
			c.max_signatures = (unsigned)v;
			i++;
		} else if (strcmp(a, "--timeout") == 0) {
			if (!num_arg(a, nx, 1, 60000, &v))
				return 2;
			c.timeout_ms = (unsigned)v;
			i++;
		} else if (strcmp(a, "--chunk") == 0) {
			if (!num_arg(a, nx, 1, MSG_MAX, &chunk))
				return 2;
			i++;
		} else if (strcmp(a, "--authres") == 0 && nx) {
			authserv = nx;
			i++;
		} else if (strcmp(a, "--allow-sha1") == 0) {
			c.allow_rsa_sha1 = true;
		} else if (strcmp(a, "--accept-partial") == 0) {
			c.accept_partial_body = true;
		} else if (a[0] == '-' && a[1] != '\0') {
			return usage_dkim();
		} else if (file == NULL) {
			file = a;
		} else {
			return usage_dkim();
		}
	}
	if (file == NULL || (resolver == NULL) == (keypath == NULL))
		return usage_dkim();
	if ((raw = read_all(file, &rawlen)) == NULL) {
		fprintf(stderr, "moatctl: %s: cannot read (or larger than %u bytes)\n", file, MSG_MAX);
		return 1;
	}
	msg = to_crlf(raw, rawlen, &len);
	free(raw);
	if (keypath != NULL) {
		if (keyfile_load(&keys, keypath) < 0) {
			fprintf(stderr, "moatctl: %s: cannot read\n", keypath);
			free(msg);
			return 1;
		}
		c.key_lookup = keyfile_lookup;
		c.key_ctx = &keys;
	} else if (start_resolver(resolver) < 0) {
		free(msg);
		return 1;
	}
	if ((dv = dkimv_new(&c, err, sizeof err)) == NULL) {
		fprintf(stderr, "moatctl: %s\n", err);
		rc = 1;
		goto done;
	}
	m = dkimv_msg_new(dv);
	if (chunk == 0 || chunk > len)
		chunk = len ? len : 1;
	for (size_t off = 0; off < len; off += chunk)
		dkimv_msg_feed(m, msg + off, len - off < chunk ? len - off : chunk);
	dkimv_msg_finish(m, &out);
	dkimv_msg_free(m);
	if (out.status == DKIMV_TOO_BIG)
		printf("dkim result=permerror reason=\"message header too large\"\n");
	else if (out.status == DKIMV_ERROR)
		printf("dkim result=temperror reason=\"verifier error\"\n");
	else if (out.nsigs == 0 && out.nignored == 0)
		printf("dkim result=none\n");
	for (int i = 0; i < out.nsigs; i++) {
		const struct dkimv_sig *s = &out.sigs[i];
		printf("dkim result=%s d=%s s=%s a=%s", dkimv_result_name(s->result),
		    s->domain[0] ? s->domain : "-", s->selector[0] ? s->selector : "-",
		    dkimv_alg_name(s->alg));
		if (s->key_bits)
			printf(" bits=%u", s->key_bits);
		if (s->partial)
			printf(" partial=yes");
		if (s->reason != NULL)
			printf(" reason=\"%s\"", s->reason);
		putchar('\n');
	}
	if (out.nignored > 0)
		printf("dkim ignored=%d\n", out.nignored);
	if (authserv != NULL) {
		struct authres ar;
		authres_init(&ar);
		dkimv_authres(&out, &ar);
		print_authres(&ar, authserv);
	}
	dkimv_free(dv);
done:
	if (keypath == NULL)
		dns_shutdown();
	keyfile_free(&keys);
	free(msg);
	return rc;
}

static int
usage_dmarc(void)
{
	return moatctl_usage("dmarc");
}

/* split_result - "pass:example.com" into (is pass, domain) */
static bool
split_result(const char *s, bool *pass, const char **domain)
{
	const char *colon = strchr(s, ':');

	if (colon == NULL || colon == s)
		return false;
	*pass = (size_t)(colon - s) == 4 && strncmp(s, "pass", 4) == 0;
	*domain = colon + 1;
	return true;
}

static int
cmd_dmarc(int argc, char **argv)
{
	struct dmarc_conf c;
	struct dmarc_input in;
	struct dmarc_outcome out;
	struct dmarc_dkim_in dk[DKIM_IN_MAX];
	const char *from[DMARC_AUTHOR_MAX * 2];
	size_t from_len[DMARC_AUTHOR_MAX * 2];
	const char *resolver = NULL, *psl_path = PSL_DEFAULT, *authserv = NULL;
	struct dmarc_psl *psl = NULL;
	unsigned long long v;
	char err[512];

	memset(&c, 0, sizeof c);
	memset(&in, 0, sizeof in);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *nx = i + 1 < argc ? argv[i + 1] : NULL;

		if (nx == NULL)
			return usage_dmarc();
		i++;
		if (strcmp(a, "--resolver") == 0) {
			resolver = nx;
		} else if (strcmp(a, "--mode") == 0) {
			/* the policy file's words; 7489 and bis as before */
			if (strcmp(nx, "rfc7489") == 0 || strcmp(nx, "7489") == 0)
				c.mode = DMARC_MODE_RFC7489;
			else if (strcmp(nx, "dmarcbis") == 0 || strcmp(nx, "bis") == 0)
				c.mode = DMARC_MODE_BIS;
			else
				return usage_dmarc();
		} else if (strcmp(a, "--psl") == 0) {
			psl_path = nx;
		} else if (strcmp(a, "--from-header") == 0) {
			if (in.nfrom >= DMARC_AUTHOR_MAX * 2)
				return usage_dmarc();
			from[in.nfrom] = nx;
			from_len[in.nfrom] = strlen(nx);
			in.nfrom++;
		} else if (strcmp(a, "--spf") == 0) {
			if (!split_result(nx, &in.spf_pass, &in.spf_domain))
				return usage_dmarc();
		} else if (strcmp(a, "--dkim") == 0) {
			if (in.ndkim >= DKIM_IN_MAX ||
			    !split_result(nx, &dk[in.ndkim].pass, &dk[in.ndkim].domain))
				return usage_dmarc();
			in.ndkim++;
		} else if (strcmp(a, "--pct-roll") == 0) {
			if (!num_arg(a, nx, 0, 99, &v))
				return 2;
			in.pct_roll = (unsigned)v;
		} else if (strcmp(a, "--timeout") == 0) {
			if (!num_arg(a, nx, 1, 60000, &v))
				return 2;
			c.timeout_ms = (unsigned)v;
		} else if (strcmp(a, "--authres") == 0) {
			authserv = nx;
		} else {
			return usage_dmarc();
		}
	}
	if (resolver == NULL)
		return usage_dmarc();
	in.from = from;
	in.from_len = from_len;
	in.dkim = dk;
	if (c.mode == DMARC_MODE_RFC7489) {
		if ((psl = dmarc_psl_load(psl_path, err, sizeof err)) == NULL) {
			fprintf(stderr, "moatctl: public suffix list: %s\n", err);
			return 1;
		}
		c.psl = psl;
	}
	if (start_resolver(resolver) < 0) {
		dmarc_psl_free(psl);
		return 1;
	}
	dmarc_check(&c, &in, &out);
	printf("dmarc result=%s policy=%s published=%s domain=%s policy-domain=%s org-domain=%s "
	    "spf-aligned=%s dkim-aligned=%s", dmarc_result_name(out.result),
	    dmarc_policy_name(out.policy), dmarc_policy_name(out.published),
	    out.from_domain[0] ? out.from_domain : "-",
	    out.policy_domain[0] ? out.policy_domain : "-",
	    out.org_domain[0] ? out.org_domain : "-", out.spf_aligned ? "yes" : "no",
	    out.dkim_aligned ? "yes" : "no");
	if (out.sampled_out)
		printf(" sampled=yes");
	if (out.reason[0])
		printf(" reason=\"%s\"", out.reason);
	putchar('\n');
	if (authserv != NULL) {
		struct authres ar;
		authres_init(&ar);
		dmarc_authres(&out, &ar);
		print_authres(&ar, authserv);
	}
	dns_shutdown();
	dmarc_psl_free(psl);
	return 0;
}

int
moatctl_auth(int argc, char **argv)
{
	if (strcmp(argv[1], "dkim") == 0)
		return cmd_dkim(argc, argv);
	return cmd_dmarc(argc, argv);
}
