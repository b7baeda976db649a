/* The lock-free key table: insert, lookup, refresh, growth, dirty list, concurrent readers. */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>

#include "core/base62.h"
#include "core/util.h"
#include "keys/keytable.h"
#include "limits/quota.h"
#include "unit.h"

#define N 20000

static struct keyrec_data *data;
static struct keytable *shared;
static _Atomic int misses;
static struct acctrec accounts[2];

static void *reader(void *arg)
{
    (void)arg;
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < 1000; i++)
            if (keytable_lookup(shared, data[i].hash) == NULL)
                atomic_fetch_add(&misses, 1);
    return NULL;
}

int main(void)
{
    struct keytable *kt;
    uint8_t absent[APIKEY_HASH_LEN];

    CHECK(sodium_init() >= 0);
    data = calloc(N, sizeof(*data));
    for (int i = 0; i < N; i++) {
        randombytes_buf(data[i].hash, APIKEY_HASH_LEN);
        /* Ids as keys/lifecycle.c makes them (packed in the record) and others (kept whole). */
        if (i % 4 == 3)
            snprintf(data[i].id, sizeof(data[i].id), "key_%d", i);
        else
            base62_random_id(data[i].id, i % 4 == 2 ? "opk_" : "key_", 20);
        data[i].mode = i % 2 ? APIKEY_MODE_LIVE : APIKEY_MODE_TEST;
        data[i].env = (enum apikey_env)(i % 3);
        data[i].acct = &accounts[i % 2];
    }

    /* Starts small so that growth happens while inserting. */
    kt = keytable_new(1);
    for (int i = 0; i < N; i++)
        keytable_upsert(kt, &data[i]);
    CHECK(keytable_count(kt) == N);
    int found = 0;
    for (int i = 0; i < N; i++) {
        struct keyrec *r = keytable_lookup(kt, data[i].hash);
        char id[KEY_ID_SIZE];
        found += r != NULL && strcmp(keyrec_id(r, id), data[i].id) == 0 &&
                 keyrec_mode(r) == data[i].mode && keyrec_env(r) == data[i].env;
    }
    CHECK(found == N);
    randombytes_buf(absent, sizeof(absent));
    CHECK(keytable_lookup(kt, absent) == NULL);

    /* An upsert of a known hash refreshes the mutable fields in place. */
    struct keyrec *r = keytable_lookup(kt, data[5].hash);
    data[5].revoked_at = 1234;
    data[5].expires_at = 99;
    CHECK(keytable_upsert(kt, &data[5]) == r);
    CHECK(keyrec_class(r)->revoked_at == 1234 && keyrec_class(r)->expires_at == 99);
    CHECK(keytable_count(kt) == N);

    /* Times are 32-bit: an expiry past 2106 is kept as the latest one, never as an early one. */
    data[5].revoked_at = 0;
    data[5].expires_at = 10000000000; /* 2286 */
    CHECK(keytable_upsert(kt, &data[5]) == r);
    CHECK(keyrec_class(r)->revoked_at == 0 && keyrec_class(r)->expires_at == UINT32_MAX);
    CHECK(keyrec_time(-5) == 0 && keyrec_time(0) == 0 && keyrec_time(1796419817) == 1796419817u);

    /* A record is found by the first KEYREC_HASH_LEN bytes of the keyed hash: a hash that differs
     * from a key's in them finds nothing, wherever it differs. */
    for (int at = 0; at < KEYREC_HASH_LEN; at++) {
        uint8_t near[APIKEY_HASH_LEN];
        memcpy(near, data[7].hash, sizeof(near));
        near[at] ^= 0x01;
        CHECK(keytable_lookup(kt, near) == NULL);
    }

    /* Lines: keys of one line of replacements share one count, made with the first of them
     * (quota or not: every live request counts) and raised, never lowered, to the store's at
     * start; it stays as it is whatever the key's quota becomes; many lines (the map grows) each
     * keep their own; a key without a line (a test key) has none. */
    int64_t month = 24322;
    struct keyrec *q[300];
    for (int i = 0; i < 300; i++) {
        data[100 + i].monthly = i % 3 == 0 ? 10 : 0;
        snprintf(data[100 + i].line_id, sizeof(data[100 + i].line_id), "key_line%d", i / 2);
        q[i] = keytable_upsert(kt, &data[100 + i]);
    }
    for (int i = 0; i < 300; i += 2)
        keytable_line_raise(kt, keyrec_line(q[i])->id, month, (uint64_t)i);
    keytable_line_raise(kt, "key_nowhere", month, 5); /* No such line: nothing. */
    int lines_ok = 1;
    for (int i = 0; i < 300; i += 2)
        lines_ok &= keyrec_line(q[i]) != NULL && keyrec_line(q[i]) == keyrec_line(q[i + 1]) &&
                    keyrec_line(q[i]) != keyrec_line(q[(i + 2) % 300]) &&
                    keyquota_used(keyrec_line(q[i]), month) == (uint64_t)i &&
                    (i % 3 == 0 ? keyrec_rules(q[i])->monthly == 10 : keyrec_rules(q[i]) == NULL);
    CHECK(lines_ok);
    struct keyquota *l0 = keyrec_line(q[0]);
    CHECK(keyquota_take(l0, month, 10) && keyquota_used(l0, month) == 1);
    keytable_line_raise(kt, "key_line0", month, 0); /* Never lowered. */
    CHECK(keyquota_used(l0, month) == 1);
    data[100].monthly = 0; /* Lifted: no rules, the same count. */
    keytable_upsert(kt, &data[100]);
    CHECK(keyrec_rules(q[0]) == NULL && keyrec_line(q[0]) == l0 && keyquota_used(l0, month) == 1);
    data[100].monthly = 3; /* Set again: the same count. */
    keytable_upsert(kt, &data[100]);
    CHECK(keyrec_rules(q[0])->monthly == 3 && keyrec_line(q[0]) == l0 &&
          keyquota_used(l0, month) == 1);
    keytable_line_raise(kt, "key_line0", month - 1, 50); /* An older month's: not this one's. */
    CHECK(keyquota_used(l0, month) == 1);
    CHECK(keyrec_line(keytable_lookup(kt, data[3].hash)) == NULL);

    /* Dirty list: a record touched many times appears once, with all its requests. */
    struct keyrec *a = keytable_lookup(kt, data[1].hash), *b = keytable_lookup(kt, data[2].hash);
    keytable_touch(kt, a, 100, 1);
    keytable_touch(kt, a, 101, 1);
    keytable_touch(kt, b, 102, 1);
    keytable_touch(kt, b, 102, 0);
    keytable_refuse(kt, b, 104);
    keytable_refuse(kt, b, 104);
    int seen = 0;
    uint32_t total = 0, refused = 0, r1;
    for (struct keyrec *d = keytable_take_dirty(kt), *next; d != NULL; d = next) {
        next = keytable_dirty_next(kt, d);
        total += keytable_settle(d, &r1);
        refused += r1;
        seen++;
    }
    CHECK(seen == 2 && total == 3 && refused == 2 && atomic_load(&b->last_used) == 104);
    CHECK(atomic_load(&a->last_used) == 101);
    CHECK(keytable_take_dirty(kt) == NULL);
    keytable_touch(kt, a, 103, 1);
    CHECK(keytable_take_dirty(kt) == a);
    CHECK(keytable_settle(a, &r1) == 1 && r1 == 0);
    /* A failed flush gives its counts back for the next one. */
    keytable_requeue(kt, a, 5, 2);
    CHECK(keytable_take_dirty(kt) == a && keytable_dirty_next(kt, a) == NULL);
    CHECK(keytable_settle(a, &r1) == 5 && r1 == 2);
    CHECK(keyrec_mode(a) == data[1].mode && keyrec_env(a) == data[1].env); /* The dirty bit. */

    /* The dirty list links records by index across slabs: every record touched once, from each
     * of the five slabs of N records, is on it once. */
    for (int i = 0; i < N; i += 7)
        keytable_touch(kt, keytable_lookup(kt, data[i].hash), 200, 1);
    int listed = 0, right = 1;
    for (struct keyrec *d = keytable_take_dirty(kt), *next; d != NULL; d = next) {
        next = keytable_dirty_next(kt, d);
        right &= keytable_settle(d, &r1) == 1 && atomic_load(&d->last_used) == 200;
        listed++;
    }
    CHECK(listed == (N + 6) / 7 && right);

    /* Keys alike share one class; a change gives one key a class of its own and leaves the others
     * as they were. data[20] and data[22] are test keys of one account, with no line or rules. */
    struct keyrec *s1 = keytable_lookup(kt, data[20].hash),
                  *s2 = keytable_lookup(kt, data[22].hash);
    CHECK(keyrec_class(s1) == keyrec_class(s2) && keyrec_acct(s1) == &accounts[0]);
    data[20].revoked_at = 777;
    keytable_upsert(kt, &data[20]);
    CHECK(keyrec_class(s1) != keyrec_class(s2) && keyrec_class(s1)->revoked_at == 777 &&
          keyrec_class(s2)->revoked_at == 0 && keyrec_acct(s1) == &accounts[0]);
    data[22].revoked_at = 777; /* Revoked at the same second: alike again. */
    keytable_upsert(kt, &data[22]);
    CHECK(keyrec_class(s1) == keyrec_class(s2));
    /* An odd id stays with its key through a change of class. */
    struct keyrec *o = keytable_lookup(kt, data[23].hash);
    char oid[KEY_ID_SIZE];
    data[23].expires_at = 4000;
    keytable_upsert(kt, &data[23]);
    CHECK(keyrec_class(o)->expires_at == 4000 && strcmp(keyrec_id(o, oid), "key_23") == 0);
    /* Ids that are almost of the packed form are kept whole. */
    const char *odd[] = {"key_0123456789abcdefghi", "key_0123456789abcdefghij0",
                         "key_0123456789abcdefgh-j", "kex_0123456789abcdefghij",
                         "key_zzzzzzzzzzzzzzzzzzzz"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        struct keyrec_data od = data[0];
        randombytes_buf(od.hash, APIKEY_HASH_LEN);
        kn_strlcpy(od.id, odd[i], sizeof(od.id));
        CHECK(strcmp(keyrec_id(keytable_upsert(kt, &od), oid), odd[i]) == 0);
    }
    keytable_free(kt);

    /* Readers never miss a present key while the writer grows the table. */
    shared = keytable_new(1);
    for (int i = 0; i < 1000; i++)
        keytable_upsert(shared, &data[i]);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, reader, NULL);
    for (int i = 1000; i < N; i++)
        keytable_upsert(shared, &data[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&misses) == 0);
    keytable_free(shared);
    free(data);
    return unit_result();
}
