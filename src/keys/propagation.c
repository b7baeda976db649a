/* Waiting for a change to be in force on every live server; see propagation.h. */
#include "keys/propagation.h"

#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"

/* How often the nodes table is read while waiting. */
#define POLL_MS 10

struct look {
    int64_t key_seq, account_seq, plans_version;
    const char *self;
    struct propagation *p;
    int others, local;
};

static int look_one(void *ud, const struct store_node *n)
{
    struct look *l = ud;
    struct propagation *p = l->p;

    if (n->age_ms >= PROPAGATION_LIVE_MS)
        return 0;
    p->live++;
    if (n->key_seq >= l->key_seq && n->account_seq >= l->account_seq &&
        n->plans_version >= l->plans_version) {
        p->applied++;
        return 0;
    }
    size_t len = strlen(p->lagging);
    snprintf(p->lagging + len, sizeof(p->lagging) - len, "%s%s", len > 0 ? ", " : "", n->id);
    return 0;
}

int propagation_wait(struct store *s, int wait_ms, struct propagation *out)
{
    struct look l = {.p = out};
    uint64_t deadline = kn_mono_ns() + (uint64_t)(wait_ms > 0 ? wait_ms : 0) * 1000000ull;
    int r;

    if ((r = store_changes_newest(s, &l.key_seq, &l.account_seq, &l.plans_version)) != STORE_OK)
        return r;
    for (;;) {
        memset(out, 0, sizeof(*out));
        if ((r = store_nodes_list(s, look_one, &l)) != STORE_OK)
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
