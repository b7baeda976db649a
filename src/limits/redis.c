/* Redis connections for the cluster-wide limits; see redis.h. */
#include "limits/redis.h"

#include <hiredis/async.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"

/* ---- where Redis is ---------------------------------------------------------------------- */

int redis_target_parse(const char *url, struct redis_target *t, char *err, size_t errsize)
{
    memset(t, 0, sizeof(*t));
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(err, errsize,
                 "KONNECT_REDIS_URL: rediss:// (TLS) is not available: this build's hiredis "
                 "(0.14) has no TLS. Reach Redis over a private network or a unix socket "
                 "(unix:///path/redis.sock), or tunnel it (stunnel or spiped on both ends) and "
                 "point KONNECT_REDIS_URL at the tunnel's local end");
        return -1;
    }
    if (strncmp(url, "unix://", 7) == 0) {
        if (url[7] != '/' || strlen(url + 7) >= sizeof(t->path)) {
            snprintf(err, errsize,
                     "KONNECT_REDIS_URL: a unix socket is unix:///absolute/path (at most %zu "
                     "bytes)",
                     sizeof(t->path) - 1);
            return -1;
        }
        t->is_unix = 1;
        kn_strlcpy(t->path, url + 7, sizeof(t->path));
        snprintf(t->shown, sizeof(t->shown), "unix://%s", t->path);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errsize,
                 "KONNECT_REDIS_URL must be redis://host:port or unix:///path/redis.sock");
        return -1;
    }
    const char *p = url + 8, *at = strrchr(p, '@'), *end;
    char host[256], port[16] = "6379";
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon != NULL ? (size_t)(colon - p) : (size_t)(at - p);
        size_t plen = colon != NULL ? (size_t)(at - colon - 1) : 0;
        if (ulen >= sizeof(t->user) || plen >= sizeof(t->password))
            goto bad;
        memcpy(t->user, p, ulen);
        if (colon != NULL)
            memcpy(t->password, colon + 1, plen);
        p = at + 1;
    }
    if (*p == '[') {
        if ((end = strchr(p, ']')) == NULL || (size_t)(end - p - 1) >= sizeof(host))
            goto bad;
        memcpy(host, p + 1, (size_t)(end - p - 1));
        host[end - p - 1] = '\0';
        p = end + 1;
    } else {
        size_t n = strcspn(p, ":/");
        if (n == 0 || n >= sizeof(host))
            goto bad;
        memcpy(host, p, n);
        host[n] = '\0';
        p += n;
    }
    if (*p == ':') {
        size_t n = strcspn(p + 1, "/");
        if (n == 0 || n >= sizeof(port))
            goto bad;
        memcpy(port, p + 1, n);
        port[n] = '\0';
        p += 1 + n;
    }
    if (*p != '\0' && strcmp(p, "/") != 0 && strcmp(p, "/0") != 0) {
        snprintf(err, errsize, "KONNECT_REDIS_URL: only database 0 is used (no /N)");
        return -1;
    }
    long long portnum;
    if (kn_parse_int(port, 1, 65535, &portnum) != 0)
        goto bad;
    t->port = (int)portnum;
    /* Resolved now, at start: hiredis 0.14 would resolve on the event loop, blocking it. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &ai);
    if (rc != 0 || ai == NULL ||
        getnameinfo(ai->ai_addr, ai->ai_addrlen, t->host, sizeof(t->host), NULL, 0,
                    NI_NUMERICHOST) != 0) {
        snprintf(err, errsize, "KONNECT_REDIS_URL: cannot resolve %s: %s", host,
                 rc != 0 ? gai_strerror(rc) : "no address");
        if (ai != NULL)
            freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    snprintf(t->shown, sizeof(t->shown), "redis://%s%s%s%s:%d", t->user,
             t->password[0] ? ":***" : "", t->user[0] || t->password[0] ? "@" : "", host, t->port);
    return 0;
bad:
    snprintf(err, errsize,
             "KONNECT_REDIS_URL must look like redis://host:6379, redis://:password@10.0.0.5:6379 "
             "or unix:///run/redis/redis.sock");
    return -1;
}

extern const struct embedded_file {
    const char *name;
    const unsigned char *data;
    size_t len;
} redis_library_files[];

const char *redis_library(size_t *len)
{
    *len = redis_library_files[0].len;
    return (const char *)redis_library_files[0].data;
}

/* The library's VERSION (see konnect.lua), read from its text. */
static long long library_version(void)
{
    static long long version = -1;
    if (version < 0) {
        size_t len;
        const char *lib = redis_library(&len), *at = memmem(lib, len, "local VERSION = ", 16);
        version = at != NULL ? strtoll(at + 16, NULL, 10) : 0;
    }
    return version;
}

/* Whether the functions Redis holds (a reply to FCALL kn_version) are as new as this build's. */
static int library_current(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= library_version();
}

/* ---- the event loop's connection ----------------------------------------------------------- */

/* The longest wait before connecting again. */
#define BACKOFF_MAX_MS 1000
/* How often a connection with calls waiting looks at their deadlines. */
#define TICK_MS 20

struct redis_conn {
    h2o_loop_t *loop;
    struct redis_target t;
    uint32_t timeout_ms;
    redisAsyncContext *ac;
    h2o_socket_t *sock; /* A duplicate of hiredis's descriptor, for the loop's readiness. */
    int reading;
    int ready;     /* Connected, authenticated, library loaded. */
    int said_down; /* The loss was reported (once, not at every attempt). */
    unsigned backoff_ms;
    uint64_t next_try_ns;
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick;
    /* The deadlines of the calls waiting, oldest first (Redis answers in order). */
    uint64_t *deadlines;
    size_t head, count, cap;
    int freeing;
    void (*on_ready)(void);
    char run[96];  /* Redis's run and data history, "" when INFO is denied. */
    int counts_ok; /* See redis_conn_counts_ok. */
    int checking;  /* A GET of CLUSTER_RUN_KEY is on its way. */
    uint64_t next_check_ns;
};

struct call {
    struct redis_conn *c;
    redis_cb cb;
    void *ud;
};

static void on_readable(h2o_socket_t *sock, const char *err)
{
    struct redis_conn *c = sock->data;
    (void)err;
    if (c->ac != NULL)
        redisAsyncHandleRead(c->ac);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    struct redis_conn *c = sock->data;
    (void)err;
    if (c->ac != NULL)
        redisAsyncHandleWrite(c->ac);
}

static void ev_add_read(void *p)
{
    struct redis_conn *c = p;
    if (!c->reading && c->sock != NULL) {
        c->reading = 1;
        h2o_socket_read_start(c->sock, on_readable);
    }
}

static void ev_del_read(void *p)
{
    struct redis_conn *c = p;
    if (c->reading && c->sock != NULL) {
        c->reading = 0;
        h2o_socket_read_stop(c->sock);
    }
}

static void ev_add_write(void *p)
{
    struct redis_conn *c = p;
    if (c->sock != NULL && !h2o_socket_is_writing(c->sock))
        h2o_socket_notify_write(c->sock, on_writable);
}

static void ev_del_write(void *p)
{
    (void)p; /* Notifications are one-shot. */
}

static void ev_cleanup(void *p)
{
    struct redis_conn *c = p;
    if (c->sock != NULL) {
        if (c->reading)
            h2o_socket_read_stop(c->sock);
        h2o_socket_close(c->sock);
        c->sock = NULL;
    }
    c->reading = 0;
}

static void arm(struct redis_conn *c)
{
    if (!h2o_timeout_is_linked(&c->tick))
        h2o_timeout_link(c->loop, &c->tick_timeout, &c->tick);
}

static void lost(struct redis_conn *c, const char *why)
{
    c->ready = 0;
    if (!c->said_down && !c->freeing) {
        fprintf(stderr, "konnect: Redis %s: %s; limits fall back until it is back\n", c->t.shown,
                why);
        c->said_down = 1;
    }
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 50;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    c->next_try_ns = kn_mono_ns() + (uint64_t)c->backoff_ms * 1000000u;
    if (!c->freeing)
        arm(c);
}

/* Says why the connection goes (once), before it is cut. */
static void say_down(struct redis_conn *c, const char *what, const char *detail)
{
    if (!c->said_down)
        fprintf(stderr, "konnect: Redis %s %s: %s; limits fall back until it is back\n", c->t.shown,
                what, detail);
    c->said_down = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *c = ac->data;
    c->ac = NULL; /* hiredis frees it after this returns. */
    c->count = 0;
    lost(c, status == REDIS_OK ? "disconnected" : ac->errstr);
}

static void on_loaded(redisAsyncContext *ac, void *r, void *priv);

int redis_run_of(const char *info, char *out, size_t size)
{
    const char *run = strstr(info, "run_id:"), *replid = strstr(info, "master_replid:");

    out[0] = '\0';
    if (run == NULL || replid == NULL)
        return -1;
    snprintf(out, size, "%.*s:%.*s", (int)strcspn(run + 7, "\r\n"), run + 7,
             (int)strcspn(replid + 14, "\r\n"), replid + 14);
    return 0;
}

static void on_run_key(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_conn *c = ac->data;
    redisReply *reply = r;
    (void)priv;
    c->checking = 0;
    if (reply == NULL)
        return;
    c->counts_ok = reply->type == REDIS_REPLY_STRING && strcmp(reply->str, c->run) == 0;
    if (!c->counts_ok) {
        c->next_check_ns = kn_mono_ns() + 50000000ull;
        arm(c);
    }
}

static void check_counts(struct redis_conn *c)
{
    if (c->checking || c->ac == NULL)
        return;
    c->checking = 1;
    redisAsyncCommand(c->ac, on_run_key, NULL, "GET %s", CLUSTER_RUN_KEY);
}

static void on_info(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_conn *c = ac->data;
    redisReply *reply = r;
    (void)priv;
    if (reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_STRING ||
        redis_run_of(reply->str, c->run, sizeof(c->run)) != 0) {
        c->counts_ok = 1; /* Nothing can tell: the store thread checks once a minute. */
        return;
    }
    check_counts(c);
}

static void on_version(redisAsyncContext *ac, void *r, void *priv)
{
    size_t len;
    const char *lib = redis_library(&len);

    if (r == NULL)
        return; /* Lost: on_disconnect says so. */
    if (library_current(r))
        on_loaded(ac, r, priv);
    else
        redisAsyncCommand(ac, on_loaded, NULL, "FUNCTION LOAD REPLACE %b", lib, len);
}

static void on_loaded(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_conn *c = ac->data;
    redisReply *reply = r;
    (void)priv;
    if (reply == NULL)
        return; /* Lost: on_disconnect says so. */
    if (reply->type == REDIS_REPLY_ERROR) {
        say_down(c, "refuses Konnect's functions (Redis 7 or later is needed)", reply->str);
        c->backoff_ms = BACKOFF_MAX_MS;
        redisAsyncDisconnect(ac);
        return;
    }
    c->ready = 1;
    c->backoff_ms = 0;
    c->counts_ok = 0;
    c->checking = 0;
    redisAsyncCommand(ac, on_info, NULL, "INFO server replication");
    if (c->said_down)
        fprintf(stderr, "konnect: Redis %s is back\n", c->t.shown);
    c->said_down = 0;
    if (c->on_ready != NULL)
        c->on_ready();
}

static void on_auth(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct redis_conn *c = ac->data;
    (void)priv;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        say_down(c, "refuses the password", reply->str);
        redisAsyncDisconnect(ac);
    }
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    struct redis_conn *c = ac->data;

    if (status != REDIS_OK) {
        c->ac = NULL; /* hiredis frees it. */
        lost(c, ac->errstr);
        return;
    }
    if (c->t.password[0] != '\0') {
        if (c->t.user[0] != '\0')
            redisAsyncCommand(ac, on_auth, NULL, "AUTH %s %s", c->t.user, c->t.password);
        else
            redisAsyncCommand(ac, on_auth, NULL, "AUTH %s", c->t.password);
    }
    redisAsyncCommand(ac, on_version, NULL, "FCALL kn_version 0");
}

static void start_connect(struct redis_conn *c)
{
    redisAsyncContext *ac =
        c->t.is_unix ? redisAsyncConnectUnix(c->t.path) : redisAsyncConnect(c->t.host, c->t.port);
    if (ac == NULL || ac->err) {
        lost(c, ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        return;
    }
    c->ac = ac;
    ac->data = c;
    c->sock = h2o_evloop_socket_create(c->loop, dup(ac->c.fd), H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    struct redis_conn *c = H2O_STRUCT_FROM_MEMBER(struct redis_conn, tick, entry);
    uint64_t now = kn_mono_ns();

    if (c->ac == NULL) {
        if (now >= c->next_try_ns)
            start_connect(c);
        else
            arm(c);
        return;
    }
    if (c->count > 0 && c->deadlines[c->head] < now) {
        char why[96];
        snprintf(why, sizeof(why), "%u ms passed", c->timeout_ms);
        say_down(c, "did not answer", why);
        /* Not from a hiredis callback, so it may be freed here: every call waiting gets NULL at
         * once (a disconnect would wait for their answers). */
        redisAsyncContext *ac = c->ac;
        redisAsyncFree(ac);
        if (c->ac != NULL) {
            c->ac = NULL;
            c->count = 0;
            lost(c, "cut");
        }
        return;
    }
    if (c->ready && !c->counts_ok && c->run[0] != '\0') {
        if (now >= c->next_check_ns)
            check_counts(c);
        arm(c);
        return;
    }
    if (c->count > 0)
        arm(c);
}

struct redis_conn *redis_conn_new(h2o_loop_t *loop, const struct redis_target *t,
                                  uint32_t timeout_ms)
{
    struct redis_conn *c = kn_calloc(1, sizeof(*c));
    c->loop = loop;
    c->t = *t;
    c->timeout_ms = timeout_ms;
    c->tick.cb = on_tick;
    h2o_timeout_init(loop, &c->tick_timeout, TICK_MS);
    start_connect(c);
    return c;
}

void redis_conn_on_ready(struct redis_conn *c, void (*cb)(void))
{
    c->on_ready = cb;
}

void redis_conn_free(struct redis_conn *c)
{
    if (c == NULL)
        return;
    c->freeing = 1;
    if (c->ac != NULL) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        ac->ev.cleanup = NULL;
        ev_cleanup(c);
        redisAsyncFree(ac); /* Calls every waiting callback with NULL. */
    }
    if (h2o_timeout_is_linked(&c->tick))
        h2o_timeout_unlink(&c->tick);
    h2o_timeout_dispose(c->loop, &c->tick_timeout);
    free(c->deadlines);
    free(c);
}

int redis_conn_ready(const struct redis_conn *c)
{
    return c->ready;
}

int redis_conn_counts_ok(const struct redis_conn *c)
{
    return c->ready && c->counts_ok;
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct call *k = priv;
    struct redis_conn *c = k->c;
    (void)ac;
    if (c->count > 0) {
        c->head = (c->head + 1) % c->cap;
        c->count--;
    }
    k->cb(k->ud, r);
    free(k);
}

int redis_conn_fcall(struct redis_conn *c, const char *fn, int numkeys, int argc, const char **argv,
                     redis_cb cb, void *ud)
{
    enum { MAX_ARGS = 24 };
    const char *args[MAX_ARGS + 3];
    size_t lens[MAX_ARGS + 3];
    char nk[16];

    if (!c->ready || c->ac == NULL || argc > MAX_ARGS)
        return -1;
    snprintf(nk, sizeof(nk), "%d", numkeys);
    args[0] = "FCALL";
    args[1] = fn;
    args[2] = nk;
    for (int i = 0; i < argc; i++)
        args[3 + i] = argv[i];
    for (int i = 0; i < argc + 3; i++)
        lens[i] = strlen(args[i]);
    struct call *k = kn_calloc(1, sizeof(*k));
    k->c = c;
    k->cb = cb;
    k->ud = ud;
    if (redisAsyncCommandArgv(c->ac, on_reply, k, argc + 3, args, lens) != REDIS_OK) {
        free(k);
        return -1;
    }
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint64_t *d = kn_calloc(cap, sizeof(*d));
        for (size_t i = 0; i < c->count; i++)
            d[i] = c->deadlines[(c->head + i) % c->cap];
        free(c->deadlines);
        c->deadlines = d;
        c->cap = cap;
        c->head = 0;
    }
    c->deadlines[(c->head + c->count++) % c->cap] =
        kn_mono_ns() + (uint64_t)c->timeout_ms * 1000000u;
    arm(c);
    return 0;
}

/* ---- the store thread's connection --------------------------------------------------------- */

int redis_sync_library(redisContext *ctx, const struct redis_target *t, char *err, size_t errsize)
{
    size_t len;
    const char *lib = redis_library(&len);
    redisReply *r = redisCommand(ctx, "FCALL kn_version 0");

    if (r == NULL) {
        snprintf(err, errsize, "Redis %s: %s", t->shown, ctx->errstr);
        return -1;
    }
    int current = library_current(r);
    freeReplyObject(r);
    if (current)
        return 0;
    r = redisCommand(ctx, "FUNCTION LOAD REPLACE %b", lib, len);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errsize,
                 "Redis %s refuses Konnect's functions (Redis 7 or later is needed): %s", t->shown,
                 r != NULL ? r->str : ctx->errstr);
        if (r != NULL)
            freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

redisContext *redis_sync_connect(const struct redis_target *t, char *err, size_t errsize)
{
    struct timeval tv = {0, REDIS_SYNC_TIMEOUT_MS * 1000};
    redisContext *ctx = t->is_unix ? redisConnectUnixWithTimeout(t->path, tv)
                                   : redisConnectWithTimeout(t->host, t->port, tv);
    redisReply *r = NULL;

    if (ctx == NULL || ctx->err) {
        snprintf(err, errsize, "cannot connect to Redis %s: %s", t->shown,
                 ctx != NULL ? ctx->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(ctx, tv);
    if (t->password[0] != '\0') {
        r = t->user[0] != '\0' ? redisCommand(ctx, "AUTH %s %s", t->user, t->password)
                               : redisCommand(ctx, "AUTH %s", t->password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errsize, "Redis %s refuses the password: %s", t->shown,
                     r != NULL ? r->str : ctx->errstr);
            goto fail;
        }
        freeReplyObject(r);
        r = NULL;
    }
    if (redis_sync_library(ctx, t, err, errsize) == 0)
        return ctx;
fail:
    if (r != NULL)
        freeReplyObject(r);
    if (ctx != NULL)
        redisFree(ctx);
    return NULL;
}
