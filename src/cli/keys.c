/* konnect key: create, list, roll, update, revoke, expire. */
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

static const char key_usage[] =
    "Usage: konnect key create --account EMAIL|ID --mode test|live|admin --name NAME\n"
    "                          [--environment development|staging|production]\n"
    "                          [--expires-in DURATION] [--allow-ip LIST] [--count N]\n"
    "                          [--models LIST] [--rpm N] [--monthly-requests N]\n"
    "       konnect key list --account EMAIL|ID [--json]\n"
    "       konnect key roll KEY [--grace DURATION]\n"
    "       konnect key update KEY [--name NAME] [--allow-ip LIST] [--models LIST|none]\n"
    "                          [--rpm N|none] [--monthly-requests N|none]\n"
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
    "  revoke   Revoke a key. Every running server refuses it from the very next request once\n"
    "           this returns.\n"
    "  expire   Make a key expire now, or after DURATION.\n"
    "\n"
    "Options:\n"
    "  --account EMAIL|ID      the account that owns the key\n"
    "  --mode test|live|admin  test keys get mock answers and are rate limited; live keys are\n"
    "                          for production traffic to the model backend; admin keys\n"
    "                          (sk_admin_...) call the management API (/v1/keys, /v1/usage,\n"
    "                          ...) and never /v1/chat\n"
    "  --name NAME             a label for the key (1 to 128 bytes)\n"
    "  --environment ENV       development, staging or production (default: development for\n"
    "                          test keys, production for live and admin keys)\n"
    "  --expires-in DURATION   make the key expire after DURATION (90s, 15m, 24h, 30d)\n"
    "  --models LIST           a restricted key: the only models it may use, of its account's\n"
    "                          plan, separated by commas ('none' for all of them again)\n"
    "  --rpm N                 a restricted key: its own requests per minute, below its\n"
    "                          account's ('none' for none)\n"
    "  --monthly-requests N    a restricted live key: its own quota of live requests a month\n"
    "                          (UTC), at most its account's, counting the keys it replaced\n"
    "                          ('none' for none)\n"
    "  --allow-ip LIST         addresses and CIDR ranges the key may be used from, separated\n"
    "                          by commas (203.0.113.7,198.51.100.0/24,2001:db8::/32)\n"
    "  --count N               create N keys at once, one secret per line (bulk set-up)\n"
    "  --grace DURATION        for roll: how long the old key keeps working (0, 1h, 24h, 7d)\n"
    "  --in DURATION           for expire: when the key stops working (default: now)\n"
    "  --json                  for list: print JSON\n"
    "  --wait DURATION         how long a change waits for every running server to apply it\n"
    "                          (default 5s); exit status 3 names those that had not\n"
    "  --data-dir DIR          where the database and server secret live (KONNECT_DATA_DIR,\n"
    "                          default ./var)\n"
    "  -h, --help              show this help\n";

#define CHUNK 4096 /* Keys per transaction in bulk creation. */

/* Reads --models, --rpm and --monthly-requests for a key of account a in `mode`: the canonical
 * list and the numbers (0 for none; "none" clears any). Returns 0, or 2 after saying what is
 * wrong. */
static int read_restrictions(const struct kn_config *c, const struct opts *o,
                             const struct store_account *a, const char *mode,
                             char models[STORE_MODELS_MAX], int64_t *rpm, int64_t *monthly)
{
    char err[300];
    long long n = 0;
    int ret = 0;

    models[0] = '\0';
    *rpm = 0;
    *monthly = 0;
    if (strcmp(mode, "admin") == 0) {
        fprintf(stderr, "konnect: admin keys call no model: --models, --rpm and "
                        "--monthly-requests are for live and test keys\n");
        return 2;
    }
    if (o->rpm != NULL && strcmp(o->rpm, "none") != 0) {
        if (kn_parse_int(o->rpm, 1, 1000000, &n) != 0) {
            fprintf(stderr, "konnect: --rpm takes a number from 1 to 1000000, or none\n");
            return 2;
        }
        *rpm = n;
    }
    if (o->monthly != NULL && strcmp(o->monthly, "none") != 0) {
        if (strcmp(mode, "live") != 0) {
            fprintf(stderr, "konnect: --monthly-requests is for live keys (test keys are never "
                            "billed)\n");
            return 2;
        }
        if (kn_parse_int(o->monthly, 1, 1000000000000LL, &n) != 0) {
            fprintf(stderr,
                    "konnect: --monthly-requests takes a number from 1 to 1000000000000, or "
                    "none\n");
            return 2;
        }
        *monthly = n;
    }
    if ((o->models == NULL || strcmp(o->models, "none") == 0) && *monthly == 0)
        return 0;
    struct plans *ps = cli_load_plans(c);
    if (ps == NULL)
        return 2;
    const struct plan *plan = plans_find(ps, a->plan);
    if (plan == NULL)
        plan = plans_find(ps, NULL);
    int64_t cap =
        a->quota_requests == STORE_QUOTA_FROM_PLAN ? plan->requests_per_month : a->quota_requests;
    if (*monthly != 0 && cap >= 0 && *monthly > cap) {
        fprintf(stderr,
                "konnect: --monthly-requests must be at most the account's quota, %lld requests "
                "a month\n",
                (long long)cap);
        ret = 2;
    } else if (o->models != NULL && strcmp(o->models, "none") != 0 &&
               (lifecycle_canonical_models(ps, plan, o->models, models, err, sizeof(err)) != 0 ||
                models[0] == '\0')) {
        fprintf(stderr, "konnect: --models: %s\n",
                models[0] == '\0' && err[0] == '\0' ? "name at least one model" : err);
        ret = 2;
    }
    plans_free(ps);
    return ret;
}

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
        fprintf(stderr, "konnect: --mode must be test, live or admin\n");
        return 2;
    }
    spec.env = spec.mode != APIKEY_MODE_TEST ? APIKEY_ENV_PRODUCTION : APIKEY_ENV_DEVELOPMENT;
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
    if ((s = cli_open_store(c)) == NULL)
        return 1;
    if (cli_find_account(s, o->account, &a) != STORE_OK || cli_load_secret(c, secret) != 0)
        goto out;
    char models[STORE_MODELS_MAX];
    if ((o->models != NULL || o->rpm != NULL || o->monthly != NULL) &&
        (ret = read_restrictions(c, o, &a, apikey_mode_name(spec.mode), models,
                                 &spec.requests_per_minute, &spec.monthly_requests)) != 0)
        goto out;
    if (o->models == NULL)
        models[0] = '\0';
    ret = 1;
    spec.models = models;
    spec.account_id = a.id;
    spec.name = o->name;
    spec.expires_at = expires_in ? kn_unix_now() + expires_in : 0;
    spec.allowlist = allow;
    if (count == 1) {
        struct store_key k;
        char sk[APIKEY_MAX_LEN + 1];
        if (lifecycle_create(s, secret, &spec, &cli_actor, &k, sk) != STORE_OK) {
            fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
            goto out;
        }
        cli_show_secret(sk); /* everything else goes to stderr */
        fprintf(stderr,
                "konnect: created %s key %s \"%s\" (%s) for %s.\n"
                "konnect: copy the key now: it won't be shown again.\n",
                k.mode, k.id, cli_shown(k.name), k.environment, cli_shown(a.email));
    } else {
        /* Bulk: chunks of keys, one transaction each, one secret per line. */
        keys = kn_calloc(CHUNK, sizeof(*keys));
        secrets = kn_malloc(CHUNK * (APIKEY_MAX_LEN + 1));
        for (long long done = 0; done < count;) {
            size_t n = count - done < CHUNK ? (size_t)(count - done) : CHUNK;
            for (size_t i = 0; i < n; i++)
                lifecycle_fill(secret, &spec, cli_actor.name, &keys[i],
                               secrets + i * (APIKEY_MAX_LEN + 1));
            /* Each chunk is audited in its own transaction: what is in the store is audited. */
            struct store_audit e;
            char detail[96];
            snprintf(detail, sizeof(detail), "%zu %s keys named \"%.20s\" (%lld to %lld of %lld)",
                     n, o->mode, o->name, done + 1, done + (long long)n, count);
            lifecycle_key_entry(&e, a.id, &cli_actor, "key.create_bulk", NULL, detail);
            if (store_key_insert(s, keys, n, &e) != STORE_OK) {
                fprintf(stderr, "konnect: %s (after %lld keys)\n", cli_shown(store_errmsg(s)),
                        done);
                goto out;
            }
            for (size_t i = 0; i < n; i++)
                printf("%s\n", secrets + i * (APIKEY_MAX_LEN + 1));
            done += (long long)n;
        }
        fflush(stdout);
        fprintf(stderr, "konnect: created %lld %s keys for %s\n", count, o->mode,
                cli_shown(a.email));
    }
    ret = cli_report_notify(c, s, o, "the key works from the next request on");
out:
    if (secrets != NULL) {
        sodium_memzero(secrets, CHUNK * (APIKEY_MAX_LEN + 1));
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
            printf("%-24s  %-20s  %-5s  %-11s  %-17s  %-20s  %-20s  %-20s  %-7s  %s\n", "ID",
                   "NAME", "MODE", "ENVIRONMENT", "KEY", "CREATED", "LAST USED", "EXPIRES",
                   "STATUS", "ALLOWED IPS");
        /* The hint holds a 3-byte ellipsis that prints as one column. */
        printf("%-24s  %-20.20s  %-5s  %-11s  %-19s  %-20s  %-20s  %-20s  %-7s  %s\n", k->id,
               cli_shown(k->name), k->mode, k->environment, k->hint, created, used, expires, status,
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
    int ret = 1, status;

    if ((s = cli_require_account(c, o, "key list", &a, &status)) == NULL)
        return status;
    if (l.json)
        l.arr = json_array();
    if (store_key_list(s, a.id, list_one, &l) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    if (l.json) {
        cli_print_json(l.arr);
    } else if (l.n == 0) {
        fprintf(stderr, "konnect: %s has no keys yet\n", cli_shown(a.email));
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
        apikey_hash(secret, arg, strlen(arg), hash);
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
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
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
    if ((s = cli_open_store(c)) == NULL)
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
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
    } else {
        printf("revoked %s\n", k.id);
        ret = cli_report_notify(c, s, o, "the key is refused from the next request on");
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
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
    } else {
        printf("%s expires at %s\n", k.id, kn_format_time(at, tbuf, sizeof(tbuf)));
        ret = cli_report_notify(c, s, o, "the new expiry is in force");
    }
    store_close(s);
    return ret;
}

static int key_roll(struct kn_config *c, const struct opts *o)
{
    struct store_key old, k;
    struct store *s;
    uint8_t secret[APIKEY_SECRET_LEN];
    char sk[APIKEY_MAX_LEN + 1], tbuf[32];
    int64_t grace = 0;
    int ret = 1;

    if (o->grace != NULL && strcmp(o->grace, "now") != 0 &&
        (kn_parse_duration(o->grace, &grace) != 0 || grace > 30LL * 86400)) {
        fprintf(stderr, "konnect: --grace takes now, 0 or a duration with its unit, up to 30d "
                        "(90s, 1h, 24h, 7d)\n");
        return 2;
    }
    if ((s = open_key(c, o, "roll", &old)) == NULL)
        return o->npositional != 2 ? 2 : 1;
    if (cli_load_secret(c, secret) != 0)
        goto out;
    if (lifecycle_roll(s, secret, &old, grace, &cli_actor, &k, sk) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    cli_show_secret(sk);
    fprintf(stderr,
            "konnect: rolled %s into %s \"%s\"; the old key %s at %s.\n"
            "konnect: copy the new key now: it won't be shown again.\n",
            old.id, k.id, cli_shown(k.name), grace ? "keeps working until" : "stopped working",
            kn_format_time(kn_unix_now() + grace, tbuf, sizeof(tbuf)));
    ret = cli_report_notify(c, s, o, "both keys are in force");
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

    int restricts = o->models != NULL || o->rpm != NULL || o->monthly != NULL;
    if (o->name == NULL && o->allow_ip == NULL && !restricts) {
        fprintf(stderr, "konnect: key update needs --name, --allow-ip, --models, --rpm or "
                        "--monthly-requests\n");
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
    if (restricts) {
        struct store_account a;
        char models[STORE_MODELS_MAX];
        int64_t rpm, monthly;
        if (store_account_find(s, k.account_id, &a) != STORE_OK)
            goto fail;
        if ((ret = read_restrictions(c, o, &a, k.mode, models, &rpm, &monthly)) != 0)
            goto out;
        ret = 1;
        if (o->models == NULL)
            kn_strlcpy(models, k.models, sizeof(models));
        if (o->rpm == NULL)
            rpm = k.requests_per_minute;
        if (o->monthly == NULL)
            monthly = k.monthly_requests;
        if (lifecycle_set_restrictions(s, &k, models, rpm, monthly, &cli_actor) != STORE_OK)
            goto fail;
    }
    printf("updated %s\n", k.id);
    ret = o->allow_ip == NULL && !restricts ? 0
          : o->allow_ip == NULL ? cli_report_notify(c, s, o, "the restrictions are in force")
                                : cli_report_notify(c, s, o,
                                                    allow[0] ? "the allowlist is in force"
                                                             : "the key works from anywhere");
    goto out;
fail:
    fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
out:
    store_close(s);
    return ret;
}

int cli_key(struct kn_config *c, int argc, char **argv)
{
    static const struct subcommand cmds[] = {
        {"create", key_create}, {"list", key_list},     {"roll", key_roll}, {"update", key_update},
        {"revoke", key_revoke}, {"expire", key_expire}, {NULL, NULL}};
    return cli_run_group(c, argc, argv, "key", key_usage, cmds);
}
