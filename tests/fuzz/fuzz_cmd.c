// sources: core/smtp_parse.c
/*
 * fuzz_cmd - F1: one SMTP command line into smtp_cmd_parse()
 *
 * The input is one line without its CR LF. Properties, each an abort()
 * when violated:
 *   - the result agrees with an independent scan of the line (TOOLONG
 *     exactly when len > 510; BADCHAR exactly when a control byte other
 *     than TAB is present; EMPTY exactly when only blanks remain);
 *   - the argument lies inside the line and has no leading or trailing
 *     blank;
 *   - serialize(parse(x)) parses to the same value: "VERB" plus " FROM:",
 *     " TO:" or " " plus the argument gives the same verb and argument;
 *   - for MAIL and RCPT, an accepted address renders, the render parses
 *     back to the same address, and the domain equals the text after the
 *     last '@' of the rendered form.
 * Nothing is allocated.
 */
#include "smtp_parse.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static int addr_same(const struct smtp_addr *a, const struct smtp_addr *b)
{
	return a->null == b->null && a->utf8 == b->utf8 && a->literal == b->literal
		&& a->local_len == b->local_len && a->domain_len == b->domain_len
		&& memcmp(a->local, b->local, a->local_len) == 0
		&& memcmp(a->domain, b->domain, a->domain_len) == 0;
}

static int is_blank(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* check_addr - render, independent domain extraction, re-parse */
static void check_addr(const struct smtp_addr *a, int rcpt, int smtputf8)
{
	char out[SMTP_PATH_MAX + 1], line[SMTP_PATH_MAX + 16];
	struct smtp_addr b;
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;
	const struct smtp_reject *rej;
	const char *at;
	size_t i;
	int n, n2;

	n = smtp_addr_render(a, out, sizeof(out));
	if (n < 2 || n > SMTP_PATH_MAX || out[0] != '<' || out[n - 1] != '>')
		abort();
	for (i = 0; i < (size_t)n; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			abort();
	if (a->null && rcpt)
		abort();
	if (!a->null && a->domain_len > 0) {
		at = memrchr(out, '@', (size_t)n);
		if (at == NULL || (size_t)(out + n - 1 - (at + 1)) != a->domain_len
		    || memcmp(at + 1, a->domain, a->domain_len) != 0)
			abort();
		for (i = 0; i < a->domain_len; i++)
			if (a->domain[i] >= 'A' && a->domain[i] <= 'Z' && !a->literal)
				abort();
	}
	memcpy(line, out, (size_t)n);
	n2 = n;
	if (!rcpt && smtputf8) {
		memcpy(line + n, " SMTPUTF8", 9);
		n2 += 9;
	}
	if (rcpt)
		rej = smtp_rcpt_parse(line, (size_t)n2, &b, &rp, smtputf8 != 0);
	else
		rej = smtp_mail_parse(line, (size_t)n2, &b, &mp);
	if (rej != NULL || !addr_same(a, &b))
		abort();
}

/* check_reserialize - "VERB" + separator + arg parses to the same */
static void check_reserialize(const struct smtp_cmd *c)
{
	char line[SMTP_CMD_LINE_MAX * 2];
	struct smtp_cmd d;
	const char *name = smtp_verb_name(c->verb);
	const char *sep = c->verb == SMTP_V_MAIL ? " FROM:"
		: c->verb == SMTP_V_RCPT ? " TO:" : " ";
	size_t nl = strlen(name), sl = strlen(sep), o;

	if (c->verb == SMTP_V_UNKNOWN || c->verb == SMTP_V_HTTP)
		return;		/* no canonical spelling */
	if (nl + sl + c->arglen > SMTP_CMD_LINE_MAX - 2)
		return;		/* "MAIL  FROM:" is longer than what came in */
	memcpy(line, name, nl);
	o = nl;
	if (c->arglen > 0 || c->verb == SMTP_V_MAIL || c->verb == SMTP_V_RCPT) {
		memcpy(line + o, sep, sl);
		o += sl;
		memcpy(line + o, c->arg, c->arglen);
		o += c->arglen;
	}
	if (smtp_cmd_parse(line, o, &d) != SMTP_P_OK || d.verb != c->verb
	    || d.arglen != c->arglen || memcmp(d.arg, c->arg, c->arglen) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	const char *line = (const char *)data;
	struct smtp_cmd cmd;
	struct smtp_addr a;
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;
	enum smtp_perr r;
	size_t i;
	int ctl = 0, nonblank = 0;

	for (i = 0; i < size; i++) {
		if ((data[i] < 0x20 && data[i] != '\t') || data[i] == 0x7f)
			ctl = 1;
		if (!is_blank(data[i]))
			nonblank = 1;
	}

	r = smtp_cmd_parse(line, size, &cmd);
	if ((r == SMTP_P_TOOLONG) != (size > SMTP_CMD_LINE_MAX - 2))
		abort();
	if (r == SMTP_P_TOOLONG)
		return 0;
	if ((r == SMTP_P_BADCHAR) != (ctl != 0))
		abort();
	if (r == SMTP_P_BADCHAR)
		return 0;
	if ((r == SMTP_P_EMPTY) != (nonblank == 0))
		abort();
	if (r == SMTP_P_SYNTAX && cmd.verb != SMTP_V_MAIL && cmd.verb != SMTP_V_RCPT)
		abort();
	if (r != SMTP_P_OK)
		return 0;

	if (cmd.arg < line || cmd.arglen > size || (size_t)(cmd.arg - line) > size - cmd.arglen)
		abort();
	if (cmd.arglen > 0 && (is_blank((unsigned char)cmd.arg[0])
			       || is_blank((unsigned char)cmd.arg[cmd.arglen - 1])))
		abort();
	check_reserialize(&cmd);

	if (cmd.verb == SMTP_V_MAIL) {
		if (smtp_mail_parse(cmd.arg, cmd.arglen, &a, &mp) == NULL)
			check_addr(&a, 0, mp.smtputf8);
	} else if (cmd.verb == SMTP_V_RCPT) {
		if (smtp_rcpt_parse(cmd.arg, cmd.arglen, &a, &rp, false) == NULL)
			check_addr(&a, 1, 0);
		if (smtp_rcpt_parse(cmd.arg, cmd.arglen, &a, &rp, true) == NULL)
			check_addr(&a, 1, 1);
	}
	return 0;
}
