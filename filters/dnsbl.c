/*
 * dnsbl - DNSBL/DNSWL/RHSBL zones: parsing, query names, answers,
 * health (see dnsbl.h)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "dns.h"
#include "dnsbl.h"
#include "log.h"
#include "xalloc.h"

#define DNSBL_TEXT_MAX 400
#define DNSBL_WEIGHT_MAX 1000

static const char *const type_names[DNSBL_T__COUNT] = {
	"ip", "helo", "client-name", "sender-domain"
};

const char *
dnsbl_type_name(int type)
{
	return type >= 0 && type < DNSBL_T__COUNT ? type_names[type] : "?";
}

/* ---------------------------------------------------------------------
 * parsing
 */

struct dp {
	struct lexer *lx;
	struct lex_token t;
	dnsbl_err_fn err;
	void *arg;
	int errors;
};

static void __attribute__((format(printf, 3, 4)))
dp_error(struct dp *p, const struct lex_token *t, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	p->err(p->arg, t->line, t->col, msg);
	p->errors++;
}

static void
dp_next(struct dp *p)
{
	lex_next(p->lx, &p->t);
}

static bool
dp_is(const struct dp *p, const char *w)
{
	return p->t.type == LEX_WORD && p->t.len == strlen(w) && memcmp(p->t.text, w, p->t.len) == 0;
}

/* dp_shown - the current token for a message */
static const char *
dp_shown(const struct dp *p, char *buf, size_t size)
{
	if (p->t.type == LEX_WORD || p->t.type == LEX_STRING)
		log_escape(buf, size, p->t.text, p->t.len);
	else
		snprintf(buf, size, "%s", lex_tok_name(p->t.type));
	return buf;
}

/* domain_ok - letters, digits, '-', '_', dots between labels */
static bool
domain_ok(const char *s, size_t len, size_t max)
{
	size_t lab = 0;

	if (len == 0 || len > max || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (lab == 0 || s[i - 1] == '-')
				return false;
			lab = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return false;
		if (c == '-' && lab == 0)
			return false;
		if (++lab > 63)
			return false;
	}
	return s[len - 1] != '-';
}

/* parse_ip4 - a dotted quad into host order */
static bool
parse_ip4(const char *s, size_t len, uint32_t *out)
{
	char buf[INET_ADDRSTRLEN];
	struct in_addr a;

	if (len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = 0;
	if (inet_pton(AF_INET, buf, &a) != 1)
		return false;
	*out = ntohl(a.s_addr);
	return true;
}

/* parse_range - A, A-B, or A/N; in 127.0.0.0/8 */
static bool
parse_range(const char *s, size_t len, uint32_t *lo, uint32_t *hi)
{
	const char *dash = memchr(s, '-', len), *slash = memchr(s, '/', len);

	if (dash) {
		if (!parse_ip4(s, (size_t)(dash - s), lo) ||
		    !parse_ip4(dash + 1, len - (size_t)(dash + 1 - s), hi) || *hi < *lo)
			return false;
	} else if (slash) {
		unsigned n = 0;
		size_t i = (size_t)(slash + 1 - s);

		if (i >= len || len - i > 2)
			return false;
		for (; i < len; i++) {
			if (!isdigit((unsigned char)s[i]))
				return false;
			n = n * 10 + (unsigned)(s[i] - '0');
		}
		if (n < 8 || n > 32 || !parse_ip4(s, (size_t)(slash - s), lo))
			return false;
		uint32_t mask = n == 32 ? 0xffffffffu : ~(0xffffffffu >> n);
		if ((*lo & ~mask) != 0)
			return false;
		*hi = *lo | ~mask;
	} else {
		if (!parse_ip4(s, len, lo))
			return false;
		*hi = *lo;
	}
	return (*lo >> 24) == 127 && (*hi >> 24) == 127;
}

/* parse_weight - a signed whole number within bounds */
static bool
parse_weight(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;
	size_t i = 0;
	bool neg = false;

	if (len > 0 && (s[0] == '-' || s[0] == '+')) {
		neg = s[0] == '-';
		i = 1;
	}
	if (i == len)
		return false;
	for (; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
		if (v > DNSBL_WEIGHT_MAX)
			return false;
	}
	*out = neg ? -v : v;
	return true;
}

/* text_ok - a reply text: printable, bounded */
static bool
text_ok(const char *s, size_t len)
{
	if (len > DNSBL_TEXT_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
			return false;
	return true;
}

/* dp_ranges - RANGE ... (words that start with a digit) */
static int
dp_ranges(struct dp *p, uint32_t *lo, uint32_t *hi, int max)
{
	int n = 0;
	char shown[LOG_ESC_SIZE];

	while (p->t.type == LEX_WORD && p->t.len > 0 && isdigit((unsigned char)p->t.text[0])) {
		if (n == max) {
			dp_error(p, &p->t, "at most %d ranges here", max);
			return -1;
		}
		if (!parse_range(p->t.text, p->t.len, &lo[n], &hi[n])) {
			dp_error(p, &p->t, "\"%s\" is not an answer range in 127.0.0.0/8 "
			    "(127.0.0.2, 127.0.0.2-127.0.0.11 or 127.0.0.0/24)",
			    dp_shown(p, shown, sizeof(shown)));
			return -1;
		}
		n++;
		dp_next(p);
	}
	if (n == 0) {
		dp_error(p, &p->t, "expected an answer range, found %s",
		    dp_shown(p, shown, sizeof(shown)));
		return -1;
	}
	return n;
}

/* dp_string - a quoted text after a keyword */
static char *
dp_string(struct dp *p, const char *what)
{
	char shown[LOG_ESC_SIZE];
	char *s;

	dp_next(p);
	if (p->t.type == LEX_ERROR) {
		dp_error(p, &p->t, "%s", p->t.error);
		return NULL;
	}
	if (p->t.type != LEX_STRING) {
		dp_error(p, &p->t, "expected a quoted %s, found %s", what,
		    dp_shown(p, shown, sizeof(shown)));
		return NULL;
	}
	if (!text_ok(p->t.text, p->t.len)) {
		dp_error(p, &p->t, "the %s has control characters or is over %d bytes",
		    what, DNSBL_TEXT_MAX);
		return NULL;
	}
	s = xmemdup(p->t.text, p->t.len);
	dp_next(p);
	return s;
}

/* dp_weight - "weight N" with the sign rule of the list kind */
static int
dp_weight(struct dp *p, bool allow, int64_t *out)
{
	char shown[LOG_ESC_SIZE];

	dp_next(p);
	if (p->t.type != LEX_WORD || !parse_weight(p->t.text, p->t.len, out)) {
		dp_error(p, &p->t, "expected a weight from -%d to %d, found %s",
		    DNSBL_WEIGHT_MAX, DNSBL_WEIGHT_MAX, dp_shown(p, shown, sizeof(shown)));
		return -1;
	}
	if (allow && *out > 0) {
		dp_error(p, &p->t, "a dnswl weight is zero or negative (it lowers the score)");
		return -1;
	}
	dp_next(p);
	return 0;
}

/* dp_block - { code RANGE... weight N [reply "T"] ... } */
static int
dp_block(struct dp *p, struct dnsbl_zone *z)
{
	char shown[LOG_ESC_SIZE];

	dp_next(p);
	for (;;) {
		struct dnsbl_code *c;

		while (p->t.type == LEX_NL)
			dp_next(p);
		if (p->t.type == LEX_RBRACE) {
			dp_next(p);
			break;
		}
		if (!dp_is(p, "code")) {
			dp_error(p, &p->t, "expected \"code RANGE ... weight N\" or '}', found %s",
			    dp_shown(p, shown, sizeof(shown)));
			return -1;
		}
		if (z->ncodes == DNSBL_CODES_MAX) {
			dp_error(p, &p->t, "at most %d code lines per zone", DNSBL_CODES_MAX);
			return -1;
		}
		z->codes = xrealloc(z->codes, sizeof(*z->codes) * (size_t)(z->ncodes + 1));
		c = &z->codes[z->ncodes++];
		memset(c, 0, sizeof(*c));
		c->weight = z->weight;
		dp_next(p);
		if ((c->nr = dp_ranges(p, c->lo, c->hi, 8)) < 0)
			return -1;
		while (p->t.type == LEX_WORD) {
			if (dp_is(p, "weight")) {
				if (dp_weight(p, z->allow, &c->weight) != 0)
					return -1;
			} else if (dp_is(p, "reply")) {
				free(c->reply);
				if ((c->reply = dp_string(p, "reply text")) == NULL)
					return -1;
			} else {
				dp_error(p, &p->t, "unknown code option \"%s\" (weight or reply)",
				    dp_shown(p, shown, sizeof(shown)));
				return -1;
			}
		}
		if (p->t.type != LEX_NL && p->t.type != LEX_RBRACE) {
			dp_error(p, &p->t, "unexpected %s in a code line",
			    dp_shown(p, shown, sizeof(shown)));
			return -1;
		}
	}
	return 0;
}

static void
zone_free(struct dnsbl_zone *z)
{
	free(z->name);
	free(z->zone);
	free(z->key);
	free(z->reply);
	for (int i = 0; i < z->ncodes; i++)
		free(z->codes[i].reply);
	free(z->codes);
	memset(z, 0, sizeof(*z));
}

/* dnsbl_parse - see dnsbl.h */
int
dnsbl_parse(struct dnsbl_set *set, struct lexer *lx, const struct lex_token *kw,
	dnsbl_err_fn err, void *arg)
{
	struct dp p = { .lx = lx, .err = err, .arg = arg };
	struct dnsbl_zone z;
	char shown[LOG_ESC_SIZE];
	bool weight_given = false;

	memset(&z, 0, sizeof(z));
	z.allow = kw->len == 5 && memcmp(kw->text, "dnswl", 5) == 0;
	z.weight = z.allow ? -1 : 1;
	z.probe = true;
	z.line = kw->line;
	dp_next(&p);
	if (p.t.type != LEX_WORD || !domain_ok(p.t.text, p.t.len, 200)) {
		dp_error(&p, &p.t, "expected a zone (a domain such as zen.spamhaus.org) after %s, "
		    "found %s", z.allow ? "dnswl" : "dnsbl", dp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	z.zone = xmemdup(p.t.text, p.t.len);
	for (char *c = z.zone; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	dp_next(&p);
	while (p.t.type == LEX_WORD) {
		if (dp_is(&p, "name")) {
			dp_next(&p);
			if (p.t.type != LEX_WORD || !domain_ok(p.t.text, p.t.len, DNSBL_NAME_MAX - 1)) {
				dp_error(&p, &p.t, "expected a name (letters, digits, '-', '.', "
				    "at most %d), found %s", DNSBL_NAME_MAX - 1,
				    dp_shown(&p, shown, sizeof(shown)));
				goto fail;
			}
			free(z.name);
			z.name = xmemdup(p.t.text, p.t.len);
			dp_next(&p);
		} else if (dp_is(&p, "key")) {
			dp_next(&p);
			if ((p.t.type != LEX_WORD && p.t.type != LEX_STRING) ||
			    !domain_ok(p.t.text, p.t.len, 100) || memchr(p.t.text, '.', p.t.len)) {
				dp_error(&p, &p.t, "expected a key (one label of letters and digits)");
				goto fail;
			}
			free(z.key);
			z.key = xmemdup(p.t.text, p.t.len);
			dp_next(&p);
		} else if (dp_is(&p, "type")) {
			int t;

			dp_next(&p);
			for (t = 0; t < DNSBL_T__COUNT; t++)
				if (p.t.type == LEX_WORD && p.t.len == strlen(type_names[t]) &&
				    memcmp(p.t.text, type_names[t], p.t.len) == 0)
					break;
			if (t == DNSBL_T__COUNT) {
				dp_error(&p, &p.t, "expected ip, helo, client-name or sender-domain, "
				    "found %s", dp_shown(&p, shown, sizeof(shown)));
				goto fail;
			}
			z.type = t;
			dp_next(&p);
		} else if (dp_is(&p, "weight")) {
			if (dp_weight(&p, z.allow, &z.weight) != 0)
				goto fail;
			weight_given = true;
		} else if (dp_is(&p, "codes")) {
			dp_next(&p);
			if ((z.nc = dp_ranges(&p, z.clo, z.chi, 8)) < 0)
				goto fail;
		} else if (dp_is(&p, "reply")) {
			free(z.reply);
			if ((z.reply = dp_string(&p, "reply text")) == NULL)
				goto fail;
		} else if (dp_is(&p, "probe")) {
			dp_next(&p);
			if (dp_is(&p, "yes"))
				z.probe = true;
			else if (dp_is(&p, "no"))
				z.probe = false;
			else {
				dp_error(&p, &p.t, "expected yes or no after probe");
				goto fail;
			}
			dp_next(&p);
		} else {
			dp_error(&p, &p.t, "unknown %s option \"%s\" (name, key, type, weight, codes, "
			    "reply, probe, or a { code ... } block)", z.allow ? "dnswl" : "dnsbl",
			    dp_shown(&p, shown, sizeof(shown)));
			goto fail;
		}
	}
	(void)weight_given;
	if (p.t.type == LEX_LBRACE && dp_block(&p, &z) != 0)
		goto fail;
	if (p.t.type != LEX_NL && p.t.type != LEX_EOF) {
		dp_error(&p, &p.t, "unexpected %s", dp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	if (z.name == NULL)
		z.name = xstrdup(z.zone);
	for (int i = 0; i < set->n; i++)
		if (strcmp(set->z[i].name, z.name) == 0) {
			dp_error(&p, kw, "a zone named \"%s\" is already defined (line %d); "
			    "give this one another name", z.name, set->z[i].line);
			goto fail_nosync;
		}
	if (set->n == DNSBL_ZONES_MAX) {
		dp_error(&p, kw, "at most %d dnsbl and dnswl zones", DNSBL_ZONES_MAX);
		goto fail_nosync;
	}
	if (z.key != NULL) {
		char *full = xasprintf("%s.%s", z.key, z.zone);

		if (strlen(full) > 200) {
			free(full);
			dp_error(&p, kw, "the key and the zone are too long together");
			goto fail_nosync;
		}
		free(z.zone);
		z.zone = full;
	}
	set->z[set->n++] = z;
	set->types |= 1u << z.type;
	return 0;
fail:
	while (p.t.type != LEX_NL && p.t.type != LEX_EOF) {
		if (p.t.type == LEX_LBRACE) {	/* skip the whole block */
			while (p.t.type != LEX_RBRACE && p.t.type != LEX_EOF)
				dp_next(&p);
		}
		if (p.t.type == LEX_EOF)
			break;
		dp_next(&p);
	}
fail_nosync:
	zone_free(&z);
	return -1;
}

void
dnsbl_set_free(struct dnsbl_set *set)
{
	if (set == NULL)
		return;
	for (int i = 0; i < set->n; i++)
		zone_free(&set->z[i]);
	free(set);
}

/* ---------------------------------------------------------------------
 * queries and answers
 */

int
dnsbl_query_name(const struct dnsbl_zone *z, int family, const void *addr,
	const char *domain, char *out, size_t size)
{
	size_t dl;
	int r;

	if (z->type == DNSBL_T_IP)
		return dns_reverse_name(family, addr, z->zone, out, size);
	if (domain == NULL || (dl = strlen(domain)) == 0)
		return -1;
	if (domain[dl - 1] == '.')
		dl--;
	if (!domain_ok(domain, dl, 253))
		return -1;
	r = snprintf(out, size, "%.*s.%s", (int)dl, domain, z->zone);
	if (r < 0 || (size_t)r >= size || r > 253)
		return -1;
	for (int i = 0; i < (int)dl; i++)
		out[i] = (char)tolower((unsigned char)out[i]);
	return r;
}

static bool
in_ranges(uint32_t a, const uint32_t *lo, const uint32_t *hi, int n)
{
	for (int i = 0; i < n; i++)
		if (a >= lo[i] && a <= hi[i])
			return true;
	return false;
}

/* dnsbl_eval_answer - see dnsbl.h */
void
dnsbl_eval_answer(const struct dnsbl_zone *z, const uint32_t *a, int n, struct dnsbl_eval *out)
{
	memset(out, 0, sizeof(*out));
	out->v = DNSBL_V_CLEAR;
	/* one bad record spoils the answer: it is an error, not a listing */
	for (int i = 0; i < n; i++)
		if ((a[i] >> 24) != 127 || (a[i] >> 8) == 0x7fffffu) {
			out->v = DNSBL_V_ERROR;
			out->code = a[i];
			return;
		}
	if (z->ncodes > 0) {
		int64_t best = 0;
		bool any = false;

		for (int c = 0; c < z->ncodes; c++) {
			const struct dnsbl_code *dc = &z->codes[c];

			for (int i = 0; i < n; i++)
				if (in_ranges(a[i], dc->lo, dc->hi, dc->nr)) {
					int64_t w = dc->weight < 0 ? -dc->weight : dc->weight;

					if (!any)
						out->code = a[i];
					any = true;
					out->weight += dc->weight;
					if (dc->reply && (out->reply == NULL || w > best)) {
						out->reply = dc->reply;
						best = w;
					}
					break;
				}
		}
		if (any) {
			out->v = DNSBL_V_LISTED;
			if (out->reply == NULL)
				out->reply = z->reply;
		}
		return;
	}
	for (int i = 0; i < n; i++)
		if (z->nc == 0 || in_ranges(a[i], z->clo, z->chi, z->nc)) {
			out->v = DNSBL_V_LISTED;
			out->weight = z->weight;
			out->reply = z->reply;
			out->code = a[i];
			return;
		}
}

/* dnsbl_summarise - the facts for rules from a session's results */
void
dnsbl_summarise(const struct dnsbl_set *set, const struct dnsbl_sess *s, struct dnsbl_summary *out)
{
	int64_t best = -1;
	size_t o = 0;

	memset(out, 0, sizeof(*out));
	if (set == NULL || s == NULL)
		return;
	for (int i = 0; i < set->n; i++) {
		const struct dnsbl_zres *r = &s->r[i];
		const struct dnsbl_zone *z = &set->z[i];
		int64_t w;

		if (r->state != DZ_DONE)
			continue;
		if (r->verdict == DNSBL_V_ERROR) {
			out->error = true;
			continue;
		}
		if (r->verdict != DNSBL_V_LISTED)
			continue;
		out->score += r->weight;
		size_t nl = strlen(z->name);
		if (o + nl + 2 < sizeof(out->hits)) {
			if (o)
				out->hits[o++] = ',';
			memcpy(out->hits + o, z->name, nl);
			o += nl;
			out->hits[o] = 0;
		}
		w = r->weight;
		if (!z->allow && w > best) {
			best = w;
			out->reply = r->reply;
			out->top = z->name;
		}
	}
}

bool
dnsbl_hits_has(const char *hits, const char *name, size_t len)
{
	const char *p = hits;

	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);

		if (n == len && strncasecmp(p, name, len) == 0)
			return true;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return false;
}

/* ---------------------------------------------------------------------
 * health and counters, process-wide, by zone name
 */

struct health {
	char name[256];		/* a zone's name: NAME, or the zone itself */
	atomic_bool disabled;
	atomic_bool error_logged;
	atomic_uint_fast64_t queries, listed, errors, temperrors;
	uint64_t logged_queries;	/* the probe loop's thread only */
};

static struct health health[DNSBL_ZONES_MAX * 4];
static int nhealth;
static pthread_mutex_t health_lock = PTHREAD_MUTEX_INITIALIZER;

/* health_of - the zone's entry, made on first use; NULL if full */
static struct health *
health_of(const struct dnsbl_zone *z)
{
	int n = __atomic_load_n(&nhealth, __ATOMIC_ACQUIRE);
	struct health *h = NULL;

	for (int i = 0; i < n; i++)
		if (strcmp(health[i].name, z->name) == 0)
			return &health[i];
	pthread_mutex_lock(&health_lock);
	for (int i = 0; i < nhealth; i++)
		if (strcmp(health[i].name, z->name) == 0) {
			h = &health[i];
			break;
		}
	if (h == NULL && nhealth < (int)(sizeof(health) / sizeof(health[0]))) {
		h = &health[nhealth];
		snprintf(h->name, sizeof(h->name), "%s", z->name);
		__atomic_store_n(&nhealth, nhealth + 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&health_lock);
	return h;
}

bool
dnsbl_zone_enabled(const struct dnsbl_zone *z)
{
	struct health *h = health_of(z);

	return h == NULL || !atomic_load(&h->disabled);
}

void
dnsbl_probe_result(const struct dnsbl_zone *z, bool listed_ok, bool unlisted_ok, bool temp)
{
	struct health *h = health_of(z);
	bool ok = listed_ok && unlisted_ok;

	if (h == NULL || temp)
		return;
	if (!ok && !atomic_exchange(&h->disabled, true))
		log_msg(LOG_L_WARN, 0, "dnsbl zone=%s state=disabled reason=%s", z->name,
		    !listed_ok ? "test-point-not-listed" : "everything-listed");
	else if (ok && atomic_exchange(&h->disabled, false))
		log_msg(LOG_L_WARN, 0, "dnsbl zone=%s state=enabled reason=probe-passed", z->name);
}

void
dnsbl_note_error(const struct dnsbl_zone *z, uint64_t sid, uint32_t code)
{
	struct health *h = health_of(z);

	if (h == NULL || atomic_exchange(&h->error_logged, true))
		return;
	log_msg(LOG_L_WARN, sid, "dnsbl zone=%s error=bad-answer answer=%u.%u.%u.%u "
	    "(not a listing: outside 127.0.0.0/8 or a refused-query code; logged once)",
	    z->name, code >> 24, (code >> 16) & 255, (code >> 8) & 255, code & 255);
}

void
dnsbl_count(const struct dnsbl_zone *z, const struct dnsbl_eval *e, bool temp)
{
	struct health *h = health_of(z);

	if (h == NULL)
		return;
	atomic_fetch_add(&h->queries, 1);
	if (temp)
		atomic_fetch_add(&h->temperrors, 1);
	else if (e->v == DNSBL_V_ERROR)
		atomic_fetch_add(&h->errors, 1);
	else if (e->v == DNSBL_V_LISTED)
		atomic_fetch_add(&h->listed, 1);
}

void
dnsbl_counters(const struct dnsbl_zone *z, uint64_t *queries, uint64_t *listed,
	uint64_t *errors, uint64_t *temperrors)
{
	struct health *h = health_of(z);

	*queries = h ? atomic_load(&h->queries) : 0;
	*listed = h ? atomic_load(&h->listed) : 0;
	*errors = h ? atomic_load(&h->errors) : 0;
	*temperrors = h ? atomic_load(&h->temperrors) : 0;
}

/* dnsbl_log_stats - the zone's counters, when they moved since last time */
void
dnsbl_log_stats(const struct dnsbl_zone *z)
{
	struct health *h = health_of(z);
	uint64_t q;

	if (h == NULL || (q = atomic_load(&h->queries)) == h->logged_queries)
		return;
	h->logged_queries = q;
	log_msg(LOG_L_INFO, 0, "stats dnsbl zone=%s state=%s queries=%llu listed=%llu "
	    "bad-answers=%llu temperrors=%llu", z->name,
	    atomic_load(&h->disabled) ? "disabled" : "enabled", (unsigned long long)q,
	    (unsigned long long)atomic_load(&h->listed), (unsigned long long)atomic_load(&h->errors),
	    (unsigned long long)atomic_load(&h->temperrors));
}

/* dnsbl_client_addr - the address IP zones ask about (v4-mapped is v4);
 * returns its family */
int
dnsbl_client_addr(const struct sockaddr *sa, unsigned char addr[16])
{
	const struct in6_addr *a6;

	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		memcpy(addr, a6->s6_addr + 12, 4);
		return AF_INET;
	}
	memcpy(addr, a6->s6_addr, 16);
	return AF_INET6;
}

/* dnsbl_sess_set - a zone's result into a session's results, counted
 * and logged */
void
dnsbl_sess_set(const struct dnsbl_set *set, struct dnsbl_sess *dz, int i,
	const struct dnsbl_eval *e, bool temp, uint64_t sid)
{
	const struct dnsbl_zone *z = &set->z[i];
	struct dnsbl_zres *r = &dz->r[i];

	if (r->state == DZ_PENDING && dz->pending > 0)
		dz->pending--;
	r->state = DZ_DONE;
	r->verdict = (unsigned char)e->v;
	r->temp = temp;
	r->weight = e->v == DNSBL_V_LISTED ? e->weight : 0;
	r->reply = e->reply;
	r->code = e->code;
	dnsbl_count(z, e, temp);
	if (e->v == DNSBL_V_ERROR && !temp)
		dnsbl_note_error(z, sid, e->code);
	if (e->v == DNSBL_V_LISTED)
		log_msg(LOG_L_INFO, sid, "check dnsbl zone=%s type=%s result=listed answer=%u.%u.%u.%u "
		    "weight=%lld", z->name, dnsbl_type_name(z->type), e->code >> 24,
		    (e->code >> 16) & 255, (e->code >> 8) & 255, e->code & 255, (long long)r->weight);
	else if (temp || e->v == DNSBL_V_ERROR)
		log_msg(LOG_L_INFO, sid, "check dnsbl zone=%s type=%s result=%s", z->name,
		    dnsbl_type_name(z->type), temp ? "temperror" : "error");
	else
		log_msg(LOG_L_DEBUG, sid, "check dnsbl zone=%s type=%s result=clear", z->name,
		    dnsbl_type_name(z->type));
}

/* dnsbl_sess_answer - what a resolver answer means for zone i */
void
dnsbl_sess_answer(const struct dnsbl_set *set, struct dnsbl_sess *dz, int i,
	const struct dns_answer *a, uint64_t sid)
{
	struct dnsbl_eval e;
	uint32_t addrs[16];
	int n = 0;

	memset(&e, 0, sizeof(e));
	switch (a->status) {
	case DNS_OK:
		for (int k = 0; k < a->n && n < 16; k++) {
			unsigned char b[4];

			if (dns_rr_a(a, k, b) == 0)
				addrs[n++] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
				    (uint32_t)b[2] << 8 | b[3];
		}
		dnsbl_eval_answer(&set->z[i], addrs, n, &e);
		dnsbl_sess_set(set, dz, i, &e, false, sid);
		break;
	case DNS_NXDOMAIN:
	case DNS_NODATA:
		e.v = DNSBL_V_CLEAR;
		dnsbl_sess_set(set, dz, i, &e, false, sid);
		break;
	case DNS_TEMPERROR:
		e.v = DNSBL_V_ERROR;
		dnsbl_sess_set(set, dz, i, &e, true, sid);
		break;
	}
}

/* dnsbl_sess_start - query every enabled zone of a type about a subject
 * (the client's address for ip zones, else domain); gen[i] is bumped so
 * answers to an older question can be told apart */
void
dnsbl_sess_start(const struct dnsbl_set *set, struct dnsbl_sess *dz, unsigned short *gen,
	int type, const struct sockaddr *client, const char *domain,
	dnsbl_send_fn send, void *arg, uint64_t sid)
{
	unsigned char addr[16];
	int family = AF_INET;

	memset(addr, 0, sizeof(addr));
	if (type == DNSBL_T_IP)
		family = dnsbl_client_addr(client, addr);
	for (int i = 0; i < set->n; i++) {
		const struct dnsbl_zone *z = &set->z[i];
		struct dnsbl_zres *r = &dz->r[i];
		struct dnsbl_eval e;
		char name[320];

		if (z->type != type)
			continue;
		if (r->state == DZ_PENDING && dz->pending > 0)
			dz->pending--;
		gen[i]++;
		memset(r, 0, sizeof(*r));
		memset(&e, 0, sizeof(e));
		if (!dnsbl_zone_enabled(z) ||
		    dnsbl_query_name(z, family, addr, domain, name, sizeof(name)) < 0) {
			r->state = DZ_SKIPPED;	/* disabled, or nothing to ask */
			continue;
		}
		r->state = DZ_PENDING;
		dz->pending++;
		if (send(arg, name, i, gen[i]) != 0) {
			e.v = DNSBL_V_ERROR;
			dnsbl_sess_set(set, dz, i, &e, true, sid);
		}
	}
}
