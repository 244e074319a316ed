/*
 * spf_guard - moat's check of SPF records before libspf2 sees them (see
 * spf_guard.h for the contract and the bounds)
 *
 * The parser follows the ABNF of RFC 7208 section 12 term by term. It
 * never allocates and never reads past len; every loop is bounded by the
 * record's length, which is itself bounded by SPF_GUARD_RECORD_MAX.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "spf_guard.h"

/* the bounds of one parse: a published record, or one of our rewrites */
struct lim {
	size_t record, spec, literal;
	int terms;
};

static const struct lim lim_published = {
	SPF_GUARD_RECORD_MAX, SPF_GUARD_SPEC_MAX, SPF_GUARD_LITERAL_MAX, SPF_GUARD_TERMS_MAX
};
static const struct lim lim_rewritten = {
	SPF_GUARD_REWRITE_MAX, SPF_GUARD_SPEC_MAX + SPF_GUARD_MARK_ROOM,
	SPF_GUARD_LITERAL_MAX + SPF_GUARD_MARK_ROOM, 2 * SPF_GUARD_TERMS_MAX
};

/* refuse - set why and say no */
static int
refuse(char *why, size_t whysize, const char *reason)
{
	if (why != NULL && whysize > 0)
		snprintf(why, whysize, "%s", reason);
	return -1;
}

static bool
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

static unsigned char
lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* word_is - s[0..n) equals the lower-case word w, in any case */
static bool
word_is(const char *s, size_t n, const char *w)
{
	size_t wl = strlen(w);

	if (n != wl)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)s[i]) != (unsigned char)w[i])
			return false;
	return true;
}

/* spf_guard_is_spf - see spf_guard.h */
bool
spf_guard_is_spf(const char *txt, size_t len)
{
	if (len < 6 || !word_is(txt, 6, "v=spf1"))
		return false;
	return len == 6 || txt[6] == ' ';
}

/* prefix_num - a prefix length: "0" or digits without a leading zero, <= max */
static int
prefix_num(const char *s, size_t n, int max)
{
	int v = 0;

	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/* toplabel_ok - RFC 7208 toplabel */
static bool
toplabel_ok(const char *s, size_t n)
{
	bool hyphen = false, alpha = false;

	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '-')
			hyphen = true;
		else if (is_alpha(c))
			alpha = true;
		else if (!is_digit(c))
			return false;
	}
	if (hyphen)
		return is_alnum((unsigned char)s[0]) && is_alnum((unsigned char)s[n - 1]);
	return alpha;
}

/*
 * macro_string - check a macro-string; *end_macro tells whether it ends in
 * a macro-expand, *lit is where its trailing literal run starts.
 * exp_letters: c, r and t are allowed (only outside domain-specs).
 */
static int
macro_string(const struct lim *lm, const char *s, size_t n, bool exp_letters, bool *end_macro,
    size_t *lit, char *why, size_t whysize)
{
	size_t i = 0, run = 0;	/* run: bytes of the string literal libspf2 builds */
	int macros = 0;

	*end_macro = false;
	*lit = 0;
	if (n > lm->spec)
		return refuse(why, whysize, "domain-spec or modifier value too long");
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t digits = 0, delims = 0, d0;

		if (c != '%') {
			*end_macro = false;
			i++;
			if (++run > lm->literal)
				return refuse(why, whysize, "string literal too long");
			continue;
		}
		if (i + 1 >= n)
			return refuse(why, whysize, "'%' at the end of a macro-string");
		c = (unsigned char)s[i + 1];
		if (c == '%' || c == '_' || c == '-') {
			i += 2;
			*end_macro = true;
			*lit = i;
			run += c == '-' ? 3 : 1;	/* "%-" becomes "%20" */
			if (run > lm->literal)
				return refuse(why, whysize, "string literal too long");
			continue;
		}
		run = 0;
		if (c != '{')
			return refuse(why, whysize, "'%' not followed by '{', '%', '_' or '-'");
		i += 2;
		if (i >= n)
			return refuse(why, whysize, "unterminated macro");
		c = lower((unsigned char)s[i]);
		if (strchr("slodiphv", c) == NULL || c == '\0') {
			if (c == '\0' || strchr("crt", c) == NULL)
				return refuse(why, whysize, "unknown macro letter");
			if (!exp_letters)
				return refuse(why, whysize, "macro letter c, r or t outside an explanation");
		}
		i++;
		d0 = i;
		while (i < n && is_digit((unsigned char)s[i])) {
			i++;
			digits++;
		}
		if (digits > 0 && prefix_num(s + d0, digits, SPF_GUARD_DIGITS_MAX) < 1)
			return refuse(why, whysize, "macro digit transformer not within 1..128");
		if (i < n && s[i] == 'R')	/* ABNF is case-blind; libspf2 is not */
			return refuse(why, whysize, "upper-case R transformer (libspf2 cannot compile it)");
		if (i < n && s[i] == 'r')
			i++;
		while (i < n && s[i] != '}') {
			if (s[i] == ',' || s[i] == '/')	/* RFC 7208 has them; libspf2 does not */
				return refuse(why, whysize, "macro delimiter ',' or '/' (libspf2 cannot compile it)");
			if (strchr(".-+_=", s[i]) == NULL || s[i] == '\0')
				return refuse(why, whysize, "bad macro delimiter");
			if (++delims > SPF_GUARD_DELIMS_MAX)
				return refuse(why, whysize, "too many macro delimiters");
			i++;
		}
		if (i >= n)
			return refuse(why, whysize, "unterminated macro");
		i++;
		if (++macros > SPF_GUARD_MACROS_MAX)
			return refuse(why, whysize, "too many macros in one term");
		*end_macro = true;
		*lit = i;
	}
	return 0;
}

/* domain_spec - RFC 7208 domain-spec: a macro-string, then a domain-end */
static int
domain_spec(const struct lim *lm, const char *s, size_t n, char *why, size_t whysize)
{
	bool end_macro;
	size_t lit, e;
	const char *dot = NULL;

	if (n == 0)
		return refuse(why, whysize, "empty domain-spec");
	if (macro_string(lm, s, n, false, &end_macro, &lit, why, whysize) != 0)
		return -1;
	if (end_macro)
		return 0;
	e = n;
	if (s[e - 1] == '.')
		e--;
	if (e == lit)		/* "%{d}." : a macro, then the root's dot */
		return lit > 0 ? 0 : refuse(why, whysize, "domain-spec without a top label");
	for (size_t i = lit; i < e; i++)
		if (s[i] == '.')
			dot = s + i;
	if (dot == NULL)
		return refuse(why, whysize, "domain-spec does not end in '.' and a top label");
	if (!toplabel_ok(dot + 1, (size_t)(s + e - dot - 1)))
		return refuse(why, whysize, "bad top label in domain-spec");
	return 0;
}

/* ip4_network - four decimal numbers 0..255, no leading zeros */
static bool
ip4_network(const char *s, size_t n)
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		size_t st = i;

		while (i < n && is_digit((unsigned char)s[i]))
			i++;
		if (prefix_num(s + st, i - st, 255) < 0)
			return false;
		if (part < 3) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
	}
	return i == n;
}

/* ip6_network - what inet_pton takes, printable and short */
static bool
ip6_network(const char *s, size_t n)
{
	char buf[64];
	unsigned char a[16];

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, a) == 1;
}

/* ip_mech - "ip4:" / "ip6:" network [ "/" prefix ] */
static int
ip_mech(struct spf_term *t, const char *r, size_t rn, bool v6, char *why, size_t whysize)
{
	size_t slash;

	if (rn < 2 || r[0] != ':')
		return refuse(why, whysize, "ip4 or ip6 without a network");
	r++;
	rn--;
	slash = rn;
	for (size_t i = 0; i < rn; i++)
		if (r[i] == '/')
			slash = i;
	if (slash < rn) {
		int p = prefix_num(r + slash + 1, rn - slash - 1, v6 ? 128 : 32);

		if (p < 0)
			return refuse(why, whysize, "bad prefix length");
		if (v6)
			t->c6 = p;
		else
			t->c4 = p;
	}
	if (!(v6 ? ip6_network(r, slash) : ip4_network(r, slash)))
		return refuse(why, whysize, v6 ? "bad ip6 network" : "bad ip4 network");
	t->spec = r;
	t->speclen = slash;
	return 0;
}

/* dual_cidr - strip [ "/" ip4-prefix ] [ "//" ip6-prefix ] from the end of r */
static int
dual_cidr(struct spf_term *t, const char *r, size_t *rn, char *why, size_t whysize)
{
	size_t n = *rn, j = n;

	while (j > 0 && is_digit((unsigned char)r[j - 1]))
		j--;
	if (j < n && j >= 2 && r[j - 1] == '/' && r[j - 2] == '/') {
		if ((t->c6 = prefix_num(r + j, n - j, 128)) < 0)
			return refuse(why, whysize, "bad ip6 prefix length");
		n = j - 2;
		j = n;
		while (j > 0 && is_digit((unsigned char)r[j - 1]))
			j--;
	}
	if (j < n && j >= 1 && r[j - 1] == '/') {
		if ((t->c4 = prefix_num(r + j, n - j, 32)) < 0)
			return refuse(why, whysize, "bad ip4 prefix length");
		n = j - 1;
	}
	*rn = n;
	return 0;
}

/* directive - [ qualifier ] mechanism */
static int
directive(const struct lim *lm, struct spf_rec *out, const char *s, size_t n, char *why,
    size_t whysize)
{
	struct spf_term *t;
	size_t k = 0;
	const char *r;
	size_t rn;

	if (out->nterms >= lm->terms)
		return refuse(why, whysize, "too many terms");
	t = &out->t[out->nterms];
	memset(t, 0, sizeof(*t));
	t->qual = '+';
	t->c4 = t->c6 = -1;
	if (strchr("+-~?", s[0]) != NULL) {
		t->qual = s[0];
		s++;
		n--;
	}
	while (k < n && is_alnum((unsigned char)s[k]))
		k++;
	r = s + k;
	rn = n - k;
	if (word_is(s, k, "all")) {
		t->mech = SPF_M_ALL;
		if (rn != 0)
			return refuse(why, whysize, "\"all\" takes no argument");
		out->has_all = true;
	} else if (word_is(s, k, "include") || word_is(s, k, "exists")) {
		t->mech = lower((unsigned char)s[0]) == 'i' ? SPF_M_INCLUDE : SPF_M_EXISTS;
		if (rn < 1 || r[0] != ':')
			return refuse(why, whysize, "include or exists without a domain-spec");
		if (domain_spec(lm, r + 1, rn - 1, why, whysize) != 0)
			return -1;
		t->spec = r + 1;
		t->speclen = rn - 1;
	} else if (word_is(s, k, "a") || word_is(s, k, "mx")) {
		t->mech = k == 1 ? SPF_M_A : SPF_M_MX;
		if (dual_cidr(t, r, &rn, why, whysize) != 0)
			return -1;
		if (rn > 0) {
			if (r[0] != ':')
				return refuse(why, whysize, "bad character after mechanism");
			if (domain_spec(lm, r + 1, rn - 1, why, whysize) != 0)
				return -1;
			t->spec = r + 1;
			t->speclen = rn - 1;
		}
	} else if (word_is(s, k, "ptr")) {
		t->mech = SPF_M_PTR;
		if (rn > 0) {
			if (r[0] != ':')
				return refuse(why, whysize, "bad character after ptr");
			if (domain_spec(lm, r + 1, rn - 1, why, whysize) != 0)
				return -1;
			t->spec = r + 1;
			t->speclen = rn - 1;
		}
	} else if (word_is(s, k, "ip4") || word_is(s, k, "ip6")) {
		bool v6 = s[2] == '6';

		t->mech = v6 ? SPF_M_IP6 : SPF_M_IP4;
		if (ip_mech(t, r, rn, v6, why, whysize) != 0)
			return -1;
	} else
		return refuse(why, whysize, "unknown mechanism");
	out->nterms++;
	return 0;
}

/* modifier - name "=" value */
static int
modifier(const struct lim *lm, struct spf_rec *out, const char *s, size_t nl, const char *v,
    size_t vn, char *why, size_t whysize)
{
	bool end_macro;
	size_t lit;

	if (word_is(s, nl, "redirect")) {
		if (out->redirect != NULL)
			return refuse(why, whysize, "redirect= twice");
		if (domain_spec(lm, v, vn, why, whysize) != 0)
			return -1;
		out->redirect = v;
		out->redirlen = vn;
		return 0;
	}
	if (word_is(s, nl, "exp")) {
		if (out->has_exp)
			return refuse(why, whysize, "exp= twice");
		if (domain_spec(lm, v, vn, why, whysize) != 0)
			return -1;
		out->has_exp = true;
		out->exp = v;
		out->explen = vn;
		return 0;
	}
	return macro_string(lm, v, vn, true, &end_macro, &lit, why, whysize);
}

/* term - one directive or modifier */
static int
term(const struct lim *lm, struct spf_rec *out, const char *s, size_t n, char *why, size_t whysize)
{
	size_t i = 0;

	if (s[0] == '=')
		return refuse(why, whysize, "modifier without a name");
	if (is_alpha((unsigned char)s[0])) {
		while (i < n && (is_alnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			i++;
		if (i < n && s[i] == '=')
			return modifier(lm, out, s, i, s + i + 1, n - i - 1, why, whysize);
	}
	return directive(lm, out, s, n, why, whysize);
}

/* parse - a whole record within lm */
static int
parse(const struct lim *lm, const char *rec, size_t len, struct spf_rec *out, char *why,
    size_t whysize)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	if (len > lm->record)
		return refuse(why, whysize, "record too long");
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)rec[i];

		if (c != ' ' && (c < 0x21 || c > 0x7e))
			return refuse(why, whysize, "control or non-ASCII byte in record");
	}
	if (!spf_guard_is_spf(rec, len))
		return refuse(why, whysize, "not an SPF record");
	i = 6;
	while (i < len) {
		size_t st;

		while (i < len && rec[i] == ' ')
			i++;
		if (i >= len)
			break;
		st = i;
		while (i < len && rec[i] != ' ')
			i++;
		if (term(lm, out, rec + st, i - st, why, whysize) != 0)
			return -1;
	}
	return 0;
}

/* spf_guard_parse - see spf_guard.h */
int
spf_guard_parse(const char *rec, size_t len, struct spf_rec *out, char *why, size_t whysize)
{
	return parse(&lim_published, rec, len, out, why, whysize);
}

/* spf_guard_exp_text - see spf_guard.h */
int
spf_guard_exp_text(const char *s, size_t n, char *why, size_t whysize)
{
	static const struct lim lim_exp = {
		SPF_GUARD_EXP_MAX, SPF_GUARD_EXP_MAX, SPF_GUARD_LITERAL_MAX, 1
	};
	bool end_macro;
	size_t lit;

	if (n == 0)
		return refuse(why, whysize, "empty explanation");
	if (n > SPF_GUARD_EXP_MAX)
		return refuse(why, whysize, "explanation too long");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return refuse(why, whysize, "explanation not printable US-ASCII");
	return macro_string(&lim_exp, s, n, true, &end_macro, &lit, why, whysize);
}

/* spf_guard_parse_rewrite - see spf_guard.h */
int
spf_guard_parse_rewrite(const char *rec, size_t len, struct spf_rec *out, char *why,
    size_t whysize)
{
	return parse(&lim_rewritten, rec, len, out, why, whysize);
}

/* emit - append to out; false when it does not fit */
static bool
emit(char *out, size_t size, size_t *o, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static bool
emit(char *out, size_t size, size_t *o, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (*o >= size)
		return false;
	va_start(ap, fmt);
	r = vsnprintf(out + *o, size - *o, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= size - *o)
		return false;
	*o += (size_t)r;
	return true;
}

/* spf_guard_rewrite - see spf_guard.h */
int
spf_guard_rewrite(const struct spf_rec *r, const char *token, char *out, size_t size)
{
	size_t o = 0;
	bool ok;

	if (!emit(out, size, &o, "v=spf1"))
		return -1;
	for (int i = 0; i < r->nterms; i++) {
		const struct spf_term *t = &r->t[i];
		const char *dom = t->speclen > 0 ? t->spec : "%{d}";
		int dl = t->speclen > 0 ? (int)t->speclen : 4;
		const char *sep = dom[dl - 1] == '.' ? "" : ".";
		char q = t->qual;

		switch (t->mech) {
		case SPF_M_ALL:
			ok = emit(out, size, &o, " %call", q);
			break;
		case SPF_M_INCLUDE:
			ok = emit(out, size, &o, " %cinclude:%.*s", q, dl, dom);
			break;
		case SPF_M_IP4:
			if (t->c4 == 0)
				ok = emit(out, size, &o, " %cip4:0.0.0.0/1 %cip4:128.0.0.0/1", q, q);
			else if (t->c4 > 0)
				ok = emit(out, size, &o, " %cip4:%.*s/%d", q, dl, dom, t->c4);
			else
				ok = emit(out, size, &o, " %cip4:%.*s", q, dl, dom);
			break;
		case SPF_M_IP6:
			if (t->c6 == 0)
				ok = emit(out, size, &o, " %cip6:::/1 %cip6:8000::/1", q, q);
			else if (t->c6 > 0)
				ok = emit(out, size, &o, " %cip6:%.*s/%d", q, dl, dom, t->c6);
			else
				ok = emit(out, size, &o, " %cip6:%.*s", q, dl, dom);
			break;
		case SPF_M_A:
		case SPF_M_MX:
			ok = emit(out, size, &o, " %cexists:%.*s%sm%s%c%dx%d", q, dl, dom, sep, token,
			    t->mech == SPF_M_A ? 'a' : 'm',
			    t->c4 < 0 ? 32 : t->c4, t->c6 < 0 ? 128 : t->c6);
			break;
		case SPF_M_PTR:
		case SPF_M_EXISTS:
			ok = emit(out, size, &o, " %cexists:%.*s%sm%s%c", q, dl, dom, sep, token,
			    t->mech == SPF_M_PTR ? 'p' : 'e');
			break;
		default:
			ok = false;
			break;
		}
		if (!ok)
			return -1;
	}
	if (r->redirect != NULL && !r->has_all &&
	    !emit(out, size, &o, " redirect=%.*s", (int)r->redirlen, r->redirect))
		return -1;
	return (int)o;
}

/* spf_guard_marker - see spf_guard.h */
int
spf_guard_marker(const char *name, const char *token, struct spf_marker *m)
{
	size_t n = strlen(name), tl = strlen(token), dot = n, i;
	const char *l;

	for (i = n; i > 0; i--)
		if (name[i - 1] == '.') {
			dot = i - 1;
			break;
		}
	if (dot == n || tl == 0)
		return 0;
	l = name + dot + 1;
	if (l[0] != 'm' || strncmp(l + 1, token, tl) != 0)
		return 0;
	l += 1 + tl;
	memset(m, 0, sizeof(*m));
	m->domlen = dot;
	m->kind = l[0];
	m->c4 = m->c6 = -1;
	if (m->kind == 'p' || m->kind == 'e')
		return l[1] == '\0';
	if (m->kind != 'a' && m->kind != 'm')
		return 0;
	l++;
	for (int which = 0; which < 2; which++) {
		int v = 0, d = 0;

		while (is_digit((unsigned char)*l) && d < 3) {
			v = v * 10 + (*l - '0');
			l++;
			d++;
		}
		if (d == 0 || v > (which == 0 ? 32 : 128))
			return 0;
		if (which == 0) {
			m->c4 = v;
			if (*l++ != 'x')
				return 0;
		} else
			m->c6 = v;
	}
	return *l == '\0';
}

/* spf_guard_name_ok - see spf_guard.h */
bool
spf_guard_name_ok(const char *name, size_t len)
{
	size_t lab = 0;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '.') {
			if (lab == 0)
				return false;
			lab = 0;
			continue;
		}
		if (c < 0x20 || c >= 0x7f || c == '\\')
			return false;
		if (++lab > 63)
			return false;
	}
	return lab > 0;
}
