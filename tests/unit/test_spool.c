/* The ledger's spool: rows synced and counted, a line cut short by a crash cut off at the next
 * opening (so the next row does not run into it), a bound that refuses rows past it, and a
 * replay that bills each row once however often it runs. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "metering/spool.h"
#include "store/store.h"
#include "unit.h"

static struct store_ledger_row row(int i)
{
    struct store_ledger_row r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "req_spool%03d", i);
    kn_strlcpy(r.account_id, "acct_spool", sizeof(r.account_id));
    kn_strlcpy(r.key_id, "key_spool", sizeof(r.key_id));
    kn_strlcpy(r.environment, "production", sizeof(r.environment));
    kn_strlcpy(r.model, "m \"quoted\" \\ \xc3\xa9", sizeof(r.model));
    kn_strlcpy(r.currency, "usd", sizeof(r.currency));
    kn_strlcpy(r.plan, "pro", sizeof(r.plan));
    r.input_tokens = 10 + (uint32_t)i;
    r.output_tokens = 20;
    r.price_micros = 1234;
    r.at_ms = 1795805276000 + i;
    return r;
}

static int sum_cb(void *ud, const struct store_usage_sum *u)
{
    uint64_t *n = ud;
    n[0] += u->requests;
    n[1] += u->input_tokens;
    return 0;
}

int main(void)
{
    char dir[] = "/tmp/konnect-spool-XXXXXX", path[256], db[256], err[256];
    struct store_ledger_row rows[3] = {row(1), row(2), row(3)};
    struct spool *sp;
    struct stat st;
    long voided;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/ledger.spool", dir);
    snprintf(db, sizeof(db), "%s/konnect.db", dir);
    CHECK((sp = spool_open(path, 1 << 20, err, sizeof(err))) != NULL);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(spool_pending(sp) == 0);
    CHECK(spool_add(sp, rows, 2) == 0 && spool_add(sp, rows + 2, 1) == 0);
    CHECK(spool_pending(sp) == 3);
    spool_close(sp);

    /* A crash in the middle of a write leaves a cut line. */
    int fd = open(path, O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, "{\"request_id\":\"req_cut", 22) == 22);
    close(fd);
    CHECK((sp = spool_open(path, 1 << 20, err, sizeof(err))) != NULL);
    CHECK(spool_pending(sp) == 3);
    struct store_ledger_row four = row(4);
    CHECK(spool_add(sp, &four, 1) == 0 && spool_pending(sp) == 4);

    /* Replayed into a store, twice: billed once. */
    struct store *s = store_open(db, 1, err, sizeof(err));
    CHECK(s != NULL);
    CHECK(spool_replay(sp, s, &voided) == 4 && voided == 0);
    CHECK(spool_pending(sp) == 0 && stat(path, &st) == 0 && st.st_size == 0);
    CHECK(spool_add(sp, rows, 3) == 0);
    CHECK(spool_replay(sp, s, &voided) == 3);
    uint64_t n[2] = {0, 0};
    int64_t month = kn_month_of(rows[0].at_ms / 1000);
    CHECK(store_usage_sums(s, "acct_spool", month, month, sum_cb, n) == STORE_OK);
    CHECK(n[0] == 4 && n[1] == 11 + 12 + 13 + 14);

    /* A voided request id is dropped, not billed. */
    struct store_ledger_row five = row(5);
    int was_billed = 1;
    CHECK(store_ledger_void(s, five.request_id, five.at_ms, &was_billed) == STORE_OK);
    CHECK(spool_add(sp, &five, 1) == 0 && spool_replay(sp, s, &voided) == 1 && voided == 1);

    /* The bound: past it, rows are refused and nothing is counted. */
    spool_close(sp);
    CHECK((sp = spool_open(path, 4096, err, sizeof(err))) != NULL);
    int refused = 0;
    for (int i = 0; i < 40 && !refused; i++) {
        struct store_ledger_row r = row(100 + i);
        refused = spool_add(sp, &r, 1) != 0;
    }
    CHECK(refused && stat(path, &st) == 0 && st.st_size <= 4096);
    spool_close(sp);
    store_close(s);

    CHECK(spool_open("/nonexistent/dir/ledger.spool", 4096, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "cannot open the ledger spool") != NULL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return unit_result();
}
