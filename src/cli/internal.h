/* What the operator commands share (internal to src/cli/): option parsing from one table, opening
 * the store and the plans, finding an account, printing stored text safely, running a group's
 * subcommands. Each command group has a file of its own: accounts.c, keys.c, users.c (and
 * set-password links), audit.c, billing.c (usage, invoices, plans); common.c holds this. */
#ifndef KN_CLI_INTERNAL_H
#define KN_CLI_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "core/config.h"
#include "keys/apikey.h"
#include "keys/lifecycle.h"
#include "metering/plans.h"
#include "store/store.h"

#define MAX_BATCH 1000000

/* A command's options and arguments, as parsed by cli_parse_opts. */
struct opts {
    const char *email, *account, *mode, *name, *env, *expires_in, *count, *in, *allow_ip, *grace,
        *limit, *plan, *requests, *tokens, *month, *existing_user;
    const char *wait, *from, *to, *models, *rpm, *monthly;
    int64_t wait_ms; /* --wait as milliseconds (default 5 s), checked before any change. */
    int json, csv, help;
    const char *positional[4];
    int npositional;
};

/* How a command uses the store: only `account create` and `migrate` may create one; every
 * other command needs the one it names, so that a command run from another directory (or with
 * another KONNECT_DATA_DIR) never quietly makes a fresh database and secret. */
enum store_use {
    STORE_MUST_EXIST,
    STORE_MAY_CREATE,
};

/* One command of a group ("key create"): its name and what runs it. */
struct subcommand {
    const char *name;
    int (*run)(struct kn_config *c, const struct opts *o);
};

/* Who the CLI is in the audit log. */
extern const struct lifecycle_actor cli_actor;

/* Stored text (names, emails, audit details, store messages that quote them) on its way to the
 * terminal, made safe (core/termsafe.h): each call fills the next of a few rotating buffers, so
 * that one printf can show several. The CLI is single-threaded. */
const char *cli_shown(const char *s);
/* Parses the options after the subcommand (argv[0] = group, argv[1] = verb); prints usage on an
 * unknown option. Returns 0 or -1. */
int cli_parse_opts(struct kn_config *c, int argc, char **argv, struct opts *o, const char *usage);
/* Parses a command's options (cli_parse_opts) and answers --help with the usage on standard
 * output. Returns -1 when the command goes on, else its exit status: 2 after bad options, 0 after
 * --help. */
/* Says what is wrong with a command line, in one line, with the command whose --help to read
 * (from usage's first line). */
void cli_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_parse_command(struct kn_config *c, int argc, char **argv, struct opts *o,
                      const char *usage);
/* Opens the store of the data directory (see enum store_use); NULL after printing why. */
struct store *cli_open_store_for(struct kn_config *c, enum store_use use);
struct store *cli_open_store(struct kn_config *c);
/* Finds --account (an email or an id); prints why not. */
int cli_find_account(struct store *s, const char *which, struct store_account *a);
/* Opens the store and finds the account of --account, which `command` ("key list") needs.
 * Returns the store, or NULL after saying why, with *status the exit status: 2 when --account is
 * missing, else 1. */
struct store *cli_require_account(struct kn_config *c, const struct opts *o, const char *command,
                                  struct store_account *a, int *status);
/* Reads the server secret; prints why not. Returns 0 or -1. */
int cli_load_secret(struct kn_config *c, uint8_t secret[APIKEY_SECRET_LEN]);
/* Prints a new key's secret on standard output, then wipes it. */
void cli_show_secret(char sk[APIKEY_MAX_LEN + 1]);
/* After a change committed to s: nudges a server running with this data directory (which
 * applies it at once), then waits up to --wait for every live server to have applied it
 * (keys/propagation.h) and says so, with `what` (what is now in force). Returns the command's
 * exit status: 0, or 3 when live servers lag (the change stays committed; they are named). */
int cli_report_notify(struct kn_config *c, struct store *s, const struct opts *o, const char *what);
/* The plans file, or NULL after printing why. */
struct plans *cli_load_plans(const struct kn_config *c);
/* --month (YYYY-MM, default the current one) as year * 12 + month - 1. Returns 0 or -1. */
int cli_parse_month(const struct opts *o, int64_t *month);
/* Prints doc as indented ASCII JSON. */
void cli_print_json(json_t *doc);
/* Makes a one-time set-password link for u and prints it after intro. Returns 0 or -1. */
int cli_issue_password_link(struct kn_config *c, struct store *s, const struct store_user *u,
                            const char *intro, int to_stderr);
/* Parses a group's options and runs the command its first word names (cmds ends with a NULL
 * name); prints the group's usage for --help, no command or an unknown one. */
int cli_run_group(struct kn_config *c, int argc, char **argv, const char *group, const char *usage,
                  const struct subcommand *cmds);
/* Opens the store and the plans and finds the account of --account, for usage and invoice. */
struct store *cli_open_account(struct kn_config *c, const struct opts *o, struct store_account *a,
                               struct plans **plans);
/* Makes a report of account a for `month` into *out, as report_usage and report_invoice do. */
typedef int cli_report_fn(struct store *s, const struct plans *plans, const struct store_account *a,
                          int64_t month, int64_t now, json_t **out);
/* Prints a report that a cli_report_fn made, in the form the options ask for. */
typedef void cli_show_fn(const struct opts *o, json_t *doc);
/* Runs a report command (usage, invoice) for --account and --month: opens the plans and the
 * store, finds the account, makes the report with make and prints it with show. Returns the exit
 * status: 0, 2 for a bad --month, or 1 after saying why. */
int cli_account_report(struct kn_config *c, const struct opts *o, cli_report_fn *make,
                       cli_show_fn *show);
/* Ends a change to account a (set-plan, set-quota), rc being what the store answered it: prints
 * the store's error and returns 1, or records action and detail in the audit log, prints the line
 * that fmt makes on standard output and reports the change's propagation (cli_report_notify,
 * saying in_force), whose exit status it returns. */
int cli_account_changed(struct kn_config *c, struct store *s, const struct opts *o,
                        const struct store_account *a, int rc, const char *action,
                        const char *detail, const char *in_force, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));
/* A monthly quota override as text: "plan", "unlimited" or the limit. */
void cli_quota_text(int64_t q, char *buf, size_t size);
/* Prints a text report and frees it. */
void cli_put_text(char *text);

#endif
