/* konnect operator-key: create, list and revoke the operator API's keys (sk_op_...). */
#include "cli/cli.h"

#include "cli/internal.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "keys/apikey.h"
#include "keys/keyjson.h"
#include "keys/lifecycle.h"
#include "store/store.h"

static const char operator_usage[] =
    "Usage: konnect operator-key create --name NAME\n"
    "       konnect operator-key list [--json]\n"
    "       konnect operator-key revoke ID\n"
    "\n"
    "Manage the operator API's keys (sk_op_...): the keys with which the operator's own\n"
    "systems call /v1/operator/... to create accounts, set their plan and quotas, suspend\n"
    "them and export every account's usage. They belong to no account.\n"
    "\n"
    "  create   Create a key and print the secret alone on one line of standard output.\n"
    "           It is shown only this once: only a keyed hash of it is stored.\n"
    "  list     List the operator keys (never their secrets).\n"
    "  revoke   Revoke a key (opk_...): every running server refuses it from its next call.\n"
    "\n"
    "Options:\n"
    "  --name NAME         a label for the key (1 to 128 bytes)\n"
    "  --json              list as JSON\n"
    "  --data-dir DIR      where the database and server secret live (KONNECT_DATA_DIR, "
    "default ./var)\n"
    "  -h, --help          show this help\n";

static int opkey_create(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_key k;
    uint8_t secret[APIKEY_SECRET_LEN];
    char sk[APIKEY_MAX_LEN + 1];
    int ret = 1;

    if (o->name == NULL || lifecycle_valid_name(o->name) != 0) {
        fprintf(stderr, "konnect: operator-key create needs --name NAME (1 to 128 bytes)\n");
        return 2;
    }
    if ((s = cli_open_store(c)) == NULL)
        return 1;
    if (cli_load_secret(c, secret) != 0)
        goto out;
    if (lifecycle_operator_key_create(s, secret, o->name, &cli_actor, &k, sk) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    printf("%s\n", sk);
    fflush(stdout);
    sodium_memzero(sk, sizeof(sk));
    fprintf(stderr,
            "konnect: created operator key %s \"%s\".\n"
            "konnect: copy the key now: it won't be shown again.\n",
            k.id, cli_shown(k.name));
    ret = 0;
out:
    sodium_memzero(secret, sizeof(secret));
    store_close(s);
    return ret;
}

struct opkey_list {
    json_t *arr;
    int json, n;
};

static json_t *opkey_doc(const struct store_key *k)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:o, s:o}", "id", k->id, "name", k->name, "hint",
                     k->hint, "created", (json_int_t)k->created_at, "created_by", k->created_by,
                     "last_used", k->last_used_at ? json_integer(k->last_used_at) : json_null(),
                     "revoked", k->revoked_at ? json_integer(k->revoked_at) : json_null());
}

static int list_one(void *ud, const struct store_key *k, uint64_t requests)
{
    struct opkey_list *l = ud;
    char created[32], used[32];

    (void)requests;
    if (l->json) {
        json_array_append_new(l->arr, opkey_doc(k));
        return 0;
    }
    if (l->n++ == 0)
        printf("%-24s  %-24s  %-15s  %-20s  %-20s  %s\n", "ID", "NAME", "KEY", "CREATED",
               "LAST USED", "STATUS");
    kn_format_time(k->created_at, created, sizeof(created));
    kn_format_time(k->last_used_at, used, sizeof(used));
    /* The hint holds a 3-byte ellipsis that prints as one column. */
    printf("%-24s  %-24.24s  %-17s  %-20s  %-20s  %s\n", k->id, cli_shown(k->name), k->hint,
           created, k->last_used_at ? used : "never", k->revoked_at ? "revoked" : "active");
    return 0;
}

static int opkey_list(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct opkey_list l = {.json = o->json, .arr = json_array()};
    int ret = 1;

    if ((s = cli_open_store(c)) == NULL) {
        json_decref(l.arr);
        return 1;
    }
    if (store_operator_keys_list(s, list_one, &l) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    if (o->json)
        cli_print_json(l.arr);
    else if (l.n == 0)
        printf("no operator keys (konnect operator-key create --name NAME makes one)\n");
    ret = 0;
out:
    json_decref(l.arr);
    store_close(s);
    return ret;
}

static int opkey_revoke(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_key k;
    char tbuf[32];
    int ret = 1;

    if (o->npositional != 2) {
        fprintf(stderr, "konnect: operator-key revoke takes one key id (opk_...)\n");
        return 2;
    }
    if ((s = cli_open_store(c)) == NULL)
        return 1;
    int r = strlen(o->positional[1]) < STORE_ID_SIZE
                ? store_operator_key_find(s, o->positional[1], NULL, &k)
                : STORE_NOT_FOUND;
    if (r == STORE_NOT_FOUND) {
        fprintf(stderr, "konnect: no operator key %s (konnect operator-key list shows them)\n",
                cli_shown(o->positional[1]));
    } else if (r != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
    } else if (k.revoked_at != 0) {
        fprintf(stderr, "konnect: %s was already revoked at %s\n", k.id,
                kn_format_time(k.revoked_at, tbuf, sizeof(tbuf)));
        ret = 0;
    } else if (lifecycle_operator_key_revoke(s, &k, &cli_actor) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
    } else {
        /* Servers read operator keys from the store on every call: nothing to wait for. */
        printf("revoked %s\n", k.id);
        ret = 0;
    }
    store_close(s);
    return ret;
}

int cli_operator_key(struct kn_config *c, int argc, char **argv)
{
    static const struct subcommand cmds[] = {
        {"create", opkey_create}, {"list", opkey_list}, {"revoke", opkey_revoke}, {NULL, NULL}};
    return cli_run_group(c, argc, argv, "operator-key", operator_usage, cmds);
}
