/*
 * pdel - moatd's Postfix policy delegation front-end (check_policy_service)
 *
 * SYNOPSIS
 *	void pdel_start(struct worker *w, struct conf *c, int fd, const struct sockaddr *sa,
 *	                unsigned lflags);
 *	void pdel_drain(struct worker *w);
 *	void pdel_close_all(struct worker *w);
 *
 * DESCRIPTION
 *	A listener marked "policy" speaks Postfix's policy delegation
 *	protocol (SMTPD_POLICY_README) instead of SMTP: Postfix's smtpd
 *	sends a request of name=value lines about one of its clients (the
 *	parser is pdel_req.c) and waits for one "action=..." line; the
 *	connection is kept for the next request. The requests go to the same
 *	engine as moatd's SMTP sessions, under the same policy file.
 *
 *	A connection holds at most one engine session: the SMTP client the
 *	last request was about, recognised by client_address, client_port
 *	and client_name (an smtpd process serves one client at a time). A
 *	request about another client, or a CONNECT request that is not a
 *	repeat, starts a new one; a new instance (Postfix's transaction id)
 *	starts a new transaction. Postfix usually asks only at RCPT, so the
 *	stages before the request's are judged first, once each, in order
 *	(connect, helo, mail): a refusal at any of them is the request's
 *	answer, as moatd would have given it earlier. A refused connect
 *	sticks to the session, a refused MAIL to the transaction.
 *
 *	The same request may come more than once (check_policy_service under
 *	two restriction lists): the verdict is kept per instance, stage and
 *	recipient and given again without asking the engine.
 *
 *	Verdicts: a refusal is "action=CODE ENH text" (policy-reply smtp,
 *	the default: the code moatd would give) or "action=REJECT ENH text"
 *	/ "action=DEFER_IF_PERMIT ENH text" (policy-reply actions); continue
 *	and accept are DUNNO (never OK, which would skip Postfix's own
 *	restrictions after the policy service), or PREPEND with a header
 *	field the rules added, one per reply (Postfix takes one per action).
 *	At END-OF-MESSAGE the data rules run without the message (Postfix
 *	sends none): DKIM and DMARC give none, rules reading "from" see no
 *	From (a load-time warning says so).
 *
 *	Bad input (a line over PDEL_LINE_MAX, more than PDEL_ATTR_MAX lines,
 *	a request over PDEL_REQ_MAX, a control byte, a line without '=') is
 *	answered "action=DEFER 4.3.0 ..." and the connection closed: the
 *	framing is not to be trusted after it. A request that is well formed
 *	but not a policy request, or whose state moat does not judge (VRFY,
 *	ETRN), gets DUNNO.
 *
 *	Policy: each new engine session (a new client) takes the policy in
 *	force, so a SIGHUP reload reaches Postfix's long-lived connections
 *	at their next client; a session keeps the policy it began with.
 *
 *	Lifetime: the engine session outlives END-OF-MESSAGE (which ends
 *	its transaction) until a request about another client; it is freed after
 *	command-deadline without a request, and the connection after two.
 *	On drain, idle connections close at once, a connection waiting for a
 *	verdict after its reply. Connections are counted against
 *	max-sessions, not per client address (Postfix's processes all come
 *	from one address).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conn.h"
#include "engine.h"
#include "log.h"
#include "moatd.h"
#include "pdel_req.h"
#include "smtp_parse.h"
#include "xalloc.h"

#define PDEL_INPUT_MAX (64 * 1024)
#define PDEL_CACHE_MAX 32	/* verdicts kept per instance */
#define PDEL_GIVEN_MAX 16	/* header fields given per transaction */
#define PDEL_KEY_MAX 320

struct pdel_cached {
	enum pdel_state st;
	char rcpt[SMTP_PATH_MAX + 1];
	char *reply;			/* "action=...\n", owned */
};

struct pdel_conn {
	uint64_t id;
	struct worker *w;
	struct conf *conf;		/* the policy of the current engine session (or at accept) */
	struct conn *conn;
	struct event *ev_timer;
	struct pdel_conn *prev, *next;
	unsigned lflags;
	bool closing;
	bool busy;			/* a request waits for the engine */
	bool in_process;		/* inside pdel_process() */
	bool draining;
	bool idle_once;			/* the timer fired once without a request */
	const char *end_reason;		/* closing once the output is written */
	unsigned nreq;
	struct pdel_req *req;

	/* the SMTP client the requests are about */
	struct eng_sess *e;
	uint64_t eid;
	char key[PDEL_KEY_MAX];		/* client_address|client_port|client_name */
	bool connect_done;
	char *refusal;			/* a refused connect: every answer (owned) */
	char *helo;			/* the HELO name judged (owned), or NULL */
	char *helo_refusal;		/* its refusal, or NULL */
	char inst[128];			/* the transaction's instance */
	bool mail_given, mail_done;
	char *mail_refusal;
	unsigned nrcpt;			/* recipients that passed in the transaction */
	uint32_t given[PDEL_GIVEN_MAX];	/* header fields prepended (hashes) */
	unsigned ngiven;
	struct pdel_cached cache[PDEL_CACHE_MAX];
	unsigned ncache;

	/* the request being judged */
	enum pdel_state st;
	enum rules_stage waiting;	/* the stage engine_stage() said WAIT for; RS__COUNT: none */
};

static unsigned pdel_live;		/* atomic: policy connections, all workers */

static void pdel_process(struct pdel_conn *p);
static void pdel_judge(struct pdel_conn *p);

/* pdel_hash - FNV-1a of a header field, to know it was given */
static uint32_t
pdel_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

/* pdel_cache_clear - the verdicts of the last instance go */
static void
pdel_cache_clear(struct pdel_conn *p)
{
	for (unsigned i = 0; i < p->ncache; i++)
		free(p->cache[i].reply);
	p->ncache = 0;
}

/* pdel_txn_reset - a new transaction (a new instance) */
static void
pdel_txn_reset(struct pdel_conn *p)
{
	if (p->e != NULL)
		engine_txn_end(p->e);
	p->mail_given = p->mail_done = false;
	free(p->mail_refusal);
	p->mail_refusal = NULL;
	p->nrcpt = 0;
	p->ngiven = 0;
	p->inst[0] = 0;
	pdel_cache_clear(p);
}

/* pdel_sess_reset - the engine session goes (another client, idle, close) */
static void
pdel_sess_reset(struct pdel_conn *p)
{
	pdel_txn_reset(p);
	engine_sess_free(p->e);	/* its answers in flight will find nobody */
	p->e = NULL;
	p->key[0] = 0;
	p->connect_done = false;
	free(p->refusal);
	p->refusal = NULL;
	free(p->helo);
	p->helo = NULL;
	free(p->helo_refusal);
	p->helo_refusal = NULL;
}

/* pdel_free_cb - the one place a connection is freed */
static void
pdel_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pdel_conn *p = arg;
	struct worker *w = p->w;

	(void)fd;
	(void)what;
	pdel_sess_reset(p);
	event_free(p->ev_timer);
	conn_free(p->conn);
	if (p->prev)
		p->prev->next = p->next;
	else
		w->pdels = p->next;
	if (p->next)
		p->next->prev = p->prev;
	w->npdels--;
	__atomic_sub_fetch(&pdel_live, 1, __ATOMIC_RELAXED);
	conf_unref(p->conf);
	free(p->req);
	free(p);
	moatd_worker_idle(w);
}

/* pdel_close - stop all I/O now and free the connection from its own event */
static void
pdel_close(struct pdel_conn *p, const char *reason)
{
	struct timeval zero = { 0, 0 };

	if (p->closing)
		return;
	p->closing = true;
	log_msg(LOG_L_INFO, p->id, "policy disconnect reason=%s requests=%u", reason, p->nreq);
	conn_setcb(p->conn, NULL, NULL, NULL, NULL);
	conn_read_enable(p->conn, false);
	evtimer_del(p->ev_timer);
	if (event_base_once(p->w->base, -1, EV_TIMEOUT, pdel_free_cb, p, &zero) != 0)
		panic("event_base_once failed");
}

/* pdel_end_after_write - read no more; close once the reply is written */
static void
pdel_end_after_write(struct pdel_conn *p, const char *reason)
{
	p->busy = true;			/* nothing more is read or judged */
	p->end_reason = reason;
	conn_read_enable(p->conn, false);
	if (conn_output_len(p->conn) == 0)
		pdel_close(p, reason);
}

/* pdel_arm - the idle timer: command-deadline from now */
static void
pdel_arm(struct pdel_conn *p)
{
	uint64_t ms = p->conf->command_deadline_ms;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(p->ev_timer, &tv);
}

/* pdel_timer_cb - idle: the engine session goes, then the connection */
static void
pdel_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pdel_conn *p = arg;

	(void)fd;
	(void)what;
	if (p->closing)
		return;
	if (p->busy) {
		pdel_arm(p);	/* a wait ends by the engine's deadline, not ours */
		return;
	}
	if (p->idle_once) {
		pdel_close(p, "idle");
		return;
	}
	p->idle_once = true;
	if (p->e != NULL)
		log_msg(LOG_L_DEBUG, p->id, "policy session idle: freed sid=%llu",
		    (unsigned long long)p->eid);
	pdel_sess_reset(p);
	pdel_arm(p);
}

/* pdel_send - one reply line (text without "action=" and LF) */
static void
pdel_send(struct pdel_conn *p, const char *text)
{
	char line[800];
	int n = snprintf(line, sizeof(line), "action=%s\n\n", text);

	if (n < 0 || (size_t)n >= sizeof(line))
		n = snprintf(line, sizeof(line), "action=DEFER 4.3.0 reply too long\n\n");
	conn_write(p->conn, line, (size_t)n);
}

/* pdel_refusal_text - the action for an engine refusal (owned) */
static char *
pdel_refusal_text(const struct pdel_conn *p, const struct eng_verdict *v)
{
	char buf[800];
	bool temp = v->code < 500;

	if (p->conf->policy_reply == CONF_PREPLY_ACTIONS)
		snprintf(buf, sizeof(buf), "%s %s %s", temp ? "DEFER_IF_PERMIT" : "REJECT",
		    v->enh, v->text);
	else
		snprintf(buf, sizeof(buf), "%d %s %s", v->code, v->enh, v->text);
	return xstrdup(buf);
}

/* pdel_prepend - a header field the rules added and Postfix was not
 * given yet, as "PREPEND Name: value" (unfolded) into out; false: none.
 * Authentication-Results is not given: without the message it could
 * only say what was not checked. */
static bool
pdel_prepend(struct pdel_conn *p, char *out, size_t size)
{
	size_t len, pos = 0;
	unsigned removed;
	char *h = engine_headers(p->e, &len, &removed);
	bool found = false;

	if (h == NULL)
		return false;
	while (pos < len && !found) {
		size_t n = 0;
		char field[700];
		uint32_t hv;
		bool seen = false;

		/* one field: up to a CRLF not followed by a blank */
		while (pos < len) {
			if (h[pos] == '\r' && pos + 1 < len && h[pos + 1] == '\n') {
				pos += 2;
				if (pos < len && (h[pos] == ' ' || h[pos] == '\t'))
					continue;
				break;
			}
			if (n + 1 < sizeof(field) && h[pos] != '\r' && h[pos] != '\n')
				field[n++] = h[pos];
			pos++;
		}
		field[n] = 0;
		if (n == 0 || strncasecmp(field, "Authentication-Results:", 23) == 0)
			continue;
		hv = pdel_hash(field, n);
		for (unsigned i = 0; i < p->ngiven; i++)
			seen |= p->given[i] == hv;
		if (seen || p->ngiven >= PDEL_GIVEN_MAX)
			continue;
		p->given[p->ngiven++] = hv;
		snprintf(out, size, "PREPEND %s", field);
		found = true;
	}
	free(h);
	return found;
}

/* pdel_cache_find - the verdict given already for this request, or NULL */
static const char *
pdel_cache_find(const struct pdel_conn *p, enum pdel_state st, const char *rcpt)
{
	for (unsigned i = 0; i < p->ncache; i++)
		if (p->cache[i].st == st && strcmp(p->cache[i].rcpt, rcpt) == 0)
			return p->cache[i].reply;
	return NULL;
}

/* pdel_answer - reply, remember it for a repeat, go on with the input */
static void
pdel_answer(struct pdel_conn *p, const char *text)
{
	const char *rcpt = pdel_req_get(p->req, PDEL_A_RECIPIENT);

	pdel_send(p, text);
	if (p->ncache < PDEL_CACHE_MAX && p->st >= PDEL_ST_MAIL) {
		struct pdel_cached *c = &p->cache[p->ncache++];

		c->st = p->st;
		snprintf(c->rcpt, sizeof(c->rcpt), "%s", rcpt ? rcpt : "");
		c->reply = xstrdup(text);
	}
	p->busy = false;
	p->waiting = RS__COUNT;
	if (p->draining) {
		pdel_end_after_write(p, "shutdown");
		return;
	}
	pdel_req_init(p->req);
	if (!p->in_process)
		pdel_process(p);	/* after a wait: the requests behind it */
}

/* pdel_addr - parse "a@b" (or "" for the null sender) as a path */
static bool
pdel_addr(const char *s, bool mail, struct smtp_addr *a, struct smtp_mail_params *mp)
{
	char buf[SMTP_PATH_MAX + 8];
	struct smtp_rcpt_params rp;
	int n = snprintf(buf, sizeof(buf), "<%s>", s ? s : "");

	memset(a, 0, sizeof(*a));
	if (n < 0 || (size_t)n >= sizeof(buf))
		return false;
	if (mail)
		return smtp_mail_parse(buf, (size_t)n, a, mp) == NULL;
	memset(&rp, 0, sizeof(rp));
	return smtp_rcpt_parse(buf, (size_t)n, a, &rp, true) == NULL;
}

/* pdel_client - the client's address from the request (port from
 * client_port); false when unknown */
static bool
pdel_client(const struct pdel_req *r, struct sockaddr_storage *ss)
{
	const char *ip = pdel_req_get(r, PDEL_A_CLIENT_ADDRESS);
	const char *port = pdel_req_get(r, PDEL_A_CLIENT_PORT);
	unsigned long pn = port ? strtoul(port, NULL, 10) : 0;

	memset(ss, 0, sizeof(*ss));
	if (ip == NULL)
		return false;
	if (pn > 65535)
		pn = 0;
	if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)pn);
		return true;
	}
	if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		ss->ss_family = AF_INET6;
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)pn);
		return true;
	}
	return false;
}

/* pdel_resume - the engine can answer the stage that waited */
static void
pdel_resume(void *arg)
{
	struct pdel_conn *p = arg;

	if (p->closing || !p->busy)
		return;
	pdel_judge(p);
}

/* pdel_stage - the engine's verdict for a stage: ENG_CONTINUE,
 * ENG_REFUSE (*refusal set, owned), or ENG_WAIT (p->waiting set) */
static enum eng_rc
pdel_stage(struct pdel_conn *p, enum rules_stage st, char **refusal)
{
	struct eng_verdict v;
	enum eng_rc rc = engine_stage(p->e, st, &v);

	if (rc == ENG_WAIT) {
		p->waiting = st;
		return rc;
	}
	p->waiting = RS__COUNT;
	if (rc == ENG_REFUSE)
		*refusal = pdel_refusal_text(p, &v);
	return rc;
}

/* pdel_judge - take the request through the stages up to its own (again
 * after a wait: the stage that waited is asked again first) */
static void
pdel_judge(struct pdel_conn *p)
{
	const struct pdel_req *r = p->req;
	const char *helo = pdel_req_get(r, PDEL_A_HELO_NAME);
	char *refusal = NULL;
	enum eng_rc rc;

	/* connect */
	if (!p->connect_done) {
		rc = pdel_stage(p, RS_CONNECT, &refusal);
		if (rc == ENG_WAIT)
			return;
		p->connect_done = true;
		if (rc == ENG_REFUSE) {
			p->refusal = refusal;
			pdel_answer(p, refusal);
			return;
		}
	}
	if (p->st == PDEL_ST_CONNECT) {
		pdel_answer(p, "DUNNO");
		return;
	}
	/* helo: when the name is new */
	if (helo != NULL && helo[0] != 0 && (p->helo == NULL || strcmp(p->helo, helo) != 0 ||
	    p->waiting == RS_HELO)) {
		if (p->waiting != RS_HELO) {
			free(p->helo);
			free(p->helo_refusal);
			p->helo_refusal = NULL;
			p->helo = xstrdup(helo);
			engine_helo(p->e, helo, strlen(helo));
			p->mail_given = p->mail_done = false;	/* HELO ends a transaction */
		}
		rc = pdel_stage(p, RS_HELO, &refusal);
		if (rc == ENG_WAIT)
			return;
		if (rc == ENG_REFUSE)
			p->helo_refusal = refusal;
	}
	if (p->helo_refusal != NULL) {
		pdel_answer(p, p->helo_refusal);
		return;
	}
	if (p->st == PDEL_ST_HELO) {
		pdel_answer(p, "DUNNO");
		return;
	}
	/* mail: once per transaction */
	if (!p->mail_done && p->mail_refusal == NULL) {
		if (!p->mail_given) {
			struct smtp_addr from;
			struct smtp_mail_params mp;
			const char *size = pdel_req_get(r, PDEL_A_SIZE);
			const char *login = pdel_req_get(r, PDEL_A_SASL_USERNAME);

			memset(&mp, 0, sizeof(mp));
			if (!pdel_addr(pdel_req_get(r, PDEL_A_SENDER), true, &from, &mp)) {
				log_msg(LOG_L_INFO, p->eid, "policy sender unparsed: taken as unknown");
				memset(&from, 0, sizeof(from));
				memset(&mp, 0, sizeof(mp));
			}
			if (size != NULL && size[0] >= '1' && size[0] <= '9') {
				mp.has_size = true;
				mp.size = strtoull(size, NULL, 10);
			}
			engine_set_login(p->e, login != NULL && login[0] ? login : NULL);
			engine_mail(p->e, &from, &mp);
			p->mail_given = true;
		}
		rc = pdel_stage(p, RS_MAIL, &refusal);
		if (rc == ENG_WAIT)
			return;
		if (rc == ENG_REFUSE)
			p->mail_refusal = refusal;
		else
			p->mail_done = true;
	}
	if (p->mail_refusal != NULL) {
		pdel_answer(p, p->mail_refusal);
		return;
	}
	if (p->st == PDEL_ST_MAIL) {
		pdel_answer(p, "DUNNO");
		return;
	}
	if (p->st == PDEL_ST_RCPT) {
		if (p->waiting != RS_RCPT) {
			struct smtp_addr to;

			if (!pdel_addr(pdel_req_get(r, PDEL_A_RECIPIENT), false, &to, NULL))
				memset(&to, 0, sizeof(to));
			engine_rcpt(p->e, &to, p->nrcpt);
		}
		rc = pdel_stage(p, RS_RCPT, &refusal);
		if (rc == ENG_WAIT)
			return;
		if (rc == ENG_REFUSE) {
			pdel_answer(p, refusal);
			free(refusal);
			return;
		}
		p->nrcpt++;
	} else if (p->st == PDEL_ST_EOM) {
		if (p->waiting != RS_DATA) {
			const char *size = pdel_req_get(r, PDEL_A_SIZE);
			const char *count = pdel_req_get(r, PDEL_A_RECIPIENT_COUNT);

			engine_data(p->e, NULL, size ? strtoull(size, NULL, 10) : 0,
			    count ? (unsigned)strtoul(count, NULL, 10) : p->nrcpt, false);
		}
		rc = pdel_stage(p, RS_DATA, &refusal);
		if (rc == ENG_WAIT)
			return;
		/* the transaction is over (before the answer, which may go on
		 * with the next request); a repeat of this request finds its
		 * verdict in the cache until the instance changes */
		engine_txn_end(p->e);
		p->mail_given = p->mail_done = false;
		pdel_answer(p, rc == ENG_REFUSE ? refusal : "DUNNO");	/* no PREPEND here */
		free(refusal);
		return;
	}
	{
		char prep[720];

		pdel_answer(p, pdel_prepend(p, prep, sizeof(prep)) ? prep : "DUNNO");
	}
}

/* pdel_request - a complete, well-formed request */
static void
pdel_request(struct pdel_conn *p)
{
	const struct pdel_req *r = p->req;
	const char *type = pdel_req_get(r, PDEL_A_REQUEST);
	const char *inst = pdel_req_get(r, PDEL_A_INSTANCE);
	const char *rcpt = pdel_req_get(r, PDEL_A_RECIPIENT);
	const char *cached;
	char key[PDEL_KEY_MAX];
	const char *ca = pdel_req_get(r, PDEL_A_CLIENT_ADDRESS);
	const char *cp = pdel_req_get(r, PDEL_A_CLIENT_PORT);
	const char *cn = pdel_req_get(r, PDEL_A_CLIENT_NAME);

	p->nreq++;
	p->idle_once = false;
	p->busy = true;
	p->st = pdel_req_state(r);
	if (type == NULL || strcmp(type, "smtpd_access_policy") != 0) {
		log_msg(LOG_L_INFO, p->id, "policy request=%s: not a policy request, DUNNO",
		    type ? "other" : "none");
		pdel_answer(p, "DUNNO");
		return;
	}
	if (p->st == PDEL_ST_NONE || p->st == PDEL_ST_OTHER || p->st == PDEL_ST_DATA) {
		/* VRFY, ETRN: not judged; DATA: nothing new since RCPT */
		if (p->st != PDEL_ST_DATA || p->e == NULL) {
			pdel_answer(p, "DUNNO");
			return;
		}
	}
	snprintf(key, sizeof(key), "%s|%s|%s", ca ? ca : "", cp ? cp : "", cn ? cn : "");
	if (inst == NULL)
		inst = "";
	/* a repeat of a request answered already */
	if (p->e != NULL && strcmp(key, p->key) == 0 && strcmp(inst, p->inst) == 0 &&
	    (cached = pdel_cache_find(p, p->st, rcpt ? rcpt : "")) != NULL) {
		char *copy = xstrdup(cached);

		p->st = PDEL_ST_NONE;		/* not cached again */
		pdel_answer(p, copy);
		free(copy);
		return;
	}
	if (p->e == NULL || strcmp(key, p->key) != 0 ||
	    (p->st == PDEL_ST_CONNECT && strcmp(inst, p->inst) != 0)) {
		struct sockaddr_storage ss;
		bool known = pdel_client(r, &ss);

		pdel_sess_reset(p);
		/* a new client session takes the policy in force: Postfix keeps
		 * its connections for many sessions, a reload reaches them here */
		conf_unref(p->conf);
		p->conf = moatd_conf_get();
		p->eid = moatd_new_sid();
		snprintf(p->key, sizeof(p->key), "%s", key);
		snprintf(p->inst, sizeof(p->inst), "%s", inst);
		p->e = engine_sess_new(p->w->eng, p->conf, p->eid,
		    known ? (const struct sockaddr *)&ss : NULL,
		    (p->lflags & CONF_LISTEN_SUBMISSION) != 0, pdel_resume, p);
		{
			char esc[128];

			log_escape(esc, sizeof(esc), ca ? ca : "", ca ? strlen(ca) : 0);
			log_msg(LOG_L_INFO, p->eid, "policy client=%s conn=%016llx", esc,
			    (unsigned long long)p->id);
		}
	}
	if (p->st >= PDEL_ST_MAIL && strcmp(inst, p->inst) != 0) {
		pdel_txn_reset(p);
		snprintf(p->inst, sizeof(p->inst), "%s", inst);
	}
	{
		const char *proto = pdel_req_get(r, PDEL_A_ENCRYPTION_PROTOCOL);
		const char *cipher = pdel_req_get(r, PDEL_A_ENCRYPTION_CIPHER);
		const char *subj = pdel_req_get(r, PDEL_A_CCERT_SUBJECT);

		if (proto != NULL && proto[0] != 0)
			engine_set_tls(p->e, proto, cipher && cipher[0] ? cipher : NULL,
			    subj && subj[0] ? subj : NULL);
	}
	if (p->refusal != NULL) {
		char *copy = xstrdup(p->refusal);

		pdel_answer(p, copy);
		free(copy);
		return;
	}
	if (p->st == PDEL_ST_DATA) {
		/* DATA: the header fields not given at RCPT */
		char prep[720];

		p->st = PDEL_ST_NONE;
		pdel_answer(p, p->mail_done && pdel_prepend(p, prep, sizeof(prep)) ? prep : "DUNNO");
		return;
	}
	p->waiting = RS__COUNT;
	pdel_judge(p);
}

/* pdel_process - the requests in the input, in order, one at a time */
static void
pdel_process(struct pdel_conn *p)
{
	struct evbuffer *in = conn_input(p->conn);

	p->in_process = true;
	while (!p->closing && !p->busy && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		enum pdel_rc rc;
		size_t used;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		used = pdel_req_feed(p->req, v.iov_base, v.iov_len, &rc);
		evbuffer_drain(in, used);
		if (rc == PDEL_MORE)
			continue;
		if (rc == PDEL_BAD) {
			log_msg(LOG_L_INFO, p->id, "policy bad-request reason=\"%s\"", p->req->err);
			pdel_send(p, "DEFER 4.3.0 Error: bad policy request");
			evbuffer_drain(in, evbuffer_get_length(in));
			pdel_end_after_write(p, "bad-request");
			p->in_process = false;
			return;
		}
		pdel_request(p);
	}
	p->in_process = false;
	if (!p->closing)
		conn_input_drained(p->conn);
}

/* pdel_read_cb - Postfix's bytes arrived */
static void
pdel_read_cb(struct conn *cn, void *arg)
{
	struct pdel_conn *p = arg;

	(void)cn;
	if (p->closing)
		return;
	pdel_process(p);
	if (!p->closing && !p->busy)
		pdel_arm(p);
}

/* pdel_drain_cb - the output was written: a connection ending closes */
static void
pdel_drain_cb(struct conn *cn, void *arg)
{
	struct pdel_conn *p = arg;

	(void)cn;
	if (!p->closing && p->end_reason != NULL)
		pdel_close(p, p->end_reason);
}

/* pdel_event_cb - the end of the connection */
static void
pdel_event_cb(struct conn *cn, enum conn_ev ev, void *arg)
{
	struct pdel_conn *p = arg;

	(void)cn;
	if (p->closing)
		return;
	if (ev == CONN_EV_EOF) {
		if (p->req->len > 0 && !p->busy)
			log_msg(LOG_L_INFO, p->id, "policy request cut short bytes=%zu",
			    p->req->len);
		pdel_close(p, p->busy ? "closed-while-judging" : "eof");
	} else if (ev == CONN_EV_ERROR)
		pdel_close(p, "error");
	else if (ev == CONN_EV_TIMEOUT)
		pdel_close(p, "write-timeout");
}

/* pdel_start - a connection on a policy listener (fd is ours) */
void
pdel_start(struct worker *w, struct conf *c, int fd, const struct sockaddr *sa, unsigned lflags)
{
	struct pdel_conn *p;
	struct timeval wt;
	unsigned live = __atomic_add_fetch(&pdel_live, 1, __ATOMIC_RELAXED);
	int one = 1;
	char peer[INET6_ADDRSTRLEN] = "local";

	if (w->draining || live > c->max_sessions) {
		log_msg(LOG_L_INFO, 0, "policy refuse reason=%s", w->draining ? "shutdown" :
		    "max-sessions");
		__atomic_sub_fetch(&pdel_live, 1, __ATOMIC_RELAXED);
		close(fd);
		conf_unref(c);
		return;
	}
	p = xcalloc(1, sizeof(*p));
	p->id = moatd_new_sid();
	p->w = w;
	p->conf = c;
	p->lflags = lflags;
	p->waiting = RS__COUNT;
	p->req = xmalloc(sizeof(*p->req));
	pdel_req_init(p->req);
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, peer, sizeof(peer));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	} else if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, peer, sizeof(peer));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	p->conn = conn_new(w->base, fd, PDEL_INPUT_MAX);
	p->ev_timer = evtimer_new(w->base, pdel_timer_cb, p);
	if (p->ev_timer == NULL)
		panic("evtimer_new failed");
	p->next = w->pdels;
	if (p->next)
		p->next->prev = p;
	w->pdels = p;
	w->npdels++;
	conn_setcb(p->conn, pdel_read_cb, pdel_drain_cb, pdel_event_cb, p);
	wt.tv_sec = (time_t)(c->command_deadline_ms / 1000);
	wt.tv_usec = (suseconds_t)(c->command_deadline_ms % 1000) * 1000;
	conn_set_timeouts(p->conn, NULL, &wt);
	conn_read_enable(p->conn, true);
	pdel_arm(p);
	log_msg(LOG_L_INFO, p->id, "policy connect from=%s", peer);
}

/* pdel_drain - stop: idle connections close now, busy ones after their reply */
void
pdel_drain(struct worker *w)
{
	struct pdel_conn *p, *next;

	for (p = w->pdels; p; p = next) {
		next = p->next;
		if (p->busy)
			p->draining = true;
		else
			pdel_close(p, "shutdown");
	}
}

/* pdel_close_all - the worker stops */
void
pdel_close_all(struct worker *w)
{
	for (struct pdel_conn *p = w->pdels; p; p = p->next)
		pdel_close(p, "shutdown");
}
