/*
 * sauth - the end-of-data part of sender authentication that every
 * front-end shares: DKIM's lookups and DMARC (a job for a pool thread),
 * the one-word summary for rules, the log lines and the
 * Authentication-Results field
 *
 * SYNOPSIS
 *	void sauth_run(struct sauth_work *w);
 *	void sauth_log(const struct sauth_work *w, uint64_t sid);
 *	const char *sauth_dkim_word(const struct dkimv_outcome *o);
 *	char *sauth_header(const struct sauth_hdr *h, size_t *len);
 *
 * DESCRIPTION
 *	sauth_run() may block on DNS (dns_query_sync): call it on the work
 *	pool only. It finishes the DKIM state fed with the message (msg,
 *	which stays the caller's to free), then runs DMARC with the From
 *	values and the SPF result when do_dmarc is set. sauth_header()
 *	renders "Authentication-Results: ...CRLF" (allocated; NULL when
 *	nothing fits) from what was checked; the caller frees it.
 */
#ifndef MOAT_SAUTH_H
#define MOAT_SAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dkim.h"
#include "dmarc.h"
#include "hdrscan.h"
#include "spf.h"

struct sauth_work {
	struct dkimv_msg *msg;		/* fed with the message, or NULL: no DKIM */
	struct dkimv_outcome dkim;
	bool have_dkim;
	struct dmarc_outcome dmarc;
	bool do_dmarc;
	bool dmarc_bis;			/* DMARCbis, else RFC 7489 */
	const struct dmarc_psl *psl;
	char from[HDRSCAN_FROM_MAX][HDRSCAN_FROM_LEN];
	size_t from_len[HDRSCAN_FROM_MAX];
	int nfrom;			/* From fields seen (may be more than kept) */
	bool from_cut;
	bool spf_pass;
	char spf_domain[256];
};

struct sauth_hdr {
	const char *authserv_id;
	bool spf_done;			/* an SPF result for MAIL FROM is in */
	const char *spf;		/* its name (spf_res_name) */
	const char *mailfrom;		/* "local@domain", or NULL for <> */
	const char *helo;		/* smtp.helo when the sender is null */
	const struct dkimv_outcome *dkim;	/* or NULL */
	bool dkim_on;			/* dkim=none when no outcome */
	const struct dmarc_outcome *dmarc;	/* or NULL */
	const char *auth;		/* the login SMTP AUTH accepted, or NULL */
};

/* One SPF check of a session or milter connection (the front-end embeds
 * it in its job): sauth_spf_init() fills the request (-1 when the client
 * is neither IPv4 nor IPv6); sauth_spf_cached() runs it at once in
 * cache-only mode (dns.h) and is true when every answer was cached and
 * out holds the result, false when it must run on the pool
 * (sauth_spf_run); sauth_spf_log() writes the "check spf" line. */
struct sauth_spf {
	struct spf_request rq;
	enum spf_identity id;
	char helo[256];
	char sender[520];
	struct spf_outcome out;
};

int sauth_spf_init(struct sauth_spf *j, enum spf_identity id, const struct sockaddr *client,
	const char *helo, const char *sender, unsigned timeout_ms);
bool sauth_spf_cached(struct sauth_spf *j);
void sauth_spf_run(struct sauth_spf *j);
void sauth_spf_log(const struct sauth_spf *j, uint64_t sid);

void sauth_work_from(struct sauth_work *w, const struct hdrscan *hs);
void sauth_run(struct sauth_work *w);
/* the two halves of sauth_run(): DKIM (once: it consumes msg's state),
 * then DMARC (which may run again, e.g. on the pool after a cache-only
 * try on the loop missed an answer) */
void sauth_run_dkim(struct sauth_work *w);
void sauth_run_dmarc(struct sauth_work *w);
/* the two halves of sauth_run(): DKIM (once: it consumes msg's state),
 * then DMARC (which may run again, e.g. on the pool after a cache-only
 * try on the loop missed an answer) */
void sauth_run_dkim(struct sauth_work *w);
void sauth_run_dmarc(struct sauth_work *w);
void sauth_log(const struct sauth_work *w, uint64_t sid);
const char *sauth_dkim_word(const struct dkimv_outcome *o);
char *sauth_header(const struct sauth_hdr *h, size_t *len);

#endif
