/*
 * mlt_policy - moat-milter's current policy file, and its reload on SIGHUP
 *
 * SYNOPSIS
 *	void mlt_policy_init(const char *path, struct conf *c);
 *	struct conf *mlt_policy_get(void);
 *	void mlt_policy_done(void);
 *	int sigwait(const sigset_t *set, int *sig);
 *
 * DESCRIPTION
 *	mlt_policy_init() makes c (a reference is taken) the current policy,
 *	read from path. mlt_policy_get() returns a new reference to the
 *	current policy (owned: the caller drops it with conf_unref()). A
 *	connection takes one at connect and keeps it for its whole life
 *	(mlt_cb.c hands a reference of its own to the engine with the
 *	CONNECT request), so a reload never changes the rules under a
 *	connection in flight, and an old policy is freed when its last
 *	connection closes. mlt_policy_done() drops the current one at exit.
 *
 *	A reload is moatd's: the file is read again; a file with errors is
 *	refused, every error logged as FILE:LINE:COL, and the running policy
 *	stays; otherwise the new one is swapped in for new connections, the
 *	log level follows it, and what cannot change without a restart is
 *	named in a warning, in moatd's words. Nothing engine-wide is rebuilt,
 *	as in moatd: the resolver, the DKIM verifier, the public suffix list
 *	and the greylist handle and store are made at start from the first
 *	file; the DNSBL zones, the rules, the timeouts and every per-check
 *	setting live in the policy itself and follow it.
 *
 * SIGHUP
 *	libmilter's smfi_main() starts a thread that takes SIGHUP, SIGTERM
 *	and SIGINT with sigwait() (every other thread has them blocked,
 *	mlt_main.c) and stops the milter on any of them. The sigwait()
 *	defined here stands in front of libc's: libmilter 8.17
 *	(libmilter.so.1.0.1, Debian 12) calls it through its PLT (an
 *	undefined dynamic symbol, "objdump -T ... | grep sigwait"), and the
 *	dynamic linker binds such a call to the executable's definition
 *	before any library's; ld exports the definition because libmilter,
 *	a library of the link, refers to it. (Under ASan the next definition
 *	is the sanitizer's interceptor, which calls libc's.) The real
 *	sigwait() is found with dlsym(RTLD_NEXT), as filters/dkim.c does for
 *	d2i_PUBKEY_bio(). A wait whose set holds SIGHUP loops here: SIGHUP
 *	reloads, then waits again; any other signal, or an error, goes back
 *	to libmilter, which keeps its own handling of SIGTERM (stop) and
 *	SIGINT (abort). This is deterministic: SIGHUP is blocked in every
 *	thread, so it stays pending until this thread takes it, and no
 *	asynchronous handler runs.
 *
 *	The reload runs on that signal thread, which holds no lock of
 *	libmilter's or ours while it waits. conf_load() reads files and may
 *	take a while; done there, it neither stalls the engine's event loop
 *	nor a callback. The swap itself is a pointer change under a mutex
 *	that nothing holds for longer than taking a reference, so it cannot
 *	deadlock with the callbacks or the engine (which never take it: the
 *	engine's per-connection policy comes with the CONNECT request). A
 *	SIGTERM that arrives during a reload stays pending and is taken by
 *	the next wait.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "conf.h"
#include "conf_reload.h"
#include "log.h"
#include "mlt.h"
#include "xalloc.h"

static struct {
	pthread_mutex_t lock;
	struct conf *cur;		/* under lock */
	pthread_mutex_t reload_lock;	/* one reload at a time, none after done */
	char *path;			/* under reload_lock once armed */
	bool armed;			/* atomic: SIGHUP reloads */
} pol = { .lock = PTHREAD_MUTEX_INITIALIZER, .reload_lock = PTHREAD_MUTEX_INITIALIZER };

static int (*real_sigwait)(const sigset_t *, int *);
static pthread_once_t sigwait_once = PTHREAD_ONCE_INIT;

/* mlt_policy_init - the first policy, read from path; a reference is taken */
void
mlt_policy_init(const char *path, struct conf *c)
{
	pthread_mutex_lock(&pol.lock);
	pol.cur = conf_ref(c);
	pthread_mutex_unlock(&pol.lock);
	pol.path = xstrdup(path);
	__atomic_store_n(&pol.armed, true, __ATOMIC_RELEASE);
}

/* mlt_policy_get - a reference to the current policy (owned) */
struct conf *
mlt_policy_get(void)
{
	return conf_current(&pol.lock, &pol.cur);
}

/* mlt_policy_done - at exit, once libmilter has stopped (a reload still
 * running on its signal thread, after a failed smfi_main, ends first) */
void
mlt_policy_done(void)
{
	struct conf *c;

	pthread_mutex_lock(&pol.reload_lock);
	__atomic_store_n(&pol.armed, false, __ATOMIC_RELEASE);
	pthread_mutex_lock(&pol.lock);
	c = pol.cur;
	pol.cur = NULL;
	pthread_mutex_unlock(&pol.lock);
	conf_unref(c);
	free(pol.path);
	pol.path = NULL;
	pthread_mutex_unlock(&pol.reload_lock);
}

/* reload - the file again: swapped in, or refused with its errors */
static void
reload(void)
{
	pthread_mutex_lock(&pol.reload_lock);
	if (!__atomic_load_n(&pol.armed, __ATOMIC_ACQUIRE)) {
		pthread_mutex_unlock(&pol.reload_lock);
		return;		/* stopping */
	}
	/* systemd (Type=notify): reloading, then ready again */
	{
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		    (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000);
	}
	/* the listener is -l, not in the file: nothing more to warn about */
	(void)conf_reload(pol.path, &pol.lock, &pol.cur, NULL, NULL);
	sd_notify(0, "READY=1");
	pthread_mutex_unlock(&pol.reload_lock);
}

/* sigwait_init - libc's sigwait(), once */
static void
sigwait_init(void)
{
	real_sigwait = (int (*)(const sigset_t *, int *))dlsym(RTLD_NEXT, "sigwait");
}

/* sigwait - libc's, except that SIGHUP reloads the policy instead of
 * being returned (see SIGHUP above) */
int
sigwait(const sigset_t *set, int *sig)
{
	int rc;

	pthread_once(&sigwait_once, sigwait_init);
	if (real_sigwait == NULL)
		panic("sigwait: libc's not found: %s", dlerror());
	if (sigismember(set, SIGHUP) != 1 || !__atomic_load_n(&pol.armed, __ATOMIC_ACQUIRE))
		return real_sigwait(set, sig);
	for (;;) {
		rc = real_sigwait(set, sig);
		if (rc != 0 || *sig != SIGHUP || !__atomic_load_n(&pol.armed, __ATOMIC_ACQUIRE)) {
			if (rc == 0 && (*sig == SIGTERM || *sig == SIGINT))
				sd_notify(0, "STOPPING=1");	/* libmilter stops now */
			return rc;
		}
		reload();
	}
}
