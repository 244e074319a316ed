// sources: policy/lists.c core/idn.c
// libs: -lidn2
/*
 * fuzz_lists - the named-list entry parser and matchers (policy/lists.c)
 *
 * Input: byte 0 picks the kind (low two bits); the rest is split at
 * '\n' into lines (NUL and other bytes kept). Every line is offered to
 * list_add, then every line is used as a query on all four matchers.
 * Properties, each an abort() when violated:
 *   - an empty list matches nothing, whatever the query;
 *   - a rejected entry leaves list_count unchanged and writes a message;
 *     an accepted one raises it by at most one;
 *   - an accepted entry matches what it names: a network its own address
 *     (and a /32 or /128 only that one neighbour-free address), a domain
 *     itself and "x." + itself (per form: "=d" only d, ".d" only x.d),
 *     an address itself (with a stand-in for a missing part), a word
 *     itself, a glob its prefix and prefix + "zz";
 *   - matchers of another kind say no; list_match_helo matches at least
 *     what list_match_word does (a word entry itself included).
 * Memory goes through a counting allocator capped at 64 MiB.
 */
#include "lists.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define CAP	(64u * 1024 * 1024)
#define HDR	16

static size_t in_use;

static void *
cap_realloc(void *ctx, void *p, size_t n)
{
	size_t old = 0;
	unsigned char *b = p ? (unsigned char *)p - HDR : NULL;

	(void)ctx;
	if (b)
		memcpy(&old, b, sizeof(old));
	if (n > CAP || in_use - old + n > CAP)
		return NULL;
	b = realloc(b, n + HDR);
	if (b == NULL)
		return NULL;
	in_use = in_use - old + n;
	memcpy(b, &n, sizeof(n));
	return b + HDR;
}

static void
cap_free(void *ctx, void *p)
{
	size_t old;
	unsigned char *b;

	(void)ctx;
	if (p == NULL)
		return;
	b = (unsigned char *)p - HDR;
	memcpy(&old, b, sizeof(old));
	in_use -= old;
	free(b);
}

struct line {
	const char *s;
	size_t n;
};

/* query_all - run every matcher; the result of the one of l's kind */
static bool
query_all(const struct list *l, enum list_kind kind, const char *s, size_t n)
{
	const char *at = memchr(s, '@', n);
	size_t ln = at ? (size_t)(at - s) : n;
	bool r[4];

	r[LIST_NET] = list_match_ip_text(l, s, n);
	r[LIST_DOMAIN] = list_match_domain(l, s, n);
	r[LIST_ADDRESS] = at ? list_match_address(l, s, ln, at + 1, n - ln - 1)
	    : list_match_address(l, s, n, NULL, 0);
	r[LIST_WORD] = list_match_word(l, s, n);
	/* a HELO name: at least what the word matches, nothing in another kind */
	if ((kind != LIST_WORD || r[LIST_WORD]) && list_match_helo(l, s, n) != r[LIST_WORD])
		abort();
	for (int k = 0; k < 4; k++)
		if (k != (int)kind && r[k])
			abort();
	return r[kind];
}

/* must - an accepted entry's own forms must match */
static void
must(bool b)
{
	if (!b)
		abort();
}

static void
check_entry(const struct list *l, enum list_kind kind, const char *s, size_t n)
{
	char buf[600];

	switch (kind) {
	case LIST_NET: {
		const char *slash = memchr(s, '/', n);

		must(list_match_ip_text(l, s, slash ? (size_t)(slash - s) : n));
		break;
	}
	case LIST_DOMAIN: {
		const char *d = s;
		size_t dn = n;
		bool self = true, subs = true;

		if (d[0] == '.') {
			self = false;
			d++, dn--;
		} else if (d[0] == '=') {
			subs = false;
			d++, dn--;
		}
		if (self)
			must(list_match_domain(l, d, dn));
		if (subs && dn + 2 <= sizeof(buf)) {
			buf[0] = 'x';
			buf[1] = '.';
			memcpy(buf + 2, d, dn);
			must(list_match_domain(l, buf, dn + 2));
		}
		break;
	}
	case LIST_ADDRESS: {
		const char *at = memchr(s, '@', n);
		size_t ln = (size_t)(at - s), dn = n - ln - 1;

		must(list_match_address(l, ln ? s : "zz", ln ? ln : 2,
		    dn ? at + 1 : "x.test", dn ? dn : 6));
		break;
	}
	case LIST_WORD:
		if (s[n - 1] == '*') {
			must(list_match_word(l, s, n - 1));
			if (n + 1 <= sizeof(buf)) {
				memcpy(buf, s, n - 1);
				memcpy(buf + n - 1, "zz", 2);
				must(list_match_word(l, buf, n + 1));
			}
		} else {
			const char *w;
			size_t wl;

			must(list_match_word(l, s, n));
			must(list_match_helo(l, s, n));
			if (list_word_bad_idn(l, &w, &wl))
				must(wl > 0);
		}
		break;
	}
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct list_alloc a = { cap_realloc, cap_free, NULL };
	struct line lines[256];
	size_t nl = 0, i, start;
	enum list_kind kind;
	struct list *l;
	char err[256];

	if (size < 1)
		return 0;
	kind = (enum list_kind)(data[0] & 3);
	for (start = 1, i = 1; i <= size && nl < 256; i++) {
		if (i == size || data[i] == '\n') {
			lines[nl].s = (const char *)data + start;
			lines[nl].n = i - start;
			nl++;
			start = i + 1;
		}
	}
	l = list_new_alloc(kind, &a);
	if (l == NULL)
		return 0;
	for (i = 0; i < nl; i++)
		if (query_all(l, kind, lines[i].s, lines[i].n))
			abort();	/* empty list */
	for (i = 0; i < nl; i++) {
		size_t before = list_count(l);
		int rc;

		err[0] = '\0';
		rc = list_add(l, lines[i].s, lines[i].n, err, sizeof(err));
		if (rc != 0) {
			if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
				abort();
			if (strstr(err, "out of memory") == NULL && list_count(l) != before)
				abort();
			continue;
		}
		if (list_count(l) > before + 1)
			abort();
		check_entry(l, kind, lines[i].s, lines[i].n);
	}
	for (i = 0; i < nl; i++)
		(void)query_all(l, kind, lines[i].s, lines[i].n);
	list_free(l);
	if (in_use != 0)
		abort();
	return 0;
}
