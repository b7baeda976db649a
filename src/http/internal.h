/* What the parts of the HTTP server share: the server and its event-loop workers, the request
 * record that the access log reads, and the helpers that answer a request. Internal to src/http/.
 */
#ifndef KN_HTTP_INTERNAL_H
#define KN_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>

#include "core/config.h"
#include "core/errors.h"
#include "http/accesslog.h"
#include "http/live.h"
#include "http/metrics.h"
#include "http/probe.h"
#include "http/request.h"
#include "http/response.h"
#include "keys/apikey.h"
#include "keys/keytable.h"
#include "limits/ratelimit.h"
#include "limits/redis.h"

#define REFUSAL_SIZE 768
/* Stands for the request id in the prebuilt answer to connections over the limit. */
#define REFUSAL_ID_PLACEHOLDER "req_@@@@@@@@@@@@@@@@@@@@@@@@"
_Static_assert(sizeof(REFUSAL_ID_PLACEHOLDER) == 4 + REQUEST_ID_LEN + 1, "placeholder length");

struct server {
    const struct kn_config *cfg;
    uint8_t secret[APIKEY_SECRET_LEN];
    struct keytable *kt;
    struct keysync *ks;
    struct limiter *limiter; /* Every request counter (limits/limiter.h). */
    int has_redis;           /* Limits counted in Redis too (limits/cluster.h). */
    struct redis_target redis;
    struct iplist *trusted; /* KONNECT_TRUSTED_PROXIES, or NULL. */
    struct tls *tls;        /* KONNECT_TLS_CERT and KEY: HTTPS on the main listener, or NULL. */
    struct accesslog *log;
    h2o_globalconf_t h2o;
    int listen_fd;   /* The first of listen_fds, for printing the address. */
    int metrics_fd;  /* KONNECT_METRICS_LISTEN's socket (the first loop accepts it), or -1. */
    int *listen_fds; /* One listening socket per thread, owned by the threads once started. */
    int lock_fd;     /* Holds the data directory's lock while the server runs. */
    _Atomic unsigned conns;
    _Atomic int stopping;
    struct worker *workers;
    /* Start-up and shutdown phases of the workers (see worker_main). */
    pthread_mutex_t phase_lock;
    pthread_cond_t phase_cond;
    unsigned workers_ready, workers_drained, others_stopped;
    /* The dashboard runs on threads of its own (it does blocking work), http/dashbridge.c. */
    struct dash_lane *lanes;
    char refusal[REFUSAL_SIZE];    /* The raw HTTP answer to a connection over the limit. */
    char refusal_ip[REFUSAL_SIZE]; /* ... and to one over its address's limit. */
    struct ipcounts *ipcounts;     /* Open connections per address (http/conns.c). */
    struct live_upstream upstream; /* The model backend (http/live.c). */
    struct live_setup live_setup;  /* What each loop's live requests are handed. */
    struct live_report *live_seen; /* The stage times at the last report (SIGUSR1). */
    struct backend_state backend;  /* What the backend's probe found (http/probe.c). */
    char backend_url[1100];        /* KONNECT_MODEL_URL without credentials, for messages. */
};

struct worker {
    struct http_loop loop; /* First, so that a request's context leads back to its worker. */
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    struct server *srv;
    pthread_t thread;
    unsigned conns;
    h2o_timeout_t refuse_timeout;
    h2o_multithread_receiver_t dash_receiver; /* Answers from the dashboard thread. */
    h2o_timeout_t dash_watch_timeout;         /* Waiting dashboard jobs look for their client. */
    struct live_worker live;                  /* Live requests (http/live.c). */
    struct probe *probe;                      /* The first loop probes the backend. */
    struct metrics_loop metrics;              /* This loop's counts (http/metrics.h). */
    h2o_socket_t *metrics_listener;           /* The first loop's KONNECT_METRICS_LISTEN. */
    struct {
        h2o_socket_t *sock; /* The connection whose first request is being refused early. */
        enum kn_err err;
    } early;
};

static inline struct worker *http_worker_of(h2o_req_t *req)
{
    return (struct worker *)req->conn->ctx;
}

struct kn_handler {
    h2o_handler_t super;
    struct server *srv;
};

struct kn_filter {
    h2o_filter_t super;
    struct server *srv;
};

/* Connections (http/conns.c): limits, refusals, and the early refusal of a first request that
 * cannot succeed. init and dispose are called once by server_run; on_accept is the listening
 * socket's read callback; early_refusal, called first for every request, answers it (returns 1)
 * when its connection's first read refused it. */
void conns_init(struct server *srv);
void conns_dispose(struct server *srv);
void conns_on_accept(h2o_socket_t *listener, const char *err);
int conns_early_refusal(h2o_req_t *req, struct reqinfo *info);
/* Returns 1 when the request came over a connection of KONNECT_METRICS_LISTEN. */
int conns_is_metrics(h2o_req_t *req);

/* The dashboard bridge (http/dashbridge.c): copies /dashboard/api/ requests to the dashboard's
 * threads and their answers back. start and stop are called once by server_run; the worker
 * calls on each event loop's thread. */
int dashbridge_start(struct server *srv, char *err, size_t errsize);
void dashbridge_stop(struct server *srv);
void dashbridge_worker_init(struct worker *w);
void dashbridge_worker_dispose(struct worker *w);
void http_handle_dashboard_api(h2o_req_t *req, struct reqinfo *info);
/* The management API (/v1/keys, /v1/usage, ...): authenticated here with an admin key, answered
 * on the dashboard's lane of ordinary calls. http_is_manage_path says which paths are its. */
void http_handle_manage(h2o_req_t *req, struct reqinfo *info);
/* The operator API (/v1/operator/...): an operator key's form checked here, the key itself by
 * the lane. http_is_manage_path says which paths are either API's. */
void http_handle_operator(h2o_req_t *req, struct reqinfo *info);
int http_is_manage_path(h2o_iovec_t path);
/* Reads the request's Authorization header and finds its key (a /v1/ request's, at Unix time
 * now), whatever its kind: KN_OK, or the authentication error to answer. Sets info->key. */
enum kn_err http_authenticate_key(h2o_req_t *req, struct reqinfo *info, int64_t now,
                                  struct keyrec **key);
/* The API (http/chat.c) and the dashboard's pages (http/pages.c): route handlers. page and
 * preflight answer (1) requests that are theirs, 0 otherwise; dashboard_host_ok answers 421 (0)
 * to a Host other than KONNECT_PUBLIC_URL's. */
void http_handle_chat_konnect(h2o_req_t *req, struct reqinfo *info);
void http_handle_chat_completions(h2o_req_t *req, struct reqinfo *info);
void http_handle_models(h2o_req_t *req, struct reqinfo *info);
int http_handle_page(h2o_req_t *req, struct reqinfo *info);
int http_handle_preflight(h2o_req_t *req, struct reqinfo *info);
int http_dashboard_host_ok(h2o_req_t *req, struct reqinfo *info);

#endif
