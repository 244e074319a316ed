/*
 * test_smtp_parse - table-driven tests of core/smtp_parse.c
 *
 * Every table row is one named case (counted in the "N passed" line);
 * names carry the docs/SECURITY.md case id where there is one. Inputs are
 * bytes plus a length (B("...")) so NUL and CR can be tested. Every
 * accepted address is also checked for the round-trip property
 * parse(render(parse(x))) == parse(x) on the address value (null, utf8,
 * literal, local, domain; quoted and had_route describe the spelling).
 */
#include "smtp_parse.h"
#include "t.h"

#include <stdint.h>

#define B(s) s, sizeof(s) - 1

/* case_begin - start one named case (T_RUN for table rows) */
static void case_begin(const char *name)
{
	t_cur = name;
	t_cur_failed = 0;
}

/* case_end - count the case as passed or failed */
static void case_end(void)
{
	if (t_cur_failed)
		t_fail++;
	else
		t_pass++;
}

/* addr_same - equal address values (spelling flags ignored) */
static int addr_same(const struct smtp_addr *a, const struct smtp_addr *b)
{
	return a->null == b->null && a->utf8 == b->utf8 && a->literal == b->literal
		&& a->local_len == b->local_len && a->domain_len == b->domain_len
		&& memcmp(a->local, b->local, a->local_len) == 0
		&& memcmp(a->domain, b->domain, a->domain_len) == 0;
}

/* ---- command lines ---- */

static const struct cmd_case {
	const char *name;
	const char *line;
	size_t len;
	enum smtp_perr perr;
	enum smtp_verb verb;
	const char *arg;	/* NULL: not checked */
} cmd_cases[] = {
	{ "cmd_helo", B("HELO mx.test"), SMTP_P_OK, SMTP_V_HELO, "mx.test" },
	{ "cmd_ehlo_lower_trim", B("ehlo  mx.test  "), SMTP_P_OK, SMTP_V_EHLO, "mx.test" },
	{ "cmd_ehlo_noarg", B("EHLO"), SMTP_P_OK, SMTP_V_EHLO, "" },
	{ "cmd_mail", B("MAIL FROM:<a@b.test>"), SMTP_P_OK, SMTP_V_MAIL, "<a@b.test>" },
	{ "CHR-06_mail_lower_space_after_colon", B("mail from: <a@b.test>"), SMTP_P_OK,
	  SMTP_V_MAIL, "<a@b.test>" },
	{ "CHR-06_mail_two_spaces", B("MAIL  FROM:<a@b.test>"), SMTP_P_OK, SMTP_V_MAIL,
	  "<a@b.test>" },
	{ "CHR-06_mail_space_before_colon", B("MAIL FROM :<a@b.test>"), SMTP_P_SYNTAX,
	  SMTP_V_MAIL, NULL },
	{ "CHR-06_mail_no_brackets", B("MAIL FROM:a@b.test"), SMTP_P_OK, SMTP_V_MAIL,
	  "a@b.test" },
	{ "cmd_mail_params_trailing_blank", B("MAIL FROM:<a@b.test> SIZE=10 \t"), SMTP_P_OK,
	  SMTP_V_MAIL, "<a@b.test> SIZE=10" },
	{ "cmd_mail_to", B("MAIL TO:<a@b.test>"), SMTP_P_SYNTAX, SMTP_V_MAIL, NULL },
	{ "cmd_mailfrom_unknown", B("MAILFROM:<a@b.test>"), SMTP_P_OK, SMTP_V_UNKNOWN, NULL },
	{ "cmd_mail_alone", B("MAIL"), SMTP_P_SYNTAX, SMTP_V_MAIL, NULL },
	{ "cmd_mail_from_no_colon", B("MAIL FROM <a@b.test>"), SMTP_P_SYNTAX, SMTP_V_MAIL, NULL },
	{ "cmd_mail_from_empty", B("MAIL FROM:"), SMTP_P_OK, SMTP_V_MAIL, "" },
	{ "cmd_rcpt", B("RCPT TO:<x@y.test> NOTIFY=NEVER"), SMTP_P_OK, SMTP_V_RCPT,
	  "<x@y.test> NOTIFY=NEVER" },
	{ "cmd_rcpt_tabs", B("rcpt\tTo:\t<x@y.test>"), SMTP_P_OK, SMTP_V_RCPT, "<x@y.test>" },
	{ "cmd_rcpt_from", B("RCPT FROM:<x@y.test>"), SMTP_P_SYNTAX, SMTP_V_RCPT, NULL },
	{ "cmd_helox_unknown", B("HELOX mx.test"), SMTP_P_OK, SMTP_V_UNKNOWN, NULL },
	{ "cmd_quit", B("QUIT"), SMTP_P_OK, SMTP_V_QUIT, "" },
	{ "cmd_data_lower", B("data"), SMTP_P_OK, SMTP_V_DATA, "" },
	{ "cmd_bdat", B("BDAT 100 LAST"), SMTP_P_OK, SMTP_V_BDAT, "100 LAST" },
	{ "cmd_starttls", B("StartTLS"), SMTP_P_OK, SMTP_V_STARTTLS, "" },
	{ "cmd_auth", B("AUTH PLAIN dGVzdA=="), SMTP_P_OK, SMTP_V_AUTH, "PLAIN dGVzdA==" },
	{ "cmd_xclient", B("XCLIENT ADDR=192.0.2.1"), SMTP_P_OK, SMTP_V_XCLIENT, "ADDR=192.0.2.1" },
	{ "cmd_leading_blanks", B("  NOOP"), SMTP_P_OK, SMTP_V_NOOP, "" },
	{ "cmd_empty", B(""), SMTP_P_EMPTY, SMTP_V_UNKNOWN, NULL },
	{ "cmd_blank", B(" \t "), SMTP_P_EMPTY, SMTP_V_UNKNOWN, NULL },
	{ "CHR-01_nul_in_mail", B("MAIL FROM:<a@b.test>\0<c@d.test>"), SMTP_P_BADCHAR,
	  SMTP_V_UNKNOWN, NULL },
	{ "CHR-02_nul_in_helo", B("HELO a\0b"), SMTP_P_BADCHAR, SMTP_V_UNKNOWN, NULL },
	{ "CHR-03_bare_cr", B("MAIL FROM:<a@b.test>\rRCPT TO:<x@y.test>"), SMTP_P_BADCHAR,
	  SMTP_V_UNKNOWN, NULL },
	{ "cmd_bare_lf", B("NOOP\nQUIT"), SMTP_P_BADCHAR, SMTP_V_UNKNOWN, NULL },
	{ "CHR-05_esc_in_helo", B("HELO a\033[31m"), SMTP_P_BADCHAR, SMTP_V_UNKNOWN, NULL },
	{ "CHR-05_del_in_helo", B("HELO a\177"), SMTP_P_BADCHAR, SMTP_V_UNKNOWN, NULL },
	{ "CHR-05_backspace_in_helo", B("HELO a\bb"), SMTP_P_BADCHAR, SMTP_V_UNKNOWN, NULL },
	{ "CHR-04_8bit_passes_cmd_level", B("HELO h\xc3\xa9.test"), SMTP_P_OK, SMTP_V_HELO,
	  "h\xc3\xa9.test" },
	{ "cmd_proxy", B("PROXY TCP4 192.0.2.1 192.0.2.2 1 25"), SMTP_P_OK, SMTP_V_PROXY, NULL },
	{ "cmd_http_get", B("GET / HTTP/1.0"), SMTP_P_OK, SMTP_V_HTTP, "/ HTTP/1.0" },
	{ "cmd_http_post", B("POST /x HTTP/1.1"), SMTP_P_OK, SMTP_V_HTTP, NULL },
	{ "cmd_http_connect", B("CONNECT mx:25 HTTP/1.1"), SMTP_P_OK, SMTP_V_HTTP, NULL },
	{ "cmd_http_options", B("OPTIONS * HTTP/1.1"), SMTP_P_OK, SMTP_V_HTTP, NULL },
	{ "cmd_get_alone_unknown", B("GET"), SMTP_P_OK, SMTP_V_UNKNOWN, NULL },
	{ "cmd_user_unknown", B("USER foo"), SMTP_P_OK, SMTP_V_UNKNOWN, "foo" },
	{ "cmd_pass_unknown", B("PASS bar"), SMTP_P_OK, SMTP_V_UNKNOWN, "bar" },
};

static void run_cmd_cases(void)
{
	size_t i;

	for (i = 0; i < sizeof(cmd_cases) / sizeof(cmd_cases[0]); i++) {
		const struct cmd_case *c = &cmd_cases[i];
		struct smtp_cmd cmd;
		enum smtp_perr r;

		case_begin(c->name);
		r = smtp_cmd_parse(c->line, c->len, &cmd);
		T_CHECKF(r == c->perr, "perr %d, want %d", (int)r, (int)c->perr);
		if (r == SMTP_P_OK || r == SMTP_P_SYNTAX)
			T_CHECKF(cmd.verb == c->verb, "verb %s, want %s",
				smtp_verb_name(cmd.verb), smtp_verb_name(c->verb));
		if (c->arg != NULL && r == SMTP_P_OK)
			T_CHECKF(cmd.arglen == strlen(c->arg)
				 && memcmp(cmd.arg, c->arg, cmd.arglen) == 0,
				"arg \"%.*s\", want \"%s\"", (int)cmd.arglen, cmd.arg, c->arg);
		case_end();
	}
}

/* LEN-01 at the parser: 510 octets (512 with CRLF) pass, 511 do not. */
static void run_cmd_length_cases(void)
{
	char line[SMTP_CMD_LINE_MAX + 16];
	struct smtp_cmd cmd;

	memset(line, 'a', sizeof(line));
	memcpy(line, "NOOP ", 5);

	case_begin("LEN-01_line_510");
	T_CHECK(smtp_cmd_parse(line, SMTP_CMD_LINE_MAX - 2, &cmd) == SMTP_P_OK);
	T_CHECK(cmd.verb == SMTP_V_NOOP && cmd.arglen == SMTP_CMD_LINE_MAX - 7);
	case_end();

	case_begin("LEN-01_line_511");
	T_CHECK(smtp_cmd_parse(line, SMTP_CMD_LINE_MAX - 1, &cmd) == SMTP_P_TOOLONG);
	case_end();

	case_begin("LEN-01_toolong_beats_badchar");
	line[3] = '\0';
	T_CHECK(smtp_cmd_parse(line, sizeof(line), &cmd) == SMTP_P_TOOLONG);
	case_end();
}

static void run_verb_names(void)
{
	case_begin("verb_names");
	T_CHECK(strcmp(smtp_verb_name(SMTP_V_MAIL), "MAIL") == 0);
	T_CHECK(strcmp(smtp_verb_name(SMTP_V_STARTTLS), "STARTTLS") == 0);
	T_CHECK(strcmp(smtp_verb_name(SMTP_V_XFORWARD), "XFORWARD") == 0);
	T_CHECK(strcmp(smtp_verb_name(SMTP_V_PROXY), "PROXY") == 0);
	T_CHECK(strcmp(smtp_verb_name(SMTP_V_UNKNOWN), "?") == 0);
	T_CHECK(strcmp(smtp_verb_name(SMTP_V__COUNT), "?") == 0);
	{
		int v;

		for (v = 1; v < SMTP_V__COUNT; v++)
			T_CHECKF(strcmp(smtp_verb_name((enum smtp_verb)v), "?") != 0,
				"verb %d has no name", v);
	}
	case_end();
}

/* ---- addresses ---- */

enum addr_kind { K_MAIL, K_RCPT, K_RCPT_UTF8 };

#define F_NULL    1u
#define F_QUOTED  2u
#define F_LITERAL 4u
#define F_ROUTE   8u
#define F_UTF8    16u

static const struct addr_case {
	const char *name;
	enum addr_kind kind;
	const char *in;
	size_t len;
	int code;		/* 0: accepted */
	const char *enh;	/* when rejected */
	const char *local;	/* when accepted */
	const char *domain;
	unsigned flags;
	const char *render;
} addr_cases[] = {
	/* accepted */
	{ "adr_plain", K_MAIL, B("<a@b.test>"), 0, NULL, "a", "b.test", 0, "<a@b.test>" },
	{ "ADR-09_upper_domain", K_MAIL, B("<User@Example.TEST>"), 0, NULL, "User",
	  "example.test", 0, "<User@example.test>" },
	{ "ADR-09_trailing_dot", K_MAIL, B("<u@example.test.>"), 0, NULL, "u",
	  "example.test", 0, "<u@example.test>" },
	{ "ADR-01_no_brackets", K_MAIL, B("a@b.test"), 0, NULL, "a", "b.test", 0, "<a@b.test>" },
	{ "ADR-01_no_brackets_param", K_MAIL, B("a@b.test SIZE=10"), 0, NULL, "a", "b.test",
	  0, "<a@b.test>" },
	{ "ADR-01_no_brackets_quoted", K_MAIL, B("\"a b\"@b.test"), 0, NULL, "a b", "b.test",
	  F_QUOTED, "<\"a b\"@b.test>" },
	{ "ADR-05_null", K_MAIL, B("<>"), 0, NULL, "", "", F_NULL, "<>" },
	{ "ADR-05_null_size", K_MAIL, B("<> SIZE=1"), 0, NULL, "", "", F_NULL, "<>" },
	{ "ADR-02_source_route", K_MAIL, B("<@r1.test,@r2.test:user@d.test>"), 0, NULL,
	  "user", "d.test", F_ROUTE, "<user@d.test>" },
	{ "ADR-02_route_rcpt", K_RCPT, B("<@r1.test:user@d.test>"), 0, NULL, "user", "d.test",
	  F_ROUTE, "<user@d.test>" },
	{ "ADR-03_quoted_space", K_MAIL, B("<\"a b\"@d.test>"), 0, NULL, "a b", "d.test",
	  F_QUOTED, "<\"a b\"@d.test>" },
	{ "ADR-03_quoted_at", K_MAIL, B("<\"a@b\"@d.test>"), 0, NULL, "a@b", "d.test",
	  F_QUOTED, "<\"a@b\"@d.test>" },
	{ "ADR-03_quoted_escaped_quote", K_MAIL, B("<\"a\\\"b\"@d.test>"), 0, NULL, "a\"b",
	  "d.test", F_QUOTED, "<\"a\\\"b\"@d.test>" },
	{ "ADR-03_quoted_backslash", K_MAIL, B("<\"a\\\\b\"@d.test>"), 0, NULL, "a\\b",
	  "d.test", F_QUOTED, "<\"a\\\\b\"@d.test>" },
	{ "ADR-10_quoted_needless", K_MAIL, B("<\"user\"@d.test>"), 0, NULL, "user", "d.test",
	  F_QUOTED, "<user@d.test>" },
	{ "ADR-03_quoted_pair_needless", K_MAIL, B("<\"a\\b\"@d.test>"), 0, NULL, "ab",
	  "d.test", F_QUOTED, "<ab@d.test>" },
	{ "ADR-03_quoted_dots", K_MAIL, B("<\"a..b\"@d.test>"), 0, NULL, "a..b", "d.test",
	  F_QUOTED, "<\"a..b\"@d.test>" },
	{ "ADR-03_quoted_empty", K_MAIL, B("<\"\"@d.test>"), 0, NULL, "", "d.test", F_QUOTED,
	  "<\"\"@d.test>" },
	{ "ADR-04_ipv4_literal", K_MAIL, B("<u@[127.0.0.1]>"), 0, NULL, "u", "[127.0.0.1]",
	  F_LITERAL, "<u@[127.0.0.1]>" },
	{ "ADR-04_ipv4_leading_zeros", K_MAIL, B("<u@[127.000.0.01]>"), 0, NULL, "u",
	  "[127.0.0.1]", F_LITERAL, "<u@[127.0.0.1]>" },
	{ "ADR-04_ipv6_literal", K_MAIL, B("<u@[IPv6:::1]>"), 0, NULL, "u", "[IPv6:::1]",
	  F_LITERAL, "<u@[IPv6:::1]>" },
	{ "ADR-04_ipv6_canonical", K_RCPT, B("<u@[ipv6:0:0:0:0:0:0:0:1]>"), 0, NULL, "u",
	  "[IPv6:::1]", F_LITERAL, "<u@[IPv6:::1]>" },
	{ "ADR-04_ipv6_upper_hex", K_RCPT, B("<u@[IPv6:2001:DB8::1]>"), 0, NULL, "u",
	  "[IPv6:2001:db8::1]", F_LITERAL, "<u@[IPv6:2001:db8::1]>" },
	{ "ADR-04_ipv6_mapped", K_RCPT, B("<u@[IPv6:::ffff:192.0.2.1]>"), 0, NULL, "u",
	  "[IPv6:::ffff:192.0.2.1]", F_LITERAL, "<u@[IPv6:::ffff:192.0.2.1]>" },
	{ "adr_percent_hack", K_RCPT, B("<a%b.test@c.test>"), 0, NULL, "a%b.test", "c.test",
	  0, "<a%b.test@c.test>" },
	{ "adr_bang_path", K_RCPT, B("<b.test!a@c.test>"), 0, NULL, "b.test!a", "c.test", 0,
	  "<b.test!a@c.test>" },
	{ "adr_plus_tag", K_MAIL, B("<user+tag@d.test>"), 0, NULL, "user+tag", "d.test", 0,
	  "<user+tag@d.test>" },
	{ "adr_all_atext", K_MAIL, B("<!#$%&'*+-/=?^_`{|}~.x@d.test>"), 0, NULL,
	  "!#$%&'*+-/=?^_`{|}~.x", "d.test", 0, "<!#$%&'*+-/=?^_`{|}~.x@d.test>" },
	{ "adr_numeric_domain", K_MAIL, B("<u@1.2.3.4>"), 0, NULL, "u", "1.2.3.4", 0,
	  "<u@1.2.3.4>" },
	{ "adr_hyphen_inside_label", K_MAIL, B("<u@a-b.x--y.test>"), 0, NULL, "u",
	  "a-b.x--y.test", 0, "<u@a-b.x--y.test>" },
	{ "adr_tab_before_param", K_MAIL, B("<a@b.test>\tSIZE=1"), 0, NULL, "a", "b.test", 0,
	  "<a@b.test>" },
	{ "adr_leading_blanks", K_MAIL, B("  <a@b.test>"), 0, NULL, "a", "b.test", 0,
	  "<a@b.test>" },
	{ "adr_rcpt_postmaster", K_RCPT, B("<Postmaster>"), 0, NULL, "postmaster", "", 0,
	  "<postmaster>" },
	{ "adr_rcpt_postmaster_bare", K_RCPT, B("POSTMASTER"), 0, NULL, "postmaster", "", 0,
	  "<postmaster>" },
	{ "adr_rcpt_postmaster_domain", K_RCPT, B("<postmaster@D.test>"), 0, NULL,
	  "postmaster", "d.test", 0, "<postmaster@d.test>" },
	{ "ADR-07_smtputf8_mail", K_MAIL,
	  B("<\xce\xb4\xce\xbf\xce\xba\xce\xb9\xce\xbc\xce\xae@\xcf\x80\xce\xb1\xcf\x81"
	    "\xce\xac\xce\xb4\xce\xb5\xce\xb9\xce\xb3\xce\xbc\xce\xb1.test> SMTPUTF8"), 0, NULL,
	  "\xce\xb4\xce\xbf\xce\xba\xce\xb9\xce\xbc\xce\xae",
	  "\xcf\x80\xce\xb1\xcf\x81\xce\xac\xce\xb4\xce\xb5\xce\xb9\xce\xb3\xce\xbc\xce\xb1.test",
	  F_UTF8, NULL },
	{ "ADR-07_smtputf8_upper_ascii_domain", K_RCPT_UTF8, B("<\xc3\xa9@D.TEST>"), 0, NULL,
	  "\xc3\xa9", "d.test", F_UTF8, "<\xc3\xa9@d.test>" },
	{ "CHR-04_utf8_quoted", K_RCPT_UTF8, B("<\"\xc3\xa9 x\"@d.test>"), 0, NULL,
	  "\xc3\xa9 x", "d.test", F_UTF8 | F_QUOTED, "<\"\xc3\xa9 x\"@d.test>" },
	{ "CHR-04_utf8_4byte", K_RCPT_UTF8, B("<\xf0\x9f\x98\x80@d.test>"), 0, NULL,
	  "\xf0\x9f\x98\x80", "d.test", F_UTF8, NULL },

	/* rejected */
	{ "adr_empty", K_MAIL, B(""), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-05_open_bracket", K_MAIL, B("<"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_unclosed", K_MAIL, B("<a@b.test"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_bare_then_bracket", K_MAIL, B("a@b.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-06_phrase", K_MAIL, B("Name <a@b.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-06_phrase_rcpt", K_RCPT, B("Name <a@b.test>"), 501, "5.1.3", NULL, NULL, 0, NULL },
	{ "ADR-06_phrase_with_at", K_MAIL, B("x@y.test <a@b.test>"), 501, "5.5.4", NULL, NULL,
	  0, NULL },
	{ "adr_junk_after", K_MAIL, B("<a@b.test>x"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_param_glued", K_MAIL, B("<a@b.test>SIZE=1"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_blank_inside", K_MAIL, B("< a@b.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_double_dot_local", K_MAIL, B("<a..b@d.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_leading_dot_local", K_MAIL, B("<.a@d.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_trailing_dot_local", K_RCPT, B("<a.@d.test>"), 501, "5.1.3", NULL, NULL, 0, NULL },
	{ "ADR-09_double_dot_domain", K_MAIL, B("<a@b..c>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_leading_dot_domain", K_MAIL, B("<a@.b.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_two_trailing_dots", K_MAIL, B("<a@b.test..>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_only_dot_domain", K_MAIL, B("<a@.>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_label_leading_hyphen", K_MAIL, B("<a@-b.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_label_trailing_hyphen", K_MAIL, B("<a@b-.test>"), 501, "5.1.7", NULL, NULL, 0,
	  NULL },
	{ "adr_underscore_domain", K_MAIL, B("<a@b_c.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_empty_domain", K_MAIL, B("<a@>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_mail_no_domain", K_MAIL, B("<user>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_mail_postmaster", K_MAIL, B("<postmaster>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "adr_rcpt_no_domain", K_RCPT, B("<user>"), 501, "5.1.3", NULL, NULL, 0, NULL },
	{ "adr_rcpt_quoted_postmaster", K_RCPT, B("<\"postmaster\">"), 501, "5.1.3", NULL, NULL,
	  0, NULL },
	{ "adr_rcpt_routed_postmaster", K_RCPT, B("<@r.test:postmaster>"), 501, "5.1.3", NULL,
	  NULL, 0, NULL },
	{ "ADR-05_rcpt_null", K_RCPT, B("<>"), 501, "5.1.3", NULL, NULL, 0, NULL },
	{ "ADR-02_route_no_colon", K_MAIL, B("<@d.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-02_route_bad_hop", K_MAIL, B("<@r..test:u@d.test>"), 501, "5.1.7", NULL, NULL,
	  0, NULL },
	{ "ADR-02_route_literal_hop", K_MAIL, B("<@[1.2.3.4]:u@d.test>"), 501, "5.1.7", NULL,
	  NULL, 0, NULL },
	{ "ADR-02_bare_route", K_MAIL, B("@r.test:u@d.test"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-03_unterminated_quote", K_MAIL, B("<\"abc@d.test>"), 501, "5.1.7", NULL, NULL, 0,
	  NULL },
	{ "ADR-03_quoted_nul", K_MAIL, B("<\"a\0b\"@d.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-03_quoted_ctl", K_MAIL, B("<\"a\001\"@d.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-03_quoted_pair_ctl", K_MAIL, B("<\"a\\\001\"@d.test>"), 501, "5.1.7", NULL, NULL,
	  0, NULL },
	{ "ADR-03_quoted_pair_8bit", K_RCPT_UTF8, B("<\"a\\\xc3\xa9\"@d.test>"), 501, "5.1.3",
	  NULL, NULL, 0, NULL },
	{ "ADR-03_quoted_then_dot", K_MAIL, B("<\"a\".b@d.test>"), 501, "5.1.7", NULL, NULL, 0,
	  NULL },
	{ "ADR-03_two_at", K_MAIL, B("<a@b@c.test>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-04_ipv4_300", K_MAIL, B("<u@[300.1.1.1]>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-04_ipv6_zz", K_MAIL, B("<u@[IPv6:zz]>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-04_ipv4_three_parts", K_MAIL, B("<u@[1.2.3]>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-04_ipv4_four_digits", K_MAIL, B("<u@[1.2.3.1000]>"), 501, "5.1.7", NULL, NULL, 0,
	  NULL },
	{ "ADR-04_general_literal", K_MAIL, B("<u@[x400:abc]>"), 501, "5.1.7", NULL, NULL, 0,
	  NULL },
	{ "ADR-04_ipv6_zone", K_MAIL, B("<u@[IPv6:fe80::1%eth0]>"), 501, "5.1.7", NULL, NULL, 0,
	  NULL },
	{ "ADR-04_ipv6_without_tag", K_MAIL, B("<u@[::1]>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-04_literal_unclosed", K_MAIL, B("<u@[1.2.3.4>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-04_literal_then_label", K_MAIL, B("<u@[1.2.3.4].test>"), 501, "5.1.7", NULL, NULL,
	  0, NULL },
	{ "CHR-04_8bit_no_smtputf8", K_MAIL, B("<\xc3\xa9@d.test>"), 553, "5.6.7", NULL, NULL, 0,
	  NULL },
	{ "CHR-04_8bit_domain_no_smtputf8", K_RCPT, B("<u@\xc3\xa9.test>"), 553, "5.6.7", NULL,
	  NULL, 0, NULL },
	{ "CHR-04_8bit_route_no_smtputf8", K_MAIL, B("<@\xc3\xa9.test:u@d.test>"), 553, "5.6.7",
	  NULL, NULL, 0, NULL },
	{ "CHR-04_overlong", K_MAIL, B("<\xc0\xaf@d.test> SMTPUTF8"), 501, "5.6.7", NULL, NULL,
	  0, NULL },
	{ "CHR-04_overlong_3byte", K_RCPT_UTF8, B("<\xe0\x80\xaf@d.test>"), 501, "5.6.7", NULL,
	  NULL, 0, NULL },
	{ "CHR-04_surrogate", K_MAIL, B("<\xed\xa0\x80@d.test> SMTPUTF8"), 501, "5.6.7", NULL,
	  NULL, 0, NULL },
	{ "CHR-04_above_10ffff", K_RCPT_UTF8, B("<\xf4\x90\x80\x80@d.test>"), 501, "5.6.7", NULL,
	  NULL, 0, NULL },
	{ "CHR-04_truncated", K_RCPT_UTF8, B("<u@d\xc3.test>"), 501, "5.6.7", NULL, NULL, 0,
	  NULL },
	{ "CHR-04_lone_continuation", K_RCPT_UTF8, B("<\x80@d.test>"), 501, "5.6.7", NULL, NULL,
	  0, NULL },
	{ "CHR-01_nul_after_path", K_MAIL, B("<a@b.test>\0<c@d.test>"), 501, "5.1.7", NULL, NULL,
	  0, NULL },
	{ "CHR-03_cr_after_path", K_MAIL, B("<a@b.test>\rRCPT TO:<x@y.test>"), 501, "5.1.7",
	  NULL, NULL, 0, NULL },
	{ "CHR-02_nul_in_local", K_RCPT, B("<a\0b@d.test>"), 501, "5.1.3", NULL, NULL, 0, NULL },
	{ "CHR-02_nul_in_domain", K_RCPT, B("<a@d\0.test>"), 501, "5.1.3", NULL, NULL, 0, NULL },
	{ "LEN-09_quoted_local_65_decoded", K_MAIL,
	  B("<\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"@d.test>"),
	  501, "5.1.7", NULL, NULL, 0, NULL },
	{ "LEN-09_dot_at_65", K_RCPT,
	  B("<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b@d.test>"),
	  501, "5.1.3", NULL, NULL, 0, NULL },
	{ "ADR-02_route_bad_separator", K_MAIL, B("<@r.test;u@d.test>"), 501, "5.1.7", NULL,
	  NULL, 0, NULL },
	{ "ADR-02_route_hop_without_at", K_MAIL, B("<@r.test,s.test:u@d.test>"), 501, "5.1.7",
	  NULL, NULL, 0, NULL },
	{ "CHR-04_bad_continuation", K_RCPT_UTF8, B("<\xc3" "A@d.test>"), 501, "5.6.7", NULL,
	  NULL, 0, NULL },
	{ "CHR-04_truncated_at_end", K_RCPT_UTF8, B("u@d.\xc3"), 501, "5.6.7", NULL, NULL, 0,
	  NULL },
	{ "ADR-04_ipv6_too_long", K_MAIL,
	  B("<u@[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]>"), 501, "5.1.7", NULL,
	  NULL, 0, NULL },
	{ "ADR-04_ipv6_empty", K_MAIL, B("<u@[IPv6:]>"), 501, "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-04_ipv6_bad_groups", K_MAIL, B("<u@[IPv6:1:2:3]>"), 501, "5.1.7", NULL, NULL, 0,
	  NULL },
	{ "ADR-09_64_char_label", K_MAIL,
	  B("<u@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test>"), 501,
	  "5.1.7", NULL, NULL, 0, NULL },
	{ "ADR-09_63_char_label", K_MAIL,
	  B("<u@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test>"), 0, NULL,
	  "u", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", 0, NULL },
};

/* parse_kind - MAIL or RCPT parse of in */
static const struct smtp_reject *parse_kind(enum addr_kind k, const char *in, size_t len,
	struct smtp_addr *a)
{
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;

	if (k == K_MAIL)
		return smtp_mail_parse(in, len, a, &mp);
	return smtp_rcpt_parse(in, len, a, &rp, k == K_RCPT_UTF8);
}

/* check_round_trip - parse(render(a)) gives the same address value */
static void check_round_trip(enum addr_kind k, const struct smtp_addr *a, int smtputf8)
{
	char out[SMTP_PATH_MAX + 16];
	struct smtp_addr b;
	const struct smtp_reject *rej;
	int n;
	enum addr_kind k2 = k;

	n = smtp_addr_render(a, out, sizeof(out));
	T_CHECKF(n > 0 && n <= SMTP_PATH_MAX, "render gave %d", n);
	if (n <= 0)
		return;
	T_CHECK((size_t)n == strlen(out));
	if (smtputf8 && k == K_RCPT)
		k2 = K_RCPT_UTF8;
	if (k2 == K_MAIL && smtputf8) {
		struct smtp_mail_params mp;
		char line[SMTP_PATH_MAX + 32];

		memcpy(line, out, (size_t)n);
		memcpy(line + n, " SMTPUTF8", 9);
		rej = smtp_mail_parse(line, (size_t)n + 9, &b, &mp);
	} else {
		rej = parse_kind(k2, out, (size_t)n, &b);
	}
	T_CHECKF(rej == NULL, "re-parse of %s: %d %s", out, rej ? rej->code : 0,
		rej ? rej->text : "");
	if (rej == NULL)
		T_CHECKF(addr_same(a, &b), "round trip differs for %s", out);
}

static void run_addr_cases(void)
{
	size_t i;

	for (i = 0; i < sizeof(addr_cases) / sizeof(addr_cases[0]); i++) {
		const struct addr_case *c = &addr_cases[i];
		struct smtp_addr a;
		const struct smtp_reject *rej;
		char out[SMTP_PATH_MAX + 16];

		case_begin(c->name);
		rej = parse_kind(c->kind, c->in, c->len, &a);
		if (c->code == 0) {
			T_CHECKF(rej == NULL, "rejected %d %s %s", rej ? rej->code : 0,
				rej ? rej->enh : "", rej ? rej->text : "");
		} else {
			T_CHECKF(rej != NULL && rej->code == c->code
				 && strcmp(rej->enh, c->enh) == 0,
				"got %d %s, want %d %s", rej ? rej->code : 0,
				rej ? rej->enh : "-", c->code, c->enh);
		}
		if (rej != NULL || c->code != 0) {
			case_end();
			continue;
		}
		T_CHECKF(a.local_len == strlen(c->local) && strcmp(a.local, c->local) == 0,
			"local \"%s\", want \"%s\"", a.local, c->local);
		T_CHECKF(a.domain_len == strlen(c->domain) && strcmp(a.domain, c->domain) == 0,
			"domain \"%s\", want \"%s\"", a.domain, c->domain);
		T_CHECK(a.null == !!(c->flags & F_NULL));
		T_CHECK(a.quoted == !!(c->flags & F_QUOTED));
		T_CHECK(a.literal == !!(c->flags & F_LITERAL));
		T_CHECK(a.had_route == !!(c->flags & F_ROUTE));
		T_CHECK(a.utf8 == !!(c->flags & F_UTF8));
		if (c->render != NULL) {
			int n = smtp_addr_render(&a, out, sizeof(out));

			T_CHECKF(n >= 0 && strcmp(out, c->render) == 0,
				"render \"%s\", want \"%s\"", n >= 0 ? out : "(-1)", c->render);
		}
		check_round_trip(c->kind, &a, (c->flags & F_UTF8) != 0);
		case_end();
	}
}

/* LEN-09: local part 64/65, domain 255/256, path 256/257 octets. */

/* fill_domain - n octets of labels of at most 63, so only the total counts */
static void fill_domain(char *p, size_t n)
{
	size_t o = 0, l;

	while (n - o > 63) {
		l = n - o - 2 < 63 ? n - o - 2 : 63;
		memset(p + o, 'a', l);
		o += l;
		p[o++] = '.';
	}
	memset(p + o, 'b', n - o);
}

/* mail_of - MAIL with a local part and domain of the given lengths */
static const struct smtp_reject *mail_of(size_t local, size_t domain, char quote,
	struct smtp_addr *a)
{
	char buf[1024];
	struct smtp_mail_params mp;
	size_t o = 0;

	buf[o++] = '<';
	if (quote)
		buf[o++] = '"';
	memset(buf + o, quote == ' ' ? ' ' : 'l', local);
	o += local;
	if (quote)
		buf[o++] = '"';
	buf[o++] = '@';
	fill_domain(buf + o, domain);
	o += domain;
	buf[o++] = '>';
	return smtp_mail_parse(buf, o, a, &mp);
}

/* MAIL FROM paths of given lengths (mail_of): accepted, with what the
 * parse gives (a zero length or quoted: not checked), or refused */
static const struct len_case {
	const char *name;
	size_t local, domain;
	char quote;
	int code;			/* 0: accepted */
	const char *enh;		/* refused: the enhanced code (NULL: not checked) */
	size_t local_len, domain_len;	/* accepted */
	int quoted;
} len_cases[] = {
	{ "LEN-09_local_64", 64, 6, 0, 0, NULL, 64, 0, 0 },
	{ "LEN-09_local_65", 65, 6, 0, 501, "5.1.7", 0, 0, 0 },
	/* "lll...l" (64 + 2 quotes on the wire): canonical form is 64 */
	{ "LEN-09_quoted_local_needless_66_wire", 64, 6, '"', 0, NULL, 64, 0, 1 },
	/* 64 spaces need quotes: 66 as rendered, over the limit */
	{ "LEN-09_quoted_local_needs_quotes_66", 64, 6, ' ', 501, NULL, 0, 0, 0 },
	{ "LEN-09_quoted_local_needs_quotes_64", 62, 6, ' ', 0, NULL, 62, 0, 0 },
	/* 1 + 64 + 1 + 189 + 1 */
	{ "LEN-09_path_256", 64, 189, 0, 0, NULL, 0, 189, 0 },
	{ "LEN-09_path_257", 64, 190, 0, 501, "5.1.7", 0, 0, 0 },
	/* a 255-octet domain cannot fit a 256-octet path: 501, documented */
	{ "LEN-09_domain_255_in_path", 1, 255, 0, 501, NULL, 0, 0, 0 },
	{ "LEN-09_domain_256_in_path", 1, 256, 0, 501, NULL, 0, 0, 0 },
};

static void run_length_cases(void)
{
	struct smtp_addr a;
	const struct smtp_reject *rej;
	char dom[300];

	for (size_t i = 0; i < sizeof(len_cases) / sizeof(len_cases[0]); i++) {
		const struct len_case *l = &len_cases[i];

		case_begin(l->name);
		rej = mail_of(l->local, l->domain, l->quote, &a);
		if (l->code == 0) {
			T_CHECK(rej == NULL && (l->local_len == 0 || a.local_len == l->local_len) &&
			    (l->domain_len == 0 || a.domain_len == l->domain_len) &&
			    (!l->quoted || a.quoted));
			check_round_trip(K_MAIL, &a, 0);
		} else {
			T_CHECK(rej != NULL && rej->code == l->code &&
			    (l->enh == NULL || strcmp(rej->enh, l->enh) == 0));
		}
		case_end();
	}

	case_begin("LEN-09_path_256_via_route_dropped");
	{
		/* the route is dropped, the limit applies to what is forwarded */
		char buf[600];
		struct smtp_mail_params mp;
		size_t o = 0;

		memcpy(buf, "<@r.test:", 9);
		o = 9;
		memset(buf + o, 'l', 64);
		o += 64;
		buf[o++] = '@';
		fill_domain(buf + o, 189);
		o += 189;
		buf[o++] = '>';
		T_CHECK(smtp_mail_parse(buf, o, &a, &mp) == NULL && a.had_route);
	}
	case_end();

	case_begin("LEN-09_domain_255_helo");
	fill_domain(dom, 255);
	T_CHECK(smtp_helo_valid(dom, 255));
	dom[255] = '.';
	T_CHECK(smtp_helo_valid(dom, 256));	/* plus the trailing dot */
	case_end();

	case_begin("LEN-09_domain_256_helo");
	fill_domain(dom, 256);
	T_CHECK(!smtp_helo_valid(dom, 256));
	case_end();

	case_begin("LEN-09_rcpt_path_257");
	{
		char buf[600];
		struct smtp_rcpt_params rp;
		size_t o = 0;

		buf[o++] = '<';
		memset(buf + o, 'l', 64);
		o += 64;
		buf[o++] = '@';
		fill_domain(buf + o, 190);
		o += 190;
		buf[o++] = '>';
		rej = smtp_rcpt_parse(buf, o, &a, &rp, false);
		T_CHECK(rej != NULL && rej->code == 501 && strcmp(rej->enh, "5.1.3") == 0);
	}
	case_end();
}

/* ---- ESMTP parameters ---- */

static const struct param_case {
	const char *name;
	int rcpt;
	const char *in;
	size_t len;
	int code;
	const char *enh;
} param_cases[] = {
	{ "LEN-06_size_ok", 0, B("<a@b.test> SIZE=1000"), 0, NULL },
	{ "LEN-06_size_negative", 0, B("<a@b.test> SIZE=-1"), 501, "5.5.4" },
	{ "LEN-06_size_abc", 0, B("<a@b.test> SIZE=abc"), 501, "5.5.4" },
	{ "LEN-06_size_empty", 0, B("<a@b.test> SIZE="), 501, "5.5.4" },
	{ "LEN-06_size_no_value", 0, B("<a@b.test> SIZE"), 501, "5.5.4" },
	{ "LEN-06_size_overflow_20", 0, B("<a@b.test> SIZE=99999999999999999999"), 501, "5.5.4" },
	{ "LEN-06_size_uint64_max_plus1", 0, B("<a@b.test> SIZE=18446744073709551616"), 501,
	  "5.5.4" },
	{ "LEN-06_size_21_digits", 0, B("<a@b.test> SIZE=000000000000000000001"), 501, "5.5.4" },
	{ "LEN-06_size_plus", 0, B("<a@b.test> SIZE=+1"), 501, "5.5.4" },
	{ "LEN-06_size_twice", 0, B("<a@b.test> SIZE=1 SIZE=2"), 501, "5.5.4" },
	{ "LEN-06_size_twice_case", 0, B("<a@b.test> SIZE=1 size=1"), 501, "5.5.4" },
	{ "ADR-08_body_8bitmime", 0, B("<a@b.test> BODY=8BITMIME"), 0, NULL },
	{ "ADR-08_body_binarymime", 0, B("<a@b.test> BODY=BINARYMIME"), 0, NULL },
	{ "ADR-08_body_7bit_lower", 0, B("<a@b.test> body=7bit"), 0, NULL },
	{ "ADR-08_body_foo", 0, B("<a@b.test> BODY=FOO"), 501, "5.5.4" },
	{ "ADR-08_smtputf8_value", 0, B("<a@b.test> SMTPUTF8=yes"), 501, "5.5.4" },
	{ "ADR-08_ret_full", 0, B("<a@b.test> RET=FULL"), 0, NULL },
	{ "ADR-08_ret_all", 0, B("<a@b.test> RET=ALL"), 501, "5.5.4" },
	{ "ADR-08_envid_plus2", 0, B("<a@b.test> ENVID=+2"), 501, "5.5.4" },
	{ "ADR-08_envid_plusZZ", 0, B("<a@b.test> ENVID=+ZZ"), 501, "5.5.4" },
	{ "ADR-08_envid_lower_hex", 0, B("<a@b.test> ENVID=a+2b"), 501, "5.5.4" },
	{ "ADR-08_envid_control", 0, B("<a@b.test> ENVID=a+0Db"), 501, "5.5.4" },
	{ "ADR-08_auth_null", 0, B("<a@b.test> AUTH=<>"), 0, NULL },
	{ "ADR-08_auth_bad_xtext", 0, B("<a@b.test> AUTH=a+4"), 501, "5.5.4" },
	{ "ADR-08_unknown", 0, B("<a@b.test> FOO=bar"), 555, "5.5.4" },
	{ "ADR-08_unknown_novalue", 0, B("<a@b.test> XYZZY"), 555, "5.5.4" },
	{ "ADR-08_rcpt_param_in_mail", 0, B("<a@b.test> NOTIFY=NEVER"), 555, "5.5.4" },
	{ "ADR-08_bad_keyword", 0, B("<a@b.test> -X=1"), 501, "5.5.4" },
	{ "ADR-08_keyword_underscore", 0, B("<a@b.test> X_Y=1"), 501, "5.5.4" },
	{ "ADR-08_two_equals", 0, B("<a@b.test> SIZE=1=2"), 501, "5.5.4" },
	{ "ADR-08_bare_equals", 0, B("<a@b.test> =1"), 501, "5.5.4" },
	{ "ADR-08_8bit_value", 0, B("<a@b.test> ENVID=\xc3\xa9"), 501, "5.5.4" },
	{ "ADR-08_ctl_value", 0, B("<a@b.test> ENVID=a\001b"), 501, "5.5.4" },
	{ "ADR-08_nul_value", 0, B("<a@b.test> SIZE=1\0"), 501, "5.5.4" },
	{ "ADR-08_many_blanks", 0, B("<a@b.test>   SIZE=1  \t BODY=7BIT  "), 0, NULL },
	{ "ADR-08_notify_never_success", 1, B("<a@b.test> NOTIFY=NEVER,SUCCESS"), 501, "5.5.4" },
	{ "ADR-08_notify_repeat", 1, B("<a@b.test> NOTIFY=SUCCESS,SUCCESS"), 501, "5.5.4" },
	{ "ADR-08_notify_trailing_comma", 1, B("<a@b.test> NOTIFY=SUCCESS,"), 501, "5.5.4" },
	{ "ADR-08_notify_foo", 1, B("<a@b.test> NOTIFY=FOO"), 501, "5.5.4" },
	{ "ADR-08_notify_twice", 1, B("<a@b.test> NOTIFY=DELAY NOTIFY=DELAY"), 501, "5.5.4" },
	{ "ADR-08_orcpt_no_semicolon", 1, B("<a@b.test> ORCPT=rfc822"), 501, "5.5.4" },
	{ "ADR-08_orcpt_no_type", 1, B("<a@b.test> ORCPT=;a@b.test"), 501, "5.5.4" },
	{ "ADR-08_orcpt_empty_addr", 1, B("<a@b.test> ORCPT=rfc822;"), 501, "5.5.4" },
	{ "ADR-08_orcpt_plus2", 1, B("<a@b.test> ORCPT=rfc822;a+2"), 501, "5.5.4" },
	{ "ADR-08_orcpt_plusZZ", 1, B("<a@b.test> ORCPT=rfc822;+ZZ"), 501, "5.5.4" },
	{ "ADR-08_orcpt_long_type", 1, B("<a@b.test> ORCPT=abcdefghijklmnop;x"), 501, "5.5.4" },
	{ "ADR-08_orcpt_bad_type", 1, B("<a@b.test> ORCPT=a(b;x"), 501, "5.5.4" },
	{ "ADR-08_size_in_rcpt", 1, B("<a@b.test> SIZE=1"), 555, "5.5.4" },
	{ "ADR-08_body_no_value", 0, B("<a@b.test> BODY"), 501, "5.5.4" },
	{ "ADR-08_ret_no_value", 0, B("<a@b.test> RET"), 501, "5.5.4" },
	{ "ADR-08_envid_no_value", 0, B("<a@b.test> ENVID"), 501, "5.5.4" },
	{ "ADR-08_auth_no_value", 0, B("<a@b.test> AUTH"), 501, "5.5.4" },
	{ "ADR-08_notify_no_value", 1, B("<a@b.test> NOTIFY"), 501, "5.5.4" },
	{ "ADR-08_orcpt_no_value", 1, B("<a@b.test> ORCPT"), 501, "5.5.4" },
	{ "ADR-08_path_error_first", 1, B("<a@b..test> FOO=1"), 501, "5.1.3" },
	{ "ADR-08_param_error_before_8bit", 0, B("<\xc3\xa9@b.test> FOO=1"), 555, "5.5.4" },
};

static void run_param_cases(void)
{
	size_t i;

	for (i = 0; i < sizeof(param_cases) / sizeof(param_cases[0]); i++) {
		const struct param_case *c = &param_cases[i];
		struct smtp_addr a;
		struct smtp_mail_params mp;
		struct smtp_rcpt_params rp;
		const struct smtp_reject *rej;

		case_begin(c->name);
		if (c->rcpt)
			rej = smtp_rcpt_parse(c->in, c->len, &a, &rp, false);
		else
			rej = smtp_mail_parse(c->in, c->len, &a, &mp);
		if (c->code == 0)
			T_CHECKF(rej == NULL, "rejected %d %s %s", rej ? rej->code : 0,
				rej ? rej->enh : "", rej ? rej->text : "");
		else
			T_CHECKF(rej != NULL && rej->code == c->code
				 && strcmp(rej->enh, c->enh) == 0,
				"got %d %s, want %d %s", rej ? rej->code : 0,
				rej ? rej->enh : "-", c->code, c->enh);
		case_end();
	}
}

/* Parameter values, each a named case. */
static void run_param_values(void)
{
	struct smtp_addr a;
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;

	case_begin("param_mail_all");
	T_CHECK(smtp_mail_parse(B("<a@b.test> SIZE=12345 BODY=8BITMIME RET=HDRS "
		"ENVID=QQ+2B314 AUTH=user+40example.test SMTPUTF8"), &a, &mp) == NULL);
	T_CHECK(mp.has_size && mp.size == 12345);
	T_CHECK(mp.body == SMTP_BODY_8BITMIME);
	T_CHECK(mp.ret == SMTP_RET_HDRS);
	T_CHECK(mp.smtputf8);
	T_CHECK(mp.envid_len == 6 && memcmp(mp.envid, "QQ+314", 6) == 0);
	T_CHECK(mp.has_auth && mp.auth_len == 17
		&& memcmp(mp.auth, "user@example.test", 17) == 0);
	case_end();

	case_begin("param_mail_none");
	T_CHECK(smtp_mail_parse(B("<a@b.test>"), &a, &mp) == NULL);
	T_CHECK(!mp.has_size && mp.body == SMTP_BODY_NONE && mp.ret == SMTP_RET_NONE
		&& !mp.smtputf8 && mp.envid_len == 0 && !mp.has_auth);
	case_end();

	case_begin("LEN-06_size_uint64_max");
	T_CHECK(smtp_mail_parse(B("<a@b.test> SIZE=18446744073709551615"), &a, &mp) == NULL);
	T_CHECK(mp.has_size && mp.size == UINT64_MAX);
	case_end();

	case_begin("LEN-06_size_zero_leading");
	T_CHECK(smtp_mail_parse(B("<a@b.test> SIZE=0007"), &a, &mp) == NULL);
	T_CHECK(mp.has_size && mp.size == 7);
	case_end();

	case_begin("ADR-08_auth_null_value");
	T_CHECK(smtp_mail_parse(B("<> AUTH=<>"), &a, &mp) == NULL);
	T_CHECK(a.null && mp.has_auth && mp.auth_len == 2 && memcmp(mp.auth, "<>", 2) == 0);
	case_end();

	case_begin("ADR-08_envid_100_101");
	{
		char buf[256];
		size_t n;

		memcpy(buf, "<a@b.test> ENVID=", 17);
		memset(buf + 17, 'e', 101);
		n = 17 + 100;
		T_CHECK(smtp_mail_parse(buf, n, &a, &mp) == NULL && mp.envid_len == 100);
		T_CHECK(smtp_mail_parse(buf, n + 1, &a, &mp) != NULL);
	}
	case_end();

	case_begin("ADR-08_notify_never");
	T_CHECK(smtp_rcpt_parse(B("<a@b.test> NOTIFY=never"), &a, &rp, false) == NULL);
	T_CHECK(rp.notify == SMTP_NOTIFY_NEVER);
	case_end();

	case_begin("ADR-08_notify_list");
	T_CHECK(smtp_rcpt_parse(B("<a@b.test> NOTIFY=SUCCESS,delay,Failure"), &a, &rp, false)
		== NULL);
	T_CHECK(rp.notify == (SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY | SMTP_NOTIFY_FAILURE));
	case_end();

	case_begin("ADR-08_orcpt");
	T_CHECK(smtp_rcpt_parse(B("<a@b.test> ORCPT=RFC822;x+2By+40c.test NOTIFY=FAILURE"),
		&a, &rp, false) == NULL);
	T_CHECK(strcmp(rp.orcpt_type, "rfc822") == 0);
	T_CHECK(rp.orcpt_len == 10 && memcmp(rp.orcpt, "x+y@c.test", 10) == 0);
	T_CHECK(rp.notify == SMTP_NOTIFY_FAILURE);
	case_end();

	case_begin("ADR-08_orcpt_utf8_type");
	T_CHECK(smtp_rcpt_parse(B("<a@b.test> ORCPT=utf-8;a\\x{E9}@b.test"), &a, &rp, false)
		== NULL);
	T_CHECK(strcmp(rp.orcpt_type, "utf-8") == 0 && rp.orcpt_len == 14);
	case_end();

	case_begin("rcpt_params_none");
	T_CHECK(smtp_rcpt_parse(B("<a@b.test>"), &a, &rp, false) == NULL);
	T_CHECK(rp.notify == 0 && rp.orcpt_len == 0);
	case_end();
}

/* ---- xtext ---- */

static const struct xtext_case {
	const char *name;
	const char *in;
	size_t len;
	int ok;
	const char *out;	/* decoded */
	size_t outlen;
} xdec_cases[] = {
	{ "xtext_dec_plain", B("abc"), 1, B("abc") },
	{ "xtext_dec_plus", B("a+2Bb"), 1, B("a+b") },
	{ "xtext_dec_needless", B("+41"), 1, B("A") },
	{ "xtext_dec_nul", B("+00"), 1, B("\0") },
	{ "xtext_dec_ff", B("+FF"), 1, B("\xff") },
	{ "xtext_dec_empty", B(""), 1, B("") },
	{ "ADR-08_xtext_dec_plus2", B("+2"), 0, B("") },
	{ "ADR-08_xtext_dec_plusZZ", B("+ZZ"), 0, B("") },
	{ "xtext_dec_lower_hex", B("+2b"), 0, B("") },
	{ "xtext_dec_lone_plus", B("a+"), 0, B("") },
	{ "xtext_dec_equals", B("a=b"), 0, B("") },
	{ "xtext_dec_space", B("a b"), 0, B("") },
	{ "xtext_dec_8bit", B("\xc3\xa9"), 0, B("") },
	{ "xtext_dec_raw_nul", B("a\0"), 0, B("") },
};

static void run_xtext_cases(void)
{
	size_t i;
	unsigned char dec[64];
	char enc[64];
	int n;

	for (i = 0; i < sizeof(xdec_cases) / sizeof(xdec_cases[0]); i++) {
		const struct xtext_case *c = &xdec_cases[i];

		case_begin(c->name);
		n = smtp_xtext_decode(c->in, c->len, dec, sizeof(dec));
		if (c->ok)
			T_CHECKF(n >= 0 && (size_t)n == c->outlen
				 && memcmp(dec, c->out, c->outlen) == 0, "decode gave %d", n);
		else
			T_CHECKF(n == -1, "decode gave %d, want -1", n);
		case_end();
	}

	case_begin("xtext_enc_specials");
	n = smtp_xtext_encode((const unsigned char *)"a+b=c d", 7, enc, sizeof(enc));
	T_CHECK(n == 13 && strcmp(enc, "a+2Bb+3Dc+20d") == 0);
	case_end();

	case_begin("xtext_enc_bytes");
	n = smtp_xtext_encode((const unsigned char *)"\0\xff~!", 4, enc, sizeof(enc));
	T_CHECK(n == 8 && strcmp(enc, "+00+FF~!") == 0);
	case_end();

	case_begin("xtext_enc_no_room");
	T_CHECK(smtp_xtext_encode((const unsigned char *)"abc", 3, enc, 3) == -1);
	T_CHECK(smtp_xtext_encode((const unsigned char *)"abc", 3, enc, 4) == 3);
	T_CHECK(smtp_xtext_encode((const unsigned char *)"+", 1, enc, 3) == -1);
	T_CHECK(smtp_xtext_encode((const unsigned char *)"", 0, enc, 0) == -1);
	case_end();

	case_begin("xtext_dec_no_room");
	T_CHECK(smtp_xtext_decode("abc", 3, dec, 2) == -1);
	T_CHECK(smtp_xtext_decode("abc", 3, dec, 3) == 3);
	case_end();

	case_begin("F7_xtext_round_trip_all_bytes");
	{
		unsigned char all[256], back[256];
		char big[256 * 3 + 1];
		int k;

		for (k = 0; k < 256; k++)
			all[k] = (unsigned char)k;
		n = smtp_xtext_encode(all, 256, big, sizeof(big));
		T_CHECK(n > 0);
		for (k = 0; k < n; k++)
			T_CHECK(big[k] >= 33 && big[k] <= 126 && big[k] != '=');
		T_CHECK(smtp_xtext_decode(big, (size_t)n, back, sizeof(back)) == 256);
		T_CHECK(memcmp(all, back, 256) == 0);
	}
	case_end();
}

/* ---- HELO ---- */

static const struct helo_case {
	const char *name;
	const char *in;
	size_t len;
	int valid;
} helo_cases[] = {
	{ "helo_fqdn", B("mx.example.test"), 1 },
	{ "helo_trailing_dot", B("mx.example.test."), 1 },
	{ "helo_underscore", B("win_host.example.test"), 1 },
	{ "helo_single_label", B("localhost"), 1 },
	{ "helo_ipv4_literal", B("[192.0.2.1]"), 1 },
	{ "helo_ipv6_literal", B("[IPv6:2001:db8::1]"), 1 },
	{ "helo_upper", B("MX.EXAMPLE.TEST"), 1 },
	{ "helo_empty", B(""), 0 },
	{ "helo_bare_ip", B("192.0.2.1"), 0 },
	{ "helo_numeric_tld", B("host.123"), 0 },
	{ "helo_double_dot", B("a..b"), 0 },
	{ "helo_two_trailing_dots", B("a.test.."), 0 },
	{ "helo_leading_hyphen", B("-a.test"), 0 },
	{ "helo_trailing_hyphen", B("a-.test"), 0 },
	{ "helo_ipv4_300", B("[300.1.1.1]"), 0 },
	{ "helo_ipv6_bad", B("[IPv6:zz]"), 0 },
	{ "helo_general_literal", B("[x400:a]"), 0 },
	{ "helo_unclosed_literal", B("[1.2.3.4"), 0 },
	{ "helo_8bit", B("h\xc3\xa9.test"), 0 },
	{ "helo_space", B("a b"), 0 },
	{ "helo_nul", B("a\0b"), 0 },
	{ "helo_63_label", B("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test"), 1 },
	{ "helo_64_label", B("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test"), 0 },
};

static void run_helo_cases(void)
{
	size_t i;

	for (i = 0; i < sizeof(helo_cases) / sizeof(helo_cases[0]); i++) {
		const struct helo_case *c = &helo_cases[i];

		case_begin(c->name);
		T_CHECKF(smtp_helo_valid(c->in, c->len) == !!c->valid, "want %d", c->valid);
		case_end();
	}
}

/* ---- render ---- */

static void run_render_cases(void)
{
	struct smtp_addr a;
	char out[SMTP_PATH_MAX + 16];

	case_begin("render_no_room");
	memset(&a, 0, sizeof(a));
	memcpy(a.local, "ab", 3);
	a.local_len = 2;
	memcpy(a.domain, "c.test", 7);
	a.domain_len = 6;
	T_CHECK(smtp_addr_render(&a, out, 11) == -1);	/* "<ab@c.test>" + NUL = 12 */
	T_CHECK(smtp_addr_render(&a, out, 12) == 11 && strcmp(out, "<ab@c.test>") == 0);
	T_CHECK(smtp_addr_render(&a, out, 0) == -1);
	case_end();

	case_begin("render_null_no_room");
	memset(&a, 0, sizeof(a));
	a.null = true;
	T_CHECK(smtp_addr_render(&a, out, 2) == -1);
	T_CHECK(smtp_addr_render(&a, out, 3) == 2 && strcmp(out, "<>") == 0);
	case_end();

	case_begin("render_refuses_control");
	memset(&a, 0, sizeof(a));
	memcpy(a.local, "a\rb", 4);
	a.local_len = 3;
	memcpy(a.domain, "c.test", 7);
	a.domain_len = 6;
	T_CHECK(smtp_addr_render(&a, out, sizeof(out)) == -1);
	a.local[1] = '\0';
	T_CHECK(smtp_addr_render(&a, out, sizeof(out)) == -1);
	case_end();

	case_begin("render_refuses_bad_domain");
	memset(&a, 0, sizeof(a));
	memcpy(a.local, "a", 2);
	a.local_len = 1;
	memcpy(a.domain, "b> x", 5);
	a.domain_len = 4;
	T_CHECK(smtp_addr_render(&a, out, sizeof(out)) == -1);
	case_end();

	case_begin("render_empty_is_not_null");
	memset(&a, 0, sizeof(a));
	T_CHECK(smtp_addr_render(&a, out, sizeof(out)) == -1);
	case_end();
}

int main(void)
{
	run_cmd_cases();
	run_cmd_length_cases();
	run_verb_names();
	run_addr_cases();
	run_length_cases();
	run_param_cases();
	run_param_values();
	run_xtext_cases();
	run_helo_cases();
	run_render_cases();
	return T_DONE("smtp_parse");
}
