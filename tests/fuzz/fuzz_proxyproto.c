// sources: core/proxyproto.c
/*
 * fuzz_proxyproto - libFuzzer harness for the inbound PROXY protocol
 * header parser (core/proxyproto.c)
 *
 * Checks what the reader in proxy/ppin.c relies on: a result r > 0 is at
 * most len and at most PP_MAX, and every shorter prefix of those r bytes
 * gives 0 (incomplete) and the first r bytes alone give r again; a
 * result of 0 means len < PP_MAX; -1 carries an error text and every
 * longer input (here: the input with a byte appended) gives -1 too. A
 * header that is not local has an AF_INET or AF_INET6 source of the
 * same family as its destination. abort() on any violation.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pp_header h, h2;
	unsigned char *more;
	int r = pp_parse(data, size, &h);

	if (r > 0) {
		if ((size_t)r > size || r > PP_MAX)
			abort();
		if (!h.local && (h.src.ss_family != h.dst.ss_family ||
		    (h.src.ss_family != AF_INET && h.src.ss_family != AF_INET6)))
			abort();
		for (int k = 0; k < r; k++)
			if (pp_parse(data, (size_t)k, &h2) != 0)
				abort();
		if (pp_parse(data, (size_t)r, &h2) != r || h2.local != h.local || h2.ssl != h.ssl ||
		    memcmp(&h2.src, &h.src, sizeof(h.src)) != 0)
			abort();
	} else if (r == 0) {
		if (size >= PP_MAX)
			abort();
	} else {
		if (r != -1 || h.err == NULL)
			abort();
		more = malloc(size + 1);
		if (more == NULL)
			return 0;
		memcpy(more, data, size);
		more[size] = 'x';
		if (pp_parse(more, size + 1, &h2) != -1)
			abort();
		free(more);
	}
	return 0;
}
