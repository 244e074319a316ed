/*
 * mailbox - items handed to an event loop from any thread (see mailbox.h)
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
#include "xalloc.h"

struct mailbox {
	int efd;
	struct event *ev;
	pthread_mutex_t lock;
	struct mbox_link *head, *tail;	/* under lock */
	mailbox_fn deliver;
	void *arg;
};

/* mailbox_cb - the eventfd fired: deliver everything posted so far */
static void
mailbox_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mailbox *m = arg;
	struct mbox_link *it, *next;
	uint64_t n;
	ssize_t r;

	(void)what;
	r = read(fd, &n, sizeof(n));
	(void)r;
	for (it = mailbox_take(m); it; it = next) {
		next = it->next;
		m->deliver(it, m->arg);
	}
}

struct mailbox *
mailbox_new(struct event_base *base, mailbox_fn deliver, void *arg)
{
	struct mailbox *m = xcalloc(1, sizeof(*m));

	m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (m->efd < 0)
		fatal("eventfd: %s", strerror(errno));
	pthread_mutex_init(&m->lock, NULL);
	m->deliver = deliver;
	m->arg = arg;
	m->ev = event_new(base, m->efd, EV_READ | EV_PERSIST, mailbox_cb, m);
	event_add(m->ev, NULL);
	return m;
}

void
mailbox_post(struct mailbox *m, struct mbox_link *item)
{
	uint64_t one = 1;
	ssize_t w;

	bool was_empty;

	item->next = NULL;
	pthread_mutex_lock(&m->lock);
	was_empty = m->head == NULL;
	if (m->tail)
		m->tail->next = item;
	else
		m->head = item;
	m->tail = item;
	pthread_mutex_unlock(&m->lock);
	/* a list that held items has its wake-up on the way already: the
	 * loop reads the eventfd before it takes the list, so it takes this
	 * item too (one write(2) and one wake-up for a burst, not one each) */
	if (!was_empty)
		return;
	w = write(m->efd, &one, sizeof(one));
	(void)w;
}

struct mbox_link *
mailbox_take(struct mailbox *m)
{
	struct mbox_link *it;

	pthread_mutex_lock(&m->lock);
	it = m->head;
	m->head = m->tail = NULL;
	pthread_mutex_unlock(&m->lock);
	return it;
}

void
mailbox_free(struct mailbox *m)
{
	if (m == NULL)
		return;
	event_free(m->ev);
	close(m->efd);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
