/* The control socket; see control.h. */
#include "keys/control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/util.h"

#define CLIENTS_MAX (CONTROL_POLLFDS - 1)
#define CLIENT_MS 2000

struct client {
    int fd;
    uint64_t deadline_ns;
    size_t len;
    char line[128];
};

struct control {
    int listen_fd; /* -1 without a socket. */
    char *path;
    control_answer_fn answer;
    void *ud;
    struct client clients[CLIENTS_MAX];
    size_t nclients;
};

struct control *control_open(const char *path, control_answer_fn answer, void *ud, char *err,
                             size_t errsize)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct control *c = kn_calloc(1, sizeof(*c));
    int fd;

    c->listen_fd = -1;
    c->answer = answer;
    c->ud = ud;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr,
                "konnect: control socket path %s is too long; key changes made by commands "
                "will reach this server within a second instead of at once\n",
                path);
        return c;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    /* The caller holds the data directory's lock, so a socket left here is a dead server's. */
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0600) != 0 ||
        listen(fd, 16) != 0) {
        snprintf(err, errsize, "cannot listen on control socket %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(c);
        return NULL;
    }
    c->listen_fd = fd;
    c->path = kn_strdup(path);
    return c;
}

void control_close(struct control *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nclients; i++)
        close(c->clients[i].fd);
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
        unlink(c->path);
    }
    free(c->path);
    free(c);
}

size_t control_pollfds(struct control *c, struct pollfd *p, uint64_t *wake_ns)
{
    p[0].fd = c->nclients < CLIENTS_MAX ? c->listen_fd : -1;
    p[0].events = POLLIN;
    p[0].revents = 0;
    for (size_t i = 0; i < c->nclients; i++) {
        p[1 + i].fd = c->clients[i].fd;
        p[1 + i].events = POLLIN;
        p[1 + i].revents = 0;
        if (c->clients[i].deadline_ns < *wake_ns)
            *wake_ns = c->clients[i].deadline_ns;
    }
    return 1 + c->nclients;
}

/* Answers one command line. */
static void answer_client(struct control *c, struct client *cl)
{
    char buf[700];

    cl->line[strcspn(cl->line, "\r\n")] = '\0';
    c->answer(c->ud, cl->line, buf, sizeof(buf));
    size_t len = strlen(buf);
    /* A few bytes into a local socket's empty buffer: never blocks; a client gone is no matter. */
    if (send(cl->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len) {
        /* The client went away; nothing to do. */
    }
}

/* Reads what a client sent; returns 1 when it is done with (answered, gone or silent too long). */
static int read_client(struct control *c, struct client *cl, uint64_t now)
{
    ssize_t n = recv(cl->fd, cl->line + cl->len, sizeof(cl->line) - 1 - cl->len, MSG_DONTWAIT);

    if (n > 0) {
        cl->len += (size_t)n;
        cl->line[cl->len] = '\0';
        if (memchr(cl->line, '\n', cl->len) != NULL || cl->len == sizeof(cl->line) - 1) {
            answer_client(c, cl);
            return 1;
        }
        return 0;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return 1;
    return now >= cl->deadline_ns;
}

void control_serve(struct control *c, const struct pollfd *p, size_t n, uint64_t now)
{
    int accept_one = n > 0 && c->listen_fd >= 0 && (p[0].revents & POLLIN) != 0;
    /* The entries after the first are the clients, in the order control_pollfds wrote them:
     * drop-outs are removed from the end first so that the others keep their entries. */
    for (size_t i = n > 1 ? n - 1 : 0; i-- > 0;) {
        if (i >= c->nclients)
            continue;
        if ((p[1 + i].revents != 0 || now >= c->clients[i].deadline_ns) &&
            read_client(c, &c->clients[i], now)) {
            close(c->clients[i].fd);
            c->clients[i] = c->clients[--c->nclients];
        }
    }
    if (accept_one && c->nclients < CLIENTS_MAX) {
        int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            struct client *cl = &c->clients[c->nclients++];
            memset(cl, 0, sizeof(*cl));
            cl->fd = fd;
            cl->deadline_ns = now + CLIENT_MS * 1000000ull;
        }
    }
}

int control_ask(const char *socket_path, const char *command, char *answer, size_t size,
                int timeout_ms)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct pollfd p;
    ssize_t n;
    int fd, ret = -1;
    size_t len = strlen(command);

    answer[0] = '\0';
    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        ret = (errno == ENOENT || errno == ECONNREFUSED) ? 0 : -1;
        goto out;
    }
    char line[512];
    if (len + 1 >= sizeof(line))
        goto out;
    memcpy(line, command, len);
    line[len++] = '\n';
    /* One write, so that the server reads the whole line at once; no SIGPIPE if it is gone. */
    if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t)len)
        goto out;
    p.fd = fd;
    p.events = POLLIN;
    if (poll(&p, 1, timeout_ms) <= 0 || (n = read(fd, answer, size - 1)) <= 0)
        goto out;
    answer[n] = '\0';
    answer[strcspn(answer, "\n")] = '\0';
    ret = 1;
out:
    close(fd);
    return ret;
}

int control_notify(const char *socket_path, int timeout_ms)
{
    char answer[64];
    int r = control_ask(socket_path, "sync", answer, sizeof(answer), timeout_ms);

    if (r <= 0)
        return r;
    return strncmp(answer, "ok", 2) == 0 ? 1 : -1;
}
