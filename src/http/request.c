/* What Konnect reads of a request; see request.h. */
#include "http/request.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "core/ipnet.h"

int http_client_addr(h2o_req_t *req, struct sockaddr_storage *out)
{
    const struct iplist *trusted = http_loop_of(req)->trusted;
    struct sockaddr_storage peer;
    struct ipnet_text few[16], *xff = few;
    size_t n = 0, cap = sizeof(few) / sizeof(few[0]);

    if (req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&peer) == 0)
        return 0;
    if (trusted == NULL) {
        *out = peer;
        return 1;
    }
    /* Every X-Forwarded-For line: a proxy that appends a line of its own puts the one address it
     * vouches for last, after however many lines the client sent. */
    for (ssize_t i = -1;
         (i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-forwarded-for"), i)) != -1;) {
        if (n == cap) {
            struct ipnet_text *more = h2o_mem_alloc_pool(&req->pool, 2 * cap * sizeof(*more));
            memcpy(more, xff, n * sizeof(*xff));
            xff = more;
            cap *= 2;
        }
        xff[n].base = req->headers.entries[i].value.base;
        xff[n++].len = req->headers.entries[i].value.len;
    }
    ipnet_forwarded_client(trusted, (struct sockaddr *)&peer, xff, n, out);
    return 1;
}

int http_peer_trusted(h2o_req_t *req)
{
    const struct iplist *trusted = http_loop_of(req)->trusted;
    struct sockaddr_storage peer;

    return trusted != NULL &&
           req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&peer) != 0 &&
           iplist_contains(trusted, (struct sockaddr *)&peer);
}

void http_client_ip(h2o_req_t *req, char *out, size_t size)
{
    struct sockaddr_storage ss;

    out[0] = '\0';
    if (!http_client_addr(req, &ss))
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)size);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)size);
}

const h2o_iovec_t *http_find_header(h2o_req_t *req, const h2o_token_t *token, const char *name)
{
    ssize_t i = token != NULL ? h2o_find_header(&req->headers, token, -1)
                              : h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    return i < 0 ? NULL : &req->headers.entries[i].value;
}

int http_client_gone(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket != NULL
                             ? req->conn->callbacks->get_socket(req->conn)
                             : NULL;
    struct pollfd p = {.events = POLLRDHUP};

    if (sock == NULL || req->version >= 0x200)
        return 0; /* HTTP/2 reports a reset stream itself: h2o frees the request. */
    p.fd = h2o_socket_get_fd(sock);
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

int http_is_https(h2o_req_t *req)
{
    if (req->scheme == &H2O_URL_SCHEME_HTTPS)
        return 1;
    if (http_loop_of(req)->trust_any_proxy || http_peer_trusted(req)) {
        const h2o_iovec_t *v = http_find_header(req, NULL, "x-forwarded-proto");
        return v != NULL && h2o_lcstris(v->base, v->len, H2O_STRLIT("https"));
    }
    return 0;
}
