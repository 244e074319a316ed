/*
 * lex - tokens of the moat policy file
 *
 * SYNOPSIS
 *	void lex_init(struct lexer *lx, const char *file, const char *buf, size_t len);
 *	enum lex_tok lex_next(struct lexer *lx, struct lex_token *t);
 *	void lex_free(struct lexer *lx);
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
 */
#ifndef MOAT_LEX_H
#define MOAT_LEX_H

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

void lex_init(struct lexer *lx, const char *file, const char *buf, size_t len);
enum lex_tok lex_next(struct lexer *lx, struct lex_token *t);
void lex_free(struct lexer *lx);
const char *lex_tok_name(enum lex_tok t);

#endif
