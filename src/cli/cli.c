#include "cli/cli.h"

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

#define MAX_BATCH 1000000

/* Stored text (names, emails, audit details, store messages that quote them) on its way to the
 * terminal, made safe (core/termsafe.h): each call fills the next of a few rotating buffers, so
 * that one printf can show several. The CLI is single-threaded. */
static const char *shown(const char *s)
{
    static char bufs[8][TERMSAFE_SIZE(600)];
    static unsigned next;
    char *b = bufs[next++ % 8];
    return termsafe_copy(b, sizeof(bufs[0]), s != NULL ? s : "");
}

static const char account_usage[] =
    "Usage: konnect account create --email EMAIL [--existing-user USER_ID]\n"
    "       konnect account show --account EMAIL|ID\n"
    "       konnect account set-plan --account EMAIL|ID --plan NAME\n"
    "       konnect account set-quota --account EMAIL|ID [--requests N|unlimited|plan]\n"
    "                                 [--tokens N|unlimited|plan]\n"
    "\n"
    "Manage customer accounts.\n"
    "\n"
    "  create     Create an account for EMAIL and its owner, print the account's id, and\n"
    "             print on standard error a one-time link (valid 7 days) with which the\n"
    "             owner chooses a password to sign in to the dashboard. If EMAIL is already a\n"
    "             dashboard user (made by sign-up or an invitation, not by this command), it is\n"
    "             refused, unless --existing-user names that user.\n"
    "  show       Print an account's id, email, creation time, plan, the monthly quotas in\n"
    "             force and this month's billed usage and cost.\n"
    "  set-plan   Put an account on a plan of the plans file ('default' follows the file's\n"
    "             default plan). A running server applies it at once.\n"
    "  set-quota  Override an account's monthly quotas of live requests and of tokens (input\n"
    "             plus output): a number, 'unlimited', or 'plan' for the plan's quota again.\n"
    "             A quota not given is left as it is. A running server applies it at once.\n"
    "\n"
    "Options:\n"
    "  --email EMAIL       the account owner's email address\n"
    "  --existing-user ID  for create: make this existing user (user_...) the owner\n"
    "  --account EMAIL|ID  the account to show or change\n"
    "  --plan NAME         a plan named in the plans file (see 'konnect plans')\n"
    "  --requests N        live requests a month: N, unlimited or plan\n"
    "  --tokens N          tokens a month: N, unlimited or plan\n"
    "  --data-dir DIR      where the database and server secret live (KONNECT_DATA_DIR, "
    "default ./var)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Plans come from KONNECT_PLANS (default <data dir>/plans.json).\n";

static const char key_usage[] =
    "Usage: konnect key create --account EMAIL|ID --mode test|live --name NAME\n"
    "                          [--environment development|staging|production]\n"
    "                          [--expires-in DURATION] [--allow-ip LIST] [--count N]\n"
    "       konnect key list --account EMAIL|ID [--json]\n"
    "       konnect key roll KEY [--grace DURATION]\n"
    "       konnect key update KEY [--name NAME] [--allow-ip LIST]\n"
    "       konnect key revoke KEY\n"
    "       konnect key expire KEY [--in DURATION]\n"
    "\n"
    "Manage secret API keys. KEY is a key id (key_...), a full secret, or '-' to read either\n"
    "from standard input (which keeps a secret out of the process list and shell history).\n"
    "\n"
    "  create   Create a key and print the secret alone on one line of standard output.\n"
    "           It is shown only this once: only a keyed hash of it is stored.\n"
    "  list     List an account's keys (never their secrets).\n"
    "  roll     Replace a key: print the new secret (shown once) and let the old key work\n"
    "           for the grace period (default: none, it stops at once), then expire.\n"
    "  update   Rename a key, or replace its IP allowlist ('none' removes it).\n"
    "  revoke   Revoke a key. A running server refuses it from the very next request.\n"
    "  expire   Make a key expire now, or after DURATION.\n"
    "\n"
    "Options:\n"
    "  --account EMAIL|ID      the account that owns the key\n"
    "  --mode test|live        test keys get mock answers and are rate limited; live keys are\n"
    "                          for production traffic to the model backend\n"
    "  --name NAME             a label for the key (1 to 128 bytes)\n"
    "  --environment ENV       development, staging or production (default: development for\n"
    "                          test keys, production for live keys)\n"
    "  --expires-in DURATION   make the key expire after DURATION (90s, 15m, 24h, 30d)\n"
    "  --allow-ip LIST         addresses and CIDR ranges the key may be used from, separated\n"
    "                          by commas (203.0.113.7,198.51.100.0/24,2001:db8::/32)\n"
    "  --count N               create N keys at once, one secret per line (bulk set-up)\n"
    "  --grace DURATION        for roll: how long the old key keeps working (0, 1h, 24h, 7d)\n"
    "  --in DURATION           for expire: when the key stops working (default: now)\n"
    "  --json                  for list: print JSON\n"
    "  --data-dir DIR          where the database and server secret live (KONNECT_DATA_DIR,\n"
    "                          default ./var)\n"
    "  -h, --help              show this help\n";

static const char user_usage[] =
    "Usage: konnect user set-password --email EMAIL < password-file\n"
    "       konnect user password-link --email EMAIL\n"
    "\n"
    "  set-password   Set (or reset) a dashboard user's password, read from the first line of\n"
    "                 standard input, and end every session of that user. Passwords are 10 to\n"
    "                 256 bytes.\n"
    "  password-link  Print a one-time link (valid 7 days) with which the user chooses a new\n"
    "                 password in the dashboard; using it ends every session of the user.\n"
    "                 It replaces the user's earlier links, and setting the password in any\n"
    "                 way voids it.\n"
    "                 Links are on KONNECT_PUBLIC_URL when it is set, else on the listen\n"
    "                 address (KONNECT_LISTEN).\n"
    "\n"
    "Options:\n"
    "  --email EMAIL     the user\n"
    "  --data-dir DIR    where the database lives (KONNECT_DATA_DIR, default ./var)\n";

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
    "       konnect plans reload\n"
    "\n"
    "List the plans of the plans file (KONNECT_PLANS, default <data dir>/plans.json) with their\n"
    "monthly quotas, prices (in micro-units: 1,000,000 = one unit of the currency) and limits.\n"
    "The default plan is marked with '*'. Without a plans file every account is on the\n"
    "built-in plan 'default': unlimited and free.\n"
    "\n"
    "'reload' checks the file and makes the running server read it again (as SIGHUP does);\n"
    "an invalid file is refused and the server keeps the plans in force.\n"
    "\n"
    "Options:\n"
    "  --json              print JSON\n"
    "  --data-dir DIR      where the plans file is looked for (KONNECT_DATA_DIR, default ./var)\n"
    "  -h, --help          show this help\n";

static const char migrate_usage[] =
    "Usage: konnect migrate [--data-dir DIR]\n"
    "\n"
    "Create the database when it is missing and apply pending schema migrations. Every command\n"
    "does this by itself; this command does only that.\n";

struct opts {
    const char *email, *account, *mode, *name, *env, *expires_in, *count, *in, *allow_ip, *grace,
        *limit, *plan, *requests, *tokens, *month, *existing_user;
    int json, csv, help;
    const char *positional[4];
    int npositional;
};

/* Every option of every command: its name, and the member of struct opts its value goes to (a
 * string for an option with a value, an int set to 1 for a flag). --data-dir is the exception:
 * it goes to the configuration. */
struct opt_def {
    const char *name;
    int has_value;
    size_t offset;
};

#define OPT_VALUE(name, member)                                                                    \
    {                                                                                              \
        name, 1, offsetof(struct opts, member)                                                     \
    }
#define OPT_FLAG(name, member)                                                                     \
    {                                                                                              \
        name, 0, offsetof(struct opts, member)                                                     \
    }
#define OPT_DATA_DIR_INDEX 0

static const struct opt_def opt_defs[] = {
    {"data-dir", 1, 0}, /* OPT_DATA_DIR_INDEX */
    OPT_VALUE("email", email),
    OPT_VALUE("account", account),
    OPT_VALUE("mode", mode),
    OPT_VALUE("name", name),
    OPT_VALUE("environment", env),
    OPT_VALUE("expires-in", expires_in),
    OPT_VALUE("count", count),
    OPT_VALUE("in", in),
    OPT_FLAG("json", json),
    OPT_VALUE("allow-ip", allow_ip),
    OPT_VALUE("grace", grace),
    OPT_VALUE("limit", limit),
    OPT_VALUE("plan", plan),
    OPT_VALUE("requests", requests),
    OPT_VALUE("tokens", tokens),
    OPT_VALUE("month", month),
    OPT_FLAG("csv", csv),
    OPT_VALUE("existing-user", existing_user),
    OPT_FLAG("help", help),
};
#define OPT_COUNT (sizeof(opt_defs) / sizeof(opt_defs[0]))

/* Parses the options after the subcommand (argv[0] = group, argv[1] = verb). */
static int parse_opts(struct kn_config *c, int argc, char **argv, struct opts *o, const char *usage)
{
    struct option longs[OPT_COUNT + 1];
    int ch;

    memset(o, 0, sizeof(*o));
    memset(longs, 0, sizeof(longs));
    for (size_t i = 0; i < OPT_COUNT; i++) {
        longs[i].name = opt_defs[i].name;
        longs[i].has_arg = opt_defs[i].has_value ? required_argument : no_argument;
        longs[i].val = 256 + (int)i;
    }
    optind = 1;
    opterr = 0; /* getopt would echo the argument, which may be a pasted secret. */
    while ((ch = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        const struct opt_def *d = ch >= 256 && ch < 256 + (int)OPT_COUNT ? &opt_defs[ch - 256]
                                  : ch == 'h'                            ? &opt_defs[OPT_COUNT - 1]
                                                                         : NULL;
        if (d == NULL) {
            char echo[64];
            fprintf(stderr, "konnect: unknown option, or option without its value: '%s'\n\n%s",
                    shown(redact_copy(echo, sizeof(echo), argv[optind - 1])), usage);
            return -1;
        }
        if (d == &opt_defs[OPT_DATA_DIR_INDEX])
            config_set_data_dir(c, optarg);
        else if (d->has_value)
            *(const char **)(void *)((char *)o + d->offset) = optarg;
        else
            *(int *)(void *)((char *)o + d->offset) = 1;
    }
    for (int i = optind; i < argc; i++) {
        if (o->npositional == (int)(sizeof(o->positional) / sizeof(o->positional[0]))) {
            fprintf(stderr, "konnect: too many arguments\n");
            return -1;
        }
        o->positional[o->npositional++] = argv[i];
    }
    return 0;
}

/* How a command uses the store: only `account create` and `migrate` may create one; every
 * other command needs the one it names, so that a command run from another directory (or with
 * another KONNECT_DATA_DIR) never quietly makes a fresh database and secret. */
enum store_use {
    STORE_MUST_EXIST,
    STORE_MAY_CREATE,
};

static struct store *open_store_for(struct kn_config *c, enum store_use use)
{
    char err[512], where[PATH_MAX + 16];
    struct store *s;
    int existed = store_exists(c->database, where, sizeof(where));

    if (!existed && use == STORE_MUST_EXIST) {
        fprintf(stderr,
                "konnect: no database at %s, and this command creates none: is the data "
                "directory right? (--data-dir or KONNECT_DATA_DIR; it is %s)\n",
                where, c->data_dir);
        return NULL;
    }
    if (config_ensure_data_dir(c, err, sizeof(err)) != 0) {
        fprintf(stderr, "konnect: %s\n", err);
        return NULL;
    }
    if ((s = store_open(c->database, 1, err, sizeof(err))) == NULL) {
        fprintf(stderr, "konnect: %s\n", err);
        return NULL;
    }
    if (!existed)
        fprintf(stderr, "konnect: created a new database at %s\n", where);
    config_warn_public(c);
    return s;
}

static struct store *open_store(struct kn_config *c)
{
    return open_store_for(c, STORE_MUST_EXIST);
}

static int find_account(struct store *s, const char *which, struct store_account *a)
{
    int r = store_account_find(s, which, a);
    char raw[STORE_EMAIL_MAX + 16], echo[TERMSAFE_SIZE(STORE_EMAIL_MAX + 16)];
    termsafe_copy(echo, sizeof(echo), redact_copy(raw, sizeof(raw), which));
    if (r == STORE_NOT_FOUND) {
        char where[PATH_MAX + 16];
        store_exists(store_url_of(s), where, sizeof(where));
        fprintf(stderr,
                "konnect: no account %s in %s (create it with: konnect account create --email "
                "%s)\n",
                echo, where, strchr(echo, '@') ? echo : "EMAIL");
    } else if (r != STORE_OK)
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
    return r;
}

int cli_migrate(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct store *s;

    if (parse_opts(c, argc, argv, &o, migrate_usage) != 0)
        return 2;
    if (o.help) {
        fputs(migrate_usage, stdout);
        return 0;
    }
    if ((s = open_store_for(c, STORE_MAY_CREATE)) == NULL)
        return 1;
    store_close(s);
    char where[PATH_MAX + 16];
    store_exists(c->database, where, sizeof(where));
    fprintf(stderr, "konnect: database %s is up to date\n", where);
    return 0;
}

static const struct lifecycle_actor cli_actor = {"cli", ""};

static int load_secret(struct kn_config *c, uint8_t secret[APIKEY_SECRET_LEN])
{
    char err[512], where[PATH_MAX + 16];
    int existed = access(c->secret_file, F_OK) == 0;

    if (apikey_secret_load(c->secret_file, 1, secret, err, sizeof(err)) != 0) {
        fprintf(stderr, "konnect: %s\n", err);
        return -1;
    }
    if (!existed)
        fprintf(stderr,
                "konnect: created a new server secret at %s (a server must use the same one)\n",
                kn_abs_path(c->secret_file, where, sizeof(where)));
    return 0;
}

/* The one way a secret leaves the CLI: alone on a line of standard output, then wiped. */
static void show_secret(char sk[APIKEY_LEN + 1])
{
    printf("%s\n", sk);
    fflush(stdout);
    sodium_memzero(sk, APIKEY_LEN + 1);
}

static void report_notify(struct kn_config *c, const char *what)
{
    char where[PATH_MAX + 16];
    int n = control_notify(c->socket_path, 5000);

    if (n > 0)
        fprintf(stderr, "konnect: the running server applied it: %s\n", what);
    else if (n < 0)
        fprintf(stderr, "konnect: the running server did not answer; it applies the change within "
                        "a second\n");
    else
        fprintf(stderr,
                "konnect: no server is running with the data directory %s: the change is in the "
                "database, for the server that starts with it\n",
                kn_abs_path(c->data_dir, where, sizeof(where)));
}

/* ---- accounts, plans, usage and invoices ---------------------------------------------------- */

static struct plans *load_plans(const struct kn_config *c)
{
    char err[512];
    struct plans *p = plans_load(c->plans_file, c->plans_file_set, err, sizeof(err));
    if (p == NULL)
        fprintf(stderr, "konnect: %s\n", err);
    return p;
}

/* Parses --month (default: this month). Returns 0, or -1 after saying why. */
static int parse_month(const struct opts *o, int64_t *month)
{
    *month = kn_month_of(kn_unix_now());
    if (o->month != NULL && kn_month_parse(o->month, month) != 0) {
        fprintf(stderr, "konnect: --month takes a month such as 2026-11\n");
        return -1;
    }
    return 0;
}

static void print_json(json_t *doc)
{
    json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    putchar('\n');
}

/* One quota in force as text: "2 a month" or "unlimited", with where it comes from. */
static void describe_quota(int64_t override, int64_t from_plan, char *buf, size_t size)
{
    int64_t limit = override == STORE_QUOTA_FROM_PLAN ? from_plan : override;
    const char *src = override == STORE_QUOTA_FROM_PLAN ? "the plan's" : "override";

    if (limit == PLAN_UNLIMITED)
        snprintf(buf, size, "unlimited (%s)", src);
    else
        snprintf(buf, size, "%lld a month (%s)", (long long)limit, src);
}

static void quota_shown(const char *label, json_t *q)
{
    json_t *limit = json_object_get(q, "limit");
    long long used = (long long)json_integer_value(json_object_get(q, "used"));

    if (json_is_null(limit))
        printf("%-9s%lld used this month, no limit", label, used);
    else
        printf("%-9s%lld of %lld used this month, %lld remaining", label, used,
               (long long)json_integer_value(limit),
               (long long)json_integer_value(json_object_get(q, "remaining")));
    printf(" (%s)\n", strcmp(json_string_value(json_object_get(q, "source")), "plan") == 0
                          ? "plan quota"
                          : "account override");
}

static int account_show(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_account a;
    struct plans *plans = NULL;
    json_t *u = NULL;
    char tbuf[32], money[REPORT_MONEY_SIZE];
    int ret = 1;

    if (o->account == NULL) {
        fprintf(stderr, "konnect: account show needs --account\n");
        return 2;
    }
    if ((s = open_store(c)) == NULL)
        return 1;
    if (find_account(s, o->account, &a) != STORE_OK)
        goto out;
    printf("id       %s\nemail    %s\ncreated  %s\n", a.id, shown(a.email),
           kn_format_time(a.created_at, tbuf, sizeof(tbuf)));
    if ((plans = load_plans(c)) == NULL)
        goto out;
    if (report_usage(s, plans, &a, kn_month_of(kn_unix_now()), kn_unix_now(), &u) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    json_t *quota = json_object_get(u, "quota"), *totals = json_object_get(u, "totals");
    printf("plan     %s%s\n",
           shown(json_string_value(json_object_get(json_object_get(u, "plan"), "name"))),
           a.plan[0] == '\0' ? " (the default plan)" : "");
    quota_shown("requests", json_object_get(quota, "requests"));
    quota_shown("tokens", json_object_get(quota, "tokens"));
    printf("cost     %s in %s (quotas reset at %s)\n",
           report_money(json_integer_value(json_object_get(totals, "cost_micros")), plans->currency,
                        money, sizeof(money)),
           json_string_value(json_object_get(u, "month")),
           json_string_value(json_object_get(quota, "resets_at")));
    ret = 0;
out:
    json_decref(u);
    plans_free(plans);
    store_close(s);
    return ret;
}

static int account_set_plan(struct kn_config *c, const struct opts *o)
{
    struct store *s = NULL;
    struct store_account a;
    struct plans *plans;
    const struct plan *p;
    char detail[256], echo[PLAN_NAME_MAX + 8];
    int ret = 1, follow_default = 0;

    if (o->account == NULL || o->plan == NULL) {
        fprintf(stderr, "konnect: account set-plan needs --account and --plan\n");
        return 2;
    }
    if ((plans = load_plans(c)) == NULL)
        return 1;
    p = o->plan[0] != '\0' ? plans_find(plans, o->plan) : NULL;
    /* "default" follows the file's default plan, unless the file has a plan of that name. */
    if (p == NULL && strcmp(o->plan, "default") == 0) {
        p = plans_find(plans, NULL);
        follow_default = 1;
    }
    if (p == NULL) {
        redact_copy(echo, sizeof(echo), o->plan);
        if (plans->builtin)
            fprintf(stderr,
                    "konnect: no plan '%s': there is no plans file at %s, so the only plan is",
                    shown(echo), c->plans_file);
        else
            fprintf(stderr, "konnect: the plans file %s has no plan '%s'; its plans are",
                    c->plans_file, shown(echo));
        for (size_t i = 0; i < plans->count; i++)
            fprintf(stderr, " %s", plans->plan[i].name);
        fputc('\n', stderr);
        goto out;
    }
    /* The account stores "" for the default plan, whichever plan that is at the time. */
    const char *stored = follow_default || plans->builtin ? "" : p->name;
    if (stored[0] != '\0') {
        /* A plan the running server does not know would stop the account's live requests. */
        char cmd[PLAN_NAME_MAX + 16], answer[64];
        snprintf(cmd, sizeof(cmd), "has-plan %s", stored);
        if (control_ask(c->socket_path, cmd, answer, sizeof(answer), 5000) == 1 &&
            strcmp(answer, "unknown") == 0) {
            fprintf(stderr,
                    "konnect: the running server does not know plan %s yet: reload its plans "
                    "first (konnect plans reload, or SIGHUP), then set the plan\n",
                    stored);
            goto out;
        }
    }
    if ((s = open_store(c)) == NULL || find_account(s, o->account, &a) != STORE_OK)
        goto out;
    if (store_account_set_plan(s, a.id, stored) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    snprintf(detail, sizeof(detail), "plan %s%s (was %s)", p->name,
             stored[0] == '\0' ? ", the default" : "", a.plan[0] ? a.plan : "the default");
    lifecycle_audit_entry(s, a.id, cli_actor.name, cli_actor.ip, "account.plan", a.email, "ok",
                          detail);
    printf("%s is on plan %s%s\n", shown(a.email), p->name,
           stored[0] == '\0' ? " (the default plan)" : "");
    report_notify(c, "the plan is in force");
    ret = 0;
out:
    store_close(s);
    plans_free(plans);
    return ret;
}

/* Parses a quota option: N, "unlimited" or "plan". Returns 0, or -1 after saying why. */
static int parse_quota(const char *name, const char *v, int64_t *out)
{
    long long n;

    if (strcmp(v, "unlimited") == 0)
        *out = STORE_QUOTA_UNLIMITED;
    else if (strcmp(v, "plan") == 0)
        *out = STORE_QUOTA_FROM_PLAN;
    else if (kn_parse_int(v, 0, 1000000000000000LL, &n) == 0)
        *out = n;
    else {
        fprintf(stderr, "konnect: --%s takes a number from 0 to 10^15, unlimited or plan\n", name);
        return -1;
    }
    return 0;
}

static void quota_text(int64_t q, char *buf, size_t size)
{
    if (q == STORE_QUOTA_FROM_PLAN)
        snprintf(buf, size, "plan");
    else if (q == STORE_QUOTA_UNLIMITED)
        snprintf(buf, size, "unlimited");
    else
        snprintf(buf, size, "%lld", (long long)q);
}

static int account_set_quota(struct kn_config *c, const struct opts *o)
{
    struct store *s = NULL;
    struct store_account a;
    struct plans *plans = NULL;
    const struct plan *p;
    int64_t requests = 0, tokens = 0;
    char detail[256], r0[32], r1[32], t0[32], t1[32], rq[64], tq[64];
    int ret = 1;

    if (o->account == NULL || (o->requests == NULL && o->tokens == NULL)) {
        fprintf(stderr, "konnect: account set-quota needs --account and --requests or --tokens\n");
        return 2;
    }
    if ((o->requests != NULL && parse_quota("requests", o->requests, &requests) != 0) ||
        (o->tokens != NULL && parse_quota("tokens", o->tokens, &tokens) != 0))
        return 2;
    if ((plans = load_plans(c)) == NULL)
        return 1;
    if ((s = open_store(c)) == NULL || find_account(s, o->account, &a) != STORE_OK)
        goto out;
    if (o->requests == NULL)
        requests = a.quota_requests;
    if (o->tokens == NULL)
        tokens = a.quota_tokens;
    if (store_account_set_quota(s, a.id, requests, tokens) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    quota_text(a.quota_requests, r0, sizeof(r0));
    quota_text(requests, r1, sizeof(r1));
    quota_text(a.quota_tokens, t0, sizeof(t0));
    quota_text(tokens, t1, sizeof(t1));
    snprintf(detail, sizeof(detail), "requests %s (was %s), tokens %s (was %s)", r1, r0, t1, t0);
    lifecycle_audit_entry(s, a.id, cli_actor.name, cli_actor.ip, "account.quota", a.email, "ok",
                          detail);
    if ((p = plans_find(plans, a.plan)) == NULL)
        p = plans_find(plans, NULL);
    describe_quota(requests, p->requests_per_month, rq, sizeof(rq));
    describe_quota(tokens, p->tokens_per_month, tq, sizeof(tq));
    printf("%s: requests %s, tokens %s\n", shown(a.email), rq, tq);
    report_notify(c, "the quotas are in force");
    ret = 0;
out:
    store_close(s);
    plans_free(plans);
    return ret;
}

/* Makes a one-time set-password link for user u and prints it, on stderr after `intro` when
 * to_stderr is set (the command's own output is something else), else alone on stdout. */
static int issue_password_link(struct kn_config *c, struct store *s, const struct store_user *u,
                               const char *intro, int to_stderr)
{
    struct store_password_token t;
    uint8_t secret[APIKEY_SECRET_LEN];
    char token[SESSION_TOKEN_LEN + 1], base[600];

    if (load_secret(c, secret) != 0)
        return -1;
    memset(&t, 0, sizeof(t));
    session_token_new(token);
    session_token_hash(secret, token, SESSION_TOKEN_LEN, t.token_hash);
    sodium_memzero(secret, sizeof(secret));
    kn_strlcpy(t.user_id, u->id, sizeof(t.user_id));
    t.created_at = kn_unix_now();
    t.expires_at = t.created_at + 7 * 86400;
    if (store_password_token_insert(s, &t) != STORE_OK) {
        sodium_memzero(token, sizeof(token));
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        return -1;
    }
    config_base_url(c, base, sizeof(base));
    /* The token travels in the fragment, which browsers never send to servers. */
    if (to_stderr)
        fprintf(stderr, "konnect: %s\nkonnect:   %s/set-password#token=%s\n", intro, base, token);
    else
        printf("%s/set-password#token=%s\n", base, token);
    fflush(stdout);
    sodium_memzero(token, sizeof(token));
    struct store_member m;
    lifecycle_audit(s, store_member_first(s, u->id, &m) == STORE_OK ? m.account_id : "", &cli_actor,
                    "user.password_link", NULL, "ok", u->email);
    return 0;
}

static int account_create(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_account a;
    struct store_user u;
    char echo[STORE_EMAIL_MAX + 16], when[32];
    int ret = 1, r;

    if (o->email == NULL) {
        fprintf(stderr, "konnect: account create needs --email\n");
        return 2;
    }
    if (!store_email_valid(o->email)) {
        fprintf(stderr, "konnect: --email must be an email address such as dev@example.com\n");
        return 2;
    }
    if ((s = open_store_for(c, STORE_MAY_CREATE)) == NULL)
        return 1;
    redact_copy(echo, sizeof(echo), o->email);
    if (store_account_find(s, o->email, &a) == STORE_OK) {
        fprintf(stderr, "konnect: an account with email %s already exists (%s)\n", shown(echo),
                a.id);
        goto out;
    }
    if (o->existing_user == NULL && store_user_find(s, o->email, &u) == STORE_OK) {
        /* Anyone can make a user of any email (sign-up, or an invitation they accept themselves):
         * such a user must not become this account's owner by accident. */
        fprintf(stderr,
                "konnect: %s is already a dashboard user (%s, since %s), made by sign-up or by "
                "an invitation, not by this command. Konnect does not hand an account to a user "
                "it did not create. If that user is the right owner, run again with "
                "--existing-user %s\n",
                shown(echo), u.id, kn_format_time(u.created_at, when, sizeof(when)), u.id);
        goto out;
    }
    r = store_account_create(s, o->email, NULL, o->existing_user, &a);
    if (r != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    printf("%s\n", a.id);
    fflush(stdout);
    fprintf(stderr, "konnect: created account %s for %s\n", a.id, shown(a.email));
    lifecycle_audit_entry(s, a.id, cli_actor.name, cli_actor.ip, "account.create", a.email, "ok",
                          o->existing_user != NULL ? "owner: an existing user" : "owner: new user");
    if (store_user_find(s, a.email, &u) == STORE_OK && u.password_hash[0] == '\0' &&
        issue_password_link(c, s, &u,
                            "the owner chooses a password for the dashboard at this link (single "
                            "use, valid 7 days; konnect user password-link makes a new one):",
                            1) != 0)
        goto out;
    ret = 0;
out:
    store_close(s);
    return ret;
}

/* One command of a group ("key create"): its name and what runs it. */
struct subcommand {
    const char *name;
    int (*run)(struct kn_config *c, const struct opts *o);
};

/* Parses a group's options and runs the command its first word names (cmds ends with a NULL
 * name); prints the group's usage for --help, no command or an unknown one. */
static int run_group(struct kn_config *c, int argc, char **argv, const char *group,
                     const char *usage, const struct subcommand *cmds)
{
    struct opts o;
    char echo[64];

    if (parse_opts(c, argc, argv, &o, usage) != 0)
        return 2;
    if (o.help || o.npositional == 0) {
        fputs(usage, o.help ? stdout : stderr);
        return o.help ? 0 : 2;
    }
    for (; cmds->name != NULL; cmds++)
        if (strcmp(o.positional[0], cmds->name) == 0)
            return cmds->run(c, &o);
    fprintf(stderr, "konnect: unknown %s command '%s'\n\n%s", group,
            shown(redact_copy(echo, sizeof(echo), o.positional[0])), usage);
    return 2;
}

int cli_account(struct kn_config *c, int argc, char **argv)
{
    static const struct subcommand cmds[] = {{"create", account_create},
                                             {"show", account_show},
                                             {"set-plan", account_set_plan},
                                             {"set-quota", account_set_quota},
                                             {NULL, NULL}};
    return run_group(c, argc, argv, "account", account_usage, cmds);
}

/* Opens the store and the plans and finds the account of --account, for usage and invoice. */
static struct store *open_account(struct kn_config *c, const struct opts *o,
                                  struct store_account *a, struct plans **plans)
{
    struct store *s;

    if ((*plans = load_plans(c)) == NULL)
        return NULL;
    if ((s = open_store(c)) == NULL || find_account(s, o->account, a) != STORE_OK) {
        store_close(s);
        plans_free(*plans);
        *plans = NULL;
        return NULL;
    }
    return s;
}

/* Prints a text report and frees it. */
static void put_text(char *text)
{
    fputs(text, stdout);
    free(text);
}

int cli_usage(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct store *s;
    struct store_account a;
    struct plans *plans;
    int64_t month;
    json_t *u = NULL;
    int ret = 1;

    if (parse_opts(c, argc, argv, &o, usage_usage) != 0)
        return 2;
    if (o.help) {
        fputs(usage_usage, stdout);
        return 0;
    }
    if (o.npositional != 0 || o.account == NULL) {
        fprintf(stderr, "konnect: usage needs --account\n\n%s", usage_usage);
        return 2;
    }
    if (parse_month(&o, &month) != 0)
        return 2;
    if ((s = open_account(c, &o, &a, &plans)) == NULL)
        return 1;
    if (report_usage(s, plans, &a, month, kn_unix_now(), &u) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    if (o.json) {
        print_json(u);
    } else {
        put_text(report_usage_text(u));
    }
    ret = 0;
out:
    json_decref(u);
    plans_free(plans);
    store_close(s);
    return ret;
}

int cli_invoice(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct store *s;
    struct store_account a;
    struct plans *plans;
    int64_t month;
    json_t *doc = NULL;
    int ret = 1, list;

    if (parse_opts(c, argc, argv, &o, invoice_usage) != 0)
        return 2;
    if (o.help) {
        fputs(invoice_usage, stdout);
        return 0;
    }
    list = o.npositional == 1 && strcmp(o.positional[0], "list") == 0;
    if ((o.npositional != 0 && !list) || o.account == NULL) {
        fprintf(stderr, "konnect: invoice needs --account\n\n%s", invoice_usage);
        return 2;
    }
    if ((o.json && o.csv) || (list && (o.csv || o.month != NULL))) {
        fprintf(stderr, "konnect: choose one of --json and --csv (list takes only --json)\n");
        return 2;
    }
    if (parse_month(&o, &month) != 0)
        return 2;
    if ((s = open_account(c, &o, &a, &plans)) == NULL)
        return 1;
    int rc = list ? report_months(s, plans, &a, kn_unix_now(), &doc)
                  : report_invoice(s, plans, &a, month, kn_unix_now(), &doc);
    if (rc != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    if (o.json) {
        print_json(doc);
    } else if (list) {
        put_text(report_months_text(doc));
    } else if (o.csv) {
        size_t len;
        char *csv = report_invoice_csv(doc, &len);
        fwrite(csv, 1, len, stdout);
        free(csv);
    } else {
        put_text(report_invoice_text(doc));
    }
    ret = 0;
out:
    json_decref(doc);
    plans_free(plans);
    store_close(s);
    return ret;
}

static void price_text(int64_t micros, char *buf, size_t size)
{
    snprintf(buf, size, "%lld", (long long)micros);
}

static int plans_reload(struct kn_config *c)
{
    struct plans *plans = load_plans(c);
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

    if (parse_opts(c, argc, argv, &o, plans_usage) != 0)
        return 2;
    if (o.help) {
        fputs(plans_usage, stdout);
        return 0;
    }
    if (o.npositional == 1 && strcmp(o.positional[0], "reload") == 0)
        return plans_reload(c);
    if (o.npositional != 0) {
        fputs(plans_usage, stderr);
        return 2;
    }
    if ((plans = load_plans(c)) == NULL)
        return 1;
    if (o.json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < plans->count; i++)
            json_array_append_new(arr, report_plan_json(&plans->plan[i]));
        json_t *doc = json_pack("{s:s, s:s, s:b, s:o}", "currency", plans->currency, "default_plan",
                                plans->plan[plans->default_index].name, "builtin", plans->builtin,
                                "plans", arr);
        print_json(doc);
        json_decref(doc);
        plans_free(plans);
        return 0;
    }
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
        quota_text(p->requests_per_month, rq, sizeof(rq));
        quota_text(p->tokens_per_month, tq, sizeof(tq));
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

#define CHUNK 4096 /* Keys per transaction in bulk creation. */

static int key_create(struct kn_config *c, const struct opts *o)
{
    struct lifecycle_spec spec;
    int64_t expires_in = 0;
    long long count = 1;
    uint8_t secret[APIKEY_SECRET_LEN];
    char err[512], allow[STORE_ALLOWLIST_MAX];
    struct store *s = NULL;
    struct store_account a;
    struct store_key *keys = NULL;
    char *secrets = NULL;
    int ret = 2;

    memset(&spec, 0, sizeof(spec));
    if (o->account == NULL || o->mode == NULL || o->name == NULL) {
        fprintf(stderr, "konnect: key create needs --account, --mode and --name\n");
        return 2;
    }
    if (apikey_mode_parse(o->mode, &spec.mode) != 0) {
        fprintf(stderr, "konnect: --mode must be test or live\n");
        return 2;
    }
    spec.env = spec.mode == APIKEY_MODE_LIVE ? APIKEY_ENV_PRODUCTION : APIKEY_ENV_DEVELOPMENT;
    if (o->env != NULL && apikey_env_parse(o->env, &spec.env) != 0) {
        fprintf(stderr, "konnect: --environment must be development, staging or production\n");
        return 2;
    }
    if (lifecycle_valid_name(o->name) != 0) {
        fprintf(stderr,
                "konnect: --name must be 1 to %d bytes of UTF-8 without control characters\n",
                STORE_NAME_MAX);
        return 2;
    }
    if (o->expires_in != NULL &&
        (kn_parse_duration(o->expires_in, &expires_in) != 0 || expires_in == 0)) {
        fprintf(stderr, "konnect: --expires-in takes a duration such as 90s, 15m, 24h or 30d\n");
        return 2;
    }
    if (lifecycle_canonical_allowlist(o->allow_ip, allow, err, sizeof(err)) != 0) {
        fprintf(stderr, "konnect: --allow-ip: %s\n", err);
        return 2;
    }
    if (o->count != NULL && kn_parse_int(o->count, 1, MAX_BATCH, &count) != 0) {
        fprintf(stderr, "konnect: --count must be between 1 and %d\n", MAX_BATCH);
        return 2;
    }
    ret = 1;
    if ((s = open_store(c)) == NULL)
        return 1;
    if (find_account(s, o->account, &a) != STORE_OK || load_secret(c, secret) != 0)
        goto out;
    spec.account_id = a.id;
    spec.name = o->name;
    spec.expires_at = expires_in ? kn_unix_now() + expires_in : 0;
    spec.allowlist = allow;
    if (count == 1) {
        struct store_key k;
        char sk[APIKEY_LEN + 1];
        if (lifecycle_create(s, secret, &spec, &cli_actor, &k, sk) != STORE_OK) {
            fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
            goto out;
        }
        show_secret(sk); /* everything else goes to stderr */
        fprintf(stderr,
                "konnect: created %s key %s \"%s\" (%s) for %s.\n"
                "konnect: copy the key now: it won't be shown again.\n",
                k.mode, k.id, shown(k.name), k.environment, shown(a.email));
    } else {
        /* Bulk: chunks of keys, one transaction each, one secret per line. */
        keys = kn_calloc(CHUNK, sizeof(*keys));
        secrets = kn_malloc(CHUNK * (APIKEY_LEN + 1));
        for (long long done = 0; done < count;) {
            size_t n = count - done < CHUNK ? (size_t)(count - done) : CHUNK;
            for (size_t i = 0; i < n; i++)
                lifecycle_fill(secret, &spec, cli_actor.name, &keys[i],
                               secrets + i * (APIKEY_LEN + 1));
            /* Each chunk is audited in its own transaction: what is in the store is audited. */
            struct store_audit e;
            char detail[96];
            snprintf(detail, sizeof(detail), "%zu %s keys named \"%.20s\" (%lld to %lld of %lld)",
                     n, o->mode, o->name, done + 1, done + (long long)n, count);
            lifecycle_key_entry(&e, a.id, &cli_actor, "key.create_bulk", NULL, detail);
            if (store_key_insert(s, keys, n, &e) != STORE_OK) {
                fprintf(stderr, "konnect: %s (after %lld keys)\n", shown(store_errmsg(s)), done);
                goto out;
            }
            for (size_t i = 0; i < n; i++)
                printf("%s\n", secrets + i * (APIKEY_LEN + 1));
            done += (long long)n;
        }
        fflush(stdout);
        fprintf(stderr, "konnect: created %lld %s keys for %s\n", count, o->mode, shown(a.email));
    }
    report_notify(c, "the key works from the next request on");
    ret = 0;
out:
    if (secrets != NULL) {
        sodium_memzero(secrets, CHUNK * (APIKEY_LEN + 1));
        free(secrets);
    }
    free(keys);
    sodium_memzero(secret, sizeof(secret));
    store_close(s);
    return ret;
}

struct list_ctx {
    int json;
    json_t *arr;
    int64_t now;
    int n;
};

static int list_one(void *ud, const struct store_key *k, uint64_t requests)
{
    struct list_ctx *l = ud;
    char created[32], used[32], expires[32];
    const char *status = lifecycle_status(k, l->now);

    kn_format_time(k->created_at, created, sizeof(created));
    kn_format_time(k->last_used_at, used, sizeof(used));
    kn_format_time(k->expires_at, expires, sizeof(expires));
    if (l->json) {
        json_array_append_new(l->arr, keyjson_doc(k, requests, l->now));
    } else {
        if (l->n == 0)
            printf("%-24s  %-20s  %-4s  %-11s  %-17s  %-20s  %-20s  %-20s  %-7s  %s\n", "ID",
                   "NAME", "MODE", "ENVIRONMENT", "KEY", "CREATED", "LAST USED", "EXPIRES",
                   "STATUS", "ALLOWED IPS");
        /* The hint holds a 3-byte ellipsis that prints as one column. */
        printf("%-24s  %-20.20s  %-4s  %-11s  %-19s  %-20s  %-20s  %-20s  %-7s  %s\n", k->id,
               shown(k->name), k->mode, k->environment, k->hint, created, used, expires, status,
               k->ip_allowlist[0] ? k->ip_allowlist : "any");
    }
    l->n++;
    return 0;
}

static int key_list(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_account a;
    struct list_ctx l = {.json = o->json, .now = kn_unix_now()};
    int ret = 1;

    if (o->account == NULL) {
        fprintf(stderr, "konnect: key list needs --account\n");
        return 2;
    }
    if ((s = open_store(c)) == NULL)
        return 1;
    if (find_account(s, o->account, &a) != STORE_OK)
        goto out;
    if (l.json)
        l.arr = json_array();
    if (store_key_list(s, a.id, list_one, &l) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    if (l.json) {
        json_dumpf(l.arr, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        putchar('\n');
    } else if (l.n == 0) {
        fprintf(stderr, "konnect: %s has no keys yet\n", shown(a.email));
    }
    ret = 0;
out:
    json_decref(l.arr);
    store_close(s);
    return ret;
}

/* Finds a key named by its id or by its full secret ("-" reads either from standard input, which
 * keeps a secret out of the process list). Never prints the secret. */
static int resolve_key(struct kn_config *c, struct store *s, const char *arg, struct store_key *k)
{
    enum apikey_mode mode;
    uint8_t secret[APIKEY_SECRET_LEN], hash[APIKEY_HASH_LEN];
    char err[512], hint[APIKEY_HINT_SIZE], line[256];
    int r;

    if (strcmp(arg, "-") == 0) {
        if (fgets(line, sizeof(line), stdin) == NULL) {
            fprintf(stderr, "konnect: expected a key id or secret on standard input\n");
            return -1;
        }
        line[strcspn(line, "\r\n")] = '\0';
        r = resolve_key(c, s, line, k);
        sodium_memzero(line, sizeof(line));
        return r;
    }
    if (apikey_parse(arg, strlen(arg), &mode) == 0) {
        if (apikey_secret_load(c->secret_file, 0, secret, err, sizeof(err)) != 0) {
            fprintf(stderr, "konnect: %s\n", err);
            return -1;
        }
        apikey_hash(secret, arg, APIKEY_LEN, hash);
        sodium_memzero(secret, sizeof(secret));
        r = store_key_find(s, NULL, hash, k);
        apikey_hint(arg, hint);
        if (r == STORE_NOT_FOUND)
            fprintf(stderr, "konnect: no key matches the secret %s\n", hint);
    } else if (strncmp(arg, "key_", 4) == 0 && strlen(arg) < STORE_ID_SIZE) {
        r = store_key_find(s, arg, NULL, k);
        if (r == STORE_NOT_FOUND)
            fprintf(stderr, "konnect: no key %s\n", arg);
    } else {
        /* Do not echo the argument: it may be a mistyped secret. */
        fprintf(stderr, "konnect: expected a key id (key_...) or a full secret key "
                        "(sk_live_... or sk_test_...) with a valid checksum\n");
        return -1;
    }
    if (r != STORE_OK && r != STORE_NOT_FOUND)
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
    return r == STORE_OK ? 0 : -1;
}

/* Opens the store and finds the key named by the command's one argument. */
static struct store *open_key(struct kn_config *c, const struct opts *o, const char *verb,
                              struct store_key *k)
{
    struct store *s;

    if (o->npositional != 2) {
        fprintf(stderr, "konnect: key %s takes one key id or secret (or - to read it)\n", verb);
        return NULL;
    }
    if ((s = open_store(c)) == NULL)
        return NULL;
    if (resolve_key(c, s, o->positional[1], k) != 0) {
        store_close(s);
        return NULL;
    }
    return s;
}

static int key_revoke(struct kn_config *c, const struct opts *o)
{
    struct store_key k;
    struct store *s = open_key(c, o, "revoke", &k);
    char tbuf[32];
    int ret = 1;

    if (s == NULL)
        return o->npositional != 2 ? 2 : 1;
    if (k.revoked_at != 0) {
        fprintf(stderr, "konnect: %s was already revoked at %s\n", k.id,
                kn_format_time(k.revoked_at, tbuf, sizeof(tbuf)));
        ret = 0;
    } else if (lifecycle_revoke(s, &k, &cli_actor) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
    } else {
        printf("revoked %s\n", k.id);
        report_notify(c, "the key is refused from the next request on");
        ret = 0;
    }
    store_close(s);
    return ret;
}

static int key_expire(struct kn_config *c, const struct opts *o)
{
    struct store_key k;
    struct store *s;
    int64_t in = 0;
    char tbuf[32];
    int ret = 1;

    if (o->in != NULL && kn_parse_duration(o->in, &in) != 0) {
        fprintf(stderr, "konnect: --in takes a duration such as 0, 90s, 15m, 24h or 7d\n");
        return 2;
    }
    if ((s = open_key(c, o, "expire", &k)) == NULL)
        return o->npositional != 2 ? 2 : 1;
    int64_t at = kn_unix_now() + in;
    if (lifecycle_expire(s, &k, at, &cli_actor) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
    } else {
        printf("%s expires at %s\n", k.id, kn_format_time(at, tbuf, sizeof(tbuf)));
        report_notify(c, "the new expiry is in force");
        ret = 0;
    }
    store_close(s);
    return ret;
}

static int key_roll(struct kn_config *c, const struct opts *o)
{
    struct store_key old, k;
    struct store *s;
    uint8_t secret[APIKEY_SECRET_LEN];
    char sk[APIKEY_LEN + 1], tbuf[32];
    int64_t grace = 0;
    int ret = 1;

    if (o->grace != NULL && strcmp(o->grace, "now") != 0 &&
        (kn_parse_duration(o->grace, &grace) != 0 || grace > 30LL * 86400)) {
        fprintf(stderr, "konnect: --grace takes now or a duration up to 30d (1h, 24h, 7d)\n");
        return 2;
    }
    if ((s = open_key(c, o, "roll", &old)) == NULL)
        return o->npositional != 2 ? 2 : 1;
    if (load_secret(c, secret) != 0)
        goto out;
    if (lifecycle_roll(s, secret, &old, grace, &cli_actor, &k, sk) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    show_secret(sk);
    fprintf(stderr,
            "konnect: rolled %s into %s \"%s\"; the old key %s at %s.\n"
            "konnect: copy the new key now: it won't be shown again.\n",
            old.id, k.id, shown(k.name), grace ? "keeps working until" : "stopped working",
            kn_format_time(kn_unix_now() + grace, tbuf, sizeof(tbuf)));
    report_notify(c, "both keys are in force");
    ret = 0;
out:
    sodium_memzero(secret, sizeof(secret));
    store_close(s);
    return ret;
}

static int key_update(struct kn_config *c, const struct opts *o)
{
    struct store_key k;
    struct store *s;
    char err[512], allow[STORE_ALLOWLIST_MAX];
    int ret = 1;

    if (o->name == NULL && o->allow_ip == NULL) {
        fprintf(stderr, "konnect: key update needs --name or --allow-ip\n");
        return 2;
    }
    if (o->name != NULL && lifecycle_valid_name(o->name) != 0) {
        fprintf(stderr,
                "konnect: --name must be 1 to %d bytes of UTF-8 without control characters\n",
                STORE_NAME_MAX);
        return 2;
    }
    if (o->allow_ip != NULL &&
        lifecycle_canonical_allowlist(strcmp(o->allow_ip, "none") == 0 ? "" : o->allow_ip, allow,
                                      err, sizeof(err)) != 0) {
        fprintf(stderr, "konnect: --allow-ip: %s\n", err);
        return 2;
    }
    if ((s = open_key(c, o, "update", &k)) == NULL)
        return o->npositional != 2 ? 2 : 1;
    if (o->name != NULL && lifecycle_rename(s, &k, o->name, &cli_actor) != STORE_OK)
        goto fail;
    if (o->allow_ip != NULL && lifecycle_set_allowlist(s, &k, allow, &cli_actor) != STORE_OK)
        goto fail;
    printf("updated %s\n", k.id);
    if (o->allow_ip != NULL)
        report_notify(c, allow[0] ? "the allowlist is in force" : "the key works from anywhere");
    ret = 0;
    goto out;
fail:
    fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
out:
    store_close(s);
    return ret;
}

int cli_key(struct kn_config *c, int argc, char **argv)
{
    static const struct subcommand cmds[] = {
        {"create", key_create}, {"list", key_list},     {"roll", key_roll}, {"update", key_update},
        {"revoke", key_revoke}, {"expire", key_expire}, {NULL, NULL}};
    return run_group(c, argc, argv, "key", key_usage, cmds);
}

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
        printf("%-20s  %-24s  %-16s  %-15s  %-7s  %-40s  %s\n", t, shown(e->actor),
               shown(e->action), e->ip[0] ? shown(e->ip) : "-", shown(e->result), shown(e->target),
               shown(e->detail));
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
    int ret = 1;

    if (parse_opts(c, argc, argv, &o, audit_usage) != 0)
        return 2;
    if (o.help) {
        fputs(audit_usage, stdout);
        return 0;
    }
    if (o.npositional != 0 || (o.limit != NULL && kn_parse_int(o.limit, 1, 100000, &limit) != 0)) {
        fputs(audit_usage, stderr);
        return 2;
    }
    if ((s = open_store(c)) == NULL)
        return 1;
    if (o.account != NULL && find_account(s, o.account, &acct) != STORE_OK)
        goto out;
    a.json = o.json;
    if (a.json)
        a.arr = json_array();
    if (store_audit_list(s, o.account != NULL ? acct.id : "", 0, (int)limit, audit_one, &a) !=
        STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    if (a.json) {
        json_dumpf(a.arr, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        putchar('\n');
    }
    ret = 0;
out:
    json_decref(a.arr);
    store_close(s);
    return ret;
}

static int user_password_link(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_user u;
    char echo[STORE_EMAIL_MAX + 16];
    int ret = 1;

    if (!store_email_valid(o->email)) {
        fprintf(stderr, "konnect: --email must be an email address such as dev@example.com\n");
        return 2;
    }
    if ((s = open_store(c)) == NULL)
        return 1;
    if (store_user_find(s, o->email, &u) != STORE_OK)
        fprintf(stderr, "konnect: no user %s\n", shown(redact_copy(echo, sizeof(echo), o->email)));
    else if (issue_password_link(c, s, &u, NULL, 0) == 0) {
        fprintf(stderr, "konnect: give this link to %s: it is single use and valid for 7 days\n",
                shown(u.email));
        ret = 0;
    }
    store_close(s);
    return ret;
}

int cli_user(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct store *s;
    struct store_user u;
    char pw[PASSWORD_MAX + 2], hash[PASSWORD_HASH_SIZE];
    int ret = 1;

    if (parse_opts(c, argc, argv, &o, user_usage) != 0)
        return 2;
    if (o.help || o.npositional != 1 || o.email == NULL ||
        (strcmp(o.positional[0], "set-password") != 0 &&
         strcmp(o.positional[0], "password-link") != 0)) {
        fputs(user_usage, o.help ? stdout : stderr);
        return o.help ? 0 : 2;
    }
    if (strcmp(o.positional[0], "password-link") == 0)
        return user_password_link(c, &o);
    if (fgets(pw, sizeof(pw), stdin) == NULL) {
        fprintf(stderr, "konnect: expected the new password on standard input\n");
        return 2;
    }
    pw[strcspn(pw, "\r\n")] = '\0';
    if (password_acceptable(pw) != 0) {
        sodium_memzero(pw, sizeof(pw));
        fprintf(stderr, "konnect: a password has %d to %d bytes\n", PASSWORD_MIN, PASSWORD_MAX);
        return 2;
    }
    if ((s = open_store(c)) == NULL) {
        sodium_memzero(pw, sizeof(pw));
        return 1;
    }
    if (store_user_find(s, o.email, &u) != STORE_OK) {
        char echo[STORE_EMAIL_MAX + 16];
        fprintf(stderr, "konnect: no user %s\n", shown(redact_copy(echo, sizeof(echo), o.email)));
        goto out;
    }
    if (password_hash(pw, hash) != 0 || store_user_set_password(s, u.id, hash) != STORE_OK ||
        store_sessions_delete_user(s, u.id) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", shown(store_errmsg(s)));
        goto out;
    }
    struct store_member m;
    lifecycle_audit(s, store_member_first(s, u.id, &m) == STORE_OK ? m.account_id : "", &cli_actor,
                    "user.password_reset", NULL, "ok", u.email);
    printf("password set for %s; their sessions have ended\n", shown(u.email));
    ret = 0;
out:
    sodium_memzero(pw, sizeof(pw));
    sodium_memzero(hash, sizeof(hash));
    store_close(s);
    return ret;
}
