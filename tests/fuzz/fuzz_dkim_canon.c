// sources: filters/dkim_canon.c
/*
 * fuzz_dkim_canon - DKIM relaxed canonicalisation of bodies and header
 * fields (filters/dkim_canon.c), which moat's Ed25519 signer hashes
 *
 * Input: byte 0 picks the chunk size; the rest is a body, and also a
 * header field. Properties, each an abort() when violated:
 *   - the body's canonical form does not depend on how it is cut;
 *   - it equals a plain reference (split at LF, a CR before the LF is the
 *     line end, whitespace runs made one SP, trailing whitespace and
 *     trailing empty lines dropped, CRLF after each line);
 *   - canonicalising a canonical body changes nothing;
 *   - a header field's canonical form ends in CRLF, holds no other CR or
 *     LF, no whitespace run, no upper-case name byte, and canonicalising
 *     it again gives the same bytes.
 */
#include "dkim_canon.h"
#include "fuzz_chunks.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

struct canon {
	struct dkim_bcanon b;
	struct fuzz_sink *out;
};

static void
feed(void *arg, const unsigned char *p, size_t n)
{
	struct canon *c = arg;

	dkim_bcanon_feed(&c->b, p, n, fuzz_sink_put, c->out);
}

static void
canon(const unsigned char *in, size_t len, size_t chunk, struct fuzz_sink *out)
{
	struct canon c = { .out = out };

	dkim_bcanon_init(&c.b);
	fuzz_chunks(in, len, chunk, feed, &c);
	dkim_bcanon_end(&c.b, fuzz_sink_put, out);
}

/* reference - the whole body at once, line by line */
static void
reference(const unsigned char *in, size_t len, struct fuzz_sink *out)
{
	size_t held = 0, a = 0;

	while (a < len) {
		const unsigned char *nl = memchr(in + a, '\n', len - a);
		size_t e = nl ? (size_t)(nl - in) : len, o0;
		bool wsp = false;

		if (nl && e > a && in[e - 1] == '\r')
			e--;			/* CRLF ends the line */
		o0 = out->n;
		for (size_t i = a; i < e; i++) {
			if (in[i] == ' ' || in[i] == '\t') {
				wsp = true;
				continue;
			}
			if (out->n == o0)
				for (; held > 0; held--)
					fuzz_sink_put(out, "\r\n", 2);
			if (wsp)
				fuzz_sink_put(out, " ", 1);
			wsp = false;
			fuzz_sink_put(out, in + i, 1);
		}
		if (out->n > o0)
			fuzz_sink_put(out, "\r\n", 2);
		else
			held++;
		a = nl ? (size_t)(nl - in) + 1 : len;
	}
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct fuzz_sink one = { 0 }, cut = { 0 }, ref = { 0 }, again = { 0 };
	char *h1, *h2;
	size_t chunk, l1, l2;

	if (size < 1 || size > 65536)
		return 0;
	chunk = 1 + data[0] % 17;
	data++;
	size--;
	canon(data, size, size ? size : 1, &one);
	canon(data, size, chunk, &cut);
	reference(data, size, &ref);
	if (!fuzz_sink_same(&one, &cut))
		abort();
	if (!fuzz_sink_same(&one, &ref))
		abort();
	canon(one.b, one.n, 7, &again);
	if (!fuzz_sink_same(&again, &one))
		abort();

	h1 = malloc(size + 3);
	h2 = malloc(size + 3);
	if (h1 == NULL || h2 == NULL)
		abort();
	l1 = dkim_hcanon((const char *)data, size, h1, size + 3);
	if (l1 > 0) {
		const char *colon = memchr(h1, ':', l1);

		if (l1 < 3 || memcmp(h1 + l1 - 2, "\r\n", 2) != 0 || colon == NULL)
			abort();
		for (size_t i = 0; i + 2 < l1; i++) {
			if (h1[i] == '\r' || h1[i] == '\n')
				abort();
			if ((h1[i] == ' ' || h1[i] == '\t') && i + 1 < l1 &&
			    (h1[i + 1] == ' ' || h1[i + 1] == '\t'))
				abort();
			if (h1 + i < colon && h1[i] >= 'A' && h1[i] <= 'Z')
				abort();
		}
		l2 = dkim_hcanon(h1, l1, h2, size + 3);
		if (l2 != l1 || memcmp(h1, h2, l1) != 0)
			abort();
	}
	free(h1);
	free(h2);
	free(one.b);
	free(cut.b);
	free(ref.b);
	free(again.b);
	return 0;
}
