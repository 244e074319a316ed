// sources: filters/hdrscan.c filters/authres.c
/*
 * fuzz_hdrscan - the header scanner that drops forged
 * Authentication-Results fields and keeps From values (filters/hdrscan.c)
 *
 * Input: byte 0 picks chunk sizes; the rest is a message. Properties, each
 * an abort() when violated:
 *   - the output does not depend on how the input is cut into chunks;
 *   - nothing is dropped when the input holds no "authentication-results"
 *     (any case): the output is then the input, byte for byte;
 *   - otherwise the output is the input with whole pieces taken out
 *     (a subsequence), and removed counts at least one;
 *   - the body (after the first empty line) is never touched: the output
 *     ends with the input's body;
 *   - kept From values hold no CR or LF and fit their bounds.
 */
#include "hdrscan.h"
#include "fuzz_chunks.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* put - hdrscan's output into a sink */
static void
put(void *arg, const unsigned char *p, size_t n)
{
	fuzz_sink_put(arg, p, n);
}

static void
feed(void *arg, const unsigned char *p, size_t n)
{
	hdrscan_feed(arg, p, n);
}

static void
run(const unsigned char *d, size_t n, size_t chunk, struct fuzz_sink *out, struct hdrscan *h)
{
	hdrscan_init(h, "mx.test", put, out);
	fuzz_chunks(d, n, chunk, feed, h);
	hdrscan_finish(h);
	hdrscan_free(h);
}

static bool
has_ar(const unsigned char *d, size_t n)
{
	static const char k[] = "authentication-results";

	for (size_t i = 0; i + sizeof(k) - 1 <= n; i++)
		if (strncasecmp((const char *)d + i, k, sizeof(k) - 1) == 0)
			return true;
	return false;
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static struct hdrscan h1, h2;
	struct fuzz_sink a = { 0 }, b = { 0 };
	size_t chunk;

	if (size < 1)
		return 0;
	chunk = (size_t)(data[0] % 17) + 1;
	data++;
	size--;
	run(data, size, size ? size : 1, &a, &h1);
	run(data, size, chunk, &b, &h2);
	if (!fuzz_sink_same(&a, &b) || h1.removed != h2.removed ||
	    h1.nfrom != h2.nfrom)
		abort();
	if (!has_ar(data, size) && (a.n != size || (size && memcmp(a.b, data, size) != 0) ||
	    h1.removed != 0))
		abort();
	if (a.n != size && h1.removed == 0)
		abort();
	{
		size_t j = 0;	/* a subsequence of the input */

		for (size_t i = 0; i < size && j < a.n; i++)
			if (data[i] == a.b[j])
				j++;
		if (j != a.n)
			abort();
	}
	{
		/* the body: after the first CRLF CRLF (or a message that starts
		 * with the empty line) */
		const unsigned char *p = NULL;

		if (size >= 2 && data[0] == '\r' && data[1] == '\n')
			p = data;
		for (size_t i = 0; p == NULL && i + 3 < size; i++)
			if (memcmp(data + i, "\n\r\n", 3) == 0)
				p = data + i + 1;
		if (p != NULL) {
			size_t bl = size - (size_t)(p - data);

			if (a.n < bl || memcmp(a.b + a.n - bl, p, bl) != 0)
				abort();
		}
	}
	for (int i = 0; i < h1.nfrom && i < HDRSCAN_FROM_MAX; i++)
		if (h1.from_len[i] >= HDRSCAN_FROM_LEN || memchr(h1.from[i], '\r', h1.from_len[i]) ||
		    memchr(h1.from[i], '\n', h1.from_len[i]))
			abort();
	free(a.b);
	free(b.b);
	return 0;
}
