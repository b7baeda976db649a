/* The usage ledger's writer; see ledger.h. */
#include "metering/ledger.h"

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

#define LEDGER_BATCH_MAX 4096
/* Group commits under load: when a commit carried at least LEDGER_BUSY_ROWS rows, the next one
 * waits LEDGER_DELAY_US to gather more (PostgreSQL's commit_delay with commit_siblings). Each
 * commit costs about the same whatever its size (locks, WAL frames), so fewer, larger commits
 * leave more of the cores to the requests; at low load a row is committed at once. */
#define LEDGER_BUSY_ROWS 8
#define LEDGER_DELAY_US 500

struct ledger {
    int wake_fd;
    pthread_mutex_t lock;
    struct ledger_entry *head, **tail; /* Entries waiting for the next group commit. */
    int signaled; /* 1 while the thread has been woken and not yet found the queue empty. */
    struct store_ledger_row *rows;
    uint8_t *outcome;
    size_t last_batch; /* Rows written by the last call of ledger_write. */
};

struct ledger *ledger_new(int wake_fd)
{
    struct ledger *l = kn_calloc(1, sizeof(*l));

    l->wake_fd = wake_fd;
    pthread_mutex_init(&l->lock, NULL);
    l->tail = &l->head;
    l->rows = kn_malloc(LEDGER_BATCH_MAX * sizeof(*l->rows));
    l->outcome = kn_malloc(LEDGER_BATCH_MAX);
    return l;
}

void ledger_free(struct ledger *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l->rows);
    free(l->outcome);
    free(l);
}

void ledger_bill(struct ledger *l, struct ledger_entry *e)
{
    uint64_t one = 1;
    int wake;

    e->next = NULL;
    pthread_mutex_lock(&l->lock);
    *l->tail = e;
    l->tail = &e->next;
    wake = !l->signaled;
    l->signaled = 1;
    pthread_mutex_unlock(&l->lock);
    if (wake && write(l->wake_fd, &one, sizeof(one)) != sizeof(one))
        kn_fatal("cannot wake the store thread");
}

void ledger_write(struct ledger *l, struct store *s)
{
    static const unsigned backoff_ms[] = {10, 50, 200, 750};
    enum { RETRIES_AT_ONCE = 3 };

    if (l->last_batch >= LEDGER_BUSY_ROWS) {
        struct timespec delay = {0, LEDGER_DELAY_US * 1000};
        nanosleep(&delay, NULL);
    }
    l->last_batch = 0;

    for (;;) {
        struct ledger_entry *list, *e, *next;
        size_t n = 0;
        int ok = 0;

        pthread_mutex_lock(&l->lock);
        list = l->head;
        for (e = list; e != NULL && n < LEDGER_BATCH_MAX - 1; e = e->next)
            n++;
        if (list == NULL) {
            l->signaled = 0;
            pthread_mutex_unlock(&l->lock);
            return;
        }
        /* Take the first n + 1 entries (or all of them). */
        l->head = e != NULL ? e->next : NULL;
        if (e != NULL)
            e->next = NULL;
        if (l->head == NULL)
            l->tail = &l->head;
        pthread_mutex_unlock(&l->lock);

        n = 0;
        for (e = list; e != NULL; e = e->next)
            l->rows[n++] = e->row;
        l->last_batch += n;
        for (size_t attempt = 0, at_once = 0;;) {
            int r = store_ledger_add(s, l->rows, n, l->outcome);
            if (r == STORE_OK) {
                ok = 1;
                break;
            }
            if (r == STORE_RETRY && at_once++ < RETRIES_AT_ONCE)
                continue;
            fprintf(stderr, "konnect: cannot write %zu ledger rows (attempt %zu): %s\n", n,
                    attempt + 1, store_errmsg(s));
            if (attempt == sizeof(backoff_ms) / sizeof(backoff_ms[0]))
                break;
            poll(NULL, 0, (int)backoff_ms[attempt++]);
        }
        n = 0;
        for (e = list; e != NULL; e = next, n++) {
            next = e->next;
            e->done(e, ok && l->outcome[n] != STORE_LEDGER_VOIDED);
        }
    }
}
