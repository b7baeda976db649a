/* The management API (/v1/keys, /v1/usage, /v1/invoices, /v1/audit, /v1/members,
 * /v1/invitations; docs/openapi.yaml): the dashboard's own handlers, called with an admin key
 * standing for its account's owner instead of a browser's session, and lists paged with a cursor.
 *
 * The HTTP layer has already authenticated the admin key against the server's key table; here the
 * key is read again from the store, so that one revoked, expired or fenced off by its allowlist a
 * moment ago (on any server) is refused before anything is done with it. */
#include <arpa/inet.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ipnet.h"
#include "core/util.h"
#include "dashboard/internal.h"
#include "keys/apikey.h"

static const struct dash_route api_routes[] = {
    {"GET", "keys", OWNER, dash_keys_list, 0, "data", "id", 0, 0},
    {"POST", "keys", OWNER, dash_key_create, 0, NULL, NULL, 0, 0},
    {"GET", "keys/*", OWNER, dash_key_get, 0, NULL, NULL, 0, 0},
    {"POST", "keys/*", OWNER, dash_key_update, 0, NULL, NULL, 0, 0},
    {"PATCH", "keys/*", OWNER, dash_key_update, 0, NULL, NULL, 0, 0},
    {"POST", "keys/*/roll", OWNER, dash_key_roll, 0, NULL, NULL, 0, 0},
    {"POST", "keys/*/revoke", OWNER, dash_key_revoke, 0, NULL, NULL, 0, 0},
    {"GET", "usage", OWNER, dash_usage, 0, NULL, NULL, 0, 0},
    {"GET", "invoices", OWNER, dash_invoices, 0, "data", "month", 0, 0},
    {"GET", "invoices/*", OWNER, dash_invoice, 0, NULL, NULL, 0, 0},
    {"GET", "audit", OWNER, dash_audit_page, 0, "data", "id", 1, 0},
    {"GET", "members", OWNER, dash_members, 0, "data", "user_id", 0, 0},
    {"DELETE", "members/*", OWNER, dash_member_remove, 0, NULL, NULL, 0, 0},
    {"GET", "invitations", OWNER, dash_members, 0, "invites", "id", 0, 0},
    {"POST", "invitations", OWNER, dash_invite, 0, NULL, NULL, 0, 0},
    {"DELETE", "invitations/*", OWNER, dash_invite_cancel, 0, NULL, NULL, 0, 0},
};

int dash_limit_param(const struct dash_request *req, struct dash_response *res, long long *limit)
{
    char text[16];
    int found = dash_query_param(req, "limit", text, sizeof(text));

    if (found == 0)
        return 0;
    if (found > 0 && kn_parse_int(text, 1, API_PAGE_MAX, limit) == 0)
        return 0;
    dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                     "'limit' must be a whole number from 1 to 100.", "limit");
    return -1;
}

/* The cursor of a list item: its `member`, a string or an integer, as text. */
static int item_cursor(json_t *item, const char *member, char *out, size_t size)
{
    json_t *v = json_object_get(item, member);

    if (json_is_string(v))
        return snprintf(out, size, "%s", json_string_value(v)) < (int)size ? 0 : -1;
    if (json_is_integer(v))
        return snprintf(out, size, "%lld", (long long)json_integer_value(v)) < (int)size ? 0 : -1;
    return -1;
}

/* Turns the handler's answer (status 200, `list` an array) into a page of the list:
 * {"object": "list", "data": [...], "has_more": ..., "next_cursor": ...} with the answer's other
 * members beside it (a key list's month and currency). Lists of keys, members, invitations and
 * months are short (an account's), so they are read whole and cut here; the audit log pages in
 * the store (self_paged). */
void dash_api_page(const struct dash_route *r, const struct dash_request *req,
                   struct dash_response *res)
{
    long long limit = API_PAGE;
    char after[DASH_PARAM_MAX], cursor[DASH_PARAM_MAX];
    json_t *doc, *arr, *page, *next = json_null();
    size_t start = 0, n, i;
    int has_after;

    if (res->status != 200 || res->body == NULL ||
        (doc = json_loadb(res->body, res->body_len, 0, NULL)) == NULL)
        return;
    arr = json_incref(json_object_get(doc, r->list));
    json_object_del(doc, "data");
    json_object_del(doc, "invites");
    n = json_array_size(arr);
    if (r->self_paged) {
        json_t *nx = json_object_get(doc, "next");
        if (!json_is_null(nx) && nx != NULL &&
            item_cursor(doc, "next", cursor, sizeof(cursor)) == 0)
            next = json_string(cursor);
        json_object_del(doc, "next");
        page = json_incref(arr);
    } else {
        has_after = dash_query_param(req, "starting_after", after, sizeof(after));
        if (has_after != 0) {
            for (i = 0; i < n; i++)
                if (item_cursor(json_array_get(arr, i), r->cursor, cursor, sizeof(cursor)) == 0 &&
                    has_after > 0 && strcmp(cursor, after) == 0)
                    break;
            if (i == n) {
                json_decref(arr);
                json_decref(doc);
                dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                                 "'starting_after' must be the cursor of an item of this list "
                                 "(a next_cursor from the page before).",
                                 "starting_after");
                return;
            }
            start = i + 1;
        }
        if (dash_limit_param(req, res, &limit) != 0) {
            json_decref(arr);
            json_decref(doc);
            return;
        }
        page = json_array();
        for (i = start; i < n && i < start + (size_t)limit; i++)
            json_array_append(page, json_array_get(arr, i));
        if (i < n &&
            item_cursor(json_array_get(arr, i - 1), r->cursor, cursor, sizeof(cursor)) == 0)
            next = json_string(cursor);
    }
    json_decref(arr);
    json_object_set_new(doc, "object", json_string("list"));
    json_object_set_new(doc, "data", page);
    json_object_set_new(doc, "has_more", json_boolean(!json_is_null(next)));
    json_object_set_new(doc, "next_cursor", next);
    free(res->body);
    dash_reply_json(res, 200, "OK", doc);
}

/* Whether the client address ip (text; empty when the client came over a unix socket) is in the
 * allowlist text as the store holds it. One that cannot be read admits nobody, as in the key
 * table (keys/keysync.c). */
static int allowlist_admits(const char *allowlist, const char *ip)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    char err[256];
    struct iplist *l;
    int in;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return 0;
    if ((l = iplist_parse(allowlist, err, sizeof(err))) == NULL)
        return 0;
    in = l->n == 0 || iplist_contains(l, (struct sockaddr *)&ss);
    free(l);
    return in;
}

/* The admin key of the request, read from the store: it must still be an admin key that works
 * (not revoked, not expired, the client in its allowlist), and stands for its account's owner.
 * The key table let it through already, but it may not have heard of a change made on another
 * server yet (one it stopped waiting for). Returns 0, or -1 after replying 401. */
static int admin_of(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                    struct who *w)
{
    struct store_key k;
    int64_t now = kn_unix_now();
    int r = store_key_find(d->store, req->api_key_id, NULL, &k);

    memset(w, 0, sizeof(*w));
    if (r != STORE_OK && r != STORE_NOT_FOUND) {
        dash_reply_store_error(d, res, req);
        return -1;
    }
    if (r == STORE_NOT_FOUND || strcmp(k.mode, "admin") != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_API_KEY, NULL, NULL);
        return -1;
    }
    if (k.revoked_at != 0) {
        dash_reply_error(res, req, KN_ERR_API_KEY_REVOKED, NULL, NULL);
        return -1;
    }
    if (k.expires_at != 0 && k.expires_at <= now) {
        dash_reply_error(res, req, KN_ERR_API_KEY_EXPIRED, NULL, NULL);
        return -1;
    }
    if (k.ip_allowlist[0] != '\0' && !allowlist_admits(k.ip_allowlist, req->ip)) {
        dash_reply_error(res, req, KN_ERR_IP_NOT_ALLOWED, NULL, NULL);
        return -1;
    }
    struct store_account a;
    if ((r = store_account_find(d->store, k.account_id, &a)) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return -1;
    }
    if (a.suspended_at != 0) {
        dash_reply_error(res, req, KN_ERR_ACCOUNT_SUSPENDED, NULL, NULL);
        return -1;
    }
    w->api = WHO_ADMIN_KEY;
    kn_strlcpy(w->member.account_id, k.account_id, sizeof(w->member.account_id));
    kn_strlcpy(w->member.role, "owner", sizeof(w->member.role));
    snprintf(w->user.email, sizeof(w->user.email), "admin key %s", k.id);
    kn_strlcpy(w->member.email, w->user.email, sizeof(w->member.email));
    w->actor.name = w->user.email;
    w->actor.ip = req->ip;
    return 0;
}

/* ---- Idempotency-Key ------------------------------------------------------------------------
 * As Stripe has it: a POST with an Idempotency-Key runs once; the same key with the same request
 * (method, path, query and body, the body compared as JSON) gets the first answer again, with
 * Idempotent-Replayed: true and without the secrets it carried; the same key with another request
 * is 409 idempotency_error, and so is one whose first is still running. Only a successful (2xx)
 * answer is kept: after a refusal or a failure the key is free for the retry. Keys are per
 * account and kept a day. */

#define IDEM_STALE_S 120 /* A first request unfinished for this long died with its server. */

static void fingerprint(const struct dash_request *req, uint8_t out[crypto_hash_sha256_BYTES])
{
    crypto_hash_sha256_state st;
    json_t *doc = json_loadb(req->body != NULL ? req->body : "", req->body_len, 0, NULL);
    char *canonical = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)req->method, strlen(req->method) + 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)req->path, strlen(req->path) + 1);
    if (req->query != NULL)
        crypto_hash_sha256_update(&st, (const unsigned char *)req->query, strlen(req->query));
    crypto_hash_sha256_update(&st, (const unsigned char *)"", 1);
    if (canonical != NULL)
        crypto_hash_sha256_update(&st, (const unsigned char *)canonical, strlen(canonical));
    else if (req->body != NULL)
        crypto_hash_sha256_update(&st, (const unsigned char *)req->body, req->body_len);
    crypto_hash_sha256_final(&st, out);
    free(canonical);
    json_decref(doc);
}

/* Claims the request's Idempotency-Key for account. Returns 1 when the request is to run (the
 * key is now its own), or 0 after answering: the replay of the first answer, a conflict, a bad
 * key or a store failure. */
int dash_idem_claim(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                    const char *account)
{
    const char *key = req->idempotency_key;
    size_t len = strlen(key);
    uint8_t hash[crypto_hash_sha256_BYTES];
    struct store_idem x;
    int64_t now = kn_unix_now();
    int r = STORE_RETRY;

    if (len == 0 || len > STORE_IDEM_KEY_MAX) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "An Idempotency-Key is 1 to 255 characters, such as a UUID.",
                         "Idempotency-Key");
        return 0;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] > 0x7e) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                             "An Idempotency-Key is printable ASCII, such as a UUID.",
                             "Idempotency-Key");
            return 0;
        }
    fingerprint(req, hash);
    for (int attempt = 0; attempt < 2 && r == STORE_RETRY; attempt++)
        r = store_idem_begin(d->store, account, key, hash, now, now - IDEM_STALE_S, &x);
    if (r == STORE_OK)
        return 1;
    if (r != STORE_CONFLICT) {
        dash_reply_store_error(d, res, req);
        return 0;
    }
    if (sodium_memcmp(x.request_hash, hash, sizeof(hash)) != 0) {
        dash_reply_error(res, req, KN_ERR_IDEMPOTENCY,
                         "This Idempotency-Key was used for another request (another method, "
                         "path or body). Use a new key for a new request.",
                         NULL);
    } else if (x.status == 0 || x.body == NULL) {
        dash_reply_error(res, req, KN_ERR_IDEMPOTENCY,
                         "The first request with this Idempotency-Key is still being answered. "
                         "Retry in a second to get its answer.",
                         NULL);
        res->retry_after = 1;
    } else {
        res->status = x.status;
        res->reason = x.status == 201 ? "Created" : "OK";
        res->body = x.body;
        res->body_len = strlen(x.body);
        res->replayed = 1;
        return 0;
    }
    free(x.body);
    return 0;
}

/* What is kept of a first answer for its replays: everything but the secrets it showed once (a
 * new key's secret, an invitation's link), each replaced by null and a note saying so. */
static char *idem_answer(const struct dash_response *res)
{
    static const char *const secrets[] = {"secret", "invite_url", "password_link"};
    json_t *doc = json_loadb(res->body != NULL ? res->body : "{}",
                             res->body != NULL ? res->body_len : 2, 0, NULL);
    char note[48], *out;

    if (doc == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        json_t *v = json_object_get(doc, secrets[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (json_is_string(v))
            sodium_memzero((char *)json_string_value(v), json_string_length(v));
        json_object_set_new(doc, secrets[i], json_null());
        snprintf(note, sizeof(note), "%s_note", secrets[i]);
        json_object_set_new(doc, note,
                            json_string("Shown only in the first answer to this "
                                        "Idempotency-Key, never again."));
    }
    out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return out;
}

/* After the request ran: its answer kept for replays when it succeeded, else the key freed. */
void dash_idem_settle(struct dashboard *d, const struct dash_request *req,
                      const struct dash_response *res, const char *account)
{
    char *kept = res->status >= 200 && res->status < 300 ? idem_answer(res) : NULL;
    int r = kept != NULL
                ? store_idem_finish(d->store, account, req->idempotency_key, res->status, kept)
                : store_idem_release(d->store, account, req->idempotency_key);

    if (r != STORE_OK)
        fprintf(stderr, "konnect: cannot settle an idempotency key (%s): %s\n", req->request_id,
                store_errmsg(d->store));
    free(kept);
}

void dash_api_dispatch(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct dash_api *api)
{
    const struct dash_route *r;
    size_t root = strlen(api->root);
    char param[DASH_PARAM_MAX], allowed[64], msg[160];
    struct who w;

    if (strncmp(req->path, api->root, root) != 0 ||
        ((r = dash_find_route(api->routes, api->nroutes, req->method, req->path + root, param,
                              allowed, sizeof(allowed))) == NULL &&
         allowed[0] == '\0')) {
        dash_reply_error(res, req, KN_ERR_NOT_FOUND, NULL, NULL);
        return;
    }
    if (r == NULL) {
        snprintf(msg, sizeof(msg), "%.64s only accepts %s.", req->path, allowed);
        dash_reply_error(res, req, KN_ERR_METHOD_NOT_ALLOWED, msg, NULL);
        kn_strlcpy(res->allow, allowed, sizeof(res->allow));
        return;
    }
    if (api->who_of(d, req, res, &w) != 0)
        return;
    const char *scope = api->scope != NULL ? api->scope : w.member.account_id;
    int idem = req->idempotency_key != NULL && strcmp(req->method, "POST") == 0;
    if (idem && !dash_idem_claim(d, req, res, scope))
        return;
    r->fn(d, req, res, &w, param);
    if (idem)
        dash_idem_settle(d, req, res, scope);
    if (r->list != NULL)
        dash_api_page(r, req, res);
}

void dash_manage_handle(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res)
{
    static const struct dash_api api = {"/v1/", api_routes,
                                        sizeof(api_routes) / sizeof(api_routes[0]), admin_of, NULL};
    dash_api_dispatch(d, req, res, &api);
}
