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
#include "keys/apikey.h"
#include "keys/keytable.h"
#include "limits/ratelimit.h"

#define REQUEST_ID_LEN 24 /* base62 characters after "req_" */
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
    struct iplist *trusted;  /* KONNECT_TRUSTED_PROXIES, or NULL. */
    struct accesslog *log;
    h2o_globalconf_t h2o;
    int listen_fd;   /* The first of listen_fds, for printing the address. */
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
};

struct worker {
    h2o_context_t ctx; /* First, so that a request's context leads back to its worker. */
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    struct server *srv;
    pthread_t thread;
    struct logbuf log;
    unsigned conns;
    h2o_timeout_t refuse_timeout;
    h2o_multithread_receiver_t dash_receiver; /* Answers from the dashboard thread. */
    h2o_timeout_t dash_watch_timeout;         /* Waiting dashboard jobs look for their client. */
    struct live_worker live;                  /* Live requests (http/live.c). */
    struct {
        h2o_socket_t *sock; /* The connection whose first request is being refused early. */
        enum kn_err err;
    } early;
};

struct kn_handler {
    h2o_handler_t super;
    struct server *srv;
};

struct kn_filter {
    h2o_filter_t super;
    struct server *srv;
};

/* What a request did, for its access-log line. */
struct reqinfo {
    char request_id[4 + REQUEST_ID_LEN + 1];
    const struct keyrec *key;
    const char *error_code;
};

struct worker *http_worker_of(h2o_req_t *req);
/* The client's address: the socket's peer, or, when that peer is a trusted proxy
 * (KONNECT_TRUSTED_PROXIES), the address it forwarded (ipnet_forwarded_client). IP allowlists,
 * throttles, the audit log and the access log all take it from here. Returns 1 and fills *out,
 * or 0 when the peer is unknown. */
int http_client_addr(h2o_req_t *req, struct sockaddr_storage *out);
/* The same as text ("" when unknown). */
void http_client_ip(h2o_req_t *req, char *out, size_t size);
/* Returns 1 when the socket's peer is a trusted proxy. */
int http_peer_trusted(h2o_req_t *req);
/* The value of the request header `token` (or `name` when token is NULL), or NULL. */
const h2o_iovec_t *http_find_header(h2o_req_t *req, const h2o_token_t *token, const char *name);
/* Returns 1 when the client of an HTTP/1 request has closed its connection. HTTP/1 stops reading
 * a connection while its request is being answered, so h2o would notice only when it writes;
 * this peeks at the socket instead (end of stream or an error: gone). Pipelined bytes waiting
 * count as "still there". */
int http_client_gone(h2o_req_t *req);
/* Returns 1 when the client reached us over HTTPS (directly, or through a trusted proxy). */
int http_is_https(h2o_req_t *req);

/* Connections (http/conns.c): limits, refusals, and the early refusal of a first request that
 * cannot succeed. init and dispose are called once by server_run; on_accept is the listening
 * socket's read callback; early_refusal, called first for every request, answers it (returns 1)
 * when its connection's first read refused it. */
void conns_init(struct server *srv);
void conns_dispose(struct server *srv);
void conns_on_accept(h2o_socket_t *listener, const char *err);
int conns_early_refusal(h2o_req_t *req, struct reqinfo *info);

/* Answers an authentication failure on /v1/: WWW-Authenticate (RFC 6750) and the error, and
 * closes the connection, so that a client without a valid key sends one request on it. */
void http_send_auth_error(h2o_req_t *req, struct reqinfo *info, enum kn_err err);

/* The dashboard bridge (http/dashbridge.c): copies /dashboard/api/ requests to the dashboard's
 * threads and their answers back. start and stop are called once by server_run; the worker
 * calls on each event loop's thread. */
int dashbridge_start(struct server *srv, char *err, size_t errsize);
void dashbridge_stop(struct server *srv);
void dashbridge_worker_init(struct worker *w);
void dashbridge_worker_dispose(struct worker *w);
void http_handle_dashboard_api(h2o_req_t *req, struct reqinfo *info);
void http_log_request(h2o_req_t *req, const struct reqinfo *info, int status);
void http_add_header(h2o_req_t *req, const char *name, const char *value);
/* Sends body (copied) as a JSON response and logs the request. */
void http_send_json(h2o_req_t *req, struct reqinfo *info, int status, const char *reason,
                    const char *body, size_t len);
/* Sends body (copied) with the given Content-Type, no-store, and logs the request. */
void http_send_body(h2o_req_t *req, struct reqinfo *info, int status, const char *reason,
                    const char *content_type, const char *body, size_t len);
/* Sends the JSON error document for err (message and param NULL: the defaults). */
void http_send_error(h2o_req_t *req, struct reqinfo *info, enum kn_err err, const char *message,
                     const char *param);
/* Adds the IETF RateLimit headers and OpenAI's x-ratelimit-*-requests for the tighter limit. */
void http_add_ratelimit_headers(h2o_req_t *req, const struct ratelimit_result *minute,
                                const struct ratelimit_result *day);

#endif
