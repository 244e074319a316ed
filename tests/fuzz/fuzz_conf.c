// sources: policy/conf.c policy/lex.c policy/rules.c filters/owner.c policy/lists.c filters/dnsbl.c policy/conf_dnsbl.c policy/conf_ratelimit.c core/dnsname.c filters/greylist_conf.c redis/redis_conf.c filters/glstore.c core/siphash.c core/log.c core/xalloc.c core/idn.c policy/conf_dkim.c filters/dkim_key.c core/metrics.c core/rfile.c
// libs: -lidn2 -lcrypto
/*
 * fuzz_conf - the policy file parser (docs/SECURITY.md F13): any bytes give
 * either a configuration or a list of errors, never a crash; a refused file
 * leaves nothing behind (LeakSanitizer), and every error line names the
 * file, a line and a column.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	char *errs = NULL;
	struct conf *c;

	if (!init) {
		log_init("fuzz_conf", false, LOG_L_FATAL);
		init = 1;
	}
	c = conf_load_buffer("F", (const char *)data, size, &errs);
	if (c == NULL) {
		/* every line: "F:LINE:COL: error: ..." or (beside errors)
		 * "F:LINE:COL: warning: ..."; at least one error */
		int nerr = 0;

		if (errs == NULL)
			abort();
		for (char *l = errs; *l; ) {
			char *nl = strchr(l, '\n'), *e = strstr(l, ": error: "),
			    *w = strstr(l, ": warning: ");
			if (nl == NULL || strncmp(l, "F:", 2) != 0)
				abort();
			if (e != NULL && e < nl)
				nerr++;
			else if (w == NULL || w > nl)
				abort();
			l = nl + 1;
		}
		if (nerr == 0)
			abort();
		free(errs);
		return 0;
	}
	if (errs != NULL)
		free(errs);
	/* an accepted file's rules can be run on empty facts at every stage */
	struct rules_facts f;
	struct rules_result r;
	memset(&f, 0, sizeof(f));
	for (int st = 0; st < RS__COUNT; st++)
		rules_eval(c->rules, (enum rules_stage)st, &f, &r, 0);
	conf_unref(c);
	return 0;
}
