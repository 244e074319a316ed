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

#include "dkim.h"
#include "dmarc.h"
#include "hdrscan.h"

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
};

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
