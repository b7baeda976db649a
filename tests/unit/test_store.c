/* The store interface on a real SQLite file: migrations, accounts, keys, change log, usage. */
#include <sodium.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/util.h"
#include "store/store.h"
#include "unit.h"

static int count_cb(void *ud, const struct store_key *k)
{
    (void)k;
    (*(int *)ud)++;
    return 0;
}

static int last_cb(void *ud, const struct store_key *k)
{
    *(struct store_key *)ud = *k;
    return 0;
}

int main(void)
{
    char dir[] = "/tmp/konnect-store-XXXXXX", path[128], err[256];
    struct store *s, *s2;
    struct store_account a, a2;
    struct store_key k, got;
    int64_t seq = 0, seq2 = 0;
    int n = 0;

    CHECK(sodium_init() >= 0);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/konnect.db", dir);
    s = store_open(path, 1, err, sizeof(err));
    CHECK(s != NULL);
    /* Migrating twice is harmless. */
    CHECK(store_migrate(s) == STORE_OK);
    CHECK(store_ping(s) == STORE_OK);

    CHECK(store_account_create(s, "Dev@Example.com", &a) == STORE_OK);
    CHECK_STR(a.email, "dev@example.com");
    CHECK(strncmp(a.id, "acct_", 5) == 0);
    CHECK(store_account_create(s, "dev@example.com", &a2) == STORE_CONFLICT);
    CHECK(store_account_create(s, "not-an-email", &a2) == STORE_ERROR);
    CHECK(store_account_create(s, "a b@example.com", &a2) == STORE_ERROR);
    CHECK(store_account_find(s, "DEV@example.com", &a2) == STORE_OK && !strcmp(a2.id, a.id));
    CHECK(store_account_find(s, a.id, &a2) == STORE_OK);
    CHECK(store_account_find(s, "nobody@example.com", &a2) == STORE_NOT_FOUND);

    CHECK(store_keys_load(s, 1, &seq, count_cb, &n) == STORE_OK && n == 0 && seq == 0);

    memset(&k, 0, sizeof(k));
    strcpy(k.id, "key_one");
    strcpy(k.account_id, a.id);
    strcpy(k.name, "laptop");
    strcpy(k.mode, "test");
    strcpy(k.environment, "development");
    randombytes_buf(k.hash, sizeof(k.hash));
    strcpy(k.hint, "sk_test_\xe2\x80\xa6"
                   "abcd");
    strcpy(k.created_by, "cli");
    k.created_at = 100;
    CHECK(store_key_insert(s, &k, 1) == STORE_OK);
    /* The hash is unique. */
    strcpy(k.id, "key_two");
    CHECK(store_key_insert(s, &k, 1) == STORE_ERROR);

    /* Another connection sees the insert in the change log. */
    s2 = store_open(path, 1, err, sizeof(err));
    CHECK(s2 != NULL);
    memset(&got, 0, sizeof(got));
    CHECK(store_key_changes(s2, 1, &seq2, last_cb, &got) == STORE_OK);
    CHECK(seq2 == 1 && strcmp(got.id, "key_one") == 0 && strcmp(got.name, "laptop") == 0);
    CHECK(memcmp(got.hash, k.hash, sizeof(k.hash)) == 0);
    n = 0;
    CHECK(store_key_changes(s2, 1, &seq2, count_cb, &n) == STORE_OK && n == 0 && seq2 == 1);

    /* Revocation appends a change; usage writes do not. */
    CHECK(store_key_revoke(s, "key_one", 555, "cli") == STORE_OK);
    CHECK(store_key_revoke(s, "key_nope", 555, "cli") == STORE_NOT_FOUND);
    /* A second revocation keeps the first time; an expiry change leaves the revocation alone. */
    CHECK(store_key_revoke(s, "key_one", 999, "cli") == STORE_OK);
    CHECK(store_key_expire(s, "key_one", 4000) == STORE_OK);
    CHECK(store_key_expire(s, "key_one", 0) == STORE_OK);
    CHECK(store_key_expire(s, "key_nope", 0) == STORE_NOT_FOUND);
    struct store_usage u = {.key_id = "key_one", .day = 20000, .requests = 3, .last_used = 777};
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    n = 0;
    CHECK(store_key_changes(s2, 20000, &seq2, last_cb, &got) == STORE_OK && seq2 == 5);
    CHECK(got.revoked_at == 555 && got.expires_at == 0);
    CHECK(got.requests_today == 6 && got.last_used_at == 777);
    CHECK(store_key_changes(s2, 20000, &seq2, count_cb, &n) == STORE_OK && n == 0);

    CHECK(store_key_find(s, "key_one", NULL, &got) == STORE_OK && got.revoked_at == 555);
    CHECK(store_key_find(s, NULL, k.hash, &got) == STORE_OK && !strcmp(got.id, "key_one"));
    n = 0;
    CHECK(store_key_list(s, a.id, count_cb, &n) == STORE_OK && n == 1);
    CHECK(store_key_list(s, a.id, last_cb, &got) == STORE_OK && got.requests_total == 6);

    /* Bulk insert in one transaction. */
    struct store_key *many = calloc(1000, sizeof(*many));
    for (int i = 0; i < 1000; i++) {
        many[i] = k;
        snprintf(many[i].id, sizeof(many[i].id), "key_bulk%d", i);
        randombytes_buf(many[i].hash, sizeof(many[i].hash));
    }
    CHECK(store_key_insert(s, many, 1000) == STORE_OK);
    n = 0;
    CHECK(store_keys_load(s2, 1, &seq2, count_cb, &n) == STORE_OK && n == 1001 && seq2 == 1005);
    free(many);

    store_close(s2);
    store_close(s);
    CHECK(store_open("postgres://localhost/x", 1, err, sizeof(err)) == NULL);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return unit_result();
}
