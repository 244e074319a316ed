/*
 * conf_dnsbl - the parser of the policy file's dnsbl and dnswl statements
 * (see conf_dnsbl.h); the zones it fills belong to filters/dnsbl
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "conf_dnsbl.h"
#include "log.h"
#include "xalloc.h"

#define DNSBL_TEXT_MAX 400
#define DNSBL_WEIGHT_MAX 1000

static void
dp_next(struct lex_parser *p)
{
	lex_next(p->lx, &p->t);
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
dp_ranges(struct lex_parser *p, uint32_t *lo, uint32_t *hi, int max)
{
	int n = 0;
	char shown[LOG_ESC_SIZE];

	while (p->t.type == LEX_WORD && p->t.len > 0 && isdigit((unsigned char)p->t.text[0])) {
		if (n == max) {
			lex_error(p, &p->t, "at most %d ranges here", max);
			return -1;
		}
		if (!parse_range(p->t.text, p->t.len, &lo[n], &hi[n])) {
			lex_error(p, &p->t, "\"%s\" is not an answer range in 127.0.0.0/8 "
			    "(127.0.0.2, 127.0.0.2-127.0.0.11 or 127.0.0.0/24)",
			    lex_shown(&p->t, shown, sizeof(shown)));
			return -1;
		}
		n++;
		dp_next(p);
	}
	if (n == 0) {
		lex_error(p, &p->t, "expected an answer range, found %s",
		    lex_shown(&p->t, shown, sizeof(shown)));
		return -1;
	}
	return n;
}

/* dp_string - a quoted text after a keyword */
static char *
dp_string(struct lex_parser *p, const char *what)
{
	char shown[LOG_ESC_SIZE];
	char *s;

	dp_next(p);
	if (p->t.type == LEX_ERROR) {
		lex_error(p, &p->t, "%s", p->t.error);
		return NULL;
	}
	if (p->t.type != LEX_STRING) {
		lex_error(p, &p->t, "expected a quoted %s, found %s", what,
		    lex_shown(&p->t, shown, sizeof(shown)));
		return NULL;
	}
	if (!text_ok(p->t.text, p->t.len)) {
		lex_error(p, &p->t, "the %s has control characters or is over %d bytes",
		    what, DNSBL_TEXT_MAX);
		return NULL;
	}
	s = xmemdup(p->t.text, p->t.len);
	dp_next(p);
	return s;
}

/* dp_weight - "weight N" with the sign rule of the list kind */
static int
dp_weight(struct lex_parser *p, bool allow, int64_t *out)
{
	char shown[LOG_ESC_SIZE];

	dp_next(p);
	if (p->t.type != LEX_WORD || !parse_weight(p->t.text, p->t.len, out)) {
		lex_error(p, &p->t, "expected a weight from -%d to %d, found %s",
		    DNSBL_WEIGHT_MAX, DNSBL_WEIGHT_MAX, lex_shown(&p->t, shown, sizeof(shown)));
		return -1;
	}
	if (allow && *out > 0) {
		lex_error(p, &p->t, "a dnswl weight is zero or negative (it lowers the score)");
		return -1;
	}
	dp_next(p);
	return 0;
}

/* dp_block - { code RANGE... weight N [reply "T"] ... } */
static int
dp_block(struct lex_parser *p, struct dnsbl_zone *z)
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
		if (!lex_is(&p->t, "code")) {
			lex_error(p, &p->t, "expected \"code RANGE ... weight N\" or '}', found %s",
			    lex_shown(&p->t, shown, sizeof(shown)));
			return -1;
		}
		if (z->ncodes == DNSBL_CODES_MAX) {
			lex_error(p, &p->t, "at most %d code lines per zone", DNSBL_CODES_MAX);
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
			if (lex_is(&p->t, "weight")) {
				if (dp_weight(p, z->allow, &c->weight) != 0)
					return -1;
			} else if (lex_is(&p->t, "reply")) {
				free(c->reply);
				if ((c->reply = dp_string(p, "reply text")) == NULL)
					return -1;
			} else {
				lex_error(p, &p->t, "unknown code option \"%s\" (weight or reply)",
				    lex_shown(&p->t, shown, sizeof(shown)));
				return -1;
			}
		}
		if (p->t.type != LEX_NL && p->t.type != LEX_RBRACE) {
			lex_error(p, &p->t, "unexpected %s in a code line",
			    lex_shown(&p->t, shown, sizeof(shown)));
			return -1;
		}
	}
	return 0;
}

/* conf_dnsbl_parse - see conf_dnsbl.h */
int
conf_dnsbl_parse(struct dnsbl_set *set, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg)
{
	struct lex_parser p = { .lx = lx, .err = err, .arg = arg };
	struct dnsbl_zone z;
	char shown[LOG_ESC_SIZE];
	bool weight_given = false;

	memset(&z, 0, sizeof(z));
	z.allow = kw->len == 5 && memcmp(kw->text, "dnswl", 5) == 0;
	z.weight = z.allow ? -1 : 1;
	z.probe = true;
	z.line = kw->line;
	dp_next(&p);
	if (p.t.type != LEX_WORD || !dnsbl_domain_ok(p.t.text, p.t.len, 200)) {
		lex_error(&p, &p.t, "expected a zone (a domain such as zen.spamhaus.org) after %s, "
		    "found %s", z.allow ? "dnswl" : "dnsbl", lex_shown(&p.t, shown, sizeof(shown)));
		goto fail;
	}
	z.zone = xmemdup(p.t.text, p.t.len);
	for (char *c = z.zone; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	dp_next(&p);
	while (p.t.type == LEX_WORD) {
		if (lex_is(&p.t, "name")) {
			dp_next(&p);
			if (p.t.type != LEX_WORD || !dnsbl_domain_ok(p.t.text, p.t.len, DNSBL_NAME_MAX - 1)) {
				lex_error(&p, &p.t, "expected a name (letters, digits, '-', '.', "
				    "at most %d), found %s", DNSBL_NAME_MAX - 1,
				    lex_shown(&p.t, shown, sizeof(shown)));
				goto fail;
			}
			free(z.name);
			z.name = xmemdup(p.t.text, p.t.len);
			dp_next(&p);
		} else if (lex_is(&p.t, "key")) {
			dp_next(&p);
			if ((p.t.type != LEX_WORD && p.t.type != LEX_STRING) ||
			    !dnsbl_domain_ok(p.t.text, p.t.len, 100) || memchr(p.t.text, '.', p.t.len)) {
				lex_error(&p, &p.t, "expected a key (one label of letters and digits)");
				goto fail;
			}
			free(z.key);
			z.key = xmemdup(p.t.text, p.t.len);
			dp_next(&p);
		} else if (lex_is(&p.t, "type")) {
			int t;

			dp_next(&p);
			for (t = 0; t < DNSBL_T__COUNT; t++)
				if (p.t.type == LEX_WORD && p.t.len == strlen(dnsbl_type_name(t)) &&
				    memcmp(p.t.text, dnsbl_type_name(t), p.t.len) == 0)
					break;
			if (t == DNSBL_T__COUNT) {
				lex_error(&p, &p.t, "expected ip, helo, client-name or sender-domain, "
				    "found %s", lex_shown(&p.t, shown, sizeof(shown)));
				goto fail;
			}
			z.type = t;
			dp_next(&p);
		} else if (lex_is(&p.t, "weight")) {
			if (dp_weight(&p, z.allow, &z.weight) != 0)
				goto fail;
			weight_given = true;
		} else if (lex_is(&p.t, "codes")) {
			dp_next(&p);
			if ((z.nc = dp_ranges(&p, z.clo, z.chi, 8)) < 0)
				goto fail;
		} else if (lex_is(&p.t, "reply")) {
			free(z.reply);
			if ((z.reply = dp_string(&p, "reply text")) == NULL)
				goto fail;
		} else if (lex_is(&p.t, "probe")) {
			dp_next(&p);
			if (lex_is(&p.t, "yes"))
				z.probe = true;
			else if (lex_is(&p.t, "no"))
				z.probe = false;
			else {
				lex_error(&p, &p.t, "expected yes or no after probe");
				goto fail;
			}
			dp_next(&p);
		} else {
			lex_error(&p, &p.t, "unknown %s option \"%s\" (name, key, type, weight, codes, "
			    "reply, probe, or a { code ... } block)", z.allow ? "dnswl" : "dnsbl",
			    lex_shown(&p.t, shown, sizeof(shown)));
			goto fail;
		}
	}
	(void)weight_given;
	if (p.t.type == LEX_LBRACE && dp_block(&p, &z) != 0)
		goto fail;
	if (p.t.type != LEX_NL && p.t.type != LEX_EOF) {
		lex_error(&p, &p.t, "unexpected %s", lex_shown(&p.t, shown, sizeof(shown)));
		goto fail;
	}
	if (z.name == NULL)
		z.name = xstrdup(z.zone);
	for (int i = 0; i < set->n; i++)
		if (strcmp(set->z[i].name, z.name) == 0) {
			lex_error(&p, kw, "a zone named \"%s\" is already defined (line %d); "
			    "give this one another name", z.name, set->z[i].line);
			goto fail_nosync;
		}
	if (set->n == DNSBL_ZONES_MAX) {
		lex_error(&p, kw, "at most %d dnsbl and dnswl zones", DNSBL_ZONES_MAX);
		goto fail_nosync;
	}
	if (z.key != NULL) {
		char *full = xasprintf("%s.%s", z.key, z.zone);

		if (strlen(full) > 200) {
			free(full);
			lex_error(&p, kw, "the key and the zone are too long together");
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
	dnsbl_zone_free(&z);
	return -1;
}
