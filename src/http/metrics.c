/* Prometheus metrics; see metrics.h. */
#include "http/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "http/internal.h"
#include "keys/keysync.h"
#include "limits/cluster.h"
#include "limits/redis.h"
#include "store/store.h"

static const char *const route_names[METRICS_ROUTES] = {
    [METRICS_ROUTE_CHAT] = "chat",         [METRICS_ROUTE_CHAT_COMPLETIONS] = "chat_completions",
    [METRICS_ROUTE_MODELS] = "models",     [METRICS_ROUTE_MANAGE] = "management",
    [METRICS_ROUTE_OPERATOR] = "operator", [METRICS_ROUTE_DASHBOARD_API] = "dashboard_api",
    [METRICS_ROUTE_PAGES] = "pages",       [METRICS_ROUTE_HEALTH] = "health",
    [METRICS_ROUTE_METRICS] = "metrics",   [METRICS_ROUTE_OTHER] = "other",
};

/* The success outcomes, after the errors. */
enum { OK_200 = KN_ERR__COUNT, OK_201, OK_204, OK_OTHER };

static int starts(const char *path, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(path, prefix, n) == 0;
}

static enum metrics_route route_of(const char *p, size_t len)
{
    if (starts(p, len, "/v1/")) {
        if (len == 8 && memcmp(p, "/v1/chat", 8) == 0)
            return METRICS_ROUTE_CHAT;
        if (len == 20 && memcmp(p, "/v1/chat/completions", 20) == 0)
            return METRICS_ROUTE_CHAT_COMPLETIONS;
        if (starts(p, len, "/v1/models"))
            return METRICS_ROUTE_MODELS;
        if (starts(p, len, "/v1/operator"))
            return METRICS_ROUTE_OPERATOR;
        return METRICS_ROUTE_MANAGE; /* or a /v1/ path that is nothing: counted as not_found */
    }
    if (starts(p, len, "/dashboard/api/"))
        return METRICS_ROUTE_DASHBOARD_API;
    if ((len == 8 && memcmp(p, "/healthz", 8) == 0) || (len == 7 && memcmp(p, "/readyz", 7) == 0))
        return METRICS_ROUTE_HEALTH;
    if (len == 8 && memcmp(p, "/metrics", 8) == 0)
        return METRICS_ROUTE_METRICS;
    if (len >= 1 && p[0] == '/')
        return METRICS_ROUTE_PAGES;
    return METRICS_ROUTE_OTHER;
}

static size_t outcome_of(int status, const char *code)
{
    if (code != NULL) {
        /* The codes come from the table itself: the pointer is found first. */
        for (int e = 1; e < KN_ERR__COUNT; e++)
            if (kn_error_def((enum kn_err)e)->code == code)
                return (size_t)e;
        for (int e = 1; e < KN_ERR__COUNT; e++)
            if (strcmp(kn_error_def((enum kn_err)e)->code, code) == 0)
                return (size_t)e;
        return KN_ERR_INTERNAL;
    }
    return status == 200 ? OK_200 : status == 201 ? OK_201 : status == 204 ? OK_204 : OK_OTHER;
}

void metrics_count(struct metrics_loop *m, const char *path, size_t path_len, int status,
                   const char *error_code, uint64_t duration_ns)
{
    if (m == NULL)
        return;
    enum metrics_route r = route_of(path, path_len);
    _Atomic uint64_t *c = &m->requests[r][outcome_of(status, error_code)];
    /* One writer (this loop): a load and a store. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    histogram_add(&m->duration[r], duration_ns);
}

/* ---- the text format --------------------------------------------------------------------- */

struct out {
    char *buf;
    size_t len, cap;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (n > 0 ? (size_t)n : 0);
        o->buf = kn_realloc(o->buf, o->cap);
    }
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Bucket bounds, in seconds. */
static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                5,      10,      30,     60,    120,    300};

static void histogram_lines(struct out *o, const char *name, const char *label, const char *value,
                            const struct histogram_snap *h)
{
    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
        put(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, label, value, bounds[i],
            (unsigned long long)histogram_count_le(h, (uint64_t)(bounds[i] * 1e9)));
    put(o, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, label, value,
        (unsigned long long)h->count);
    put(o, "%s_sum{%s=\"%s\"} %.9f\n", name, label, value, (double)h->sum / 1e9);
    put(o, "%s_count{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)h->count);
}

static const char *status_text(size_t outcome, char *buf, size_t size)
{
    switch (outcome) {
    case OK_200:
        return "200";
    case OK_201:
        return "201";
    case OK_204:
        return "204";
    case OK_OTHER:
        return "other";
    default:
        snprintf(buf, size, "%d", kn_error_def((enum kn_err)outcome)->status);
        return buf;
    }
}

char *metrics_render(struct server *srv, size_t *len)
{
    static const enum kn_err refusals[] = {
        KN_ERR_RATE_LIMITED,      KN_ERR_TOO_MANY_CONCURRENT,  KN_ERR_INSUFFICIENT_QUOTA,
        KN_ERR_QUOTA_UNAVAILABLE, KN_ERR_PLAN_UNAVAILABLE,     KN_ERR_ACCOUNT_SUSPENDED,
        KN_ERR_IP_NOT_ALLOWED,    KN_ERR_TOO_MANY_CONNECTIONS,
    };
    static const enum kn_err backend_errors[] = {
        KN_ERR_MODEL_BACKEND_ERROR,    KN_ERR_MODEL_BACKEND_TIMEOUT,
        KN_ERR_MODEL_BACKEND_REJECTED, KN_ERR_MODEL_BACKEND_OVERLOADED,
        KN_ERR_BILLING_UNAVAILABLE,
    };
    struct out o = {.buf = kn_malloc(16384), .cap = 16384};
    uint64_t(*req)[METRICS_OUTCOMES] = kn_calloc(METRICS_ROUTES, sizeof(*req));
    struct histogram_snap *dur = kn_calloc(METRICS_ROUTES, sizeof(*dur));
    struct histogram_snap *stage = kn_calloc(LIVE_STAGES, sizeof(*stage));
    uint64_t failovers = 0;
    char sbuf[16];

    for (int t = 0; t < srv->cfg->threads; t++) {
        struct worker *w = &srv->workers[t];
        for (int r = 0; r < METRICS_ROUTES; r++) {
            for (size_t k = 0; k < METRICS_OUTCOMES; k++)
                req[r][k] += atomic_load_explicit(&w->metrics.requests[r][k], memory_order_relaxed);
            histogram_read(&w->metrics.duration[r], &dur[r]);
        }
        for (int s = 0; s < LIVE_STAGES; s++)
            histogram_read(&w->live.stage[s], &stage[s]);
        failovers += atomic_load_explicit(&w->live.failovers, memory_order_relaxed);
    }

    head(&o, "konnect_build_info", "gauge",
         "The running server: its version and where it keeps things.");
    put(&o, "konnect_build_info{version=\"%s\",store=\"%s\",counters=\"%s\"} 1\n", KONNECT_VERSION,
        store_is_postgres(srv->cfg->database) ? "postgresql" : "sqlite",
        srv->has_redis ? "redis" : "local");

    head(&o, "konnect_requests_total", "counter",
         "Answers by route, HTTP status and error code (\"\" for none). An error that ended a "
         "stream already under way counts under its code.");
    for (int r = 0; r < METRICS_ROUTES; r++)
        for (size_t k = 1; k < METRICS_OUTCOMES; k++)
            if (req[r][k] != 0)
                put(&o, "konnect_requests_total{route=\"%s\",status=\"%s\",code=\"%s\"} %llu\n",
                    route_names[r], status_text(k, sbuf, sizeof(sbuf)),
                    k < KN_ERR__COUNT ? kn_error_def((enum kn_err)k)->code : "",
                    (unsigned long long)req[r][k]);

    head(&o, "konnect_request_duration_seconds", "histogram",
         "From a request's arrival to its answer's end, by route.");
    for (int r = 0; r < METRICS_ROUTES; r++)
        if (dur[r].count != 0)
            histogram_lines(&o, "konnect_request_duration_seconds", "route", route_names[r],
                            &dur[r]);

    head(&o, "konnect_live_stage_seconds", "histogram",
         "The stages of live requests: admit (limits and quota), connect (to the backend), "
         "backend (its first byte), queue (to the store thread), commit (the ledger's), wake, "
         "answer, total.");
    for (int s = 0; s < LIVE_STAGES; s++)
        histogram_lines(&o, "konnect_live_stage_seconds", "stage", live_stage_names[s], &stage[s]);

    head(&o, "konnect_limit_refusals_total", "counter",
         "Requests refused by a limit or quota, by kind (the error code).");
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        uint64_t n = 0;
        for (int r = 0; r < METRICS_ROUTES; r++)
            n += req[r][refusals[i]];
        put(&o, "konnect_limit_refusals_total{kind=\"%s\"} %llu\n", kn_error_def(refusals[i])->code,
            (unsigned long long)n);
    }
    head(&o, "konnect_backend_errors_total", "counter",
         "Live requests that failed at the model backend (or its bill), by kind.");
    for (size_t i = 0; i < sizeof(backend_errors) / sizeof(backend_errors[0]); i++) {
        uint64_t n = 0;
        for (int r = 0; r < METRICS_ROUTES; r++)
            n += req[r][backend_errors[i]];
        put(&o, "konnect_backend_errors_total{kind=\"%s\"} %llu\n",
            kn_error_def(backend_errors[i])->code, (unsigned long long)n);
    }

    head(&o, "konnect_backend_failovers_total", "counter",
         "Live requests sent on to their model's next backend after one failed before answering "
         "(unreachable, 5xx, 429 or a timeout); the failed attempts are not billed.");
    put(&o, "konnect_backend_failovers_total %llu\n", (unsigned long long)failovers);

    uint64_t age = 0;
    int store_ok = keysync_ready(srv->ks, &age);
    head(&o, "konnect_keys_loaded", "gauge", "API keys held in memory.");
    put(&o, "konnect_keys_loaded %zu\n", keytable_count(srv->kt));
    head(&o, "konnect_connections", "gauge", "Client connections open.");
    put(&o, "konnect_connections %u\n", atomic_load(&srv->conns));
    head(&o, "konnect_store_up", "gauge",
         "1 when the last round trip to the store succeeded less than 3 seconds ago.");
    put(&o, "konnect_store_up %d\n", store_ok);
    head(&o, "konnect_store_checked_seconds", "gauge",
         "Seconds since the last successful round trip to the store.");
    put(&o, "konnect_store_checked_seconds %.3f\n", (double)age / 1e3);
    head(&o, "konnect_ledger_up", "gauge", "1 while the store takes ledger rows.");
    put(&o, "konnect_ledger_up %d\n", !keysync_billing_down(srv->ks));
    head(&o, "konnect_ledger_spooled_rows", "gauge",
         "Ledger rows waiting in the spool for the store.");
    put(&o, "konnect_ledger_spooled_rows %llu\n", (unsigned long long)keysync_spooled(srv->ks));
    head(&o, "konnect_counters_up", "gauge",
         "1 when the limits' counters can be used (always, when they are counted locally).");
    put(&o, "konnect_counters_up %d\n",
        !srv->has_redis || (cluster_conn != NULL && redis_conn_counts_ok(cluster_conn)));
    pthread_mutex_lock(&srv->backend.lock);
    int checked = srv->backend.checked,
        up = checked && srv->backend.reachable && srv->backend.error[0] == '\0',
        listed = srv->backend.lists_default;
    pthread_mutex_unlock(&srv->backend.lock);
    head(&o, "konnect_model_backend_up", "gauge",
         "1 when the last probe of the model backend's GET /models succeeded.");
    if (checked)
        put(&o, "konnect_model_backend_up %d\n", up);
    head(&o, "konnect_model_backend_default_model_listed", "gauge",
         "1 when the model backend lists the default model.");
    if (checked)
        put(&o, "konnect_model_backend_default_model_listed %d\n", up && listed);

    free(req);
    free(dur);
    free(stage);
    *len = o.len;
    return o.buf;
}
