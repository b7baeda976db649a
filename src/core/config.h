/* Settings shared by every command, read from KONNECT_* environment variables and overridden by
 * command-line flags. Each field names its variable; README.md lists them all. */
#ifndef KN_CORE_CONFIG_H
#define KN_CORE_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The smallest body limit that still admits the largest valid chat request. */
#define CHAT_BODY_MIN 65536

struct kn_config {
    char listen_host[256];       /* KONNECT_LISTEN host part, default 127.0.0.1. */
    int listen_port;             /* KONNECT_LISTEN port part, default 8080 (0 = any free). */
    char metrics_host[256];      /* KONNECT_METRICS_LISTEN host part, "" when unset. */
    int metrics_port;            /* KONNECT_METRICS_LISTEN port part (0 = any free). */
    char metrics_token[256];     /* KONNECT_METRICS_TOKEN: /metrics on the main listener, or "". */
    char tls_cert[PATH_MAX];     /* KONNECT_TLS_CERT: PEM certificate chain for HTTPS, or "". */
    char tls_key[PATH_MAX];      /* KONNECT_TLS_KEY: its PEM private key (both or neither). */
    char data_dir[PATH_MAX];     /* KONNECT_DATA_DIR, default ./var. */
    char database[PATH_MAX];     /* KONNECT_DATABASE, default <data dir>/konnect.db. */
    char secret_file[PATH_MAX];  /* KONNECT_SECRET_FILE, default <data dir>/secret. */
    char socket_path[PATH_MAX];  /* <data dir>/konnect.sock, the control socket. */
    int threads;                 /* KONNECT_THREADS, default: number of cores. */
    size_t max_body_bytes;       /* KONNECT_MAX_BODY_BYTES, default 1 MiB. */
    size_t max_header_bytes;     /* KONNECT_MAX_HEADER_BYTES, default 16 KiB. */
    unsigned request_timeout_ms; /* KONNECT_REQUEST_TIMEOUT_MS, default 10000. */
    unsigned max_connections;    /* KONNECT_MAX_CONNECTIONS, default 4096. */
    unsigned max_connections_per_ip; /* KONNECT_MAX_CONNECTIONS_PER_IP, default 256, 0 = none. */
    unsigned shutdown_timeout_ms;    /* KONNECT_SHUTDOWN_TIMEOUT_MS, default 5000. */
    uint32_t test_rpm;               /* KONNECT_TEST_KEY_RPM, default 60, 0 = unlimited. */
    uint32_t test_rpd;               /* KONNECT_TEST_KEY_RPD, default 1000, 0 = unlimited. */
    char access_log[PATH_MAX];       /* KONNECT_ACCESS_LOG: "-" (stderr, default), "off", a path. */
    char default_model[129];         /* KONNECT_MODEL, default "konnect-default". */
    char signup[8];                  /* KONNECT_SIGNUP: "open" (default), "invite" or "closed". */
    unsigned session_idle_s;         /* KONNECT_SESSION_IDLE, default 86400 (24 h). */
    unsigned session_max_s;          /* KONNECT_SESSION_MAX, default 604800 (7 days). */
    int trust_proxy; /* KONNECT_TRUST_PROXY (deprecated): 1 to believe any peer's X-Forwarded-Proto.
                      */
    char trusted_proxies[2048]; /* KONNECT_TRUSTED_PROXIES: CIDR list of proxies, or "" (none). */
    char model_url[1024];       /* KONNECT_MODEL_URL, default http://127.0.0.1:11434/v1. */
    char model_api_key[512];    /* KONNECT_MODEL_API_KEY, default none. A secret: never logged. */
    unsigned model_connect_timeout_ms;    /* KONNECT_MODEL_CONNECT_TIMEOUT_MS, default 5000. */
    unsigned model_first_byte_timeout_ms; /* KONNECT_MODEL_FIRST_BYTE_TIMEOUT_MS, default 60000. */
    unsigned model_timeout_ms;            /* KONNECT_MODEL_TIMEOUT_MS, default 300000. */
    size_t model_max_response_bytes;      /* KONNECT_MODEL_MAX_RESPONSE_BYTES, default 8 MiB. */
    char plans_file[PATH_MAX];            /* KONNECT_PLANS, default <data dir>/plans.json. */
    int plans_file_set;        /* 1 when KONNECT_PLANS names the file (it must then exist). */
    int ledger_sync_full;      /* KONNECT_LEDGER_SYNC: "normal" (default, 0) or "full" (1). */
    char public_url[512];      /* KONNECT_PUBLIC_URL: "https://dash.example.com", or "" (unset). */
    char node_id[64];          /* KONNECT_NODE_ID, default the host name and a random suffix. */
    char spool_path[PATH_MAX]; /* KONNECT_LEDGER_SPOOL, default <data dir>/ledger.spool; ""
                                  when "off". */
    uint64_t spool_max_bytes;  /* KONNECT_LEDGER_SPOOL_MAX_BYTES. */
    char redis_url[512];       /* KONNECT_REDIS_URL, "" for none (limits counted locally). */
    unsigned redis_timeout_ms; /* KONNECT_REDIS_TIMEOUT_MS. */
    const char *public_host;   /* The authority part of public_url ("dash.example.com"). */
    int public_https;          /* 1 when public_url is https://. */
    uint32_t max_keys_per_account;      /* KONNECT_MAX_KEYS_PER_ACCOUNT, default 100, 0 = no cap. */
    uint32_t signups_per_hour;          /* KONNECT_SIGNUPS_PER_HOUR, default 100, 0 = no limit. */
    uint32_t signups_per_hour_ip;       /* KONNECT_SIGNUPS_PER_HOUR_PER_IP, default 5, 0 = none. */
    uint32_t dashboard_queue;           /* KONNECT_DASHBOARD_QUEUE: jobs per lane, default 64. */
    uint32_t audit_retention_days;      /* KONNECT_AUDIT_RETENTION_DAYS, default 400, 0 = keep. */
    uint32_t change_log_retention_days; /* KONNECT_CHANGE_LOG_RETENTION_DAYS, default 7. */
};

/* Writes the dashboard's base URL ("http://127.0.0.1:8080", no trailing slash) into buf: the
 * public URL when one is set, else the listen address (a wildcard address as 127.0.0.1). */
void config_base_url(const struct kn_config *c, char *buf, size_t size);

/* Fills c with defaults, then applies the environment. Returns 0, or -1 with a message in err
 * naming the variable that holds a bad value. */
int config_load(struct kn_config *c, char *err, size_t errsize);

/* Prints every numeric setting, one to a few lines each under 80 columns: its variable, what it
 * sets, its default and the values it takes ("konnect serve --help"). */
void config_print_settings(FILE *out);

/* Sets the data directory and the paths derived from it (unless their variables are set). */
void config_set_data_dir(struct kn_config *c, const char *dir);

/* Parses "host:port", "[v6]:port", ":port" or "port" into the listen fields. Returns 0 or -1. */
int config_set_listen(struct kn_config *c, const char *value);

/* Creates the data directory (mode 0700) when it is missing. Returns 0, or -1 with a message. */
int config_ensure_data_dir(const struct kn_config *c, char *err, size_t errsize);

/* Warns on stderr about each of the data directory, the database and its log, and the plans
 * file that exists and that users other than its owner may read or write (every password hash
 * and key hash is in the database), saying how to fix it. */
void config_warn_public(const struct kn_config *c);

#endif
