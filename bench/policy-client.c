/*
 * policy-client - a bounded load client for Postfix policy servers
 * (bench/policy): N connections on 127.0.0.1:PORT, each sending RCPT-state
 * requests one at a time (as Postfix's smtpd does) until TOTAL requests
 * were answered in all or SECONDS passed.
 *
 *	policy-client PORT CONNS TOTAL SECONDS SEED
 *
 * Request i is about triplet t = i mod 2000: client 10.S.(t mod 512)/16.x
 * (S from the seed), sender s(t mod 97)@bench.test, recipient
 * r(t mod 1000)@example.org; with its own instance and client_port, so
 * every request is a new SMTP client session and transaction for the
 * server, while the greylist database stays at 2000 triplets a run. Prints "requests=N seconds=S rps=R
 * actions=A:n,..." (the first word of each action, counted).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 1000

struct pc {
	int fd;
	char in[4096];
	size_t inlen;
};

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char kinds[8][24];
static unsigned long counts[8];
static int nkinds;

static void
count_action(const char *a, size_t n)
{
	char w[24];
	size_t k = 0;

	while (k < n && k + 1 < sizeof(w) && a[k] != ' ' && a[k] != '\n') {
		w[k] = a[k];
		k++;
	}
	w[k] = 0;
	for (int i = 0; i < nkinds; i++)
		if (strcmp(kinds[i], w) == 0) {
			counts[i]++;
			return;
		}
	if (nkinds < 8) {
		snprintf(kinds[nkinds], sizeof(kinds[0]), "%s", w);
		counts[nkinds++] = 1;
	}
}

static int
send_req(int fd, unsigned long i, unsigned seed)
{
	char buf[1024];
	unsigned long t = i % 2000;
	unsigned c = (unsigned)(t % 512);
	int n = snprintf(buf, sizeof(buf),
	    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
	    "client_address=10.%u.%u.%u\nclient_name=unknown\nreverse_client_name=unknown\n"
	    "client_port=%lu\nhelo_name=mx%u.bench.test\nsender=s%lu@bench.test\n"
	    "recipient=r%lu@example.org\nrecipient_count=0\nqueue_id=\n"
	    "instance=%x.%lx\nsize=0\nsasl_method=\nsasl_username=\nsasl_sender=\n"
	    "ccert_subject=\nccert_issuer=\nccert_fingerprint=\nencryption_protocol=\n"
	    "encryption_cipher=\nencryption_keysize=0\netrn_domain=\nstress=\n\n",
	    seed % 200, c / 16, c % 16 + 1, 1024 + i % 60000, c, t % 97, t % 1000, seed, i);

	return write(fd, buf, (size_t)n) == n ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static struct pc pcs[MAXC];
	static struct pollfd pfd[MAXC];
	struct sockaddr_in sin;
	int conns;
	unsigned long total, sent = 0, done = 0;
	double secs, t0;
	unsigned seed;

	if (argc != 6)
		return fprintf(stderr, "usage: policy-client PORT CONNS TOTAL SECONDS SEED\n"), 2;
	conns = atoi(argv[2]);
	total = strtoul(argv[3], NULL, 10);
	secs = atof(argv[4]);
	seed = (unsigned)strtoul(argv[5], NULL, 10);
	if (conns < 1 || conns > MAXC)
		return 2;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)atoi(argv[1]));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	t0 = now();
	for (int i = 0; i < conns; i++) {
		int one = 1;

		pcs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (pcs[i].fd < 0 || connect(pcs[i].fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
			return perror("connect"), 1;
		setsockopt(pcs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pfd[i].fd = pcs[i].fd;
		pfd[i].events = POLLIN;
		if (sent < total && send_req(pcs[i].fd, sent, seed) == 0)
			sent++;
	}
	while (done < sent && now() - t0 < secs) {
		int r = poll(pfd, (nfds_t)conns, 1000);

		if (r < 0 && errno != EINTR)
			return perror("poll"), 1;
		for (int i = 0; i < conns && r > 0; i++) {
			struct pc *p = &pcs[i];
			ssize_t n;
			char *end;

			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(p->fd, p->in + p->inlen, sizeof(p->in) - p->inlen - 1);
			if (n <= 0) {
				fprintf(stderr, "connection %d closed by the server\n", i);
				return 1;
			}
			p->inlen += (size_t)n;
			p->in[p->inlen] = 0;
			while ((end = strstr(p->in, "\n\n")) != NULL) {
				size_t used = (size_t)(end - p->in) + 2;

				if (strncmp(p->in, "action=", 7) == 0)
					count_action(p->in + 7, used - 7);
				memmove(p->in, p->in + used, p->inlen - used + 1);
				p->inlen -= used;
				done++;
				if (sent < total && now() - t0 < secs && send_req(p->fd, sent, seed) == 0)
					sent++;
			}
		}
	}
	{
		double el = now() - t0;

		printf("requests=%lu seconds=%.3f rps=%.0f actions=", done, el, (double)done / el);
		for (int i = 0; i < nkinds; i++)
			printf("%s%s:%lu", i ? "," : "", kinds[i], counts[i]);
		printf("\n");
	}
	for (int i = 0; i < conns; i++)
		close(pcs[i].fd);
	return 0;
}
