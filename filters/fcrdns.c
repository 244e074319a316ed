/*
 * fcrdns - forward-confirmed reverse DNS of the client, through moat's
 * resolver (fcrdns.h)
 */
#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fcrdns.h"

/* fcrdns_host_ok - a host name we accept from a PTR record */
bool
fcrdns_host_ok(const char *n)
{
	size_t len = strlen(n), label = 0;

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)n[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* fcrdns_finish - decide when nothing is pending any more */
static void
fcrdns_finish(struct fcrdns *f)
{
	if (f->done || f->pending > 0)
		return;
	f->done = true;
	if (f->status != CHECK_PASS)
		f->status = f->temp ? CHECK_TEMPERROR : CHECK_FAIL;
}

/* fcrdns_begin - see filter.h */
int
fcrdns_begin(struct fcrdns *f, const struct sockaddr *client, check_send_fn send, void *arg)
{
	char name[128];

	memset(f, 0, sizeof(*f));
	f->status = CHECK_FAIL;
	if (client->sa_family == AF_INET) {
		f->family = AF_INET;
		memcpy(f->addr, &((const struct sockaddr_in *)client)->sin_addr, 4);
	} else {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)client)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			f->family = AF_INET;
			memcpy(f->addr, a6->s6_addr + 12, 4);
		} else {
			f->family = AF_INET6;
			memcpy(f->addr, a6->s6_addr, 16);
		}
	}
	if (dns_reverse_name(f->family, f->addr,
	    f->family == AF_INET ? "in-addr.arpa" : "ip6.arpa", name, sizeof(name)) < 0 ||
	    send(arg, name, DNS_T_PTR, 0) != 0) {
		f->temp = true;
		fcrdns_finish(f);
		return -1;
	}
	f->pending = 1;
	return 0;
}

/* fcrdns_answer - see filter.h */
void
fcrdns_answer(struct fcrdns *f, int index, const struct dns_answer *a,
	check_send_fn send, void *arg)
{
	if (f->done)
		return;
	f->pending--;
	if (a->status == DNS_TEMPERROR)
		f->temp = true;
	if (index == 0 && a->status == DNS_OK) {
		for (int i = 0; i < a->n && f->nnames < FCRDNS_NAMES_MAX; i++) {
			char *n = f->names[f->nnames];

			if (dns_rr_name(a, i, 0, n, sizeof(f->names[0])) <= 0 || !fcrdns_host_ok(n))
				continue;
			if (send(arg, n, f->family == AF_INET ? DNS_T_A : DNS_T_AAAA,
			    1 + f->nnames) != 0) {
				f->temp = true;
				continue;
			}
			f->nnames++;
			f->pending++;
		}
	} else if (index >= 1 && index <= f->nnames && a->status == DNS_OK) {
		size_t alen = f->family == AF_INET ? 4 : 16;

		for (int i = 0; i < a->n; i++)
			if ((size_t)a->len[i] == alen && memcmp(a->data[i], f->addr, alen) == 0) {
				f->status = CHECK_PASS;
				strcpy(f->name, f->names[index - 1]);
				/* confirmed: the other answers do not matter */
				f->pending = 0;
				break;
			}
	}
	fcrdns_finish(f);
}
