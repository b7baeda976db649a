/* Settings: reading KONNECT_* variables, their table of numbers, --help's list of them; see
 * config.h. */
#include "core/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base62.h"
#include "core/ipnet.h"
#include "core/util.h"

void config_set_data_dir(struct kn_config *c, const char *dir)
{
    const char *v;

    kn_strlcpy(c->data_dir, dir, sizeof(c->data_dir));
    if ((v = getenv("KONNECT_DATABASE")) != NULL && *v != '\0')
        kn_strlcpy(c->database, v, sizeof(c->database));
    else
        snprintf(c->database, sizeof(c->database), "%.*s/konnect.db", PATH_MAX - 16, dir);
    if ((v = getenv("KONNECT_SECRET_FILE")) != NULL && *v != '\0')
        kn_strlcpy(c->secret_file, v, sizeof(c->secret_file));
    else
        snprintf(c->secret_file, sizeof(c->secret_file), "%.*s/secret", PATH_MAX - 16, dir);
    snprintf(c->socket_path, sizeof(c->socket_path), "%.*s/konnect.sock", PATH_MAX - 16, dir);
    if ((v = getenv("KONNECT_LEDGER_SPOOL")) != NULL && *v != '\0')
        kn_strlcpy(c->spool_path, strcmp(v, "off") == 0 ? "" : v, sizeof(c->spool_path));
    else
        snprintf(c->spool_path, sizeof(c->spool_path), "%.*s/ledger.spool", PATH_MAX - 16, dir);
    c->plans_file_set = (v = getenv("KONNECT_PLANS")) != NULL && *v != '\0';
    if (c->plans_file_set)
        kn_strlcpy(c->plans_file, v, sizeof(c->plans_file));
    else
        snprintf(c->plans_file, sizeof(c->plans_file), "%.*s/plans.json", PATH_MAX - 16, dir);
}

#define HOST_MAX 256

/* Parses "host:port", "[v6]:port", ":port" or "port". Returns 0 or -1. */
static int parse_hostport(const char *value, char host[HOST_MAX], int *port_out)
{
    const char *colon, *port;
    long long p;

    if (value[0] == '[') {
        const char *end = strchr(value, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - value - 1) >= HOST_MAX)
            return -1;
        memcpy(host, value + 1, (size_t)(end - value - 1));
        host[end - value - 1] = '\0';
        port = end + 2;
    } else if ((colon = strrchr(value, ':')) != NULL) {
        if ((size_t)(colon - value) >= HOST_MAX)
            return -1;
        memcpy(host, value, (size_t)(colon - value));
        host[colon - value] = '\0';
        if (host[0] == '\0')
            kn_strlcpy(host, "0.0.0.0", HOST_MAX);
        port = colon + 1;
    } else {
        kn_strlcpy(host, "127.0.0.1", HOST_MAX);
        port = value;
    }
    if (kn_parse_int(port, 0, 65535, &p) != 0)
        return -1;
    *port_out = (int)p;
    return 0;
}

int config_set_listen(struct kn_config *c, const char *value)
{
    char host[256];
    int port;

    if (parse_hostport(value, host, &port) != 0)
        return -1;
    kn_strlcpy(c->listen_host, host, sizeof(c->listen_host));
    c->listen_port = port;
    return 0;
}

/* Reads the first line of a file that holds a secret (KONNECT_MODEL_API_KEY_FILE) into out,
 * warning when others may read it. Returns 0, or -1 with a message. */
static int read_secret_file(const char *path, char *out, size_t size, char *err, size_t errsize)
{
    FILE *f = fopen(path, "r");
    struct stat st;

    if (f == NULL) {
        snprintf(err, errsize, "KONNECT_MODEL_API_KEY_FILE: cannot read %s: %s", path,
                 strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0)
        fprintf(stderr,
                "konnect: warning: KONNECT_MODEL_API_KEY_FILE %s can be read by other users; run: "
                "chmod 600 %s\n",
                path, path);
    if (fgets(out, (int)size, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (out[0] == '\0') {
        snprintf(err, errsize, "KONNECT_MODEL_API_KEY_FILE: %s is empty", path);
        return -1;
    }
    return 0;
}

/* KONNECT_PUBLIC_URL: an http(s) origin, "scheme://host[:port]", with nothing after it but an
 * optional "/". */
static int parse_public_url(struct kn_config *c, const char *v, char *err, size_t errsize)
{
    size_t len = strlen(v);
    const char *host;

    if (strncmp(v, "https://", 8) == 0)
        host = v + 8;
    else if (strncmp(v, "http://", 7) == 0)
        host = v + 7;
    else
        goto bad;
    if (len > 0 && v[len - 1] == '/')
        len--;
    if (len >= sizeof(c->public_url) || (size_t)(host - v) >= len)
        goto bad;
    for (const char *p = host; p < v + len; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' ||
              *p == ':' || *p == '[' || *p == ']'))
            goto bad;
    memcpy(c->public_url, v, len);
    c->public_url[len] = '\0';
    c->public_https = strncmp(v, "https://", 8) == 0;
    c->public_host = c->public_url + (c->public_https ? 8 : 7);
    return 0;
bad:
    snprintf(err, errsize,
             "KONNECT_PUBLIC_URL must be the dashboard's origin in lower case, such as "
             "https://dash.example.com or http://127.0.0.1:8080 (no path)");
    return -1;
}

void config_base_url(const struct kn_config *c, char *buf, size_t size)
{
    const char *host = c->listen_host;

    if (c->public_url[0] != '\0') {
        snprintf(buf, size, "%s", c->public_url);
        return;
    }
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    const char *scheme = c->tls_cert[0] != '\0' ? "https" : "http";
    if (strchr(host, ':') != NULL)
        snprintf(buf, size, "%s://[%s]:%d", scheme, host, c->listen_port);
    else
        snprintf(buf, size, "%s://%s:%d", scheme, host, c->listen_port);
}

/* Every numeric setting: its variable, where it goes, its default, the values it takes and what it
 * is for ("konnect serve --help" prints this table; README.md's settings table must agree). */
struct number_setting {
    const char *env;
    size_t offset, size; /* Of its member of struct kn_config (an unsigned or a size_t). */
    long long def, min, max;
    const char *help; /* A short phrase, without parentheses, for --help. */
};

#define NUMBER(env, member, def, min, max, help)                                                   \
    {                                                                                              \
        env, offsetof(struct kn_config, member), sizeof(((struct kn_config *)0)->member), def,     \
            min, max, help                                                                         \
    }

static const struct number_setting numbers[] = {
    /* 0 is "one per core" (config_load). */
    NUMBER("KONNECT_THREADS", threads, 0, 0, 256, "event-loop threads, 0 = one per core"),
    NUMBER("KONNECT_MAX_BODY_BYTES", max_body_bytes, 1024 * 1024, CHAT_BODY_MIN, 64LL * 1024 * 1024,
           "request body limit, 413 above it"),
    NUMBER("KONNECT_MAX_HEADER_BYTES", max_header_bytes, 16 * 1024, 1024, 256 * 1024,
           "request header limit, 431 above it"),
    NUMBER("KONNECT_REQUEST_TIMEOUT_MS", request_timeout_ms, 10000, 100, 3600 * 1000,
           "time to send a request's headers and body, and idle keep-alive time"),
    NUMBER("KONNECT_MAX_CONNECTIONS", max_connections, 4096, 1, 1000000,
           "open connections, 503 above it"),
    NUMBER("KONNECT_MAX_CONNECTIONS_PER_IP", max_connections_per_ip, 256, 0, 1000000,
           "open connections from one address, 0 = no cap"),
    NUMBER("KONNECT_SHUTDOWN_TIMEOUT_MS", shutdown_timeout_ms, 5000, 0, 600 * 1000,
           "drain time on SIGTERM/SIGINT"),
    NUMBER("KONNECT_TEST_KEY_RPM", test_rpm, 60, 0, 1000000000,
           "requests per minute per test key, 0 = no limit"),
    NUMBER("KONNECT_TEST_KEY_RPD", test_rpd, 1000, 0, 1000000000,
           "requests per UTC day per test key, 0 = no limit"),
    NUMBER("KONNECT_SESSION_IDLE", session_idle_s, 86400, 60, 365 * 86400,
           "seconds a dashboard session survives unused"),
    NUMBER("KONNECT_SESSION_MAX", session_max_s, 7 * 86400, 60, 365 * 86400,
           "seconds a dashboard session lasts at most"),
    NUMBER("KONNECT_TRUST_PROXY", trust_proxy, 0, 0, 1,
           "deprecated: 1 believes any client's X-Forwarded-Proto; use KONNECT_TRUSTED_PROXIES"),
    NUMBER("KONNECT_MODEL_CONNECT_TIMEOUT_MS", model_connect_timeout_ms, 5000, 10, 3600 * 1000,
           "time to connect to the backend, 504 past it"),
    NUMBER("KONNECT_MODEL_FIRST_BYTE_TIMEOUT_MS", model_first_byte_timeout_ms, 60000, 10,
           3600 * 1000, "time to the backend's first byte, and longest silence in a stream"),
    NUMBER("KONNECT_MODEL_TIMEOUT_MS", model_timeout_ms, 300000, 10, 24 * 3600 * 1000,
           "time for the backend's whole answer, 504 past it"),
    NUMBER("KONNECT_MODEL_MAX_RESPONSE_BYTES", model_max_response_bytes, 8 * 1024 * 1024, 4096,
           1024LL * 1024 * 1024, "largest backend answer not streamed, 502 above it"),
    NUMBER("KONNECT_MAX_KEYS_PER_ACCOUNT", max_keys_per_account, 100, 0, 1000000,
           "working keys an account may make in the dashboard, 0 = no cap"),
    NUMBER("KONNECT_SIGNUPS_PER_HOUR", signups_per_hour, 100, 0, 1000000,
           "dashboard sign-ups per hour on the whole server, 0 = no limit"),
    NUMBER("KONNECT_SIGNUPS_PER_HOUR_PER_IP", signups_per_hour_ip, 5, 0, 1000000,
           "dashboard sign-ups per hour from one address, 0 = no limit"),
    NUMBER("KONNECT_DASHBOARD_QUEUE", dashboard_queue, 64, 1, 100000,
           "dashboard requests waiting per lane, 503 above it"),
    NUMBER("KONNECT_AUDIT_RETENTION_DAYS", audit_retention_days, 400, 0, 36500,
           "days audit entries are kept, 0 = for ever"),
    NUMBER("KONNECT_CHANGE_LOG_RETENTION_DAYS", change_log_retention_days, 7, 1, 36500,
           "days key and account change-log rows are kept"),
    NUMBER("KONNECT_REDIS_TIMEOUT_MS", redis_timeout_ms, 250, 10, 60000,
           "longest wait for Redis's answer before a request falls back"),
    NUMBER("KONNECT_LEDGER_SPOOL_MAX_BYTES", spool_max_bytes, 64LL * 1024 * 1024, 4096,
           16LL * 1024 * 1024 * 1024,
           "ledger rows spooled while the store is down, past it answers are refused"),
};

/* --help's layout: what a setting does starts in this column, and no line is wider than 79. */
enum { SETTING_COLUMN = 31, SETTING_WIDTH = 79 };

/* Writes one word of a setting's line at *col, after the variable's name (first) or a space, and
 * on a new line (in SETTING_COLUMN) when it would not fit. */
static void put_word(FILE *out, int *col, int first, const char *word, int len)
{
    int gap = !first ? 1 : *col < SETTING_COLUMN - 2 ? SETTING_COLUMN - *col : 2;

    if (*col + gap + len > SETTING_WIDTH) {
        fprintf(out, "\n%*s", SETTING_COLUMN, "");
        *col = SETTING_COLUMN;
    } else {
        fprintf(out, "%*s", gap, "");
        *col += gap;
    }
    fwrite(word, 1, (size_t)len, out);
    *col += len;
}

void config_print_settings(FILE *out)
{
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        const struct number_setting *d = &numbers[i];
        char range[96];
        int col = fprintf(out, "  %s", d->env), first = 1;

        for (const char *w = d->help; *w != '\0'; first = 0) {
            int len = (int)strcspn(w, " ");
            put_word(out, &col, first, w, len);
            w += len;
            w += strspn(w, " ");
        }
        /* The default and the range stay together on one line. */
        snprintf(range, sizeof(range), "(default %lld, %lld..%lld)", d->def, d->min, d->max);
        put_word(out, &col, first, range, (int)strlen(range));
        fputc('\n', out);
    }
}

static void set_number(struct kn_config *c, const struct number_setting *d, long long n)
{
    char *at = (char *)c + d->offset;
    if (d->size == sizeof(uint64_t)) {
        uint64_t v = (uint64_t)n;
        memcpy(at, &v, sizeof(v));
    } else {
        uint32_t v = (uint32_t)n;
        memcpy(at, &v, sizeof(v));
    }
}

/* The host name (its first label, only the characters a node id may hold) and a random suffix,
 * so that two processes on one machine never share an id. */
static void default_node_id(char *out, size_t size)
{
    char host[256] = "", suffix[16];
    size_t n = 0;

    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    for (const char *h = host; *h != '\0' && *h != '.' && n < 40; h++)
        if ((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') ||
            *h == '-' || *h == '_')
            host[n++] = *h;
    host[n] = '\0';
    base62_random_id(suffix, "", 6);
    snprintf(out, size, "%s-%s", n > 0 ? host : "node", suffix);
}

int config_load(struct kn_config *c, char *err, size_t errsize)
{
    const char *v;
    long long n;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    memset(c, 0, sizeof(*c));
    kn_strlcpy(c->listen_host, "127.0.0.1", sizeof(c->listen_host));
    c->listen_port = 8080;
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++)
        set_number(c, &numbers[i], numbers[i].def);
    kn_strlcpy(c->access_log, "-", sizeof(c->access_log));
    kn_strlcpy(c->default_model, "konnect-default", sizeof(c->default_model));
    kn_strlcpy(c->signup, "open", sizeof(c->signup));
    kn_strlcpy(c->model_url, "http://127.0.0.1:11434/v1", sizeof(c->model_url));
    c->ledger_sync_full = 0;

    v = getenv("KONNECT_DATA_DIR");
    config_set_data_dir(c, v != NULL && *v != '\0' ? v : "./var");
    if ((v = getenv("KONNECT_LISTEN")) != NULL && *v != '\0' && config_set_listen(c, v) != 0) {
        snprintf(err, errsize, "KONNECT_LISTEN must look like 127.0.0.1:8080");
        return -1;
    }
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        const struct number_setting *d = &numbers[i];
        if ((v = getenv(d->env)) == NULL || *v == '\0')
            continue;
        if (kn_parse_int(v, d->min, d->max, &n) != 0) {
            snprintf(err, errsize, "%s must be an integer between %lld and %lld", d->env, d->min,
                     d->max);
            return -1;
        }
        set_number(c, d, n);
    }
    if (c->threads == 0)
        c->threads = cores > 0 ? (int)cores : 1;
    if ((v = getenv("KONNECT_MODEL_URL")) != NULL && *v != '\0') {
        if (strlen(v) >= sizeof(c->model_url)) {
            snprintf(err, errsize, "KONNECT_MODEL_URL is too long");
            return -1;
        }
        kn_strlcpy(c->model_url, v, sizeof(c->model_url));
    }
    if ((v = getenv("KONNECT_MODEL_API_KEY_FILE")) != NULL && *v != '\0') {
        if (getenv("KONNECT_MODEL_API_KEY") != NULL && *getenv("KONNECT_MODEL_API_KEY") != '\0') {
            snprintf(err, errsize,
                     "set one of KONNECT_MODEL_API_KEY and KONNECT_MODEL_API_KEY_FILE, not both");
            return -1;
        }
        if (read_secret_file(v, c->model_api_key, sizeof(c->model_api_key), err, errsize) != 0)
            return -1;
        v = c->model_api_key;
    } else {
        v = getenv("KONNECT_MODEL_API_KEY");
    }
    if (v != NULL && *v != '\0') {
        /* It goes into a request header: no controls, and a bounded length. */
        for (const char *p = v; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                v = NULL;
        if (v == NULL || strlen(v) >= sizeof(c->model_api_key)) {
            snprintf(err, errsize,
                     "KONNECT_MODEL_API_KEY must be under 512 bytes with no control characters");
            return -1;
        }
        if (v != c->model_api_key)
            kn_strlcpy(c->model_api_key, v, sizeof(c->model_api_key));
    }
    if ((v = getenv("KONNECT_LEDGER_SYNC")) != NULL && *v != '\0') {
        if (strcmp(v, "full") != 0 && strcmp(v, "normal") != 0) {
            snprintf(err, errsize, "KONNECT_LEDGER_SYNC must be full or normal");
            return -1;
        }
        c->ledger_sync_full = strcmp(v, "full") == 0;
    }
    if ((v = getenv("KONNECT_SIGNUP")) != NULL && *v != '\0') {
        if (strcmp(v, "open") != 0 && strcmp(v, "invite") != 0 && strcmp(v, "closed") != 0) {
            snprintf(err, errsize, "KONNECT_SIGNUP must be open, invite or closed");
            return -1;
        }
        kn_strlcpy(c->signup, v, sizeof(c->signup));
    }
    if ((v = getenv("KONNECT_TRUSTED_PROXIES")) != NULL && *v != '\0') {
        char why[256];
        struct iplist *l = iplist_parse(v, why, sizeof(why));
        if (l == NULL || strlen(v) >= sizeof(c->trusted_proxies)) {
            snprintf(err, errsize, "KONNECT_TRUSTED_PROXIES: %s", l == NULL ? why : "too long");
            free(l);
            return -1;
        }
        free(l);
        kn_strlcpy(c->trusted_proxies, v, sizeof(c->trusted_proxies));
    }
    if ((v = getenv("KONNECT_PUBLIC_URL")) != NULL && *v != '\0' &&
        parse_public_url(c, v, err, errsize) != 0)
        return -1;
    if ((v = getenv("KONNECT_REDIS_URL")) != NULL && *v != '\0') {
        if (strlen(v) >= sizeof(c->redis_url)) {
            snprintf(err, errsize, "KONNECT_REDIS_URL is too long");
            return -1;
        }
        kn_strlcpy(c->redis_url, v, sizeof(c->redis_url));
    }
    if ((v = getenv("KONNECT_NODE_ID")) != NULL && *v != '\0') {
        size_t len = strlen(v);
        if (len >= sizeof(c->node_id) ||
            strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._-") != len) {
            snprintf(err, errsize,
                     "KONNECT_NODE_ID must be 1 to 63 letters, digits, '.', '_' or '-'");
            return -1;
        }
        kn_strlcpy(c->node_id, v, sizeof(c->node_id));
    } else {
        default_node_id(c->node_id, sizeof(c->node_id));
    }
    if ((v = getenv("KONNECT_ACCESS_LOG")) != NULL && *v != '\0')
        kn_strlcpy(c->access_log, v, sizeof(c->access_log));
    if ((v = getenv("KONNECT_METRICS_LISTEN")) != NULL && *v != '\0' &&
        parse_hostport(v, c->metrics_host, &c->metrics_port) != 0) {
        snprintf(err, errsize, "KONNECT_METRICS_LISTEN takes HOST:PORT, such as 127.0.0.1:9090");
        return -1;
    }
    if ((v = getenv("KONNECT_METRICS_TOKEN")) != NULL && *v != '\0') {
        size_t len = strlen(v);
        if (len < 16 || len >= sizeof(c->metrics_token) ||
            strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=") !=
                len) {
            snprintf(err, errsize,
                     "KONNECT_METRICS_TOKEN must be 16 to 255 characters of a bearer token "
                     "(letters, digits, -._~+/=); openssl rand -hex 32 makes one");
            return -1;
        }
        kn_strlcpy(c->metrics_token, v, sizeof(c->metrics_token));
    }
    {
        const char *cert = getenv("KONNECT_TLS_CERT"), *key = getenv("KONNECT_TLS_KEY");
        int has_cert = cert != NULL && *cert != '\0', has_key = key != NULL && *key != '\0';
        if (has_cert != has_key) {
            snprintf(err, errsize,
                     "KONNECT_TLS_CERT and KONNECT_TLS_KEY go together: set both (the PEM "
                     "certificate chain and its private key) or neither");
            return -1;
        }
        if (has_cert &&
            (strlen(cert) >= sizeof(c->tls_cert) || strlen(key) >= sizeof(c->tls_key))) {
            snprintf(err, errsize, "KONNECT_TLS_CERT or KONNECT_TLS_KEY is too long");
            return -1;
        }
        if (has_cert) {
            kn_strlcpy(c->tls_cert, cert, sizeof(c->tls_cert));
            kn_strlcpy(c->tls_key, key, sizeof(c->tls_key));
        }
    }
    if ((v = getenv("KONNECT_MODEL")) != NULL && *v != '\0') {
        size_t len = strlen(v);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e)
                len = sizeof(c->default_model);
        if (len >= sizeof(c->default_model)) {
            snprintf(err, errsize,
                     "KONNECT_MODEL must be 1 to 128 printable ASCII characters "
                     "without spaces");
            return -1;
        }
        kn_strlcpy(c->default_model, v, sizeof(c->default_model));
    }
    return 0;
}

int config_ensure_data_dir(const struct kn_config *c, char *err, size_t errsize)
{
    struct stat st;

    if (stat(c->data_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errsize, "data directory %s is not a directory", c->data_dir);
            return -1;
        }
        return 0;
    }
    if (mkdir(c->data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsize, "cannot create data directory %s: %s", c->data_dir, strerror(errno));
        return -1;
    }
    return 0;
}

void config_warn_public(const struct kn_config *c)
{
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    char db[PATH_MAX], path[PATH_MAX + 8], abs[PATH_MAX + 16];
    /* The file a "sqlite:" URL names is the part before its options. */
    kn_strlcpy(db, strncmp(c->database, "sqlite:", 7) == 0 ? c->database + 7 : c->database,
               sizeof(db));
    if (strncmp(c->database, "sqlite:", 7) == 0)
        db[strcspn(db, "?")] = '\0';
    struct stat st;

    if (stat(c->data_dir, &st) == 0 && (st.st_mode & 077) != 0)
        fprintf(stderr,
                "konnect: warning: the data directory %s can be read by other users; run: "
                "chmod 700 %s\n",
                kn_abs_path(c->data_dir, abs, sizeof(abs)), abs);
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", db, suffixes[i]);
        if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
            fprintf(stderr,
                    "konnect: warning: %s can be read by other users (it holds the password and "
                    "key hashes); run: chmod 600 %s\n",
                    kn_abs_path(path, abs, sizeof(abs)), abs);
    }
    if (stat(c->plans_file, &st) == 0 && (st.st_mode & 022) != 0)
        fprintf(stderr,
                "konnect: warning: the plans file %s can be changed by other users; run: chmod "
                "go-w %s\n",
                kn_abs_path(c->plans_file, abs, sizeof(abs)), abs);
}
