/*
 * mixclient - the traffic-mix client in C (bench/mix, issue 21)
 *
 *	mixclient PORT PLAN CONCURRENCY RETRY_S TIMEOUT_S BUDGET_S SEED(0|1)
 *
 * PLAN is the text plan bench/mixgen.py writes (write_cplan): one line per
 * session "kind ip helo mfrom offset length", offsets into PLAN.msgs, which
 * holds every message dot-stuffed and ended with ".\r\n". Each session
 * binds its own source address, sends one message (or, SEED=1, stops after
 * RCPT), and a "greylist" session refused with 4xx at RCPT is tried once
 * more RETRY_S later. epoll, one thread, at most CONCURRENCY connections.
 * Bounded: the plan's sessions, TIMEOUT_S per session, BUDGET_S in all.
 * Prints the same JSON as mixgen.py run (counts by kind and outcome,
 * latencies from "." sent to the final reply, wall times, the start in
 * CLOCK_MONOTONIC and the retries accepted before the last first attempt
 * ended: bench/mix's end-to-end time).
 *
 *	mixclient ... SEED --lookups DNS_IP REDIS_PORT
 *
 * The lookup floor (bench/mix's floor-* cells): the client itself asks,
 * for each session, the questions any filter applying bench/mix's rules
 * must ask, at the points where such a filter would have to wait for
 * them, and holds the session there until the answers are in; the SMTP
 * peer (haproxy -> smtp-sink, or Postfix alone) checks nothing. PLAN.lk
 * (mixgen.py write_cplan) has a line per session: "VERDICT REDIS TOKEN...",
 * VERDICT the reply the rules give (accept, connect, rcpt, eod: refused
 * there; grey: 4xx at RCPT, accepted on the retry), REDIS 1 when the
 * session gets a greylist decision at RCPT, and each TOKEN "SG:TYPE:NAME":
 * a DNS question asked from S (c: the connection, m: MAIL FROM, b: the
 * start of the message) and waited for before the reply G (g: the
 * greeting, r: the RCPT reply, e: the end-of-data reply; e-tokens only for
 * a session that reaches DATA: a greylisted first attempt asks its
 * m-tokens for the retry). Questions go over one non-blocking UDP
 * socket to DNS_IP:53; a name asked once in the run is not asked again
 * (answers pending are shared: a filter's cache does as much); a
 * question unanswered after 2 s is sent again, at most 3 times. A
 * greylist decision is one EVALSHA of a one-command script (HINCRBY) on
 * one Redis connection, pipelined, sent with the RCPT. The verdict is the
 * plan's, so the outcome counts match a filter's: a session refused before
 * DATA (at connect, RCPT, or greylisted) opens no connection at all (its
 * questions and Redis call are asked and waited for in its place among
 * the CONCURRENCY); a DMARC reject is counted at the end of data.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAXS 1000000
#define NOUT 16
#define RBUF 4096

enum stage { GREET, EHLO, MAIL, RCPT, DATA, BODY, EOD, QUIT };

/* --lookups: what the rules decide for a session (PLAN.lk's VERDICT) */
enum verdict { V_ACCEPT, V_CONNECT, V_RCPT, V_EOD, V_GREY };
enum gate { G_GREET, G_RCPT, G_EOD, NGATE };

struct conn;

struct sess {
	char kind[24], ip[20], helo[64], mfrom[128];
	size_t off, len;
	int tries;
	double retry_at;	/* > 0: waiting for the retry */
	int done;
	/* --lookups */
	enum verdict verdict;
	int redis;		/* a greylist decision at RCPT */
	char *lk;		/* the tokens */
	struct conn *conn;	/* the attempt in progress, or NULL */
	unsigned gen;		/* attempts ended: a waiter of an older one is stale */
};

struct conn {
	int fd;
	struct sess *s;
	enum stage st;
	char rb[RBUF];
	size_t rn;
	char wb[512];
	size_t wn, woff;	/* command being sent */
	size_t boff;		/* message bytes sent */
	double deadline, t_eod;
	double t_last;		/* the previous reply acted on (or the connect) */
	/* --lookups: answers still awaited before each gate's reply; a reply
	 * that came before them, held; a Redis call in flight */
	int pend[NGATE];
	int held;
	int rwait;
};

static const char *outs[NOUT] = {"accepted", "refused-connect", "tempfail-connect",
	"refused-helo", "tempfail-helo", "refused-mail", "tempfail-mail", "refused-rcpt",
	"tempfail-rcpt", "refused-data", "tempfail-data", "refused-eod", "tempfail-eod",
	"error-connect", "error-closed", "error-timeout"};
static const char *kinds[8];
static int nkinds;
static long counts[8][NOUT], rcounts[8][NOUT], seedc[8][6];
static double *lat;
static long nlat;
/* time from one reply acted on to the next, summed by the stage that
 * waited (GREET: from the connect; BODY's time counts under EOD) */
static double stage_s[QUIT + 1];
static long stage_n[QUIT + 1];
static const char *msgs;
static int seed_mode;
static int lookups;		/* --lookups */

/* ------------------------------------------------------------- lookups */

#define DNS_RETX_S 2.0
#define DNS_TRIES 3

struct waiter {
	struct sess *s;
	unsigned gen;
	int gate;
	struct waiter *next;
};

struct name {			/* a question asked in this run */
	unsigned char q[300];	/* the query as sent (header + question) */
	size_t qlen;
	int id, tries, done;
	double sent_at;
	struct waiter *w;
	long pix;		/* index in pending[], or -1 */
};

static struct name **ntab;	/* open addressing by the question's bytes */
static size_t ncap;
static struct name *idmap[65536];
static struct name **pending;
static long npending, pending_cap;
static int dnsfd = -1, next_id;
static long dns_sent, dns_names, dns_retx, dns_failed, dns_trunc, dns_unsent;

static int rfd = -1;
static char rsha[41];
static char *rout;
static size_t rout_n, rout_off, rout_cap;
static char rin[65536];
static size_t rin_n;
static struct waiter rq[65536];	/* Redis calls in flight, in order */
static long rq_head, rq_tail;
static long redis_calls, redis_errors;
static int rtag;		/* epoll's mark for the Redis socket */
static int dtag;		/* and the DNS socket's */

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int kind_ix(const char *k)
{
	for (int i = 0; i < nkinds; i++)
		if (strcmp(kinds[i], k) == 0)
			return i;
	if (nkinds == 8) {
		fprintf(stderr, "mixclient: too many kinds\n");
		exit(2);
	}
	kinds[nkinds] = strdup(k);
	return nkinds++;
}

static int out_ix(const char *o)
{
	for (int i = 0; i < NOUT; i++)
		if (strcmp(outs[i], o) == 0)
			return i;
	return NOUT - 2;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* a complete reply in c->rb: its code, else 0 (more to read); -1 bad */
static int reply(struct conn *c)
{
	size_t i = 0;
	while (i < c->rn) {
		char *nl = memchr(c->rb + i, '\n', c->rn - i);
		if (nl == NULL)
			return 0;
		size_t len = (size_t)(nl - (c->rb + i)) + 1;
		if (len < 4)
			return -1;
		if (c->rb[i + 3] != '-') {
			int code = atoi(c->rb + i);
			size_t rest = c->rn - (i + len);
			memmove(c->rb, c->rb + i + len, rest);
			c->rn = rest;
			return code > 0 ? code : -1;
		}
		i += len;
	}
	return 0;
}

static void set_cmd(struct conn *c, const char *fmt, const char *arg)
{
	int n = snprintf(c->wb, sizeof c->wb, fmt, arg);
	c->wn = n > 0 && (size_t)n < sizeof c->wb ? (size_t)n : 0;
	c->woff = 0;
}

/* returns 0 when all pending bytes are written, 1 when it must wait, -1 error */
static int flush(struct conn *c)
{
	while (c->woff < c->wn) {
		ssize_t n = send(c->fd, c->wb + c->woff, c->wn - c->woff, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN ? 1 : -1;
		c->woff += (size_t)n;
	}
	if (c->st == BODY) {
		while (c->boff < c->s->len) {
			ssize_t n = send(c->fd, msgs + c->s->off + c->boff, c->s->len - c->boff,
			    MSG_NOSIGNAL);
			if (n < 0)
				return errno == EAGAIN ? 1 : -1;
			c->boff += (size_t)n;
		}
		c->st = EOD;
		c->t_eod = now();
	}
	return 0;
}

static int epfd;
static long active;

static void finish(struct conn *c, const char *out)
{
	struct sess *s = c->s;
	int k = kind_ix(s->kind);
	if (c->fd >= 0) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	active--;
	s->conn = NULL;
	s->gen++;
	if (seed_mode) {
		seedc[k][0]++;
		s->done = 1;
	} else if (strcmp(out, "tempfail-rcpt") == 0 && s->tries == 1 &&
	    strcmp(s->kind, "greylist") == 0) {
		s->retry_at = -1;	/* the caller schedules it */
	} else {
		if (s->tries > 1)
			rcounts[k][out_ix(out)]++;
		else
			counts[k][out_ix(out)]++;
		s->done = 1;
	}
	free(c);
}

/* the name's entry in ntab (an empty slot if it was never asked) */
static struct name **slot(const unsigned char *q, size_t qlen)
{
	size_t h = 1469598103934665603u;
	for (size_t i = 12; i < qlen; i++)
		h = (h ^ q[i]) * 1099511628211u;
	for (size_t i = 0; i < ncap; i++) {
		struct name **e = &ntab[(h + i) & (ncap - 1)];
		if (*e == NULL || ((*e)->qlen == qlen && memcmp((*e)->q + 12, q + 12, qlen - 12) == 0))
			return e;
	}
	fprintf(stderr, "mixclient: name table full\n");
	exit(2);
}

/* the query for TYPE NAME (A or TXT), header zeroed but for RD; 0 if bad */
static size_t build_query(unsigned char *q, size_t size, const char *type, const char *name)
{
	int qtype = strcmp(type, "A") == 0 ? 1 : strcmp(type, "TXT") == 0 ? 16 : 0;
	size_t n = 12, nl = strlen(name);
	if (qtype == 0 || nl == 0 || nl > 253 || n + nl + 2 + 4 > size)
		return 0;
	memset(q, 0, 12);
	q[2] = 0x01;		/* RD */
	q[5] = 1;		/* QDCOUNT */
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		if (l == 0 || l > 63)
			return 0;
		q[n++] = (unsigned char)l;
		memcpy(q + n, p, l);
		n += l;
		p += l + (dot != NULL);
	}
	q[n++] = 0;
	q[n++] = 0;
	q[n++] = (unsigned char)qtype;
	q[n++] = 0;
	q[n++] = 1;		/* IN */
	return n;
}

static void dns_send(struct name *e)
{
	e->q[0] = (unsigned char)(e->id >> 8);
	e->q[1] = (unsigned char)e->id;
	e->tries++;
	e->sent_at = now();
	if (send(dnsfd, e->q, e->qlen, 0) != (ssize_t)e->qlen) {
		dns_unsent++;	/* sent again by the sweep */
		e->sent_at -= DNS_RETX_S - 0.01;
		return;
	}
	dns_sent++;
}

static void advance(struct conn *c);

/* the name is answered (or given up): its waiters go on */
static void dns_done(struct name *e)
{
	e->done = 1;
	idmap[e->id] = NULL;
	if (e->pix >= 0) {
		pending[e->pix] = pending[--npending];
		pending[e->pix]->pix = e->pix;
		e->pix = -1;
	}
	struct waiter *w = e->w;
	e->w = NULL;
	while (w != NULL) {
		struct waiter *nx = w->next;
		struct sess *s = w->s;
		if (s->conn != NULL && s->gen == w->gen) {
			s->conn->pend[w->gate]--;
			advance(s->conn);
		}
		free(w);
		w = nx;
	}
}

/* ask the questions of c's session that start at START (c, m or b) */
static void ask(struct conn *c, char start)
{
	struct sess *s = c->s;
	/* e-tokens: for a session that reaches DATA in some attempt (a
	 * greylisted first attempt asks them for its retry, as a filter that
	 * asks at MAIL FROM does; nothing waits for them there) */
	int data = !(s->verdict == V_CONNECT || s->verdict == V_RCPT);
	const char *p = s->lk;
	while (p != NULL && *p) {
		while (*p == ' ')
			p++;
		const char *end = strchr(p, ' ');
		size_t tl = end ? (size_t)(end - p) : strlen(p);
		char tok[300], type[8], name[260];
		if (tl == 0)
			break;
		if (tl >= sizeof tok || tl < 6) {
			fprintf(stderr, "mixclient: bad lookup token\n");
			exit(2);
		}
		memcpy(tok, p, tl);
		tok[tl] = 0;
		p += tl;
		if (sscanf(tok, "%*c%*c:%7[A-Z]:%259s", type, name) != 2 || tok[2] != ':') {
			fprintf(stderr, "mixclient: bad lookup token %s\n", tok);
			exit(2);
		}
		int gate = tok[1] == 'g' ? G_GREET : tok[1] == 'r' ? G_RCPT : G_EOD;
		if (tok[0] != start || (gate == G_EOD && !data))
			continue;
		unsigned char q[300];
		size_t qlen = build_query(q, sizeof q, type, name);
		if (qlen == 0) {
			fprintf(stderr, "mixclient: cannot ask %s %s\n", type, name);
			exit(2);
		}
		struct name **sl = slot(q, qlen), *e = *sl;
		if (e == NULL) {
			e = calloc(1, sizeof *e);
			if (e == NULL)
				exit(2);
			memcpy(e->q, q, qlen);
			e->qlen = qlen;
			for (int i = 0; i < 65536 && idmap[next_id] != NULL; i++)
				next_id = (next_id + 1) & 0xffff;
			if (idmap[next_id] != NULL) {
				fprintf(stderr, "mixclient: 65536 questions in flight\n");
				exit(2);
			}
			e->id = next_id;
			next_id = (next_id + 1) & 0xffff;
			idmap[e->id] = e;
			if (npending == pending_cap) {
				pending_cap = pending_cap ? 2 * pending_cap : 1024;
				pending = realloc(pending, (size_t)pending_cap * sizeof *pending);
				if (pending == NULL)
					exit(2);
			}
			e->pix = npending;
			pending[npending++] = e;
			*sl = e;
			dns_names++;
			dns_send(e);
		}
		if (e->done)
			continue;
		struct waiter *w = calloc(1, sizeof *w);
		if (w == NULL)
			exit(2);
		*w = (struct waiter){.s = s, .gen = s->gen, .gate = gate, .next = e->w};
		e->w = w;
		c->pend[gate]++;
	}
}

/* answers on the DNS socket */
static void dns_read(void)
{
	unsigned char b[4096];
	for (int i = 0; i < 4096; i++) {
		ssize_t n = recv(dnsfd, b, sizeof b, 0);
		if (n < 0)
			return;
		if (n < 12 || !(b[2] & 0x80))
			continue;
		struct name *e = idmap[(b[0] << 8) | b[1]];
		if (e == NULL || e->done || (size_t)n < e->qlen ||
		    memcmp(b + 12, e->q + 12, e->qlen - 12) != 0)
			continue;	/* an answer to a question sent again, or stray */
		if (b[2] & 0x02)
			dns_trunc++;	/* TC: a resolver would ask over TCP; not here */
		dns_done(e);
	}
}

/* questions unanswered for DNS_RETX_S: sent again, or given up */
static void dns_sweep(double t)
{
	for (long i = 0; i < npending; i++) {
		struct name *e = pending[i];
		if (t - e->sent_at < DNS_RETX_S)
			continue;
		if (e->tries >= DNS_TRIES) {
			dns_failed++;
			dns_done(e);	/* moved pending[npending-1] here */
			i--;
			continue;
		}
		dns_retx++;
		dns_send(e);
	}
}

static void redis_flush(void)
{
	while (rout_off < rout_n) {
		ssize_t n = send(rfd, rout + rout_off, rout_n - rout_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			fprintf(stderr, "mixclient: Redis: %s\n", strerror(errno));
			exit(2);
		}
		rout_off += (size_t)n;
	}
	if (rout_off == rout_n)
		rout_off = rout_n = 0;
	struct epoll_event ev = {.events = EPOLLIN | (rout_n ? EPOLLOUT : 0), .data.ptr = &rtag};
	epoll_ctl(epfd, EPOLL_CTL_MOD, rfd, &ev);
}

/* one greylist decision for c's session: EVALSHA of the one-command script */
static void redis_call(struct conn *c)
{
	struct sess *s = c->s;
	char key[200], cmd[400];
	int kl = snprintf(key, sizeof key, "floor:%s:%s", s->ip, s->mfrom);
	int n = snprintf(cmd, sizeof cmd, "*4\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n",
	    rsha, kl, key);
	if (kl <= 0 || n <= 0 || (size_t)n >= sizeof cmd || rq_tail - rq_head >= 65536)
		exit(2);
	if (rout_n + (size_t)n > rout_cap) {
		rout_cap = 2 * (rout_n + (size_t)n) + 4096;
		rout = realloc(rout, rout_cap);
		if (rout == NULL)
			exit(2);
	}
	memcpy(rout + rout_n, cmd, (size_t)n);
	rout_n += (size_t)n;
	rq[rq_tail++ & 0xffff] = (struct waiter){.s = s, .gen = s->gen};
	c->rwait = 1;
	redis_calls++;
	redis_flush();
}

/* replies on the Redis socket: one line each (an integer, or an error) */
static void redis_read(void)
{
	for (int i = 0; i < 64; i++) {
		ssize_t n = recv(rfd, rin + rin_n, sizeof rin - rin_n, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			fprintf(stderr, "mixclient: Redis closed the connection\n");
			exit(2);
		}
		if (n < 0)
			break;
		rin_n += (size_t)n;
		size_t at = 0;
		char *nl;
		while ((nl = memchr(rin + at, '\n', rin_n - at)) != NULL) {
			if (rin[at] != ':')
				redis_errors++;
			at = (size_t)(nl - rin) + 1;
			if (rq_head == rq_tail) {
				fprintf(stderr, "mixclient: a Redis reply nobody waits for\n");
				exit(2);
			}
			struct waiter w = rq[rq_head++ & 0xffff];
			if (w.s->conn != NULL && w.s->gen == w.gen) {
				w.s->conn->rwait = 0;
				advance(w.s->conn);
			}
		}
		memmove(rin, rin + at, rin_n - at);
		rin_n -= at;
		if (rin_n == sizeof rin)
			exit(2);
	}
}

/* the Redis connection and the script, before the run (blocking) */
static void redis_open(int port)
{
	static const char lua[] = "return redis.call('HINCRBY', KEYS[1], 'n', 1)";
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	rfd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(rfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	char cmd[256], r[128];
	int n = snprintf(cmd, sizeof cmd, "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%zu\r\n%s\r\n",
	    strlen(lua), lua);
	size_t got = 0;
	if (rfd < 0 || connect(rfd, (struct sockaddr *)&a, sizeof a) != 0 ||
	    send(rfd, cmd, (size_t)n, 0) != n) {
		fprintf(stderr, "mixclient: cannot reach Redis on port %d\n", port);
		exit(2);
	}
	while (got < 47) {	/* "$40\r\n" + 40 hex + "\r\n" */
		ssize_t k = recv(rfd, r + got, sizeof r - 1 - got, 0);
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	if (got < 47 || memcmp(r, "$40\r\n", 5) != 0) {
		fprintf(stderr, "mixclient: SCRIPT LOAD failed\n");
		exit(2);
	}
	memcpy(rsha, r + 5, 40);
	rsha[40] = 0;
	int one = 1;
	setsockopt(rfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	fcntl(rfd, F_SETFL, fcntl(rfd, F_GETFL) | O_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &rtag};
	epoll_ctl(epfd, EPOLL_CTL_ADD, rfd, &ev);
}

static void dns_open(const char *ip)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "mixclient: bad DNS address %s\n", ip);
		exit(2);
	}
	dnsfd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	int sz = 4 << 20;
	setsockopt(dnsfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	setsockopt(dnsfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	if (dnsfd < 0 || connect(dnsfd, (struct sockaddr *)&a, sizeof a) != 0) {
		fprintf(stderr, "mixclient: cannot open the DNS socket\n");
		exit(2);
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &dtag};
	epoll_ctl(epfd, EPOLL_CTL_ADD, dnsfd, &ev);
}

/* --lookups: may the reply to the command c waits on be acted on? */
static int gate_open(struct conn *c)
{
	switch (c->st) {
	case GREET:
		return c->pend[G_GREET] == 0;
	case RCPT:
		return c->pend[G_RCPT] == 0 && !c->rwait;
	case EOD:
		return c->pend[G_EOD] == 0;
	default:
		return 1;
	}
}

static const char *step(struct conn *c, int code)
{
	double t = now();
	stage_s[c->st] += t - c->t_last;
	stage_n[c->st]++;
	c->t_last = t;
	switch (c->st) {
	case GREET:
		if (code != 220)
			return code >= 500 ? "refused-connect" : "tempfail-connect";
		if (lookups && c->s->verdict == V_CONNECT)
			return "refused-connect";
		if (c->fd < 0) {	/* no peer: on to MAIL FROM's reply */
			c->st = MAIL;
			ask(c, 'm');
			c->held = 250;
			break;
		}
		set_cmd(c, "EHLO %s\r\n", c->s->helo);
		c->st = EHLO;
		break;
	case EHLO:
		if (code >= 400)
			return code >= 500 ? "refused-helo" : "tempfail-helo";
		set_cmd(c, "MAIL FROM:<%s>\r\n", c->s->mfrom);
		c->st = MAIL;
		if (lookups)
			ask(c, 'm');
		break;
	case MAIL:
		if (code >= 400)
			return code >= 500 ? "refused-mail" : "tempfail-mail";
		c->st = RCPT;
		if (lookups && c->s->redis)
			redis_call(c);
		if (lookups && (c->s->verdict == V_RCPT ||
		    (c->s->verdict == V_GREY && c->s->tries == 1))) {
			/* the filter's own reply to RCPT: nothing goes to the peer */
			c->held = c->s->verdict == V_RCPT ? 550 : 450;
			c->wn = c->woff = 0;
			break;
		}
		set_cmd(c, "RCPT TO:<%s>\r\n", "rcpt@mx.test");
		break;
	case RCPT:
		if (seed_mode) {
			set_cmd(c, "%sQUIT\r\n", "");
			(void)flush(c);
			return "accepted";
		}
		if (code >= 400) {
			if (lookups && c->fd >= 0) {
				set_cmd(c, "%sQUIT\r\n", "");
				(void)flush(c);
			}
			return code >= 500 ? "refused-rcpt" : "tempfail-rcpt";
		}
		set_cmd(c, "%sDATA\r\n", "");
		c->st = DATA;
		break;
	case DATA:
		if (code != 354)
			return code >= 500 ? "refused-data" : "tempfail-data";
		c->wn = c->woff = 0;
		c->boff = 0;
		c->st = BODY;
		if (lookups)
			ask(c, 'b');
		break;
	case EOD:
		lat[nlat++] = now() - c->t_eod;
		set_cmd(c, "%sQUIT\r\n", "");
		(void)flush(c);
		if (code == 250)
			return lookups && c->s->verdict == V_EOD ? "refused-eod" : "accepted";
		return code >= 500 ? "refused-eod" : "tempfail-eod";
	default:
		return "error-closed";
	}
	return NULL;
}

static int open_conn(struct sess *s, int port, double timeout)
{
	/* --lookups: a session the rules refuse before DATA opens no
	 * connection (no SMTP peer spends anything on it: cheaper than any
	 * filter, which must at least accept it and answer); its questions are
	 * asked and waited for all the same, holding its place */
	int bare = lookups && (s->verdict == V_CONNECT || s->verdict == V_RCPT ||
	    (s->verdict == V_GREY && s->tries == 0));
	int fd = -1;
	if (!bare) {
		struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -1;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		inet_pton(AF_INET, s->ip, &src.sin_addr);
		inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
		dst.sin_port = htons((unsigned short)port);
		if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
		    (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 &&
		    errno != EINPROGRESS)) {
			close(fd);
			return -1;
		}
	}
	struct conn *c = calloc(1, sizeof *c);
	if (c == NULL) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	c->fd = fd;
	c->s = s;
	c->st = GREET;
	c->deadline = now() + timeout;
	c->t_last = now();
	s->tries++;
	s->conn = c;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
	if (fd >= 0)
		epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
	active++;
	if (lookups)
		ask(c, 'c');
	if (bare) {
		c->held = 220;	/* the greeting the filter would give */
		advance(c);
	}
	return 0;
}

static double t0, first_wall, retry;
/* first_acc: accepted at the first attempt; retry_acc: retries accepted so
 * far; retry_acc_first: retries accepted by the time the last first attempt
 * ended (the messages the system accepted inside first_wall besides first_acc) */
static long done, first_acc, retry_acc, retry_acc_first;

/* the session of c ended with OUT: counted, c freed, a retry scheduled */
static void settle(struct conn *c, const char *out)
{
	struct sess *s = c->s;
	int first = s->tries == 1;
	if (strcmp(out, "accepted") == 0 && !seed_mode) {
		if (first)
			first_acc++;
		else
			retry_acc++;
	}
	finish(c, out);
	if (first) {
		first_wall = now() - t0;
		retry_acc_first = retry_acc;
	}
	if (s->retry_at < 0)
		s->retry_at = now() + retry;
	if (s->done)
		done++;
}

/* act on reply CODE, and on the replies --lookups holds back, as far as the
 * session's gates allow; returns the outcome when the session ends */
static const char *drive(struct conn *c, int code)
{
	for (int i = 0; i < 4; i++) {
		if (lookups && !gate_open(c)) {
			c->held = code;
			return NULL;
		}
		c->held = 0;
		const char *out = step(c, code);
		if (out != NULL || c->held == 0)
			return out;
		code = c->held;
	}
	return NULL;
}

/* after drive(): send what it queued and wait for the next reply, or end */
static void after(struct conn *c, const char *out)
{
	if (out == NULL && flush(c) < 0)
		out = "error-closed";
	if (out != NULL) {
		settle(c, out);
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP |
	    (c->wn > c->woff || c->st == BODY ? EPOLLOUT : 0), .data.ptr = c};
	if (c->fd >= 0)
		epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* an answer or a Redis reply came: a held reply may go on */
static void advance(struct conn *c)
{
	if (c->held != 0 && gate_open(c))
		after(c, drive(c, c->held));
}

int main(int argc, char **argv)
{
	if (argc != 8 && !(argc == 11 && strcmp(argv[8], "--lookups") == 0)) {
		fprintf(stderr, "usage: mixclient PORT PLAN CONCURRENCY RETRY_S TIMEOUT_S "
		    "BUDGET_S SEED [--lookups DNS_IP REDIS_PORT]\n");
		return 2;
	}
	int port = atoi(argv[1]), conc = atoi(argv[3]);
	double timeout = atof(argv[5]), budget = atof(argv[6]);
	retry = atof(argv[4]);
	seed_mode = atoi(argv[7]);
	lookups = argc == 11;
	if (port <= 0 || conc < 1 || conc > 5000 || budget > 3600 || timeout > 600) {
		fprintf(stderr, "mixclient: bad arguments\n");
		return 2;
	}
	FILE *f = fopen(argv[2], "r");
	char path[4096];
	snprintf(path, sizeof path, "%s.msgs", argv[2]);
	int mfd = open(path, O_RDONLY);
	struct stat st;
	if (f == NULL || mfd < 0 || fstat(mfd, &st) != 0) {
		fprintf(stderr, "mixclient: cannot read %s or its .msgs\n", argv[2]);
		return 2;
	}
	msgs = st.st_size ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, mfd, 0) : "";
	if (msgs == MAP_FAILED)
		return 2;
	struct sess *ss = calloc(MAXS, sizeof *ss);
	long n = 0;
	while (n < MAXS && fscanf(f, "%23s %19s %63s %127s %zu %zu", ss[n].kind, ss[n].ip,
	    ss[n].helo, ss[n].mfrom, &ss[n].off, &ss[n].len) == 6) {
		if (ss[n].off + ss[n].len > (size_t)st.st_size) {
			fprintf(stderr, "mixclient: session %ld outside the messages\n", n);
			return 2;
		}
		kind_ix(ss[n].kind);
		n++;
	}
	fclose(f);
	lat = calloc((size_t)(2 * n + 1), sizeof *lat);
	epfd = epoll_create1(0);
	if (lookups) {
		snprintf(path, sizeof path, "%s.lk", argv[2]);
		FILE *lf = fopen(path, "r");
		char line[4096];
		for (long i = 0; i < n; i++) {
			char v[16];
			int used = 0;
			if (lf == NULL || fgets(line, sizeof line, lf) == NULL ||
			    sscanf(line, "%15s %d %n", v, &ss[i].redis, &used) != 2) {
				fprintf(stderr, "mixclient: %s: no line for session %ld\n", path, i);
				return 2;
			}
			line[strcspn(line, "\r\n")] = 0;
			ss[i].verdict = strcmp(v, "connect") == 0 ? V_CONNECT : strcmp(v, "rcpt") == 0 ?
			    V_RCPT : strcmp(v, "eod") == 0 ? V_EOD : strcmp(v, "grey") == 0 ? V_GREY :
			    V_ACCEPT;
			ss[i].lk = strdup(line + used);
		}
		if (lf != NULL)
			fclose(lf);
		ncap = 1024;
		while (ncap < (size_t)n * 16)
			ncap *= 2;
		ntab = calloc(ncap, sizeof *ntab);
		dns_open(argv[9]);
		redis_open(atoi(argv[10]));
	}
	t0 = now();
	double end = t0 + budget;
	long next = 0;
	struct epoll_event evs[256];
	while (done < n && now() < end + timeout) {
		double t = now();
		if (lookups)
			dns_sweep(t);
		/* start sessions: first attempts in order, then due retries */
		for (long i = 0; i < n && active < conc && t < end; i++) {
			struct sess *s = &ss[i];
			if (s->retry_at > 0 && s->retry_at <= t && !s->done) {
				s->retry_at = 0;
				if (open_conn(s, port, timeout) != 0) {
					rcounts[kind_ix(s->kind)][out_ix("error-connect")]++;
					s->done = 1;
				}
			}
			if (i >= next)
				break;
		}
		while (next < n && active < conc && t < end) {
			struct sess *s = &ss[next++];
			if (open_conn(s, port, timeout) != 0) {
				counts[kind_ix(s->kind)][out_ix("error-connect")]++;
				s->done = 1;
			}
		}
		int k = epoll_wait(epfd, evs, 256, 5);
		for (int j = 0; j < k; j++) {
			if (evs[j].data.ptr == &dtag) {
				dns_read();
				continue;
			}
			if (evs[j].data.ptr == &rtag) {
				if (evs[j].events & EPOLLOUT)
					redis_flush();
				if (evs[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					redis_read();
				continue;
			}
			struct conn *c = evs[j].data.ptr;
			const char *out = NULL;
			if (evs[j].events & EPOLLOUT) {
				int r = flush(c);
				if (r < 0)
					out = "error-closed";
				else if (r == 0 && c->wn == c->woff && c->st != BODY) {
					struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
					    .data.ptr = c};
					epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
				}
			}
			if (out == NULL && (evs[j].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
				ssize_t r = recv(c->fd, c->rb + c->rn, RBUF - c->rn - 1, 0);
				if (r <= 0 && !(r < 0 && errno == EAGAIN))
					out = c->st == GREET && c->rn == 0 ? "error-connect" : "error-closed";
				else if (r > 0)
					c->rn += (size_t)r;
				int code;
				while (out == NULL && c->held == 0 && (code = reply(c)) != 0) {
					if (code < 0) {
						out = "error-closed";
						break;
					}
					out = drive(c, code);
					if (out == NULL && flush(c) < 0)
						out = "error-closed";
					if (out == NULL) {
						struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP |
						    (c->wn > c->woff || c->st == BODY ? EPOLLOUT : 0),
						    .data.ptr = c};
						epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
					}
				}
				if (out == NULL && c->rn >= RBUF - 1)
					out = "error-closed";
			}
			if (out != NULL)
				settle(c, out);
		}
		/* deadlines: not tracked per connection in the loop above; a stuck
		 * session ends the run at the budget plus the timeout */
	}
	double wall = now() - t0;
	qsort(lat, (size_t)nlat, sizeof *lat, cmpd);
	long acc = 0;
	printf("{\"wall_s\": %.6f, \"first_wall_s\": %.6f, \"first_accepted\": %ld, "
	    "\"sessions\": %ld, \"eod_replies\": %ld, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
	    "\"lat_ms\": [", wall, first_wall, first_acc, n, nlat,
	    nlat ? 1000 * lat[nlat / 2] : 0.0,
	    nlat ? 1000 * lat[(long)(0.99 * nlat) < nlat ? (long)(0.99 * nlat) : nlat - 1] : 0.0);
	for (long i = 0; i < nlat; i++)
		printf("%s%.3f", i ? ", " : "", 1000 * lat[i]);
	printf("], \"stage_ms\": {");
	static const char *sname[] = {"greet", "ehlo", "mail", "rcpt", "data", "body", "eod", "quit"};
	for (int i = 0, k = 0; i <= QUIT; i++)
		if (stage_n[i])
			printf("%s\"%s\": %.3f", k++ ? ", " : "", sname[i], 1000 * stage_s[i] / stage_n[i]);
	printf("}, \"counts\": {");
	int comma = 0;
	for (int k = 0; k < nkinds; k++) {
		for (int o = 0; o < NOUT; o++) {
			if (counts[k][o]) {
				printf("%s\"%s %s\": %ld", comma++ ? ", " : "", kinds[k], outs[o],
				    counts[k][o]);
				if (o == 0)
					acc += counts[k][o];
			}
			if (rcounts[k][o]) {
				printf("%s\"%s retried-%s\": %ld", comma++ ? ", " : "", kinds[k],
				    outs[o], rcounts[k][o]);
				if (o == 0)
					acc += rcounts[k][o];
			}
		}
		if (seedc[k][0])
			printf("%s\"%s seed\": %ld", comma++ ? ", " : "", kinds[k], seedc[k][0]);
	}
	long left = n - done;
	if (left)
		printf("%s\"unfinished\": %ld", comma ? ", " : "", left);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	/* t0_mono: the start in CLOCK_MONOTONIC seconds (Python's time.monotonic) */
	printf("}, \"accepted\": %ld, \"retry_accepted_in_first\": %ld, \"t0_mono\": %.6f, "
	    "\"client_cpu_s\": %.3f", acc, retry_acc_first, t0,
	    ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	if (lookups)
		printf(", \"lookups\": {\"dns_names\": %ld, \"dns_sent\": %ld, \"dns_resent\": %ld, "
		    "\"dns_failed\": %ld, \"dns_truncated\": %ld, \"dns_unsent\": %ld, "
		    "\"redis_calls\": %ld, \"redis_errors\": %ld}", dns_names, dns_sent, dns_retx,
		    dns_failed, dns_trunc, dns_unsent, redis_calls, redis_errors);
	printf("}\n");
	for (size_t i = 0; i < ncap; i++) {
		struct name *e = ntab[i];
		while (e != NULL && e->w != NULL) {
			struct waiter *w = e->w;
			e->w = w->next;
			free(w);
		}
		free(e);
	}
	for (long i = 0; i < n; i++)
		free(ss[i].lk);
	free(ntab);
	free(pending);
	free(rout);
	free(lat);
	free(ss);
	return 0;
}
