/* Live requests (see live.h): the backend's settings, each loop's share, a request from its
 * admission to its end (timers, the client, the output, billing). The backend's answer itself is
 * read in live_answer.c. */
#include "http/live.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "core/base62.h"
#include "core/termsafe.h"
#include "core/util.h"
#include "http/live_req.h"
#include "http/request.h"
#include "http/response.h"
#include "keys/keytable.h"
#include "limits/cluster.h"
#include "limits/limiter.h"
#include "metering/plans.h"

#define WATCH_MS 200       /* How often a waiting request checks that its client is there. */
#define POOL_IDLE_MS 2000  /* Idle backend connections are closed before backends do it. */
#define POOL_IDLE_MAX 1024 /* Idle backend connections kept per event loop. */

/* ---- the backend ------------------------------------------------------------------------- */

int live_upstream_init_url(struct live_upstream *u, const char *url, const char *api_key,
                           const char *what, char *err, size_t errsize)
{
    size_t plen;

    memset(u, 0, sizeof(*u));
    u->text = kn_strdup(url);
    if (h2o_url_parse(u->text, strlen(u->text), &u->url) != 0 ||
        (u->url.scheme != &H2O_URL_SCHEME_HTTP && u->url.scheme != &H2O_URL_SCHEME_HTTPS)) {
        snprintf(err, errsize,
                 "%s must be an http:// or https:// URL such as http://127.0.0.1:11434/v1", what);
        live_upstream_dispose(u);
        return -1;
    }
    plen = u->url.path.len;
    while (plen > 0 && u->url.path.base[plen - 1] == '/')
        plen--;
    u->path = kn_malloc(plen + sizeof("/chat/completions"));
    memcpy(u->path, u->url.path.base, plen);
    memcpy(u->path + plen, "/chat/completions", sizeof("/chat/completions"));
    for (const char *p = api_key; *p != '\0'; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
            /* A line break would end the header and start another. */
            snprintf(err, errsize, "the key for %s holds a character a header cannot carry", what);
            live_upstream_dispose(u);
            return -1;
        }
    if (api_key[0] != '\0') {
        size_t n = strlen(api_key) + 32;
        u->auth_header = kn_malloc(n);
        snprintf(u->auth_header, n, "Authorization: Bearer %s\r\n", api_key);
    } else {
        u->auth_header = kn_strdup("");
    }
    if (u->url.scheme == &H2O_URL_SCHEME_HTTPS) {
        u->ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (u->ssl_ctx == NULL || SSL_CTX_set_default_verify_paths(u->ssl_ctx) != 1) {
            snprintf(err, errsize, "cannot set up TLS for %s", what);
            live_upstream_dispose(u);
            return -1;
        }
        SSL_CTX_set_verify(u->ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    return 0;
}

int live_upstream_init(struct live_upstream *u, const struct kn_config *c, char *err,
                       size_t errsize)
{
    return live_upstream_init_url(u, c->model_url, c->model_api_key, "KONNECT_MODEL_URL", err,
                                  errsize);
}

void live_upstream_dispose(struct live_upstream *u)
{
    free(u->path);
    if (u->auth_header != NULL) {
        sodium_memzero(u->auth_header, strlen(u->auth_header));
        free(u->auth_header);
    }
    if (u->ssl_ctx != NULL)
        SSL_CTX_free(u->ssl_ctx);
    free(u->text);
    memset(u, 0, sizeof(*u));
}

static void on_ledger_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

void live_worker_init(struct live_worker *lw, h2o_context_t *ctx, const struct live_setup *setup)
{
    const struct live_upstream *u = setup->upstream;
    h2o_loop_t *loop = ctx->loop;

    lw->ctx = ctx;
    lw->setup = *setup;
    h2o_timeout_init(loop, &lw->io_timeout, setup->first_byte_timeout_ms);
    h2o_timeout_init(loop, &lw->connect_timeout, setup->connect_timeout_ms);
    h2o_timeout_init(loop, &lw->first_byte_timeout, setup->first_byte_timeout_ms);
    h2o_timeout_init(loop, &lw->total_timeout, setup->total_timeout_ms);
    h2o_timeout_init(loop, &lw->watch_timeout, WATCH_MS);
    h2o_timeout_init(loop, &lw->retry_timeout, 0);
    lw->routes = NULL;
    lw->nroutes = 0;
    atomic_init(&lw->failovers, 0);
    upstream_pool_init(&lw->pool, loop, &ctx->receivers.hostinfo_getaddr, u->url.host,
                       h2o_url_get_port(&u->url), u->ssl_ctx, &lw->io_timeout, POOL_IDLE_MS,
                       POOL_IDLE_MAX);
    h2o_multithread_register_receiver(ctx->queue, &lw->ledger_receiver, on_ledger_answers);
    h2o_linklist_init_anchor(&lw->reqs);
    lw->ready = 1;
}

void live_worker_dispose(struct live_worker *lw)
{
    h2o_loop_t *loop = lw->ctx != NULL ? lw->ctx->loop : NULL;

    if (!lw->ready)
        return;
    /* Answers that arrived after the loop stopped belong to requests that are gone. */
    on_ledger_answers(&lw->ledger_receiver, &lw->ledger_receiver._messages);
    h2o_multithread_unregister_receiver(lw->ctx->queue, &lw->ledger_receiver);
    upstream_pool_dispose(&lw->pool);
    for (size_t i = 0; i < lw->nroutes; i++) {
        upstream_pool_dispose(&lw->routes[i].pool);
        live_upstream_dispose(&lw->routes[i].up);
        free(lw->routes[i].key);
    }
    free(lw->routes);
    lw->routes = NULL;
    lw->nroutes = 0;
    h2o_timeout_dispose(loop, &lw->retry_timeout);
    h2o_timeout_dispose(loop, &lw->io_timeout);
    h2o_timeout_dispose(loop, &lw->connect_timeout);
    h2o_timeout_dispose(loop, &lw->first_byte_timeout);
    h2o_timeout_dispose(loop, &lw->total_timeout);
    h2o_timeout_dispose(loop, &lw->watch_timeout);
    lw->ready = 0;
}

/* ---- ending a live request --------------------------------------------------------------- */

void live_unlink_timer(h2o_timeout_entry_t *t)
{
    if (h2o_timeout_is_linked(t))
        h2o_timeout_unlink(t);
}

/* Frees lr once nothing refers to it any more: no backend call, no ledger answer to come, no
 * client request. */
void live_maybe_free(struct live_req *lr)
{
    if (lr->client != NULL || lr->phase == PHASE_BILLING || lr->req != NULL || lr->busy)
        return;
    live_unlink_timer(&lr->total_timer);
    live_unlink_timer(&lr->phase_timer);
    live_unlink_timer(&lr->watch_timer);
    h2o_linklist_unlink(&lr->node);
    if (lr->leased) {
        if (lr->quota_held)
            cluster_release(keyrec_acct(lr->key)->id, lr->month, lr->info.request_id,
                            lr->hold.line != NULL ? lr->hold.line->id : NULL);
    } else {
        if (lr->quota_held)
            limiter_quota_release(lr->limiter, lr->key, lr->month, &lr->hold);
        if (!lr->slot_back)
            limiter_inflight_release(lr->limiter, keyrec_acct(lr->key));
    }
    chat_call_cleanup(&lr->call);
    sse_free(&lr->sse);
    free(lr->head);
    free(lr->body);
    free(lr->out);
    free(lr->wire);
    free(lr->usage_event);
    free(lr);
}

/* The client is about to get its answer, whose backend call is over: forget the request, and
 * give its in-flight slot back before the last bytes go out, so that a client that sends its next
 * request the moment it has this answer is never refused for this one. */
static void detach(struct live_req *lr)
{
    if (!lr->leased && !lr->slot_back) {
        limiter_inflight_release(lr->limiter, keyrec_acct(lr->key));
        lr->slot_back = 1;
    }
    if (lr->guard != NULL)
        lr->guard->lr = NULL;
    lr->guard = NULL;
    lr->req = NULL;
    live_unlink_timer(&lr->watch_timer);
}

static void cancel_backend(struct live_req *lr)
{
    if (lr->client != NULL) {
        upstream_call_cancel(lr->client);
        lr->client = NULL;
    }
    live_unlink_timer(&lr->total_timer);
    live_unlink_timer(&lr->phase_timer);
}

/* Says, for the operator, that a request's backend failed other than by answering with an HTTP
 * error (which live_answer.c says, with its status and first bytes): cannot be reached, timed
 * out, broke off, answered what is not an answer. At most once a second per event loop, counting
 * the others. */
static void log_backend_failure(struct live_req *lr, const char *what)
{
    static __thread uint64_t last_ns;
    static __thread unsigned quiet;
    uint64_t now = kn_mono_ns();
    char more[64] = "", safe[sizeof(lr->end_msg) + 64];

    if (lr->up == NULL)
        return;
    if (last_ns != 0 && now - last_ns < 1000000000ull) {
        quiet++;
        return;
    }
    if (quiet > 0)
        snprintf(more, sizeof(more), " (and %u more such failures in the last second)", quiet);
    termsafe_copy(safe, sizeof(safe),
                  what != NULL ? what : kn_error_def(KN_ERR_MODEL_BACKEND_ERROR)->message);
    const h2o_url_t *u = &lr->up->url;
    fprintf(stderr, "konnect: request %s: model backend %.*s://%.*s%s failed: %s%s\n",
            lr->info.request_id, (int)u->scheme->name.len, u->scheme->name.base,
            (int)u->authority.len, u->authority.base, lr->up->path, safe, more);
    last_ns = now;
    quiet = 0;
}

/* Ends the request with an error, unbilled: a JSON error when nothing was sent yet, otherwise an
 * error event that closes the stream. */
void live_fail(struct live_req *lr, enum kn_err err, const char *message)
{
    if ((err == KN_ERR_MODEL_BACKEND_ERROR || err == KN_ERR_MODEL_BACKEND_TIMEOUT) &&
        lr->err_status == 0)
        log_backend_failure(lr, message);
    cancel_backend(lr);
    lr->phase = PHASE_DONE;
    if (lr->req == NULL) {
        live_maybe_free(lr);
        return;
    }
    if (!lr->streaming) {
        h2o_req_t *req = lr->req;
        detach(lr);
        http_send_error(req, &lr->info, err, message, NULL);
        live_maybe_free(lr);
        return;
    }
    size_t jlen, elen;
    char *json = kn_error_json(err, message, NULL, lr->info.request_id, &jlen);
    char *ev = chat_error_event(json, jlen, &elen);
    free(json);
    lr->info.error_code = kn_error_def(err)->code;
    /* What waits for the client goes before the error event when it was billed (the stream
     * ends after its ledger row was written); anything else must not be delivered. */
    if (!(lr->phase == PHASE_DONE && lr->ledger_ok))
        lr->out_len = 0;
    free(lr->usage_event);
    lr->usage_event = NULL;
    live_append_out(lr, ev, elen);
    free(ev);
    lr->ending = 1;
    live_flush_out(lr);
}

/* The tokens of a streamed answer so far: the backend's latest usage, plus the estimate of
 * what it generated after that usage (none when usage came last, as it does at the end of a
 * stream; all of it from a backend that reported usage early and never again); without usage,
 * the estimates (the whole upstream request for the input, every generated byte for the
 * output). */
void live_stream_tokens(const struct live_req *lr, uint32_t *in, uint32_t *out)
{
    uint32_t after = lr->gen_tokens - lr->gen_at_usage;

    *in = lr->have_usage ? lr->in_tokens : lr->call.input_estimate;
    *out = !lr->have_usage                       ? lr->gen_tokens
           : UINT32_MAX - lr->out_tokens < after ? UINT32_MAX
                                                 : lr->out_tokens + after;
}

/* 1 when part of a streamed answer reached the client (or was on its way) and the backend had
 * generated something: from then on, however the stream ends, it is billed. */
static int stream_delivered(const struct live_req *lr)
{
    return lr->call.stream && lr->phase == PHASE_BODY && lr->streaming && lr->gen_events > 0;
}

/* Ends a live request that cannot finish: `what` says why. A stream that delivered part of its
 * answer is billed for everything the backend generated until now (README "Billing rules") and
 * ends, once its row is durable, with an error event; anything else ends unbilled. */
void live_end_with_error(struct live_req *lr, enum kn_err err, const char *what)
{
    char msg[sizeof(lr->end_msg)];

    if (stream_delivered(lr)) {
        uint32_t in, out;
        lr->end_err = err;
        snprintf(lr->end_msg, sizeof(lr->end_msg),
                 "%s The part of the answer already streamed was billed.", what);
        live_stream_tokens(lr, &in, &out);
        live_bill(lr, in, out);
        return;
    }
    snprintf(msg, sizeof(msg), "%s This request was not billed.", what);
    live_fail(lr, err, msg);
}

/* A client left in the middle of a streamed answer. The backend call stops at once; what the
 * backend generated until then was for this client and is billed. Returns 1 when it was billed,
 * 0 when nothing had been delivered (nothing is billed then). */
static int bill_partial_stream(struct live_req *lr)
{
    uint32_t in, out;

    if (!stream_delivered(lr))
        return 0;
    live_stream_tokens(lr, &in, &out);
    live_bill(lr, in, out);
    return 1;
}

static void on_guard_dispose(void *p)
{
    struct live_guard *g = p;
    struct live_req *lr = g->lr;

    if (lr == NULL)
        return;
    /* The request is being freed: the client went away before it had its whole answer. h2o
     * frees the request's pool after this, so the request can still be logged. */
    lr->info.error_code = kn_error_def(KN_ERR_CLIENT_CLOSED)->code;
    http_log_request(lr->req, &lr->info, kn_error_def(KN_ERR_CLIENT_CLOSED)->status);
    lr->guard = NULL;
    lr->req = NULL;
    if (lr->phase != PHASE_BILLING && !bill_partial_stream(lr)) {
        cancel_backend(lr);
        lr->phase = PHASE_DONE;
    }
    live_maybe_free(lr);
}

/* While the backend works, a client that went away is looked for every WATCH_MS
 * (http_client_gone), and the backend call is cancelled rather than paid for by nobody. */
static void on_watch(h2o_timeout_entry_t *entry)
{
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, watch_timer, entry);

    if (lr->req == NULL)
        return;
    if (lr->phase < PHASE_BILLING && http_client_gone(lr->req)) {
        lr->req->http1_is_persistent = 0;
        lr->info.error_code = kn_error_def(KN_ERR_CLIENT_CLOSED)->code;
        if (!bill_partial_stream(lr))
            live_fail(lr, KN_ERR_CLIENT_CLOSED, NULL);
        return;
    }
    if (lr->phase == PHASE_DONE && lr->ending && lr->sending) {
        /* The answer is over (and billed, or not to be), but its end waits behind bytes the
         * client does not read: h2o 2.2.5 has no write timeout, so after the request timeout
         * the connection is shut down, which fails the write and frees the request and the
         * account's in-flight slot. */
        uint64_t now = kn_mono_ns(), limit = (uint64_t)lr->lw->setup.stall_timeout_ms * 1000000u;
        h2o_socket_t *sock = lr->req->conn->callbacks->get_socket != NULL
                                 ? lr->req->conn->callbacks->get_socket(lr->req->conn)
                                 : NULL;
        if (lr->stalled_ns == 0) {
            lr->stalled_ns = now;
        } else if (now - lr->stalled_ns >= limit && sock != NULL) {
            fprintf(stderr,
                    "konnect: request %s: the client read nothing of its answer's end for %u ms; "
                    "closing its connection\n",
                    lr->info.request_id, lr->lw->setup.stall_timeout_ms);
            shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
        }
    }
    h2o_timeout_link(lr->lw->ctx->loop, &lr->lw->watch_timeout, &lr->watch_timer);
}

void live_worker_stop(struct live_worker *lw)
{
    h2o_linklist_t *node = lw->reqs.next, *next;

    lw->stopping = 1;
    for (; node != &lw->reqs; node = next) {
        struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, node, node);
        next = node->next; /* Ending lr may free it, never another request. */
        if (lr->phase < PHASE_BILLING)
            live_end_with_error(lr, KN_ERR_SHUTTING_DOWN, "The server is shutting down.");
    }
}

size_t live_worker_billing(struct live_worker *lw)
{
    size_t n = 0;

    for (h2o_linklist_t *node = lw->reqs.next; node != &lw->reqs; node = node->next)
        n += H2O_STRUCT_FROM_MEMBER(struct live_req, node, node)->phase == PHASE_BILLING;
    return n;
}

static void on_total_timeout(h2o_timeout_entry_t *entry)
{
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, total_timer, entry);
    char msg[160];

    snprintf(msg, sizeof(msg), "The model backend did not finish its answer within %u ms.",
             lr->lw->setup.total_timeout_ms);
    live_end_with_error(lr, KN_ERR_MODEL_BACKEND_TIMEOUT, msg);
}

void live_on_phase_timeout(h2o_timeout_entry_t *entry)
{
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, phase_timer, entry);
    const struct live_setup *s = &lr->lw->setup;
    char msg[160];

    if (lr->phase == PHASE_CONNECT)
        snprintf(msg, sizeof(msg), "The model backend did not accept a connection within %u ms.",
                 s->connect_timeout_ms);
    else
        snprintf(msg, sizeof(msg), "The model backend did not start answering within %u ms.",
                 s->first_byte_timeout_ms);
    if (!live_failover(lr, msg))
        live_end_with_error(lr, KN_ERR_MODEL_BACKEND_TIMEOUT, msg);
}

/* ---- the backends ------------------------------------------------------------------------ */

struct live_route *live_route_for(struct live_worker *lw, const struct plan_backend *b, char *err,
                                  size_t errsize)
{
    char key[PLAN_URL_MAX + PLAN_ENV_MAX + 2];
    const char *api_key = "";
    struct live_route *r;

    snprintf(key, sizeof(key), "%s\n%s", b->url, b->api_key_env);
    for (size_t i = 0; i < lw->nroutes; i++)
        if (strcmp(lw->routes[i].key, key) == 0)
            return &lw->routes[i];
    if (lw->nroutes == LIVE_ROUTES_MAX) {
        snprintf(err, errsize,
                 "more than %d model backends on one event loop (restart the server "
                 "after changing the plans' backends many times)",
                 LIVE_ROUTES_MAX);
        return NULL;
    }
    if (b->api_key_env[0] != '\0' && (api_key = getenv(b->api_key_env)) == NULL) {
        fprintf(stderr,
                "konnect: warning: model backend %s: the environment variable %s (its "
                "api_key_env) is not set; it is asked without a key\n",
                b->url, b->api_key_env);
        api_key = "";
    }
    if (lw->routes == NULL)
        lw->routes = kn_calloc(LIVE_ROUTES_MAX, sizeof(*lw->routes));
    r = &lw->routes[lw->nroutes];
    if (live_upstream_init_url(&r->up, b->url, api_key, "a model backend's url", err, errsize) != 0)
        return NULL;
    r->key = kn_strdup(key);
    upstream_pool_init(&r->pool, lw->ctx->loop, &lw->ctx->receivers.hostinfo_getaddr,
                       r->up.url.host, h2o_url_get_port(&r->up.url), r->up.ssl_ctx, &lw->io_timeout,
                       POOL_IDLE_MS, POOL_IDLE_MAX);
    lw->nroutes++;
    return r;
}

/* Forgets what a failed attempt read, so that the next backend's answer starts clean. */
static void reset_attempt(struct live_req *lr)
{
    lr->body_len = 0;
    lr->out_len = 0;
    lr->err_status = 0;
    sse_free(&lr->sse);
    sse_init(&lr->sse, SSE_EVENT_MAX);
    lr->saw_done = lr->saw_finish = lr->have_usage = 0;
    lr->in_tokens = lr->out_tokens = lr->gen_tokens = lr->gen_at_usage = 0;
    lr->gen_events = 0;
    lr->finish[0] = '\0';
    free(lr->usage_event);
    lr->usage_event = NULL;
    lr->usage_event_len = 0;
    kn_strlcpy(lr->model, lr->pm.name, sizeof(lr->model));
}

/* Sends the request to its current backend. */
static void start_attempt(struct live_req *lr)
{
    struct live_worker *lw = lr->lw;
    struct upstream_pool *pool = &lw->pool;
    const char *model = lr->pm.backend;
    size_t hsize;

    lr->up = lw->setup.upstream;
    if (lr->pm.nbackends > 0) {
        const struct plan_backend *b = &lr->pm.backends[lr->attempt];
        char err[256];
        struct live_route *r = live_route_for(lw, b, err, sizeof(err));
        if (r == NULL) {
            fprintf(stderr, "konnect: model backend %s cannot be used: %s\n", b->url, err);
            if (!live_failover(lr, "its URL cannot be used"))
                live_fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
                          "The model backend is misconfigured. This request was not billed.");
            return;
        }
        lr->up = &r->up;
        pool = &r->pool;
        model = b->model;
    }
    if (strcmp(model, lr->sent_model) != 0) {
        /* This backend has its own name for the model. */
        free(lr->call.body);
        lr->call.body = NULL;
        chat_call_prepare(&lr->call, model);
        kn_strlcpy(lr->sent_model, model, sizeof(lr->sent_model));
    }
    const struct live_upstream *u = lr->up;
    free(lr->head);
    hsize = strlen(u->path) + u->url.authority.len + strlen(u->auth_header) + 256;
    lr->head = kn_malloc(hsize);
    int n = snprintf(lr->head, hsize,
                     "POST %s HTTP/1.1\r\nHost: %.*s\r\nContent-Type: application/json\r\n"
                     "Accept: %s\r\nContent-Length: %zu\r\nUser-Agent: konnect\r\n"
                     "X-Request-Id: %s\r\n%s\r\n",
                     u->path, (int)u->url.authority.len, u->url.authority.base,
                     lr->call.stream ? "text/event-stream" : "application/json", lr->call.body_len,
                     lr->info.request_id, u->auth_header);
    lr->reqbufs[0] = h2o_iovec_init(lr->head, (size_t)n);
    lr->reqbufs[1] = h2o_iovec_init(lr->call.body, lr->call.body_len);
    lr->phase = PHASE_CONNECT;
    lr->phase_timer.cb = live_on_phase_timeout;
    h2o_timeout_link(lw->ctx->loop, &lw->connect_timeout, &lr->phase_timer);
    upstream_call_start(&lr->client, lr, pool, live_on_connect);
}

static void on_retry(h2o_timeout_entry_t *entry)
{
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, phase_timer, entry);

    reset_attempt(lr);
    start_attempt(lr);
}

int live_failover(struct live_req *lr, const char *why)
{
    struct live_worker *lw = lr->lw;

    if (lr->attempt + 1 >= lr->pm.nbackends || lr->streaming || lr->req == NULL || lw->stopping ||
        lr->phase >= PHASE_BILLING)
        return 0;
    fprintf(stderr,
            "konnect: request %s: model backend %s failed (%s); trying backend %zu of %zu, %s\n",
            lr->info.request_id, lr->pm.backends[lr->attempt].url, why, lr->attempt + 2,
            lr->pm.nbackends, lr->pm.backends[lr->attempt + 1].url);
    if (lr->client != NULL) {
        upstream_call_cancel(lr->client);
        lr->client = NULL;
    }
    live_unlink_timer(&lr->phase_timer);
    lr->attempt++;
    lr->phase = PHASE_CONNECT;
    atomic_fetch_add_explicit(&lw->failovers, 1, memory_order_relaxed);
    /* Started from the loop, not from inside the failed call's callback. */
    lr->phase_timer.cb = on_retry;
    h2o_timeout_link(lw->ctx->loop, &lw->retry_timeout, &lr->phase_timer);
    return 1;
}

/* ---- output to the client ---------------------------------------------------------------- */

void live_append_out(struct live_req *lr, const char *s, size_t n)
{
    if (lr->out_len + n > lr->out_cap) {
        lr->out_cap = (lr->out_len + n) * 2;
        lr->out = kn_realloc(lr->out, lr->out_cap);
    }
    memcpy(lr->out + lr->out_len, s, n);
    lr->out_len += n;
}

static void on_proceed(h2o_generator_t *self, h2o_req_t *req)
{
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, generator, self);
    (void)req;
    lr->sending = 0;
    lr->stalled_ns = 0;
    if (lr->ending) {
        live_flush_out(lr); /* The last bytes: lr may be gone after this. */
        return;
    }
    live_flush_out(lr);
    /* The client took what was waiting: the backend may be read again. */
    if (lr->paused && lr->out_len < OUT_PAUSE_BYTES && lr->client != NULL) {
        lr->paused = 0;
        upstream_call_resume(lr->client);
    }
}

static void on_stop(h2o_generator_t *self, h2o_req_t *req)
{
    /* The client went away mid-stream; the pool guard does the rest. */
    (void)self;
    (void)req;
}

static void start_stream(struct live_req *lr)
{
    h2o_req_t *req = lr->req;

    lr->streaming = 1;
    lr->generator.proceed = on_proceed;
    lr->generator.stop = on_stop;
    http_response_head(req, &lr->info, 200, "OK", HTTP_EVENT_STREAM, "no-cache", SIZE_MAX);
    /* Proxies such as nginx must not hold the events back. */
    http_add_header(req, "x-accel-buffering", "no");
    h2o_start_response(req, &lr->generator);
}

/* Sends what is waiting in `out`, unless a send is in progress (its proceed comes back here). */
void live_flush_out(struct live_req *lr)
{
    h2o_req_t *req = lr->req;

    if (req == NULL || lr->sending || (lr->out_len == 0 && !lr->ending))
        return;
    if (!lr->streaming)
        start_stream(lr);
    /* A stream that failed still ends cleanly: its last event says what went wrong. */
    h2o_send_state_t state = lr->ending ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS;
    h2o_iovec_t buf;
    if (state == H2O_SEND_STATE_IN_PROGRESS) {
        /* h2o points at the bytes until it proceeds: they move to `wire` (and `out` takes the
         * wire's old buffer), so that a long stream reuses two buffers instead of growing the
         * request's pool by every byte it sends. */
        char *spare = lr->wire;
        size_t spare_cap = lr->wire_cap;
        lr->wire = lr->out;
        lr->wire_cap = lr->out_cap;
        lr->out = spare;
        lr->out_cap = spare_cap;
        buf = h2o_iovec_init(lr->wire, lr->out_len);
    } else {
        /* The last bytes: lr may be freed before h2o has written them, so they go in the pool. */
        buf = h2o_strdup(&req->pool, lr->out != NULL ? lr->out : "", lr->out_len);
    }
    lr->out_len = 0;
    lr->sending = 1;
    if (state != H2O_SEND_STATE_IN_PROGRESS) {
        http_log_request(req, &lr->info, 200);
        detach(lr);
    }
    h2o_send(req, &buf, 1, state);
    if (state != H2O_SEND_STATE_IN_PROGRESS)
        live_maybe_free(lr);
}

/* ---- billing ----------------------------------------------------------------------------- */

static void on_ledger_done(struct ledger_entry *e, int ok)
{
    /* On the store thread: hand the answer back to the request's event loop. */
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, ledger, e);
    lr->ledger_ok = ok;
    h2o_multithread_send_message(&lr->lw->ledger_receiver, &lr->msg);
}

/* Queues the ledger row of a request that the backend answered in full. Its answer (the plain
 * body, or the end of the stream) waits in `out` until the row is durable. */
void live_bill(struct live_req *lr, uint32_t in, uint32_t out)
{
    struct store_ledger_row *row = &lr->ledger.row;
    struct timeval tv;

    cancel_backend(lr);
    lr->in_tokens = in;
    lr->out_tokens = out;
    memset(row, 0, sizeof(*row));
    kn_strlcpy(row->request_id, lr->info.request_id, sizeof(row->request_id));
    kn_strlcpy(row->account_id, keyrec_acct(lr->key)->id, sizeof(row->account_id));
    keyrec_id(lr->key, row->key_id);
    kn_strlcpy(row->environment, apikey_env_name(keyrec_env(lr->key)), sizeof(row->environment));
    kn_strlcpy(row->model, lr->pm.name, sizeof(row->model));
    kn_strlcpy(row->currency, lr->currency, sizeof(row->currency));
    kn_strlcpy(row->plan, lr->plan, sizeof(row->plan));
    row->plan_version = lr->plan_version;
    row->input_tokens = in;
    row->output_tokens = out;
    row->price_micros = plan_model_price(&lr->pm, in, out);
    gettimeofday(&tv, NULL);
    row->at_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    lr->answered_ns = kn_mono_ns();
    lr->ledger.done = on_ledger_done;
    lr->phase = PHASE_BILLING;
    lr->lw->setup.bill(lr->lw->setup.bill_ud, &lr->ledger);
}

/* Times the stages of a request whose answer is being handed to h2o now. */
static void record_stages(struct live_req *lr)
{
    struct histogram *h = lr->lw->stage;
    uint64_t now = kn_mono_ns();

    histogram_add(&h[LIVE_STAGE_ADMIT], lr->admitted_ns - lr->began_ns);
    histogram_add(&h[LIVE_STAGE_CONNECT], lr->connected_ns - lr->admitted_ns);
    histogram_add(&h[LIVE_STAGE_BACKEND], lr->answered_ns - lr->connected_ns);
    if (lr->ledger.taken_ns != 0 && lr->ledger.committed_ns >= lr->ledger.taken_ns) {
        /* A billing sink that stamps its rows (metering/ledger.c does). */
        histogram_add(&h[LIVE_STAGE_QUEUE], lr->ledger.taken_ns - lr->answered_ns);
        histogram_add(&h[LIVE_STAGE_COMMIT], lr->ledger.committed_ns - lr->ledger.taken_ns);
        histogram_add(&h[LIVE_STAGE_WAKE], lr->acked_ns - lr->ledger.committed_ns);
    }
    histogram_add(&h[LIVE_STAGE_ANSWER], now - lr->acked_ns);
    histogram_add(&h[LIVE_STAGE_TOTAL], now - lr->began_ns);
}

static void on_ledger_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    h2o_multithread_message_t *msg;

    (void)receiver;
    while ((msg = http_next_message(messages)) != NULL) {
        struct live_req *lr = (struct live_req *)msg;
        lr->phase = PHASE_DONE;
        lr->acked_ns = kn_mono_ns();
        if (!lr->ledger_ok) {
            if (lr->end_err != KN_OK)
                fprintf(stderr,
                        "konnect: request %s streamed part of an answer that could not be "
                        "billed: the ledger is not writable\n",
                        lr->info.request_id);
            live_fail(lr, KN_ERR_BILLING_UNAVAILABLE, NULL);
            continue;
        }
        /* Billed: the reservation became usage. */
        lr->quota_held = 0;
        if (lr->leased)
            cluster_settle(keyrec_acct(lr->key)->id, lr->month, lr->info.request_id,
                           (uint64_t)lr->in_tokens + lr->out_tokens);
        else /* In the month of its row, which a request that began in the last one ends in. */
            limiter_quota_settle(lr->limiter, lr->key, kn_month_of(lr->ledger.row.at_ms / 1000),
                                 &lr->hold, (uint64_t)lr->in_tokens + lr->out_tokens);
        if (lr->req == NULL) {
            live_maybe_free(lr); /* Billed, but the client left before the answer. */
        } else if (lr->end_err != KN_OK) {
            live_fail(lr, lr->end_err, lr->end_msg); /* Billed for its part: the stream ends. */
        } else if (lr->call.stream) {
            if (lr->usage_event != NULL)
                live_append_out(lr, lr->usage_event, lr->usage_event_len);
            lr->ending = 1;
            record_stages(lr);
            live_flush_out(lr);
        } else {
            h2o_req_t *req = lr->req;
            record_stages(lr);
            detach(lr);
            http_send_json(req, &lr->info, 200, "OK", lr->out, lr->out_len);
            live_maybe_free(lr);
        }
    }
}

/* ---- the request ------------------------------------------------------------------------- */

void live_handle(struct live_worker *lw, h2o_req_t *req, struct reqinfo *info, struct keyrec *key,
                 const struct live_terms *terms, struct chat_call *call)
{
    struct live_req *lr = kn_calloc(1, sizeof(*lr));

    lr->lw = lw;
    h2o_linklist_insert(&lw->reqs, &lr->node);
    lr->req = req;
    lr->info = *info;
    lr->key = key;
    lr->month = terms->month;
    lr->limiter = terms->limiter;
    lr->leased = terms->leased;
    lr->began_ns = terms->began_ns;
    lr->admitted_ns = kn_mono_ns();
    lr->quota_held = 1;
    lr->hold = terms->hold;
    lr->pm = *terms->pm;
    kn_strlcpy(lr->plan, terms->plan->name, sizeof(lr->plan));
    lr->plan_version = terms->ps->version;
    kn_strlcpy(lr->currency, terms->ps->currency, sizeof(lr->currency));
    lr->rename = terms->ps->has_catalogue;
    lr->call = *call;
    memset(call, 0, sizeof(*call));
    kn_strlcpy(lr->model, lr->pm.name, sizeof(lr->model));
    lr->created = kn_unix_now();
    base62_random_id(lr->id, lr->call.api == CHAT_API_OPENAI ? "chatcmpl-" : "chat_", 24);
    sse_init(&lr->sse, SSE_EVENT_MAX);
    lr->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*lr->guard), on_guard_dispose);
    lr->guard->lr = lr;
    kn_strlcpy(lr->sent_model, lr->pm.backend, sizeof(lr->sent_model));

    lr->total_timer.cb = on_total_timeout;
    lr->watch_timer.cb = on_watch;
    h2o_timeout_link(lw->ctx->loop, &lw->total_timeout, &lr->total_timer);
    h2o_timeout_link(lw->ctx->loop, &lw->watch_timeout, &lr->watch_timer);
    start_attempt(lr);
}
