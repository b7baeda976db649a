/* konnect user: set-password, password-link, two-factor-off. */
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

static const char user_usage[] =
    "Usage: konnect user set-password --email EMAIL < password-file\n"
    "       konnect user password-link --email EMAIL\n"
    "       konnect user two-factor-off --email EMAIL\n"
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
    "  two-factor-off Turn off a user's two-factor sign-in (one who lost both their app and\n"
    "                 their recovery codes, or after the server secret changed) and end every\n"
    "                 session of that user; they sign in with their password and set it up\n"
    "                 again.\n"
    "\n"
    "Options:\n"
    "  --email EMAIL     the user\n"
    "  --data-dir DIR    where the database lives (KONNECT_DATA_DIR, default ./var)\n";

static int user_two_factor_off(struct kn_config *c, const struct opts *o)
{
    struct store *s;
    struct store_user u;
    struct store_member m;
    int ret = 1;

    if ((s = cli_open_store(c)) == NULL)
        return 1;
    if (store_user_find(s, o->email, &u) != STORE_OK) {
        char echo[STORE_EMAIL_MAX + 16];
        fprintf(stderr, "konnect: no user %s\n",
                cli_shown(redact_copy(echo, sizeof(echo), o->email)));
        goto out;
    }
    if (u.totp_seed[0] == '\0') {
        fprintf(stderr, "konnect: %s has no two-factor sign-in\n", cli_shown(u.email));
        ret = 0;
        goto out;
    }
    if (store_user_totp_set(s, u.id, NULL, "", 0, NULL, 0) != STORE_OK ||
        store_sessions_delete_user(s, u.id) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    lifecycle_audit(s, store_member_first(s, u.id, &m) == STORE_OK ? m.account_id : "", &cli_actor,
                    "user.two_factor_off", NULL, "ok", u.email);
    printf("two-factor sign-in turned off for %s; their sessions have ended\n", cli_shown(u.email));
    ret = 0;
out:
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
    if ((s = cli_open_store(c)) == NULL)
        return 1;
    if (store_user_find(s, o->email, &u) != STORE_OK)
        fprintf(stderr, "konnect: no user %s\n",
                cli_shown(redact_copy(echo, sizeof(echo), o->email)));
    else if (cli_issue_password_link(c, s, &u, NULL, 0) == 0) {
        fprintf(stderr, "konnect: give this link to %s: it is single use and valid for 7 days\n",
                cli_shown(u.email));
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

    if (cli_parse_opts(c, argc, argv, &o, user_usage) != 0)
        return 2;
    if (o.help) {
        fputs(user_usage, stdout);
        return 0;
    }
    if (o.npositional == 0) {
        cli_usage_error(user_usage,
                        "user needs a command: set-password, password-link or two-factor-off");
        return 2;
    }
    if (o.npositional != 1 || (strcmp(o.positional[0], "set-password") != 0 &&
                               strcmp(o.positional[0], "password-link") != 0 &&
                               strcmp(o.positional[0], "two-factor-off") != 0)) {
        char echo[64];
        cli_usage_error(user_usage,
                        "unknown user command '%s': it has set-password, password-link and "
                        "two-factor-off",
                        cli_shown(redact_copy(echo, sizeof(echo), o.positional[0])));
        return 2;
    }
    if (o.email == NULL) {
        cli_usage_error(user_usage, "user %s needs --email EMAIL", o.positional[0]);
        return 2;
    }
    if (strcmp(o.positional[0], "password-link") == 0)
        return user_password_link(c, &o);
    if (strcmp(o.positional[0], "two-factor-off") == 0)
        return user_two_factor_off(c, &o);
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
    if ((s = cli_open_store(c)) == NULL) {
        sodium_memzero(pw, sizeof(pw));
        return 1;
    }
    if (store_user_find(s, o.email, &u) != STORE_OK) {
        char echo[STORE_EMAIL_MAX + 16];
        fprintf(stderr, "konnect: no user %s\n",
                cli_shown(redact_copy(echo, sizeof(echo), o.email)));
        goto out;
    }
    if (password_hash(pw, hash) != 0 || store_user_set_password(s, u.id, hash) != STORE_OK ||
        store_sessions_delete_user(s, u.id) != STORE_OK) {
        fprintf(stderr, "konnect: %s\n", cli_shown(store_errmsg(s)));
        goto out;
    }
    struct store_member m;
    lifecycle_audit(s, store_member_first(s, u.id, &m) == STORE_OK ? m.account_id : "", &cli_actor,
                    "user.password_reset", NULL, "ok", u.email);
    printf("password set for %s; their sessions have ended\n", cli_shown(u.email));
    ret = 0;
out:
    sodium_memzero(pw, sizeof(pw));
    sodium_memzero(hash, sizeof(hash));
    store_close(s);
    return ret;
}
