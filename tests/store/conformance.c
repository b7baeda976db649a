/* The store's contract, run against every backend: a fresh SQLite file always, then each URL
 * given as an argument (each an empty database of its own). Accounts, keys and their change
 * feed, key changes committed with their audit entries, usage, the ledger's per-row outcomes
 * and fences, dashboard access, throttles, pruning. What only SQLite has (its log, its options)
 * is tested in sqlite_only.c. */
#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "store/store.h"
#include "unit.h"

static int count_cb(void *ud, const struct store_key *k, uint32_t today)
{
    (void)k, (void)today;
    (*(int *)ud)++;
    return 0;
}

/* The last key a walk gave, and the count beside it. */
struct last_key {
    struct store_key k;
    uint64_t count;
};

static int last_cb(void *ud, const struct store_key *k, uint32_t today)
{
    struct last_key *l = ud;
    l->k = *k;
    l->count = today;
    return 0;
}

static int list_count_cb(void *ud, const struct store_key *k, uint64_t total)
{
    (void)k, (void)total;
    (*(int *)ud)++;
    return 0;
}

static int list_last_cb(void *ud, const struct store_key *k, uint64_t total)
{
    struct last_key *l = ud;
    l->k = *k;
    l->count = total;
    return 0;
}

static int sum_cb(void *ud, const struct store_usage_sum *u)
{
    struct store_usage_sum *total = ud;
    total->requests += u->requests;
    total->input_tokens += u->input_tokens;
    total->output_tokens += u->output_tokens;
    total->price_micros += u->price_micros;
    total->day++; /* Counts the rollup lines. */
    return 0;
}

static int month_cb(void *ud, const struct store_month_total *t)
{
    *(struct store_month_total *)ud = *t;
    return 0;
}

static int account_cb(void *ud, const struct store_account *a)
{
    *(struct store_account *)ud = *a;
    return 0;
}

/* The ledger: one row per request id, however often a batch is retried, and a rollup that sums
 * exactly what the ledger holds; plans and quotas with their change log. */
/* The keys a load gave, by id: what the monthly-quota test looks at. */
struct quota_keys {
    struct store_key q1, q2, other;
    int n;
};

static int quota_cb(void *ud, const struct store_key *k, uint32_t today)
{
    struct quota_keys *q = ud;
    (void)today;
    if (!strcmp(k->id, "key_q1"))
        q->q1 = *k;
    else if (!strcmp(k->id, "key_q2"))
        q->q2 = *k;
    else if (!strcmp(k->id, "key_q3"))
        q->other = *k;
    q->n++;
    return 0;
}

/* What line_month_totals gave for the quota test's two lines. */
struct line_totals {
    uint64_t q1, q3;
    int n, account_ok;
    const char *account_id;
};

static int lines_cb(void *ud, const struct store_month_total *t)
{
    struct line_totals *l = ud;
    if (!strcmp(t->line_id, "key_q1"))
        l->q1 = t->requests;
    else if (!strcmp(t->line_id, "key_q3"))
        l->q3 = t->requests;
    l->account_ok += !strcmp(t->account_id, l->account_id);
    l->n++;
    return 0;
}

/* A live key's own monthly quota counts the month's requests over its line of replacements:
 * the key it was rolled from and it share one line (quota_key), kept by a roll and given by a
 * load, a change and a find; the store sums each line's requests of a month. */
static void test_key_quota(struct store *s, struct store *s2, const char *account_id)
{
    struct store_key k, repl;
    struct store_ledger_row rows[6];
    struct quota_keys got;
    struct store_cursor cur;
    uint8_t outcome[6];
    int64_t at = 1795805276000, today = at / 86400000; /* 2026-11-27 */

    memset(&k, 0, sizeof(k));
    strcpy(k.id, "key_q1");
    kn_strlcpy(k.account_id, account_id, sizeof(k.account_id));
    strcpy(k.name, "quota");
    strcpy(k.mode, "live");
    strcpy(k.environment, "production");
    randombytes_buf(k.hash, sizeof(k.hash));
    strcpy(k.hint, "sk_live_...abcd");
    strcpy(k.created_by, "cli");
    k.created_at = 100;
    k.monthly_requests = 5;
    CHECK(store_key_insert(s, &k, 1, NULL) == STORE_OK);
    struct store_key other = k;
    strcpy(other.id, "key_q3");
    other.monthly_requests = 0;
    randombytes_buf(other.hash, sizeof(other.hash));
    CHECK(store_key_insert(s, &other, 1, NULL) == STORE_OK);
    repl = k;
    strcpy(repl.id, "key_q2");
    strcpy(repl.quota_key, "key_q1");
    randombytes_buf(repl.hash, sizeof(repl.hash));
    CHECK(store_key_roll(s, "key_q1", &repl, 9000000000, NULL) == STORE_OK);

    memset(rows, 0, sizeof(rows));
    for (int i = 0; i < 6; i++) {
        snprintf(rows[i].request_id, sizeof(rows[i].request_id), "req_quota%019d", i);
        kn_strlcpy(rows[i].account_id, account_id, sizeof(rows[i].account_id));
        strcpy(rows[i].key_id, i < 2 ? "key_q1" : i < 4 ? "key_q2" : "key_q3");
        strcpy(rows[i].environment, "production");
        strcpy(rows[i].model, "m1");
        strcpy(rows[i].currency, "usd");
        strcpy(rows[i].plan, "pro");
        rows[i].at_ms = at + (i == 3 ? 86400000LL * 10 : 0); /* One in December. */
    }
    CHECK(store_ledger_add(s, rows, 6, outcome) == STORE_OK);

    memset(&got, 0, sizeof(got));
    memset(&cur, 0, sizeof(cur));
    CHECK(store_keys_load(s2, today, &cur, quota_cb, &got) == STORE_OK);
    CHECK(got.q1.monthly_requests == 5 && got.q2.monthly_requests == 5);
    CHECK(!strcmp(got.q1.quota_key, "key_q1") && !strcmp(got.q2.quota_key, "key_q1"));
    CHECK(got.other.monthly_requests == 0 && !strcmp(got.other.quota_key, "key_q3"));
    /* A change of quota is in the feed; find reads the quota and the line. */
    struct store_cursor feed = cur;
    CHECK(store_key_set_restrictions(s, "key_q2", "", 0, 2, NULL) == STORE_OK);
    memset(&got, 0, sizeof(got));
    CHECK(store_key_changes(s2, today, &feed, quota_cb, &got) == STORE_OK);
    CHECK(got.n == 1 && got.q2.monthly_requests == 2);
    struct store_key fk;
    CHECK(store_key_find(s2, "key_q2", NULL, &fk) == STORE_OK && fk.monthly_requests == 2 &&
          !strcmp(fk.quota_key, "key_q1"));
    /* Each line's month's requests (what a line's count starts from): the rolled key's with its
     * predecessor's, another month's apart; rows of keys the store does not hold are in none. */
    struct line_totals lt;
    memset(&lt, 0, sizeof(lt));
    lt.account_id = account_id;
    CHECK(store_line_month_totals(s2, kn_month_of(at / 1000), lines_cb, &lt) == STORE_OK);
    CHECK(lt.n == 2 && lt.q1 == 3 && lt.q3 == 2 && lt.account_ok == 2);
    memset(&lt, 0, sizeof(lt));
    lt.account_id = account_id;
    CHECK(store_line_month_totals(s2, kn_month_of(at / 1000 + 10 * 86400), lines_cb, &lt) ==
              STORE_OK &&
          lt.n == 1 && lt.q1 == 1);
}

static void test_ledger(struct store *s, const char *account_id)
{
    struct store_ledger_row rows[300];
    struct store_usage_sum total;
    struct store_month_total month;
    struct store_account a;
    struct store_cursor cur;
    uint8_t outcome[300];
    int64_t at = 1795805276000; /* 2026-11-27 */
    int was_billed = -1;

    memset(rows, 0, sizeof(rows));
    for (int i = 0; i < 300; i++) {
        snprintf(rows[i].request_id, sizeof(rows[i].request_id), "req_%024d", i);
        kn_strlcpy(rows[i].account_id, account_id, sizeof(rows[i].account_id));
        snprintf(rows[i].key_id, sizeof(rows[i].key_id), "key_%d", i % 3);
        kn_strlcpy(rows[i].environment, "production", sizeof(rows[i].environment));
        kn_strlcpy(rows[i].model, i % 2 ? "m1" : "m2", sizeof(rows[i].model));
        kn_strlcpy(rows[i].currency, "usd", sizeof(rows[i].currency));
        kn_strlcpy(rows[i].plan, "pro", sizeof(rows[i].plan));
        rows[i].input_tokens = 10;
        rows[i].output_tokens = (uint32_t)i;
        rows[i].price_micros = 7;
        rows[i].at_ms = at + (i >= 200 ? 86400000 * 4 : 0); /* The last 100 in December. */
    }
    CHECK(store_ledger_add(s, rows, 200, outcome) == STORE_OK);
    CHECK(outcome[0] == STORE_LEDGER_ADDED && outcome[199] == STORE_LEDGER_ADDED);
    /* A fence on a request not yet billed: its row, when it comes, is reported voided and
     * bills nothing; a fence on a billed request says so and changes nothing. */
    CHECK(store_ledger_void(s, rows[250].request_id, at, &was_billed) == STORE_OK && !was_billed);
    CHECK(store_ledger_void(s, rows[250].request_id, at, &was_billed) == STORE_OK && !was_billed);
    CHECK(store_ledger_void(s, rows[5].request_id, at, &was_billed) == STORE_OK && was_billed);
    /* A retried batch overlapping the first: only the new rows count. */
    CHECK(store_ledger_add(s, rows + 100, 200, outcome) == STORE_OK);
    int added = 0, before = 0, voided = 0;
    for (int i = 0; i < 200; i++) {
        added += outcome[i] == STORE_LEDGER_ADDED;
        before += outcome[i] == STORE_LEDGER_BILLED_BEFORE;
        voided += outcome[i] == STORE_LEDGER_VOIDED;
    }
    CHECK(added == 99 && before == 100 && voided == 1 && outcome[150] == STORE_LEDGER_VOIDED);
    memset(&total, 0, sizeof(total));
    CHECK(store_usage_sums(s, account_id, kn_month_of(at / 1000), kn_month_of(at / 1000), sum_cb,
                           &total) == STORE_OK);
    CHECK(total.requests == 200 && total.input_tokens == 2000 && total.price_micros == 1400);
    CHECK(total.output_tokens == 199 * 200 / 2);
    CHECK(total.day == 6); /* 3 keys x 2 models, one day. */
    memset(&month, 0, sizeof(month));
    CHECK(store_usage_month_totals(s, kn_month_of(at / 1000) + 1, month_cb, &month) == STORE_OK);
    CHECK(strcmp(month.account_id, account_id) == 0 && month.requests == 99);

    CHECK(store_accounts_load(s, &cur, account_cb, &a) == STORE_OK);
    CHECK(a.plan[0] == '\0' && a.quota_requests == STORE_QUOTA_FROM_PLAN);
    CHECK(store_account_set_plan(s, account_id, "pro") == STORE_OK);
    CHECK(store_account_set_quota(s, account_id, 5, STORE_QUOTA_UNLIMITED) == STORE_OK);
    CHECK(store_account_set_plan(s, "acct_nope", "pro") == STORE_NOT_FOUND);
    memset(&a, 0, sizeof(a));
    CHECK(store_account_changes(s, &cur, account_cb, &a) == STORE_OK);
    CHECK(strcmp(a.plan, "pro") == 0 && a.quota_requests == 5 &&
          a.quota_tokens == STORE_QUOTA_UNLIMITED);
    CHECK(store_account_set_quota(s, account_id, STORE_QUOTA_FROM_PLAN, STORE_QUOTA_FROM_PLAN) ==
          STORE_OK);
    CHECK(store_account_find(s, account_id, &a) == STORE_OK &&
          a.quota_tokens == STORE_QUOTA_FROM_PLAN);
    memset(&a, 0, sizeof(a));
    CHECK(store_account_changes(s, &cur, account_cb, &a) == STORE_OK &&
          a.quota_tokens == STORE_QUOTA_FROM_PLAN);
    memset(&a, 0, sizeof(a));
    CHECK(store_account_changes(s, &cur, account_cb, &a) == STORE_OK && a.id[0] == '\0');
    /* A suspension, and the reinstatement after it, are changes of the feed (twice in a row:
     * every change, not only the first after a load). */
    CHECK(store_account_set_suspended(s, account_id, 4242) == STORE_OK);
    CHECK(store_account_changes(s, &cur, account_cb, &a) == STORE_OK && a.suspended_at == 4242);
    CHECK(store_account_find(s, account_id, &a) == STORE_OK && a.suspended_at == 4242);
    CHECK(store_account_set_suspended(s, account_id, 0) == STORE_OK);
    memset(&a, 0, sizeof(a));
    a.suspended_at = -1;
    CHECK(store_account_changes(s, &cur, account_cb, &a) == STORE_OK && a.suspended_at == 0 &&
          a.id[0] != '\0');
    CHECK(store_account_set_suspended(s, "acct_nope", 1) == STORE_NOT_FOUND);
    memset(&a, 0, sizeof(a));
    CHECK(store_account_changes(s, &cur, account_cb, &a) == STORE_OK && a.id[0] == '\0');
    struct store_cursor ahead = cur; /* past the newest change: a store restored from a copy */
    ahead.v[0] += 2;
    CHECK(store_account_changes(s, &ahead, account_cb, &a) == STORE_STALE && a.id[0] == '\0');
}

static int count_keys(void *ud, const struct store_key *k, uint32_t today)
{
    (void)k, (void)today;
    (*(int *)ud)++;
    return 0;
}

static int count_audit(void *ud, const struct store_audit *e)
{
    (void)e;
    (*(int *)ud)++;
    return 0;
}

/* Users, invitations, set-password links, throttles and pruning. */
static void test_access(struct store *s, const char *account_id)
{
    struct store_user u;
    struct store_account b;
    struct store_invite inv, got;
    struct store_password_token t, tg;
    struct store_throttle th;
    struct store_member m;
    int64_t n = 0, refused = -1, deleted = 0;
    int failures = 0;

    /* A user made by an invitation is never made an owner by accident. */
    memset(&u, 0, sizeof(u));
    strcpy(u.id, "user_claimed");
    strcpy(u.email, "claimed@example.com");
    u.created_at = 1;
    struct store_member mm = {.role = "member", .created_at = 1};
    strcpy(mm.account_id, account_id);
    strcpy(mm.user_id, u.id);
    CHECK(store_member_add(s, &mm, &u) == STORE_OK);
    CHECK(store_member_add(s, &mm, &u) == STORE_CONFLICT);
    CHECK(store_account_create(s, "claimed@example.com", NULL, NULL, &b) == STORE_CONFLICT);
    CHECK(strstr(store_errmsg(s), "user_claimed") != NULL);
    CHECK(store_account_find(s, "claimed@example.com", &b) == STORE_NOT_FOUND);
    CHECK(store_account_create(s, "claimed@example.com", NULL, "user_other", &b) ==
          STORE_NOT_FOUND);
    CHECK(store_account_create(s, "claimed@example.com", NULL, "user_claimed", &b) == STORE_OK);
    CHECK(store_member_find(s, b.id, "user_claimed", &m) == STORE_OK && !strcmp(m.role, "owner"));

    /* Invitations: pending, wrong passwords void them at the fifth, cancellation. */
    memset(&inv, 0, sizeof(inv));
    randombytes_buf(inv.token_hash, sizeof(inv.token_hash));
    strcpy(inv.id, "inv_one");
    strcpy(inv.account_id, account_id);
    strcpy(inv.email, "Friend@Example.com");
    strcpy(inv.invited_by, "dev@example.com");
    inv.created_at = 1000;
    inv.expires_at = 2000;
    CHECK(store_invite_insert(s, &inv) == STORE_OK);
    CHECK(store_invites_pending(s, account_id, 1500, &n) == STORE_OK && n == 1);
    CHECK(store_invites_pending(s, account_id, 2000, &n) == STORE_OK && n == 0);
    for (int i = 1; i <= 5; i++)
        CHECK(store_invite_fail(s, inv.token_hash, 5, 1500, &failures) == STORE_OK &&
              failures == i);
    CHECK(store_invite_find(s, inv.token_hash, &got) == STORE_OK && got.canceled_at == 1500 &&
          got.failures == 5 && !strcmp(got.email, "friend@example.com"));
    CHECK(store_invite_accept(s, inv.token_hash, 1600) == STORE_CONFLICT);
    CHECK(store_invites_pending(s, account_id, 1500, &n) == STORE_OK && n == 0);
    randombytes_buf(inv.token_hash, sizeof(inv.token_hash));
    strcpy(inv.id, "inv_two");
    CHECK(store_invite_insert(s, &inv) == STORE_OK);
    CHECK(store_invite_cancel(s, "acct_other", "inv_two", 1500, &got) == STORE_NOT_FOUND);
    CHECK(store_invite_cancel(s, account_id, "inv_two", 1500, &got) == STORE_OK &&
          !strcmp(got.id, "inv_two"));
    CHECK(store_invite_cancel(s, account_id, "inv_two", 1500, &got) == STORE_NOT_FOUND);

    /* A set-password link is used once, sets the password and ends the user's sessions. */
    struct store_session x;
    memset(&x, 0, sizeof(x));
    randombytes_buf(x.token_hash, sizeof(x.token_hash));
    strcpy(x.user_id, "user_claimed");
    strcpy(x.account_id, account_id);
    strcpy(x.csrf_token, "c");
    x.expires_at = 9000;
    CHECK(store_session_insert(s, &x) == STORE_OK);
    memset(&t, 0, sizeof(t));
    randombytes_buf(t.token_hash, sizeof(t.token_hash));
    strcpy(t.user_id, "user_claimed");
    t.created_at = 1000;
    t.expires_at = 2000;
    CHECK(store_password_token_insert(s, &t) == STORE_OK);
    CHECK(store_password_token_find(s, t.token_hash, &tg) == STORE_OK && tg.used_at == 0);
    CHECK(store_password_token_use(s, t.token_hash, "$argon2id$x", 2000) == STORE_CONFLICT);
    CHECK(store_password_token_use(s, t.token_hash, "$argon2id$x", 1500) == STORE_OK);
    CHECK(store_password_token_use(s, t.token_hash, "$argon2id$y", 1500) == STORE_CONFLICT);
    CHECK(store_user_find(s, "user_claimed", &u) == STORE_OK &&
          !strcmp(u.password_hash, "$argon2id$x"));
    CHECK(store_session_find(s, x.token_hash, &x) == STORE_NOT_FOUND);

    /* Removing a member ends their sessions in that account and cancels its pending
     * invitations for them. */
    CHECK(store_session_insert(s, &x) == STORE_OK);
    CHECK(store_user_find(s, "user_claimed", &u) == STORE_OK);
    randombytes_buf(inv.token_hash, sizeof(inv.token_hash));
    strcpy(inv.id, "inv_three");
    kn_strlcpy(inv.email, u.email, sizeof(inv.email));
    inv.expires_at = 9000;
    CHECK(store_invite_insert(s, &inv) == STORE_OK);
    CHECK(store_member_remove(s, account_id, "user_claimed", 1700) == STORE_OK);
    CHECK(store_invite_find(s, inv.token_hash, &got) == STORE_OK && got.canceled_at == 1700);
    CHECK(store_member_remove(s, account_id, "user_claimed", 1700) == STORE_NOT_FOUND);
    CHECK(store_session_find(s, x.token_hash, &x) == STORE_NOT_FOUND);

    /* Throttles count attempts, start again after a quiet window and count refusals. */
    CHECK(store_throttle_get(s, "signin", "a 1", &th) == STORE_NOT_FOUND);
    for (int i = 1; i <= 3; i++)
        CHECK(store_throttle_hit(s, "signin", "a 1", 100 + i, 60, &th) == STORE_OK &&
              th.count == i && th.first_at == 101 && th.last_at == 100 + i);
    CHECK(store_throttle_refuse(s, "signin", "a 1", &refused) == STORE_OK && refused == 0);
    CHECK(store_throttle_refuse(s, "signin", "a 1", &refused) == STORE_OK && refused == 1);
    CHECK(store_throttle_get(s, "signin", "a 1", &th) == STORE_OK && th.refused == 2);
    CHECK(store_throttle_hit(s, "signin", "a 1", 200, 60, &th) == STORE_OK && th.count == 1 &&
          th.first_at == 200 && th.refused == 0);
    CHECK(store_throttle_clear(s, "signin", "a 1") == STORE_OK);
    CHECK(store_throttle_get(s, "signin", "a 1", &th) == STORE_NOT_FOUND);

    /* Pruning keeps what is still needed. */
    CHECK(store_throttle_hit(s, "address", "old", 100, 60, &th) == STORE_OK);
    CHECK(store_throttle_hit(s, "address", "new", 5000, 60, &th) == STORE_OK);
    struct store_retention r = {.audit_days = 0,
                                .change_log_days = 7,
                                .throttle_s = 3600,
                                .done_days = 30,
                                .session_idle_s = 86400};
    CHECK(store_prune(s, &r, 5000, &deleted) == STORE_OK && deleted >= 1);
    CHECK(store_throttle_get(s, "address", "old", &th) == STORE_NOT_FOUND);
    CHECK(store_throttle_get(s, "address", "new", &th) == STORE_OK);
    /* Expired and idle sessions go; a live one stays. */
    struct store_session live = x, old = x, idle = x;
    randombytes_buf(live.token_hash, sizeof(live.token_hash));
    randombytes_buf(old.token_hash, sizeof(old.token_hash));
    randombytes_buf(idle.token_hash, sizeof(idle.token_hash));
    strcpy(live.user_id, "user_claimed");
    live.last_seen_at = 4990, live.expires_at = 9000;
    old.last_seen_at = 4990, old.expires_at = 4999;
    idle.last_seen_at = 100, idle.expires_at = 9000;
    strcpy(old.user_id, live.user_id);
    strcpy(idle.user_id, live.user_id);
    CHECK(store_session_insert(s, &live) == STORE_OK && store_session_insert(s, &old) == STORE_OK &&
          store_session_insert(s, &idle) == STORE_OK);
    r.session_idle_s = 3600;
    CHECK(store_prune(s, &r, 5000, &deleted) == STORE_OK && deleted == 2);
    CHECK(store_session_find(s, live.token_hash, &x) == STORE_OK);
    CHECK(store_session_find(s, old.token_hash, &x) == STORE_NOT_FOUND);
    CHECK(store_session_find(s, idle.token_hash, &x) == STORE_NOT_FOUND);
    /* The audit log is kept for audit_days; the change log for change_log_days, but never its
     * newest row (a server's cursor). */
    struct store_audit e = {.at = 1000};
    strcpy(e.actor, "cli");
    strcpy(e.action, "test.old");
    strcpy(e.result, "ok");
    CHECK(store_audit_add(s, &e) == STORE_OK);
    r.audit_days = 1;
    int64_t later = kn_unix_now() + 30 * 86400;
    CHECK(store_prune(s, &r, later, &deleted) == STORE_OK && deleted > 1000);
    /* A reader that had not read the pruned changes learns it fell behind, and nothing else;
     * after loading everything again it reads on from there. */
    struct store_cursor from_start = {{0}};
    int nk = 0;
    CHECK(store_key_changes(s, 1, &from_start, count_keys, &nk) == STORE_STALE && nk == 0 &&
          from_start.v[0] == 0);
    CHECK(store_keys_load(s, 1, &from_start, count_keys, &nk) == STORE_OK && nk >= 1000);
    nk = 0;
    CHECK(store_key_changes(s, 1, &from_start, count_keys, &nk) == STORE_OK && nk == 0);
    struct store_cursor newest = from_start;
    newest.v[0]--; /* one change behind: the newest row is still there, so no gap */
    CHECK(store_key_changes(s, 1, &newest, count_keys, &nk) == STORE_OK && nk == 1);
    /* A reader ahead of the log's newest change (the store was restored from an older copy, and
     * the numbers will be taken again) learns it must load everything again. */
    struct store_cursor ahead = from_start;
    ahead.v[0] += 3;
    CHECK(store_key_changes(s, 1, &ahead, count_keys, &nk) == STORE_STALE);
    int na = 0;
    CHECK(store_audit_list(s, "", 0, 10, count_audit, &na) == STORE_OK && na == 0);

    CHECK(store_key_count_working(s, account_id, 0, &n) == STORE_OK && n >= 1000);
}

struct action_count {
    const char *action;
    int n;
};

static int count_audit_action(void *ud, const struct store_audit *e)
{
    struct action_count *c = ud;
    c->n += strcmp(e->action, c->action) == 0;
    return 0;
}

/* How many audit entries of an account have this action. */
static int audited(struct store *s, const char *account_id, const char *action)
{
    struct action_count c = {action, 0};
    CHECK(store_audit_list(s, account_id, 0, 1000, count_audit_action, &c) == STORE_OK);
    return c.n;
}

static struct store_audit entry(const char *account_id, const char *action)
{
    struct store_audit e;
    memset(&e, 0, sizeof(e));
    e.at = 4242;
    kn_strlcpy(e.account_id, account_id, sizeof(e.account_id));
    strcpy(e.actor, "cli");
    kn_strlcpy(e.action, action, sizeof(e.action));
    strcpy(e.result, "ok");
    return e;
}

static int node_cb(void *ud, const struct store_node *n)
{
    struct store_node *out = ud;
    if (strcmp(n->id, "node-x") == 0)
        *out = *n;
    return 0;
}

/* Nodes' heartbeats with what they applied, and plans versions, seen from another connection. */
static void test_nodes_and_plans(struct store *s, struct store *s2)
{
    int64_t k = -1, a = -1, pv = -1, v1 = 0, v2 = 0, version;
    char *body = (char *)"x";
    struct store_node n = {.id = "node-x",
                           .started_at = 77,
                           .key_seq = 3,
                           .account_seq = 4,
                           .plans_version = 0,
                           .counters = "redis",
                           .version = "t",
                           .address = "http://n"},
                      got;

    CHECK(store_plans_newest(s2, &version, &body) == STORE_OK && version == 0 && body == NULL);
    CHECK(store_changes_newest(s2, &k, &a, &pv) == STORE_OK && k > 0 && a >= 0 && pv == 0);
    struct store_audit e = entry("", "plans.apply");
    CHECK(store_plans_publish(s, "{\"plans\":[{\"name\":\"one\"}]}", 10, "cli", &e, &v1) ==
          STORE_OK);
    CHECK(store_plans_publish(s, "{\"plans\":[{\"name\":\"two\"}]}", 11, "cli", NULL, &v2) ==
          STORE_OK);
    CHECK(v1 > 0 && v2 > v1);
    CHECK(store_plans_newest(s2, &version, &body) == STORE_OK && version == v2);
    CHECK(body != NULL && strstr(body, "two") != NULL);
    free(body);
    CHECK(store_changes_newest(s2, &k, &a, &pv) == STORE_OK && pv == v2);
    CHECK(audited(s, "", "plans.apply") == 1);

    n.plans_version = v2;
    CHECK(store_node_beat(s, &n) == STORE_OK);
    n.key_seq = 9;
    CHECK(store_node_beat(s, &n) == STORE_OK);
    memset(&got, 0, sizeof(got));
    CHECK(store_nodes_list(s2, node_cb, &got) == STORE_OK);
    CHECK(strcmp(got.id, "node-x") == 0 && got.key_seq == 9 && got.account_seq == 4);
    CHECK(got.plans_version == v2 && got.started_at == 77 && strcmp(got.counters, "redis") == 0);
    CHECK(got.age_ms >= 0 && got.age_ms < 3000);
    CHECK(store_node_leave(s, "node-x") == STORE_OK);
    memset(&got, 0, sizeof(got));
    CHECK(store_nodes_list(s2, node_cb, &got) == STORE_OK && got.id[0] == '\0');
}

/* The whole contract on one empty store at url. */
static int opkey_count(void *ud, const struct store_key *k, uint64_t requests)
{
    (void)requests;
    CHECK(strcmp(k->mode, "operator") == 0 && k->account_id[0] == '\0');
    ++*(int *)ud;
    return 0;
}

/* Operator keys: kept apart from the accounts' keys, found by id and by hash, listed, revoked
 * once (the first revocation stays), each change with its audit entry. */
/* Two-factor sign-in: the seed, the step of the last accepted code (each code once, even when
 * two servers race with it), the recovery codes (each once), the account's requirement. */
static void test_two_factor(struct store *s, struct store *s2, const char *account_id)
{
    struct store_user u, owner;
    int req = -1;

    memset(&u, 0, sizeof(u));
    strcpy(u.id, "user_2fa");
    strcpy(u.email, "twofa@example.com");
    u.created_at = 1;
    struct store_member mm = {.role = "member", .created_at = 1};
    strcpy(mm.account_id, account_id);
    strcpy(mm.user_id, u.id);
    CHECK(store_member_add(s, &mm, &u) == STORE_OK);
    CHECK(store_user_find(s, "user_2fa", &u) == STORE_OK && u.totp_seed[0] == '\0' &&
          u.totp_enabled_at == 0 && u.totp_last_step == 0 && u.recovery_codes[0] == '\0');
    CHECK(store_user_totp_set(s, "user_nobody", NULL, "abc", 0, NULL, 0) == STORE_NOT_FOUND);
    /* Set up, not on yet. */
    CHECK(store_user_totp_set(s, "user_2fa", "", "sealed1", 0, NULL, 0) == STORE_OK);
    CHECK(store_user_find(s2, "twofa@example.com", &u) == STORE_OK &&
          !strcmp(u.totp_seed, "sealed1") && u.totp_enabled_at == 0);
    CHECK(store_user_totp_set(s, "user_2fa", "other", "sealed1", 5000, "h1,h2,h3", 0) ==
          STORE_CONFLICT); /* turning on a seed replaced meanwhile */
    CHECK(store_user_totp_set(s, "user_2fa", "sealed1", "sealed1", 5000, "h1,h2,h3", 0) ==
          STORE_OK);
    CHECK(store_user_find(s2, "user_2fa", &u) == STORE_OK && u.totp_enabled_at == 5000 &&
          !strcmp(u.recovery_codes, "h1,h2,h3"));
    /* Once on, a setup that raced with it is refused rather than undoing it. */
    CHECK(store_user_totp_set(s2, "user_2fa", "", "sealed2", 0, NULL, 0) == STORE_CONFLICT);
    CHECK(store_user_find(s, "user_2fa", &u) == STORE_OK && !strcmp(u.totp_seed, "sealed1"));
    /* A step is taken once, and never an older one. */
    CHECK(store_user_totp_step(s, "user_2fa", 100) == STORE_OK);
    CHECK(store_user_totp_step(s2, "user_2fa", 100) == STORE_CONFLICT);
    CHECK(store_user_totp_step(s2, "user_2fa", 99) == STORE_CONFLICT);
    CHECK(store_user_totp_step(s2, "user_2fa", 101) == STORE_OK);
    CHECK(store_user_find(s, "user_2fa", &u) == STORE_OK && u.totp_last_step == 101);
    /* A recovery code: the list it was taken from must still be the list. */
    CHECK(store_user_recovery_take(s, "user_2fa", "h1,h2,h3", "h1,h3") == STORE_OK);
    CHECK(store_user_recovery_take(s2, "user_2fa", "h1,h2,h3", "h1,h3") == STORE_CONFLICT);
    CHECK(store_user_recovery_take(s2, "user_2fa", "h1,h3", "h3") == STORE_OK);
    CHECK(store_user_recovery_take(s, "user_2fa", "h3", "") == STORE_OK);
    CHECK(store_user_find(s, "user_2fa", &u) == STORE_OK && u.recovery_codes[0] == '\0');
    /* Turning it off forgets the seed, the codes and the step. */
    CHECK(store_user_totp_set(s, "user_2fa", NULL, "", 0, NULL, 0) == STORE_OK);
    CHECK(store_user_find(s2, "user_2fa", &u) == STORE_OK && u.totp_seed[0] == '\0' &&
          u.totp_enabled_at == 0 && u.totp_last_step == 0);
    CHECK(store_user_totp_step(s, "user_2fa", 500) == STORE_CONFLICT);
    CHECK(store_user_recovery_take(s, "user_2fa", "", "x") == STORE_CONFLICT);
    /* Other users are untouched. */
    CHECK(store_user_find(s, "user_claimed", &owner) == STORE_OK && owner.totp_seed[0] == '\0');

    CHECK(store_account_two_factor(s, account_id, &req) == STORE_OK && req == 0);
    CHECK(store_account_set_two_factor(s, account_id, 1) == STORE_OK);
    CHECK(store_account_two_factor(s2, account_id, &req) == STORE_OK && req == 1);
    CHECK(store_account_set_two_factor(s, account_id, 0) == STORE_OK);
    CHECK(store_account_two_factor(s2, account_id, &req) == STORE_OK && req == 0);
    CHECK(store_account_two_factor(s, "acct_nope", &req) == STORE_NOT_FOUND);
    CHECK(store_account_set_two_factor(s, "acct_nope", 1) == STORE_NOT_FOUND);
}

static void test_operator_keys(struct store *s, struct store *s2)
{
    struct store_key k, got;
    struct store_audit e = entry("", "test.opkey");
    int n = 0;

    memset(&k, 0, sizeof(k));
    strcpy(k.id, "opk_one");
    strcpy(k.name, "billing system");
    randombytes_buf(k.hash, sizeof(k.hash));
    strcpy(k.hint, "sk_op_...abcd");
    strcpy(k.created_by, "cli");
    k.created_at = 100;
    CHECK(store_operator_key_insert(s, &k, &e) == STORE_OK);
    CHECK(audited(s, "", "test.opkey") == 1);
    CHECK(store_operator_key_insert(s, &k, NULL) == STORE_CONFLICT);
    CHECK(store_operator_key_find(s2, NULL, k.hash, &got) == STORE_OK);
    CHECK(strcmp(got.id, "opk_one") == 0 && strcmp(got.name, "billing system") == 0 &&
          got.revoked_at == 0 && got.created_at == 100 && memcmp(got.hash, k.hash, 32) == 0);
    CHECK(store_operator_key_find(s2, "opk_one", NULL, &got) == STORE_OK);
    CHECK(store_operator_key_find(s2, "opk_nope", NULL, &got) == STORE_NOT_FOUND);
    /* Not an account's key. */
    CHECK(store_key_find(s2, NULL, k.hash, &got) == STORE_NOT_FOUND);
    CHECK(store_operator_key_touch(s, "opk_one", 150) == STORE_OK);
    CHECK(store_operator_key_revoke(s, "opk_one", 200, "cli", NULL) == STORE_OK);
    CHECK(store_operator_key_revoke(s, "opk_one", 300, "other", NULL) == STORE_OK);
    CHECK(store_operator_key_revoke(s, "opk_nope", 300, "cli", NULL) == STORE_NOT_FOUND);
    CHECK(store_operator_key_find(s2, "opk_one", NULL, &got) == STORE_OK);
    CHECK(got.revoked_at == 200 && got.last_used_at == 150);
    CHECK(store_operator_keys_list(s2, opkey_count, &n) == STORE_OK && n == 1);
}

/* Idempotency keys: a claim, a second claim refused with the record, the answer kept, a key a day
 * old or abandoned taken over, another scope apart, a release, and the prune. s and s2 are two
 * connections (two servers). */
static void test_idempotency(struct store *s, struct store *s2)
{
    uint8_t h1[STORE_HASH_LEN], h2[STORE_HASH_LEN];
    struct store_idem x;
    struct store_retention r = {
        .throttle_s = 86400, .done_days = 30, .change_log_days = 30, .session_idle_s = 3600};
    int64_t deleted = 0;

    memset(h1, 1, sizeof(h1));
    memset(h2, 2, sizeof(h2));
    CHECK(store_idem_begin(s, "acct_i", "k1", h1, 10000, 9000, &x) == STORE_OK);
    /* In flight: the other server finds it, with the first request's fingerprint. */
    CHECK(store_idem_begin(s2, "acct_i", "k1", h2, 10001, 9000, &x) == STORE_CONFLICT);
    CHECK(x.status == 0 && x.body == NULL && x.created_at == 10000);
    CHECK(memcmp(x.request_hash, h1, sizeof(h1)) == 0);
    /* Another scope is another key. */
    CHECK(store_idem_begin(s2, "acct_j", "k1", h2, 10001, 9000, &x) == STORE_OK);
    CHECK(store_idem_finish(s, "acct_i", "k1", 201, "{\"id\":\"key_x\"}") == STORE_OK);
    CHECK(store_idem_begin(s2, "acct_i", "k1", h1, 10002, 9000, &x) == STORE_CONFLICT);
    CHECK(x.status == 201 && x.body != NULL && strcmp(x.body, "{\"id\":\"key_x\"}") == 0);
    free(x.body);
    /* A finished answer is never overwritten, nor released. */
    CHECK(store_idem_finish(s, "acct_i", "k1", 500, "{}") == STORE_OK);
    CHECK(store_idem_release(s, "acct_i", "k1") == STORE_OK);
    CHECK(store_idem_begin(s2, "acct_i", "k1", h1, 10003, 9000, &x) == STORE_CONFLICT);
    CHECK(x.status == 201);
    free(x.body);
    /* A day later the key is free again. */
    CHECK(store_idem_begin(s2, "acct_i", "k1", h2, 10000 + STORE_IDEM_TTL, 9000, &x) == STORE_OK);
    /* In flight since before stale_before: abandoned, taken over; since after: still held. */
    CHECK(store_idem_begin(s, "acct_i", "k2", h1, 20000, 10000, &x) == STORE_OK);
    CHECK(store_idem_begin(s2, "acct_i", "k2", h1, 20010, 20000, &x) == STORE_CONFLICT);
    CHECK(store_idem_begin(s2, "acct_i", "k2", h1, 20010, 20001, &x) == STORE_OK);
    /* Released: free at once. */
    CHECK(store_idem_release(s2, "acct_i", "k2") == STORE_OK);
    CHECK(store_idem_begin(s, "acct_i", "k2", h2, 20020, 10000, &x) == STORE_OK);
    /* The prune takes the keys a day old. */
    CHECK(store_prune(s, &r, 20020 + STORE_IDEM_TTL, &deleted) == STORE_OK && deleted >= 2);
    CHECK(store_idem_begin(s, "acct_j", "k1", h1, 20021, 0, &x) == STORE_OK);
}

/* One sequence of invoice numbers, without gaps, whichever connection issues them; a month keeps
 * the number it was given. */
static void test_invoice_numbers(struct store *s, struct store *s2)
{
    int64_t a = 0, b = 0, c = 0, again = 0;

    CHECK(store_invoice_number(s, "acct_inv1", 24310, 1000, &a) == STORE_OK && a == 1);
    CHECK(store_invoice_number(s2, "acct_inv2", 24310, 1001, &b) == STORE_OK && b == 2);
    CHECK(store_invoice_number(s2, "acct_inv1", 24310, 1002, &again) == STORE_OK && again == 1);
    CHECK(store_invoice_number(s, "acct_inv1", 24311, 1003, &c) == STORE_OK && c == 3);
    CHECK(store_invoice_number(s, "acct_inv2", 24310, 1004, &again) == STORE_OK && again == 2);
}

static void conform(const char *url)
{
    char err[256];
    struct store *s, *s2;
    struct store_account a, a2;
    struct store_key k;
    struct last_key got;
    struct store_cursor cur, cur2;
    int n = 0;

    printf("store at %s\n", url);
    s = store_open(url, 1, err, sizeof(err));
    CHECK(s != NULL);
    if (s == NULL) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    /* Migrating twice is harmless. */
    CHECK(store_migrate(s) == STORE_OK);
    CHECK(store_ping(s) == STORE_OK);

    CHECK(store_account_create(s, "Dev@Example.com", NULL, NULL, &a) == STORE_OK);
    CHECK_STR(a.email, "dev@example.com");
    CHECK(strncmp(a.id, "acct_", 5) == 0);
    CHECK(store_account_create(s, "dev@example.com", NULL, NULL, &a2) == STORE_CONFLICT);
    CHECK(store_account_create(s, "not-an-email", NULL, NULL, &a2) == STORE_ERROR);
    CHECK(store_account_create(s, "a b@example.com", NULL, NULL, &a2) == STORE_ERROR);
    CHECK(store_account_find(s, "DEV@example.com", &a2) == STORE_OK && !strcmp(a2.id, a.id));
    CHECK(store_account_find(s, a.id, &a2) == STORE_OK);
    CHECK(store_account_find(s, "nobody@example.com", &a2) == STORE_NOT_FOUND);

    CHECK(store_keys_load(s, 1, &cur, count_cb, &n) == STORE_OK && n == 0);

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
    /* A key change commits with its audit entry; a change that fails leaves no entry. */
    struct store_audit e = entry(a.id, "test.create");
    CHECK(store_key_insert(s, &k, 1, &e) == STORE_OK);
    CHECK(audited(s, a.id, "test.create") == 1);
    /* The hash is unique. */
    strcpy(k.id, "key_two");
    CHECK(store_key_insert(s, &k, 1, &e) == STORE_CONFLICT);
    CHECK(audited(s, a.id, "test.create") == 1);
    /* A key of no account breaks another constraint: an error, not "exists already"; and the
     * connection is out of its transaction (the next change goes through). */
    struct store_key orphan = k;
    strcpy(orphan.id, "key_orphan");
    strcpy(orphan.account_id, "acct_nope");
    randombytes_buf(orphan.hash, sizeof(orphan.hash));
    CHECK(store_key_insert(s, &orphan, 1, NULL) == STORE_ERROR);
    strcpy(k.id, "key_one");

    /* Another connection sees the insert in the change feed, from where it loaded. */
    s2 = store_open(url, 1, err, sizeof(err));
    CHECK(s2 != NULL);
    cur2 = cur;
    memset(&got, 0, sizeof(got));
    CHECK(store_key_changes(s2, 1, &cur2, last_cb, &got) == STORE_OK);
    CHECK(strcmp(got.k.id, "key_one") == 0 && strcmp(got.k.name, "laptop") == 0);
    CHECK(memcmp(got.k.hash, k.hash, sizeof(k.hash)) == 0);
    n = 0;
    CHECK(store_key_changes(s2, 1, &cur2, count_cb, &n) == STORE_OK && n == 0);

    /* Revocation appends a change; usage writes do not. */
    e = entry(a.id, "test.revoke");
    CHECK(store_key_revoke(s, "key_one", 555, "cli", &e) == STORE_OK);
    CHECK(store_key_revoke(s, "key_nope", 555, "cli", &e) == STORE_NOT_FOUND);
    CHECK(audited(s, a.id, "test.revoke") == 1);
    /* A second revocation keeps the first time; an expiry change leaves the revocation alone. */
    CHECK(store_key_revoke(s, "key_one", 999, "cli", NULL) == STORE_OK);
    CHECK(store_key_expire(s, "key_one", 4000, NULL) == STORE_OK);
    CHECK(store_key_expire(s, "key_one", 0, NULL) == STORE_OK);
    CHECK(store_key_expire(s, "key_nope", 0, NULL) == STORE_NOT_FOUND);
    CHECK(store_key_rename(s, "key_nope", "x", NULL) == STORE_NOT_FOUND);
    CHECK(store_key_set_allowlist(s, "key_nope", "", NULL) == STORE_NOT_FOUND);
    struct store_key fk0;
    struct store_usage u = {
        .key_id = "key_one", .day = 20000, .requests = 3, .refused = 2, .last_used = 777};
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    memset(&got, 0, sizeof(got));
    CHECK(store_key_changes(s2, 20000, &cur2, last_cb, &got) == STORE_OK);
    CHECK(got.k.revoked_at == 555 && got.k.expires_at == 0);
    CHECK(got.count == 6 && got.k.last_used_at == 777);
    /* The last use moves forward only a minute or more at a time (STORE_LAST_USED_EVERY_S);
     * the counts are added every time, and never backward. */
    /* last_used_written may say "not known" (0), but never that it wrote what it left. */
    u.last_used = 777 + 59;
    CHECK(store_usage_add(s, &u, 1) == STORE_OK && !u.last_used_written);
    CHECK(store_key_find(s, "key_one", NULL, &fk0) == STORE_OK && fk0.last_used_at == 777);
    u.last_used = 777 + 60;
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    CHECK(store_key_find(s, "key_one", NULL, &fk0) == STORE_OK && fk0.last_used_at == 837);
    u.last_used = 100;
    CHECK(store_usage_add(s, &u, 1) == STORE_OK && !u.last_used_written);
    CHECK(store_key_find(s, "key_one", NULL, &fk0) == STORE_OK && fk0.last_used_at == 837);
    /* No last use to write: the counts alone. */
    u.last_used = 0;
    CHECK(store_usage_add(s, &u, 1) == STORE_OK && !u.last_used_written);
    CHECK(store_key_find(s, "key_one", NULL, &fk0) == STORE_OK && fk0.last_used_at == 837);
    u.last_used = 837 + 600;
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    CHECK(store_key_find(s, "key_one", NULL, &fk0) == STORE_OK && fk0.last_used_at == 1437);
    n = 0;
    CHECK(store_key_changes(s2, 20000, &cur2, count_cb, &n) == STORE_OK && n == 0);

    /* Restrictions are a change every server sees, with the day's count still beside them. */
    e = entry(a.id, "test.restrict");
    CHECK(store_key_set_restrictions(s, "key_one", "small,large", 7, 0, &e) == STORE_OK);
    CHECK(store_key_set_restrictions(s, "key_nope", "", 0, 0, NULL) == STORE_NOT_FOUND);
    CHECK(audited(s, a.id, "test.restrict") == 1);
    memset(&got, 0, sizeof(got));
    CHECK(store_key_changes(s2, 20000, &cur2, last_cb, &got) == STORE_OK);
    CHECK(!strcmp(got.k.models, "small,large") && got.k.requests_per_minute == 7);
    CHECK(got.count == 21 && got.k.revoked_at == 555);
    struct store_key fk;
    CHECK(store_key_find(s2, "key_one", NULL, &fk) == STORE_OK &&
          !strcmp(fk.models, "small,large"));
    CHECK(store_key_set_restrictions(s, "key_one", "", 0, 0, NULL) == STORE_OK);
    CHECK(store_key_find(s2, "key_one", NULL, &fk) == STORE_OK && fk.models[0] == '\0' &&
          fk.requests_per_minute == 0);
    CHECK(store_key_changes(s2, 20000, &cur2, count_cb, &n) == STORE_OK && n == 1);

    /* A roll is one change with one entry; rolling again is refused and audits nothing. */
    struct store_key repl = k;
    strcpy(repl.id, "key_rolled");
    randombytes_buf(repl.hash, sizeof(repl.hash));
    e = entry(a.id, "test.roll");
    CHECK(store_key_roll(s, "key_one", &repl, 9000, &e) == STORE_CONFLICT); /* revoked */
    CHECK(audited(s, a.id, "test.roll") == 0);

    CHECK(store_key_find(s, "key_one", NULL, &got.k) == STORE_OK && got.k.revoked_at == 555);
    CHECK(store_key_find(s, NULL, k.hash, &got.k) == STORE_OK && !strcmp(got.k.id, "key_one"));
    CHECK(store_key_find(s, "key_nope", NULL, &got.k) == STORE_NOT_FOUND);
    n = 0;
    CHECK(store_key_list(s, a.id, list_count_cb, &n) == STORE_OK && n == 1);
    CHECK(store_key_list(s, a.id, list_last_cb, &got) == STORE_OK && got.count == 21 &&
          got.k.refused == 14);

    /* Bulk insert in one transaction, with one entry. */
    struct store_key *many = calloc(1000, sizeof(*many));
    for (int i = 0; i < 1000; i++) {
        many[i] = k;
        snprintf(many[i].id, sizeof(many[i].id), "key_bulk%d", i);
        randombytes_buf(many[i].hash, sizeof(many[i].hash));
    }
    e = entry(a.id, "test.bulk");
    CHECK(store_key_insert(s, many, 1000, &e) == STORE_OK);
    CHECK(audited(s, a.id, "test.bulk") == 1);
    n = 0;
    CHECK(store_keys_load(s2, 1, &cur2, count_cb, &n) == STORE_OK && n == 1001);
    n = 0;
    CHECK(store_key_changes(s2, 1, &cur2, count_cb, &n) == STORE_OK && n == 0);
    free(many);

    test_ledger(s, a.id);
    test_key_quota(s, s2, a.id);
    test_access(s, a.id);
    test_nodes_and_plans(s, s2);
    test_idempotency(s, s2);
    test_invoice_numbers(s, s2);
    test_operator_keys(s, s2);
    test_two_factor(s, s2, a.id);
    store_close(s2);
    store_close(s);
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/konnect-store-XXXXXX", url[128], err[256];

    CHECK(sodium_init() >= 0);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(url, sizeof(url), "sqlite:%s/konnect.db", dir);
    conform(url);
    for (int i = 1; i < argc; i++)
        conform(argv[i]);
    /* A PostgreSQL server that is not there: refused with a message, at once. */
    CHECK(store_open("postgresql:///x?host=/nonexistent", 1, err, sizeof(err)) == NULL);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return unit_result();
}
