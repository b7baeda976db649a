/* What only the PostgreSQL backend has, against the empty database given as the argument: the
 * change feed in commit order although sequence values are taken out of order (two writers in
 * interleaved transactions, neither change skipped), migrations under their lock, the password
 * kept out of messages, and a lost connection that the next call makes again. */
#include <libpq-fe.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "store/store.h"
#include "unit.h"

/* The ids a walk of the change feed gave, in order. */
struct seen {
    char ids[8][STORE_ID_SIZE];
    int n;
};

static int seen_cb(void *ud, const struct store_key *k, uint32_t today)
{
    struct seen *s = ud;
    (void)today;
    if (s->n < 8)
        strcpy(s->ids[s->n++], k->id);
    return 0;
}

static int has(const struct seen *s, const char *id)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->ids[i], id) == 0)
            return 1;
    return 0;
}

static PGconn *raw(const char *url)
{
    PGconn *c = PQconnectdb(url);
    CHECK(PQstatus(c) == CONNECTION_OK);
    return c;
}

static int exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static void add_key(struct store *s, const char *account_id, const char *id)
{
    struct store_key k;
    memset(&k, 0, sizeof(k));
    strcpy(k.id, id);
    strcpy(k.account_id, account_id);
    strcpy(k.name, id);
    strcpy(k.mode, "live");
    strcpy(k.environment, "production");
    randombytes_buf(k.hash, sizeof(k.hash));
    strcpy(k.hint, "sk_live_...x");
    strcpy(k.created_by, "cli");
    k.created_at = 100;
    CHECK(store_key_insert(s, &k, 1, NULL) == STORE_OK);
}

/* Two writers whose transactions interleave: T1 changes key a first but commits last would, with
 * plain sequence numbers, commit a number below one a reader has already passed. The change log's
 * lock makes T2 wait for T1, so a reader never passes a change it has not seen. */
static void test_commit_order(const char *url, struct store *s, const char *account_id)
{
    struct store_cursor cur;
    struct seen first = {0}, second = {0}, none = {0};
    PGconn *t1 = raw(url), *t2 = raw(url);

    add_key(s, account_id, "key_a");
    add_key(s, account_id, "key_b");
    CHECK(store_keys_load(s, 1, &cur, seen_cb, &none) == STORE_OK && none.n == 2);

    CHECK(exec_ok(t1, "BEGIN"));
    CHECK(exec_ok(t1, "UPDATE api_keys SET revoked_at = 1 WHERE id = 'key_a'"));
    /* T2 starts after T1 took its number, and would commit first. */
    CHECK(PQsendQuery(t2, "BEGIN; UPDATE api_keys SET revoked_at = 2 WHERE id = 'key_b'; "
                          "COMMIT") == 1);
    usleep(200 * 1000);
    CHECK(store_key_changes(s, 1, &cur, seen_cb, &first) == STORE_OK);
    CHECK(first.n == 0); /* Neither is committed: T2 waits for T1. */
    CHECK(exec_ok(t1, "COMMIT"));
    PGresult *r;
    while ((r = PQgetResult(t2)) != NULL) {
        CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
        PQclear(r);
    }
    CHECK(store_key_changes(s, 1, &cur, seen_cb, &second) == STORE_OK);
    CHECK(has(&second, "key_a") && has(&second, "key_b"));
    /* And a third read finds nothing new. */
    memset(&none, 0, sizeof(none));
    CHECK(store_key_changes(s, 1, &cur, seen_cb, &none) == STORE_OK && none.n == 0);
    PQfinish(t1);
    PQfinish(t2);
}

/* The backend kills its own connection (as a restarted server would): the call that finds it
 * fails as unavailable, and a later one connects again. */
static void test_reconnect(const char *url, struct store *s)
{
    PGconn *admin = raw(url);
    int64_t n = 0;

    CHECK(exec_ok(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                         "application_name = 'konnect' AND pid <> pg_backend_pid()"));
    usleep(100 * 1000);
    int r = store_key_count(s, &n);
    CHECK(r == STORE_UNAVAILABLE);
    /* Tried again at most once a second. */
    for (int i = 0; i < 30 && (r = store_key_count(s, &n)) != STORE_OK; i++)
        usleep(100 * 1000);
    CHECK(r == STORE_OK && n == 2);
    PQfinish(admin);
}

static int64_t scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int64_t v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
                    ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                    : -1;
    PQclear(r);
    return v;
}

/* A change's time is its transaction's start, so a later change can be older: the prune takes
 * only the log's prefix up to the first change still young, never a hole behind it that a reader
 * would read past; and a reader ahead of the log (a store restored from an older copy) learns
 * that it must load everything again. */
static void test_prune_takes_a_prefix(const char *url, struct store *s, const char *account_id)
{
    PGconn *c = raw(url);
    char sql[256], id[16];
    struct store_retention keep = {
        .change_log_days = 1, .throttle_s = 1, .done_days = 1, .session_idle_s = 3600};
    int64_t deleted, now = kn_unix_now();

    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "key_p%d", i);
        add_key(s, account_id, id);
    }
    int64_t young = scalar(c, "SELECT seq FROM key_changes WHERE key_id = 'key_p2'");
    int64_t newest = scalar(c, "SELECT max(seq) FROM key_changes");
    snprintf(sql, sizeof(sql),
             "UPDATE key_changes SET at = CASE WHEN seq = %lld THEN %lld ELSE 0 "
             "END",
             (long long)young, (long long)now);
    CHECK(exec_ok(c, sql));
    CHECK(store_prune(s, &keep, now, &deleted) == STORE_OK);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM key_changes WHERE seq < %lld",
             (long long)young);
    CHECK(scalar(c, sql) == 0);
    CHECK(scalar(c, "SELECT count(*) FROM key_changes WHERE key_id IN ('key_p3', 'key_p4')") == 2);
    struct store_cursor at_young = {{young}}, before = {{young - 2}}, ahead = {{newest + 3}};
    struct seen later = {0}, none = {0};
    CHECK(store_key_changes(s, 1, &at_young, seen_cb, &later) == STORE_OK && later.n == 2);
    CHECK(has(&later, "key_p3") && has(&later, "key_p4"));
    CHECK(store_key_changes(s, 1, &before, seen_cb, &none) == STORE_STALE && none.n == 0);
    CHECK(store_key_changes(s, 1, &ahead, seen_cb, &none) == STORE_STALE && none.n == 0);
    PQfinish(c);
}

static void test_redaction(void)
{
    char out[256];
    store_url_redacted("postgresql://bob:s3cret@db.example.com:5432/konnect", out, sizeof(out));
    CHECK_STR(out, "postgresql://bob:***@db.example.com:5432/konnect");
    store_url_redacted("postgresql://db/konnect?user=bob&password=s3cret&sslmode=require", out,
                       sizeof(out));
    CHECK_STR(out, "postgresql://db/konnect?user=bob&password=***&sslmode=require");
    store_url_redacted("postgres://bob@db/k?password=x", out, sizeof(out));
    CHECK_STR(out, "postgres://bob@db/k?password=***");
    store_url_redacted("postgresql://bob:@db/k", out, sizeof(out));
    CHECK_STR(out, "postgresql://bob:@db/k");
    CHECK(strstr(out, "s3cret") == NULL);
}

/* Invoice numbers issued by several servers at once: every one given once, none skipped. */
#define INVOICERS 4
#define INVOICES_EACH 25

struct invoicer {
    const char *url;
    int id;
    int64_t seq[INVOICES_EACH];
    int failed;
};

static void *issue_invoices(void *p)
{
    struct invoicer *v = p;
    char err[256], acct[32];
    struct store *s = store_open(v->url, 1, err, sizeof(err));

    if (s == NULL) {
        v->failed = 1;
        return NULL;
    }
    for (int i = 0; i < INVOICES_EACH; i++) {
        snprintf(acct, sizeof(acct), "acct_race%d", v->id);
        if (store_invoice_number(s, acct, 24000 + i, 1000, &v->seq[i]) != STORE_OK)
            v->failed = 1;
    }
    store_close(s);
    return NULL;
}

static void test_invoice_numbers_race(const char *url)
{
    struct invoicer v[INVOICERS];
    pthread_t t[INVOICERS];
    int seen[INVOICERS * INVOICES_EACH + 1] = {0};

    for (int i = 0; i < INVOICERS; i++) {
        v[i] = (struct invoicer){.url = url, .id = i};
        CHECK(pthread_create(&t[i], NULL, issue_invoices, &v[i]) == 0);
    }
    for (int i = 0; i < INVOICERS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < INVOICERS; i++) {
        CHECK(!v[i].failed);
        for (int j = 0; j < INVOICES_EACH; j++) {
            int64_t n = v[i].seq[j];
            CHECK(n >= 1 && n <= INVOICERS * INVOICES_EACH);
            if (n >= 1 && n <= INVOICERS * INVOICES_EACH)
                seen[n]++;
        }
    }
    for (int n = 1; n <= INVOICERS * INVOICES_EACH; n++)
        CHECK(seen[n] == 1);
}

int main(int argc, char **argv)
{
    char err[256];
    struct store_account a;

    CHECK(sodium_init() >= 0);
    test_redaction();
    if (argc != 2) {
        fprintf(stderr, "usage: test_store_pg_only POSTGRESQL_URL\n");
        return 2;
    }
    /* Two openings that migrate at once apply each migration once. */
    struct store *s = store_open(argv[1], 1, err, sizeof(err)), *s2;
    CHECK(s != NULL);
    if (s == NULL) {
        fprintf(stderr, "%s\n", err);
        return unit_result();
    }
    CHECK((s2 = store_open(argv[1], 1, err, sizeof(err))) != NULL);
    CHECK(store_migrate(s2) == STORE_OK);
    store_close(s2);
    CHECK(store_account_create(s, "order@example.com", NULL, NULL, &a) == STORE_OK);
    test_commit_order(argv[1], s, a.id);
    test_reconnect(argv[1], s);
    test_prune_takes_a_prefix(argv[1], s, a.id);
    test_invoice_numbers_race(argv[1]);
    /* A server that is not there: unavailable, not a crash or a hang. */
    CHECK(store_open("postgresql:///nope?host=/nonexistent", 1, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "cannot connect to PostgreSQL") != NULL);
    store_close(s);
    return unit_result();
}
