/* The in-memory key table, lock-free for readers; see keytable.h. */
#include "keys/keytable.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/base62.h"
#include "core/util.h"
#include "limits/quota.h"
#include "store/store.h"

/* Records live in slabs of SLAB_RECORDS, each at a SLAB_ALIGN boundary, so that a record's index
 * (what the slots and the dirty list hold, in 32 bits) is found from its address, and its address
 * from the index through the slab directory. A slab is never moved or freed before the table. */
#define SLAB_SHIFT 12
#define SLAB_RECORDS (1u << SLAB_SHIFT)
#define SLAB_ALIGN ((size_t)1 << 19)
#define SLABS_MAX ((size_t)1 << (32 - SLAB_SHIFT)) /* Index + 1 fits in 32 bits. */

struct slab {
    uint32_t base; /* The index of recs[0]. */
    uint32_t used;
    struct keyrec recs[];
};

_Static_assert(sizeof(struct keyrec) == 72, "a key record is 72 bytes");
_Static_assert(STORE_ID_SIZE >= KEY_ID_SIZE, "keyrec_id writes into the store's id fields");
_Static_assert(sizeof(struct slab) + SLAB_RECORDS * sizeof(struct keyrec) <= SLAB_ALIGN,
               "a slab fits its alignment");

/* The slot array: a record's index + 1, 0 for an empty slot. */
struct slots {
    size_t mask;
    _Atomic uint32_t slot[];
};

/* A key line's monthly count, found by the line's first key id (writer only). */
struct line {
    struct line *next;
    struct keyquota q; /* q.id names the line. */
};

/* A class in the table's set (writer only), chained by hash. */
struct classnode {
    struct classnode *next;
    struct keyclass c;
};

struct keytable {
    _Atomic(struct slots *) cur;
    _Atomic size_t count;
    /* SLABS_MAX entries, of which the first nslabs are set; written before any slot names one of
     * their records. */
    struct slab *_Atomic *slabs;
    size_t nslabs;
    /* Writer-only state. Replaced slot arrays, and every class, rules block and odd id (the
     * arena blocks hold the classes), are kept until keytable_free, because a reader may still be
     * probing or checking one when it is replaced. */
    pthread_mutex_t writer;
    void **retired;
    size_t nretired;
    struct line **lines; /* Chained by id hash; lines_mask + 1 heads once the first is made. */
    size_t nlines, lines_mask;
    struct classnode **classes; /* Likewise, classes_mask + 1 heads. */
    size_t nclasses, classes_mask;
    char *arena; /* Where the next class or line goes, in blocks of ARENA_BYTES (arena_alloc). */
    size_t arena_left;
    _Atomic uint32_t dirty_head; /* Index + 1 of the first dirty record, 0 = none. */
};

#define ARENA_BYTES 65536

/* Keeps what a reader may still be using until keytable_free. */
static void retire(struct keytable *kt, void *p)
{
    /* Doubled when full: a store of many restricted keys retires one block per key at load. */
    if ((kt->nretired & (kt->nretired - 1)) == 0)
        kt->retired =
            kn_realloc(kt->retired, (kt->nretired ? kt->nretired * 2 : 1) * sizeof(*kt->retired));
    kt->retired[kt->nretired++] = p;
}

static uint64_t slot_index(const uint8_t hash[KEYREC_HASH_LEN])
{
    uint64_t v;
    /* The hash is keyed BLAKE2b output, so its first bytes are already uniformly distributed. */
    memcpy(&v, hash, sizeof(v));
    return v;
}

static inline struct keyrec *rec_at(struct keytable *kt, uint32_t index)
{
    struct slab *s = atomic_load_explicit(&kt->slabs[index >> SLAB_SHIFT], memory_order_acquire);
    return &s->recs[index & (SLAB_RECORDS - 1)];
}

static inline uint32_t rec_index(const struct keyrec *r)
{
    const struct slab *s = (const struct slab *)((uintptr_t)r & ~(uintptr_t)(SLAB_ALIGN - 1));
    return s->base + (uint32_t)(r - s->recs);
}

/* The bytes of a slab that are mapped: its records, rounded up to a page. */
static size_t slab_bytes(void)
{
    return (sizeof(struct slab) + SLAB_RECORDS * sizeof(struct keyrec) + 4095) & ~(size_t)4095;
}

/* A zeroed slab at a SLAB_ALIGN boundary: twice the alignment is mapped and what lies outside
 * the slab is given back. */
static struct slab *slab_map(uint32_t base)
{
    size_t len = slab_bytes();
    char *p =
        mmap(NULL, 2 * SLAB_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        kn_fatal("out of memory mapping a slab of keys");
    char *start = (char *)(((uintptr_t)p + SLAB_ALIGN - 1) & ~(uintptr_t)(SLAB_ALIGN - 1));
    if (start > p)
        munmap(p, (size_t)(start - p));
    munmap(start + len, (size_t)(p + 2 * SLAB_ALIGN - (start + len)));
    struct slab *s = (struct slab *)(void *)start;
    s->base = base;
    return s;
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
    /* SLABS_MAX pointers: 8 MB of address space, of which a page is touched for every 512 slabs. */
    kt->slabs = kn_calloc(SLABS_MAX, sizeof(kt->slabs[0]));
    pthread_mutex_init(&kt->writer, NULL);
    return kt;
}

void keytable_free(struct keytable *kt)
{
    if (kt == NULL)
        return;
    for (size_t i = 0; i < kt->nslabs; i++) {
        struct slab *s = atomic_load(&kt->slabs[i]);
        sodium_memzero(s->recs, s->used * sizeof(s->recs[0]));
        munmap(s, slab_bytes());
    }
    free(kt->slabs);
    free(kt->lines); /* The lines and classes are in the arena blocks, which are retired. */
    free(kt->classes);
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
        uint32_t v = atomic_load_explicit(&s->slot[i], memory_order_acquire);
        if (v == 0)
            return NULL;
        struct keyrec *r = rec_at(kt, v - 1);
        /* The first 8 bytes chose the slot and are compared plainly (they only say which slot a
         * keyed hash lands in); the record's KEYREC_HASH_LEN bytes are then compared in constant
         * time. */
        if (memcmp(r->hash, hash, 8) == 0 && sodium_memcmp(r->hash, hash, KEYREC_HASH_LEN) == 0)
            return r;
        i = (i + 1) & s->mask;
    }
}

static void slots_put(struct slots *s, const struct keyrec *r, uint32_t index)
{
    size_t i = slot_index(r->hash) & s->mask;
    while (atomic_load_explicit(&s->slot[i], memory_order_relaxed) != 0)
        i = (i + 1) & s->mask;
    atomic_store_explicit(&s->slot[i], index + 1, memory_order_release);
}

static void grow(struct keytable *kt)
{
    struct slots *old = atomic_load(&kt->cur);
    struct slots *s = slots_new((old->mask + 1) * 2);

    for (size_t i = 0; i <= old->mask; i++) {
        uint32_t v = atomic_load_explicit(&old->slot[i], memory_order_relaxed);
        if (v != 0)
            slots_put(s, rec_at(kt, v - 1), v - 1);
    }
    atomic_store_explicit(&kt->cur, s, memory_order_release);
    retire(kt, old);
}

/* A zeroed record at the end of the last slab, and its index in *index. */
static struct keyrec *rec_alloc(struct keytable *kt, uint32_t *index)
{
    struct slab *s = kt->nslabs != 0 ? atomic_load(&kt->slabs[kt->nslabs - 1]) : NULL;

    if (s == NULL || s->used == SLAB_RECORDS) {
        if (kt->nslabs == SLABS_MAX)
            kn_fatal("the key table is full (%zu keys)", SLABS_MAX * SLAB_RECORDS - 1);
        s = slab_map((uint32_t)(kt->nslabs * SLAB_RECORDS));
        atomic_store_explicit(&kt->slabs[kt->nslabs++], s, memory_order_release);
    }
    /* The last index of the last slab would be UINT32_MAX + 1 in a slot. */
    if (s->base + s->used == UINT32_MAX)
        kn_fatal("the key table is full (%u keys)", UINT32_MAX);
    *index = s->base + s->used;
    return &s->recs[s->used++];
}

/* ---- ids ------------------------------------------------------------------------------------- */

#define ID_CHARS 20

/* Packs id into r->id and returns its KEYREC_ID_* kind: KEYREC_ID_ODD when it is not a prefix
 * and ID_CHARS base62 characters (then r->id stays zero). */
static int id_pack(struct keyrec *r, const char *id)
{
    int kind;

    if (strncmp(id, "key_", 4) == 0)
        kind = KEYREC_ID_KEY;
    else if (strncmp(id, "opk_", 4) == 0)
        kind = KEYREC_ID_OPK;
    else
        return KEYREC_ID_ODD;
    if (strlen(id + 4) != ID_CHARS)
        return KEYREC_ID_ODD;
    for (int g = 0; g < ID_CHARS / 4; g++) {
        uint32_t v = 0;
        for (int i = 0; i < 4; i++) {
            int d = base62_value((unsigned char)id[4 + g * 4 + i]);
            if (d < 0) {
                memset(r->id, 0, sizeof(r->id));
                return KEYREC_ID_ODD;
            }
            v = v * 62 + (uint32_t)d;
        }
        r->id[g * 3] = (uint8_t)(v >> 16);
        r->id[g * 3 + 1] = (uint8_t)(v >> 8);
        r->id[g * 3 + 2] = (uint8_t)v;
    }
    return kind;
}

char *keyrec_id(const struct keyrec *r, char out[KEY_ID_SIZE])
{
    int kind = (atomic_load_explicit(&((struct keyrec *)r)->meta, memory_order_relaxed) >> 4) & 3;

    if (kind == KEYREC_ID_ODD) {
        kn_strlcpy(out, keyrec_class(r)->odd_id, KEY_ID_SIZE);
        return out;
    }
    memcpy(out, kind == KEYREC_ID_OPK ? "opk_" : "key_", 4);
    for (int g = 0; g < ID_CHARS / 4; g++) {
        uint32_t v =
            (uint32_t)r->id[g * 3] << 16 | (uint32_t)r->id[g * 3 + 1] << 8 | r->id[g * 3 + 2];
        base62_encode_fixed(v, out + 4 + g * 4, 4);
    }
    out[4 + ID_CHARS] = '\0';
    return out;
}

/* Zeroed memory for a class or a line (writer only), kept until keytable_free: a million live
 * keys have a million of each, and a block of them costs no allocator's header per piece. */
static void *arena_alloc(struct keytable *kt, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (kt->arena_left < size) {
        kt->arena = kn_calloc(1, ARENA_BYTES);
        kt->arena_left = ARENA_BYTES;
        retire(kt, kt->arena); /* Freed with the rest at keytable_free. */
    }
    void *p = kt->arena;
    kt->arena += size;
    kt->arena_left -= size;
    return p;
}

/* ---- classes --------------------------------------------------------------------------------- */

static size_t class_hash(const struct keyclass *c)
{
    uintptr_t h = (uintptr_t)c->acct;
    h = h * 31 + (uintptr_t)c->rules;
    h = h * 31 + (uintptr_t)c->line;
    h = h * 31 + (uintptr_t)c->odd_id;
    h = h * 31 + c->expires_at;
    h = h * 31 + c->revoked_at;
    return (size_t)(h ^ (h >> 17));
}

static int same_class(const struct keyclass *a, const struct keyclass *b)
{
    return a->acct == b->acct && a->rules == b->rules && a->line == b->line &&
           a->odd_id == b->odd_id && a->expires_at == b->expires_at &&
           a->revoked_at == b->revoked_at;
}

/* The class equal to *want, made the first time (writer only). Keys share one only when they
 * share its rules and odd id too, which are made for a single key: so only the plain keys of an
 * account with the same expiry and revocation share. */
static const struct keyclass *class_of(struct keytable *kt, const struct keyclass *want)
{
    size_t h = class_hash(want);
    struct classnode *n;

    if (kt->classes != NULL)
        for (n = kt->classes[h & kt->classes_mask]; n != NULL; n = n->next)
            if (same_class(&n->c, want))
                return &n->c;
    if (kt->nclasses + 1 > (kt->classes != NULL ? kt->classes_mask + 1 : 0)) {
        size_t size = kt->classes != NULL ? (kt->classes_mask + 1) * 2 : 64;
        struct classnode **heads = kn_calloc(size, sizeof(*heads));
        for (size_t i = 0; kt->classes != NULL && i <= kt->classes_mask; i++) {
            struct classnode *next;
            for (n = kt->classes[i]; n != NULL; n = next) {
                next = n->next;
                n->next = heads[class_hash(&n->c) & (size - 1)];
                heads[class_hash(&n->c) & (size - 1)] = n;
            }
        }
        free(kt->classes);
        kt->classes = heads;
        kt->classes_mask = size - 1;
    }
    n = arena_alloc(kt, sizeof(*n));
    n->c = *want;
    n->next = kt->classes[h & kt->classes_mask];
    kt->classes[h & kt->classes_mask] = n;
    kt->nclasses++;
    return &n->c;
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

/* The rules d gives: old when they are the same, else a new block (the rules, then a copy of the
 * allowlist), kept until keytable_free; NULL for a key without any. */
static const struct keyrules *rules_for(struct keytable *kt, const struct keyrules *old,
                                        const struct keyrec_data *d)
{
    const char *models = d->models != NULL ? d->models : "";
    size_t nets = d->allow != NULL ? d->allow->n : 0;
    struct keyrules *copy;

    if (same_rules(old, d))
        return old;
    if (nets == 0 && models[0] == '\0' && d->rpm == 0 && d->monthly <= 0)
        return NULL;
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
    retire(kt, copy); /* Its class, and a reader, may use it until the end. */
    return copy;
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
    l = arena_alloc(kt, sizeof(*l));
    kn_strlcpy(l->q.id, id, sizeof(l->q.id));
    l->next = kt->lines[line_hash(id) & kt->lines_mask];
    kt->lines[line_hash(id) & kt->lines_mask] = l;
    kt->nlines++;
    return &l->q;
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
    struct keyclass want;

    pthread_mutex_lock(&kt->writer);
    r = keytable_lookup(kt, d->hash);
    if (r == NULL) {
        uint32_t index;
        struct slots *s = atomic_load(&kt->cur);
        if ((atomic_load(&kt->count) + 1) * 2 > s->mask + 1)
            grow(kt);
        r = rec_alloc(kt, &index);
        memcpy(r->hash, d->hash, KEYREC_HASH_LEN);
        int kind = id_pack(r, d->id);
        memset(&want, 0, sizeof(want));
        want.acct = d->acct;
        if (kind == KEYREC_ID_ODD) {
            char *odd = kn_strdup(d->id);
            retire(kt, odd);
            want.odd_id = odd;
        }
        atomic_init(&r->meta, (uint8_t)(((unsigned)d->mode & 3) | ((unsigned)d->env & 3) << 2 |
                                        (unsigned)kind << 4));
        atomic_init(&r->last_used, keyrec_time(d->last_used));
        atomic_init(&r->day_cell, d->day_cell);
        want.expires_at = keyrec_time(d->expires_at);
        want.revoked_at = keyrec_time(d->revoked_at);
        want.rules = rules_for(kt, NULL, d);
        /* A live key's line comes with its first class, so that a request that sees a quota
         * always finds the count. */
        want.line = d->line_id[0] != '\0' ? line_of(kt, d->line_id) : NULL;
        atomic_init(&r->cls, class_of(kt, &want));
        slots_put(atomic_load(&kt->cur), r, index);
        atomic_fetch_add(&kt->count, 1);
    } else {
        want = *keyrec_class(r);
        want.expires_at = keyrec_time(d->expires_at);
        want.revoked_at = keyrec_time(d->revoked_at);
        want.rules = rules_for(kt, want.rules, d);
        if (want.line == NULL && d->line_id[0] != '\0')
            want.line = line_of(kt, d->line_id);
        atomic_store_explicit(&r->cls, class_of(kt, &want), memory_order_release);
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

/* Puts rec on the dirty list unless it is there. `counted`: the caller has just added to its
 * counts (a sequentially consistent add, after its last_used store): a record already dirty is
 * then seen by a plain load, with no locked instruction; a flush that clears the flag after that
 * load takes the add, and the last_used before it, with it (keytable_settle, then last_used). */
static void mark_dirty(struct keytable *kt, struct keyrec *rec, int counted)
{
    if (counted && (atomic_load(&rec->meta) & KEYREC_DIRTY))
        return;
    if ((atomic_fetch_or(&rec->meta, KEYREC_DIRTY) & KEYREC_DIRTY) == 0) {
        uint32_t me = rec_index(rec) + 1, head = atomic_load(&kt->dirty_head);
        do {
            atomic_store_explicit(&rec->dirty_next, head, memory_order_relaxed);
        } while (!atomic_compare_exchange_weak(&kt->dirty_head, &head, me));
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
    mark_dirty(kt, rec, requests != 0);
}

void keytable_refuse(struct keytable *kt, struct keyrec *rec, int64_t now)
{
    uint32_t t = keyrec_time(now);

    if (atomic_load_explicit(&rec->last_used, memory_order_relaxed) < t)
        atomic_store_explicit(&rec->last_used, t, memory_order_relaxed);
    atomic_fetch_add(&rec->pending_refused, 1);
    mark_dirty(kt, rec, 1);
}

void keytable_requeue(struct keytable *kt, struct keyrec *rec, uint32_t requests, uint32_t refused)
{
    atomic_fetch_add(&rec->pending_requests, requests);
    atomic_fetch_add(&rec->pending_refused, refused);
    mark_dirty(kt, rec, 1);
}

struct keyrec *keytable_take_dirty(struct keytable *kt)
{
    uint32_t v = atomic_exchange(&kt->dirty_head, 0);
    return v != 0 ? rec_at(kt, v - 1) : NULL;
}

struct keyrec *keytable_dirty_next(struct keytable *kt, const struct keyrec *rec)
{
    uint32_t v = atomic_load_explicit(&((struct keyrec *)rec)->dirty_next, memory_order_relaxed);
    return v != 0 ? rec_at(kt, v - 1) : NULL;
}

uint32_t keytable_index(const struct keyrec *rec)
{
    return rec_index(rec);
}

uint32_t keytable_settle(struct keyrec *rec, uint32_t *refused)
{
    atomic_fetch_and(&rec->meta, (uint8_t)~KEYREC_DIRTY);
    *refused = atomic_exchange(&rec->pending_refused, 0);
    return atomic_exchange(&rec->pending_requests, 0);
}
