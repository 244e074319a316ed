/*
 * filter - the checks' names (filter.h)
 */
#include "filter.h"

/* check_name - for logs */
const char *
check_name(enum check_id id)
{
	switch (id) {
	case CHECK_FCRDNS: return "fcrdns";
	case CHECK_DNSBL: return "dnsbl";
	case CHECK_GREYLIST: return "greylist";
	case CHECK_SPF: return "spf";
	case CHECK_SAUTH: return "dkim-dmarc";
	case CHECK_RATELIMIT: return "ratelimit";
	default: return "?";
	}
}

const char *
check_status_name(enum check_status st)
{
	return st == CHECK_PASS ? "pass" : st == CHECK_FAIL ? "fail" : "temperror";
}

