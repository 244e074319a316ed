/*
 * auth - AUTH on submission listeners, relayed to the upstream (see auth.h)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/event.h>

#include "auth.h"
#include "log.h"
#include "metrics.h"
#include "moatd.h"
#include "reply.h"
#include "rules.h"
#include "sasl.h"
#include "session.h"
#include "siphash.h"
#include "xalloc.h"

#define AUTH_TABLE_MAX 1024

enum auth_stage { AU_NONE = 0, AU_WAIT_UPS, AU_WAIT_CLIENT };

struct sess_auth {
	enum auth_stage stage;
	enum sasl_mech mech;
	char mech_name[24];
	unsigned step;			/* client messages sent so far */
	bool cancelled;			/* we sent "*" for the client: its reply is ours */
	char pending[SASL_LOGIN_MAX + 1];	/* the login this exchange names */
	char *login;			/* accepted by the upstream, owned */
	struct event *ev_delay;		/* a failed AUTH's reply waits */
	struct slot *delay_slot;
	char *delay_text;
	size_t delay_len;
	bool delay_close;
};

/* ---------------------------------------------------------------------
 * Failures per client address, shared by the workers
 */

struct auth_fail {
	unsigned char key[17];		/* family byte + address (IPv6: masked) */
	unsigned count;
	uint64_t since_ms;		/* first failure of the window */
};

static pthread_mutex_t auth_lock = PTHREAD_MUTEX_INITIALIZER;
static struct auth_fail auth_table[AUTH_TABLE_MAX];

/* auth_key - the client's address as a table key */
static void
auth_key(const struct session *s, unsigned char key[17])
{
	memset(key, 0, 17);
	if (s->peer.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&s->peer;
		key[0] = 4;
		memcpy(key + 1, &sin->sin_addr, 4);
		return;
	}
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&s->peer;
	if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		key[0] = 4;
		memcpy(key + 1, sin6->sin6_addr.s6_addr + 12, 4);
		return;
	}
	key[0] = 6;
	{
		unsigned bits = (unsigned)s->conf->client_v6_prefix;
		for (unsigned i = 0; i < 16; i++) {
			unsigned char m = bits >= 8 ? 0xff : bits == 0 ? 0 :
			    (unsigned char)(0xff << (8 - bits));
			key[1 + i] = sin6->sin6_addr.s6_addr[i] & m;
			bits = bits >= 8 ? bits - 8 : 0;
		}
	}
}

/* auth_fail_count - failures of this client within the window; add one
 * more first when add */
static unsigned
auth_fail_count(const struct session *s, bool add)
{
	unsigned char key[17];
	uint64_t now = sess_now_ms(), win = s->conf->auth_failure_window_ms;
	struct auth_fail *hit = NULL, *old = &auth_table[0];
	unsigned n;

	auth_key(s, key);
	pthread_mutex_lock(&auth_lock);
	for (size_t i = 0; i < AUTH_TABLE_MAX; i++) {
		struct auth_fail *e = &auth_table[i];
		if (e->count > 0 && now - e->since_ms >= win)
			e->count = 0;	/* expired */
		if (e->count > 0 && memcmp(e->key, key, sizeof(key)) == 0)
			hit = e;
		if (e->count == 0 ? old->count != 0 || e < old : old->count != 0 &&
		    e->since_ms < old->since_ms)
			old = e;	/* a free slot first, else the oldest */
	}
	if (hit == NULL && add) {
		hit = old;
		memcpy(hit->key, key, sizeof(key));
		hit->count = 0;
		hit->since_ms = now;
	}
	if (hit != NULL && add)
		hit->count++;
	n = hit ? hit->count : 0;
	pthread_mutex_unlock(&auth_lock);
	return n;
}

/* ---------------------------------------------------------------------
 * The exchange
 */

/* auth_get - the session's AUTH state, made on first use */
static struct sess_auth *
auth_get(struct session *s)
{
	if (s->auth == NULL)
		s->auth = xcalloc(1, sizeof(*s->auth));
	return s->auth;
}

/* auth_login - the login the upstream accepted, or NULL */
const char *
auth_login(const struct session *s)
{
	return s->auth != NULL ? s->auth->login : NULL;
}

/* auth_end - the exchange is over: the session leaves SP_AUTH */
static void
auth_end(struct session *s)
{
	s->auth->stage = AU_NONE;
	if (s->phase == SP_AUTH)
		sess_enter_phase(s, SP_HELO);
}

/* auth_allowed - may this session see AUTH now? */
static bool
auth_allowed(const struct session *s)
{
	return (s->lflags & CONF_LISTEN_SUBMISSION) && (s->tls != NULL || !s->conf->auth_require_tls);
}

/* auth_ehlo - "250-AUTH PLAIN LOGIN" for the EHLO reply, or nothing */
size_t
auth_ehlo(const struct session *s, char *buf, size_t size)
{
	static const char *const mechs[] = { "PLAIN", "LOGIN" };
	size_t n = 0;

	buf[0] = 0;
	if (!auth_allowed(s) || auth_login(s) != NULL)
		return 0;
	for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
		if (!ups_auth_offered(mechs[i], strlen(mechs[i])))
			continue;
		int r = snprintf(buf + n, size - n, "%s%s", n == 0 ? "250-AUTH " : " ", mechs[i]);
		if (r < 0 || (size_t)r >= size - n)
			return 0;
		n += (size_t)r;
	}
	if (n == 0 || n + 3 > size)
		return 0;
	memcpy(buf + n, "\r\n", 3);
	return n + 2;
}

/* check_auth - where, when and how AUTH may be given */
bool
check_auth(struct session *s, const struct smtp_cmd *c)
{
	const char *sp;
	size_t mlen;

	if (!(s->lflags & CONF_LISTEN_SUBMISSION)) {
		sess_replyf(s, "503 5.5.1 Error: authentication not enabled");
		return sess_error(s), false;
	}
	if (s->tls == NULL && s->conf->auth_require_tls) {
		/* AUT-02: credentials never cross in plaintext */
		sess_replyf(s, "530 5.7.0 Must issue a STARTTLS command first");
		return sess_error(s), false;
	}
	if (s->phase == SP_GREETED) {
		sess_replyf(s, "503 5.5.1 Error: send HELO/EHLO first");
		return sess_error(s), false;
	}
	if (auth_login(s) != NULL) {
		sess_replyf(s, "503 5.5.1 Error: already authenticated");
		return sess_error(s), false;
	}
	if (sess_phase_txn(s->phase)) {
		sess_replyf(s, "503 5.5.1 Error: MAIL transaction in progress");
		return sess_error(s), false;
	}
	if (auth_fail_count(s, false) >= s->conf->auth_max_failures) {
		log_msg(LOG_L_INFO, s->id, "auth refused reason=too-many-failures");
		sess_reply_close(s, "421 4.7.0 %s Error: too many failed authentications, "
		    "try again later", s->conf->hostname);
		return false;
	}
	sp = memchr(c->arg, ' ', c->arglen);
	mlen = sp ? (size_t)(sp - c->arg) : c->arglen;
	if (mlen == 0) {
		sess_replyf(s, "501 5.5.4 Syntax: AUTH mechanism");
		return sess_error(s), false;
	}
	if (sasl_mech_find(c->arg, mlen) == SASL_NONE || !ups_auth_offered(c->arg, mlen)) {
		sess_replyf(s, "504 5.5.4 Unsupported authentication mechanism");
		return sess_error(s), false;
	}
	return true;
}

/* auth_login_plausible - does a failed login read as a mail address
 * (local@host.domain, in the characters logins use)? Anything else may
 * be a password typed into the user name field and is not logged */
bool
auth_login_plausible(const char *login)
{
	const char *at = strchr(login, '@'), *p;
	size_t n = strlen(login);
	bool dot = false;

	if (at == NULL || at == login || at - login > 64 || n - (size_t)(at - login) > 254)
		return false;
	for (p = login; p < at; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("._+-", *p) != NULL))
			return false;
	for (p = at + 1; *p; p++) {
		if (*p == '.') {
			if (p == at + 1 || p[1] == 0 || p[-1] == '.')
				return false;
			dot = true;
		} else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-'))
			return false;
	}
	return dot;
}

/* auth_login_hash - a login as a keyed hash (the key: random per process) */
static pthread_once_t auth_hash_once = PTHREAD_ONCE_INIT;
static uint64_t auth_hash_k[2];

static void
auth_hash_init(void)
{
	if (getrandom(auth_hash_k, sizeof(auth_hash_k), 0) != (ssize_t)sizeof(auth_hash_k))
		panic("getrandom failed");
}

static uint64_t
auth_login_hash(const char *login)
{
	pthread_once(&auth_hash_once, auth_hash_init);
	return siphash24(auth_hash_k[0], auth_hash_k[1], login, strlen(login));
}

/* auth_send - one line of the exchange to the upstream */
static void
auth_send(struct session *s, enum ups_kind kind, const char *a, size_t alen,
	const char *b, size_t blen, struct slot *sl)
{
	char *line = xmalloc(alen + blen + 3);

	memcpy(line, a, alen);
	if (blen)
		memcpy(line + alen, b, blen);
	memcpy(line + alen + blen, "\r\n", 2);
	ups_submit(sess_upstream(s), kind, line, alen + blen + 2, sl, NULL);
	memset(line, 0, alen + blen + 2);	/* credentials do not linger */
	free(line);
}

/* auth_message - a client message (base64) of the exchange: the login it
 * names, if any; false when it is malformed */
static bool
auth_message(struct session *s, const char *b64, size_t len)
{
	struct sess_auth *a = s->auth;
	unsigned char *dec;
	char login[SASL_LOGIN_MAX + 1];
	int n, r;

	dec = xmalloc(len / 4 * 3 + 4);
	n = sasl_b64_decode(b64, len, dec, len / 4 * 3 + 4);
	if (n < 0) {
		free(dec);
		return false;
	}
	/* only until the login is named: later messages carry the secret */
	r = a->pending[0] != 0 ? 0 : sasl_login(a->mech, a->step, dec, (size_t)n, login, sizeof(login));
	memset(dec, 0, (size_t)n);
	free(dec);
	if (r < 0)
		return false;
	if (r > 0)
		memcpy(a->pending, login, strlen(login) + 1);
	return true;
}

/* proceed_auth - the mechanism and any initial response go upstream */
void
proceed_auth(struct session *s, const struct smtp_cmd *c)
{
	struct sess_auth *a = auth_get(s);
	const char *sp = memchr(c->arg, ' ', c->arglen);
	size_t mlen = sp ? (size_t)(sp - c->arg) : c->arglen;
	const char *ir = sp ? sp + 1 : NULL;
	size_t irlen = sp ? c->arglen - mlen - 1 : 0;

	a->mech = sasl_mech_find(c->arg, mlen);
	snprintf(a->mech_name, sizeof(a->mech_name), "%.*s", (int)mlen, c->arg);
	for (char *p = a->mech_name; *p; p++)
		if (*p >= 'a' && *p <= 'z')
			*p = (char)(*p - 'a' + 'A');
	a->step = 0;
	a->pending[0] = 0;
	a->cancelled = false;
	if (ir != NULL && !auth_message(s, ir, irlen)) {
		log_msg(LOG_L_INFO, s->id, "auth mech=%s result=bad-initial-response", a->mech_name);
		sess_replyf(s, "501 5.5.2 Error: invalid base64 data or login");
		sess_error(s);
		return;
	}
	a->step = 1;		/* responses to 334 count from 1 */
	a->stage = AU_WAIT_UPS;
	sess_enter_phase(s, SP_AUTH);
	log_msg(LOG_L_DEBUG, s->id, "auth mech=%s start", a->mech_name);
	/* the line as the client sent it, mechanism upper-cased */
	{
		char head[40];
		int hn = snprintf(head, sizeof(head), "AUTH %s%s", a->mech_name, ir ? " " : "");
		auth_send(s, UK_AUTH, head, (size_t)hn, ir, irlen, sess_slot_new(s));
	}
}

/* auth_cancel_upstream - end the upstream's side of an exchange we ended */
static void
auth_cancel_upstream(struct session *s)
{
	s->auth->cancelled = true;
	s->auth->stage = AU_WAIT_UPS;
	auth_send(s, UK_AUTHDATA, "*", 1, NULL, 0, NULL);
}

/* auth_wants_line - is it the client's turn in the exchange? */
bool
auth_wants_line(const struct session *s)
{
	return s->auth != NULL && s->auth->stage == AU_WAIT_CLIENT;
}

/* auth_line - one response line from the session's line reader (see
 * auth.h); the caller wipes its copy of the line */
void
auth_line(struct session *s, enum sess_line r, const char *line, size_t len)
{
	struct sess_auth *a = s->auth;

	switch (r) {
	case SESS_LINE_NONE:
		return;
	case SESS_LINE_LONG:
		log_msg(LOG_L_INFO, s->id, "auth mech=%s result=line-too-long", a->mech_name);
		sess_replyf(s, "500 5.5.6 Authentication exchange line is too long");
		auth_cancel_upstream(s);
		return;
	case SESS_LINE_BARE_LF:
		sess_replyf(s, "500 5.5.2 Error: bare <LF> received, use <CR><LF>");
		auth_cancel_upstream(s);
		return;
	case SESS_LINE_OK:
		break;
	}
	if (len == 1 && line[0] == '*') {
		/* the client cancels: the upstream says so (501) */
		a->stage = AU_WAIT_UPS;
		auth_send(s, UK_AUTHDATA, "*", 1, NULL, 0, sess_slot_new(s));
		return;
	}
	if (!auth_message(s, line, len)) {
		log_msg(LOG_L_INFO, s->id, "auth mech=%s result=bad-response", a->mech_name);
		sess_replyf(s, "501 5.5.2 Error: invalid base64 data or login");
		auth_cancel_upstream(s);
		return;
	}
	a->step++;
	a->stage = AU_WAIT_UPS;
	auth_send(s, UK_AUTHDATA, line, len, NULL, 0, sess_slot_new(s));
}

/* auth_delay_cb - a failed AUTH's reply, after the delay */
static void
auth_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;	/* the timer belongs to the session */
	struct sess_auth *a = s->auth;
	struct slot *sl = a->delay_slot;

	(void)fd;
	(void)what;
	if (s->closing || sl == NULL)
		return;
	a->delay_slot = NULL;
	sl->close_after = a->delay_close;
	sess_slot_fill(s, sl, a->delay_text, a->delay_len);
	free(a->delay_text);
	a->delay_text = NULL;
}

/* auth_ups_reply - the upstream answered a line of the exchange */
void
auth_ups_reply(struct session *s, struct slot *sl, const struct reply *r)
{
	struct sess_auth *a = auth_get(s);
	char buf[REPLY_TEXT_MAX + REPLY_LINES_MAX * 16];
	int n;
	unsigned fails;

	if (sl == NULL) {
		/* the reply to a "*" we sent on our own: nothing to relay */
		if (r->code != 334)
			auth_end(s);
		sess_flush(s);		/* commands may have waited for this */
		return;
	}
	n = reply_render(r, 0, r->code != 334, buf, sizeof(buf));
	if (n < 0)
		n = snprintf(buf, sizeof(buf), "454 4.7.0 Error: unreadable reply from upstream\r\n");
	if (r->code == 334) {
		a->stage = a->cancelled ? AU_WAIT_UPS : AU_WAIT_CLIENT;
		sess_slot_fill(s, sl, buf, (size_t)n);
		return;
	}
	auth_end(s);
	if (r->code == 235) {
		if (a->pending[0] == 0) {
			/* cannot happen with the mechanisms we relay */
			log_msg(LOG_L_ERROR, s->id, "auth mech=%s result=no-login", a->mech_name);
			sl->close_after = true;
			sess_slot_fillf(s, sl, "421 4.7.0 %s Error: authentication state lost",
			    s->conf->hostname);
			return;
		}
		free(a->login);
		a->login = xstrdup(a->pending);	/* upstream.c never parks this connection now */
		{
			char esc[LOG_ESC_SIZE];
			log_escape(esc, sizeof(esc), a->login, strlen(a->login));
			log_msg(LOG_L_INFO, s->id, "auth mech=%s login=\"%s\" result=ok", a->mech_name, esc);
			metrics_inc(MF_AUTH, "success", NULL);
		}
		sess_slot_fill(s, sl, buf, (size_t)n);
		return;
	}
	if (r->code / 100 != 5 || r->code == 501 || r->code == 504) {
		log_msg(LOG_L_INFO, s->id, "auth mech=%s result=refused code=%d", a->mech_name, r->code);
		sess_slot_fill(s, sl, buf, (size_t)n);
		return;
	}
	fails = auth_fail_count(s, true);
	metrics_inc(MF_AUTH, "failure", NULL);
	if (auth_login_plausible(a->pending)) {
		char esc[LOG_ESC_SIZE];
		log_escape(esc, sizeof(esc), a->pending, strlen(a->pending));
		log_msg(LOG_L_INFO, s->id, "auth mech=%s login=\"%s\" result=failed code=%d failures=%u",
		    a->mech_name, esc, r->code, fails);
	} else {
		/* maybe a password typed as the user name: only a keyed hash,
		 * so repeated failures of one name still line up */
		log_msg(LOG_L_INFO, s->id, "auth mech=%s login_hash=%016llx result=failed code=%d "
		    "failures=%u", a->mech_name, (unsigned long long)auth_login_hash(a->pending),
		    r->code, fails);
	}
	a->pending[0] = 0;
	if (fails >= s->conf->auth_max_failures) {
		n = snprintf(buf, sizeof(buf), "421 4.7.0 %s Error: too many failed authentications, "
		    "try again later\r\n", s->conf->hostname);
		a->delay_close = true;
	} else {
		a->delay_close = false;
	}
	if (s->conf->auth_failure_delay_ms == 0) {
		sl->close_after = a->delay_close;
		sess_slot_fill(s, sl, buf, (size_t)n);
		return;
	}
	if (a->ev_delay == NULL && (a->ev_delay = evtimer_new(s->w->base, auth_delay_cb, s)) == NULL)
		panic("evtimer_new failed");
	free(a->delay_text);
	a->delay_text = xmemdup(buf, (size_t)n);
	a->delay_len = (size_t)n;
	a->delay_slot = sl;
	{
		uint64_t ms = s->conf->auth_failure_delay_ms;
		struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
		evtimer_add(a->ev_delay, &tv);
	}
}

/* auth_ups_lost - the upstream failed: the exchange is over (the waiting
 * slot got its 4xx from upstream.c) */
void
auth_ups_lost(struct session *s)
{
	if (s->auth != NULL)
		auth_end(s);
}

/* auth_reset - STARTTLS: forget the login, and the upstream that knew it */
void
auth_reset(struct session *s)
{
	if (s->auth == NULL)
		return;
	if (s->auth->login != NULL)
		ups_disconnect(s->ups);	/* an authenticated upstream is never reused */
	free(s->auth->login);
	s->auth->login = NULL;
	auth_end(s);
	s->auth->pending[0] = 0;
}

/* auth_free - the session ends */
void
auth_free(struct session *s)
{
	struct sess_auth *a = s->auth;

	if (a == NULL)
		return;
	if (a->ev_delay)
		event_free(a->ev_delay);
	free(a->delay_text);
	free(a->login);
	free(a);
	s->auth = NULL;
}
