/* The accounts of a running server and the plans in force; see accounts.h. */
#include "limits/accounts.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

struct accounts {
    struct acctrec **slot; /* Open addressing by id; a power of two, at most half full. */
    size_t mask, count;
    _Atomic(const struct plans *) plans; /* In force. */
    struct plans *owned;                 /* The plans in force, owned. */
    struct plans **retired;              /* Earlier ones, kept until the table is freed. */
    size_t nretired;
    char **wanted; /* Names of plans accounts are on but the plans do not define. */
    size_t nwanted;
    char *plans_path; /* To reload from (KONNECT_PLANS or the default). */
    int plans_required;
};

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: ids are random already. */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

struct accounts *accounts_new(struct plans *plans, const char *plans_path, int plans_required)
{
    struct accounts *t = kn_calloc(1, sizeof(*t));

    t->mask = 1023;
    t->slot = kn_calloc(t->mask + 1, sizeof(*t->slot));
    t->owned = plans;
    atomic_init(&t->plans, plans);
    t->plans_path = kn_strdup(plans_path);
    t->plans_required = plans_required;
    return t;
}

void accounts_free(struct accounts *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        free(t->slot[i]);
    free(t->slot);
    plans_free(t->owned);
    for (size_t i = 0; i < t->nretired; i++)
        plans_free(t->retired[i]);
    free(t->retired);
    for (size_t i = 0; i < t->nwanted; i++)
        free(t->wanted[i]);
    free(t->wanted);
    free(t->plans_path);
    free(t);
}

const struct plans *accounts_plans(struct accounts *t)
{
    return atomic_load(&t->plans);
}

struct acctrec *accounts_get(struct accounts *t, const char *id, int create)
{
    size_t i;

    for (i = hash_id(id) & t->mask; t->slot[i] != NULL; i = (i + 1) & t->mask)
        if (strcmp(t->slot[i]->id, id) == 0)
            return t->slot[i];
    if (!create)
        return NULL;
    if ((t->count + 1) * 2 > t->mask + 1) {
        size_t mask = (t->mask + 1) * 2 - 1;
        struct acctrec **slot = kn_calloc(mask + 1, sizeof(*slot));
        for (size_t j = 0; j <= t->mask; j++) {
            if (t->slot[j] == NULL)
                continue;
            size_t k = hash_id(t->slot[j]->id) & mask;
            while (slot[k] != NULL)
                k = (k + 1) & mask;
            slot[k] = t->slot[j];
        }
        free(t->slot);
        t->slot = slot;
        t->mask = mask;
        for (i = hash_id(id) & t->mask; t->slot[i] != NULL; i = (i + 1) & t->mask)
            ;
    }
    struct acctrec *a = kn_calloc(1, sizeof(*a));
    kn_strlcpy(a->id, id, sizeof(a->id));
    const struct plan *p = plans_find(atomic_load(&t->plans), NULL);
    quota_configure(a, p, p->requests_per_month, p->tokens_per_month);
    t->slot[i] = a;
    t->count++;
    return a;
}

/* The name of a plan an account is on but the plans do not define, kept until the end. */
static const char *wanted_name(struct accounts *t, const char *name)
{
    for (size_t i = 0; i < t->nwanted; i++)
        if (strcmp(t->wanted[i], name) == 0)
            return t->wanted[i];
    t->wanted = kn_realloc(t->wanted, (t->nwanted + 1) * sizeof(*t->wanted));
    return t->wanted[t->nwanted++] = kn_strdup(name);
}

int accounts_apply(void *ud, const struct store_account *s)
{
    struct accounts *t = ud;
    struct acctrec *a = accounts_get(t, s->id, 1);
    const struct plan *p = plans_find(atomic_load(&t->plans), s->plan);

    atomic_store_explicit(&a->suspended_at, s->suspended_at, memory_order_release);
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
        atomic_store(&a->plan_wanted, wanted_name(t, s->plan));
        quota_configure(a, NULL, 0, 0);
        return 0;
    }
    quota_configure(
        a, p,
        s->quota_requests == STORE_QUOTA_FROM_PLAN ? p->requests_per_month : s->quota_requests,
        s->quota_tokens == STORE_QUOTA_FROM_PLAN ? p->tokens_per_month : s->quota_tokens);
    return 0;
}

int accounts_load_month(void *ud, const struct store_month_total *m)
{
    struct accounts *t = ud;
    quota_load(accounts_get(t, m->account_id, 1), kn_month_of(kn_unix_now()), m->requests,
               m->tokens);
    return 0;
}

/* Puts new plans in force: every account is applied again from the store, so that each record
 * points into the new plans. The old plans stay until the table is freed. */
static void use_plans(struct accounts *t, struct store *s, struct plans *p)
{
    struct store_cursor cursor;

    if (t->owned != NULL) {
        t->retired = kn_realloc(t->retired, (t->nretired + 1) * sizeof(*t->retired));
        t->retired[t->nretired++] = t->owned;
    }
    t->owned = p;
    atomic_store(&t->plans, p);
    if (store_accounts_load(s, &cursor, accounts_apply, t) != STORE_OK)
        fprintf(stderr,
                "konnect: cannot read accounts after reloading plans (the next change "
                "to each account applies them): %s\n",
                store_errmsg(s));
}

/* Puts the store's newest plans version in force when it is newer than the plans in force (or
 * when `force`... never older). Returns 1 when it changed them, 0 when not, -1 when the store
 * failed or the version cannot be read (the plans in force are kept). */
int accounts_sync_store_plans(struct accounts *t, struct store *s, char *msg, size_t size)
{
    char err[512], *body = NULL;
    int64_t version = 0;
    const struct plans *now = atomic_load(&t->plans);

    if (store_plans_newest(s, &version, &body) != STORE_OK) {
        snprintf(msg, size, "cannot read the store's plans: %s", store_errmsg(s));
        return -1;
    }
    if (body == NULL || version <= now->version) {
        free(body);
        return 0;
    }
    struct plans *p = plans_parse(body, strlen(body), err, sizeof(err));
    free(body);
    if (p == NULL) {
        snprintf(msg, size,
                 "plans version %lld in the store cannot be read (kept version %lld): %s",
                 (long long)version, (long long)now->version, err);
        return -1;
    }
    p->version = version;
    use_plans(t, s, p);
    snprintf(msg, size, "plans version %lld from the store in force (%zu plan%s)",
             (long long)version, p->count, p->count == 1 ? "" : "s");
    return 1;
}

int accounts_reload_plans(struct accounts *t, struct store *s, char *msg, size_t size)
{
    char err[512];
    const struct plans *now = atomic_load(&t->plans);

    if (now->version > 0) {
        /* Once plans are in the store, every server follows the store, never its own file. */
        snprintf(msg, size,
                 "the plans come from the store (version %lld): publish a new version with "
                 "konnect plans apply FILE",
                 (long long)now->version);
        return -1;
    }
    struct plans *p = plans_load(t->plans_path, t->plans_required, err, sizeof(err));

    if (p == NULL) {
        snprintf(msg, size, "the plans in force are kept: %s", err);
        return -1;
    }
    use_plans(t, s, p);
    if (p->builtin)
        snprintf(msg, size, "the built-in plan is in force (no file at %s)", t->plans_path);
    else
        snprintf(msg, size, "%zu plan%s in force from %s", p->count, p->count == 1 ? "" : "s",
                 t->plans_path);
    return 0;
}
