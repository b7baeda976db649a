/* The record of one live request and the calls its two halves share: http/live.c (admission,
 * timers, the client, billing, the end) and http/live_answer.c (the backend's answer, plain or
 * streamed). Private to those two files. */
#ifndef KN_HTTP_LIVE_REQ_H
#define KN_HTTP_LIVE_REQ_H

#include <stdint.h>

#include "chat/chat.h"
#include "chat/openai.h"
#include "core/errors.h"
#include "http/live.h"
#include "http/response.h"
#include "metering/plans.h"

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
    struct live_worker *lw;
    h2o_req_t *req; /* NULL once the client is gone or has its answer. */
    struct live_guard *guard;
    struct upstream_call *client; /* While the backend call runs. */
    struct reqinfo info;
    struct keyrec *key;
    int64_t month;
    int quota_held;                 /* The request still holds its reservation in the quota. */
    struct quota_hold hold;         /* What it reserved in the quotas. */
    struct limiter *limiter;        /* Where the reservation and the in-flight slot go back. */
    int leased;                     /* ...or its lease in Redis (live_terms). */
    int slot_back;                  /* Its in-flight slot is given back (detach). */
    int64_t plan_version;           /* The plans version at admission (its ledger row names it). */
    struct plan_model pm;           /* The model as billed: public name and prices of its plan. */
    size_t attempt;                 /* Which of pm.backends is asked (0 without any). */
    const struct live_upstream *up; /* The backend asked now. */
    char sent_model[PLAN_MODEL_MAX + 1]; /* The model name in call.body. */
    char plan[PLAN_NAME_MAX + 1];
    char currency[8];
    int rename; /* With a model catalogue, answers name the public model, never the backend's. */
    int busy;   /* Inside a callback of the backend call: lr must not be freed. */
    struct chat_call call;
    char id[48];
    int64_t created;
    enum phase phase;
    int err_status; /* The backend's HTTP status when it answered with an error (its body is read
                     * into body, up to ERR_BODY_MAX bytes, to say why). */
    char *head;     /* The request to the backend: head and body. */
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
    /* kn_mono_ns() at each stage's end (enum live_stage). */
    uint64_t began_ns, admitted_ns, connected_ns, answered_ns, acked_ns;
};

/* Ends the request with an error, unbilled: a JSON error when nothing was sent yet, otherwise an
 * error event that closes the stream. */
void live_fail(struct live_req *lr, enum kn_err err, const char *message);
/* Ends a live request that cannot finish: `what` says why. A stream that delivered part of its
 * answer is billed for it and ends, once its row is durable, with an error event; anything else
 * ends unbilled. */
void live_end_with_error(struct live_req *lr, enum kn_err err, const char *what);
/* Queues the ledger row of a request the backend answered; its answer waits in `out` until the
 * row is durable. */
void live_bill(struct live_req *lr, uint32_t in, uint32_t out);
/* Adds bytes for the client, and sends what waits unless a send is in progress. */
void live_append_out(struct live_req *lr, const char *s, size_t n);
void live_flush_out(struct live_req *lr);
/* The tokens of a streamed answer so far (the backend's latest usage, plus the estimate of what
 * came after it). */
void live_stream_tokens(const struct live_req *lr, uint32_t *in, uint32_t *out);
void live_unlink_timer(h2o_timeout_entry_t *t);
/* Frees lr once nothing refers to it any more. */
void live_maybe_free(struct live_req *lr);
void live_on_phase_timeout(h2o_timeout_entry_t *entry);
/* The backend asked failed before any byte of the answer went to the client (`why` says how,
 * for the log): the request goes on to the model's next backend when it has one. Returns 1 when
 * it does, 0 when the caller must end the request. Nothing of a failed attempt is billed. */
int live_failover(struct live_req *lr, const char *why);
/* The backend call's first callback (http/live_answer.c): sends the request, then reads the
 * answer. */
upstream_head_cb live_on_connect(struct upstream_call *client, const char *err,
                                 h2o_iovec_t **reqbufs, size_t *reqbufcnt);

#endif
