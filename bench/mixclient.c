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
 * latencies from "." sent to the final reply, wall times).
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAXS 1000000
#define NOUT 16
#define RBUF 4096

enum stage { GREET, EHLO, MAIL, RCPT, DATA, BODY, EOD, QUIT };

struct sess {
	char kind[24], ip[20], helo[64], mfrom[128];
	size_t off, len;
	int tries;
	double retry_at;	/* > 0: waiting for the retry */
	int done;
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
static const char *msgs;
static int seed_mode;

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
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	active--;
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

static const char *step(struct conn *c, int code)
{
	switch (c->st) {
	case GREET:
		if (code != 220)
			return code >= 500 ? "refused-connect" : "tempfail-connect";
		set_cmd(c, "EHLO %s\r\n", c->s->helo);
		c->st = EHLO;
		break;
	case EHLO:
		if (code >= 400)
			return code >= 500 ? "refused-helo" : "tempfail-helo";
		set_cmd(c, "MAIL FROM:<%s>\r\n", c->s->mfrom);
		c->st = MAIL;
		break;
	case MAIL:
		if (code >= 400)
			return code >= 500 ? "refused-mail" : "tempfail-mail";
		set_cmd(c, "RCPT TO:<%s>\r\n", "rcpt@mx.test");
		c->st = RCPT;
		break;
	case RCPT:
		if (seed_mode) {
			set_cmd(c, "%sQUIT\r\n", "");
			(void)flush(c);
			return "accepted";
		}
		if (code >= 400)
			return code >= 500 ? "refused-rcpt" : "tempfail-rcpt";
		set_cmd(c, "%sDATA\r\n", "");
		c->st = DATA;
		break;
	case DATA:
		if (code != 354)
			return code >= 500 ? "refused-data" : "tempfail-data";
		c->wn = c->woff = 0;
		c->boff = 0;
		c->st = BODY;
		break;
	case EOD:
		lat[nlat++] = now() - c->t_eod;
		set_cmd(c, "%sQUIT\r\n", "");
		(void)flush(c);
		if (code == 250)
			return "accepted";
		return code >= 500 ? "refused-eod" : "tempfail-eod";
	default:
		return "error-closed";
	}
	return NULL;
}

static int open_conn(struct sess *s, int port, double timeout)
{
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	inet_pton(AF_INET, s->ip, &src.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	dst.sin_port = htons((unsigned short)port);
	if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
	    (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)) {
		close(fd);
		return -1;
	}
	struct conn *c = calloc(1, sizeof *c);
	if (c == NULL) {
		close(fd);
		return -1;
	}
	c->fd = fd;
	c->s = s;
	c->st = GREET;
	c->deadline = now() + timeout;
	s->tries++;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
	active++;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: mixclient PORT PLAN CONCURRENCY RETRY_S TIMEOUT_S "
		    "BUDGET_S SEED\n");
		return 2;
	}
	int port = atoi(argv[1]), conc = atoi(argv[3]);
	double retry = atof(argv[4]), timeout = atof(argv[5]), budget = atof(argv[6]);
	seed_mode = atoi(argv[7]);
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
	double t0 = now(), end = t0 + budget, first_wall = 0;
	long next = 0, done = 0, first_acc = 0;
	struct epoll_event evs[256];
	while (done < n && now() < end + timeout) {
		double t = now();
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
				while (out == NULL && (code = reply(c)) != 0) {
					if (code < 0) {
						out = "error-closed";
						break;
					}
					out = step(c, code);
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
			if (out != NULL) {
				struct sess *s = c->s;
				int first = s->tries == 1;
				if (first && strcmp(out, "accepted") == 0 && !seed_mode)
					first_acc++;
				finish(c, out);
				if (first)
					first_wall = now() - t0;
				if (s->retry_at < 0)
					s->retry_at = now() + retry;
				if (s->done)
					done++;
			}
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
	printf("], \"counts\": {");
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
	printf("}, \"accepted\": %ld}\n", acc);
	return 0;
}
