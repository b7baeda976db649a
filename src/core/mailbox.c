/* A mailbox between threads; see mailbox.h. */
#include "core/mailbox.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/util.h"

int mailbox_init(struct mailbox *mb, size_t cap, int with_fd)
{
    mb->head = NULL;
    mb->tail = &mb->head;
    mb->count = 0;
    mb->cap = cap;
    mb->signaled = 0;
    mb->closed = 0;
    mb->fd = -1;
    if (with_fd && (mb->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return -1;
    pthread_mutex_init(&mb->lock, NULL);
    pthread_cond_init(&mb->cond, NULL);
    return 0;
}

void mailbox_dispose(struct mailbox *mb)
{
    if (mb->fd >= 0)
        close(mb->fd);
    mb->fd = -1;
    pthread_mutex_destroy(&mb->lock);
    pthread_cond_destroy(&mb->cond);
}

int mailbox_put(struct mailbox *mb, struct mailbox_msg *m)
{
    uint64_t one = 1;
    int wake;

    m->next = NULL;
    pthread_mutex_lock(&mb->lock);
    if (mb->closed || (mb->cap != 0 && mb->count >= mb->cap)) {
        int r = mb->closed ? MAILBOX_CLOSED : MAILBOX_FULL;
        pthread_mutex_unlock(&mb->lock);
        return r;
    }
    *mb->tail = m;
    mb->tail = &m->next;
    mb->count++;
    wake = !mb->signaled;
    mb->signaled = 1;
    if (mb->fd < 0)
        pthread_cond_signal(&mb->cond);
    pthread_mutex_unlock(&mb->lock);
    /* Written outside the lock: the receiver, woken, takes the lock at once. */
    if (wake && mb->fd >= 0 && write(mb->fd, &one, sizeof(one)) != sizeof(one))
        kn_fatal("cannot wake a thread: %s", strerror(errno));
    return MAILBOX_OK;
}

struct mailbox_msg *mailbox_take_all(struct mailbox *mb)
{
    struct mailbox_msg *list;

    pthread_mutex_lock(&mb->lock);
    list = mb->head;
    mb->head = NULL;
    mb->tail = &mb->head;
    mb->count = 0;
    if (list == NULL)
        mb->signaled = 0;
    pthread_mutex_unlock(&mb->lock);
    return list;
}

int mailbox_fd(const struct mailbox *mb)
{
    return mb->fd;
}

void mailbox_clear_fd(struct mailbox *mb)
{
    uint64_t v;

    if (read(mb->fd, &v, sizeof(v)) < 0) {
        /* Nothing to read: the counter was emptied already. */
    }
}

struct mailbox_msg *mailbox_wait(struct mailbox *mb, const struct timespec *deadline)
{
    struct mailbox_msg *m;

    pthread_mutex_lock(&mb->lock);
    while (mb->head == NULL && !mb->closed) {
        if (deadline == NULL)
            pthread_cond_wait(&mb->cond, &mb->lock);
        else if (pthread_cond_timedwait(&mb->cond, &mb->lock, deadline) == ETIMEDOUT &&
                 mb->head == NULL)
            break;
    }
    if ((m = mb->head) != NULL) {
        if ((mb->head = m->next) == NULL)
            mb->tail = &mb->head;
        mb->count--;
        m->next = NULL;
    }
    if (mb->head == NULL)
        mb->signaled = 0;
    pthread_mutex_unlock(&mb->lock);
    return m;
}

void mailbox_close(struct mailbox *mb)
{
    uint64_t one = 1;

    pthread_mutex_lock(&mb->lock);
    mb->closed = 1;
    pthread_cond_broadcast(&mb->cond);
    pthread_mutex_unlock(&mb->lock);
    if (mb->fd >= 0 && write(mb->fd, &one, sizeof(one)) != sizeof(one))
        kn_fatal("cannot wake a thread: %s", strerror(errno));
}

int mailbox_closed(struct mailbox *mb)
{
    int closed;

    pthread_mutex_lock(&mb->lock);
    closed = mb->closed;
    pthread_mutex_unlock(&mb->lock);
    return closed;
}
