/* The HTTP library's own ceiling, for row h of bench/run.sh: the least an h2o 2.2.5 server can do
 * to answer POST /v1/chat the way Konnect answers a test key, built the way Konnect is (the
 * system's libh2o-evloop, one event loop per thread, each with its own listening socket on the
 * same port with SO_REUSEPORT). Every request gets the same body, read from a file at start, with
 * Content-Length and the headers Konnect sends (Content-Type, Cache-Control, request-id and
 * x-request-id), whatever the method and path; nothing is parsed, checked or looked up. Not part
 * of Konnect.
 *
 *   h2o_min PORT THREADS BODY_FILE */
#define H2O_USE_EPOLL 1
#include <h2o.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static h2o_globalconf_t config;
static char *body;
static size_t body_len;
static int port;

struct worker {
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    pthread_t thread;
};

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    static const char id[] = "req_000000000000000000000000";

    (void)self;
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = body_len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("request-id"), 0, NULL,
                          H2O_STRLIT(id));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          H2O_STRLIT(id));
    h2o_send_inline(req, body, body_len);
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct worker *w = listener->data;
    h2o_socket_t *sock;

    if (err != NULL)
        return;
    for (int i = 0; i < 16 && (sock = h2o_evloop_socket_accept(listener)) != NULL; i++)
        h2o_accept(&w->accept_ctx, sock);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 4096) != 0) {
        perror("h2o_min: listen");
        exit(1);
    }
    h2o_context_init(&w->ctx, h2o_evloop_create(), &config);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = config.hosts;
    h2o_socket_t *listener = h2o_evloop_socket_create(w->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    listener->data = w;
    h2o_socket_read_start(listener, on_accept);
    for (;;)
        h2o_evloop_run(w->ctx.loop, INT32_MAX);
    return NULL;
}

int main(int argc, char **argv)
{
    FILE *f;
    int threads;

    if (argc != 4 || (port = atoi(argv[1])) <= 0 || (threads = atoi(argv[2])) <= 0) {
        fprintf(stderr, "usage: h2o_min PORT THREADS BODY_FILE\n");
        return 2;
    }
    if ((f = fopen(argv[3], "rb")) == NULL) {
        perror(argv[3]);
        return 1;
    }
    body = malloc(1 << 20);
    body_len = fread(body, 1, 1 << 20, f);
    fclose(f);
    signal(SIGPIPE, SIG_IGN); /* A client that leaves must not kill the server (Konnect too). */
    h2o_config_init(&config);
    h2o_hostconf_t *host =
        h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;
    struct worker *w = calloc((size_t)threads, sizeof(*w));
    for (int i = 0; i < threads; i++)
        pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
    fprintf(stderr, "h2o_min: listening on 127.0.0.1:%d (%d threads)\n", port, threads);
    pthread_join(w[0].thread, NULL);
    return 0;
}
