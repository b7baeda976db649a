/* The model backend's probe: GET <base>/models of the backend that serves the default model (the
 * catalogue's, else KONNECT_MODEL): the first of the model's own backends when the catalogue
 * gives it some, else KONNECT_MODEL_URL; from the first event loop at start and every
 * PROBE_EVERY_MS after, on the loop's connection pool for that backend. It says on standard
 * error, once per change, when the backend cannot be reached, answers with an error, or does not
 * list the default model (by the backend's name for it), and keeps what it found for /readyz. It
 * never fails readiness (test keys never need the backend) and never touches billing. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "http/internal.h"
#include "http/probe.h"
#include "keys/keysync.h"
#include "metering/plans.h"

#define PROBE_EVERY_MS 30000
#define PROBE_LIMIT_MS 5000          /* The longest a probe may take. */
#define PROBE_BODY_MAX (1024 * 1024) /* A model list longer than this is not read to its end. */

struct probe {
    struct server *srv;
    struct worker *w;
    h2o_timeout_t every, limit;
    h2o_timeout_entry_t tick, deadline;
    struct upstream_call *call; /* The probe in flight, or NULL. */
    /* What this probe asks: the backend's base URL (for messages), its name for the default
     * model, and the request. */
    char url[PLAN_URL_MAX + 1];
    char model[PLAN_MODEL_MAX + 1];
    char head[1400];
    h2o_iovec_t buf;
    int status;
    char *body;
    size_t len;
    char said[2048]; /* What was last said on standard error. */
};

/* Aims the next probe at the default model's backend (see above): sets p's url, model and
 * request, and returns the connection pool to ask it on, or NULL (with p->url and an error in
 * err) when its backend cannot be used. */
static struct upstream_pool *aim(struct probe *p, char *err, size_t errsize)
{
    const struct plans *ps = keysync_plans(p->srv->ks);
    const char *name = ps->default_model[0] ? ps->default_model : p->srv->cfg->default_model;
    const struct live_upstream *u = &p->srv->upstream;
    struct upstream_pool *pool = &p->w->live.pool;

    kn_strlcpy(p->url, p->srv->backend_url, sizeof(p->url));
    kn_strlcpy(p->model, name, sizeof(p->model));
    for (size_t i = 0; i < ps->nmodels; i++) {
        const struct plan_model *m = &ps->catalogue[i];
        if (strcmp(m->name, name) != 0)
            continue;
        if (m->backend[0] != '\0')
            kn_strlcpy(p->model, m->backend, sizeof(p->model));
        if (m->nbackends > 0) {
            struct live_route *r = live_route_for(&p->w->live, &m->backends[0], err, errsize);
            kn_strlcpy(p->url, m->backends[0].url, sizeof(p->url));
            kn_strlcpy(p->model, m->backends[0].model, sizeof(p->model));
            if (r == NULL)
                return NULL;
            u = &r->up;
            pool = &r->pool;
        }
        break;
    }
    size_t plen = strlen(u->path) - strlen("/chat/completions");
    int n = snprintf(p->head, sizeof(p->head),
                     "GET %.*s/models HTTP/1.1\r\nHost: %.*s\r\nAccept: application/json\r\n"
                     "User-Agent: konnect\r\n%s\r\n",
                     (int)plen, u->path, (int)u->url.authority.len, u->url.authority.base,
                     u->auth_header);
    p->buf = h2o_iovec_init(p->head, n > 0 && (size_t)n < sizeof(p->head) ? (size_t)n : 0);
    return pool;
}

/* Keeps what the probe found, and says so on standard error when it changed. */
static void settle(struct probe *p, int reachable, int listed, const char *error)
{
    struct backend_state *b = &p->srv->backend;
    const char *model = p->model;
    char line[sizeof(p->said)];

    pthread_mutex_lock(&b->lock);
    b->checked = 1;
    b->reachable = reachable;
    b->lists_default = listed;
    b->checked_ms = kn_mono_ns() / 1000000;
    kn_strlcpy(b->error, error != NULL ? error : "", sizeof(b->error));
    kn_strlcpy(b->model, model, sizeof(b->model));
    kn_strlcpy(b->url, p->url, sizeof(b->url));
    pthread_mutex_unlock(&b->lock);
    if (!reachable || error != NULL)
        snprintf(line, sizeof(line),
                 "konnect: warning: the model backend %s %s; live keys get 502 "
                 "model_backend_error until it is fixed (test keys never use it)",
                 p->url, error != NULL ? error : "cannot be reached");
    else if (!listed)
        snprintf(line, sizeof(line),
                 "konnect: warning: the model backend %s does not list the default model \"%s\" "
                 "(GET /models); live requests for it will fail until the backend serves it or "
                 "KONNECT_MODEL (or the catalogue's default_model) names one it has",
                 p->url, model);
    else
        snprintf(line, sizeof(line), "konnect: the model backend %s answers and lists \"%s\"",
                 p->url, model);
    if (strcmp(line, p->said) != 0) {
        fprintf(stderr, "%s\n", line);
        kn_strlcpy(p->said, line, sizeof(p->said));
    }
}

static void end_probe(struct probe *p)
{
    if (h2o_timeout_is_linked(&p->deadline))
        h2o_timeout_unlink(&p->deadline);
    p->call = NULL;
    free(p->body);
    p->body = NULL;
    p->len = 0;
    h2o_timeout_link(p->w->loop.ctx.loop, &p->every, &p->tick);
}

/* Does the list (OpenAI's {"data": [{"id": ...}]}, which Ollama, llama.cpp and vLLM answer too)
 * hold the default model? */
static int lists(struct probe *p)
{
    const char *model = p->model;
    json_t *doc = json_loadb(p->body != NULL ? p->body : "", p->len, 0, NULL), *m;
    size_t i;
    int found = 0;

    json_array_foreach(json_object_get(doc, "data"), i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (id != NULL && strcmp(id, model) == 0)
            found = 1;
    }
    json_decref(doc);
    return found;
}

static int on_body(struct upstream_call *call, const char *err, const char *data, size_t len)
{
    struct probe *p = call->data;
    char msg[PROBE_ERROR_MAX];

    /* The last bytes may come with the end (upstream_error_eos). */
    if ((err == NULL || err == upstream_error_eos) && len > 0) {
        if (p->len + len > PROBE_BODY_MAX)
            len = p->len < PROBE_BODY_MAX ? PROBE_BODY_MAX - p->len : 0;
        p->body = kn_realloc(p->body, p->len + len + 1);
        memcpy(p->body + p->len, data, len);
        p->len += len;
    }
    if (err == NULL)
        return 0;
    if (err != upstream_error_eos) {
        settle(p, 1, 0, "broke off its answer to GET /models");
    } else if (p->status >= 200 && p->status < 300) {
        settle(p, 1, lists(p), NULL);
    } else {
        /* The first bytes of what it said, on one line (a key is never in it: it is ours). */
        char said[96];
        size_t n = p->len < sizeof(said) - 1 ? p->len : sizeof(said) - 1;
        for (size_t i = 0; i < n; i++)
            said[i] = p->body[i] >= 0x20 && p->body[i] < 0x7f ? p->body[i] : ' ';
        said[n] = '\0';
        snprintf(msg, sizeof(msg), "answers GET /models with HTTP %d%s%s%s", p->status,
                 p->status == 401 || p->status == 403 ? " (check KONNECT_MODEL_API_KEY)" : "",
                 n ? ": " : "", said);
        settle(p, 1, 0, msg);
    }
    end_probe(p);
    return 1;
}

static upstream_body_cb on_head(struct upstream_call *call, const char *err, int status,
                                h2o_iovec_t content_type)
{
    struct probe *p = call->data;

    (void)content_type;
    if (err != NULL) {
        settle(p, 0, 0,
               err == upstream_error_timeout ? "did not answer GET /models in time"
                                             : "closed the connection without answering");
        end_probe(p);
        return NULL;
    }
    p->status = status;
    return on_body;
}

static upstream_head_cb on_connect(struct upstream_call *call, const char *err, h2o_iovec_t **bufs,
                                   size_t *bufcnt)
{
    struct probe *p = call->data;

    if (err != NULL) {
        settle(p, 0, 0, "cannot be reached (connection refused, or no such host)");
        end_probe(p);
        return NULL;
    }
    *bufs = &p->buf;
    *bufcnt = 1;
    return on_head;
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    struct probe *p = H2O_STRUCT_FROM_MEMBER(struct probe, deadline, entry);

    if (p->call == NULL)
        return;
    upstream_call_cancel(p->call);
    settle(p, 0, 0, "did not answer GET /models within 5 seconds");
    end_probe(p);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    struct probe *p = H2O_STRUCT_FROM_MEMBER(struct probe, tick, entry);

    char err[PROBE_ERROR_MAX];
    struct upstream_pool *pool;

    if (p->call != NULL || atomic_load(&p->srv->stopping))
        return;
    if ((pool = aim(p, err, sizeof(err))) == NULL) {
        settle(p, 0, 0, err);
        h2o_timeout_link(p->w->loop.ctx.loop, &p->every, &p->tick);
        return;
    }
    p->status = 0;
    h2o_timeout_link(p->w->loop.ctx.loop, &p->limit, &p->deadline);
    upstream_call_start(&p->call, p, pool, on_connect);
}

struct probe *probe_start(struct worker *w)
{
    struct probe *p = kn_calloc(1, sizeof(*p));

    p->srv = w->srv;
    p->w = w;
    h2o_timeout_init(w->loop.ctx.loop, &p->every, PROBE_EVERY_MS);
    h2o_timeout_init(w->loop.ctx.loop, &p->limit, PROBE_LIMIT_MS);
    p->tick.cb = on_tick;
    p->deadline.cb = on_deadline;
    /* The first probe as soon as the loop runs. */
    on_tick(&p->tick);
    return p;
}

void probe_stop(struct probe *p)
{
    if (p == NULL)
        return;
    if (p->call != NULL)
        upstream_call_cancel(p->call);
    if (h2o_timeout_is_linked(&p->deadline))
        h2o_timeout_unlink(&p->deadline);
    if (h2o_timeout_is_linked(&p->tick))
        h2o_timeout_unlink(&p->tick);
    h2o_timeout_dispose(p->w->loop.ctx.loop, &p->every);
    h2o_timeout_dispose(p->w->loop.ctx.loop, &p->limit);
    memset(p->head, 0, sizeof(p->head)); /* It holds the backend's key. */
    free(p->body);
    free(p);
}

void probe_state_json(struct server *srv, char *out, size_t size)
{
    struct backend_state *b = &srv->backend;
    char model[PLAN_MODEL_MAX + 1], error[PROBE_ERROR_MAX], url[PLAN_URL_MAX + 1];
    int checked, reachable, listed;
    uint64_t age;

    pthread_mutex_lock(&b->lock);
    checked = b->checked;
    reachable = b->reachable;
    listed = b->lists_default;
    age = kn_mono_ns() / 1000000 - b->checked_ms;
    kn_strlcpy(model, b->model, sizeof(model));
    kn_strlcpy(error, b->error, sizeof(error));
    kn_strlcpy(url, checked ? b->url : srv->backend_url, sizeof(url));
    pthread_mutex_unlock(&b->lock);
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "url", url, "status",
                          !checked           ? "checking"
                          : !reachable       ? "unreachable"
                          : error[0] != '\0' ? "error"
                          : !listed          ? "model_missing"
                                             : "ok",
                          "default_model", checked ? json_string(model) : json_null(),
                          "default_model_listed", checked ? json_boolean(listed) : json_null(),
                          "last_error", error[0] ? json_string(error) : json_null(),
                          "checked_ms_ago", checked ? json_integer((json_int_t)age) : json_null());
    char *s = json_dumps(o, JSON_COMPACT);
    kn_strlcpy(out, s != NULL ? s : "{}", size);
    free(s);
    json_decref(o);
}
