/* Prometheus metrics (GET /metrics, text format 0.0.4): requests by route, status and error
 * code, request latency by route, the live path's stage latencies (the backend's time to first
 * byte, the ledger commit, ...), keys loaded, limit and quota refusals and backend errors by kind,
 * the store's, the ledger's, the counters' and the model backend's health, and build info. No
 * label ever holds a secret, a key, an account or a path beyond the fixed routes.
 *
 * Each event loop counts its own requests (relaxed stores by that loop alone, no lock and no
 * allocation); a scrape adds every loop's counts up. */
#ifndef KN_HTTP_METRICS_H
#define KN_HTTP_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "core/histogram.h"

enum metrics_route {
    METRICS_ROUTE_CHAT,
    METRICS_ROUTE_CHAT_COMPLETIONS,
    METRICS_ROUTE_MODELS,
    METRICS_ROUTE_MANAGE,
    METRICS_ROUTE_OPERATOR,
    METRICS_ROUTE_DASHBOARD_API,
    METRICS_ROUTE_PAGES,
    METRICS_ROUTE_HEALTH,
    METRICS_ROUTE_METRICS,
    METRICS_ROUTE_OTHER,
    METRICS_ROUTES
};

/* An answer's outcome: its error (enum kn_err, KN_OK for none) and, for answers without one,
 * which success status. */
#define METRICS_OUTCOMES (KN_ERR__COUNT + 4)

/* One event loop's counts. */
struct metrics_loop {
    _Atomic uint64_t requests[METRICS_ROUTES][METRICS_OUTCOMES];
    struct histogram duration[METRICS_ROUTES]; /* Nanoseconds, arrival to answer. */
};

/* Counts one answer (status, and its error code as reqinfo holds it, or NULL) of the request at
 * path, which took duration_ns. m may be NULL (a loop that counts nothing). */
void metrics_count(struct metrics_loop *m, const char *path, size_t path_len, int status,
                   const char *error_code, uint64_t duration_ns);

struct server;

/* Writes the metrics of srv in Prometheus's text format; returns a malloc'd text and its
 * length. */
char *metrics_render(struct server *srv, size_t *len);

#endif
