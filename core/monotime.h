/*
 * monotime - a deadline on CLOCK_MONOTONIC, for pthread_cond_timedwait()
 * (with a condition variable set to that clock) and futex waits
 *
 * SYNOPSIS
 *	void mono_deadline(struct timespec *ts, unsigned ms);
 *	uint64_t mono_ms(void);
 *
 * DESCRIPTION
 *	mono_deadline() sets *ts to now plus ms milliseconds. mono_ms() is
 *	CLOCK_MONOTONIC in milliseconds.
 */
#ifndef MOAT_MONOTIME_H
#define MOAT_MONOTIME_H

#include <stdint.h>
#include <time.h>

static inline void
mono_deadline(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static inline uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
