/* Answers; see response.h. */
#include "http/response.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "http/accesslog.h"
#include "http/metrics.h"
#include "http/request.h"

void http_log_request(h2o_req_t *req, const struct reqinfo *info, int status)
{
    struct http_loop *loop = http_loop_of(req);
    struct accesslog_entry e;
    struct timeval now;
    char peer[INET6_ADDRSTRLEN], kid[KEY_ID_SIZE];
    uint64_t began = (uint64_t)req->timestamps.request_begin_at.tv_sec * 1000000u +
                     (uint64_t)req->timestamps.request_begin_at.tv_usec;

    gettimeofday(&now, NULL);
    uint64_t nowus = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_usec;
    uint64_t took = began != 0 && nowus > began ? nowus - began : 0;
    metrics_count(loop->metrics, req->path_normalized.base, req->path_normalized.len, status,
                  info->error_code, took * 1000);
    if (!accesslog_enabled(loop->log))
        return;
    http_client_ip(req, peer, sizeof(peer));
    memset(&e, 0, sizeof(e));
    e.time = now.tv_sec;
    e.request_id = info->request_id;
    e.method = req->input.method.base;
    e.method_len = req->input.method.len;
    /* The path without its query string: queries are where careless clients put secrets. */
    e.path = req->path_normalized.base;
    e.path_len = req->path_normalized.len;
    e.status = status;
    e.error_code = info->error_code;
    e.key_id = info->key != NULL ? keyrec_id(info->key, kid) : NULL;
    e.mode = info->key != NULL ? apikey_mode_name(keyrec_mode(info->key)) : NULL;
    e.remote = peer[0] ? peer : NULL;
    e.duration_us = took;
    e.body_bytes = req->entity.len;
    accesslog_append(loop->log, &loop->log_buf, &e);
}

void http_add_header(h2o_req_t *req, const char *name, const char *value)
{
    h2o_iovec_t v = h2o_strdup(&req->pool, value, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, v.base,
                          v.len);
}

/* Sends body (copied) as a JSON response and logs the request. */
void http_send_json(h2o_req_t *req, struct reqinfo *info, int status, const char *reason,
                    const char *body, size_t len)
{
    http_send_body(req, info, status, reason, "application/json", body, len);
}

void http_response_head(h2o_req_t *req, const struct reqinfo *info, int status, const char *reason,
                        const char *content_type, const char *cache_control, size_t content_length)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = content_length;
    if (content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, cache_control,
                   strlen(cache_control));
    if (content_type == NULL || strcmp(content_type, "application/json") != 0)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"),
                              0, NULL, H2O_STRLIT("nosniff"));
    /* The id is copied once into the request's pool (info may not outlive the handler). */
    h2o_iovec_t id = h2o_strdup(&req->pool, info->request_id, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("request-id"), 0, NULL, id.base,
                          id.len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          id.base, id.len);
}

void http_send_body(h2o_req_t *req, struct reqinfo *info, int status, const char *reason,
                    const char *content_type, const char *body, size_t len)
{
    http_response_head(req, info, status, reason, content_type, "no-store", len);
    http_log_request(req, info, status);
    h2o_send_inline(req, body, len);
}

void http_send_error(h2o_req_t *req, struct reqinfo *info, enum kn_err err, const char *message,
                     const char *param)
{
    const struct kn_error_def *d = kn_error_def(err);
    size_t len;
    char *body = kn_error_json(err, message, param, info->request_id, &len);

    info->error_code = d->code;
    http_send_json(req, info, d->status, d->reason, body, len);
    free(body);
}

static void format_duration(uint32_t s, char *out, size_t size)
{
    if (s < 60)
        snprintf(out, size, "%us", s);
    else if (s < 3600)
        snprintf(out, size, "%um%us", s / 60, s % 60);
    else
        snprintf(out, size, "%uh%um%us", s / 3600, s / 60 % 60, s % 60);
}

/* Adds the rate-limit headers for a test key: the IETF draft's RateLimit-Policy and RateLimit,
 * and OpenAI's x-ratelimit-*-requests for the tightest limit. */
void http_add_ratelimit_headers(h2o_req_t *req, const struct ratelimit_result *minute,
                                const struct ratelimit_result *day)
{
    char policy[128] = "", state[128] = "", buf[48];
    const struct ratelimit_result *tight = NULL;

    if (minute != NULL) {
        snprintf(policy, sizeof(policy), "\"minute\";q=%u;w=%u", minute->limit, minute->window);
        snprintf(state, sizeof(state), "\"minute\";r=%u;t=%u", minute->remaining, minute->reset);
        tight = minute;
    }
    if (day != NULL) {
        size_t pl = strlen(policy), sl = strlen(state);
        snprintf(policy + pl, sizeof(policy) - pl, "%s\"day\";q=%u;w=%u", pl ? ", " : "",
                 day->limit, day->window);
        snprintf(state + sl, sizeof(state) - sl, "%s\"day\";r=%u;t=%u", sl ? ", " : "",
                 day->remaining, day->reset);
        /* The tighter limit is the one with fewer requests left; on a tie, the one that takes
         * longer to come back. */
        if (tight == NULL || !day->allowed || day->remaining < tight->remaining ||
            (day->remaining == tight->remaining && day->reset > tight->reset))
            tight = day;
    }
    if (tight == NULL)
        return;
    http_add_header(req, "ratelimit-policy", policy);
    http_add_header(req, "ratelimit", state);
    snprintf(buf, sizeof(buf), "%u", tight->limit);
    http_add_header(req, "x-ratelimit-limit-requests", buf);
    snprintf(buf, sizeof(buf), "%u", tight->remaining);
    http_add_header(req, "x-ratelimit-remaining-requests", buf);
    format_duration(tight->reset, buf, sizeof(buf));
    http_add_header(req, "x-ratelimit-reset-requests", buf);
}

void http_add_www_authenticate(h2o_req_t *req, enum kn_err err)
{
    /* RFC 6750 section 3.1: a request without credentials gets the bare challenge; a bad token
     * gets error="invalid_token". */
    if (err == KN_ERR_MISSING_API_KEY)
        http_add_header(req, "www-authenticate", "Bearer realm=\"konnect\"");
    else if (err == KN_ERR_INSUFFICIENT_SCOPE)
        http_add_header(req, "www-authenticate",
                        "Bearer realm=\"konnect\", error=\"insufficient_scope\", "
                        "error_description=\"This route needs another kind of API key\"");
    else
        http_add_header(
            req, "www-authenticate",
            "Bearer realm=\"konnect\", error=\"invalid_token\", error_description=\"The "
            "API key is invalid, revoked or expired\"");
}

void http_send_auth_error(h2o_req_t *req, struct reqinfo *info, enum kn_err err)
{
    /* A suspended account's key is valid: no challenge, the refusal is about the account. */
    if (err != KN_ERR_ACCOUNT_SUSPENDED)
        http_add_www_authenticate(req, err);
    http_send_error(req, info, err, NULL, NULL);
}

void http_send_scope_error(h2o_req_t *req, struct reqinfo *info, enum http_scope need)
{
    static const char *const says[] = {
        [HTTP_SCOPE_CHAT] = "This route needs a live or test key (sk_live_... or sk_test_...). "
                            "Admin keys (sk_admin_...) call the management API only.",
        [HTTP_SCOPE_MANAGE] = "This route is the management API: it needs an admin key "
                              "(sk_admin_...), made by the account's owner. Live and test keys "
                              "call /v1/chat and /v1/models.",
        [HTTP_SCOPE_OPERATOR] = "This route is the operator API: it needs an operator key "
                                "(sk_op_..., konnect operator-key create). An account's keys call "
                                "/v1/chat or its management API.",
    };

    http_add_www_authenticate(req, KN_ERR_INSUFFICIENT_SCOPE);
    http_send_error(req, info, KN_ERR_INSUFFICIENT_SCOPE, says[need], NULL);
}
