/*
 * fcrdns - forward-confirmed reverse DNS of the client, through moat's
 * resolver: one of at most FCRDNS_NAMES_MAX PTR names that is a valid
 * host name and whose A (or AAAA) records hold the client's address
 *
 * SYNOPSIS
 *	int fcrdns_begin(struct fcrdns *f, const struct sockaddr *client,
 *	                 check_send_fn send, void *arg);
 *	void fcrdns_answer(struct fcrdns *f, int index, const struct dns_answer *a,
 *	                   check_send_fn send, void *arg);
 *	bool fcrdns_host_ok(const char *n);
 *
 * DESCRIPTION
 *	A small state machine fed with answers (filter.h says how queries
 *	go out). Result: pass (with the name), fail (no name, or none
 *	confirms), temperror (a lookup failed and nothing confirmed).
 */
#ifndef MOAT_FCRDNS_H
#define MOAT_FCRDNS_H

#include <stdbool.h>
#include <sys/socket.h>

#include "dns.h"
#include "filter.h"

#define FCRDNS_NAMES_MAX 4

struct fcrdns {
	int family;			/* AF_INET or AF_INET6 (v4-mapped is v4) */
	unsigned char addr[16];
	int pending;			/* queries not answered yet */
	int nnames;
	char names[FCRDNS_NAMES_MAX][256];
	bool temp;			/* some lookup failed */
	bool done;
	enum check_status status;
	char name[256];			/* pass: the confirmed name, lower case */
};

/* fcrdns_begin - send the PTR query; 0, or -1 when done at once (f->done) */
int fcrdns_begin(struct fcrdns *f, const struct sockaddr *client, check_send_fn send, void *arg);
/* fcrdns_answer - one answer (index 0: PTR, 1 + k: names[k]'s addresses) */
void fcrdns_answer(struct fcrdns *f, int index, const struct dns_answer *a,
	check_send_fn send, void *arg);
/* fcrdns_host_ok - a host name acceptable from a PTR record */
bool fcrdns_host_ok(const char *n);

#endif
