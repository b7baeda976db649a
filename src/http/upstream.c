/* The model backend's HTTP/1.1 client and its pool of keep-alive connections; see upstream.h. */
#include "http/upstream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

const char upstream_error_eos[] = "end of response";
const char upstream_error_timeout[] = "I/O timeout";
const char upstream_error_closed[] = "connection closed by the backend";
const char upstream_error_parse[] = "not an HTTP response";
const char upstream_error_io[] = "network error";

/* One connection to the backend, for as long as it is open. */
struct conn {
    struct upstream_pool *pool;
    h2o_socket_t *sock;              /* sock->data is the conn. */
    struct upstream_call_full *call; /* NULL while idle. */
    h2o_linklist_t idle_link;
    h2o_timeout_entry_t idle_timer;
};

struct upstream_call_full {
    struct upstream_call super;
    struct upstream_pool *pool;
    struct conn *conn;
    h2o_hostinfo_getaddr_req_t *getaddr;
    upstream_connect_cb on_connect;
    upstream_head_cb on_head;
    upstream_body_cb on_body;
    h2o_timeout_entry_t io_timer;
    int head_delivered; /* on_head has been called. */
    int paused;         /* upstream_call_pause: not reading, no silence timeout. */
    int eof;            /* The connection ended while paused, with bytes still to feed. */
    struct upstream_response res;
};

/* ---- the response parser ----------------------------------------------------------------- */

static int on_message_begin(http_parser *p)
{
    struct upstream_response *c = p->data;
    c->in_value = 0;
    c->field_len = 0;
    c->field_is_ctype = 0;
    c->ctype_len = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct upstream_response *c = p->data;
    if (c->in_value) {
        c->in_value = 0;
        c->field_len = 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (c->field_len == UPSTREAM_FIELD_MAX)
            break;
        c->field[c->field_len++] = h2o_tolower(at[i]);
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct upstream_response *c = p->data;
    if (!c->in_value) {
        c->in_value = 1;
        c->field_is_ctype = h2o_memis(c->field, c->field_len, H2O_STRLIT("content-type"));
        if (c->field_is_ctype)
            c->ctype_len = 0; /* The last Content-Type counts. */
    }
    if (c->field_is_ctype) {
        size_t n =
            len < UPSTREAM_CTYPE_MAX - c->ctype_len ? len : UPSTREAM_CTYPE_MAX - c->ctype_len;
        memcpy(c->ctype + c->ctype_len, at, n);
        c->ctype_len += n;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct upstream_response *c = p->data;
    /* An informational answer (100 Continue, 103 Early Hints) comes before the real one. */
    if (p->status_code >= 100 && p->status_code < 200)
        return 0;
    c->head_done = 1;
    return 0;
}

static int on_body_data(http_parser *p, const char *at, size_t len)
{
    struct upstream_response *c = p->data;
    if (c->body_len + len > c->body_cap) {
        c->body_cap = (c->body_len + len) * 2;
        c->body = kn_realloc(c->body, c->body_cap);
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct upstream_response *c = p->data;
    if (!c->head_done)
        return 0; /* An informational answer ended; the real one follows. */
    c->complete = 1;
    /* Stop at the end of the response: anything after it is not ours to read. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body_data,
    .on_message_complete = on_message_complete,
};

void upstream_response_init(struct upstream_response *c)
{
    memset(c, 0, sizeof(*c));
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
}

void upstream_response_cleanup(struct upstream_response *c)
{
    free(c->body);
    c->body = NULL;
}

int upstream_response_feed(struct upstream_response *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

    if (e == HPE_PAUSED)
        return n < len ? 1 : 0;
    if (e != HPE_OK || c->parser.upgrade)
        return -1;
    return 0;
}

/* ---- connections ------------------------------------------------------------------------- */

static void conn_close(struct conn *conn)
{
    if (h2o_linklist_is_linked(&conn->idle_link)) {
        h2o_linklist_unlink(&conn->idle_link);
        conn->pool->idle_count--;
    }
    if (h2o_timeout_is_linked(&conn->idle_timer))
        h2o_timeout_unlink(&conn->idle_timer);
    conn->pool->open--;
    h2o_socket_close(conn->sock);
    free(conn);
}

/* An idle connection said something: the backend closed it (or, against the protocol, sent
 * bytes nobody asked for). Either way it is of no more use. */
static void on_idle_read(h2o_socket_t *sock, const char *err)
{
    (void)err;
    conn_close(sock->data);
}

static void on_idle_timeout(h2o_timeout_entry_t *entry)
{
    conn_close(H2O_STRUCT_FROM_MEMBER(struct conn, idle_timer, entry));
}

/* Puts a connection whose response was read in full back in the pool. It stays on the loop,
 * reading, so that a close by the backend is seen at once. */
static void conn_idle(struct conn *conn)
{
    struct upstream_pool *pool = conn->pool;

    conn->call = NULL;
    h2o_socket_read_start(conn->sock, on_idle_read);
    h2o_linklist_insert(pool->idle.next, &conn->idle_link);
    pool->idle_count++;
    h2o_timeout_link(pool->loop, &pool->idle_timeout, &conn->idle_timer);
    if (pool->idle_count > pool->idle_max)
        conn_close(H2O_STRUCT_FROM_MEMBER(struct conn, idle_link, pool->idle.prev));
}

static struct conn *conn_take(struct upstream_pool *pool)
{
    struct conn *conn;

    if (h2o_linklist_is_empty(&pool->idle))
        return NULL;
    conn = H2O_STRUCT_FROM_MEMBER(struct conn, idle_link, pool->idle.next);
    h2o_linklist_unlink(&conn->idle_link);
    pool->idle_count--;
    h2o_timeout_unlink(&conn->idle_timer);
    return conn;
}

/* ---- ending a call ----------------------------------------------------------------------- */

/* Frees the call; its connection goes back to the pool when keep says it can, else is closed. */
static void call_free(struct upstream_call_full *c, int keep)
{
    struct conn *conn = c->conn;

    if (c->getaddr != NULL)
        h2o_hostinfo_getaddr_cancel(c->getaddr);
    if (h2o_timeout_is_linked(&c->io_timer))
        h2o_timeout_unlink(&c->io_timer);
    if (conn != NULL) {
        conn->call = NULL;
        if (keep && !h2o_socket_is_writing(conn->sock) && conn->sock->input->size == 0)
            conn_idle(conn);
        else
            conn_close(conn);
    }
    upstream_response_cleanup(&c->res);
    free(c);
}

/* Ends a call that failed, telling its owner through the callback of the phase it is in. */
static void call_fail(struct upstream_call_full *c, const char *err)
{
    if (c->on_head == NULL)
        c->on_connect(&c->super, err, NULL, NULL);
    else if (!c->head_delivered)
        c->on_head(&c->super, err, 0, h2o_iovec_init("", 0));
    else
        c->on_body(&c->super, err, c->res.body, c->res.body_len);
    call_free(c, 0);
}

void upstream_call_cancel(struct upstream_call *call)
{
    call_free((struct upstream_call_full *)call, 0);
}

/* ---- a call's response ------------------------------------------------------------------- */

static void on_io_timeout(h2o_timeout_entry_t *entry)
{
    struct upstream_call_full *c =
        H2O_STRUCT_FROM_MEMBER(struct upstream_call_full, io_timer, entry);
    c->res.body_len = 0;
    call_fail(c, upstream_error_timeout);
}

/* Hands what the parser found to the owner's callbacks. Returns 1 while the call goes on, 0 once
 * it is over (and freed). */
static int deliver(struct upstream_call_full *c, int reusable)
{
    if (!c->head_delivered) {
        if (!c->res.head_done)
            return 1; /* More to come. */
        c->head_delivered = 1;
        c->on_body = c->on_head(&c->super, NULL, c->res.parser.status_code,
                                h2o_iovec_init(c->res.ctype, c->res.ctype_len));
        if (c->on_body == NULL) {
            call_free(c, 0);
            return 0;
        }
    }
    if (c->res.complete) {
        c->on_body(&c->super, upstream_error_eos, c->res.body, c->res.body_len);
        call_free(c, reusable && http_should_keep_alive(&c->res.parser));
        return 0;
    }
    if (c->res.body_len > 0) {
        int stop = c->on_body(&c->super, NULL, c->res.body, c->res.body_len);
        c->res.body_len = 0;
        if (stop) {
            call_free(c, 0);
            return 0;
        }
    }
    if (h2o_timeout_is_linked(&c->io_timer))
        h2o_timeout_unlink(&c->io_timer);
    if (!c->paused)
        h2o_timeout_link(c->pool->loop, c->pool->io_timeout, &c->io_timer);
    return 1;
}

/* h2o reads all that the kernel holds at once (megabytes from a fast backend): it is parsed and
 * handed on a slice at a time, so that an owner that pauses the call stops the flow within a
 * slice, the rest waiting in the socket's buffer until it resumes. */
#define FEED_SLICE 16384

/* Feeds what the socket's buffer holds, until it is empty or the call paused. Returns 1 while
 * the call goes on, 0 once it is over. */
static int feed_input(struct upstream_call_full *c)
{
    h2o_socket_t *sock = c->conn->sock;

    while (sock->input->size > 0 && !c->paused) {
        size_t n = sock->input->size < FEED_SLICE ? sock->input->size : FEED_SLICE;
        int r = upstream_response_feed(&c->res, sock->input->bytes, n);
        h2o_buffer_consume(&sock->input, n);
        if (r < 0) {
            c->res.body_len = 0;
            call_fail(c, upstream_error_parse);
            return 0;
        }
        /* Bytes after the end of the response (r == 1) make the connection unfit for reuse;
         * bytes left in the buffer do too (call_free sees them). */
        if (!deliver(c, r == 0))
            return 0;
    }
    return 1;
}

static void on_read(h2o_socket_t *sock, const char *err);
static void end_of_input(struct upstream_call_full *c);

void upstream_call_pause(struct upstream_call *call)
{
    struct upstream_call_full *c = (struct upstream_call_full *)call;

    if (c->paused || c->conn == NULL)
        return;
    c->paused = 1;
    h2o_socket_read_stop(c->conn->sock);
    if (h2o_timeout_is_linked(&c->io_timer))
        h2o_timeout_unlink(&c->io_timer);
}

void upstream_call_resume(struct upstream_call *call)
{
    struct upstream_call_full *c = (struct upstream_call_full *)call;

    if (!c->paused)
        return;
    c->paused = 0;
    /* What arrived before the pause first; it may pause the call again, or end it. */
    if (!feed_input(c) || c->paused)
        return;
    if (c->eof) {
        end_of_input(c);
        return;
    }
    h2o_socket_read_start(c->conn->sock, on_read);
    if (h2o_timeout_is_linked(&c->io_timer))
        h2o_timeout_unlink(&c->io_timer);
    h2o_timeout_link(c->pool->loop, c->pool->io_timeout, &c->io_timer);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    struct conn *conn = sock->data;
    struct upstream_call_full *c = conn->call;

    if (!feed_input(c) || err == NULL)
        return;
    if (c->paused) {
        c->eof = 1; /* Seen once the bytes before it have been fed. */
        return;
    }
    end_of_input(c);
}

/* The connection ended: that completes a response that runs to the end of it. */
static void end_of_input(struct upstream_call_full *c)
{
    int r = upstream_response_feed(&c->res, NULL, 0);
    if (r == 0 && !c->res.complete)
        r = -1;
    if (r < 0) {
        c->res.body_len = 0;
        call_fail(c, upstream_error_closed);
        return;
    }
    deliver(c, 0); /* Complete, but the connection is gone. */
}

/* ---- a call's request -------------------------------------------------------------------- */

static void on_written(h2o_socket_t *sock, const char *err)
{
    struct conn *conn = sock->data;

    /* The response may have come and gone already (the connection is idle again then). */
    if (err != NULL && conn->call != NULL)
        call_fail(conn->call, upstream_error_io);
}

static void send_request(struct upstream_call_full *c)
{
    h2o_iovec_t *bufs = NULL;
    size_t bufcnt = 0;

    h2o_socket_read_start(c->conn->sock, on_read);
    c->on_head = c->on_connect(&c->super, NULL, &bufs, &bufcnt);
    if (c->on_head == NULL) {
        call_free(c, 1); /* Nothing was sent: the connection is as good as before. */
        return;
    }
    h2o_socket_write(c->conn->sock, bufs, bufcnt, on_written);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    struct upstream_call_full *c = ((struct conn *)sock->data)->call;

    if (err != NULL)
        call_fail(c, err);
    else
        send_request(c);
}

static void on_connected(h2o_socket_t *sock, const char *err)
{
    struct upstream_call_full *c = ((struct conn *)sock->data)->call;

    if (err != NULL)
        call_fail(c, upstream_error_io);
    else if (c->pool->ssl_ctx != NULL)
        h2o_socket_ssl_handshake(sock, c->pool->ssl_ctx, c->pool->host, on_handshake);
    else
        send_request(c);
}

static void connect_to(struct upstream_call_full *c, struct sockaddr *addr, socklen_t addrlen)
{
    h2o_socket_t *sock = h2o_socket_connect(c->pool->loop, addr, addrlen, on_connected);
    struct conn *conn;

    if (sock == NULL) {
        call_fail(c, upstream_error_io);
        return;
    }
    /* A fixed receive buffer bounds what h2o reads from the backend at once (it reads until the
     * kernel has nothing left), and so what a paused call holds for a slow client. */
    int rcvbuf = UPSTREAM_RCVBUF;
    setsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    conn = kn_calloc(1, sizeof(*conn));
    conn->pool = c->pool;
    conn->sock = sock;
    conn->call = c;
    conn->idle_timer.cb = on_idle_timeout;
    sock->data = conn;
    c->conn = conn;
    c->pool->open++;
}

static void on_getaddr(h2o_hostinfo_getaddr_req_t *req, const char *err, struct addrinfo *res,
                       void *data)
{
    struct upstream_call_full *c = data;
    struct addrinfo *a;
    (void)req;

    c->getaddr = NULL;
    if (err != NULL) {
        call_fail(c, err);
        return;
    }
    a = h2o_hostinfo_select_one(res);
    connect_to(c, a->ai_addr, a->ai_addrlen);
}

void upstream_call_start(struct upstream_call **callp, void *data, struct upstream_pool *pool,
                         upstream_connect_cb cb)
{
    struct upstream_call_full *c = kn_calloc(1, sizeof(*c));

    c->super.data = data;
    c->pool = pool;
    c->on_connect = cb;
    c->io_timer.cb = on_io_timeout;
    upstream_response_init(&c->res);
    *callp = &c->super;

    if ((c->conn = conn_take(pool)) != NULL) {
        c->conn->call = c;
        send_request(c);
    } else if (pool->host_is_ip) {
        connect_to(c, (struct sockaddr *)&pool->addr, sizeof(pool->addr));
    } else {
        c->getaddr = h2o_hostinfo_getaddr(
            pool->getaddr_receiver, h2o_iovec_init(pool->host, strlen(pool->host)),
            h2o_iovec_init(pool->serv, strlen(pool->serv)), AF_UNSPEC, SOCK_STREAM, IPPROTO_TCP,
            AI_ADDRCONFIG | AI_NUMERICSERV, on_getaddr, c);
    }
}

/* ---- the pool ---------------------------------------------------------------------------- */

void upstream_pool_init(struct upstream_pool *pool, h2o_loop_t *loop,
                        h2o_multithread_receiver_t *getaddr_receiver, h2o_iovec_t host,
                        uint16_t port, SSL_CTX *ssl_ctx, h2o_timeout_t *io_timeout,
                        uint64_t idle_timeout_ms, size_t idle_max)
{
    memset(pool, 0, sizeof(*pool));
    pool->loop = loop;
    pool->getaddr_receiver = getaddr_receiver;
    pool->host = kn_malloc(host.len + 1);
    memcpy(pool->host, host.base, host.len);
    pool->host[host.len] = '\0';
    snprintf(pool->serv, sizeof(pool->serv), "%u", (unsigned)port);
    if (h2o_hostinfo_aton(host, &pool->addr.sin_addr) == 0) {
        pool->addr.sin_family = AF_INET;
        pool->addr.sin_port = htons(port);
        pool->host_is_ip = 1;
    }
    pool->ssl_ctx = ssl_ctx;
    pool->io_timeout = io_timeout;
    h2o_timeout_init(loop, &pool->idle_timeout, idle_timeout_ms);
    h2o_linklist_init_anchor(&pool->idle);
    pool->idle_max = idle_max;
}

void upstream_pool_dispose(struct upstream_pool *pool)
{
    while (!h2o_linklist_is_empty(&pool->idle))
        conn_close(H2O_STRUCT_FROM_MEMBER(struct conn, idle_link, pool->idle.next));
    h2o_timeout_dispose(pool->loop, &pool->idle_timeout);
    free(pool->host);
    pool->host = NULL;
}
