/*
 * conf - the settings of the moat policy file (see conf.h)
 *
 * SETTINGS TABLE
 *	Every setting is a row {name, type, offset, min, max, default}. The
 *	types are string, hostname, count, size (k/m/g suffixes, powers of
 *	1024), duration (ms/s/m/h/d; a bare number is seconds, stored in ms),
 *	enumerated word, and address (ADDR:PORT). Each statement is one line:
 *	the setting's name, then its value. A setting given twice is an
 *	error, except "listen", which adds a listener each time (its options,
 *	submission, implicit-tls and no-starttls, follow the address).
 *
 * ERRORS
 *	Every error is collected with FILE:LINE:COL and what was expected;
 *	the load fails at the end when any was found (never a half-applied
 *	configuration).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <glob.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "conf_dkim.h"
#include "conf_dnsbl.h"
#include "conf_ratelimit.h"
#include "dnsbl.h"
#include "filter.h"
#include "lex.h"
#include "lists.h"
#include "log.h"
#include "rfile.h"
#include "rules.h"
#include "xalloc.h"

#define CONF_FILE_MAX (16u << 20)

enum conf_type { CT_STR, CT_HOST, CT_COUNT, CT_SIZE, CT_DUR, CT_ENUM, CT_ADDR, CT_LISTEN };

struct conf_enum { const char *name; int value; };

static const struct conf_enum conf_identity_words[] = {
	{ "xclient", CONF_ID_XCLIENT }, { "proxy-v1", CONF_ID_PROXY_V1 },
	{ "proxy-v2", CONF_ID_PROXY_V2 }, { "none", CONF_ID_NONE }, { NULL, 0 }
};
static const struct conf_enum conf_barelf_words[] = {
	{ "normalise", CONF_BARELF_NORMALISE }, { "normalize", CONF_BARELF_NORMALISE },
	{ "reject", CONF_BARELF_REJECT }, { NULL, 0 }
};
static const struct conf_enum conf_yesno_words[] = {
	{ "yes", 1 }, { "no", 0 }, { NULL, 0 }
};
static const struct conf_enum conf_dmarc_words[] = {
	{ "rfc7489", CONF_DMARC_7489 }, { "dmarcbis", CONF_DMARC_BIS }, { "off", CONF_DMARC_OFF },
	{ NULL, 0 }
};
static const struct conf_enum conf_log_words[] = {
	{ "stderr", CONF_LOG_STDERR }, { "syslog", CONF_LOG_SYSLOG }, { NULL, 0 }
};
static const struct conf_enum conf_tlsver_words[] = {
	{ "1.2", 0x0303 }, { "1.3", 0x0304 }, { NULL, 0 }
};
static const struct conf_enum conf_upstls_words[] = {
	{ "none", CONF_UTLS_NONE }, { "opportunistic", CONF_UTLS_OPPORTUNISTIC },
	{ "required", CONF_UTLS_REQUIRED }, { NULL, 0 }
};
static const struct conf_enum conf_uconn_words[] = {
	{ "helo", CONF_UCONN_HELO }, { "mail", CONF_UCONN_MAIL }, { NULL, 0 }
};
static const struct conf_enum conf_listen_words[] = {
	{ "submission", CONF_LISTEN_SUBMISSION }, { "implicit-tls", CONF_LISTEN_IMPLICIT_TLS },
	{ "no-starttls", CONF_LISTEN_NO_STARTTLS }, { "policy", CONF_LISTEN_POLICY },
	{ "proxy-protocol", CONF_LISTEN_PROXYPROTO }, { NULL, 0 }
};
static const struct conf_enum conf_rlerr_words[] = {
	{ "not-exceeded", RL_ON_ERROR_NOT_EXCEEDED }, { "exceeded", RL_ON_ERROR_EXCEEDED },
	{ NULL, 0 }
};
static const struct conf_enum conf_preply_words[] = {
	{ "smtp", CONF_PREPLY_SMTP }, { "actions", CONF_PREPLY_ACTIONS }, { NULL, 0 }
};
static const struct conf_enum conf_pmode_words[] = {
	{ "enforce", 0 }, { "monitor", 1 }, { NULL, 0 }
};
static const struct conf_enum conf_level_words[] = {
	{ "debug", LOG_L_DEBUG }, { "info", LOG_L_INFO }, { "warn", LOG_L_WARN },
	{ "error", LOG_L_ERROR }, { NULL, 0 }
};

struct conf_setting {
	const char *name;
	enum conf_type type;
	size_t off;
	uint64_t min, max;
	const char *def;	/* default, parsed like the file's text; NULL = none */
	const struct conf_enum *words;
};

#define O(f) offsetof(struct conf, f)
#define K 1024ull
#define SEC 1000ull

static const struct conf_setting conf_settings[] = {
	{ "hostname", CT_HOST, O(hostname), 0, 0, NULL, NULL },
	{ "listen", CT_LISTEN, O(listen), 0, 0, NULL, NULL },
	{ "workers", CT_COUNT, O(workers), 0, 64, "0", NULL },
	{ "upstream", CT_ADDR, O(upstream), 0, 0, NULL, NULL },
	{ "upstream-identity", CT_ENUM, O(identity), 0, 0, "xclient", conf_identity_words },
	{ "upstream-connect", CT_ENUM, O(upstream_connect), 0, 0, "mail", conf_uconn_words },
	{ "upstream-connect-timeout", CT_DUR, O(upstream_connect_ms), 100, 600 * SEC, "30s", NULL },
	{ "upstream-timeout", CT_DUR, O(upstream_timeout_ms), 100, 599 * SEC, "300s", NULL },
	{ "max-sessions", CT_COUNT, O(max_sessions), 1, 1000000, "1000", NULL },
	{ "max-sessions-per-client", CT_COUNT, O(max_per_client), 1, 1000000, "50", NULL },
	{ "client-ipv6-prefix", CT_COUNT, O(client_v6_prefix), 16, 128, "64", NULL },
	{ "max-message-size", CT_SIZE, O(max_message_size), 1024, 1ull << 40, "10m", NULL },
	{ "max-recipients", CT_COUNT, O(max_recipients), 1, 100000, "1000", NULL },
	{ "max-errors", CT_COUNT, O(max_errors), 1, 100000, "20", NULL },
	{ "max-junk-commands", CT_COUNT, O(max_junk), 1, 1000000, "100", NULL },
	{ "max-line-length", CT_COUNT, O(max_line_length), 0, 1ull << 30, "998", NULL },
	{ "command-deadline", CT_DUR, O(command_deadline_ms), 100, 3600 * SEC, "300s", NULL },
	{ "session-deadline", CT_DUR, O(session_deadline_ms), 1 * SEC, 7 * 86400 * SEC, "1h", NULL },
	{ "data-min-rate", CT_COUNT, O(data_min_rate), 0, 1ull << 30, "500", NULL },
	{ "ratelimit-on-error", CT_ENUM, O(ratelimit_on_error), 0, 0, "not-exceeded", conf_rlerr_words },
	{ "ratelimit-node-share", CT_COUNT, O(ratelimit_node_share), 0, 25, "0", NULL },
	{ "proxy-protocol-timeout", CT_DUR, O(pp_timeout_ms), 100, 600 * SEC, "10s", NULL },
	{ "drain-timeout", CT_DUR, O(drain_ms), 0, 3600 * SEC, "30s", NULL },
	{ "max-pending-commands", CT_COUNT, O(max_pending), 1, 100000, "1100", NULL },
	{ "listen-backlog", CT_COUNT, O(listen_backlog), 0, 65535, "0", NULL },
	{ "upstream-keepalive", CT_DUR, O(upstream_keepalive_ms), 0, 3600 * SEC, "60s", NULL },
	{ "bare-lf", CT_ENUM, O(bare_lf), 0, 0, "normalise", conf_barelf_words },
	{ "policy-reply", CT_ENUM, O(policy_reply), 0, 0, "smtp", conf_preply_words },
	{ "policy-mode", CT_ENUM, O(policy_monitor), 0, 0, "enforce", conf_pmode_words },
	{ "spool-dir", CT_STR, O(spool_dir), 0, 0, "/var/tmp", NULL },
	{ "spool-memory", CT_SIZE, O(spool_memory), 0, 1ull << 32, "1m", NULL },
	{ "user", CT_STR, O(user), 0, 0, "nobody", NULL },
	{ "log", CT_ENUM, O(log_dest), 0, 0, "stderr", conf_log_words },
	{ "log-level", CT_ENUM, O(log_level), 0, 0, "info", conf_level_words },
	{ "dns-timeout", CT_DUR, O(dns_timeout_ms), 100, 60 * SEC, "5s", NULL },
	{ "dns-max-queries", CT_COUNT, O(dns_max_queries), 16, 1000000, "4096", NULL },
	{ "check-threads", CT_COUNT, O(check_threads), 8, 4096, "256", NULL },
	{ "dns-negative-ttl", CT_DUR, O(dns_negative_ttl_ms), 0, 86400 * SEC, "5m", NULL },
	{ "greet-delay", CT_DUR, O(greet_delay_ms), 0, 60 * SEC, "0", NULL },
	{ "dnsbl-probe-interval", CT_DUR, O(dnsbl_probe_ms), 1 * SEC, 86400 * SEC, "5m", NULL },
	{ "greylist-store-save-interval", CT_DUR, O(glstore_save_ms), 1 * SEC, 86400 * SEC, "10m", NULL },
	{ "control-socket", CT_STR, O(control_socket), 0, 0, NULL, NULL },
	{ "metrics-listen", CT_ADDR, O(metrics_listen), 0, 0, NULL, NULL },
	{ "startup-checks", CT_ENUM, O(startup_checks), 0, 0, "yes", conf_yesno_words },
	{ "authserv-id", CT_HOST, O(authserv_id), 0, 0, NULL, NULL },
	{ "spf", CT_ENUM, O(spf), 0, 0, "yes", conf_yesno_words },
	{ "spf-timeout", CT_DUR, O(spf_timeout_ms), 1 * SEC, 60 * SEC, "10s", NULL },
	{ "dkim", CT_ENUM, O(dkim), 0, 0, "yes", conf_yesno_words },
	{ "dkim-min-key-bits", CT_COUNT, O(dkim_min_key_bits), 1024, 16384, "1024", NULL },
	{ "dkim-max-signatures", CT_COUNT, O(dkim_max_signatures), 1, 8, "8", NULL },
	{ "dkim-allow-sha1", CT_ENUM, O(dkim_allow_sha1), 0, 0, "no", conf_yesno_words },
	{ "dkim-sign-expiry", CT_DUR, O(dkim_sign_expiry_ms), 0, 366 * 86400 * SEC, "0", NULL },
	{ "dmarc", CT_ENUM, O(dmarc), 0, 0, "rfc7489", conf_dmarc_words },
	{ "psl-file", CT_STR, O(psl_path), 0, 0,
	  "/usr/share/publicsuffix/public_suffix_list.dafsa", NULL },
	/* the former name of psl-file, still read; no default of its own */
	{ "public-suffix-list", CT_STR, O(psl_path), 0, 0, NULL, NULL },
	{ "tls-certificate", CT_STR, O(tls_cert), 0, 0, NULL, NULL },
	{ "tls-key", CT_STR, O(tls_key), 0, 0, NULL, NULL },
	{ "tls-chain", CT_STR, O(tls_chain), 0, 0, NULL, NULL },
	{ "tls-ciphers", CT_STR, O(tls_ciphers), 0, 0, NULL, NULL },
	{ "tls-client-ca", CT_STR, O(tls_client_ca), 0, 0, NULL, NULL },
	{ "tls-min-version", CT_ENUM, O(tls_min_version), 0, 0, "1.2", conf_tlsver_words },
	{ "tls-handshake-timeout", CT_DUR, O(tls_handshake_ms), 100, 300 * SEC, "10s", NULL },
	{ "auth-require-tls", CT_ENUM, O(auth_require_tls), 0, 0, "yes", conf_yesno_words },
	{ "auth-max-failures", CT_COUNT, O(auth_max_failures), 1, 1000000, "5", NULL },
	{ "auth-failure-window", CT_DUR, O(auth_failure_window_ms), 1 * SEC, 86400 * SEC, "10m", NULL },
	{ "auth-failure-delay", CT_DUR, O(auth_failure_delay_ms), 0, 60 * SEC, "1s", NULL },
	{ "upstream-tls", CT_ENUM, O(upstream_tls), 0, 0, "none", conf_upstls_words },
	{ "upstream-tls-ca", CT_STR, O(upstream_tls_ca), 0, 0, NULL, NULL },
};
#define CONF_NSETTINGS (sizeof(conf_settings) / sizeof(conf_settings[0]))

struct conf_parse {
	const char *file;		/* the file being read (includes change it) */
	bool allow_include;
	char *errs;
	size_t errlen, errcap;
	int nerr;
	unsigned char seen[CONF_NSETTINGS];
	bool resolver_seen;
	int listen_line[CONF_LISTEN_MAX], listen_col[CONF_LISTEN_MAX];
};

/* conf_note - record one error or warning line at file:line:col */
static void
conf_note(struct conf_parse *p, const char *kind, int line, int col, const char *raw)
{
	/* one line per message, whatever a message quotes (a key file's
	 * name, say, may hold a newline): control bytes are written \xHH */
	char msg[2048];
	size_t m = 0;

	for (const unsigned char *q = (const unsigned char *)raw; *q && m + 5 < sizeof(msg); q++) {
		if (*q < 0x20 || *q == 0x7f)
			m += (size_t)snprintf(msg + m, sizeof(msg) - m, "\\x%02x", *q);
		else
			msg[m++] = (char)*q;
	}
	msg[m] = '\0';
	int n = snprintf(NULL, 0, "%s:%d:%d: %s: %s\n", p->file, line, col, kind, msg);

	if (n < 0)
		return;
	if (p->errlen + (size_t)n + 1 > p->errcap) {
		p->errcap = (p->errlen + (size_t)n + 1) * 2;
		p->errs = xrealloc(p->errs, p->errcap);
	}
	snprintf(p->errs + p->errlen, p->errcap - p->errlen, "%s:%d:%d: %s: %s\n",
	    p->file, line, col, kind, msg);
	p->errlen += (size_t)n;
}

/* conf_error - record one error at file:line:col */
static void __attribute__((format(printf, 4, 5)))
conf_error(struct conf_parse *p, int line, int col, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	conf_note(p, "error", line, col, msg);
	p->nerr++;
}

/* conf_parse_u64 - digits with an optional unit suffix table */
static int
conf_parse_num(const char *s, size_t len, uint64_t *out, const char **unit)
{
	uint64_t v = 0;
	size_t i = 0;

	if (len == 0 || !isdigit((unsigned char)s[0]))
		return -1;
	for (; i < len && isdigit((unsigned char)s[i]); i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	*unit = s + i;
	return (int)(len - i);
}

/* conf_mul - multiply with overflow check */
static int
conf_mul(uint64_t *v, uint64_t m)
{
	if (m != 0 && *v > UINT64_MAX / m)
		return -1;
	*v *= m;
	return 0;
}

/* conf_parse_hostport - "1.2.3.4:25", "[::1]:25", "*:25", "host:25" */
int
conf_parse_hostport(const char *s, size_t len, struct conf_addr *out, const char **why)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	size_t hlen;
	uint64_t port;
	const char *unit;

	memset(out, 0, sizeof(*out));
	if (len == 0 || len >= sizeof(out->text)) {
		*why = "expected ADDRESS:PORT";
		return -1;
	}
	memcpy(out->text, s, len);
	out->text[len] = 0;
	colon = memrchr(s, ':', len);
	if (colon == NULL) {
		*why = "expected ADDRESS:PORT (the port is missing)";
		return -1;
	}
	if (conf_parse_num(colon + 1, len - (size_t)(colon + 1 - s), &port, &unit) != 0 ||
	    port == 0 || port > 65535) {
		*why = "expected a port number 1-65535 after ':'";
		return -1;
	}
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;
		if (hlen - 2 >= sizeof(host)) {
			*why = "IPv6 address too long";
			return -1;
		}
		memcpy(host, s + 1, hlen - 2);
		host[hlen - 2] = 0;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			*why = "expected an IPv6 address in [brackets]";
			return -1;
		}
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		out->salen = sizeof(*sin6);
		return 0;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
	if (hlen == 1 && s[0] == '*') {
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	} else {
		if (hlen == 0 || hlen >= sizeof(host)) {
			*why = "expected an IPv4 address, [IPv6] or *";
			return -1;
		}
		memcpy(host, s, hlen);
		host[hlen] = 0;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			*why = "expected an IPv4 address, [IPv6] or * before ':'";
			return -1;
		}
	}
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	out->salen = sizeof(*sin);
	return 0;
}

/* conf_host_ok - a host name: letters, digits, '-', '.', <= 255 */
static bool
conf_host_ok(const char *s, size_t len)
{
	if (len == 0 || len > 255 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '-' && c != '.')
			return false;
	}
	return true;
}

/* conf_set_value - parse a value into its field; NULL or the complaint */
static const char *
conf_set_value(struct conf *c, const struct conf_setting *st, const char *s, size_t len)
{
	char *field = (char *)c + st->off;
	uint64_t v = 0;
	const char *unit;
	int ulen;
	const char *why;

	switch (st->type) {
	case CT_STR:
		if (len == 0 || memchr(s, 0, len) != NULL)
			return "expected a non-empty value";
		free(*(char **)field);
		*(char **)field = xmemdup(s, len);
		return NULL;
	case CT_HOST:
		if (!conf_host_ok(s, len))
			return "expected a host name (letters, digits, '-' and '.')";
		free(*(char **)field);
		*(char **)field = xmemdup(s, len);
		return NULL;
	case CT_COUNT:
		if (conf_parse_num(s, len, &v, &unit) != 0)
			return "expected a whole number";
		break;
	case CT_SIZE:
		ulen = conf_parse_num(s, len, &v, &unit);
		if (ulen < 0 || ulen > 1)
			return "expected a size: a number with an optional k, m or g";
		if (ulen == 1) {
			int u = tolower((unsigned char)unit[0]);
			uint64_t m = u == 'k' ? K : u == 'm' ? K * K : u == 'g' ? K * K * K : 0;
			if (m == 0 || conf_mul(&v, m) != 0)
				return "expected a size: a number with an optional k, m or g";
		}
		break;
	case CT_DUR:
		ulen = conf_parse_num(s, len, &v, &unit);
		if (ulen < 0 || ulen > 2)
			return "expected a duration: a number with ms, s, m, h or d";
		{
			uint64_t m;
			if (ulen == 0 || (ulen == 1 && unit[0] == 's'))
				m = SEC;
			else if (ulen == 2 && unit[0] == 'm' && unit[1] == 's')
				m = 1;
			else if (ulen == 1 && unit[0] == 'm')
				m = 60 * SEC;
			else if (ulen == 1 && unit[0] == 'h')
				m = 3600 * SEC;
			else if (ulen == 1 && unit[0] == 'd')
				m = 86400 * SEC;
			else
				return "expected a duration: a number with ms, s, m, h or d";
			if (conf_mul(&v, m) != 0)
				return "duration too large";
		}
		break;
	case CT_ENUM:
		for (const struct conf_enum *e = st->words; e->name; e++)
			if (strlen(e->name) == len && memcmp(e->name, s, len) == 0) {
				*(int *)field = e->value;
				return NULL;
			}
		return "unknown word";
	case CT_ADDR:
		if (conf_parse_hostport(s, len, (struct conf_addr *)field, &why) != 0)
			return why;
		return NULL;
	case CT_LISTEN:
		if (c->nlisten >= CONF_LISTEN_MAX)
			return "too many listen statements";
		if (len > 5 && memcmp(s, "unix:", 5) == 0) {
			/* unix:/PATH, for a policy listener */
			struct conf_addr *a = &c->listen[c->nlisten];
			struct sockaddr_un *sun = (struct sockaddr_un *)&a->sa;

			memset(a, 0, sizeof(*a));
			if (s[5] != '/' || len - 5 >= sizeof(sun->sun_path) || len >= sizeof(a->text) ||
			    memchr(s, 0, len) != NULL)
				return "expected unix:/ABSOLUTE/PATH (at most 75 bytes)";
			sun->sun_family = AF_UNIX;
			memcpy(sun->sun_path, s + 5, len - 5);
			a->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len - 5 + 1);
			memcpy(a->text, s, len);
		} else if (conf_parse_hostport(s, len, &c->listen[c->nlisten], &why) != 0)
			return why;
		c->nlisten++;
		return NULL;
	}
	if (v < st->min || v > st->max)
		return "value out of range";
	*(uint64_t *)field = v;
	return NULL;
}

/* conf_enum_list - "a, b or c" for an error message */
static void
conf_enum_list(const struct conf_enum *w, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = 0;
	for (int i = 0; w[i].name && n < size; i++) {
		int r = snprintf(buf + n, size - n, "%s%s", i == 0 ? "" :
		    w[i + 1].name ? ", " : " or ", w[i].name);
		if (r < 0)
			break;
		n += (size_t)r;
	}
}

/* conf_words_setting - a setting of several words (redis, redis-*,
 * greylist-*: greylist.h), or an unknown one */
static void
conf_words_setting(struct conf_parse *p, struct conf *c, struct lexer *lx,
	const struct lex_token *name)
{
	char shown[LOG_ESC_SIZE], why[256] = "", nm[64];
	char *words[32];
	const char *cw[32];
	int nw = 0, r;
	struct lex_token t;
	bool bad = false;
	int vline = name->line, vcol = name->col;

	for (;;) {
		lex_next(lx, &t);
		if (nw == 0 && !bad && t.type != LEX_NL && t.type != LEX_EOF) {
			vline = t.line;		/* errors point at the value */
			vcol = t.col;
		}
		if (t.type == LEX_NL || t.type == LEX_EOF)
			break;
		if (t.type == LEX_ERROR) {
			conf_error(p, t.line, t.col, "%s", t.error);
			bad = true;
			continue;
		}
		if ((t.type != LEX_WORD && t.type != LEX_STRING) || nw == 32 ||
		    memchr(t.text, 0, t.len) != NULL) {
			bad = true;
			continue;
		}
		words[nw] = xmemdup(t.text, t.len);
		cw[nw] = words[nw];
		nw++;
	}
	snprintf(nm, sizeof(nm), "%.*s", (int)(name->len < 63 ? name->len : 63), name->text);
	r = name->len < 63 ? greylist_conf_set(&c->greylist, nm, cw, nw, why, sizeof(why)) : 0;
	if (r == 0)
		conf_error(p, name->line, name->col, "unknown setting \"%s\"",
		    lex_shown(name, shown, sizeof(shown)));
	else if (r < 0 || bad)
		conf_error(p, vline, vcol, "%s%s%s", strncmp(why, nm, strlen(nm)) == 0 ? "" : nm,
		    strncmp(why, nm, strlen(nm)) == 0 ? "" : ": ", why[0] ? why :
		    "expected words on one line");
	else
		c->greylist_seen = true;
	for (int i = 0; i < nw; i++)
		free(words[i]);
}

/* conf_statement - one line: NAME VALUE */
static void
conf_statement(struct conf_parse *p, struct conf *c, struct lexer *lx,
	const struct lex_token *name)
{
	struct lex_token val, end;
	char shown[LOG_ESC_SIZE];
	const struct conf_setting *st = NULL;
	size_t i;

	for (i = 0; i < CONF_NSETTINGS; i++)
		if (strlen(conf_settings[i].name) == name->len &&
		    memcmp(conf_settings[i].name, name->text, name->len) == 0) {
			st = &conf_settings[i];
			break;
		}
	if (st == NULL) {
		conf_words_setting(p, c, lx, name);
		return;
	}
	if (p->seen[i] && st->type != CT_LISTEN) {
		conf_error(p, name->line, name->col, "\"%s\" given twice", st->name);
		goto skip;
	}
	p->seen[i] = 1;
	lex_next(lx, &val);
	if (val.type == LEX_ERROR) {
		conf_error(p, val.line, val.col, "%s", val.error);
		goto skip;
	}
	if (val.type != LEX_WORD && val.type != LEX_STRING) {
		conf_error(p, val.line, val.col, "expected a value for \"%s\", found %s",
		    st->name, lex_shown(&val, shown, sizeof(shown)));
		if (val.type == LEX_NL || val.type == LEX_EOF)
			return;
		goto skip;
	}
	const char *why = conf_set_value(c, st, val.text, val.len);
	if (why != NULL) {
		char extra[200] = "";
		if (st->type == CT_ENUM) {
			char list[160];
			conf_enum_list(st->words, list, sizeof(list));
			snprintf(extra, sizeof(extra), " (expected %s)", list);
		} else if (strcmp(why, "value out of range") == 0) {
			snprintf(extra, sizeof(extra), " (%llu to %llu%s)",
			    (unsigned long long)(st->type == CT_DUR ? st->min / SEC : st->min),
			    (unsigned long long)(st->type == CT_DUR ? st->max / SEC : st->max),
			    st->type == CT_DUR ? " seconds" : "");
		}
		conf_error(p, val.line, val.col, "%s: %s \"%s\"%s", st->name, why,
		    lex_shown(&val, shown, sizeof(shown)), extra);
	}
	lex_next(lx, &end);
	if (st->type == CT_LISTEN && why == NULL) {
		/* listen ADDR:PORT [OPTION ...] */
		p->listen_line[c->nlisten - 1] = val.line;
		p->listen_col[c->nlisten - 1] = val.col;
		while (end.type == LEX_WORD) {
			const struct conf_enum *e;
			for (e = conf_listen_words; e->name; e++)
				if (strlen(e->name) == end.len && memcmp(e->name, end.text, end.len) == 0)
					break;
			if (e->name == NULL) {
				conf_error(p, end.line, end.col, "unknown listen option \"%s\" (expected "
				    "submission, implicit-tls, no-starttls, policy or proxy-protocol)",
				    lex_shown(&end, shown, sizeof(shown)));
			} else {
				c->listen_flags[c->nlisten - 1] |= (unsigned)e->value;
			}
			lex_next(lx, &end);
		}
	}
	if (end.type == LEX_NL || end.type == LEX_EOF)
		return;
	conf_error(p, end.line, end.col, "%s takes one value; unexpected %s",
	    st->name, lex_shown(&end, shown, sizeof(shown)));
skip:
	for (;;) {
		lex_next(lx, &end);
		if (end.type == LEX_NL || end.type == LEX_EOF)
			return;
	}
}

/* conf_pp_from - "proxy-protocol-from NET ..." (may be repeated; the
 * networks add up): the balancers whose PROXY protocol headers a
 * "listen ... proxy-protocol" takes */
static void
conf_pp_from(struct conf_parse *p, struct conf *c, struct lexer *lx,
	const struct lex_token *kw)
{
	struct lex_token t;
	char err[256], shown[LOG_ESC_SIZE];
	int n = 0;

	if (c->pp_from == NULL)
		c->pp_from = list_new(LIST_NET);
	for (;;) {
		lex_next(lx, &t);
		if (t.type == LEX_NL || t.type == LEX_EOF)
			break;
		if (t.type != LEX_WORD && t.type != LEX_STRING) {
			conf_error(p, t.line, t.col, "proxy-protocol-from: expected a network, found %s",
			    lex_shown(&t, shown, sizeof(shown)));
			continue;
		}
		if (list_add(c->pp_from, t.text, t.len, err, sizeof(err)) != 0)
			conf_error(p, t.line, t.col, "proxy-protocol-from: %s", err);
		n++;
	}
	if (n == 0)
		conf_error(p, kw->line, kw->col, "proxy-protocol-from: expected one or more "
		    "networks (192.0.2.10, 10.0.0.0/8, 2001:db8::/32)");
}

/* conf_resolver - "resolver system", "resolver recursive",
 * "resolver forward ADDR[@PORT] ..." */
static void
conf_resolver(struct conf_parse *p, struct conf *c, struct lexer *lx,
	const struct lex_token *kw)
{
	struct lex_token t;
	char shown[LOG_ESC_SIZE];

	if (p->resolver_seen) {
		conf_error(p, kw->line, kw->col, "\"resolver\" given twice");
		goto skip;
	}
	p->resolver_seen = true;
	lex_next(lx, &t);
	if (t.type == LEX_WORD && t.len == 6 && memcmp(t.text, "system", 6) == 0) {
		c->resolver.mode = DNS_MODE_SYSTEM;
	} else if (t.type == LEX_WORD && t.len == 9 && memcmp(t.text, "recursive", 9) == 0) {
		c->resolver.mode = DNS_MODE_RECURSIVE;
	} else if (t.type == LEX_WORD && t.len == 7 && memcmp(t.text, "forward", 7) == 0) {
		c->resolver.mode = DNS_MODE_FORWARD;
		for (;;) {
			char host[64], addr[16];
			const char *at;
			size_t hl;

			lex_next(lx, &t);
			if (t.type == LEX_NL || t.type == LEX_EOF)
				break;
			if (t.type != LEX_WORD || t.len >= sizeof(c->resolver.forward[0])) {
				conf_error(p, t.line, t.col, "expected a name server ADDRESS[@PORT], found %s",
				    lex_shown(&t, shown, sizeof(shown)));
				goto skip;
			}
			at = memchr(t.text, '@', t.len);
			hl = at ? (size_t)(at - t.text) : t.len;
			memcpy(host, t.text, hl);
			host[hl] = 0;
			if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) {
				conf_error(p, t.line, t.col, "resolver forward: \"%s\" is not an IP "
				    "address (ADDRESS or ADDRESS@PORT)", lex_shown(&t, shown, sizeof(shown)));
				goto skip;
			}
			if (at) {
				uint64_t port;
				const char *unit;

				if (conf_parse_num(at + 1, t.len - hl - 1, &port, &unit) != 0 ||
				    port == 0 || port > 65535) {
					conf_error(p, t.line, t.col, "resolver forward: expected a port "
					    "1-65535 after '@'");
					goto skip;
				}
			}
			if (c->resolver.nforward == DNS_FORWARD_MAX) {
				conf_error(p, t.line, t.col, "resolver forward: at most %d servers",
				    DNS_FORWARD_MAX);
				goto skip;
			}
			memcpy(c->resolver.forward[c->resolver.nforward], t.text, t.len);
			c->resolver.forward[c->resolver.nforward++][t.len] = 0;
		}
		if (c->resolver.nforward == 0)
			conf_error(p, kw->line, kw->col, "resolver forward needs at least one "
			    "ADDRESS[@PORT]");
		return;
	} else {
		conf_error(p, t.line, t.col, "expected system, recursive or forward after resolver, "
		    "found %s", lex_shown(&t, shown, sizeof(shown)));
		goto skip;
	}
	lex_next(lx, &t);
	if (t.type == LEX_NL || t.type == LEX_EOF)
		return;
	conf_error(p, t.line, t.col, "unexpected %s after resolver %s",
	    lex_shown(&t, shown, sizeof(shown)),
	    c->resolver.mode == DNS_MODE_RECURSIVE ? "recursive" : "system");
skip:
	while (t.type != LEX_NL && t.type != LEX_EOF)
		lex_next(lx, &t);
}

/* conf_intern - a file name that lives as long as the configuration */
static const char *
conf_intern(struct conf *c, const char *name)
{
	c->files = xrealloc(c->files, sizeof(*c->files) * (c->nfiles + 1));
	c->files[c->nfiles] = xstrdup(name);
	return c->files[c->nfiles++];
}

/* conf_rules_err - an error from the rules parser */
static void
conf_rules_err(void *arg, int line, int col, const char *msg)
{
	/* the rules parser marks what does not stop the load */
	if (strncmp(msg, "warning: ", 9) == 0)
		conf_note(arg, "warning", line, col, msg + 9);
	else
		conf_error(arg, line, col, "%s", msg);
}

/* conf_read_file - the whole file into memory, bounded */
static char *
conf_read_file(const char *path, size_t *len, const char **why)
{
	struct rfile rf;

	switch (rfile_read(&rf, path, 0, 0, CONF_FILE_MAX)) {
	case RFILE_OPEN:
		*why = strerror(rf.err);
		return NULL;
	case RFILE_NOT_REGULAR:
	case RFILE_MODE:
	case RFILE_SIZE:
		*why = "not a regular file of at most 16 MiB";
		return NULL;
	case RFILE_OK:
	case RFILE_READ:	/* what could be read */
		break;
	}
	*len = rf.len;
	return rf.buf;
}

/* conf_defaults - fill every setting that the file did not give */
static void
conf_defaults(struct conf_parse *p, struct conf *c)
{
	for (size_t i = 0; i < CONF_NSETTINGS; i++) {
		const struct conf_setting *st = &conf_settings[i];
		if (p->seen[i] || st->def == NULL)
			continue;
		/* a string another name for the same field already set */
		if (st->type == CT_STR && *(char **)((char *)c + st->off) != NULL)
			continue;
		if (conf_set_value(c, st, st->def, strlen(st->def)) != NULL)
			panic("bad built-in default for %s", st->name);
	}
	if (c->hostname == NULL) {
		char h[256];
		if (gethostname(h, sizeof(h) - 1) != 0 || !conf_host_ok(h, strlen(h)))
			snprintf(h, sizeof(h), "localhost");
		h[sizeof(h) - 1] = 0;
		c->hostname = xstrdup(h);
	}
	if (c->authserv_id == NULL)
		c->authserv_id = xstrdup(c->hostname);
}

#define CONF_INCLUDE_DEPTH 8

static void conf_parse_buffer(struct conf_parse *p, struct conf *c, const char *file,
	const char *buf, size_t len, int depth);

/* conf_include_order - warn when an included file's rules come after a
 * rule that decides first: a final rule on "true" (then none of them
 * runs), or a greylist rule (then its accept rules spare no one from
 * greylisting) */
static void
conf_include_order(struct conf_parse *p, struct conf *c, const struct lex_token *kw,
	const char *name)
{
	for (int st = 0; st < RS__COUNT; st++) {
		bool all = false;
		const char *bfile = NULL;
		int bline = rules_blocker(c->rules, (enum rules_stage)st, &all, &bfile), l;
		char msg[1024];

		if (bline == 0 || bfile == name)
			continue;
		l = rules_file_rules(c->rules, (enum rules_stage)st, name, !all);
		if (l == 0)
			continue;
		snprintf(msg, sizeof(msg), "%s:%d: this %s rule comes after the %s rule at %s:%d, "
		    "which decides first%s: put the include before that rule", name, l,
		    rules_stage_name((enum rules_stage)st), all ? "catch-all" : "greylist",
		    bfile, bline, all ? " for every session" : " (its accept cannot spare a "
		    "client from greylisting)");
		conf_note(p, "warning", kw->line, kw->col, msg);
	}
}

/* conf_include - "include PATH-OR-GLOB": relative to the including file */
static void
conf_include(struct conf_parse *p, struct conf *c, struct lexer *lx,
	const struct lex_token *kw, int depth)
{
	struct lex_token v, end;
	char pat[4096], shown[LOG_ESC_SIZE];
	glob_t g;
	int r;
	bool dry = false, was;

	lex_next(lx, &v);
	if (v.type != LEX_WORD && v.type != LEX_STRING) {
		conf_error(p, v.line, v.col, "expected a file name or pattern after include, found %s",
		    lex_shown(&v, shown, sizeof(shown)));
		goto skip;
	}
	if (!p->allow_include) {
		conf_error(p, kw->line, kw->col, "include is not allowed here");
		goto skip;
	}
	if (depth >= CONF_INCLUDE_DEPTH) {
		conf_error(p, kw->line, kw->col, "includes nested deeper than %d (a loop?)",
		    CONF_INCLUDE_DEPTH);
		goto skip;
	}
	if (v.len == 0 || memchr(v.text, 0, v.len) != NULL || v.len >= sizeof(pat) / 2) {
		conf_error(p, v.line, v.col, "bad include name");
		goto skip;
	}
	if (v.text[0] == '/') {
		snprintf(pat, sizeof(pat), "%.*s", (int)v.len, v.text);
	} else {
		const char *slash = strrchr(p->file, '/');
		int dlen = slash ? (int)(slash - p->file) : 1;
		snprintf(pat, sizeof(pat), "%.*s/%.*s", dlen, slash ? p->file : ".",
		    (int)v.len, v.text);
	}
	lex_next(lx, &end);
	if (end.type == LEX_WORD && ((end.len == 7 && memcmp(end.text, "monitor", 7) == 0) ||
	    (end.len == 7 && memcmp(end.text, "enforce", 7) == 0))) {
		dry = end.text[0] == 'm';	/* the included rules only log what they would do */
		lex_next(lx, &end);
	}
	if (end.type != LEX_NL && end.type != LEX_EOF) {
		conf_error(p, end.line, end.col, "include takes one name and then monitor or "
		    "enforce; unexpected %s",
		    lex_shown(&end, shown, sizeof(shown)));
		goto skip;
	}
	r = glob(pat, 0, NULL, &g);
	if (r == GLOB_NOMATCH) {
		if (strpbrk(pat, "*?[") == NULL)
			conf_error(p, v.line, v.col, "include %s: no such file", pat);
		return;		/* an empty conf.d is fine */
	}
	if (r != 0) {
		conf_error(p, v.line, v.col, "include %s: cannot read the directory", pat);
		return;
	}
	for (size_t i = 0; i < g.gl_pathc; i++) {	/* glob sorts the names */
		const char *why = "unknown error", *name;
		size_t blen;
		char *buf = conf_read_file(g.gl_pathv[i], &blen, &why);
		if (buf == NULL) {
			conf_error(p, v.line, v.col, "include %s: %s", g.gl_pathv[i], why);
			continue;
		}
		name = conf_intern(c, g.gl_pathv[i]);
		was = rules_set_dry(c->rules, dry);	/* an include in a dry file is dry */
		rules_set_dry(c->rules, dry || was);
		conf_parse_buffer(p, c, name, buf, blen, depth + 1);
		rules_set_dry(c->rules, was);
		free(buf);
		conf_include_order(p, c, kw, name);
	}
	globfree(&g);
	return;
skip:
	while (v.type != LEX_NL && v.type != LEX_EOF)
		lex_next(lx, &v);
}

/* conf_parse_buffer - every statement of one file */
static void
conf_parse_buffer(struct conf_parse *p, struct conf *c, const char *file,
	const char *buf, size_t len, int depth)
{
	const char *saved = p->file;
	struct lexer lx;
	struct lex_token t;

	p->file = file;
	lex_init(&lx, file, buf, len);
	for (;;) {
		lex_next(&lx, &t);
		if (t.type == LEX_EOF)
			break;
		if (t.type == LEX_NL)
			continue;
		if (t.type == LEX_ERROR) {
			conf_error(p, t.line, t.col, "%s", t.error);
			while (t.type != LEX_NL && t.type != LEX_EOF)
				lex_next(&lx, &t);
			continue;
		}
		if (t.type != LEX_WORD) {
			char shown[LOG_ESC_SIZE];
			conf_error(p, t.line, t.col, "expected a setting name, found %s",
			    lex_shown(&t, shown, sizeof(shown)));
			while (t.type != LEX_NL && t.type != LEX_EOF)
				lex_next(&lx, &t);
			continue;
		}
		if (t.len == 4 && memcmp(t.text, "list", 4) == 0)
			rules_parse_list(c->rules, &lx, &t, conf_rules_err, p);
		else if (t.len == 2 && memcmp(t.text, "on", 2) == 0)
			rules_parse_on(c->rules, &lx, &t, conf_rules_err, p);
		else if (t.len == 7 && memcmp(t.text, "include", 7) == 0)
			conf_include(p, c, &lx, &t, depth);
		else if (t.len == 8 && memcmp(t.text, "resolver", 8) == 0)
			conf_resolver(p, c, &lx, &t);
		else if (t.len == 9 && memcmp(t.text, "ratelimit", 9) == 0) {
			if (c->ratelimits == NULL)
				c->ratelimits = xcalloc(1, sizeof(*c->ratelimits));
			conf_ratelimit_parse(c->ratelimits, c->rules, &lx, &t, conf_rules_err, p);
		}
		else if (t.len == 19 && memcmp(t.text, "proxy-protocol-from", 19) == 0)
			conf_pp_from(p, c, &lx, &t);
		else if (t.len == 8 && memcmp(t.text, "dkim-key", 8) == 0)
			conf_dkim_parse(&c->dkim_keys, &lx, &t, conf_rules_err, p);
		else if (t.len == 5 && (memcmp(t.text, "dnsbl", 5) == 0 ||
		    memcmp(t.text, "dnswl", 5) == 0)) {
			if (c->dnsbl == NULL)
				c->dnsbl = xcalloc(1, sizeof(*c->dnsbl));
			conf_dnsbl_parse(c->dnsbl, &lx, &t, conf_rules_err, p);
		}
		else
			conf_statement(p, c, &lx, &t);
	}
	lex_free(&lx);
	p->file = saved;
}

/* conf_finish - defaults, whole-file checks; the conf or NULL */
static struct conf *
conf_finish(struct conf_parse *p, struct conf *c, char **errors)
{
	conf_defaults(p, c);
	if (c->nlisten == 0)
		conf_error(p, 1, 1, "no \"listen\" statement: moatd needs at least one");
	{
		/* policy listeners (Postfix policy delegation) need no upstream */
		bool smtp = c->nlisten == 0;

		for (int i = 0; i < c->nlisten; i++)
			if (!(c->listen_flags[i] & CONF_LISTEN_POLICY))
				smtp = true;
		if (c->upstream.salen == 0 && smtp)
			conf_error(p, 1, 1, "no \"upstream\" statement: where should mail go?");
	}
	for (int st = 0; st < RS__COUNT && c->rules != NULL; st++)
		if (__builtin_popcount(rules_stage_ratelimits(c->rules, (enum rules_stage)st)) > 8)
			conf_error(p, 1, 1, "the %s rules read more than 8 rate limits (one call "
			    "counts at most 8)", rules_stage_name((enum rules_stage)st));
	for (int i = 0; i < c->nlisten; i++) {
		unsigned f = c->listen_flags[i];

		if ((f & CONF_LISTEN_IMPLICIT_TLS) && c->tls_cert == NULL)
			conf_error(p, p->listen_line[i], p->listen_col[i], "listen %s implicit-tls: "
			    "no tls-certificate is configured", c->listen[i].text);
		if ((f & CONF_LISTEN_POLICY) && (f & (CONF_LISTEN_IMPLICIT_TLS | CONF_LISTEN_NO_STARTTLS)))
			conf_error(p, p->listen_line[i], p->listen_col[i], "listen %s policy: "
			    "implicit-tls and no-starttls are for SMTP listeners", c->listen[i].text);
		if ((f & CONF_LISTEN_PROXYPROTO) && c->listen[i].sa.ss_family == AF_UNIX)
			conf_error(p, p->listen_line[i], p->listen_col[i], "listen %s proxy-protocol: "
			    "a PROXY protocol header is for TCP listeners", c->listen[i].text);
		if ((f & CONF_LISTEN_PROXYPROTO) && c->pp_from == NULL)
			conf_error(p, p->listen_line[i], p->listen_col[i], "listen %s proxy-protocol: "
			    "no proxy-protocol-from says which balancers may send the header",
			    c->listen[i].text);
		if (!(f & CONF_LISTEN_POLICY) && c->listen[i].sa.ss_family == AF_UNIX)
			conf_error(p, p->listen_line[i], p->listen_col[i], "listen %s: a unix socket "
			    "is for a policy listener only (add \"policy\")", c->listen[i].text);
		if ((f & CONF_LISTEN_POLICY) && c->rules != NULL &&
		    (rules_stage_needs(c->rules, RS_DATA, CHECK_SAUTH) || rules_reads_from(c->rules)))
			conf_note(p, "warning", p->listen_line[i], p->listen_col[i],
			    "policy listener: rules at data read dkim, dmarc or from, which a "
			    "policy delegation request cannot give (Postfix sends no message): "
			    "there they see no signature, no DMARC record and no From");
	}
	if (c->tls_cert == NULL && (c->tls_key != NULL || c->tls_chain != NULL ||
	    c->tls_client_ca != NULL))
		conf_error(p, 1, 1, "tls-key, tls-chain and tls-client-ca need a tls-certificate");
	if (c->policy_monitor && c->rules != NULL)
		rules_set_dry_all(c->rules);
	c->resolver.max_inflight = (unsigned)c->dns_max_queries;
	{
		char why[256] = "";

		if (c->greylist_seen && greylist_conf_check(&c->greylist, why, sizeof(why)) != 0)
			conf_error(p, 1, 1, "greylist settings: %s", why);
	}
	c->resolver.max_negative_ttl = (int)(c->dns_negative_ttl_ms / 1000);
	*errors = p->errs;	/* the errors, or the warnings of a good file */
	if (p->nerr > 0) {
		conf_unref(c);
		return NULL;
	}
	return c;
}

/* conf_new - an empty configuration for this file name */
static struct conf *
conf_new(const char *path)
{
	struct conf *c = xcalloc(1, sizeof(*c));

	c->refs = 1;
	c->path = xstrdup(path);
	c->rules = rules_new(path);
	greylist_conf_init(&c->greylist);
	return c;
}

/* conf_load_buffer - parse text held in memory (no includes): the fuzzer's
 * and the tests' way in */
struct conf *
conf_load_buffer(const char *name, const char *buf, size_t len, char **errors)
{
	struct conf_parse p;
	struct conf *c = conf_new(name);

	memset(&p, 0, sizeof(p));
	p.file = name;
	*errors = NULL;
	conf_parse_buffer(&p, c, c->path, buf, len, 0);
	return conf_finish(&p, c, errors);
}

/* conf_load - read, check and return the configuration, or NULL */
struct conf *
conf_load(const char *path, char **errors)
{
	struct conf_parse p;
	const char *why = "unknown error";
	size_t len;
	char *buf;
	struct conf *c;

	memset(&p, 0, sizeof(p));
	p.file = path;
	p.allow_include = true;
	*errors = NULL;
	buf = conf_read_file(path, &len, &why);
	if (buf == NULL) {
		conf_error(&p, 0, 0, "cannot read: %s", why);
		*errors = p.errs;
		return NULL;
	}
	c = conf_new(path);
	c->loaded_at = time(NULL);
	conf_parse_buffer(&p, c, c->path, buf, len, 0);
	free(buf);
	return conf_finish(&p, c, errors);
}

/* conf_ref - take one more reference */
struct conf *
conf_ref(struct conf *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

/* conf_unref - drop a reference; the last one frees */
void
conf_unref(struct conf *c)
{
	if (c == NULL)
		return;
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (c->tls != NULL && c->tls_free != NULL)
		c->tls_free(c->tls);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->tls_chain);
	free(c->tls_ciphers);
	free(c->tls_client_ca);
	free(c->upstream_tls_ca);
	rules_free(c->rules);
	list_free(c->pp_from);
	free(c->ratelimits);
	dnsbl_set_free(c->dnsbl);
	dkim_keys_free(c->dkim_keys);
	for (size_t i = 0; i < c->nfiles; i++)
		free(c->files[i]);
	free(c->files);
	free(c->path);
	free(c->hostname);
	free(c->spool_dir);
	free(c->user);
	free(c->control_socket);
	free(c->authserv_id);
	free(c->psl_path);
	free(c);
}

/* conf_identity_name - the word for an identity mode */
const char *
conf_identity_name(int id)
{
	for (const struct conf_enum *e = conf_identity_words; e->name; e++)
		if (e->value == id)
			return e->name;
	return "?";
}
