/* The errors table and the JSON error document; see errors.h. */
#include "core/errors.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

static const struct kn_error_def defs[KN_ERR__COUNT] = {
    [KN_OK] = {200, "OK", "", "", ""},
    [KN_ERR_MISSING_API_KEY] = {401, "Unauthorized", "authentication_error", "missing_api_key",
                                "No API key provided. Send it in the Authorization header: "
                                "\"Authorization: Bearer sk_live_...\"."},
    [KN_ERR_INVALID_API_KEY] = {401, "Unauthorized", "authentication_error", "invalid_api_key",
                                "Invalid API key provided."},
    [KN_ERR_API_KEY_REVOKED] = {401, "Unauthorized", "authentication_error", "api_key_revoked",
                                "This API key has been revoked."},
    [KN_ERR_API_KEY_EXPIRED] = {401, "Unauthorized", "authentication_error", "api_key_expired",
                                "This API key has expired."},
    [KN_ERR_IP_NOT_ALLOWED] = {401, "Unauthorized", "authentication_error", "ip_not_allowed",
                               "This API key cannot be used from your IP address: it is outside "
                               "the key's IP allowlist."},
    [KN_ERR_ACCOUNT_SUSPENDED] = {403, "Forbidden", "permission_error", "account_suspended",
                                  "This account is suspended: none of its API keys work until "
                                  "the operator reinstates it."},
    [KN_ERR_INSUFFICIENT_SCOPE] = {403, "Forbidden", "permission_error", "insufficient_scope",
                                   "This kind of API key cannot call this route."},
    [KN_ERR_MODEL_NOT_ALLOWED] = {403, "Forbidden", "permission_error", "model_not_allowed",
                                  "This API key is restricted to other models."},
    [KN_ERR_RATE_LIMITED] = {429, "Too Many Requests", "rate_limit_error", "rate_limited",
                             "Too many requests for this API key."},
    [KN_ERR_INVALID_JSON] = {400, "Bad Request", "invalid_request_error", "invalid_json",
                             "The request body is not valid JSON."},
    [KN_ERR_INVALID_PARAMETER] = {400, "Bad Request", "invalid_request_error", "invalid_parameter",
                                  "A parameter has the wrong type or value."},
    [KN_ERR_MISSING_PARAMETER] = {400, "Bad Request", "invalid_request_error", "missing_parameter",
                                  "A required parameter is missing."},
    [KN_ERR_UNKNOWN_PARAMETER] = {400, "Bad Request", "invalid_request_error", "unknown_parameter",
                                  "Unknown parameter."},
    [KN_ERR_UNSUPPORTED_PARAMETER] = {400, "Bad Request", "invalid_request_error",
                                      "unsupported_parameter",
                                      "This parameter is not available on this account's plan."},
    [KN_ERR_MODEL_NOT_FOUND] = {404, "Not Found", "invalid_request_error", "model_not_found",
                                "The model does not exist or this account's plan cannot use it."},
    [KN_ERR_PLAN_UNAVAILABLE] = {503, "Service Unavailable", "api_error", "plan_unavailable",
                                 "This account's plan is not defined on this server, so live "
                                 "requests are refused until the operator fixes it. Test keys "
                                 "still work."},
    [KN_ERR_UNSUPPORTED_MEDIA_TYPE] = {415, "Unsupported Media Type", "invalid_request_error",
                                       "unsupported_media_type",
                                       "Send the request body as JSON with "
                                       "\"Content-Type: application/json\"."},
    [KN_ERR_METHOD_NOT_ALLOWED] = {405, "Method Not Allowed", "invalid_request_error",
                                   "method_not_allowed", "This method is not allowed here."},
    [KN_ERR_NOT_FOUND] = {404, "Not Found", "invalid_request_error", "not_found",
                          "Unrecognized request URL."},
    [KN_ERR_BODY_TOO_LARGE] = {413, "Payload Too Large", "invalid_request_error",
                               "request_too_large", "The request body is too large."},
    [KN_ERR_HEADERS_TOO_LARGE] = {431, "Request Header Fields Too Large", "invalid_request_error",
                                  "headers_too_large", "The request headers are too large."},
    [KN_ERR_BAD_REQUEST] = {400, "Bad Request", "invalid_request_error", "bad_request",
                            "The request could not be parsed."},
    [KN_ERR_EXPECTATION_FAILED] = {417, "Expectation Failed", "invalid_request_error",
                                   "expectation_failed", "Unsupported Expect header."},
    [KN_ERR_TOO_MANY_CONNECTIONS] = {503, "Service Unavailable", "api_error",
                                     "too_many_connections",
                                     "The server is at its connection limit; retry shortly."},
    [KN_ERR_MODEL_BACKEND_ERROR] = {502, "Bad Gateway", "api_error", "model_backend_error",
                                    "The model backend failed to answer. This request was not "
                                    "billed."},
    [KN_ERR_MODEL_BACKEND_TIMEOUT] = {504, "Gateway Timeout", "api_error", "model_backend_timeout",
                                      "The model backend did not answer in time. This request "
                                      "was not billed."},
    [KN_ERR_MODEL_BACKEND_REJECTED] = {400, "Bad Request", "invalid_request_error",
                                       "model_backend_rejected",
                                       "The model backend rejected the request. This request "
                                       "was not billed."},
    [KN_ERR_MODEL_BACKEND_OVERLOADED] = {503, "Service Unavailable", "api_error",
                                         "model_backend_overloaded",
                                         "The model backend is overloaded; retry shortly. This "
                                         "request was not billed."},
    [KN_ERR_INSUFFICIENT_QUOTA] = {429, "Too Many Requests", "insufficient_quota",
                                   "insufficient_quota", "The account's monthly quota is used up."},
    [KN_ERR_TOO_MANY_CONCURRENT] = {429, "Too Many Requests", "rate_limit_error",
                                    "too_many_concurrent_requests",
                                    "This key has too many requests in flight; retry when one "
                                    "finishes."},
    [KN_ERR_QUOTA_UNAVAILABLE] = {503, "Service Unavailable", "api_error", "quota_unavailable",
                                  "This account's quotas cannot be checked right now (the "
                                  "cluster's counters are unreachable), so its live requests "
                                  "are refused. This request was not billed; retry shortly."},
    [KN_ERR_BILLING_UNAVAILABLE] = {503, "Service Unavailable", "api_error", "billing_unavailable",
                                    "The request could not be recorded for billing, so its "
                                    "answer was withheld. It was not billed; retry shortly."},
    [KN_ERR_CLIENT_CLOSED] = {499, "Client Closed Request", "invalid_request_error",
                              "client_closed_request",
                              "The client closed the connection before the answer was ready. "
                              "This request was not billed."},
    [KN_ERR_NOT_READY] = {503, "Service Unavailable", "api_error", "not_ready",
                          "The store is not reachable."},
    [KN_ERR_SHUTTING_DOWN] = {503, "Service Unavailable", "api_error", "server_shutting_down",
                              "The server is shutting down; retry the request."},
    [KN_ERR_BROWSER_NOT_ALLOWED] =
        {403, "Forbidden", "invalid_request_error", "browser_not_allowed",
         "Secret API keys are for server-side code only, so this API "
         "does not answer browsers' cross-origin requests. Call it from "
         "your server and keep the key in an environment variable there."},
    [KN_ERR_NOT_SIGNED_IN] = {401, "Unauthorized", "authentication_error", "not_signed_in",
                              "Sign in to continue."},
    [KN_ERR_CSRF_FAILED] = {403, "Forbidden", "invalid_request_error", "csrf_failed",
                            "This request did not come from the dashboard (missing or wrong "
                            "CSRF token, or another origin). Reload the page and try again."},
    [KN_ERR_INVALID_CREDENTIALS] = {401, "Unauthorized", "authentication_error",
                                    "invalid_credentials", "Wrong email or password."},
    [KN_ERR_TOO_MANY_ATTEMPTS] = {429, "Too Many Requests", "rate_limit_error", "too_many_attempts",
                                  "Too many failed sign-in attempts. Wait before trying again."},
    [KN_ERR_SIGNUP_CLOSED] = {403, "Forbidden", "invalid_request_error", "signup_closed",
                              "Sign-up is closed on this server. Ask an account owner for an "
                              "invitation."},
    [KN_ERR_EMAIL_TAKEN] = {409, "Conflict", "invalid_request_error", "email_taken",
                            "An account with this email already exists. Sign in instead."},
    [KN_ERR_INVITE_INVALID] = {400, "Bad Request", "invalid_request_error", "invite_invalid",
                               "This invitation link is invalid, expired or already used."},
    [KN_ERR_KEY_NOT_ACTIVE] = {409, "Conflict", "invalid_request_error", "key_not_active",
                               "This key is revoked, expired or already rolled."},
    [KN_ERR_IDEMPOTENCY] = {409, "Conflict", "invalid_request_error", "idempotency_error",
                            "This Idempotency-Key belongs to another request."},
    [KN_ERR_PASSWORD_NOT_SET] = {403, "Forbidden", "invalid_request_error", "password_not_set",
                                 "This user has no password yet, and an invitation cannot give it "
                                 "one. Choose a password with the set-password link from the "
                                 "operator first, then open this invitation again."},
    [KN_ERR_INVITE_FOR_ANOTHER_USER] = {403, "Forbidden", "invalid_request_error",
                                        "invite_for_another_user",
                                        "This invitation is for another email address. Sign "
                                        "out, then open the link again."},
    [KN_ERR_LINK_INVALID] = {400, "Bad Request", "invalid_request_error", "link_invalid",
                             "This set-password link is invalid, expired or already used. Ask "
                             "the operator for a new one."},
    [KN_ERR_OWNER_REQUIRED] = {403, "Forbidden", "invalid_request_error", "owner_required",
                               "Only the account's owner can do this."},
    [KN_ERR_TWO_FACTOR_CODE_REQUIRED] = {401, "Unauthorized", "authentication_error",
                                         "two_factor_code_required",
                                         "This user signs in with a code from an authenticator "
                                         "app too: give the 6-digit code (or a recovery code) "
                                         "as \"code\"."},
    [KN_ERR_INVALID_TWO_FACTOR_CODE] = {401, "Unauthorized", "authentication_error",
                                        "invalid_two_factor_code",
                                        "That code is wrong, expired or already used. Enter the "
                                        "current code from your authenticator app, or an unused "
                                        "recovery code."},
    [KN_ERR_TWO_FACTOR_REQUIRED] = {403, "Forbidden", "invalid_request_error",
                                    "two_factor_required",
                                    "This account's owner requires two-factor sign-in: turn it on "
                                    "in Settings > Security first."},
    [KN_ERR_TWO_FACTOR_STATE] = {409, "Conflict", "invalid_request_error", "two_factor_conflict",
                                 "Two-factor sign-in is not in the state this call needs."},
    [KN_ERR_LIMIT_REACHED] = {403, "Forbidden", "invalid_request_error", "limit_reached",
                              "This account has reached a limit."},
    [KN_ERR_DASHBOARD_BUSY] = {503, "Service Unavailable", "api_error", "dashboard_busy",
                               "The dashboard has too many requests waiting; retry shortly."},
    [KN_ERR_MISDIRECTED] = {421, "Misdirected Request", "invalid_request_error",
                            "misdirected_request",
                            "The dashboard answers only at its public address. Open it there."},
    [KN_ERR_INTERNAL] = {500, "Internal Server Error", "api_error", "internal_error",
                         "An internal error occurred."},
};

const struct kn_error_def *kn_error_def(enum kn_err err)
{
    if ((int)err < 0 || err >= KN_ERR__COUNT)
        err = KN_ERR_INTERNAL;
    return &defs[err];
}

/* Each default message as the body of a JSON string, escaped once. */
static char *escaped_defaults[KN_ERR__COUNT];
static pthread_once_t escaped_once = PTHREAD_ONCE_INIT;

static void escape_defaults(void)
{
    for (int i = 0; i < KN_ERR__COUNT; i++) {
        json_t *str = json_string(defs[i].message);
        char *q = json_dumps(str, JSON_ENCODE_ANY);
        if (q == NULL)
            kn_fatal("cannot escape error message %d", i);
        q[strlen(q) - 1] = '\0'; /* drop the closing quote */
        escaped_defaults[i] = kn_strdup(q + 1);
        free(q);
        json_decref(str);
    }
}

char *kn_error_json(enum kn_err err, const char *message, const char *param, const char *request_id,
                    size_t *len)
{
    const struct kn_error_def *d = kn_error_def(err);

    if (message == NULL && param == NULL) {
        /* The common case (a bad or unknown key): no parameter, the table's message, escaped
         * once; this is the hot path of rejection. */
        pthread_once(&escaped_once, escape_defaults);
        const char *m = escaped_defaults[d - defs];
        size_t size = 96 + strlen(d->type) + strlen(d->code) + strlen(m) + strlen(request_id);
        char *out = kn_malloc(size);
        int n = snprintf(out, size,
                         "{\"error\":{\"type\":\"%s\",\"code\":\"%s\",\"message\":\"%s\","
                         "\"param\":null,\"request_id\":\"%s\"}}",
                         d->type, d->code, m, request_id);
        if (n < 0 || (size_t)n >= size)
            kn_fatal("error document too long");
        *len = (size_t)n;
        return out;
    }
    json_t *doc =
        json_pack("{s:{s:s, s:s, s:s, s:o, s:s}}", "error", "type", d->type, "code", d->code,
                  "message", message != NULL ? message : d->message, "param",
                  param != NULL ? json_string(param) : json_null(), "request_id", request_id);
    char *out;

    if (doc == NULL) /* Text that is not valid UTF-8 cannot be sent: fall back to the default. */
        doc = json_pack("{s:{s:s, s:s, s:s, s:n, s:s}}", "error", "type", d->type, "code", d->code,
                        "message", d->message, "param", "request_id", request_id);
    if (doc == NULL || (out = json_dumps(doc, JSON_COMPACT)) == NULL)
        kn_fatal("cannot build error document");
    json_decref(doc);
    *len = strlen(out);
    return out;
}
