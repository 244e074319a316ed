/*
 * workq - bounded, elastic thread pool with completions on the submitting loop
 * (see workq.h)
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"
#include "mailbox.h"
#include "workq.h"
#include "xalloc.h"

struct workq_job {
	struct mbox_link link;		/* first: the loop's mailbox */
	struct workq_job *next;		/* the pool's queue */
	struct workq_loop *loop;
	workq_fn run, done;
	void *arg;
};

struct workq {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a job waits, or stop */
	pthread_cond_t gone;		/* a thread ended (workq_free waits) */
	struct workq_job *head, *tail;	/* waiting to run */
	int njobs, max_jobs;		/* waiting + running */
	int nwaiting;			/* jobs queued, not yet taken */
	bool stop;
	int nthreads, nidle;		/* alive; of them, waiting for a job */
	int nbusy;			/* of them, running a job */
	int min_threads, max_threads;
	int idle_ms;			/* a thread past min_threads ends after this idle */
	bool reap_set;
	pthread_t reap;			/* the last thread that ended, to be joined */
};

struct workq_loop {
	struct workq *q;
	struct mailbox *mbox;		/* finished jobs, to their loop */
};

/* workq_exit - with the lock held: this thread ends. It takes the place
 * of the last ended thread, which it joins, so at most one ended thread
 * is ever left unjoined (workq_free joins it). */
static void *
workq_exit(struct workq *q)
{
	pthread_t prev = q->reap;
	bool join = q->reap_set;

	q->reap = pthread_self();
	q->reap_set = true;
	q->nthreads--;
	pthread_cond_broadcast(&q->gone);
	pthread_mutex_unlock(&q->lock);
	if (join)
		pthread_join(prev, NULL);
	return NULL;
}

/* workq_thread - take jobs, run them, hand them to their loop; a thread
 * beyond min_threads that found no job for idle_ms ends */
static void *
workq_thread(void *arg)
{
	struct workq *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct workq_job *j;

		q->nidle++;
		while (q->head == NULL && !q->stop) {
			if (q->nthreads > q->min_threads && q->idle_ms > 0) {
				struct timespec dl;

				mono_deadline(&dl, (unsigned)q->idle_ms);
				if (pthread_cond_timedwait(&q->cond, &q->lock, &dl) == ETIMEDOUT &&
				    q->head == NULL && !q->stop && q->nthreads > q->min_threads) {
					q->nidle--;
					return workq_exit(q);
				}
			} else
				pthread_cond_wait(&q->cond, &q->lock);
		}
		q->nidle--;
		if (q->head == NULL && q->stop)
			return workq_exit(q);
		j = q->head;
		q->head = j->next;
		if (q->head == NULL)
			q->tail = NULL;
		q->nwaiting--;
		q->nbusy++;
		pthread_mutex_unlock(&q->lock);

		j->run(j->arg);

		mailbox_post(j->loop->mbox, &j->link);
		pthread_mutex_lock(&q->lock);
		q->nbusy--;
	}
}

/* workq_spawn - with the lock held: one more thread (none when the
 * system refuses one: the jobs wait for the threads there are) */
static void
workq_spawn(struct workq *q)
{
	pthread_t t;
	pthread_attr_t a;

	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_JOINABLE);
	if (pthread_create(&t, &a, workq_thread, q) == 0)
		q->nthreads++;
	else if (q->nthreads == 0)
		fatal("pthread_create: %s", strerror(errno));
	pthread_attr_destroy(&a);
}

/* workq_new_elastic - min_threads at once, more as jobs wait */
struct workq *
workq_new_elastic(int min_threads, int max_threads, int idle_ms, int max_jobs)
{
	struct workq *q = xcalloc(1, sizeof(*q));
	pthread_condattr_t ca;

	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&q->gone, NULL);
	q->max_jobs = max_jobs;
	q->min_threads = min_threads < 1 ? 1 : min_threads;
	q->max_threads = max_threads < q->min_threads ? q->min_threads : max_threads;
	q->idle_ms = idle_ms;
	pthread_mutex_lock(&q->lock);
	for (int i = 0; i < q->min_threads; i++)
		workq_spawn(q);
	pthread_mutex_unlock(&q->lock);
	return q;
}

/* workq_new - a fixed pool */
struct workq *
workq_new(int threads, int max_jobs)
{
	return workq_new_elastic(threads, threads, 0, max_jobs);
}

/* workq_counts - threads alive and, of them, idle */
void
workq_counts(struct workq *q, int *threads, int *idle)
{
	pthread_mutex_lock(&q->lock);
	*threads = q->nthreads;
	*idle = q->nidle;
	pthread_mutex_unlock(&q->lock);
}

/* workq_loop_cb - a job finished: its done() here, on the loop */
static void
workq_loop_cb(struct mbox_link *item, void *arg)
{
	struct workq_loop *l = arg;
	struct workq_job *j = (struct workq_job *)(void *)item;

	pthread_mutex_lock(&l->q->lock);
	l->q->njobs--;
	pthread_mutex_unlock(&l->q->lock);
	j->done(j->arg);
	free(j);
}

/* workq_loop_new - completions for this event loop */
struct workq_loop *
workq_loop_new(struct workq *q, struct event_base *base)
{
	struct workq_loop *l = xcalloc(1, sizeof(*l));

	l->q = q;
	l->mbox = mailbox_new(base, workq_loop_cb, l);
	return l;
}

/* workq_submit - queue a job; -1 when the pool is full */
int
workq_submit(struct workq_loop *l, workq_fn run, workq_fn done, void *arg)
{
	struct workq *q = l->q;
	struct workq_job *j;

	pthread_mutex_lock(&q->lock);
	if (q->stop || q->njobs >= q->max_jobs) {
		pthread_mutex_unlock(&q->lock);
		return -1;
	}
	q->njobs++;
	pthread_mutex_unlock(&q->lock);
	j = xcalloc(1, sizeof(*j));
	j->loop = l;
	j->run = run;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&q->lock);
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	q->nwaiting++;
	/* every job waiting has a thread that is free to take it (idle or
	 * still starting), or a new one: a job that blocks (DNS) never holds
	 * up the next */
	if (q->nwaiting > q->nthreads - q->nbusy && q->nthreads < q->max_threads)
		workq_spawn(q);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* workq_loop_free - after workq_free: drop what is left */
void
workq_loop_free(struct workq_loop *l)
{
	struct mbox_link *it, *next;

	if (l == NULL)
		return;
	for (it = mailbox_take(l->mbox); it; it = next) {
		struct workq_job *j = (struct workq_job *)(void *)it;

		next = it->next;
		j->done(j->arg);	/* done() frees its arg; the session is gone */
		free(j);
	}
	mailbox_free(l->mbox);
	free(l);
}

/* workq_free - finish queued jobs, join the threads */
void
workq_free(struct workq *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	while (q->nthreads > 0)
		pthread_cond_wait(&q->gone, &q->lock);
	pthread_mutex_unlock(&q->lock);
	/* each ended thread joined the one before it: the last joins all */
	if (q->reap_set)
		pthread_join(q->reap, NULL);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
	pthread_cond_destroy(&q->gone);
	free(q);
}
