/* The key lifecycle on a real SQLite store: each change commits with its audit entry, a change
 * that fails is audited as failed, a roll keeps the expiry and settings, a revoked key cannot be
 * rolled, and no secret reaches the audit log. Also the conversion of a stored key into the key
 * table's form (keysync_key_to_rec), which every change application goes through. */
#include <sodium.h>
#include <stdlib.h>

#include "core/util.h"
#include "keys/keysync.h"
#include "keys/lifecycle.h"
#include "store/store.h"
#include "unit.h"

struct audit_seen {
    int n;
    char last_action[32], last_result[16];
    int secret_seen;
    const char *secret;
};

static int seen(void *ud, const struct store_audit *e)
{
    struct audit_seen *a = ud;
    if (a->n++ == 0) { /* Newest first. */
        kn_strlcpy(a->last_action, e->action, sizeof(a->last_action));
        kn_strlcpy(a->last_result, e->result, sizeof(a->last_result));
    }
    if (a->secret != NULL &&
        (strstr(e->target, a->secret + 8) != NULL || strstr(e->detail, a->secret + 8) != NULL))
        a->secret_seen = 1;
    return 0;
}

static struct audit_seen audit(struct store *s, const char *account_id, const char *secret)
{
    struct audit_seen a = {.secret = secret};
    CHECK(store_audit_list(s, account_id, 0, 100, seen, &a) == STORE_OK);
    return a;
}

int main(void)
{
    char dir[] = "/tmp/konnect-lifecycle-XXXXXX", path[128], err[256], sk[APIKEY_MAX_LEN + 1],
         sk2[APIKEY_MAX_LEN + 1];
    uint8_t secret[APIKEY_SECRET_LEN];
    struct store_account a;
    struct store_key k, k2, got;
    struct lifecycle_actor who = {"dev@example.com", "192.0.2.7"};
    struct keyrec_data d;

    CHECK(sodium_init() >= 0);
    randombytes_buf(secret, sizeof(secret));
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/konnect.db", dir);
    struct store *s = store_open(path, 1, err, sizeof(err));
    CHECK(s != NULL);
    CHECK(store_account_create(s, "dev@example.com", NULL, NULL, &a) == STORE_OK);

    struct lifecycle_spec spec = {.account_id = a.id,
                                  .name = "laptop",
                                  .mode = APIKEY_MODE_LIVE,
                                  .env = APIKEY_ENV_PRODUCTION,
                                  .expires_at = kn_unix_now() + 86400,
                                  .allowlist = "192.0.2.0/24"};
    CHECK(lifecycle_create(s, secret, &spec, &who, &k, sk) == STORE_OK);
    CHECK(strncmp(sk, "sk_live_", 8) == 0);
    struct audit_seen seen1 = audit(s, a.id, sk);
    CHECK(seen1.n == 1 && !strcmp(seen1.last_action, "key.create") &&
          !strcmp(seen1.last_result, "ok") && !seen1.secret_seen);

    /* A roll keeps everything but the secret, the expiry included. */
    CHECK(lifecycle_roll(s, secret, &k, 60, &who, &k2, sk2) == STORE_OK);
    CHECK(store_key_find(s, k2.id, NULL, &got) == STORE_OK);
    CHECK(got.expires_at == k.expires_at && !strcmp(got.ip_allowlist, "192.0.2.0/24") &&
          !strcmp(got.mode, "live") && !strcmp(got.name, "laptop"));
    CHECK(store_key_find(s, k.id, NULL, &got) == STORE_OK && !strcmp(got.rolled_to, k2.id));
    /* Rolling the rolled key again is refused, and nothing is audited as done. */
    CHECK(lifecycle_roll(s, secret, &got, 60, &who, &k2, sk2) == STORE_CONFLICT);
    struct audit_seen seen2 = audit(s, a.id, sk2);
    CHECK(seen2.n == 2 && !strcmp(seen2.last_action, "key.roll") && !seen2.secret_seen);

    /* Revocation: one change, one entry, in one transaction. */
    CHECK(store_key_find(s, k2.id, NULL, &got) == STORE_OK);
    CHECK(lifecycle_revoke(s, &got, &who) == STORE_OK);
    struct audit_seen seen3 = audit(s, a.id, NULL);
    CHECK(seen3.n == 3 && !strcmp(seen3.last_action, "key.revoke"));
    CHECK(store_key_find(s, k2.id, NULL, &got) == STORE_OK && got.revoked_at != 0);

    /* A change that fails (the key is gone) commits nothing and is audited as failed. */
    struct store_key ghost = got;
    strcpy(ghost.id, "key_ghost");
    CHECK(lifecycle_rename(s, &ghost, "renamed", &who) == STORE_NOT_FOUND);
    CHECK(strstr(store_errmsg(s), "no such key") != NULL);
    struct audit_seen seen4 = audit(s, a.id, NULL);
    CHECK(seen4.n == 4 && !strcmp(seen4.last_action, "key.rename") &&
          !strcmp(seen4.last_result, "failed"));

    /* The key table's form of a stored key: today's count becomes a daily cell, and a key of
     * an unknown mode is refused rather than guessed. */
    CHECK(keysync_key_to_rec(&got, 5, kn_unix_now(), &d) == 0);
    CHECK(d.mode == APIKEY_MODE_LIVE && d.revoked_at == got.revoked_at && d.day_cell != 0 &&
          !strcmp(d.id, got.id) && memcmp(d.hash, got.hash, APIKEY_HASH_LEN) == 0);
    CHECK(keysync_key_to_rec(&got, 0, kn_unix_now(), &d) == 0 && d.day_cell == 0);
    strcpy(got.mode, "gold");
    CHECK(keysync_key_to_rec(&got, 0, kn_unix_now(), &d) == -1);

    store_close(s);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return unit_result();
}
