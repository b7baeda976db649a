/* A live request's answer from the backend (see http/live_req.h): the head, then the body,
 * collected when plain and parsed event by event when streamed, turned into the client's answer
 * and its bill. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <strings.h>

#include "core/redact.h"
#include "core/termsafe.h"
#include "core/util.h"
#include "http/live_req.h"

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
        live_fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
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
        live_fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
                  "The model backend's answer was not valid text. This request was not billed.");
        return;
    }
    free(lr->out);
    lr->out = doc;
    lr->out_len = lr->out_cap = len;
    live_bill(lr, in, out);
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
        live_end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
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
            live_append_out(lr, "data: ", 6);
            live_append_out(lr, data, len);
            live_append_out(lr, "\n\n", 2);
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
            live_append_out(lr, ev, elen);
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
        live_flush_out(lr);
        live_end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                            "The model backend ended its stream without finishing the answer.");
        return;
    }
    live_stream_tokens(lr, &in, &out);
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
    live_flush_out(lr);
    live_bill(lr, in, out);
}

static int on_body(struct upstream_call *client, const char *err, const char *data, size_t len)
{
    struct live_req *lr = client->data;
    const struct live_setup *s = &lr->lw->setup;

    /* While the answer is handled, nothing may cancel the call (it ends when this returns
     * non-zero or was given an error) or free lr (maybe_free waits for `busy`). */
    lr->client = NULL;
    lr->busy = 1;
    if (err != NULL && err != upstream_error_eos) {
        /* Whatever arrived with the error counts: it was generated and may have been sent. */
        int r = lr->call.stream && len > 0 ? sse_feed(&lr->sse, data, len, on_event, lr) : 0;
        if (r == 0)
            live_flush_out(lr);
        if (r > 0) {
            /* An event ended the request already. */
        } else if (r < 0) {
            live_end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                                "The model backend sent an event larger than 1 MiB.");
        } else if (err == upstream_error_timeout) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "The model backend went silent for %u ms in the middle of its answer.",
                     s->first_byte_timeout_ms);
            if (!live_failover(lr, msg))
                live_end_with_error(lr, KN_ERR_MODEL_BACKEND_TIMEOUT, msg);
        } else if (err == upstream_error_parse) {
            live_end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                                "The model backend's answer is not valid HTTP.");
        } else {
            const char *msg =
                "The model backend closed the connection in the middle of its answer.";
            if (!live_failover(lr, msg))
                live_end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR, msg);
        }
    } else if (lr->call.stream) {
        int r = len > 0 ? sse_feed(&lr->sse, data, len, on_event, lr) : 0;
        if (r < 0) {
            live_flush_out(lr);
            live_end_with_error(lr, KN_ERR_MODEL_BACKEND_ERROR,
                                "The model backend sent an event larger than 1 MiB.");
        } else if (r == 0 && err == upstream_error_eos) {
            finish_stream(lr);
        } else if (r == 0) {
            live_flush_out(lr);
        }
    } else if (lr->body_len + len > s->max_response_bytes) {
        live_fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
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
    live_maybe_free(lr);
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

/* How much of an error answer is read to say why (the rest is dropped). */
#define ERR_BODY_MAX 4096

/* The message of a backend's error document: OpenAI's and vLLM's {"error": {"message", "code"}},
 * vLLM's older {"message"}, Ollama's and llama.cpp's {"error": "..."} or {"error": {"message"}}.
 * Writes its code ("" when none) too. "" when the body is not such a document. */
static void backend_reason(const char *body, size_t len, char *msg, size_t msize, char *code,
                           size_t csize)
{
    json_t *doc = json_loadb(body, len, 0, NULL), *e = json_object_get(doc, "error");
    const char *m = json_is_string(e)   ? json_string_value(e)
                    : json_is_object(e) ? json_string_value(json_object_get(e, "message"))
                                        : json_string_value(json_object_get(doc, "message"));
    json_t *c = json_is_object(e) ? json_object_get(e, "code") : NULL;

    msg[0] = code[0] = '\0';
    if (m != NULL) {
        char safe[512];
        redact_copy(safe, sizeof(safe), m);
        termsafe_copy(msg, msize, safe);
    }
    if (json_is_string(c))
        termsafe_copy(code, csize, json_string_value(c));
    json_decref(doc);
}

/* Says what the backend answered, at most once a second per event loop for the same status: the
 * operator's view of a failing backend (its URL, the status, the first bytes of its answer). */
static void log_backend_error(struct live_req *lr)
{
    static __thread uint64_t last_ns;
    static __thread unsigned quiet;
    static __thread int last_status;
    const h2o_url_t *u = &lr->up->url;
    uint64_t now = kn_mono_ns();
    char first[201], safe[201];
    size_t n = lr->body_len < 200 ? lr->body_len : 200;

    if (last_ns != 0 && now - last_ns < 1000000000ull && lr->err_status == last_status) {
        quiet++;
        return;
    }
    memcpy(first, lr->body != NULL ? lr->body : "", n);
    first[n] = '\0';
    redact_copy(safe, sizeof(safe), first);
    termsafe_copy(first, sizeof(first), safe);
    char more[64] = "";
    if (quiet > 0)
        snprintf(more, sizeof(more), " (and %u more such answers in the last second)", quiet);
    fprintf(stderr, "konnect: model backend %.*s://%.*s%s answered HTTP %d to %s%s: %s%s%s\n",
            (int)u->scheme->name.len, u->scheme->name.base, (int)u->authority.len,
            u->authority.base, lr->up->path, lr->err_status, lr->info.request_id,
            lr->err_status == 401 || lr->err_status == 403
                ? (lr->pm.nbackends > 0 ? " (check its key, the model's api_key_env)"
                                        : " (check KONNECT_MODEL_API_KEY)")
            : lr->err_status == 404 ? " (a model it does not know, or a wrong KONNECT_MODEL_URL)"
                                    : "",
            first, lr->body_len > 200 ? "..." : "", more);
    last_ns = now;
    last_status = lr->err_status;
    quiet = 0;
}

/* The backend answered with an error, now read: the customer is told what it was about, when it
 * was about their request, and the operator what the backend said. Never billed. */
static void fail_from_backend(struct live_req *lr)
{
    char reason[400], code[64], m[sizeof(reason) + CHAT_MODEL_MAX + 200];
    int status = lr->err_status;
    enum kn_err e = status_error(status);

    backend_reason(lr->body != NULL ? lr->body : "", lr->body_len, reason, sizeof(reason), code,
                   sizeof(code));
    log_backend_error(lr);
    if (status >= 500 || status == 429) {
        snprintf(m, sizeof(m), "HTTP %d", status);
        if (live_failover(lr, m))
            return;
    }
    if (status == 404) {
        /* The model it does not know (OpenAI's code, or a message that names a model), or a path
         * that is not there at all: the operator's mistake, not the customer's. */
        int model = strcmp(code, "model_not_found") == 0 || strcasestr(reason, "model") != NULL;
        if (model) {
            snprintf(m, sizeof(m),
                     "The model backend does not know the model '%s'%s%s. This request was not "
                     "billed.",
                     lr->model, reason[0] ? ": " : "", reason);
            e = KN_ERR_MODEL_NOT_FOUND;
        } else {
            snprintf(m, sizeof(m),
                     "The model backend is misconfigured (it answered HTTP 404 for its chat "
                     "completions path). This request was not billed.");
            e = KN_ERR_MODEL_BACKEND_ERROR;
        }
    } else if (e == KN_ERR_MODEL_BACKEND_REJECTED) {
        snprintf(m, sizeof(m),
                 "The model backend rejected the request (HTTP %d)%s%s. This request "
                 "was not billed.",
                 status, reason[0] ? ": " : "", reason);
    } else if (e == KN_ERR_MODEL_BACKEND_OVERLOADED) {
        snprintf(m, sizeof(m),
                 "The model backend is overloaded; retry shortly (it answered HTTP "
                 "%d). This request was not billed.",
                 status);
    } else {
        snprintf(m, sizeof(m),
                 "The model backend failed to answer (HTTP %d). This request was "
                 "not billed.",
                 status);
    }
    live_fail(lr, e, m);
}

static int on_error_body(struct upstream_call *client, const char *err, const char *data,
                         size_t len)
{
    struct live_req *lr = client->data;

    lr->client = NULL;
    lr->busy = 1;
    if (len > 0 && lr->body_len < ERR_BODY_MAX) {
        size_t take = len < ERR_BODY_MAX - lr->body_len ? len : ERR_BODY_MAX - lr->body_len;
        if (lr->body_len + take > lr->body_cap) {
            lr->body_cap = lr->body_len + take;
            lr->body = kn_realloc(lr->body, lr->body_cap);
        }
        memcpy(lr->body + lr->body_len, data, take);
        lr->body_len += take;
    }
    if (err != NULL) /* The end of the answer, or of the connection: what came is enough. */
        fail_from_backend(lr);
    lr->busy = 0;
    if (lr->phase == PHASE_BODY && err == NULL) {
        lr->client = client; /* Still reading. */
        return 0;
    }
    live_maybe_free(lr);
    return -1;
}

static upstream_body_cb on_head(struct upstream_call *client, const char *err, int status,
                                h2o_iovec_t content_type)
{
    struct live_req *lr = client->data;

    live_unlink_timer(&lr->phase_timer);
    if (err != NULL) {
        lr->client = NULL; /* The call is over. */
        if (err != upstream_error_parse &&
            live_failover(lr, err == upstream_error_closed ? "it closed the connection"
                                                           : "a network error"))
            return NULL;
        live_fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
                  err == upstream_error_parse
                      ? "The model backend's answer is not valid HTTP. This request was not billed."
                  : err == upstream_error_closed
                      ? "The model backend closed the connection without answering. This request "
                        "was not billed."
                      : "The model backend failed before answering. This request was not billed.");
        return NULL;
    }
    if (status != 200) {
        /* Its answer says why: read it (the phase timer is off; the request's total timeout
         * still holds), then fail. */
        lr->err_status = status;
        lr->body_len = 0;
        lr->phase = PHASE_BODY;
        return on_error_body;
    }
    if (lr->call.stream && !(content_type.len >= 17 &&
                             h2o_lcstris(content_type.base, 17, H2O_STRLIT("text/event-stream")))) {
        lr->client = NULL;
        live_fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
                  "The model backend did not stream its answer as Server-Sent Events. This request "
                  "was not billed.");
        return NULL;
    }
    lr->phase = PHASE_BODY;
    return on_body;
}

upstream_head_cb live_on_connect(struct upstream_call *client, const char *err,
                                 h2o_iovec_t **reqbufs, size_t *reqbufcnt)
{
    struct live_req *lr = client->data;

    live_unlink_timer(&lr->phase_timer);
    if (err != NULL) {
        lr->client = NULL;
        if (!live_failover(lr, "it cannot be reached"))
            live_fail(lr, KN_ERR_MODEL_BACKEND_ERROR,
                      "The model backend cannot be reached. This request was not billed.");
        return NULL;
    }
    lr->phase = PHASE_FIRST_BYTE;
    lr->connected_ns = kn_mono_ns();
    lr->phase_timer.cb = live_on_phase_timeout;
    h2o_timeout_link(lr->lw->ctx->loop, &lr->lw->first_byte_timeout, &lr->phase_timer);
    *reqbufs = lr->reqbufs;
    *reqbufcnt = 2;
    return on_head;
}
