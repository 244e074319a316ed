/*
 * engine_vlog - the verdict line: one per transaction and one per
 * refusal, the same from moatd and moat-milter (private to engine/; the
 * contract is in engine.h, "THE VERDICT LINE")
 *
 * DESCRIPTION
 *	A session keeps a short list of records, one per transaction, in
 *	the order they began. A record holds the sender, each recipient
 *	with its outcome, and, from the end of the data on, the size, the
 *	deciding rule and the checks' summary. A front-end that relays to an
 *	upstream (moatd) reports the upstream's replies in the order it
 *	gets them: a MAIL reply goes to the oldest record still waiting for
 *	one, an RCPT reply to the oldest recipient waiting, the reply after
 *	the data to the oldest record whose data went. A record is freed
 *	when its transaction ended and nothing of it waits for the upstream
 *	any more. Without an upstream (moat-milter) a record ends with its
 *	transaction.
 *
 *	The line's text is moat's own words and the peer's text escaped
 *	(log_escape): addresses and reply text are cut at LOG_PEER_MAX
 *	bytes of input each; the line is cut at the log's line limit, after
 *	which the recipients not shown are counted (to_more=N).
 */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "log.h"
#include "textbuf.h"
#include "metrics.h"
#include "xalloc.h"

#define VL_LINE 1900		/* under the log's line limit */

enum vl_rstate { VR_PASSED = 0, VR_WAIT_UPS, VR_DONE };

struct vl_rcpt {
	char *addr;			/* owned, as text (local@domain or "") */
	unsigned char state;		/* enum vl_rstate */
	short code;			/* VR_DONE: the reply's code */
	char enh[12];
};

struct vl_rec {
	struct vl_rec *next;
	uint64_t start_ms;
	char *from;			/* owned; "" for <> */
	struct vl_rcpt *r;
	unsigned nr, cap;
	bool ended;			/* the engine's transaction is over */
	bool mail_wait;			/* MAIL went upstream, no reply yet */
	bool data_wait;			/* the data went upstream, no reply yet */
	bool logged;			/* the transaction's line is out */
	bool lost;			/* the upstream went with something of it waiting */
	uint64_t size;
	struct vl_summary summary;	/* from the end of the data on */
	const char *rule_file;		/* borrowed from the policy the session holds */
	int rule_line;
};

struct vl_sess {
	struct vl_rec *head, *tail;
	bool upstream;			/* the front-end reports upstream replies */
};

static void vl_line(const struct vl_line_in *in, const struct vl_rec *r,
	const struct vl_rcpt *only, uint64_t now_ms);

struct vl_sess *
vl_new(void)
{
	return xcalloc(1, sizeof(struct vl_sess));
}

/* enh_copy - an enhanced code (or "" for NULL) into out, cut to fit */
static void
enh_copy(char *out, size_t size, const char *enh)
{
	size_t k = enh != NULL ? strnlen(enh, size - 1) : 0;

	memcpy(out, enh != NULL ? enh : "", k);
	out[k] = 0;
}

static void
rec_free(struct vl_rec *r)
{
	for (unsigned i = 0; i < r->nr; i++)
		free(r->r[i].addr);
	free(r->r);
	free(r->from);
	free(r);
}

void
vl_free(struct vl_sess *v)
{
	if (v == NULL)
		return;
	for (struct vl_rec *r = v->head, *n; r; r = n) {
		n = r->next;
		rec_free(r);
	}
	free(v);
}

void
vl_set_upstream(struct vl_sess *v)
{
	v->upstream = true;
}

/* vl_gc - free the records nothing waits for */
static void
vl_gc(struct vl_sess *v)
{
	struct vl_rec **pp = &v->head, *prev = NULL;

	while (*pp) {
		struct vl_rec *r = *pp;
		bool waits = r->mail_wait || r->data_wait;

		for (unsigned i = 0; i < r->nr && !waits; i++)
			waits = r->r[i].state == VR_WAIT_UPS;
		if (r->ended && !waits) {
			*pp = r->next;
			rec_free(r);
			continue;
		}
		prev = r;
		pp = &r->next;
	}
	v->tail = prev;
}

/* vl_current - the record of the transaction in progress, or NULL */
static struct vl_rec *
vl_current(struct vl_sess *v)
{
	return v->tail != NULL && !v->tail->ended ? v->tail : NULL;
}

void
vl_begin(struct vl_sess *v, const char *from, uint64_t now_ms)
{
	struct vl_rec *r = xcalloc(1, sizeof(*r));

	vl_end(v);
	r->start_ms = now_ms;
	r->from = xstrdup(from);
	if (v->tail)
		v->tail->next = r;
	else
		v->head = r;
	v->tail = r;
}

void
vl_end(struct vl_sess *v)
{
	struct vl_rec *r = vl_current(v);

	if (r == NULL)
		return;
	r->ended = true;
	if (!v->upstream) {
		for (unsigned i = 0; i < r->nr; i++)
			if (r->r[i].state == VR_WAIT_UPS)
				r->r[i].state = VR_PASSED;
		r->mail_wait = r->data_wait = false;
	}
	vl_gc(v);
}

/* vl_abandoned - is the transaction in progress ending without a line of
 * its own (recipients given, no end of data)? */
bool
vl_abandoned(struct vl_sess *v)
{
	struct vl_rec *r = vl_current(v);

	return r != NULL && !r->logged && !r->data_wait && r->nr > 0;
}

/* vl_abandon_line - its line: verdict=abandoned, no reply of its own */
void
vl_abandon_line(struct vl_sess *v, const struct vl_line_in *in, uint64_t now_ms)
{
	struct vl_rec *r = vl_current(v);

	if (r == NULL)
		return;
	r->logged = true;
	vl_line(in, r, NULL, now_ms);
}

void
vl_mail_passed(struct vl_sess *v)
{
	struct vl_rec *r = vl_current(v);

	if (r != NULL && v->upstream)
		r->mail_wait = true;
}

void
vl_rcpt(struct vl_sess *v, const char *addr, int code, const char *enh)
{
	struct vl_rec *r = vl_current(v);
	struct vl_rcpt *x;

	if (r == NULL)
		return;
	if (r->nr == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 4;
		r->r = xrealloc(r->r, r->cap * sizeof(*r->r));
	}
	x = &r->r[r->nr++];
	memset(x, 0, sizeof(*x));
	x->addr = xstrdup(addr);
	if (code != 0) {
		x->state = VR_DONE;
		x->code = (short)code;
		enh_copy(x->enh, sizeof(x->enh), enh);
	} else
		x->state = v->upstream ? VR_WAIT_UPS : VR_PASSED;
}

void
vl_data(struct vl_sess *v, uint64_t size, const struct vl_summary *summary,
	const char *rule_file, int rule_line)
{
	struct vl_rec *r = vl_current(v);

	if (r == NULL)
		return;
	r->size = size;
	r->summary = *summary;
	r->rule_file = rule_file;
	r->rule_line = rule_line;
	r->data_wait = v->upstream;
}

/* vb_esc - " KEY=OPEN<s escaped>CLOSE", whole or not at all (the line is
 * built by appending pieces, core/textbuf.h: no printf for every message) */
static void
vb_esc(struct textbuf *b, const char *key, const char *s, size_t len, const char *open,
	const char *close)
{
	char esc[LOG_ESC_SIZE];
	size_t m = b->n, k = log_escape(esc, sizeof(esc), s, len);

	tb_put(b, " ", 1);
	tb_str(b, key);
	tb_put(b, "=", 1);
	tb_str(b, open);
	tb_put(b, esc, k);
	tb_str(b, close);
	if (b->full)
		b->n = m;
}

static const char *
verdict_word(int code)
{
	switch (code / 100) {
	case 2: return "accept";
	case 4: return "tempfail";
	case 5: return "reject";
	default: return "pass";
	}
}

/* vl_line - one verdict line: the record's transaction (r may be NULL:
 * a refusal before MAIL), only one recipient when one is given */
static void
vl_line(const struct vl_line_in *in, const struct vl_rec *r, const struct vl_rcpt *only,
	uint64_t now_ms)
{
	char buf[VL_LINE], tail[VL_LINE];
	struct textbuf b = TEXTBUF(buf, VL_LINE), t = TEXTBUF(tail, VL_LINE);
	unsigned shown = 0, total = 0;

	if (in->stage == RS_DATA && r != NULL && !in->abandoned)
		metrics_inc(MF_MESSAGES, in->code / 100 == 5 ? "rejected" : in->code / 100 == 4 ?
		    "tempfailed" : "accepted", in->upstream ? "upstream" : "moat");
	if (in->code / 100 == 4 || in->code / 100 == 5)
		metrics_inc(MF_REFUSALS, rules_stage_name(in->stage), in->upstream ? "upstream" : "moat");
	if (!log_enabled(LOG_L_INFO) || in->who == NULL)
		return;		/* log-level warn: the line is not built */
	tb_str(&b, "verdict=");
	tb_str(&b, in->abandoned ? "abandoned" : in->code ? verdict_word(in->code) : "accept");
	tb_str(&b, in->upstream ? " by=upstream stage=" : " by=moat stage=");
	tb_str(&b, rules_stage_name(in->stage));
	tb_put(&b, " ", 1);
	tb_str(&b, in->who);
	if (r != NULL)
		vb_esc(&b, "from", r->from, strlen(r->from), "<", ">");

	/* what follows the recipients, made first: the recipients get the
	 * room it leaves (and " to_more=N" when not all of them fit) */
	if (r != NULL && only == NULL && r->size > 0) {
		tb_str(&t, " size=");
		tb_u64(&t, r->size);
	}
	if (in->code != 0) {
		tb_str(&t, " code=");
		tb_ll(&t, in->code);
		tb_str(&t, " enh=");
		tb_str(&t, in->enh && in->enh[0] ? in->enh : "-");
	} else {
		tb_str(&t, " code=-");
	}
	if (in->text != NULL)
		vb_esc(&t, "reply", in->text, in->len, "\"", "\"");
	if (in->rule_file != NULL) {
		tb_str(&t, " rule=");
		tb_str(&t, in->rule_file);
		tb_put(&t, ":", 1);
		tb_ll(&t, in->rule_line);
	} else {
		tb_str(&t, " rule=-");
	}
	if (in->summary != NULL && in->summary->set) {
		tb_str(&t, " spf=");
		tb_str(&t, in->summary->spf);
		tb_str(&t, " dkim=");
		tb_str(&t, in->summary->dkim);
		tb_str(&t, " dmarc=");
		tb_str(&t, in->summary->dmarc);
		tb_str(&t, " dnsbl=");
		tb_ll(&t, in->summary->dnsbl);
		tb_str(&t, " greylist=");
		tb_str(&t, in->summary->gl);
	}
	if (in->queue_id != NULL && in->queue_id[0])
		vb_esc(&t, "queue_id", in->queue_id, strlen(in->queue_id), "", "");
	if (r != NULL) {
		tb_str(&t, " time=");
		tb_secs(&t, now_ms - r->start_ms);
	}

	if (r != NULL) {
		size_t room = b.n + t.n + 20 < VL_LINE ? VL_LINE - t.n - 20 : b.n;

		b.cap = room;	/* " to_more=N" fits in the 20 kept */
		for (unsigned i = 0; i < r->nr; i++) {
			const struct vl_rcpt *x = &r->r[i];
			char esc[LOG_ESC_SIZE];
			size_t m = b.n, k;

			if (only != NULL && x != only)
				continue;
			total++;
			if (b.full)
				continue;	/* counted, not shown */
			k = log_escape(esc, sizeof(esc), x->addr, strlen(x->addr));
			tb_str(&b, " to=<");
			tb_put(&b, esc, k);
			if (x->state != VR_DONE) {
				tb_str(&b, x->state == VR_PASSED ? ">:passed" : r->lost ? ">:lost" :
				    ">:waiting");
			} else {
				tb_str(&b, ">:");
				tb_ll(&b, x->code);
				if (x->enh[0]) {
					tb_put(&b, ":", 1);
					tb_str(&b, x->enh);
				}
			}
			if (b.full)
				b.n = m;
			else
				shown++;
		}
		b.cap = VL_LINE;
		b.full = false;
		if (total > shown) {
			tb_str(&b, " to_more=");
			tb_u64(&b, total - shown);
		}
	}
	tb_put(&b, tail, t.n);
	log_text(LOG_L_INFO, in->sid, buf, b.n);
}

/* vl_refusal - moat refused a command: the line (the recipient's own
 * outcome was recorded by vl_rcpt) */
void
vl_refusal(struct vl_sess *v, const struct vl_line_in *in, uint64_t now_ms)
{
	struct vl_rec *r = in->stage >= RS_MAIL ? vl_current(v) : NULL;
	const struct vl_rcpt *only = NULL;

	if (r != NULL && in->stage == RS_RCPT && r->nr > 0)
		only = &r->r[r->nr - 1];
	if (r != NULL && in->stage == RS_DATA) {
		r->logged = true;
		r->data_wait = false;
	}
	vl_line(in, r, only, now_ms);
}

/* vl_queue_id - the queue id in an upstream's 250 after the data: Postfix
 * "queued as ID", Exim "id=ID", Sendmail "ID Message accepted" */
void
vl_queue_id(const char *t, size_t len, char *out, size_t size)
{
	const char *p = NULL;
	size_t k = 0;

	out[0] = 0;
	for (size_t i = 0; i + 10 <= len && p == NULL; i++)
		if (strncasecmp(t + i, "queued as ", 10) == 0)
			p = t + i + 10;
	for (size_t i = 0; i + 3 <= len && p == NULL; i++)
		if (strncasecmp(t + i, "id=", 3) == 0 && (i == 0 || t[i - 1] == ' '))
			p = t + i + 3;
	for (size_t i = 0; i + 17 <= len && p == NULL; i++)
		if (strncmp(t + i, " Message accepted", 17) == 0 && i > 0) {
			/* the word before it */
			size_t b = i;

			while (b > 0 && t[b - 1] != ' ')
				b--;
			p = t + b;
		}
	if (p == NULL)
		return;
	while (p + k < t + len && k + 1 < size && (unsigned char)p[k] > ' ' &&
	    (unsigned char)p[k] < 0x7f && p[k] != '"' && p[k] != ',' && p[k] != ';')
		k++;
	memcpy(out, p, k);
	out[k] = 0;
}

/* vl_upstream - the upstream's reply to a command of a transaction */
void
vl_upstream(struct vl_sess *v, struct vl_line_in *in, uint64_t now_ms)
{
	struct vl_rec *r;
	char qid[64];

	if (!v->upstream)
		return;
	switch (in->stage) {
	case RS_MAIL:
		for (r = v->head; r && (!r->mail_wait || r->lost); r = r->next)
			;
		if (r == NULL)
			return;
		r->mail_wait = false;
		if (in->code / 100 != 2)
			vl_line(in, r, NULL, now_ms);
		break;
	case RS_RCPT: {
		struct vl_rcpt *x = NULL;

		for (r = v->head; r && x == NULL; r = r->next)
			for (unsigned i = 0; i < r->nr && x == NULL && !r->lost; i++)
				if (r->r[i].state == VR_WAIT_UPS)
					x = &r->r[i];
		if (x == NULL)
			return;
		x->state = VR_DONE;
		x->code = (short)in->code;
		enh_copy(x->enh, sizeof(x->enh), in->enh);
		if (in->code / 100 != 2) {
			for (r = v->head; r && !(x >= r->r && x < r->r + r->nr); r = r->next)
				;
			vl_line(in, r, x, now_ms);
		}
		break;
	}
	default:
		for (r = v->head; r && (!r->data_wait || r->lost); r = r->next)
			;
		if (r == NULL)
			return;
		r->data_wait = false;
		r->logged = true;
		in->summary = &r->summary;
		if (in->code / 100 == 2) {
			vl_queue_id(in->text, in->len, qid, sizeof(qid));
			in->queue_id = qid;
			in->upstream = false;
			in->rule_file = r->rule_file;
			in->rule_line = r->rule_line;
		}
		vl_line(in, r, NULL, now_ms);
		break;
	}
	vl_gc(v);
}

/* vl_accepted - a front-end without an upstream let the message go */
void
vl_accepted(struct vl_sess *v, struct vl_line_in *in, uint64_t now_ms)
{
	struct vl_rec *r = vl_current(v);

	if (r == NULL || r->logged)
		return;
	r->logged = true;
	in->summary = &r->summary;
	in->rule_file = r->rule_file;
	in->rule_line = r->rule_line;
	vl_line(in, r, NULL, now_ms);
}

/* vl_lost - the upstream is gone: what waited for it gets moat's own
 * reply instead (vl_failed), and never a later connection's reply */
void
vl_lost(struct vl_sess *v)
{
	struct vl_rec *cur = vl_current(v);

	for (struct vl_rec *r = v->head; r; r = r->next) {
		bool waits = r->mail_wait || r->data_wait;

		for (unsigned i = 0; i < r->nr && !waits; i++)
			waits = r->r[i].state == VR_WAIT_UPS;
		if (waits || r == cur)
			r->lost = true;
	}
}

/* vl_failed - moat's own reply (in: code and text as sent) that ends a
 * transaction: the transaction's line, once. With in->upstream the
 * upstream was lost or could not be reached: the command is the oldest of
 * its stage still waiting, else one of the transaction in progress (sent
 * after the loss); without, moat's own limit ends the transaction in
 * progress */
void
vl_failed(struct vl_sess *v, const struct vl_line_in *in, uint64_t now_ms)
{
	struct vl_rec *r;
	struct vl_rcpt *x = NULL;

	if (!v->upstream && in->upstream)
		return;
	for (r = in->upstream ? v->head : NULL; r; r = r->next) {
		if (in->stage == RS_MAIL && r->mail_wait) {
			r->mail_wait = false;
			break;
		}
		if (in->stage == RS_DATA && r->data_wait) {
			r->data_wait = false;
			break;
		}
		for (unsigned i = 0; in->stage == RS_RCPT && i < r->nr && x == NULL; i++)
			if (r->r[i].state == VR_WAIT_UPS)
				x = &r->r[i];
		if (x != NULL) {
			x->state = VR_DONE;
			x->code = (short)in->code;
			enh_copy(x->enh, sizeof(x->enh), in->enh);
			break;
		}
	}
	if (r == NULL)
		r = vl_current(v);
	if (r != NULL && !r->logged) {
		struct vl_line_in l = *in;

		if (r->summary.set)
			l.summary = &r->summary;	/* the data's own */
		r->lost = true;
		r->logged = true;
		r->data_wait = false;
		vl_line(&l, r, NULL, now_ms);
	}
	vl_gc(v);
}
