/*
 * owner - login maps and header From mailboxes (see owner.h)
 *
 * A map is a small hash of logins (case-folded), each with an array of
 * items {local pattern, domain}; "=alias" items name another login. A
 * lookup costs one hash probe plus a pass over that login's items (and
 * those of "*" and of its aliases): maps hold a handful per login.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "owner.h"
#include "xalloc.h"

#define OWNER_BUCKETS 256
#define OWNER_ALIAS_DEPTH 4
#define OWNER_FILE_MAX (16u << 20)

struct owner_item {
	char *local;		/* pattern ('*', %l %u %d), "" = any local part */
	char *domain;		/* lower case, %d allowed; "" = any domain */
	char *alias;		/* "=login": another entry, or NULL */
};

struct owner_ent {
	struct owner_ent *next;
	char *login;
	struct owner_item *items;
	size_t n, cap;
};

struct owner_map {
	struct owner_ent *b[OWNER_BUCKETS];
	struct owner_ent *cur;	/* the entry words are added to */
};

/* owner_hash - of a login, case-folded */
static unsigned
owner_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint32_t)tolower((unsigned char)s[i])) * 16777619u;
	return h % OWNER_BUCKETS;
}

/* owner_find - the entry of a login, or NULL */
static const struct owner_ent *
owner_find(const struct owner_map *m, const char *login, size_t len)
{
	for (const struct owner_ent *e = m->b[owner_hash(login, len)]; e; e = e->next)
		if (strlen(e->login) == len && strncasecmp(e->login, login, len) == 0)
			return e;
	return NULL;
}

/* owner_map_new - an empty map */
struct owner_map *
owner_map_new(void)
{
	return xcalloc(1, sizeof(struct owner_map));
}

/* owner_map_free - everything */
void
owner_map_free(struct owner_map *m)
{
	if (m == NULL)
		return;
	for (int i = 0; i < OWNER_BUCKETS; i++) {
		struct owner_ent *e, *next;
		for (e = m->b[i]; e; e = next) {
			next = e->next;
			for (size_t k = 0; k < e->n; k++) {
				free(e->items[k].local);
				free(e->items[k].domain);
				free(e->items[k].alias);
			}
			free(e->items);
			free(e->login);
			free(e);
		}
	}
	free(m);
}

/* owner_text_ok - printable ASCII or 8-bit, no blanks, quotes or '#' */
static bool
owner_text_ok(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c == 0x7f || c == '"' || c == '\\' || c == ',' || c == '<' || c == '>')
			return false;
	}
	return true;
}

/* owner_domain_ok - a domain pattern: labels of letters, digits, '-', '_',
 * or %d */
static bool
owner_domain_ok(const char *s, size_t len)
{
	if (len > 255)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '%' && i + 1 < len && s[i + 1] == 'd') {
			i++;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_' && c != '.' && c != '[' && c != ']' && c != ':')
			return false;
	}
	return true;
}

/* owner_map_add_word - see owner.h */
int
owner_map_add_word(struct owner_map *m, const char *w, size_t len, char *err, size_t errlen)
{
	struct owner_ent *e = m->cur;
	struct owner_item it = { NULL, NULL, NULL };
	const char *at;

	if (len > 1 && w[len - 1] == ':') {
		unsigned h;
		if (len - 1 > OWNER_LOGIN_MAX || !owner_text_ok(w, len - 1) ||
		    memchr(w, ':', len - 1) != NULL) {
			snprintf(err, errlen, "bad login in a login-map: 1 to 255 printable bytes, "
			    "no blanks, quotes or ':'");
			return -1;
		}
		if (owner_find(m, w, len - 1) != NULL) {
			snprintf(err, errlen, "login \"%.*s\" given twice in the map",
			    (int)(len - 1 > 64 ? 64 : len - 1), w);
			return -1;
		}
		h = owner_hash(w, len - 1);
		e = xcalloc(1, sizeof(*e));
		e->login = xmemdup(w, len - 1);
		e->next = m->b[h];
		m->b[h] = e;
		m->cur = e;
		return 0;
	}
	if (e == NULL) {
		snprintf(err, errlen, "expected \"LOGIN:\" before the addresses it owns");
		return -1;
	}
	if (len == 0 || len > 320 || !owner_text_ok(w, len)) {
		snprintf(err, errlen, "bad item \"%.*s\" in a login-map: printable, no blanks or quotes",
		    (int)(len > 64 ? 64 : len), w);
		return -1;
	}
	if (w[0] == '=') {
		if (len == 1 || len - 1 > OWNER_LOGIN_MAX) {
			snprintf(err, errlen, "expected a login after '=' (an alias)");
			return -1;
		}
		it.alias = xmemdup(w + 1, len - 1);
	} else if (len == 2 && w[0] == '%' && w[1] == 'l') {
		it.local = xstrdup("%l");	/* the whole login as an address */
		it.domain = NULL;
	} else {
		at = memrchr(w, '@', len);
		if (at == NULL) {
			snprintf(err, errlen, "bad item \"%.*s\" in a login-map: expected user@domain, "
			    "@domain, user@, a pattern with '*', %%l, or =login", (int)(len > 64 ? 64 : len), w);
			return -1;
		}
		if (memchr(w, '@', (size_t)(at - w)) != NULL || (size_t)(at - w) > 64 ||
		    !owner_domain_ok(at + 1, len - (size_t)(at + 1 - w))) {
			snprintf(err, errlen, "bad address \"%.*s\" in a login-map", (int)(len > 64 ? 64 : len), w);
			return -1;
		}
		it.local = xmemdup(w, (size_t)(at - w));
		it.domain = xmemdup(at + 1, len - (size_t)(at + 1 - w));
		for (char *p = it.domain; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (it.domain[0] != 0 && it.domain[strlen(it.domain) - 1] == '.')
			it.domain[strlen(it.domain) - 1] = 0;
		if (strcmp(it.local, "*") == 0)
			it.local[0] = 0;	/* *@dom = @dom */
	}
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 4;
		e->items = xrealloc(e->items, e->cap * sizeof(*e->items));
	}
	e->items[e->n++] = it;
	return 0;
}

/* owner_map_load_file - "LOGIN: ITEM ..." words, '#' comments */
int
owner_map_load_file(struct owner_map *m, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char line[4096], e[300];
	int lineno = 0, bad = 0;
	size_t total = 0;

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t n = strlen(line);
		char *save = NULL, *tok;

		lineno++;
		total += n;
		if (total > OWNER_FILE_MAX || (n == sizeof(line) - 1 && line[n - 1] != '\n')) {
			snprintf(err, errlen, "%s:%d: line too long or file too big", path, lineno);
			fclose(f);
			return -1;
		}
		for (tok = strtok_r(line, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
			if (tok[0] == '#')
				break;
			if (owner_map_add_word(m, tok, strlen(tok), e, sizeof(e)) != 0 && bad++ == 0)
				snprintf(err, errlen, "%s:%d: %s", path, lineno, e);
		}
	}
	fclose(f);
	return bad ? -1 : 0;
}

/* owner_expand - a pattern with %l %u %d made concrete for a login */
static bool
owner_expand(const char *pat, const char *login, size_t loginlen, char *out, size_t size)
{
	const char *at = memrchr(login, '@', loginlen);
	size_t ul = at ? (size_t)(at - login) : loginlen;
	size_t n = 0;

	for (const char *p = pat; *p; p++) {
		const char *v = NULL;
		size_t vl = 0;
		if (p[0] == '%' && (p[1] == 'l' || p[1] == 'u' || p[1] == 'd')) {
			if (p[1] == 'l') {
				v = login;
				vl = loginlen;
			} else if (p[1] == 'u') {
				v = login;
				vl = ul;
			} else {
				if (at == NULL)
					return false;	/* no domain in the login: no match */
				v = at + 1;
				vl = loginlen - ul - 1;
			}
			p++;
		} else {
			v = p;
			vl = 1;
		}
		if (n + vl + 1 > size)
			return false;
		memcpy(out + n, v, vl);
		n += vl;
	}
	out[n] = 0;
	return true;
}

/* owner_glob - case-insensitive match of s against a pattern with '*' */
static bool
owner_glob(const char *pat, const char *s, size_t len)
{
	size_t p = 0, i = 0, star = SIZE_MAX, mark = 0, plen = strlen(pat);

	while (i < len) {
		if (p < plen && pat[p] == '*') {
			star = p++;
			mark = i;
		} else if (p < plen && tolower((unsigned char)pat[p]) == tolower((unsigned char)s[i])) {
			p++;
			i++;
		} else if (star != SIZE_MAX) {
			p = star + 1;
			i = ++mark;
		} else {
			return false;
		}
	}
	while (p < plen && pat[p] == '*')
		p++;
	return p == plen;
}

/* owner_item_match - does one item give this address? */
static bool
owner_item_match(const struct owner_item *it, const char *login, size_t loginlen,
	const char *local, size_t llen, const char *domain, size_t dlen)
{
	char lp[OWNER_LOGIN_MAX + 72], dp[OWNER_LOGIN_MAX + 260];

	if (strcmp(it->local, "%l") == 0 && it->domain == NULL) {
		/* the login itself, as an address */
		const char *at = memrchr(login, '@', loginlen);
		if (at == NULL)
			return false;
		return (size_t)(at - login) == llen && strncasecmp(login, local, llen) == 0 &&
		    loginlen - llen - 1 == dlen && strncasecmp(at + 1, domain, dlen) == 0;
	}
	if (!owner_expand(it->local, login, loginlen, lp, sizeof(lp)) ||
	    !owner_expand(it->domain, login, loginlen, dp, sizeof(dp)))
		return false;
	if (dp[0] != 0 && (strlen(dp) != dlen || strncasecmp(dp, domain, dlen) != 0))
		return false;
	if (lp[0] == 0)
		return dlen > 0 || dp[0] != 0;	/* @domain */
	return owner_glob(lp, local, llen);
}

/* owner_ent_owns - an entry's items, following aliases */
static bool
owner_ent_owns(const struct owner_map *m, const struct owner_ent *e, int depth,
	const char *login, size_t loginlen, const char *local, size_t llen,
	const char *domain, size_t dlen)
{
	if (e == NULL || depth > OWNER_ALIAS_DEPTH)
		return false;
	for (size_t i = 0; i < e->n; i++) {
		const struct owner_item *it = &e->items[i];
		if (it->alias != NULL) {
			/* the alias's own items, %l meaning the alias's login */
			if (owner_ent_owns(m, owner_find(m, it->alias, strlen(it->alias)), depth + 1,
			    it->alias, strlen(it->alias), local, llen, domain, dlen))
				return true;
			continue;
		}
		if (owner_item_match(it, login, loginlen, local, llen, domain, dlen))
			return true;
	}
	return false;
}

/* owner_map_owns - see owner.h */
bool
owner_map_owns(const struct owner_map *m, const char *login, size_t loginlen,
	const char *local, size_t llen, const char *domain, size_t dlen)
{
	if (m == NULL || login == NULL || loginlen == 0 || loginlen > OWNER_LOGIN_MAX ||
	    llen > 64 || dlen == 0 || dlen > 255)
		return false;
	if (dlen > 0 && domain[dlen - 1] == '.')
		dlen--;
	return owner_ent_owns(m, owner_find(m, login, loginlen), 0, login, loginlen,
	    local, llen, domain, dlen) ||
	    owner_ent_owns(m, owner_find(m, "*", 1), 0, login, loginlen, local, llen, domain, dlen);
}

/* ---------------------------------------------------------------------
 * Header From
 */

/* from_field - the unfolded value of the one From field; -1 if none or
 * several */
static int
from_field(const char *h, size_t len, char *out, size_t size, size_t *olen)
{
	size_t i = 0;
	int found = 0;

	while (i < len) {
		size_t e = i;
		while (e < len && h[e] != '\n')
			e++;
		if (e == i || (e == i + 1 && h[i] == '\r'))
			break;		/* the empty line: end of the header */
		if (e - i >= 5 && strncasecmp(h + i, "From", 4) == 0) {
			size_t k = i + 4;
			while (k < e && (h[k] == ' ' || h[k] == '\t'))
				k++;
			if (k < e && h[k] == ':') {
				size_t n = 0;
				if (found++)
					return -1;	/* two From fields */
				k++;
				for (;;) {
					for (; k < e; k++) {
						if (h[k] == '\r' || h[k] == 0)
							continue;
						if (n + 1 >= size)
							return -1;
						out[n++] = h[k];
					}
					/* folded continuation lines */
					if (e + 1 < len && (h[e + 1] == ' ' || h[e + 1] == '\t')) {
						k = e + 1;
						e = k;
						while (e < len && h[e] != '\n')
							e++;
						continue;
					}
					break;
				}
				out[n] = 0;
				*olen = n;
			}
		}
		i = e + 1;
	}
	return found == 1 ? 0 : -1;
}

/* from_mailbox - one mailbox (display name, comments, angle brackets
 * dropped) into out; false if unreadable */
static bool
from_mailbox(const char *s, size_t len, struct owner_from *out, size_t *used)
{
	char spec[600];
	size_t n = 0, i, at_pos = SIZE_MAX;
	const char *lt = NULL, *gt = NULL;
	bool inq = false;
	int depth = 0;

	/* an angle-addr wins over anything around it */
	for (i = 0; i < len; i++) {
		char c = s[i];
		if (c == '\\' && (inq || depth) && i + 1 < len) {
			i++;
			continue;
		}
		if (depth == 0 && c == '"')
			inq = !inq;
		else if (!inq && c == '(')
			depth++;
		else if (!inq && c == ')' && depth > 0)
			depth--;
		else if (!inq && depth == 0 && c == '<' && lt == NULL)
			lt = s + i;
		else if (!inq && depth == 0 && c == '>' && lt != NULL && gt == NULL)
			gt = s + i;
	}
	if (inq || depth != 0 || (lt != NULL) != (gt != NULL))
		return false;
	if (lt != NULL) {
		s = lt + 1;
		len = (size_t)(gt - lt - 1);
		/* a source route: @a,@b:user@dom */
		if (len > 0 && s[0] == '@') {
			const char *colon = memchr(s, ':', len);
			if (colon == NULL)
				return false;
			len -= (size_t)(colon + 1 - s);
			s = colon + 1;
		}
	}
	/* the addr-spec without comments and blanks; quotes decoded */
	inq = false;
	depth = 0;
	for (i = 0; i < len; i++) {
		char c = s[i];
		if (!inq && c == '(') {
			depth++;
			continue;
		}
		if (depth > 0) {
			if (c == '\\')
				i++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (c == '"') {
			inq = !inq;
			continue;
		}
		if (inq && c == '\\' && i + 1 < len) {
			c = s[++i];
		} else if (!inq && (c == ' ' || c == '\t')) {
			continue;
		} else if (!inq && c == '@') {
			at_pos = n;
		}
		if ((unsigned char)c < 0x20 || c == 0x7f || n + 1 >= sizeof(spec))
			return false;
		spec[n++] = c;
	}
	if (at_pos == SIZE_MAX || at_pos == 0 || at_pos + 1 >= n || at_pos > 64 || n - at_pos - 1 > 255)
		return false;
	if (*used + n + 2 > sizeof(out->buf))
		return false;
	{
		char *lp = out->buf + *used, *dp;
		memcpy(lp, spec, at_pos);
		lp[at_pos] = 0;
		dp = lp + at_pos + 1;
		memcpy(dp, spec + at_pos + 1, n - at_pos - 1);
		dp[n - at_pos - 1] = 0;
		for (char *p = dp; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (dp[0] != 0 && dp[strlen(dp) - 1] == '.')
			dp[strlen(dp) - 1] = 0;
		if (dp[0] == 0 || strchr(dp, '@') != NULL)
			return false;
		out->all[2 * out->n] = lp;
		out->all[2 * out->n + 1] = dp;
		out->n++;
		*used += n + 2;
	}
	return true;
}

/* owner_from_parse - see owner.h */
int
owner_from_parse(const char *hdrs, size_t len, struct owner_from *out)
{
	char v[2048];
	size_t vlen = 0, start = 0, used = 0;
	bool inq = false;
	int depth = 0, angle = 0;

	memset(out, 0, sizeof(*out));
	if (from_field(hdrs, len, v, sizeof(v), &vlen) != 0)
		return 0;
	for (size_t i = 0; i <= vlen; i++) {
		char c = i < vlen ? v[i] : ',';
		if (c == '\\' && (inq || depth) && i + 1 < vlen) {
			i++;
			continue;
		}
		if (depth == 0 && c == '"') {
			inq = !inq;
			continue;
		}
		if (inq)
			continue;
		if (c == '(') {
			depth++;
			continue;
		}
		if (c == ')' && depth > 0) {
			depth--;
			continue;
		}
		if (depth > 0)
			continue;
		if (c == '<')
			angle++;
		else if (c == '>' && angle > 0)
			angle--;
		else if (angle == 0 && c == ':') {
			start = i + 1;		/* a group: its name goes */
		} else if (angle == 0 && (c == ',' || c == ';')) {
			size_t a = start, b = i;
			while (a < b && (v[a] == ' ' || v[a] == '\t'))
				a++;
			while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
				b--;
			start = i + 1;
			if (a == b)
				continue;	/* empty list element, or the end of a group */
			if (out->n >= OWNER_FROM_MAX || !from_mailbox(v + a, b - a, out, &used)) {
				memset(out, 0, sizeof(*out));
				return 0;
			}
		}
	}
	if (inq || depth != 0 || angle != 0) {
		memset(out, 0, sizeof(*out));
		return 0;
	}
	return (int)out->n;
}
