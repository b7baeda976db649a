/* Plans: the plans file, the model catalogue, prices; see plans.h. */
#include "metering/plans.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "core/util.h"

static struct plans *builtin(void)
{
    struct plans *p = kn_calloc(1, sizeof(*p));

    kn_strlcpy(p->currency, "usd", sizeof(p->currency));
    p->count = 1;
    p->plan = kn_calloc(1, sizeof(*p->plan));
    kn_strlcpy(p->plan[0].name, "default", sizeof(p->plan[0].name));
    p->plan[0].requests_per_month = PLAN_UNLIMITED;
    p->plan[0].tokens_per_month = PLAN_UNLIMITED;
    p->plan[0].max_concurrent = PLAN_DEFAULT_CONCURRENCY;
    p->builtin = 1;
    return p;
}

void plans_free(struct plans *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; p->plan != NULL && i < p->count; i++)
        free(p->plan[i].models);
    free(p->plan);
    for (size_t i = 0; p->catalogue != NULL && i < p->nmodels; i++)
        free((struct plan_backend *)p->catalogue[i].backends);
    free(p->catalogue);
    free(p);
}

/* Reads an optional non-negative integer member no larger than max. absent_value is used when the
 * member is missing or null. Returns 0, or -1 with a message. */
static int get_int(json_t *obj, const char *plan, const char *name, long long max,
                   int64_t absent_value, int64_t *out, char *err, size_t errsize)
{
    json_t *v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        *out = absent_value;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max) {
        snprintf(err, errsize, "plan %.64s: %s must be an integer from 0 to %lld", plan, name, max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PLAN_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return 0;
    return 1;
}

static const char *const plan_members[] = {
    "name",
    "requests_per_month",
    "tokens_per_month",
    "price_per_request_micros",
    "price_per_million_input_tokens_micros",
    "price_per_million_output_tokens_micros",
    "requests_per_minute",
    "max_concurrent_requests",
    "description",
    "models",
    "allowed_parameters",
};

static const struct {
    const char *name;
    enum plan_param bit;
} param_names[] = {
    {"n", PLAN_PARAM_N},
    {"service_tier", PLAN_PARAM_SERVICE_TIER},
    {"store", PLAN_PARAM_STORE},
    {"metadata", PLAN_PARAM_METADATA},
    {"web_search_options", PLAN_PARAM_WEB_SEARCH},
    {"audio", PLAN_PARAM_AUDIO},
    {"prediction", PLAN_PARAM_PREDICTION},
    {"models", PLAN_PARAM_MODELS},
    {"provider", PLAN_PARAM_PROVIDER},
};

_Static_assert(PLAN_MODEL_MAX == CHAT_MODEL_MAX, "a plan's model is a model of the API");

/* A model name as the API accepts it (chat_valid_model). */
static int valid_model_name(const char *s)
{
    return chat_valid_model(s, strlen(s));
}

/* Reads the three prices of o into out; a price that is absent stays as it is. */
static int get_prices(json_t *o, const char *what, struct plan_model *out, char *err,
                      size_t errsize)
{
    return get_int(o, what, "price_per_request_micros", PLAN_PRICE_MAX, out->price_per_request,
                   &out->price_per_request, err, errsize) != 0 ||
                   get_int(o, what, "price_per_million_input_tokens_micros", PLAN_PRICE_MAX,
                           out->price_per_million_input, &out->price_per_million_input, err,
                           errsize) != 0 ||
                   get_int(o, what, "price_per_million_output_tokens_micros", PLAN_PRICE_MAX,
                           out->price_per_million_output, &out->price_per_million_output, err,
                           errsize) != 0
               ? -1
               : 0;
}

/* One text field of the seller: UTF-8 (jansson checked it) without control characters but, where
 * lines allows, '\n'; shorter than size. */
static int seller_field(json_t *o, const char *name, int lines, char *out, size_t size, char *err,
                        size_t errsize)
{
    json_t *v = json_object_get(o, name);
    out[0] = '\0';
    if (v == NULL)
        return 0;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s == NULL || strlen(s) >= size) {
        snprintf(err, errsize, "seller: \"%s\" must be a string of fewer than %zu bytes", name,
                 size);
        return -1;
    }
    for (const char *c = s; *c != '\0'; c++)
        if (((unsigned char)*c < 0x20 && !(lines && *c == '\n')) || *c == 0x7f) {
            snprintf(err, errsize, "seller: \"%s\" holds a control character", name);
            return -1;
        }
    kn_strlcpy(out, s, size);
    return 0;
}

/* "seller": {"name", "address"?, "email"?, "tax_id"?}: the operator's details on invoices. */
static int parse_seller(json_t *o, struct plan_seller *out, char *err, size_t errsize)
{
    const char *key;
    json_t *v;

    if (!json_is_object(o)) {
        snprintf(err, errsize,
                 "\"seller\" must be an object: {\"name\", \"address\", \"email\", "
                 "\"tax_id\"}");
        return -1;
    }
    json_object_foreach(o, key, v)
    {
        if (strcmp(key, "name") != 0 && strcmp(key, "address") != 0 && strcmp(key, "email") != 0 &&
            strcmp(key, "tax_id") != 0) {
            snprintf(err, errsize, "seller: unknown member \"%.64s\"", key);
            return -1;
        }
    }
    if (seller_field(o, "name", 0, out->name, sizeof(out->name), err, errsize) != 0 ||
        seller_field(o, "address", 1, out->address, sizeof(out->address), err, errsize) != 0 ||
        seller_field(o, "email", 0, out->email, sizeof(out->email), err, errsize) != 0 ||
        seller_field(o, "tax_id", 0, out->tax_id, sizeof(out->tax_id), err, errsize) != 0)
        return -1;
    if (out->name[0] == '\0') {
        snprintf(err, errsize, "seller: \"name\" is required");
        return -1;
    }
    return 0;
}

/* An environment variable's name: a letter or '_', then letters, digits and '_'; and a key's (it
 * ends in _KEY or _TOKEN, and is no KONNECT_ setting), so that plans, which anyone who may apply
 * them can write, cannot send another of the server's settings (its database URL) as a key. */
static int valid_env_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > PLAN_ENV_MAX || (s[0] >= '0' && s[0] <= '9') ||
        strncmp(s, "KONNECT_", 8) == 0 ||
        !((n > 4 && strcmp(s + n - 4, "_KEY") == 0) || (n > 6 && strcmp(s + n - 6, "_TOKEN") == 0)))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* A backend's base URL: http:// or https://, a host, printable ASCII without spaces, no query,
 * fragment or user name (a key belongs in api_key_env, never in the file). */
static int valid_backend_url(const char *s)
{
    size_t n = strlen(s), skip;

    if (strncmp(s, "http://", 7) == 0)
        skip = 7;
    else if (strncmp(s, "https://", 8) == 0)
        skip = 8;
    else
        return 0;
    if (n <= skip || n > PLAN_URL_MAX || s[skip] == '/')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == '?' || s[i] == '#' || s[i] == '@')
            return 0;
    return 1;
}

/* A model's "backends": [{"url", "api_key_env"?, "model"?}, ...]. */
static int parse_backends(json_t *list, struct plan_model *pm, char *err, size_t errsize)
{
    struct plan_backend *b;
    json_t *e, *v;
    const char *key;
    size_t i;

    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > PLAN_BACKENDS_MAX) {
        snprintf(err, errsize, "model %.64s: \"backends\" must be a list of 1 to %d backends",
                 pm->name, PLAN_BACKENDS_MAX);
        return -1;
    }
    b = kn_calloc(json_array_size(list), sizeof(*b));
    pm->backends = b;
    pm->nbackends = json_array_size(list);
    json_array_foreach(list, i, e)
    {
        json_t *url = json_object_get(e, "url"), *env = json_object_get(e, "api_key_env"),
               *model = json_object_get(e, "model");
        if (!json_is_object(e) || !json_is_string(url) ||
            !valid_backend_url(json_string_value(url))) {
            snprintf(err, errsize,
                     "model %.64s, backend %zu: \"url\" must be an http:// or https:// URL "
                     "such as http://127.0.0.1:8000/v1 (at most %d characters, without a user, "
                     "query or fragment)",
                     pm->name, i + 1, PLAN_URL_MAX);
            return -1;
        }
        json_object_foreach(e, key, v)
        {
            if (strcmp(key, "api_key") == 0) {
                snprintf(err, errsize,
                         "model %.64s, backend %zu: keys do not go in the plans file (it is "
                         "stored and shown); put the key in an environment variable of the "
                         "server and name it with \"api_key_env\"",
                         pm->name, i + 1);
                return -1;
            }
            if (strcmp(key, "url") != 0 && strcmp(key, "api_key_env") != 0 &&
                strcmp(key, "model") != 0) {
                snprintf(err, errsize, "model %.64s, backend %zu: unknown member \"%.64s\"",
                         pm->name, i + 1, key);
                return -1;
            }
        }
        if (env != NULL && (!json_is_string(env) || !valid_env_name(json_string_value(env)))) {
            snprintf(err, errsize,
                     "model %.64s, backend %zu: \"api_key_env\" must name an environment "
                     "variable that holds a key: letters, digits and '_', at most %d, ending in "
                     "_KEY or _TOKEN, and not a KONNECT_ setting",
                     pm->name, i + 1, PLAN_ENV_MAX);
            return -1;
        }
        if (model != NULL &&
            (!json_is_string(model) || !valid_model_name(json_string_value(model)))) {
            snprintf(err, errsize,
                     "model %.64s, backend %zu: \"model\" must be 1 to 128 printable ASCII "
                     "characters without spaces",
                     pm->name, i + 1);
            return -1;
        }
        kn_strlcpy(b[i].url, json_string_value(url), sizeof(b[i].url));
        kn_strlcpy(b[i].api_key_env, env != NULL ? json_string_value(env) : "",
                   sizeof(b[i].api_key_env));
        kn_strlcpy(b[i].model, model != NULL ? json_string_value(model) : pm->backend,
                   sizeof(b[i].model));
    }
    return 0;
}

/* The catalogue: "models": [{"name", "backend_model"?, prices?, "description"?, "backends"?},
 * ...]. */
static int parse_catalogue(json_t *list, struct plans *p, char *err, size_t errsize)
{
    static const char *const members[] = {"name",
                                          "backend_model",
                                          "price_per_request_micros",
                                          "price_per_million_input_tokens_micros",
                                          "price_per_million_output_tokens_micros",
                                          "description",
                                          "backends"};
    json_t *m, *v;
    const char *key;
    size_t i;

    if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > 4096) {
        snprintf(err, errsize, "\"models\" must be a list of 1 to 4096 models");
        return -1;
    }
    p->nmodels = json_array_size(list);
    p->catalogue = kn_calloc(p->nmodels, sizeof(*p->catalogue));
    json_array_foreach(list, i, m)
    {
        struct plan_model *pm = &p->catalogue[i];
        json_t *name = json_object_get(m, "name"), *backend = json_object_get(m, "backend_model");
        if (!json_is_object(m) || !json_is_string(name) ||
            !valid_model_name(json_string_value(name))) {
            snprintf(err, errsize,
                     "every model needs a \"name\" of 1 to 128 printable ASCII characters "
                     "without spaces");
            return -1;
        }
        const char *mn = json_string_value(name);
        json_object_foreach(m, key, v)
        {
            size_t k = 0;
            while (k < sizeof(members) / sizeof(members[0]) && strcmp(members[k], key) != 0)
                k++;
            if (k == sizeof(members) / sizeof(members[0])) {
                snprintf(err, errsize, "model %.64s: unknown member \"%.64s\"", mn, key);
                return -1;
            }
        }
        if (backend != NULL &&
            (!json_is_string(backend) || !valid_model_name(json_string_value(backend)))) {
            snprintf(err, errsize,
                     "model %.64s: \"backend_model\" must be 1 to 128 printable ASCII "
                     "characters without spaces",
                     mn);
            return -1;
        }
        kn_strlcpy(pm->name, mn, sizeof(pm->name));
        kn_strlcpy(pm->backend, backend != NULL ? json_string_value(backend) : mn,
                   sizeof(pm->backend));
        pm->price_per_request = pm->price_per_million_input = pm->price_per_million_output = -1;
        if (get_prices(m, mn, pm, err, errsize) != 0)
            return -1;
        if ((v = json_object_get(m, "backends")) != NULL &&
            parse_backends(v, pm, err, errsize) != 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->catalogue[j].name, mn) == 0) {
                snprintf(err, errsize, "model %.64s is defined twice", mn);
                return -1;
            }
    }
    p->has_catalogue = 1;
    return 0;
}

static const struct plan_model *catalogue_find(const struct plans *p, const char *name, size_t len)
{
    for (size_t i = 0; i < p->nmodels; i++)
        if (strlen(p->catalogue[i].name) == len && memcmp(p->catalogue[i].name, name, len) == 0)
            return &p->catalogue[i];
    return NULL;
}

/* A plan's models, priced: the plan's override, else the model's, else the plan's price. */
static int plan_models(json_t *spec, struct plans *ps, struct plan *pl, char *err, size_t errsize)
{
    size_t n = ps->nmodels, i;
    json_t *v;
    const char *key;

    if (spec != NULL && !ps->has_catalogue) {
        snprintf(err, errsize,
                 "plan %.64s: \"models\" needs the catalogue of models (top-level "
                 "\"models\")",
                 pl->name);
        return -1;
    }
    if (!ps->has_catalogue)
        return 0;
    if (spec != NULL && !json_is_array(spec) && !json_is_object(spec)) {
        snprintf(err, errsize,
                 "plan %.64s: \"models\" must be a list of model names or an object of model "
                 "names to prices",
                 pl->name);
        return -1;
    }
    if (spec != NULL)
        n = json_is_array(spec) ? json_array_size(spec) : json_object_size(spec);
    pl->models = kn_calloc(n > 0 ? n : 1, sizeof(*pl->models));
    for (i = 0; i < n; i++) {
        const struct plan_model *base;
        json_t *over = NULL;
        const char *name;
        if (spec == NULL) {
            base = &ps->catalogue[i];
        } else {
            if (json_is_array(spec)) {
                v = json_array_get(spec, i);
                name = json_is_string(v) ? json_string_value(v) : "";
            } else {
                void *it = json_object_iter(spec);
                for (size_t k = 0; k < i; k++)
                    it = json_object_iter_next(spec, it);
                name = json_object_iter_key(it);
                over = json_object_iter_value(it);
            }
            if ((base = catalogue_find(ps, name, strlen(name))) == NULL) {
                snprintf(err, errsize, "plan %.64s: no model \"%.64s\" in the catalogue", pl->name,
                         name);
                return -1;
            }
        }
        struct plan_model *m = &pl->models[pl->nmodels];
        for (size_t k = 0; k < pl->nmodels; k++)
            if (strcmp(pl->models[k].name, base->name) == 0) {
                snprintf(err, errsize, "plan %.64s: model %.64s is listed twice", pl->name,
                         base->name);
                return -1;
            }
        *m = *base;
        if (m->price_per_request < 0)
            m->price_per_request = pl->price_per_request;
        if (m->price_per_million_input < 0)
            m->price_per_million_input = pl->price_per_million_input;
        if (m->price_per_million_output < 0)
            m->price_per_million_output = pl->price_per_million_output;
        if (over != NULL) {
            char what[PLAN_NAME_MAX + PLAN_MODEL_MAX + 16];
            snprintf(what, sizeof(what), "%s, model %s", pl->name, base->name);
            if (!json_is_object(over)) {
                snprintf(err, errsize, "plan %.150s: the prices must be an object", what);
                return -1;
            }
            json_object_foreach(over, key, v)
            {
                if (strncmp(key, "price_per_", 10) != 0) {
                    snprintf(err, errsize, "plan %.150s: unknown member \"%.64s\"", what, key);
                    return -1;
                }
            }
            if (get_prices(over, what, m, err, errsize) != 0)
                return -1;
        }
        pl->nmodels++;
    }
    return 0;
}

static int allowed_params(json_t *list, const char *plan, uint32_t *out, char *err, size_t errsize)
{
    json_t *v;
    size_t i, k;

    *out = 0;
    if (list == NULL || json_is_null(list))
        return 0;
    if (!json_is_array(list))
        goto bad;
    json_array_foreach(list, i, v)
    {
        for (k = 0; k < sizeof(param_names) / sizeof(param_names[0]); k++)
            if (json_is_string(v) && strcmp(json_string_value(v), param_names[k].name) == 0)
                break;
        if (k == sizeof(param_names) / sizeof(param_names[0]))
            goto bad;
        *out |= param_names[k].bit;
    }
    return 0;
bad:
    snprintf(err, errsize,
             "plan %.64s: \"allowed_parameters\" must be a list of n, service_tier, store, "
             "metadata, web_search_options, audio, prediction, models and provider",
             plan);
    return -1;
}

static int parse_plan(json_t *o, struct plan *out, char *err, size_t errsize)
{
    json_t *name = json_object_get(o, "name"), *v;
    const char *key;
    int64_t n;

    if (!json_is_object(o) || !json_is_string(name) || !valid_name(json_string_value(name))) {
        snprintf(err, errsize,
                 "every plan needs a \"name\" of 1 to 63 letters, digits, '-', '_' or '.'");
        return -1;
    }
    const char *pn = json_string_value(name);
    json_object_foreach(o, key, v)
    {
        size_t i = 0;
        while (i < sizeof(plan_members) / sizeof(plan_members[0]) &&
               strcmp(plan_members[i], key) != 0)
            i++;
        if (i == sizeof(plan_members) / sizeof(plan_members[0])) {
            snprintf(err, errsize, "plan %.64s: unknown member \"%.64s\"", pn, key);
            return -1;
        }
    }
    memset(out, 0, sizeof(*out));
    kn_strlcpy(out->name, pn, sizeof(out->name));
    if (get_int(o, pn, "requests_per_month", INT64_MAX / 2, PLAN_UNLIMITED,
                &out->requests_per_month, err, errsize) != 0 ||
        get_int(o, pn, "tokens_per_month", INT64_MAX / 2, PLAN_UNLIMITED, &out->tokens_per_month,
                err, errsize) != 0 ||
        get_int(o, pn, "price_per_request_micros", PLAN_PRICE_MAX, 0, &out->price_per_request, err,
                errsize) != 0 ||
        get_int(o, pn, "price_per_million_input_tokens_micros", PLAN_PRICE_MAX, 0,
                &out->price_per_million_input, err, errsize) != 0 ||
        get_int(o, pn, "price_per_million_output_tokens_micros", PLAN_PRICE_MAX, 0,
                &out->price_per_million_output, err, errsize) != 0)
        return -1;
    if (get_int(o, pn, "requests_per_minute", 1000000000, 0, &n, err, errsize) != 0)
        return -1;
    out->requests_per_minute = (uint32_t)n;
    if (get_int(o, pn, "max_concurrent_requests", 100000, PLAN_DEFAULT_CONCURRENCY, &n, err,
                errsize) != 0)
        return -1;
    if (n == 0) {
        snprintf(err, errsize, "plan %.64s: max_concurrent_requests must be at least 1", pn);
        return -1;
    }
    out->max_concurrent = (uint32_t)n;
    return allowed_params(json_object_get(o, "allowed_parameters"), pn, &out->allowed_params, err,
                          errsize);
}

struct plans *plans_parse(const char *text, size_t len, char *err, size_t errsize)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr), *list, *v;
    struct plans *p = NULL;
    const char *key, *def = NULL;

    if (root == NULL) {
        snprintf(err, errsize, "not valid JSON at line %d, column %d: %.120s", jerr.line,
                 jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        snprintf(err, errsize, "the plans file must hold a JSON object");
        goto fail;
    }
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "currency") != 0 && strcmp(key, "default_plan") != 0 &&
            strcmp(key, "plans") != 0 && strcmp(key, "models") != 0 &&
            strcmp(key, "default_model") != 0 && strcmp(key, "seller") != 0) {
            snprintf(err, errsize, "unknown member \"%.64s\"", key);
            goto fail;
        }
    }
    list = json_object_get(root, "plans");
    if (!json_is_array(list) || json_array_size(list) == 0) {
        snprintf(err, errsize, "\"plans\" must be a non-empty array of plans");
        goto fail;
    }
    p = kn_calloc(1, sizeof(*p));
    kn_strlcpy(p->currency, "usd", sizeof(p->currency));
    if ((v = json_object_get(root, "seller")) != NULL &&
        parse_seller(v, &p->seller, err, errsize) != 0)
        goto fail;
    if ((v = json_object_get(root, "currency")) != NULL) {
        const char *c = json_is_string(v) ? json_string_value(v) : "";
        if (strlen(c) != 3 || !(c[0] >= 'a' && c[0] <= 'z') || !(c[1] >= 'a' && c[1] <= 'z') ||
            !(c[2] >= 'a' && c[2] <= 'z')) {
            snprintf(err, errsize, "\"currency\" must be a lower-case ISO 4217 code such as usd");
            goto fail;
        }
        kn_strlcpy(p->currency, c, sizeof(p->currency));
    }
    if ((v = json_object_get(root, "models")) != NULL && parse_catalogue(v, p, err, errsize) != 0)
        goto fail;
    if ((v = json_object_get(root, "default_model")) != NULL) {
        const char *dm = json_is_string(v) ? json_string_value(v) : "";
        if (!valid_model_name(dm) ||
            (p->has_catalogue && catalogue_find(p, dm, strlen(dm)) == NULL)) {
            snprintf(err, errsize, "\"default_model\" must name a model%s",
                     p->has_catalogue ? " of the catalogue" : "");
            goto fail;
        }
        kn_strlcpy(p->default_model, dm, sizeof(p->default_model));
    }
    p->count = json_array_size(list);
    p->plan = kn_calloc(p->count, sizeof(*p->plan));
    for (size_t i = 0; i < p->count; i++) {
        if (parse_plan(json_array_get(list, i), &p->plan[i], err, errsize) != 0 ||
            plan_models(json_object_get(json_array_get(list, i), "models"), p, &p->plan[i], err,
                        errsize) != 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->plan[j].name, p->plan[i].name) == 0) {
                snprintf(err, errsize, "plan %s is defined twice", p->plan[i].name);
                goto fail;
            }
    }
    if ((v = json_object_get(root, "default_plan")) != NULL) {
        def = json_is_string(v) ? json_string_value(v) : "";
        size_t i = 0;
        while (i < p->count && strcmp(p->plan[i].name, def) != 0)
            i++;
        if (i == p->count) {
            snprintf(err, errsize, "\"default_plan\" names no plan in \"plans\"");
            goto fail;
        }
        p->default_index = i;
    }
    json_decref(root);
    return p;
fail:
    json_decref(root);
    plans_free(p);
    return NULL;
}

struct plans *plans_load(const char *path, int required, char *err, size_t errsize)
{
    FILE *f = fopen(path, "rb");
    char *text;
    long len;
    struct plans *p;
    char why[400];

    if (f == NULL) {
        if (errno == ENOENT && !required)
            return builtin();
        snprintf(err, errsize, "cannot read plans file %.300s: %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || len > 4 * 1024 * 1024 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        snprintf(err, errsize, "plans file %.300s is unreadable or larger than 4 MiB", path);
        return NULL;
    }
    text = kn_malloc((size_t)len + 1);
    if (fread(text, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(text);
        snprintf(err, errsize, "cannot read plans file %.300s", path);
        return NULL;
    }
    fclose(f);
    p = plans_parse(text, (size_t)len, why, sizeof(why));
    free(text);
    if (p == NULL)
        snprintf(err, errsize, "plans file %.300s: %s", path, why);
    return p;
}

const struct plan *plans_find(const struct plans *p, const char *name)
{
    if (name == NULL || name[0] == '\0')
        return &p->plan[p->default_index];
    for (size_t i = 0; i < p->count; i++)
        if (strcmp(p->plan[i].name, name) == 0)
            return &p->plan[i];
    return NULL;
}

int64_t plan_price(const struct plan *plan, uint32_t input_tokens, uint32_t output_tokens)
{
    /* Up to 2^32 tokens times 10^12 overflows 64 bits; the product is taken in 128. */
    unsigned __int128 t =
        (unsigned __int128)input_tokens * (uint64_t)plan->price_per_million_input +
        (unsigned __int128)output_tokens * (uint64_t)plan->price_per_million_output;
    return plan->price_per_request + (int64_t)((t + 500000) / 1000000);
}

int64_t plan_model_price(const struct plan_model *m, uint32_t input_tokens, uint32_t output_tokens)
{
    unsigned __int128 t = (unsigned __int128)input_tokens * (uint64_t)m->price_per_million_input +
                          (unsigned __int128)output_tokens * (uint64_t)m->price_per_million_output;
    return m->price_per_request + (int64_t)((t + 500000) / 1000000);
}

int plans_model(const struct plans *ps, const struct plan *plan, const char *name, size_t len,
                struct plan_model *out)
{
    if (!ps->has_catalogue) {
        if (len > PLAN_MODEL_MAX)
            return -1;
        memcpy(out->name, name, len);
        out->name[len] = '\0';
        memcpy(out->backend, out->name, len + 1);
        out->backends = NULL;
        out->nbackends = 0;
        out->price_per_request = plan->price_per_request;
        out->price_per_million_input = plan->price_per_million_input;
        out->price_per_million_output = plan->price_per_million_output;
        return 0;
    }
    for (size_t i = 0; i < plan->nmodels; i++)
        if (strlen(plan->models[i].name) == len && memcmp(plan->models[i].name, name, len) == 0) {
            *out = plan->models[i];
            return 0;
        }
    return -1;
}
