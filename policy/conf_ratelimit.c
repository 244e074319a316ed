/*
 * conf_ratelimit - the policy file's "ratelimit" declarations (see
 * conf_ratelimit.h); the limits belong to filters/ratelimit
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_ratelimit.h"

/* rlp_word - the current token, if a word, NUL-terminated into buf */
static const char *
rlp_word(const struct lex_parser *p, char *buf, size_t size)
{
	if (p->t.type != LEX_WORD || p->t.len >= size)
		return NULL;
	memcpy(buf, p->t.text, p->t.len);
	buf[p->t.len] = 0;
	return buf;
}

/* rlp_num - a decimal in [min, max], or -1 */
static long
rlp_num(const char *s, size_t len, long min, long max)
{
	long v = 0;

	if (len == 0 || len > 9)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v < min || v > max ? -1 : v;
}

/* rlp_part - one key part into d; false if unknown */
static bool
rlp_part(struct rl_def *d, const char *s, size_t len)
{
	static const struct { const char *name; unsigned bit; } parts[] = {
		{ "sender", RL_SENDER }, { "sender-domain", RL_SENDER_DOMAIN },
		{ "login", RL_LOGIN }, { "rcpt", RL_RCPT }, { NULL, 0 }
	};

	if (len == 9 && memcmp(s, "client-ip", 9) == 0) {
		d->parts |= RL_CLIENT;
		d->v4_prefix = 32;
		d->v6_prefix = 128;
		return true;
	}
	if (len >= 10 && memcmp(s, "client-net", 10) == 0) {
		const char *p = s + 10, *end = s + len, *slash;
		long v4 = 24, v6 = 64;

		if (p < end) {
			if (*p++ != '/')
				return false;
			slash = memchr(p, '/', (size_t)(end - p));
			v4 = rlp_num(p, (size_t)((slash ? slash : end) - p), 0, 32);
			if (slash != NULL)
				v6 = rlp_num(slash + 1, (size_t)(end - slash - 1), 0, 128);
			if (v4 < 0 || v6 < 0)
				return false;
		}
		d->parts |= RL_CLIENT;
		d->v4_prefix = (int)v4;
		d->v6_prefix = (int)v6;
		return true;
	}
	for (int i = 0; parts[i].name; i++)
		if (strlen(parts[i].name) == len && memcmp(parts[i].name, s, len) == 0) {
			d->parts |= parts[i].bit;
			return true;
		}
	return false;
}

/* rlp_rate - "N/DURATION" into d */
static bool
rlp_rate(struct rl_def *d, const char *s)
{
	const char *slash = strchr(s, '/');
	size_t dl;
	long n, dn;
	uint64_t unit;

	if (slash == NULL)
		return false;
	n = rlp_num(s, (size_t)(slash - s), 1, 1000000);
	dl = strlen(slash + 1);
	if (n < 0 || dl < 2)
		return false;
	switch (slash[1 + dl - 1]) {
	case 's': unit = 1000; break;
	case 'm': unit = 60 * 1000; break;
	case 'h': unit = 3600 * 1000; break;
	case 'd': unit = 86400 * 1000; break;
	default: return false;
	}
	dn = rlp_num(slash + 1, dl - 1, 1, 1000000);
	if (dn < 0 || (uint64_t)dn * unit > 7ull * 86400 * 1000 || (uint64_t)dn * unit < 1000)
		return false;
	d->rate = (unsigned)n;
	d->dur_ms = (uint64_t)dn * unit;
	d->emit_ms = (unsigned)(d->dur_ms / (uint64_t)n);
	if (d->emit_ms == 0)
		d->emit_ms = 1;
	return true;
}

/* conf_ratelimit_parse - see conf_ratelimit.h */
int
conf_ratelimit_parse(struct rl_set *set, struct rules *r, struct lexer *lx,
	const struct lex_token *kw, lex_err_fn err, void *arg)
{
	struct lex_parser p = { .lx = lx, .err = err, .arg = arg };
	struct rl_def d;
	struct lex_token name;
	char buf[256];
	const char *w;
	enum rules_stage from = RS_CONNECT;
	bool have_key = false, have_rate = false;

	memset(&d, 0, sizeof(d));
	lex_next(lx, &p.t);
	name = p.t;
	w = rlp_word(&p, buf, sizeof(buf));
	if (w == NULL || strlen(w) >= RL_NAME_MAX || strchr(w, '|') != NULL) {
		lex_error(&p, &p.t, "ratelimit: expected a name (a word of at most %d bytes)",
		    RL_NAME_MAX - 1);
		goto skip;
	}
	snprintf(d.name, sizeof(d.name), "%s", w);
	lex_next(lx, &p.t);
	while (p.t.type == LEX_WORD) {
		struct lex_token at = p.t;

		w = rlp_word(&p, buf, sizeof(buf));
		lex_next(lx, &p.t);
		if (w != NULL && strcmp(w, "key") == 0 && p.t.type == LEX_WORD) {
			const char *s = p.t.text, *end = p.t.text + p.t.len;

			while (s < end) {
				const char *plus = memchr(s, '+', (size_t)(end - s));
				size_t l = (size_t)((plus ? plus : end) - s);

				if (!rlp_part(&d, s, l))
					lex_error(&p, &p.t, "ratelimit %s: unknown key part \"%.*s\" (expected "
					    "client-net[/V4[/V6]], client-ip, sender, sender-domain, login, rcpt)",
					    d.name, (int)(l < 60 ? l : 60), s);
				s += l + (plus ? 1 : 0);
			}
			have_key = true;
		} else if (w != NULL && strcmp(w, "rate") == 0 && p.t.type == LEX_WORD) {
			w = rlp_word(&p, buf, sizeof(buf));
			if (w == NULL || !rlp_rate(&d, w))
				lex_error(&p, &p.t, "ratelimit %s: expected a rate N/DURATION "
				    "(10/1m, 1000/1d; N 1..1000000, 1s to 7d)", d.name);
			have_rate = true;
		} else if (w != NULL && strcmp(w, "burst") == 0 && p.t.type == LEX_WORD) {
			long b = rlp_num(p.t.text, p.t.len, 1, 1000000);

			if (b < 0)
				lex_error(&p, &p.t, "ratelimit %s: burst is 1..1000000", d.name);
			else
				d.burst = (unsigned)b;
		} else if (w != NULL && strcmp(w, "per") == 0 && p.t.type == LEX_WORD) {
			w = rlp_word(&p, buf, sizeof(buf));
			if (w != NULL && strcmp(w, "recipient") == 0)
				d.per_rcpt = true;
			else if (w == NULL || strcmp(w, "message") != 0)
				lex_error(&p, &p.t, "ratelimit %s: per message or per recipient", d.name);
		} else {
			lex_error(&p, &at, "ratelimit %s: unexpected \"%s\" (expected key, rate, "
			    "burst or per, each with its value)", d.name, w ? w : "?");
			goto skip;
		}
		lex_next(lx, &p.t);
	}
	if (p.t.type != LEX_NL && p.t.type != LEX_EOF) {
		lex_error(&p, &p.t, "ratelimit %s: unexpected token", d.name);
		goto skip;
	}
	if (!have_key || d.parts == 0)
		lex_error(&p, kw, "ratelimit %s: needs a key (key client-net, key login, ...)", d.name);
	if (!have_rate)
		lex_error(&p, kw, "ratelimit %s: needs a rate (rate 10/1m)", d.name);
	if (p.errors)
		return -1;
	if (d.burst == 0)
		d.burst = d.rate;
	d.tau_ms = (unsigned)((uint64_t)d.emit_ms * d.burst > 0xffffffffu ? 0xffffffffu :
	    (uint64_t)d.emit_ms * d.burst);
	if (d.parts & (RL_SENDER | RL_SENDER_DOMAIN))
		from = RS_MAIL;
	if ((d.parts & RL_RCPT) || d.per_rcpt)
		from = RS_RCPT;
	if (set->n >= RL_MAX) {
		lex_error(&p, kw, "ratelimit %s: at most %d limits", d.name, RL_MAX);
		return -1;
	}
	if (rules_add_ratelimit(r, d.name, set->n, from, d.per_rcpt) != 0) {
		lex_error(&p, &name, "ratelimit %s: declared twice", d.name);
		return -1;
	}
	set->d[set->n++] = d;
	return 0;
skip:
	while (p.t.type != LEX_NL && p.t.type != LEX_EOF)
		lex_next(lx, &p.t);
	return -1;
}
