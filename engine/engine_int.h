/*
 * engine_int - what the engine's files share (private to engine/)
 */
#ifndef MOAT_ENGINE_INT_H
#define MOAT_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "hdrscan.h"

struct event_base;
struct workq;
struct workq_loop;
struct dns_loop;
struct greylist;
struct glstore;
struct dkimv;
struct dkimv_msg;
struct dkims;
struct dkims_msg;
struct dmarc_psl;

/* one per loop that runs sessions (engine_svc.c) */
struct engine_loop {
	struct engine_loop *next;	/* engine_g.loops */
	struct event_base *base;
	struct workq_loop *wq;		/* the pool's completions */
	struct dns_loop *dns;		/* the resolver's answers, or NULL */
	engine_query_fn query;		/* dns_query, a test's stand-in, or NULL: none */
	struct greylist *gl;		/* greylist decisions, or NULL */
	struct ratelimit *rl;		/* rate limits in Redis, or NULL: in the process */
};

/* the process-wide services (engine_svc.c) */
struct engine_g {
	struct engine_opts opts;
	struct workq *workq;		/* the pool for checks that block */
	bool dns_up;			/* the resolver started */
	struct dkimv *dkim;		/* DKIM verification, or NULL */
	struct dkims *dkims;		/* DKIM signing */
	struct dmarc_psl *psl;		/* the Public Suffix List, or NULL */
	struct glstore *store;		/* the embedded greylist store, or NULL */
	bool greylist;			/* the loops get a greylist handle */
	struct engine_loop *loops;
};
extern struct engine_g engine_g;

#define ENG_HDR_MAX (64 * 1024)		/* the header block kept for "from" rules */

/* a message as it streams by (engine_msg.c) */
struct eng_msg {
	struct dkimv_msg *dkim;		/* fed with every byte, or NULL */
	struct dkims_msg *sign;		/* the signer, when a rule may sign; or NULL */
	struct hdrscan hs;
	bool finished;			/* hdrscan_finish() ran */
	bool stuffed;			/* fed dot-stuffed (moatd's decoder output) */
	bool bol;			/* the next byte starts a line */
	eng_msg_out_fn out;
	void *arg;
	bool capture;			/* a rule reads "from": keep the header block */
	bool hdr_done;
	char *hdr;
	size_t hdr_len;
};

#endif
