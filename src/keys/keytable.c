/* The in-memory key table, lock-free for readers; see keytable.h. */
#include "keys/keytable.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "limits/quota.h"

#define SLAB_RECORDS 4096

struct slots {
    size_t mask;
    _Atomic(struct keyrec *) slot[];
};

struct slab {
    struct slab *next;
    size_t used;
    struct keyrec recs[SLAB_RECORDS];
};

/* A key line's monthly count, found by the line's first key id (writer only). */
struct line {
    struct line *next;
    struct keyquota q; /* q.id names the line. */
};

struct keytable {
    _Atomic(struct slots *) cur;
    _Atomic size_t count;
    /* Writer-only state. Replaced slot arrays and allowlists are kept until keytable_free, because
     * a reader may still be probing or checking one when it is replaced. */
    pthread_mutex_t writer;
    void **retired;
    size_t nretired;
    struct slab *slabs;
    struct line **lines; /* Chained by id hash; lines_mask + 1 heads once the first is made. */
    size_t nlines, lines_mask;
    _Atomic(struct keyrec *) dirty_head;
};

/* Keeps what a reader may still be using until keytable_free. */
static void retire(struct keytable *kt, void *p)
{
    kt->retired = kn_realloc(kt->retired, (kt->nretired + 1) * sizeof(*kt->retired));
    kt->retired[kt->nretired++] = p;
}

static uint64_t slot_index(const uint8_t hash[KEYREC_HASH_LEN])
{
    uint64_t v;
    /* The hash is keyed BLAKE2b output, so its first bytes are already uniformly distributed. */
    memcpy(&v, hash, sizeof(v));
    return v;
}

static struct slots *slots_new(size_t capacity)
{
    size_t n = 1024;
    while (n < capacity)
        n <<= 1;
    struct slots *s = kn_calloc(1, sizeof(*s) + n * sizeof(s->slot[0]));
    s->mask = n - 1;
    return s;
}

struct keytable *keytable_new(size_t expected)
{
    struct keytable *kt = kn_calloc(1, sizeof(*kt));
    atomic_init(&kt->cur, slots_new(expected * 2));
    pthread_mutex_init(&kt->writer, NULL);
    return kt;
}

void keytable_free(struct keytable *kt)
{
    struct slab *slab, *next;

    if (kt == NULL)
        return;
    for (slab = kt->slabs; slab != NULL; slab = next) {
        next = slab->next;
        for (size_t i = 0; i < slab->used; i++)
            free((void *)atomic_load(&slab->recs[i].rules));
        sodium_memzero(slab->recs, sizeof(slab->recs));
        free(slab);
    }
    for (size_t i = 0; kt->lines != NULL && i <= kt->lines_mask; i++) {
        struct line *l, *ln;
        for (l = kt->lines[i]; l != NULL; l = ln) {
            ln = l->next;
            free(l);
        }
    }
    free(kt->lines);
    for (size_t i = 0; i < kt->nretired; i++)
        free(kt->retired[i]);
    free(kt->retired);
    free(atomic_load(&kt->cur));
    pthread_mutex_destroy(&kt->writer);
    free(kt);
}

struct keyrec *keytable_lookup(struct keytable *kt, const uint8_t hash[APIKEY_HASH_LEN])
{
    struct slots *s = atomic_load_explicit(&kt->cur, memory_order_acquire);
    size_t i = slot_index(hash) & s->mask;

    for (;;) {
        struct keyrec *r = atomic_load_explicit(&s->slot[i], memory_order_acquire);
        if (r == NULL)
            return NULL;
        /* The first 8 bytes chose the slot and are compared plainly (they only say which slot a
         * keyed hash lands in); the record's KEYREC_HASH_LEN bytes are then compared in constant
         * time. */
        if (memcmp(r->hash, hash, 8) == 0 && sodium_memcmp(r->hash, hash, KEYREC_HASH_LEN) == 0)
            return r;
        i = (i + 1) & s->mask;
    }
}

static void slots_put(struct slots *s, struct keyrec *r)
{
    size_t i = slot_index(r->hash) & s->mask;
    while (atomic_load_explicit(&s->slot[i], memory_order_relaxed) != NULL)
        i = (i + 1) & s->mask;
    atomic_store_explicit(&s->slot[i], r, memory_order_release);
}

static void grow(struct keytable *kt)
{
    struct slots *old = atomic_load(&kt->cur);
    struct slots *s = slots_new((old->mask + 1) * 2);

    for (size_t i = 0; i <= old->mask; i++) {
        struct keyrec *r = atomic_load_explicit(&old->slot[i], memory_order_relaxed);
        if (r != NULL)
            slots_put(s, r);
    }
    atomic_store_explicit(&kt->cur, s, memory_order_release);
    retire(kt, old);
}

static struct keyrec *rec_alloc(struct keytable *kt)
{
    if (kt->slabs == NULL || kt->slabs->used == SLAB_RECORDS) {
        struct slab *slab = kn_calloc(1, sizeof(*slab));
        slab->next = kt->slabs;
        kt->slabs = slab;
    }
    return &kt->slabs->recs[kt->slabs->used++];
}

static int same_list(const struct iplist *a, const struct iplist *b)
{
    size_t na = a != NULL ? a->n : 0, nb = b != NULL ? b->n : 0;
    return na == nb && (na == 0 || memcmp(a->nets, b->nets, na * sizeof(a->nets[0])) == 0);
}

static int same_rules(const struct keyrules *r, const struct keyrec_data *d)
{
    const char *models = d->models != NULL ? d->models : "";
    if (r == NULL)
        return (d->allow == NULL || d->allow->n == 0) && models[0] == '\0' && d->rpm == 0 &&
               d->monthly <= 0;
    return same_list(r->allow, d->allow) && strcmp(r->models, models) == 0 && r->rpm == d->rpm &&
           r->monthly == (d->monthly > 0 ? d->monthly : 0);
}

/* Installs d's rules on r (in one block: the rules, then a copy of the allowlist) when they
 * differ from the current ones; none for a key without any. */
static void set_rules(struct keytable *kt, struct keyrec *r, const struct keyrec_data *d)
{
    struct keyrules *old = (struct keyrules *)atomic_load(&r->rules), *copy = NULL;
    const char *models = d->models != NULL ? d->models : "";
    size_t nets = d->allow != NULL ? d->allow->n : 0;

    if (same_rules(old, d))
        return;
    if (nets != 0 || models[0] != '\0' || d->rpm != 0 || d->monthly > 0) {
        size_t list = nets != 0 ? sizeof(*d->allow) + nets * sizeof(d->allow->nets[0]) : 0;
        copy = kn_calloc(1, sizeof(*copy) + list);
        if (nets != 0) {
            struct iplist *l = (struct iplist *)(void *)(copy + 1);
            memcpy(l, d->allow, list);
            copy->allow = l;
        }
        copy->rpm = d->rpm;
        copy->monthly = d->monthly > 0 ? d->monthly : 0;
        kn_strlcpy(copy->models, models, sizeof(copy->models));
    }
    atomic_store_explicit(&r->rules, copy, memory_order_release);
    if (old != NULL)
        retire(kt, old); /* A reader may still be checking against it. */
}

static size_t line_hash(const char *id)
{
    size_t h = 5381;
    for (; *id != '\0'; id++)
        h = h * 33 + (unsigned char)*id;
    return h;
}

static struct line *line_find(struct keytable *kt, const char *id)
{
    struct line *l = NULL;

    if (kt->lines != NULL)
        for (l = kt->lines[line_hash(id) & kt->lines_mask]; l != NULL; l = l->next)
            if (strcmp(l->q.id, id) == 0)
                break;
    return l;
}

/* The line named `id`, made (with a count of 0) the first time. */
static struct keyquota *line_of(struct keytable *kt, const char *id)
{
    struct line *l = line_find(kt, id);

    if (l != NULL)
        return &l->q;
    if (kt->nlines + 1 > (kt->lines != NULL ? kt->lines_mask + 1 : 0)) {
        size_t n = kt->lines != NULL ? (kt->lines_mask + 1) * 2 : 64;
        struct line **heads = kn_calloc(n, sizeof(*heads));
        for (size_t i = 0; kt->lines != NULL && i <= kt->lines_mask; i++) {
            struct line *ln;
            for (l = kt->lines[i]; l != NULL; l = ln) {
                ln = l->next;
                l->next = heads[line_hash(l->q.id) & (n - 1)];
                heads[line_hash(l->q.id) & (n - 1)] = l;
            }
        }
        free(kt->lines);
        kt->lines = heads;
        kt->lines_mask = n - 1;
    }
    l = kn_calloc(1, sizeof(*l));
    kn_strlcpy(l->q.id, id, sizeof(l->q.id));
    l->next = kt->lines[line_hash(id) & kt->lines_mask];
    kt->lines[line_hash(id) & kt->lines_mask] = l;
    kt->nlines++;
    return &l->q;
}

/* Gives a live key its line's count, before the record or its rules are published, so that a
 * request that sees a quota always finds the count. */
static void set_line(struct keytable *kt, struct keyrec *r, const struct keyrec_data *d)
{
    if (d->line_id[0] != '\0' && atomic_load(&r->line) == NULL)
        atomic_store_explicit(&r->line, line_of(kt, d->line_id), memory_order_release);
}

void keytable_line_raise(struct keytable *kt, const char *line_id, int64_t month, uint64_t requests)
{
    pthread_mutex_lock(&kt->writer);
    struct line *l = line_find(kt, line_id);
    if (l != NULL)
        keyquota_raise(&l->q, month, requests);
    pthread_mutex_unlock(&kt->writer);
}

struct keyrec *keytable_upsert(struct keytable *kt, const struct keyrec_data *d)
{
    struct keyrec *r;

    pthread_mutex_lock(&kt->writer);
    r = keytable_lookup(kt, d->hash);
    if (r == NULL) {
        struct slots *s = atomic_load(&kt->cur);
        if ((atomic_load(&kt->count) + 1) * 2 > s->mask + 1)
            grow(kt);
        r = rec_alloc(kt);
        memcpy(r->hash, d->hash, KEYREC_HASH_LEN);
        kn_strlcpy(r->id, d->id, sizeof(r->id));
        r->mode = (uint8_t)d->mode;
        r->env = (uint8_t)d->env;
        r->acct = d->acct;
        atomic_init(&r->last_used, keyrec_time(d->last_used));
        atomic_init(&r->day_cell, d->day_cell);
        atomic_init(&r->expires_at, keyrec_time(d->expires_at));
        atomic_init(&r->revoked_at, keyrec_time(d->revoked_at));
        atomic_init(&r->rules, NULL);
        atomic_init(&r->line, NULL);
        set_line(kt, r, d);
        set_rules(kt, r, d);
        slots_put(atomic_load(&kt->cur), r);
        atomic_fetch_add(&kt->count, 1);
    } else {
        atomic_store(&r->expires_at, keyrec_time(d->expires_at));
        atomic_store(&r->revoked_at, keyrec_time(d->revoked_at));
        set_line(kt, r, d);
        set_rules(kt, r, d);
    }
    pthread_mutex_unlock(&kt->writer);
    return r;
}

void keytable_reserve(struct keytable *kt, size_t expected)
{
    pthread_mutex_lock(&kt->writer);
    if (atomic_load(&kt->count) == 0) {
        /* Nothing to move and, as documented, nobody reading: one right-sized array. */
        struct slots *old = atomic_load(&kt->cur);
        if (old->mask + 1 < expected * 2) {
            atomic_store(&kt->cur, slots_new(expected * 2));
            free(old);
        }
    }
    while ((atomic_load(&kt->cur)->mask + 1) < expected * 2)
        grow(kt);
    pthread_mutex_unlock(&kt->writer);
}

size_t keytable_count(struct keytable *kt)
{
    return atomic_load(&kt->count);
}

static void mark_dirty(struct keytable *kt, struct keyrec *rec)
{
    if (atomic_exchange(&rec->dirty, 1) == 0) {
        struct keyrec *head = atomic_load(&kt->dirty_head);
        do {
            rec->dirty_next = head;
        } while (!atomic_compare_exchange_weak(&kt->dirty_head, &head, rec));
    }
}

void keytable_touch(struct keytable *kt, struct keyrec *rec, int64_t now, uint32_t requests)
{
    uint32_t t = keyrec_time(now);

    if (atomic_load_explicit(&rec->last_used, memory_order_relaxed) != t)
        atomic_store_explicit(&rec->last_used, t, memory_order_relaxed);
    /* Sequentially consistent with the exchanges on `dirty`, so that keytable_settle sees every
     * count added before the record was last found dirty. */
    if (requests != 0)
        atomic_fetch_add(&rec->pending_requests, requests);
    mark_dirty(kt, rec);
}

void keytable_refuse(struct keytable *kt, struct keyrec *rec, int64_t now)
{
    uint32_t t = keyrec_time(now);

    if (atomic_load_explicit(&rec->last_used, memory_order_relaxed) < t)
        atomic_store_explicit(&rec->last_used, t, memory_order_relaxed);
    atomic_fetch_add(&rec->pending_refused, 1);
    mark_dirty(kt, rec);
}

void keytable_requeue(struct keytable *kt, struct keyrec *rec, uint32_t requests, uint32_t refused)
{
    atomic_fetch_add(&rec->pending_requests, requests);
    atomic_fetch_add(&rec->pending_refused, refused);
    mark_dirty(kt, rec);
}

struct keyrec *keytable_take_dirty(struct keytable *kt)
{
    return atomic_exchange(&kt->dirty_head, NULL);
}

uint32_t keytable_settle(struct keyrec *rec, uint32_t *refused)
{
    atomic_store(&rec->dirty, 0);
    *refused = atomic_exchange(&rec->pending_refused, 0);
    return atomic_exchange(&rec->pending_requests, 0);
}
