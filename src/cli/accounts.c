/* konnect account: create, list, show, set-plan, set-quota. */
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

static const char account_usage[] =
    "Usage: konnect account create --email EMAIL [--existing-user USER_ID]\n"
    "       konnect account list [--json]\n"
    "       konnect account show --account EMAIL|ID\n"
    "       konnect account set-plan --account EMAIL|ID --plan NAME\n"
    "       konnect account set-quota --account EMAIL|ID [--requests N|unlimited|plan]\n"
    "                                 [--tokens N|unlimited|plan]\n"
    "       konnect account suspend --account EMAIL|ID\n"
    "       konnect account reinstate --account EMAIL|ID\n"
    "\n"
    "Manage customer accounts.\n"
    "\n"
    "  create     Create an account for EMAIL and its owner, print the account's id, and\n"
    "             print on standard error a one-time link (valid 7 days) with which the\n"
    "             owner chooses a password to sign in to the dashboard. If EMAIL is already a\n"
    "             dashboard user (made by sign-up or an invitation, not by this command), it is\n"
    "             refused, unless --existing-user names that user.\n"
    "  list       List every account, oldest first: id, email, creation time, plan and the\n"
    "             quotas set on it (--json: a JSON array).\n"
    "  show       Print an account's id, email, creation time, plan, the monthly quotas in\n"
    "             force and this month's billed usage and cost.\n"
    "  set-plan   Put an account on a plan of the plans file ('default' follows the file's\n"
    "             default plan). A running server applies it at once.\n"
    "  set-quota  Override an account's monthly quotas of live requests and of tokens (input\n"
    "             plus output): a number, 'unlimited', or 'plan' for the plan's quota again.\n"
    "             A quota not given is left as it is. A running server applies it at once.\n"
    "  suspend    Refuse every key of the account (403 account_suspended) on every running\n"
    "             server, from before this returns; its keys, usage and dashboard are kept.\n"
    "  reinstate  Let the keys of a suspended account work again.\n"
    "\n"
    "Options:\n"
    "  --email EMAIL       the account owner's email address\n"
    "  --existing-user ID  for create: make this existing user (user_...) the owner\n"
    "  --account EMAIL|ID  the account to show or change\n"
    "  --plan NAME         a plan named in the plans file (see 'konnect plans')\n"
    "  --requests N        live requests a month: N, unlimited or plan\n"
    "  --tokens N          tokens a month: N, unlimited or plan\n"
    "  --wait DURATION     how long a change waits for every running server to apply it\n"
    "                      (default 5s); exit status 3 names those that had not\n"
    "  --data-dir DIR      where the database and server secret live (KONNECT_DATA_DIR, "
    "default ./var)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Plans come from KONNECT_PLANS (default <data dir>/plans.json).\n";

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

/* A quota set on an account, as set-quota takes it: a number, "unlimited", or null (the plan's). */
static json_t *quota_set(int64_t q)
{
    return q == STORE_QUOTA_FROM_PLAN   ? json_null()
           : q == STORE_QUOTA_UNLIMITED ? json_string("unlimited")
                                        : json_integer((json_int_t)q);
}

static int account_list(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct {
        struct store_account *a;
        size_t n;
    } l = {0};
    char tbuf[32];
    int ret = 1;

    if (o->npositional != 1) {
        fputs("konnect: account list takes no arguments\n", stderr);
        return 2;
    }
    if ((s = cli_open_store_for(c, STORE_MUST_EXIST)) == NULL)
        return 1;
    if (store_accounts_list(s, &l.a, &l.n) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto done;
    }
    if (o->json) {
        json_t *out = json_array();
        for (size_t i = 0; i < l.n; i++) {
            const struct store_account *a = &l.a[i];
            char sbuf[32];
            json_array_append_new(
                out,
                json_pack("{s:s, s:s, s:s, s:s?, s:o, s:o, s:s?}", "id", a->id, "email", a->email,
                          "created", kn_format_time(a->created_at, tbuf, sizeof(tbuf)), "plan",
                          a->plan[0] != '\0' ? a->plan : NULL, "quota_requests",
                          quota_set(a->quota_requests), "quota_tokens", quota_set(a->quota_tokens),
                          "suspended",
                          a->suspended_at != 0 ? kn_format_time(a->suspended_at, sbuf, sizeof(sbuf))
                                               : NULL));
        }
        cli_print_json(out);
        json_decref(out);
    } else {
        printf("%-25s %-32s %-20s %s\n", "ID", "EMAIL", "CREATED", "PLAN");
        for (size_t i = 0; i < l.n; i++) {
            const struct store_account *a = &l.a[i];
            printf("%-25s %-32s %-20s %s%s\n", a->id, cli_shown(a->email),
                   kn_format_time(a->created_at, tbuf, sizeof(tbuf)),
                   a->plan[0] != '\0' ? cli_shown(a->plan) : "(default)",
                   a->suspended_at != 0 ? " (suspended)" : "");
        }
    }
    ret = 0;
done:
    free(l.a);
    store_close(s);
    return ret;
}

static int account_show(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_account a;
    struct plans *plans = NULL;
    json_t *u = NULL;
    char tbuf[32], money[REPORT_MONEY_SIZE];
    int ret = 1, status;

    if ((s = cli_require_account(c, o, "account show", &a, &status)) == NULL)
        return status;
    printf("id       %s\nemail    %s\ncreated  %s\n", a.id, cli_shown(a.email),
           kn_format_time(a.created_at, tbuf, sizeof(tbuf)));
    if (a.suspended_at != 0)
        printf("status   suspended since %s: every key is refused\n",
               kn_format_time(a.suspended_at, tbuf, sizeof(tbuf)));
    if ((plans = cli_load_plans(c)) == NULL)
        goto out;
    if (report_usage(s, plans, &a, kn_month_of(kn_unix_now()), kn_unix_now(), &u) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    json_t *quota = json_object_get(u, "quota"), *totals = json_object_get(u, "totals");
    printf("plan     %s%s\n",
           cli_shown(json_string_value(json_object_get(json_object_get(u, "plan"), "name"))),
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
    if ((plans = cli_load_plans(c)) == NULL)
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
                    cli_shown(echo), c->plans_file);
        else
            fprintf(stderr, "konnect: the plans file %s has no plan '%s'; its plans are",
                    c->plans_file, cli_shown(echo));
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
    if ((s = cli_open_store(c)) == NULL || cli_find_account(s, o->account, &a) != STORE_OK)
        goto out;
    snprintf(detail, sizeof(detail), "plan %s%s (was %s)", p->name,
             stored[0] == '\0' ? ", the default" : "", a.plan[0] ? a.plan : "the default");
    int rc = store_account_set_plan(s, a.id, stored);
    ret = cli_account_changed(c, s, o, &a, rc, "account.plan", detail, "the plan is in force",
                              "%s is on plan %s%s\n", cli_shown(a.email), p->name,
                              stored[0] == '\0' ? " (the default plan)" : "");
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
    if ((plans = cli_load_plans(c)) == NULL)
        return 1;
    if ((s = cli_open_store(c)) == NULL || cli_find_account(s, o->account, &a) != STORE_OK)
        goto out;
    if (o->requests == NULL)
        requests = a.quota_requests;
    if (o->tokens == NULL)
        tokens = a.quota_tokens;
    cli_quota_text(a.quota_requests, r0, sizeof(r0));
    cli_quota_text(requests, r1, sizeof(r1));
    cli_quota_text(a.quota_tokens, t0, sizeof(t0));
    cli_quota_text(tokens, t1, sizeof(t1));
    snprintf(detail, sizeof(detail), "requests %s (was %s), tokens %s (was %s)", r1, r0, t1, t0);
    if ((p = plans_find(plans, a.plan)) == NULL)
        p = plans_find(plans, NULL);
    describe_quota(requests, p->requests_per_month, rq, sizeof(rq));
    describe_quota(tokens, p->tokens_per_month, tq, sizeof(tq));
    int rc = store_account_set_quota(s, a.id, requests, tokens);
    ret = cli_account_changed(c, s, o, &a, rc, "account.quota", detail, "the quotas are in force",
                              "%s: requests %s, tokens %s\n", cli_shown(a.email), rq, tq);
out:
    store_close(s);
    plans_free(plans);
    return ret;
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
    if ((s = cli_open_store_for(c, STORE_MAY_CREATE)) == NULL)
        return 1;
    redact_copy(echo, sizeof(echo), o->email);
    if (store_account_find(s, o->email, &a) == STORE_OK) {
        fprintf(stderr, "konnect: an account with email %s already exists (%s)\n", cli_shown(echo),
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
                cli_shown(echo), u.id, kn_format_time(u.created_at, when, sizeof(when)), u.id);
        goto out;
    }
    r = store_account_create(s, o->email, NULL, o->existing_user, &a);
    if (r != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    printf("%s\n", a.id);
    fflush(stdout);
    fprintf(stderr, "konnect: created account %s for %s\n", a.id, cli_shown(a.email));
    lifecycle_audit_entry(s, a.id, cli_actor.name, cli_actor.ip, "account.create", a.email, "ok",
                          o->existing_user != NULL ? "owner: an existing user" : "owner: new user");
    if (store_user_find(s, a.email, &u) == STORE_OK && u.password_hash[0] == '\0' &&
        cli_issue_password_link(
            c, s, &u,
            "the owner chooses a password for the dashboard at this link (single "
            "use, valid 7 days; konnect user password-link makes a new one):",
            1) != 0)
        goto out;
    ret = 0;
out:
    store_close(s);
    return ret;
}

static int account_suspension(struct kn_config *c, const struct opts *o, int suspend)
{
    const char *cmd = suspend ? "suspend" : "reinstate";
    struct store *s;
    struct store_account a;
    char tbuf[32];
    int ret = 1;

    if (o->account == NULL) {
        fprintf(stderr, "konnect: account %s needs --account\n", cmd);
        return 2;
    }
    if ((s = cli_open_store(c)) == NULL || cli_find_account(s, o->account, &a) != STORE_OK)
        goto out;
    if (!suspend && a.suspended_at == 0) {
        printf("%s is not suspended\n", cli_shown(a.email));
        ret = 0;
        goto out;
    }
    if (suspend && a.suspended_at != 0) {
        printf("%s is suspended already (since %s)\n", cli_shown(a.email),
               kn_format_time(a.suspended_at, tbuf, sizeof(tbuf)));
        ret = 0;
        goto out;
    }
    int rc = store_account_set_suspended(s, a.id, suspend ? kn_unix_now() : 0);
    ret = cli_account_changed(
        c, s, o, &a, rc, suspend ? "account.suspend" : "account.reinstate",
        suspend ? "every key refused" : "its keys work again",
        suspend ? "the suspension is in force" : "the reinstatement is in force", "%s is %s\n",
        cli_shown(a.email), suspend ? "suspended: every key of it is refused" : "reinstated");
out:
    store_close(s);
    return ret;
}

static int account_suspend(struct kn_config *c, const struct opts *o)
{
    return account_suspension(c, o, 1);
}

static int account_reinstate(struct kn_config *c, const struct opts *o)
{
    return account_suspension(c, o, 0);
}

int cli_account(struct kn_config *c, int argc, char **argv)
{
    static const struct subcommand cmds[] = {
        {"create", account_create},       {"list", account_list},
        {"show", account_show},           {"set-plan", account_set_plan},
        {"set-quota", account_set_quota}, {"suspend", account_suspend},
        {"reinstate", account_reinstate}, {NULL, NULL}};
    return cli_run_group(c, argc, argv, "account", account_usage, cmds);
}
