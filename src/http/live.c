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
#include "http/internal.h"
#include "keys/keysync.h"
#include "limits/limiter.h"
#include "metering/plans.h"

#define WATCH_MS 200          /* How often a waiting request checks that its client is there. */
#define POOL_IDLE_MS 2000     /* Idle backend connections are closed before backends do it. */
#define POOL_IDLE_MAX 1024    /* Idle backend connections kept per event loop. */
#define SSE_EVENT_MAX 1048576 /* The largest streamed event accepted from a backend. */
/* Streamed output waiting for a slow client: past this, the backend is read no more until the
 * client has taken it (so a request holds at most about twice this, plus one event). */
#define OUT_PAUSE_BYTES 262144

struct live_req;

/* Lives in the request's memory pool: its disposal tells the live request that the client is
 * gone. */
struct live_guard {
    struct live_req *lr;
};

enum phase { PHASE_CONNECT, PHASE_FIRST_BYTE, PHASE_BODY, PHASE_BILLING, PHASE_DONE };

struct live_req {
    h2o_multithread_message_t msg; /* The store thread's answer about the ledger row. */
    h2o_linklist_t node;           /* In the worker's list of live requests. */
    struct ledger_entry ledger;
    int ledger_ok;
    struct worker *w;
    h2o_req_t *req; /* NULL once the client is gone or has its answer. */
    struct live_guard *guard;
    struct upstream_call *client; /* While the backend call runs. */
    struct reqinfo info;
    struct keyrec *key;
    int64_t month;
    int quota_held;          /* The request still holds its reservation in the quota. */
    uint64_t tokens_held;    /* Tokens of the account's quota it reserved. */
    struct limiter *limiter; /* Where the reservation and the in-flight slot go back. */
    struct plan_model pm;    /* The model as billed: public name and prices of its plan. */
    char plan[PLAN_NAME_MAX + 1];
    char currency[8];
    int rename; /* With a model catalogue, answers name the public model, never the backend's. */
    int busy;   /* Inside a callback of the backend call: lr must not be freed. */
    struct chat_call call;
    char id[48];
    int64_t created;
    enum phase phase;
    char *head; /* The request to the backend: head and body. */
    h2o_iovec_t reqbufs[2];
    h2o_timeout_entry_t total_timer, phase_timer, watch_timer;
    /* A plain answer is collected here; a streamed one is parsed as it comes. */
    char *body;
    size_t body_len, body_cap;
    struct sse_parser sse;
    int streaming;       /* The client's answer has started (status and headers sent). */
    int sending;         /* An h2o_send of `wire` is in progress; more output waits in `out`. */
    int ending;          /* The last bytes are in `out`. */
    int paused;          /* The backend is not read while `out` is full (OUT_PAUSE_BYTES). */
    uint64_t stalled_ns; /* When the end began to wait for a client that reads nothing; 0: not. */
    char *out;
    size_t out_len, out_cap;
    char *wire; /* What h2o is sending (it points at these bytes until it proceeds). */
    size_t wire_cap;
    h2o_generator_t generator;
    /* What the streamed answer said so far. */
    int saw_done, saw_finish, have_usage, usage_warned;
    uint32_t in_tokens, out_tokens;
    uint32_t gen_tokens; /* Output tokens by estimate over the events so far (chat_event_tokens). */
    uint32_t gen_at_usage; /* gen_tokens when the backend's latest usage arrived. */
    uint64_t gen_events;   /* Events that carried generated text. */
    /* A stream that fails after part of it was sent is billed for that part, then ends with this
     * error event once its ledger row is durable. */
    enum kn_err end_err;
    char end_msg[256];
    char finish[32];
    char model[CHAT_MODEL_MAX + 1]; /* The model that answers: the backend's name for it. */
    char *usage_event; /* OpenAI clients that asked for usage: the usage chunk, sent last. */
    size_t usage_event_len;
};

/* ---- the backend ------------------------------------------------------------------------- */

int live_upstream_init(struct live_upstream *u, const struct kn_config *c, char *err,
                       size_t errsize)
{
    size_t plen;

    memset(u, 0, sizeof(*u));
    if (h2o_url_parse(c->model_url, strlen(c->model_url), &u->url) != 0 ||
        (u->url.scheme != &H2O_URL_SCHEME_HTTP && u->url.scheme != &H2O_URL_SCHEME_HTTPS)) {
        snprintf(err, errsize,
                 "KONNECT_MODEL_URL must be an http:// or https:// URL such as "
                 "http://127.0.0.1:11434/v1");
        return -1;
    }
    plen = u->url.path.len;
    while (plen > 0 && u->url.path.base[plen - 1] == '/')
        plen--;
    u->path = kn_malloc(plen + sizeof("/chat/completions"));
    memcpy(u->path, u->url.path.base, plen);
    memcpy(u->path + plen, "/chat/completions", sizeof("/chat/completions"));
    if (c->model_api_key[0] != '\0') {
        size_t n = strlen(c->model_api_key) + 32;
        u->auth_header = kn_malloc(n);
        snprintf(u->auth_header, n, "Authorization: Bearer %s\r\n", c->model_api_key);
    } else {
        u->auth_header = kn_strdup("");
    }
    if (u->url.scheme == &H2O_URL_SCHEME_HTTPS) {
        u->ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (u->ssl_ctx == NULL || SSL_CTX_set_default_verify_paths(u->ssl_ctx) != 1) {
            snprintf(err, errsize, "cannot set up TLS for KONNECT_MODEL_URL");
            return -1;
        }
        SSL_CTX_set_verify(u->ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    return 0;
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
    memset(u, 0, sizeof(*u));
}

static void on_ledger_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

void live_worker_init(struct worker *w)
{
    struct live_worker *lw = &w->live;
    const struct kn_config *c = w->srv->cfg;
    struct live_upstream *u = &w->srv->upstream;
    h2o_loop_t *loop = w->ctx.loop;

    h2o_timeout_init(loop, &lw->io_timeout, c->model_first_byte_timeout_ms);
    h2o_timeout_init(loop, &lw->connect_timeout, c->model_connect_timeout_ms);
    h2o_timeout_init(loop, &lw->first_byte_timeout, c->model_first_byte_timeout_ms);
    h2o_timeout_init(loop, &lw->total_timeout, c->model_timeout_ms);
    h2o_timeout_init(loop, &lw->watch_timeout, WATCH_MS);
    upstream_pool_init(&lw->pool, loop, &w->ctx.receivers.hostinfo_getaddr, u->url.host,
                       h2o_url_get_port(&u->url), u->ssl_ctx, &lw->io_timeout, POOL_IDLE_MS,
                       POOL_IDLE_MAX);
    h2o_multithread_register_receiver(w->ctx.queue, &lw->ledger_receiver, on_ledger_answers);
    h2o_linklist_init_anchor(&lw->reqs);
    lw->ready = 1;
}

void live_worker_dispose(struct worker *w)
{
    struct live_worker *lw = &w->live;
    h2o_loop_t *loop = w->ctx.loop;

    if (!lw->ready)
        return;
    /* Answers that arrived after the loop stopped belong to requests that are gone. */
    on_ledger_answers(&lw->ledger_receiver, &lw->ledger_receiver._messages);
    h2o_multithread_unregister_receiver(w->ctx.queue, &lw->ledger_receiver);
    upstream_pool_dispose(&lw->pool);
    h2o_timeout_dispose(loop, &lw->io_timeout);
    h2o_timeout_dispose(loop, &lw->connect_timeout);
    h2o_timeout_dispose(loop, &lw->first_byte_timeout);
    h2o_timeout_dispose(loop, &lw->total_timeout);
    h2o_timeout_dispose(loop, &lw->watch_timeout);
    lw->ready = 0;
}

/* ---- ending a live request --------------------------------------------------------------- */

static void unlink_timer(h2o_timeout_entry_t *t)
{
    if (h2o_timeout_is_linked(t))
        h2o_timeout_unlink(t);
}

/* Frees lr once nothing refers to it any more: no backend call, no ledger answer to come, no
 * client request. */
static void maybe_free(struct live_req *lr)
{
    if (lr->client != NULL || lr->phase == PHASE_BILLING || lr->req != NULL || lr->busy)
        return;
    unlink_timer(&lr->total_timer);
    unlink_timer(&lr->phase_timer);
    unlink_timer(&lr->watch_timer);
    h2o_linklist_unlink(&lr->node);
    if (lr->quota_held)
        limiter_quota_release(lr->limiter, lr->key->acct, lr->month, lr->tokens_held);
    limiter_inflight_release(lr->limiter, lr->key->acct);
    chat_call_cleanup(&lr->call);
    sse_free(&lr->sse);
    free(lr->head);
    free(lr->body);
    free(lr->out);
    free(lr->wire);
    free(lr->usage_event);
    free(lr);
}

/* The client has its answer (or is gone): forget the request. */
static void detach(struct live_req *lr)
{
    if (lr->guard != NULL)
        lr->guard->lr = NULL;
    lr->guard = NULL;
    lr->req = NULL;
    unlink_timer(&lr->watch_timer);
}

static void cancel_backend(struct live_req *lr)
{
    if (lr->client != NULL) {
        upstream_call_cancel(lr->client);
        lr->client = NULL;
    }
    unlink_timer(&lr->total_timer);
    unlink_timer(&lr->phase_timer);
}

static void flush_out(struct live_req *lr);
static void append_out(struct live_req *lr, const char *s, size_t n);

/* Ends the request with an error, unbilled: a JSON error when nothing was sent yet, otherwise an
 * error event that closes the stream. */
static void fail(struct live_req *lr, enum kn_err err, const char *message)
{
    cancel_backend(lr);
    lr->phase = PHASE_DONE;
    if (lr->req == NULL) {
        maybe_free(lr);
        return;
    }
    if (!lr->streaming) {
        h2o_req_t *req = lr->req;
        detach(lr);
        http_send_error(req, &lr->info, err, message, NULL);
        maybe_free(lr);
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
    append_out(lr, ev, elen);
    free(ev);
    lr->ending = 1;
    flush_out(lr);
}

static void bill(struct live_req *lr, uint32_t in, uint32_t out);

/* The tokens of a streamed answer so far: the backend's latest usage, plus the estimate of
 * what it generated after that usage (none when usage came last, as it does at the end of a
 * stream; all of it from a backend that reported usage early and never again); without usage,
 * the estimates (the whole upstream request for the input, every generated byte for the
 * output). */
static void stream_tokens(const struct live_req *lr, uint32_t *in, uint32_t *out)
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
static void end_with_error(struct live_req *lr, enum kn_err err, const char *what)
{
    char msg[sizeof(lr->end_msg)];

    if (stream_delivered(lr)) {
        uint32_t in, out;
        lr->end_err = err;
        snprintf(lr->end_msg, sizeof(lr->end_msg),
                 "%s The part of the answer already streamed was billed.", what);
        stream_tokens(lr, &in, &out);
        bill(lr, in, out);
        return;
    }
    snprintf(msg, sizeof(msg), "%s This request was not billed.", what);
    fail(lr, err, msg);
}

/* A client left in the middle of a streamed answer. The backend call stops at once; what the
 * backend generated until then was for this client and is billed. Returns 1 when it was billed,
 * 0 when nothing had been delivered (nothing is billed then). */
static int bill_partial_stream(struct live_req *lr)
{
    uint32_t in, out;

    if (!stream_delivered(lr))
        return 0;
    stream_tokens(lr, &in, &out);
    bill(lr, in, out);
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
    maybe_free(lr);
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
            fail(lr, KN_ERR_CLIENT_CLOSED, NULL);
        return;
    }
    if (lr->phase == PHASE_DONE && lr->ending && lr->sending) {
        /* The answer is over (and billed, or not to be), but its end waits behind bytes the
         * client does not read: h2o 2.2.5 has no write timeout, so after the request timeout
         * the connection is shut down, which fails the write and frees the request and the
         * account's in-flight slot. */
        uint64_t now = kn_mono_ns(),
                 limit = (uint64_t)lr->w->srv->cfg->request_timeout_ms * 1000000u;
        h2o_socket_t *sock = lr->req->conn->callbacks->get_socket != NULL
                                 ? lr->req->conn->callbacks->get_socket(lr->req->conn)
                                 : NULL;
        if (lr->stalled_ns == 0) {
            lr->stalled_ns = now;
        } else if (now - lr->stalled_ns >= limit && sock != NULL) {
            fprintf(stderr,
                    "konnect: request %s: the client read nothing of its answer's end for %u ms; "
                    "closing its connection\n",
                    lr->info.request_id, lr->w->srv->cfg->request_timeout_ms);
            shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
        }
    }
    h2o_timeout_link(lr->w->ctx.loop, &lr->w->live.watch_timeout, &lr->watch_timer);
}

void live_worker_stop(struct worker *w)
{
    h2o_linklist_t *node = w->live.reqs.next, *next;

    w->live.stopping = 1;
    for (; node != &w->live.reqs; node = next) {
        struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, node, node);
        next = node->next; /* Ending lr may free it, never another request. */
        if (lr->phase < PHASE_BILLING)
            end_with_error(lr, KN_ERR_SHUTTING_DOWN, "The server is shutting down.");
    }
}

size_t live_worker_billing(struct worker *w)
{
    size_t n = 0;

    for (h2o_linklist_t *node = w->live.reqs.next; node != &w->live.reqs; node = node->next)
        n += H2O_STRUCT_FROM_MEMBER(struct live_req, node, node)->phase == PHASE_BILLING;
    return n;
}

static void on_total_timeout(h2o_timeout_entry_t *entry)
{
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, total_timer, entry);
    char msg[160];

    snprintf(msg, sizeof(msg), "The model backend did not finish its answer within %u ms.",
             lr->w->srv->cfg->model_timeout_ms);
    end_with_error(lr, KN_ERR_MODEL_BACKEND_TIMEOUT, msg);
}

static void on_phase_timeout(h2o_timeout_entry_t *entry)
{
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, phase_timer, entry);
    const struct kn_config *c = lr->w->srv->cfg;
    char msg[160];

    if (lr->phase == PHASE_CONNECT)
        snprintf(msg, sizeof(msg), "The model backend did not accept a connection within %u ms.",
                 c->model_connect_timeout_ms);
    else
        snprintf(msg, sizeof(msg), "The model backend did not start answering within %u ms.",
                 c->model_first_byte_timeout_ms);
    end_with_error(lr, KN_ERR_MODEL_BACKEND_TIMEOUT, msg);
}

/* ---- output to the client ---------------------------------------------------------------- */

static void append_out(struct live_req *lr, const char *s, size_t n)
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
        flush_out(lr); /* The last bytes: lr may be gone after this. */
        return;
    }
    flush_out(lr);
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
static void flush_out(struct live_req *lr)
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
        maybe_free(lr);
}

/* ---- billing ----------------------------------------------------------------------------- */

static void on_ledger_done(struct ledger_entry *e, int ok)
{
    /* On the store thread: hand the answer back to the request's event loop. */
    struct live_req *lr = H2O_STRUCT_FROM_MEMBER(struct live_req, ledger, e);
    lr->ledger_ok = ok;
    h2o_multithread_send_message(&lr->w->live.ledger_receiver, &lr->msg);
}

/* Queues the ledger row of a request that the backend answered in full. Its answer (the plain
 * body, or the end of the stream) waits in `out` until the row is durable. */
static void bill(struct live_req *lr, uint32_t in, uint32_t out)
{
    struct store_ledger_row *row = &lr->ledger.row;
    struct timeval tv;

    cancel_backend(lr);
    lr->in_tokens = in;
    lr->out_tokens = out;
    memset(row, 0, sizeof(*row));
    kn_strlcpy(row->request_id, lr->info.request_id, sizeof(row->request_id));
    kn_strlcpy(row->account_id, lr->key->account_id, sizeof(row->account_id));
    kn_strlcpy(row->key_id, lr->key->id, sizeof(row->key_id));
    kn_strlcpy(row->environment, apikey_env_name((enum apikey_env)lr->key->env),
               sizeof(row->environment));
    kn_strlcpy(row->model, lr->pm.name, sizeof(row->model));
    kn_strlcpy(row->currency, lr->currency, sizeof(row->currency));
    kn_strlcpy(row->plan, lr->plan, sizeof(row->plan));
    row->input_tokens = in;
    row->output_tokens = out;
    row->price_micros = plan_model_price(&lr->pm, in, out);
    gettimeofday(&tv, NULL);
    row->at_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    lr->ledger.done = on_ledger_done;
    lr->phase = PHASE_BILLING;
    keysync_bill(lr->w->srv->ks, &lr->ledger);
}

static void on_ledger_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        struct live_req *lr = (struct live_req *)msg;
        h2o_linklist_unlink(&msg->link);
        lr->phase = PHASE_DONE;
        if (!lr->ledger_ok) {
            if (lr->end_err != KN_OK)
                fprintf(stderr,
                        "konnect: request %s streamed part of an answer that could not be "
                        "billed: the ledger is not writable\n",
                        lr->info.request_id);
            fail(lr, KN_ERR_BILLING_UNAVAILABLE, NULL);
            continue;
        }
        /* Billed: the reservation became usage. */
        lr->quota_held = 0;
        limiter_quota_settle(lr->limiter, lr->key->acct, lr->month, lr->tokens_held,
                             (uint64_t)lr->in_tokens + lr->out_tokens);
        if (lr->req == NULL) {
            maybe_free(lr); /* Billed, but the client left before the answer. */
        } else if (lr->end_err != KN_OK) {
            fail(lr, lr->end_err, lr->end_msg); /* Billed for its part: the stream ends. */
        } else if (lr->call.stream) {
            if (lr->usage_event != NULL)
                append_out(lr, lr->usage_event, lr->usage_event_len);
            lr->ending = 1;
            flush_out(lr);
        } else {
            h2o_req_t *req = lr->req;
            detach(lr);
            http_send_json(req, &lr->info, 200, "OK", lr->out, lr->out_len);
            maybe_free(lr);
        }
    }
}

/* ---- the backend's answer ---------------------------------------------------------------- */

/* Usage that cannot be read is a broken backend's, not the customer's to pay: it is ignored and
 * the request billed by estimate, once logged. */
static void warn_usage(struct live_req *lr)
{
    if (lr->usage_warned++)
        return;
    fprintf(stderr,
            "konnect: warning: the model backend reported usage that cannot be read for request "
            "%s (a count that is negative, fractional or over %d); it is billed by estimate\n",
            lr->info.request_id, CHAT_USAGE_MAX);
}

/* A plain answer, complete. */
static void finish_plain(struct live_req *lr)
{
    struct chat_result r;
    uint32_t in, out;
    char *doc;
    size_t len;

    if (chat_result_parse(lr->body != NULL ? lr->body : "", lr->body_len, &r) != 0) {
        fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
             "The model backend's answer was not a chat completion. This request was not "
             "billed.");
        return;
    }
    if (r.usage_invalid)
        warn_usage(lr);
    /* Without usage, the whole message is estimated: content, reasoning, tool calls. */
    in = r.has_usage ? r.input_tokens : lr->call.input_estimate;
    out = r.has_usage ? r.output_tokens : chat_event_tokens(r.generated_bytes);
    if (lr->rename && r.root != NULL)
        json_object_set_new(r.root, "model", json_string(lr->pm.name));
    if (lr->call.api == CHAT_API_KONNECT)
        doc = chat_konnect_response(lr->id, lr->created,
                                    lr->rename || r.model == NULL ? lr->pm.name : r.model, 1,
                                    r.content, r.content_len, r.finish_reason, in, out, &len);
    else if (!r.has_usage)
        doc = chat_openai_completion(r.root, NULL, 0, NULL, NULL, 0, in, out, &len);
    else if (lr->rename)
        doc = chat_json_dump(r.root, &len);
    else {
        /* The backend's own document goes to the client as it came. */
        doc = kn_malloc(lr->body_len + 1);
        memcpy(doc, lr->body, lr->body_len);
        len = lr->body_len;
    }
    chat_result_cleanup(&r);
    if (doc == NULL) {
        fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
             "The model backend's answer was not valid text. This request was not billed.");
        return;
    }
    free(lr->out);
    lr->out = doc;
    lr->out_len = lr->out_cap = len;
    bill(lr, in, out);
}

/* One streamed event. Returns 0 to go on, 1 when the stream failed (the request then ended). */
static int on_event(void *ud, const char *data, size_t len)
{
    struct live_req *lr = ud;
    struct chat_chunk c;
    char *ev = NULL, *renamed = NULL;
    size_t elen = 0;

    if (lr->saw_done)
        return 0; /* Nothing counts after [DONE]. */
    if (chat_chunk_parse(data, len, &c) != 0) {
        end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                       "The model backend sent an event that is not JSON.");
        return 1;
    }
    if (c.done) {
        lr->saw_done = 1;
        return 0;
    }
    if (c.usage_invalid)
        warn_usage(lr);
    if (c.generated_bytes > 0) {
        uint32_t t = chat_event_tokens(c.generated_bytes);
        lr->gen_tokens = UINT32_MAX - lr->gen_tokens < t ? UINT32_MAX : lr->gen_tokens + t;
        lr->gen_events++;
    }
    if (c.has_usage) { /* It counts what came until now, this event's text included. */
        lr->have_usage = 1;
        lr->in_tokens = c.input_tokens;
        lr->out_tokens = c.output_tokens;
        lr->gen_at_usage = lr->gen_tokens;
    }
    if (lr->rename && c.root != NULL && json_object_get(c.root, "model") != NULL) {
        /* The public name, never the backend's: the event is written anew. */
        json_object_set_new(c.root, "model", json_string(lr->pm.name));
        data = renamed = chat_json_dump(c.root, &len);
    } else if (!lr->rename && c.model != NULL && chat_valid_model(c.model, strlen(c.model))) {
        kn_strlcpy(lr->model, c.model, sizeof(lr->model));
    }
    if (c.finish_reason != NULL) {
        lr->saw_finish = 1;
        /* Cut at a whole character: the value goes into a JSON event of ours. */
        utf8_clean_copy(lr->finish, sizeof(lr->finish), c.finish_reason);
    }
    if (lr->call.api == CHAT_API_OPENAI) {
        if (c.has_choices) {
            /* The backend's chunk goes to the client as it came. */
            append_out(lr, "data: ", 6);
            append_out(lr, data, len);
            append_out(lr, "\n\n", 2);
        } else if (c.has_usage && lr->call.include_usage) {
            free(lr->usage_event);
            lr->usage_event = kn_malloc(len + 8);
            memcpy(lr->usage_event, "data: ", 6);
            memcpy(lr->usage_event + 6, data, len);
            memcpy(lr->usage_event + 6 + len, "\n\n", 2);
            lr->usage_event_len = len + 8;
        }
    } else if (c.content != NULL && c.content_len > 0) {
        ev = chat_konnect_delta_event(lr->id, lr->created, lr->model, 1, c.content, c.content_len,
                                      &elen);
        if (ev != NULL)
            append_out(lr, ev, elen);
        free(ev);
    }
    chat_chunk_cleanup(&c);
    free(renamed);
    return 0;
}

/* The streamed answer ended (the backend finished its response). */
static void finish_stream(struct live_req *lr)
{
    uint32_t in, out;

    if (!lr->saw_finish && !lr->have_usage) {
        flush_out(lr);
        end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                       "The model backend ended its stream without finishing the answer.");
        return;
    }
    stream_tokens(lr, &in, &out);
    if (lr->call.api == CHAT_API_KONNECT) {
        size_t elen;
        char *ev = chat_konnect_final_event(lr->id, lr->created, lr->model, 1,
                                            lr->finish[0] ? lr->finish : "stop", in, out, &elen);
        free(lr->usage_event);
        lr->usage_event = ev;
        lr->usage_event_len = elen;
    } else {
        if (lr->have_usage && out != lr->out_tokens) { /* it generated more after its usage */
            free(lr->usage_event);
            lr->usage_event = NULL;
        }
        if (lr->call.include_usage && lr->usage_event == NULL)
            lr->usage_event = chat_openai_usage_event(lr->id, lr->created, lr->model, in, out,
                                                      &lr->usage_event_len);
        size_t n = lr->usage_event != NULL ? lr->usage_event_len : 0;
        lr->usage_event = kn_realloc(lr->usage_event, n + 15);
        memcpy(lr->usage_event + n, "data: [DONE]\n\n", 15);
        lr->usage_event_len = n + 14;
    }
    /* Everything streamed so far goes now; the end waits for the ledger. */
    flush_out(lr);
    bill(lr, in, out);
}

static int on_body(struct upstream_call *client, const char *err, const char *data, size_t len)
{
    struct live_req *lr = client->data;
    const struct kn_config *c = lr->w->srv->cfg;

    /* While the answer is handled, nothing may cancel the call (it ends when this returns
     * non-zero or was given an error) or free lr (maybe_free waits for `busy`). */
    lr->client = NULL;
    lr->busy = 1;
    if (err != NULL && err != upstream_error_eos) {
        /* Whatever arrived with the error counts: it was generated and may have been sent. */
        int r = lr->call.stream && len > 0 ? sse_feed(&lr->sse, data, len, on_event, lr) : 0;
        if (r == 0)
            flush_out(lr);
        if (r > 0) {
            /* An event ended the request already. */
        } else if (r < 0) {
            end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                           "The model backend sent an event larger than 1 MiB.");
        } else if (err == upstream_error_timeout) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "The model backend went silent for %u ms in the middle of its answer.",
                     c->model_first_byte_timeout_ms);
            end_with_error(lr, KN_ERR_MODEL_BACKEND_TIMEOUT, msg);
        } else if (err == upstream_error_parse) {
            end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                           "The model backend's answer is not valid HTTP.");
        } else {
            end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                           "The model backend closed the connection in the middle of its answer.");
        }
    } else if (lr->call.stream) {
        int r = len > 0 ? sse_feed(&lr->sse, data, len, on_event, lr) : 0;
        if (r < 0) {
            flush_out(lr);
            end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                           "The model backend sent an event larger than 1 MiB.");
        } else if (r == 0 && err == upstream_error_eos) {
            finish_stream(lr);
        } else if (r == 0) {
            flush_out(lr);
        }
    } else if (lr->body_len + len > c->model_max_response_bytes) {
        fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
             "The model backend's answer is larger than the limit set by the operator "
             "(KONNECT_MODEL_MAX_RESPONSE_BYTES). This request was not billed.");
    } else {
        if (lr->body_len + len > lr->body_cap) {
            lr->body_cap = (lr->body_len + len) * 2;
            lr->body = kn_realloc(lr->body, lr->body_cap);
        }
        if (len > 0)
            memcpy(lr->body + lr->body_len, data, len);
        lr->body_len += len;
        if (err == upstream_error_eos)
            finish_plain(lr);
    }
    lr->busy = 0;
    if (lr->phase == PHASE_BODY && err == NULL) {
        lr->client = client; /* Still reading. */
        if (lr->sending && lr->out_len >= OUT_PAUSE_BYTES && !lr->paused) {
            /* The client reads slower than the backend writes: let the backend wait. */
            lr->paused = 1;
            upstream_call_pause(client);
        }
        return 0;
    }
    maybe_free(lr);
    return -1; /* Stop reading (ignored at the end of the answer, which keeps the connection). */
}

static enum kn_err status_error(int status)
{
    if (status == 429 || status == 503)
        return KN_ERR_MODEL_BACKEND_OVERLOADED;
    if (status >= 400 && status < 500 && status != 401 && status != 403 && status != 407)
        return KN_ERR_MODEL_BACKEND_REJECTED;
    return KN_ERR_MODEL_BACKEND_ERROR;
}

static upstream_body_cb on_head(struct upstream_call *client, const char *err, int status,
                                h2o_iovec_t content_type)
{
    struct live_req *lr = client->data;

    unlink_timer(&lr->phase_timer);
    if (err != NULL) {
        lr->client = NULL; /* The call is over. */
        fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
             err == upstream_error_parse
                 ? "The model backend's answer is not valid HTTP. This request was not billed."
             : err == upstream_error_closed
                 ? "The model backend closed the connection without answering. This request "
                   "was not billed."
                 : "The model backend failed before answering. This request was not billed.");
        return NULL;
    }
    if (status != 200) {
        char m[160];
        snprintf(m, sizeof(m),
                 "%s (the model backend answered HTTP %d). This request was not billed.",
                 status_error(status) == KN_ERR_MODEL_BACKEND_REJECTED
                     ? "The model backend rejected the request"
                 : status_error(status) == KN_ERR_MODEL_BACKEND_OVERLOADED
                     ? "The model backend is overloaded; retry shortly"
                     : "The model backend failed to answer",
                 status);
        lr->client = NULL;
        fail(lr, status_error(status), m);
        return NULL;
    }
    if (lr->call.stream && !(content_type.len >= 17 &&
                             h2o_lcstris(content_type.base, 17, H2O_STRLIT("text/event-stream")))) {
        lr->client = NULL;
        fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
             "The model backend did not stream its answer as Server-Sent Events. This request "
             "was not billed.");
        return NULL;
    }
    lr->phase = PHASE_BODY;
    return on_body;
}

static upstream_head_cb on_connect(struct upstream_call *client, const char *err,
                                   h2o_iovec_t **reqbufs, size_t *reqbufcnt)
{
    struct live_req *lr = client->data;

    unlink_timer(&lr->phase_timer);
    if (err != NULL) {
        lr->client = NULL;
        fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
             "The model backend cannot be reached. This request was not billed.");
        return NULL;
    }
    lr->phase = PHASE_FIRST_BYTE;
    lr->phase_timer.cb = on_phase_timeout;
    h2o_timeout_link(lr->w->ctx.loop, &lr->w->live.first_byte_timeout, &lr->phase_timer);
    *reqbufs = lr->reqbufs;
    *reqbufcnt = 2;
    return on_head;
}

/* ---- the request ------------------------------------------------------------------------- */

void live_handle(h2o_req_t *req, struct reqinfo *info, struct keyrec *key,
                 const struct live_terms *terms, struct chat_call *call)
{
    struct worker *w = http_worker_of(req);
    struct live_upstream *u = &w->srv->upstream;
    struct live_req *lr = kn_calloc(1, sizeof(*lr));
    size_t hsize;

    lr->w = w;
    h2o_linklist_insert(&w->live.reqs, &lr->node);
    lr->req = req;
    lr->info = *info;
    lr->key = key;
    lr->month = terms->month;
    lr->limiter = terms->limiter;
    lr->quota_held = 1;
    lr->tokens_held = terms->held;
    lr->pm = *terms->pm;
    kn_strlcpy(lr->plan, terms->plan->name, sizeof(lr->plan));
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
    lr->total_timer.cb = on_total_timeout;
    lr->phase_timer.cb = on_phase_timeout;
    lr->watch_timer.cb = on_watch;
    h2o_timeout_link(w->ctx.loop, &w->live.total_timeout, &lr->total_timer);
    h2o_timeout_link(w->ctx.loop, &w->live.connect_timeout, &lr->phase_timer);
    h2o_timeout_link(w->ctx.loop, &w->live.watch_timeout, &lr->watch_timer);
    upstream_call_start(&lr->client, lr, &w->live.pool, on_connect);
}
