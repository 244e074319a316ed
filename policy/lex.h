/*
 * lex - tokens of the moat policy file
 *
 * SYNOPSIS
 *	void lex_init(struct lexer *lx, const char *file, const char *buf, size_t len);
 *	enum lex_tok lex_next(struct lexer *lx, struct lex_token *t);
 *	void lex_free(struct lexer *lx);
 *
 *	void lex_error(struct lex_parser *p, const struct lex_token *t,
 *	               const char *fmt, ...);
 *	void lex_verror(lex_err_fn err, void *arg, const struct lex_token *t,
 *	                const char *fmt, va_list ap);
 *	const char *lex_shown(const struct lex_token *t, char *buf, size_t size);
 *	bool lex_is(const struct lex_token *t, const char *word);
 *
 * DESCRIPTION
 *	The file is a sequence of lines. "#" starts a comment to the end of
 *	the line (outside strings). A token is a word (a run of bytes other
 *	than blanks, newline, '{', '}', '(', ')', '"' and '#'), a string in
 *	double quotes (escapes \" \\ \t \n; no raw newline inside), '{', '}',
 *	'(', ')', or the end of a line. A backslash just before the line end joins the next
 *	line. NUL bytes and other control characters outside strings are
 *	errors. A token's text is borrowed: words point into buf, strings
 *	into the lexer's own buffer, valid until the next lex_next() call.
 *	Every token carries its 1-based line and column.
 *
 *	The statement parsers (conf, rules, conf_dnsbl, conf_ratelimit,
 *	conf_dkim) share the rest. An error goes to err(arg, line, col, msg)
 *	at the token at fault, which the caller turns into file:line:col.
 *	lex_error() formats one message at t (at most LEX_MSG_MAX - 1 bytes)
 *	and counts it in p->errors; lex_verror() does the formatting alone,
 *	for a parser with a state of its own. lex_shown() is a token as an
 *	error message shows it: a word or string escaped (log_escape), else
 *	the token's kind (lex_tok_name). lex_is() tells whether t is the
 *	word given.
 */
#ifndef MOAT_LEX_H
#define MOAT_LEX_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum lex_tok { LEX_EOF = 0, LEX_NL, LEX_WORD, LEX_STRING, LEX_LBRACE, LEX_RBRACE,
	LEX_LPAREN, LEX_RPAREN, LEX_ERROR };

struct lex_token {
	enum lex_tok type;
	const char *text;	/* borrowed, not NUL-terminated for words */
	size_t len;
	int line, col;
	const char *error;	/* LEX_ERROR: what went wrong (static) */
};

struct lexer {
	const char *file;
	const char *buf;
	size_t len, pos;
	int line, col;
	char *sbuf;		/* decoded string token */
	size_t scap;
};

/* the state of a statement parser: the lexer, its current token, errors */
typedef void (*lex_err_fn)(void *arg, int line, int col, const char *msg);

struct lex_parser {
	struct lexer *lx;
	struct lex_token t;	/* the current token */
	lex_err_fn err;
	void *arg;
	int errors;		/* how many went through err */
};

#define LEX_MSG_MAX 600

void lex_init(struct lexer *lx, const char *file, const char *buf, size_t len);
enum lex_tok lex_next(struct lexer *lx, struct lex_token *t);
void lex_free(struct lexer *lx);
const char *lex_tok_name(enum lex_tok t);
void lex_error(struct lex_parser *p, const struct lex_token *t, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void lex_verror(lex_err_fn err, void *arg, const struct lex_token *t, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));
const char *lex_shown(const struct lex_token *t, char *buf, size_t size);
bool lex_is(const struct lex_token *t, const char *word);

#endif
