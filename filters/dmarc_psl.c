/*
 * dmarc_psl - the Public Suffix List through libpsl: load, and find a
 * name's registrable ("organizational", RFC 7489 3.2) domain
 *
 * See dmarc_record.h for the contract. libpsl reads either the list's
 * text or the DAFSA Debian's publicsuffix package ships (it tells them
 * apart by the file's first bytes) and answers lookups on A-labels and
 * U-labels alike; moat always asks with A-labels (dmarc_domain_norm).
 */
#include "dmarc_record.h"

#include <libpsl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PSL_MIN_RULES	1000

struct dmarc_psl {
	psl_ctx_t *ctx;
	int nrules;			/* -1: a DAFSA, which does not say */
};

static void
set_err(char *err, size_t errlen, const char *msg, const char *path)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s%s%s", path ? path : "", path ? ": " : "", msg);
}

/* psl_wrap - check a loaded context looks like the list, wrap it */
static struct dmarc_psl *
psl_wrap(psl_ctx_t *ctx, const char *path, char *err, size_t errlen)
{
	struct dmarc_psl *p;
	int n;

	if (ctx == NULL) {
		set_err(err, errlen, "cannot be read as a Public Suffix List", path);
		return NULL;
	}
	n = psl_suffix_count(ctx);
	if ((n >= 0 && n < PSL_MIN_RULES) || !psl_is_public_suffix(ctx, "com") ||
	    !psl_is_public_suffix(ctx, "co.uk") || psl_is_public_suffix(ctx, "example.co.uk")) {
		psl_free(ctx);
		set_err(err, errlen, "does not look like the Public Suffix List "
		    "(too few rules, or com and co.uk missing)", path);
		return NULL;
	}
	if ((p = calloc(1, sizeof *p)) == NULL) {
		psl_free(ctx);
		set_err(err, errlen, "out of memory", path);
		return NULL;
	}
	p->ctx = ctx;
	p->nrules = n;
	return p;
}

void
dmarc_psl_free(struct dmarc_psl *p)
{
	if (p == NULL)
		return;
	psl_free(p->ctx);
	free(p);
}

size_t
dmarc_psl_count(const struct dmarc_psl *p)
{
	return p != NULL && p->nrules > 0 ? (size_t)p->nrules : 0;
}

struct dmarc_psl *
dmarc_psl_parse(const char *text, size_t len, char *err, size_t errlen)
{
	psl_ctx_t *ctx = NULL;
	FILE *f;

	if (text == NULL || len == 0) {
		set_err(err, errlen, "empty Public Suffix List", NULL);
		return NULL;
	}
	if ((f = fmemopen((void *)(uintptr_t)text, len, "r")) != NULL) {
		ctx = psl_load_fp(f);
		fclose(f);
	}
	return psl_wrap(ctx, NULL, err, errlen);
}

struct dmarc_psl *
dmarc_psl_load(const char *path, char *err, size_t errlen)
{
	if (path == NULL || path[0] == '\0') {
		set_err(err, errlen, "no Public Suffix List file given", NULL);
		return NULL;
	}
	return psl_wrap(psl_load_file(path), path, err, errlen);
}

int
dmarc_psl_orgdomain(const struct dmarc_psl *p, const char *name, char *out, size_t size)
{
	char d[DMARC_DOMAIN_SIZE];
	const char *reg;
	size_t n;

	if (p == NULL || name == NULL || dmarc_domain_norm(name, strlen(name), d, sizeof d) < 0)
		return -1;
	if ((reg = psl_registrable_domain(p->ctx, d)) == NULL)
		return -1;
	n = strlen(reg);
	if (n + 1 > size)
		return -1;
	memcpy(out, reg, n + 1);
	return (int)n;
}
