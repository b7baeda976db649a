/* Waiting for a change to be in force on every live server; see propagation.h. */
#include "keys/propagation.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* How often the nodes table is read while waiting. */
#define POLL_MS 10

struct look {
    int64_t key_seq, account_seq, plans_version;
    const char *self;
    int others, local;
};

/* The live servers of one reading of the nodes table. */
struct seen_nodes {
    struct store_node *n;
    size_t count, cap;
};

static int keep_live(void *ud, const struct store_node *n)
{
    struct seen_nodes *v = ud;
    if (n->age_ms >= PROPAGATION_LIVE_MS)
        return 0;
    if (v->count == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 16;
        v->n = kn_realloc(v->n, v->cap * sizeof(*v->n));
    }
    v->n[v->count++] = *n;
    return 0;
}

/* Which of the live servers have applied the changes up to l's. The logs' newest changes are read
 * after the nodes table, so that no server's heartbeat is past them unless its numbers are not
 * this log's: it read a store since restored from an older copy, and has not read the change. */
static int look(struct store *s, const struct look *l, struct propagation *p)
{
    struct seen_nodes v = {0};
    int64_t key_max, account_max, plans;
    int r = store_nodes_list(s, keep_live, &v);

    if (r == STORE_OK)
        r = store_changes_newest(s, &key_max, &account_max, &plans);
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; r == STORE_OK && i < v.count; i++) {
        const struct store_node *n = &v.n[i];
        p->live++;
        if (n->key_seq >= l->key_seq && n->account_seq >= l->account_seq &&
            n->plans_version >= l->plans_version && n->key_seq <= key_max &&
            n->account_seq <= account_max) {
            p->applied++;
            continue;
        }
        size_t len = strlen(p->lagging);
        snprintf(p->lagging + len, sizeof(p->lagging) - len, "%s%s", len > 0 ? ", " : "", n->id);
    }
    free(v.n);
    return r;
}

int propagation_wait(struct store *s, int wait_ms, struct propagation *out)
{
    struct look l = {0};
    uint64_t deadline = kn_mono_ns() + (uint64_t)(wait_ms > 0 ? wait_ms : 0) * 1000000ull;
    int r;

    if ((r = store_changes_newest(s, &l.key_seq, &l.account_seq, &l.plans_version)) != STORE_OK)
        return r;
    for (;;) {
        if ((r = look(s, &l, out)) != STORE_OK)
            return r;
        if (out->applied == out->live || kn_mono_ns() >= deadline)
            return STORE_OK;
        poll(NULL, 0, POLL_MS);
    }
}

static int count_other(void *ud, const struct store_node *n)
{
    struct look *l = ud;
    if (n->age_ms < PROPAGATION_LIVE_MS && strcmp(n->id, l->self) != 0) {
        l->others++;
        l->local += strcmp(n->counters, "redis") != 0;
    }
    return 0;
}

int propagation_live_others(struct store *s, const char *self, int *others, int *local)
{
    struct look l = {.self = self};
    int r = store_nodes_list(s, count_other, &l);
    if (r == STORE_OK) {
        *others = l.others;
        *local = l.local;
    }
    return r;
}
