/* The live request's state machine on an event loop of its own, without a server: an h2o loop
 * whose only handler hands every request to live_handle, a backend that speaks HTTP/1.1 from a
 * thread (plain answers, streams of several events with and without usage, failures), a client
 * on another thread, and a billing sink that the test answers itself. What it holds:
 *
 *   - an answer reaches the client only after its bill was acknowledged, never before;
 *   - a bill that cannot be written turns the answer into 503 billing_unavailable;
 *   - a failed backend call is never billed;
 *   - a stream is billed by its usage, or by estimate when it has none; a client that leaves in
 *     the middle of one is billed for what was generated, and a stream the backend cuts short
 *     after part of it was sent is billed for that part;
 *   - every request gives back its in-flight slot and its quota reservation, whatever the end. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chat/openai.h"
#include "core/util.h"
#include "http/accesslog.h"
#include "http/live.h"
#include "http/request.h"
#include "http/response.h"
#include "keys/keytable.h"
#include "limits/limiter.h"
#include "metering/plans.h"
#include "unit.h"

/* ---- the backend: one scripted answer per connection ------------------------------------- */

struct script {
    const char *head;          /* The status line and headers, without the blank line. */
    const char *const *pieces; /* The body, written piece by piece with a pause between. */
    int chunked;               /* Each piece a chunk; else the body has a Content-Length. */
    int finish;                /* Chunked: end with the last chunk (else the connection closes). */
    int pause_ms;
};

static _Atomic(const struct script *) script;
static _Atomic int backend_calls;
static int backend_fd;

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one request (head and Content-Length body). Returns 0, or -1 when the peer left. */
static int read_request(int fd)
{
    char buf[65536];
    size_t have = 0;
    char *end = NULL;

    while (end == NULL) {
        ssize_t r = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    const char *cl = strcasestr(buf, "content-length:");
    size_t want = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
    size_t body = have - (size_t)(end + 4 - buf);
    while (body < want) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0)
            return -1;
        body += (size_t)r;
    }
    return 0;
}

static void *backend_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(backend_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        if (read_request(fd) == 0) {
            const struct script *s = atomic_load(&script);
            char line[64];
            size_t total = 0;
            atomic_fetch_add(&backend_calls, 1);
            write_all(fd, s->head, strlen(s->head));
            for (const char *const *p = s->pieces; *p != NULL; p++)
                total += strlen(*p);
            if (s->chunked)
                snprintf(line, sizeof(line), "\r\nTransfer-Encoding: chunked\r\n\r\n");
            else
                snprintf(line, sizeof(line), "\r\nContent-Length: %zu\r\n\r\n", total);
            write_all(fd, line, strlen(line));
            for (const char *const *p = s->pieces; *p != NULL; p++) {
                if (p != s->pieces && s->pause_ms > 0)
                    poll(NULL, 0, s->pause_ms);
                if (s->chunked) {
                    snprintf(line, sizeof(line), "%zx\r\n", strlen(*p));
                    write_all(fd, line, strlen(line));
                }
                write_all(fd, *p, strlen(*p));
                if (s->chunked)
                    write_all(fd, "\r\n", 2);
            }
            if (s->chunked && s->finish)
                write_all(fd, "0\r\n\r\n", 5);
        }
        close(fd);
    }
}

/* ---- the client: one request per connection, on a thread ------------------------------- */

struct client {
    pthread_t thread;
    const char *body;
    size_t leave_after; /* Close once this many bytes arrived (0: read to the end). */
    char got[65536];
    _Atomic size_t got_len;
    _Atomic int done;
};

static int server_port;

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)server_port)};
    char head[512];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0) {
        int n = snprintf(head, sizeof(head),
                         "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                         strlen(c->body));
        write_all(fd, head, (size_t)n);
        write_all(fd, c->body, strlen(c->body));
        for (;;) {
            size_t len = atomic_load(&c->got_len);
            ssize_t r = recv(fd, c->got + len, sizeof(c->got) - 1 - len, 0);
            if (r <= 0)
                break;
            c->got[len + (size_t)r] = '\0';
            atomic_store(&c->got_len, len + (size_t)r);
            if (c->leave_after != 0 && len + (size_t)r >= c->leave_after)
                break;
        }
    }
    close(fd);
    atomic_store(&c->done, 1);
    return NULL;
}

/* ---- the billing sink ------------------------------------------------------------------- */

enum sink_mode { SINK_ACK, SINK_REFUSE, SINK_HOLD };

static enum sink_mode sink_mode;
static struct ledger_entry *held_entry;
static struct store_ledger_row billed[8];
static int nbilled;

static void sink(void *ud, struct ledger_entry *e)
{
    (void)ud;
    if (nbilled < 8)
        billed[nbilled] = e->row;
    nbilled++;
    e->taken_ns = kn_mono_ns(); /* As the store thread's ledger stamps them. */
    e->committed_ns = e->taken_ns;
    if (sink_mode == SINK_HOLD)
        held_entry = e;
    else
        e->done(e, sink_mode == SINK_ACK);
}

/* ---- the loop and its handler ----------------------------------------------------------- */

static struct http_loop hl;
static h2o_globalconf_t h2o_conf;
static h2o_accept_ctx_t accept_ctx;
static struct live_worker lw;
static struct live_upstream upstream;
static struct plans *plans;
static struct acctrec account;
static struct keytable *keys;
static struct keyrec *key; /* A live key of `account`, in `keys`. */
static h2o_socket_t *listener;

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    const struct plan *plan = plans_find(plans, "default");
    struct reqinfo info = {.key = key};
    struct chat_call call;
    struct chat_error cerr;
    struct plan_model pm;
    struct quota_hold hold;
    int64_t month = kn_month_of(kn_unix_now());

    (void)self;
    kn_strlcpy(info.request_id, "req_0000000000000000000000test", sizeof(info.request_id));
    if (chat_call_from_openai(req->entity.base, req->entity.len, "m1", plan->allowed_params, &call,
                              &cerr) != 0 ||
        plans_model(plans, plan, call.model, strlen(call.model), &pm) != 0) {
        http_send_error(req, &info, KN_ERR_BAD_REQUEST, "bad test request", NULL);
        return 0;
    }
    chat_call_prepare(&call, pm.backend);
    CHECK(limiter_inflight_acquire(&limiter_local, &account, 100));
    CHECK(limiter_quota_reserve(&limiter_local, key, month, 5000, &hold) == QUOTA_OK);
    struct live_terms terms = {month, hold, plan, &pm, plans, &limiter_local, kn_mono_ns(), 0};
    live_handle(&lw, req, &info, key, &terms, &call);
    return 0;
}

static void on_accept(h2o_socket_t *lsock, const char *err)
{
    h2o_socket_t *sock;

    if (err == NULL && (sock = h2o_evloop_socket_accept(lsock)) != NULL)
        h2o_accept(&accept_ctx, sock);
}

static int listen_any(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        kn_fatal("cannot listen");
    *port = ntohs(sin.sin_port);
    return fd;
}

static void setup(void)
{
    struct kn_config cfg;
    char err[256];
    int backend_port, fd;
    pthread_t t;

    backend_fd = listen_any(&backend_port);
    pthread_create(&t, NULL, backend_main, NULL);
    pthread_detach(t);

    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.model_url, sizeof(cfg.model_url), "http://127.0.0.1:%d/v1", backend_port);
    if (live_upstream_init(&upstream, &cfg, err, sizeof(err)) != 0)
        kn_fatal("%s", err);
    if ((plans = plans_load("/nonexistent/plans.json", 0, err, sizeof(err))) == NULL)
        kn_fatal("%s", err);

    h2o_config_init(&h2o_conf);
    h2o_hostconf_t *host =
        h2o_config_register_host(&h2o_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;
    h2o_context_init(&hl.ctx, h2o_evloop_create(), &h2o_conf);
    if ((hl.log = accesslog_open("off", err, sizeof(err))) == NULL)
        kn_fatal("%s", err);
    accept_ctx.ctx = &hl.ctx;
    accept_ctx.hosts = h2o_conf.hosts;

    fd = listen_any(&server_port);
    listener = h2o_evloop_socket_create(hl.ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(listener, on_accept);

    struct live_setup ls = {
        .upstream = &upstream,
        .connect_timeout_ms = 2000,
        .first_byte_timeout_ms = 2000,
        .total_timeout_ms = 10000,
        .stall_timeout_ms = 2000,
        .max_response_bytes = 1 << 20,
        .bill = sink,
    };
    live_worker_init(&lw, &hl.ctx, &ls);

    kn_strlcpy(account.id, "acct_test", sizeof(account.id));
    quota_configure(&account, plans_find(plans, "default"), PLAN_UNLIMITED, PLAN_UNLIMITED);
    struct keyrec_data kd = {
        .mode = APIKEY_MODE_LIVE, .env = APIKEY_ENV_PRODUCTION, .acct = &account};
    kn_strlcpy(kd.id, "key_test", sizeof(kd.id));
    keys = keytable_new(1);
    key = keytable_upsert(keys, &kd);
}

static void run_loop_ms(int ms)
{
    uint64_t until = kn_mono_ns() + (uint64_t)ms * 1000000u;
    while (kn_mono_ns() < until)
        h2o_evloop_run(hl.ctx.loop, 10);
}

/* Runs the loop until the client is done and no live request is left (or 10 s passed). */
static void run_until_done(struct client *c)
{
    uint64_t until = kn_mono_ns() + 10000000000ull;
    while (kn_mono_ns() < until && !(atomic_load(&c->done) && h2o_linklist_is_empty(&lw.reqs)))
        h2o_evloop_run(hl.ctx.loop, 10);
    pthread_join(c->thread, NULL);
    /* Let h2o close what the client left. */
    run_loop_ms(20);
}

static struct client *start(const char *body, size_t leave_after)
{
    struct client *c = kn_calloc(1, sizeof(*c));
    c->body = body;
    c->leave_after = leave_after;
    nbilled = 0;
    atomic_store(&backend_calls, 0);
    pthread_create(&c->thread, NULL, client_main, c);
    return c;
}

/* Every request gives back its slot and its reservation, however it ended. */
static void check_released(void)
{
    CHECK(atomic_load(&account.inflight) == 0);
    CHECK(atomic_load(&account.tokens_reserved) == 0);
}

static const char plain_body[] = "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":"
                                 "\"Hello there\"}]}";
static const char stream_body[] = "{\"model\":\"m1\",\"stream\":true,\"messages\":[{\"role\":"
                                  "\"user\",\"content\":\"Hello there\"}]}";

#define PLAIN_ANSWER                                                                               \
    "{\"id\":\"x\",\"object\":\"chat.completion\",\"model\":\"m1\",\"choices\":[{\"index\":0,"     \
    "\"message\":{\"role\":\"assistant\",\"content\":\"General Kenobi\"},\"finish_reason\":"       \
    "\"stop\"}],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}"

#define JSON_HEAD "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close"
static const char *const plain_answer[] = {PLAIN_ANSWER, NULL};
static const struct script plain_ok = {JSON_HEAD, plain_answer, 0, 0, 0};

/* Plain answer: billed by its usage, delivered only once the bill is acknowledged. */
static void test_plain_waits_for_its_bill(void)
{
    atomic_store(&script, &plain_ok);
    sink_mode = SINK_HOLD;
    held_entry = NULL;
    struct client *c = start(plain_body, 0);

    uint64_t until = kn_mono_ns() + 5000000000ull;
    while (held_entry == NULL && kn_mono_ns() < until)
        h2o_evloop_run(hl.ctx.loop, 10);
    CHECK(held_entry != NULL);
    CHECK(nbilled == 1);
    CHECK(billed[0].input_tokens == 11 && billed[0].output_tokens == 7);
    CHECK_STR(billed[0].key_id, "key_test");
    CHECK_STR(billed[0].account_id, "acct_test"); /* The account record's id. */
    run_loop_ms(150);
    CHECK(atomic_load(&c->got_len) == 0); /* Nothing before the bill is durable. */
    CHECK(live_worker_billing(&lw) == 1);
    if (held_entry != NULL) {
        held_entry->committed_ns = kn_mono_ns();
        held_entry->done(held_entry, 1);
    }
    run_until_done(c);
    CHECK(strncmp(c->got, "HTTP/1.1 200", 12) == 0);
    CHECK(strstr(c->got, "General Kenobi") != NULL);
    CHECK(atomic_load(&backend_calls) == 1);
    check_released();
    free(c);
}

/* A bill that cannot be written: the answer is withheld, 503 billing_unavailable. */
static void test_unbillable_answer_is_withheld(void)
{
    atomic_store(&script, &plain_ok);
    sink_mode = SINK_REFUSE;
    struct client *c = start(plain_body, 0);
    run_until_done(c);
    CHECK(nbilled == 1);
    CHECK(strncmp(c->got, "HTTP/1.1 503", 12) == 0);
    CHECK(strstr(c->got, "billing_unavailable") != NULL);
    CHECK(strstr(c->got, "General Kenobi") == NULL);
    check_released();
    free(c);
}

/* A backend that fails: 502 to the client, no bill. */
static void test_failed_backend_is_not_billed(void)
{
    static const char *const pieces[] = {"{}", NULL};
    static const struct script s = {"HTTP/1.1 500 Internal Server Error\r\n"
                                    "Content-Type: application/json\r\nConnection: close",
                                    pieces, 0, 0, 0};
    atomic_store(&script, &s);
    sink_mode = SINK_ACK;
    struct client *c = start(plain_body, 0);
    run_until_done(c);
    CHECK(nbilled == 0);
    CHECK(strncmp(c->got, "HTTP/1.1 502", 12) == 0);
    CHECK(strstr(c->got, "model_backend_error") != NULL);
    check_released();
    free(c);
}

#define SSE_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close"
/* One event of generated text. */
#define TEXT_EVENT(text)                                                                           \
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" text "\"}}]}\n\n"

/* A stream with usage at its end: every event reaches the client, billed by the usage. */
static void test_stream_billed_by_usage(void)
{
    static const char *const pieces[] = {
        TEXT_EVENT("The quick brown "), TEXT_EVENT("fox jumps over "),
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}\n\n"
        "data: [DONE]\n\n",
        NULL};
    static const struct script s = {SSE_HEAD, pieces, 1, 1, 5};
    atomic_store(&script, &s);
    sink_mode = SINK_ACK;
    struct client *c = start(stream_body, 0);
    run_until_done(c);
    CHECK(nbilled == 1);
    CHECK(billed[0].input_tokens == 12 && billed[0].output_tokens == 9);
    CHECK(strstr(c->got, "The quick brown") != NULL && strstr(c->got, "fox jumps") != NULL);
    CHECK(strstr(c->got, "[DONE]") != NULL);
    check_released();
    free(c);
}

/* The backend cuts the stream short after two events, without usage: the part sent is billed by
 * estimate, and the stream ends with an error event. */
static void test_stream_cut_by_backend_billed_for_its_part(void)
{
    static const char *const pieces[] = {TEXT_EVENT("The quick brown "),
                                         TEXT_EVENT("fox jumps over "), NULL};
    static const struct script s = {SSE_HEAD, pieces, 1, 0, 5};
    atomic_store(&script, &s);
    sink_mode = SINK_ACK;
    struct client *c = start(stream_body, 0);
    run_until_done(c);
    CHECK(nbilled == 1);
    CHECK(billed[0].output_tokens > 0);
    CHECK(billed[0].input_tokens > 0); /* The estimate of the whole upstream request. */
    CHECK(strstr(c->got, "fox jumps") != NULL);
    CHECK(strstr(c->got, "model_backend_error") != NULL);
    CHECK(strstr(c->got, "was billed") != NULL);
    check_released();
    free(c);
}

/* The client leaves after the first event of a slow stream: what was generated is billed, the
 * backend call stops. */
static void test_client_leaving_mid_stream_is_billed(void)
{
    static const char *const pieces[] = {TEXT_EVENT("The quick brown "),
                                         TEXT_EVENT("fox jumps over "), TEXT_EVENT("the lazy dog."),
                                         NULL};
    static const struct script s = {SSE_HEAD, pieces, 1, 1, 300};
    atomic_store(&script, &s);
    sink_mode = SINK_ACK;
    /* The head of the answer and the first event are well over 100 bytes. */
    struct client *c = start(stream_body, 100);
    uint64_t until = kn_mono_ns() + 10000000000ull;
    while (!atomic_load(&c->done) && kn_mono_ns() < until)
        h2o_evloop_run(hl.ctx.loop, 10);
    run_until_done(c);
    run_loop_ms(300); /* The watch notices the client within WATCH_MS. */
    CHECK(nbilled == 1);
    CHECK(billed[0].output_tokens > 0);
    CHECK(h2o_linklist_is_empty(&lw.reqs));
    check_released();
    free(c);
}

int main(void)
{
    setup();
    test_plain_waits_for_its_bill();
    test_unbillable_answer_is_withheld();
    test_failed_backend_is_not_billed();
    test_stream_billed_by_usage();
    test_stream_cut_by_backend_billed_for_its_part();
    test_client_leaving_mid_stream_is_billed();

    /* Every answered request was timed, stage by stage; a report says so. */
    CHECK(atomic_load(&lw.stage[LIVE_STAGE_TOTAL].count) >= 2);
    CHECK(atomic_load(&lw.stage[LIVE_STAGE_COMMIT].count) ==
          atomic_load(&lw.stage[LIVE_STAGE_TOTAL].count));
    struct live_report *seen = kn_calloc(1, sizeof(*seen));
    struct live_worker *lws[] = {&lw};
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    live_report(f, lws, 1, seen);
    live_report(f, lws, 1, seen); /* Nothing since the first. */
    fclose(f);
    CHECK(text != NULL && strstr(text, "konnect: stage commit") != NULL);
    CHECK(text != NULL && strstr(text, "live stages of 0 answers") != NULL);
    free(text);
    free(seen);

    h2o_loop_t *loop = hl.ctx.loop;
    live_worker_dispose(&lw);
    h2o_socket_close(listener);
    run_loop_ms(20);
    h2o_context_dispose(&hl.ctx);
    h2o_evloop_destroy(loop);
    h2o_config_dispose(&h2o_conf);
    accesslog_close(hl.log);
    live_upstream_dispose(&upstream);
    plans_free(plans);
    return unit_result();
}
