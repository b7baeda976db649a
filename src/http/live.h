/* Live requests: a live key's chat request goes to the model backend (any OpenAI-compatible
 * chat-completions server) over HTTP/1.1 from the event loop itself, with pooled keep-alive
 * connections, so that no loop ever blocks and no thread hop adds latency. The answer reaches
 * the client only once its ledger row is durable (keys/keysync.h), so that every answer delivered
 * is billed; a request that fails, times out or whose client goes away is not billed and gives
 * its quota back.
 *
 * Timeouts (KONNECT_MODEL_*_TIMEOUT_MS): connecting, the first byte of the answer, the whole
 * answer, and the same first-byte limit for any silence in the middle of a streamed answer. */
#ifndef KN_HTTP_LIVE_H
#define KN_HTTP_LIVE_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdio.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>

#include "chat/openai.h"
#include "core/config.h"
#include "core/histogram.h"
#include "http/upstream.h"
#include "limits/quota.h"
#include "metering/ledger.h"

struct reqinfo;
struct keyrec;

/* A model backend, parsed once: KONNECT_MODEL_URL's at start, a catalogue model's own
 * ("backends", metering/plans.h) when an event loop first sends it a request. */
struct live_upstream {
    char *text; /* The URL as given (url points into it); owned. */
    h2o_url_t url;
    char *path;        /* The URL's path + "/chat/completions". */
    char *auth_header; /* "Authorization: Bearer ...\r\n", or "" without KONNECT_MODEL_API_KEY. */
    SSL_CTX *ssl_ctx;  /* For an https:// backend (peers verified against the system CAs). */
};

/* What an event loop's live requests are handed when it is set up: the backend, the limits, and
 * where bills go. */
struct live_setup {
    const struct live_upstream *upstream;
    unsigned connect_timeout_ms;    /* KONNECT_MODEL_CONNECT_TIMEOUT_MS */
    unsigned first_byte_timeout_ms; /* KONNECT_MODEL_FIRST_BYTE_TIMEOUT_MS, and any silence */
    unsigned total_timeout_ms;      /* KONNECT_MODEL_TIMEOUT_MS */
    unsigned stall_timeout_ms;      /* An answer's end waiting for a client that reads nothing (h2o
                                     * 2.2.5 has no write timeout): KONNECT_REQUEST_TIMEOUT_MS. */
    size_t max_response_bytes;      /* KONNECT_MODEL_MAX_RESPONSE_BYTES */
    /* The billing sink: takes a ledger entry, and calls its done once the row is durable or
     * given up, from any thread (the server's is the store thread, keysync_bill). */
    void (*bill)(void *ud, struct ledger_entry *e);
    void *bill_ud;
};

/* The stages of a live request that was answered, each timed (nanoseconds) into a histogram of
 * its loop: what holds an answer, and where. */
enum live_stage {
    LIVE_STAGE_ADMIT,   /* the handler: body, plan, quota and in-flight admission */
    LIVE_STAGE_CONNECT, /* admitted: a pooled connection to the backend (or a new one) */
    LIVE_STAGE_BACKEND, /* the request sent, until the backend's answer is complete */
    LIVE_STAGE_QUEUE,   /* the bill queued, until the store thread takes it */
    LIVE_STAGE_COMMIT,  /* its group commit (with the others taken with it) */
    LIVE_STAGE_WAKE,    /* committed, until the loop has the acknowledgement */
    LIVE_STAGE_ANSWER,  /* the acknowledgement, until the answer is handed to h2o */
    LIVE_STAGE_TOTAL,   /* from the handler to the answer */
    LIVE_STAGES
};

/* The stage names, as reports print them. */
extern const char *const live_stage_names[LIVE_STAGES];

/* A catalogue backend as one event loop uses it: parsed, with its own connection pool. */
struct live_route {
    char *key; /* Its URL, a newline and its api_key_env: what tells one from another. */
    struct live_upstream up;
    struct upstream_pool pool;
};
#define LIVE_ROUTES_MAX 64 /* Backends one loop keeps (plans reloaded with new ones add more). */

struct live_worker;
struct plan_backend;
/* The loop's route to a catalogue backend, made the first time it is needed. NULL (with a
 * message) when its URL cannot be used or the loop has too many. Only lw's loop may call it. */
struct live_route *live_route_for(struct live_worker *lw, const struct plan_backend *b, char *err,
                                  size_t errsize);

/* One event loop's share: its connection pools, its timers, and its queue of ledger answers. */
struct live_worker {
    struct live_setup setup;
    h2o_context_t *ctx;
    struct upstream_pool pool; /* KONNECT_MODEL_URL's. */
    struct live_route *routes; /* The catalogue's backends this loop has used. */
    size_t nroutes;
    h2o_timeout_t io_timeout, connect_timeout, first_byte_timeout, total_timeout, watch_timeout;
    h2o_timeout_t retry_timeout; /* 0 ms: the next backend is tried outside the failed call. */
    _Atomic uint64_t failovers;  /* Requests sent on to a model's next backend. */
    h2o_multithread_receiver_t ledger_receiver;
    h2o_linklist_t reqs; /* Its live requests, from admission until freed. */
    int stopping;        /* live_worker_stop ran: no live request starts any more. */
    int ready;
    struct histogram stage[LIVE_STAGES]; /* Written by the loop only (core/histogram.h). */
};

/* Parses KONNECT_MODEL_URL and prepares what every request needs. Returns 0, or -1 with a
 * message. */
int live_upstream_init(struct live_upstream *u, const struct kn_config *c, char *err,
                       size_t errsize);
/* The same for a URL and a key ("" for none). */
int live_upstream_init_url(struct live_upstream *u, const char *url, const char *api_key,
                           const char *what, char *err, size_t errsize);
void live_upstream_dispose(struct live_upstream *u);

/* Per event loop; called on the loop's thread before it runs, and after it stopped. */
void live_worker_init(struct live_worker *lw, h2o_context_t *ctx, const struct live_setup *setup);
void live_worker_dispose(struct live_worker *lw);

/* At the end of shutdown's drain: ends every live request still running, and refuses those
 * that arrive after (503 server_shutting_down). A stream that
 * delivered part of its answer is billed for it, as however else it ends, and closes with a
 * server_shutting_down event; anything else is answered 503 server_shutting_down, unbilled.
 * Returns how many bills are still on their way to the ledger (live_worker_billing). */
void live_worker_stop(struct live_worker *lw);
size_t live_worker_billing(struct live_worker *lw);

/* What a live request was admitted on. */
struct live_terms {
    int64_t month;               /* The quota month it was reserved in. */
    struct quota_hold hold;      /* What it reserved in the quotas (limits/quota.h). */
    const struct plan *plan;     /* The account's plan at admission. */
    const struct plan_model *pm; /* The model as billed: public name, backend name, prices. */
    const struct plans *ps;      /* The plans in force (currency, catalogue). */
    struct limiter *limiter;     /* Where the reservation and the slot are given back. */
    uint64_t began_ns;           /* kn_mono_ns() when the handler took the request. */
    int leased; /* Admitted by Redis (limits/cluster.h): its lease, the request id, is settled or
                   released there instead. */
};

/* Writes the stage times of every live request answered since the last call (the first call: since
 * the start) to f, merging the loops' histograms; *before is the caller's copy of the last call's
 * counters (zeroed before the first). For the main thread (SIGUSR1). */
struct live_report {
    struct histogram_snap stage[LIVE_STAGES];
};
void live_report(FILE *f, struct live_worker *const *lws, size_t n, struct live_report *before);

/* Answers a live key's request: call is taken over (its contents moved out), prepared for the
 * backend (chat_call_prepare). The caller has authenticated the key, applied the rate limits,
 * counted the request in its account's in-flight count and reserved it (and terms->hold)
 * in the account's quota for terms->month; live_handle settles or gives both back when the
 * request ends, and the in-flight count in any case. It is billed on the terms it was admitted
 * on. */
void live_handle(struct live_worker *lw, h2o_req_t *req, struct reqinfo *info, struct keyrec *key,
                 const struct live_terms *terms, struct chat_call *call);

#endif
