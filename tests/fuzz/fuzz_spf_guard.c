// sources: filters/spf_guard.c
/*
 * fuzz_spf_guard - F8: the SPF record guard and, behind it, libspf2's
 * compiler and interpreter on what the guard lets through (the D8 path)
 *
 * Input: byte 0 picks the client (bit 0: IPv6) and which marked names
 * "match" (bits 1-7, one per term in turn); the rest is one TXT record,
 * any bytes. Properties, each an abort() when violated:
 *   - spf_guard_parse() returns 0 or -1, and a refusal names a reason;
 *   - an accepted record always rewrites into SPF_GUARD_REWRITE_MAX bytes,
 *     and the rewrite is itself a record the guard accepts (what libspf2
 *     compiles obeys the same bounds as what was published);
 *   - every marker the rewrite wrote parses back with the token;
 *   - libspf2 (loaded with dlopen, as the fuzz build links no library)
 *     compiles every rewrite without error, and interprets it, macro
 *     expansion included, over a DNS layer that answers marked names
 *     "match" or "no match" and everything else "no such name", ending
 *     in a result (no crash, no sanitizer report, no abort from its
 *     assertions). Without libspf2 on the machine only the guard runs.
 *   - spf_guard_exp_text() on the same bytes: an accepted explanation is
 *     printable US-ASCII within SPF_GUARD_EXP_MAX bytes, and libspf2
 *     compiles it (spaces written "%_", as spf.c does) and expands it
 *     without error, to printable text (the $spf-explanation path).
 * libspf2 is not built with ASan here, so its own stray writes are seen
 * only where they reach libc (memcpy, sprintf) or crash; moat's part is
 * fully instrumented.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spf2/spf.h>

#include "spf_guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TOKEN "qwertyuiop"

static struct {
	void *h;
	SPF_server_t *(*server_new_dns)(SPF_dns_server_t *, int);
	void (*server_free)(SPF_server_t *);
	SPF_response_t *(*response_new)(SPF_request_t *);
	void (*response_free)(SPF_response_t *);
	SPF_errcode_t (*compile)(SPF_server_t *, SPF_response_t *, SPF_record_t **, const char *);
	void (*record_free)(SPF_record_t *);
	SPF_request_t *(*request_new)(SPF_server_t *);
	void (*request_free)(SPF_request_t *);
	SPF_errcode_t (*set_ipv4)(SPF_request_t *, struct in_addr);
	SPF_errcode_t (*set_ipv6)(SPF_request_t *, struct in6_addr);
	SPF_errcode_t (*set_helo)(SPF_request_t *, const char *);
	int (*set_from)(SPF_request_t *, const char *);
	SPF_errcode_t (*interpret)(SPF_record_t *, SPF_request_t *, SPF_response_t *, int);
	SPF_dns_rr_t *(*rr_new)(SPF_dns_server_t *, const char *, ns_type, int, SPF_dns_stat_t);
	SPF_errcode_t (*rr_realloc)(SPF_dns_rr_t *, int, size_t);
	SPF_result_t (*result)(SPF_response_t *);
	SPF_errcode_t (*compile_macro)(SPF_server_t *, SPF_response_t *, SPF_macro_t **,
	    const char *);
	SPF_errcode_t (*expand)(SPF_server_t *, SPF_request_t *, SPF_response_t *, SPF_data_t *,
	    size_t, char **, size_t *);
	void (*macro_free)(SPF_macro_t *);
} lib;

static unsigned match_bits;

static SPF_dns_rr_t *
fake_lookup(SPF_dns_server_t *d, const char *domain, ns_type type, int cache)
{
	struct spf_marker m;
	SPF_dns_rr_t *rr;

	(void)cache;
	if (type == ns_t_a && spf_guard_marker(domain, TOKEN, &m) == 1) {
		if (m.domlen >= strlen(domain))
			abort();
		if (match_bits & 1) {
			match_bits >>= 1;
			rr = lib.rr_new(d, domain, type, 0, NETDB_SUCCESS);
			if (rr == NULL || lib.rr_realloc(rr, 0, sizeof(struct in_addr)) != SPF_E_SUCCESS)
				abort();
			rr->rr[0]->a.s_addr = htonl(0x7f000002);
			rr->num_rr = 1;
			return rr;
		}
		match_bits >>= 1;
	}
	rr = lib.rr_new(d, domain, type, 0, HOST_NOT_FOUND);
	if (rr == NULL)
		abort();
	return rr;
}

static SPF_errcode_t
fake_get_spf(SPF_server_t *s, SPF_request_t *rq, SPF_response_t *rp, SPF_record_t **r)
{
	(void)s;
	(void)rq;
	(void)rp;
	*r = NULL;
	return SPF_E_NOT_SPF;
}

static void
quiet(const char *file, int line, const char *msg)
{
	(void)file;
	(void)line;
	(void)msg;
}

#define SYM(f, n) do { *(void **)&lib.f = dlsym(lib.h, n); if (lib.f == NULL) abort(); } while (0)

static void
lib_load(void)
{
	void (**warn)(const char *, int, const char *);

	lib.h = dlopen("libspf2.so.2", RTLD_NOW | RTLD_LOCAL);
	if (lib.h == NULL) {
		fprintf(stderr, "fuzz_spf_guard: no libspf2 (%s): the guard only\n", dlerror());
		return;
	}
	SYM(server_new_dns, "SPF_server_new_dns");
	SYM(server_free, "SPF_server_free");
	SYM(response_new, "SPF_response_new");
	SYM(response_free, "SPF_response_free");
	SYM(compile, "SPF_record_compile");
	SYM(record_free, "SPF_record_free");
	SYM(request_new, "SPF_request_new");
	SYM(request_free, "SPF_request_free");
	SYM(set_ipv4, "SPF_request_set_ipv4");
	SYM(set_ipv6, "SPF_request_set_ipv6");
	SYM(set_helo, "SPF_request_set_helo_dom");
	SYM(set_from, "SPF_request_set_env_from");
	SYM(interpret, "SPF_record_interpret");
	SYM(rr_new, "SPF_dns_rr_new_init");
	SYM(rr_realloc, "SPF_dns_rr_buf_realloc");
	SYM(result, "SPF_response_result");
	SYM(compile_macro, "SPF_record_compile_macro");
	SYM(expand, "SPF_record_expand_data");
	SYM(macro_free, "SPF_macro_free");
	/* warnings and debug output to nowhere; errors keep aborting */
	warn = dlsym(lib.h, "SPF_warning_handler");
	if (warn != NULL)
		*warn = quiet;
	warn = dlsym(lib.h, "SPF_info_handler");
	if (warn != NULL)
		*warn = quiet;
	warn = dlsym(lib.h, "SPF_debug_handler");
	if (warn != NULL)
		*warn = quiet;
}

/* run_libspf2 - compile the rewrite and interpret it */
static void
run_libspf2(const char *rec, int v6)
{
	SPF_dns_server_t dns;
	SPF_server_t *s;
	SPF_response_t *rp;
	SPF_request_t *rq;
	SPF_record_t *r = NULL;
	SPF_result_t res;

	memset(&dns, 0, sizeof(dns));
	dns.lookup = fake_lookup;
	dns.get_spf = fake_get_spf;
	dns.name = "fuzz";
	s = lib.server_new_dns(&dns, 0);
	if (s == NULL)
		abort();
	rp = lib.response_new(NULL);
	if (lib.compile(s, rp, &r, rec) != SPF_E_SUCCESS || r == NULL) {
		fprintf(stderr, "libspf2 refused a guarded record: %s\n", rec);
		abort();
	}
	lib.response_free(rp);
	rq = lib.request_new(s);
	if (v6) {
		struct in6_addr a6;

		inet_pton(AF_INET6, "2001:db8::5", &a6);
		lib.set_ipv6(rq, a6);
	} else {
		struct in_addr a4;

		inet_pton(AF_INET, "192.0.2.5", &a4);
		lib.set_ipv4(rq, a4);
	}
	lib.set_helo(rq, "mail.example.org");
	lib.set_from(rq, "Some.User-x+y=z@Example.COM");
	rq->cur_dom = "example.com";
	rp = lib.response_new(rq);
	rp->spf_record_exp = r;
	lib.interpret(r, rq, rp, 0);
	res = lib.result(rp);
	if (res > SPF_RESULT_PERMERROR)
		abort();
	lib.response_free(rp);
	lib.record_free(r);
	lib.request_free(rq);
	lib.server_free(s);
}

/* check_exp - the explanation path: guard, then libspf2's macros */
static void
check_exp(const char *s, size_t n)
{
	char why[128], sp[2 * SPF_GUARD_EXP_MAX + 1];
	size_t o = 0;
	SPF_dns_server_t dns;
	SPF_server_t *srv;
	SPF_request_t *rq;
	SPF_response_t *rp;
	SPF_macro_t *mac = NULL;
	struct in_addr a4;
	char *buf = NULL;
	size_t buflen = 0;

	if (spf_guard_exp_text(s, n, why, sizeof(why)) != 0)
		return;
	if (n == 0 || n > SPF_GUARD_EXP_MAX)
		abort();
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			abort();
		if (s[i] == ' ') {
			sp[o++] = '%';
			sp[o++] = '_';
		} else {
			sp[o++] = s[i];
		}
	}
	sp[o] = '\0';
	if (lib.h == NULL)
		return;
	memset(&dns, 0, sizeof(dns));
	dns.lookup = fake_lookup;
	dns.get_spf = fake_get_spf;
	dns.name = "fuzz";
	if ((srv = lib.server_new_dns(&dns, 0)) == NULL)
		abort();
	rq = lib.request_new(srv);
	inet_pton(AF_INET, "192.0.2.5", &a4);
	lib.set_ipv4(rq, a4);
	lib.set_helo(rq, "mail.example.org");
	lib.set_from(rq, "Some.User-x+y=z@Example.COM");
	rq->cur_dom = "example.com";
	rp = lib.response_new(rq);
	if (lib.compile_macro(srv, rp, &mac, sp) != SPF_E_SUCCESS || mac == NULL) {
		fprintf(stderr, "libspf2 refused a guarded explanation: %s\n", sp);
		abort();
	}
	if (lib.expand(srv, rq, rp, (SPF_data_t *)(void *)((char *)mac + sizeof(*mac)),
	    mac->macro_len, &buf, &buflen) == SPF_E_SUCCESS && buf != NULL)
		for (const char *p = buf; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				abort();
	free(buf);
	lib.macro_free(mac);
	lib.response_free(rp);
	lib.request_free(rq);
	lib.server_free(srv);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	struct spf_rec r, r2;
	char why[128], out[SPF_GUARD_REWRITE_MAX];
	int n;

	if (!init) {
		lib_load();
		init = 1;
	}
	if (size < 1)
		return 0;
	check_exp((const char *)data + 1, size - 1);
	why[0] = '\0';
	n = spf_guard_parse((const char *)data + 1, size - 1, &r, why, sizeof(why));
	if (n != 0) {
		if (n != -1 || why[0] == '\0')
			abort();
		return 0;
	}
	n = spf_guard_rewrite(&r, TOKEN, out, sizeof(out));
	if (n < 0 || (size_t)n != strlen(out))
		abort();
	if (spf_guard_parse_rewrite(out, (size_t)n, &r2, why, sizeof(why)) != 0) {
		fprintf(stderr, "rewrite refused (%s): %s\n", why, out);
		abort();
	}
	/* every exists of the rewrite carries a marker (the name before it
	 * unexpanded) */
	for (int i = 0; i < r2.nterms; i++) {
		const struct spf_term *t = &r2.t[i];
		char name[SPF_GUARD_REWRITE_MAX];
		struct spf_marker m;

		if (t->mech != SPF_M_EXISTS)
			continue;
		if (t->speclen >= sizeof(name))
			abort();
		memcpy(name, t->spec, t->speclen);
		name[t->speclen] = '\0';
		if (spf_guard_marker(name, TOKEN, &m) != 1)
			abort();
	}
	if (lib.h != NULL) {
		match_bits = data[0] >> 1;
		run_libspf2(out, data[0] & 1);
	}
	return 0;
}
