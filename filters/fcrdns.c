/*
 * fcrdns - forward-confirmed reverse DNS of the client, and the check
 * dispatcher (see filter.h)
 */
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "xalloc.h"

struct check_job {
	enum check_id id;
	uint64_t sid;
	struct sockaddr_storage client;
	struct check_result r;
	check_done_fn done;
	void *ctx;
};

/* check_name - for logs */
const char *
check_name(enum check_id id)
{
	return id == CHECK_FCRDNS ? "fcrdns" : "?";
}

/* fcrdns_host_ok - a host name we accept from a PTR record */
static bool
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
	return true;
}

/* fcrdns_bytes - an address's bytes and length, IPv4-mapped as IPv4 */
static const unsigned char *
fcrdns_bytes(const struct sockaddr *sa, size_t *len)
{
	const struct in6_addr *a6;

	if (sa->sa_family == AF_INET) {
		*len = 4;
		return (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	}
	a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	*len = IN6_IS_ADDR_V4MAPPED(a6) ? 4 : 16;
	return a6->s6_addr + (16 - *len);
}

/* fcrdns_same - the same address, whatever the family spelling? */
static bool
fcrdns_same(const struct sockaddr *a, const struct sockaddr *b)
{
	size_t la, lb;
	const unsigned char *pa = fcrdns_bytes(a, &la), *pb = fcrdns_bytes(b, &lb);

	return la == lb && memcmp(pa, pb, la) == 0;
}

/* fcrdns_lookup - PTR, then the name's addresses; blocking */
void
fcrdns_lookup(const struct sockaddr *client, struct check_result *r)
{
	char host[NI_MAXHOST];
	struct addrinfo hints, *ai = NULL, *p;
	socklen_t len = client->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6);
	int e;

	memset(r, 0, sizeof(*r));
	r->state = CHECK_DONE;
	e = getnameinfo(client, len, host, sizeof(host), NULL, 0, NI_NAMEREQD);
	if (e != 0) {
		r->status = e == EAI_AGAIN ? CHECK_TEMPERROR : CHECK_FAIL;
		return;
	}
	if (!fcrdns_host_ok(host)) {
		r->status = CHECK_FAIL;
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	e = getaddrinfo(host, NULL, &hints, &ai);
	if (e != 0) {
		r->status = e == EAI_AGAIN ? CHECK_TEMPERROR : CHECK_FAIL;
		return;
	}
	r->status = CHECK_FAIL;
	for (p = ai; p; p = p->ai_next)
		if (fcrdns_same(p->ai_addr, client)) {
			r->status = CHECK_PASS;
			for (size_t i = 0; host[i] && i < sizeof(r->name) - 1; i++)
				r->name[i] = (char)tolower((unsigned char)host[i]);
			break;
		}
	freeaddrinfo(ai);
}

/* check_run - on the pool */
static void
check_run(void *arg)
{
	struct check_job *j = arg;

	if (j->id == CHECK_FCRDNS)
		fcrdns_lookup((const struct sockaddr *)&j->client, &j->r);
}

/* check_done - back on the loop */
static void
check_done(void *arg)
{
	struct check_job *j = arg;

	j->done(j->ctx, j->sid, j->id, &j->r);
	free(j);
}

/* check_start - see filter.h */
int
check_start(struct workq_loop *l, enum check_id id, uint64_t sid,
	const struct sockaddr *client, check_done_fn done, void *ctx)
{
	struct check_job *j = xcalloc(1, sizeof(*j));

	j->id = id;
	j->sid = sid;
	memcpy(&j->client, client, client->sa_family == AF_INET ?
	    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
	j->done = done;
	j->ctx = ctx;
	if (workq_submit(l, check_run, check_done, j) != 0) {
		free(j);
		return -1;
	}
	return 0;
}
