// sources: core/smtp_parse.c
/*
 * fuzz_addr - F2/F7: the MAIL/RCPT argument parser, xtext and HELO check
 *
 * Input: byte 0 picks the mode (bit 0: RCPT instead of MAIL; bit 1: the
 * RCPT smtputf8 flag), the rest is the argument as the command parser
 * would hand it over. Properties, each an abort() when violated:
 *   - an accepted address is grammar-valid (lengths, NUL-terminated
 *     buffers, lower-case domain, valid literal, no control bytes, 8-bit
 *     only with SMTPUTF8 and then valid UTF-8);
 *   - its domain equals what an independent parser takes from the rendered
 *     form (the text after the last '@', brackets stripped);
 *   - parse(render(parse(x))) == parse(x) on the address value, and render
 *     is idempotent;
 *   - accepted parameters re-rendered from the parsed values parse back to
 *     the same values (the values forwarded upstream are re-rendered);
 *   - xtext: decode(encode(x)) == x, the encoder's alphabet is valid, and
 *     anything the decoder accepts survives encode/decode;
 *   - smtp_helo_valid() accepts only ASCII of at most 256 bytes.
 * Nothing is allocated, so there is no memory cap to enforce besides
 * libFuzzer's -rss_limit_mb.
 */
#include "smtp_parse.h"

#include <arpa/inet.h>
#include <stdio.h>
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

static int any_8bit(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1;
	return 0;
}

/* check_domain - independent check of the stored domain's form */
static void check_domain(const struct smtp_addr *a)
{
	const char *d = a->domain;
	size_t n = a->domain_len, i;
	char ip[64];
	unsigned char bin[16];

	if (n == 0 || n > SMTP_DOMAIN_MAX || d[n] != '\0')
		abort();
	if (a->literal) {
		if (d[0] != '[' || d[n - 1] != ']' || n - 2 >= sizeof(ip))
			abort();
		if (n > 7 && memcmp(d, "[IPv6:", 6) == 0) {
			memcpy(ip, d + 6, n - 7);
			ip[n - 7] = '\0';
			if (inet_pton(AF_INET6, ip, bin) != 1)
				abort();
		} else {
			memcpy(ip, d + 1, n - 2);
			ip[n - 2] = '\0';
			if (inet_pton(AF_INET, ip, bin) != 1)
				abort();
		}
		return;
	}
	if (d[0] == '.' || d[n - 1] == '.')
		abort();
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)d[i];

		if (c == '.' && d[i + 1] == '.')
			abort();
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'
		      || c >= 0x80))
			abort();
	}
}

/* check_addr - the properties of an accepted address (rcpt: RCPT was used) */
static void check_addr(const struct smtp_addr *a, int rcpt, int smtputf8)
{
	char out[SMTP_PATH_MAX + 1], out2[SMTP_PATH_MAX + 1], line[SMTP_PATH_MAX + 16];
	struct smtp_addr b;
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;
	const struct smtp_reject *rej;
	const char *at;
	size_t i;
	int n, n2;

	n = smtp_addr_render(a, out, sizeof(out));
	if (n < 2 || n > SMTP_PATH_MAX || out[n] != '\0' || out[0] != '<' || out[n - 1] != '>')
		abort();
	for (i = 0; i < (size_t)n; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			abort();
	if (a->null) {
		if (rcpt || n != 2 || a->local_len != 0 || a->domain_len != 0)
			abort();
	} else {
		if (a->local_len > SMTP_LOCAL_MAX || a->local[a->local_len] != '\0')
			abort();
		if (a->utf8 != (any_8bit(a->local, a->local_len)
				|| any_8bit(a->domain, a->domain_len)))
			abort();
		if (a->utf8 && !smtputf8)
			abort();
		if (a->domain_len == 0) {
			if (!rcpt || strcmp(out, "<postmaster>") != 0)
				abort();
		} else {
			check_domain(a);
			at = memrchr(out, '@', (size_t)n);
			if (at == NULL || (size_t)(out + n - 1 - (at + 1)) != a->domain_len
			    || memcmp(at + 1, a->domain, a->domain_len) != 0)
				abort();
		}
	}

	memcpy(line, out, (size_t)n);
	if (!rcpt && smtputf8) {
		memcpy(line + n, " SMTPUTF8", 9);
		n2 = n + 9;
	} else {
		n2 = n;
	}
	if (rcpt)
		rej = smtp_rcpt_parse(line, (size_t)n2, &b, &rp, smtputf8 != 0);
	else
		rej = smtp_mail_parse(line, (size_t)n2, &b, &mp);
	if (rej != NULL || !addr_same(a, &b) || b.quoted != (out[1] == '"') || b.had_route)
		abort();
	if (smtp_addr_render(&b, out2, sizeof(out2)) != n || memcmp(out, out2, (size_t)n) != 0)
		abort();
}

/* put_xtext - append "KEY=" xtext(v) to line */
static size_t put_xtext(char *line, size_t o, size_t cap, const char *key,
	const unsigned char *v, size_t n)
{
	int w;

	w = snprintf(line + o, cap - o, " %s", key);
	if (w < 0 || (size_t)w >= cap - o)
		abort();
	o += (size_t)w;
	w = smtp_xtext_encode(v, n, line + o, cap - o);
	if (w < 0)
		abort();
	return o + (size_t)w;
}

static size_t put_str(char *line, size_t o, size_t cap, const char *s)
{
	int w = snprintf(line + o, cap - o, " %s", s);

	if (w < 0 || (size_t)w >= cap - o)
		abort();
	return o + (size_t)w;
}

/* check_mail_params - re-render the parsed parameters and parse them back */
static void check_mail_params(const struct smtp_addr *a, const struct smtp_mail_params *p)
{
	static const char *const body[] = { "", "7BIT", "8BITMIME", "BINARYMIME" };
	char line[4096], num[32];
	struct smtp_addr b;
	struct smtp_mail_params q;
	size_t o;
	int n;

	n = smtp_addr_render(a, line, sizeof(line));
	if (n < 0)
		abort();
	o = (size_t)n;
	if (p->has_size) {
		snprintf(num, sizeof(num), "SIZE=%llu", (unsigned long long)p->size);
		o = put_str(line, o, sizeof(line), num);
	}
	if (p->body != SMTP_BODY_NONE) {
		snprintf(num, sizeof(num), "BODY=%s", body[p->body]);
		o = put_str(line, o, sizeof(line), num);
	}
	if (p->smtputf8)
		o = put_str(line, o, sizeof(line), "SMTPUTF8");
	if (p->ret != SMTP_RET_NONE)
		o = put_str(line, o, sizeof(line), p->ret == SMTP_RET_FULL ? "RET=FULL" : "RET=HDRS");
	if (p->envid_len)
		o = put_xtext(line, o, sizeof(line), "ENVID=", p->envid, p->envid_len);
	if (p->has_auth)
		o = put_xtext(line, o, sizeof(line), "AUTH=", p->auth, p->auth_len);
	if (smtp_mail_parse(line, o, &b, &q) != NULL || !addr_same(a, &b))
		abort();
	if (q.has_size != p->has_size || q.size != p->size || q.body != p->body
	    || q.smtputf8 != p->smtputf8 || q.ret != p->ret || q.envid_len != p->envid_len
	    || memcmp(q.envid, p->envid, p->envid_len) != 0 || q.has_auth != p->has_auth
	    || q.auth_len != p->auth_len || memcmp(q.auth, p->auth, p->auth_len) != 0)
		abort();
}

static void check_rcpt_params(const struct smtp_addr *a, const struct smtp_rcpt_params *p,
	int smtputf8)
{
	char line[4096], key[40];
	struct smtp_addr b;
	struct smtp_rcpt_params q;
	size_t o;
	int n;

	n = smtp_addr_render(a, line, sizeof(line));
	if (n < 0)
		abort();
	o = (size_t)n;
	if (p->notify) {
		if ((p->notify & SMTP_NOTIFY_NEVER) && p->notify != SMTP_NOTIFY_NEVER)
			abort();
		snprintf(key, sizeof(key), "NOTIFY=%s%s%s%s",
			(p->notify & SMTP_NOTIFY_NEVER) ? "NEVER," : "",
			(p->notify & SMTP_NOTIFY_SUCCESS) ? "SUCCESS," : "",
			(p->notify & SMTP_NOTIFY_FAILURE) ? "FAILURE," : "",
			(p->notify & SMTP_NOTIFY_DELAY) ? "DELAY," : "");
		key[strlen(key) - 1] = '\0';	/* the last comma */
		o = put_str(line, o, sizeof(line), key);
	}
	if (p->orcpt_len) {
		if (p->orcpt_type[0] == '\0' || strlen(p->orcpt_type) >= sizeof(p->orcpt_type))
			abort();
		snprintf(key, sizeof(key), "ORCPT=%s;", p->orcpt_type);
		o = put_xtext(line, o, sizeof(line), key, p->orcpt, p->orcpt_len);
	}
	if (smtp_rcpt_parse(line, o, &b, &q, smtputf8 != 0) != NULL || !addr_same(a, &b))
		abort();
	if (q.notify != p->notify || q.orcpt_len != p->orcpt_len
	    || memcmp(q.orcpt, p->orcpt, p->orcpt_len) != 0
	    || strcmp(q.orcpt_type, p->orcpt_type) != 0)
		abort();
}

static void check_reject(const struct smtp_reject *r)
{
	if (r->code < 500 || r->code > 559 || r->enh == NULL || r->text == NULL
	    || r->enh[0] != '5')
		abort();
}

static void check_xtext(const unsigned char *d, size_t n)
{
	char enc[3 * 4096 + 1];
	unsigned char dec[4096], dec2[4096];
	int e, k, i;

	if (n > 4096)
		n = 4096;
	e = smtp_xtext_encode(d, n, enc, sizeof(enc));
	if (e < 0 || (size_t)e < n || enc[e] != '\0')
		abort();
	for (i = 0; i < e; i++)
		if (enc[i] < 33 || enc[i] > 126 || enc[i] == '=')
			abort();
	k = smtp_xtext_decode(enc, (size_t)e, dec, sizeof(dec));
	if (k < 0 || (size_t)k != n || memcmp(dec, d, n) != 0)
		abort();

	k = smtp_xtext_decode((const char *)d, n, dec, sizeof(dec));
	if (k >= 0) {
		if ((size_t)k > n)
			abort();
		e = smtp_xtext_encode(dec, (size_t)k, enc, sizeof(enc));
		if (e < 0)
			abort();
		if (smtp_xtext_decode(enc, (size_t)e, dec2, sizeof(dec2)) != k
		    || memcmp(dec, dec2, (size_t)k) != 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct smtp_addr a;
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;
	const struct smtp_reject *rej;
	const char *arg;
	size_t len, i;
	int rcpt, utf8;

	if (size < 1)
		return 0;
	rcpt = data[0] & 1;
	utf8 = (data[0] >> 1) & 1;
	arg = (const char *)data + 1;
	len = size - 1;

	if (rcpt) {
		rej = smtp_rcpt_parse(arg, len, &a, &rp, utf8 != 0);
		if (rej == NULL) {
			check_addr(&a, 1, utf8);
			check_rcpt_params(&a, &rp, utf8);
		} else {
			check_reject(rej);
		}
	} else {
		rej = smtp_mail_parse(arg, len, &a, &mp);
		if (rej == NULL) {
			check_addr(&a, 0, mp.smtputf8);
			check_mail_params(&a, &mp);
		} else {
			check_reject(rej);
		}
	}

	check_xtext((const unsigned char *)arg, len);

	if (smtp_helo_valid(arg, len)) {
		if (len > SMTP_DOMAIN_MAX + 1)
			abort();
		for (i = 0; i < len; i++)
			if ((unsigned char)arg[i] >= 0x80 || (unsigned char)arg[i] <= 0x20)
				abort();
	}
	return 0;
}
