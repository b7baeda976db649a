/*
 * loadgen: an open-loop HTTP/1.1 load generator with latency percentiles, for bench/run.sh.
 *
 *   loadgen [-r RATE] [-c CONNECTIONS] [-d SECONDS] [-w SECONDS] [-t MS] [-H 'Name: value']...
 *           [-b BODY] URL
 *
 * Sends requests at a fixed aggregate rate (RATE per second, evenly spaced) whatever the server
 * does: request i is due at start + i / RATE, and its latency is measured from that due time, not
 * from the moment it went out, so a server (or a load generator) that falls behind is charged for
 * the whole wait of every request queued behind the stall ("coordinated omission" avoided, as in
 * wrk2). Before the schedule starts it opens CONNECTIONS keep-alive connections (one request on
 * each, all at once, not measured); a request that finds every connection busy opens another,
 * which the report shows as more connections than asked for.
 *
 * The schedule runs for a warm-up of -w seconds (not measured), then -d seconds whose requests
 * are measured. It then waits for the measured requests to finish (up to the -t time-out) and
 * prints one "name value" pair per line:
 *
 *   requests        measured requests that got a response (any status)
 *   errors          measured requests that failed: connection, I/O, time-out, or still
 *                   unanswered when the run ended
 *   non200          measured responses whose status was not 200
 *   rate            measured requests sent per second
 *   connections     the most connections open at once; connections_used: how many distinct
 *                   connections carried measured requests
 *   p50_us ... max_us  latency percentiles over the measured responses, from due time to the
 *                   end of the response, in microseconds
 *   lag_p50_us, lag_p99_us, lag_max_us  how late requests were handed to a connection compared
 *                   with their due time (the load generator's own delay, included above)
 *
 * HTTP is done by h2o's HTTP/1 client (libh2o-evloop) with a socket pool; the schedule is kept
 * with a timerfd, which gives microsecond timing where h2o's own timers count milliseconds.
 * Build: cc -O2 -DH2O_USE_LIBUV=0 loadgen.c -o loadgen $(pkg-config --cflags --libs
 * libh2o-evloop) -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>
#include <h2o/http1client.h>

#define FD_BITMAP_SIZE 65536

struct req {
    h2o_http1client_t *client;
    int64_t due;  /* ns, CLOCK_MONOTONIC */
    int measured; /* 1 when due inside the measured window */
    int status;
    struct req *prev, *next; /* the requests in flight */
};

static struct {
    h2o_evloop_t *loop;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t getaddr_receiver;
    h2o_timeout_t io_timeout;
    h2o_http1client_ctx_t ctx;
    h2o_socketpool_t pool;
    h2o_iovec_t reqbufs[2];
    size_t nbufs;

    double rate;
    int64_t start, measure_start, measure_end;
    uint64_t next_index; /* the next request to send: due at start + next_index / rate */
    int timer_fd;

    struct req inflight; /* list head */
    size_t ninflight;
    size_t max_connections;

    /* The measured requests. */
    uint64_t sent, answered, errors, non200;
    int64_t *lat, *lag;
    size_t nlat, nlag, cap_lat, cap_lag;
    unsigned char used_fd[FD_BITMAP_SIZE / 8];
    /* The connection warm-up. */
    uint64_t prewarm_errors;
    const char *last_error;
} G;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void push(int64_t **a, size_t *n, size_t *cap, int64_t v)
{
    if (*n == *cap) {
        *cap = *cap != 0 ? *cap * 2 : 65536;
        *a = realloc(*a, *cap * sizeof(**a));
        if (*a == NULL) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(1);
        }
    }
    (*a)[(*n)++] = v;
}

static void note_connections(void)
{
    size_t n = __atomic_load_n(&G.pool._shared.count, __ATOMIC_RELAXED);
    if (n > G.max_connections)
        G.max_connections = n;
}

static void finish(struct req *r, const char *error)
{
    r->prev->next = r->next;
    r->next->prev = r->prev;
    G.ninflight--;
    if (error != NULL) {
        G.last_error = error;
        if (r->measured)
            G.errors++;
        else if (r->due == 0)
            G.prewarm_errors++;
    } else if (r->measured) {
        G.answered++;
        if (r->status != 200)
            G.non200++;
        push(&G.lat, &G.nlat, &G.cap_lat, now_ns() - r->due);
    }
    free(r);
}

static int on_body(h2o_http1client_t *client, const char *errstr)
{
    struct req *r = client->data;

    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        finish(r, errstr);
        return -1;
    }
    h2o_buffer_consume(&client->sock->input, client->sock->input->size);
    if (errstr == h2o_http1client_error_is_eos)
        finish(r, NULL); /* h2o returns the connection to the pool after this. */
    return 0;
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr,
                                       int minor_version, int status, h2o_iovec_t msg,
                                       h2o_header_t *headers, size_t num_headers, int rlen)
{
    struct req *r = client->data;
    (void)minor_version;
    (void)msg;
    (void)headers;
    (void)num_headers;
    (void)rlen;

    r->status = status;
    if (errstr == h2o_http1client_error_is_eos) { /* a response without a body */
        finish(r, NULL);
        return NULL;
    }
    if (errstr != NULL) {
        finish(r, errstr);
        return NULL;
    }
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr,
                                          h2o_iovec_t **reqbufs, size_t *reqbufcnt,
                                          int *method_is_head)
{
    struct req *r = client->data;

    if (errstr != NULL) {
        finish(r, errstr);
        return NULL;
    }
    if (r->measured) {
        int fd = h2o_socket_get_fd(client->sock);
        if (fd >= 0 && fd < FD_BITMAP_SIZE)
            G.used_fd[fd / 8] |= (unsigned char)(1u << (fd % 8));
        push(&G.lag, &G.nlag, &G.cap_lag, now_ns() - r->due);
    }
    note_connections();
    *reqbufs = G.reqbufs;
    *reqbufcnt = G.nbufs;
    *method_is_head = 0;
    return on_head;
}

/* due == 0: a connection warm-up request. */
static void start_request(int64_t due, int measured)
{
    struct req *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(1);
    }
    r->due = due;
    r->measured = measured;
    r->next = G.inflight.next;
    r->prev = &G.inflight;
    r->next->prev = r;
    G.inflight.next = r;
    G.ninflight++;
    if (measured)
        G.sent++;
    h2o_http1client_connect_with_pool(&r->client, r, &G.ctx, &G.pool, on_connect);
}

static int64_t due_of(uint64_t i)
{
    return G.start + (int64_t)((double)i * 1e9 / G.rate);
}

static void arm(int64_t at)
{
    struct itimerspec its;

    memset(&its, 0, sizeof(its));
    its.it_value.tv_sec = at / 1000000000;
    its.it_value.tv_nsec = at % 1000000000;
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1; /* zero would disarm */
    if (timerfd_settime(G.timer_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
        perror("loadgen: timerfd_settime");
        exit(1);
    }
}

/* The timer fired: sends every request that is due, then waits for the next due time. */
static void on_tick(h2o_socket_t *sock, const char *err)
{
    uint64_t expirations;
    int64_t now = now_ns(), due;
    (void)sock;
    (void)err;

    while (read(G.timer_fd, &expirations, sizeof(expirations)) < 0 && errno == EINTR)
        ;
    while ((due = due_of(G.next_index)) <= now && due < G.measure_end) {
        start_request(due, due >= G.measure_start);
        G.next_index++;
    }
    if (due < G.measure_end)
        arm(due);
}

static double parse_seconds(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    double mul = 1;

    if (strcmp(end, "ms") == 0)
        mul = 0.001;
    else if (strcmp(end, "m") == 0)
        mul = 60;
    else if (*end != '\0' && strcmp(end, "s") != 0)
        v = -1;
    if (end == s || !(v >= 0)) {
        fprintf(stderr, "loadgen: %s must be a duration such as 10, 10s or 500ms\n", what);
        exit(2);
    }
    return v * mul;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of sorted values, in microseconds (nearest rank). */
static double quantile_us(const int64_t *v, size_t n, double q)
{
    size_t rank;

    if (n == 0)
        return 0;
    rank = (size_t)ceil(q * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)v[rank - 1] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen [-r RATE] [-c CONNECTIONS] [-d SECONDS] [-w SECONDS] [-t MS] "
                    "[-H 'Name: value']... [-b BODY] URL\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double duration = 10, warmup = 2;
    long conns = 32, timeout_ms = 10000;
    const char *body = NULL, *url_s;
    char *headers = calloc(1, 1), *head;
    size_t headers_len = 0, head_size;
    h2o_url_t url;
    int opt;

    G.rate = 2000;
    while ((opt = getopt(argc, argv, "r:c:d:w:t:H:b:h")) != -1) {
        switch (opt) {
        case 'r':
            G.rate = strtod(optarg, NULL);
            break;
        case 'c':
            conns = strtol(optarg, NULL, 10);
            break;
        case 'd':
            duration = parse_seconds(optarg, "-d");
            break;
        case 'w':
            warmup = parse_seconds(optarg, "-w");
            break;
        case 't':
            timeout_ms = strtol(optarg, NULL, 10);
            break;
        case 'H': {
            size_t n = strlen(optarg);
            headers = realloc(headers, headers_len + n + 3);
            memcpy(headers + headers_len, optarg, n);
            memcpy(headers + headers_len + n, "\r\n", 3);
            headers_len += n + 2;
            break;
        }
        case 'b':
            body = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc - 1 || !(G.rate > 0) || conns < 1 || conns > 10000 || timeout_ms < 1 ||
        duration <= 0)
        usage();
    url_s = argv[optind];
    if (h2o_url_parse(url_s, strlen(url_s), &url) != 0 || url.scheme != &H2O_URL_SCHEME_HTTP) {
        fprintf(stderr, "loadgen: the URL must be http://HOST:PORT/PATH\n");
        return 2;
    }

    /* The request, formatted once: the same bytes every time. */
    head_size = url.path.len + url.authority.len + headers_len + 128;
    head = malloc(head_size);
    int n = snprintf(head, head_size, "%s %.*s HTTP/1.1\r\nHost: %.*s\r\n", body ? "POST" : "GET",
                     (int)url.path.len, url.path.base, (int)url.authority.len, url.authority.base);
    if (body != NULL)
        n += snprintf(head + n, head_size - (size_t)n, "Content-Length: %zu\r\n", strlen(body));
    n += snprintf(head + n, head_size - (size_t)n, "%s\r\n", headers);
    G.reqbufs[0] = h2o_iovec_init(head, (size_t)n);
    G.nbufs = 1;
    if (body != NULL && *body != '\0') {
        G.reqbufs[1] = h2o_iovec_init(body, strlen(body));
        G.nbufs = 2;
    }

    signal(SIGPIPE, SIG_IGN);
    /* Wake up on time: the default timer slack of a process is 50 microseconds. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    G.inflight.next = G.inflight.prev = &G.inflight;
    G.loop = h2o_evloop_create();
    G.queue = h2o_multithread_create_queue(G.loop);
    h2o_multithread_register_receiver(G.queue, &G.getaddr_receiver, h2o_hostinfo_getaddr_receiver);
    h2o_timeout_init(G.loop, &G.io_timeout, (uint64_t)timeout_ms);
    G.ctx.loop = G.loop;
    G.ctx.getaddr_receiver = &G.getaddr_receiver;
    G.ctx.io_timeout = &G.io_timeout;
    h2o_socketpool_init_by_hostport(&G.pool, url.host, h2o_url_get_port(&url), 0, SIZE_MAX);
    /* Needed before the first connect (it gives the pool its loop); idle connections stay. */
    h2o_socketpool_set_timeout(&G.pool, G.loop, 3600 * 1000);

    /* Open the connections: one request on each, all at once. */
    for (long i = 0; i < conns; i++)
        start_request(0, 0);
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    while (G.ninflight > 0 && now_ns() < deadline)
        h2o_evloop_run(G.loop, 10);
    if (G.ninflight > 0 || G.prewarm_errors > 0) {
        fprintf(stderr, "loadgen: cannot open %ld connections to %s: %s\n", conns, url_s,
                G.ninflight > 0 ? "no answer" : G.last_error);
        return 1;
    }

    /* The schedule. */
    G.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (G.timer_fd < 0) {
        perror("loadgen: timerfd_create");
        return 1;
    }
    h2o_socket_t *tsock = h2o_evloop_socket_create(G.loop, G.timer_fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(tsock, on_tick);
    G.start = now_ns() + 1000000;
    G.measure_start = G.start + (int64_t)(warmup * 1e9);
    G.measure_end = G.measure_start + (int64_t)(duration * 1e9);
    arm(G.start);
    while (due_of(G.next_index) < G.measure_end)
        h2o_evloop_run(G.loop, 100);
    /* The last requests finish, or time out. */
    deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    while (G.ninflight > 0 && now_ns() < deadline)
        h2o_evloop_run(G.loop, 10);
    while (G.inflight.next != &G.inflight) {
        struct req *r = G.inflight.next;
        if (r->client != NULL)
            h2o_http1client_cancel(r->client);
        finish(r, "no answer in time");
    }

    size_t used = 0;
    for (size_t i = 0; i < sizeof(G.used_fd); i++)
        used += (size_t)__builtin_popcount(G.used_fd[i]);
    qsort(G.lat, G.nlat, sizeof(*G.lat), cmp_i64);
    qsort(G.lag, G.nlag, sizeof(*G.lag), cmp_i64);
    printf("url %s\n", url_s);
    printf("target_rate %.0f\n", G.rate);
    printf("duration_s %.3f\n", duration);
    printf("warmup_s %.3f\n", warmup);
    printf("requests %" PRIu64 "\n", G.answered);
    printf("errors %" PRIu64 "\n", G.errors);
    printf("non200 %" PRIu64 "\n", G.non200);
    printf("rate %.1f\n", (double)G.sent / duration);
    printf("connections %zu\n", G.max_connections);
    printf("connections_used %zu\n", used);
    printf("p50_us %.1f\n", quantile_us(G.lat, G.nlat, 0.50));
    printf("p90_us %.1f\n", quantile_us(G.lat, G.nlat, 0.90));
    printf("p99_us %.1f\n", quantile_us(G.lat, G.nlat, 0.99));
    printf("p999_us %.1f\n", quantile_us(G.lat, G.nlat, 0.999));
    printf("max_us %.1f\n", quantile_us(G.lat, G.nlat, 1.0));
    printf("lag_p50_us %.1f\n", quantile_us(G.lag, G.nlag, 0.50));
    printf("lag_p99_us %.1f\n", quantile_us(G.lag, G.nlag, 0.99));
    printf("lag_max_us %.1f\n", quantile_us(G.lag, G.nlag, 1.0));
    if (G.errors > 0)
        printf("last_error %s\n", G.last_error);
    return 0;
}
