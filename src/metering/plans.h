/* Plans: what live usage costs and how much of it an account may have. The operator defines them
 * in a JSON file (KONNECT_PLANS, by default <data dir>/plans.json; see README.md):
 *
 *   {"currency": "usd", "default_plan": "free", "default_model": "small",
 *    "models": [{"name": "small", "backend_model": "llama3.2:1b",
 *                "price_per_million_output_tokens_micros": 400000}, ...],
 *    "plans": [{"name": "free", "requests_per_month": 1000, "tokens_per_month": 200000,
 *               "price_per_request_micros": 0, "price_per_million_input_tokens_micros": 0,
 *               "price_per_million_output_tokens_micros": 0, "requests_per_minute": 60,
 *               "max_concurrent_requests": 4, "models": ["small"],
 *               "allowed_parameters": ["n"]}, ...]}
 *
 * Money is integer micro-units of the currency (1 USD = 1,000,000), never floating point. A quota
 * that is absent or null is unlimited. Without a file, every account is on one built-in plan,
 * "default": unlimited and free.
 *
 * The model catalogue ("models") is optional. Without it every model name reaches the backend at
 * the plan's prices. With it, only its models exist: each plan may use all of them or those it
 * lists ("models": a list of names, or an object of names to price overrides), each model may set
 * its own prices (a plan's override first, then the model's, then the plan's, field by field) and
 * a "backend_model", the backend's name for it (the public "name" is all clients see).
 *
 * A model may name its own backends, tried in order ("backends": [{"url": "http://gpu1:8000/v1",
 * "api_key_env": "GPU1_KEY", "model": "meta-llama/Llama-3.1-8B-Instruct"}, ...]): the next one
 * when a backend cannot be reached, answers 5xx or 429, or times out before any byte of the
 * answer went to the client. The key is never in the file (which `konnect plans apply` stores):
 * "api_key_env" names the environment variable of the server that holds it. "model" is that
 * backend's name for the model ("backend_model" by default). Without "backends", the model goes to
 * KONNECT_MODEL_URL. */
#ifndef KN_METERING_PLANS_H
#define KN_METERING_PLANS_H

#include <stddef.h>
#include <stdint.h>

#define PLAN_NAME_MAX 63
#define PLAN_UNLIMITED (-1)
#define PLAN_DEFAULT_CONCURRENCY 16
/* The largest price accepted, per request or per million tokens: 1,000,000 currency units. */
#define PLAN_PRICE_MAX 1000000000000LL

/* The request parameters that change what an answer costs the operator or touch its data:
 * refused (400 unsupported_parameter) unless the plan's "allowed_parameters" names them. */
enum plan_param {
    PLAN_PARAM_N = 1 << 0,            /* "n" above 1: several answers for one request */
    PLAN_PARAM_SERVICE_TIER = 1 << 1, /* "service_tier": a priced tier */
    PLAN_PARAM_STORE = 1 << 2,        /* "store": true, the provider keeps the conversation */
    PLAN_PARAM_METADATA = 1 << 3,     /* "metadata", stored with it */
    PLAN_PARAM_WEB_SEARCH = 1 << 4,   /* "web_search_options" */
    PLAN_PARAM_AUDIO = 1 << 5,        /* "audio", or "modalities" with "audio" */
    PLAN_PARAM_PREDICTION = 1 << 6,   /* "prediction": predicted output, billed in full */
    PLAN_PARAM_MODELS = 1 << 7,       /* "models" (and "route"): other models to fall back on */
    PLAN_PARAM_PROVIDER = 1 << 8,     /* "provider": which providers serve the model */
};

#define PLAN_MODEL_MAX 128
#define PLAN_BACKENDS_MAX 8 /* Backends of one model. */
#define PLAN_URL_MAX 512
#define PLAN_ENV_MAX 64

/* One of a model's backends. */
struct plan_backend {
    char url[PLAN_URL_MAX + 1];         /* http:// or https://, the API's base (".../v1"). */
    char api_key_env[PLAN_ENV_MAX + 1]; /* The variable that holds its key; "" for none. */
    char model[PLAN_MODEL_MAX + 1];     /* Its name for the model. */
};

/* A model as one plan may use it: its public and backend names and its prices for that plan. */
struct plan_model {
    char name[PLAN_MODEL_MAX + 1];    /* What clients ask for and see, and what is billed. */
    char backend[PLAN_MODEL_MAX + 1]; /* What the backend is asked for. */
    int64_t price_per_request;        /* Micro-units. */
    int64_t price_per_million_input;
    int64_t price_per_million_output;
    /* Its own backends in order, or none (KONNECT_MODEL_URL). They belong to the plans, which
     * the server keeps until it exits (limits/accounts.h), so a copy may point at them. */
    const struct plan_backend *backends;
    size_t nbackends;
};

struct plan {
    char name[PLAN_NAME_MAX + 1];
    int64_t requests_per_month;       /* PLAN_UNLIMITED or a limit. */
    int64_t tokens_per_month;         /* Input plus output tokens; PLAN_UNLIMITED or a limit. */
    int64_t price_per_request;        /* Micro-units. */
    int64_t price_per_million_input;  /* Micro-units per 1,000,000 input tokens. */
    int64_t price_per_million_output; /* Micro-units per 1,000,000 output tokens. */
    uint32_t requests_per_minute;     /* Per account, live keys together; 0 = unlimited. */
    uint32_t max_concurrent;          /* Live requests in flight per account, at least 1. */
    uint32_t allowed_params;          /* enum plan_param bits the plan allows. */
    struct plan_model *models;        /* With a catalogue: the models it may use, priced. */
    size_t nmodels;
};

/* Who sells: the operator's details that invoices carry ("seller" in the plans file). */
struct plan_seller {
    char name[128];    /* "" when the file names no seller. */
    char address[512]; /* Lines separated by '\n'. */
    char email[256];
    char tax_id[64]; /* A VAT or tax number. */
};

struct plans {
    char currency[8]; /* Lower-case ISO 4217 code, "usd" by default. */
    struct plan_seller seller;
    size_t count;
    struct plan *plan;
    size_t default_index;
    int builtin;       /* 1 when no file was found: the built-in plan. */
    int64_t version;   /* The store's plans version (`konnect plans apply`), 0 for a file's. */
    int has_catalogue; /* 1 when the file has "models". */
    char default_model[PLAN_MODEL_MAX + 1]; /* The file's "default_model", or "". */
    size_t nmodels;
    struct plan_model *catalogue; /* The file's models; a price not set is -1. */
};

/* Reads the plans file at path. When the file does not exist and `required` is 0, returns the
 * built-in plan; otherwise a missing or invalid file is an error. Returns NULL with a message in
 * err on error. */
struct plans *plans_load(const char *path, int required, char *err, size_t errsize);

/* Parses plans from JSON text; for tests and for plans_load. */
struct plans *plans_parse(const char *text, size_t len, char *err, size_t errsize);

void plans_free(struct plans *p);

/* The plan called name, the default plan for "" or NULL, or NULL when there is no such plan. */
const struct plan *plans_find(const struct plans *p, const char *name);

/* The price of one request in micro-units: the per-request price plus the token prices, rounded
 * to the nearest micro-unit (halves up). */
int64_t plan_price(const struct plan *plan, uint32_t input_tokens, uint32_t output_tokens);

/* The same at a model's prices for its plan. */
int64_t plan_model_price(const struct plan_model *m, uint32_t input_tokens, uint32_t output_tokens);

/* Finds the model `name` (len bytes) as plan may use it and writes it to *out. Without a
 * catalogue, every name is a model of that name at the plan's prices. Returns 0, or -1 when the
 * catalogue has no such model or the plan may not use it. */
int plans_model(const struct plans *ps, const struct plan *plan, const char *name, size_t len,
                struct plan_model *out);

#endif
