/* Answers: the access-log record of a request, the one builder of every answer's head, and the
 * JSON, error and rate-limit answers built on it. Internal to src/http/; it needs nothing of the
 * server but the event loop's record of a request (http/request.h, for the access log). */
#ifndef KN_HTTP_RESPONSE_H
#define KN_HTTP_RESPONSE_H

#include <stddef.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>

#include "core/errors.h"
#include "keys/keytable.h"
#include "limits/ratelimit.h"

#define REQUEST_ID_LEN 24 /* base62 characters after "req_" */

/* What a request did, for its access-log line. */
struct reqinfo {
    char request_id[4 + REQUEST_ID_LEN + 1];
    const struct keyrec *key;
    const char *error_code;
};

/* Writes the request's access-log line (KONNECT_ACCESS_LOG), with the answer's status. */
void http_log_request(h2o_req_t *req, const struct reqinfo *info, int status);
/* Adds a response header (name and value copied). */
void http_add_header(h2o_req_t *req, const char *name, const char *value);
/* The response builder: sets the head of every answer Konnect gives, its status and reason,
 * Content-Type (none when NULL), Cache-Control, the request id under both names ("request-id",
 * and "x-request-id", which OpenAI's SDKs read), and nosniff for anything but JSON (bodiless
 * answers included). content_length is the body's length, or SIZE_MAX for a body streamed after it.
 */
void http_response_head(h2o_req_t *req, const struct reqinfo *info, int status, const char *reason,
                        const char *content_type, const char *cache_control, size_t content_length);
/* The Content-Type of streamed events. */
#define HTTP_EVENT_STREAM "text/event-stream; charset=utf-8"
/* Sends body (copied) as a JSON response and logs the request. */
void http_send_json(h2o_req_t *req, struct reqinfo *info, int status, const char *reason,
                    const char *body, size_t len);
/* Sends body (copied) with the given Content-Type, no-store, and logs the request (json: the
 * same as "application/json"). */
void http_send_body(h2o_req_t *req, struct reqinfo *info, int status, const char *reason,
                    const char *content_type, const char *body, size_t len);
/* Sends the JSON error document for err (message and param NULL: the defaults). */
void http_send_error(h2o_req_t *req, struct reqinfo *info, enum kn_err err, const char *message,
                     const char *param);
/* Adds the IETF RateLimit headers and OpenAI's x-ratelimit-*-requests for the tighter limit. */
void http_add_ratelimit_headers(h2o_req_t *req, const struct ratelimit_result *minute,
                                const struct ratelimit_result *day);
/* Adds the WWW-Authenticate challenge (RFC 6750 section 3) for the authentication error err. */
void http_add_www_authenticate(h2o_req_t *req, enum kn_err err);

/* Answers an authentication failure on /v1/: WWW-Authenticate (RFC 6750) and the error. */
void http_send_auth_error(h2o_req_t *req, struct reqinfo *info, enum kn_err err);

/* The kind of key a route needs. */
enum http_scope { HTTP_SCOPE_CHAT, HTTP_SCOPE_MANAGE, HTTP_SCOPE_OPERATOR };

/* Sends 403 insufficient_scope (RFC 6750 section 3.1) for a working key of the wrong kind for a
 * route that needs `need`: a chat key on the management or operator API, an admin key on a chat
 * route, and so on. */
void http_send_scope_error(h2o_req_t *req, struct reqinfo *info, enum http_scope need);

#endif
