/* The bridge between the event loops and the dashboard, which does blocking work (the store,
 * Argon2id) and so runs on threads of its own, never on a loop. A /dashboard/api/ request is
 * copied into a job, queued to a lane, answered there by dashboard_handle, and sent back to its
 * event loop as a message.
 *
 * Two lanes, each a thread with its own store connection: one for the calls that hash or check a
 * password (a fraction of a second each), one for everything else, so that a queue of sign-ins
 * never delays a key revocation. Each lane holds at most KONNECT_DASHBOARD_QUEUE jobs; beyond it a
 * request is answered 503 dashboard_busy with Retry-After at once. A client that goes away while
 * its job waits has it skipped: h2o frees the request's pool, whose guard marks the job. The lane
 * of ordinary calls also prunes the store once an hour (store_prune). */
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mailbox.h"
#include "core/util.h"
#include "dashboard/dashboard.h"
#include "auth/bearer.h"
#include "http/internal.h"
#include "limits/quota.h"

#define DASH_BODY_MAX (64 * 1024)
#define LANE_CALLS 0
#define LANE_PASSWORDS 1
#define LANES 2
#define PRUNE_FIRST_S 60   /* The first prune, after start. */
#define PRUNE_EVERY_S 3600 /* Then once an hour. */
#define WATCH_MS 200       /* How often a waiting job checks that its client is there. */
/* Management API calls one account may have waiting or running at once, so that one account's
 * flood cannot fill the lane that every account's calls (and the dashboard's) share. */
#define API_QUEUED_PER_ACCOUNT 8

struct dash_job;

struct dash_lane {
    struct server *srv;
    struct dashboard *dash;
    const char *name;
    pthread_t thread;
    struct mailbox jobs; /* At most KONNECT_DASHBOARD_QUEUE waiting. */
    int started, prunes;
};

struct dash_guard {
    struct dash_job *job;
};

struct dash_job {
    h2o_multithread_message_t super; /* First: the message sent back to the loop. */
    struct mailbox_msg msg;          /* How it travels to the lane. */
    struct worker *w;
    h2o_req_t *req;   /* NULL once the request is gone. Only the loop's thread touches it. */
    _Atomic int gone; /* Set by the loop when the client went away: the lane skips the job. */
    struct dash_guard *guard;
    h2o_timeout_entry_t watch; /* On the loop, while the job waits: is the client still there? */
    struct reqinfo info;
    struct dash_request in;
    struct dash_response out;
    char *strings;        /* One allocation holding every string of `in` (passwords among them). */
    struct acctrec *acct; /* A management API call's account (its api_queued), or NULL. */
    size_t strings_len;
};

static void dash_guard_dispose(void *p)
{
    struct dash_guard *g = p;
    if (g->job != NULL) {
        g->job->req = NULL;
        atomic_store(&g->job->gone, 1);
        if (h2o_timeout_is_linked(&g->job->watch))
            h2o_timeout_unlink(&g->job->watch);
    }
}

static void on_watch(h2o_timeout_entry_t *entry)
{
    struct dash_job *job = H2O_STRUCT_FROM_MEMBER(struct dash_job, watch, entry);

    if (job->req == NULL)
        return;
    if (http_client_gone(job->req)) {
        job->req->http1_is_persistent = 0;
        atomic_store(&job->gone, 1);
        return;
    }
    h2o_timeout_link(job->w->loop.ctx.loop, &job->w->dash_watch_timeout, &job->watch);
}

static void prune(struct dash_lane *l)
{
    int64_t deleted = 0;
    uint64_t t0 = kn_mono_ns();

    if (dashboard_prune(l->dash, &deleted) != 0)
        fprintf(stderr, "konnect: pruning the store failed; it is tried again in an hour\n");
    else if (deleted > 0)
        fprintf(stderr, "konnect: pruned %lld expired rows from the store in %.0f ms\n",
                (long long)deleted, (double)(kn_mono_ns() - t0) / 1e6);
}

static void *lane_main(void *arg)
{
    struct dash_lane *l = arg;
    struct timespec next;
    char name[16];

    snprintf(name, sizeof(name), "kn-%s", l->name);
    pthread_setname_np(pthread_self(), name);
    clock_gettime(CLOCK_REALTIME, &next);
    next.tv_sec += PRUNE_FIRST_S;
    for (;;) {
        struct mailbox_msg *m = mailbox_wait(&l->jobs, l->prunes ? &next : NULL);
        if (m == NULL) {
            if (mailbox_closed(&l->jobs))
                return NULL; /* Closed, and every job taken. */
            prune(l);
            clock_gettime(CLOCK_REALTIME, &next);
            next.tv_sec += PRUNE_EVERY_S;
            continue;
        }
        struct dash_job *job = KN_CONTAINER_OF(m, struct dash_job, msg);
        if (!atomic_load(&job->gone))
            dashboard_handle(l->dash, &job->in, &job->out);
        h2o_multithread_send_message(&job->w->dash_receiver, &job->super);
    }
}

static void dash_job_free(struct dash_job *job)
{
    if (job->acct != NULL)
        atomic_fetch_sub(&job->acct->api_queued, 1);
    if (job->out.body != NULL) {
        /* The body may hold a new key's secret. */
        sodium_memzero(job->out.body, job->out.body_len);
        free(job->out.body);
    }
    sodium_memzero(job->strings, job->strings_len);
    free(job->strings);
    free(job);
}

static void send_answer(h2o_req_t *req, struct dash_job *job)
{
    char buf[16];

    job->info.error_code = job->out.error_code;
    int api = job->in.api_key_id != NULL || job->in.operator_key_hash != NULL;
    if (api && job->out.status == 401)
        http_add_www_authenticate(req, KN_ERR_INVALID_API_KEY);
    else if (api && job->out.status == 403 && job->out.error_code != NULL &&
             strcmp(job->out.error_code, "insufficient_scope") == 0)
        http_add_www_authenticate(req, KN_ERR_INSUFFICIENT_SCOPE);
    if (job->out.set_cookie[0] != '\0')
        http_add_header(req, "set-cookie", job->out.set_cookie);
    if (job->out.retry_after != 0) {
        snprintf(buf, sizeof(buf), "%u", job->out.retry_after);
        http_add_header(req, "retry-after", buf);
    }
    if (job->out.replayed)
        http_add_header(req, "idempotent-replayed", "true");
    if (job->out.allow[0] != '\0')
        http_add_header(req, "allow", job->out.allow);
    if (job->out.content_disposition[0] != '\0')
        http_add_header(req, "content-disposition", job->out.content_disposition);
    if (job->out.body != NULL) {
        http_send_body(req, &job->info, job->out.status, job->out.reason,
                       job->out.content_type != NULL ? job->out.content_type : "application/json",
                       job->out.body, job->out.body_len);
    } else {
        static h2o_generator_t generator = {NULL, NULL};
        http_response_head(req, &job->info, job->out.status, job->out.reason, NULL, "no-store", 0);
        http_log_request(req, &job->info, job->out.status);
        h2o_start_response(req, &generator);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    }
}

static void on_dash_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    h2o_multithread_message_t *msg;

    (void)receiver;
    while ((msg = http_next_message(messages)) != NULL) {
        struct dash_job *job = (struct dash_job *)msg;
        if (h2o_timeout_is_linked(&job->watch))
            h2o_timeout_unlink(&job->watch);
        if (job->req != NULL) {
            job->guard->job = NULL;
            if (job->out.reason != NULL)
                send_answer(job->req, job);
            else /* Skipped: the client left. The answer goes nowhere, but ends the request. */
                http_send_error(job->req, &job->info, KN_ERR_CLIENT_CLOSED,
                                "The client closed the connection before its turn.", NULL);
        }
        dash_job_free(job);
    }
}

void dashbridge_worker_init(struct worker *w)
{
    h2o_timeout_init(w->loop.ctx.loop, &w->dash_watch_timeout, WATCH_MS);
    h2o_multithread_register_receiver(w->loop.ctx.queue, &w->dash_receiver, on_dash_answers);
}

void dashbridge_worker_dispose(struct worker *w)
{
    /* Answers that arrived after the loop stopped belong to requests that are gone. */
    on_dash_answers(&w->dash_receiver, &w->dash_receiver._messages);
    h2o_multithread_unregister_receiver(w->loop.ctx.queue, &w->dash_receiver);
    h2o_timeout_dispose(w->loop.ctx.loop, &w->dash_watch_timeout);
}

/* Copies s[0..len) into the job's string area at *cursor. */
static const char *copy_str(char **cursor, const char *s, size_t len)
{
    char *out = *cursor;
    memcpy(out, s, len);
    out[len] = '\0';
    *cursor += len + 1;
    return out;
}

/* Queues the request to its lane. An API request (api_key_id, the id of the admin key of a
 * management API request; or operator_hash, the keyed hash of an operator API request's key, in
 * hex) takes nothing of a browser's: no cookie, no CSRF token, no origin. */
static void submit(h2o_req_t *req, struct reqinfo *info, const char *api_key_id,
                   const char *operator_hash, struct acctrec *acct)
{
    struct worker *w = http_worker_of(req);
    struct server *srv = w->srv;
    int api = api_key_id != NULL || operator_hash != NULL;
    const h2o_iovec_t *idem = api ? http_find_header(req, NULL, "idempotency-key") : NULL;
    const h2o_iovec_t *cookie = api ? NULL : http_find_header(req, H2O_TOKEN_COOKIE, NULL),
                      *csrf = api ? NULL : http_find_header(req, NULL, "x-csrf-token"),
                      *origin = api ? NULL : http_find_header(req, NULL, "origin"),
                      *ctype = http_find_header(req, H2O_TOKEN_CONTENT_TYPE, NULL);
    h2o_iovec_t path = req->path_normalized, query = {NULL, 0};
    char peer[INET6_ADDRSTRLEN], msg[160];

    if (req->entity.len > DASH_BODY_MAX) {
        if (acct != NULL) /* Counted by the caller, for a job that will not be. */
            atomic_fetch_sub(&acct->api_queued, 1);
        http_send_error(req, info, KN_ERR_BODY_TOO_LARGE,
                        api ? "Management API requests are limited to 64 KiB."
                            : "Dashboard requests are limited to 64 KiB.",
                        NULL);
        return;
    }
    if (req->query_at != SIZE_MAX)
        query =
            h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    http_client_ip(req, peer, sizeof(peer));

    struct dash_job *job = kn_calloc(1, sizeof(*job));
    size_t need = req->method.len + path.len + query.len + req->entity.len + req->authority.len +
                  (cookie ? cookie->len : 0) + (csrf ? csrf->len : 0) + (origin ? origin->len : 0) +
                  (ctype ? ctype->len : 0) + strlen(peer) + (api_key_id ? strlen(api_key_id) : 0) +
                  (operator_hash ? strlen(operator_hash) : 0) + (idem ? idem->len : 0) + 16;
    char *cur = job->strings = kn_malloc(need);
    job->strings_len = need;
    job->w = w;
    job->req = req;
    job->acct = acct; /* Counted by the caller; given back when the job is freed. */
    job->info = *info;
    job->in.method = copy_str(&cur, req->method.base, req->method.len);
    job->in.path = copy_str(&cur, path.base, path.len);
    job->in.query = query.base != NULL ? copy_str(&cur, query.base, query.len) : NULL;
    job->in.body =
        copy_str(&cur, req->entity.base != NULL ? req->entity.base : "", req->entity.len);
    job->in.body_len = req->entity.len;
    job->in.host = copy_str(&cur, req->authority.base, req->authority.len);
    job->in.cookie = cookie ? copy_str(&cur, cookie->base, cookie->len) : NULL;
    job->in.csrf_token = csrf ? copy_str(&cur, csrf->base, csrf->len) : NULL;
    job->in.origin = origin ? copy_str(&cur, origin->base, origin->len) : NULL;
    job->in.content_type = ctype ? copy_str(&cur, ctype->base, ctype->len) : NULL;
    job->in.ip = copy_str(&cur, peer, strlen(peer));
    job->in.api_key_id = api_key_id ? copy_str(&cur, api_key_id, strlen(api_key_id)) : NULL;
    job->in.operator_key_hash =
        operator_hash ? copy_str(&cur, operator_hash, strlen(operator_hash)) : NULL;
    job->in.idempotency_key = idem ? copy_str(&cur, idem->base, idem->len) : NULL;
    /* Behind KONNECT_PUBLIC_URL https://..., browsers reach the dashboard only over HTTPS. */
    job->in.https = http_is_https(req) || srv->cfg->public_https;
    job->in.request_id = job->info.request_id;

    struct dash_lane *l =
        &srv->lanes[!api && dashboard_hashes_passwords(job->in.method, job->in.path)
                        ? LANE_PASSWORDS
                        : LANE_CALLS];
    /* The guard and the watch are set before the lane can see the job. */
    job->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*job->guard), dash_guard_dispose);
    job->guard->job = job;
    job->watch.cb = on_watch;
    h2o_timeout_link(w->loop.ctx.loop, &w->dash_watch_timeout, &job->watch);
    if (mailbox_put(&l->jobs, &job->msg) != MAILBOX_OK) {
        job->guard->job = NULL;
        h2o_timeout_unlink(&job->watch);
        dash_job_free(job);
        snprintf(msg, sizeof(msg), "The dashboard has %u %s waiting already; retry in a second.",
                 srv->cfg->dashboard_queue,
                 l == &srv->lanes[LANE_PASSWORDS] ? "sign-ins and password checks" : "requests");
        http_add_header(req, "retry-after", "1");
        http_send_error(req, info, KN_ERR_DASHBOARD_BUSY, msg, NULL);
        return;
    }
}

void http_handle_dashboard_api(h2o_req_t *req, struct reqinfo *info)
{
    submit(req, info, NULL, NULL, NULL);
}

int http_is_manage_path(h2o_iovec_t p)
{
    static const char *const roots[] = {"/v1/keys",    "/v1/usage",   "/v1/invoices",
                                        "/v1/audit",   "/v1/members", "/v1/invitations",
                                        "/v1/operator"};

    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        size_t n = strlen(roots[i]);
        if (p.len >= n && memcmp(p.base, roots[i], n) == 0 && (p.len == n || p.base[n] == '/'))
            return 1;
    }
    return 0;
}

/* Only a working admin key gets past the loop; the lane then reads the key again from the store
 * and checks it again (revoked, expired or fenced off a moment ago on another server, it is
 * refused there). */
void http_handle_manage(h2o_req_t *req, struct reqinfo *info)
{
    struct keyrec *key;
    int64_t now = kn_unix_now();
    enum kn_err err = http_authenticate_key(req, info, now, &key);

    if (err != KN_OK) {
        http_send_auth_error(req, info, err);
        return;
    }
    if (keyrec_mode(key) != APIKEY_MODE_ADMIN) {
        http_send_scope_error(req, info, HTTP_SCOPE_MANAGE);
        return;
    }
    ssize_t idem = h2o_find_header_by_str(&req->headers, H2O_STRLIT("idempotency-key"), -1);
    if (idem != -1 &&
        h2o_find_header_by_str(&req->headers, H2O_STRLIT("idempotency-key"), idem) != -1) {
        http_send_error(req, info, KN_ERR_INVALID_PARAMETER,
                        "Send one Idempotency-Key header at most.", "Idempotency-Key");
        return;
    }
    keytable_touch(http_worker_of(req)->srv->kt, key, now, 0); /* Its last use; no request count. */
    if (keyrec_acct(key) != NULL &&
        atomic_fetch_add(&keyrec_acct(key)->api_queued, 1) >= API_QUEUED_PER_ACCOUNT) {
        atomic_fetch_sub(&keyrec_acct(key)->api_queued, 1);
        http_add_header(req, "retry-after", "1");
        http_send_error(req, info, KN_ERR_RATE_LIMITED,
                        "This account has 8 management API calls waiting or running already; "
                        "send the next once one has been answered.",
                        NULL);
        return;
    }
    char kid[KEY_ID_SIZE];
    submit(req, info, keyrec_id(key, kid), NULL, keyrec_acct(key));
}

/* The operator API's keys are not in the key table (they belong to no account): the loop checks
 * the key's form and checksum, and the lane finds it in the store by its keyed hash. An account's
 * key that works here is 403 insufficient_scope. */
void http_handle_operator(h2o_req_t *req, struct reqinfo *info)
{
    struct server *srv = http_worker_of(req)->srv;
    const h2o_iovec_t *h = NULL;
    const char *token;
    size_t len;
    int count = 0;
    enum apikey_mode mode;
    uint8_t hash[APIKEY_HASH_LEN];
    char hex[2 * APIKEY_HASH_LEN + 1];

    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, i)) != -1;)
        if (count++ == 0)
            h = &req->headers.entries[i].value;
    if (count == 0) {
        http_send_auth_error(req, info, KN_ERR_MISSING_API_KEY);
        return;
    }
    if (count > 1 || bearer_parse(h->base, h->len, &token, &len) != 0 ||
        apikey_parse(token, len, &mode) != 0) {
        http_send_auth_error(req, info, KN_ERR_INVALID_API_KEY);
        return;
    }
    if (mode != APIKEY_MODE_OPERATOR) {
        struct keyrec *key;
        enum kn_err err = http_authenticate_key(req, info, kn_unix_now(), &key);
        if (err != KN_OK)
            http_send_auth_error(req, info, err);
        else
            http_send_scope_error(req, info, HTTP_SCOPE_OPERATOR);
        return;
    }
    apikey_hash(srv->secret, token, len, hash);
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    sodium_memzero(hash, sizeof(hash));
    submit(req, info, NULL, hex, NULL);
    sodium_memzero(hex, sizeof(hex));
}

int dashbridge_start(struct server *srv, char *err, size_t errsize)
{
    static const char *const names[LANES] = {"calls", "passwords"};

    srv->lanes = kn_calloc(LANES, sizeof(*srv->lanes));
    for (int i = 0; i < LANES; i++) {
        struct dash_lane *l = &srv->lanes[i];
        l->srv = srv;
        l->name = names[i];
        l->prunes = i == LANE_CALLS;
        if ((l->dash = dashboard_new(srv->cfg, srv->secret, srv->ks, err, errsize)) == NULL)
            return -1;
        if (mailbox_init(&l->jobs, srv->cfg->dashboard_queue, 0) != 0)
            kn_fatal("cannot make the dashboard's %s mailbox", l->name);
        if (pthread_create(&l->thread, NULL, lane_main, l) != 0)
            kn_fatal("cannot start the dashboard's %s thread", l->name);
        l->started = 1;
    }
    return 0;
}

void dashbridge_stop(struct server *srv)
{
    if (srv->lanes == NULL)
        return;
    for (int i = 0; i < LANES; i++) {
        struct dash_lane *l = &srv->lanes[i];
        if (l->started) {
            /* The lane answers what it was given, then stops; answers that can no longer be
             * delivered are dropped by the loops. */
            mailbox_close(&l->jobs);
            pthread_join(l->thread, NULL);
            mailbox_dispose(&l->jobs);
        }
        dashboard_free(l->dash);
    }
    free(srv->lanes);
    srv->lanes = NULL;
}
