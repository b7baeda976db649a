/* konnect audit: the audit log, newest first. */
#include "cli/cli.h"

#include "cli/internal.h"

#include <getopt.h>
#include <jansson.h>
#include <sodium.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base62.h"
#include "core/redact.h"
#include "core/termsafe.h"
#include "core/util.h"
#include "keys/apikey.h"
#include "keys/control.h"
#include "keys/keyjson.h"
#include "keys/keysync.h"
#include "auth/password.h"
#include "auth/session.h"
#include "keys/lifecycle.h"
#include "metering/plans.h"
#include "metering/report.h"
#include "store/store.h"

static const char audit_usage[] =
    "Usage: konnect audit [--account EMAIL|ID] [--limit N] [--json]\n"
    "\n"
    "Print the audit log, newest first: every key created, rolled, renamed, revoked or expired,\n"
    "with who did it, when, from which address and with what result. It never holds a secret.\n"
    "\n"
    "Options:\n"
    "  --account EMAIL|ID  only this account's entries\n"
    "  --limit N           at most N entries (default 100)\n"
    "  --json              print JSON\n"
    "  --data-dir DIR      where the database lives (KONNECT_DATA_DIR, default ./var)\n";

struct audit_ctx {
    int json;
    json_t *arr;
    int n;
};

static int audit_one(void *ud, const struct store_audit *entry)
{
    struct audit_ctx *a = ud;
    struct store_audit clean = *entry, *e = &clean;
    char t[32];

    lifecycle_audit_clean(e); /* Rows written before entries were cleaned as they were written. */
    kn_format_time(e->at, t, sizeof(t));
    if (a->json) {
        json_t *o =
            json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", (json_int_t)e->id,
                      "time", t, "account", e->account_id, "actor", e->actor, "action", e->action,
                      "target", e->target, "ip", e->ip, "result", e->result, "detail", e->detail);
        if (o != NULL)
            json_array_append_new(a->arr, o);
    } else {
        if (a->n == 0)
            printf("%-20s  %-24s  %-16s  %-15s  %-7s  %-40s  %s\n", "TIME", "ACTOR", "ACTION", "IP",
                   "RESULT", "TARGET", "DETAIL");
        printf("%-20s  %-24s  %-16s  %-15s  %-7s  %-40s  %s\n", t, cli_shown(e->actor),
               cli_shown(e->action), e->ip[0] ? cli_shown(e->ip) : "-", cli_shown(e->result),
               cli_shown(e->target), cli_shown(e->detail));
    }
    a->n++;
    return 0;
}

int cli_audit(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct store *s;
    struct store_account acct;
    struct audit_ctx a = {0};
    long long limit = 100;
    int ret = 1, done = cli_parse_command(c, argc, argv, &o, audit_usage);

    if (done >= 0)
        return done;
    if (o.npositional != 0 || (o.limit != NULL && kn_parse_int(o.limit, 1, 100000, &limit) != 0)) {
        cli_usage_error(audit_usage, o.npositional != 0 ? "audit takes no arguments"
                                                        : "--limit takes a number from 1 to "
                                                          "100000");
        return 2;
    }
    if ((s = cli_open_store(c)) == NULL)
        return 1;
    if (o.account != NULL && cli_find_account(s, o.account, &acct) != STORE_OK)
        goto out;
    a.json = o.json;
    if (a.json)
        a.arr = json_array();
    if (store_audit_list(s, o.account != NULL ? acct.id : "", 0, (int)limit, audit_one, &a) !=
        STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    if (a.json)
        cli_print_json(a.arr);
    ret = 0;
out:
    json_decref(a.arr);
    store_close(s);
    return ret;
}
