/*
 * engine_int - what the engine's files share (private to engine/)
 */
#ifndef MOAT_ENGINE_INT_H
#define MOAT_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "engine.h"
#include "dkim.h"
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
	time_t started;			/* engine_init() */
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
	bool ahead_done;		/* engine_msg_ahead() saw the header's end */
	unsigned char dmarc_mode;	/* enum conf_dmarc; OFF without a PSL */
};

/* the names asked ahead for a message (engine_msg_ahead): its DKIM keys
 * and up to two DMARC records */
#define ENG_AHEAD_MAX (DKIMV_MAX_SIGS + 2)
struct eng_ahead {
	int n;
	char name[ENG_AHEAD_MAX][320];
};
/* eng_dmarc_names - the DMARC records of the author domain d (A-labels,
 * as dmarc_domain_norm gives it) that DMARC reads first: _dmarc.d and,
 * for RFC 7489 (mode), that of its organisational domain when it differs;
 * how many (0 without a PSL). Any thread. */
int eng_dmarc_names(int mode, const char *d, char (*out)[320]);

/* the verdict line (engine_vlog.c): one per transaction and refusal */
struct dns_answer;
char *engine_health(const struct conf *c, bool upstream, bool *bad);
void engine_resolver_probe_result(const struct conf *c, const struct dns_answer *a);

struct vl_sess;
/* the checks' words of a verdict line ("spf=... dkim=... dmarc=...
 * dnsbl=N greylist=..."), kept as values: engine_vlog.c writes them only
 * when a line is written */
struct vl_summary {
	bool set;
	const char *spf, *dmarc;	/* static names */
	char dkim[16], gl[16];
	long long dnsbl;
};
struct vl_line_in {
	uint64_t sid;
	enum rules_stage stage;
	const char *who;		/* "client=NAME[ADDR]:PORT helo=<...>", escaped;
					 * NULL when no line at info is written */
	int code;			/* 0: none known (a milter's accepted message) */
	const char *enh;
	const char *text;		/* the reply text as sent, or NULL */
	size_t len;
	bool upstream;			/* by=upstream */
	const char *rule_file;		/* or NULL */
	int rule_line;
	const struct vl_summary *summary;	/* or NULL */
	const char *queue_id;
	bool abandoned;			/* verdict=abandoned: ended before its data */
};
struct vl_sess *vl_new(void);
void vl_free(struct vl_sess *v);
void vl_set_upstream(struct vl_sess *v);
void vl_begin(struct vl_sess *v, const char *from, uint64_t now_ms);
void vl_end(struct vl_sess *v);
void vl_mail_passed(struct vl_sess *v);
bool vl_abandoned(struct vl_sess *v);
void vl_abandon_line(struct vl_sess *v, const struct vl_line_in *in, uint64_t now_ms);
void vl_rcpt(struct vl_sess *v, const char *addr, int code, const char *enh);
void vl_data(struct vl_sess *v, uint64_t size, const struct vl_summary *summary,
	const char *rule_file, int rule_line);
void vl_refusal(struct vl_sess *v, const struct vl_line_in *in, uint64_t now_ms);
void vl_upstream(struct vl_sess *v, struct vl_line_in *in, uint64_t now_ms);
void vl_accepted(struct vl_sess *v, struct vl_line_in *in, uint64_t now_ms);
void vl_lost(struct vl_sess *v);
void vl_failed(struct vl_sess *v, const struct vl_line_in *in, uint64_t now_ms);
void vl_queue_id(const char *text, size_t len, char *out, size_t size);

#endif
