/* konnect serve: routing, listeners, event-loop threads, start-up and shutdown; see server.h. */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>

#include "auth/bearer.h"
#include "chat/chat.h"
#include "chat/openai.h"
#include "dashboard/dashboard.h"
#include "core/base62.h"
#include "core/errors.h"
#include "core/ipnet.h"
#include "core/jsonw.h"
#include "core/util.h"
#include "http/accesslog.h"
#include "http/tls.h"
#include "http/framing.h"
#include "http/internal.h"
#include "keys/keysync.h"
#include "keys/keytable.h"
#include "limits/cluster.h"
#include "limits/limiter.h"
#include "metering/plans.h"
#include "store/store.h"

/* A request id: "req_" and 24 base62 characters that start with the time, from the loop's clock
 * (wall-clock milliseconds, read once per loop turn). */
static void new_request_id(h2o_req_t *req, char *out)
{
    base62_time_id(out, "req_", REQUEST_ID_LEN, h2o_now(req->conn->ctx->loop));
}

/* ---- health ------------------------------------------------------------------------------ */

static void handle_healthz(h2o_req_t *req, struct reqinfo *info)
{
    static const char body[] = "{\"status\":\"ok\"}";
    http_send_json(req, info, 200, "OK", body, sizeof(body) - 1);
}

/* Readiness, component by component: the store (its last round trip, once a second), the
 * ledger (taking rows, or spooling them), the counters of the limits (local, or Redis reached).
 * Ready when all are well; degraded (still 200: known keys and test keys are served from memory)
 * when the store or the ledger is not; unavailable (503) while the server is stopping, so that a
 * load balancer takes it out before it closes. */
static void handle_readyz(h2o_req_t *req, struct reqinfo *info)
{
    struct server *srv = http_worker_of(req)->srv;
    uint64_t age;
    int store_ok = keysync_ready(srv->ks, &age), ledger_ok = !keysync_billing_down(srv->ks);
    int stopping = atomic_load(&srv->stopping);
    /* With Redis: this loop's connection (each loop has its own), and whether Redis's counts are
     * known good for its current run (until then live requests wait: "checking"). */
    int counters_up = !srv->has_redis || (cluster_conn != NULL && redis_conn_ready(cluster_conn));
    int counters_ok =
        !srv->has_redis || (cluster_conn != NULL && redis_conn_counts_ok(cluster_conn));
    const char *status = stopping                               ? "unavailable"
                         : store_ok && ledger_ok && counters_ok ? "ready"
                                                                : "degraded";
    char body[2400], backend[1500];
    probe_state_json(srv, backend, sizeof(backend));
    int len = snprintf(
        body, sizeof(body),
        "{\"status\":\"%s\",\"node\":\"%s\",\"keys\":%zu,\"store\":\"%s\","
        "\"store_checked_ms_ago\":%llu,\"components\":{\"store\":{\"status\":\"%s\","
        "\"backend\":\"%s\",\"checked_ms_ago\":%llu},\"ledger\":{\"status\":\"%s\","
        "\"spooled\":%llu},\"counters\":{\"status\":\"%s\",\"where\":\"%s\"},"
        "\"model_backend\":%s}}",
        status, keysync_node_id(srv->ks), keytable_count(srv->kt), store_ok ? "ok" : "unreachable",
        (unsigned long long)age, store_ok ? "ok" : "unreachable",
        store_is_postgres(srv->cfg->database) ? "postgresql" : "sqlite", (unsigned long long)age,
        ledger_ok                         ? "ok"
        : srv->cfg->spool_path[0] != '\0' ? "spooling"
                                          : "down",
        (unsigned long long)keysync_spooled(srv->ks),
        counters_ok   ? "ok"
        : counters_up ? "checking"
                      : "unreachable",
        srv->has_redis ? "redis" : "local", backend);
    if (stopping)
        info->error_code = kn_error_def(KN_ERR_NOT_READY)->code;
    http_send_json(req, info, stopping ? 503 : 200, stopping ? "Service Unavailable" : "OK", body,
                   (size_t)len);
}

/* h2o routes on the path decoded and with dot segments resolved: /v1/chat/../keys would reach
 * the management API behind a proxy that lets only /v1/chat through, /v1/keys/ID%2Froll would
 * roll, and %00 would cut an id short. A path that decodes to anything but itself in those ways is
 * refused (400), so that what a proxy, the access log and the router see is the same. */
static int path_plain(h2o_req_t *req)
{
    const char *p = req->path.base;
    size_t n =
        req->query_at != SIZE_MAX && req->query_at < req->path.len ? req->query_at : req->path.len;

    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%' && i + 2 < n) {
            char a = p[i + 1], b = p[i + 2];
            if ((a == '2' && (b == 'f' || b == 'F' || b == 'e' || b == 'E')) ||
                (a == '0' && b == '0') || (a == '5' && (b == 'c' || b == 'C')))
                return 0;
        }
        if (p[i] == '\\')
            return 0;
        if (p[i] == '/' && i + 1 < n && p[i + 1] == '.') {
            size_t j = i + 2;
            if (j < n && p[j] == '.')
                j++;
            if (j == n || p[j] == '/')
                return 0;
        }
    }
    return 1;
}

/* GET /metrics: on KONNECT_METRICS_LISTEN's address (nothing else is served there), or on the
 * main listener to the bearer of KONNECT_METRICS_TOKEN (compared in constant time); without
 * either, /metrics is not found. */
static void handle_metrics(h2o_req_t *req, struct reqinfo *info)
{
    struct server *srv = http_worker_of(req)->srv;
    const char *tok = srv->cfg->metrics_token;
    h2o_iovec_t p = req->path_normalized;

    if (!h2o_memis(p.base, p.len, H2O_STRLIT("/metrics"))) {
        http_send_error(req, info, KN_ERR_NOT_FOUND,
                        "This address serves GET /metrics only (KONNECT_METRICS_LISTEN).", NULL);
        return;
    }
    if (!conns_is_metrics(req)) {
        const h2o_iovec_t *h = http_find_header(req, H2O_TOKEN_AUTHORIZATION, NULL);
        const char *given;
        size_t len, n = strlen(tok);
        if (tok[0] == '\0') {
            http_send_error(req, info, KN_ERR_NOT_FOUND, NULL, NULL);
            return;
        }
        if (h == NULL || bearer_parse(h->base, h->len, &given, &len) != 0 || len != n ||
            sodium_memcmp(given, tok, n) != 0) {
            http_send_auth_error(req, info,
                                 h == NULL ? KN_ERR_MISSING_API_KEY : KN_ERR_INVALID_API_KEY);
            return;
        }
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        http_add_header(req, "allow", "GET, HEAD");
        http_send_error(req, info, KN_ERR_METHOD_NOT_ALLOWED, "/metrics only accepts GET.", NULL);
        return;
    }
    size_t len;
    char *text = metrics_render(srv, &len);
    http_send_body(req, info, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/* ---- routing ----------------------------------------------------------------------------- */

struct route {
    const char *path;  /* Exact, or a prefix when it ends with '/'. */
    const char *allow; /* The Allow header: the methods the route takes. */
    void (*post)(h2o_req_t *, struct reqinfo *);
    void (*get)(h2o_req_t *, struct reqinfo *);
};

static const struct route routes[] = {
    {"/v1/chat", "POST", http_handle_chat_konnect, NULL},
    {"/v1/chat/completions", "POST", http_handle_chat_completions, NULL},
    {"/v1/models", "GET, HEAD", NULL, http_handle_models},
    {"/v1/models/", "GET, HEAD", NULL, http_handle_models},
    {"/healthz", "GET, HEAD", NULL, handle_healthz},
    {"/readyz", "GET, HEAD", NULL, handle_readyz},
};

static size_t header_bytes(h2o_req_t *req)
{
    size_t n = req->input.method.len + req->input.path.len + 12;
    for (size_t i = 0; i != req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    return n;
}

/* RFC 9112 section 6.3: a request whose body two servers could delimit differently (several
 * Content-Length values, Content-Length with Transfer-Encoding, Transfer-Encoding in HTTP/1.0) is
 * refused with 400 and its connection closed, so that nothing after it is ever read as a request
 * (http/framing.h says why the raw head is read). Only requests with a body can have one. Returns
 * 1 when the request may go on. */
static int framing_ok(h2o_req_t *req, struct reqinfo *info)
{
    h2o_socket_t *sock;
    struct framing_info f;
    char msg[200];

    if (req->version >= 0x200 || req->entity.base == NULL ||
        req->conn->callbacks->get_socket == NULL ||
        (sock = req->conn->callbacks->get_socket(req->conn)) == NULL || sock->input == NULL)
        return 1;
    const char *bytes = sock->input->bytes;
    size_t len = sock->input->size < H2O_MAX_REQLEN ? sock->input->size : H2O_MAX_REQLEN;
    /* The body follows the head in the same buffer (decoded in place when chunked). */
    if (req->entity.base >= bytes && req->entity.base <= bytes + len)
        len = (size_t)(req->entity.base - bytes);
    if (!framing_suspect(bytes, len) || framing_parse(bytes, len, &f) <= 0 ||
        f.framing == FRAMING_OK)
        return 1;
    req->http1_is_persistent = 0;
    snprintf(msg, sizeof(msg),
             "%s, so its end is ambiguous (RFC 9112 section 6.3). It is refused and the "
             "connection closed.",
             framing_problem(f.framing));
    http_send_error(req, info, KN_ERR_BAD_REQUEST, msg, NULL);
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct server *srv = ((struct kn_handler *)self)->srv;
    struct reqinfo info;
    h2o_iovec_t m = req->method, p = req->path_normalized;

    memset(&info, 0, sizeof(info));
    new_request_id(req, info.request_id);
    if (conns_early_refusal(req, &info) || !framing_ok(req, &info))
        return 0;
    if (header_bytes(req) > srv->cfg->max_header_bytes) {
        char msg[128];
        req->http1_is_persistent = 0;
        snprintf(msg, sizeof(msg), "The request headers are larger than the limit of %zu bytes.",
                 srv->cfg->max_header_bytes);
        http_send_error(req, &info, KN_ERR_HEADERS_TOO_LARGE, msg, NULL);
        return 0;
    }
    if (!path_plain(req)) {
        http_send_error(req, &info, KN_ERR_BAD_REQUEST,
                        "The path has an encoded '/', '.' or NUL, or a '.' or '..' segment: "
                        "send it as it is meant, without them.",
                        NULL);
        return 0;
    }
    if ((srv->metrics_fd >= 0 || srv->cfg->metrics_token[0] != '\0') &&
        (h2o_memis(p.base, p.len, H2O_STRLIT("/metrics")) || conns_is_metrics(req))) {
        handle_metrics(req, &info);
        return 0;
    }
    if (p.len >= 15 && memcmp(p.base, "/dashboard/api/", 15) == 0) {
        if (http_dashboard_host_ok(req, &info))
            http_handle_dashboard_api(req, &info);
        return 0;
    }
    if (http_handle_preflight(req, &info) || http_handle_page(req, &info))
        return 0;
    if (http_is_manage_path(p)) {
        if (p.len >= 12 && memcmp(p.base, "/v1/operator", 12) == 0)
            http_handle_operator(req, &info);
        else
            http_handle_manage(req, &info);
        return 0;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        size_t rl = strlen(r->path);
        if (r->path[rl - 1] == '/' ? p.len <= rl || memcmp(p.base, r->path, rl) != 0
                                   : !h2o_memis(p.base, p.len, r->path, rl))
            continue;
        if (r->post != NULL && h2o_memis(m.base, m.len, H2O_STRLIT("POST"))) {
            r->post(req, &info);
        } else if (r->get != NULL && (h2o_memis(m.base, m.len, H2O_STRLIT("GET")) ||
                                      h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))) {
            r->get(req, &info);
        } else {
            char msg[128];
            snprintf(msg, sizeof(msg), "%s only accepts %s.", r->path, r->allow);
            http_add_header(req, "allow", r->allow);
            http_send_error(req, &info, KN_ERR_METHOD_NOT_ALLOWED, msg, NULL);
        }
        return 0;
    }
    http_send_error(req, &info, KN_ERR_NOT_FOUND, NULL, NULL);
    return 0;
}

/* ---- errors h2o answers by itself ---------------------------------------------------------
 * h2o rejects some requests before any handler runs (a body over the size limit, a broken
 * chunked encoding, an unsupported Expect header). This filter turns those plain-text answers
 * into the same JSON error document, with a request id, that every other error has. */

struct json_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
};

static void json_ostream_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                              h2o_send_state_t state)
{
    struct json_ostream *o = (struct json_ostream *)self;
    (void)bufs;
    (void)bufcnt;
    if (o->body.base != NULL &&
        !h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"))) {
        h2o_iovec_t b = o->body;
        o->body.base = NULL;
        h2o_ostream_send_next(self, req, &b, 1, state);
    } else {
        h2o_ostream_send_next(self, req, NULL, 0, state);
    }
}

static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    enum kn_err err;
    struct reqinfo info;
    struct json_ostream *o;
    char *body;
    size_t len;
    ssize_t ct;

    /* Once the server is stopping, every answer closes its connection: h2o 2.2.5 keeps a
     * connection alive for a request that arrived during the drain, and one still open at the
     * end would outlive its loop. */
    if (atomic_load_explicit(&((struct kn_filter *)self)->srv->stopping, memory_order_relaxed))
        req->http1_is_persistent = 0;
    /* Over HTTPS, every answer tells browsers to use nothing else for this host (RFC 6797). */
    if (http_is_https(req))
        h2o_add_header_by_str(&req->pool, &req->res.headers,
                              H2O_STRLIT("strict-transport-security"), 0, NULL,
                              H2O_STRLIT("max-age=31536000"));
    if (req->res.status < 400 ||
        h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("request-id"), -1) != -1) {
        h2o_setup_next_ostream(req, slot);
        return;
    }
    switch (req->res.status) {
    case 413:
        err = KN_ERR_BODY_TOO_LARGE;
        break;
    case 417:
        err = KN_ERR_EXPECTATION_FAILED;
        break;
    case 404:
        err = KN_ERR_NOT_FOUND;
        break;
    case 400:
        err = KN_ERR_BAD_REQUEST;
        break;
    default:
        err = KN_ERR_INTERNAL;
        break;
    }
    memset(&info, 0, sizeof(info));
    new_request_id(req, info.request_id);
    info.error_code = kn_error_def(err)->code;
    if (err == KN_ERR_BODY_TOO_LARGE) {
        char msg[128];
        snprintf(msg, sizeof(msg), "The request body is larger than the limit of %zu bytes.",
                 ((struct kn_filter *)self)->srv->cfg->max_body_bytes);
        body = kn_error_json(err, msg, NULL, info.request_id, &len);
    } else {
        body = kn_error_json(err, NULL, NULL, info.request_id, &len);
    }
    o = (struct json_ostream *)h2o_add_ostream(req, sizeof(*o), slot);
    o->super.do_send = json_ostream_send;
    o->body = h2o_strdup(&req->pool, body, len);
    free(body);
    req->res.content_length = len;
    req->res.reason = kn_error_def(err)->reason;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, H2O_STRLIT("no-store"),
                   1);
    if ((ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1)) != -1)
        req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
    http_add_header(req, "request-id", info.request_id);
    http_log_request(req, &info, req->res.status);
    h2o_setup_next_ostream(req, &o->super.next);
}

/* ---- threads ------------------------------------------------------------------------------ */

/* Counts a worker into one of the server's start-up and shutdown phases. */
static void phase_arrive(struct server *srv, unsigned *counter)
{
    pthread_mutex_lock(&srv->phase_lock);
    (*counter)++;
    pthread_cond_broadcast(&srv->phase_cond);
    pthread_mutex_unlock(&srv->phase_lock);
}

static void phase_wait(struct server *srv, unsigned *counter, unsigned target)
{
    pthread_mutex_lock(&srv->phase_lock);
    while (*counter < target)
        pthread_cond_wait(&srv->phase_cond, &srv->phase_lock);
    pthread_mutex_unlock(&srv->phase_lock);
}

/* Everything of a worker's event loop is created on the thread that runs it: h2o 2.2.5 recycles
 * socket buffers through per-thread free lists, so a socket made on one thread (the loop's
 * message queue among them) and used on another corrupts both lists. */
/* The live requests' billing sink: the store thread's mailbox. */
static void bill_to_store(void *ud, struct ledger_entry *e)
{
    keysync_bill(ud, e);
}

static void worker_setup(struct worker *w)
{
    struct server *srv = w->srv;
    int fd = srv->listen_fds[w - srv->workers];

    h2o_context_init(&w->loop.ctx, h2o_evloop_create(), &srv->h2o);
    w->loop.log = srv->log;
    w->loop.trusted = srv->trusted;
    w->loop.trust_any_proxy = srv->cfg->trust_proxy != 0;
    w->loop.metrics = &w->metrics;
    w->accept_ctx.ctx = &w->loop.ctx;
    w->accept_ctx.hosts = srv->h2o.hosts;
    w->accept_ctx.ssl_ctx = srv->tls != NULL ? tls_ctx(srv->tls) : NULL;
    h2o_timeout_init(w->loop.ctx.loop, &w->refuse_timeout, 1000);
    dashbridge_worker_init(w);
    live_worker_init(&w->live, &w->loop.ctx, &srv->live_setup);
    if (w == srv->workers)
        w->probe = probe_start(w);
    if (srv->has_redis) {
        cluster_thread_init(w->loop.ctx.loop, &srv->redis, srv->cfg->redis_timeout_ms);
        /* Live requests spend on Redis's counts only once this loop has seen them good for
         * Redis's run (limits/redis.h), which the store thread marked before the loops started:
         * a few round trips, waited for here (a second at most: Redis may be away) so that a
         * fresh server does not refuse its first live requests. */
        uint64_t until = kn_mono_ns() + 1000000000ull;
        while (!redis_conn_counts_ok(cluster_conn) && kn_mono_ns() < until)
            h2o_evloop_run(w->loop.ctx.loop, 10);
    }
    w->listener = h2o_evloop_socket_create(w->loop.ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    w->listener->data = w;
    h2o_socket_read_start(w->listener, conns_on_accept);
    if (w == srv->workers && srv->metrics_fd >= 0) {
        w->metrics_listener =
            h2o_evloop_socket_create(w->loop.ctx.loop, srv->metrics_fd, H2O_SOCKET_FLAG_DONT_READ);
        w->metrics_listener->data = w;
        h2o_socket_read_start(w->metrics_listener, conns_on_accept);
    }
}

static void worker_dispose(struct worker *w)
{
    h2o_evloop_t *loop = w->loop.ctx.loop;

    h2o_timeout_dispose(loop, &w->refuse_timeout);
    dashbridge_worker_dispose(w);
    probe_stop(w->probe);
    w->probe = NULL;
    live_worker_dispose(&w->live);
    cluster_thread_dispose();
    /* h2o 2.2.5 leaves the HTTP/2 GOAWAY timer of h2o_context_request_shutdown linked, and
     * h2o_context_dispose asserts that no timer is. */
    if (h2o_timeout_is_linked(&w->loop.ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&w->loop.ctx.http2._graceful_shutdown_timeout);
    h2o_context_dispose(&w->loop.ctx);
    h2o_evloop_destroy(loop);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *srv = w->srv;
    uint64_t deadline;
    char name[16];

    snprintf(name, sizeof(name), "kn-loop-%u", (unsigned)(w - srv->workers));
    pthread_setname_np(pthread_self(), name);
    worker_setup(w);
    phase_arrive(srv, &srv->workers_ready);
    while (!atomic_load_explicit(&srv->stopping, memory_order_relaxed)) {
        h2o_evloop_run(w->loop.ctx.loop, 100);
        accesslog_flush(srv->log, &w->loop.log_buf);
    }
    /* Stop accepting, ask keep-alive and HTTP/2 connections to wind down, then let the
     * connections we have finish what they are doing. */
    h2o_context_request_shutdown(&w->loop.ctx);
    /* h2o 2.2.5 leaves idle HTTP/1 keep-alive connections open until their timeout; shorten it
     * (h2o reads the value when timers fire), so that they close within a second. */
    if (w->loop.ctx.http1.req_timeout.timeout > 1000)
        w->loop.ctx.http1.req_timeout.timeout = 1000;
    if (w->loop.ctx.http2.idle_timeout.timeout > 1000)
        w->loop.ctx.http2.idle_timeout.timeout = 1000;
    h2o_socket_read_stop(w->listener);
    h2o_socket_close(w->listener);
    w->listener = NULL;
    if (w->metrics_listener != NULL) {
        h2o_socket_read_stop(w->metrics_listener);
        h2o_socket_close(w->metrics_listener);
        w->metrics_listener = NULL; /* Its descriptor, srv->metrics_fd, closed with it. */
    }
    deadline = kn_mono_ns() + (uint64_t)srv->cfg->shutdown_timeout_ms * 1000000u;
    while (w->conns > 0 && kn_mono_ns() < deadline) {
        h2o_evloop_run(w->loop.ctx.loop, 20);
        accesslog_flush(srv->log, &w->loop.log_buf);
    }
    /* Live requests still running are ended: a stream that delivered part of its answer is
     * billed for it (its row is queued to the store thread, which writes every queued row before
     * it stops) and closes with an error event, sent once the row is durable, for which the loop
     * runs up to a second more. */
    live_worker_stop(&w->live);
    probe_stop(w->probe);
    w->probe = NULL;
    deadline = kn_mono_ns() + 1000000000u;
    while ((live_worker_billing(&w->live) > 0 || w->conns > 0) && kn_mono_ns() < deadline) {
        h2o_evloop_run(w->loop.ctx.loop, 20);
        accesslog_flush(srv->log, &w->loop.log_buf);
    }
    accesslog_flush(srv->log, &w->loop.log_buf);
    /* The dashboard and store threads may still send answers to this loop's queue: the loop is
     * disposed of only once they have stopped. A loop with connections left past the deadline
     * is left as it is; the process is about to exit. */
    phase_arrive(srv, &srv->workers_drained);
    phase_wait(srv, &srv->others_stopped, 1);
    if (w->conns == 0)
        worker_dispose(w);
    accesslog_flush(srv->log, &w->loop.log_buf);
    return NULL;
}

/* Takes the data directory's lock: one server per data directory, so that the control socket,
 * and with it every command's nudge, reaches the server that serves these keys. */
static int lock_data_dir(struct server *srv, char *err, size_t errsize)
{
    char path[PATH_MAX + 16];

    snprintf(path, sizeof(path), "%s/konnect.lock", srv->cfg->data_dir);
    srv->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (srv->lock_fd < 0) {
        snprintf(err, errsize, "cannot open %.300s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(srv->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errsize,
                 errno == EWOULDBLOCK
                     ? "another konnect server is already running with the data directory %s"
                     : "cannot lock the data directory %s",
                 srv->cfg->data_dir);
        return -1;
    }
    return 0;
}

static int listen_socket(const struct sockaddr *sa, socklen_t len, int reuseport)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;

    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 || bind(fd, sa, len) != 0 ||
        (reuseport && listen(fd, SOMAXCONN) != 0)) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Opens one listening socket per event-loop thread on the same address (SO_REUSEPORT), so that
 * the kernel spreads connections evenly over the threads instead of letting whichever thread
 * wakes first take them all. A plain bind first makes sure no other program holds the port. */
static int open_listener(struct server *srv, char *err, size_t errsize)
{
    const struct kn_config *c = srv->cfg;
    struct addrinfo hints, *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    char port[16];
    int rc, probe;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", c->listen_port);
    if ((rc = getaddrinfo(c->listen_host, port, &hints, &res)) != 0) {
        snprintf(err, errsize, "cannot resolve listen address %s: %s", c->listen_host,
                 gai_strerror(rc));
        return -1;
    }
    srv->listen_fds = kn_calloc((size_t)c->threads, sizeof(int));
    for (int i = 0; i < c->threads; i++)
        srv->listen_fds[i] = -1;
    if (c->listen_port != 0) {
        if ((probe = listen_socket(res->ai_addr, res->ai_addrlen, 0)) < 0)
            goto fail;
        close(probe);
    }
    if ((srv->listen_fds[0] = listen_socket(res->ai_addr, res->ai_addrlen, 1)) < 0 ||
        getsockname(srv->listen_fds[0], (struct sockaddr *)&ss, &sslen) != 0)
        goto fail;
    /* The others take the same address, port included when port 0 picked one. */
    for (int i = 1; i < c->threads; i++)
        if ((srv->listen_fds[i] = listen_socket((struct sockaddr *)&ss, sslen, 1)) < 0)
            goto fail;
    freeaddrinfo(res);
    res = NULL;
    srv->listen_fd = srv->listen_fds[0];
    if (c->metrics_host[0] != '\0') {
        snprintf(port, sizeof(port), "%d", c->metrics_port);
        if ((rc = getaddrinfo(c->metrics_host, port, &hints, &res)) != 0) {
            snprintf(err, errsize, "cannot resolve KONNECT_METRICS_LISTEN %s: %s", c->metrics_host,
                     gai_strerror(rc));
            return -1;
        }
        srv->metrics_fd = listen_socket(res->ai_addr, res->ai_addrlen, 0);
        freeaddrinfo(res);
        if (srv->metrics_fd < 0 || listen(srv->metrics_fd, 64) != 0) {
            snprintf(err, errsize, "cannot listen on KONNECT_METRICS_LISTEN %s:%d: %s",
                     c->metrics_host, c->metrics_port, strerror(errno));
            if (srv->metrics_fd >= 0)
                close(srv->metrics_fd);
            srv->metrics_fd = -1;
            return -1;
        }
    }
    return 0;
fail:
    snprintf(err, errsize, "cannot listen on %s:%d: %s", c->listen_host, c->listen_port,
             strerror(errno));
    for (int i = 0; i < c->threads; i++)
        if (srv->listen_fds[i] >= 0)
            close(srv->listen_fds[i]);
    free(srv->listen_fds);
    srv->listen_fds = NULL;
    freeaddrinfo(res);
    return -1;
}

static void print_listening(struct server *srv)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (getsockname(srv->listen_fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    fprintf(stderr, "konnect: listening on %s://%s%s%s:%d (%d threads, %zu keys loaded)\n",
            srv->tls != NULL ? "https" : "http", ss.ss_family == AF_INET6 ? "[" : "", host,
            ss.ss_family == AF_INET6 ? "]" : "", port, srv->cfg->threads, keytable_count(srv->kt));
    if (srv->metrics_fd >= 0) {
        struct sockaddr_storage ms;
        socklen_t mlen = sizeof(ms);
        char mhost[INET6_ADDRSTRLEN] = "?";
        int mport = 0;
        if (getsockname(srv->metrics_fd, (struct sockaddr *)&ms, &mlen) == 0) {
            if (ms.ss_family == AF_INET6) {
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ms)->sin6_addr, mhost, sizeof(mhost));
                mport = ntohs(((struct sockaddr_in6 *)&ms)->sin6_port);
            } else {
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ms)->sin_addr, mhost, sizeof(mhost));
                mport = ntohs(((struct sockaddr_in *)&ms)->sin_port);
            }
        }
        fprintf(stderr, "konnect: metrics on http://%s%s%s:%d/metrics\n",
                ms.ss_family == AF_INET6 ? "[" : "", mhost, ms.ss_family == AF_INET6 ? "]" : "",
                mport);
    }
    const struct plans *ps = keysync_plans(srv->ks);
    const char *dm = ps->default_model[0] ? ps->default_model : srv->cfg->default_model;
    const struct plan_backend *own = NULL;
    for (size_t i = 0; i < ps->nmodels; i++)
        if (strcmp(ps->catalogue[i].name, dm) == 0 && ps->catalogue[i].nbackends > 0)
            own = &ps->catalogue[i].backends[0];
    if (own != NULL)
        fprintf(stderr,
                "konnect: default model \"%s\" (the catalogue's) goes to its own backends, first "
                "%s; models without backends of their own use %s\n",
                dm, own->url, srv->backend_url);
    else
        fprintf(stderr, "konnect: live keys use the model backend %s; default model \"%s\"%s\n",
                srv->backend_url, dm,
                ps->default_model[0] ? " (the catalogue's)" : " (KONNECT_MODEL)");
    for (size_t i = 0; i < ps->nmodels; i++) {
        const struct plan_model *m = &ps->catalogue[i];
        for (size_t b = 0; b < m->nbackends; b++) {
            const struct plan_backend *pb = &m->backends[b];
            fprintf(stderr, "konnect: model \"%s\" backend %zu of %zu: %s (as \"%s\")\n", m->name,
                    b + 1, m->nbackends, pb->url, pb->model);
            if (pb->api_key_env[0] != '\0' && getenv(pb->api_key_env) == NULL)
                fprintf(stderr,
                        "konnect: warning: model \"%s\" backend %zu: the environment variable %s "
                        "(its api_key_env) is not set; it is asked without a key\n",
                        m->name, b + 1, pb->api_key_env);
        }
    }
    /* The links commands print (set-password) point here: the public URL, else this address,
     * with the port the kernel chose for port 0, and a wildcard address as loopback. */
    struct kn_config where = *srv->cfg;
    char url[600];
    if (port != 0)
        where.listen_port = port;
    config_base_url(&where, url, sizeof(url));
    keysync_set_base_url(srv->ks, url);
}

static void setup_h2o(struct server *srv)
{
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    struct kn_handler *h;
    struct kn_filter *f;

    h2o_config_init(&srv->h2o);
    srv->h2o.server_name = h2o_iovec_init(H2O_STRLIT("konnect"));
    /* No cleartext HTTP/2 (prior knowledge or Upgrade: h2c): without TLS no browser uses it, and
     * its 100 streams a connection with 16 MiB windows would hold far more memory before
     * authentication than HTTP/1 does, and would keep a connection open after a 401. */
    srv->h2o.http1.upgrade_to_http2 = 0;
    srv->h2o.max_request_entity_size = srv->cfg->max_body_bytes;
    srv->h2o.http1.req_timeout = srv->cfg->request_timeout_ms;
    srv->h2o.http2.idle_timeout = srv->cfg->request_timeout_ms;
    host = h2o_config_register_host(&srv->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    path = h2o_config_register_path(host, "/", 0);
    h = (struct kn_handler *)h2o_create_handler(path, sizeof(*h));
    h->super.on_req = on_req;
    h->srv = srv;
    /* The filter goes on both the handler's path and the fallback path that h2o uses for errors
     * it raises before routing a request. */
    f = (struct kn_filter *)h2o_create_filter(path, sizeof(*f));
    f->super.on_setup_ostream = on_setup_ostream;
    f->srv = srv;
    f = (struct kn_filter *)h2o_create_filter(&host->fallback_path, sizeof(*f));
    f->super.on_setup_ostream = on_setup_ostream;
    f->srv = srv;
}

int server_run(const struct kn_config *c)
{
    struct server *srv = kn_calloc(1, sizeof(*srv));
    srv->live_seen = kn_calloc(1, sizeof(*srv->live_seen));
    char err[512];
    sigset_t sigs;
    int sig, ret = 1, started = 0;

    srv->cfg = c;
    srv->limiter = &limiter_local;
    pthread_mutex_init(&srv->phase_lock, NULL);
    pthread_cond_init(&srv->phase_cond, NULL);
    srv->listen_fd = -1;
    srv->metrics_fd = -1;
    srv->lock_fd = -1;
    /* Signals are taken by the main thread alone, with sigwait, once the workers run: block them
     * before any other thread starts, so that every thread inherits the mask. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (config_ensure_data_dir(c, err, sizeof(err)) != 0 ||
        lock_data_dir(srv, err, sizeof(err)) != 0 ||
        apikey_secret_load(c->secret_file, 1, srv->secret, err, sizeof(err)) != 0 ||
        (srv->log = accesslog_open(c->access_log, err, sizeof(err))) == NULL)
        goto fail;
    srv->kt = keytable_new(1024);
    uint64_t t0 = kn_mono_ns();
    char where[PATH_MAX + 16];
    int existed = store_exists(c->database, where, sizeof(where));
    if (live_upstream_init(&srv->upstream, c, err, sizeof(err)) != 0)
        goto fail;
    {
        const h2o_url_t *u = &srv->upstream.url;
        snprintf(srv->backend_url, sizeof(srv->backend_url), "%s://%.*s:%u%.*s",
                 u->scheme == &H2O_URL_SCHEME_HTTPS ? "https" : "http", (int)u->host.len,
                 u->host.base, (unsigned)h2o_url_get_port(u), (int)u->path.len, u->path.base);
        pthread_mutex_init(&srv->backend.lock, NULL);
    }
    if (c->tls_cert[0] != '\0') {
        char info[512];
        if ((srv->tls = tls_new(c->tls_cert, c->tls_key, info, sizeof(info), err, sizeof(err))) ==
            NULL)
            goto fail;
        fprintf(stderr, "konnect: HTTPS (TLS 1.2 or later, HTTP/2 by ALPN) with the %s\n", info);
    }
    struct plans *plans = plans_load(c->plans_file, c->plans_file_set, err, sizeof(err));
    if (plans == NULL)
        goto fail;
    if (c->trusted_proxies[0] != '\0' &&
        (srv->trusted = iplist_parse(c->trusted_proxies, err, sizeof(err))) == NULL)
        goto fail;
    if (c->trust_proxy)
        fprintf(stderr,
                "konnect: warning: KONNECT_TRUST_PROXY=1 believes X-Forwarded-Proto from any "
                "client, and will be removed in the next release; set KONNECT_TRUSTED_PROXIES to "
                "your proxies' addresses instead (such as 10.0.0.0/8 or 127.0.0.1)\n");

    /* The store thread takes the plans over (it reloads them on SIGHUP). */
    if (c->redis_url[0] != '\0') {
        if (redis_target_parse(c->redis_url, &srv->redis, err, sizeof(err)) != 0)
            goto fail;
        srv->has_redis = 1;
    }
    struct store_node node = {.version = KONNECT_VERSION};
    kn_strlcpy(node.id, c->node_id, sizeof(node.id));
    kn_strlcpy(node.counters, srv->has_redis ? "redis" : "local", sizeof(node.counters));
    struct keysync_config kc = {.db_url = c->database,
                                .socket_path = c->socket_path,
                                .plans = plans,
                                .plans_path = c->plans_file,
                                .plans_required = c->plans_file_set,
                                .durable = c->ledger_sync_full,
                                .node = &node,
                                .spool_path = c->spool_path[0] != '\0' ? c->spool_path : NULL,
                                .spool_max_bytes = c->spool_max_bytes,
                                .redis = srv->has_redis ? &srv->redis : NULL};
    if ((srv->ks = keysync_start(srv->kt, &kc, err, sizeof(err))) == NULL)
        goto fail;
    if (keysync_plans(srv->ks)->builtin)
        fprintf(stderr,
                "konnect: no plans file at %s; every account is on the built-in plan \"default\" "
                "(no quota, no charge)\n",
                c->plans_file);
    srv->live_setup = (struct live_setup){
        .upstream = &srv->upstream,
        .connect_timeout_ms = c->model_connect_timeout_ms,
        .first_byte_timeout_ms = c->model_first_byte_timeout_ms,
        .total_timeout_ms = c->model_timeout_ms,
        .stall_timeout_ms = c->request_timeout_ms,
        .max_response_bytes = c->model_max_response_bytes,
        .bill = bill_to_store,
        .bill_ud = srv->ks,
    };
    if (!existed)
        fprintf(stderr, "konnect: created a new database at %s\n", where);
    fprintf(stderr, "konnect: loaded %zu keys from %s in %.0f ms\n", keytable_count(srv->kt), where,
            (double)(kn_mono_ns() - t0) / 1e6);
    config_warn_public(c);
    if (dashbridge_start(srv, err, sizeof(err)) != 0)
        goto fail;
    if (open_listener(srv, err, sizeof(err)) != 0)
        goto fail;
    conns_init(srv);
    setup_h2o(srv);
    /* Before the workers start: the sockets already listen (connections wait in the backlog), and
     * so every start-up line, and the base URL of the links commands print, comes before the
     * first answer. */
    print_listening(srv);
    fflush(stderr);

    srv->workers = kn_calloc((size_t)c->threads, sizeof(*srv->workers));
    for (int i = 0; i < c->threads; i++) {
        srv->workers[i].srv = srv;
        if (pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]) != 0)
            kn_fatal("cannot start thread %d", i);
    }
    started = 1; /* The workers own the listening sockets from here on. */
    phase_wait(srv, &srv->workers_ready, (unsigned)c->threads);

    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGUSR1) {
            /* The live path's stage times since the last SIGUSR1 (docs/benchmarks.md). */
            struct live_worker *lws[256];
            size_t n = 0;
            for (int i = 0; i < c->threads && n < sizeof(lws) / sizeof(lws[0]); i++)
                lws[n++] = &srv->workers[i].live;
            live_report(stderr, lws, n, srv->live_seen);
            continue;
        }
        if (sig == SIGHUP) {
            /* The plans file again; an invalid one keeps the plans in force. */
            char msg[600];
            int ok = keysync_reload_plans(srv->ks, msg, sizeof(msg)) == 0;
            fprintf(stderr, "konnect: SIGHUP: %s%s\n", ok ? "" : "not reloaded, ", msg);
            if (srv->tls != NULL) {
                /* The certificate and key again (renewed by certbot or the like); a pair that
                 * cannot be read keeps the one in force. */
                ok = tls_reload(srv->tls, msg, sizeof(msg)) == 0;
                fprintf(stderr, "konnect: SIGHUP: %s%s\n",
                        ok ? "now serving the "
                           : "TLS certificate not reloaded, keeping the one "
                             "in force: ",
                        msg);
            }
            fflush(stderr);
        }
    }
    fprintf(stderr, "konnect: %s received, finishing in-flight requests\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    atomic_store(&srv->stopping, 1);
    /* New connections are refused from now on rather than left waiting in the backlog; the
     * workers close their own copies of the socket within one loop turn. */
    for (int i = 0; i < c->threads; i++)
        shutdown(srv->listen_fds[i], SHUT_RD);
    phase_wait(srv, &srv->workers_drained, (unsigned)c->threads);
    /* The threads that send answers to the loops stop first: the dashboard, then the store
     * thread, which writes the last ledger rows and pending usage. */
    dashbridge_stop(srv);
    keysync_stop(srv->ks);
    srv->ks = NULL;
    phase_arrive(srv, &srv->others_stopped);
    for (int i = 0; i < c->threads; i++) {
        pthread_join(srv->workers[i].thread, NULL);
        logbuf_free(&srv->workers[i].loop.log_buf);
    }
    ret = 0;
    h2o_config_dispose(&srv->h2o);
    fprintf(stderr, "konnect: stopped\n");
    goto out;
fail:
    fprintf(stderr, "konnect: %s\n", err);
    dashbridge_stop(srv);
out:
    keysync_stop(srv->ks);
    keytable_free(srv->kt);
    free(srv->trusted);
    conns_dispose(srv);
    live_upstream_dispose(&srv->upstream);
    tls_free(srv->tls);
    accesslog_close(srv->log);
    /* Only the listening sockets that never reached a worker are still this thread's to close
     * (each worker closes its own; srv->workers is not a sign of it, and is freed here). */
    if (!started && srv->listen_fds != NULL)
        for (int i = 0; i < c->threads; i++)
            close(srv->listen_fds[i]);
    if (!started && srv->metrics_fd >= 0)
        close(srv->metrics_fd);
    free(srv->workers);
    free(srv->listen_fds);
    if (srv->lock_fd >= 0)
        close(srv->lock_fd);
    sodium_memzero(srv->secret, sizeof(srv->secret));
    pthread_mutex_destroy(&srv->phase_lock);
    pthread_cond_destroy(&srv->phase_cond);
    free(srv->live_seen);
    free(srv);
    return ret;
}
