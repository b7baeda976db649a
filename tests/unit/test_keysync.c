/* The store thread on a real SQLite file: key changes made through another connection (as the CLI
 * and the dashboard make them) reach the key table, each with what it changes (creation,
 * revocation, expiry, allowlist, roll), at once when asked and within moments when not; a key
 * whose allowlist cannot be read is usable from nowhere; the plans are reloaded through the
 * thread's mailbox; ledger rows are acknowledged, a repeated request id as billed before. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <semaphore.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/ipnet.h"
#include "core/util.h"
#include "keys/keysync.h"
#include "keys/lifecycle.h"
#include "keys/propagation.h"
#include "store/store.h"
#include "unit.h"

static char dir[] = "/tmp/konnect-keysync-XXXXXX";
static char plans_path[128];

static void write_plans(const char *json)
{
    FILE *f = fopen(plans_path, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(json, f);
        fclose(f);
    }
}

static struct keyrec *find(struct keytable *kt, const struct store_key *k)
{
    return keytable_lookup(kt, k->hash);
}

static int allows(struct keyrec *r, const char *ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    const struct keyrules *rules = keyrec_rules(r);
    const struct iplist *l = rules != NULL ? rules->allow : NULL;

    inet_pton(AF_INET, ip, &sin.sin_addr);
    return l == NULL || iplist_contains(l, (struct sockaddr *)&sin);
}

struct billed {
    struct ledger_entry e;
    sem_t done;
    int ok;
};

static void on_billed(struct ledger_entry *e, int ok)
{
    struct billed *b = KN_CONTAINER_OF(e, struct billed, e);
    b->ok = ok;
    sem_post(&b->done);
}

static int bill(struct keysync *ks, const char *request_id, const struct store_key *k)
{
    struct billed b = {.e.done = on_billed, .ok = -1};

    sem_init(&b.done, 0, 0);
    kn_strlcpy(b.e.row.request_id, request_id, sizeof(b.e.row.request_id));
    kn_strlcpy(b.e.row.account_id, k->account_id, sizeof(b.e.row.account_id));
    kn_strlcpy(b.e.row.key_id, k->id, sizeof(b.e.row.key_id));
    kn_strlcpy(b.e.row.environment, "production", sizeof(b.e.row.environment));
    kn_strlcpy(b.e.row.model, "m1", sizeof(b.e.row.model));
    kn_strlcpy(b.e.row.currency, "usd", sizeof(b.e.row.currency));
    kn_strlcpy(b.e.row.plan, "default", sizeof(b.e.row.plan));
    b.e.row.input_tokens = 3;
    b.e.row.output_tokens = 4;
    b.e.row.at_ms = (int64_t)kn_unix_ms();
    keysync_bill(ks, &b.e);
    while (sem_wait(&b.done) != 0) {
    }
    sem_destroy(&b.done);
    return b.ok;
}

/* A closed loop of bills, as 64 clients keep a server busy: each acknowledged bill is put in
 * again at once, with a new request id, so that the store thread's mailbox never empties. */
#define FLOOD 64
static struct keysync *flood_ks;
static _Atomic int flooding;
static _Atomic uint64_t flood_seq, flood_billed, flood_returned;
static struct ledger_entry flood[FLOOD];

static void flood_put(struct ledger_entry *e)
{
    snprintf(e->row.request_id, sizeof(e->row.request_id), "req_%024llu",
             (unsigned long long)atomic_fetch_add(&flood_seq, 1));
    keysync_bill(flood_ks, e);
}

static void on_flood_billed(struct ledger_entry *e, int ok)
{
    if (ok)
        atomic_fetch_add(&flood_billed, 1);
    if (atomic_load(&flooding))
        flood_put(e);
    else
        atomic_fetch_add(&flood_returned, 1); /* Back with its owner. */
}

static void flood_start(struct keysync *ks, const struct store_key *k)
{
    flood_ks = ks;
    atomic_store(&flooding, 1);
    for (int i = 0; i < FLOOD; i++) {
        struct ledger_entry *e = &flood[i];
        memset(e, 0, sizeof(*e));
        e->done = on_flood_billed;
        kn_strlcpy(e->row.account_id, k->account_id, sizeof(e->row.account_id));
        kn_strlcpy(e->row.key_id, k->id, sizeof(e->row.key_id));
        kn_strlcpy(e->row.environment, "production", sizeof(e->row.environment));
        kn_strlcpy(e->row.model, "m1", sizeof(e->row.model));
        kn_strlcpy(e->row.currency, "usd", sizeof(e->row.currency));
        kn_strlcpy(e->row.plan, "default", sizeof(e->row.plan));
        e->row.input_tokens = 1;
        e->row.at_ms = (int64_t)kn_unix_ms();
        flood_put(e);
    }
}

static void flood_stop(void)
{
    atomic_store(&flooding, 0);
    while (atomic_load(&flood_returned) < FLOOD)
        poll(NULL, 0, 1);
}

/* The store thread's reading of the change logs, held up once on request (as a process frozen in
 * the middle of it would be). */
static _Atomic int stall_ms, stalling;

static void after_read(void *ud)
{
    int ms = atomic_exchange(&stall_ms, 0);
    (void)ud;
    if (ms > 0) {
        atomic_store(&stalling, 1);
        poll(NULL, 0, ms);
        atomic_store(&stalling, 0);
    }
}

/* Runs one statement on a connection of its own, as another process would (such a commit
 * reaches the server only through the change feed's periodic read). */
static void behind_its_back(const char *path, const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    sqlite3 *db;

    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
}

/* Revokes a key behind the server's back once the store thread's reading is held up. */
struct revoke_later {
    const char *path, *key_id;
    int done;
};

static void *revoke_while_stalled(void *arg)
{
    struct revoke_later *rl = arg;
    uint64_t t0 = kn_mono_ns();

    while (!atomic_load(&stalling) && kn_mono_ns() - t0 < 10000000000ull)
        poll(NULL, 0, 1);
    if (atomic_load(&stalling)) {
        behind_its_back(rl->path, "UPDATE api_keys SET revoked_at = %lld WHERE id = '%s'",
                        (long long)kn_unix_now(), rl->key_id);
        rl->done = 1;
    }
    return NULL;
}

/* This test's node's heartbeat age, as the others read it. */
static int node_age(void *ud, const struct store_node *n)
{
    if (strcmp(n->id, "node-test") == 0)
        *(int64_t *)ud = n->age_ms;
    return 0;
}

/* The key's requests in key_usage_daily and its stored last use, read by another connection. */
static void usage_of(const char *path, const char *key_id, long long *requests, long long *last)
{
    sqlite3 *db;
    sqlite3_stmt *q;

    *requests = *last = -1;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    CHECK(sqlite3_prepare_v2(db,
                             "SELECT (SELECT coalesce(sum(requests), 0) FROM key_usage_daily "
                             "WHERE key_id = ?1), coalesce(last_used_at, 0) FROM api_keys "
                             "WHERE id = ?1",
                             -1, &q, NULL) == SQLITE_OK);
    sqlite3_bind_text(q, 1, key_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW) {
        *requests = sqlite3_column_int64(q, 0);
        *last = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* Waits (up to 5 s) for the store thread's flush to bring the key's stored requests to n. */
static long long last_use_after_flush(const char *path, const char *key_id, long long n)
{
    long long requests = -1, last = -1;
    uint64_t t0 = kn_mono_ns();

    while (kn_mono_ns() - t0 < 5000000000ull) {
        usage_of(path, key_id, &requests, &last);
        if (requests >= n)
            break;
        poll(NULL, 0, 20);
    }
    CHECK(requests == n);
    return last;
}

/* A new key like spec, made through the commands' connection and applied by the store thread;
 * its record, or NULL. */
static struct keyrec *new_key(struct store *s, struct keysync *ks, struct keytable *kt,
                              const uint8_t *secret, const struct lifecycle_spec *spec,
                              const struct lifecycle_actor *who, struct store_key *k)
{
    char sk[APIKEY_MAX_LEN + 1];

    CHECK(lifecycle_create(s, secret, spec, who, k, sk) == STORE_OK);
    keysync_sync_now(ks);
    struct keyrec *r = find(kt, k);
    CHECK(r != NULL);
    return r;
}

int main(void)
{
    char path[128], err[256], sk[APIKEY_MAX_LEN + 1], sk2[APIKEY_MAX_LEN + 1], msg[600];
    uint8_t secret[APIKEY_SECRET_LEN];
    struct lifecycle_actor who = {"cli", ""};
    struct store_account a;
    struct store_key k, k2, got;
    struct keyrec *r;
    char sql[256];

    CHECK(sodium_init() >= 0);
    randombytes_buf(secret, sizeof(secret));
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/konnect.db", dir);
    snprintf(plans_path, sizeof(plans_path), "%s/plans.json", dir);
    write_plans("{\"currency\":\"usd\",\"plans\":[{\"name\":\"first\"}]}");

    /* The commands' connection, and the server's store thread. */
    struct store *s = store_open(path, 1, err, sizeof(err));
    CHECK(s != NULL);
    if (s == NULL)
        return unit_result();
    CHECK(store_account_create(s, "dev@example.com", NULL, NULL, &a) == STORE_OK);
    struct keytable *kt = keytable_new(16);
    struct plans *plans = plans_load(plans_path, 1, err, sizeof(err));
    CHECK(plans != NULL);
    struct store_node node = {.id = "node-test", .counters = "local", .version = "test"};
    struct keysync_config kc = {.db_url = path,
                                .plans = plans,
                                .plans_path = plans_path,
                                .plans_required = 1,
                                .node = &node,
                                .after_read = after_read};
    struct keysync *ks = keysync_start(kt, &kc, err, sizeof(err));
    CHECK(ks != NULL);
    if (ks == NULL) {
        fprintf(stderr, "%s\n", err);
        return unit_result();
    }
    uint64_t age;
    CHECK(keysync_ready(ks, &age) && age < 3000);

    /* A new key is in the table once the change is applied, with its account and settings. */
    struct lifecycle_spec spec = {.account_id = a.id,
                                  .name = "laptop",
                                  .mode = APIKEY_MODE_LIVE,
                                  .env = APIKEY_ENV_PRODUCTION,
                                  .allowlist = ""};
    CHECK(lifecycle_create(s, secret, &spec, &who, &k, sk) == STORE_OK);
    keysync_sync_now(ks);
    CHECK((r = find(kt, &k)) != NULL);
    if (r == NULL)
        return unit_result();
    char rid[KEY_ID_SIZE];
    CHECK(!strcmp(keyrec_id(r, rid), k.id) && keyrec_mode(r) == APIKEY_MODE_LIVE &&
          keyrec_acct(r) != NULL && !strcmp(keyrec_acct(r)->id, a.id));
    CHECK(keyrec_class(r)->revoked_at == 0 && keyrec_class(r)->expires_at == 0);
    CHECK(allows(r, "198.51.100.1"));

    /* An allowlist, then an expiry, each applied to the same record. */
    CHECK(store_key_find(s, k.id, NULL, &got) == STORE_OK);
    CHECK(lifecycle_set_allowlist(s, &got, "192.0.2.0/24", &who) == STORE_OK);
    keysync_sync_now(ks);
    CHECK(allows(r, "192.0.2.9") && !allows(r, "198.51.100.1"));
    int64_t when = kn_unix_now() + 3600;
    CHECK(lifecycle_expire(s, &got, when, &who) == STORE_OK);
    keysync_sync_now(ks);
    CHECK(keyrec_class(r)->expires_at == when);

    /* A roll: the replacement appears, the old key expires after its grace. */
    CHECK(store_key_find(s, k.id, NULL, &got) == STORE_OK);
    CHECK(lifecycle_roll(s, secret, &got, 60, &who, &k2, sk2) == STORE_OK);
    keysync_sync_now(ks);
    struct keyrec *r2 = find(kt, &k2);
    CHECK(r2 != NULL && allows(r2, "192.0.2.9") && !allows(r2, "198.51.100.1"));
    CHECK(keyrec_class(r)->expires_at <= kn_unix_now() + 60);

    /* A revocation reaches the table without being asked for: a commit of this process wakes
     * the store thread (well under a second; the periodic read would take up to one). */
    CHECK(store_key_find(s, k2.id, NULL, &got) == STORE_OK);
    uint64_t t0 = kn_mono_ns();
    CHECK(lifecycle_revoke(s, &got, &who) == STORE_OK);
    while (r2 != NULL && keyrec_class(r2)->revoked_at == 0 && kn_mono_ns() - t0 < 2000000000ull)
        poll(NULL, 0, 1);
    CHECK(r2 != NULL && keyrec_class(r2)->revoked_at != 0);
    CHECK(kn_mono_ns() - t0 < 500000000ull);

    /* Request counts and last uses, written back every second. A last use is written when it
     * is a minute past the stored one (the store thread skips what the store would leave), never
     * backward, and not held back by what the thread remembers of its own writes when the row
     * was moved on by another writer. */
    struct store_key k4;
    struct keyrec *r4 = new_key(s, ks, kt, secret, &spec, &who, &k4);
    if (r4 == NULL)
        return unit_result();
    int64_t t = kn_unix_now();
    keytable_touch(kt, r4, t, 1);
    CHECK(last_use_after_flush(path, k4.id, 1) == t);
    keytable_touch(kt, r4, t + 30, 1);
    CHECK(last_use_after_flush(path, k4.id, 2) == t);
    keytable_touch(kt, r4, t + 61, 1);
    CHECK(last_use_after_flush(path, k4.id, 3) == t + 61);
    keytable_touch(kt, r4, t + 62, 1);
    CHECK(last_use_after_flush(path, k4.id, 4) == t + 61);
    behind_its_back(path, "UPDATE api_keys SET last_used_at = %lld WHERE id = '%s'",
                    (long long)t + 300, k4.id);
    keytable_touch(kt, r4, t + 200, 1);
    CHECK(last_use_after_flush(path, k4.id, 5) == t + 300);
    keytable_touch(kt, r4, t + 400, 1);
    CHECK(last_use_after_flush(path, k4.id, 6) == t + 400);
    /* The thread trusts what it wrote: with the row's last use taken away behind its back (which
     * nothing in Konnect does), a use less than a minute after its own write is not looked up
     * (the SQL alone would have written it); a minute after, it is written again. */
    behind_its_back(path, "UPDATE api_keys SET last_used_at = NULL WHERE id = '%s'", k4.id);
    keytable_touch(kt, r4, t + 430, 1);
    CHECK(last_use_after_flush(path, k4.id, 7) == 0);
    keytable_touch(kt, r4, t + 460, 1);
    CHECK(last_use_after_flush(path, k4.id, 8) == t + 460);

    /* A reading held up for longer than the others wait for this server's next heartbeat
     * (frozen between its queries and its heartbeat) may have missed a change committed
     * meanwhile that nobody waits for it to apply: it does not make the server fresh. At no
     * moment does a loop see a fresh server whose table lacks the revocation. The revocation is
     * made by another process's connection, which reaches the server only through the periodic
     * read. */
    struct store_key k5;
    struct keyrec *r5 = new_key(s, ks, kt, secret, &spec, &who, &k5);
    if (r5 == NULL)
        return unit_result();
    /* Held up on a reading of the periodic ticks (a second after the last heartbeat), for long
     * enough that the others stop waiting before it ends, but not for so long that the time it
     * began is 3 s old when it ends. */
    poll(NULL, 0, 1500);
    atomic_store(&stall_ms, 2600);
    t0 = kn_mono_ns();
    while (!atomic_load(&stalling) && kn_mono_ns() - t0 < 3000000000ull)
        poll(NULL, 0, 1);
    CHECK(atomic_load(&stalling));
    behind_its_back(path, "UPDATE api_keys SET revoked_at = %lld WHERE id = '%s'",
                    (long long)kn_unix_now(), k5.id);
    int fresh_unrevoked = 0, revoked = 0, given_up = 0;
    t0 = kn_mono_ns();
    while (!revoked && kn_mono_ns() - t0 < 6000000000ull) {
        /* Once the others have seen its heartbeat 3 s old, a command waiting for the revocation
         * may have returned: from then on the loops must not see a fresh server without it. */
        int64_t node_ms = -1;
        CHECK(store_nodes_list(s, node_age, &node_ms) == STORE_OK);
        given_up |= node_ms >= PROPAGATION_LIVE_MS;
        /* As a request does it: the reading sampled before the key is looked at, the clock
         * after. */
        uint64_t reading = keysync_reading(ks);
        revoked = keyrec_class(r5)->revoked_at != 0;
        int stale = keysync_stale_since(reading);
        fresh_unrevoked += given_up && !stale && !revoked;
        poll(NULL, 0, 1);
    }
    CHECK(revoked && given_up); /* The others did stop waiting for it. */
    CHECK(fresh_unrevoked == 0);
    if (fresh_unrevoked != 0)
        fprintf(stderr, "fresh without the revocation the others no longer wait for: %d times\n",
                fresh_unrevoked);

    /* Under a load that never lets the store thread's mailbox empty, a revocation made by
     * another process (which reaches the server only through the change feed's periodic read)
     * still reaches the table within about a second: the thread serves the mailbox a round at a
     * time, and reads the change feed between rounds. */
    struct store_key k3;
    CHECK(lifecycle_create(s, secret, &spec, &who, &k3, sk) == STORE_OK);
    keysync_sync_now(ks);
    struct keyrec *r3 = find(kt, &k3);
    CHECK(r3 != NULL);
    flood_start(ks, &k3);
    poll(NULL, 0, 200);
    behind_its_back(path, "UPDATE api_keys SET revoked_at = %lld WHERE id = '%s'",
                    (long long)kn_unix_now(), k3.id);
    t0 = kn_mono_ns();
    while (r3 != NULL && keyrec_class(r3)->revoked_at == 0 && kn_mono_ns() - t0 < 5000000000ull)
        poll(NULL, 0, 5);
    CHECK(r3 != NULL && keyrec_class(r3)->revoked_at != 0);
    CHECK(kn_mono_ns() - t0 < 2500000000ull);
    uint64_t billed = atomic_load(&flood_billed);
    flood_stop();
    CHECK(billed > 100); /* The flood really ran. */

    /* An allowlist that cannot be read (written behind Konnect's back) fails closed. */
    behind_its_back(path, "UPDATE api_keys SET ip_allowlist = 'not an address' WHERE id = '%s'",
                    k.id);
    keysync_sync_now(ks);
    CHECK(!allows(r, "192.0.2.9") && !allows(r, "198.51.100.1") && !allows(r, "127.0.0.1"));

    /* The plans, reloaded through the store thread's mailbox; an invalid file keeps them. */
    write_plans("{\"currency\":\"usd\",\"plans\":[{\"name\":\"second\"}]}");
    CHECK(keysync_reload_plans(ks, msg, sizeof(msg)) == 0);
    CHECK(plans_find(keysync_plans(ks), "second") != NULL);
    write_plans("{\"plans\": 7}");
    CHECK(keysync_reload_plans(ks, msg, sizeof(msg)) == -1);
    CHECK(msg[0] != '\0' && plans_find(keysync_plans(ks), "second") != NULL);

    /* Ledger rows: acknowledged once written; the same request id again is billed before, and
     * acknowledged as billed (never twice in the ledger). */
    CHECK(bill(ks, "req_000000000000000000000001", &k) == 1);
    CHECK(bill(ks, "req_000000000000000000000001", &k) == 1);
    CHECK(bill(ks, "req_000000000000000000000002", &k) == 1);

    keysync_stop(ks);
    keytable_free(kt);

    /* At start, a revocation committed after the keys were loaded and before the first
     * heartbeat (the start held up in between): nobody waited for this server, so once
     * keysync_start returns the table has it, or the server is stale. */
    struct store_key k6;
    CHECK(lifecycle_create(s, secret, &spec, &who, &k6, sk) == STORE_OK);
    struct keytable *kt2 = keytable_new(16);
    struct store_node node2 = {.id = "node-start", .counters = "local", .version = "test"};
    kc.node = &node2;
    write_plans("{\"currency\":\"usd\",\"plans\":[{\"name\":\"first\"}]}");
    CHECK((kc.plans = plans_load(plans_path, 1, err, sizeof(err))) != NULL); /* The first's went
                                                                               with it. */
    struct revoke_later rl = {.path = path, .key_id = k6.id};
    pthread_t rt;
    atomic_store(&stall_ms, 2600);
    CHECK(pthread_create(&rt, NULL, revoke_while_stalled, &rl) == 0);
    struct keysync *ks2 = keysync_start(kt2, &kc, err, sizeof(err));
    pthread_join(rt, NULL);
    CHECK(ks2 != NULL && rl.done);
    if (ks2 != NULL) {
        uint64_t reading = keysync_reading(ks2);
        struct keyrec *r6 = find(kt2, &k6);
        CHECK(r6 != NULL);
        CHECK(keysync_stale_since(reading) || (r6 != NULL && keyrec_class(r6)->revoked_at != 0));
        keysync_stop(ks2);
    }
    keytable_free(kt2);
    store_close(s);
    snprintf(sql, sizeof(sql), "rm -rf %s", dir);
    if (system(sql) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return unit_result();
}
