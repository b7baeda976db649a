/* What the operator commands share; see internal.h. */
#include "cli/cli.h"

#include "cli/internal.h"

#include <getopt.h>
#include <jansson.h>
#include <sodium.h>
#include <limits.h>
#include <stdarg.h>
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
#include "keys/propagation.h"
#include "keys/keyjson.h"
#include "keys/keysync.h"
#include "auth/password.h"
#include "auth/session.h"
#include "keys/lifecycle.h"
#include "metering/plans.h"
#include "metering/report.h"
#include "store/copy.h"
#include "store/store.h"

/* Stored text (names, emails, audit details, store messages that quote them) on its way to the
 * terminal, made safe (core/termsafe.h): each call fills the next of a few rotating buffers, so
 * that one printf can show several. The CLI is single-threaded. */
const char *cli_shown(const char *s)
{
    static char bufs[8][TERMSAFE_SIZE(600)];
    static unsigned next;
    char *b = bufs[next++ % 8];
    return termsafe_copy(b, sizeof(bufs[0]), s != NULL ? s : "");
}

static const char migrate_usage[] =
    "Usage: konnect migrate [--data-dir DIR]\n"
    "\n"
    "Create the database when it is missing and apply pending schema migrations. Every command\n"
    "does this by itself; this command does only that.\n";

static const char backup_usage[] =
    "Usage: konnect backup --to FILE [--data-dir DIR]\n"
    "\n"
    "Write a consistent copy of the SQLite store into FILE, a new file (an existing one is never\n"
    "replaced), while the server goes on answering and billing: one read of the database as it\n"
    "stands (SQLite's VACUUM INTO), then the copy read back whole and counted. The copy is a\n"
    "plain database file, private to its owner. The server secret is not in it: keep a copy of\n"
    "<data dir>/secret apart (without it, no key of the backup verifies). To restore: stop the\n"
    "server, put the copy at <data dir>/konnect.db (removing konnect.db-wal and konnect.db-shm),\n"
    "with the same secret, and start it. For PostgreSQL, use pg_dump (docs/operations.md).\n";

static const char store_usage[] =
    "Usage: konnect store copy --from SQLITE --to POSTGRESQL_URL\n"
    "\n"
    "Copy a single-node installation's SQLite store (a path, such as var/konnect.db, or a\n"
    "sqlite: URL) into an empty PostgreSQL database (postgresql://user@host/db): accounts,\n"
    "users and memberships, keys and their request counts, the audit log, sessions,\n"
    "invitations, set-password links, the usage ledger and its rollup, published plans. It\n"
    "runs in one PostgreSQL transaction, then counts each table again there; nothing is copied\n"
    "when anything fails. Stop the server first, so that no bill is written to the old store\n"
    "meanwhile. Keys keep working on the new store when its servers use the same server secret\n"
    "(KONNECT_SECRET_FILE, default <data dir>/secret): only keyed hashes are stored.\n";

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
    OPT_VALUE("models", models),
    OPT_VALUE("rpm", rpm),
    OPT_VALUE("monthly-requests", monthly),
    OPT_VALUE("grace", grace),
    OPT_VALUE("limit", limit),
    OPT_VALUE("plan", plan),
    OPT_VALUE("requests", requests),
    OPT_VALUE("tokens", tokens),
    OPT_VALUE("month", month),
    OPT_FLAG("csv", csv),
    OPT_VALUE("existing-user", existing_user),
    OPT_VALUE("wait", wait),
    OPT_VALUE("from", from),
    OPT_VALUE("to", to),
    OPT_FLAG("help", help),
};
#define OPT_COUNT (sizeof(opt_defs) / sizeof(opt_defs[0]))

/* Parses the options after the subcommand (argv[0] = group, argv[1] = verb). */
int cli_parse_opts(struct kn_config *c, int argc, char **argv, struct opts *o, const char *usage)
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
            cli_usage_error(usage, "unknown option, or option without its value: '%s'",
                            cli_shown(redact_copy(echo, sizeof(echo), argv[optind - 1])));
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
    int64_t wait_s = 5;
    if (o->wait != NULL && (kn_parse_duration(o->wait, &wait_s) != 0 || wait_s > 3600)) {
        fprintf(stderr, "konnect: --wait takes a duration such as 0, 5s or 1m (at most 1h)\n");
        return -1;
    }
    o->wait_ms = wait_s * 1000;
    return 0;
}

void cli_usage_error(const char *usage, const char *fmt, ...)
{
    char msg[300], cmd[64] = "konnect";
    const char *p = strncmp(usage, "Usage: ", 7) == 0 ? usage + 7 : "";
    size_t n = strcspn(p, " \n");
    va_list ap;

    /* "Usage: konnect key create ..." names the command group: "konnect key". */
    if (n > 0 && p[n] == ' ') {
        const char *w = p + n + 1;
        size_t m = strcspn(w, " \n");
        if (m > 0 && m < sizeof(cmd) - 9 && w[0] >= 'a' && w[0] <= 'z')
            snprintf(cmd, sizeof(cmd), "konnect %.*s", (int)m, w);
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "konnect: %s (see '%s --help')\n", msg, cmd);
}

/* Parses a command's options and answers --help; -1 when the command goes on, else its exit
 * status. */
int cli_parse_command(struct kn_config *c, int argc, char **argv, struct opts *o, const char *usage)
{
    if (cli_parse_opts(c, argc, argv, o, usage) != 0)
        return 2;
    if (o->help) {
        fputs(usage, stdout);
        return 0;
    }
    return -1;
}

struct store *cli_open_store_for(struct kn_config *c, enum store_use use)
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

struct store *cli_open_store(struct kn_config *c)
{
    return cli_open_store_for(c, STORE_MUST_EXIST);
}

int cli_find_account(struct store *s, const char *which, struct store_account *a)
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
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
    return r;
}

/* Opens the store and finds the account of --account, which `command` needs; NULL after saying
 * why, with *status 2 (no --account) or 1. */
struct store *cli_require_account(struct kn_config *c, const struct opts *o, const char *command,
                                  struct store_account *a, int *status)
{
    struct store *s;

    *status = 1;
    if (o->account == NULL) {
        fprintf(stderr, "konnect: %s needs --account\n", command);
        *status = 2;
        return NULL;
    }
    if ((s = cli_open_store(c)) == NULL)
        return NULL;
    if (cli_find_account(s, o->account, a) != STORE_OK) {
        store_close(s);
        return NULL;
    }
    return s;
}

int cli_migrate(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct store *s;
    int done = cli_parse_command(c, argc, argv, &o, migrate_usage);

    if (done >= 0)
        return done;
    if ((s = cli_open_store_for(c, STORE_MAY_CREATE)) == NULL)
        return 1;
    store_close(s);
    char where[PATH_MAX + 16];
    store_exists(c->database, where, sizeof(where));
    fprintf(stderr, "konnect: database %s is up to date\n", where);
    return 0;
}

int cli_backup(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    struct store *s;
    struct store_backup_info info;
    char from[PATH_MAX + 16];
    int done = cli_parse_command(c, argc, argv, &o, backup_usage);

    if (done >= 0)
        return done;
    if (o.npositional != 0 || o.to == NULL) {
        cli_usage_error(backup_usage,
                        o.to == NULL ? "backup needs --to FILE" : "backup takes no arguments");
        return 2;
    }
    if ((s = cli_open_store_for(c, STORE_MUST_EXIST)) == NULL)
        return 1;
    store_exists(c->database, from, sizeof(from));
    if (store_backup(s, o.to, &info) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        store_close(s);
        return 1;
    }
    store_close(s);
    printf("backed up %s into %s (%.1f MB, read back whole): %lld accounts, %lld users, %lld "
           "keys, %lld ledger rows, %lld audit entries\n",
           cli_shown(from), cli_shown(o.to), (double)info.bytes / 1048576, (long long)info.accounts,
           (long long)info.users, (long long)info.keys, (long long)info.ledger_rows,
           (long long)info.audit_entries);
    fprintf(stderr,
            "konnect: the server secret (%s) is not in the backup: keep a copy of it apart, as "
            "carefully as the backup\n",
            cli_shown(c->secret_file));
    return 0;
}

int cli_store(struct kn_config *c, int argc, char **argv)
{
    struct opts o;
    char err[600], from[PATH_MAX + 16], to[4096];
    int done = cli_parse_command(c, argc, argv, &o, store_usage);

    if (done >= 0)
        return done;
    if (o.npositional != 1 || strcmp(o.positional[0], "copy") != 0 || o.from == NULL ||
        o.to == NULL) {
        cli_usage_error(store_usage, o.npositional != 1 || strcmp(o.positional[0], "copy") != 0
                                         ? "store has one command, copy"
                                         : "store copy needs --from SQLITE and --to "
                                           "POSTGRESQL_URL");
        return 2;
    }
    store_url_redacted(o.to, to, sizeof(to));
    store_exists(o.from, from, sizeof(from));
    fprintf(stderr, "konnect: copying %s into %s\n", from, to);
    if (store_copy(o.from, o.to, stdout, err, sizeof(err)) != 0) {
        fprintf(stderr, "konnect: %s; nothing was copied\n", cli_shown(err));
        return 1;
    }
    fprintf(stderr,
            "konnect: copied. Point every server at it (KONNECT_DATABASE) with the same server "
            "secret (%s), and KONNECT_REDIS_URL for several servers\n",
            c->secret_file);
    return 0;
}

const struct lifecycle_actor cli_actor = {"cli", ""};

int cli_load_secret(struct kn_config *c, uint8_t secret[APIKEY_SECRET_LEN])
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
void cli_show_secret(char sk[APIKEY_MAX_LEN + 1])
{
    printf("%s\n", sk);
    fflush(stdout);
    sodium_memzero(sk, APIKEY_MAX_LEN + 1);
}

int cli_report_notify(struct kn_config *c, struct store *s, const struct opts *o, const char *what)
{
    char where[PATH_MAX + 16];
    struct propagation p;

    /* A server of this data directory applies it before it answers; others read the change
     * logs when notified (PostgreSQL) or within a second. */
    if (control_notify(c->socket_path, 5000) < 0)
        fprintf(stderr, "konnect: the server of this data directory did not answer the nudge\n");
    if (propagation_wait(s, (int)o->wait_ms, &p) != STORE_OK) {
        fprintf(stderr,
                "konnect: the change is committed, but whether the servers applied it cannot be "
                "read: %s\n",
                cli_shown(store_errmsg(s)));
        return 3;
    }
    if (p.live == 0) {
        if (store_is_postgres(store_url_of(s)))
            fprintf(stderr, "konnect: no server is running with this store: the change is in the "
                            "database, for the servers that start with it\n");
        else
            fprintf(stderr,
                    "konnect: no server is running with the data directory %s: the change is in "
                    "the database, for the server that starts with it\n",
                    kn_abs_path(c->data_dir, where, sizeof(where)));
        return 0;
    }
    if (p.lagging[0] == '\0') {
        fprintf(stderr, "konnect: applied by every running server (%d): %s\n", p.live, what);
        return 0;
    }
    fprintf(stderr,
            "konnect: warning: the change is committed, but %d of %d running servers had not "
            "applied it after %lld ms: %s; they apply it as soon as they reach the store\n",
            p.live - p.applied, p.live, (long long)o->wait_ms, cli_shown(p.lagging));
    return 3;
}

/* ---- accounts, plans, usage and invoices ---------------------------------------------------- */

struct plans *cli_load_plans(const struct kn_config *c)
{
    char err[512], *body = NULL;
    int64_t version = 0;
    struct plans *p;

    /* Plans published in the store (konnect plans apply) are the ones in force. */
    if (store_exists(c->database, NULL, 0)) {
        struct store *s = store_open(c->database, 1, err, sizeof(err));
        if (s == NULL) {
            fprintf(stderr, "konnect: %s\n", err);
            return NULL;
        }
        int r = store_plans_newest(s, &version, &body);
        if (r != STORE_OK)
            fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        store_close(s);
        if (r != STORE_OK)
            return NULL;
    }
    if (body != NULL) {
        p = plans_parse(body, strlen(body), err, sizeof(err));
        free(body);
        if (p == NULL) {
            fprintf(stderr, "konnect: plans version %lld in the store: %s\n", (long long)version,
                    err);
            return NULL;
        }
        p->version = version;
        return p;
    }
    if ((p = plans_load(c->plans_file, c->plans_file_set, err, sizeof(err))) == NULL)
        fprintf(stderr, "konnect: %s\n", err);
    return p;
}

/* Parses --month (default: this month). Returns 0, or -1 after saying why. */
int cli_parse_month(const struct opts *o, int64_t *month)
{
    *month = kn_month_of(kn_unix_now());
    if (o->month != NULL && kn_month_parse(o->month, month) != 0) {
        fprintf(stderr, "konnect: --month takes a month such as 2026-11\n");
        return -1;
    }
    return 0;
}

void cli_print_json(json_t *doc)
{
    json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    putchar('\n');
}

/* Makes a one-time set-password link for user u and prints it, on stderr after `intro` when
 * to_stderr is set (the command's own output is something else), else alone on stdout. */
int cli_issue_password_link(struct kn_config *c, struct store *s, const struct store_user *u,
                            const char *intro, int to_stderr)
{
    struct store_password_token t;
    uint8_t secret[APIKEY_SECRET_LEN];
    char token[SESSION_TOKEN_LEN + 1], base[600];

    if (cli_load_secret(c, secret) != 0)
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
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        return -1;
    }
    /* Where the running server answers, when one runs (it may listen elsewhere than this
     * command's KONNECT_LISTEN); else this command's own settings. */
    char answer[700];
    if (c->public_url[0] == '\0' &&
        control_ask(c->socket_path, "base-url", answer, sizeof(answer), 2000) == 1 &&
        strncmp(answer, "ok ", 3) == 0)
        kn_strlcpy(base, answer + 3, sizeof(base));
    else
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

/* Parses a group's options and runs the command its first word names (cmds ends with a NULL
 * name); prints the group's usage for --help, and one line naming its commands for no command or
 * an unknown one. */
int cli_run_group(struct kn_config *c, int argc, char **argv, const char *group, const char *usage,
                  const struct subcommand *cmds)
{
    struct opts o;
    char echo[64];

    if (cli_parse_opts(c, argc, argv, &o, usage) != 0)
        return 2;
    if (o.help) {
        fputs(usage, stdout);
        return 0;
    }
    const struct subcommand *first = cmds;
    for (; o.npositional > 0 && cmds->name != NULL; cmds++)
        if (strcmp(o.positional[0], cmds->name) == 0)
            return cmds->run(c, &o);
    char names[200] = "";
    for (const struct subcommand *k = first; k->name != NULL; k++)
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", names[0] ? ", " : "",
                 k->name);
    if (o.npositional == 0)
        cli_usage_error(usage, "%s needs a command: %s", group, names);
    else
        cli_usage_error(usage, "unknown %s command '%s': it has %s", group,
                        cli_shown(redact_copy(echo, sizeof(echo), o.positional[0])), names);
    return 2;
}

/* Opens the store and the plans and finds the account of --account, for usage and invoice. */
struct store *cli_open_account(struct kn_config *c, const struct opts *o, struct store_account *a,
                               struct plans **plans)
{
    struct store *s;

    if ((*plans = cli_load_plans(c)) == NULL)
        return NULL;
    if ((s = cli_open_store(c)) == NULL || cli_find_account(s, o->account, a) != STORE_OK) {
        store_close(s);
        plans_free(*plans);
        *plans = NULL;
        return NULL;
    }
    return s;
}

/* Runs a report command for --account and --month: the plans, the store, the account, then the
 * report made and shown. Returns the exit status. */
int cli_account_report(struct kn_config *c, const struct opts *o, cli_report_fn *make,
                       cli_show_fn *show)
{
    struct store *s;
    struct store_account a;
    struct plans *plans;
    int64_t month;
    json_t *doc = NULL;
    int ret = 1;

    if (cli_parse_month(o, &month) != 0)
        return 2;
    if ((s = cli_open_account(c, o, &a, &plans)) == NULL)
        return 1;
    if (make(s, plans, &a, month, kn_unix_now(), &doc) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
    } else {
        show(o, doc);
        ret = 0;
    }
    json_decref(doc);
    plans_free(plans);
    store_close(s);
    return ret;
}

/* Ends a change to account a that the store answered with rc: its error, or the audit entry, the
 * line on standard output and the nudge to the running server. Returns the exit status. */
int cli_account_changed(struct kn_config *c, struct store *s, const struct opts *o,
                        const struct store_account *a, int rc, const char *action,
                        const char *detail, const char *in_force, const char *fmt, ...)
{
    va_list ap;

    if (rc != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        return 1;
    }
    lifecycle_audit_entry(s, a->id, cli_actor.name, cli_actor.ip, action, a->email, "ok", detail);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    return cli_report_notify(c, s, o, in_force);
}

/* Prints a text report and frees it. */
void cli_put_text(char *text)
{
    fputs(text, stdout);
    free(text);
}

void cli_quota_text(int64_t q, char *buf, size_t size)
{
    if (q == STORE_QUOTA_FROM_PLAN)
        snprintf(buf, size, "plan");
    else if (q == STORE_QUOTA_UNLIMITED)
        snprintf(buf, size, "unlimited");
    else
        snprintf(buf, size, "%lld", (long long)q);
}
