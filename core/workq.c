/*
 * workq - bounded thread pool with completions on the submitting loop
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
	pthread_cond_t cond;
	struct workq_job *head, *tail;	/* waiting to run */
	int njobs, max_jobs;		/* waiting + running */
	bool stop;
	int nthreads;
	pthread_t *threads;
};

struct workq_loop {
	struct workq *q;
	struct mailbox *mbox;		/* finished jobs, to their loop */
};

/* workq_thread - take jobs, run them, hand them to their loop */
static void *
workq_thread(void *arg)
{
	struct workq *q = arg;

	for (;;) {
		struct workq_job *j;

		pthread_mutex_lock(&q->lock);
		while (q->head == NULL && !q->stop)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->head == NULL && q->stop) {
			pthread_mutex_unlock(&q->lock);
			return NULL;
		}
		j = q->head;
		q->head = j->next;
		if (q->head == NULL)
			q->tail = NULL;
		pthread_mutex_unlock(&q->lock);

		j->run(j->arg);

		mailbox_post(j->loop->mbox, &j->link);
	}
}

/* workq_new - start the threads */
struct workq *
workq_new(int threads, int max_jobs)
{
	struct workq *q = xcalloc(1, sizeof(*q));

	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->max_jobs = max_jobs;
	q->nthreads = threads;
	q->threads = xcalloc((size_t)threads, sizeof(pthread_t));
	for (int i = 0; i < threads; i++)
		if (pthread_create(&q->threads[i], NULL, workq_thread, q) != 0)
			fatal("pthread_create: %s", strerror(errno));
	return q;
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
	pthread_mutex_unlock(&q->lock);
	for (int i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	free(q->threads);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
	free(q);
}
