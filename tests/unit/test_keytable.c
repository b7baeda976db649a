/* The lock-free key table: insert, lookup, refresh, growth, dirty list, concurrent readers. */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>

#include "keys/keytable.h"
#include "limits/quota.h"
#include "unit.h"

#define N 20000

static struct keyrec_data *data;
static struct keytable *shared;
static _Atomic int misses;

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
        snprintf(data[i].id, sizeof(data[i].id), "key_%d", i);
        data[i].mode = i % 2 ? APIKEY_MODE_LIVE : APIKEY_MODE_TEST;
    }

    /* Starts small so that growth happens while inserting. */
    kt = keytable_new(1);
    for (int i = 0; i < N; i++)
        keytable_upsert(kt, &data[i]);
    CHECK(keytable_count(kt) == N);
    int found = 0;
    for (int i = 0; i < N; i++) {
        struct keyrec *r = keytable_lookup(kt, data[i].hash);
        found += r != NULL && strcmp(r->id, data[i].id) == 0 && r->mode == data[i].mode;
    }
    CHECK(found == N);
    randombytes_buf(absent, sizeof(absent));
    CHECK(keytable_lookup(kt, absent) == NULL);

    /* An upsert of a known hash refreshes the mutable fields in place. */
    struct keyrec *r = keytable_lookup(kt, data[5].hash);
    data[5].revoked_at = 1234;
    data[5].expires_at = 99;
    CHECK(keytable_upsert(kt, &data[5]) == r);
    CHECK(atomic_load(&r->revoked_at) == 1234 && atomic_load(&r->expires_at) == 99);
    CHECK(keytable_count(kt) == N);

    /* Times are 32-bit: an expiry past 2106 is kept as the latest one, never as an early one. */
    data[5].revoked_at = 0;
    data[5].expires_at = 10000000000; /* 2286 */
    CHECK(keytable_upsert(kt, &data[5]) == r);
    CHECK(atomic_load(&r->revoked_at) == 0 && atomic_load(&r->expires_at) == UINT32_MAX);
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
        keytable_line_raise(kt, q[i]->line->id, month, (uint64_t)i);
    keytable_line_raise(kt, "key_nowhere", month, 5); /* No such line: nothing. */
    int lines_ok = 1;
    for (int i = 0; i < 300; i += 2)
        lines_ok &= atomic_load(&q[i]->line) != NULL &&
                    atomic_load(&q[i]->line) == atomic_load(&q[i + 1]->line) &&
                    atomic_load(&q[i]->line) != atomic_load(&q[(i + 2) % 300]->line) &&
                    keyquota_used(atomic_load(&q[i]->line), month) == (uint64_t)i &&
                    (i % 3 == 0 ? atomic_load(&q[i]->rules)->monthly == 10
                                : atomic_load(&q[i]->rules) == NULL);
    CHECK(lines_ok);
    struct keyquota *l0 = atomic_load(&q[0]->line);
    CHECK(keyquota_take(l0, month, 10) && keyquota_used(l0, month) == 1);
    keytable_line_raise(kt, "key_line0", month, 0); /* Never lowered. */
    CHECK(keyquota_used(l0, month) == 1);
    data[100].monthly = 0; /* Lifted: no rules, the same count. */
    keytable_upsert(kt, &data[100]);
    CHECK(atomic_load(&q[0]->rules) == NULL && atomic_load(&q[0]->line) == l0 &&
          keyquota_used(l0, month) == 1);
    data[100].monthly = 3; /* Set again: the same count. */
    keytable_upsert(kt, &data[100]);
    CHECK(atomic_load(&q[0]->rules)->monthly == 3 && atomic_load(&q[0]->line) == l0 &&
          keyquota_used(l0, month) == 1);
    keytable_line_raise(kt, "key_line0", month - 1, 50); /* An older month's: not this one's. */
    CHECK(keyquota_used(l0, month) == 1);
    CHECK(atomic_load(&keytable_lookup(kt, data[3].hash)->line) == NULL);

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
        next = d->dirty_next;
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
    CHECK(keytable_take_dirty(kt) == a && a->dirty_next == NULL);
    CHECK(keytable_settle(a, &r1) == 5 && r1 == 2);
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
