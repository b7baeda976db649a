/* The store thread: its mailbox, the change feed applied to the key table, usage counts; see
 * keysync.h. */
#include "keys/keysync.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/mailbox.h"
#include "core/util.h"
#include "keys/control.h"
#include "limits/accounts.h"
#include "limits/ratelimit.h"
#include "metering/ledger.h"
#include "metering/spool.h"
#include "keys/propagation.h"
#include "limits/cluster.h"

#define TICK_MS 1000
/* The others stop waiting for this server PROPAGATION_LIVE_MS after its last heartbeat, by the
 * store's clock in whole milliseconds: by this server's clock it stops counting itself fresh
 * (keysync_stale_since), and stops counting a reading that ends, this much before. */
#define FRESH_MARGIN_MS 250

/* What other threads put in the store thread's mailbox. */
enum { MSG_BILL, MSG_SYNC, MSG_RELOAD_PLANS };

/* A request that its thread waits on (MSG_SYNC, MSG_RELOAD_PLANS). */
struct call {
    struct mailbox_msg msg;
    sem_t done;
    int ok;
    char *out; /* What happened, for MSG_RELOAD_PLANS. */
    size_t outsize;
};

struct keysync {
    struct keytable *kt;
    struct store *store;
    struct control *control; /* NULL: none (keys/control.h). */
    struct mailbox mailbox;  /* Ledger rows and requests from other threads. */
    pthread_t thread;
    struct store_cursor key_cursor; /* Where the key change feed has been read to. */
    _Atomic int stop;
    _Atomic int ready;
    _Atomic uint64_t last_ok_ns;
    _Atomic uint64_t
        last_try_ns; /* The last reading of the change logs ended (keysync_stale_since). */
    struct store_usage *batch; /* The usage being written, and the records it came from. */
    struct keyrec **batch_recs;
    size_t cap;
    /* By record index (keytable_index), the least last-used time the store is known to hold for
     * the key (0: not known): a flush leaves out a last use the store would keep its own over
     * (STORE_LAST_USED_EVERY), so a busy key's row is not looked up every second to change
     * nothing. Grown to the highest index flushed; only this thread touches it. */
    uint32_t *lu_floor;
    size_t lu_cap;
    struct accounts *accounts; /* And the plans in force (limits/accounts.h). */
    struct store_cursor account_cursor;
    struct ledger *ledger;    /* The ledger's group commits (metering/ledger.h). */
    _Atomic(char *) base_url; /* The running server's own address, for the CLI's links. */
    struct store_node node;   /* This server's row in the nodes table. */
    struct spool *spool;      /* The ledger's spool, or NULL (metering/spool.h). */
    int has_redis;            /* The limits are counted in Redis (limits/cluster.h). */
    struct redis_target redis_target;
    redisContext *redis;         /* The store thread's connection, for the seeding; NULL while
                                    it is lost. */
    int redis_said;              /* Its loss was reported. */
    int reconcile_due;           /* The spool was replayed since Redis's counts were last raised to
                                    the ledger's (see seed_redis). */
    uint64_t reconcile_after_ns; /* A failed raise is tried again from then. */
    uint64_t reconcile_wait_ns;  /* A raise waits for this server's settlements until then. */
    uint64_t blind_check_ns;     /* Without INFO, the next check of the counts. */
    _Atomic int live_nodes;      /* Live servers in the nodes table (this one included). */
    _Atomic uint64_t spooled;    /* Its rows waiting, for other threads (keysync_spooled). */
    int beat_failed;             /* The last heartbeat failed (said once, not every second). */
    uint64_t beat_sent_ns;       /* When the last heartbeat that was written was sent. */
    void (*after_read)(void *ud);
    void *after_read_ud;
    int64_t lines_month; /* The month whose line counts load_keys is reading. */
};

int keysync_key_to_rec(const struct store_key *k, uint32_t requests_today, int64_t now,
                       struct keyrec_data *out)
{
    memset(out, 0, sizeof(*out));
    if (apikey_mode_parse(k->mode, &out->mode) != 0 ||
        apikey_env_parse(k->environment, &out->env) != 0)
        return -1;
    memcpy(out->hash, k->hash, APIKEY_HASH_LEN);
    kn_strlcpy(out->id, k->id, sizeof(out->id));
    out->expires_at = k->expires_at;
    out->revoked_at = k->revoked_at;
    out->last_used = k->last_used_at;
    out->day_cell = requests_today ? ratelimit_daily_cell(requests_today, now) : 0;
    if (out->mode == APIKEY_MODE_LIVE) {
        out->monthly = k->monthly_requests > 0 ? k->monthly_requests : 0;
        kn_strlcpy(out->line_id, k->quota_key[0] != '\0' ? k->quota_key : k->id,
                   sizeof(out->line_id));
    }
    return 0;
}

static int apply_key(void *ud, const struct store_key *k, uint32_t requests_today)
{
    struct keysync *ks = ud;
    struct keyrec_data d;
    struct iplist *allow = NULL;
    char err[256];

    if (keysync_key_to_rec(k, requests_today, kn_unix_now(), &d) != 0) {
        fprintf(stderr, "konnect: skipping key %s with unknown mode or environment\n", k->id);
        return 0;
    }
    if (k->ip_allowlist[0] != '\0' &&
        (allow = iplist_parse(k->ip_allowlist, err, sizeof(err))) == NULL) {
        /* Fail closed: a key whose allowlist cannot be read is usable from nowhere. */
        fprintf(stderr, "konnect: key %s has an unreadable IP allowlist (%s); refusing it\n", k->id,
                err);
        allow = kn_calloc(1, sizeof(*allow) + sizeof(allow->nets[0]));
        allow->n = 1;
        memset(&allow->nets[0], 0xff, sizeof(allow->nets[0]));
        allow->nets[0].prefix = 128;
    }
    d.allow = allow;
    d.models = k->models;
    d.rpm = k->requests_per_minute > 0 && k->requests_per_minute <= UINT32_MAX
                ? (uint32_t)k->requests_per_minute
                : 0;
    d.acct = accounts_get(ks->accounts, k->account_id, 1);
    keytable_upsert(ks->kt, &d);
    free(allow);
    return 0;
}

/* A line of keys' requests billed this month, from the store: where the key table's count is
 * lower (at start, and after every key is loaded again), it is raised to it. */
static int raise_line(void *ud, const struct store_month_total *t)
{
    struct keysync *ks = ud;
    keytable_line_raise(ks->kt, t->line_id, ks->lines_month, t->requests);
    return 0;
}

/* Loads every key, then its line's count of this month (each live request counts in its line,
 * limited by the key's own monthly quota if it has one, from there on). */
static int load_keys(struct keysync *ks, int64_t today)
{
    int r = store_keys_load(ks->store, today, &ks->key_cursor, apply_key, ks);
    if (r != STORE_OK)
        return r;
    ks->lines_month = kn_month_of(kn_unix_now());
    return store_line_month_totals(ks->store, ks->lines_month, raise_line, ks);
}

static void mark(struct keysync *ks, int ok)
{
    atomic_store(&ks->ready, ok);
    if (ok)
        atomic_store(&ks->last_ok_ns, kn_mono_ns());
}

static int beat(struct keysync *ks);

/* Several servers on one store must count their limits in one place, or an account could spend
 * its quota once on each: a server without Redis does not start while another live server uses
 * the store, nor one with Redis while a live server counts locally. Under the start lock, its
 * heartbeat is written first and the check made after, so that of two servers started together
 * the second to take the lock sees the first and refuses. A row under 3 seconds old may
 * be a server that just died (a restart after a crash): it is given that long to age. Returns 0,
 * or -1 with a message (the heartbeat removed again). */
static int refuse_mixed_counters(struct keysync *ks, char *err, size_t errsize)
{
    int others = 0, local = 0;
    uint64_t deadline = kn_mono_ns() + (PROPAGATION_LIVE_MS + 500) * 1000000ull;

    if (store_start_lock(ks->store, 1) != STORE_OK) {
        snprintf(err, errsize, "%s", store_errmsg(ks->store));
        return -1;
    }
    if (!beat(ks)) {
        snprintf(err, errsize, "cannot write this node's heartbeat: %s", store_errmsg(ks->store));
        store_start_lock(ks->store, 0);
        return -1;
    }
    for (;;) {
        if (propagation_live_others(ks->store, ks->node.id, &others, &local) != STORE_OK) {
            snprintf(err, errsize, "cannot read the nodes table: %s", store_errmsg(ks->store));
            store_start_lock(ks->store, 0);
            return -1;
        }
        int bad = ks->has_redis ? local > 0 : others > 0;
        if (!bad) {
            store_start_lock(ks->store, 0);
            return 0;
        }
        if (kn_mono_ns() >= deadline)
            break;
        poll(NULL, 0, 200);
        beat(ks);
    }
    store_node_leave(ks->store, ks->node.id);
    store_start_lock(ks->store, 0);
    if (ks->has_redis)
        snprintf(err, errsize,
                 "another live server uses this store and counts its limits in its own memory: "
                 "every server of one store needs the same KONNECT_REDIS_URL (stop it, or give it "
                 "Redis)");
    else
        snprintf(err, errsize,
                 "%d other live server%s use%s this store: several servers need "
                 "KONNECT_REDIS_URL (Redis), so that an account's quotas and limits hold across "
                 "them instead of once on each",
                 others, others == 1 ? "" : "s", others == 1 ? "s" : "");
    return -1;
}

/* Replays the ledger's spool into the store. Returns the rows replayed, or -1 when the store
 * failed (they stay spooled). */
static long replay_spool(struct keysync *ks)
{
    long voided, n;

    if (ks->spool == NULL || spool_pending(ks->spool) == 0)
        return 0;
    if ((n = spool_replay(ks->spool, ks->store, &voided)) < 0) {
        fprintf(stderr, "konnect: cannot replay the ledger spool yet: %s\n",
                store_errmsg(ks->store));
        return -1;
    }
    fprintf(stderr, "konnect: replayed %ld spooled ledger rows into the store\n", n);
    ks->reconcile_due = 1; /* Their settlements may have found no lease in Redis. */
    ledger_mark_up(ks->ledger);
    atomic_store(&ks->spooled, 0);
    return n;
}

static int count_live(void *ud, const struct store_node *n)
{
    *(int *)ud += n->age_ms < PROPAGATION_LIVE_MS;
    return 0;
}

/* Writes this server's heartbeat with the change-log positions it has applied: whoever changed a
 * key waits for every live server's row to reach its change (keys/propagation.h). */
static int beat(struct keysync *ks)
{
    const char *url = atomic_load(&ks->base_url);

    ks->node.key_seq = ks->key_cursor.v[0];
    ks->node.account_seq = ks->account_cursor.v[0];
    ks->node.plans_version = accounts_plans(ks->accounts)->version;
    kn_strlcpy(ks->node.address, url != NULL ? url : "", sizeof(ks->node.address));
    uint64_t sent = kn_mono_ns();
    int failed = store_node_beat(ks->store, &ks->node) != STORE_OK, live = 0;
    if (!failed)
        ks->beat_sent_ns = sent;
    if (!failed && store_nodes_list(ks->store, count_live, &live) == STORE_OK)
        atomic_store(&ks->live_nodes, live > 0 ? live : 1);
    /* A write went through: the store takes ledger rows again once the spool is in. */
    if (!failed && ks->ledger != NULL && (ks->spool == NULL || spool_pending(ks->spool) == 0))
        ledger_mark_up(ks->ledger);
    if (failed && !ks->beat_failed)
        fprintf(stderr, "konnect: cannot write this node's heartbeat (will retry): %s\n",
                store_errmsg(ks->store));
    ks->beat_failed = failed;
    return !failed;
}

/* Accounts seeded per round trip to Redis. */
#define SEED_BATCH 512

struct seeding {
    struct keysync *ks;
    int64_t month;
    int reconcile; /* Raising seeded counts (kn_reconcile), not seeding. */
    int lines;     /* Key lines' counts (line_month_totals), not accounts'. */
    size_t queued, raised;
    int failed;
};

static int seed_collect(struct seeding *g)
{
    int r = g->lines       ? cluster_line_collect(g->ks->redis, g->queued, &g->raised)
            : g->reconcile ? cluster_reconcile_collect(g->ks->redis, g->queued, &g->raised)
                           : cluster_seed_collect(g->ks->redis, g->queued);
    g->queued = 0;
    return r != 0;
}

static int seed_one(void *ud, const struct store_month_total *t)
{
    struct seeding *g = ud;
    if (g->lines)
        cluster_line(g->ks->redis, t->account_id, t->line_id, g->month, t->requests, g->reconcile);
    else if (g->reconcile)
        cluster_reconcile_account(g->ks->redis, t->account_id, g->month, t->requests, t->tokens);
    else
        cluster_seed_account(g->ks->redis, t->account_id, g->month, t->requests, t->tokens);
    if (++g->queued == SEED_BATCH)
        g->failed = seed_collect(g);
    return g->failed;
}

/* Seeds (or raises) the month's counts of every account, then of every key line with a monthly
 * quota. Returns STORE_OK or the store's error; g->failed says Redis failed. */
static int seed_all(struct keysync *ks, struct seeding *g)
{
    int listed = store_usage_month_totals(ks->store, g->month, seed_one, g);
    /* The answers still due are read whatever happened, so that the connection stays in step. */
    if (g->queued > 0 && seed_collect(g))
        g->failed = 1;
    if (listed != STORE_OK || g->failed)
        return listed;
    g->lines = 1;
    listed = store_line_month_totals(ks->store, g->month, seed_one, g);
    if (g->queued > 0 && seed_collect(g))
        g->failed = 1;
    return listed;
}

/* Puts this month's billed usage of every account into Redis unless it is there (its seeded
 * mark): at start, and within a second of Redis losing it (a restart without persistence, a new
 * month). Until then, live requests are refused (limits/konnect.lua).
 *
 * A Redis that kept its mark may still have lost counts: restored from an older copy, a replica
 * promoted before it caught up, or settlements skipped for rows that reached the ledger after
 * Redis lost their leases (this server's spool, replayed late). Redis names each run of its
 * process (run_id, new at every start) and each history of its data (master_replid, new at every
 * promotion of a replica), and CLUSTER_RUN_KEY holds the two under which the counts were last
 * seeded or checked: whenever they are not the current ones,
 * and after each replay of this server's spool, the month's counts are raised to what the ledger
 * holds plus the leases in flight where they are lower (kn_reconcile: never lowered, so a race
 * with live traffic only errs towards refusing). */
static int same_run(struct keysync *ks, char *run, size_t size, int *same)
{
    redisReply *r;

    if ((r = redisCommand(ks->redis, "INFO server replication")) == NULL)
        return -1;
    run[0] = '\0';
    if (r->type == REDIS_REPLY_STRING)
        redis_run_of(r->str, run, size);
    freeReplyObject(r);
    if (run[0] == '\0') {
        /* No INFO (an ACL that denies it): nothing says whether Redis lost counts, so they are
         * checked, but once a minute, not every second. */
        *same = kn_mono_ns() < ks->blind_check_ns;
        if (!*same) {
            if (ks->blind_check_ns == 0)
                fprintf(stderr,
                        "konnect: Redis %s does not say which run it is (INFO server "
                        "replication is denied): its counts are checked against the "
                        "ledger once a minute\n",
                        ks->redis_target.shown);
            ks->blind_check_ns = kn_mono_ns() + 60ull * 1000000000ull;
        }
        return 0;
    }
    if ((r = redisCommand(ks->redis, "GET %s", CLUSTER_RUN_KEY)) == NULL)
        return -1;
    *same = r->type == REDIS_REPLY_STRING && strcmp(r->str, run) == 0;
    freeReplyObject(r);
    return 0;
}

/* Says in Redis that its counts are good for this run: the event loops spend on them again. */
static void mark_run(struct keysync *ks, const char *run)
{
    redisReply *r;
    if (run[0] == '\0' || (r = redisCommand(ks->redis, "SET %s %s", CLUSTER_RUN_KEY, run)) == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "konnect: Redis %s refused %s (live requests wait for it): %s\n",
                ks->redis_target.shown, CLUSTER_RUN_KEY, r->str);
    freeReplyObject(r);
}

static void seed_redis(struct keysync *ks)
{
    char err[512], mark[48], run[96];
    int same;
    redisReply *r;
    int64_t month = kn_month_of(kn_unix_now());

    if (!ks->has_redis)
        return;
    if (ks->redis == NULL &&
        (ks->redis = redis_sync_connect(&ks->redis_target, err, sizeof(err))) == NULL) {
        if (!ks->redis_said)
            fprintf(stderr, "konnect: %s (will retry)\n", err);
        ks->redis_said = 1;
        return;
    }
    /* A server of an older version that reconnected put its functions back: ours again, within a
     * second, once it is gone or not. */
    if (redis_sync_library(ks->redis, &ks->redis_target, err, sizeof(err)) != 0) {
        if (ks->redis->err)
            goto lost;
        fprintf(stderr, "konnect: %s\n", err);
    }
    cluster_seeded_key(month, mark, sizeof(mark));
    if ((r = redisCommand(ks->redis, "EXISTS %s", mark)) == NULL)
        goto lost;
    int seeded = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (same_run(ks, run, sizeof(run), &same) != 0)
        goto lost;
    if (seeded && ((same && !ks->reconcile_due) || kn_mono_ns() < ks->reconcile_after_ns))
        return;
    /* This server's settlements still on their way would count twice (their requests are in
     * the ledger and still leased): they are given up to 5 seconds to arrive first. */
    if (seeded && cluster_unsettled() > 0) {
        if (ks->reconcile_wait_ns == 0)
            ks->reconcile_wait_ns = kn_mono_ns() + 5ull * 1000000000ull;
        if (kn_mono_ns() < ks->reconcile_wait_ns)
            return;
    }
    ks->reconcile_wait_ns = 0;
    struct seeding g = {.ks = ks, .month = month, .reconcile = seeded};
    int listed = seed_all(ks, &g);
    if (listed != STORE_OK || g.failed) {
        fprintf(stderr, "konnect: cannot %s Redis with this month's usage: %s\n",
                seeded ? "reconcile" : "seed",
                g.failed ? (ks->redis->err ? ks->redis->errstr : "Redis refused a count")
                         : store_errmsg(ks->store));
        if (ks->redis->err)
            goto lost;
        if (seeded) /* It reads the month's usage: every five seconds, not every one. */
            ks->reconcile_after_ns = kn_mono_ns() + 5ull * 1000000000ull;
        return;
    }
    if (seeded) {
        if (g.raised > 0)
            fprintf(stderr,
                    "konnect: Redis %s had fewer requests or tokens than the ledger for %zu "
                    "accounts or keys this month (it lost some); raised them to the ledger's\n",
                    ks->redis_target.shown, g.raised);
        ks->reconcile_due = 0;
        mark_run(ks, run);
        return;
    }
    if ((r = redisCommand(ks->redis, "SET %s 1 PX %lld", mark, 40LL * 86400000)) == NULL)
        goto lost;
    int marked = r->type != REDIS_REPLY_ERROR;
    freeReplyObject(r);
    if (!marked) {
        fprintf(stderr, "konnect: Redis refused this month's seeded mark\n");
        return;
    }
    fprintf(stderr, "konnect: seeded Redis %s with this month's usage\n", ks->redis_target.shown);
    ks->redis_said = 0;
    ks->reconcile_due = 0; /* Seeded from the ledger: nothing to raise. */
    mark_run(ks, run);
    return;
lost:
    if (!ks->redis_said)
        fprintf(stderr, "konnect: lost the store thread's connection to Redis %s: %s\n",
                ks->redis_target.shown, ks->redis->errstr);
    ks->redis_said = 1;
    redisFree(ks->redis);
    ks->redis = NULL;
}

/* Reads the account and key changes after the cursors; a cursor that fell behind the change log's
 * retention (the store was out of reach for longer than KONNECT_CHANGE_LOG_RETENTION_DAYS, or
 * the process was frozen that long) loads every account or key again instead, since the changes
 * it missed are gone. Returns 1, or 0 when the store failed. */
static int read_changes(struct keysync *ks)
{
    int64_t today = kn_unix_now() / 86400;
    int r = store_account_changes(ks->store, &ks->account_cursor, accounts_apply, ks->accounts);
    if (r == STORE_STALE) {
        fprintf(stderr, "konnect: the account change log no longer holds every change after this "
                        "server's reading (pruned, or restored from an older copy); loading every "
                        "account again\n");
        r = store_accounts_load(ks->store, &ks->account_cursor, accounts_apply, ks->accounts);
    }
    if (r != STORE_OK)
        return 0;
    r = store_key_changes(ks->store, today, &ks->key_cursor, apply_key, ks);
    if (r == STORE_STALE) {
        fprintf(stderr, "konnect: the key change log no longer holds every change after this "
                        "server's reading (pruned, or restored from an older copy); loading every "
                        "key again\n");
        r = load_keys(ks, today);
    }
    return r == STORE_OK;
}

static int sync_changes(struct keysync *ks)
{
    for (int tries = 0;; tries++) {
        uint64_t began = kn_mono_ns(), prev_beat = ks->beat_sent_ns;
        int read = read_changes(ks), ok;
        if (ks->after_read != NULL)
            ks->after_read(ks->after_read_ud);
        if (read) {
            char msg[600];
            int changed = accounts_sync_store_plans(ks->accounts, ks->store, msg, sizeof(msg));
            if (changed != 0)
                fprintf(stderr, "konnect: %s\n", msg);
            read = changed >= 0;
        }
        if (!read)
            fprintf(stderr, "konnect: cannot read key changes: %s\n", store_errmsg(ks->store));
        ok = read && beat(ks);
        /* A reading that took so long (the process frozen in the middle of it) that the others
         * may have stopped waiting for this server before its heartbeat said what it had read
         * can have missed a change they then committed, one that nobody waits for this server
         * to apply: it does not count, and the logs are read again at once (once: a second
         * late reading leaves the server stale until the next one, without holding up the
         * thread's other work). */
        int late = ok && prev_beat != 0 &&
                   kn_mono_ns() - prev_beat >= (PROPAGATION_LIVE_MS - FRESH_MARGIN_MS) * 1000000ull;
        if (late && tries == 0)
            continue;
        /* When the reading began, stored once what it read is in the key table
         * (keysync_stale_since): a loop that sees this time also sees every change committed before
         * it, even when the process was frozen in the middle of this reading (the others then
         * waited for its heartbeat, or stopped waiting 3 s after the one before it, which was
         * sent before this reading began). Not when its heartbeat could not be written (the
         * others stop waiting for this server); but when the store could not be read at all,
         * the server goes on with the keys it has (docs/deployment.md: nothing can be
         * committed where it cannot read, unless it alone is cut off). */
        if (!late && (ok || !read))
            atomic_store(&ks->last_try_ns, began);
        mark(ks, ok);
        return ok;
    }
}

/* What a written batch row says of the key's stored last use: exactly its time when the store
 * wrote it; otherwise the store kept one less than STORE_LAST_USED_EVERY seconds older, or
 * could not tell (then the floor stays where it was, and the next flush asks again). */
static void note_last_used(struct keysync *ks, uint32_t i, const struct store_usage *u)
{
    if (!u->last_used_written)
        return;
    if (i >= ks->lu_cap) {
        size_t cap = ks->lu_cap ? ks->lu_cap : 1024;
        while (cap <= i)
            cap *= 2;
        ks->lu_floor = kn_realloc(ks->lu_floor, cap * sizeof(*ks->lu_floor));
        memset(ks->lu_floor + ks->lu_cap, 0, (cap - ks->lu_cap) * sizeof(*ks->lu_floor));
        ks->lu_cap = cap;
    }
    ks->lu_floor[i] = (uint32_t)u->last_used;
}

/* Writes the request counts and last-used times of every record touched since the last flush, in
 * one transaction. When the store fails, the counts go back to their records for the next try, so
 * nothing is lost and nothing piles up. Returns 0, or -1 when the store failed. */
static int flush_usage(struct keysync *ks)
{
    struct keyrec *r = keytable_take_dirty(ks->kt), *next;
    int64_t now = kn_unix_now();
    size_t n = 0;

    for (; r != NULL; r = next) {
        next = keytable_dirty_next(ks->kt, r);
        uint32_t refused, requests = keytable_settle(r, &refused);
        if (n == ks->cap) {
            ks->cap = ks->cap ? ks->cap * 2 : 256;
            ks->batch = kn_realloc(ks->batch, ks->cap * sizeof(*ks->batch));
            ks->batch_recs = kn_realloc(ks->batch_recs, ks->cap * sizeof(*ks->batch_recs));
        }
        struct store_usage *u = &ks->batch[n];
        uint32_t at = atomic_load(&r->last_used), i = keytable_index(r);
        keyrec_id(r, u->key_id);
        u->day = now / 86400;
        u->requests = requests;
        u->refused = refused;
        /* The store would leave its own: it holds at least the floor, and at is not a minute on. */
        u->last_used = i < ks->lu_cap && ks->lu_floor[i] != 0 &&
                               (uint64_t)at < (uint64_t)ks->lu_floor[i] + STORE_LAST_USED_EVERY
                           ? 0
                           : at;
        ks->batch_recs[n++] = r;
    }
    if (n == 0)
        return 0;
    if (store_usage_add(ks->store, ks->batch, n) == STORE_OK) {
        for (size_t j = 0; j < n; j++)
            if (ks->batch[j].last_used != 0)
                note_last_used(ks, keytable_index(ks->batch_recs[j]), &ks->batch[j]);
        return 0;
    }
    fprintf(stderr, "konnect: cannot record key usage (will retry): %s\n", store_errmsg(ks->store));
    for (size_t i = 0; i < n; i++)
        keytable_requeue(ks->kt, ks->batch_recs[i], ks->batch[i].requests, ks->batch[i].refused);
    return -1;
}

void keysync_bill(struct keysync *ks, struct ledger_entry *e)
{
    e->msg.kind = MSG_BILL;
    if (mailbox_put(&ks->mailbox, &e->msg) != MAILBOX_OK)
        e->done(e, 0); /* The store thread has stopped: the answer cannot be billed. */
}

/* The control socket's answers (keys/control.h). */
static void answer(void *ud, const char *line, char *buf, size_t size)
{
    struct keysync *ks = ud;

    if (strcmp(line, "sync") == 0) {
        snprintf(buf, size, sync_changes(ks) ? "ok\n" : "error\n");
    } else if (strcmp(line, "reload-plans") == 0) {
        char msg[600];
        int ok = accounts_reload_plans(ks->accounts, ks->store, msg, sizeof(msg)) == 0;
        fprintf(stderr, "konnect: plans reloaded on request: %s\n", msg);
        snprintf(buf, size, "%s %s\n", ok ? "ok" : "error", msg);
    } else if (strcmp(line, "base-url") == 0) {
        const char *url = atomic_load(&ks->base_url);
        snprintf(buf, size, url != NULL ? "ok %s\n" : "error not listening yet\n", url);
    } else if (strncmp(line, "has-plan ", 9) == 0) {
        snprintf(buf, size, "%s\n",
                 plans_find(accounts_plans(ks->accounts), line + 9) != NULL ? "ok" : "unknown");
    } else {
        snprintf(buf, size, "error unknown command\n");
    }
}

/* One round of what other threads put in the mailbox: everything in it now, the ledger rows
 * first, in one group commit, so that no answer waits behind a request, then the requests in
 * their order. Returns 1 when it took something (more may have come since: the caller goes round
 * again without waiting), 0 when it found the mailbox empty. One round at a time, so that under
 * a load that never lets the mailbox empty, the change feed (revocations), the control socket and
 * the usage counts still get their turn between rounds. */
static int serve_mailbox(struct keysync *ks)
{
    struct mailbox_msg *m, *next, *calls = NULL, **calls_tail = &calls;

    ledger_gather(ks->ledger);
    if ((m = mailbox_take_all(&ks->mailbox)) == NULL)
        return 0;
    for (; m != NULL; m = next) {
        next = m->next;
        if (m->kind == MSG_BILL) {
            ledger_add(ks->ledger, ks->store, KN_CONTAINER_OF(m, struct ledger_entry, msg));
        } else {
            m->next = NULL;
            *calls_tail = m;
            calls_tail = &m->next;
        }
    }
    ledger_commit(ks->ledger, ks->store);
    for (m = calls; m != NULL; m = next) {
        struct call *c = KN_CONTAINER_OF(m, struct call, msg);
        next = m->next;
        if (m->kind == MSG_SYNC)
            c->ok = sync_changes(ks);
        else
            c->ok = accounts_reload_plans(ks->accounts, ks->store, c->out, c->outsize) == 0;
        sem_post(&c->done);
    }
    return 1;
}

static void *thread_main(void *arg)
{
    struct keysync *ks = arg;
    uint64_t next_tick = kn_mono_ns() + TICK_MS * 1000000ull;
    int more = 0; /* The last round took something: look again at once. */

    pthread_setname_np(pthread_self(), "kn-store");
    while (!atomic_load(&ks->stop)) {
        struct pollfd p[2 + CONTROL_POLLFDS] = {
            {.fd = mailbox_fd(&ks->mailbox), .events = POLLIN},
            {.fd = store_changes_fd(ks->store), .events = POLLIN}};
        uint64_t now = kn_mono_ns(), wake = next_tick;
        size_t nctl = ks->control != NULL ? control_pollfds(ks->control, p + 2, &wake) : 0;
        int timeout = more || now >= wake ? 0 : (int)((wake - now) / 1000000) + 1;
        int n = poll(p, 2 + nctl, timeout);

        if (more || (n > 0 && (p[0].revents & POLLIN) != 0)) {
            if (n > 0 && (p[0].revents & POLLIN) != 0)
                mailbox_clear_fd(&ks->mailbox);
            /* Found empty: nothing waits now, so the store's housekeeping holds no answer. */
            if (!(more = serve_mailbox(ks)))
                store_idle(ks->store);
            if (ks->spool != NULL)
                atomic_store(&ks->spooled, spool_pending(ks->spool));
        }
        if (n > 0 && (p[1].revents & POLLIN) != 0) {
            /* A connection of this process committed a key or account change. */
            store_changes_drain(ks->store);
            sync_changes(ks);
        }
        if (ks->control != NULL)
            control_serve(ks->control, p + 2, nctl, kn_mono_ns());
        if ((now = kn_mono_ns()) >= next_tick) {
            /* The reading first, and the next one a tick after this one began, so that the
             * tick's other work (a spool to replay, Redis to seed or a Redis that does not answer,
             * many keys' usage) delays it only by what that work takes past a tick: the server
             * turns stale (keysync_stale_since) only when it takes 1.75 s or more. Ready means
             * both halves of the round trip worked this time. */
            int ok = sync_changes(ks);
            replay_spool(ks);
            seed_redis(ks);
            if (flush_usage(ks) != 0 && ok)
                mark(ks, 0);
            next_tick = now + TICK_MS * 1000000ull;
        }
    }
    /* The mailbox is closed: what was put in before is written or answered now. */
    while (serve_mailbox(ks)) {
    }
    if (flush_usage(ks) != 0)
        fprintf(stderr, "konnect: usage of the last second could not be written at shutdown\n");
    /* Gone at once, so that nobody waits for this server to apply a change (a server that stops
     * without saying so is no longer live 3 seconds after its last heartbeat). */
    if (store_node_leave(ks->store, ks->node.id) != STORE_OK)
        fprintf(stderr, "konnect: cannot remove this node from the nodes table: %s\n",
                store_errmsg(ks->store));
    return NULL;
}

struct keysync *keysync_start(struct keytable *kt, const struct keysync_config *cfg, char *err,
                              size_t errsize)
{
    struct keysync *ks = kn_calloc(1, sizeof(*ks));

    ks->kt = kt;
    ks->node = *cfg->node;
    ks->after_read = cfg->after_read;
    ks->after_read_ud = cfg->after_read_ud;
    ks->node.started_at = kn_unix_now();
    atomic_store(&ks->live_nodes, 1);
    if (cfg->redis != NULL) {
        ks->has_redis = 1;
        ks->redis_target = *cfg->redis;
    }
    ks->accounts = accounts_new(cfg->plans, cfg->plans_path, cfg->plans_required);
    if (mailbox_init(&ks->mailbox, 0, 1) != 0) {
        snprintf(err, errsize, "eventfd: %s", strerror(errno));
        accounts_free(ks->accounts);
        free(ks);
        return NULL;
    }
    /* The one writer of the store: checkpoints on a thread of their own, so that no commit waits
     * for one, and the ledger's durability as configured. */
    if ((ks->store = store_open_with(cfg->db_url,
                                     cfg->durable ? "sync=full&checkpoint=background"
                                                  : "sync=normal&checkpoint=background",
                                     1, err, errsize)) == NULL)
        goto fail;
    ks->ledger = ledger_new();
    if (cfg->spool_path != NULL) {
        if ((ks->spool = spool_open(cfg->spool_path, cfg->spool_max_bytes, err, errsize)) == NULL)
            goto fail;
        ledger_set_spool(ks->ledger, ks->spool);
        /* Rows spooled before a stop or crash go in before anything else is served. */
        if (replay_spool(ks) < 0) {
            snprintf(err, errsize, "cannot replay the ledger spool %s into the store: %s",
                     cfg->spool_path, store_errmsg(ks->store));
            goto fail;
        }
    }
    if (store_accounts_load(ks->store, &ks->account_cursor, accounts_apply, ks->accounts) !=
            STORE_OK ||
        store_usage_month_totals(ks->store, kn_month_of(kn_unix_now()), accounts_load_month,
                                 ks->accounts) != STORE_OK) {
        snprintf(err, errsize, "cannot load accounts: %s", store_errmsg(ks->store));
        goto fail;
    }
    /* Plans published in the store win over the file, before anything is served or billed. */
    char msg[600];
    int from_store = accounts_sync_store_plans(ks->accounts, ks->store, msg, sizeof(msg));
    if (from_store < 0) {
        snprintf(err, errsize, "%s", msg);
        goto fail;
    }
    if (from_store > 0)
        fprintf(stderr, "konnect: %s\n", msg);
    int64_t count = 0;
    if (store_key_count(ks->store, &count) == STORE_OK)
        keytable_reserve(kt, (size_t)count + 1024);
    if (load_keys(ks, kn_unix_now() / 86400) != STORE_OK) {
        snprintf(err, errsize, "cannot load keys: %s", store_errmsg(ks->store));
        goto fail;
    }
    if (store_is_postgres(cfg->db_url) && refuse_mixed_counters(ks, err, errsize) != 0)
        goto fail;
    if (ks->after_read != NULL)
        ks->after_read(ks->after_read_ud);
    if (!beat(ks)) {
        snprintf(err, errsize, "cannot write this node's heartbeat: %s", store_errmsg(ks->store));
        goto fail;
    }
    seed_redis(ks);
    /* Read again now that the heartbeat is there to be waited on: a change committed after the
     * keys were loaded and before it was written was waited for by nobody. */
    sync_changes(ks);
    if (cfg->socket_path != NULL &&
        (ks->control = control_open(cfg->socket_path, answer, ks, err, errsize)) == NULL)
        goto fail;
    if (pthread_create(&ks->thread, NULL, thread_main, ks) != 0) {
        snprintf(err, errsize, "cannot start the store thread");
        goto fail;
    }
    return ks;
fail:
    if (ks->redis != NULL)
        redisFree(ks->redis);
    control_close(ks->control);
    mailbox_dispose(&ks->mailbox);
    store_close(ks->store);
    ledger_free(ks->ledger);
    spool_close(ks->spool);
    accounts_free(ks->accounts);
    free(ks);
    return NULL;
}

void keysync_stop(struct keysync *ks)
{
    if (ks == NULL)
        return;
    /* Closed first: a put the thread could miss is refused instead (given up at once). */
    mailbox_close(&ks->mailbox); /* Wakes the thread, and turns later requests away. */
    atomic_store(&ks->stop, 1);
    pthread_join(ks->thread, NULL);
    control_close(ks->control);
    mailbox_dispose(&ks->mailbox);
    free(ks->batch);
    free(ks->batch_recs);
    free(ks->lu_floor);
    ledger_free(ks->ledger);
    spool_close(ks->spool);
    store_close(ks->store);
    if (ks->redis != NULL)
        redisFree(ks->redis);
    accounts_free(ks->accounts);
    free(atomic_load(&ks->base_url));
    free(ks);
}

uint64_t keysync_reading(struct keysync *ks)
{
    return atomic_load(&ks->last_try_ns);
}

int keysync_stale_since(uint64_t reading)
{
    return kn_mono_ns() - reading > (PROPAGATION_LIVE_MS - FRESH_MARGIN_MS) * 1000000ull;
}

int keysync_live_nodes(struct keysync *ks)
{
    return atomic_load(&ks->live_nodes);
}

int keysync_billing_down(struct keysync *ks)
{
    return ledger_down(ks->ledger);
}

uint64_t keysync_spooled(struct keysync *ks)
{
    return atomic_load(&ks->spooled);
}

const char *keysync_node_id(struct keysync *ks)
{
    return ks->node.id;
}

void keysync_set_base_url(struct keysync *ks, const char *url)
{
    free(atomic_exchange(&ks->base_url, kn_strdup(url)));
}

const struct plans *keysync_plans(struct keysync *ks)
{
    return accounts_plans(ks->accounts);
}

/* Puts a request in the store thread's mailbox and waits for its answer. Returns 0, or -1 when
 * the request failed or the store thread has stopped (then "the server is stopping" is in out). */
static int call(struct keysync *ks, int kind, char *out, size_t outsize)
{
    struct call c = {.msg.kind = kind, .out = out, .outsize = outsize};
    int ok;

    sem_init(&c.done, 0, 0);
    if (mailbox_put(&ks->mailbox, &c.msg) != MAILBOX_OK) {
        ok = 0;
        if (out != NULL)
            kn_strlcpy(out, "the server is stopping", outsize);
    } else {
        while (sem_wait(&c.done) != 0) {
            /* Interrupted by a signal: wait again. */
        }
        ok = c.ok;
    }
    sem_destroy(&c.done);
    return ok ? 0 : -1;
}

int keysync_reload_plans(struct keysync *ks, char *msg, size_t size)
{
    return call(ks, MSG_RELOAD_PLANS, msg, size);
}

void keysync_sync_now(struct keysync *ks)
{
    call(ks, MSG_SYNC, NULL, 0);
}

int keysync_ready(struct keysync *ks, uint64_t *age_ms)
{
    *age_ms = (kn_mono_ns() - atomic_load(&ks->last_ok_ns)) / 1000000;
    /* A store thread that stopped reporting is as bad as a store that fails. */
    return atomic_load(&ks->ready) && *age_ms < 3 * TICK_MS;
}
