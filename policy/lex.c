/*
 * lex - tokens of the moat policy file (see lex.h)
 *
 * The lexer never allocates for words; a string token with escapes is
 * decoded into lx->sbuf, which grows as needed (bounded by the file size).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lex.h"
#include "log.h"
#include "xalloc.h"

/* lex_init - start reading buf */
void
lex_init(struct lexer *lx, const char *file, const char *buf, size_t len)
{
	memset(lx, 0, sizeof(*lx));
	lx->file = file;
	lx->buf = buf;
	lx->len = len;
	lx->line = 1;
	lx->col = 1;
}

/* lex_free - release the string buffer */
void
lex_free(struct lexer *lx)
{
	free(lx->sbuf);
	lx->sbuf = NULL;
	lx->scap = 0;
}

/* lex_tok_name - for error messages */
const char *
lex_tok_name(enum lex_tok t)
{
	switch (t) {
	case LEX_EOF: return "end of file";
	case LEX_NL: return "end of line";
	case LEX_WORD: return "word";
	case LEX_STRING: return "string";
	case LEX_LBRACE: return "'{'";
	case LEX_RBRACE: return "'}'";
	case LEX_LPAREN: return "'('";
	case LEX_RPAREN: return "')'";
	default: return "error";
	}
}

/* lex_verror - one message at a token, formatted */
void
lex_verror(lex_err_fn err, void *arg, const struct lex_token *t, const char *fmt, va_list ap)
{
	char msg[LEX_MSG_MAX];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	err(arg, t->line, t->col, msg);
}

/* lex_error - one message at a token, counted */
void
lex_error(struct lex_parser *p, const struct lex_token *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lex_verror(p->err, p->arg, t, fmt, ap);
	va_end(ap);
	p->errors++;
}

/* lex_shown - a token for an error message */
const char *
lex_shown(const struct lex_token *t, char *buf, size_t size)
{
	if (t->type == LEX_WORD || t->type == LEX_STRING)
		log_escape(buf, size, t->text, t->len);
	else
		snprintf(buf, size, "%s", lex_tok_name(t->type));
	return buf;
}

/* lex_is - is t this word? */
bool
lex_is(const struct lex_token *t, const char *word)
{
	return t->type == LEX_WORD && t->len == strlen(word) && memcmp(t->text, word, t->len) == 0;
}

/* lex_adv - consume one byte, tracking line and column */
static void
lex_adv(struct lexer *lx)
{
	if (lx->buf[lx->pos] == '\n') {
		lx->line++;
		lx->col = 1;
	} else {
		lx->col++;
	}
	lx->pos++;
}

/* lex_continuation - a backslash right before the line end? */
static bool
lex_continuation(const struct lexer *lx)
{
	const char *b = lx->buf;
	size_t p = lx->pos;

	return p + 1 < lx->len && b[p] == '\\' &&
	    (b[p + 1] == '\n' || (b[p + 1] == '\r' && p + 2 < lx->len && b[p + 2] == '\n'));
}

/* lex_word_byte - may this byte be part of a word? */
static int
lex_word_byte(unsigned char c)
{
	if (c <= ' ' || c == 0x7f)
		return 0;
	return c != '{' && c != '}' && c != '(' && c != ')' && c != '"' && c != '#';
}

/* lex_err - produce an error token at the current position */
static enum lex_tok
lex_err(struct lexer *lx, struct lex_token *t, const char *msg)
{
	t->type = LEX_ERROR;
	t->error = msg;
	t->line = lx->line;
	t->col = lx->col;
	t->text = lx->buf + lx->pos;
	t->len = 0;
	/* skip to the end of the line so the caller can go on */
	while (lx->pos < lx->len && lx->buf[lx->pos] != '\n')
		lex_adv(lx);
	return LEX_ERROR;
}

/* lex_string - a double-quoted string; lx->pos is at the opening quote */
static enum lex_tok
lex_string(struct lexer *lx, struct lex_token *t)
{
	size_t n = 0;

	lex_adv(lx);
	for (;;) {
		if (lx->pos >= lx->len || lx->buf[lx->pos] == '\n')
			return lex_err(lx, t, "unterminated string");
		unsigned char c = (unsigned char)lx->buf[lx->pos];
		if (c == '"') {
			lex_adv(lx);
			break;
		}
		if (c == '\\') {
			lex_adv(lx);
			if (lx->pos >= lx->len)
				return lex_err(lx, t, "unterminated string");
			switch (lx->buf[lx->pos]) {
			case '"': c = '"'; break;
			case '\\': c = '\\'; break;
			case 't': c = '\t'; break;
			case 'n': c = '\n'; break;
			default:
				return lex_err(lx, t, "unknown escape in string (use \\\" \\\\ \\t \\n)");
			}
		} else if (c < 0x20 && c != '\t') {
			return lex_err(lx, t, "control character in string");
		}
		if (n + 1 >= lx->scap) {
			lx->scap = lx->scap ? lx->scap * 2 : 128;
			lx->sbuf = xrealloc(lx->sbuf, lx->scap);
		}
		lx->sbuf[n++] = (char)c;
		lex_adv(lx);
	}
	if (lx->sbuf == NULL) {
		lx->scap = 128;
		lx->sbuf = xmalloc(lx->scap);
	}
	lx->sbuf[n] = 0;
	t->type = LEX_STRING;
	t->text = lx->sbuf;
	t->len = n;
	return LEX_STRING;
}

/* lex_next - the next token */
enum lex_tok
lex_next(struct lexer *lx, struct lex_token *t)
{
	memset(t, 0, sizeof(*t));
	for (;;) {
		while (lx->pos < lx->len &&
		    (lx->buf[lx->pos] == ' ' || lx->buf[lx->pos] == '\t' ||
		     lx->buf[lx->pos] == '\r'))
			lex_adv(lx);
		if (lx->pos < lx->len && lx->buf[lx->pos] == '#')
			while (lx->pos < lx->len && lx->buf[lx->pos] != '\n')
				lex_adv(lx);
		/* line continuation */
		if (lex_continuation(lx)) {
			lex_adv(lx);
			if (lx->buf[lx->pos] == '\r')
				lex_adv(lx);
			lex_adv(lx);
			continue;
		}
		break;
	}
	t->line = lx->line;
	t->col = lx->col;
	if (lx->pos >= lx->len) {
		t->type = LEX_EOF;
		return LEX_EOF;
	}
	unsigned char c = (unsigned char)lx->buf[lx->pos];
	if (c == '\n') {
		lex_adv(lx);
		t->type = LEX_NL;
		return LEX_NL;
	}
	if (c == '{' || c == '}' || c == '(' || c == ')') {
		lex_adv(lx);
		t->type = c == '{' ? LEX_LBRACE : c == '}' ? LEX_RBRACE :
		    c == '(' ? LEX_LPAREN : LEX_RPAREN;
		t->text = lx->buf + lx->pos - 1;
		t->len = 1;
		return t->type;
	}
	if (c == '"')
		return lex_string(lx, t);
	if (!lex_word_byte(c))
		return lex_err(lx, t, "control character");
	size_t start = lx->pos;
	while (lx->pos < lx->len && lex_word_byte((unsigned char)lx->buf[lx->pos])) {
		/* a backslash at the line end continues the line, not the word
		 * (exactly the test lex_next makes, or the word would be empty
		 * and nothing would move) */
		if (lex_continuation(lx))
			break;
		lex_adv(lx);
	}
	if (lx->pos < lx->len) {
		unsigned char e = (unsigned char)lx->buf[lx->pos];
		if ((e < ' ' && e != '\t' && e != '\n' && e != '\r') || e == 0x7f)
			return lex_err(lx, t, "control character");
	}
	t->type = LEX_WORD;
	t->text = lx->buf + start;
	t->len = lx->pos - start;
	return LEX_WORD;
}
