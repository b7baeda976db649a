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

/* Who makes a request: the signed-in user (api WHO_SESSION); for the management API, an admin key
 * standing for its account's owner (WHO_ADMIN_KEY); for the operator API, an operator key acting
 * on one account as its owner would (WHO_OPERATOR). For the two APIs user.email names the key and
 * session is empty. */
enum { WHO_SESSION = 0, WHO_ADMIN_KEY = 1, WHO_OPERATOR = 2 };
struct who {
    struct store_session session;
    struct store_user user;
    struct store_member member;
    struct lifecycle_actor actor;
    int api;
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
json_t *dash_session_doc(struct dashboard *d, const struct store_user *u,
                         const struct store_member *m, const char *account_email, const char *csrf);
/* {"enabled", "pending", "recovery_codes_left", "required"}: the user's two-factor sign-in, and
 * whether the account requires it. */
json_t *dash_two_factor_doc(struct dashboard *d, const struct store_user *u,
                            const char *account_id);

/* A route handler (dashboard.c's route table): param is the path's "*" segment, or "". */
typedef void dash_handler(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, struct who *w, const char *param);

enum dash_access {
    OPEN,     /* No session: the request must come from the dashboard's own origin. */
    OPTIONAL, /* A session when the request has one (then with its CSRF token), else OPEN. */
    SIGNED_IN,
    OWNER, /* Signed in as the account's owner. */
};

#define DASH_PARAM_MAX 64

/* A route: the dashboard's (dashboard.c) and the management API's (manage.c). */
struct dash_route {
    const char *method;
    const char *path; /* Under the API's root; one "*" stands for one path segment (param). */
    enum dash_access access;
    dash_handler *fn;
    int hashes;       /* 1 when the call hashes or checks a password (the dashboard's slow lane). */
    const char *list; /* Management API: the member of the answer that is a paged list, or NULL. */
    const char *cursor; /* The member of each item that is its cursor. */
    int self_paged;     /* 1 when fn reads limit and starting_after itself (the audit log). */
    /* 1 for the calls a user may make before turning on two-factor sign-in that their account
     * requires (the session, signing out, turning it on, the password). */
    int before_two_factor;
};

/* The route of table matching `method path`, or NULL; *allowed gets the methods of the routes with
 * that path ("" when none has it: not found). */
const struct dash_route *dash_find_route(const struct dash_route *table, size_t n,
                                         const char *method, const char *path,
                                         char param[DASH_PARAM_MAX], char *allowed,
                                         size_t allowed_size);

/* Copies the query parameter `name` of req to out. Returns 1, 0 when it is absent, or -1 when it
 * does not fit. */
int dash_query_param(const struct dash_request *req, const char *name, char *out, size_t size);

#define API_PAGE 20      /* The management API's lists: items per page unless ?limit= says. */
#define API_PAGE_MAX 100 /* The most ?limit= may ask for. */

/* Reads ?limit=N (1 to API_PAGE_MAX) into *limit, which keeps its value when there is none.
 * Returns 0, or -1 after replying 400. */
int dash_limit_param(const struct dash_request *req, struct dash_response *res, long long *limit);

/* Makes a change to keys or accounts in force on every running server before the answer (see
 * keys.c). Returns what the answer says of it: {"servers": N, "lagging": [...]}. */
json_t *dash_sync_changes(struct dashboard *d);

/* What the management and the operator APIs share (manage.c). page cuts the handler's answer of
 * route r into a page of its list (r->list). idem_claim claims the request's Idempotency-Key in
 * scope (an account's id, or "operator") and returns 1 when the request is to run, or 0 after
 * answering (the replay, a conflict, a bad key); idem_settle keeps the answer of a request that
 * ran, or frees the key. */
void dash_api_page(const struct dash_route *r, const struct dash_request *req,
                   struct dash_response *res);
int dash_idem_claim(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                    const char *scope);
void dash_idem_settle(struct dashboard *d, const struct dash_request *req,
                      const struct dash_response *res, const char *scope);

/* An API of routes under root (the management API's, the operator API's): who_of finds the key
 * a request comes with and who it stands for (0, or -1 after answering); idempotency keys are
 * kept in scope, or in the account's when scope is NULL. dispatch answers 404 and 405, then runs
 * the route's handler with the key's idempotency, and pages list answers. */
struct dash_api {
    const char *root;
    const struct dash_route *routes;
    size_t nroutes;
    int (*who_of)(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                  struct who *w);
    const char *scope;
};
void dash_api_dispatch(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct dash_api *api);

/* Answers an operator API request (operator.c): its operator key found in the store by hash, then
 * the route's handler. */
void dash_operator_handle(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res);

/* Answers a management API request (manage.c): its admin key read again from the store, then the
 * route's handler acting as the account's owner. */
void dash_manage_handle(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res);

/* Keys (keys.c) and records (billing.c). */
dash_handler dash_keys_list, dash_key_get, dash_key_create, dash_key_roll, dash_key_revoke,
    dash_key_update;
dash_handler dash_audit_page, dash_usage, dash_invoices, dash_invoice;
/* Access (access.c): sign-up, sign-in, invitations, passwords. */
dash_handler dash_signup, dash_signin, dash_invite_accept, dash_password_set, dash_password_change;
dash_handler dash_two_factor_setup, dash_two_factor_enable, dash_two_factor_disable,
    dash_two_factor_codes, dash_account_two_factor;

/* What a user's second factor says of a code (dashboard/twofactor.c): the user has none (OFF), the
 * code is right and now used (OK), no code was given (MISSING), or it is wrong, expired or used
 * (WRONG); STORE when the store failed. how gets what kind of code it was. */
enum dash_tf { DASH_TF_OFF, DASH_TF_OK, DASH_TF_MISSING, DASH_TF_WRONG, DASH_TF_STORE };
enum dash_tf dash_two_factor_check(struct dashboard *d, const struct store_user *u,
                                   const char *code, char *how, size_t howsize);

/* Checks the signed-in user's "password" in doc and, with code_too, their "code" when they have
 * two-factor sign-in on: throttled and audited as `action` like a sign-in. Returns 1, or 0 after
 * replying. */
int dash_reauthenticate(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, json_t *doc, int code_too,
                        const char *action);
/* Members (members.c): the list, invitations and their cancellation, removal. */
dash_handler dash_members, dash_invite, dash_invite_cancel, dash_member_remove;

#endif
