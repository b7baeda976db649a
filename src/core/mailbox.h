/* A mailbox: the one way threads of a server hand work to each other. Any thread puts messages
 * in; one receiving thread takes them out in the order they were put. A receiver either blocks
 * on the mailbox (the dashboard's lanes) or polls its eventfd among other descriptors (the store
 * thread), which is written only when the receiver may be asleep, so a busy receiver costs its
 * senders no system call. A mailbox may be bounded: a put beyond the bound is refused, so the
 * sender can answer "busy" at once instead of queueing without end. A closed mailbox refuses new
 * messages, and its receiver still takes what was put before.
 *
 * A message is a struct mailbox_msg placed in the sender's own structure; the mailbox never
 * allocates, copies or frees. */
#ifndef KN_CORE_MAILBOX_H
#define KN_CORE_MAILBOX_H

#include <pthread.h>
#include <stddef.h>
#include <time.h>

struct mailbox_msg {
    struct mailbox_msg *next;
    int kind; /* What the message is, for a receiver that takes more than one kind. */
};

struct mailbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct mailbox_msg *head, **tail;
    size_t count, cap;
    int fd;       /* The eventfd a polling receiver waits on, or -1. */
    int signaled; /* 1 from a write of fd until the receiver finds the mailbox empty. */
    int closed;
};

enum { MAILBOX_OK = 0, MAILBOX_FULL = -1, MAILBOX_CLOSED = -2 };

/* Makes an empty mailbox holding at most cap messages (0: no bound). with_fd gives it an eventfd
 * for a receiver that polls (mailbox_fd). Returns 0, or -1 with errno when the eventfd cannot be
 * made. */
int mailbox_init(struct mailbox *mb, size_t cap, int with_fd);

/* Frees what mailbox_init made. The mailbox should be empty. */
void mailbox_dispose(struct mailbox *mb);

/* Puts m in. Returns MAILBOX_OK, MAILBOX_FULL when the bound is reached or MAILBOX_CLOSED; a
 * refused message still belongs to the sender. Never blocks on I/O. */
int mailbox_put(struct mailbox *mb, struct mailbox_msg *m);

/* For a polling receiver: takes every message in, oldest first, as a list linked by next (NULL
 * when empty). Once it returns NULL, the next put writes the eventfd again. */
struct mailbox_msg *mailbox_take_all(struct mailbox *mb);

/* For a polling receiver: the eventfd that becomes readable when messages arrive, and the call
 * that empties it after poll reported it (before mailbox_take_all). */
int mailbox_fd(const struct mailbox *mb);
void mailbox_clear_fd(struct mailbox *mb);

/* For a blocking receiver: takes the oldest message, waiting for one until the CLOCK_REALTIME
 * time deadline (NULL: without end). Returns NULL when the deadline passed or the mailbox is
 * closed and empty; mailbox_closed says which. */
struct mailbox_msg *mailbox_wait(struct mailbox *mb, const struct timespec *deadline);

/* Refuses every later put and wakes a blocked receiver. */
void mailbox_close(struct mailbox *mb);

/* Returns 1 once mailbox_close was called. */
int mailbox_closed(struct mailbox *mb);

#endif
