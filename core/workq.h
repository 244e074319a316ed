/*
 * workq - a bounded pool of threads for calls that block, with
 * completions delivered back on the event loop that asked
 *
 * SYNOPSIS
 *	struct workq *workq_new(int threads, int max_jobs);
struct workq *workq_new_elastic(int min_threads, int max_threads, int idle_ms, int max_jobs);
void workq_counts(struct workq *q, int *threads, int *idle);
 *	struct workq *workq_new_elastic(int min_threads, int max_threads,
 *	                                int idle_ms, int max_jobs);
 *	void workq_counts(struct workq *q, int *threads, int *idle);
 *	struct workq_loop *workq_loop_new(struct workq *q, struct event_base *base);
 *	int workq_submit(struct workq_loop *l, workq_fn run, workq_fn done, void *arg);
 *	void workq_loop_free(struct workq_loop *l);
 *	void workq_free(struct workq *q);
 *
 * DESCRIPTION
 *	run(arg) is called on one of the pool's threads; then done(arg) is
 *	called on the thread of the event loop the job was submitted from
 *	(the loop learns of it through an eventfd). A job owns its arg until
 *	done() returns. workq_submit() returns -1 when max_jobs are already
 *	queued or running: the caller treats that like a failed lookup, so
 *	a flood never grows memory. No event loop ever waits on run().
 *	workq_loop_free() must come after the pool has no job of that loop
 *	(workq_free() first, which finishes and joins the threads; the done
 *	callbacks of jobs finished by then are dropped with their args freed
 *	by the caller's own bookkeeping).
 *
 *	workq_new() keeps a fixed number of threads. workq_new_elastic()
 *	starts min_threads and adds one whenever a job is queued while no
 *	thread is free to take it, up to max_threads: a job that waits (on
 *	DNS, say) never holds up the next one until that bound. A thread
 *	beyond min_threads that found no job for idle_ms ends. When the
 *	system refuses a new thread the job waits for one there is.
 *	workq_counts() tells the threads alive and idle (tests, status).
 */
#ifndef MOAT_WORKQ_H
#define MOAT_WORKQ_H

#include <event2/event.h>

struct workq;
struct workq_loop;
typedef void (*workq_fn)(void *arg);

struct workq *workq_new(int threads, int max_jobs);
struct workq *workq_new_elastic(int min_threads, int max_threads, int idle_ms, int max_jobs);
void workq_counts(struct workq *q, int *threads, int *idle);
struct workq_loop *workq_loop_new(struct workq *q, struct event_base *base);
int workq_submit(struct workq_loop *l, workq_fn run, workq_fn done, void *arg);
void workq_loop_free(struct workq_loop *l);
void workq_free(struct workq *q);

#endif
