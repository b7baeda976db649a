/* The one table that maps Konnect's error codes to an HTTP status, a public error type and code,
 * and a default message. Handlers name an enum value; they never invent a status inline. */
#ifndef KN_CORE_ERRORS_H
#define KN_CORE_ERRORS_H

#include <stddef.h>

enum kn_err {
    KN_OK = 0,
    KN_ERR_MISSING_API_KEY,
    KN_ERR_INVALID_API_KEY,
    KN_ERR_API_KEY_REVOKED,
    KN_ERR_API_KEY_EXPIRED,
    KN_ERR_IP_NOT_ALLOWED,
    KN_ERR_INSUFFICIENT_SCOPE,
    KN_ERR_MODEL_NOT_ALLOWED,
    KN_ERR_ACCOUNT_SUSPENDED,
    KN_ERR_RATE_LIMITED,
    KN_ERR_INVALID_JSON,
    KN_ERR_INVALID_PARAMETER,
    KN_ERR_MISSING_PARAMETER,
    KN_ERR_UNKNOWN_PARAMETER,
    KN_ERR_UNSUPPORTED_PARAMETER,
    KN_ERR_MODEL_NOT_FOUND,
    KN_ERR_PLAN_UNAVAILABLE,
    KN_ERR_UNSUPPORTED_MEDIA_TYPE,
    KN_ERR_METHOD_NOT_ALLOWED,
    KN_ERR_NOT_FOUND,
    KN_ERR_BODY_TOO_LARGE,
    KN_ERR_HEADERS_TOO_LARGE,
    KN_ERR_BAD_REQUEST,
    KN_ERR_EXPECTATION_FAILED,
    KN_ERR_TOO_MANY_CONNECTIONS,
    KN_ERR_MODEL_BACKEND_ERROR,
    KN_ERR_MODEL_BACKEND_TIMEOUT,
    KN_ERR_MODEL_BACKEND_REJECTED,
    KN_ERR_MODEL_BACKEND_OVERLOADED,
    KN_ERR_INSUFFICIENT_QUOTA,
    KN_ERR_TOO_MANY_CONCURRENT,
    KN_ERR_BILLING_UNAVAILABLE,
    KN_ERR_QUOTA_UNAVAILABLE,
    KN_ERR_CLIENT_CLOSED,
    KN_ERR_NOT_READY,
    KN_ERR_SHUTTING_DOWN,
    KN_ERR_BROWSER_NOT_ALLOWED,
    KN_ERR_NOT_SIGNED_IN,
    KN_ERR_CSRF_FAILED,
    KN_ERR_INVALID_CREDENTIALS,
    KN_ERR_TOO_MANY_ATTEMPTS,
    KN_ERR_SIGNUP_CLOSED,
    KN_ERR_EMAIL_TAKEN,
    KN_ERR_INVITE_INVALID,
    KN_ERR_KEY_NOT_ACTIVE,
    KN_ERR_IDEMPOTENCY,
    KN_ERR_PASSWORD_NOT_SET,
    KN_ERR_INVITE_FOR_ANOTHER_USER,
    KN_ERR_LINK_INVALID,
    KN_ERR_OWNER_REQUIRED,
    KN_ERR_TWO_FACTOR_CODE_REQUIRED,
    KN_ERR_INVALID_TWO_FACTOR_CODE,
    KN_ERR_TWO_FACTOR_REQUIRED,
    KN_ERR_TWO_FACTOR_STATE,
    KN_ERR_LIMIT_REACHED,
    KN_ERR_DASHBOARD_BUSY,
    KN_ERR_MISDIRECTED,
    KN_ERR_INTERNAL,
    KN_ERR__COUNT
};

/* One row of the table. */
struct kn_error_def {
    int status;          /* HTTP status code. */
    const char *reason;  /* HTTP reason phrase. */
    const char *type;    /* Public error type: authentication_error, invalid_request_error, ... */
    const char *code;    /* Public error code, stable across releases: invalid_api_key, ... */
    const char *message; /* Default human-readable message. */
};

/* Returns the table row for err (never NULL; unknown values map to KN_ERR_INTERNAL). */
const struct kn_error_def *kn_error_def(enum kn_err err);

/* Builds the public error document {"error": {"type", "code", "message", "param",
 * "request_id"}} with message (NULL: the table's) and param (NULL: null). A message or param that
 * is not valid UTF-8 is replaced by the defaults. Returns a string the caller frees with free()
 * and writes its length to *len. */
char *kn_error_json(enum kn_err err, const char *message, const char *param, const char *request_id,
                    size_t *len);

#endif
