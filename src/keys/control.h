/* The control socket: how commands run on this machine reach the running server that uses the
 * same data directory (SQLite's local nudge; servers sharing a network store hear of changes from
 * the store itself). A Unix socket in the data directory, mode 0600; the protocol is one line each
 * way: "sync" (the server applies every pending change and answers "ok"), "reload-plans" (it
 * reads the plans file again: "ok <what>" or "error <why>"), "has-plan NAME" ("ok" or "unknown":
 * does the running server know that plan).
 *
 * The server side is served from the store thread's poll loop: a client is answered once its
 * line has arrived, and dropped after 2 s without one, so that none ever makes the thread wait. */
#ifndef KN_KEYS_CONTROL_H
#define KN_KEYS_CONTROL_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* The most poll entries control_pollfds writes. */
#define CONTROL_POLLFDS 9

/* Writes the answer (one line, with its newline) to a command line (without its newline). */
typedef void (*control_answer_fn)(void *ud, const char *line, char *answer, size_t size);

struct control;

/* Binds the socket at path (the caller must hold the data directory's lock: a socket left there
 * is a dead server's and is replaced) and answers with answer(ud, ...). A path too long for a Unix
 * socket gives a control without a socket, and a warning. Returns NULL with a message in err when
 * the socket cannot be bound. */
struct control *control_open(const char *path, control_answer_fn answer, void *ud, char *err,
                             size_t errsize);

/* Closes the socket and its clients and removes the socket's file (NULL is accepted). */
void control_close(struct control *c);

/* Writes the poll entries of the socket and its clients to p (at most CONTROL_POLLFDS), returns
 * how many, and lowers *wake_ns to the earliest client deadline (monotonic). */
size_t control_pollfds(struct control *c, struct pollfd *p, uint64_t *wake_ns);

/* Serves what poll reported in the n entries control_pollfds wrote to p, at monotonic time now:
 * answers the clients whose line is in, drops those gone or too slow, accepts new ones. */
void control_serve(struct control *c, const struct pollfd *p, size_t n, uint64_t now);

/* Client side: sends one command line to the server on socket_path and reads its one-line answer
 * into answer (without the newline), waiting up to timeout_ms. Returns 1 when it answered, 0 when
 * no server listens there, -1 when it did not answer. */
int control_ask(const char *socket_path, const char *command, char *answer, size_t size,
                int timeout_ms);

/* Asks the server on socket_path to apply pending key changes now ("sync"). Returns 1 when a
 * server applied them, 0 when no server is listening there, -1 when one is listening but did not
 * answer in time. */
int control_notify(const char *socket_path, int timeout_ms);

#endif
