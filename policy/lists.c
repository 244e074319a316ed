/*
 * lists - named lists: networks, domains, addresses, words (see lists.h
 * for the entry syntax and the matching rules)
 *
 * Public functions: list_new, list_new_alloc, list_add, list_load_file,
 * list_match_addr, list_match_ip_text, list_match_domain,
 * list_match_address, list_match_word, list_count, list_kind,
 * list_kind_name, list_free.
 *
 * Representation. Networks live in one array of binary-trie nodes with
 * two roots (node 0 for IPv4, node 1 for IPv6); an entry marks the node
 * at the end of its prefix, and a lookup walks at most 32 or 128 bits
 * and stops at the first marked node. A node is 12 bytes; 100k random
 * /32s take about 1.6M nodes (20 MB), real block lists far less because
 * they share prefixes. A sorted prefix array would be smaller but needs
 * a "freeze" step before lookups; the trie takes adds at any time and
 * keeps the matchers free of hidden state.
 *
 * Domains, addresses and words live in one open-addressing hash set of
 * lower-cased keys (stored back to back in an arena) with per-key flag
 * bits: for domains SELF ("=x" or "x") and SUBS (".x" or "x"); for
 * addresses the key itself says the form ("user@dom", "@dom", "user@");
 * for words EXACT and GLOB (a prefix), with a bitmap of the glob prefix
 * lengths in use so a lookup probes only those. Lookups fold case on the
 * fly and never copy the query, so they allocate nothing, except that a
 * domain with 8-bit bytes is first put in A-labels (libidn2, core/idn.h):
 * entries are stored in A-labels, so an entry and a query written either
 * way match.
 *
 * Ownership: the list owns its arrays; items are copied. All allocation
 * goes through the list's allocator and failure is returned as an error.
 * Limits: see LIST_* in lists.h; node indices are 32-bit, so a list
 * refuses to grow past 2^32 nodes or slots.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "idn.h"
#include "lists.h"

enum list_status { LIST_OK, LIST_EBAD, LIST_ENOMEM };

/* hash-set flag bits */
#define LF_SELF		0x01u	/* domain: the name itself */
#define LF_SUBS		0x02u	/* domain: names below it */
#define LF_ADDR		0x04u	/* address: key present */
#define LF_EXACT	0x08u	/* word: exact */
#define LF_GLOB		0x10u	/* word: key is a prefix */
#define LF_IDN		0x20u	/* word: the A-label form of an exact entry (list_match_helo) */

#define LIST_ROOT4	0u
#define LIST_ROOT6	1u

struct list_node {
	uint32_t child[2];	/* 0 = none (a root is never a child) */
	uint32_t term;		/* a network ends here */
};

struct list_slot {
	size_t off;		/* key in the arena */
	uint32_t len;
	uint32_t hash;
	uint32_t flags;		/* 0 = empty slot */
};

struct list {
	enum list_kind kind;
	struct list_alloc a;
	size_t count;
	/* LIST_NET */
	struct list_node *nodes;
	size_t nnodes, ncap;
	/* the others */
	struct list_slot *slots;
	size_t nslots, sused;	/* nslots is 0 or a power of two */
	char *arena;
	size_t alen, acap;
	uint64_t glob_len[(LIST_WORD_MAX + 64) / 64];	/* LIST_WORD */
};

/* ---- allocation ---- */

/* list_std_realloc - the default allocator */
static void *
list_std_realloc(void *ctx, void *p, size_t n)
{
	(void)ctx;
	return realloc(p, n);
}

/* list_std_free - the default allocator */
static void
list_std_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

/* list_grow - make room for need elements in *pp (capacity *cap) */
static int
list_grow(struct list *l, void **pp, size_t *cap, size_t need, size_t elsize)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap : 16;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -1;
		ncap *= 2;
	}
	if (ncap > SIZE_MAX / elsize)
		return -1;
	p = l->a.realloc_fn(l->a.ctx, *pp, ncap * elsize);
	if (p == NULL)
		return -1;
	*pp = p;
	*cap = ncap;
	return 0;
}

/* ---- error messages ---- */

/* list_escape - quote up to 60 bytes of s for a message */
static void
list_escape(char *out, size_t outlen, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0, lim = n > 60 ? 60 : n;

	for (i = 0; i < lim && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	if (i < n && o + 4 <= outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* list_msg - vsnprintf into err, marking a cut message with "..." */
static void __attribute__((format(printf, 3, 0)))
list_vmsg(char *err, size_t errlen, const char *fmt, va_list ap)
{
	int n;

	if (err == NULL || errlen == 0)
		return;
	n = vsnprintf(err, errlen, fmt, ap);
	if (n < 0)
		err[0] = '\0';
	else if ((size_t)n >= errlen && errlen > 4)
		memcpy(err + errlen - 4, "...", 4);
}

/* list_msg - format a message into err */
static void __attribute__((format(printf, 3, 4)))
list_msg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	list_vmsg(err, errlen, fmt, ap);
	va_end(ap);
}

/* list_bad - "bad KIND \"ITEM\": REASON"; returns LIST_EBAD */
static enum list_status __attribute__((format(printf, 6, 7)))
list_bad(const struct list *l, char *err, size_t errlen, const char *item,
    size_t len, const char *fmt, ...)
{
	char esc[256], reason[512];
	va_list ap;

	va_start(ap, fmt);
	list_vmsg(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	list_escape(esc, sizeof(esc), item, len);
	list_msg(err, errlen, "bad %s \"%s\": %s", list_kind_name(l->kind), esc, reason);
	return LIST_EBAD;
}

/* ---- bytes ---- */

/* list_lc - ASCII lower case, locale-independent */
static unsigned char
list_lc(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* list_hash - FNV-1a over the lower-cased bytes, continuing from h */
static uint32_t
list_hash(uint32_t h, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= list_lc((unsigned char)s[i]);
		h *= 16777619u;
	}
	return h;
}

/* list_lc_eq - does the stored (lower-case) key equal s, folding s? */
static bool
list_lc_eq(const char *stored, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)stored[i] != list_lc((unsigned char)s[i]))
			return false;
	return true;
}

/* ---- hash set; a key is a, or a "@" b when at is set ---- */

#define LIST_FNV_INIT	2166136261u

/* list_key_hash - hash of the key formed by a [@ b] */
static uint32_t
list_key_hash(const char *a, size_t alen, bool at, const char *b, size_t blen)
{
	uint32_t h = list_hash(LIST_FNV_INIT, a, alen);

	if (at) {
		h = list_hash(h, "@", 1);
		h = list_hash(h, b, blen);
	}
	return h;
}

/* list_slot_find - the slot holding the key, or the empty slot for it */
static size_t
list_slot_find(const struct list *l, uint32_t h, const char *a, size_t alen,
    bool at, const char *b, size_t blen)
{
	size_t mask = l->nslots - 1, i = h & mask;
	size_t klen = alen + (at ? 1 + blen : 0);

	for (;;) {
		const struct list_slot *s = &l->slots[i];

		if (s->flags == 0)
			return i;
		if (s->hash == h && s->len == klen) {
			const char *k;

			if (klen == 0)
				return i;	/* the empty key; the arena may still be NULL */
			k = l->arena + s->off;

			if (list_lc_eq(k, a, alen) && (!at || (k[alen] == '@'
			    && list_lc_eq(k + alen + 1, b, blen))))
				return i;
		}
		i = (i + 1) & mask;
	}
}

/* list_set_get - flags of the key a [@ b], 0 if absent */
static uint32_t
list_set_get(const struct list *l, const char *a, size_t alen, bool at,
    const char *b, size_t blen)
{
	uint32_t h;

	if (l->sused == 0)
		return 0;
	h = list_key_hash(a, alen, at, b, blen);
	return l->slots[list_slot_find(l, h, a, alen, at, b, blen)].flags;
}

/* list_set_rehash - double the table */
static int
list_set_rehash(struct list *l)
{
	size_t n = l->nslots ? l->nslots * 2 : 64, i, j, mask;
	struct list_slot *ns;

	if (n > UINT32_MAX || n > SIZE_MAX / sizeof(*ns))
		return -1;
	ns = l->a.realloc_fn(l->a.ctx, NULL, n * sizeof(*ns));
	if (ns == NULL)
		return -1;
	memset(ns, 0, n * sizeof(*ns));
	mask = n - 1;
	for (i = 0; i < l->nslots; i++) {
		if (l->slots[i].flags == 0)
			continue;
		for (j = l->slots[i].hash & mask; ns[j].flags != 0; j = (j + 1) & mask)
			;
		ns[j] = l->slots[i];
	}
	l->a.free_fn(l->a.ctx, l->slots);
	l->slots = ns;
	l->nslots = n;
	return 0;
}

/* list_set_add - add flags to the key a [@ b]; counts a change as an entry */
static enum list_status
list_set_add(struct list *l, const char *a, size_t alen, bool at,
    const char *b, size_t blen, uint32_t flags)
{
	size_t klen = alen + (at ? 1 + blen : 0), i, k;
	struct list_slot *s;
	uint32_t h;

	if ((l->sused + 1) * 2 > l->nslots && list_set_rehash(l) != 0)
		return LIST_ENOMEM;
	h = list_key_hash(a, alen, at, b, blen);
	s = &l->slots[list_slot_find(l, h, a, alen, at, b, blen)];
	if (s->flags != 0) {
		if ((s->flags | flags) != s->flags)
			l->count++;
		s->flags |= flags;
		return LIST_OK;
	}
	if (klen > UINT32_MAX || l->alen > SIZE_MAX - klen
	    || list_grow(l, (void **)&l->arena, &l->acap, l->alen + klen, 1) != 0)
		return LIST_ENOMEM;
	for (i = 0, k = l->alen; i < alen; i++)
		l->arena[k++] = (char)list_lc((unsigned char)a[i]);
	if (at) {
		l->arena[k++] = '@';
		for (i = 0; i < blen; i++)
			l->arena[k++] = (char)list_lc((unsigned char)b[i]);
	}
	s->off = l->alen;
	s->len = (uint32_t)klen;
	s->hash = h;
	s->flags = flags;
	l->alen += klen;
	l->sused++;
	l->count++;
	return LIST_OK;
}

/* ---- networks ---- */

/* list_bit - bit i (0 = most significant) of a */
static unsigned
list_bit(const unsigned char *a, unsigned i)
{
	return (a[i >> 3] >> (7 - (i & 7))) & 1u;
}

/* list_trie_add - mark the prefix of plen bits under root */
static enum list_status
list_trie_add(struct list *l, uint32_t root, const unsigned char *a, unsigned plen)
{
	uint32_t n = root;
	unsigned i;

	/* room for the whole path first, so a failure adds nothing */
	if (l->nnodes + plen > UINT32_MAX
	    || list_grow(l, (void **)&l->nodes, &l->ncap, l->nnodes + plen,
	    sizeof(*l->nodes)) != 0)
		return LIST_ENOMEM;
	for (i = 0; i < plen; i++) {
		unsigned b = list_bit(a, i);

		if (l->nodes[n].child[b] == 0) {
			uint32_t c = (uint32_t)l->nnodes++;

			memset(&l->nodes[c], 0, sizeof(l->nodes[c]));
			l->nodes[n].child[b] = c;
		}
		n = l->nodes[n].child[b];
	}
	if (!l->nodes[n].term)
		l->count++;
	l->nodes[n].term = 1;
	return LIST_OK;
}

/* list_trie_match - is a (of bits bits) under a marked prefix? */
static bool
list_trie_match(const struct list *l, uint32_t root, const unsigned char *a, unsigned bits)
{
	uint32_t n = root;
	unsigned i;

	if (l->nnodes == 0)
		return false;
	for (i = 0;; i++) {
		if (l->nodes[n].term)
			return true;
		if (i == bits)
			return false;
		n = l->nodes[n].child[list_bit(a, i)];
		if (n == 0)
			return false;
	}
}

static const unsigned char list_v4mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };

/* list_add_net - "ADDR[/PLEN]" */
static enum list_status
list_add_net(struct list *l, const char *s, size_t len, char *err, size_t errlen)
{
	static const char expect[] =
	    "expected an IPv4 or IPv6 network like 192.0.2.0/24 or 2001:db8::/32";
	char ip[INET6_ADDRSTRLEN + 1], text[INET6_ADDRSTRLEN + 1];
	unsigned char a[16];
	const char *slash = memchr(s, '/', len);
	size_t iplen = slash ? (size_t)(slash - s) : len, i;
	unsigned plen, max, b;
	int af;

	if (iplen == 0 || iplen >= sizeof(ip))
		return list_bad(l, err, errlen, s, len, "not an IP address; %s", expect);
	memcpy(ip, s, iplen);
	ip[iplen] = '\0';
	af = memchr(ip, ':', iplen) ? AF_INET6 : AF_INET;
	max = af == AF_INET6 ? 128 : 32;
	memset(a, 0, sizeof(a));
	if (inet_pton(af, ip, a) != 1)
		return list_bad(l, err, errlen, s, len, "not an IP address; %s", expect);
	plen = max;
	if (slash) {
		const char *p = slash + 1;
		size_t n = len - iplen - 1;

		if (n == 0 || n > 3)
			return list_bad(l, err, errlen, s, len,
			    "the prefix length must be a number 0..%u; %s", max, expect);
		for (plen = 0, i = 0; i < n; i++) {
			if (p[i] < '0' || p[i] > '9')
				return list_bad(l, err, errlen, s, len,
				    "the prefix length must be a number 0..%u; %s", max, expect);
			plen = plen * 10 + (unsigned)(p[i] - '0');
		}
		if (plen > max)
			return list_bad(l, err, errlen, s, len,
			    "prefix length %u is out of range 0..%u for %s", plen, max,
			    af == AF_INET6 ? "IPv6" : "IPv4");
	}
	for (b = plen; b < max; b++) {
		if (list_bit(a, b)) {
			unsigned char m[16];

			memcpy(m, a, sizeof(m));
			for (b = plen; b < max; b++)
				m[b >> 3] &= (unsigned char)~(0x80u >> (b & 7));
			if (inet_ntop(af, m, text, sizeof(text)) == NULL)
				text[0] = '\0';
			return list_bad(l, err, errlen, s, len,
			    "host bits are set beyond /%u (did you mean %s/%u?)", plen, text, plen);
		}
	}
	if (af == AF_INET6 && plen >= 96 && memcmp(a, list_v4mapped, 12) == 0)
		return list_trie_add(l, LIST_ROOT4, a + 12, plen - 96);
	return list_trie_add(l, af == AF_INET6 ? LIST_ROOT6 : LIST_ROOT4, a, plen);
}

/* list_match_bin - match a 4- or 16-byte address */
static bool
list_match_bin(const struct list *l, int af, const unsigned char *a)
{
	if (af == AF_INET)
		return list_trie_match(l, LIST_ROOT4, a, 32);
	if (memcmp(a, list_v4mapped, 12) == 0)
		return list_trie_match(l, LIST_ROOT4, a + 12, 32);
	return list_trie_match(l, LIST_ROOT6, a, 128);
}

/* list_match_addr - see lists.h */
bool
list_match_addr(const struct list *l, const struct sockaddr *sa)
{
	if (l == NULL || sa == NULL || l->kind != LIST_NET)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

		return list_match_bin(l, AF_INET, (const unsigned char *)&sin->sin_addr);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;

		return list_match_bin(l, AF_INET6, sin6->sin6_addr.s6_addr);
	}
	return false;
}

/* list_match_ip_text - see lists.h */
bool
list_match_ip_text(const struct list *l, const char *ip, size_t len)
{
	char buf[INET6_ADDRSTRLEN + 1];
	unsigned char a[16];
	int af;

	if (l == NULL || ip == NULL || l->kind != LIST_NET || len == 0 || len >= sizeof(buf)
	    || memchr(ip, '\0', len) != NULL)
		return false;
	memcpy(buf, ip, len);
	buf[len] = '\0';
	af = memchr(buf, ':', len) ? AF_INET6 : AF_INET;
	if (inet_pton(af, buf, a) != 1)
		return false;
	return list_match_bin(l, af, a);
}

/* ---- domains ---- */

/* list_domain_check - NULL if d is a valid name, else what is wrong */
static const char *
list_domain_check(const char *d, size_t len)
{
	size_t i, label = 0;

	if (len == 0)
		return "empty name";
	if (len > LIST_DOMAIN_MAX)
		return "longer than 255 bytes";
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];

		if (c == '.') {
			if (label == 0)
				return "empty label";
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		    || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return "invalid character (names are letters, digits, '-' and '_')";
		if (++label > 63)
			return "label longer than 63 bytes";
	}
	if (label == 0)
		return "empty label";
	return NULL;
}

/* list_domain_alabel - d in A-labels (RFC 8616) into buf when it has
 * U-labels or xn-- labels (*d and *n then point there); NULL when done,
 * else what is wrong. An entry written either way matches both. */
static const char *
list_domain_alabel(const char **d, size_t *n, char *buf, size_t size)
{
	int r;

	if (!idn_needs(*d, *n))
		return NULL;
	r = idn_alabel(*d, *n, buf, size);
	if (r == IDN_TOOLONG)
		return "longer than 255 bytes";
	if (r <= 0)
		return "not a valid internationalised domain name (IDNA2008, UTS #46)";
	*d = buf;
	*n = (size_t)r;
	return NULL;
}

/* list_has_8bit - a byte over 0x7f: the query needs its A-label form */
static bool
list_has_8bit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

/* list_add_domain - "name", ".name" or "=name" */
static enum list_status
list_add_domain(struct list *l, const char *s, size_t len, char *err, size_t errlen)
{
	static const char expect[] =
	    "expected a domain like example.org (and subdomains), .example.org "
	    "(subdomains only) or =example.org (exactly)";
	const char *d = s, *why;
	char abuf[LIST_DOMAIN_MAX + 1];
	size_t n = len;
	uint32_t flags = LF_SELF | LF_SUBS;

	if (n >= 2 && d[0] == '*' && d[1] == '.')
		return list_bad(l, err, errlen, s, len,
		    "write .%.*s for subdomains only", (int)(n - 2 > 200 ? 200 : n - 2), d + 2);
	if (n > 0 && d[0] == '.') {
		flags = LF_SUBS;
		d++, n--;
	} else if (n > 0 && d[0] == '=') {
		flags = LF_SELF;
		d++, n--;
	}
	if (n > 1 && d[n - 1] == '.')
		n--;
	if ((why = list_domain_alabel(&d, &n, abuf, sizeof(abuf))) != NULL ||
	    (why = list_domain_check(d, n)) != NULL)
		return list_bad(l, err, errlen, s, len, "%s; %s", why, expect);
	return list_set_add(l, d, n, false, NULL, 0, flags);
}

/* list_match_domain - see lists.h */
bool
list_match_domain(const struct list *l, const char *d, size_t len)
{
	char abuf[LIST_DOMAIN_MAX + 1];
	size_t i;

	if (l == NULL || d == NULL || l->kind != LIST_DOMAIN || l->sused == 0)
		return false;
	if (len > 0 && d[len - 1] == '.')
		len--;
	if (len == 0)
		return false;
	/* a name in U-labels is looked up in A-labels; an invalid one
	 * matches nothing */
	if (list_has_8bit(d, len) && list_domain_alabel(&d, &len, abuf, sizeof(abuf)) != NULL)
		return false;
	if (len <= LIST_DOMAIN_MAX && (list_set_get(l, d, len, false, NULL, 0) & LF_SELF))
		return true;
	/* only suffixes that could be stored are worth hashing */
	i = len > LIST_DOMAIN_MAX + 1 ? len - LIST_DOMAIN_MAX - 1 : 0;
	for (; i + 1 < len; i++)
		if (d[i] == '.' && (list_set_get(l, d + i + 1, len - i - 1, false, NULL, 0)
		    & LF_SUBS))
			return true;
	return false;
}

/* ---- addresses ---- */

/* list_local_check - NULL if the local part is acceptable, else why not */
static const char *
list_local_check(const char *s, size_t len)
{
	size_t i;

	if (len > LIST_LOCAL_MAX)
		return "local part longer than 64 bytes";
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '<' || c == '>')
			return "invalid character in the local part";
	}
	return NULL;
}

/* list_add_address - "user@domain", "@domain" or "user@" */
static enum list_status
list_add_address(struct list *l, const char *s, size_t len, char *err, size_t errlen)
{
	static const char expect[] =
	    "expected user@example.org, @example.org (any user) or user@ (any domain)";
	const char *at = memchr(s, '@', len), *dom, *why;
	char abuf[LIST_DOMAIN_MAX + 1];
	size_t llen, dlen;

	if (at == NULL)
		return list_bad(l, err, errlen, s, len, "no '@'; %s", expect);
	llen = (size_t)(at - s);
	dom = at + 1;
	dlen = len - llen - 1;
	if (memchr(dom, '@', dlen) != NULL)
		return list_bad(l, err, errlen, s, len, "more than one '@'; %s", expect);
	if (llen == 0 && dlen == 0)
		return list_bad(l, err, errlen, s, len, "neither user nor domain; %s", expect);
	if ((why = list_local_check(s, llen)) != NULL)
		return list_bad(l, err, errlen, s, len, "%s; %s", why, expect);
	if (dlen > 1 && dom[dlen - 1] == '.')
		dlen--;
	if (dlen > 0 && ((why = list_domain_alabel(&dom, &dlen, abuf, sizeof(abuf))) != NULL ||
	    (why = list_domain_check(dom, dlen)) != NULL))
		return list_bad(l, err, errlen, s, len, "domain: %s; %s", why, expect);
	return list_set_add(l, s, llen, true, dom, dlen, LF_ADDR);
}

/* list_match_address - see lists.h */
bool
list_match_address(const struct list *l, const char *local, size_t llen,
    const char *domain, size_t dlen)
{
	char abuf[LIST_DOMAIN_MAX + 1];

	if (l == NULL || l->kind != LIST_ADDRESS || l->sused == 0
	    || (local == NULL && llen > 0) || (domain == NULL && dlen > 0))
		return false;
	if (dlen > 0 && domain[dlen - 1] == '.')
		dlen--;
	if (dlen > 0 && list_has_8bit(domain, dlen) &&
	    list_domain_alabel(&domain, &dlen, abuf, sizeof(abuf)) != NULL)
		dlen = 0;	/* not a valid IDN: only user@ entries can match */
	if (llen > LIST_LOCAL_MAX || dlen > LIST_DOMAIN_MAX)
		/* longer than any entry: only the part within limits can match */
		return (llen <= LIST_LOCAL_MAX && llen > 0
		    && list_set_get(l, local, llen, true, "", 0))
		    || (dlen <= LIST_DOMAIN_MAX && dlen > 0
		    && list_set_get(l, "", 0, true, domain, dlen));
	if (llen == 0 && dlen == 0)
		return false;
	return list_set_get(l, local, llen, true, domain, dlen) != 0
	    || (dlen > 0 && list_set_get(l, "", 0, true, domain, dlen) != 0)
	    || (llen > 0 && list_set_get(l, local, llen, true, "", 0) != 0);
}

/* ---- words ---- */

/* list_add_word - "word" or "prefix*" */
static enum list_status
list_add_word(struct list *l, const char *s, size_t len, char *err, size_t errlen)
{
	static const char expect[] =
	    "expected a word without blanks, optionally ending in '*' (a prefix)";
	bool glob = len > 0 && s[len - 1] == '*';
	size_t n = glob ? len - 1 : len, i;

	if (len == 0)
		return list_bad(l, err, errlen, s, len, "empty; %s", expect);
	if (n > LIST_WORD_MAX)
		return list_bad(l, err, errlen, s, len, "longer than %d bytes; %s",
		    LIST_WORD_MAX, expect);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c == 0x7f)
			return list_bad(l, err, errlen, s, len,
			    "blank or control byte; %s", expect);
		if (c == '*')
			return list_bad(l, err, errlen, s, len,
			    "'*' is allowed only at the end; %s", expect);
	}
	if (!glob) {
		char abuf[LIST_WORD_MAX + 1];
		int r;

		if (list_set_add(l, s, n, false, NULL, 0, LF_EXACT) != LIST_OK)
			return LIST_ENOMEM;
		/* a name in U-labels (or xn-- labels): its A-label form too,
		 * for the HELO name; a word that is no IDN stays a word */
		if (idn_needs(s, n) && (r = idn_alabel(s, n, abuf, sizeof(abuf))) > 0) {
			size_t count = l->count;	/* the same entry: not counted twice */
			enum list_status st = list_set_add(l, abuf, (size_t)r, false, NULL, 0, LF_IDN);

			l->count = count;
			return st;
		}
		return LIST_OK;
	}
	if (list_set_add(l, s, n, false, NULL, 0, LF_GLOB) != LIST_OK)
		return LIST_ENOMEM;
	l->glob_len[n / 64] |= (uint64_t)1 << (n % 64);
	return LIST_OK;
}

/* list_match_word - see lists.h */
bool
list_match_word(const struct list *l, const char *w, size_t len)
{
	size_t n;

	if (l == NULL || l->kind != LIST_WORD || l->sused == 0 || (w == NULL && len > 0))
		return false;
	if (len > 0 && len <= LIST_WORD_MAX
	    && (list_set_get(l, w, len, false, NULL, 0) & LF_EXACT))
		return true;
	for (n = 0; n <= len && n <= LIST_WORD_MAX; n++)
		if ((l->glob_len[n / 64] >> (n % 64) & 1)
		    && (list_set_get(l, w, n, false, NULL, 0) & LF_GLOB))
			return true;
	return false;
}

/* list_match_helo - see lists.h */
bool
list_match_helo(const struct list *l, const char *w, size_t len)
{
	char abuf[LIST_WORD_MAX + 1];
	int r;

	if (list_match_word(l, w, len))
		return true;
	if (l == NULL || l->kind != LIST_WORD || l->sused == 0 || w == NULL || !idn_needs(w, len))
		return false;
	if (len > 0 && w[len - 1] == '.')
		len--;		/* the root's dot */
	r = idn_alabel(w, len, abuf, sizeof(abuf));
	if (r <= 0)
		return false;	/* not a valid IDN: only the name as sent matched */
	return (list_set_get(l, abuf, (size_t)r, false, NULL, 0) & (LF_EXACT | LF_IDN)) ||
	    list_match_word(l, abuf, (size_t)r);
}

/* list_word_idn_ok - list_word_find's test: not an IDN, or a valid one */
static bool
list_word_idn_ok(const void *arg, const char *w, size_t len, bool glob)
{
	char abuf[LIST_WORD_MAX + 1];

	(void)arg;
	return glob || !idn_needs(w, len) || idn_alabel(w, len, abuf, sizeof(abuf)) > 0;
}

/* list_word_bad_idn - see lists.h */
bool
list_word_bad_idn(const struct list *l, const char **w, size_t *len)
{
	bool glob;

	return list_word_find(l, list_word_idn_ok, NULL, w, len, &glob);
}

/* ---- the list ---- */

/* list_kind_name - see lists.h */
const char *
list_kind_name(enum list_kind kind)
{
	switch (kind) {
	case LIST_NET: return "network";
	case LIST_DOMAIN: return "domain";
	case LIST_ADDRESS: return "address";
	case LIST_WORD: return "word";
	}
	return "list";
}

/* list_new_alloc - see lists.h */
struct list *
list_new_alloc(enum list_kind kind, const struct list_alloc *a)
{
	struct list_alloc std = { list_std_realloc, list_std_free, NULL };
	struct list *l;

	if (kind != LIST_NET && kind != LIST_DOMAIN && kind != LIST_ADDRESS && kind != LIST_WORD)
		return NULL;
	if (a == NULL)
		a = &std;
	l = a->realloc_fn(a->ctx, NULL, sizeof(*l));
	if (l == NULL)
		return NULL;
	memset(l, 0, sizeof(*l));
	l->kind = kind;
	l->a = *a;
	return l;
}

/* list_new - see lists.h */
struct list *
list_new(enum list_kind kind)
{
	return list_new_alloc(kind, NULL);
}

/* list_add_entry - list_add with the status kept apart */
static enum list_status
list_add_entry(struct list *l, const char *item, size_t len, char *err, size_t errlen)
{
	enum list_status st;
	size_t i;

	if (len == 0)
		return list_bad(l, err, errlen, "", 0, "empty entry");
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)item[i];

		if (c < 0x20 || c == 0x7f)
			return list_bad(l, err, errlen, item, len, "control byte at offset %zu", i);
	}
	if (l->kind == LIST_NET && l->nnodes == 0) {
		if (list_grow(l, (void **)&l->nodes, &l->ncap, 2, sizeof(*l->nodes)) != 0)
			return LIST_ENOMEM;
		memset(l->nodes, 0, 2 * sizeof(*l->nodes));
		l->nnodes = 2;
	}
	switch (l->kind) {
	case LIST_NET: st = list_add_net(l, item, len, err, errlen); break;
	case LIST_DOMAIN: st = list_add_domain(l, item, len, err, errlen); break;
	case LIST_ADDRESS: st = list_add_address(l, item, len, err, errlen); break;
	default: st = list_add_word(l, item, len, err, errlen); break;
	}
	if (st == LIST_ENOMEM)
		list_msg(err, errlen, "out of memory adding a %s entry", list_kind_name(l->kind));
	return st;
}

/* list_add - see lists.h */
int
list_add(struct list *l, const char *item, size_t len, char *err, size_t errlen)
{
	if (l == NULL || (item == NULL && len > 0)) {
		list_msg(err, errlen, "no list or no item");
		return -1;
	}
	return list_add_entry(l, item, len, err, errlen) == LIST_OK ? 0 : -1;
}

/* list_file_line - strip CR, comment and blanks from one line, then add it */
static enum list_status
list_file_line(struct list *l, char *buf, size_t n, char *lerr, size_t lerrlen)
{
	size_t i, start = 0;

	if (n > 0 && buf[n - 1] == '\r')
		n--;
	for (i = 0; i < n; i++)
		if (buf[i] == '#' && (i == 0 || buf[i - 1] == ' ' || buf[i - 1] == '\t')) {
			n = i;
			break;
		}
	while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	while (start < n && (buf[start] == ' ' || buf[start] == '\t'))
		start++;
	if (start == n)
		return LIST_OK;
	return list_add_entry(l, buf + start, n - start, lerr, lerrlen);
}

/* list_load_file - see lists.h */
int
list_load_file(struct list *l, const char *path, char *err, size_t errlen)
{
	char line[LIST_LINE_MAX + 1], lerr[512];
	size_t n = 0, total = 0, nbad = 0, lineno = 1;
	bool toolong = false, eof = false;
	enum list_status st;
	struct stat sb;
	FILE *fp;
	int c;

	if (l == NULL || path == NULL) {
		list_msg(err, errlen, "no list or no path");
		return -1;
	}
	if ((fp = fopen(path, "re")) == NULL) {
		list_msg(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(fp), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > LIST_FILE_MAX) {
		list_msg(err, errlen, "%s: larger than %u bytes", path, LIST_FILE_MAX);
		fclose(fp);
		return -1;
	}
	while (!eof) {
		c = getc_unlocked(fp);
		if (c == EOF) {
			eof = true;
			if (n == 0 && !toolong)
				break;
		} else if (++total > LIST_FILE_MAX) {
			list_msg(err, errlen, "%s: larger than %u bytes", path, LIST_FILE_MAX);
			fclose(fp);
			return -1;
		} else if (c != '\n') {
			if (n < LIST_LINE_MAX)
				line[n++] = (char)c;
			else
				toolong = true;
			continue;
		}
		if (toolong) {
			st = LIST_EBAD;
			list_msg(lerr, sizeof(lerr), "line longer than %d bytes", LIST_LINE_MAX);
		} else {
			st = list_file_line(l, line, n, lerr, sizeof(lerr));
		}
		if (st != LIST_OK) {
			if (nbad++ == 0)
				list_msg(err, errlen, "%s:%zu: %s", path, lineno, lerr);
			if (st == LIST_ENOMEM)
				break;
		}
		n = 0;
		toolong = false;
		lineno++;
	}
	if (ferror(fp)) {
		list_msg(err, errlen, "%s:%zu: read error", path, lineno);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	if (nbad > 1 && err != NULL) {
		size_t used = strlen(err);

		list_msg(err + used, errlen - used, " (and %zu more bad lines)", nbad - 1);
	}
	return nbad ? -1 : 0;
}

/* list_count - see lists.h */
size_t
list_count(const struct list *l)
{
	return l ? l->count : 0;
}

/* list_kind - see lists.h */
enum list_kind
list_kind(const struct list *l)
{
	return l->kind;
}

/* list_word_find - see lists.h */
bool
list_word_find(const struct list *l, bool (*ok)(const void *arg, const char *w, size_t len, bool glob),
    const void *arg, const char **w, size_t *len, bool *glob)
{
	if (l == NULL || l->kind != LIST_WORD)
		return false;
	for (size_t i = 0; i < l->nslots; i++) {
		const struct list_slot *sl = &l->slots[i];
		/* the glob "*" alone has no bytes: a list of it has no arena */
		const char *word = l->arena != NULL ? l->arena + sl->off : "";
		/* a word and its glob share a slot: look at both */
		for (uint32_t fl = LF_EXACT; fl <= LF_GLOB; fl <<= 1) {
			if (!(sl->flags & fl) || ok(arg, word, sl->len, fl == LF_GLOB))
				continue;
			*w = word;
			*len = sl->len;
			*glob = fl == LF_GLOB;
			return true;
		}
	}
	return false;
}

/* list_free - see lists.h */
void
list_free(struct list *l)
{
	if (l == NULL)
		return;
	l->a.free_fn(l->a.ctx, l->nodes);
	l->a.free_fn(l->a.ctx, l->slots);
	l->a.free_fn(l->a.ctx, l->arena);
	l->a.free_fn(l->a.ctx, l);
}
