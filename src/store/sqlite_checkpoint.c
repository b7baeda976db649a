/* Checkpoints of a busy SQLite writer on a thread of their own; see sqlite_checkpoint.h.
 *
 * In WAL mode, commits append pages to the log, and a checkpoint copies them back into the
 * database. SQLite runs one inside the commit that takes the log past 1,000 pages, which stalls
 * that commit for as long as the copy and its fsync take: every few hundred group commits, the
 * answers waiting for one were held for milliseconds. The busy writer instead hands checkpoints
 * to a thread with its own connection, which copies pages while the writer goes on appending
 * (a PASSIVE checkpoint never blocks it).
 *
 * The log itself starts again from its beginning only when a write begins with every page of it
 * copied, which a writer that commits every fraction of a millisecond never lets happen: each
 * passive checkpoint ends a little behind the commits made while it ran, and the log grew by some
 * 20 MB a second at 2,000 billed requests a second. So once a passive checkpoint leaves a log of
 * WAL_FRAMES_RESTART pages or more, the writer itself, before its next transaction, runs a
 * RESTART checkpoint: it copies only the few pages committed since, syncs, and the next commit
 * writes from the start of the log again. Its own connection runs it, between transactions, so
 * it never waits on a lock (a reader in the way makes it try again before the next batch).
 *
 * A passive checkpoint that ends behind the log writes pages into the database but does not sync
 * it; the restart's sync then had to write out every page copied since the previous restart (up
 * to 36 ms here, with every answer waiting). After each checkpoint the thread therefore starts the
 * write-back of the database's dirty pages without waiting for it (sync_file_range, as
 * PostgreSQL's checkpoint_flush_after), so the restart's sync finds little left to write.
 *
 * A restart still holds the answers waiting at that moment for about 2 ms, so it is rare: every
 * 32,768 pages of log (128 MB, some six seconds at 2,000 billed requests a second), and it runs
 * when the store thread has nothing to do (store_idle), never between the rows it took and their
 * commit; only a writer that is never idle restarts the log before a commit, once the log has
 * grown to twice that length. Against every
 * 8,192 pages, the share of answers slower than 1.3 ms at 2,000 requests/s fell from 1.20 % to
 * 1.04 % (five alternating runs). */
#include "store/sqlite_checkpoint.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "core/util.h"

struct checkpointer {
    sqlite3 *db; /* The thread's own connection. */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int wal_frames;     /* Frames in the log after the writer's last commit. */
    int copied;         /* Frames of the log the last checkpoint copied. */
    int busy;           /* A checkpoint is running (on either connection). */
    int restart_due;    /* The log is long: the writer should start it again. */
    int restart_wanted; /* The writer found a checkpoint running when it wanted to restart. */
    int stop;
    int flush_fd; /* The database file, for starting its write-back (-1: none); see flush_fd_of. */
};

#define WAL_FRAMES_CHECKPOINT 1000
#define WAL_FRAMES_RESTART 32768

/* A descriptor of the database file at path for sync_file_range, or -1. Closing any descriptor of
 * a file drops every POSIX lock this process holds on it, SQLite's included, so these are never
 * closed: one per database file for the life of the process (SQLite defers its own closes for the
 * same reason). */
static int flush_fd_of(const char *path)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static struct {
        dev_t dev;
        ino_t ino;
        int fd;
    } open_fds[8];
    static size_t count;
    struct stat st;
    int fd = -1;

    if (stat(path, &st) != 0)
        return -1;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < count && fd < 0; i++)
        if (open_fds[i].dev == st.st_dev && open_fds[i].ino == st.st_ino)
            fd = open_fds[i].fd;
    if (fd < 0 && count < sizeof(open_fds) / sizeof(open_fds[0]) &&
        (fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
        open_fds[count].dev = st.st_dev;
        open_fds[count].ino = st.st_ino;
        open_fds[count++].fd = fd;
    }
    pthread_mutex_unlock(&lock);
    return fd;
}

static void *checkpointer_main(void *arg)
{
    struct checkpointer *c = arg;

    pthread_setname_np(pthread_self(), "kn-checkpoint");
    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        /* Passive checkpoints go on while a restart is due: a reader holding an old snapshot
         * makes the restart wait (it is tried again), and the log must not grow meanwhile. But
         * once the writer found one running when it wanted to restart, the next waits for that
         * restart: under a writer fast enough to keep them back to back, the restart would
         * otherwise only find the rare instant between two of them, and the log grew past its
         * bound while every try was skipped. */
        if (c->wal_frames - c->copied < WAL_FRAMES_CHECKPOINT || c->busy || c->restart_wanted) {
            pthread_cond_wait(&c->cond, &c->lock);
            continue;
        }
        c->busy = 1;
        pthread_mutex_unlock(&c->lock);
        int log = 0, copied = 0;
        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            fprintf(stderr, "konnect: checkpoint failed: %s\n", sqlite3_errmsg(c->db));
        if (rc == SQLITE_OK && copied > 0 && c->flush_fd >= 0)
            sync_file_range(c->flush_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        pthread_mutex_lock(&c->lock);
        c->busy = 0;
        if (rc == SQLITE_OK) {
            c->copied = copied;
            c->restart_due = log >= WAL_FRAMES_RESTART;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

void checkpointer_restart_log(struct checkpointer *c, sqlite3 *db, int idle)
{
    int rc;

    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    /* A restart wanted (and held back from passive checkpoints) is taken at the next call, idle
     * or not: passive checkpoints wait for it, so a writer that stays busy must not leave it
     * until the log is twice as long. */
    if (!c->restart_due ||
        (!idle && !c->restart_wanted && c->wal_frames < 2 * WAL_FRAMES_RESTART)) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (c->busy) {
        c->restart_wanted = 1; /* Tried again at the next chance, with no passive one between. */
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->busy = 1;
    c->restart_wanted = 0;
    pthread_mutex_unlock(&c->lock);
    sqlite3_busy_timeout(db, 0);
    rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
    sqlite3_busy_timeout(db, 5000);
    pthread_mutex_lock(&c->lock);
    c->busy = 0;
    if (rc == SQLITE_OK) {
        c->restart_due = 0;
        c->wal_frames = c->copied = 0;
    }
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct checkpointer *c = arg;
    (void)db;
    (void)name;
    pthread_mutex_lock(&c->lock);
    if (frames < c->copied)
        c->copied = 0; /* The log started again. */
    c->wal_frames = frames;
    if (frames - c->copied >= WAL_FRAMES_CHECKPOINT)
        pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return SQLITE_OK;
}

void checkpointer_stop(struct checkpointer *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    /* The last connection to close checkpoints what is left. */
    sqlite3_close(c->db);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

struct checkpointer *checkpointer_start(sqlite3 *writer, char *err, size_t errsize)
{
    struct checkpointer *c = kn_calloc(1, sizeof(*c));
    const char *path = sqlite3_db_filename(writer, "main");

    if (path == NULL || sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errsize, "cannot open a checkpoint connection: %s",
                 c->db != NULL ? sqlite3_errmsg(c->db) : "out of memory");
        sqlite3_close(c->db);
        free(c);
        return NULL;
    }
    sqlite3_busy_timeout(c->db, 5000);
    /* A connection opens the log only once it reads: until then a checkpoint on it is a no-op
     * that still reports success. */
    if (sqlite3_exec(c->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errsize, "cannot open a checkpoint connection: %s", sqlite3_errmsg(c->db));
        sqlite3_close(c->db);
        free(c);
        return NULL;
    }
    c->flush_fd = flush_fd_of(path);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (pthread_create(&c->thread, NULL, checkpointer_main, c) != 0)
        kn_fatal("cannot start the checkpoint thread");
    /* The hook replaces SQLite's own checkpoints on this connection. */
    sqlite3_wal_hook(writer, on_wal_commit, c);
    return c;
}
