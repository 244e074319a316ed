/*
 * moatctl.h - subcommands of moatctl that live in their own files
 * (tools/moatctl_*.c). Each takes moatctl's argc/argv as given (argv[1]
 * is the subcommand) and returns the process's exit status.
 */
#ifndef MOAT_MOATCTL_H
#define MOAT_MOATCTL_H

#include <stdbool.h>
#include <stddef.h>

int moatctl_spf(int argc, char **argv);	/* tools/moatctl_spf.c */
int moatctl_auth(int argc, char **argv);	/* tools/moatctl_auth.c: dkim, dmarc */
int moatctl_greylist(int argc, char **argv);	/* tools/moatctl_greylist.c */
int moatctl_query(int argc, char **argv);	/* tools/moatctl_dns.c */

/* tools/moatctl_dns.c: explain's checks, synchronous, through moat's resolver */
struct sockaddr;
struct fcrdns;
struct dnsbl_set;
struct dnsbl_sess;
void ctl_fcrdns(const struct sockaddr *client, unsigned timeout_ms, struct fcrdns *f);
void ctl_dnsbl(const struct dnsbl_set *set, int type, const struct sockaddr *client,
	const char *domain, unsigned timeout_ms, struct dnsbl_sess *ds);

const char *ctl_spf(const struct sockaddr *client, const char *helo, const char *sender,
	unsigned timeout_ms, bool helo_identity, char *domain, size_t dsize);
void ctl_auth(bool dkim_on, int dmarc_mode, const char *psl_path, unsigned dkim_min_bits,
	unsigned max_sigs, bool sha1, unsigned timeout_ms, const char *path, bool spf_pass,
	const char *spf_domain, const char **dkim_w, const char **dmarc_w, const char **policy_w,
	char *from, size_t fsize);

#endif
