/* An HTTP/1.1 client for the model backend, on an h2o event loop, with a pool of keep-alive
 * connections that stay registered with the loop while they are idle.
 *
 * h2o's own client hands an idle connection to its pool by taking it off the loop (and back on
 * when it is reused, after peeking at it to see that it is still open): five system calls per
 * request that this pool does without. An idle connection here goes on being watched, so one that
 * the backend closes leaves the pool as soon as the loop sees it. Responses are parsed by
 * http-parser (Content-Length, chunked, or up to the end of the connection; 1xx answers skipped).
 *
 * One pool per event loop; everything runs on that loop's thread. */
#ifndef KONNECT_HTTP_UPSTREAM_H
#define KONNECT_HTTP_UPSTREAM_H

#include <h2o.h>
#include <http_parser.h>

#define UPSTREAM_CTYPE_MAX 128 /* Enough of Content-Type to tell what it is. */
#define UPSTREAM_FIELD_MAX 16  /* "content-type" and a little more: longer names cannot match. */
/* The receive buffer of a backend connection (SO_RCVBUF; the kernel doubles it for its own
 * bookkeeping). Enough for 2.5 MB/s at 100 ms round trips; a chat answer streams far slower. */
#define UPSTREAM_RCVBUF 262144

/* The error strings handed to the callbacks (compare the pointers). */
extern const char upstream_error_eos[];     /* on_body: the response is complete */
extern const char upstream_error_timeout[]; /* on_body: silence longer than the I/O timeout */
extern const char upstream_error_closed[];  /* the backend closed the connection */
extern const char upstream_error_parse[];   /* the backend's bytes are not an HTTP response */
extern const char upstream_error_io[];      /* a network error (also: cannot connect) */

struct upstream_call;

/* A response as it arrives, read by http-parser. */
struct upstream_response {
    http_parser parser; /* parser.status_code: the status, once head_done. */
    int head_done;      /* The final head is in (1xx answers are skipped). */
    int complete;       /* The whole response is in. */
    size_t ctype_len;   /* Content-Type (its first UPSTREAM_CTYPE_MAX bytes; empty when absent). */
    char ctype[UPSTREAM_CTYPE_MAX];
    char *body; /* Body bytes fed since the caller last emptied it (set body_len to 0). */
    size_t body_len, body_cap;
    /* The header being read. */
    int in_value;
    int field_is_ctype;
    size_t field_len;
    char field[UPSTREAM_FIELD_MAX];
};

/* Prepares r for a response; upstream_response_cleanup frees what it holds. */
void upstream_response_init(struct upstream_response *r);
void upstream_response_cleanup(struct upstream_response *r);

/* Feeds bytes that arrived (len 0: the connection ended). The body is decoded (chunks) into
 * r->body. Returns 0, 1 when bytes came after the end of the response (the connection cannot be
 * reused for another), or -1 when the bytes are not a valid response, or the connection ended
 * where a response cannot. */
int upstream_response_feed(struct upstream_response *r, const char *data, size_t len);

/* Called with the body bytes that arrived (decoded from chunks), then once more with
 * upstream_error_eos when the response is complete, or with another error when it cannot be
 * completed. Returns 0 to go on reading, non-zero to stop (the call then ends, its connection is
 * closed). After a call with an error string the call is over. */
typedef int (*upstream_body_cb)(struct upstream_call *call, const char *err, const char *data,
                                size_t len);

/* Called once the response's head is in (err NULL; content_type is the Content-Type value, empty
 * when absent), or with an error before that (the call is then over). Returns the body callback,
 * or NULL to end the call. */
typedef upstream_body_cb (*upstream_head_cb)(struct upstream_call *call, const char *err,
                                             int status, h2o_iovec_t content_type);

/* Called once a connection is ready (err NULL): sets *bufs and *bufcnt to the request to send
 * (head and body; the buffers must live until the call ends) and returns the head callback, or
 * NULL to end the call. With an error, the connection could not be made and the call is over. */
typedef upstream_head_cb (*upstream_connect_cb)(struct upstream_call *call, const char *err,
                                                h2o_iovec_t **bufs, size_t *bufcnt);

struct upstream_pool {
    h2o_loop_t *loop;
    h2o_multithread_receiver_t *getaddr_receiver;
    char *host; /* The backend's host name (also the TLS server name); owned. */
    char serv[sizeof("65535")];
    struct sockaddr_in addr; /* When host is an IPv4 address: no lookup. */
    int host_is_ip;
    SSL_CTX *ssl_ctx;          /* NULL for plain HTTP; borrowed. */
    h2o_timeout_t *io_timeout; /* The longest silence while a body arrives; borrowed. */
    h2o_timeout_t idle_timeout;
    h2o_linklist_t idle; /* Idle connections, the most recently used first. */
    size_t idle_count, idle_max;
    size_t open; /* Connections open, idle or in use. */
};

/* The call's public part; the rest is upstream.c's. */
struct upstream_call {
    void *data; /* The caller's. */
};

/* Sets up a pool for host:port (https when ssl_ctx is not NULL) on loop. Idle connections are
 * closed after idle_timeout_ms, and beyond idle_max. */
void upstream_pool_init(struct upstream_pool *pool, h2o_loop_t *loop,
                        h2o_multithread_receiver_t *getaddr_receiver, h2o_iovec_t host,
                        uint16_t port, SSL_CTX *ssl_ctx, h2o_timeout_t *io_timeout,
                        uint64_t idle_timeout_ms, size_t idle_max);

/* Closes the idle connections. Calls in progress must have ended. */
void upstream_pool_dispose(struct upstream_pool *pool);

/* Starts a call: on an idle connection of the pool when there is one (cb is then called before
 * this returns), otherwise on a new one. *callp is set before any callback runs. */
void upstream_call_start(struct upstream_call **callp, void *data, struct upstream_pool *pool,
                         upstream_connect_cb cb);

/* Stops reading a call's response, and with it the silence timeout: a call paused by its owner
 * (whose client reads slower than the backend writes) is not a silent backend. Its bytes wait in
 * the kernel's buffers, which then push back on the backend. resume reads again, feeding first
 * what arrived before the pause (its callbacks run from inside resume). pause may be called from
 * the body callback (it takes effect once that returns); resume only from outside the
 * callbacks. */
void upstream_call_pause(struct upstream_call *call);
void upstream_call_resume(struct upstream_call *call);

/* Ends a call from outside its callbacks (no callback runs); its connection is closed. */
void upstream_call_cancel(struct upstream_call *call);

#endif
