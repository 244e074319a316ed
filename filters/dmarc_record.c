/*
 * dmarc_record - DMARC's TXT record and the RFC5322.From field, parsed
 * without I/O (see dmarc_record.h; the PSL is in dmarc_psl.c)
 *
 * Both parsers are single passes over caller bytes with fixed-size
 * state: no allocation, no recursion, work linear in the input. They are
 * moat's own, so libopendmarc's parser (and its CVE-2024-25768 path in
 * opendmarc_policy_fetch_ruf) is never reached. tests/fuzz/
 * fuzz_dmarc_record.c drives both.
 */
#include "dmarc_record.h"

#include <string.h>

#include "idn.h"

static unsigned char
lc(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* eq_ci - bytes [s, s+n) equal the lower-case word w, ignoring case */
static bool
eq_ci(const char *s, size_t n, const char *w)
{
	size_t wl = strlen(w);

	if (n != wl)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lc((unsigned char)s[i]) != (unsigned char)w[i])
			return false;
	return true;
}

static bool
is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

const char *
dmarc_policy_name(enum dmarc_policy p)
{
	switch (p) {
	case DMARC_POLICY_NONE:
		return "none";
	case DMARC_POLICY_QUARANTINE:
		return "quarantine";
	case DMARC_POLICY_REJECT:
		return "reject";
	default:
		return "unset";
	}
}

/* parse_policy - none | quarantine | reject */
static enum dmarc_policy
parse_policy(const char *v, size_t n)
{
	if (eq_ci(v, n, "none"))
		return DMARC_POLICY_NONE;
	if (eq_ci(v, n, "quarantine"))
		return DMARC_POLICY_QUARANTINE;
	if (eq_ci(v, n, "reject"))
		return DMARC_POLICY_REJECT;
	return DMARC_POLICY_UNSET;
}

/* parse_uint - 1..digits decimal digits, value into *out; false otherwise */
static bool
parse_uint(const char *v, size_t n, size_t digits, unsigned long *out)
{
	unsigned long x = 0;

	if (n == 0 || n > digits)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		x = x * 10 + (unsigned long)(v[i] - '0');
	}
	*out = x;
	return true;
}

/* parse_list - colon-separated words, each one of allowed[] */
static bool
parse_list(const char *v, size_t n, const char *const *allowed)
{
	size_t i = 0;

	if (n == 0)
		return false;
	while (i <= n) {
		size_t s = i, e;
		bool ok = false;

		while (i < n && v[i] != ':')
			i++;
		e = i;
		while (s < e && is_wsp(v[s]))
			s++;
		while (e > s && is_wsp(v[e - 1]))
			e--;
		for (int k = 0; allowed[k] != NULL; k++)
			if (eq_ci(v + s, e - s, allowed[k]))
				ok = true;
		if (!ok)
			return false;
		i++;
	}
	return true;
}

/* count_uris - comma-separated URIs (at most DMARC_URI_MAX read, their
 * count in *seen); returns how many look like URIs (scheme ":" more) */
static unsigned
count_uris(const char *v, size_t n, unsigned *seen)
{
	unsigned valid = 0;
	size_t i = 0;

	*seen = 0;
	while (i < n && *seen < DMARC_URI_MAX) {
		size_t s = i, e, k;

		while (i < n && v[i] != ',')
			i++;
		e = i++;
		while (s < e && is_wsp(v[s]))
			s++;
		while (e > s && is_wsp(v[e - 1]))
			e--;
		if (s == e)
			continue;
		(*seen)++;
		for (k = s; k < e; k++) {
			char c = v[k];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (k > s && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))))
				break;
		}
		if (k > s && k < e - 1 && v[k] == ':')
			valid++;
	}
	return valid;
}

enum tag_id { T_V, T_P, T_SP, T_NP, T_ADKIM, T_ASPF, T_PCT, T_FO, T_RF, T_RI, T_RUA,
	T_RUF, T_PSD, T_T, T_COUNT };

static const char *const tag_names[T_COUNT] = {
	"v", "p", "sp", "np", "adkim", "aspf", "pct", "fo", "rf", "ri", "rua", "ruf", "psd", "t"
};

static int
tag_lookup(const char *s, size_t n)
{
	for (int i = 0; i < T_COUNT; i++)
		if (eq_ci(s, n, tag_names[i]))
			return i;
	return -1;
}

/* invalid - record a reason, return DMARC_REC_INVALID */
static enum dmarc_rec_status
invalid(struct dmarc_record *r, const char *why)
{
	r->why = why;
	return DMARC_REC_INVALID;
}

/* ignored - a tag value that does not parse: the tag keeps its default
 * (RFC 7489 6.3, RFC 9989 4.7); the first such tag is named in r->ignored */
static void
ignored(struct dmarc_record *r, const char *what)
{
	if (r->nignored++ == 0)
		r->ignored = what;
}

enum dmarc_rec_status
dmarc_record_parse(const char *txt, size_t len, bool bis, struct dmarc_record *r)
{
	static const char *const fo_words[] = { "0", "1", "d", "s", NULL };
	static const char *const rf_words[] = { "afrf", "iodef", NULL };
	bool seen[T_COUNT] = { false };
	bool p_bad = false, sp_bad = false, rua_valid = false;
	size_t i = 0;
	int ntag = 0;

	memset(r, 0, sizeof *r);
	r->pct = 100;
	if (txt == NULL)
		return DMARC_REC_NOT_DMARC;
	while (i < len) {
		size_t ns, ne, vs, ve;
		int id;

		while (i < len && is_wsp(txt[i]))
			i++;
		if (i >= len)
			break;
		ns = i;
		while (i < len && txt[i] != '=' && txt[i] != ';' && !is_wsp(txt[i]))
			i++;
		ne = i;
		while (i < len && is_wsp(txt[i]))
			i++;
		if (i >= len || txt[i] != '=') {
			if (ntag == 0)
				return DMARC_REC_NOT_DMARC;
			/* "; ;", a trailing ";" and a bare word: a syntax error
			 * in the remainder, ignored (RFC 7489 6.3) */
			if (ns != ne)
				ignored(r, "tag without a value");
			while (i < len && txt[i] != ';')
				i++;
			if (i < len)
				i++;
			continue;
		}
		i++;
		while (i < len && is_wsp(txt[i]))
			i++;
		vs = i;
		while (i < len && txt[i] != ';')
			i++;
		ve = i;
		while (ve > vs && is_wsp(txt[ve - 1]))
			ve--;
		if (i < len)
			i++;	/* the ';' */
		if (ns == ne) {
			if (ntag == 0)
				return DMARC_REC_NOT_DMARC;
			ignored(r, "empty tag name");
			continue;
		}
		id = tag_lookup(txt + ns, ne - ns);
		if (ntag++ == 0) {
			if (id != T_V || !eq_ci(txt + vs, ve - vs, "dmarc1"))
				return DMARC_REC_NOT_DMARC;
			seen[T_V] = true;
			if (len > DMARC_RECORD_MAX)
				return invalid(r, "record too long");
			continue;
		}
		if (id < 0)
			continue;	/* unknown tags are ignored (RFC 7489 6.3, RFC 9989 4.7) */
		/* RFC 7489 6.4 takes DKIM's tag-list (RFC 6376 3.2): a tag
		 * given twice makes the whole list invalid */
		if (seen[id])
			return invalid(r, "tag given twice");
		seen[id] = true;
		const char *v = txt + vs;
		size_t vn = ve - vs;
		unsigned long x;
		switch (id) {
		case T_V:
			return invalid(r, "v= not alone at the start");
		case T_P:
			r->p = parse_policy(v, vn);
			p_bad = r->p == DMARC_POLICY_UNSET;
			break;
		case T_SP:
			r->sp = parse_policy(v, vn);
			sp_bad = r->sp == DMARC_POLICY_UNSET;
			break;
		case T_NP:
			r->np = parse_policy(v, vn);
			if (r->np == DMARC_POLICY_UNSET)
				ignored(r, "bad np= value");
			break;
		case T_ADKIM:
		case T_ASPF: {
			enum dmarc_align a;
			if (eq_ci(v, vn, "r"))
				a = DMARC_ALIGN_RELAXED;
			else if (eq_ci(v, vn, "s"))
				a = DMARC_ALIGN_STRICT;
			else {
				ignored(r, id == T_ADKIM ? "bad adkim= value" : "bad aspf= value");
				break;
			}
			if (id == T_ADKIM)
				r->adkim = a;
			else
				r->aspf = a;
			break;
		}
		case T_PCT:
			if (!parse_uint(v, vn, 3, &x) || x > 100)
				ignored(r, "bad pct= value");
			else
				r->pct = (int)x;
			break;
		case T_FO:
			if (!parse_list(v, vn, fo_words))
				ignored(r, "bad fo= value");
			break;
		case T_RF:
			if (!parse_list(v, vn, rf_words))
				ignored(r, "bad rf= value");
			break;
		case T_RI:
			if (!parse_uint(v, vn, 9, &x))
				ignored(r, "bad ri= value");
			break;
		case T_RUA:
			if (count_uris(v, vn, &r->nrua) > 0)
				rua_valid = true;
			break;
		case T_RUF:
			count_uris(v, vn, &r->nruf);
			break;
		case T_PSD:
			if (eq_ci(v, vn, "y"))
				r->psd = DMARC_PSD_YES;
			else if (eq_ci(v, vn, "n"))
				r->psd = DMARC_PSD_NO;
			else if (eq_ci(v, vn, "u"))
				r->psd = DMARC_PSD_UNKNOWN;
			else
				ignored(r, "bad psd= value");
			break;
		case T_T:
			if (eq_ci(v, vn, "y"))
				r->testing = true;
			else if (!eq_ci(v, vn, "n"))
				ignored(r, "bad t= value");
			break;
		}
	}
	if (ntag == 0)
		return DMARC_REC_NOT_DMARC;
	if (bis) {
		/* RFC 9989: a record without a usable p= is p=none; a bad sp=
		 * is ignored like any bad value (sp falls back to p) */
		if (sp_bad) {
			r->sp = DMARC_POLICY_UNSET;
			ignored(r, "bad sp= value");
		}
		if (!seen[T_P] || p_bad) {
			if (p_bad)
				ignored(r, "bad p= value");
			r->p = DMARC_POLICY_NONE;
			r->p_defaulted = true;
		}
		return DMARC_REC_OK;
	}
	if (!seen[T_P] || p_bad || sp_bad) {
		/* RFC 7489 6.6.3: no valid p, or an sp that is not valid: act
		 * as p=none when a rua URI is valid, else no DMARC at all */
		if (!rua_valid)
			return invalid(r, !seen[T_P] ? "no p= tag" : p_bad ? "bad p= value" :
			    "bad sp= value");
		if (p_bad || sp_bad)
			ignored(r, p_bad ? "bad p= value" : "bad sp= value");
		r->p = DMARC_POLICY_NONE;
		if (sp_bad)
			r->sp = DMARC_POLICY_UNSET;
		r->p_defaulted = true;
	}
	return DMARC_REC_OK;
}

/* ------------------------------------------------------------------ */
/* domains */

int
dmarc_domain_norm(const char *in, size_t len, char *out, size_t size)
{
	char alabel[DMARC_DOMAIN_SIZE];
	size_t lab = 0, labels = 0, o = 0;

	if (in == NULL || len == 0)
		return -1;
	if (in[len - 1] == '.')
		len--;
	if (len > 0 && idn_needs(in, len)) {
		/* RFC 8616: U-labels become A-labels before any use; an
		 * invalid IDN (or xn-- label) is not a domain */
		int n = idn_alabel(in, len, alabel, sizeof alabel);
		if (n <= 0)
			return n == IDN_INVALID ? DMARC_DOMAIN_BAD_IDN : -1;
		in = alabel;
		len = (size_t)n;
	}
	if (len == 0 || len > 253 || len + 1 > size)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = lc((unsigned char)in[i]);
		if (c == '.') {
			if (lab == 0 || out[o - 1] == '-')
				return -1;
			lab = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
		    (c == '-' && lab > 0)) {
			if (lab++ == 0)
				labels++;
			if (lab > 63)
				return -1;
		} else {
			return -1;
		}
		out[o++] = (char)c;
	}
	if (lab == 0 || out[o - 1] == '-' || labels < 2)
		return -1;
	out[o] = '\0';
	return (int)o;
}

/* ------------------------------------------------------------------ */
/* the From field */

#define WORD_MAX	512

struct from_state {
	char word[WORD_MAX];		/* the word being read */
	size_t wlen;
	bool wover;			/* the word outgrew WORD_MAX */
	char bare[WORD_MAX];		/* the last bare word with an '@' */
	size_t blen;
	bool bover, have_bare;
	bool any_word;			/* the mailbox has some content */
	char angle[WORD_MAX];		/* the last addr-spec seen in <> */
	size_t alen;
	bool aover, have_angle;
	int depth;			/* angle-bracket nesting */
};

/* word_end - a word is complete: keep it when it holds an address */
static void
word_end(struct from_state *st)
{
	if (st->wlen == 0 && !st->wover)
		return;
	st->any_word = true;
	if (memchr(st->word, '@', st->wlen) != NULL || st->wover) {
		if (st->depth > 0) {
			memcpy(st->angle, st->word, st->wlen);
			st->alen = st->wlen;
			st->aover = st->wover;
			st->have_angle = true;
		} else {
			memcpy(st->bare, st->word, st->wlen);
			st->blen = st->wlen;
			st->bover = st->wover;
			st->have_bare = true;
		}
	}
	st->wlen = 0;
	st->wover = false;
}

static void
word_add(struct from_state *st, char c)
{
	if (st->wlen < WORD_MAX)
		st->word[st->wlen++] = c;
	else
		st->wover = true;
}

/* add_domain - keep a distinct domain */
static void
add_domain(struct dmarc_author *a, const char *d)
{
	for (int i = 0; i < a->ndomain; i++)
		if (strcmp(a->domain[i], d) == 0)
			return;
	if (a->ndomain < DMARC_AUTHOR_MAX) {
		memcpy(a->domain[a->ndomain], d, strlen(d) + 1);
		a->ndomain++;
	}
}

/* mailbox_end - a ',' ';' or the end closes a mailbox */
static void
mailbox_end(struct dmarc_author *a, struct from_state *st)
{
	const char *addr = NULL, *at;
	size_t alen = 0;
	bool over = false;
	char dom[DMARC_DOMAIN_SIZE];

	word_end(st);
	if (st->have_angle) {
		addr = st->angle;
		alen = st->alen;
		over = st->aover;
	} else if (st->have_bare) {
		addr = st->bare;
		alen = st->blen;
		over = st->bover;
	}
	if (addr != NULL || st->any_word) {
		int n = -1;

		a->nmailbox++;
		at = addr != NULL && !over ? memrchr(addr, '@', alen) : NULL;
		if (at != NULL && at + 1 < addr + alen)
			n = dmarc_domain_norm(at + 1, (size_t)(addr + alen - at - 1), dom, sizeof dom);
		if (n < 0) {
			a->bad = true;
			if (n == DMARC_DOMAIN_BAD_IDN)
				a->bad_idn = true;
		} else {
			add_domain(a, dom);
		}
	}
	st->blen = st->alen = 0;
	st->have_bare = st->have_angle = st->bover = st->aover = false;
	st->any_word = false;
	st->depth = 0;
}

void
dmarc_author_init(struct dmarc_author *a)
{
	memset(a, 0, sizeof *a);
}

void
dmarc_author_add(struct dmarc_author *a, const char *value, size_t len)
{
	struct from_state st;
	size_t i = 0;

	memset(&st, 0, sizeof st);
	a->nfields++;
	if (value == NULL)
		len = 0;
	while (i < len) {
		char c = value[i];

		if (c == '"') {
			/* a quoted string: a display name, or a quoted local part
			 * when an '@' follows; it stands as one placeholder byte */
			for (i++; i < len && value[i] != '"'; i++)
				if (value[i] == '\\')
					i++;
			i++;
			word_add(&st, 'q');
			st.any_word = true;
			continue;
		}
		if (c == '(') {
			int d = 0;
			word_end(&st);
			for (; i < len; i++) {
				if (value[i] == '\\') {
					i++;
					continue;
				}
				if (value[i] == '(')
					d++;
				else if (value[i] == ')' && --d == 0)
					break;
			}
			i++;
			continue;
		}
		if (c == '[') {
			/* a domain literal stays in the word, so it never counts
			 * as a host name */
			for (; i < len && value[i] != ']'; i++)
				word_add(&st, value[i]);
			if (i < len)
				word_add(&st, ']');
			i++;
			continue;
		}
		i++;
		switch (c) {
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			word_end(&st);
			break;
		case '<':
			word_end(&st);
			st.any_word = true;	/* even "<>" is a mailbox */
			st.depth++;
			break;
		case '>':
			word_end(&st);
			if (st.depth > 0)
				st.depth--;
			break;
		case ':':
			word_end(&st);
			if (st.depth > 0) {
				/* obsolete route "<@a,@b:user@host>": drop the route */
				st.have_angle = false;
				st.alen = 0;
			} else {
				/* a group: what came before was its name */
				st.have_bare = st.have_angle = st.any_word = false;
				st.blen = st.alen = 0;
			}
			break;
		case ',':
			if (st.depth > 0) {
				word_end(&st);
				st.have_angle = false;
				st.alen = 0;
				break;
			}
			mailbox_end(a, &st);
			break;
		case ';':
			mailbox_end(a, &st);
			break;
		default:
			word_add(&st, c);
			break;
		}
	}
	mailbox_end(a, &st);
}
