/* Redis for the cluster-wide limits (limits/konnect.lua): where it is (KONNECT_REDIS_URL), one
 * asynchronous connection per event loop (hiredis 0.14 on h2o's loop: never blocking it), and a
 * blocking one for the store thread, which seeds each month's usage from the store.
 *
 * A call that finds no connection, or whose answer does not come within its deadline, fails at
 * once (the connection is then cut and made again, with backoff): the caller falls back as
 * limits/cluster.h says. */
#ifndef KN_LIMITS_REDIS_H
#define KN_LIMITS_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>

struct redis_target {
    int is_unix;
    char host[64]; /* A numeric address (names are resolved when the URL is read). */
    int port;
    char path[108];
    char user[64], password[256]; /* For AUTH; "" for none. */
    char shown[400];              /* The URL without its password, for messages. */
};

/* Reads KONNECT_REDIS_URL: redis://[[user]:password@]host[:port] (host a name, resolved here, off
 * any event loop, or an address) or unix:///path/to/redis.sock. rediss:// is refused (hiredis
 * 0.14 has no TLS) with a message saying how to tunnel it. Returns 0, or -1 with a message. */
int redis_target_parse(const char *url, struct redis_target *t, char *err, size_t errsize);

/* The Lua library, as embedded at build time. */
const char *redis_library(size_t *len);

struct redis_conn;

/* Called with the reply, or NULL when the call failed (no connection, cut, past its deadline).
 * The reply belongs to hiredis. */
typedef void (*redis_cb)(void *ud, redisReply *reply);

/* A connection on loop, connecting now and again whenever it is lost. */
struct redis_conn *redis_conn_new(h2o_loop_t *loop, const struct redis_target *t,
                                  uint32_t timeout_ms);

/* Cuts the connection; every call waiting gets NULL. */
void redis_conn_free(struct redis_conn *c);

/* Holds Redis's run and data history (INFO's run_id and master_replid, see redis_run_of) under
 * which the counts were last seeded or raised to the ledger's (keys/keysync.c). */
#define CLUSTER_RUN_KEY "kn:run"

/* From the text of INFO server and replication, "run_id:master_replid" into out; 0, or -1 when
 * the text does not hold both. */
int redis_run_of(const char *info, char *out, size_t size);

/* 1 while Redis's counts are known good for its current run and data history (CLUSTER_RUN_KEY
 * names them, or INFO is denied and nothing can tell): a Redis restored from an older copy or a
 * promoted replica may have lost counts, and until a store thread has raised them to the
 * ledger's, admissions that spend money must wait (checked every 50 ms). */
int redis_conn_counts_ok(const struct redis_conn *c);

/* cb is called on the connection's loop each time it becomes ready (connected, library loaded). */
void redis_conn_on_ready(struct redis_conn *c, void (*cb)(void));

/* 1 while connected with the library loaded. */
int redis_conn_ready(const struct redis_conn *c);

/* FCALL fn with numkeys keys then the other arguments (argv[0..argc-1], NUL-terminated strings).
 * Returns 0 when sent (cb is called once, later), -1 when there is no ready connection (cb is not
 * called). */
int redis_conn_fcall(struct redis_conn *c, const char *fn, int numkeys, int argc, const char **argv,
                     redis_cb cb, void *ud);

/* On a blocking connection: loads this build's library unless Redis holds the same version or a
 * newer one (a server of an older version may have put its own back). 0, or -1 with a message. */
int redis_sync_library(redisContext *ctx, const struct redis_target *t, char *err, size_t errsize);

/* How long the store thread's blocking connection waits to connect, and for each reply. Redis
 * answers in well under a millisecond; a Redis that does not (paused, cut off) must not hold the
 * store thread's reading of the change logs back past keysync's 2.75 s (a connect and one reply:
 * 1 s at most in a tick). */
#define REDIS_SYNC_TIMEOUT_MS 500

/* A blocking connection (the store thread's), with the library loaded; NULL with a message. The
 * connection waits REDIS_SYNC_TIMEOUT_MS for each reply. */
redisContext *redis_sync_connect(const struct redis_target *t, char *err, size_t errsize);

#endif
