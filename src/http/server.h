/* `konnect serve`: the HTTP server. One h2o event loop per thread, all accepting on one listening
 * socket; a store thread (keys/keysync.h) keeps the in-memory key table equal to the store. */
#ifndef KN_HTTP_SERVER_H
#define KN_HTTP_SERVER_H

#include "core/config.h"

/* Runs the server until SIGTERM or SIGINT, then drains connections for at most
 * c->shutdown_timeout_ms and returns 0. Returns non-zero, after printing why, when it cannot
 * start. Prints "listening on http://HOST:PORT" to stderr once it accepts connections. */
int server_run(const struct kn_config *c);

#endif
