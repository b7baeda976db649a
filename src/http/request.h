/* What Konnect reads of a request beside its body: the event loop it runs on, its client's
 * address (behind trusted proxies too), its headers, whether its client is still there, whether
 * it came over HTTPS. Internal to src/http/. */
#ifndef KN_HTTP_REQUEST_H
#define KN_HTTP_REQUEST_H

#include <stddef.h>
#include <sys/socket.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>

#include "http/accesslog.h"

struct iplist;
struct metrics_loop;

/* What reading a request and answering it need of the event loop it runs on: the h2o context
 * (first, so that a request's conn->ctx leads here), the access log with the loop's own line
 * buffer, and the trusted proxies. The server's worker begins with one (http/internal.h); a test
 * of a module that answers requests makes one of its own. */
struct http_loop {
    h2o_context_t ctx;
    struct accesslog *log;
    struct logbuf log_buf;
    const struct iplist *trusted; /* KONNECT_TRUSTED_PROXIES, or NULL. */
    int trust_any_proxy;          /* KONNECT_TRUST_PROXY=1 (deprecated). */
    struct metrics_loop *metrics; /* This loop's counts (http/metrics.h), or NULL. */
};

static inline struct http_loop *http_loop_of(h2o_req_t *req)
{
    return (struct http_loop *)req->conn->ctx;
}

/* Takes the first of the messages an h2o multithread receiver was given (its on_messages
 * callback's list), or NULL when none is left. */
static inline h2o_multithread_message_t *http_next_message(h2o_linklist_t *messages)
{
    h2o_multithread_message_t *msg;

    if (h2o_linklist_is_empty(messages))
        return NULL;
    msg = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
    h2o_linklist_unlink(&msg->link);
    return msg;
}

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
/* Returns 1 when the client of an HTTP/1 request has closed its connection (or shut down its
 * sending half). HTTP/1 stops reading a connection while its request is being answered, so h2o
 * would notice only when it writes; this asks the kernel instead (POLLRDHUP: the client's FIN,
 * seen even behind pipelined bytes that nobody has read yet; POLLHUP, POLLERR: a reset). */
int http_client_gone(h2o_req_t *req);
/* Returns 1 when the client reached us over HTTPS (directly, or through a trusted proxy). */
int http_is_https(h2o_req_t *req);

#endif
