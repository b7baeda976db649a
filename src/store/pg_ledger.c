/* The PostgreSQL backend's plans, quotas and usage ledger: accounts' plans and quota overrides
 * with their change feed, the ledger's group commits with their rollup in one statement, fences,
 * and the usage sums (see pg_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/pg_internal.h"

static int update_account(struct store *s, int r, PGresult *res)
{
    if (r != STORE_OK)
        return r;
    long changed = pg_changes(res);
    PQclear(res);
    return changed == 0 ? store_set_error(s, STORE_NOT_FOUND, "no such account") : STORE_OK;
}

int pg_account_set_plan(struct store *s, const char *id, const char *plan)
{
    PGresult *res;
    int r = PG_RUN(s, ACCOUNT_SET_PLAN, "UPDATE accounts SET plan = nullif($2, '') WHERE id = $1",
                   &res, "cannot update account", "tt", id, plan);
    return update_account(s, r, res);
}

int pg_account_set_quota(struct store *s, const char *id, int64_t requests, int64_t tokens)
{
    PGresult *res;
    int r = PG_RUN(s, ACCOUNT_SET_QUOTA,
                   "UPDATE accounts SET quota_requests = nullif($2, -2), "
                   "quota_tokens = nullif($3, -2) WHERE id = $1",
                   &res, "cannot update account", "tii", id, requests, tokens);
    return update_account(s, r, res);
}

int pg_account_set_suspended(struct store *s, const char *id, int64_t at)
{
    PGresult *res;
    int r =
        PG_RUN(s, ACCOUNT_SUSPEND, "UPDATE accounts SET suspended_at = nullif($2, 0) WHERE id = $1",
               &res, "cannot update account", "ti", id, at);
    return update_account(s, r, res);
}

static int account_one(void *ud, void *row, PGresult *res, int i)
{
    struct pg_walk *w = ud;
    (void)res, (void)i;
    return w->account(w->ud, row);
}

int pg_accounts_load(struct store *s, struct store_cursor *cursor, store_account_cb cb, void *ud)
{
    struct pg_walk w = {.account = cb, .ud = ud};
    struct store_account a;

    return pg_load_all(s, 0, cursor, pg_read_account, &a, account_one, &w, "cannot read accounts",
                       PS_ACCOUNTS_LOAD, "SELECT " PG_ACCOUNT_COLUMNS " FROM accounts", "");
}

int pg_account_changes(struct store *s, struct store_cursor *cursor, store_account_cb cb, void *ud)
{
    struct pg_walk w = {.account = cb, .ud = ud};
    struct store_account a;
    PGresult *res;
    int r = PG_RUN(s, ACCOUNT_CHANGES,
                   "SELECT " PG_ACCOUNT_COLUMNS
                   ", c.seq, coalesce(m.lo, -1), coalesce(m.hi, -1) FROM (SELECT (SELECT "
                   "min(seq) FROM account_changes) AS lo, (SELECT max(seq) FROM account_changes) "
                   "AS hi) m LEFT JOIN (account_changes c "
                   "JOIN accounts a ON a.id = c.account_id) ON c.seq > $1 ORDER BY c.seq",
                   &res, "cannot read account changes", "i", cursor->v[0]);
    return r != STORE_OK ? r
                         : pg_walk_changes(res, cursor, account_one, &w, &a, pg_read_account,
                                           PG_ACCOUNT_NCOLUMNS);
}

/* Why a row's request id is in the ledger already: billed before (a retried batch) or voided. */
static int existing_row(struct store *s, const char *request_id, uint8_t *outcome)
{
    PGresult *res;
    int r = PG_RUN(s, LEDGER_VOIDED, "SELECT voided FROM usage_ledger WHERE request_id = $1", &res,
                   "cannot read the ledger", "t", request_id);
    if (r != STORE_OK)
        return r;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_set_error(s, STORE_ERROR, "ledger row vanished");
    }
    *outcome = pg_int(res, 0, 0) != 0 ? STORE_LEDGER_VOIDED : STORE_LEDGER_BILLED_BEFORE;
    PQclear(res);
    return STORE_OK;
}

/* The group commit: the batch travels as one array per column, and one statement (so one
 * transaction, durable when it returns) inserts the rows whose request id is new, adds exactly
 * those to the rollup, summed per line, and returns their places in the batch. */
#define LEDGER_ADD_SQL                                                                             \
    "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "         \
    "$5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], "              \
    "$11::bigint[], $12::bigint[], $13::bigint[]) WITH ORDINALITY AS t(request_id, account_id, "   \
    "key_id, environment, model, input_tokens, output_tokens, price_micros, currency, plan, "      \
    "at_ms, month, plan_version, ord)), "                                                          \
    "ins AS (INSERT INTO usage_ledger(request_id, account_id, key_id, environment, model, "        \
    "input_tokens, output_tokens, price_micros, currency, plan, at_ms, month, plan_version) "      \
    "SELECT request_id, account_id, key_id, environment, model, input_tokens, output_tokens, "     \
    "price_micros, currency, plan, at_ms, month, plan_version FROM input ORDER BY ord "            \
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id, account_id, key_id, environment, "  \
    "model, input_tokens, output_tokens, price_micros, at_ms, month), "                            \
    "roll AS (INSERT INTO usage_rollup AS r(account_id, day, key_id, model, environment, month, "  \
    "requests, input_tokens, output_tokens, price_micros) "                                        \
    "SELECT account_id, at_ms / 86400000, key_id, model, min(environment), min(month), count(*), " \
    "sum(input_tokens), sum(output_tokens), sum(price_micros) FROM ins "                           \
    "GROUP BY account_id, at_ms / 86400000, key_id, model "                                        \
    "ORDER BY account_id, at_ms / 86400000, key_id, model "                                        \
    "ON CONFLICT (account_id, day, key_id, model) DO UPDATE SET "                                  \
    "requests = r.requests + excluded.requests, "                                                  \
    "input_tokens = r.input_tokens + excluded.input_tokens, "                                      \
    "output_tokens = r.output_tokens + excluded.output_tokens, "                                   \
    "price_micros = r.price_micros + excluded.price_micros) "                                      \
    "SELECT min(i.ord) FROM ins JOIN input i USING (request_id) GROUP BY request_id"

int pg_ledger_add(struct store *s, const struct store_ledger_row *rows, size_t n, uint8_t *outcome)
{
    struct pg_array col[13];
    PGresult *res = NULL;
    int r;

    memset(col, 0, sizeof(col));
    for (size_t i = 0; i < n; i++) {
        const struct store_ledger_row *x = &rows[i];
        pg_array_text(&col[0], x->request_id);
        pg_array_text(&col[1], x->account_id);
        pg_array_text(&col[2], x->key_id);
        pg_array_text(&col[3], x->environment);
        pg_array_text(&col[4], x->model);
        pg_array_int(&col[5], x->input_tokens);
        pg_array_int(&col[6], x->output_tokens);
        pg_array_int(&col[7], x->price_micros);
        pg_array_text(&col[8], x->currency);
        pg_array_text(&col[9], x->plan);
        pg_array_int(&col[10], x->at_ms);
        pg_array_int(&col[11], kn_month_of(x->at_ms / 1000));
        pg_array_int(&col[12], x->plan_version);
        outcome[i] = 0;
    }
    for (size_t c = 0; c < 13; c++)
        pg_array_end(&col[c]);
    r = PG_RUN(s, LEDGER_ADD, LEDGER_ADD_SQL, &res, "cannot record billed usage", "aaaaaaaaaaaaa",
               col[0].buf, col[1].buf, col[2].buf, col[3].buf, col[4].buf, col[5].buf, col[6].buf,
               col[7].buf, col[8].buf, col[9].buf, col[10].buf, col[11].buf, col[12].buf);
    for (size_t c = 0; c < 13; c++)
        pg_array_free(&col[c]);
    if (r != STORE_OK)
        return r;
    for (int i = 0, m = PQntuples(res); i < m; i++) {
        int64_t ord = pg_int(res, i, 0);
        if (ord >= 1 && (size_t)ord <= n)
            outcome[ord - 1] = STORE_LEDGER_ADDED;
    }
    PQclear(res);
    /* The rows not added were there already (a retried batch) or voided: the commit is done, and
     * neither kind of row ever changes, so reading them now tells which. */
    for (size_t i = 0; i < n; i++)
        if (outcome[i] == 0 && (r = existing_row(s, rows[i].request_id, &outcome[i])) != STORE_OK)
            return r;
    return STORE_OK;
}

int pg_ledger_void(struct store *s, const char *request_id, int64_t at_ms, int *was_billed)
{
    PGresult *res;
    int r = PG_RUN(s, LEDGER_VOID,
                   "INSERT INTO usage_ledger(request_id, account_id, key_id, environment, model, "
                   "input_tokens, output_tokens, price_micros, currency, plan, at_ms, month, "
                   "voided) VALUES ($1, '', '', '', '', 0, 0, 0, '', '', $2, $3, 1) "
                   "ON CONFLICT (request_id) DO NOTHING",
                   &res, "cannot void a ledger row", "tii", request_id, at_ms,
                   kn_month_of(at_ms / 1000));
    if (r != STORE_OK)
        return r;
    long added = pg_changes(res);
    PQclear(res);
    if (added == 1) {
        *was_billed = 0;
        return STORE_OK;
    }
    uint8_t outcome;
    if ((r = existing_row(s, request_id, &outcome)) == STORE_OK)
        *was_billed = outcome == STORE_LEDGER_BILLED_BEFORE;
    return r;
}

/* Walks and frees the rows of a month-totals query (account, line or "", requests, tokens). */
static int walk_month_totals(PGresult *res, store_month_total_cb cb, void *ud)
{
    struct store_month_total t;

    for (int i = 0, n = PQntuples(res); i < n; i++) {
        memset(&t, 0, sizeof(t));
        pg_text(t.account_id, sizeof(t.account_id), res, i, 0);
        pg_text(t.line_id, sizeof(t.line_id), res, i, 1);
        t.requests = (uint64_t)pg_int(res, i, 2);
        t.tokens = (uint64_t)pg_int(res, i, 3);
        if (cb(ud, &t) != 0)
            break;
    }
    PQclear(res);
    return STORE_OK;
}

int pg_usage_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud)
{
    PGresult *res;
    int r = PG_RUN(s, MONTH_TOTALS,
                   "SELECT account_id, '', sum(requests), sum(input_tokens + output_tokens) "
                   "FROM usage_rollup WHERE month = $1 GROUP BY account_id ORDER BY account_id",
                   &res, "cannot read monthly usage", "i", month);
    return r != STORE_OK ? r : walk_month_totals(res, cb, ud);
}

int pg_line_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud)
{
    PGresult *res;
    int r = PG_RUN(s, LINE_TOTALS,
                   "SELECT r.account_id, coalesce(k.quota_key, k.id) AS line, sum(r.requests), 0 "
                   "FROM usage_rollup r JOIN api_keys k ON k.id = r.key_id WHERE r.month = $1 "
                   "GROUP BY r.account_id, line ORDER BY r.account_id, line",
                   &res, "cannot read monthly usage", "i", month);
    return r != STORE_OK ? r : walk_month_totals(res, cb, ud);
}

int pg_usage_sums(struct store *s, const char *account_id, int64_t month_from, int64_t month_to,
                  store_usage_sum_cb cb, void *ud)
{
    struct store_usage_sum u;
    PGresult *res;
    int r = PG_RUN(s, USAGE_SUMS,
                   "SELECT day, month, key_id, model, environment, requests, input_tokens, "
                   "output_tokens, price_micros FROM usage_rollup "
                   "WHERE account_id = $1 AND month BETWEEN $2 AND $3 ORDER BY day, key_id, model",
                   &res, "cannot read usage", "tii", account_id, month_from, month_to);
    if (r != STORE_OK)
        return r;
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        memset(&u, 0, sizeof(u));
        u.day = pg_int(res, i, 0);
        u.month = pg_int(res, i, 1);
        pg_text(u.key_id, sizeof(u.key_id), res, i, 2);
        pg_text(u.model, sizeof(u.model), res, i, 3);
        pg_text(u.environment, sizeof(u.environment), res, i, 4);
        u.requests = (uint64_t)pg_int(res, i, 5);
        u.input_tokens = (uint64_t)pg_int(res, i, 6);
        u.output_tokens = (uint64_t)pg_int(res, i, 7);
        u.price_micros = pg_int(res, i, 8);
        if (cb(ud, &u) != 0)
            break;
    }
    PQclear(res);
    return STORE_OK;
}

static void read_seq(PGresult *res, int i, void *out)
{
    *(int64_t *)out = pg_int(res, i, 0);
}

int pg_invoice_number(struct store *s, const char *account_id, int64_t month, int64_t now,
                      int64_t *seq)
{
    for (int tries = 0; tries < 16; tries++) {
        PGresult *res;
        int r = PG_RUN(s, INVOICE_NUMBER,
                       "SELECT seq FROM invoice_numbers WHERE account_id = $1 AND month = $2", &res,
                       "cannot read the invoice number", "ti", account_id, month);
        if (r != STORE_OK)
            return r;
        if ((r = pg_one_row(s, res, read_seq, seq, "no invoice number")) != STORE_NOT_FOUND)
            return r;
        /* The next number, unless another server gave this month one, or took that number for
         * another month, meanwhile (the unique index makes the later of two wait for the first
         * and then do nothing): then read again, or try the next. */
        r = PG_RUN(s, INVOICE_ISSUE,
                   "INSERT INTO invoice_numbers(account_id, month, seq, issued_at) "
                   "SELECT $1, $2, coalesce(max(seq), 0) + 1, $3 FROM invoice_numbers "
                   "ON CONFLICT DO NOTHING",
                   &res, "cannot issue an invoice number", "tii", account_id, month, now);
        if (r != STORE_OK)
            return r;
        PQclear(res);
    }
    return store_set_error(s, STORE_CONFLICT, "cannot issue an invoice number: too many at once");
}
