/*
 * dmarc_psl - the Public Suffix List: load, and find a name's
 * registrable ("organizational", RFC 7489 3.2) domain
 *
 * See dmarc_record.h for the contract. The rules are kept as one sorted
 * array of strings ("com", "*.ck", "!www.ck"), searched with bsearch; a
 * lookup tries each suffix of the name once, so it costs at most
 * 3 x labels searches. Rules with non-ASCII labels are stored twice: as
 * given (UTF-8) and in their Punycode form (RFC 3492), so both spellings
 * of an IDN find them. No I/O besides reading the list's file.
 */
#include "dmarc_record.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PSL_FILE_MAX	(16u * 1024 * 1024)
#define PSL_RULE_MAX	255
#define PSL_MIN_RULES	1000

struct dmarc_psl {
	char **rule;
	size_t n, cap;
};

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool
psl_has(const struct dmarc_psl *p, const char *s)
{
	return bsearch(&s, p->rule, p->n, sizeof *p->rule, cmp_str) != NULL;
}

static int
psl_push(struct dmarc_psl *p, const char *s, size_t n)
{
	char *c;

	if (p->n == p->cap) {
		size_t nc = p->cap ? p->cap * 2 : 1024;
		char **r = realloc(p->rule, nc * sizeof *r);
		if (r == NULL)
			return -1;
		p->rule = r;
		p->cap = nc;
	}
	if ((c = malloc(n + 1)) == NULL)
		return -1;
	memcpy(c, s, n);
	c[n] = '\0';
	p->rule[p->n++] = c;
	return 0;
}

/* utf8_next - decode one code point; -1 on a bad sequence */
static long
utf8_next(const unsigned char *s, size_t n, size_t *i)
{
	unsigned char c = s[*i];
	long cp;
	int more;

	if (c < 0x80) {
		(*i)++;
		return c;
	}
	if ((c & 0xe0) == 0xc0) {
		cp = c & 0x1f;
		more = 1;
	} else if ((c & 0xf0) == 0xe0) {
		cp = c & 0x0f;
		more = 2;
	} else if ((c & 0xf8) == 0xf0) {
		cp = c & 0x07;
		more = 3;
	} else {
		return -1;
	}
	if (*i + (size_t)more >= n)
		return -1;
	for (int k = 1; k <= more; k++) {
		if ((s[*i + (size_t)k] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[*i + (size_t)k] & 0x3f);
	}
	*i += (size_t)more + 1;
	return cp;
}

/* puny_digit - RFC 3492 basic code point for digit d */
static char
puny_digit(unsigned d)
{
	return (char)(d < 26 ? 'a' + d : '0' + (d - 26));
}

static unsigned
puny_adapt(unsigned delta, unsigned numpoints, bool first)
{
	unsigned k = 0;

	delta = first ? delta / 700 : delta / 2;
	delta += delta / numpoints;
	while (delta > ((36 - 1) * 26) / 2) {
		delta /= 36 - 1;
		k += 36;
	}
	return k + (36 * delta) / (delta + 38);
}

/* puny_label - one label (UTF-8) to "xn--..." in out; -1 when it does
 * not fit or is not valid UTF-8 */
static int
puny_label(const unsigned char *s, size_t n, char *out, size_t size)
{
	long cps[64];
	size_t ncp = 0, o = 0, h, b = 0;
	unsigned long next = 0x80, delta = 0, bias = 72;

	for (size_t i = 0; i < n;) {
		long cp = utf8_next(s, n, &i);
		if (cp < 0 || ncp >= 64)
			return -1;
		cps[ncp++] = cp;
	}
	if (size < 5)
		return -1;
	memcpy(out, "xn--", 4);
	o = 4;
	for (size_t i = 0; i < ncp; i++)
		if (cps[i] < 0x80) {
			if (o + 1 >= size)
				return -1;
			out[o++] = (char)cps[i];
			b++;
		}
	h = b;
	if (b > 0) {
		if (o + 1 >= size)
			return -1;
		out[o++] = '-';
	}
	while (h < ncp) {
		unsigned long m = ULONG_MAX;
		for (size_t i = 0; i < ncp; i++)
			if ((unsigned long)cps[i] >= next && (unsigned long)cps[i] < m)
				m = (unsigned long)cps[i];
		delta += (m - next) * (h + 1);
		next = m;
		for (size_t i = 0; i < ncp; i++) {
			if ((unsigned long)cps[i] < next)
				delta++;
			if ((unsigned long)cps[i] == next) {
				unsigned long q = delta;
				for (unsigned long k = 36;; k += 36) {
					unsigned long t = k <= bias ? 1 : k >= bias + 26 ? 26 : k - bias;
					if (q < t)
						break;
					if (o + 1 >= size)
						return -1;
					out[o++] = puny_digit((unsigned)(t + (q - t) % (36 - t)));
					q = (q - t) / (36 - t);
				}
				if (o + 1 >= size)
					return -1;
				out[o++] = puny_digit((unsigned)q);
				bias = puny_adapt((unsigned)delta, (unsigned)(h + 1), h == b);
				delta = 0;
				h++;
			}
		}
		delta++;
		next++;
	}
	out[o] = '\0';
	return (int)o;
}

/* add_ace - the Punycode spelling of a rule with 8-bit labels */
static int
add_ace(struct dmarc_psl *p, const char *r, size_t n)
{
	char out[PSL_RULE_MAX + 1];
	size_t o = 0, i = 0;

	while (i <= n) {
		size_t s = i;
		bool ascii = true;
		char lab[PSL_RULE_MAX + 1];
		int ll;

		while (i < n && r[i] != '.') {
			if ((unsigned char)r[i] >= 0x80)
				ascii = false;
			i++;
		}
		if (ascii) {
			if (o + (i - s) + 1 >= sizeof out)
				return 0;
			memcpy(out + o, r + s, i - s);
			o += i - s;
		} else {
			ll = puny_label((const unsigned char *)r + s, i - s, lab, sizeof lab);
			if (ll < 0 || o + (size_t)ll + 1 >= sizeof out)
				return 0;	/* skipped: the UTF-8 form still works */
			memcpy(out + o, lab, (size_t)ll);
			o += (size_t)ll;
		}
		if (i < n)
			out[o++] = '.';
		i++;
	}
	return psl_push(p, out, o);
}

void
dmarc_psl_free(struct dmarc_psl *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->n; i++)
		free(p->rule[i]);
	free(p->rule);
	free(p);
}

size_t
dmarc_psl_count(const struct dmarc_psl *p)
{
	return p ? p->n : 0;
}

struct dmarc_psl *
dmarc_psl_parse(const char *text, size_t len, char *err, size_t errlen)
{
	struct dmarc_psl *p = calloc(1, sizeof *p);
	bool icann = false;
	size_t i = 0, rules = 0;

	if (p == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	while (i < len) {
		size_t s = i, e;

		while (i < len && text[i] != '\n')
			i++;
		e = i++;
		if (e - s >= 2 && text[s] == '/' && text[s + 1] == '/') {
			if (memmem(text + s, e - s, "===BEGIN ICANN DOMAINS===", 25) != NULL)
				icann = true;
			continue;
		}
		/* a rule ends at the first white space */
		for (size_t k = s; k < e; k++)
			if (text[k] == ' ' || text[k] == '\t' || text[k] == '\r') {
				e = k;
				break;
			}
		if (e == s)
			continue;
		if (e - s > PSL_RULE_MAX) {
			snprintf(err, errlen, "rule longer than %d bytes", PSL_RULE_MAX);
			goto fail;
		}
		char low[PSL_RULE_MAX + 1];
		bool eight = false;
		for (size_t k = s; k < e; k++) {
			unsigned char c = (unsigned char)text[k];
			if (c >= 'A' && c <= 'Z')
				c = (unsigned char)(c + 32);
			if (c >= 0x80)
				eight = true;
			low[k - s] = (char)c;
		}
		if (psl_push(p, low, e - s) < 0 || (eight && add_ace(p, low, e - s) < 0)) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		rules++;
	}
	if (!icann || rules < PSL_MIN_RULES) {
		snprintf(err, errlen, "not a public suffix list (%s, %zu rules)",
		    icann ? "ICANN section found" : "no ICANN section", rules);
		goto fail;
	}
	qsort(p->rule, p->n, sizeof *p->rule, cmp_str);
	return p;
fail:
	dmarc_psl_free(p);
	return NULL;
}

struct dmarc_psl *
dmarc_psl_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, got;
	struct dmarc_psl *p;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (cap - len < 65536) {
			char *nb;
			cap = cap ? cap * 2 : 262144;
			if (cap > PSL_FILE_MAX + 65536 || (nb = realloc(buf, cap)) == NULL) {
				snprintf(err, errlen, "%s: too large or out of memory", path);
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: read error", path);
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	p = dmarc_psl_parse(buf, len, err, errlen);
	if (p == NULL) {
		char tmp[200];
		snprintf(tmp, sizeof tmp, "%s", err);
		snprintf(err, errlen, "%s: %s", path, tmp);
	}
	free(buf);
	return p;
}

int
dmarc_psl_orgdomain(const struct dmarc_psl *p, const char *name, char *out, size_t size)
{
	char low[DMARC_DOMAIN_SIZE + 2];
	size_t starts[128], nl = 0, len;
	size_t ps = 1;			/* labels of the public suffix: "*" */
	bool exception = false;

	if (p == NULL || name == NULL || (len = strlen(name)) == 0 || len >= DMARC_DOMAIN_SIZE)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		low[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
	}
	low[len] = '\0';
	if (low[0] == '.' || low[len - 1] == '.')
		return -1;
	starts[nl++] = 0;
	for (size_t i = 0; i < len; i++)
		if (low[i] == '.') {
			if (low[i + 1] == '.' || nl >= 128)
				return -1;
			starts[nl++] = i + 1;
		}
	/* suffix of k labels starts at starts[nl - k] */
	for (size_t k = 1; k <= nl; k++) {
		const char *suf = low + starts[nl - k];
		char tmp[DMARC_DOMAIN_SIZE + 4];

		snprintf(tmp, sizeof tmp, "!%s", suf);
		if (psl_has(p, tmp)) {
			ps = k - 1;
			exception = true;
		}
		if (exception)
			continue;
		if (psl_has(p, suf) && k > ps)
			ps = k;
		if (k >= 2) {
			snprintf(tmp, sizeof tmp, "*.%s", low + starts[nl - k + 1]);
			if (psl_has(p, tmp) && k > ps)
				ps = k;
		}
	}
	if (nl <= ps)
		return -1;
	const char *org = low + starts[nl - ps - 1];
	size_t ol = strlen(org);
	if (ol + 1 > size)
		return -1;
	memcpy(out, org, ol + 1);
	return (int)ol;
}
