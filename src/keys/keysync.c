#include "keys/keysync.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "limits/ratelimit.h"

#define TICK_MS 1000
#define LEDGER_BATCH_MAX 4096
/* Group commits under load: when a commit carried at least LEDGER_BUSY_ROWS rows, the next one
 * waits LEDGER_DELAY_US to gather more (PostgreSQL's commit_delay with commit_siblings). Each
 * commit costs about the same whatever its size (locks, WAL frames), so fewer, larger commits
 * leave more of the cores to the requests; at low load a row is committed at once. */
#define LEDGER_BUSY_ROWS 8
#define LEDGER_DELAY_US 500

/* The accounts, by id: written and read by the store thread only (keys keep pointers to the
 * records, which live as long as the keysync). */
struct accounts {
    struct acctrec **slot;
    size_t mask, count;
};

struct keysync {
    struct keytable *kt;
    struct store *store;
    char *socket_path;
    int listen_fd;
    int wake_fd;
    pthread_t thread;
    struct store_cursor key_cursor; /* Where the key change feed has been read to. */
    _Atomic int stop;
    _Atomic int ready;
    _Atomic uint64_t last_ok_ns;
    struct store_usage *batch; /* The usage being written, and the records it came from. */
    struct keyrec **batch_recs;
    size_t cap;
    /* In-process sync requests: a request bumps `requested` and waits until `completed` passes
     * it. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t requested, completed;
    /* The plans in force; replaced plans are kept until stop, for the pointers into them that
     * requests in flight and account records still hold. */
    _Atomic(const struct plans *) plans;
    struct plans *owned;    /* The plans in force, owned (the first ones, or a reload's). */
    struct plans **retired; /* Earlier ones. */
    size_t nretired;
    char **wanted; /* Names of plans accounts are on but the plans do not define. */
    size_t nwanted;
    char *plans_path; /* To reload from (KONNECT_PLANS or the default). */
    int plans_required;
    /* Plan reloads asked for by other threads (SIGHUP): a counter and the answer. */
    uint64_t reload_requested, reload_completed;
    char reload_msg[512];
    int reload_ok;
    struct accounts accounts;
    struct store_cursor account_cursor;
    /* The ledger queue: entries waiting for the next group commit. */
    pthread_mutex_t ledger_lock;
    struct ledger_entry *ledger_head, **ledger_tail;
    int ledger_signaled; /* 1 while the thread has been woken and not yet found the queue empty. */
    struct store_ledger_row *ledger_rows;
    uint8_t *ledger_outcome;
    size_t ledger_last_batch; /* Rows written by the last call of write_ledger. */
};

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: ids are random already. */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct acctrec *account_get(struct keysync *ks, const char *id, int create)
{
    struct accounts *t = &ks->accounts;
    size_t i;

    if (t->slot == NULL) {
        t->mask = 1023;
        t->slot = kn_calloc(t->mask + 1, sizeof(*t->slot));
    }
    for (i = hash_id(id) & t->mask; t->slot[i] != NULL; i = (i + 1) & t->mask)
        if (strcmp(t->slot[i]->id, id) == 0)
            return t->slot[i];
    if (!create)
        return NULL;
    if ((t->count + 1) * 2 > t->mask + 1) {
        struct accounts bigger = {kn_calloc((t->mask + 1) * 2, sizeof(*t->slot)),
                                  (t->mask + 1) * 2 - 1, t->count};
        for (size_t j = 0; j <= t->mask; j++) {
            if (t->slot[j] == NULL)
                continue;
            size_t k = hash_id(t->slot[j]->id) & bigger.mask;
            while (bigger.slot[k] != NULL)
                k = (k + 1) & bigger.mask;
            bigger.slot[k] = t->slot[j];
        }
        free(t->slot);
        *t = bigger;
        for (i = hash_id(id) & t->mask; t->slot[i] != NULL; i = (i + 1) & t->mask)
            ;
    }
    struct acctrec *a = kn_calloc(1, sizeof(*a));
    kn_strlcpy(a->id, id, sizeof(a->id));
    const struct plan *p = plans_find(atomic_load(&ks->plans), NULL);
    quota_configure(a, p, p->requests_per_month, p->tokens_per_month);
    t->slot[i] = a;
    t->count++;
    return a;
}

static void free_plans(struct keysync *ks)
{
    plans_free(ks->owned);
    for (size_t i = 0; i < ks->nretired; i++)
        plans_free(ks->retired[i]);
    free(ks->retired);
    for (size_t i = 0; i < ks->nwanted; i++)
        free(ks->wanted[i]);
    free(ks->wanted);
    free(ks->plans_path);
}

static void free_accounts(struct keysync *ks)
{
    for (size_t i = 0; ks->accounts.slot != NULL && i <= ks->accounts.mask; i++)
        free(ks->accounts.slot[i]);
    free(ks->accounts.slot);
    ks->accounts.slot = NULL;
}

/* The name of a plan an account is on but the plans do not define, kept until stop. */
static const char *wanted_name(struct keysync *ks, const char *name)
{
    for (size_t i = 0; i < ks->nwanted; i++)
        if (strcmp(ks->wanted[i], name) == 0)
            return ks->wanted[i];
    ks->wanted = kn_realloc(ks->wanted, (ks->nwanted + 1) * sizeof(*ks->wanted));
    return ks->wanted[ks->nwanted++] = kn_strdup(name);
}

static int apply_account(void *ud, const struct store_account *s)
{
    struct keysync *ks = ud;
    struct acctrec *a = account_get(ks, s->id, 1);
    const struct plan *p = plans_find(atomic_load(&ks->plans), s->plan);

    if (p == NULL) {
        /* A plan these plans do not define (taken out of the file, or set before the file was
         * reloaded): refuse the account's live traffic rather than serve it free or at another
         * plan's prices, and say so (once per plan name). */
        const char *was = atomic_load(&a->plan_wanted);
        if (atomic_load(&a->plan) != NULL || was == NULL || strcmp(was, s->plan) != 0)
            fprintf(stderr,
                    "konnect: account %s is on plan \"%s\", which the plans file does not "
                    "define; its live requests are refused (503 plan_unavailable) until the plan "
                    "is added and the plans reloaded, or the account moved to another plan\n",
                    s->id, s->plan);
        atomic_store(&a->plan_wanted, wanted_name(ks, s->plan));
        quota_configure(a, NULL, 0, 0);
        return 0;
    }
    quota_configure(
        a, p,
        s->quota_requests == STORE_QUOTA_FROM_PLAN ? p->requests_per_month : s->quota_requests,
        s->quota_tokens == STORE_QUOTA_FROM_PLAN ? p->tokens_per_month : s->quota_tokens);
    return 0;
}

/* Puts new plans in force (on the store thread): every account is applied again from the store,
 * so that each record points into the new plans. The old plans stay until stop. */
static void use_plans(struct keysync *ks, struct plans *p)
{
    struct store_cursor cursor;

    if (ks->owned != NULL) {
        ks->retired = kn_realloc(ks->retired, (ks->nretired + 1) * sizeof(*ks->retired));
        ks->retired[ks->nretired++] = ks->owned;
    }
    ks->owned = p;
    atomic_store(&ks->plans, p);
    if (store_accounts_load(ks->store, &cursor, apply_account, ks) != STORE_OK)
        fprintf(stderr,
                "konnect: cannot read accounts after reloading plans (the next change "
                "to each account applies them): %s\n",
                store_errmsg(ks->store));
}

/* Reads the plans file again; on the store thread. An invalid file keeps the plans in force.
 * Writes what happened to msg. Returns 0 or -1. */
static int reload_plans(struct keysync *ks, char *msg, size_t size)
{
    char err[512];
    struct plans *p = plans_load(ks->plans_path, ks->plans_required, err, sizeof(err));

    if (p == NULL) {
        snprintf(msg, size, "the plans in force are kept: %s", err);
        return -1;
    }
    use_plans(ks, p);
    if (p->builtin)
        snprintf(msg, size, "the built-in plan is in force (no file at %s)", ks->plans_path);
    else
        snprintf(msg, size, "%zu plan%s in force from %s", p->count, p->count == 1 ? "" : "s",
                 ks->plans_path);
    return 0;
}

static int load_month(void *ud, const struct store_month_total *t)
{
    struct keysync *ks = ud;
    quota_load(account_get(ks, t->account_id, 1), kn_month_of(kn_unix_now()), t->requests,
               t->tokens);
    return 0;
}

int keysync_key_to_rec(const struct store_key *k, uint32_t requests_today, int64_t now,
                       struct keyrec_data *out)
{
    memset(out, 0, sizeof(*out));
    if (apikey_mode_parse(k->mode, &out->mode) != 0 ||
        apikey_env_parse(k->environment, &out->env) != 0)
        return -1;
    memcpy(out->hash, k->hash, APIKEY_HASH_LEN);
    kn_strlcpy(out->id, k->id, sizeof(out->id));
    kn_strlcpy(out->account_id, k->account_id, sizeof(out->account_id));
    out->expires_at = k->expires_at;
    out->revoked_at = k->revoked_at;
    out->last_used = k->last_used_at;
    out->day_cell = requests_today ? ratelimit_daily_cell(requests_today, now) : 0;
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
    d.acct = account_get(ks, k->account_id, 1);
    keytable_upsert(ks->kt, &d);
    free(allow);
    return 0;
}

static void mark(struct keysync *ks, int ok)
{
    atomic_store(&ks->ready, ok);
    if (ok)
        atomic_store(&ks->last_ok_ns, kn_mono_ns());
}

static int sync_changes(struct keysync *ks)
{
    int ok = store_account_changes(ks->store, &ks->account_cursor, apply_account, ks) == STORE_OK &&
             store_key_changes(ks->store, kn_unix_now() / 86400, &ks->key_cursor, apply_key, ks) ==
                 STORE_OK;
    if (!ok)
        fprintf(stderr, "konnect: cannot read key changes: %s\n", store_errmsg(ks->store));
    mark(ks, ok);
    return ok;
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
        next = r->dirty_next;
        uint32_t requests = keytable_settle(r);
        if (n == ks->cap) {
            ks->cap = ks->cap ? ks->cap * 2 : 256;
            ks->batch = kn_realloc(ks->batch, ks->cap * sizeof(*ks->batch));
            ks->batch_recs = kn_realloc(ks->batch_recs, ks->cap * sizeof(*ks->batch_recs));
        }
        struct store_usage *u = &ks->batch[n];
        kn_strlcpy(u->key_id, r->id, sizeof(u->key_id));
        u->day = now / 86400;
        u->requests = requests;
        u->last_used = atomic_load(&r->last_used);
        ks->batch_recs[n++] = r;
    }
    if (n == 0 || store_usage_add(ks->store, ks->batch, n) == STORE_OK)
        return 0;
    fprintf(stderr, "konnect: cannot record key usage (will retry): %s\n", store_errmsg(ks->store));
    for (size_t i = 0; i < n; i++)
        keytable_requeue(ks->kt, ks->batch_recs[i], ks->batch[i].requests);
    return -1;
}

void keysync_bill(struct keysync *ks, struct ledger_entry *e)
{
    uint64_t one = 1;
    int wake;

    e->next = NULL;
    pthread_mutex_lock(&ks->ledger_lock);
    *ks->ledger_tail = e;
    ks->ledger_tail = &e->next;
    wake = !ks->ledger_signaled;
    ks->ledger_signaled = 1;
    pthread_mutex_unlock(&ks->ledger_lock);
    if (wake && write(ks->wake_fd, &one, sizeof(one)) != sizeof(one))
        kn_fatal("cannot wake the store thread");
}

/* Writes every queued ledger row, in group commits of up to LEDGER_BATCH_MAX rows, and tells each
 * entry's owner once its row is durable (or was billed by an earlier try of the same batch). A
 * commit that lost a race (STORE_RETRY) is tried again at once, a few times; a store that fails
 * otherwise is retried for about a second before the rows are given up (their requests are then
 * not delivered, so they are not billed either). A row the store reports voided is given up at
 * once: a fence was put on its request. */
static void write_ledger(struct keysync *ks)
{
    static const unsigned backoff_ms[] = {10, 50, 200, 750};
    enum { RETRIES_AT_ONCE = 3 };

    if (ks->ledger_last_batch >= LEDGER_BUSY_ROWS) {
        struct timespec delay = {0, LEDGER_DELAY_US * 1000};
        nanosleep(&delay, NULL);
    }
    ks->ledger_last_batch = 0;

    for (;;) {
        struct ledger_entry *list, *e, *next;
        size_t n = 0;
        int ok = 0;

        pthread_mutex_lock(&ks->ledger_lock);
        list = ks->ledger_head;
        for (e = list; e != NULL && n < LEDGER_BATCH_MAX - 1; e = e->next)
            n++;
        if (list == NULL) {
            ks->ledger_signaled = 0;
            pthread_mutex_unlock(&ks->ledger_lock);
            return;
        }
        /* Take the first n + 1 entries (or all of them). */
        ks->ledger_head = e != NULL ? e->next : NULL;
        if (e != NULL)
            e->next = NULL;
        if (ks->ledger_head == NULL)
            ks->ledger_tail = &ks->ledger_head;
        pthread_mutex_unlock(&ks->ledger_lock);

        n = 0;
        for (e = list; e != NULL; e = e->next)
            ks->ledger_rows[n++] = e->row;
        ks->ledger_last_batch += n;
        for (size_t attempt = 0, at_once = 0;;) {
            int r = store_ledger_add(ks->store, ks->ledger_rows, n, ks->ledger_outcome);
            if (r == STORE_OK) {
                ok = 1;
                break;
            }
            if (r == STORE_RETRY && at_once++ < RETRIES_AT_ONCE)
                continue;
            fprintf(stderr, "konnect: cannot write %zu ledger rows (attempt %zu): %s\n", n,
                    attempt + 1, store_errmsg(ks->store));
            if (attempt == sizeof(backoff_ms) / sizeof(backoff_ms[0]))
                break;
            poll(NULL, 0, (int)backoff_ms[attempt++]);
        }
        n = 0;
        for (e = list; e != NULL; e = next, n++) {
            next = e->next;
            e->done(e, ok && ks->ledger_outcome[n] != STORE_LEDGER_VOIDED);
        }
    }
}

/* Control-socket clients being read: each is served once its line has arrived, and dropped
 * after CLIENT_MS without one. None ever makes the store thread wait: the ledger's group commits
 * go on between their reads. */
#define CLIENTS_MAX 8
#define CLIENT_MS 2000

struct client {
    int fd;
    uint64_t deadline_ns;
    size_t len;
    char line[128];
};

/* Answers one command line. */
static void answer_client(struct keysync *ks, struct client *cl)
{
    char buf[700];
    int len;

    cl->line[strcspn(cl->line, "\r\n")] = '\0';
    if (strcmp(cl->line, "sync") == 0) {
        len = sync_changes(ks) ? snprintf(buf, sizeof(buf), "ok\n")
                               : snprintf(buf, sizeof(buf), "error\n");
    } else if (strcmp(cl->line, "reload-plans") == 0) {
        char msg[600];
        int ok = reload_plans(ks, msg, sizeof(msg)) == 0;
        fprintf(stderr, "konnect: plans reloaded on request: %s\n", msg);
        len = snprintf(buf, sizeof(buf), "%s %s\n", ok ? "ok" : "error", msg);
    } else if (strncmp(cl->line, "has-plan ", 9) == 0) {
        len =
            snprintf(buf, sizeof(buf), "%s\n",
                     plans_find(atomic_load(&ks->plans), cl->line + 9) != NULL ? "ok" : "unknown");
    } else {
        len = snprintf(buf, sizeof(buf), "error unknown command\n");
    }
    /* A few bytes into a local socket's empty buffer: never blocks; a client gone is no matter. */
    if (send(cl->fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL) != len) {
        /* The client went away; nothing to do. */
    }
}

/* Reads what a client sent; returns 1 when it is done with (answered, gone or silent too long). */
static int read_client(struct keysync *ks, struct client *cl, uint64_t now)
{
    ssize_t n = recv(cl->fd, cl->line + cl->len, sizeof(cl->line) - 1 - cl->len, MSG_DONTWAIT);

    if (n > 0) {
        cl->len += (size_t)n;
        cl->line[cl->len] = '\0';
        if (memchr(cl->line, '\n', cl->len) != NULL || cl->len == sizeof(cl->line) - 1) {
            answer_client(ks, cl);
            return 1;
        }
        return 0;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return 1;
    return now >= cl->deadline_ns;
}

static void *thread_main(void *arg)
{
    struct keysync *ks = arg;
    uint64_t next_tick = kn_mono_ns() + TICK_MS * 1000000ull;
    struct client clients[CLIENTS_MAX];
    size_t nclients = 0;

    while (!atomic_load(&ks->stop)) {
        struct pollfd p[3 + CLIENTS_MAX] = {
            {.fd = ks->wake_fd, .events = POLLIN},
            {.fd = nclients < CLIENTS_MAX ? ks->listen_fd : -1, .events = POLLIN},
            {.fd = store_changes_fd(ks->store), .events = POLLIN}};
        uint64_t now = kn_mono_ns(), wake = next_tick;
        for (size_t i = 0; i < nclients; i++) {
            p[3 + i].fd = clients[i].fd;
            p[3 + i].events = POLLIN;
            if (clients[i].deadline_ns < wake)
                wake = clients[i].deadline_ns;
        }
        int timeout = now >= wake ? 0 : (int)((wake - now) / 1000000) + 1;
        int n = poll(p, 3 + nclients, timeout);

        if (n > 0 && (p[0].revents & POLLIN) != 0) {
            uint64_t v;
            if (read(ks->wake_fd, &v, sizeof(v)) < 0) {
                /* Nothing to read: another wake-up got there first. */
            }
            pthread_mutex_lock(&ks->lock);
            uint64_t target = ks->requested, reload = ks->reload_requested;
            pthread_mutex_unlock(&ks->lock);
            if (reload > ks->reload_completed) {
                char msg[sizeof(ks->reload_msg)];
                int ok = reload_plans(ks, msg, sizeof(msg)) == 0;
                pthread_mutex_lock(&ks->lock);
                kn_strlcpy(ks->reload_msg, msg, sizeof(ks->reload_msg));
                ks->reload_ok = ok;
                ks->reload_completed = reload;
                pthread_cond_broadcast(&ks->cond);
                pthread_mutex_unlock(&ks->lock);
            }
            if (target > ks->completed) {
                sync_changes(ks);
                pthread_mutex_lock(&ks->lock);
                ks->completed = target;
                pthread_cond_broadcast(&ks->cond);
                pthread_mutex_unlock(&ks->lock);
            }
        }
        if (n > 0 && (p[2].revents & POLLIN) != 0) {
            /* A connection of this process committed a key or account change. */
            store_changes_drain(ks->store);
            sync_changes(ks);
        }
        write_ledger(ks);
        now = kn_mono_ns();
        for (size_t i = 0; i < nclients;) {
            if (((n > 0 && p[3 + i].revents != 0) || now >= clients[i].deadline_ns) &&
                read_client(ks, &clients[i], now)) {
                close(clients[i].fd);
                clients[i] = clients[--nclients];
                p[3 + i] = p[3 + nclients]; /* Keep each poll entry beside its client. */
                continue;
            }
            i++;
        }
        if (n > 0 && ks->listen_fd >= 0 && (p[1].revents & POLLIN) != 0 && nclients < CLIENTS_MAX) {
            int fd = accept4(ks->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                struct client *cl = &clients[nclients++];
                memset(cl, 0, sizeof(*cl));
                cl->fd = fd;
                cl->deadline_ns = now + CLIENT_MS * 1000000ull;
            }
        }
        if (kn_mono_ns() >= next_tick) {
            /* Ready means both halves of the round trip worked this time. */
            int ok = sync_changes(ks);
            if (flush_usage(ks) != 0 && ok)
                mark(ks, 0);
            next_tick = kn_mono_ns() + TICK_MS * 1000000ull;
        }
    }
    for (size_t i = 0; i < nclients; i++)
        close(clients[i].fd);
    write_ledger(ks);
    if (flush_usage(ks) != 0)
        fprintf(stderr, "konnect: usage of the last second could not be written at shutdown\n");
    return NULL;
}

static int bind_socket(struct keysync *ks, const char *path, char *err, size_t errsize)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr,
                "konnect: control socket path %s is too long; key changes made by commands "
                "will reach this server within %d ms instead of at once\n",
                path, TICK_MS);
        return 0;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    /* The caller holds the data directory's lock, so a socket left here is a dead server's. */
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0600) != 0 ||
        listen(fd, 16) != 0) {
        snprintf(err, errsize, "cannot listen on control socket %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ks->listen_fd = fd;
    ks->socket_path = kn_strdup(path);
    return 0;
}

struct keysync *keysync_start(struct keytable *kt, const char *db_url, const char *socket_path,
                              struct plans *plans, const char *plans_path, int plans_required,
                              int durable, char *err, size_t errsize)
{
    struct keysync *ks = kn_calloc(1, sizeof(*ks));

    ks->kt = kt;
    ks->owned = plans;
    atomic_init(&ks->plans, plans);
    ks->plans_path = kn_strdup(plans_path);
    ks->plans_required = plans_required;
    pthread_mutex_init(&ks->lock, NULL);
    pthread_cond_init(&ks->cond, NULL);
    pthread_mutex_init(&ks->ledger_lock, NULL);
    ks->ledger_tail = &ks->ledger_head;
    ks->ledger_rows = kn_malloc(LEDGER_BATCH_MAX * sizeof(*ks->ledger_rows));
    ks->ledger_outcome = kn_malloc(LEDGER_BATCH_MAX);
    ks->listen_fd = -1;
    ks->wake_fd = -1;
    /* The one writer of the store: checkpoints on a thread of their own, so that no commit waits
     * for one, and the ledger's durability as configured. */
    if ((ks->store = store_open_with(db_url,
                                     durable ? "sync=full&checkpoint=background"
                                             : "sync=normal&checkpoint=background",
                                     1, err, errsize)) == NULL)
        goto fail;
    if (store_accounts_load(ks->store, &ks->account_cursor, apply_account, ks) != STORE_OK ||
        store_usage_month_totals(ks->store, kn_month_of(kn_unix_now()), load_month, ks) !=
            STORE_OK) {
        snprintf(err, errsize, "cannot load accounts: %s", store_errmsg(ks->store));
        goto fail;
    }
    int64_t count = 0;
    if (store_key_count(ks->store, &count) == STORE_OK)
        keytable_reserve(kt, (size_t)count + 1024);
    if (store_keys_load(ks->store, kn_unix_now() / 86400, &ks->key_cursor, apply_key, ks) !=
        STORE_OK) {
        snprintf(err, errsize, "cannot load keys: %s", store_errmsg(ks->store));
        goto fail;
    }
    mark(ks, 1);
    if (socket_path != NULL && bind_socket(ks, socket_path, err, errsize) != 0)
        goto fail;
    if ((ks->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        snprintf(err, errsize, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&ks->thread, NULL, thread_main, ks) != 0) {
        snprintf(err, errsize, "cannot start the store thread");
        goto fail;
    }
    return ks;
fail:
    if (ks->listen_fd >= 0) {
        close(ks->listen_fd);
        unlink(ks->socket_path);
    }
    if (ks->wake_fd >= 0)
        close(ks->wake_fd);
    free(ks->socket_path);
    store_close(ks->store);
    free_accounts(ks);
    free(ks->ledger_rows);
    free(ks->ledger_outcome);
    pthread_mutex_destroy(&ks->ledger_lock);
    free_plans(ks);
    free(ks);
    return NULL;
}

void keysync_stop(struct keysync *ks)
{
    uint64_t one = 1;

    if (ks == NULL)
        return;
    atomic_store(&ks->stop, 1);
    pthread_mutex_lock(&ks->lock);
    pthread_cond_broadcast(&ks->cond);
    pthread_mutex_unlock(&ks->lock);
    if (write(ks->wake_fd, &one, sizeof(one)) != sizeof(one))
        kn_fatal("cannot wake the store thread");
    pthread_join(ks->thread, NULL);
    if (ks->listen_fd >= 0) {
        close(ks->listen_fd);
        unlink(ks->socket_path);
    }
    close(ks->wake_fd);
    free(ks->socket_path);
    free(ks->batch);
    free(ks->batch_recs);
    pthread_mutex_destroy(&ks->lock);
    pthread_cond_destroy(&ks->cond);
    pthread_mutex_destroy(&ks->ledger_lock);
    free(ks->ledger_rows);
    free(ks->ledger_outcome);
    free_accounts(ks);
    store_close(ks->store);
    free_plans(ks);
    free(ks);
}

const struct plans *keysync_plans(struct keysync *ks)
{
    return atomic_load(&ks->plans);
}

int keysync_reload_plans(struct keysync *ks, char *msg, size_t size)
{
    uint64_t one = 1, mine;
    int ok;

    pthread_mutex_lock(&ks->lock);
    mine = ++ks->reload_requested;
    pthread_mutex_unlock(&ks->lock);
    if (write(ks->wake_fd, &one, sizeof(one)) != sizeof(one))
        kn_fatal("cannot wake the store thread");
    pthread_mutex_lock(&ks->lock);
    while (ks->reload_completed < mine && !atomic_load(&ks->stop))
        pthread_cond_wait(&ks->cond, &ks->lock);
    ok = ks->reload_completed >= mine && ks->reload_ok;
    kn_strlcpy(msg, ks->reload_completed >= mine ? ks->reload_msg : "the server is stopping", size);
    pthread_mutex_unlock(&ks->lock);
    return ok ? 0 : -1;
}

void keysync_sync_now(struct keysync *ks)
{
    uint64_t one = 1, mine;

    pthread_mutex_lock(&ks->lock);
    mine = ++ks->requested;
    pthread_mutex_unlock(&ks->lock);
    if (write(ks->wake_fd, &one, sizeof(one)) != sizeof(one))
        kn_fatal("cannot wake the store thread");
    pthread_mutex_lock(&ks->lock);
    while (ks->completed < mine && !atomic_load(&ks->stop))
        pthread_cond_wait(&ks->cond, &ks->lock);
    pthread_mutex_unlock(&ks->lock);
}

int keysync_ready(struct keysync *ks, uint64_t *age_ms)
{
    *age_ms = (kn_mono_ns() - atomic_load(&ks->last_ok_ns)) / 1000000;
    /* A store thread that stopped reporting is as bad as a store that fails. */
    return atomic_load(&ks->ready) && *age_ms < 3 * TICK_MS;
}

int keysync_ask(const char *socket_path, const char *command, char *answer, size_t size,
                int timeout_ms)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct pollfd p;
    ssize_t n;
    int fd, ret = -1;
    size_t len = strlen(command);

    answer[0] = '\0';
    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        ret = (errno == ENOENT || errno == ECONNREFUSED) ? 0 : -1;
        goto out;
    }
    char line[512];
    if (len + 1 >= sizeof(line))
        goto out;
    memcpy(line, command, len);
    line[len++] = '\n';
    /* One write, so that the server reads the whole line at once; no SIGPIPE if it is gone. */
    if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len)
        goto out;
    p.fd = fd;
    p.events = POLLIN;
    if (poll(&p, 1, timeout_ms) <= 0 || (n = read(fd, answer, size - 1)) <= 0)
        goto out;
    answer[n] = '\0';
    answer[strcspn(answer, "\n")] = '\0';
    ret = 1;
out:
    close(fd);
    return ret;
}

int keysync_notify(const char *socket_path, int timeout_ms)
{
    char answer[64];
    int r = keysync_ask(socket_path, "sync", answer, sizeof(answer), timeout_ms);

    if (r <= 0)
        return r;
    return strncmp(answer, "ok", 2) == 0 ? 1 : -1;
}
