// sources: filters/dnsbl.c policy/conf_dnsbl.c core/dnsname.c policy/lex.c core/log.c core/xalloc.c
/*
 * fuzz_dnsbl - DNSBL answer interpretation (docs/SECURITY.md F12) and the
 * dnsbl/dnswl statement parser (filters/dnsbl.c, policy/conf_dnsbl.c)
 *
 * Input: a policy statement up to the first NUL (parsed with the real
 * lexer); after it, the answer's A records, 4 bytes each (at most 16),
 * then any bytes as a domain to form a query name from.
 * Properties, each an abort() when violated:
 *   - a statement that fails to parse adds no zone; one that parses adds
 *     exactly one, with a name and a zone of at most 253 bytes;
 *   - only answers in 127.0.0.0/8 can list, and never one in
 *     127.255.255.0/24 or outside 127/8: such an answer is an error;
 *   - a listing comes from an answer inside the zone's codes (or any
 *     127/8 answer when it has none), with a weight that the zone's
 *     weights bound;
 *   - a dnswl listing never adds a positive weight;
 *   - a query name, when one is formed, is at most 253 bytes + the zone,
 *     of letters, digits, '-', '_' and dots only.
 */
#include "conf_dnsbl.h"
#include "dnsbl.h"
#include "lex.h"
#include "log.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void
err_fn(void *arg, int line, int col, const char *msg)
{
	(void)arg;
	if (line < 1 || col < 0 || msg == NULL || msg[0] == 0)
		abort();
}

static bool
in_codes(const struct dnsbl_zone *z, uint32_t a)
{
	if (z->ncodes > 0) {
		for (int c = 0; c < z->ncodes; c++)
			for (int r = 0; r < z->codes[c].nr; r++)
				if (a >= z->codes[c].lo[r] && a <= z->codes[c].hi[r])
					return true;
		return false;
	}
	if (z->nc == 0)
		return true;
	for (int r = 0; r < z->nc; r++)
		if (a >= z->clo[r] && a <= z->chi[r])
			return true;
	return false;
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static bool init;
	const unsigned char *nul = memchr(data, 0, size);
	size_t tlen = nul ? (size_t)(nul - data) : size;
	struct dnsbl_set *set = calloc(1, sizeof(*set));
	struct lexer lx;
	struct lex_token kw;
	uint32_t ans[16];
	int n = 0;
	size_t pos;

	if (!init) {
		log_init("fuzz", false, LOG_L_ERROR);
		init = true;
	}
	if (set == NULL)
		return 0;
	lex_init(&lx, "f", (const char *)data, tlen);
	lex_next(&lx, &kw);
	if (kw.type == LEX_WORD && kw.len == 5 &&
	    (memcmp(kw.text, "dnsbl", 5) == 0 || memcmp(kw.text, "dnswl", 5) == 0)) {
		int r = conf_dnsbl_parse(set, &lx, &kw, err_fn, NULL);

		if ((r == 0) != (set->n == 1))
			abort();
	}
	lex_free(&lx);
	pos = nul ? tlen + 1 : size;
	while (n < 16 && pos + 4 <= size) {
		ans[n++] = (uint32_t)data[pos] << 24 | (uint32_t)data[pos + 1] << 16 |
		    (uint32_t)data[pos + 2] << 8 | data[pos + 3];
		pos += 4;
		if (pos < size && data[pos] == '.') {	/* '.' ends the answers */
			pos++;
			break;
		}
	}
	for (int i = 0; i < set->n; i++) {
		const struct dnsbl_zone *z = &set->z[i];
		struct dnsbl_eval e;
		bool bad = false, any = false;
		int64_t bound = 0;
		char name[320], dom[300];
		size_t dl = size - pos < sizeof(dom) - 1 ? size - pos : sizeof(dom) - 1;
		unsigned char addr[16] = { 0 };
		int q;

		if (z->name == NULL || z->zone == NULL || strlen(z->zone) > 253 || strlen(z->name) > 253)
			abort();
		for (int k = 0; k < n; k++) {
			if ((ans[k] >> 24) != 127 || (ans[k] >> 8) == 0x7fffff)
				bad = true;
			else if (in_codes(z, ans[k]))
				any = true;
		}
		bound = z->weight < 0 ? -z->weight : z->weight;
		for (int c = 0; c < z->ncodes; c++)
			bound += z->codes[c].weight < 0 ? -z->codes[c].weight : z->codes[c].weight;
		dnsbl_eval_answer(z, ans, n, &e);
		if (bad && e.v != DNSBL_V_ERROR)
			abort();
		if (!bad && e.v == DNSBL_V_ERROR)
			abort();
		if (e.v == DNSBL_V_LISTED && (!any || e.weight > bound || e.weight < -bound))
			abort();
		if (!bad && any && e.v != DNSBL_V_LISTED)
			abort();
		if (z->allow && e.v == DNSBL_V_LISTED && e.weight > 0)
			abort();
		memcpy(dom, data + pos, dl);
		dom[dl] = 0;
		memcpy(addr, data + pos, size - pos < 16 ? size - pos : 16);
		q = dnsbl_query_name(z, (dl & 1) ? AF_INET : AF_INET6, addr, dom, name, sizeof(name));
		if (q >= 0) {
			if ((size_t)q != strlen(name) || strlen(name) > 253 + 1 + strlen(z->zone))
				abort();
			for (const char *p = name; *p; p++)
				if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
					abort();
		}
	}
	dnsbl_set_free(set);
	return 0;
}
