/*
 * rules - named lists and per-stage rules, and their evaluation (see rules.h)
 *
 * The parser reads statements from the policy file's lexer, builds a small
 * tree per condition, and checks at load time everything that can be
 * known then: facts exist and are known at the rule's stage, lists exist
 * and are of a kind the fact can be looked up in, reply codes and texts
 * are sane. Evaluation walks the trees; it never allocates and never
 * blocks, and a configuration's rules are read by many threads at once.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dnsbl.h"
#include "idn.h"
#include "lists.h"
#include "log.h"
#include "metrics.h"
#include "owner.h"
#include "rules.h"
#include "xalloc.h"

#define RULES_TEXT_MAX 400

enum fact_type { FT_BOOL, FT_NUM, FT_IP, FT_DOMAIN, FT_ADDRESS, FT_WORD };

enum fact_id {
	F_CLIENT_IP, F_HELO, F_SENDER, F_SENDER_DOMAIN, F_NULL_SENDER, F_RCPT,
	F_RCPT_DOMAIN, F_RCPT_COUNT, F_DECLARED_SIZE, F_SIZE, F_AUTH, F_TLS, F_SCORE,
	F_PIPELINING, F_AFTER_DOT, F_BARE_LF, F_HELO_VALID, F_FCRDNS, F_CLIENT_NAME, F_LOGIN,
	F_DNSBL_SCORE, F_DNSBL_HIT, F_DNSBL_ERROR, F_EARLY_TALKER, F_BARE_LF_CMDS, F_UNKNOWN_CMDS,
	F_SPF, F_SPF_HELO, F_DKIM, F_DMARC, F_DMARC_POLICY, F_FROM_DOMAIN,
	F_TLS_VERSION, F_TLS_CIPHER, F_TLS_CLIENT_CERT, F_FROM, F_SUBMISSION
};

#define NO_CHECK (-1)

struct fact_def {
	const char *name;
	enum fact_id id;
	enum fact_type type;
	enum rules_stage from;
	int check;		/* the check (filter.h) the fact comes from, or NO_CHECK */
};

static const struct fact_def fact_defs[] = {
	{ "client-ip", F_CLIENT_IP, FT_IP, RS_CONNECT, NO_CHECK },
	{ "helo", F_HELO, FT_WORD, RS_HELO, NO_CHECK },
	{ "sender", F_SENDER, FT_ADDRESS, RS_MAIL, NO_CHECK },
	{ "sender-domain", F_SENDER_DOMAIN, FT_DOMAIN, RS_MAIL, NO_CHECK },
	{ "null-sender", F_NULL_SENDER, FT_BOOL, RS_MAIL, NO_CHECK },
	{ "rcpt", F_RCPT, FT_ADDRESS, RS_RCPT, NO_CHECK },
	{ "rcpt-domain", F_RCPT_DOMAIN, FT_DOMAIN, RS_RCPT, NO_CHECK },
	{ "rcpt-count", F_RCPT_COUNT, FT_NUM, RS_RCPT, NO_CHECK },
	{ "declared-size", F_DECLARED_SIZE, FT_NUM, RS_MAIL, NO_CHECK },
	{ "size", F_SIZE, FT_NUM, RS_DATA, NO_CHECK },
	{ "auth", F_AUTH, FT_BOOL, RS_CONNECT, NO_CHECK },
	{ "tls", F_TLS, FT_BOOL, RS_CONNECT, NO_CHECK },
	{ "score", F_SCORE, FT_NUM, RS_CONNECT, NO_CHECK },
	{ "pipelining-violation", F_PIPELINING, FT_BOOL, RS_CONNECT, NO_CHECK },
	{ "pipelined-after-dot", F_AFTER_DOT, FT_BOOL, RS_CONNECT, NO_CHECK },
	{ "bare-lf", F_BARE_LF, FT_BOOL, RS_DATA, NO_CHECK },
	{ "helo-valid", F_HELO_VALID, FT_BOOL, RS_HELO, NO_CHECK },
	{ "fcrdns", F_FCRDNS, FT_BOOL, RS_CONNECT, 0 /* CHECK_FCRDNS */ },
	{ "client-name", F_CLIENT_NAME, FT_DOMAIN, RS_CONNECT, 0 /* CHECK_FCRDNS */ },
	{ "login", F_LOGIN, FT_WORD, RS_CONNECT, NO_CHECK },
	{ "dnsbl-score", F_DNSBL_SCORE, FT_NUM, RS_CONNECT, 1 /* CHECK_DNSBL */ },
	{ "dnsbl-hit", F_DNSBL_HIT, FT_WORD, RS_CONNECT, 1 /* CHECK_DNSBL */ },
	{ "dnsbl-error", F_DNSBL_ERROR, FT_BOOL, RS_CONNECT, 1 /* CHECK_DNSBL */ },
	{ "early-talker", F_EARLY_TALKER, FT_BOOL, RS_CONNECT, NO_CHECK },
	{ "bare-lf-commands", F_BARE_LF_CMDS, FT_NUM, RS_CONNECT, NO_CHECK },
	{ "unknown-commands", F_UNKNOWN_CMDS, FT_NUM, RS_CONNECT, NO_CHECK },
	{ "spf", F_SPF, FT_WORD, RS_MAIL, 3 /* CHECK_SPF */ },
	{ "spf-helo", F_SPF_HELO, FT_WORD, RS_HELO, 3 /* CHECK_SPF */ },
	{ "dkim", F_DKIM, FT_WORD, RS_DATA, 4 /* CHECK_SAUTH */ },
	{ "dmarc", F_DMARC, FT_WORD, RS_DATA, 4 /* CHECK_SAUTH */ },
	{ "dmarc-policy", F_DMARC_POLICY, FT_WORD, RS_DATA, 4 /* CHECK_SAUTH */ },
	{ "from-domain", F_FROM_DOMAIN, FT_DOMAIN, RS_DATA, 4 /* CHECK_SAUTH */ },
	{ "tls-version", F_TLS_VERSION, FT_WORD, RS_CONNECT, NO_CHECK },
	{ "tls-cipher", F_TLS_CIPHER, FT_WORD, RS_CONNECT, NO_CHECK },
	{ "tls-client-cert", F_TLS_CLIENT_CERT, FT_WORD, RS_CONNECT, NO_CHECK },
	{ "from", F_FROM, FT_ADDRESS, RS_DATA, NO_CHECK },
	{ "submission", F_SUBMISSION, FT_BOOL, RS_CONNECT, NO_CHECK },
};
#define NFACTS (sizeof(fact_defs) / sizeof(fact_defs[0]))

static const char *const stage_names[RS__COUNT] = { "connect", "helo", "mail", "rcpt", "data" };

enum node_op { N_TRUE, N_NOT, N_AND, N_OR, N_BOOL, N_IN, N_IS, N_CMP, N_OWNED, N_RL };
enum cmp_op { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE };

struct node {
	enum node_op op;
	const struct fact_def *fact;
	enum cmp_op cmp;
	int64_t num;
	const struct list *list;
	const char *lname;		/* N_IN: the list's name (the set's) */
	const struct named_list *map;	/* N_OWNED */
	char *word;
	size_t wlen;
	struct node *a, *b;
};

struct rule {
	struct rule *next;
	enum rules_stage st;
	int mode;		/* 0 enforce, 1 monitor, 2 off */
	struct node *cond;
	enum rules_verdict verdict;
	int code;
	char enh[12];
	char *text;
	const char *file;	/* owned by the configuration (conf_intern) */
	int line;
	char *src;		/* the statement as written, for traces */
	int64_t score;		/* score +N / -N */
	bool greylist;		/* the greylist action (rcpt only) */
	bool sign;		/* the sign action (data only) */
	bool dry;		/* policy-mode monitor, or read by "include ... monitor" */
	int nhdr;
	char *hdr_name[RULES_HDR_MAX];
	char *hdr_value[RULES_HDR_MAX];
};

struct named_list {
	struct named_list *next;
	char *name;
	struct list *l;		/* NULL for a login-map */
	struct owner_map *omap;	/* a login-map (filters/owner.h) */
	bool is_map;
};

struct rules {
	char *file;
	struct named_list *lists;
	struct rule *head[RS__COUNT], *tail[RS__COUNT];
	size_t n[RS__COUNT];
	unsigned need[RS__COUNT];	/* 1 << check: a rule of the stage reads its facts */
	bool reads_from;		/* a rule reads the header From (fact from) */
	bool uses_spf_exp;		/* a text uses $spf-explanation */
	bool dry_now;			/* rules parsed now are dry (rules_set_dry) */
	struct rules_rl {		/* declared rate limits (policy/conf_ratelimit.c) */
		char name[48];
		enum rules_stage from;	/* the first stage that knows its key */
	} rl[32];
	int nrl;
	uint32_t rl_mask[RS__COUNT];	/* limits the stage's rules read */
};

/* The parser's state: one token of look-ahead. */
struct rp {
	struct rules *r;
	struct lexer *lx;
	struct lex_token t;
	char *tcopy;		/* t's text, NUL-terminated copy */
	lex_err_fn err;
	void *arg;
	int errors;
	enum rules_stage st;
};

/* rules_new - an empty set */
struct rules *
rules_new(const char *file)
{
	struct rules *r = xcalloc(1, sizeof(*r));

	r->file = xstrdup(file);
	return r;
}

/* rules_stage_name - "mail" */
const char *
rules_stage_name(enum rules_stage st)
{
	return (unsigned)st < RS__COUNT ? stage_names[st] : "?";
}

/* rules_stage_needs - see rules.h */
bool
rules_stage_needs(const struct rules *r, enum rules_stage st, int check)
{
	return r != NULL && check >= 0 && check < 32 && (r->need[st] & (1u << check)) != 0;
}

/* rules_uses_spf_explanation - does a text use $spf-explanation? */
bool
rules_uses_spf_explanation(const struct rules *r)
{
	return r != NULL && r->uses_spf_exp;
}

/* rules_reads_from - does a rule read the header From? */
bool
rules_reads_from(const struct rules *r)
{
	return r != NULL && r->reads_from;
}

/* rules_signs - has a data rule (not off) the sign action? */
bool
rules_signs(const struct rules *r)
{
	for (const struct rule *ru = r != NULL ? r->head[RS_DATA] : NULL; ru; ru = ru->next)
		if (ru->sign && ru->mode != 2)
			return true;
	return false;
}

/* rules_count - rules of a stage (off ones included) */
size_t
rules_count(const struct rules *r, enum rules_stage st)
{
	return r == NULL ? 0 : r->n[st];
}

/* node_free - a condition tree */
static void
node_free(struct node *n)
{
	if (n == NULL)
		return;
	node_free(n->a);
	node_free(n->b);
	free(n->word);
	free(n);
}

/* rule_free - one rule */
static void
rule_free(struct rule *ru)
{
	node_free(ru->cond);
	free(ru->text);
	free(ru->src);
	for (int i = 0; i < ru->nhdr; i++) {
		free(ru->hdr_name[i]);
		free(ru->hdr_value[i]);
	}
	free(ru);
}

/* rules_free - everything */
void
rules_free(struct rules *r)
{
	if (r == NULL)
		return;
	for (int st = 0; st < RS__COUNT; st++) {
		struct rule *ru, *next;
		for (ru = r->head[st]; ru; ru = next) {
			next = ru->next;
			rule_free(ru);
		}
	}
	struct named_list *nl, *nnext;
	for (nl = r->lists; nl; nl = nnext) {
		nnext = nl->next;
		owner_map_free(nl->omap);
		list_free(nl->l);
		free(nl->name);
		free(nl);
	}
	free(r->file);
	free(r);
}

/* ---------------------------------------------------------------------
 * Parsing
 */

/* rp_next - advance one token */
static void
rp_next(struct rp *p)
{
	lex_next(p->lx, &p->t);
	free(p->tcopy);
	p->tcopy = (p->t.type == LEX_WORD || p->t.type == LEX_STRING) ?
	    xmemdup(p->t.text, p->t.len) : NULL;
}

/* rp_error - report at the current token */
static void __attribute__((format(printf, 2, 3)))
rp_error(struct rp *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lex_verror(p->err, p->arg, &p->t, fmt, ap);
	va_end(ap);
	p->errors++;
}

/* rp_shown - the current token, for messages */
static const char *
rp_shown(const struct rp *p, char *buf, size_t size)
{
	if (p->t.type == LEX_WORD || p->t.type == LEX_STRING) {
		char esc[LOG_ESC_SIZE];
		log_escape(esc, sizeof(esc), p->t.text, p->t.len);
		snprintf(buf, size, "\"%s\"", esc);
	} else if (p->t.type == LEX_ERROR) {
		snprintf(buf, size, "%s", p->t.error);
	} else {
		snprintf(buf, size, "%s", lex_tok_name(p->t.type));
	}
	return buf;
}

/* rp_skip_line - error recovery: to the end of the statement */
static void
rp_skip_line(struct rp *p)
{
	while (p->t.type != LEX_NL && p->t.type != LEX_EOF)
		rp_next(p);
}

/* rp_find_list - a named list */
static const struct named_list *
rp_find_list(const struct rules *r, const char *name, size_t len)
{
	for (const struct named_list *nl = r->lists; nl; nl = nl->next)
		if (strlen(nl->name) == len && memcmp(nl->name, name, len) == 0)
			return nl;
	return NULL;
}

/* rp_name_ok - list names: letters, digits, '-', '_' */
static bool
rp_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > 64 || !isalpha((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
			return false;
	return true;
}

/* rules_parse_list - "list NAME KIND { ... }" or "list NAME KIND file PATH" */
int
rules_parse_list(struct rules *r, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg)
{
	struct rp p = { r, lx, *kw, NULL, err, arg, 0, RS_CONNECT };
	char shown[LOG_ESC_SIZE + 8], e[512];
	static const char *const kinds[] = { "net", "domain", "address", "word", "login-map" };
	enum list_kind kind = LIST_NET;
	struct named_list *nl;
	int k;

	rp_next(&p);
	if (p.t.type != LEX_WORD || !rp_name_ok(p.t.text, p.t.len)) {
		rp_error(&p, "expected a list name (a letter, then letters, digits, '-', '_'), found %s",
		    rp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	if (rp_find_list(r, p.t.text, p.t.len) != NULL) {
		rp_error(&p, "list %s defined twice", rp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	nl = xcalloc(1, sizeof(*nl));
	nl->name = xmemdup(p.t.text, p.t.len);
	rp_next(&p);
	for (k = 0; k < 5; k++)
		if (lex_is(&p.t, kinds[k]))
			break;
	if (k == 5) {
		rp_error(&p, "expected the list's kind (net, domain, address, word or login-map), found %s",
		    rp_shown(&p, shown, sizeof(shown)));
		free(nl->name);
		free(nl);
		goto fail;
	}
	nl->next = r->lists;
	r->lists = nl;
	if (k == 4) {
		nl->is_map = true;
		nl->omap = owner_map_new();
	} else {
		kind = (enum list_kind)k;
		nl->l = list_new(kind);
		if (nl->l == NULL)
			panic("out of memory");
	}
	rp_next(&p);
	if (lex_is(&p.t, "file")) {
		rp_next(&p);
		if (p.t.type != LEX_WORD && p.t.type != LEX_STRING) {
			rp_error(&p, "expected a file name after \"file\", found %s",
			    rp_shown(&p, shown, sizeof(shown)));
			goto fail;
		}
		if (nl->is_map ? owner_map_load_file(nl->omap, p.tcopy, e, sizeof(e)) != 0 :
		    list_load_file(nl->l, p.tcopy, e, sizeof(e)) != 0)
			rp_error(&p, "%s", e);
		rp_next(&p);
	} else if (p.t.type == LEX_LBRACE) {
		for (;;) {
			rp_next(&p);
			if (p.t.type == LEX_NL)
				continue;
			if (p.t.type == LEX_RBRACE || p.t.type == LEX_EOF)
				break;
			if (p.t.type != LEX_WORD && p.t.type != LEX_STRING) {
				rp_error(&p, "expected a list item or '}', found %s",
				    rp_shown(&p, shown, sizeof(shown)));
				continue;
			}
			if (nl->is_map ? owner_map_add_word(nl->omap, p.t.text, p.t.len, e, sizeof(e)) != 0 :
			    list_add(nl->l, p.t.text, p.t.len, e, sizeof(e)) != 0)
				rp_error(&p, "%s", e);
		}
		if (p.t.type != LEX_RBRACE) {
			rp_error(&p, "list %s: missing '}'", nl->name);
			goto out;
		}
		rp_next(&p);
	} else {
		rp_error(&p, "expected '{' or \"file\" after the list's kind, found %s",
		    rp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	if (p.t.type != LEX_NL && p.t.type != LEX_EOF) {
		rp_error(&p, "unexpected %s after the list", rp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	goto out;
fail:
	rp_skip_line(&p);
out:
	free(p.tcopy);
	return p.errors ? -1 : 0;
}

static struct node *rp_or(struct rp *p);

/* rp_fact - the fact named by the current token, checked for the stage */
static const struct fact_def *
rp_fact(struct rp *p)
{
	char shown[LOG_ESC_SIZE + 8];

	for (size_t i = 0; i < NFACTS; i++)
		if (lex_is(&p->t, fact_defs[i].name)) {
			if (fact_defs[i].from > p->st) {
				rp_error(p, "%s is not known yet at %s (only from %s on)",
				    fact_defs[i].name, stage_names[p->st],
				    stage_names[fact_defs[i].from]);
				return NULL;
			}
			return &fact_defs[i];
		}
	rp_error(p, "unknown fact %s (known: client-ip, helo, sender, sender-domain, "
	    "null-sender, rcpt, rcpt-domain, rcpt-count, declared-size, size, auth, tls, score, "
	    "pipelining-violation, pipelined-after-dot, bare-lf, helo-valid, fcrdns, client-name, "
	    "login, dnsbl-score, dnsbl-hit, dnsbl-error, early-talker, bare-lf-commands, "
	    "unknown-commands, spf, spf-helo, dkim, dmarc, dmarc-policy, from-domain, "
	    "tls-version, tls-cipher, tls-client-cert, from, submission)",
	    rp_shown(p, shown, sizeof(shown)));
	return NULL;
}

/* The words a fact with a fixed vocabulary can have: what the checks
 * (filters/spf.c, dkim.c, dmarc.c) and OpenSSL give. "is" and word lists
 * compare case-insensitively. */
static const char *const spf_words[] = { "none", "neutral", "pass", "fail", "softfail",
	"temperror", "permerror", NULL };
static const char *const dkim_words[] = { "none", "pass", "fail", "neutral", "policy",
	"temperror", "permerror", NULL };
static const char *const dmarc_words[] = { "none", "pass", "fail", "temperror", "permerror",
	NULL };
static const char *const dmarc_policy_words[] = { "none", "quarantine", "reject", NULL };
static const char *const tls_version_words[] = { "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3",
	NULL };

/* fact_words - the vocabulary of a fact, or NULL when any word goes */
static const char *const *
fact_words(enum fact_id id)
{
	switch (id) {
	case F_SPF: case F_SPF_HELO: return spf_words;
	case F_DKIM: return dkim_words;
	case F_DMARC: return dmarc_words;
	case F_DMARC_POLICY: return dmarc_policy_words;
	case F_TLS_VERSION: return tls_version_words;
	default: return NULL;
	}
}

/* rp_word_ok - is the current token a word of the fact's vocabulary?
 * If not, an error naming the valid words */
static bool
rp_word_ok(struct rp *p, const struct fact_def *f)
{
	const char *const *w = fact_words(f->id);
	char shown[LOG_ESC_SIZE + 8], valid[256] = "";
	size_t n = 0;

	if (w == NULL)
		return true;
	for (int i = 0; w[i] != NULL; i++)
		if (strlen(w[i]) == p->t.len && strncasecmp(w[i], p->t.text, p->t.len) == 0)
			return true;
	for (int i = 0; w[i] != NULL && n < sizeof(valid); i++)
		n += (size_t)snprintf(valid + n, sizeof(valid) - n, "%s%s", i ? ", " : "", w[i]);
	rp_error(p, "%s is never %s (valid: %s)", f->name, rp_shown(p, shown, sizeof(shown)), valid);
	return false;
}

/* rules_fact_word_ok - see rules.h */
bool
rules_fact_word_ok(const char *fact, const char *word, char *valid, size_t size)
{
	const char *const *w = NULL;
	size_t n = 0;

	for (size_t i = 0; i < NFACTS; i++)
		if (strcmp(fact_defs[i].name, fact) == 0)
			w = fact_words(fact_defs[i].id);
	if (size > 0)
		valid[0] = 0;
	if (w == NULL)
		return true;
	for (int i = 0; w[i] != NULL; i++)
		if (strcasecmp(w[i], word) == 0)
			return true;
	for (int i = 0; w[i] != NULL && n < size; i++)
		n += (size_t)snprintf(valid + n, size - n, "%s%s", i ? ", " : "", w[i]);
	return false;
}

/* vocab_ok - list_word_find's test: an exact entry is a word of the
 * vocabulary, a glob is the prefix of one */
static bool
vocab_ok(const void *arg, const char *w, size_t len, bool glob)
{
	for (const char *const *v = arg; *v != NULL; v++)
		if ((glob ? strlen(*v) >= len : strlen(*v) == len) && strncasecmp(*v, w, len) == 0)
			return true;
	return false;
}

/* rp_list_words_ok - every entry of a word list read by a fact with a
 * vocabulary is one of its words; else an error at the list's name */
static bool
rp_list_words_ok(struct rp *p, const struct fact_def *f, const struct named_list *nl)
{
	const char *const *v = fact_words(f->id);
	const char *w;
	size_t len, n = 0;
	bool glob;
	char esc[LOG_ESC_SIZE], valid[256] = "";

	if (v == NULL || !list_word_find(nl->l, vocab_ok, v, &w, &len, &glob))
		return true;
	for (int i = 0; v[i] != NULL && n < sizeof(valid); i++)
		n += (size_t)snprintf(valid + n, sizeof(valid) - n, "%s%s", i ? ", " : "", v[i]);
	log_escape(esc, sizeof(esc), w, len);
	rp_error(p, "list %s has \"%s%s\", which %s never is (valid: %s)", nl->name, esc,
	    glob ? "*" : "", f->name, valid);
	return false;
}

/* rp_list_helo_ok - a word list read as HELO names has no entry that
 * looks like an IDN (8-bit bytes, an xn-- label) and is not a valid one:
 * it could never match; else an error at the list's name */
static bool
rp_list_helo_ok(struct rp *p, const struct fact_def *f, const struct named_list *nl)
{
	const char *w;
	size_t len;
	char esc[LOG_ESC_SIZE];

	if (f->id != F_HELO || !list_word_bad_idn(nl->l, &w, &len))
		return true;
	log_escape(esc, sizeof(esc), w, len);
	rp_error(p, "list %s has \"%s\", which is not a valid internationalised domain name "
	    "(IDNA2008, UTS #46), so helo can never be it", nl->name, esc);
	return false;
}

/* fact_range - the numbers a number fact can have */
static void
fact_range(enum fact_id id, int64_t *lo, int64_t *hi)
{
	switch (id) {
	case F_RCPT_COUNT: *lo = 0; *hi = 100000; break;	/* max-recipients' ceiling */
	case F_DECLARED_SIZE: case F_SIZE: *lo = 0; *hi = (int64_t)1 << 40; break;
	case F_SCORE: case F_DNSBL_SCORE: *lo = -1000000000; *hi = 1000000000; break;
	default: *lo = 0; *hi = 1000000; break;		/* command counts */
	}
}

/* rp_number - a count or a size with k/m/g */
static bool
rp_number(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0, m = 1;
	size_t i = 0;

	if (len == 0 || !isdigit((unsigned char)s[0]))
		return false;
	for (; i < len && isdigit((unsigned char)s[i]); i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (i + 1 == len) {
		int u = tolower((unsigned char)s[i]);
		m = u == 'k' ? 1024 : u == 'm' ? 1024 * 1024 : u == 'g' ? 1024 * 1024 * 1024 : 0;
		if (m == 0)
			return false;
	} else if (i != len) {
		return false;
	}
	if (v > UINT64_MAX / m)
		return false;
	*out = v * m;
	return true;
}

/* rp_predicate - FACT [in LIST | is WORD | OP NUMBER] */
static struct node *
rp_predicate(struct rp *p)
{
	static const char *const ops[] = { "==", "!=", "<", "<=", ">", ">=" };
	char shown[LOG_ESC_SIZE + 8];
	const struct fact_def *f = rp_fact(p);
	struct node *n;

	if (f == NULL)
		return NULL;
	if (f->id == F_FROM)
		p->r->reads_from = true;
	n = xcalloc(1, sizeof(*n));
	n->fact = f;
	rp_next(p);
	if (lex_is(&p->t, "in")) {
		const struct named_list *nl;
		enum list_kind lk;
		rp_next(p);
		nl = p->t.type == LEX_WORD ? rp_find_list(p->r, p->t.text, p->t.len) : NULL;
		if (nl == NULL) {
			rp_error(p, "unknown list %s (lists must be defined before the rules "
			    "that use them)", rp_shown(p, shown, sizeof(shown)));
			node_free(n);
			return NULL;
		}
		if (nl->is_map) {
			rp_error(p, "%s is a login-map: use \"sender owned-by %s\"", nl->name, nl->name);
			node_free(n);
			return NULL;
		}
		lk = list_kind(nl->l);
		if (!((f->type == FT_IP && lk == LIST_NET) ||
		    (f->type == FT_DOMAIN && lk == LIST_DOMAIN) ||
		    (f->type == FT_ADDRESS && (lk == LIST_ADDRESS || lk == LIST_DOMAIN)) ||
		    (f->type == FT_WORD && lk == LIST_WORD))) {
			rp_error(p, "%s cannot be looked up in the %s list %s (it needs %s)", f->name,
			    list_kind_name(lk), nl->name,
			    f->type == FT_IP ? "a net list" : f->type == FT_DOMAIN ? "a domain list" :
			    f->type == FT_ADDRESS ? "an address or domain list" : "a word list");
			node_free(n);
			return NULL;
		}
		if (!rp_list_words_ok(p, f, nl) || !rp_list_helo_ok(p, f, nl)) {
			node_free(n);
			return NULL;
		}
		n->op = N_IN;
		n->list = nl->l;
		n->lname = nl->name;
		rp_next(p);
		return n;
	}
	if (lex_is(&p->t, "owned-by")) {
		const struct named_list *nl;
		rp_next(p);
		nl = p->t.type == LEX_WORD ? rp_find_list(p->r, p->t.text, p->t.len) : NULL;
		if ((f->id != F_SENDER && f->id != F_FROM) || nl == NULL || !nl->is_map) {
			rp_error(p, "\"owned-by\" takes sender or from and a login-map list, found %s owned-by %s",
			    f->name, rp_shown(p, shown, sizeof(shown)));
			node_free(n);
			return NULL;
		}
		n->op = N_OWNED;
		n->map = nl;
		rp_next(p);
		return n;
	}
	if (lex_is(&p->t, "is")) {
		rp_next(p);
		if ((f->type != FT_WORD && f->type != FT_DOMAIN) ||
		    (p->t.type != LEX_WORD && p->t.type != LEX_STRING)) {
			rp_error(p, "\"%s is\" needs a word fact (helo, login, sender-domain, "
			    "rcpt-domain, client-name, dnsbl-hit, spf, spf-helo, dkim, dmarc, "
			    "dmarc-policy, from-domain) and a word", f->name);
			node_free(n);
			return NULL;
		}
		if (!rp_word_ok(p, f)) {
			node_free(n);
			return NULL;
		}
		if (f->type == FT_DOMAIN) {
			/* a name a domain list would take, or it can never match */
			struct list *dl = list_new(LIST_DOMAIN);
			char e[512];
			int bad = dl == NULL || list_add(dl, p->t.text, p->t.len, e, sizeof(e)) != 0;

			list_free(dl);
			if (bad) {
				rp_error(p, "%s is %s: %s", f->name, rp_shown(p, shown, sizeof(shown)),
				    dl == NULL ? "out of memory" : e);
				node_free(n);
				return NULL;
			}
		}
		n->op = N_IS;
		n->word = xmemdup(p->t.text, p->t.len);
		n->wlen = p->t.len;
		if (f->id == F_HELO && idn_needs(p->t.text, p->t.len)) {
			/* compared in A-labels (eval_helo_is) */
			char a[256];
			int r = idn_alabel(p->t.text, p->t.len, a, sizeof(a));

			if (r <= 0) {
				rp_error(p, "helo is %s: not a valid internationalised domain name "
				    "(IDNA2008, UTS #46)", rp_shown(p, shown, sizeof(shown)));
				node_free(n);
				return NULL;
			}
			free(n->word);
			n->word = xmemdup(a, (size_t)r);
			n->wlen = (size_t)r;
		}
		rp_next(p);
		return n;
	}
	for (int i = 0; i < 6; i++) {
		if (!lex_is(&p->t, ops[i]))
			continue;
		if (f->type != FT_NUM) {
			rp_error(p, "%s is not a number; compare it with \"in\" or \"is\"", f->name);
			node_free(n);
			return NULL;
		}
		rp_next(p);
		{
			bool neg = p->t.type == LEX_WORD && p->t.len > 1 && p->t.text[0] == '-';
			uint64_t u = 0;
			if (p->t.type != LEX_WORD ||
			    !rp_number(p->t.text + neg, p->t.len - neg, &u) || u > INT64_MAX) {
				rp_error(p, "expected a number (with k, m or g for sizes), found %s",
				    rp_shown(p, shown, sizeof(shown)));
				node_free(n);
				return NULL;
			}
			n->num = neg ? -(int64_t)u : (int64_t)u;
			{
				int64_t lo, hi;
				fact_range(f->id, &lo, &hi);
				if (n->num < lo || n->num > hi) {
					rp_error(p, "%s is between %lld and %lld, found %s", f->name,
					    (long long)lo, (long long)hi,
					    rp_shown(p, shown, sizeof(shown)));
					node_free(n);
					return NULL;
				}
			}
		}
		n->op = N_CMP;
		n->cmp = (enum cmp_op)i;
		rp_next(p);
		return n;
	}
	if (f->type != FT_BOOL) {
		rp_error(p, "%s needs \"in LIST\"%s after it", f->name,
		    f->type == FT_NUM ? " or a comparison" : f->type == FT_IP ? "" : ", \"is WORD\"");
		node_free(n);
		return NULL;
	}
	n->op = N_BOOL;
	return n;
}

/* rules_add_ratelimit - see rules.h */
int
rules_add_ratelimit(struct rules *r, const char *name, int index, enum rules_stage from,
	bool per_rcpt)
{
	(void)per_rcpt;
	if (index < 0 || index >= 32 || index != r->nrl)
		return -1;
	for (int i = 0; i < r->nrl; i++)
		if (strcmp(r->rl[i].name, name) == 0)
			return -1;
	snprintf(r->rl[r->nrl].name, sizeof(r->rl[r->nrl].name), "%s", name);
	r->rl[r->nrl++].from = from;
	return 0;
}

/* rules_stage_ratelimits - see rules.h */
uint32_t
rules_stage_ratelimits(const struct rules *r, enum rules_stage st)
{
	return r != NULL && (unsigned)st < RS__COUNT ? r->rl_mask[st] : 0;
}

/* rp_ratelimit - "ratelimit NAME": is that limit exceeded? */
static struct node *
rp_ratelimit(struct rp *p)
{
	char shown[LOG_ESC_SIZE + 8];
	struct node *n;

	rp_next(p);
	for (int i = 0; p->t.type == LEX_WORD && i < p->r->nrl; i++) {
		if (strlen(p->r->rl[i].name) != p->t.len ||
		    memcmp(p->r->rl[i].name, p->t.text, p->t.len) != 0)
			continue;
		if (p->st < p->r->rl[i].from) {
			rp_error(p, "ratelimit %s counts by what the %s stage first knows: use it "
			    "in \"on %s\" rules or later", p->r->rl[i].name,
			    stage_names[p->r->rl[i].from], stage_names[p->r->rl[i].from]);
			return NULL;
		}
		n = xcalloc(1, sizeof(*n));
		n->op = N_RL;
		n->num = i;
		rp_next(p);
		return n;
	}
	rp_error(p, "unknown rate limit %s (declare it with \"ratelimit NAME key ... rate "
	    "N/DURATION\" before the rules that read it)", rp_shown(p, shown, sizeof(shown)));
	return NULL;
}

/* rp_factor - not X | ( X ) | true | ratelimit NAME | predicate */
static struct node *
rp_factor(struct rp *p)
{
	struct node *n, *a;

	if (lex_is(&p->t, "ratelimit"))
		return rp_ratelimit(p);

	if (lex_is(&p->t, "not")) {
		rp_next(p);
		a = rp_factor(p);
		if (a == NULL)
			return NULL;
		n = xcalloc(1, sizeof(*n));
		n->op = N_NOT;
		n->a = a;
		return n;
	}
	if (p->t.type == LEX_LPAREN) {
		rp_next(p);
		a = rp_or(p);
		if (a == NULL)
			return NULL;
		if (p->t.type != LEX_RPAREN) {
			char shown[LOG_ESC_SIZE + 8];
			rp_error(p, "expected ')', found %s", rp_shown(p, shown, sizeof(shown)));
			node_free(a);
			return NULL;
		}
		rp_next(p);
		return a;
	}
	if (lex_is(&p->t, "true")) {
		rp_next(p);
		n = xcalloc(1, sizeof(*n));
		n->op = N_TRUE;
		return n;
	}
	return rp_predicate(p);
}

/* rp_binary - left-associative chain of one operator */
static struct node *
rp_chain(struct rp *p, const char *word, enum node_op op, struct node *(*sub)(struct rp *))
{
	struct node *a = sub(p), *b, *n;

	while (a != NULL && lex_is(&p->t, word)) {
		rp_next(p);
		b = sub(p);
		if (b == NULL) {
			node_free(a);
			return NULL;
		}
		n = xcalloc(1, sizeof(*n));
		n->op = op;
		n->a = a;
		n->b = b;
		a = n;
	}
	return a;
}

/* rp_and - FACTOR { and FACTOR } */
static struct node *
rp_and(struct rp *p)
{
	return rp_chain(p, "and", N_AND, rp_factor);
}

/* rp_or - TERM { or TERM } */
static struct node *
rp_or(struct rp *p)
{
	return rp_chain(p, "or", N_OR, rp_and);
}

/* Variables in texts, and the first stage that knows each. */
static const struct { const char *name; enum rules_stage from; } vars[] = {
	{ "ip", RS_CONNECT }, { "helo", RS_HELO }, { "sender-domain", RS_MAIL },
	{ "sender", RS_MAIL }, { "rcpt-domain", RS_RCPT }, { "rcpt", RS_RCPT },
	{ "score", RS_CONNECT }, { "size", RS_DATA }, { "dnsbl", RS_CONNECT },
	{ "dnsbl-reply", RS_CONNECT }, { "client-name", RS_CONNECT }, { "greylist", RS_RCPT },
	{ "spf", RS_MAIL }, { "dkim", RS_DATA }, { "dmarc", RS_DATA }, { "dmarc-policy", RS_DATA },
	{ "from-domain", RS_DATA }, { "spf-explanation", RS_MAIL },
};

/* var_at - the variable named at s (after '$'), its index, or -1 */
static int
var_at(const char *s, size_t len, size_t *used)
{
	size_t n = 0;

	while (n < len && (islower((unsigned char)s[n]) || s[n] == '-'))
		n++;
	/* longest known name that is a prefix ending at a non-name byte */
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		size_t vl = strlen(vars[i].name);
		if (vl == n && memcmp(s, vars[i].name, vl) == 0) {
			*used = vl;
			return (int)i;
		}
	}
	return -1;
}

/* rp_text_ok - a text we may send: printable ASCII, bounded, known
 * variables only; the complaint in why */
static bool
rp_text_ok(struct rp *p, const char *s, size_t len, const char **why)
{
	*why = "printable ASCII, 1 to 400 bytes";
	if (len == 0 || len > RULES_TEXT_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		size_t used;
		int v;
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
		if (s[i] != '$')
			continue;
		if (i + 1 < len && s[i + 1] == '$') {
			i++;
			continue;
		}
		v = var_at(s + i + 1, len - i - 1, &used);
		if (v < 0) {
			*why = "unknown $variable (known: $ip $helo $sender $sender-domain $rcpt "
			    "$rcpt-domain $score $size $dnsbl $dnsbl-reply $client-name $greylist $spf $dkim "
			    "$dmarc $dmarc-policy $from-domain $spf-explanation; $$ for a dollar)";
			return false;
		}
		if (v == 17)
			p->r->uses_spf_exp = true;
		if (vars[v].from > p->st) {
			*why = "a $variable not known yet at this stage";
			return false;
		}
		i += used;
	}
	return true;
}

/* rules_expand - see rules.h */
size_t
rules_expand(const char *t, const struct rules_facts *f, char *out, size_t size)
{
	size_t n = 0;

	if (size == 0)
		return 0;
	for (size_t i = 0; t[i] != 0 && n + 1 < size; i++) {
		char num[64];
		const char *v = NULL;
		size_t vlen = 0, used;
		int k;

		if (t[i] != '$') {
			out[n++] = t[i];
			continue;
		}
		if (t[i + 1] == '$') {
			out[n++] = '$';
			i++;
			continue;
		}
		k = var_at(t + i + 1, strlen(t + i + 1), &used);
		if (k < 0) {
			out[n++] = '$';
			continue;
		}
		i += used;
		switch (k) {
		case 0:
			num[0] = 0;
			if (f->client && f->client->sa_family == AF_INET)
				inet_ntop(AF_INET, &((const struct sockaddr_in *)f->client)->sin_addr,
				    num, sizeof(num));
			else if (f->client && f->client->sa_family == AF_INET6)
				inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)f->client)->sin6_addr,
				    num, sizeof(num));
			v = num;
			vlen = strlen(num);
			break;
		case 1: v = f->helo; vlen = f->helolen; break;
		case 2: v = f->sender_domain; vlen = f->sender_dlen; break;
		case 3: v = NULL; break;	/* sender: local@domain below */
		case 4: v = f->rcpt_domain; vlen = f->rcpt_dlen; break;
		case 5: v = NULL; break;
		case 6: snprintf(num, sizeof(num), "%lld", (long long)f->score); v = num; vlen = strlen(num); break;
		case 7: snprintf(num, sizeof(num), "%llu", (unsigned long long)f->size); v = num; vlen = strlen(num); break;
		case 8: v = f->dnsbl_hits; vlen = v ? strlen(v) : 0; break;
		case 9: v = f->dnsbl_reply; vlen = v ? strlen(v) : 0; break;
		case 10: v = f->client_name; vlen = f->client_nlen; break;
		case 11: v = f->greylist_text; vlen = v ? strlen(v) : 0; break;
		case 12: v = f->spf; vlen = v ? strlen(v) : 0; break;
		case 13: v = f->dkim; vlen = v ? strlen(v) : 0; break;
		case 14: v = f->dmarc; vlen = v ? strlen(v) : 0; break;
		case 15: v = f->dmarc_policy; vlen = v ? strlen(v) : 0; break;
		case 16: v = f->dmarc_from_domain; vlen = v ? strlen(v) : 0; break;
		case 17: v = f->spf_explanation; vlen = v ? strlen(v) : 0; break;
		}
		if (k == 3 || k == 5) {
			const char *lp = k == 3 ? f->sender_local : f->rcpt_local;
			const char *dp = k == 3 ? f->sender_domain : f->rcpt_domain;
			size_t ll = k == 3 ? f->sender_llen : f->rcpt_llen;
			size_t dl = k == 3 ? f->sender_dlen : f->rcpt_dlen;
			for (size_t j = 0; j < ll && j < 64 && n + 1 < size; j++)
				out[n++] = lp[j] > 0x20 && lp[j] < 0x7f ? lp[j] : '?';
			if (dl > 0 && n + 1 < size)
				out[n++] = '@';
			for (size_t j = 0; j < dl && j < 255 && n + 1 < size; j++)
				out[n++] = dp[j] > 0x20 && dp[j] < 0x7f ? dp[j] : '?';
			continue;
		}
		/* a zone's reply text is the operator's and may have spaces; an
		 * SPF explanation is the sender domain's (RFC 7208 8.4), spaces
		 * kept, anything else not printable ASCII made '?' */
		for (size_t j = 0; v != NULL && j < vlen && j < (k >= 9 ? 300u : 100u) && n + 1 < size; j++)
			out[n++] = (v[j] > 0x20 || ((k == 9 || k == 11 || k == 17) && v[j] == ' ')) &&
			    v[j] < 0x7f ? v[j] : '?';
	}
	out[n] = 0;
	return n;
}

/* rp_enh_ok - "5.7.1" of the given class */
static bool
rp_enh_ok(const char *s, size_t len, int cls)
{
	size_t i = 0, digits;

	if (len < 5 || len > 11 || s[0] != '0' + cls || s[1] != '.')
		return false;
	for (int part = 0, j = 2; part < 2; part++) {
		digits = 0;
		while ((size_t)j < len && isdigit((unsigned char)s[j])) {
			j++;
			digits++;
		}
		if (digits == 0 || digits > 3)
			return false;
		if (part == 0) {
			if ((size_t)j >= len || s[j] != '.')
				return false;
			j++;
		}
		i = (size_t)j;
	}
	return i == len;
}

/* rp_header_name_ok - a field name: printable ASCII but ':' (RFC 5322) */
static bool
rp_header_name_ok(const char *n, size_t len)
{
	if (len == 0 || len > 76)
		return false;
	for (size_t i = 0; i < len; i++)
		if (n[i] <= 0x20 || n[i] >= 0x7f || n[i] == ':')
			return false;
	/* moat's own verdict header is written by moat alone */
	return !(len == 22 && strncasecmp(n, "Authentication-Results", 22) == 0);
}

/* rp_final - reject CODE ENH "TEXT" | tempfail CODE ENH "TEXT" (after the word) */
static bool
rp_final(struct rp *p, struct rule *ru, int cls)
{
	char shown[LOG_ESC_SIZE + 8];
	const char *why;
	uint64_t code;

	rp_next(p);
	if (p->t.type != LEX_WORD || p->t.len != 3 || !rp_number(p->t.text, 3, &code) ||
	    code / 100 != (uint64_t)cls || code % 100 > 59) {
		rp_error(p, "expected a %dxx reply code, found %s", cls,
		    rp_shown(p, shown, sizeof(shown)));
		return false;
	}
	ru->code = (int)code;
	rp_next(p);
	if (p->t.type != LEX_WORD || !rp_enh_ok(p->t.text, p->t.len, cls)) {
		rp_error(p, "expected an enhanced status code like %d.7.1, found %s", cls,
		    rp_shown(p, shown, sizeof(shown)));
		return false;
	}
	memcpy(ru->enh, p->t.text, p->t.len);
	ru->enh[p->t.len] = 0;
	rp_next(p);
	if (p->t.type != LEX_STRING || !rp_text_ok(p, p->t.text, p->t.len, &why)) {
		if (p->t.type != LEX_STRING)
			why = "printable ASCII, 1 to 400 bytes";
		rp_error(p, "expected the reply text in double quotes (%s), found %s", why,
		    rp_shown(p, shown, sizeof(shown)));
		return false;
	}
	ru->text = xmemdup(p->t.text, p->t.len);
	rp_next(p);
	return true;
}

/* rp_action - { score +N | add-header NAME "VALUE" } [accept | reject ... |
 * tempfail ...]: at least one action, the final one last */
static bool
rp_action(struct rp *p, struct rule *ru)
{
	char shown[LOG_ESC_SIZE + 8];
	const char *why;
	int nact = 0;

	for (;;) {
		if (lex_is(&p->t, "score")) {
			bool neg;
			uint64_t u;
			rp_next(p);
			neg = p->t.type == LEX_WORD && p->t.len > 1 && p->t.text[0] == '-';
			if (p->t.type != LEX_WORD || p->t.len < 2 || (p->t.text[0] != '+' && !neg) ||
			    !rp_number(p->t.text + 1, p->t.len - 1, &u) || u > 1000000 ||
			    !isdigit((unsigned char)p->t.text[p->t.len - 1])) {
				rp_error(p, "expected a signed score like +3 or -2, found %s",
				    rp_shown(p, shown, sizeof(shown)));
				return false;
			}
			ru->score += neg ? -(int64_t)u : (int64_t)u;
			rp_next(p);
		} else if (lex_is(&p->t, "add-header")) {
			if (ru->nhdr >= RULES_HDR_MAX) {
				rp_error(p, "at most %d add-header actions in one rule", RULES_HDR_MAX);
				return false;
			}
			rp_next(p);
			if (p->t.type != LEX_WORD || !rp_header_name_ok(p->t.text, p->t.len)) {
				rp_error(p, "expected a header field name (not Authentication-Results), "
				    "found %s", rp_shown(p, shown, sizeof(shown)));
				return false;
			}
			ru->hdr_name[ru->nhdr] = xmemdup(p->t.text, p->t.len);
			rp_next(p);
			if (p->t.type != LEX_STRING || !rp_text_ok(p, p->t.text, p->t.len, &why)) {
				if (p->t.type != LEX_STRING)
					why = "printable ASCII, 1 to 400 bytes";
				rp_error(p, "expected the field's value in double quotes (%s), found %s",
				    why, rp_shown(p, shown, sizeof(shown)));
				free(ru->hdr_name[ru->nhdr]);
				return false;
			}
			ru->hdr_value[ru->nhdr++] = xmemdup(p->t.text, p->t.len);
			rp_next(p);
		} else if (lex_is(&p->t, "tag")) {
			/* a tag is a header field of its own: X-Moat-Tag: WORD */
			if (ru->nhdr >= RULES_HDR_MAX) {
				rp_error(p, "at most %d add-header and tag actions in one rule",
				    RULES_HDR_MAX);
				return false;
			}
			rp_next(p);
			if (p->t.type != LEX_WORD || p->t.len > 64 ||
			    !rp_text_ok(p, p->t.text, p->t.len, &why) ||
			    memchr(p->t.text, '$', p->t.len) != NULL) {
				rp_error(p, "expected a tag word (printable ASCII, at most 64 bytes), "
				    "found %s", rp_shown(p, shown, sizeof(shown)));
				return false;
			}
			ru->hdr_name[ru->nhdr] = xstrdup("X-Moat-Tag");
			ru->hdr_value[ru->nhdr++] = xmemdup(p->t.text, p->t.len);
			rp_next(p);
		} else if (lex_is(&p->t, "sign")) {
			/* DKIM-sign the message with the keys of its From domain */
			if (p->st != RS_DATA) {
				rp_error(p, "sign works on the message: use it in \"on data\" rules");
				return false;
			}
			ru->sign = true;
			rp_next(p);
		} else if (lex_is(&p->t, "accept")) {
			ru->verdict = RV_ACCEPT;
			rp_next(p);
			return true;
		} else if (lex_is(&p->t, "reject")) {
			ru->verdict = RV_REJECT;
			return rp_final(p, ru, 5);
		} else if (lex_is(&p->t, "tempfail")) {
			ru->verdict = RV_TEMPFAIL;
			return rp_final(p, ru, 4);
		} else if (lex_is(&p->t, "greylist")) {
			if (p->st != RS_RCPT) {
				rp_error(p, "greylist works per recipient: use it in \"on rcpt\" rules");
				return false;
			}
			/* 451 4.7.1 when the triplet is greylisted, else go on */
			ru->greylist = true;
			ru->code = 451;
			snprintf(ru->enh, sizeof(ru->enh), "4.7.1");
			ru->text = xstrdup("$greylist");
			rp_next(p);
			return true;
		} else if (nact > 0 && (p->t.type == LEX_NL || p->t.type == LEX_EOF)) {
			return true;
		} else {
			rp_error(p, "expected an action (accept, reject, tempfail, greylist, score, "
			    "add-header, tag or sign), found %s", rp_shown(p, shown, sizeof(shown)));
			return false;
		}
		nact++;
	}
}

/* node_checks - the checks whose facts the condition reads (1 << id) */
static unsigned
node_checks(const struct node *n)
{
	unsigned m = 0;

	if (n == NULL)
		return 0;
	if (n->fact != NULL && n->fact->check != NO_CHECK)
		m |= 1u << n->fact->check;
	if (n->op == N_RL)
		m |= 1u << 5;	/* CHECK_RATELIMIT */
	return m | node_checks(n->a) | node_checks(n->b);
}

/* node_equal - the same condition, as parsed */
static bool
node_equal(const struct node *a, const struct node *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	if (a->op != b->op || a->fact != b->fact)
		return false;
	switch (a->op) {
	case N_IN: if (a->list != b->list) return false; break;
	case N_OWNED: if (a->map != b->map) return false; break;
	case N_IS:
		if (a->wlen != b->wlen || strncasecmp(a->word, b->word, a->wlen) != 0)
			return false;
		break;
	case N_CMP: if (a->cmp != b->cmp || a->num != b->num) return false; break;
	default: break;
	}
	return node_equal(a->a, b->a) && node_equal(a->b, b->b);
}

/* node_has_conjunct - is c one of the factors of the "and" chain n? */
static bool
node_has_conjunct(const struct node *n, const struct node *c)
{
	if (node_equal(n, c))
		return true;
	return n->op == N_AND && (node_has_conjunct(n->a, c) || node_has_conjunct(n->b, c));
}

/* node_implies - does "later" hold whenever it holds, imply "earlier"?
 * Only what is sure: the same condition, or earlier's factors joined by
 * "and" all among later's factors joined by "and". */
static bool
node_implies(const struct node *later, const struct node *earlier)
{
	if (earlier->op == N_AND)
		return node_implies(later, earlier->a) && node_implies(later, earlier->b);
	return node_has_conjunct(later, earlier);
}

/* rules_blocker - see rules.h */
int
rules_blocker(const struct rules *r, enum rules_stage st, bool *catch_all, const char **file)
{
	for (const struct rule *o = r != NULL ? r->head[st] : NULL; o; o = o->next)
		if (o->mode == 0 && ((o->verdict != RV_CONTINUE && o->cond->op == N_TRUE) ||
		    o->greylist)) {
			*catch_all = o->cond->op == N_TRUE;
			*file = o->file;
			return o->line;
		}
	return 0;
}

/* rules_set_dry - see rules.h */
bool
rules_set_dry(struct rules *r, bool dry)
{
	bool was = r->dry_now;

	r->dry_now = dry;
	return was;
}

/* rules_set_dry_all - see rules.h */
void
rules_set_dry_all(struct rules *r)
{
	for (int st = 0; st < RS__COUNT; st++)
		for (struct rule *ru = r->head[st]; ru; ru = ru->next)
			ru->dry = true;
}

/* rules_file_rules - see rules.h */
int
rules_file_rules(const struct rules *r, enum rules_stage st, const char *file, bool accept_only)
{
	for (const struct rule *o = r != NULL ? r->head[st] : NULL; o; o = o->next)
		if (o->file == file && o->mode != 2 && (!accept_only || o->verdict == RV_ACCEPT))
			return o->line;
	return 0;
}

/* node_rl - the rate limits a condition reads */
static uint32_t
node_rl(const struct node *n)
{
	if (n == NULL)
		return 0;
	return (n->op == N_RL ? 1u << n->num : 0) | node_rl(n->a) | node_rl(n->b);
}

/* rp_source - the statement as written, for traces: continuation lines
 * joined, blanks squeezed, comments dropped, at most 300 bytes */
static char *
rp_source(const char *b, const char *e)
{
	char out[301];
	size_t n = 0;
	bool blank = false, quoted = false;

	for (const char *c = b; c < e && n < sizeof(out) - 1; c++) {
		if (*c == '"')
			quoted = !quoted;
		if (!quoted && *c == '#')
			while (c + 1 < e && c[1] != '\n')
				c++;
		else if (!quoted && *c == '\\' && c + 1 < e && (c[1] == '\n' || c[1] == '\r'))
			blank = true;
		else if ((unsigned char)*c <= ' ' || *c == 0x7f)
			blank = true;
		else {
			if (blank && n > 0)
				out[n++] = ' ';
			blank = false;
			if (n < sizeof(out) - 1)
				out[n++] = *c;
		}
	}
	out[n] = 0;
	return xstrdup(out);
}

/* rules_parse_on - "on STAGE [monitor|off] CONDITION ACTION" */
int
rules_parse_on(struct rules *r, struct lexer *lx, const struct lex_token *kw,
	lex_err_fn err, void *arg)
{
	struct rp p = { r, lx, *kw, NULL, err, arg, 0, RS_CONNECT };
	char shown[LOG_ESC_SIZE + 8];
	struct rule *ru = xcalloc(1, sizeof(*ru));
	int st;

	ru->line = kw->line;
	ru->file = lx->file;
	ru->dry = r->dry_now;
	rp_next(&p);
	for (st = 0; st < RS__COUNT; st++)
		if (lex_is(&p.t, stage_names[st]))
			break;
	if (st == RS__COUNT) {
		rp_error(&p, "expected a stage (connect, helo, mail, rcpt or data), found %s",
		    rp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	ru->st = p.st = (enum rules_stage)st;
	rp_next(&p);
	if (lex_is(&p.t, "monitor") || lex_is(&p.t, "off") || lex_is(&p.t, "enforce")) {
		ru->mode = lex_is(&p.t, "monitor") ? 1 : lex_is(&p.t, "off") ? 2 : 0;
		rp_next(&p);
	}
	ru->cond = rp_or(&p);
	if (ru->cond == NULL)
		goto fail;
	if (!rp_action(&p, ru))
		goto fail;
	if (p.t.type != LEX_NL && p.t.type != LEX_EOF) {
		rp_error(&p, "unexpected %s after the action", rp_shown(&p, shown, sizeof(shown)));
		goto fail;
	}
	/* dry rules count as enforced here: the warnings are about the
	 * policy as it will be enforced */
	for (const struct rule *o = r->head[st]; o && ru->mode != 2; o = o->next)
		if (o->mode == 0 && o->verdict != RV_CONTINUE && o->cond->op == N_TRUE) {
			p.t.line = kw->line;
			p.t.col = kw->col;
			rp_error(&p, "warning: this rule can never run: the rule at %s%sline %d "
			    "decides every %s first", o->file != ru->file ? o->file : "",
			    o->file != ru->file ? " " : "", o->line, stage_names[st]);
			p.errors--;
			break;
		} else if (o->mode == 0 && o->verdict != RV_CONTINUE && node_implies(ru->cond, o->cond)) {
			p.t.line = kw->line;
			p.t.col = kw->col;
			rp_error(&p, "warning: this rule can never run: whenever its condition holds, "
			    "the rule at %s%sline %d (%s) matches first and decides the %s",
			    o->file != ru->file ? o->file : "", o->file != ru->file ? " " : "",
			    o->line, node_equal(ru->cond, o->cond) ? "the same condition" :
			    "a part of this condition", stage_names[st]);
			p.errors--;
			break;
		}
	ru->src = rp_source(kw->text, lx->buf + lx->pos);
	if (ru->mode != 2) {
		r->need[st] |= node_checks(ru->cond);
		r->rl_mask[st] |= node_rl(ru->cond);
	}
	if (ru->mode == 0 && ru->greylist)
		r->need[st] |= 1u << 2;	/* CHECK_GREYLIST */
	if (r->tail[st])
		r->tail[st]->next = ru;
	else
		r->head[st] = ru;
	r->tail[st] = ru;
	r->n[st]++;
	free(p.tcopy);
	return 0;
fail:
	rule_free(ru);
	rp_skip_line(&p);
	free(p.tcopy);
	return -1;
}

/* ---------------------------------------------------------------------
 * Evaluation
 */

/* eval_word - a word fact's bytes */
static const char *
eval_word(const struct node *n, const struct rules_facts *f, size_t *len)
{
	switch (n->fact->id) {
	case F_HELO: *len = f->helolen; return f->helo;
	case F_SENDER_DOMAIN: *len = f->sender_dlen; return f->sender_domain;
	case F_RCPT_DOMAIN: *len = f->rcpt_dlen; return f->rcpt_domain;
	case F_CLIENT_NAME: *len = f->client_nlen; return f->client_name;
	case F_LOGIN: *len = f->loginlen; return f->login;
	case F_DNSBL_HIT: *len = f->dnsbl_hits ? strlen(f->dnsbl_hits) : 0; return f->dnsbl_hits;
	case F_SPF: *len = f->spf ? strlen(f->spf) : 0; return f->spf;
	case F_SPF_HELO: *len = f->spf_helo ? strlen(f->spf_helo) : 0; return f->spf_helo;
	case F_DKIM: *len = f->dkim ? strlen(f->dkim) : 0; return f->dkim;
	case F_DMARC: *len = f->dmarc ? strlen(f->dmarc) : 0; return f->dmarc;
	case F_DMARC_POLICY: *len = f->dmarc_policy ? strlen(f->dmarc_policy) : 0; return f->dmarc_policy;
	case F_FROM_DOMAIN:
		*len = f->dmarc_from_domain ? strlen(f->dmarc_from_domain) : 0;
		return f->dmarc_from_domain;
	case F_TLS_VERSION: *len = f->tls_version ? strlen(f->tls_version) : 0; return f->tls_version;
	case F_TLS_CIPHER: *len = f->tls_cipher ? strlen(f->tls_cipher) : 0; return f->tls_cipher;
	case F_TLS_CLIENT_CERT:
		*len = f->tls_client_cert ? strlen(f->tls_client_cert) : 0;
		return f->tls_client_cert;
	default: *len = 0; return NULL;
	}
}

/* eval_num - a number fact */
static int64_t
eval_num(const struct node *n, const struct rules_facts *f)
{
	switch (n->fact->id) {
	case F_RCPT_COUNT: return f->rcpt_count;
	case F_DECLARED_SIZE: return f->declared_size > INT64_MAX ? INT64_MAX : (int64_t)f->declared_size;
	case F_SIZE: return f->size > INT64_MAX ? INT64_MAX : (int64_t)f->size;
	case F_SCORE: return f->score;
	case F_DNSBL_SCORE: return f->dnsbl_score;
	case F_BARE_LF_CMDS: return f->bare_lf_commands;
	case F_UNKNOWN_CMDS: return f->unknown_commands;
	default: return 0;
	}
}

/* eval_in - list membership */
static bool
eval_in(const struct node *n, const struct rules_facts *f)
{
	const char *w;
	size_t len;

	switch (n->fact->id) {
	case F_CLIENT_IP:
		return f->client != NULL && list_match_addr(n->list, f->client);
	case F_FROM:
		/* every mailbox of the From field */
		if (f->from_count == 0)
			return false;
		for (unsigned i = 0; i < f->from_count; i++) {
			const char *lp = f->from_all[2 * i], *dp = f->from_all[2 * i + 1];
			if (list_kind(n->list) == LIST_DOMAIN ? !list_match_domain(n->list, dp, strlen(dp)) :
			    !list_match_address(n->list, lp, strlen(lp), dp, strlen(dp)))
				return false;
		}
		return true;
	case F_SENDER:
	case F_RCPT: {
		bool s = n->fact->id == F_SENDER;
		const char *lp = s ? f->sender_local : f->rcpt_local;
		const char *dp = s ? f->sender_domain : f->rcpt_domain;
		size_t ll = s ? f->sender_llen : f->rcpt_llen, dl = s ? f->sender_dlen : f->rcpt_dlen;
		if (list_kind(n->list) == LIST_DOMAIN)
			return dl > 0 && list_match_domain(n->list, dp, dl);
		return list_match_address(n->list, lp ? lp : "", ll, dp ? dp : "", dl);
	}
	case F_SENDER_DOMAIN:
	case F_RCPT_DOMAIN:
	case F_CLIENT_NAME:
	case F_FROM_DOMAIN:
		w = eval_word(n, f, &len);
		return len > 0 && list_match_domain(n->list, w, len);
	case F_SPF:
	case F_SPF_HELO:
	case F_DKIM:
	case F_DMARC:
	case F_DMARC_POLICY:
		w = eval_word(n, f, &len);
		return len > 0 && list_match_word(n->list, w, len);
	case F_HELO:
		return f->helolen > 0 && list_match_helo(n->list, f->helo, f->helolen);
	case F_TLS_VERSION:
	case F_TLS_CIPHER:
	case F_TLS_CLIENT_CERT:
		w = eval_word(n, f, &len);
		return len > 0 && list_match_word(n->list, w, len);
	case F_LOGIN:
		return f->loginlen > 0 && list_match_word(n->list, f->login, f->loginlen);
	case F_DNSBL_HIT:
		/* any of the zones that listed the client */
		for (const char *h = f->dnsbl_hits; h != NULL && *h; ) {
			const char *e = strchr(h, ',');
			size_t hl = e ? (size_t)(e - h) : strlen(h);

			if (list_match_word(n->list, h, hl))
				return true;
			h = e ? e + 1 : h + hl;
		}
		return false;
	default:
		return false;
	}
}

/* eval_needs - does this fact come from a check whose result is not in?
 * Then evaluation stops and the caller runs the check first. */
static bool
eval_needs(const struct node *n, const struct rules_facts *f, int *need)
{
	if (n->fact->check == 0 && !f->fcrdns_known) {
		*need = 0;	/* CHECK_FCRDNS */
		return true;
	}
	if (n->fact->check == 1 && !f->dnsbl_known) {
		*need = 1;	/* CHECK_DNSBL */
		return true;
	}
	if (n->fact->check == 3 && !f->spf_known) {
		*need = 3;	/* CHECK_SPF */
		return true;
	}
	if (n->fact->check == 4 && !f->sauth_known) {
		*need = 4;	/* CHECK_SAUTH */
		return true;
	}
	return false;
}

/* eval - one condition; *need >= 0 when a check must run first */
static bool
eval(const struct node *n, const struct rules_facts *f, int *need)
{
	const char *w;
	size_t len;
	int64_t v;

	switch (n->op) {
	case N_TRUE: return true;
	case N_RL:
		if (!f->rl_known) {
			*need = 5;	/* CHECK_RATELIMIT */
			return false;
		}
		return (f->rl_exceeded >> n->num) & 1u;
	case N_NOT: return !eval(n->a, f, need) && *need < 0;
	case N_AND: return eval(n->a, f, need) && *need < 0 && eval(n->b, f, need);
	case N_OR: return (eval(n->a, f, need) || (*need < 0 && eval(n->b, f, need))) && *need < 0;
	case N_IN:
		if (eval_needs(n, f, need))
			return false;
		return eval_in(n, f);
	case N_OWNED:
		if (f->login == NULL || f->loginlen == 0)
			return false;
		if (n->fact->id == F_FROM) {
			if (f->from_count == 0)
				return false;
			for (unsigned i = 0; i < f->from_count; i++) {
				const char *lp = f->from_all[2 * i], *dp = f->from_all[2 * i + 1];
				if (!owner_map_owns(n->map->omap, f->login, f->loginlen, lp, strlen(lp),
				    dp, strlen(dp)))
					return false;
			}
			return true;
		}
		if (!f->have_sender)
			return false;
		return owner_map_owns(n->map->omap, f->login, f->loginlen,
		    f->sender_local ? f->sender_local : "", f->sender_llen,
		    f->sender_domain ? f->sender_domain : "", f->sender_dlen);
	case N_IS:
		if (eval_needs(n, f, need))
			return false;
		if (n->fact->id == F_DNSBL_HIT)
			return f->dnsbl_hits != NULL && dnsbl_hits_has(f->dnsbl_hits, n->word, n->wlen);
		w = eval_word(n, f, &len);
		if (len > 0 && w[len - 1] == '.' && n->wlen > 0 && n->word[n->wlen - 1] != '.')
			len--;
		if (n->fact->id == F_HELO && w != NULL && idn_needs(w, len)) {
			/* the word is in A-labels (rp_fact): so is the name */
			char a[256];
			int r = idn_alabel(w, len, a, sizeof(a));

			if (r > 0 && (size_t)r == n->wlen && strncasecmp(a, n->word, n->wlen) == 0)
				return true;
		}
		return w != NULL && len == n->wlen && strncasecmp(w, n->word, len) == 0;
	case N_CMP:
		if (eval_needs(n, f, need))
			return false;
		v = eval_num(n, f);
		switch (n->cmp) {
		case C_EQ: return v == n->num;
		case C_NE: return v != n->num;
		case C_LT: return v < n->num;
		case C_LE: return v <= n->num;
		case C_GT: return v > n->num;
		case C_GE: return v >= n->num;
		}
		return false;
	case N_BOOL:
		if (eval_needs(n, f, need))
			return false;
		switch (n->fact->id) {
		case F_AUTH: return f->auth;
		case F_TLS: return f->tls;
		case F_NULL_SENDER: return f->have_sender && f->sender_llen == 0 && f->sender_dlen == 0;
		case F_PIPELINING: return f->pipelining_violation;
		case F_AFTER_DOT: return f->pipelined_after_dot;
		case F_BARE_LF: return f->bare_lf;
		case F_HELO_VALID: return f->helo_valid;
		case F_FCRDNS: return f->fcrdns;
		case F_DNSBL_ERROR: return f->dnsbl_error;
		case F_EARLY_TALKER: return f->early_talker;
		case F_SUBMISSION: return f->submission;
		default: return false;
		}
	}
	return false;
}

/* ---------------------------------------------------------------------
 * Why a rule matched or not (explain's trace)
 */

struct why {
	char *buf;
	size_t size, len;
};

static void why_put(struct why *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* why_put - append to the text; what does not fit ends in "..." */
static void
why_put(struct why *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (w->len + 1 >= w->size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(w->buf + w->len, w->size - w->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= w->size - w->len) {
		w->len = w->size - 1;
		if (w->size > 4)
			memcpy(w->buf + w->size - 4, "...", 4);
		return;
	}
	w->len += (size_t)n;
}

/* why_bytes - a fact's bytes, escaped (they may come from the peer),
 * at most 100; "-" when empty */
static void
why_bytes(struct why *w, const char *s, size_t len)
{
	if (s == NULL || len == 0) {
		why_put(w, "-");
		return;
	}
	for (size_t i = 0; i < len && i < 100; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c > 0x20 && c < 0x7f && c != '\\')
			why_put(w, "%c", c);
		else
			why_put(w, "\\x%02x", c);
	}
	if (len > 100)
		why_put(w, "...");
}

/* why_value - "fact=value" as the rules see it */
static void
why_value(struct why *w, const struct node *n, const struct rules_facts *f)
{
	const char *s;
	size_t len;

	why_put(w, "%s=", n->fact->name);
	switch (n->fact->type) {
	case FT_IP: {
		char ip[INET6_ADDRSTRLEN] = "-";

		if (f->client != NULL && f->client->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)f->client)->sin_addr,
			    ip, sizeof(ip));
		else if (f->client != NULL && f->client->sa_family == AF_INET6)
			inet_ntop(AF_INET6,
			    &((const struct sockaddr_in6 *)(const void *)f->client)->sin6_addr, ip,
			    sizeof(ip));
		why_put(w, "%s", ip);
		return;
	}
	case FT_NUM:
		why_put(w, "%lld", (long long)eval_num(n, f));
		return;
	case FT_ADDRESS:
		if (n->fact->id == F_FROM) {
			if (f->from_count == 0) {
				why_put(w, "-");
				return;
			}
			s = f->from_all[0];
			why_bytes(w, s, strlen(s));
			why_put(w, "@");
			s = f->from_all[1];
			why_bytes(w, s, strlen(s));
			if (f->from_count > 1)
				why_put(w, "(+%u)", f->from_count - 1);
			return;
		}
		{
			bool snd = n->fact->id == F_SENDER;
			const char *lp = snd ? f->sender_local : f->rcpt_local;
			const char *dp = snd ? f->sender_domain : f->rcpt_domain;
			size_t ll = snd ? f->sender_llen : f->rcpt_llen;
			size_t dl = snd ? f->sender_dlen : f->rcpt_dlen;

			why_put(w, "<");
			if (ll > 0 || dl > 0) {
				why_bytes(w, lp, ll);
				why_put(w, "@");
				why_bytes(w, dp, dl);
			}
			why_put(w, ">");
		}
		return;
	case FT_WORD:
	case FT_DOMAIN:
		s = eval_word(n, f, &len);
		why_bytes(w, s, len);
		return;
	case FT_BOOL:
		return;		/* the term's own yes/no says it */
	}
}

static const char *const cmp_names[] = { "=", "!=", "<", "<=", ">", ">=" };

/* why_terms - each term of the condition: the fact's value, the test,
 * and whether it holds ("not known" for a check not in) */
static void
why_terms(struct why *w, const struct rules *r, const struct node *n, const struct rules_facts *f)
{
	int need = -1;
	bool v;

	if (n == NULL)
		return;
	switch (n->op) {
	case N_NOT:
		why_terms(w, r, n->a, f);
		return;
	case N_AND:
	case N_OR:
		why_terms(w, r, n->a, f);
		why_terms(w, r, n->b, f);
		return;
	case N_TRUE:
		return;
	default:
		break;
	}
	v = eval(n, f, &need);
	if (w->len > 0)
		why_put(w, "; ");
	switch (n->op) {
	case N_RL:
		why_put(w, "ratelimit %s exceeded", n->num >= 0 && n->num < r->nrl ? r->rl[n->num].name : "?");
		break;
	case N_BOOL:
		why_put(w, "%s", n->fact->name);
		break;
	case N_IN:
		why_value(w, n, f);
		why_put(w, " in %s", n->lname ? n->lname : "?");
		break;
	case N_IS:
		why_value(w, n, f);
		why_put(w, " is ");
		why_bytes(w, n->word, n->wlen);
		break;
	case N_CMP:
		why_value(w, n, f);
		why_put(w, " %s %lld", cmp_names[n->cmp], (long long)n->num);
		break;
	case N_OWNED:
		why_value(w, n, f);
		why_put(w, " owned-by %s (login ", n->map->name);
		why_bytes(w, f->login, f->loginlen);
		why_put(w, ")");
		break;
	default:
		break;
	}
	why_put(w, ": %s", need >= 0 ? "not known" : v ? "yes" : "no");
}

static const char *const verdict_names[] = { "continue", "accept", "reject", "tempfail" };

/* rule_hit - a matched rule, for the metrics (label: its file:line) */
static void
rule_hit(const struct rule *ru, const char *verdict)
{
	char id[200];

	snprintf(id, sizeof(id), "%s:%d", ru->file, ru->line);
	metrics_inc(MF_RULE_HITS, id, verdict);
}

/* rule_dry_refuses - a dry rule that matched and would refuse (reject,
 * tempfail, a greylisted triplet): it is logged and the next rules run */
static bool
rule_dry_refuses(const struct rule *ru, const struct rules_facts *f)
{
	return ru->dry && ru->mode == 0 && (ru->verdict == RV_REJECT || ru->verdict == RV_TEMPFAIL ||
	    (ru->greylist && f->greylist_known && f->greylist_tempfail));
}

/* rules_stage_first_need - see rules.h */
int
rules_stage_first_need(const struct rules *r, enum rules_stage st, const struct rules_facts *f)
{
	struct rules_facts lf;

	if (r == NULL || r->need[st] == 0)
		return -1;
	lf = *f;
	for (const struct rule *ru = r->head[st]; ru; ru = ru->next) {
		int need = -1;
		bool m;

		if (ru->mode == 2)
			continue;
		m = eval(ru->cond, &lf, &need);
		if (need >= 0)
			return need;
		if (!m || ru->mode == 1)
			continue;
		if (ru->greylist && !lf.greylist_known)
			return 2;	/* CHECK_GREYLIST */
		if (rule_dry_refuses(ru, &lf))
			continue;
		if (ru->verdict != RV_CONTINUE || (ru->greylist && lf.greylist_tempfail))
			return -1;	/* this rule decides (greylisted: 4xx) */
		lf.score += ru->score;
	}
	return -1;
}

/* rules_stage_wants - see rules.h */
bool
rules_stage_wants(const struct rules *r, enum rules_stage st, const struct rules_facts *f,
	int check)
{
	/* this check, or another one reached first: either way, wait */
	return rules_stage_needs(r, st, check) && rules_stage_first_need(r, st, f) >= 0;
}

/* rules_eval - run a stage's rules; the first enforced match decides */
void
rules_eval(const struct rules *r, enum rules_stage st, const struct rules_facts *f,
	struct rules_result *res, uint64_t sid)
{
	rules_eval_trace(r, st, f, res, sid, NULL, NULL);
}

/* rules_eval_trace - the same, telling trace() about every rule looked at */
void
rules_eval_trace(const struct rules *r, enum rules_stage st, const struct rules_facts *f,
	struct rules_result *res, uint64_t sid, rules_trace_fn trace, void *arg)
{
	struct rules_facts lf = *f;	/* score moves as rules add to it */

	memset(res, 0, sizeof(*res));
	if (r == NULL)
		return;
	{
		/* run the checks before any rule of the stage, so that no rule
		 * acts (or logs) twice */
		static const int order[] = { 0, 1, 3, 4, 5 };
		const bool known[] = { f->fcrdns_known, f->dnsbl_known, f->spf_known, f->sauth_known,
		    f->rl_known };

		for (int i = 0; i < 5; i++)
			if (!known[i] && rules_stage_wants(r, st, f, order[i])) {
				res->verdict = RV_WAIT;
				res->need = order[i];
				return;
			}
	}
	for (const struct rule *ru = r->head[st]; ru; ru = ru->next) {
		int need = -1;
		bool m = ru->mode != 2 && eval(ru->cond, &lf, &need);
		if (need >= 0) {
			/* nothing of this pass counts: the stage runs again with
			 * the check's result */
			memset(res, 0, sizeof(*res));
			res->verdict = RV_WAIT;
			res->need = need;
			return;
		}
		if (trace != NULL) {
			/* a dry rule that would refuse shows as monitor */
			char why[1024] = "";
			struct why w = { why, sizeof(why), 0 };
			struct rules_trace t = { ru->file, ru->line, ru->mode, m, ru->src, why };

			why_terms(&w, r, ru->cond, &lf);
			if (rule_dry_refuses(ru, &lf))
				t.mode = 1;
			trace(arg, &t);
		}
		if (!m)
			continue;
		if (ru->mode == 1) {
			res->monitored++;
			rule_hit(ru, "monitor");
			log_msg(LOG_L_INFO, sid, "policy stage=%s rule=%s:%d mode=monitor would=%s "
			    "code=%d score=%+lld headers=%d", stage_names[st], ru->file, ru->line,
			    verdict_names[ru->verdict], ru->code, (long long)ru->score, ru->nhdr);
			continue;
		}
		if (ru->greylist && !lf.greylist_known) {
			memset(res, 0, sizeof(*res));
			res->verdict = RV_WAIT;
			res->need = 2;	/* CHECK_GREYLIST */
			return;
		}
		if (rule_dry_refuses(ru, &lf)) {
			/* policy-mode monitor: say what would happen, change nothing */
			char reply[RULES_TEXT_MAX + 400], why[LOG_ESC_SIZE];

			rules_expand(ru->text ? ru->text : "", &lf, reply, sizeof(reply));
			log_escape(why, sizeof(why), reply, strlen(reply));
			res->monitored++;
			rule_hit(ru, "dry-run");
			log_msg(LOG_L_INFO, sid, "policy stage=%s rule=%s:%d mode=dry-run would=%s "
			    "reply=\"%d %s %s\"", stage_names[st], ru->file, ru->line,
			    ru->greylist || ru->verdict == RV_TEMPFAIL ? "tempfail" : "reject",
			    ru->code, ru->enh, why);
			continue;
		}
		res->score += ru->score;
		lf.score += ru->score;
		res->sign = res->sign || ru->sign;
		for (int i = 0; i < ru->nhdr && res->nhdr < RULES_HDR_MAX; i++) {
			res->hdr_name[res->nhdr] = ru->hdr_name[i];
			res->hdr_value[res->nhdr++] = ru->hdr_value[i];
		}
		if (ru->verdict == RV_CONTINUE && !(ru->greylist && lf.greylist_tempfail)) {
			rule_hit(ru, "continue");
			log_msg(LOG_L_INFO, sid, "policy stage=%s rule=%s:%d verdict=continue "
			    "score=%+lld headers=%d%s", stage_names[st], ru->file, ru->line,
			    (long long)ru->score, ru->nhdr, ru->greylist ? " greylist=pass" : "");
			continue;
		}
		res->verdict = ru->greylist ? RV_TEMPFAIL : ru->verdict;
		res->code = ru->code;
		res->enh = ru->enh;
		res->text = ru->text;
		res->file = ru->file;
		res->line = ru->line;
		rule_hit(ru, verdict_names[res->verdict]);
		/* the verdict a greylist rule gives is its tempfail; the reply
		 * as sent (templates expanded) is on the engine's verdict line */
		log_msg(ru->verdict == RV_ACCEPT ? LOG_L_DEBUG : LOG_L_INFO, sid,
		    "policy stage=%s rule=%s:%d verdict=%s code=%d score=%+lld",
		    stage_names[st], ru->file, ru->line, verdict_names[res->verdict], ru->code,
		    (long long)res->score);
		return;
	}
}

/* rules_header_add - append "Name: value" CRLF to a header buffer, once
 * (a rule at each RCPT adds the same field once), bounded */
void
rules_header_add(char **buf, size_t *len, const char *name, const char *value)
{
	char line[1000];
	int n = snprintf(line, sizeof(line), "%s: %s", name, value);

	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;	/* RFC 5322: 998 + CRLF */
	line[n++] = '\r';
	line[n++] = '\n';
	for (size_t i = 0; i + (size_t)n <= *len; i = (size_t)((char *)memchr(*buf + i, '\n', *len - i) - *buf) + 1)
		if (memcmp(*buf + i, line, (size_t)n) == 0)
			return;
	if (*len > 64 * 1024)
		return;			/* bounded, whatever the rules do */
	*buf = xrealloc(*buf, *len + (size_t)n);
	memcpy(*buf + *len, line, (size_t)n);
	*len += (size_t)n;
}

/* rules_facts_unawaited - a check's facts the front-end did not wait for
 * count as failed lookups (never a pass, never a stall); greylist_on_error
 * (greylist.h) decides for the greylist */
void
rules_facts_unawaited(struct rules_facts *f, bool dnsbl_on, bool dnsbl_error, int greylist_on_error)
{
	f->fcrdns_known = true;
	f->dnsbl_known = true;
	if (!f->rl_known) {
		f->rl_known = true;	/* fail open */
		f->rl_exceeded = 0;
	}
	if (dnsbl_on && !dnsbl_error)
		f->dnsbl_error = true;
	if (!f->greylist_known) {
		f->greylist_known = true;
		f->greylist_tempfail = greylist_on_error == 1;
		f->greylist_text = "greylisting is unavailable, please try again later";
	}
	if (!f->spf_known) {
		/* SPF still out past its deadlines: a temporary error */
		f->spf_known = true;
		f->spf = "temperror";
		if (f->spf_helo == NULL)
			f->spf_helo = "temperror";
	}
	if (!f->sauth_known) {
		f->sauth_known = true;
		f->dkim = f->dmarc = "temperror";
	}
}
