/*
 * test_workq - the bounded pool: every job runs off the loop and comes back
 * on it, the bound refuses the excess; the elastic pool runs jobs that
 * wait side by side up to its thread bound, and its extra threads end
 * when idle.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "filter.h"
#include "log.h"
#include "t.h"
#include "workq.h"

static pthread_t loop_thread;
static int ran, done_on_loop, done_total, want_total = 20;
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
	if (done_total == want_total)
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

static void
slow_run(void *arg)
{
	(void)arg;
	usleep(300 * 1000);	/* a job that waits, like a DNS lookup */
	pthread_mutex_lock(&lock);
	ran++;
	pthread_mutex_unlock(&lock);
}

static long
ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* run n slow jobs on a pool of min..max threads: the threads alive just
 * after they were queued, and how long they all took (ms) */
static long
run_slow(int min, int max, int n, int *peak)
{
	struct workq *q = workq_new_elastic(min, max, 200, 100);
	struct workq_loop *l;
	struct timeval limit = { 20, 0 };
	int idle;
	long t0;

	ran = done_on_loop = done_total = 0;
	want_total = n;
	base = event_base_new();
	loop_thread = pthread_self();
	l = workq_loop_new(q, base);
	t0 = ms_now();
	for (int i = 0; i < n; i++)
		T_CHECK(workq_submit(l, slow_run, job_done, NULL) == 0);
	workq_counts(q, peak, &idle);
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	t0 = ms_now() - t0;
	T_CHECKF(done_total == n && done_on_loop == n && ran == n, "%d %d %d", done_total,
	    done_on_loop, ran);
	/* the extra threads end once idle (200 ms); bounded wait */
	for (int i = 0; i < 100; i++) {
		int th;

		workq_counts(q, &th, &idle);
		if (th == min)
			break;
		usleep(50 * 1000);
	}
	{
		int th;

		workq_counts(q, &th, &idle);
		T_CHECKF(th == min && idle == min, "threads %d idle %d, want %d", th, idle, min);
	}
	workq_free(q);
	workq_loop_free(l);
	event_base_free(base);
	return t0;
}

static void
test_elastic_pool_grows_for_waiting_jobs(void)
{
	int peak = 0;
	/* 20 jobs of 300 ms on 2..32 threads: side by side, not 10 rounds */
	long ms = run_slow(2, 32, 20, &peak);

	T_CHECKF(peak == 20, "threads %d after queueing 20", peak);
	T_CHECKF(ms < 1800, "20 waiting jobs took %ld ms (a fixed pool of 2: 3000)", ms);
}

static void
test_elastic_pool_stops_at_its_bound(void)
{
	int peak = 0;
	/* 8 jobs on 1..4 threads: two rounds of 300 ms, never a 5th thread */
	long ms = run_slow(1, 4, 8, &peak);

	T_CHECKF(peak == 4, "threads %d, bound 4", peak);
	T_CHECKF(ms >= 590, "8 jobs on 4 threads took %ld ms (two rounds: 600)", ms);
}

int
main(void)
{
	log_init("test_workq", false, LOG_L_ERROR);
	T_RUN(test_jobs_come_back_on_the_loop);
	T_RUN(test_elastic_pool_grows_for_waiting_jobs);
	T_RUN(test_elastic_pool_stops_at_its_bound);
	return T_DONE("workq");
}
