/* konnect usage, invoice and plans. */
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

static const char usage_usage[] =
    "Usage: konnect usage --account EMAIL|ID [--month YYYY-MM] [--json]\n"
    "\n"
    "Print an account's billed live usage in a month (default: this month, UTC): its plan, the\n"
    "quotas in force with what is used and what remains, the cost so far, and the requests,\n"
    "tokens and cost of each key. Test keys are never billed and never counted.\n"
    "\n"
    "Options:\n"
    "  --account EMAIL|ID  the account\n"
    "  --month YYYY-MM     the month, such as 2026-11 (default: this month)\n"
    "  --json              print the report as JSON, with usage by key, environment and day\n"
    "                      (the dashboard's report; see docs/dashboard-api.md)\n"
    "  --data-dir DIR      where the database lives (KONNECT_DATA_DIR, default ./var)\n"
    "  -h, --help          show this help\n";

static const char invoice_usage[] =
    "Usage: konnect invoice --account EMAIL|ID [--month YYYY-MM] [--json|--csv]\n"
    "       konnect invoice list --account EMAIL|ID [--json]\n"
    "\n"
    "Print an account's invoice for a month (default: this month, UTC): one line per model and\n"
    "key with requests, tokens and amount, and the total, which is exactly the sum of the\n"
    "month's billed requests. The current month's invoice is open (it can still grow); earlier\n"
    "months' are final. 'list' prints every month with billed usage, newest first.\n"
    "\n"
    "Options:\n"
    "  --account EMAIL|ID  the account\n"
    "  --month YYYY-MM     the month, such as 2026-11 (default: this month)\n"
    "  --json              print JSON\n"
    "  --csv               print CSV (RFC 4180), as the dashboard's download\n"
    "  --data-dir DIR      where the database lives (KONNECT_DATA_DIR, default ./var)\n"
    "  -h, --help          show this help\n";

static const char plans_usage[] =
    "Usage: konnect plans [--json]\n"
    "       konnect plans apply FILE [--wait DURATION]\n"
    "       konnect plans reload\n"
    "\n"
    "List the plans in force with their monthly quotas, prices (in micro-units: 1,000,000 = one\n"
    "unit of the currency) and limits: the newest version published in the store, or else the\n"
    "plans file (KONNECT_PLANS, default <data dir>/plans.json). The default plan is marked\n"
    "with '*'. Without either, every account is on the built-in plan 'default': unlimited and\n"
    "free.\n"
    "\n"
    "'apply' checks FILE and publishes it in the store as a new version, which every running\n"
    "server puts in force (waiting, as key changes do, until each has: exit status 3 names the\n"
    "servers that had not); each ledger row names the version that priced it. Once a version is\n"
    "published, servers follow the store and no longer read their own plans file.\n"
    "'reload' checks the file and makes the running server read it again (as SIGHUP does);\n"
    "an invalid file is refused and the server keeps the plans in force.\n"
    "\n"
    "Options:\n"
    "  --json              print JSON\n"
    "  --data-dir DIR      where the plans file is looked for (KONNECT_DATA_DIR, default ./var)\n"
    "  -h, --help          show this help\n";

/* Prints a usage report as JSON or as text. */
static void usage_show(const struct opts *o, json_t *u)
{
    if (o->json)
        cli_print_json(u);
    else
        cli_put_text(report_usage_text(u));
}

int cli_usage(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    int done = cli_parse_command(c, argc, argv, &o, usage_usage);

    if (done >= 0)
        return done;
    if (o.npositional != 0 || o.account == NULL) {
        cli_usage_error(usage_usage, "usage needs --account EMAIL|ID");
        return 2;
    }
    return cli_account_report(c, &o, report_usage, usage_show);
}

/* report_months (every month with billed usage; the month is not used) as a cli_report_fn. */
static int months_report(struct store *s, const struct plans *plans, const struct store_account *a,
                         int64_t month, int64_t now, json_t **out)
{
    (void)month;
    return report_months(s, plans, a, now, out);
}

/* Prints the list of invoices as JSON or as text. */
static void months_show(const struct opts *o, json_t *doc)
{
    if (o->json)
        cli_print_json(doc);
    else
        cli_put_text(report_months_text(doc));
}

/* Prints an invoice as JSON, CSV or text. */
static void invoice_show(const struct opts *o, json_t *doc)
{
    if (o->json) {
        cli_print_json(doc);
    } else if (o->csv) {
        size_t len;
        char *csv = report_invoice_csv(doc, &len);
        fwrite(csv, 1, len, stdout);
        free(csv);
    } else {
        cli_put_text(report_invoice_text(doc));
    }
}

int cli_invoice(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    int done = cli_parse_command(c, argc, argv, &o, invoice_usage), list;

    if (done >= 0)
        return done;
    list = o.npositional == 1 && strcmp(o.positional[0], "list") == 0;
    if ((o.npositional != 0 && !list) || o.account == NULL) {
        cli_usage_error(invoice_usage, "invoice needs --account EMAIL|ID");
        return 2;
    }
    if ((o.json && o.csv) || (list && (o.csv || o.month != NULL))) {
        fprintf(stderr, "konnect: choose one of --json and --csv (list takes only --json)\n");
        return 2;
    }
    if (list)
        return cli_account_report(c, &o, months_report, months_show);
    return cli_account_report(c, &o, report_invoice, invoice_show);
}

static void price_text(int64_t micros, char *buf, size_t size)
{
    snprintf(buf, size, "%lld", (long long)micros);
}

/* Checks a plans file and publishes it in the store as the next version. */
static int plans_apply(struct kn_config *c, const struct opts *o, const char *path)
{
    char err[512], detail[256];
    struct plans *p = plans_load(path, 1, err, sizeof(err));
    struct store *s;
    struct store_audit e;
    int64_t version = 0;
    FILE *f;
    char *body = NULL;
    size_t len = 0;

    if (p == NULL) {
        fprintf(stderr, "konnect: %s; nothing was published\n", err);
        return 1;
    }
    /* The text as read and checked is what every server parses. */
    if ((f = fopen(path, "r")) == NULL) {
        plans_free(p);
        fprintf(stderr, "konnect: cannot read %s\n", path);
        return 1;
    }
    char buf[65536];
    for (size_t n; (n = fread(buf, 1, sizeof(buf), f)) > 0; len += n) {
        body = kn_realloc(body, len + n + 1);
        memcpy(body + len, buf, n);
    }
    fclose(f);
    if (body == NULL)
        body = kn_strdup("");
    body[len] = '\0';
    if ((s = cli_open_store(c)) == NULL) {
        plans_free(p);
        free(body);
        return 1;
    }
    snprintf(detail, sizeof(detail), "%zu plans, default \"%.64s\"", p->count,
             p->plan[p->default_index].name);
    memset(&e, 0, sizeof(e));
    e.at = kn_unix_now();
    kn_strlcpy(e.actor, cli_actor.name, sizeof(e.actor));
    kn_strlcpy(e.action, "plans.apply", sizeof(e.action));
    kn_strlcpy(e.target, "plans", sizeof(e.target));
    kn_strlcpy(e.result, "ok", sizeof(e.result));
    kn_strlcpy(e.detail, detail, sizeof(e.detail));
    int r = store_plans_publish(s, body, e.at, cli_actor.name, &e, &version), ret = 1;
    free(body);
    if (r != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
    } else {
        printf("published plans version %lld: %s\n", (long long)version, detail);
        ret = cli_report_notify(c, s, o, "the new plans are in force");
    }
    plans_free(p);
    store_close(s);
    return ret;
}

static int plans_reload(struct kn_config *c)
{
    struct plans *plans = cli_load_plans(c);
    char answer[700];
    int r;

    if (plans == NULL) {
        fprintf(stderr, "konnect: the running server keeps the plans in force\n");
        return 1;
    }
    plans_free(plans);
    r = control_ask(c->socket_path, "reload-plans", answer, sizeof(answer), 10000);
    if (r == 0) {
        fprintf(stderr,
                "konnect: no server is running with the data directory %s; the plans file is "
                "valid and is read when one starts\n",
                c->data_dir);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "konnect: the running server did not answer\n");
        return 1;
    }
    fprintf(stderr, "konnect: the running server %s\n",
            strncmp(answer, "ok ", 3) == 0 ? answer + 3 : answer);
    return strncmp(answer, "ok", 2) == 0 ? 0 : 1;
}

int cli_plans(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct plans *plans;
    char rq[32], tq[32], pr[32], pi[32], po[32], rpm[32];
    int done = cli_parse_command(c, argc, argv, &o, plans_usage);

    if (done >= 0)
        return done;
    if (o.npositional == 1 && strcmp(o.positional[0], "reload") == 0)
        return plans_reload(c);
    if (o.npositional >= 1 && strcmp(o.positional[0], "apply") == 0) {
        if (o.npositional != 2) {
            fprintf(stderr, "konnect: plans apply takes one plans file\n");
            return 2;
        }
        return plans_apply(c, &o, o.positional[1]);
    }
    if (o.npositional != 0) {
        char echo[64];
        cli_usage_error(plans_usage, "unknown plans command '%s': it has apply FILE and reload",
                        cli_shown(redact_copy(echo, sizeof(echo), o.positional[0])));
        return 2;
    }
    if ((plans = cli_load_plans(c)) == NULL)
        return 1;
    if (o.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < plans->count; i++)
            json_array_append_new(arr, report_plan_json(&plans->plan[i]));
        json_t *doc =
            json_pack("{s:s, s:s, s:b, s:I, s:o}", "currency", plans->currency, "default_plan",
                      plans->plan[plans->default_index].name, "builtin", plans->builtin, "version",
                      (json_int_t)plans->version, "plans", arr);
        cli_print_json(doc);
        json_decref(doc);
        plans_free(plans);
        return 0;
    }
    if (plans->version > 0)
        fprintf(stderr, "konnect: plans version %lld, published in the store\n",
                (long long)plans->version);
    if (plans->builtin) {
        char where[PATH_MAX + 16];
        fprintf(stderr, "konnect: no plans file at %s; the built-in plan applies\n",
                kn_abs_path(c->plans_file, where, sizeof(where)));
    }
    printf("  %-20s  %14s  %14s  %14s  %14s  %14s  %8s  %10s\n", "PLAN", "REQUESTS/MONTH",
           "TOKENS/MONTH", "PER REQUEST", "PER 1M INPUT", "PER 1M OUTPUT", "RPM", "CONCURRENT");
    for (size_t i = 0; i < plans->count; i++) {
        const struct plan *p = &plans->plan[i];
        /* PLAN_UNLIMITED and STORE_QUOTA_UNLIMITED are the same value. */
        cli_quota_text(p->requests_per_month, rq, sizeof(rq));
        cli_quota_text(p->tokens_per_month, tq, sizeof(tq));
        price_text(p->price_per_request, pr, sizeof(pr));
        price_text(p->price_per_million_input, pi, sizeof(pi));
        price_text(p->price_per_million_output, po, sizeof(po));
        snprintf(rpm, sizeof(rpm), "%s", "none");
        if (p->requests_per_minute)
            snprintf(rpm, sizeof(rpm), "%u", p->requests_per_minute);
        printf("%c %-20s  %14s  %14s  %14s  %14s  %14s  %8s  %10u\n",
               i == plans->default_index ? '*' : ' ', p->name, rq, tq, pr, pi, po, rpm,
               p->max_concurrent);
    }
    printf("\nPrices are in micro-units of %s (1000000 = 1 %s); * marks the default plan.\n",
           plans->currency, plans->currency);
    plans_free(plans);
    return 0;
}
