/*
 * mlt_main - moat-milter: start-up (the policy file, the engine, the
 * milter socket), privileges, and libmilter's main loop
 *
 * SYNOPSIS
 *	moat-milter [-n] [-f FILE] [-l SOCKET] [-c MAXCONN] [-t SECONDS]
 *
 * DESCRIPTION
 *	-f	the policy file (moatd's; /etc/moat/moat.conf)
 *	-l	the milter socket, libmilter's syntax: inet:PORT@ADDR,
 *		inet6:PORT@ADDR or unix:PATH (default inet:8891@127.0.0.1)
 *	-c	MTA connections served at once (default 256); more get 421
 *	-t	the per-callback deadline in seconds (default 20): past it the
 *		MTA gets 451 4.4.3. Keep it below Postfix's
 *		milter_command_timeout (30 s).
 *	-n	check the policy file and exit
 *	The socket is opened before root is dropped (user of the policy
 *	file). SIGTERM and SIGINT stop libmilter (its own signal thread);
 *	then the engine stops. SIGHUP reads the policy file again for the
 *	connections that begin after it (mlt_policy.c: moatd's reload).
 *	Under systemd (Type=notify) it says READY=1 with the socket open,
 *	RELOADING=1 then READY=1 around a reload, STOPPING=1 on SIGTERM.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libmilter/mfapi.h>
#include <systemd/sd-daemon.h>

#include "conf.h"
#include "conf_reload.h"
#include "dnsbl.h"
#include "engine.h"
#include "log.h"
#include "mlt.h"

/* listener_nodelay - TCP_NODELAY on libmilter's listening socket, so the
 * MTA connections accepted from it inherit it (Linux). libmilter writes
 * a header change and the final reply as two packets; with Nagle the
 * second waits for the MTA's delayed ACK, 40 ms a message. libmilter
 * does not show its descriptor: it is the one listening socket here. */
static void
listener_nodelay(void)
{
	int one = 1;

	for (int fd = 3; fd < 1024; fd++) {
		int acc = 0;
		socklen_t l = sizeof(acc);
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) != 0 || !acc)
			continue;
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
		    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
}

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: moat-milter [-n] [-f FILE] [-l SOCKET] [-c MAXCONN] [-t SECONDS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *path = "/etc/moat/moat.conf";
	char sock[1024] = "inet:8891@127.0.0.1";
	char err[512] = "";
	bool check_only = false;
	struct conf *c;
	int opt, rc;

	while ((opt = getopt(argc, argv, "f:l:c:t:nh")) != -1) {
		switch (opt) {
		case 'f': path = optarg; break;
		case 'l': snprintf(sock, sizeof(sock), "%s", optarg); break;
		case 'c': {
			long v = strtol(optarg, NULL, 10);

			if (v < 1 || v > 100000)
				usage();
			mlt_opts.max_conns = (unsigned)v;
			break;
		}
		case 't': {
			double v = strtod(optarg, NULL);

			if (!(v >= 0.1 && v <= 3600))
				usage();
			mlt_opts.deadline_ms = (unsigned)(v * 1000);
			break;
		}
		case 'n': check_only = true; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	log_init("moat-milter", false, LOG_L_INFO);
	c = conf_load_report(path);
	if (c == NULL)
		return 1;
	if (check_only) {
		engine_startup_checks(c, false, true);
		printf("%s: configuration OK\n", path);
		conf_unref(c);
		return 0;
	}
	log_init("moat-milter", c->log_dest == CONF_LOG_SYSLOG, (enum log_level)c->log_level);
	signal(SIGPIPE, SIG_IGN);
	mlt_policy_init(path, c);
	if (smfi_setconn(sock) != MI_SUCCESS || smfi_register(mlt_desc) != MI_SUCCESS)
		fatal("milter socket %s: cannot set up", sock);
	/* a connection idle longer than this is the MTA's problem, not ours */
	smfi_settimeout(60);
	smfi_setbacklog(128);
	if (smfi_opensocket(true) != MI_SUCCESS)
		fatal("milter socket %s: cannot open", sock);
	listener_nodelay();
	{
		/* libmilter's own thread takes these with sigwait() (SIGHUP
		 * stays in ours, mlt_policy.c): every thread started before
		 * smfi_main (the engine, the resolver, the pool) must have
		 * them blocked */
		sigset_t set;

		sigemptyset(&set);
		sigaddset(&set, SIGTERM);
		sigaddset(&set, SIGINT);
		sigaddset(&set, SIGHUP);
		pthread_sigmask(SIG_BLOCK, &set, NULL);
	}
	if (mlt_engine_start(c, err, sizeof(err)) != 0)
		fatal("%s", err);
	if (c->startup_checks)
		engine_startup_checks(c, false, false);
	if (engine_drop_privileges(c, "moat-milter", err, sizeof(err)) != 0)
		fatal("%s", err);
	log_msg(LOG_L_INFO, 0, "ready socket=%s max-connections=%u deadline-ms=%u resolver=%s "
	    "dnsbl-zones=%d", sock, mlt_opts.max_conns, mlt_opts.deadline_ms,
	    dns_mode_name(c->resolver.mode), c->dnsbl ? c->dnsbl->n : 0);
	sd_notify(0, "READY=1");	/* systemd: socket open, policy loaded */
	rc = smfi_main();
	log_msg(LOG_L_INFO, 0, "stopping");
	mlt_engine_stop();
	mlt_policy_done();
	conf_unref(c);
	log_msg(LOG_L_INFO, 0, "stopped");
	return rc == MI_SUCCESS ? 0 : 1;
}
