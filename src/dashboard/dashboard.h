/* The dashboard's JSON API (/dashboard/api/...; see docs/dashboard-api.md): sign-up, sign-in,
 * sessions with CSRF protection, API keys, members, the audit log, usage and invoices.
 *
 * It does blocking work (the store, Argon2id), so it runs on its own thread, never on an event
 * loop: the HTTP layer copies each request into a struct dash_request, hands it to
 * dashboard_handle on that thread, and sends back the struct dash_response. */
#ifndef KN_DASHBOARD_DASHBOARD_H
#define KN_DASHBOARD_DASHBOARD_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "keys/keysync.h"

/* One request, with everything copied out of the HTTP layer. Strings are NUL-terminated and
 * owned by the caller; absent headers are NULL. */
struct dash_request {
    const char *method;
    const char *path;  /* Without the query string. */
    const char *query; /* After '?', or NULL. */
    const char *body;
    size_t body_len;
    const char *cookie;       /* The Cookie header. */
    const char *csrf_token;   /* The X-CSRF-Token header. */
    const char *origin;       /* The Origin header. */
    const char *host;         /* The Host header (the authority for HTTP/2). */
    const char *content_type; /* The Content-Type header. */
    const char *ip;           /* The client address. */
    int https;                /* 1 when the client reached us over HTTPS. */
    const char *request_id;
    /* A management API request (/v1/...): the id of the admin key the HTTP layer authenticated
     * it with; NULL for the dashboard's own calls. */
    const char *api_key_id;
    /* An operator API request (/v1/operator/...): the keyed hash of its operator key, in hex, for
     * the dashboard to find in the store; NULL otherwise. */
    const char *operator_key_hash;
    const char *idempotency_key; /* The Idempotency-Key header (either API), or NULL. */
};

/* The answer. body is malloc'd (or NULL for no body); the caller frees it. It is JSON unless
 * content_type says otherwise (an invoice's CSV download). */
struct dash_response {
    int status;
    const char *reason;
    char *body;
    size_t body_len;
    const char *content_type;      /* A static Content-Type value, or NULL for application/json. */
    char content_disposition[128]; /* A Content-Disposition value (a download), or "". */
    char set_cookie[256];          /* A Set-Cookie value, or "". */
    char allow[64];                /* An Allow value (405 method_not_allowed), or "". */
    int replayed;                  /* 1: an idempotent replay (Idempotent-Replayed: true). */
    unsigned retry_after;          /* Seconds for Retry-After, or 0. */
    const char *error_code;        /* For the access log, or NULL. */
};

struct dashboard;

/* Opens the dashboard's own store connection. ks (the server's store thread, which must outlive
 * the dashboard) is asked to apply key changes at once, and its plans in force price the usage
 * reports. Returns NULL with a message in err on failure. */
struct dashboard *dashboard_new(const struct kn_config *c, const uint8_t secret[32],
                                struct keysync *ks, char *err, size_t errsize);

/* Frees the dashboard and closes its store connection. */
void dashboard_free(struct dashboard *d);

/* Returns 1 when the dashboard call `method path` hashes or checks a password (sign-up, sign-in,
 * invitations, passwords): the server runs those on a thread of their own, so that the time
 * Argon2id takes never delays the other calls (a key revocation among them). */
int dashboard_hashes_passwords(const char *method, const char *path);

/* Deletes what the store no longer needs to keep (see store_prune and the retention settings)
 * and writes the number of rows deleted to *deleted. Returns 0, or -1 after logging why. */
int dashboard_prune(struct dashboard *d, int64_t *deleted);

/* Answers one request. Thread-compatible: call it from one thread at a time. */
void dashboard_handle(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res);

#endif
