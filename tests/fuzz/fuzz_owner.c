// sources: filters/owner.c proxy/sasl.c core/xalloc.c core/log.c
/*
 * fuzz_owner - peer bytes of issue 7: the header From parser, the AUTH
 * exchange's base64 and login extraction, and login-map words
 *
 * Input: byte 0 picks the mode. 0: a header block for owner_from_parse()
 * (every mailbox must be NUL-terminated inside the buffer, lower-case
 * domain, no '@' in the domain); 1: base64 for sasl_b64_decode() (the
 * decoded length at most 3/4 of the input); 2..5: a decoded client
 * message for sasl_login() with mechanism PLAIN/LOGIN/CRAM-MD5/SCRAM
 * (a login is 1..255 bytes without blanks or control bytes); 6: map
 * words (blank-separated), then lookups of the last word against the map.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "owner.h"
#include "sasl.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size < 1 || size > 1 << 16)
		return 0;
	unsigned mode = data[0] % 7;
	const char *p = (const char *)data + 1;
	size_t n = size - 1;

	if (mode == 0) {
		struct owner_from of;
		int c = owner_from_parse(p, n, &of);
		if (c < 0 || c > OWNER_FROM_MAX || (unsigned)c != of.n)
			abort();
		for (int i = 0; i < c; i++) {
			const char *l = of.all[2 * i], *d = of.all[2 * i + 1];
			if (l < of.buf || d < of.buf || d >= of.buf + sizeof(of.buf) ||
			    memchr(d, 0, (size_t)(of.buf + sizeof(of.buf) - d)) == NULL)
				abort();
			if (*d == 0 || strchr(d, '@') != NULL)
				abort();
			for (const char *q = d; *q; q++)
				if (isupper((unsigned char)*q))
					abort();
		}
	} else if (mode == 1) {
		unsigned char out[1 << 16];
		int r = sasl_b64_decode(p, n, out, sizeof(out));
		if (r > (int)(n / 4 * 3))
			abort();
	} else if (mode <= 5) {
		static const enum sasl_mech m[] = { SASL_PLAIN, SASL_LOGIN, SASL_CRAM_MD5, SASL_SCRAM };
		char login[SASL_LOGIN_MAX + 1];
		for (unsigned step = 0; step < 3; step++) {
			int r = sasl_login(m[mode - 2], step, (const unsigned char *)p, n, login, sizeof(login));
			if (r > 0) {
				size_t l = strlen(login);
				if (l == 0 || l > SASL_LOGIN_MAX)
					abort();
				for (size_t i = 0; i < l; i++)
					if ((unsigned char)login[i] <= 0x20 || login[i] == 0x7f)
						abort();
			}
		}
	} else {
		struct owner_map *m = owner_map_new();
		char err[300], *buf = malloc(n + 1), *save = NULL, *tok, *last = NULL;
		memcpy(buf, p, n);
		buf[n] = 0;
		for (tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			owner_map_add_word(m, tok, strlen(tok), err, sizeof(err));
			last = tok;
		}
		if (last != NULL) {
			const char *at = strrchr(last, '@');
			if (at != NULL)
				owner_map_owns(m, "alice", 5, last, (size_t)(at - last), at + 1, strlen(at + 1));
		}
		owner_map_free(m);
		free(buf);
	}
	return 0;
}
