/*
 * smtp_parse - pure parsers for the SMTP server side (no I/O, no clock)
 *
 * PUBLIC FUNCTIONS
 *	smtp_cmd_parse()	split one command line into verb and argument
 *	smtp_verb_name()	upper-case name of a verb
 *	smtp_mail_parse()	MAIL FROM: path and ESMTP parameters
 *	smtp_rcpt_parse()	RCPT TO: path and ESMTP parameters
 *	smtp_addr_render()	canonical "<local@domain>" form of a parsed path
 *	smtp_xtext_encode()	RFC 3461 xtext encoder
 *	smtp_xtext_decode()	RFC 3461 xtext decoder
 *	smtp_helo_valid()	syntax check of a HELO/EHLO argument
 *
 * OWNERSHIP AND LIMITS
 *	Nothing is allocated and there is no static mutable state, so every
 *	function is safe to call from any thread. Input is bytes plus a
 *	length and may hold NUL; it is never read as a C string. The command
 *	argument is a pointer into the caller's line (borrowed). Addresses and
 *	parameter values are copied, decoded, into fixed buffers of the
 *	caller's structures, which are zeroed first and NUL-terminated for
 *	convenience; on failure their contents are unspecified. The rejects
 *	returned are static constants. Every loop is bounded by the input
 *	length; there is no recursion.
 *
 * COMMAND LINES (smtp_cmd_parse)
 *	The line comes without its CR LF. Longer than SMTP_CMD_LINE_MAX - 2:
 *	SMTP_P_TOOLONG (checked first). Any byte below 0x20 other than TAB, or
 *	0x7f: SMTP_P_BADCHAR, so a NUL or a bare CR can never cut one line
 *	into two commands (docs/SECURITY.md CHR-01, CHR-03). 8-bit bytes pass at
 *	this level. Blank or empty: SMTP_P_EMPTY. TAB counts as a blank.
 *	Leading blanks before the verb are skipped (Postfix does the same).
 *	The verb is matched case-insensitively and must be followed by a blank
 *	or the end of the line ("HELOX" is unknown). The HTTP methods count
 *	only when followed by a blank. MAIL and RCPT are tolerant in the way
 *	of Postfix with strict_rfc821_envelopes = no: blanks are allowed
 *	between the verb and "FROM:"/"TO:" and after the colon, but not
 *	before the colon ("MAIL FROM :" is SMTP_P_SYNTAX, as are "MAIL TO:"
 *	and a bare "MAIL"); "MAILFROM:" is an unknown verb. The argument
 *	starts after the colon for MAIL/RCPT and after the verb otherwise,
 *	with leading and trailing blanks removed.
 *
 * PATHS (smtp_mail_parse, smtp_rcpt_parse)
 *	RFC 5321 4.1.2 with RFC 6531 for 8-bit text. Choices, strict unless
 *	said otherwise (the man page documents them):
 *	- A path without angle brackets ("a@b.test") is accepted as a bare
 *	  Mailbox and is re-rendered with brackets (ADR-01). An RFC 822 phrase
 *	  ("Name <a@b.test>") is rejected: the first word is not an address.
 *	  Blanks inside the brackets are not allowed.
 *	- A source route "<@r1,@r2:u@d>" is parsed (each hop a Domain), then
 *	  dropped; had_route says there was one (ADR-02).
 *	- Dot-string local parts are strict: no leading, trailing or double
 *	  dot ("a..b@d" is refused, unlike Postfix). Quoted strings follow
 *	  qtextSMTP / quoted-pairSMTP; the local part is stored decoded and
 *	  quoted records that it arrived quoted. "" (empty) is allowed.
 *	- The domain follows the first '@' outside quotes, which is also the
 *	  last one since neither a dot-string nor a domain can hold '@'. Labels
 *	  are letters, digits and inner hyphens, <= 63 octets (labels holding
 *	  8-bit bytes, U-labels, are only bounded by the domain length). It is
 *	  lower-cased (ASCII only) and one trailing dot is removed. Address
 *	  literals are [IPv4] (each part 0..255, decimal) and [IPv6:...]
 *	  (inet_pton); both are stored in canonical form ("[10.0.0.1]",
 *	  "[IPv6:" inet_ntop "]"); general tagged literals are refused.
 *	- MAIL needs a domain; RCPT accepts "<postmaster>" (any case, stored
 *	  as "postmaster", domain_len 0). "<>" is the null sender; RCPT "<>"
 *	  is refused.
 *	- Percent hacks and bang paths are ordinary local-part characters.
 *	- Length limits apply to the canonical form moat forwards (no route,
 *	  minimal quoting, canonical literal): local part <= 64 octets as
 *	  rendered, domain <= 255, whole path with brackets <= 256. This keeps
 *	  parse(render(parse(x))) == parse(x) for the address itself (null,
 *	  utf8, literal, local, domain); quoted and had_route describe the
 *	  spelling received and are not kept by render.
 *	- Every syntax or length error is 501 5.1.7 (sender) / 501 5.1.3
 *	  (recipient); we never use 553 for length.
 *	- 8-bit bytes anywhere in the path need SMTPUTF8 (the MAIL parameter
 *	  in the same command; for RCPT the caller's flag): 553 5.6.7 without
 *	  it; with it, invalid UTF-8 (overlong, surrogate, > U+10FFFF,
 *	  truncated) is 501 5.6.7. Syntax errors are reported before
 *	  parameter errors, and those before the 8-bit checks.
 *
 * ESMTP PARAMETERS
 *	Separated from the path and from each other by one or more blanks.
 *	keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"), case-insensitive;
 *	value = 1*(%d33-60 / %d62-126). A byte outside those, 8-bit included,
 *	a bad keyword or an empty value: 501 5.5.4. Unknown keyword: 555 5.5.4.
 *	Repeated keyword: 501 5.5.4. Bad value: 501 5.5.4.
 *	MAIL: SIZE=1*20DIGIT fitting uint64 (overflow is 501, not 552),
 *	BODY=7BIT|8BITMIME|BINARYMIME, SMTPUTF8 (no value), RET=FULL|HDRS,
 *	ENVID=xtext (decoded <= SMTP_XTEXT_MAX), AUTH=xtext (decoded
 *	<= SMTP_PATH_MAX, "<>" allowed). RCPT: NOTIFY=NEVER or a list of
 *	SUCCESS, FAILURE, DELAY without repeats; ORCPT=addr-type;xtext, the
 *	type an atom of <= 15 octets (stored lower-case in orcpt_type), the
 *	decoded address (without the type) in orcpt, 1..SMTP_XTEXT_MAX*5
 *	octets. Decoded ENVID, AUTH and ORCPT values must be printable
 *	US-ASCII (RFC 3461 4.2, 4.4). Enumerated values are case-insensitive.
 *
 * XTEXT (RFC 3461 4)
 *	The encoder writes "+XX" (upper-case hex) for bytes outside 33..126
 *	and for '+' and '='. The decoder wants "+" followed by two upper-case
 *	hex digits and refuses bytes outside 33..126 and '='; it accepts an
 *	encoding that was not needed ("+41"). decode(encode(x)) == x.
 *
 * HELO (smtp_helo_valid)
 *	ASCII only. A domain whose labels are letters, digits, '-' and '_'
 *	(underscore tolerated for the sake of Windows host names), no label
 *	starting or ending with '-', each 1..63 octets, <= 255 in all, one
 *	optional trailing dot, and the last label not all digits (so a bare
 *	"1.2.3.4" is not a domain); or an address literal as above.
 */
#include "smtp_parse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* Replies (RFC 3463 enhanced codes). */
static const struct smtp_reject rj_mail_syntax = { 501, "5.1.7", "Bad sender address syntax" };
static const struct smtp_reject rj_mail_long = { 501, "5.1.7", "Sender address too long" };
static const struct smtp_reject rj_rcpt_syntax = { 501, "5.1.3", "Bad recipient address syntax" };
static const struct smtp_reject rj_rcpt_long = { 501, "5.1.3", "Recipient address too long" };
static const struct smtp_reject rj_8bit = { 553, "5.6.7",
	"Must declare SMTPUTF8 to send an 8-bit address" };
static const struct smtp_reject rj_utf8 = { 501, "5.6.7", "Invalid UTF-8 in address" };
static const struct smtp_reject rj_param_syntax = { 501, "5.5.4", "Bad parameter syntax" };
static const struct smtp_reject rj_param_unknown = { 555, "5.5.4", "Unsupported option" };
static const struct smtp_reject rj_param_dup = { 501, "5.5.4", "Duplicate parameter" };
static const struct smtp_reject rj_size = { 501, "5.5.4", "Bad SIZE value" };
static const struct smtp_reject rj_body = { 501, "5.5.4", "Bad BODY value" };
static const struct smtp_reject rj_smtputf8 = { 501, "5.5.4", "SMTPUTF8 takes no value" };
static const struct smtp_reject rj_ret = { 501, "5.5.4", "Bad RET value" };
static const struct smtp_reject rj_envid = { 501, "5.5.4", "Bad ENVID value" };
static const struct smtp_reject rj_auth = { 501, "5.5.4", "Bad AUTH value" };
static const struct smtp_reject rj_notify = { 501, "5.5.4", "Bad NOTIFY value" };
static const struct smtp_reject rj_orcpt = { 501, "5.5.4", "Bad ORCPT value" };

/* ---- character classes (locale independent, on unsigned bytes) ---- */

/* is_blank - SP or TAB */
static bool is_blank(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* is_ctl - C0 control or DEL */
static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* is_alpha - ASCII letter */
static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* is_digit - ASCII digit */
static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* to_lower - ASCII lower case, other bytes unchanged */
static unsigned char to_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* is_atext - RFC 5322 atext, plus any 8-bit byte (RFC 6531 UTF8-non-ascii;
 * whether 8-bit is allowed at all is decided per path) */
static bool is_atext(unsigned char c)
{
	if (is_alpha(c) || is_digit(c) || c >= 0x80)
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

#define LBL_8BIT       1u	/* U-labels: 8-bit bytes allowed */
#define LBL_UNDERSCORE 2u	/* HELO tolerance */

/* is_label_char - a byte that may appear in a domain label */
static bool is_label_char(unsigned char c, unsigned flags)
{
	if (is_alpha(c) || is_digit(c) || c == '-')
		return true;
	if (c >= 0x80)
		return (flags & LBL_8BIT) != 0;
	return c == '_' && (flags & LBL_UNDERSCORE);
}

/* ci_eq - does [s, s+n) equal the literal lit, ignoring ASCII case? */
static bool ci_eq(const unsigned char *s, size_t n, const char *lit)
{
	size_t i, ln = strlen(lit);	/* our own literal, not peer data */

	if (n != ln)
		return false;
	for (i = 0; i < n; i++)
		if (to_lower(s[i]) != to_lower((unsigned char)lit[i]))
			return false;
	return true;
}

/* ci_prefix - does [s, s+n) start with lit, ignoring ASCII case? */
static bool ci_prefix(const unsigned char *s, size_t n, const char *lit)
{
	size_t ln = strlen(lit);

	return n >= ln && ci_eq(s, ln, lit);
}

/* utf8_valid - well-formed UTF-8: no overlongs, surrogates, > U+10FFFF */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0, k, need;
	unsigned long cp, min;

	while (i < n) {
		unsigned char c = s[i];

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1; cp = c & 0x1fu; min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2; cp = c & 0x0fu; min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3; cp = c & 0x07u; min = 0x10000;
		} else {
			return false;
		}
		if (n - i - 1 < need)
			return false;
		for (k = 1; k <= need; k++) {
			unsigned char b = s[i + k];

			if ((b & 0xc0u) != 0x80u)
				return false;
			cp = (cp << 6) | (b & 0x3fu);
		}
		if (cp < min || cp > 0x10ffffUL || (cp >= 0xd800UL && cp <= 0xdfffUL))
			return false;
		i += need + 1;
	}
	return true;
}

/* has_8bit - any byte >= 0x80? */
static bool has_8bit(const unsigned char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] >= 0x80)
			return true;
	return false;
}

/* ---- commands ---- */

static const char *const verb_names[SMTP_V__COUNT] = {
	[SMTP_V_UNKNOWN] = "?",
	[SMTP_V_HELO] = "HELO", [SMTP_V_EHLO] = "EHLO", [SMTP_V_MAIL] = "MAIL",
	[SMTP_V_RCPT] = "RCPT", [SMTP_V_DATA] = "DATA", [SMTP_V_RSET] = "RSET",
	[SMTP_V_NOOP] = "NOOP", [SMTP_V_QUIT] = "QUIT", [SMTP_V_VRFY] = "VRFY",
	[SMTP_V_EXPN] = "EXPN", [SMTP_V_HELP] = "HELP",
	[SMTP_V_STARTTLS] = "STARTTLS", [SMTP_V_AUTH] = "AUTH",
	[SMTP_V_BDAT] = "BDAT", [SMTP_V_XCLIENT] = "XCLIENT",
	[SMTP_V_XFORWARD] = "XFORWARD", [SMTP_V_ETRN] = "ETRN",
	[SMTP_V_TURN] = "TURN", [SMTP_V_PROXY] = "PROXY", [SMTP_V_HTTP] = "HTTP",
};

/* Words recognised at the start of a line. HTTP methods only count when
 * a blank follows ("GET / HTTP/1.0"); a lone "GET" is just unknown. */
static const struct verb_row {
	const char *word;
	enum smtp_verb verb;
	bool need_blank;
} verb_rows[] = {
	{ "HELO", SMTP_V_HELO, false }, { "EHLO", SMTP_V_EHLO, false },
	{ "MAIL", SMTP_V_MAIL, false }, { "RCPT", SMTP_V_RCPT, false },
	{ "DATA", SMTP_V_DATA, false }, { "RSET", SMTP_V_RSET, false },
	{ "NOOP", SMTP_V_NOOP, false }, { "QUIT", SMTP_V_QUIT, false },
	{ "VRFY", SMTP_V_VRFY, false }, { "EXPN", SMTP_V_EXPN, false },
	{ "HELP", SMTP_V_HELP, false }, { "STARTTLS", SMTP_V_STARTTLS, false },
	{ "AUTH", SMTP_V_AUTH, false }, { "BDAT", SMTP_V_BDAT, false },
	{ "XCLIENT", SMTP_V_XCLIENT, false }, { "XFORWARD", SMTP_V_XFORWARD, false },
	{ "ETRN", SMTP_V_ETRN, false }, { "TURN", SMTP_V_TURN, false },
	{ "PROXY", SMTP_V_PROXY, false },
	{ "GET", SMTP_V_HTTP, true }, { "POST", SMTP_V_HTTP, true },
	{ "HEAD", SMTP_V_HTTP, true }, { "PUT", SMTP_V_HTTP, true },
	{ "DELETE", SMTP_V_HTTP, true }, { "CONNECT", SMTP_V_HTTP, true },
	{ "OPTIONS", SMTP_V_HTTP, true }, { "TRACE", SMTP_V_HTTP, true },
	{ "PATCH", SMTP_V_HTTP, true },
};

/* smtp_verb_name - upper-case name of a verb, "?" for unknown */
const char *smtp_verb_name(enum smtp_verb v)
{
	if ((unsigned)v >= SMTP_V__COUNT || verb_names[v] == NULL)
		return "?";
	return verb_names[v];
}

/* smtp_cmd_parse - split one command line (no CR LF) into verb and arg */
enum smtp_perr smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd)
{
	const unsigned char *s = (const unsigned char *)line;
	size_t i, pos, wstart, wend, end;
	enum smtp_verb verb = SMTP_V_UNKNOWN;

	cmd->verb = SMTP_V_UNKNOWN;
	cmd->arg = line;
	cmd->arglen = 0;

	if (len > SMTP_CMD_LINE_MAX - 2)
		return SMTP_P_TOOLONG;
	for (i = 0; i < len; i++)
		if (s[i] != '\t' && is_ctl(s[i]))
			return SMTP_P_BADCHAR;

	for (pos = 0; pos < len && is_blank(s[pos]); pos++)
		;
	if (pos == len)
		return SMTP_P_EMPTY;

	wstart = pos;
	while (pos < len && !is_blank(s[pos]))
		pos++;
	wend = pos;
	for (i = 0; i < sizeof(verb_rows) / sizeof(verb_rows[0]); i++) {
		if (!ci_eq(s + wstart, wend - wstart, verb_rows[i].word))
			continue;
		if (verb_rows[i].need_blank && wend == len)
			continue;
		verb = verb_rows[i].verb;
		break;
	}
	cmd->verb = verb;

	if (verb == SMTP_V_MAIL || verb == SMTP_V_RCPT) {
		const char *kw = verb == SMTP_V_MAIL ? "FROM:" : "TO:";

		if (pos == len)
			return SMTP_P_SYNTAX;
		while (pos < len && is_blank(s[pos]))
			pos++;
		if (!ci_prefix(s + pos, len - pos, kw))
			return SMTP_P_SYNTAX;
		pos += strlen(kw);
	}

	while (pos < len && is_blank(s[pos]))
		pos++;
	end = len;
	while (end > pos && is_blank(s[end - 1]))
		end--;
	cmd->arg = line + pos;
	cmd->arglen = end - pos;
	return SMTP_P_OK;
}

/* ---- xtext ---- */

static const char hex_upper[] = "0123456789ABCDEF";

/* hex_value - value of an upper-case hex digit, or -1 */
static int hex_value(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* smtp_xtext_encode - RFC 3461 xtext; NUL-terminates; length or -1 */
int smtp_xtext_encode(const unsigned char *in, size_t len, char *out, size_t size)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = in[i];

		if (c >= 33 && c <= 126 && c != '+' && c != '=') {
			if (size - o < 2)
				return -1;
			out[o++] = (char)c;
		} else {
			if (size - o < 4)
				return -1;
			out[o++] = '+';
			out[o++] = hex_upper[c >> 4];
			out[o++] = hex_upper[c & 0xf];
		}
		if (o > (size_t)0x7fffffff - 4)
			return -1;
	}
	if (size - o < 1)
		return -1;
	out[o] = '\0';
	return (int)o;
}

/* smtp_xtext_decode - RFC 3461 xtext to bytes (not terminated); or -1 */
int smtp_xtext_decode(const char *in, size_t len, unsigned char *out, size_t size)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0, o = 0;

	while (i < len) {
		unsigned char c = s[i];
		int hi, lo;

		if (o >= size || o >= 0x7fffffff)
			return -1;
		if (c == '+') {
			if (len - i < 3)
				return -1;
			hi = hex_value(s[i + 1]);
			lo = hex_value(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			out[o++] = (unsigned char)(hi << 4 | lo);
			i += 3;
		} else if (c >= 33 && c <= 126 && c != '=') {
			out[o++] = c;
			i++;
		} else {
			return -1;
		}
	}
	return (int)o;
}

/* ---- domains and address literals ---- */

enum scan_res { SCAN_OK = 0, SCAN_SYNTAX, SCAN_TOOLONG };

/* parse_ipv4 - exactly four decimal parts 0..255 of 1..3 digits */
static bool parse_ipv4(const unsigned char *s, size_t n, unsigned char oct[4])
{
	size_t i = 0;
	int part;

	for (part = 0; part < 4; part++) {
		unsigned v = 0;
		size_t digits = 0;

		if (part > 0) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
		while (i < n && is_digit(s[i]) && digits < 3) {
			v = v * 10 + (unsigned)(s[i] - '0');
			i++;
			digits++;
		}
		if (digits == 0 || v > 255)
			return false;
		oct[part] = (unsigned char)v;
	}
	return i == n;
}

/*
 * literal_canon - validate the inside of an address literal (between '['
 * and ']') and write its canonical form with brackets into out. Returns
 * the length, or -1 for anything but IPv4 and IPv6 literals.
 */
static int literal_canon(const unsigned char *s, size_t n, char *out, size_t size)
{
	unsigned char oct[4];
	unsigned char a6[16];
	char txt[INET6_ADDRSTRLEN + 1];
	int w;

	if (parse_ipv4(s, n, oct)) {
		w = snprintf(out, size, "[%u.%u.%u.%u]", oct[0], oct[1], oct[2], oct[3]);
	} else if (ci_prefix(s, n, "IPv6:")) {
		size_t tl = n - 5, i;

		if (tl == 0 || tl >= sizeof(txt))
			return -1;
		for (i = 0; i < tl; i++) {
			unsigned char c = s[5 + i];

			/* inet_pton wants a C string: refuse what it would
			 * stop at or that could never be part of an address */
			if (!(is_digit(c) || (to_lower(c) >= 'a' && to_lower(c) <= 'f')
			      || c == ':' || c == '.'))
				return -1;
		}
		memcpy(txt, s + 5, tl);
		txt[tl] = '\0';
		if (inet_pton(AF_INET6, txt, a6) != 1)
			return -1;
		if (inet_ntop(AF_INET6, a6, txt, sizeof(txt)) == NULL)
			return -1;
		w = snprintf(out, size, "[IPv6:%s]", txt);
	} else {
		return -1;
	}
	if (w < 0 || (size_t)w >= size)
		return -1;
	return w;
}

/*
 * scan_domain - a dot-separated list of labels starting at *pos; stops at
 * the first byte that is neither a label byte nor a dot (a single
 * trailing dot is consumed and dropped). Writes the lower-cased domain to
 * out (SMTP_DOMAIN_MAX + 1 bytes), its length to *outlen.
 */
static enum scan_res scan_domain(const unsigned char *s, size_t len, size_t *pos,
	unsigned flags, char *out, size_t *outlen)
{
	size_t i = *pos, o = 0, start, k;
	bool eight;

	for (;;) {
		start = i;
		eight = false;
		while (i < len && is_label_char(s[i], flags)) {
			if (s[i] >= 0x80)
				eight = true;
			i++;
		}
		if (i == start || s[start] == '-' || s[i - 1] == '-')
			return SCAN_SYNTAX;
		if (!eight && i - start > 63)
			return SCAN_TOOLONG;
		if (o + (o > 0) + (i - start) > SMTP_DOMAIN_MAX)
			return SCAN_TOOLONG;
		if (o > 0)
			out[o++] = '.';
		for (k = start; k < i; k++)
			out[o++] = (char)to_lower(s[k]);
		if (i < len && s[i] == '.') {
			i++;
			if (i < len && is_label_char(s[i], flags))
				continue;
		}
		break;
	}
	out[o] = '\0';
	*outlen = o;
	*pos = i;
	return SCAN_OK;
}

/* scan_domain_or_literal - Domain, or address-literal when s[*pos] is '[' */
static enum scan_res scan_domain_or_literal(const unsigned char *s, size_t len,
	size_t *pos, struct smtp_addr *a)
{
	size_t i = *pos, j;
	int w;

	if (i < len && s[i] == '[') {
		for (j = i + 1; j < len && s[j] != ']'; j++)
			;
		if (j == len)
			return SCAN_SYNTAX;
		w = literal_canon(s + i + 1, j - i - 1, a->domain, sizeof(a->domain));
		if (w < 0)
			return SCAN_SYNTAX;
		a->domain_len = (size_t)w;
		a->literal = true;
		*pos = j + 1;
		return SCAN_OK;
	}
	return scan_domain(s, len, pos, LBL_8BIT, a->domain, &a->domain_len);
}

/* ---- local parts and paths ---- */

/* local_append - add one decoded byte to the local part */
static bool local_append(struct smtp_addr *a, unsigned char c)
{
	if (a->local_len >= SMTP_LOCAL_MAX)
		return false;
	a->local[a->local_len++] = (char)c;
	a->local[a->local_len] = '\0';
	return true;
}

/* scan_quoted - Quoted-string at s[*pos] == '"', decoded into a->local */
static enum scan_res scan_quoted(const unsigned char *s, size_t len, size_t *pos,
	struct smtp_addr *a)
{
	size_t i = *pos + 1;

	a->quoted = true;
	while (i < len) {
		unsigned char c = s[i];

		if (c == '"') {
			*pos = i + 1;
			return SCAN_OK;
		}
		if (c == '\\') {
			if (i + 1 >= len || s[i + 1] < 32 || s[i + 1] > 126)
				return SCAN_SYNTAX;
			c = s[i + 1];
			i += 2;
		} else if ((c >= 32 && c <= 126) || c >= 0x80) {
			i++;
		} else {
			return SCAN_SYNTAX;
		}
		if (!local_append(a, c))
			return SCAN_TOOLONG;
	}
	return SCAN_SYNTAX;		/* unterminated */
}

/* scan_dot_string - Atom *("." Atom) into a->local */
static enum scan_res scan_dot_string(const unsigned char *s, size_t len, size_t *pos,
	struct smtp_addr *a)
{
	size_t i = *pos;

	for (;;) {
		size_t start = i;

		while (i < len && is_atext(s[i])) {
			if (!local_append(a, s[i]))
				return SCAN_TOOLONG;
			i++;
		}
		if (i == start)
			return SCAN_SYNTAX;	/* empty atom: leading, double or trailing dot */
		if (i < len && s[i] == '.') {
			if (!local_append(a, '.'))
				return SCAN_TOOLONG;
			i++;
			continue;
		}
		break;
	}
	*pos = i;
	return SCAN_OK;
}

/* scan_mailbox - Local-part ["@" (Domain / address-literal)];
 * *has_domain says whether the "@" part was there */
static enum scan_res scan_mailbox(const unsigned char *s, size_t len, size_t *pos,
	struct smtp_addr *a, bool *has_domain)
{
	enum scan_res r;
	size_t i = *pos;

	*has_domain = false;
	if (i < len && s[i] == '"')
		r = scan_quoted(s, len, &i, a);
	else
		r = scan_dot_string(s, len, &i, a);
	if (r != SCAN_OK)
		return r;
	if (i < len && s[i] == '@') {
		i++;
		r = scan_domain_or_literal(s, len, &i, a);
		if (r != SCAN_OK)
			return r;
		*has_domain = true;
	}
	*pos = i;
	return SCAN_OK;
}

/* scan_route - A-d-l ":" at s[*pos] == '@'; the hops are checked and dropped */
static enum scan_res scan_route(const unsigned char *s, size_t len, size_t *pos)
{
	char hop[SMTP_DOMAIN_MAX + 1];
	size_t hoplen, i = *pos;
	enum scan_res r;

	for (;;) {
		if (i >= len || s[i] != '@')
			return SCAN_SYNTAX;
		i++;
		r = scan_domain(s, len, &i, LBL_8BIT, hop, &hoplen);
		if (r != SCAN_OK)
			return r;
		if (i < len && s[i] == ',') {
			i++;
			continue;
		}
		if (i < len && s[i] == ':') {
			*pos = i + 1;
			return SCAN_OK;
		}
		return SCAN_SYNTAX;
	}
}

/* local_render_len - length of the local part as smtp_addr_render writes it */
static size_t local_render_len(const char *l, size_t n, bool *needs_quotes)
{
	const unsigned char *s = (const unsigned char *)l;
	size_t i, extra = 0;
	bool dot_ok = n > 0 && s[0] != '.' && s[n - 1] != '.';

	for (i = 0; i < n && dot_ok; i++) {
		if (s[i] == '.')
			dot_ok = s[i + 1] != '.';	/* s[n - 1] is not '.' */
		else if (!is_atext(s[i]))
			dot_ok = false;
	}
	*needs_quotes = !dot_ok;
	if (dot_ok)
		return n;
	for (i = 0; i < n; i++)
		if (s[i] == '"' || s[i] == '\\')
			extra++;
	return n + extra + 2;
}

/*
 * parse_path - the path at the start of [s, s+len) (after blanks), which
 * must end at a blank or at the end. *end is set past it; *span_start is
 * the start of the path bytes (for the 8-bit check).
 */
static enum scan_res parse_path(const unsigned char *s, size_t len, size_t *end,
	size_t *span_start, struct smtp_addr *a, bool rcpt)
{
	char buf[SMTP_PATH_MAX + 1];
	size_t i = 0;
	bool has_domain = false, needs_quotes;
	enum scan_res r;

	memset(a, 0, sizeof(*a));
	while (i < len && is_blank(s[i]))
		i++;
	*span_start = i;
	if (i < len && s[i] == '<') {
		i++;
		if (i < len && s[i] == '>') {
			a->null = true;
			i++;
		} else {
			if (i < len && s[i] == '@') {
				r = scan_route(s, len, &i);
				if (r != SCAN_OK)
					return r;
				a->had_route = true;
			}
			r = scan_mailbox(s, len, &i, a, &has_domain);
			if (r != SCAN_OK)
				return r;
			if (i >= len || s[i] != '>')
				return SCAN_SYNTAX;
			i++;
		}
	} else {
		/* ADR-01: a bare Mailbox, no route, no null */
		r = scan_mailbox(s, len, &i, a, &has_domain);
		if (r != SCAN_OK)
			return r;
	}
	if (i < len && !is_blank(s[i]))
		return SCAN_SYNTAX;
	*end = i;

	if (a->null)
		return SCAN_OK;
	if (!has_domain) {
		if (!rcpt || a->quoted || a->had_route
		    || !ci_eq((const unsigned char *)a->local, a->local_len, "postmaster"))
			return SCAN_SYNTAX;
		memcpy(a->local, "postmaster", sizeof("postmaster"));
	}
	a->utf8 = has_8bit((const unsigned char *)a->local, a->local_len)
		|| has_8bit((const unsigned char *)a->domain, a->domain_len);
	if (local_render_len(a->local, a->local_len, &needs_quotes) > SMTP_LOCAL_MAX)
		return SCAN_TOOLONG;
	if (smtp_addr_render(a, buf, sizeof(buf)) < 0)
		return SCAN_TOOLONG;
	return SCAN_OK;
}

/* path_8bit_check - the SMTPUTF8 rules for the bytes of the path */
static const struct smtp_reject *path_8bit_check(const unsigned char *s, size_t n,
	bool smtputf8)
{
	if (!has_8bit(s, n))
		return NULL;
	if (!smtputf8)
		return &rj_8bit;
	if (!utf8_valid(s, n))
		return &rj_utf8;
	return NULL;
}

/* ---- ESMTP parameters ---- */

enum param_id {
	PARAM_SIZE, PARAM_BODY, PARAM_SMTPUTF8, PARAM_RET, PARAM_ENVID, PARAM_AUTH,
	PARAM_NOTIFY, PARAM_ORCPT
};

static const struct param_row {
	const char *name;
	enum param_id id;
	bool rcpt;		/* RCPT parameter, else MAIL */
} param_rows[] = {
	{ "SIZE", PARAM_SIZE, false }, { "BODY", PARAM_BODY, false },
	{ "SMTPUTF8", PARAM_SMTPUTF8, false }, { "RET", PARAM_RET, false },
	{ "ENVID", PARAM_ENVID, false }, { "AUTH", PARAM_AUTH, false },
	{ "NOTIFY", PARAM_NOTIFY, true }, { "ORCPT", PARAM_ORCPT, true },
};

/* The parsed parameter; value is NULL when there was no "=". */
struct param {
	enum param_id id;
	const unsigned char *value;
	size_t vlen;
};

/* printable_ascii - only 0x20..0x7e? */
static bool printable_ascii(const unsigned char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

/* decode_xtext_value - xtext value into out[cap + 1], 1..cap printable
 * octets, NUL-terminated; returns the length or -1 */
static int decode_xtext_value(const struct param *pa, unsigned char *out, size_t cap)
{
	int n;

	n = smtp_xtext_decode((const char *)pa->value, pa->vlen, out, cap);
	if (n <= 0 || !printable_ascii(out, (size_t)n))
		return -1;
	out[n] = '\0';
	return n;
}

/* mail_param - the value of one MAIL parameter into p */
static const struct smtp_reject *mail_param(const struct param *pa,
	struct smtp_mail_params *p)
{
	const unsigned char *v = pa->value;
	size_t n = pa->vlen, i;
	int d;

	if (pa->id == PARAM_SMTPUTF8) {
		if (v != NULL)
			return &rj_smtputf8;
		p->smtputf8 = true;
		return NULL;
	}
	if (v == NULL) {
		switch (pa->id) {
		case PARAM_SIZE: return &rj_size;
		case PARAM_BODY: return &rj_body;
		case PARAM_RET: return &rj_ret;
		case PARAM_ENVID: return &rj_envid;
		default: return &rj_auth;
		}
	}
	switch (pa->id) {
	case PARAM_SIZE:
		if (n == 0 || n > 20)
			return &rj_size;
		p->size = 0;
		for (i = 0; i < n; i++) {
			unsigned dv;

			if (!is_digit(v[i]))
				return &rj_size;
			dv = (unsigned)(v[i] - '0');
			if (p->size > (UINT64_MAX - dv) / 10)
				return &rj_size;
			p->size = p->size * 10 + dv;
		}
		p->has_size = true;
		return NULL;
	case PARAM_BODY:
		if (ci_eq(v, n, "7BIT"))
			p->body = SMTP_BODY_7BIT;
		else if (ci_eq(v, n, "8BITMIME"))
			p->body = SMTP_BODY_8BITMIME;
		else if (ci_eq(v, n, "BINARYMIME"))
			p->body = SMTP_BODY_BINARYMIME;
		else
			return &rj_body;
		return NULL;
	case PARAM_RET:
		if (ci_eq(v, n, "FULL"))
			p->ret = SMTP_RET_FULL;
		else if (ci_eq(v, n, "HDRS"))
			p->ret = SMTP_RET_HDRS;
		else
			return &rj_ret;
		return NULL;
	case PARAM_ENVID:
		d = decode_xtext_value(pa, p->envid, SMTP_XTEXT_MAX);
		if (d < 0)
			return &rj_envid;
		p->envid_len = (size_t)d;
		return NULL;
	case PARAM_AUTH:
		d = decode_xtext_value(pa, p->auth, SMTP_PATH_MAX);
		if (d < 0)
			return &rj_auth;
		p->auth_len = (size_t)d;
		p->has_auth = true;
		return NULL;
	default:
		return &rj_param_unknown;
	}
}

/* rcpt_notify - NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY */
static const struct smtp_reject *rcpt_notify(const unsigned char *v, size_t n,
	struct smtp_rcpt_params *p)
{
	size_t i = 0, start;
	unsigned bit, seen = 0;

	for (;;) {
		start = i;
		while (i < n && v[i] != ',')
			i++;
		if (ci_eq(v + start, i - start, "NEVER"))
			bit = SMTP_NOTIFY_NEVER;
		else if (ci_eq(v + start, i - start, "SUCCESS"))
			bit = SMTP_NOTIFY_SUCCESS;
		else if (ci_eq(v + start, i - start, "FAILURE"))
			bit = SMTP_NOTIFY_FAILURE;
		else if (ci_eq(v + start, i - start, "DELAY"))
			bit = SMTP_NOTIFY_DELAY;
		else
			return &rj_notify;
		if (seen & bit)
			return &rj_notify;
		seen |= bit;
		if (i == n)
			break;
		i++;		/* the comma; an empty item after it fails above */
	}
	if ((seen & SMTP_NOTIFY_NEVER) && seen != SMTP_NOTIFY_NEVER)
		return &rj_notify;
	p->notify = seen;
	return NULL;
}

/* rcpt_param - the value of one RCPT parameter into p */
static const struct smtp_reject *rcpt_param(const struct param *pa,
	struct smtp_rcpt_params *p)
{
	const unsigned char *v = pa->value;
	size_t n = pa->vlen, semi, k;
	int d;

	if (pa->id == PARAM_NOTIFY)
		return v == NULL ? &rj_notify : rcpt_notify(v, n, p);
	if (pa->id != PARAM_ORCPT)
		return &rj_param_unknown;
	if (v == NULL)
		return &rj_orcpt;
	for (semi = 0; semi < n && v[semi] != ';'; semi++)
		;
	if (semi == 0 || semi == n || semi >= sizeof(p->orcpt_type))
		return &rj_orcpt;
	for (k = 0; k < semi; k++) {
		if (v[k] >= 0x80 || !is_atext(v[k]))
			return &rj_orcpt;
		p->orcpt_type[k] = (char)to_lower(v[k]);
	}
	p->orcpt_type[semi] = '\0';
	{
		struct param rest = { pa->id, v + semi + 1, n - semi - 1 };

		d = decode_xtext_value(&rest, p->orcpt, SMTP_XTEXT_MAX * 5);
	}
	if (d < 0)
		return &rj_orcpt;
	p->orcpt_len = (size_t)d;
	return NULL;
}

/*
 * parse_params - the blank-separated parameters in [s, s+len); rcpt picks
 * the table. Returns NULL or the reject.
 */
static const struct smtp_reject *parse_params(const unsigned char *s, size_t len,
	bool rcpt, struct smtp_mail_params *mp, struct smtp_rcpt_params *rp)
{
	size_t i = 0, start, eq, k, r;
	unsigned seen = 0;
	const struct smtp_reject *rej;

	while (i < len) {
		struct param pa;
		bool found = false, has_eq;

		if (is_blank(s[i])) {
			i++;
			continue;
		}
		start = i;
		has_eq = false;
		eq = len;
		while (i < len && !is_blank(s[i])) {
			if (s[i] < 33 || s[i] > 126)
				return &rj_param_syntax;
			if (s[i] == '=') {
				if (has_eq)	/* '=' is not an esmtp-value byte */
					return &rj_param_syntax;
				has_eq = true;
				eq = i;
			}
			i++;
		}
		if (!has_eq)
			eq = i;
		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		if (eq == start || s[start] == '-')
			return &rj_param_syntax;
		for (k = start; k < eq; k++)
			if (!is_alpha(s[k]) && !is_digit(s[k]) && s[k] != '-')
				return &rj_param_syntax;
		if (eq < i && eq + 1 == i)
			return &rj_param_syntax;	/* "KEY=" with no value */
		for (r = 0; r < sizeof(param_rows) / sizeof(param_rows[0]); r++) {
			if (param_rows[r].rcpt == rcpt
			    && ci_eq(s + start, eq - start, param_rows[r].name)) {
				found = true;
				break;
			}
		}
		if (!found)
			return &rj_param_unknown;
		pa.id = param_rows[r].id;
		if (seen & (1u << pa.id))
			return &rj_param_dup;
		seen |= 1u << pa.id;
		pa.value = eq < i ? s + eq + 1 : NULL;
		pa.vlen = eq < i ? i - eq - 1 : 0;
		rej = rcpt ? rcpt_param(&pa, rp) : mail_param(&pa, mp);
		if (rej != NULL)
			return rej;
	}
	return NULL;
}

/* ---- public path functions ---- */

/* smtp_mail_parse - MAIL FROM: argument; NULL or the reply to send */
const struct smtp_reject *smtp_mail_parse(const char *arg, size_t len,
	struct smtp_addr *addr, struct smtp_mail_params *p)
{
	const unsigned char *s = (const unsigned char *)arg;
	size_t end = 0, span = 0;
	const struct smtp_reject *rej;

	memset(p, 0, sizeof(*p));
	switch (parse_path(s, len, &end, &span, addr, false)) {
	case SCAN_OK:
		break;
	case SCAN_TOOLONG:
		return &rj_mail_long;
	default:
		return &rj_mail_syntax;
	}
	rej = parse_params(s + end, len - end, false, p, NULL);
	if (rej != NULL)
		return rej;
	return path_8bit_check(s + span, end - span, p->smtputf8);
}

/* smtp_rcpt_parse - RCPT TO: argument; NULL or the reply to send */
const struct smtp_reject *smtp_rcpt_parse(const char *arg, size_t len,
	struct smtp_addr *addr, struct smtp_rcpt_params *p, bool smtputf8)
{
	const unsigned char *s = (const unsigned char *)arg;
	size_t end = 0, span = 0;
	const struct smtp_reject *rej;

	memset(p, 0, sizeof(*p));
	switch (parse_path(s, len, &end, &span, addr, true)) {
	case SCAN_OK:
		break;
	case SCAN_TOOLONG:
		return &rj_rcpt_long;
	default:
		return &rj_rcpt_syntax;
	}
	if (addr->null)
		return &rj_rcpt_syntax;
	rej = parse_params(s + end, len - end, true, NULL, p);
	if (rej != NULL)
		return rej;
	return path_8bit_check(s + span, end - span, smtputf8);
}

/* smtp_addr_render - "<local@domain>", "<>" or "<postmaster>"; length or -1 */
int smtp_addr_render(const struct smtp_addr *a, char *out, size_t size)
{
	size_t o = 0, i, need;
	bool quote;

	if (size == 0)
		return -1;
	if (a->null) {
		if (size < 3)
			return -1;
		memcpy(out, "<>", 3);
		return 2;
	}
	if (a->local_len > SMTP_LOCAL_MAX || a->domain_len > SMTP_DOMAIN_MAX
	    || (a->local_len == 0 && a->domain_len == 0))
		return -1;
	/* refuse what no path can carry, so the output is always one path */
	for (i = 0; i < a->local_len; i++)
		if (is_ctl((unsigned char)a->local[i]))
			return -1;
	for (i = 0; i < a->domain_len; i++) {
		unsigned char c = (unsigned char)a->domain[i];

		if (is_ctl(c) || c == ' ' || c == '<' || c == '>' || c == '@'
		    || c == '"' || c == '\\' || c == ',')
			return -1;
	}
	need = local_render_len(a->local, a->local_len, &quote) + 2
		+ (a->domain_len ? a->domain_len + 1 : 0);
	if (need + 1 > size)
		return -1;
	out[o++] = '<';
	if (quote)
		out[o++] = '"';
	for (i = 0; i < a->local_len; i++) {
		if (quote && (a->local[i] == '"' || a->local[i] == '\\'))
			out[o++] = '\\';
		out[o++] = a->local[i];
	}
	if (quote)
		out[o++] = '"';
	if (a->domain_len) {
		out[o++] = '@';
		memcpy(out + o, a->domain, a->domain_len);
		o += a->domain_len;
	}
	out[o++] = '>';
	out[o] = '\0';
	return (int)o;
}

/* smtp_helo_valid - domain or address literal, ASCII, <= 255 */
bool smtp_helo_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	char dom[SMTP_DOMAIN_MAX + 1];
	size_t pos = 0, dlen = 0, last;
	bool numeric = true;

	if (len == 0 || has_8bit(u, len))
		return false;
	if (u[0] == '[') {
		if (len < 2 || u[len - 1] != ']')
			return false;
		return literal_canon(u + 1, len - 2, dom, sizeof(dom)) > 0;
	}
	if (scan_domain(u, len, &pos, LBL_UNDERSCORE, dom, &dlen) != SCAN_OK || pos != len)
		return false;
	for (last = dlen; last > 0 && dom[last - 1] != '.'; last--)
		;
	for (; last < dlen; last++)
		if (!is_digit((unsigned char)dom[last]))
			numeric = false;
	return !numeric;
}
