// sources: proxy/pdel_req.c
/*
 * fuzz_pdel - libFuzzer harness for the policy delegation request parser
 * (proxy/pdel_req.c: the requests Postfix's smtpd sends to a "listen
 * ... policy" listener)
 *
 * The input is fed as a stream of requests twice: in one chunk, and cut
 * at offsets taken from its first byte (1..16 bytes at a time). Both
 * must give the same sequence of results (DONE or BAD, and how many
 * bytes each request took), the same error texts and the same values of
 * every known attribute. For every DONE request: the values hold no LF,
 * no CR, no NUL and no control byte but TAB; the request used at most
 * PDEL_REQ_MAX bytes; protocol_state maps to a state. A feed after DONE
 * or BAD consumes nothing. abort() on any violation.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdel_req.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQS 64

struct outcome {
	int n;
	enum pdel_rc rc[MAX_REQS];
	size_t used[MAX_REQS];
	const char *err[MAX_REQS];
	uint32_t vals[MAX_REQS];	/* a hash of every known attribute's value */
};

static uint32_t
hash_vals(const struct pdel_req *r)
{
	uint32_t h = 2166136261u;

	for (int a = 0; a < PDEL_A__COUNT; a++) {
		const char *v = pdel_req_get(r, (enum pdel_attr)a);

		h = (h ^ (uint32_t)(v != NULL)) * 16777619u;
		if (v == NULL)
			continue;
		for (const char *p = v; *p; p++) {
			unsigned char ch = (unsigned char)*p;
			if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
				abort();
			h = (h ^ ch) * 16777619u;
		}
		if (v < r->buf || v >= r->buf + r->len)
			abort();
	}
	return h;
}

/* run - feed data in chunks of step(i) bytes; step 0: all at once */
static void
run(struct pdel_req *r, const uint8_t *data, size_t size, const uint8_t *cuts, size_t ncuts,
	struct outcome *o)
{
	size_t pos = 0, req_used = 0, k = 0;

	memset(o, 0, sizeof(*o));
	pdel_req_init(r);
	while (pos < size && o->n < MAX_REQS) {
		size_t chunk = size - pos;
		enum pdel_rc rc;
		size_t used;

		if (ncuts > 0) {
			size_t c = (size_t)(cuts[k++ % ncuts] % 16) + 1;
			if (c < chunk)
				chunk = c;
		}
		used = pdel_req_feed(r, (const char *)data + pos, chunk, &rc);
		if (used > chunk)
			abort();
		pos += used;
		req_used += used;
		if (rc == PDEL_MORE) {
			if (used != chunk)
				abort();
			continue;
		}
		if (r->len > PDEL_REQ_MAX)
			abort();
		o->rc[o->n] = rc;
		o->used[o->n] = req_used;
		o->err[o->n] = rc == PDEL_BAD ? r->err : NULL;
		if (rc == PDEL_BAD && r->err == NULL)
			abort();
		if (rc == PDEL_DONE) {
			o->vals[o->n] = hash_vals(r);
			(void)pdel_req_state(r);
		}
		{
			enum pdel_rc again;
			if (pdel_req_feed(r, "x=y\n", 4, &again) != 0 || again != rc)
				abort();
		}
		o->n++;
		if (rc == PDEL_BAD)
			return;		/* the connection closes */
		pdel_req_init(r);
		req_used = 0;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pdel_req a, b;
	static struct outcome oa, ob;

	if (size < 1)
		return 0;
	run(&a, data + 1, size - 1, NULL, 0, &oa);
	run(&b, data + 1, size - 1, data, size > 8 ? 8 : size, &ob);
	if (oa.n != ob.n)
		abort();
	for (int i = 0; i < oa.n; i++)
		if (oa.rc[i] != ob.rc[i] || oa.used[i] != ob.used[i] || oa.err[i] != ob.err[i] ||
		    oa.vals[i] != ob.vals[i])
			abort();
	return 0;
}
