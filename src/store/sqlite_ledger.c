/* The SQLite backend's plans, quotas and usage ledger: accounts' plans and quota overrides with
 * their change feed, the ledger's group commits with their rollup, fences, and the usage sums
 * (see sqlite_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/sqlite_checkpoint.h"
#include "store/sqlite_internal.h"

/* ---- plans, quotas and the usage ledger ---------------------------------------------------- */

static int update_account(struct store *s, sqlite3_stmt *q, int rc)
{
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return sq_fail(s, "cannot update account");
    if (sqlite3_changes(sq_db_of(s)) == 0)
        return store_set_error(s, STORE_NOT_FOUND, "no such account");
    return STORE_OK;
}

int sqlite_account_set_plan(struct store *s, const char *id, const char *plan)
{
    int rc = RUN(s, ACCOUNT_SET_PLAN, "UPDATE accounts SET plan = nullif(?2, '') WHERE id = ?1",
                 "tt", id, plan);
    return sq_changed(s, update_account(s, STMT(s, ACCOUNT_SET_PLAN), rc));
}

int sqlite_account_set_quota(struct store *s, const char *id, int64_t requests, int64_t tokens)
{
    int rc = RUN(s, ACCOUNT_SET_QUOTA,
                 "UPDATE accounts SET quota_requests = nullif(?2, -2), "
                 "quota_tokens = nullif(?3, -2) WHERE id = ?1",
                 "tii", id, requests, tokens);
    return sq_changed(s, update_account(s, STMT(s, ACCOUNT_SET_QUOTA), rc));
}

int sqlite_account_set_suspended(struct store *s, const char *id, int64_t at)
{
    int rc = RUN(s, ACCOUNT_SUSPEND,
                 "UPDATE accounts SET suspended_at = nullif(?2, 0) WHERE id = ?1", "ti", id, at);
    return sq_changed(s, update_account(s, STMT(s, ACCOUNT_SUSPEND), rc));
}

static int account_one(void *ud, void *row, sqlite3_stmt *q)
{
    struct sq_walk *w = ud;
    (void)q;
    return w->account(w->ud, row);
}

int sqlite_accounts_load(struct store *s, struct store_cursor *cursor, store_account_cb cb,
                         void *ud)
{
    struct sq_walk w = {.account = cb, .ud = ud};
    struct store_account a;

    return sq_load_all(s, 0, cursor, sq_read_account, &a, account_one, &w, "cannot read accounts",
                       DS_ACCOUNTS_LOAD, "SELECT " ACCOUNT_COLUMNS " FROM accounts", "");
}

int sqlite_account_changes(struct store *s, struct store_cursor *cursor, store_account_cb cb,
                           void *ud)
{
    struct sq_walk w = {.account = cb, .ud = ud};
    struct store_account a;
    int rc =
        RUN(s, ACCOUNT_CHANGES,
            "SELECT " ACCOUNT_COLUMNS
            ", c.seq, coalesce(m.lo, -1), coalesce(m.hi, -1) FROM (SELECT (SELECT min(seq) FROM "
            "account_changes) AS lo, (SELECT max(seq) FROM account_changes) AS hi) m LEFT "
            "JOIN (account_changes c JOIN "
            "accounts a ON a.id = c.account_id) ON c.seq > ?1 ORDER BY c.seq",
            "i", cursor->v[0]);
    return sq_walk_changes(s, STMT(s, ACCOUNT_CHANGES), rc, cursor, account_one, &w, &a,
                           sq_read_account, ACCOUNT_NCOLUMNS, "cannot read account changes");
}

static int64_t sq_month_of_ms(int64_t at_ms)
{
    return kn_month_of(at_ms / 1000);
}

/* One line of the rollup a batch adds to: the rows of one account, day, key and model. */
struct rollup_sum {
    const struct store_ledger_row *row; /* The first row of the group; NULL for an empty slot. */
    int64_t day, month;
    int64_t requests, input_tokens, output_tokens, price_micros;
};

static uint64_t rollup_hash(const struct store_ledger_row *r, int64_t day)
{
    const char *parts[] = {r->account_id, r->key_id, r->model};
    uint64_t h = 1469598103934665603ull ^ (uint64_t)day;
    for (size_t i = 0; i < 3; i++)
        for (const char *c = parts[i]; *c != '\0'; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

static int same_group(const struct rollup_sum *g, const struct store_ledger_row *r, int64_t day)
{
    return g->day == day && strcmp(g->row->account_id, r->account_id) == 0 &&
           strcmp(g->row->key_id, r->key_id) == 0 && strcmp(g->row->model, r->model) == 0;
}

static void read_voided(sqlite3_stmt *q, void *out)
{
    *(int *)out = sqlite3_column_int(q, 0) != 0;
}

/* Why a row's request id is in the ledger already: billed before (a retried batch) or voided. */
static int existing_row(struct store *s, const char *request_id, uint8_t *outcome)
{
    int voided = 0;
    int rc = RUN(s, LEDGER_VOIDED, "SELECT voided FROM usage_ledger WHERE request_id = ?1", "t",
                 request_id);
    int r = sq_one_row(s, STMT(s, LEDGER_VOIDED), rc, read_voided, &voided, "ledger row vanished",
                       "cannot read the ledger");
    *outcome = voided ? STORE_LEDGER_VOIDED : STORE_LEDGER_BILLED_BEFORE;
    return r;
}

int sqlite_ledger_add(struct store *s, const struct store_ledger_row *rows, size_t n,
                      uint8_t *outcome)
{
    size_t mask = 1;
    struct rollup_sum *sums;
    int rc;

    /* The batch's rows are summed per rollup line first, so that a group commit of many
     * requests from a few keys updates a few rollup rows, not one per request. */
    while (mask < n * 2)
        mask <<= 1;
    sums = kn_calloc(mask, sizeof(*sums));
    mask--;
    checkpointer_restart_log(((struct sqlite_backend *)store_backend(s))->ckpt, sq_db_of(s), 0);
    if ((rc = sq_begin(s)) != STORE_OK) {
        free(sums);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_ledger_row *r = &rows[i];
        int64_t month = sq_month_of_ms(r->at_ms), day = r->at_ms / 86400000;

        rc = RUN(s, LEDGER_INSERT,
                 "INSERT OR IGNORE INTO usage_ledger(request_id, account_id, key_id, "
                 "environment, model, input_tokens, output_tokens, price_micros, currency, plan, "
                 "at_ms, month, plan_version) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                 "tttttiiittiii", r->request_id, r->account_id, r->key_id, r->environment, r->model,
                 (int64_t)r->input_tokens, (int64_t)r->output_tokens, r->price_micros, r->currency,
                 r->plan, r->at_ms, month, r->plan_version);
        sqlite3_reset(STMT(s, LEDGER_INSERT));
        if (rc != SQLITE_DONE)
            goto fail;
        if (sqlite3_changes(sq_db_of(s)) == 0) {
            /* Billed already (a retried batch) or voided: either way nothing to add. */
            if (existing_row(s, r->request_id, &outcome[i]) != STORE_OK)
                goto fail;
            continue;
        }
        outcome[i] = STORE_LEDGER_ADDED;
        size_t k = rollup_hash(r, day) & mask;
        while (sums[k].row != NULL && !same_group(&sums[k], r, day))
            k = (k + 1) & mask;
        if (sums[k].row == NULL) {
            sums[k].row = r;
            sums[k].day = day;
            sums[k].month = month;
        }
        sums[k].requests++;
        sums[k].input_tokens += r->input_tokens;
        sums[k].output_tokens += r->output_tokens;
        sums[k].price_micros += r->price_micros;
    }
    for (size_t k = 0; k <= mask; k++) {
        const struct rollup_sum *g = &sums[k];
        if (g->row == NULL)
            continue;
        rc = RUN(s, ROLLUP_ADD,
                 "INSERT INTO usage_rollup(account_id, day, key_id, model, environment, month, "
                 "requests, input_tokens, output_tokens, price_micros) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
                 "ON CONFLICT(account_id, day, key_id, model) DO UPDATE SET "
                 "requests = requests + excluded.requests, "
                 "input_tokens = input_tokens + excluded.input_tokens, "
                 "output_tokens = output_tokens + excluded.output_tokens, "
                 "price_micros = price_micros + excluded.price_micros",
                 "titttiiiii", g->row->account_id, g->day, g->row->key_id, g->row->model,
                 g->row->environment, g->month, g->requests, g->input_tokens, g->output_tokens,
                 g->price_micros);
        sqlite3_reset(STMT(s, ROLLUP_ADD));
        if (rc != SQLITE_DONE)
            goto fail;
    }
    free(sums);
    return sq_end(s, STORE_OK);
fail:
    free(sums);
    return sq_end(s, sq_fail(s, "cannot record billed usage"));
}

int sqlite_ledger_void(struct store *s, const char *request_id, int64_t at_ms, int *was_billed)
{
    int r = sq_begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, LEDGER_VOID,
                 "INSERT OR IGNORE INTO usage_ledger(request_id, account_id, key_id, environment, "
                 "model, input_tokens, output_tokens, price_micros, currency, plan, at_ms, month, "
                 "voided) VALUES (?1, '', '', '', '', 0, 0, 0, '', '', ?2, ?3, 1)",
                 "tii", request_id, at_ms, sq_month_of_ms(at_ms));
    if ((r = sq_done(s, STMT(s, LEDGER_VOID), rc, "cannot void a ledger row")) != STORE_OK)
        return sq_end(s, r);
    if (sqlite3_changes(sq_db_of(s)) == 1) {
        *was_billed = 0;
        return sq_end(s, STORE_OK);
    }
    uint8_t outcome;
    if ((r = existing_row(s, request_id, &outcome)) == STORE_OK)
        *was_billed = outcome == STORE_LEDGER_BILLED_BEFORE;
    return sq_end(s, r);
}

/* Walks the rows of a month-totals statement (account, line or "", requests, tokens). */
static int walk_month_totals(struct store *s, sqlite3_stmt *q, int rc, store_month_total_cb cb,
                             void *ud)
{
    struct store_month_total t;

    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        memset(&t, 0, sizeof(t));
        sq_copy_text(t.account_id, sizeof(t.account_id), q, 0);
        sq_copy_text(t.line_id, sizeof(t.line_id), q, 1);
        t.requests = (uint64_t)sqlite3_column_int64(q, 2);
        t.tokens = (uint64_t)sqlite3_column_int64(q, 3);
        if (cb(ud, &t) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? STORE_OK : sq_fail(s, "cannot read monthly usage");
}

int sqlite_usage_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud)
{
    int rc = RUN(s, MONTH_TOTALS,
                 "SELECT account_id, '', sum(requests), sum(input_tokens + output_tokens) "
                 "FROM usage_rollup WHERE month = ?1 GROUP BY account_id",
                 "i", month);
    return walk_month_totals(s, STMT(s, MONTH_TOTALS), rc, cb, ud);
}

int sqlite_line_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud)
{
    int rc = RUN(s, LINE_TOTALS,
                 "SELECT r.account_id, coalesce(k.quota_key, k.id) AS line, sum(r.requests), 0 "
                 "FROM usage_rollup r JOIN api_keys k ON k.id = r.key_id WHERE r.month = ?1 "
                 "GROUP BY r.account_id, line",
                 "i", month);
    return walk_month_totals(s, STMT(s, LINE_TOTALS), rc, cb, ud);
}

int sqlite_usage_sums(struct store *s, const char *account_id, int64_t month_from, int64_t month_to,
                      store_usage_sum_cb cb, void *ud)
{
    struct store_usage_sum u;
    int rc = RUN(s, USAGE_SUMS,
                 "SELECT day, month, key_id, model, environment, requests, input_tokens, "
                 "output_tokens, price_micros FROM usage_rollup "
                 "WHERE account_id = ?1 AND month BETWEEN ?2 AND ?3 ORDER BY day, key_id, model",
                 "tii", account_id, month_from, month_to);
    sqlite3_stmt *q = STMT(s, USAGE_SUMS);

    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        memset(&u, 0, sizeof(u));
        u.day = sqlite3_column_int64(q, 0);
        u.month = sqlite3_column_int64(q, 1);
        sq_copy_text(u.key_id, sizeof(u.key_id), q, 2);
        sq_copy_text(u.model, sizeof(u.model), q, 3);
        sq_copy_text(u.environment, sizeof(u.environment), q, 4);
        u.requests = (uint64_t)sqlite3_column_int64(q, 5);
        u.input_tokens = (uint64_t)sqlite3_column_int64(q, 6);
        u.output_tokens = (uint64_t)sqlite3_column_int64(q, 7);
        u.price_micros = sqlite3_column_int64(q, 8);
        if (cb(ud, &u) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? STORE_OK : sq_fail(s, "cannot read usage");
}

static void read_seq(sqlite3_stmt *q, void *out)
{
    *(int64_t *)out = sqlite3_column_int64(q, 0);
}

int sqlite_invoice_number(struct store *s, const char *account_id, int64_t month, int64_t now,
                          int64_t *seq)
{
    for (int tries = 0; tries < 16; tries++) {
        int rc = RUN(s, INVOICE_NUMBER,
                     "SELECT seq FROM invoice_numbers WHERE account_id = ?1 AND month = ?2", "ti",
                     account_id, month);
        int r = sq_one_row(s, STMT(s, INVOICE_NUMBER), rc, read_seq, seq, "no invoice number",
                           "cannot read the invoice number");
        if (r != STORE_NOT_FOUND)
            return r;
        /* The next number, unless another writer gave this month one, or took that number for
         * another month, meanwhile: then read again (or try the next). */
        rc = RUN(s, INVOICE_ISSUE,
                 "INSERT INTO invoice_numbers(account_id, month, seq, issued_at) "
                 "SELECT ?1, ?2, coalesce(max(seq), 0) + 1, ?3 FROM invoice_numbers WHERE 1 "
                 "ON CONFLICT DO NOTHING",
                 "tii", account_id, month, now);
        if ((r = sq_done(s, STMT(s, INVOICE_ISSUE), rc, "cannot issue an invoice number")) !=
            STORE_OK)
            return r;
    }
    return store_set_error(s, STORE_CONFLICT, "cannot issue an invoice number: too many at once");
}
