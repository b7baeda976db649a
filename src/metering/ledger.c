/* The usage ledger's writer; see ledger.h. */
#include "metering/ledger.h"

#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "metering/spool.h"

#define LEDGER_BATCH_MAX 4096
/* Group commits under load: when a round committed at least LEDGER_BUSY_ROWS rows, the next one
 * waits LEDGER_DELAY_US to gather more. Each commit costs about the same whatever its size (locks,
 * WAL frames), so fewer, larger commits leave more of the cores to the requests; at low load a
 * row is committed at once. */
#define LEDGER_BUSY_ROWS 8
#define LEDGER_DELAY_US 500

struct ledger {
    struct ledger_entry *entries[LEDGER_BATCH_MAX]; /* The commit being gathered. */
    struct store_ledger_row rows[LEDGER_BATCH_MAX];
    uint8_t outcome[LEDGER_BATCH_MAX];
    size_t n;
    size_t round;        /* Rows committed since the last ledger_gather. */
    struct spool *spool; /* Where rows go that the store cannot take, or NULL. */
    _Atomic int down;    /* See ledger_down. */
};

void ledger_set_spool(struct ledger *l, struct spool *sp)
{
    l->spool = sp;
}

int ledger_down(const struct ledger *l)
{
    return atomic_load(&l->down);
}

void ledger_mark_up(struct ledger *l)
{
    atomic_store(&l->down, 0);
}

struct ledger *ledger_new(void)
{
    return kn_calloc(1, sizeof(struct ledger));
}

void ledger_free(struct ledger *l)
{
    free(l);
}

void ledger_gather(struct ledger *l)
{
    if (l->round >= LEDGER_BUSY_ROWS) {
        struct timespec delay = {0, LEDGER_DELAY_US * 1000};
        nanosleep(&delay, NULL);
    }
    l->round = 0;
}

void ledger_add(struct ledger *l, struct store *s, struct ledger_entry *e)
{
    e->taken_ns = kn_mono_ns();
    l->entries[l->n] = e;
    l->rows[l->n++] = e->row;
    if (l->n == LEDGER_BATCH_MAX)
        ledger_commit(l, s);
}

void ledger_commit(struct ledger *l, struct store *s)
{
    static const unsigned backoff_ms[] = {10, 50, 200, 750};
    enum { RETRIES_AT_ONCE = 3 };
    size_t n = l->n;
    int ok = 0;

    if (n == 0)
        return;
    for (size_t attempt = 0, at_once = 0;;) {
        int r = store_ledger_add(s, l->rows, n, l->outcome);
        if (r == STORE_OK) {
            ok = 1;
            break;
        }
        if (r == STORE_RETRY && at_once++ < RETRIES_AT_ONCE)
            continue;
        fprintf(stderr, "konnect: cannot write %zu ledger rows (attempt %zu): %s\n", n, attempt + 1,
                store_errmsg(s));
        /* While the store is known to be down, answers do not wait a second for it each. */
        if (attempt == sizeof(backoff_ms) / sizeof(backoff_ms[0]) || atomic_load(&l->down))
            break;
        poll(NULL, 0, (int)backoff_ms[attempt++]);
    }
    atomic_store(&l->down, !ok);
    if (!ok && l->spool != NULL) {
        if (spool_add(l->spool, l->rows, n) == 0) {
            ok = 1;
            memset(l->outcome, STORE_LEDGER_ADDED, n);
            fprintf(stderr,
                    "konnect: spooled %zu ledger rows (%llu waiting) until the store takes "
                    "them again\n",
                    n, (unsigned long long)spool_pending(l->spool));
        } else {
            fprintf(stderr,
                    "konnect: cannot spool %zu ledger rows either: their answers are not "
                    "delivered\n",
                    n);
        }
    }
    l->n = 0;
    l->round += n;
    uint64_t now = kn_mono_ns();
    for (size_t i = 0; i < n; i++) {
        l->entries[i]->committed_ns = now;
        l->entries[i]->done(l->entries[i], ok && l->outcome[i] != STORE_LEDGER_VOIDED);
    }
}
