/* konnect: subcommand dispatch. */
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/fault.h"
#include "core/redact.h"
#include "core/util.h"
#include "http/server.h"

#ifndef KONNECT_VERSION
#define KONNECT_VERSION "0.1.0"
#endif

static const char usage[] =
    "Usage: konnect COMMAND [OPTIONS]\n"
    "\n"
    "Konnect serves an AI chat API behind secret API keys (sk_live_... and sk_test_...).\n"
    "\n"
    "Commands:\n"
    "  serve     run the HTTP server\n"
    "  account   create and show customer accounts, set their plan and quotas\n"
    "  key       create, list, roll, update, revoke and expire API keys\n"
    "  operator-key  create, list and revoke the operator API's keys (sk_op_...)\n"
    "  user      set a dashboard user's password, or make a one-time set-password link\n"
    "  audit     print the audit log\n"
    "  usage     print an account's billed usage and cost in a month\n"
    "  invoice   print an account's invoice for a month (text, JSON or CSV), or list them\n"
    "  plans     list the plans in force, publish a plans file (apply), or make the\n"
    "            server reload its file\n"
    "  migrate   create or upgrade the database\n"
    "  store     copy a SQLite store into PostgreSQL (store copy --from --to)\n"
    "  backup    copy the SQLite store, consistent, while the server runs (--to FILE)\n"
    "  version   print the version\n"
    "\n"
    "Every command reads KONNECT_DATA_DIR (default ./var) for the database (konnect.db) and the\n"
    "server secret (secret). Only 'account create' and 'migrate' create a database, and say so.\n"
    "Run 'konnect COMMAND --help' for a command's options.\n";

/* serve --help: this, the numeric settings from config.c's table, then serve_usage_tail. Each
 * line fits in 79 columns. */
static const char serve_usage_head[] =
    "Usage: konnect serve [--listen HOST:PORT] [--data-dir DIR] [--threads N]\n"
    "\n"
    "Run the HTTP server: POST /v1/chat, POST /v1/chat/completions\n"
    "(OpenAI-compatible), the dashboard at /, GET /healthz and GET /readyz. Live\n"
    "keys' requests go to the model backend and are billed; test keys get mock\n"
    "answers.\n"
    "\n"
    "Options (each overrides its environment variable):\n"
    "  --listen HOST:PORT   address to listen on (KONNECT_LISTEN, default\n"
    "                       127.0.0.1:8080; port 0 picks a free port)\n"
    "  --data-dir DIR       database and server secret (KONNECT_DATA_DIR,\n"
    "                       default ./var)\n"
    "  --threads N          event-loop threads, 1 to 256 (KONNECT_THREADS)\n"
    "  --access-log DEST    '-' for stderr, 'off', or a file (KONNECT_ACCESS_LOG,\n"
    "                       default -)\n"
    "  -h, --help           show this help\n"
    "\n"
    "Numbers, from the environment (each with its default and the values it takes):\n";

static const char serve_usage_tail[] =
    "\n"
    "Other settings, from the environment:\n"
    "  KONNECT_MODEL                model used when a request names none, default\n"
    "                               konnect-default\n"
    "  KONNECT_MODEL_URL            OpenAI-compatible backend, default\n"
    "                               http://127.0.0.1:11434/v1\n"
    "  KONNECT_MODEL_API_KEY        bearer token for the backend (never logged)\n"
    "  KONNECT_MODEL_API_KEY_FILE   or a file whose first line is that token\n"
    "  KONNECT_PLANS                plans file, default <data dir>/plans.json\n"
    "  KONNECT_LEDGER_SYNC          normal (default: a ledger commit survives a\n"
    "                               crash of the process, not of the machine) or\n"
    "                               full (it waits for the disk)\n"
    "  KONNECT_LEDGER_SPOOL         where ledger rows wait while the store cannot\n"
    "                               take them, default <data dir>/ledger.spool; off\n"
    "  KONNECT_SIGNUP               sign-up: open (default), invite or closed\n"
    "  KONNECT_DATABASE             the store, default <data dir>/konnect.db; or a\n"
    "                               PostgreSQL URL (postgresql://user@host/db)\n"
    "  KONNECT_REDIS_URL            Redis for limits counted across servers:\n"
    "                               redis://host:port or unix:///path/redis.sock\n"
    "  KONNECT_NODE_ID              this server's name among those of one store,\n"
    "                               default the host name and a random suffix\n"
    "  KONNECT_SECRET_FILE          the server secret, default <data dir>/secret\n"
    "  KONNECT_TLS_CERT             HTTPS (HTTP/2, TLS 1.2+): PEM certificate chain\n"
    "  KONNECT_TLS_KEY              and its unencrypted PEM key (both or neither)\n"
    "  KONNECT_METRICS_LISTEN       a HOST:PORT of its own for GET /metrics\n"
    "                               (Prometheus), none by default\n"
    "  KONNECT_METRICS_TOKEN        serve GET /metrics on the main listener to\n"
    "                               'Authorization: Bearer <token>' (16+ chars)\n"
    "\n"
    "Behind a reverse proxy:\n"
    "  KONNECT_TRUSTED_PROXIES      the proxies' addresses (CIDR list): only they\n"
    "                               are believed about X-Forwarded-For and\n"
    "                               X-Forwarded-Proto\n"
    "  KONNECT_PUBLIC_URL           the dashboard's origin: its only Host and Origin\n"
    "\n"
    "For tests (debug builds only; a release build refuses it):\n"
    "  KONNECT_FAULT                make store or ledger calls fail on purpose:\n"
    "                               KIND:N[xC],... (store:3x2: the 3rd and 4th)\n"
    "\n"
    "SIGHUP reads the plans file and the TLS certificate and key again ('konnect\n"
    "plans reload' only the plans). SIGUSR1 writes the live path's stage times\n"
    "since the last SIGUSR1 to stderr. See README.md for every setting.\n";

static void print_serve_usage(FILE *out)
{
    fputs(serve_usage_head, out);
    config_print_settings(out);
    fputs(serve_usage_tail, out);
}

static int cmd_serve(struct kn_config *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},  {"data-dir", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'}, {"access-log", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    long long n;
    int ch;

    optind = 1;
    opterr = 0; /* getopt would echo the argument, which may be a pasted secret. */
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'l':
            if (config_set_listen(c, optarg) != 0) {
                fprintf(stderr, "konnect: --listen takes HOST:PORT, such as 127.0.0.1:8080\n");
                return 2;
            }
            break;
        case 'd':
            config_set_data_dir(c, optarg);
            break;
        case 't':
            if (kn_parse_int(optarg, 1, 256, &n) != 0) {
                fprintf(stderr, "konnect: --threads takes a number from 1 to 256\n");
                return 2;
            }
            c->threads = (int)n;
            break;
        case 'a':
            kn_strlcpy(c->access_log, optarg, sizeof(c->access_log));
            break;
        case 'h':
            print_serve_usage(stdout);
            return 0;
        default: {
            char shown[64];
            fprintf(stderr,
                    "konnect: unknown option, or option without its value: '%s' (see 'konnect "
                    "serve --help')\n",
                    redact_copy(shown, sizeof(shown), argv[optind - 1]));
            return 2;
        }
        }
    }
    if (optind != argc) {
        fputs("konnect: serve takes no arguments (see 'konnect serve --help')\n", stderr);
        return 2;
    }
    return server_run(c);
}

/* The commands, by the name that follows "konnect". */
static const struct {
    const char *name;
    int (*run)(struct kn_config *c, int argc, char **argv);
} commands[] = {
    {"serve", cmd_serve},     {"account", cli_account}, {"key", cli_key},
    {"user", cli_user},       {"audit", cli_audit},     {"usage", cli_usage},
    {"invoice", cli_invoice}, {"plans", cli_plans},     {"migrate", cli_migrate},
    {"store", cli_store},     {"backup", cli_backup},   {"operator-key", cli_operator_key},
};

int main(int argc, char **argv)
{
    struct kn_config c;
    char err[512];

    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
#ifdef NDEBUG
        printf("konnect %s\n", KONNECT_VERSION);
#else
        printf("konnect %s (debug build)\n", KONNECT_VERSION);
#endif
        return 0;
    }
    /* Everything Konnect creates (database, secret, control socket, logs) is its owner's alone,
     * from the moment it exists. */
    umask(077);
#ifdef NDEBUG
    /* The server secret, keys being checked and passwords live in memory: no core dump of them,
     * and no other process of the same user may read this one's memory. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
    if (sodium_init() < 0)
        kn_fatal("libsodium failed to initialise");
    if (fault_init(getenv("KONNECT_FAULT"), err, sizeof(err)) != 0 ||
        config_load(&c, err, sizeof(err)) != 0) {
        fprintf(stderr, "konnect: %s\n", err);
        return 2;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(&c, argc - 1, argv + 1);
    char shown[64];
    fprintf(stderr, "konnect: unknown command '%s' (see 'konnect --help' for the commands)\n",
            redact_copy(shown, sizeof(shown), argv[1]));
    return 2;
}
