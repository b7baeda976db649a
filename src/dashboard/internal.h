/* What the dashboard's files share: the dashboard itself, the signed-in user of a request, and
 * the helpers that read requests and write answers. Internal to src/dashboard/. */
#ifndef KN_DASHBOARD_INTERNAL_H
#define KN_DASHBOARD_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "core/errors.h"
#include "dashboard/dashboard.h"
#include "keys/lifecycle.h"
#include "store/store.h"

#define INVITE_TTL (7 * 86400)
#define PASSWORD_LINK_TTL (7 * 86400)
#define INVITE_MAX_FAILURES 5 /* Wrong passwords that void an invitation. */
#define INVITES_PENDING_MAX 20

struct dashboard {
    const struct kn_config *cfg;
    uint8_t secret[32];
    struct keysync *ks;
    struct store *store;
};

/* The signed-in user of a request. */
struct who {
    struct store_session session;
    struct store_user user;
    struct store_member member;
    struct lifecycle_actor actor;
};

/* The plans in force (the server's, reloaded on SIGHUP). */
const struct plans *dash_plans(struct dashboard *d);

/* Answers: a JSON document (taken over; NULL for no body), the error document for err (message
 * and param NULL: the defaults), and a store failure (logged, answered 500). */
void dash_reply_json(struct dash_response *res, int status, const char *reason, json_t *doc);
void dash_reply_error(struct dash_response *res, const struct dash_request *req, enum kn_err err,
                      const char *message, const char *param);
void dash_reply_store_error(struct dashboard *d, struct dash_response *res,
                            const struct dash_request *req);

/* Sets the session cookie to token, or clears it when token is NULL. */
void dash_set_cookie(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     const char *token);

/* Writes an audit entry at the dashboard's clock. */
void dash_audit(struct dashboard *d, const char *account_id, const char *actor, const char *ip,
                const char *action, const char *target, const char *result, const char *detail);

/* Parses the JSON object body. Returns it, or NULL after replying with the error. */
json_t *dash_body_object(const struct dash_request *req, struct dash_response *res);

/* Returns the string member `name`, or NULL: when it is absent and not required, or after
 * replying 400 and setting *failed (absent but required, or not a string). */
const char *dash_string_member(json_t *doc, const char *name, int required,
                               const struct dash_request *req, struct dash_response *res,
                               int *failed);

/* Reads an email member: present, a string, and shaped like an email address, checked before
 * anything looks it up or logs it. Returns it, or NULL after replying 400. */
const char *dash_email_member(json_t *doc, const struct dash_request *req,
                              struct dash_response *res);

/* Finds the signed-in user of req. Returns 0, or -1 when there is no valid session (nothing is
 * answered; the caller decides). */
int dash_session_of(struct dashboard *d, const struct dash_request *req, struct who *w);

/* Starts a session for user u in the account of membership m and replies with it. */
void dash_start_session(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, int status, const struct store_user *u,
                        const struct store_member *m);

/* The JSON document of a session: user, account, role and CSRF token. */
json_t *dash_session_doc(const struct store_user *u, const struct store_member *m,
                         const char *account_email, const char *csrf);

/* A route handler (dashboard.c's route table): param is the path's "*" segment, or "". */
typedef void dash_handler(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, struct who *w, const char *param);

/* Keys (keys.c) and records (billing.c). */
dash_handler dash_keys_list, dash_key_create, dash_key_roll, dash_key_revoke, dash_key_update;
dash_handler dash_audit_page, dash_usage, dash_invoices, dash_invoice;
/* Access (access.c): sign-up, sign-in, invitations, passwords. */
dash_handler dash_signup, dash_signin, dash_invite_accept, dash_password_set, dash_password_change;
/* Members (members.c): the list, invitations and their cancellation, removal. */
dash_handler dash_members, dash_invite, dash_invite_cancel, dash_member_remove;

#endif
