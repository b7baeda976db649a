/* An account's people: the member list, invitations (made and cancelled by the owner, at most
 * INVITES_PENDING_MAX pending) and the removal of members, which ends their sessions at once. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "auth/session.h"
#include "core/base62.h"
#include "core/util.h"
#include "dashboard/internal.h"

static int collect_member(void *ud, const struct store_member *m)
{
    json_array_append_new(ud, json_pack("{s:s, s:s, s:s, s:I}", "user_id", m->user_id, "email",
                                        m->email, "role", m->role, "joined",
                                        (json_int_t)m->created_at));
    return 0;
}

static int collect_invite(void *ud, const struct store_invite *i)
{
    json_array_append_new(ud, json_pack("{s:s, s:s, s:s, s:I, s:I}", "id", i->id, "email", i->email,
                                        "invited_by", i->invited_by, "created",
                                        (json_int_t)i->created_at, "expires",
                                        (json_int_t)i->expires_at));
    return 0;
}

void dash_members(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                  struct who *w, const char *param)
{
    (void)param;
    json_t *members = json_array(), *invites = json_array();

    if (store_members_list(d->store, w->member.account_id, collect_member, members) != STORE_OK ||
        store_invites_list(d->store, w->member.account_id, kn_unix_now(), collect_invite,
                           invites) != STORE_OK) {
        json_decref(members);
        json_decref(invites);
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK", json_pack("{s:o, s:o}", "data", members, "invites", invites));
}

void dash_invite(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                 struct who *w, const char *param)
{
    (void)param;
    struct store_invite inv;
    struct store_member m;
    struct store_user u;
    char token[SESSION_TOKEN_LEN + 1], url[96], msg[160];
    int64_t now = kn_unix_now(), pending = 0;
    json_t *doc;
    const char *email;

    /* A member an admin key let in would stay after the key's revocation: invitations are the
     * owner's (the dashboard) and the operator's. */
    if (w->api == WHO_ADMIN_KEY) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         "Invitations are made by the account's owner in the dashboard (Members): "
                         "a member invited with an admin key would outlive the key.",
                         NULL);
        return;
    }
    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((email = dash_email_member(doc, req, res)) == NULL)
        goto out;
    if (store_user_find(d->store, email, &u) == STORE_OK &&
        store_member_find(d->store, w->member.account_id, u.id, &m) == STORE_OK) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "This person is already a member of the account.", "email");
        goto out;
    }
    if (store_invites_pending(d->store, w->member.account_id, now, &pending) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    if (pending >= INVITES_PENDING_MAX) {
        snprintf(msg, sizeof(msg),
                 "This account has %d pending invitations, the most it may have. Cancel one "
                 "first.",
                 INVITES_PENDING_MAX);
        dash_reply_error(res, req, KN_ERR_LIMIT_REACHED, msg, NULL);
        goto out;
    }
    memset(&inv, 0, sizeof(inv));
    session_token_new(token);
    session_token_hash(d->secret, token, SESSION_TOKEN_LEN, inv.token_hash);
    base62_random_id(inv.id, "inv_", 20);
    kn_strlcpy(inv.account_id, w->member.account_id, sizeof(inv.account_id));
    kn_strlcpy(inv.email, email, sizeof(inv.email));
    kn_strlcpy(inv.invited_by, w->user.email, sizeof(inv.invited_by));
    inv.created_at = now;
    inv.expires_at = now + INVITE_TTL;
    if (store_invite_insert(d->store, &inv) != STORE_OK) {
        sodium_memzero(token, sizeof(token));
        dash_reply_store_error(d, res, req);
        goto out;
    }
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "member.invite", email, "ok",
               inv.id);
    /* The token travels in the fragment, which browsers never send to servers or in Referer. */
    snprintf(url, sizeof(url), "/invite#token=%s", token);
    sodium_memzero(token, sizeof(token));
    dash_reply_json(res, 201, "Created",
                    json_pack("{s:s, s:s, s:I}", "id", inv.id, "invite_url", url, "expires",
                              (json_int_t)inv.expires_at));
    sodium_memzero(url, sizeof(url));
out:
    json_decref(doc);
}

void dash_invite_cancel(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, const char *id)
{
    struct store_invite inv;
    int r = store_invite_cancel(d->store, w->member.account_id, id, kn_unix_now(), &inv);

    if (r == STORE_NOT_FOUND) {
        dash_reply_error(res, req, KN_ERR_NOT_FOUND, "No such pending invitation.", "id");
        return;
    }
    if (r != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "member.invite_cancel", inv.email,
               "ok", inv.id);
    dash_reply_json(res, 204, "No Content", NULL);
}

void dash_member_remove(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, const char *user_id)
{
    struct store_member m;

    if (store_member_find(d->store, w->member.account_id, user_id, &m) != STORE_OK) {
        dash_reply_error(res, req, KN_ERR_NOT_FOUND, "No such member.", "user_id");
        return;
    }
    if (strcmp(m.role, "owner") == 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "The owner cannot be removed from the account.", "user_id");
        return;
    }
    if (store_member_remove(d->store, m.account_id, m.user_id, kn_unix_now()) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_audit(d, m.account_id, w->user.email, req->ip, "member.remove", m.email, "ok",
               "their sessions in this account ended");
    dash_reply_json(res, 204, "No Content", NULL);
}
