/*
 * test_rules - the rule language: a table of policies and sessions with the
 * verdict each must give, and a table of bad rules with the exact error and
 * position
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "rules.h"
#include "t.h"

static const char *head = "listen 127.0.0.1:2525\nupstream 127.0.0.1:10025\n";

/* load - head + text into a temp file, loaded; errors in *errs (file as F) */
static struct conf *
load(const char *text, char **errs)
{
	char p[] = "/tmp/moat-test-rules-XXXXXX";
	int fd = mkstemp(p);
	struct conf *c;
	char *q;

	if (fd < 0)
		return NULL;
	if (write(fd, head, strlen(head)) < 0 || write(fd, text, strlen(text)) < 0) {
		close(fd);
		return NULL;
	}
	close(fd);
	c = conf_load(p, errs);
	while (*errs != NULL && (q = strstr(*errs, p)) != NULL) {
		q[0] = 'F';
		memmove(q + 1, q + strlen(p), strlen(q + strlen(p)) + 1);
	}
	unlink(p);
	return c;
}

/* load_ok - head + text loaded, checked to be accepted (its errors shown
 * if not); NULL if refused */
static struct conf *
load_ok(const char *text)
{
	char *errs = NULL;
	struct conf *c = load(text, &errs);

	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	free(errs);
	return c;
}

static const char *policy =
    "list trusted net { 192.0.2.0/24 2001:db8::/32 }\n"
    "list local domain { example.org }\n"
    "list bad-senders address { spammer@ @bad.test }\n"
    "list bad-helo word { evil* localhost }\n"
    "on connect client-ip in trusted accept\n"
    "on connect client-ip in \\\n  trusted reject 554 5.7.1 \"unreachable\"\n"
    "on helo helo in bad-helo reject 550 5.7.1 \"bad helo\"\n"
    "on helo helo is \"x.test\" tempfail 450 4.7.1 \"try later\"\n"
    "on mail sender in bad-senders reject 553 5.7.1 \"sender refused\"\n"
    "on mail monitor declared-size > 1m reject 552 5.3.4 \"too big\"\n"
    "on mail null-sender and not (auth or tls) reject 550 5.7.1 \"no bounces here\"\n"
    "on rcpt not rcpt-domain in local reject 554 5.7.1 \"relay access denied\"\n"
    "on rcpt rcpt-count >= 2 tempfail 452 4.5.3 \"two is enough\"\n"
    "on rcpt off true reject 550 5.7.1 \"never\"\n"
    "on data size > 2k reject 552 5.3.4 \"too big\"\n"
    "on data sender-domain is example.org and rcpt-count == 1 accept\n"
    "on data true reject 550 5.7.1 \"last rule\"\n";

struct ecase {
	const char *name;
	enum rules_stage st;
	const char *ip;
	const char *helo;
	const char *slocal, *sdomain;	/* NULL: no MAIL yet */
	const char *rlocal, *rdomain;
	unsigned rcpt_count;
	uint64_t declared, size;
	bool auth;
	enum rules_verdict want;
	int code;
	int line;			/* of the deciding rule in the whole file */
};

static const struct ecase ecases[] = {
	{ "trusted v4 accepted", RS_CONNECT, "192.0.2.9", 0, 0, 0, 0, 0, 0, 0, 0, 0, RV_ACCEPT, 0, 7 },
	{ "trusted v6 accepted", RS_CONNECT, "2001:db8::5", 0, 0, 0, 0, 0, 0, 0, 0, 0, RV_ACCEPT, 0, 7 },
	{ "other client continues", RS_CONNECT, "198.51.100.1", 0, 0, 0, 0, 0, 0, 0, 0, 0, RV_CONTINUE, 0, 0 },
	{ "helo glob", RS_HELO, "198.51.100.1", "Evil.Example", 0, 0, 0, 0, 0, 0, 0, 0, RV_REJECT, 550, 10 },
	{ "helo word", RS_HELO, "198.51.100.1", "localhost", 0, 0, 0, 0, 0, 0, 0, 0, RV_REJECT, 550, 10 },
	{ "helo is", RS_HELO, "198.51.100.1", "X.TEST", 0, 0, 0, 0, 0, 0, 0, 0, RV_TEMPFAIL, 450, 11 },
	{ "helo fine", RS_HELO, "198.51.100.1", "mx.example.net", 0, 0, 0, 0, 0, 0, 0, 0, RV_CONTINUE, 0, 0 },
	{ "sender local part", RS_MAIL, "198.51.100.1", "h", "Spammer", "any.test", 0, 0, 0, 0, 0, 0, RV_REJECT, 553, 12 },
	{ "sender domain", RS_MAIL, "198.51.100.1", "h", "x", "BAD.test", 0, 0, 0, 0, 0, 0, RV_REJECT, 553, 12 },
	{ "sender subdomain not @domain", RS_MAIL, "198.51.100.1", "h", "x", "a.bad.test", 0, 0, 0, 0, 0, 0, RV_CONTINUE, 0, 0 },
	{ "monitor changes nothing", RS_MAIL, "198.51.100.1", "h", "x", "ok.test", 0, 0, 0, 5u << 20, 0, 0, RV_CONTINUE, 0, 0 },
	{ "null sender", RS_MAIL, "198.51.100.1", "h", "", "", 0, 0, 0, 0, 0, 0, RV_REJECT, 550, 14 },
	{ "null sender with auth", RS_MAIL, "198.51.100.1", "h", "", "", 0, 0, 0, 0, 0, 1, RV_CONTINUE, 0, 0 },
	{ "relay denied", RS_RCPT, "198.51.100.1", "h", "a", "b.test", "u", "other.test", 0, 0, 0, 0, RV_REJECT, 554, 15 },
	{ "local subdomain ok", RS_RCPT, "198.51.100.1", "h", "a", "b.test", "u", "mx.Example.ORG.", 0, 0, 0, 0, RV_CONTINUE, 0, 0 },
	{ "lookalike domain", RS_RCPT, "198.51.100.1", "h", "a", "b.test", "u", "example.org.evil.test", 0, 0, 0, 0, RV_REJECT, 554, 15 },
	{ "third recipient", RS_RCPT, "198.51.100.1", "h", "a", "b.test", "u", "example.org", 2, 0, 0, 0, RV_TEMPFAIL, 452, 16 },
	{ "off rule never runs", RS_RCPT, "198.51.100.1", "h", "a", "b.test", "u", "example.org", 0, 0, 0, 0, RV_CONTINUE, 0, 0 },
	{ "size over", RS_DATA, "198.51.100.1", "h", "a", "b.test", 0, 0, 1, 0, 2049, 0, RV_REJECT, 552, 18 },
	{ "size exact", RS_DATA, "198.51.100.1", "h", "a", "example.org", 0, 0, 1, 0, 2048, 0, RV_ACCEPT, 0, 19 },
	{ "accept stops the stage", RS_DATA, "198.51.100.1", "h", "a", "example.org", 0, 0, 1, 0, 10, 0, RV_ACCEPT, 0, 19 },
	{ "falls to the last rule", RS_DATA, "198.51.100.1", "h", "a", "b.test", 0, 0, 1, 0, 10, 0, RV_REJECT, 550, 20 },
};

static void
test_eval_table(void)
{
	struct conf *c = load_ok(policy);

	if (c == NULL)
		return;
	for (size_t i = 0; i < sizeof(ecases) / sizeof(ecases[0]); i++) {
		const struct ecase *e = &ecases[i];
		struct sockaddr_storage ss;
		struct rules_facts f;
		struct rules_result res;

		memset(&f, 0, sizeof(f));
		f.client = t_sockaddr(e->ip, &ss);
		f.helo = e->helo;
		f.helolen = e->helo ? strlen(e->helo) : 0;
		if (e->slocal) {
			f.have_sender = true;
			f.sender_local = e->slocal;
			f.sender_llen = strlen(e->slocal);
			f.sender_domain = e->sdomain;
			f.sender_dlen = strlen(e->sdomain);
		}
		if (e->rlocal) {
			f.rcpt_local = e->rlocal;
			f.rcpt_llen = strlen(e->rlocal);
			f.rcpt_domain = e->rdomain;
			f.rcpt_dlen = strlen(e->rdomain);
		}
		f.rcpt_count = e->rcpt_count;
		f.declared_size = e->declared;
		f.size = e->size;
		f.auth = e->auth;
		rules_eval(c->rules, e->st, &f, &res, 0);
		T_CHECKF(res.verdict == e->want && res.code == e->code && res.line == e->line,
		    "case %s: verdict %d code %d line %d, want %d %d %d", e->name,
		    res.verdict, res.code, res.line, e->want, e->code, e->line);
		if (strcmp(e->name, "monitor changes nothing") == 0)
			T_CHECKF(res.monitored == 1, "monitored %d", res.monitored);
	}
	T_CHECK(rules_count(c->rules, RS_RCPT) == 3);
	conf_unref(c);
}

struct bcase {
	const char *name;
	const char *text;
	const char *error;	/* bcases: the first error line; pcases: a part of the
				 * errors; wcases: every warning (file shown as F) */
};

static const struct bcase bcases[] = {
	{ "helo list with a bad IDN", "list h word { localhost xn--zz.example }\n"
	  "on helo helo in h reject 550 5.7.1 \"no\"\n",
	  "F:4:17: error: list h has \"xn--zz.example\", which is not a valid internationalised "
	  "domain name (IDNA2008, UTS #46), so helo can never be it" },
	{ "helo is a bad IDN", "on helo helo is b\xff.example accept\n",
	  "F:3:17: error: helo is \"b\\xff.example\": not a valid internationalised domain "
	  "name (IDNA2008, UTS #46)" },
	{ "unknown stage", "on queue true accept\n",
	  "F:3:4: error: expected a stage (connect, helo, mail, rcpt or data), found \"queue\"" },
	{ "unknown fact", "on mail virus is eicar accept\n",
	  "F:3:9: error: unknown fact \"virus\" (known: client-ip, helo, sender, sender-domain, null-sender, rcpt, rcpt-domain, rcpt-count, declared-size, size, auth, tls, score, pipelining-violation, pipelined-after-dot, bare-lf, helo-valid, fcrdns, client-name, login, dnsbl-score, dnsbl-hit, dnsbl-error, early-talker, bare-lf-commands, unknown-commands, spf, spf-helo, dkim, dmarc, dmarc-policy, from-domain, tls-version, tls-cipher, tls-client-cert, from, submission)" },
	{ "fact too early", "on helo sender-domain is x accept\n",
	  "F:3:9: error: sender-domain is not known yet at helo (only from mail on)" },
	{ "unknown list", "on connect client-ip in nope accept\n",
	  "F:3:25: error: unknown list \"nope\" (lists must be defined before the rules that use them)" },
	{ "wrong list kind", "list d domain { a.test }\non connect client-ip in d accept\n",
	  "F:4:25: error: client-ip cannot be looked up in the domain list d (it needs a net list)" },
	{ "spf misspelt", "on rcpt spf is fial reject 550 5.7.1 \"x\"\n",
	  "F:3:16: error: spf is never \"fial\" (valid: none, neutral, pass, fail, softfail, temperror, permerror)" },
	{ "spf-helo misspelt", "on helo spf-helo is sofail accept\n",
	  "F:3:21: error: spf-helo is never \"sofail\" (valid: none, neutral, pass, fail, softfail, temperror, permerror)" },
	{ "dkim misspelt", "on data dkim is passed accept\n",
	  "F:3:17: error: dkim is never \"passed\" (valid: none, pass, fail, neutral, policy, temperror, permerror)" },
	{ "dmarc misspelt", "on data dmarc is failed accept\n",
	  "F:3:18: error: dmarc is never \"failed\" (valid: none, pass, fail, temperror, permerror)" },
	{ "dmarc-policy misspelt", "on data dmarc-policy is rejct accept\n",
	  "F:3:25: error: dmarc-policy is never \"rejct\" (valid: none, quarantine, reject)" },
	{ "tls-version misspelt", "on connect tls-version is 1.3 accept\n",
	  "F:3:27: error: tls-version is never \"1.3\" (valid: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)" },
	{ "word list with a misspelt result", "list w word { pass fial }\non rcpt spf in w accept\n",
	  "F:4:16: error: list w has \"fial\", which spf never is (valid: none, neutral, pass, fail, softfail, temperror, permerror)" },
	{ "word list glob that matches no result", "list w word { x* }\non data dkim in w accept\n",
	  "F:4:17: error: list w has \"x*\", which dkim never is (valid: none, pass, fail, neutral, policy, temperror, permerror)" },
	{ "net list for a domain", "list n net { 192.0.2.0/24 }\non rcpt rcpt-domain in n accept\n",
	  "F:4:24: error: rcpt-domain cannot be looked up in the network list n (it needs a domain list)" },
	{ "domain list for a word", "list d domain { a.test }\non connect login in d accept\n",
	  "F:4:21: error: login cannot be looked up in the domain list d (it needs a word list)" },
	{ "word list for an address", "list w word { a }\non mail sender in w accept\n",
	  "F:4:19: error: sender cannot be looked up in the word list w (it needs an address or domain list)" },
	{ "rcpt-count out of range", "on rcpt rcpt-count > 1000000 accept\n",
	  "F:3:22: error: rcpt-count is between 0 and 100000, found \"1000000\"" },
	{ "negative size", "on data size < -1 accept\n",
	  "F:3:16: error: size is between 0 and 1099511627776, found \"-1\"" },
	{ "size over a terabyte", "on mail declared-size > 2048g accept\n",
	  "F:3:25: error: declared-size is between 0 and 1099511627776, found \"2048g\"" },
	{ "bad domain word", "on rcpt rcpt-domain is a..b accept\n",
	  "F:3:24: error: rcpt-domain is \"a..b\": bad domain \"a..b\": empty label; expected a domain like example.org (and subdomains), .example.org (subdomains only) or =example.org (exactly)" },
	{ "no action", "on connect auth\n",
	  "F:3:16: error: expected an action (accept, reject, tempfail, greylist, score, add-header, tag or sign), found end of line" },
	{ "reject with 4xx", "on connect auth reject 450 4.7.1 \"x\"\n",
	  "F:3:24: error: expected a 5xx reply code, found \"450\"" },
	{ "tempfail with 5xx", "on connect auth tempfail 550 5.7.1 \"x\"\n",
	  "F:3:26: error: expected a 4xx reply code, found \"550\"" },
	{ "enhanced class", "on connect auth reject 550 4.7.1 \"x\"\n",
	  "F:3:28: error: expected an enhanced status code like 5.7.1, found \"4.7.1\"" },
	{ "text not quoted", "on connect auth reject 550 5.7.1 go away\n",
	  "F:3:34: error: expected the reply text in double quotes (printable ASCII, 1 to 400 bytes), found \"go\"" },
	{ "text with newline", "on connect auth reject 550 5.7.1 \"a\\nb\"\n",
	  "F:3:34: error: expected the reply text in double quotes (printable ASCII, 1 to 400 bytes), found \"a\\x0ab\"" },
	{ "missing paren", "on mail (auth or tls accept\n",
	  "F:3:22: error: expected ')', found \"accept\"" },
	{ "comparison on a word", "on helo helo > 3 accept\n",
	  "F:3:14: error: helo is not a number; compare it with \"in\" or \"is\"" },
	{ "bad number", "on data size > 10q accept\n",
	  "F:3:16: error: expected a number (with k, m or g for sizes), found \"10q\"" },
	{ "bare non-bool fact", "on data size accept\n",
	  "F:3:14: error: size needs \"in LIST\" or a comparison after it" },
	{ "trailing words", "on data true accept now\n",
	  "F:3:21: error: unexpected \"now\" after the action" },
	{ "list twice", "list a net { 1.2.3.4 }\nlist a net { 1.2.3.5 }\n",
	  "F:4:6: error: list \"a\" defined twice" },
	{ "list kind", "list a ip { 1.2.3.4 }\n",
	  "F:3:8: error: expected the list's kind (net, domain, address, word or login-map), found \"ip\"" },
	{ "list unclosed", "list a net { 1.2.3.4\n",
	  "F:4:1: error: list a: missing '}'" },
	{ "bad list item", "list a net {\n 192.0.2.1/24 }\n",
	  "F:4:2: error: bad network \"192.0.2.1/24\": host bits are set beyond /24 (did you mean 192.0.2.0/24?)" },
	{ "score without sign", "on connect true score 3\n",
	  "F:3:23: error: expected a signed score like +3 or -2, found \"3\"" },
	{ "unknown variable", "on mail true reject 550 5.7.1 \"no $user here\"\n",
	  "F:3:31: error: expected the reply text in double quotes (unknown $variable (known: $ip $helo $sender $sender-domain $rcpt $rcpt-domain $score $size $dnsbl $dnsbl-reply $client-name $greylist $spf $dkim $dmarc $dmarc-policy $from-domain $spf-explanation; $$ for a dollar)), found \"no $user here\"" },
	{ "variable too early", "on helo true reject 550 5.7.1 \"bad $rcpt\"\n",
	  "F:3:31: error: expected the reply text in double quotes (a $variable not known yet at this stage), found \"bad $rcpt\"" },
	{ "our own A-R", "on data true add-header Authentication-Results \"x; spf=pass\"\n",
	  "F:3:25: error: expected a header field name (not Authentication-Results), found \"Authentication-Results\"" },
	{ "final not last", "on data true accept score +1\n",
	  "F:3:21: error: unexpected \"score\" after the action" },
	{ "missing list file", "list a net file \"/nonexistent/x\"\n",
	  "F:3:17: error: /nonexistent/x: cannot open: No such file or directory" },
};

/* HELO names compared in A-labels: a word list or "helo is" written
 * either way matches a name sent either way; the same list read as login
 * names stays byte for byte */
static void
test_helo_idn(void)
{
	static const struct { const char *helo; enum rules_verdict want; int line; } cases[] = {
		{ "xn--bcher-kva.example", RV_REJECT, 4 },
		{ "b\xc3\xbc" "cher.example", RV_REJECT, 4 },
		{ "B\xc3\x9c" "CHER.example", RV_REJECT, 4 },
		{ "m\xc3\xbc" "nchen.example", RV_REJECT, 4 },	/* in the list as xn-- */
		{ "XN--MNCHEN-3YA.example", RV_REJECT, 4 },
		{ "caf\xc3\xa9.example", RV_TEMPFAIL, 6 },
		{ "XN--CAF-DMA.EXAMPLE", RV_TEMPFAIL, 6 },
		{ "b\xff" "cher.example", RV_CONTINUE, 0 },
		{ "xn--zz.example", RV_CONTINUE, 0 },
		{ "bucher.example", RV_CONTINUE, 0 },
	};
	struct conf *c = load_ok("list uh word { b\xc3\xbc" "cher.example xn--mnchen-3ya.example }\n"
	    "on helo helo in uh reject 550 5.7.1 \"u\"\n"
	    "on helo helo is m\xc3\xbc" "nchen.example tempfail 450 4.7.1 \"t\"\n"
	    "on helo helo is xn--caf-dma.example tempfail 450 4.7.1 \"t\"\n");

	if (c == NULL)
		return;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rules_facts f;
		struct rules_result res;

		memset(&f, 0, sizeof(f));
		f.helo = cases[i].helo;
		f.helolen = strlen(cases[i].helo);
		rules_eval(c->rules, RS_HELO, &f, &res, 0);
		T_CHECKF(res.verdict == cases[i].want && res.line == cases[i].line,
		    "helo %zu: verdict %d line %d", i, res.verdict, res.line);
	}
	conf_unref(c);
}

static void
test_bad_rules(void)
{
	for (size_t i = 0; i < sizeof(bcases) / sizeof(bcases[0]); i++) {
		const struct bcase *b = &bcases[i];
		char *errs = NULL, first[600];
		struct conf *c = load(b->text, &errs);

		T_CHECKF(c == NULL, "case %s: accepted", b->name);
		conf_unref(c);
		t_first_line(errs, first, sizeof(first));
		T_CHECKF(strcmp(first, b->error) == 0, "case %s:\n   got  %s\n   want %s",
		    b->name, first, b->error);
		free(errs);
	}
}

/* refused policies whose errors must say this somewhere */
static const struct bcase pcases[] = {
	{ "variable too early", "on connect true reject 550 5.7.1 \"$spf-explanation\"\n",
	  "not known yet" },
	{ "login-map used as a word list", "list owners login-map {\n"
	  "  alice: alice@example.org @example.net\n  Bob: bob@ }\n"
	  "on mail login in staff reject 550 5.7.1 \"x\"\n",
	  "unknown list \"staff\"" },
	{ "login-map entry without a login", "list m login-map { a@b.test }\n",
	  "F:3:20: error: expected \"LOGIN:\" before the addresses it owns" },
	{ "login-map in a sender rule", "list m login-map { a: x@y }\non mail sender in m accept\n",
	  "m is a login-map: use \"sender owned-by m\"" },
};

static void
test_errors_say(void)
{
	for (size_t i = 0; i < sizeof(pcases) / sizeof(pcases[0]); i++) {
		const struct bcase *b = &pcases[i];
		char *errs = NULL;
		struct conf *c = load(b->text, &errs);

		T_CHECKF(c == NULL && errs != NULL && strstr(errs, b->error) != NULL,
		    "case %s: %s", b->name, errs ? errs : "(accepted)");
		free(errs);
		conf_unref(c);
	}
}

/* accepted policies with rules that can never run: the warnings, exactly */
static const struct bcase wcases[] = {
	{ "a rule deciding every mail first", "on mail true reject 550 5.7.1 \"all\"\n"
	  "on mail auth accept\non rcpt true score +1\non rcpt auth accept\n",
	  "F:4:1: warning: this rule can never run: the rule at line 3 decides every mail first\n" },
	{ "a rule shadowed by a part or the same condition",
	  "on rcpt auth and tls reject 550 5.7.1 \"a\"\n"
	  "on rcpt tls and null-sender and auth reject 550 5.7.1 \"b\"\n"
	  "on rcpt auth and tls reject 550 5.7.1 \"c\"\n"
	  "on rcpt auth or tls reject 550 5.7.1 \"d\"\n"
	  "on rcpt auth score +1\n"
	  "on rcpt auth reject 550 5.7.1 \"e\"\n"
	  "on rcpt off auth reject 550 5.7.1 \"f\"\n",
	  "F:4:1: warning: this rule can never run: whenever its condition holds, the rule at "
	  "line 3 (a part of this condition) matches first and decides the rcpt\n"
	  "F:5:1: warning: this rule can never run: whenever its condition holds, the rule at "
	  "line 3 (the same condition) matches first and decides the rcpt\n" },
};

static void
test_unreachable_warning(void)
{
	for (size_t i = 0; i < sizeof(wcases) / sizeof(wcases[0]); i++) {
		const struct bcase *w = &wcases[i];
		char *errs = NULL;
		struct conf *c = load(w->text, &errs);

		T_CHECKF(c != NULL, "case %s: refused", w->name);	/* a warning does not refuse */
		T_CHECKF(errs != NULL && strcmp(errs, w->error) == 0, "case %s: %s", w->name,
		    errs ? errs : "(none)");
		conf_unref(c);
		free(errs);
	}
}

static void
test_errors_all_reported(void)
{
	char *errs = NULL;
	struct conf *c = load("on x true accept\non mail spf accept\nlist a net { bad }\n"
	    "on rcpt size > 1 accept\n", &errs);
	int n = 0;

	T_CHECK(c == NULL);
	for (const char *p = errs; p && *p; p++)
		n += *p == '\n';
	T_CHECKF(n == 4, "%d errors: %s", n, errs ? errs : "");
	free(errs);
}

static void
test_score_headers_variables(void)
{
	char out[512];
	struct conf *c = load_ok(
	    "list bad net { 192.0.2.0/24 }\n"
	    "on connect client-ip in bad score +5 add-header X-Listed \"$ip is listed\"\n"
	    "on connect true score -1\n"
	    "on mail score >= 4 reject 550 5.7.1 \"score $score too high for $sender ($$5)\"\n"
	    "on mail score < 0 add-header X-Friendly \"yes\" score +10\n");
	struct sockaddr_storage ss;
	struct rules_facts f;
	struct rules_result r;

	if (c == NULL)
		return;
	memset(&f, 0, sizeof(f));
	f.client = t_sockaddr("192.0.2.7", &ss);
	rules_eval(c->rules, RS_CONNECT, &f, &r, 0);
	T_CHECK(r.verdict == RV_CONTINUE && r.score == 4 && r.nhdr == 1);
	rules_expand(r.hdr_value[0], &f, out, sizeof(out));
	T_CHECKF(strcmp(out, "192.0.2.7 is listed") == 0, "%s", out);
	f.score = r.score;
	f.have_sender = true;
	f.sender_local = "a\r\nb";	/* peer bytes: never a CR or LF in a reply */
	f.sender_llen = 4;
	f.sender_domain = "x.test";
	f.sender_dlen = 6;
	rules_eval(c->rules, RS_MAIL, &f, &r, 0);
	T_CHECK(r.verdict == RV_REJECT && r.code == 550);
	rules_expand(r.text, &f, out, sizeof(out));
	T_CHECKF(strcmp(out, "score 4 too high for a??b@x.test ($5)") == 0, "%s", out);
	f.score = -1;
	rules_eval(c->rules, RS_MAIL, &f, &r, 0);
	T_CHECK(r.verdict == RV_CONTINUE && r.score == 10 && r.nhdr == 1 &&
	    strcmp(r.hdr_name[0], "X-Friendly") == 0);
	/* expansion never overflows */
	rules_expand("$ip $ip $ip", &f, out, 5);
	T_CHECK(strlen(out) == 4);
	T_CHECK(!rules_uses_spf_explanation(c->rules));
	conf_unref(c);
}

/* $spf-explanation: known from the mail stage on, marks the set (so SPF
 * fetches the explanation), expands with spaces kept, anything else not
 * printable made '?', at most 300 bytes */
static void
test_spf_explanation_variable(void)
{
	char out[1024], big[700];
	struct conf *c = load_ok("on rcpt spf is fail reject 550 5.7.23 \"SPF: $spf-explanation\"\n");
	struct rules_facts f;

	if (c == NULL)
		return;
	T_CHECK(rules_uses_spf_explanation(c->rules));
	memset(&f, 0, sizeof(f));
	f.spf_explanation = "192.0.2.1 is not\r\n250 allowed \xc3\xa9";
	rules_expand("SPF: $spf-explanation", &f, out, sizeof(out));
	T_CHECKF(strcmp(out, "SPF: 192.0.2.1 is not??250 allowed ??") == 0, "%s", out);
	f.spf_explanation = NULL;
	rules_expand("SPF: $spf-explanation.", &f, out, sizeof(out));
	T_CHECKF(strcmp(out, "SPF: .") == 0, "%s", out);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	f.spf_explanation = big;
	T_CHECK(rules_expand("$spf-explanation", &f, out, sizeof(out)) == 300);
	conf_unref(c);
}

/* test_dry_run - policy-mode monitor: a refusing rule that matches is
 * passed over (the greylist check is still asked for), accept still
 * accepts; the shadow warnings still speak of the enforced policy */
static void
test_dry_run(void)
{
	char *errs = NULL;
	struct conf *c = load("policy-mode monitor\n"
	    "on rcpt true greylist\n"
	    "on rcpt true reject 550 5.7.1 \"no\"\n"
	    "on rcpt auth accept\n"
	    "on rcpt true tempfail 451 4.7.1 \"later\"\n", &errs);
	struct rules_facts f = { 0 };
	struct rules_result res;

	/* the warnings are about the policy as it will be enforced */
	T_CHECKF(c != NULL && errs != NULL && strcmp(errs, "F:6:1: warning: this rule can never "
	    "run: the rule at line 5 decides every rcpt first\nF:7:1: warning: this rule can never "
	    "run: the rule at line 5 decides every rcpt first\n") == 0, "%s", errs ? errs : "");
	free(errs);
	if (c == NULL)
		return;
	rules_eval(c->rules, RS_RCPT, &f, &res, 0);
	T_CHECKF(res.verdict == RV_WAIT && res.need == 2, "verdict %d need %d", res.verdict, res.need);
	f.greylist_known = true;
	f.greylist_tempfail = true;
	f.greylist_text = "greylisted";
	rules_eval(c->rules, RS_RCPT, &f, &res, 0);
	T_CHECKF(res.verdict == RV_CONTINUE && res.monitored == 3, "verdict %d monitored %d",
	    res.verdict, res.monitored);
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == -1);
	f.auth = true;
	rules_eval(c->rules, RS_RCPT, &f, &res, 0);
	T_CHECKF(res.verdict == RV_ACCEPT && res.line == 6, "verdict %d line %d", res.verdict, res.line);
	conf_unref(c);
}

/* test_first_need - the one check a stage waits for: the first rule, in
 * order, that reaches a fact not in yet names it; a rule that decides
 * before (trusted accept, a greylisted recipient) means none (issue 22) */
static void
test_first_need(void)
{
	struct conf *c = load_ok("list trusted net { 192.0.2.0/24 }\n"
	    "on rcpt client-ip in trusted accept\n"
	    "on rcpt monitor dnsbl-score >= 1 reject 554 5.7.1 \"listed\"\n"
	    "on rcpt true greylist\n"
	    "on rcpt spf is fail reject 550 5.7.23 \"spf\"\n");
	struct rules_facts f;
	struct sockaddr_storage ss;

	if (c == NULL)
		return;
	memset(&f, 0, sizeof(f));
	f.client = t_sockaddr("192.0.2.7", &ss);
	/* trusted: decided by the first rule, nothing awaited */
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == -1);
	T_CHECK(!rules_stage_wants(c->rules, RS_RCPT, &f, 3));
	/* not trusted: the monitor rule reads the DNSBL first, then the
	 * greylist, then SPF, one after the other as each comes in */
	f.client = t_sockaddr("198.51.100.7", &ss);
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == 1);
	f.dnsbl_known = true;
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == 2);
	f.greylist_known = true;
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == 3);
	/* greylisted: that rule decides (4xx), SPF is not awaited */
	f.greylist_tempfail = true;
	T_CHECK(rules_stage_first_need(c->rules, RS_RCPT, &f) == -1);
	T_CHECK(!rules_stage_wants(c->rules, RS_RCPT, &f, 3));
	conf_unref(c);
}

static void
test_checks_wait(void)
{
	struct conf *c = load_ok("list mine domain { example.org }\n"
	    "on connect true score +1\n"
	    "on mail client-name in mine accept\n"
	    "on mail not fcrdns reject 550 5.7.1 \"who are you\"\n"
	    "on helo not helo-valid reject 501 5.5.2 \"bad helo\"\n");
	struct rules_facts f;
	struct rules_result r;

	if (c == NULL)
		return;
	T_CHECK(!rules_stage_needs(c->rules, RS_CONNECT, 0));
	T_CHECK(rules_stage_needs(c->rules, RS_MAIL, 0));
	memset(&f, 0, sizeof(f));
	/* connect needs nothing: no wait */
	rules_eval(c->rules, RS_CONNECT, &f, &r, 0);
	T_CHECK(r.verdict == RV_CONTINUE && r.score == 1);
	/* mail reads fcrdns facts: wait, with nothing acted on */
	rules_eval(c->rules, RS_MAIL, &f, &r, 0);
	T_CHECK(r.verdict == RV_WAIT && r.need == 0 && r.score == 0);
	f.fcrdns_known = true;
	rules_eval(c->rules, RS_MAIL, &f, &r, 0);
	T_CHECK(r.verdict == RV_REJECT && r.code == 550);
	f.fcrdns = true;
	f.client_name = "mx.example.org";
	f.client_nlen = 14;
	rules_eval(c->rules, RS_MAIL, &f, &r, 0);
	T_CHECK(r.verdict == RV_ACCEPT);
	f.helo = "bad helo";
	f.helolen = 8;
	f.helo_valid = false;
	rules_eval(c->rules, RS_HELO, &f, &r, 0);
	T_CHECK(r.verdict == RV_REJECT && r.code == 501);
	conf_unref(c);

	/* login: a word fact, empty until AUTH */
	c = load_ok("list staff word { alice bo* }\non mail login in staff tag staff accept\n"
	    "on mail login is \"\" reject 530 5.7.0 \"login first\"\n");
	if (c == NULL)
		return;
	memset(&f, 0, sizeof(f));
	f.login = "Bob";
	f.loginlen = 3;
	rules_eval(c->rules, RS_MAIL, &f, &r, 0);
	T_CHECK(r.verdict == RV_ACCEPT && r.nhdr == 1 && strcmp(r.hdr_value[0], "staff") == 0);
	f.login = NULL;
	f.loginlen = 0;
	rules_eval(c->rules, RS_MAIL, &f, &r, 0);
	T_CHECKF(r.verdict == RV_CONTINUE, "verdict %d", r.verdict);
	conf_unref(c);
}

struct whys {
	int n;
	char why[4][400];
	bool matched[4];
};

/* why_cb - the trace callback: each rule's why text */
static void
why_cb(void *arg, const struct rules_trace *t)
{
	struct whys *w = arg;

	if (w->n < 4) {
		snprintf(w->why[w->n], sizeof(w->why[0]), "%s", t->why ? t->why : "(null)");
		w->matched[w->n] = t->matched;
	}
	w->n++;
}

/* test_trace_why - explain's trace gives each term: the fact's value,
 * the test and whether it held; peer bytes escaped; a check not in */
static void
test_trace_why(void)
{
	char *errs = NULL;
	struct conf *c = load("list trusted net { 192.0.2.0/24 }\n"
	    "list owners login-map { alice: alice@example.org }\n"
	    "on rcpt not client-ip in trusted and (spf is fail or dnsbl-score >= 3) "
	    "reject 550 5.7.1 \"x\"\n"
	    "on rcpt auth and not sender owned-by owners reject 553 5.7.1 \"y\"\n"
	    "on rcpt helo is \"a b\" tempfail 450 4.7.1 \"z\"\n", &errs);
	struct rules_facts f;
	struct rules_result r;
	struct sockaddr_in sin;
	struct whys w;

	T_CHECKF(c != NULL, "%s", errs ? errs : "");
	free(errs);
	if (c == NULL)
		return;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, "198.51.100.7", &sin.sin_addr);
	memset(&f, 0, sizeof(f));
	f.client = (const struct sockaddr *)&sin;
	f.fcrdns_known = f.dnsbl_known = f.spf_known = f.sauth_known = f.rl_known = true;
	f.spf = "softfail";
	f.dnsbl_score = 4;
	f.auth = true;
	f.login = "alice";
	f.loginlen = 5;
	f.have_sender = true;
	f.sender_local = "bob";
	f.sender_llen = 3;
	f.sender_domain = "example.org";
	f.sender_dlen = 11;
	f.helo = "a\r\nb";
	f.helolen = 4;
	memset(&w, 0, sizeof(w));
	rules_eval_trace(c->rules, RS_RCPT, &f, &r, 0, why_cb, &w);
	T_CHECKF(w.n == 1 && w.matched[0] && r.code == 550, "%d rules, code %d", w.n, r.code);
	T_CHECKF(strcmp(w.why[0], "client-ip=198.51.100.7 in trusted: no; spf=softfail is fail: no; "
	    "dnsbl-score=4 >= 3: yes") == 0, "%s", w.why[0]);
	f.dnsbl_score = 0;
	memset(&w, 0, sizeof(w));
	rules_eval_trace(c->rules, RS_RCPT, &f, &r, 0, why_cb, &w);
	T_CHECKF(w.n == 2 && !w.matched[0] && w.matched[1] && r.code == 553, "%d rules", w.n);
	T_CHECKF(strcmp(w.why[1], "auth: yes; sender=<bob@example.org> owned-by owners "
	    "(login alice): no") == 0, "%s", w.why[1]);
	f.auth = false;
	memset(&w, 0, sizeof(w));
	rules_eval_trace(c->rules, RS_RCPT, &f, &r, 0, why_cb, &w);
	T_CHECKF(w.n == 3 && strcmp(w.why[2], "helo=a\\x0d\\x0ab is a\\x20b: no") == 0, "%s",
	    w.why[2]);
	conf_unref(c);
}

static void
test_login_map(void)
{
	struct conf *c = load_ok("list owners login-map {\n  alice: alice@example.org @example.net\n"
	    "  Bob: bob@ }\n"
	    "on mail not sender owned-by owners reject 553 5.7.1 \"not owned by $sender\"\n");
	struct rules_facts f;
	struct rules_result r;

	if (c == NULL)
		return;
	struct { const char *login, *local, *domain; bool owned; } tab[] = {
		{ "alice", "alice", "example.org", true },
		{ "ALICE", "Alice", "Example.ORG", true },
		{ "alice", "anyone", "example.net", true },
		{ "alice", "bob", "example.org", false },
		{ "alice", "alice", "sub.example.net", false },
		{ "bob", "bob", "anywhere.test", true },
		{ "bob", "alice", "example.org", false },
		{ "carol", "carol", "example.org", false },
		{ NULL, "alice", "example.org", false },	/* not logged in */
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		memset(&f, 0, sizeof(f));
		f.login = tab[i].login;
		f.loginlen = tab[i].login ? strlen(tab[i].login) : 0;
		f.have_sender = true;
		f.sender_local = tab[i].local;
		f.sender_llen = strlen(tab[i].local);
		f.sender_domain = tab[i].domain;
		f.sender_dlen = strlen(tab[i].domain);
		rules_eval(c->rules, RS_MAIL, &f, &r, 0);
		T_CHECKF((r.verdict == RV_CONTINUE) == tab[i].owned, "row %zu: verdict %d", i, r.verdict);
	}
	conf_unref(c);
}

int
main(void)
{
	log_init("test_rules", false, LOG_L_ERROR);
	T_RUN(test_eval_table);
	T_RUN(test_helo_idn);
	T_RUN(test_bad_rules);
	T_RUN(test_errors_all_reported);
	T_RUN(test_errors_say);
	T_RUN(test_score_headers_variables);
	T_RUN(test_spf_explanation_variable);
	T_RUN(test_unreachable_warning);
	T_RUN(test_dry_run);
	T_RUN(test_checks_wait);
	T_RUN(test_first_need);
	T_RUN(test_login_map);
	T_RUN(test_trace_why);
	return T_DONE("rules");
}
