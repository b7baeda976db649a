/* Connections: accepting them, refusing those over the limits, and refusing the first request of
 * a plaintext HTTP/1 connection before its body is read when it cannot succeed anyway.
 *
 * Limits: KONNECT_MAX_CONNECTIONS open connections in all, and KONNECT_MAX_CONNECTIONS_PER_IP
 * from one address (trusted proxies exempt: behind a proxy every connection comes from it). A
 * connection over either is answered 503 too_many_connections once its request has arrived (or
 * after a second) and closed.
 *
 * Memory before authentication: h2o 2.2.5 hands a request to the handler only once its whole
 * body has arrived (up to KONNECT_MAX_BODY_BYTES). For the first request of a plaintext HTTP/1
 * connection, Konnect reads the head as soon as it is complete, before h2o does: a request that
 * will be refused whatever its body holds (an API call with a missing, malformed, unknown,
 * revoked or expired key; a dashboard call over 64 KiB; a body to a path that takes none) has its
 * Content-Length rewritten to zeros, of the same width, so that h2o reads no body, and is then
 * answered with that refusal and the connection closed. Every such 401 closes its connection, so
 * a client without a valid key never gets to send a second request on it. This depends on h2o
 * 2.2.5's HTTP/1 connection: its read callback (sock->_cb.read, set by h2o_accept) is swapped for
 * this file's for the first read only, and it parses the head from sock->input. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/bearer.h"
#include "core/base62.h"
#include "core/ipnet.h"
#include "core/util.h"
#include "http/framing.h"
#include "http/internal.h"

#define IPCOUNT_BUCKETS 4096
#define DASH_BODY_MAX (64 * 1024)

/* Open connections per client address: a chained hash table under one lock, touched once per
 * accept and once per close, never per request. */
struct ipcount {
    struct ipcount *next;
    uint8_t addr[16];
    unsigned count;
};

struct ipcounts {
    pthread_mutex_t lock;
    struct ipcount *bucket[IPCOUNT_BUCKETS];
};

/* One accepted connection, for its close. */
struct conninfo {
    struct worker *w;
    uint8_t addr[16];
    int counted;       /* It counts against its address's limit. */
    int metrics;       /* It came to KONNECT_METRICS_LISTEN: /metrics only. */
    h2o_socket_cb h2o; /* h2o's read callback, while this file reads the first request head. */
};

/* The key an address is counted under: IPv4 as it is, IPv6 by its /64 (one host is given a
 * whole /64, as the throttles count it too). */
static void addr_key(const struct sockaddr *sa, uint8_t out[16])
{
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    memset(out, 0, 16);
    if (sa->sa_family == AF_INET) {
        memcpy(out, v4_mapped, 12);
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        if (memcmp(out, v4_mapped, 12) != 0)
            memset(out + 8, 0, 8);
    }
}

static size_t bucket_of(const uint8_t addr[16])
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++)
        h = (h ^ addr[i]) * 1099511628211ull;
    return h % IPCOUNT_BUCKETS;
}

/* Counts one more connection from addr. Returns 0, or -1 (nothing counted) at the limit. */
static int ipcount_take(struct ipcounts *t, const uint8_t addr[16], unsigned limit)
{
    struct ipcount **slot = &t->bucket[bucket_of(addr)], *e;
    int ret = 0;

    pthread_mutex_lock(&t->lock);
    for (e = *slot; e != NULL && memcmp(e->addr, addr, 16) != 0; e = e->next)
        ;
    if (e == NULL) {
        e = kn_calloc(1, sizeof(*e));
        memcpy(e->addr, addr, 16);
        e->next = *slot;
        *slot = e;
    }
    if (e->count >= limit)
        ret = -1;
    else
        e->count++;
    pthread_mutex_unlock(&t->lock);
    return ret;
}

static void ipcount_give(struct ipcounts *t, const uint8_t addr[16])
{
    struct ipcount **slot = &t->bucket[bucket_of(addr)], *e;

    pthread_mutex_lock(&t->lock);
    for (; (e = *slot) != NULL; slot = &e->next) {
        if (memcmp(e->addr, addr, 16) != 0)
            continue;
        if (--e->count == 0) {
            *slot = e->next;
            free(e);
        }
        break;
    }
    pthread_mutex_unlock(&t->lock);
}

static void build_refusal(char out[REFUSAL_SIZE], const char *message)
{
    size_t len;
    const char *id = REFUSAL_ID_PLACEHOLDER;
    char *body = kn_error_json(KN_ERR_TOO_MANY_CONNECTIONS, message, NULL, id, &len);
    snprintf(out, REFUSAL_SIZE,
             "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nCache-Control: no-store\r\nRetry-After: 1\r\n"
             "request-id: %s\r\nConnection: close\r\n\r\n%s",
             len, id, body);
    free(body);
}

void conns_init(struct server *srv)
{
    char msg[200];

    build_refusal(srv->refusal, NULL);
    snprintf(msg, sizeof(msg),
             "This address has %u connections open, the most one address may have; close some "
             "or retry shortly.",
             srv->cfg->max_connections_per_ip);
    build_refusal(srv->refusal_ip, msg);
    srv->ipcounts = kn_calloc(1, sizeof(*srv->ipcounts));
    pthread_mutex_init(&srv->ipcounts->lock, NULL);
}

void conns_dispose(struct server *srv)
{
    if (srv->ipcounts == NULL)
        return;
    for (size_t i = 0; i < IPCOUNT_BUCKETS; i++)
        for (struct ipcount *e = srv->ipcounts->bucket[i], *next; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    pthread_mutex_destroy(&srv->ipcounts->lock);
    free(srv->ipcounts);
    srv->ipcounts = NULL;
}

static void on_conn_close(void *data)
{
    struct conninfo *ci = data;
    struct worker *w = ci->w;

    w->conns--;
    atomic_fetch_sub(&w->srv->conns, 1);
    if (ci->counted)
        ipcount_give(w->srv->ipcounts, ci->addr);
    free(ci);
}

/* ---- refusals ------------------------------------------------------------------------------
 * A connection over a limit is answered with a 503 once its request has arrived (or after a
 * second), so that closing it does not reset the connection before the client reads the answer. */

struct refused {
    h2o_socket_t *sock;
    struct worker *w;
    const char *template;
    h2o_timeout_entry_t timeout;
    int answered;
    char request_id[4 + REQUEST_ID_LEN + 1];
    char response[REFUSAL_SIZE];
};

static void refused_written(h2o_socket_t *sock, const char *err)
{
    struct refused *r = sock->data;
    (void)err;
    r->w->conns--;
    h2o_socket_close(sock);
    free(r);
}

static void refused_answer(struct refused *r)
{
    h2o_iovec_t buf;

    if (r->answered)
        return;
    r->answered = 1;
    /* The template holds a placeholder request id of the right length; each refusal gets its own.
     */
    memcpy(r->response, r->template, sizeof(r->response));
    for (char *p = r->response; (p = strstr(p, REFUSAL_ID_PLACEHOLDER)) != NULL;) {
        memcpy(p, r->request_id, sizeof(r->request_id) - 1);
        p += sizeof(r->request_id) - 1;
    }
    buf = h2o_iovec_init(r->response, strlen(r->response));
    if (h2o_timeout_is_linked(&r->timeout))
        h2o_timeout_unlink(&r->timeout);
    h2o_socket_read_stop(r->sock);
    h2o_socket_write(r->sock, &buf, 1, refused_written);
}

static void refused_read(h2o_socket_t *sock, const char *err)
{
    (void)err;
    h2o_buffer_consume(&sock->input, sock->input->size);
    refused_answer(sock->data);
}

static void refused_timeout(h2o_timeout_entry_t *entry)
{
    refused_answer(H2O_STRUCT_FROM_MEMBER(struct refused, timeout, entry));
}

static void refuse_connection(struct worker *w, h2o_socket_t *sock, const char *template)
{
    struct refused *r = kn_calloc(1, sizeof(*r));

    r->sock = sock;
    r->w = w;
    r->template = template;
    w->conns++; /* So that shutdown waits for the answer and its timer. */
    base62_time_id(r->request_id, "req_", REQUEST_ID_LEN, kn_unix_ms());
    r->timeout.cb = refused_timeout;
    sock->data = r;
    h2o_timeout_link(w->loop.ctx.loop, &w->refuse_timeout, &r->timeout);
    h2o_socket_read_start(sock, refused_read);
}

/* ---- the first request of a connection -------------------------------------------------- */

/* The request target's path, without its query string. */
static size_t path_len(const struct framing_info *f)
{
    const char *q = memchr(f->path, '?', f->path_len);
    return q != NULL ? (size_t)(q - f->path) : f->path_len;
}

static int is_api_chat(const struct framing_info *f)
{
    size_t n = path_len(f);
    return (n == 8 && memcmp(f->path, "/v1/chat", 8) == 0) ||
           (n == 20 && memcmp(f->path, "/v1/chat/completions", 20) == 0);
}

/* The refusal a request head earns whatever its body holds, or KN_OK. */
static enum kn_err refusal_of(struct worker *w, const struct framing_info *f)
{
    if (f->content_length <= 0 || f->chunked || f->framing != FRAMING_OK)
        return KN_OK; /* No body to spare, or a framing the handler refuses itself. */
    if (is_api_chat(f)) {
        struct auth_input in = {.header = f->authorization,
                                .header_len = f->authorization_len,
                                .header_count = f->authorization_count,
                                .now = kn_unix_now()};
        struct keyrec *key;
        /* The allowlist needs the client's address, which may come from a trusted proxy's
         * header: that refusal is left to the handler. */
        enum kn_err err = auth_authenticate(w->srv->kt, w->srv->secret, &in, &key);
        return err == KN_ERR_IP_NOT_ALLOWED ? KN_OK : err;
    }
    if (path_len(f) >= 15 && memcmp(f->path, "/dashboard/api/", 15) == 0)
        return f->content_length > DASH_BODY_MAX ? KN_ERR_BODY_TOO_LARGE : KN_OK;
    /* A path the handler does not recognise (an encoded or unusual form of one): its own
     * answer, after the body, is the right one. */
    if (path_len(f) >= 4 && memcmp(f->path, "/v1/", 4) == 0 && !is_api_chat(f))
        return KN_OK;
    /* Every other path takes no body: pages, health, /v1/models. */
    return f->content_length > DASH_BODY_MAX ? KN_ERR_BODY_TOO_LARGE : KN_OK;
}

static void on_first_read(h2o_socket_t *sock, const char *err)
{
    struct conninfo *ci = sock->on_close.data;
    struct worker *w = ci->w;
    struct framing_info f;
    size_t len = sock->input->size < H2O_MAX_REQLEN ? sock->input->size : H2O_MAX_REQLEN;
    int r = err == NULL ? framing_parse(sock->input->bytes, len, &f) : -1;
    enum kn_err refusal;

    if (r == -2 && len < H2O_MAX_REQLEN)
        return; /* The head is not complete yet; h2o's request timer still runs. */
    /* From here on h2o reads this connection as it always does. */
    h2o_socket_read_start(sock, ci->h2o);
    /* Only a body still to come is worth refusing early: one that has arrived with its head (a
     * small one, as a flood of bad keys sends) is read as usual, and the connection kept. */
    refusal = r > 0 && (uint64_t)r + (uint64_t)f.content_length > sock->input->size
                  ? refusal_of(w, &f)
                  : KN_OK;
    if (refusal != KN_OK) {
        /* Same width, all zeros: h2o then reads no body, and the answer is the refusal. */
        memset((char *)f.length_value, '0', f.length_value_len);
        w->early.sock = sock;
        w->early.err = refusal;
    }
    ci->h2o(sock, err);
    w->early.sock = NULL;
}

int conns_is_metrics(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket != NULL
                             ? req->conn->callbacks->get_socket(req->conn)
                             : NULL;

    return sock != NULL && sock->on_close.cb == on_conn_close && sock->on_close.data != NULL &&
           ((struct conninfo *)sock->on_close.data)->metrics;
}

int conns_early_refusal(h2o_req_t *req, struct reqinfo *info)
{
    struct worker *w = http_worker_of(req);
    char msg[128];

    if (w->early.sock == NULL || req->conn->callbacks->get_socket == NULL ||
        req->conn->callbacks->get_socket(req->conn) != w->early.sock)
        return 0;
    req->http1_is_persistent = 0;
    if (w->early.err == KN_ERR_BODY_TOO_LARGE) {
        snprintf(msg, sizeof(msg), "The request body is larger than this path accepts (%d bytes).",
                 DASH_BODY_MAX);
        http_send_error(req, info, KN_ERR_BODY_TOO_LARGE, msg, NULL);
        return 1;
    }
    http_send_auth_error(req, info, w->early.err);
    return 1;
}

void conns_on_accept(h2o_socket_t *listener, const char *err)
{
    struct worker *w = listener->data;
    struct server *srv = w->srv;
    h2o_socket_t *sock;

    if (err != NULL)
        return;
    /* Accept a bounded batch per wake-up so that one busy listener cannot starve the loop. */
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage peer;
        struct conninfo *ci;

        if ((sock = h2o_evloop_socket_accept(listener)) == NULL)
            return;
        if (atomic_fetch_add(&srv->conns, 1) >= srv->cfg->max_connections) {
            atomic_fetch_sub(&srv->conns, 1);
            refuse_connection(w, sock, srv->refusal);
            continue;
        }
        ci = kn_calloc(1, sizeof(*ci));
        ci->w = w;
        ci->metrics = listener == w->metrics_listener;
        memset(&peer, 0, sizeof(peer));
        if (h2o_socket_getpeername(sock, (struct sockaddr *)&peer) != 0) {
            addr_key((struct sockaddr *)&peer, ci->addr);
            ci->counted =
                srv->cfg->max_connections_per_ip != 0 &&
                (srv->trusted == NULL || !iplist_contains(srv->trusted, (struct sockaddr *)&peer));
        }
        if (ci->counted &&
            ipcount_take(srv->ipcounts, ci->addr, srv->cfg->max_connections_per_ip) != 0) {
            atomic_fetch_sub(&srv->conns, 1);
            free(ci);
            refuse_connection(w, sock, srv->refusal_ip);
            continue;
        }
        w->conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = ci;
        h2o_accept(&w->accept_ctx, sock);
        /* A plaintext HTTP/1 connection: its first head is read here first (see above). */
        if (sock->ssl == NULL && sock->_cb.read != NULL) {
            ci->h2o = sock->_cb.read;
            h2o_socket_read_start(sock, on_first_read);
        }
    }
}
