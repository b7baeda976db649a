/* The API: POST /v1/chat and /v1/chat/completions (authentication, limits, the mock answer of a
 * test key, admission of a live one, handed to live.c) and GET /v1/models. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>
#include "auth/bearer.h"
#include "chat/mock.h"
#include "core/base62.h"
#include "core/jsonw.h"
#include "core/util.h"
#include "http/internal.h"
#include "keys/keysync.h"
#include "limits/cluster.h"
#include "keys/lifecycle.h"
#include "limits/limiter.h"

/* ---- /v1/chat ---------------------------------------------------------------------------- */

/* Answers 429 for a request refused by a limit: by the day (by_day) or by the minute, with the
 * limits' headers (have_day: the day's result is known). */
static void refuse_limits(h2o_req_t *req, struct reqinfo *info, int live, const struct plan *plan,
                          int by_day, const struct ratelimit_result *minute,
                          const struct ratelimit_result *day, int have_day)
{
    char msg[256], buf[16];

    if (by_day) {
        snprintf(msg, sizeof(msg),
                 "Daily request limit reached for this test key (%u requests per UTC day). "
                 "It resets at 00:00 UTC, in %u seconds. Test keys are for development; use "
                 "a live key for production traffic.",
                 day->limit, day->reset);
        http_add_ratelimit_headers(req, NULL, day);
        snprintf(buf, sizeof(buf), "%u", day->retry_after);
    } else {
        if (live)
            snprintf(msg, sizeof(msg),
                     "Rate limit reached for this account's live keys (%u requests per "
                     "minute for all of them together, plan \"%s\"). Retry after %u "
                     "second%s.",
                     minute->limit, plan->name, minute->retry_after,
                     minute->retry_after == 1 ? "" : "s");
        else
            snprintf(msg, sizeof(msg),
                     "Rate limit reached for this test key (%u requests per minute). Retry "
                     "after %u second%s.",
                     minute->limit, minute->retry_after, minute->retry_after == 1 ? "" : "s");
        http_add_ratelimit_headers(req, minute, have_day ? day : NULL);
        snprintf(buf, sizeof(buf), "%u", minute->retry_after);
    }
    http_add_header(req, "retry-after", buf);
    http_send_error(req, info, KN_ERR_RATE_LIMITED, msg, NULL);
}

/* A restricted key's rules (keys/keytable.h), NULL for most keys. */
static const struct keyrules *rules_of(const struct keyrec *key)
{
    return keyrec_rules(key);
}

/* Answers 403 model_not_allowed, naming the models the key may use, when a restricted key asks
 * for another model. Returns 1 when it answered. */
static int refuse_model(h2o_req_t *req, struct reqinfo *info, const struct keyrec *key,
                        const char *model, size_t len)
{
    const struct keyrules *r = rules_of(key);
    char msg[KEYRULES_MODELS_MAX + 300];

    if (r == NULL || lifecycle_model_allowed(r->models, model, len))
        return 0;
    snprintf(msg, sizeof(msg),
             "This API key may use only these models: %s (its restriction, set by the account). "
             "It cannot use '%.*s'.",
             r->models, (int)(len > 128 ? 128 : len), model);
    http_send_error(req, info, KN_ERR_MODEL_NOT_ALLOWED, msg, "model");
    return 1;
}

/* Answers 429 for a request refused by a restricted key's own requests per minute. */
static void refuse_key_rate(h2o_req_t *req, struct reqinfo *info,
                            const struct ratelimit_result *minute)
{
    char msg[256], buf[16];
    snprintf(msg, sizeof(msg),
             "Rate limit reached for this API key: its own limit is %u requests per minute (a "
             "restriction set by the account, below the account's). Retry after %u second%s.",
             minute->limit, minute->retry_after, minute->retry_after == 1 ? "" : "s");
    http_add_ratelimit_headers(req, minute, NULL);
    snprintf(buf, sizeof(buf), "%u", minute->retry_after);
    http_add_header(req, "retry-after", buf);
    http_send_error(req, info, KN_ERR_RATE_LIMITED, msg, NULL);
}

/* Applies a key's rate limits in this process: the test-key limits, or the live limit of its
 * account's plan; share > 1 divides them (rounded up) for a node that counts its share of a
 * cluster's limits while Redis is away. Returns 1 when the request may go on; otherwise sends
 * the 429. */
static int check_limits(h2o_req_t *req, struct reqinfo *info, struct keyrec *key,
                        const struct plan *plan, int64_t now, unsigned share)
{
    const struct kn_config *c = http_worker_of(req)->srv->cfg;
    struct ratelimit_result minute, day;
    int have_minute = 0, have_day = 0, live = keyrec_mode(key) == APIKEY_MODE_LIVE;
    /* Live keys share their account's limit: more keys buy nothing. */
    uint32_t rpm = live ? plan->requests_per_minute : c->test_rpm, rpd = live ? 0 : c->test_rpd;
    struct limiter *lim = http_worker_of(req)->srv->limiter;

    const struct keyrules *rules = rules_of(key);
    uint32_t own = rules != NULL ? rules->rpm : 0;
    if (!live && own != 0 && (rpm == 0 || own < rpm))
        rpm = own; /* A test key's own cell, at the lower of the two limits. */
    if (share > 1) {
        rpm = (rpm + share - 1) / share;
        rpd = (rpd + share - 1) / share;
        own = (own + share - 1) / share;
    }
    if (live && own != 0) {
        /* A restricted live key: its own cell first, then its account's. */
        if (!limiter_rate_take(lim, key, 0, own, 60, kn_mono_ns(), &minute)) {
            refuse_key_rate(req, info, &minute);
            return 0;
        }
    }
    if (rpd != 0) {
        have_day = 1;
        if (!limiter_daily_take(lim, key, rpd, now, &day)) {
            refuse_limits(req, info, live, plan, 1, NULL, &day, 1);
            return 0;
        }
    }
    if (rpm != 0) {
        have_minute = 1;
        if (!limiter_rate_take(lim, key, live, rpm, 60, kn_mono_ns(), &minute)) {
            if (have_day) {
                /* The day keeps the request it counted: give it back, and report it given back. */
                limiter_daily_refund(lim, key, now);
                day.remaining++;
            }
            refuse_limits(req, info, live, plan, 0, &minute, &day, have_day);
            return 0;
        }
    }
    http_add_ratelimit_headers(req, have_minute ? &minute : NULL, have_day ? &day : NULL);
    return 1;
}

static int is_json_content_type(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    const char *v;
    size_t len;

    if (i < 0)
        return 0;
    v = req->headers.entries[i].value.base;
    len = req->headers.entries[i].value.len;
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    if (len < 16 || strncasecmp(v, "application/json", 16) != 0)
        return 0;
    v += 16;
    len -= 16;
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    return len == 0 || *v == ';';
}

/* Answers 429 for a live request refused by its account's cap on requests in flight. */
static void refuse_inflight(h2o_req_t *req, struct reqinfo *info, const struct plan *plan)
{
    char msg[400];
    snprintf(msg, sizeof(msg),
             "This account already has %u live requests in flight, the most its plan "
             "(\"%s\") allows at once, all keys together. Retry when one finishes.",
             plan->max_concurrent, plan->name);
    http_add_header(req, "retry-after", "1");
    http_send_error(req, info, KN_ERR_TOO_MANY_CONCURRENT, msg, NULL);
}

/* Answers 429 for a live request refused by its account's monthly quota or by its key's own
 * (q says which). */
static void refuse_quota(h2o_req_t *req, struct reqinfo *info, struct keyrec *key,
                         const struct plan *plan, enum quota_outcome q, int64_t now, int64_t month)
{
    struct acctrec *a = keyrec_acct(key);
    char msg[480], when[32], mbuf[8];
    int64_t reset = kn_month_start(month + 1);
    long long hours = (long long)((reset - now + 3599) / 3600);

    kn_format_time(reset, when, sizeof(when));
    kn_month_format(month, mbuf, sizeof(mbuf));
    if (q == QUOTA_KEY_REQUESTS_USED_UP) {
        const struct keyrules *rules = rules_of(key);
        char kid[KEY_ID_SIZE];
        snprintf(msg, sizeof(msg),
                 "This key (%s) has used its own monthly quota of %lld live requests for %s, "
                 "counting the keys it replaced. The quota resets at %s, in %lld hours. The "
                 "account's other keys are not affected; to go on now, an owner can raise or "
                 "lift this key's quota.",
                 keyrec_id(key, kid), (long long)(rules != NULL ? rules->monthly : 0), mbuf, when,
                 hours);
    } else {
        snprintf(msg, sizeof(msg),
                 "This account has used its monthly quota of %lld live %s for %s (plan \"%s\"%s). "
                 "The quota resets at %s, in %lld hours. Test keys still work; to go on now, ask "
                 "for a higher quota or plan.",
                 (long long)(q == QUOTA_REQUESTS_USED_UP ? atomic_load(&a->quota_requests)
                                                         : atomic_load(&a->quota_tokens)),
                 q == QUOTA_REQUESTS_USED_UP ? "requests" : "tokens", mbuf, plan->name,
                 q == QUOTA_TOKENS_USED_UP ? ", counting what requests in flight may use" : "",
                 when, hours);
    }
    http_send_error(req, info, KN_ERR_INSUFFICIENT_QUOTA, msg, NULL);
}

/* Admits a live request past its account's concurrency cap and monthly quotas, or answers 429.
 * Returns 1 when admitted (the request then holds one of each, written to *hold). */
static int admit_live(h2o_req_t *req, struct reqinfo *info, struct keyrec *key,
                      const struct plan *plan, const struct chat_call *call, int64_t now,
                      int64_t month, struct quota_hold *hold)
{
    struct acctrec *a = keyrec_acct(key);
    struct limiter *lim = http_worker_of(req)->srv->limiter;
    enum quota_outcome q;
    uint64_t want = chat_call_input_bound(call) +
                    (call->max_output ? call->max_output : CHAT_OUTPUT_RESERVE_DEFAULT);

    if (!limiter_inflight_acquire(lim, a, plan->max_concurrent)) {
        refuse_inflight(req, info, plan);
        keytable_refuse(http_worker_of(req)->srv->kt, key, now);
        return 0;
    }
    if ((q = limiter_quota_reserve(lim, key, month, want, hold)) == QUOTA_OK)
        return 1;
    limiter_inflight_release(lim, a);
    refuse_quota(req, info, key, plan, q, now, month);
    keytable_refuse(http_worker_of(req)->srv->kt, key, now);
    return 0;
}

static int send_model_not_found(h2o_req_t *req, struct reqinfo *info, const char *model, size_t len,
                                const struct plan *plan)
{
    char msg[400];
    snprintf(msg, sizeof(msg),
             "The model '%.*s' does not exist or this account's plan (\"%s\") cannot use it. "
             "GET /v1/models lists the models it can use.",
             (int)(len > 128 ? 128 : len), model, plan->name);
    http_send_error(req, info, KN_ERR_MODEL_NOT_FOUND, msg, "model");
    return 0;
}

enum kn_err http_authenticate_key(h2o_req_t *req, struct reqinfo *info, int64_t now,
                                  struct keyrec **key)
{
    struct server *srv = http_worker_of(req)->srv;
    struct auth_input in;
    struct sockaddr_storage peer;
    enum kn_err err;

    memset(&in, 0, sizeof(in));
    in.now = now;
    if (http_client_addr(req, &peer))
        in.peer = (struct sockaddr *)&peer;
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, i)) != -1;) {
        if (in.header_count++ == 0) {
            in.header = req->headers.entries[i].value.base;
            in.header_len = req->headers.entries[i].value.len;
        }
    }
    err = auth_authenticate(srv->kt, srv->secret, &in, key);
    info->key = *key;
    return err;
}

/* Authenticates a chat request (an admin key is refused: 403) and finds the plan it is served on,
 * read once for the whole request (a reload may change the account's plan, or take it away, at any
 * moment): the account's; for a test key of an account whose plan the server does not know, the
 * default plan of ps (test keys never touch billing). A live key of such an account is refused.
 * Returns the key and writes the plan to *plan, or returns NULL after answering. */
static struct keyrec *authenticate(h2o_req_t *req, struct reqinfo *info, int64_t now,
                                   const struct plans *ps, const struct plan **plan)
{
    struct server *srv = http_worker_of(req)->srv;
    struct keyrec *key;
    /* The reading the key table holds at least, taken before the lookup; its age is asked after
     * it, so that a loop frozen in between serves nothing from a table the others stopped
     * waiting for (keysync_stale_since). */
    uint64_t reading = keysync_reading(srv->ks);
    enum kn_err err = http_authenticate_key(req, info, now, &key);

    if (keysync_stale_since(reading)) {
        http_add_header(req, "retry-after", "1");
        http_send_error(req, info, KN_ERR_NOT_READY,
                        "This server has not read the latest key changes yet (it was paused, or "
                        "its store is slow to answer); retry in a moment.",
                        NULL);
        return NULL;
    }
    if (err != KN_OK) {
        http_send_auth_error(req, info, err);
        return NULL;
    }
    if (keyrec_mode(key) == APIKEY_MODE_ADMIN) {
        http_send_scope_error(req, info, HTTP_SCOPE_CHAT);
        return NULL;
    }
    *plan = atomic_load(&keyrec_acct(key)->plan);
    if (*plan == NULL && keyrec_mode(key) == APIKEY_MODE_TEST)
        *plan = plans_find(ps, NULL);
    if (*plan == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "This account is on plan \"%.64s\", which this server's plans do not define, so "
                 "its live requests are refused until the operator fixes it. Test keys still "
                 "work.",
                 atomic_load(&keyrec_acct(key)->plan_wanted) != NULL
                     ? atomic_load(&keyrec_acct(key)->plan_wanted)
                     : "?");
        http_send_error(req, info, KN_ERR_PLAN_UNAVAILABLE, msg, NULL);
        return NULL;
    }
    return key;
}

/* A request waiting for Redis (limits/cluster.h): what its handler had, copied, since the handler
 * has returned. req is NULL once the client went away (its guard, in the request's pool, says so
 * when h2o frees the request). */
struct cluster_wait {
    h2o_req_t *req;
    struct cluster_guard *guard;
    struct reqinfo info;
    enum chat_api api;
    struct keyrec *key;
    const struct plan *plan;
    const struct plans *ps;
    int64_t now, month;
    uint64_t began_ns;
    struct plan_model pm;
    struct chat_call call; /* A live request's call, prepared. */
};

struct cluster_guard {
    struct cluster_wait *w;
};

static void on_cluster_guard_dispose(void *p)
{
    struct cluster_guard *g = p;
    if (g->w != NULL)
        g->w->req = NULL;
}

static struct cluster_wait *cluster_wait_new(h2o_req_t *req, const struct reqinfo *info,
                                             enum chat_api api, struct keyrec *key,
                                             const struct plan *plan, const struct plans *ps,
                                             int64_t now, uint64_t began_ns)
{
    struct cluster_wait *w = kn_calloc(1, sizeof(*w));
    *w = (struct cluster_wait){.req = req,
                               .info = *info,
                               .api = api,
                               .key = key,
                               .plan = plan,
                               .ps = ps,
                               .now = now,
                               .began_ns = began_ns};
    w->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*w->guard), on_cluster_guard_dispose);
    w->guard->w = w;
    return w;
}

/* Takes the request back from the wait: NULL when the client left meanwhile. */
static h2o_req_t *cluster_wait_take(struct cluster_wait *w)
{
    if (w->req != NULL)
        w->guard->w = NULL;
    return w->req;
}

static void serve_chat(h2o_req_t *req, struct reqinfo *info, enum chat_api api, struct keyrec *key,
                       const struct plan *plan, const struct plans *ps, int64_t now,
                       uint64_t began_ns);

static void on_test_limits(void *ud, int ok, const struct cluster_test_result *r)
{
    struct cluster_wait *w = ud;
    h2o_req_t *req = cluster_wait_take(w);
    struct server *srv;

    if (req == NULL) {
        free(w);
        return;
    }
    srv = http_worker_of(req)->srv;
    if (!ok) {
        /* Redis did not answer: this node's share of the limits, counted here. */
        if (!check_limits(req, &w->info, w->key, w->plan, w->now,
                          (unsigned)keysync_live_nodes(srv->ks))) {
            keytable_refuse(srv->kt, w->key, w->now);
            free(w);
            return;
        }
    } else if (r->refused && keyrec_mode(w->key) == APIKEY_MODE_LIVE) {
        refuse_key_rate(req, &w->info, &r->minute);
        keytable_refuse(srv->kt, w->key, w->now);
        free(w);
        return;
    } else if (r->refused) {
        refuse_limits(req, &w->info, 0, w->plan, r->refused == 1, &r->minute, &r->day,
                      r->day.limit != 0);
        keytable_refuse(srv->kt, w->key, w->now);
        free(w);
        return;
    } else if (keyrec_mode(w->key) != APIKEY_MODE_LIVE) {
        /* (A live key's headers are its account's, from its admission.) */
        http_add_ratelimit_headers(req, r->minute.limit ? &r->minute : NULL,
                                   r->day.limit ? &r->day : NULL);
    }
    keytable_touch(srv->kt, w->key, w->now, 1);
    serve_chat(req, &w->info, w->api, w->key, w->plan, w->ps, w->now, w->began_ns);
    free(w);
}

static void handle_chat(h2o_req_t *req, struct reqinfo *info, enum chat_api api)
{
    struct server *srv = http_worker_of(req)->srv;
    const struct plans *ps = keysync_plans(srv->ks);
    const struct plan *plan;
    struct keyrec *key;
    int64_t now = kn_unix_now();

    if ((key = authenticate(req, info, now, ps, &plan)) == NULL)
        return;
    /* A live request's stages are timed from here (live.h); test keys take no clock. (h2o's
     * own arrival time is its loop's cached clock, up to a millisecond stale: not used.) */
    uint64_t began_ns = keyrec_mode(key) == APIKEY_MODE_LIVE ? kn_mono_ns() : 0;
    if (srv->has_redis) {
        const struct keyrules *rules = rules_of(key);
        uint32_t own = rules != NULL ? rules->rpm : 0;
        if (keyrec_mode(key) == APIKEY_MODE_LIVE && own == 0) {
            /* Its account's limits are asked of Redis in one call with its quotas, once the
             * request is read (admit_in_cluster). */
            keytable_touch(srv->kt, key, now, 1);
            serve_chat(req, info, api, key, plan, ps, now, began_ns);
            return;
        }
        /* A test key's limits, or a restricted live key's own per minute (its account's come
         * after, with its quotas), on the key's own cells in Redis. */
        const struct kn_config *c = srv->cfg;
        uint32_t rpm = keyrec_mode(key) == APIKEY_MODE_LIVE                  ? own
                       : own != 0 && (c->test_rpm == 0 || own < c->test_rpm) ? own
                                                                             : c->test_rpm;
        uint32_t rpd = keyrec_mode(key) == APIKEY_MODE_LIVE ? 0 : c->test_rpd;
        struct cluster_wait *w = cluster_wait_new(req, info, api, key, plan, ps, now, began_ns);
        char kid[KEY_ID_SIZE];
        if (cluster_test_take(keyrec_id(key, kid), rpm, rpd, on_test_limits, w) == 0)
            return;
        /* No connection: this node's share, counted here. */
        cluster_wait_take(w);
        free(w);
        if (!check_limits(req, info, key, plan, now, (unsigned)keysync_live_nodes(srv->ks))) {
            keytable_refuse(srv->kt, key, now);
            return;
        }
    } else if (!check_limits(req, info, key, plan, now, 1)) {
        keytable_refuse(srv->kt, key, now);
        return;
    }
    /* Counted once admitted by the limits: this is the count the daily limit resumes from. */
    keytable_touch(srv->kt, key, now, 1);
    serve_chat(req, info, api, key, plan, ps, now, began_ns);
}

/* The key's line of replacements, for the cluster's count of it (NULL: it has none). */
static const char *line_id(struct keyrec *key)
{
    struct keyquota *line = keyrec_line(key);
    return line != NULL ? line->id : NULL;
}

/* Redis's answer to a live request's admission. */
static void on_live_admit(void *ud, int ok, const struct cluster_admit_result *r)
{
    struct cluster_wait *w = ud;
    h2o_req_t *req = cluster_wait_take(w);

    if (req == NULL) {
        /* The client left: what was reserved for it goes back (or, if Redis did not answer,
         * is fenced off should the admission still arrive). */
        if (!ok || r->outcome == CLUSTER_ADMITTED)
            cluster_release(keyrec_acct(w->key)->id, w->month, w->info.request_id, line_id(w->key));
        chat_call_cleanup(&w->call);
        free(w);
        return;
    }
    if (ok && r->outcome == CLUSTER_ADMITTED &&
        (http_worker_of(req)->live.stopping ||
         keysync_billing_down(http_worker_of(req)->srv->ks))) {
        /* While Redis answered, the server began to stop or the store stopped taking bills:
         * nothing starts that could not be billed. */
        cluster_release(keyrec_acct(w->key)->id, w->month, w->info.request_id, line_id(w->key));
        http_add_header(req, "retry-after", "1");
        http_send_error(req, &w->info,
                        http_worker_of(req)->live.stopping ? KN_ERR_SHUTTING_DOWN
                                                           : KN_ERR_BILLING_UNAVAILABLE,
                        NULL, NULL);
    } else if (!ok || r->outcome == CLUSTER_NOT_SEEDED) {
        /* No answer (timed out, cut): the admission may yet be applied in Redis; the release
         * fences it off, so that it never holds this account's quota for a request refused. */
        if (!ok)
            cluster_release(keyrec_acct(w->key)->id, w->month, w->info.request_id, line_id(w->key));
        http_add_header(req, "retry-after", "1");
        http_send_error(req, &w->info, KN_ERR_QUOTA_UNAVAILABLE,
                        ok ? "This account's usage this month is not in the cluster's counters "
                             "yet (they were restarted empty, or the month has just begun), so "
                             "its quotas cannot be checked and its live requests are refused for "
                             "a moment. This request was not billed; retry shortly."
                           : NULL,
                        NULL);
    } else if (r->outcome == CLUSTER_RATE) {
        refuse_limits(req, &w->info, 1, w->plan, 0, &r->minute, NULL, 0);
        keytable_refuse(http_worker_of(req)->srv->kt, w->key, w->now);
    } else if (r->outcome == CLUSTER_INFLIGHT) {
        refuse_inflight(req, &w->info, w->plan);
        keytable_refuse(http_worker_of(req)->srv->kt, w->key, w->now);
    } else if (r->outcome == CLUSTER_REQUESTS_USED_UP || r->outcome == CLUSTER_TOKENS_USED_UP ||
               r->outcome == CLUSTER_KEY_REQUESTS_USED_UP) {
        refuse_quota(req, &w->info, w->key, w->plan,
                     r->outcome == CLUSTER_REQUESTS_USED_UP ? QUOTA_REQUESTS_USED_UP
                     : r->outcome == CLUSTER_TOKENS_USED_UP ? QUOTA_TOKENS_USED_UP
                                                            : QUOTA_KEY_REQUESTS_USED_UP,
                     w->now, w->month);
        keytable_refuse(http_worker_of(req)->srv->kt, w->key, w->now);
    } else {
        if (r->minute.limit != 0)
            http_add_ratelimit_headers(req, &r->minute, NULL);
        struct live_terms terms = {w->month, {r->held, keyrec_line(w->key)},    w->plan,     &w->pm,
                                   w->ps,    http_worker_of(req)->srv->limiter, w->began_ns, 1};
        live_handle(&http_worker_of(req)->live, req, &w->info, w->key, &terms, &w->call);
    }
    chat_call_cleanup(&w->call);
    free(w);
}

/* Asks Redis to admit a live request (its account's requests per minute, in flight and monthly
 * quotas, in one call); it goes on in on_live_admit. Without a connection it is refused: quotas
 * are money, and no node may spend an account's quota on its own. */
static void admit_in_cluster(h2o_req_t *req, struct reqinfo *info, struct keyrec *key,
                             const struct plan *plan, const struct plans *ps,
                             const struct plan_model *pm, struct chat_call *call, int64_t now,
                             int64_t month, uint64_t began_ns)
{
    struct server *srv = http_worker_of(req)->srv;
    struct acctrec *a = keyrec_acct(key);
    struct cluster_wait *w = cluster_wait_new(req, info, call->api, key, plan, ps, now, began_ns);

    w->month = month;
    w->pm = *pm;
    w->call = *call;
    memset(call, 0, sizeof(*call));
    struct cluster_admit_ask ask = {
        .account_id = a->id,
        .month = month,
        .rpm = plan->requests_per_minute,
        .max_inflight = plan->max_concurrent,
        .quota_requests = atomic_load(&a->quota_requests),
        .quota_tokens = atomic_load(&a->quota_tokens),
        .want_tokens = chat_call_input_bound(&w->call) +
                       (w->call.max_output ? w->call.max_output : CHAT_OUTPUT_RESERVE_DEFAULT),
        .lease = w->info.request_id,
        /* Past the longest a request may last, so that only a node that died lets it lapse. */
        .lease_ms = (uint64_t)srv->cfg->model_timeout_ms + 60000};
    /* A live key counts in its line (limited by its own quota, if it has one), as on a single
     * node. */
    const struct keyrules *rules = rules_of(key);
    struct keyquota *line = keyrec_line(key);
    if (line != NULL) {
        ask.line = line->id;
        ask.line_quota = rules != NULL ? rules->monthly : 0;
    }
    if (cluster_admit(&ask, on_live_admit, w) == 0)
        return;
    cluster_wait_take(w);
    http_add_header(req, "retry-after", "1");
    http_send_error(req, &w->info, KN_ERR_QUOTA_UNAVAILABLE, NULL, NULL);
    chat_call_cleanup(&w->call);
    free(w);
}

static void serve_chat(h2o_req_t *req, struct reqinfo *info, enum chat_api api, struct keyrec *key,
                       const struct plan *plan, const struct plans *ps, int64_t now,
                       uint64_t began_ns)
{
    struct server *srv = http_worker_of(req)->srv;
    struct plan_model pm;
    struct chat_request creq;
    struct chat_call call;
    struct chat_error cerr;
    const char *body = req->entity.base != NULL ? req->entity.base : "";
    const char *default_model = ps->default_model[0] ? ps->default_model : srv->cfg->default_model;
    struct quota_hold hold = {0, NULL};

    if (!is_json_content_type(req)) {
        http_send_error(req, info, KN_ERR_UNSUPPORTED_MEDIA_TYPE, NULL, NULL);
        return;
    }
    if (api == CHAT_API_KONNECT) {
        if (chat_request_parse(body, req->entity.len, &creq, &cerr) != 0) {
            http_send_error(req, info, cerr.err, cerr.message, cerr.param);
            return;
        }
        if (keyrec_mode(key) == APIKEY_MODE_TEST && !creq.stream) {
            /* The hot path of test keys: the mock answer written directly. */
            char id[5 + 24 + 1], model[CHAT_MODEL_MAX + 1];
            size_t len;
            if (creq.model != NULL) {
                memcpy(model, creq.model, creq.model_len);
                model[creq.model_len] = '\0';
            } else {
                kn_strlcpy(model, default_model, sizeof(model));
            }
            if (ps->has_catalogue && plans_model(ps, plan, model, strlen(model), &pm) != 0) {
                chat_request_cleanup(&creq);
                send_model_not_found(req, info, model, strlen(model), plan);
                return;
            }
            if (refuse_model(req, info, key, model, strlen(model))) {
                chat_request_cleanup(&creq);
                return;
            }
            base62_random_id(id, "chat_", 24);
            struct chat_mock m = {CHAT_API_KONNECT,
                                  0,
                                  0,
                                  model,
                                  creq.message,
                                  creq.message_len,
                                  chat_estimate_tokens(creq.message, creq.message_len)};
            char *out = chat_mock_answer(&m, id, now, &len);
            chat_request_cleanup(&creq);
            http_send_json(req, info, 200, "OK", out, len);
            free(out);
            return;
        }
        chat_call_from_konnect(&creq, default_model, &call);
        chat_request_cleanup(&creq);
    } else if (chat_call_from_openai(body, req->entity.len, default_model, plan->allowed_params,
                                     &call, &cerr) != 0) {
        http_send_error(req, info, cerr.err, cerr.message, cerr.param);
        return;
    }
    if (plans_model(ps, plan, call.model, strlen(call.model), &pm) != 0) {
        send_model_not_found(req, info, call.model, strlen(call.model), plan);
        chat_call_cleanup(&call);
        return;
    }
    if (refuse_model(req, info, key, pm.name, strlen(pm.name))) {
        chat_call_cleanup(&call);
        return;
    }
    if (keyrec_mode(key) == APIKEY_MODE_TEST) {
        char id[9 + 24 + 1];
        size_t len;
        base62_random_id(id, api == CHAT_API_OPENAI ? "chatcmpl-" : "chat_", 24);
        struct chat_mock m = chat_mock_of(&call);
        char *out = chat_mock_answer(&m, id, now, &len);
        if (call.stream) {
            http_response_head(req, info, 200, "OK", HTTP_EVENT_STREAM, "no-cache", len);
            http_log_request(req, info, 200);
            h2o_send_inline(req, out, len);
        } else {
            http_send_json(req, info, 200, "OK", out, len);
        }
        free(out);
        chat_call_cleanup(&call);
        return;
    }
    if (http_worker_of(req)->live.stopping) {
        /* Past the drain's deadline: nothing more starts that could not be billed. */
        http_send_error(req, info, KN_ERR_SHUTTING_DOWN, NULL, NULL);
        chat_call_cleanup(&call);
        return;
    }
    if (keysync_billing_down(srv->ks)) {
        /* The store takes no ledger rows: nothing starts that could not be billed (what is in
         * flight goes to the spool). */
        http_add_header(req, "retry-after", "1");
        http_send_error(req, info, KN_ERR_BILLING_UNAVAILABLE,
                        "Usage cannot be recorded for billing right now, so live requests are "
                        "refused before they start. This request was not billed; retry shortly. "
                        "Test keys still work.",
                        NULL);
        chat_call_cleanup(&call);
        return;
    }
    chat_call_prepare(&call, pm.backend);
    int64_t month = kn_month_of(now);
    if (srv->has_redis) {
        admit_in_cluster(req, info, key, plan, ps, &pm, &call, now, month, began_ns);
        return;
    }
    if (!admit_live(req, info, key, plan, &call, now, month, &hold)) {
        chat_call_cleanup(&call);
        return;
    }
    struct live_terms terms = {month,    hold, plan, &pm, ps, http_worker_of(req)->srv->limiter,
                               began_ns, 0};
    live_handle(&http_worker_of(req)->live, req, info, key, &terms, &call);
}

/* One model in OpenAI's format. */
static void model_json(struct jsonw *w, const char *id, int64_t created)
{
    jsonw_lit(w, "{\"id\":");
    jsonw_str(w, id, strlen(id));
    jsonw_lit(w, ",\"object\":\"model\",\"created\":");
    jsonw_int(w, created);
    jsonw_lit(w, ",\"owned_by\":\"konnect\"}");
}

/* GET /v1/models and /v1/models/{id}: the models the caller's plan may use, in OpenAI's format
 * (many tools list them at start). Without a catalogue, every name is allowed, and the list holds
 * the default model. Any valid key may ask; asking counts against no limit. */
void http_handle_models(h2o_req_t *req, struct reqinfo *info)
{
    struct server *srv = http_worker_of(req)->srv;
    const struct plans *ps = keysync_plans(srv->ks);
    const struct plan *plan;
    const char *default_model = ps->default_model[0] ? ps->default_model : srv->cfg->default_model;
    h2o_iovec_t p = req->path_normalized;
    struct plan_model pm;
    struct keyrec *key;
    struct jsonw w;
    size_t len;
    char *out;

    if ((key = authenticate(req, info, kn_unix_now(), ps, &plan)) == NULL)
        return;
    jsonw_init(&w, 256);
    if (p.len > 11) { /* /v1/models/{id} */
        const char *id = p.base + 11;
        size_t idlen = p.len - 11;
        const struct keyrules *rules = rules_of(key);
        int known = ps->has_catalogue ? plans_model(ps, plan, id, idlen, &pm) == 0
                                      : (strlen(default_model) == idlen &&
                                         memcmp(default_model, id, idlen) == 0) ||
                                            (rules != NULL && rules->models[0] != '\0' &&
                                             lifecycle_model_allowed(rules->models, id, idlen));
        if (known && rules != NULL && !lifecycle_model_allowed(rules->models, id, idlen))
            known = 0; /* Not this key's. */
        if (!known || idlen > PLAN_MODEL_MAX) {
            free(jsonw_finish(&w, &len));
            send_model_not_found(req, info, id, idlen, plan);
            return;
        }
        memcpy(pm.name, id, idlen);
        pm.name[idlen] = '\0';
        model_json(&w, pm.name, 0);
    } else {
        const struct keyrules *rules = rules_of(key);
        const char *only = rules != NULL ? rules->models : "";
        int n = 0;
        jsonw_lit(&w, "{\"object\":\"list\",\"data\":[");
        if (!ps->has_catalogue && only[0] != '\0') {
            /* Without a catalogue, a restricted key's models are the names it may use. */
            for (const char *m = only; *m != '\0';) {
                size_t mlen = strcspn(m, ",");
                char name[PLAN_MODEL_MAX + 1];
                snprintf(name, sizeof(name), "%.*s", (int)mlen, m);
                if (n++ > 0)
                    jsonw_lit(&w, ",");
                model_json(&w, name, 0);
                m += mlen + (m[mlen] == ',');
            }
        } else if (!ps->has_catalogue) {
            model_json(&w, default_model, 0);
        }
        for (size_t i = 0; ps->has_catalogue && i < plan->nmodels; i++) {
            const char *name = plan->models[i].name;
            if (!lifecycle_model_allowed(only, name, strlen(name)))
                continue;
            if (n++ > 0)
                jsonw_lit(&w, ",");
            model_json(&w, name, 0);
        }
        jsonw_lit(&w, "]}");
    }
    out = jsonw_finish(&w, &len);
    http_send_json(req, info, 200, "OK", out, len);
    free(out);
}

void http_handle_chat_konnect(h2o_req_t *req, struct reqinfo *info)
{
    handle_chat(req, info, CHAT_API_KONNECT);
}

void http_handle_chat_completions(h2o_req_t *req, struct reqinfo *info)
{
    handle_chat(req, info, CHAT_API_OPENAI);
}
