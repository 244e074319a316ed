/*
 * authres - render moat's Authentication-Results field (RFC 8601) and
 * recognise incoming fields that claim moat's authserv-id
 *
 * See authres.h for the contract. Design notes:
 *
 * QUOTING. Every property value may come from the peer (HELO, MAIL FROM,
 * DKIM d= and s=). The renderer never copies such bytes without choosing
 * one of three shapes for them: an RFC 2045 token, a local@domain whose
 * parts are a dot-atom without '=', '/' or '?' and a host name (what
 * RFC 8601's pvalue allows bare), or a quoted-string where only '"' and '\' are escaped and every
 * byte that a header cannot carry (CR, LF, NUL, controls, 8-bit) has
 * become '?'. So a value can never end the field, start a new one, or
 * add a result set ("x; dkim=pass" is quoted as one value).
 *
 * FOLDING. Each result set and each property starts a folded line, and
 * values are capped at AUTHRES_VALUE_MAX bytes (doubled at most by
 * escaping), so every line stays far below 998 octets.
 */
#include "authres.h"

#include <string.h>

struct wbuf {
	char *p;
	size_t size;
	size_t len;
	bool over;
};

/* wb_put - append n bytes, remembering overflow */
static void
wb_put(struct wbuf *w, const char *s, size_t n)
{
	if (w->over || n >= w->size - w->len) {
		w->over = true;
		return;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
	w->p[w->len] = '\0';
}

static void
wb_str(struct wbuf *w, const char *s)
{
	wb_put(w, s, strlen(s));
}

static void
wb_chr(struct wbuf *w, char c)
{
	wb_put(w, &c, 1);
}

/* is_keyword - moat's own method/result/ptype names: [A-Za-z0-9._-]+ */
static bool
is_keyword(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* is_token_char - RFC 2045 token: CHAR except SPACE, CTLs, tspecials */
static bool
is_token_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* is_atext - RFC 5322 atext */
static bool
is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* is_dot_atom - runs joined by single dots of what is both atext and a
 * token character (so '=', '/' and '?' make the value quoted: a reader
 * that splits on them cannot be misled) */
static bool
is_dot_atom(const unsigned char *s, size_t n)
{
	bool prev_dot = true;

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (prev_dot)
				return false;
			prev_dot = true;
		} else if (is_atext(s[i]) && is_token_char(s[i])) {
			prev_dot = false;
		} else {
			return false;
		}
	}
	return !prev_dot;
}

/* is_host - LDH labels of 1..63 joined by dots (a trailing dot is not) */
static bool
is_host(const unsigned char *s, size_t n)
{
	size_t lab = 0;

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c == '.') {
			if (lab == 0 || s[i - 1] == '-')
				return false;
			lab = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		if (c == '-' && lab == 0)
			return false;
		if (++lab > 63)
			return false;
	}
	return lab > 0 && s[n - 1] != '-';
}

/* put_value - a peer value as token, local@host, or quoted-string */
static void
put_value(struct wbuf *w, const unsigned char *v, size_t n)
{
	bool token = n > 0;
	const unsigned char *at = NULL;
	int ats = 0;

	for (size_t i = 0; i < n; i++) {
		if (!is_token_char(v[i]))
			token = false;
		if (v[i] == '@') {
			at = v + i;
			ats++;
		}
	}
	if (token) {
		wb_put(w, (const char *)v, n);
		return;
	}
	if (ats == 1 && is_host(at + 1, n - (size_t)(at + 1 - v)) &&
	    (at == v || is_dot_atom(v, (size_t)(at - v)))) {
		wb_put(w, (const char *)v, n);
		return;
	}
	wb_chr(w, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = v[i];
		if (c < 0x20 || c >= 0x7f)
			c = '?';
		if (c == '"' || c == '\\')
			wb_chr(w, '\\');
		wb_chr(w, (char)c);
	}
	wb_chr(w, '"');
}

void
authres_init(struct authres *a)
{
	memset(a, 0, sizeof *a);
}

int
authres_add(struct authres *a, const char *method, const char *result, const char *reason)
{
	struct authres_set *s;

	if (a->n >= AUTHRES_MAX || !is_keyword(method) || !is_keyword(result))
		return -1;
	s = &a->set[a->n];
	memset(s, 0, sizeof *s);
	s->method = method;
	s->result = result;
	s->reason = reason;
	return a->n++;
}

int
authres_prop(struct authres *a, int i, const char *ptype_property, const void *value,
	size_t len)
{
	struct authres_set *s;

	if (i < 0 || i >= a->n || !is_keyword(ptype_property) ||
	    strchr(ptype_property, '.') == NULL || len > AUTHRES_VALUE_MAX ||
	    (value == NULL && len > 0))
		return -1;
	s = &a->set[i];
	if (s->nprop >= AUTHRES_MAX_PROPS)
		return -1;
	s->prop[s->nprop].name = ptype_property;
	s->prop[s->nprop].value = value;
	s->prop[s->nprop].len = len;
	s->nprop++;
	return 0;
}

int
authres_comment(struct authres *a, int i, const char *text)
{
	if (i < 0 || i >= a->n || text == NULL)
		return -1;
	a->set[i].comment = text;
	return 0;
}

/* put_comment - moat's own text in parentheses, unsafe bytes dropped */
static void
put_comment(struct wbuf *w, const char *t)
{
	size_t n = 0;

	wb_str(w, " (");
	for (; *t && n < AUTHRES_VALUE_MAX; t++, n++) {
		unsigned char c = (unsigned char)*t;
		if (c < 0x20 || c >= 0x7f || c == '(' || c == ')' || c == '\\')
			continue;
		wb_chr(w, (char)c);
	}
	wb_chr(w, ')');
}

size_t
authres_render(const struct authres *a, const char *authserv_id, const char *eol,
	char *out, size_t size)
{
	struct wbuf w = { out, size, 0, false };

	if (size == 0)
		return 0;
	out[0] = '\0';
	if (authserv_id == NULL || *authserv_id == '\0' || strlen(authserv_id) > 255)
		return 0;
	put_value(&w, (const unsigned char *)authserv_id, strlen(authserv_id));
	if (a == NULL || a->n == 0)
		wb_str(&w, "; none");
	for (int i = 0; a != NULL && i < a->n; i++) {
		const struct authres_set *s = &a->set[i];

		wb_chr(&w, ';');
		wb_str(&w, eol);
		wb_chr(&w, '\t');
		wb_str(&w, s->method);
		wb_chr(&w, '=');
		wb_str(&w, s->result);
		if (s->comment != NULL)
			put_comment(&w, s->comment);
		if (s->reason != NULL) {
			size_t rl = strlen(s->reason);
			wb_str(&w, eol);
			wb_str(&w, "\t reason=");
			/* a reason is always quoted, whatever it holds */
			if (rl > AUTHRES_VALUE_MAX)
				rl = AUTHRES_VALUE_MAX;
			wb_chr(&w, '"');
			for (size_t k = 0; k < rl; k++) {
				unsigned char c = (unsigned char)s->reason[k];
				if (c < 0x20 || c >= 0x7f)
					c = '?';
				if (c == '"' || c == '\\')
					wb_chr(&w, '\\');
				wb_chr(&w, (char)c);
			}
			wb_chr(&w, '"');
		}
		for (int k = 0; k < s->nprop; k++) {
			wb_str(&w, eol);
			wb_str(&w, "\t ");
			wb_str(&w, s->prop[k].name);
			wb_chr(&w, '=');
			put_value(&w, (const unsigned char *)s->prop[k].value, s->prop[k].len);
		}
	}
	if (w.over) {
		out[0] = '\0';
		return 0;
	}
	return w.len;
}

/* skip_cfws - whitespace (folding included) and nested comments; returns
 * false on an unterminated comment */
static bool
skip_cfws(const unsigned char *s, size_t n, size_t *i)
{
	while (*i < n) {
		unsigned char c = s[*i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			(*i)++;
		} else if (c == '(') {
			unsigned depth = 0;
			while (*i < n) {
				c = s[*i];
				if (c == '\\' && *i + 1 < n) {
					*i += 2;
					continue;
				}
				(*i)++;
				if (c == '(')
					depth++;
				else if (c == ')' && --depth == 0)
					break;
			}
			if (depth != 0)
				return false;
		} else {
			break;
		}
	}
	return true;
}

static unsigned char
lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

bool
authres_is_ours(const char *value, size_t len, const char *authserv_id)
{
	const unsigned char *s = (const unsigned char *)value;
	const unsigned char *id = (const unsigned char *)authserv_id;
	size_t i = 0, idlen, k = 0;

	if (value == NULL || authserv_id == NULL || (idlen = strlen(authserv_id)) == 0)
		return false;
	if (!skip_cfws(s, len, &i) || i >= len)
		return false;
	if (s[i] == '"') {
		for (i++; i < len && s[i] != '"'; i++) {
			unsigned char c = s[i];
			if (c == '\\' && i + 1 < len)
				c = s[++i];
			if (c == '\r' || c == '\n')
				continue;	/* folding inside the quotes */
			if (k >= idlen || lower(c) != lower(id[k]))
				return false;
			k++;
		}
		return i < len && k == idlen;
	}
	for (; i < len && is_token_char(s[i]); i++, k++)
		if (k >= idlen || lower(s[i]) != lower(id[k]))
			return false;
	return k == idlen;
}

bool
authres_field_is_ours(const char *field, size_t len, const char *authserv_id)
{
	static const char name[] = "authentication-results";
	size_t n = sizeof name - 1, i;

	if (field == NULL || len <= n)
		return false;
	for (i = 0; i < n; i++)
		if (lower((unsigned char)field[i]) != (unsigned char)name[i])
			return false;
	while (i < len && (field[i] == ' ' || field[i] == '\t'))
		i++;
	if (i >= len || field[i] != ':')
		return false;
	i++;
	return authres_is_ours(field + i, len - i, authserv_id);
}
