/* The model backend's probe (http/probe.c): GET <base>/models of the default model's backend at
 * start and every 30 seconds from the first event loop, said on standard error when what it finds
 * changes, and reported by /readyz (never failing readiness). */
#ifndef KN_HTTP_PROBE_H
#define KN_HTTP_PROBE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define PROBE_ERROR_MAX 256

/* What the last probe found. Written by the probing loop, read by every loop's /readyz. */
struct backend_state {
    pthread_mutex_t lock;
    int checked;                 /* A probe has finished. */
    int reachable;               /* It answered over HTTP. */
    int lists_default;           /* Its model list holds the default model. */
    uint64_t checked_ms;         /* When (monotonic milliseconds). */
    char error[PROBE_ERROR_MAX]; /* What went wrong, or "". */
    char model[129];             /* The default model, as the backend names it. */
    char url[513];               /* The backend asked (the default model's), without a key. */
};

struct probe;
struct server;
struct worker;

/* Starts probing from w's loop (its thread); stop ends it there, before the loop's backend pool
 * is disposed. */
struct probe *probe_start(struct worker *w);
void probe_stop(struct probe *p);

/* The backend's state as a JSON object, for /readyz: {"url", "status": "checking" | "ok" |
 * "unreachable" | "error" | "model_missing", "default_model", "default_model_listed",
 * "last_error", "checked_ms_ago"}. */
void probe_state_json(struct server *srv, char *out, size_t size);

#endif
