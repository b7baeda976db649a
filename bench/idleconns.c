/* Idle keep-alive connections, for the memory figures of bench/run.sh: opens N connections to a
 * server, sends one request on each (POST /v1/chat with a key) and reads its answer, so that each
 * is a kept-alive HTTP/1.1 connection, prints "open N" and then holds them, idle, until its
 * standard input closes. Not part of Konnect.
 *
 *   idleconns PORT N KEY */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char req[512], buf[4096];
    int port, n, open_ = 0;

    if (argc != 4 || (port = atoi(argv[1])) <= 0 || (n = atoi(argv[2])) <= 0) {
        fprintf(stderr, "usage: idleconns PORT N KEY\n");
        return 2;
    }
    int len = snprintf(req, sizeof(req),
                       "POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                       "Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
                       "{\"message\": \"Hello\"}",
                       argv[3]);
    int *fds = calloc((size_t)n, sizeof(*fds));
    for (int i = 0; i < n; i++) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
            write(fd, req, (size_t)len) != len) {
            perror("idleconns: connect");
            break;
        }
        /* One answer: its head and a Content-Length body arrive together on loopback. */
        ssize_t r = read(fd, buf, sizeof(buf) - 1);
        if (r <= 0 || strncmp(buf, "HTTP/1.1 200", 12) != 0) {
            fprintf(stderr, "idleconns: connection %d got no 200 answer\n", i);
            close(fd);
            break;
        }
        fds[open_++] = fd;
    }
    printf("open %d\n", open_);
    fflush(stdout);
    while (read(0, buf, sizeof(buf)) > 0) {
    }
    for (int i = 0; i < open_; i++)
        close(fds[i]);
    return open_ == n ? 0 : 1;
}
