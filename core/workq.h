/*
 * workq - a small bounded pool of threads for calls that block, with
 * completions delivered back on the event loop that asked
 *
 * SYNOPSIS
 *	struct workq *workq_new(int threads, int max_jobs);
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
 */
#ifndef MOAT_WORKQ_H
#define MOAT_WORKQ_H

#include <event2/event.h>

struct workq;
struct workq_loop;
typedef void (*workq_fn)(void *arg);

struct workq *workq_new(int threads, int max_jobs);
struct workq_loop *workq_loop_new(struct workq *q, struct event_base *base);
int workq_submit(struct workq_loop *l, workq_fn run, workq_fn done, void *arg);
void workq_loop_free(struct workq_loop *l);
void workq_free(struct workq *q);

#endif
