/*
 * mailbox - items handed to an event loop from any thread
 *
 * SYNOPSIS
 *	struct mailbox *mailbox_new(struct event_base *base, mailbox_fn deliver, void *arg);
 *	void mailbox_post(struct mailbox *m, struct mbox_link *item);
 *	struct mbox_link *mailbox_take(struct mailbox *m);
 *	void mailbox_free(struct mailbox *m);
 *
 * DESCRIPTION
 *	A locked list and an eventfd: mailbox_post() (any thread) appends an
 *	item (a struct embedding a struct mbox_link) and wakes the loop;
 *	the loop's thread then calls deliver(item, arg) for each, in the
 *	order posted. The work pool's completions and the resolver's answers
 *	come back this way. mailbox_take() removes and returns what is still
 *	queued (linked by next), for a teardown after the loop has stopped;
 *	mailbox_free() frees the mailbox, not the items.
 */
#ifndef MOAT_MAILBOX_H
#define MOAT_MAILBOX_H

#include <event2/event.h>

struct mbox_link {
	struct mbox_link *next;
};

typedef void (*mailbox_fn)(struct mbox_link *item, void *arg);

struct mailbox;

struct mailbox *mailbox_new(struct event_base *base, mailbox_fn deliver, void *arg);
void mailbox_post(struct mailbox *m, struct mbox_link *item);
struct mbox_link *mailbox_take(struct mailbox *m);
void mailbox_free(struct mailbox *m);

#endif
