/* The ledger's spool; see spool.h. */
#include "metering/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"

#define REPLAY_BATCH 1024

struct spool {
    int fd;
    char *path;
    uint64_t max_bytes;
    uint64_t bytes;   /* The file's size. */
    uint64_t pending; /* Lines in it (complete or not) since it was last emptied. */
};

/* Counts the complete lines of the file, to know at start whether there is something to
 * replay. */
static uint64_t count_lines(int fd)
{
    char buf[65536];
    uint64_t n = 0;
    ssize_t got;
    off_t at = 0;

    while ((got = pread(fd, buf, sizeof(buf), at)) > 0) {
        for (ssize_t i = 0; i < got; i++)
            n += buf[i] == '\n';
        at += got;
    }
    return n;
}

/* The length of the file up to its last newline: a line cut short by a crash during its write
 * (its answer was never delivered) is cut off, so that the next row does not run into it. */
static uint64_t complete_length(int fd, uint64_t size)
{
    char buf[4096];

    while (size > 0) {
        size_t chunk = size < sizeof(buf) ? (size_t)size : sizeof(buf);
        if (pread(fd, buf, chunk, (off_t)(size - chunk)) != (ssize_t)chunk)
            return size; /* Unreadable: left as it is; the replay says so. */
        for (size_t i = chunk; i > 0; i--)
            if (buf[i - 1] == '\n')
                return size - chunk + i;
        size -= chunk;
    }
    return 0;
}

struct spool *spool_open(const char *path, uint64_t max_bytes, char *err, size_t errsize)
{
    struct spool *sp;
    struct stat st;
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errsize, "cannot open the ledger spool %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    sp = kn_calloc(1, sizeof(*sp));
    sp->fd = fd;
    sp->path = kn_strdup(path);
    sp->max_bytes = max_bytes;
    sp->bytes = complete_length(fd, (uint64_t)st.st_size);
    if (sp->bytes != (uint64_t)st.st_size && ftruncate(fd, (off_t)sp->bytes) != 0) {
        snprintf(err, errsize, "cannot repair the ledger spool %s: %s", path, strerror(errno));
        spool_close(sp);
        return NULL;
    }
    sp->pending = count_lines(fd);
    return sp;
}

void spool_close(struct spool *sp)
{
    if (sp == NULL)
        return;
    close(sp->fd);
    free(sp->path);
    free(sp);
}

uint64_t spool_pending(const struct spool *sp)
{
    return sp->pending;
}

static char *row_line(const struct store_ledger_row *r, size_t *len)
{
    json_t *o =
        json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "plan_version",
                  (json_int_t)r->plan_version, "request_id", r->request_id, "account_id",
                  r->account_id, "key_id", r->key_id, "environment", r->environment, "model",
                  r->model, "currency", r->currency, "plan", r->plan, "input_tokens",
                  (json_int_t)r->input_tokens, "output_tokens", (json_int_t)r->output_tokens,
                  "price_micros", (json_int_t)r->price_micros, "at_ms", (json_int_t)r->at_ms);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(o);
    if (s != NULL)
        *len = strlen(s);
    return s;
}

int spool_add(struct spool *sp, const struct store_ledger_row *rows, size_t n)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;

    for (size_t i = 0; i < n; i++) {
        size_t l;
        char *line = row_line(&rows[i], &l);
        if (line == NULL) {
            free(buf);
            return -1;
        }
        if (len + l + 1 > cap) {
            cap = (len + l + 1) * 2;
            buf = kn_realloc(buf, cap);
        }
        memcpy(buf + len, line, l);
        buf[len + l] = '\n';
        len += l + 1;
        free(line);
    }
    if (sp->bytes + len > sp->max_bytes) {
        free(buf);
        return -1;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(sp->fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            /* What was written of it is a cut line or whole lines nobody was told are durable:
             * replayed later, they bill answers that were refused. Cut it off again. */
            if (ftruncate(sp->fd, (off_t)sp->bytes) != 0) {
                /* The file keeps them; a replay then bills requests that were not delivered
                 * (never the other way round). */
            }
            free(buf);
            return -1;
        }
        off += (size_t)w;
    }
    free(buf);
    if (fdatasync(sp->fd) != 0) {
        if (ftruncate(sp->fd, (off_t)sp->bytes) != 0) {
            /* As above. */
        }
        return -1;
    }
    sp->bytes += len;
    sp->pending += n;
    return 0;
}

static int read_row(const char *line, size_t len, struct store_ledger_row *r)
{
    json_error_t e;
    json_t *o = json_loadb(line, len, 0, &e);
    const char *rid, *acct, *key, *env, *model, *cur, *plan;
    json_int_t in, out, price, at, pv = 0;
    int ok;

    memset(r, 0, sizeof(*r));
    ok = o != NULL && json_unpack(o, "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s?I}",
                                  "request_id", &rid, "account_id", &acct, "key_id", &key,
                                  "environment", &env, "model", &model, "currency", &cur, "plan",
                                  &plan, "input_tokens", &in, "output_tokens", &out, "price_micros",
                                  &price, "at_ms", &at, "plan_version", &pv) == 0;
    if (ok) {
        kn_strlcpy(r->request_id, rid, sizeof(r->request_id));
        kn_strlcpy(r->account_id, acct, sizeof(r->account_id));
        kn_strlcpy(r->key_id, key, sizeof(r->key_id));
        kn_strlcpy(r->environment, env, sizeof(r->environment));
        kn_strlcpy(r->model, model, sizeof(r->model));
        kn_strlcpy(r->currency, cur, sizeof(r->currency));
        kn_strlcpy(r->plan, plan, sizeof(r->plan));
        r->input_tokens = (uint32_t)in;
        r->output_tokens = (uint32_t)out;
        r->price_micros = price;
        r->at_ms = at;
        r->plan_version = pv;
    }
    json_decref(o);
    return ok ? 0 : -1;
}

/* Writes one batch to the store; counts voided rows. Returns 0 or -1. */
static int replay_batch(struct store *s, const struct store_ledger_row *rows, size_t n,
                        long *voided)
{
    uint8_t outcome[REPLAY_BATCH];

    if (n == 0)
        return 0;
    if (store_ledger_add(s, rows, n, outcome) != STORE_OK)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (outcome[i] == STORE_LEDGER_VOIDED) {
            fprintf(stderr,
                    "konnect: spooled ledger row %s was voided in the store meanwhile; dropped\n",
                    rows[i].request_id);
            (*voided)++;
        }
    return 0;
}

long spool_replay(struct spool *sp, struct store *s, long *voided)
{
    struct store_ledger_row *rows;
    char *data;
    size_t n = 0;
    long done = 0;

    *voided = 0;
    if (sp->bytes == 0)
        return 0;
    data = kn_calloc(1, (size_t)sp->bytes + 1);
    for (size_t off = 0; off < sp->bytes;) {
        ssize_t got = pread(sp->fd, data + off, (size_t)sp->bytes - off, (off_t)off);
        if (got <= 0) {
            free(data);
            return -1;
        }
        off += (size_t)got;
    }
    rows = kn_calloc(REPLAY_BATCH, sizeof(*rows));
    for (char *line = data, *end; line < data + sp->bytes; line = end + 1) {
        if ((end = memchr(line, '\n', (size_t)(data + sp->bytes - line))) == NULL)
            break; /* A line cut short: its answer was never delivered. */
        if (read_row(line, (size_t)(end - line), &rows[n]) != 0) {
            fprintf(stderr, "konnect: skipping an unreadable line of the ledger spool %s\n",
                    sp->path);
            continue;
        }
        if (++n == REPLAY_BATCH) {
            if (replay_batch(s, rows, n, voided) != 0)
                goto fail;
            done += (long)n;
            n = 0;
        }
    }
    if (replay_batch(s, rows, n, voided) != 0)
        goto fail;
    done += (long)n;
    /* Every row is in the store: the spool starts again empty. A crash before this only means
     * the rows are replayed again, which bills nothing twice. */
    if (ftruncate(sp->fd, 0) != 0 || fdatasync(sp->fd) != 0) {
        fprintf(stderr, "konnect: cannot empty the ledger spool %s: %s\n", sp->path,
                strerror(errno));
    } else {
        sp->bytes = 0;
        sp->pending = 0;
    }
    free(rows);
    free(data);
    return done;
fail:
    free(rows);
    free(data);
    return -1;
}
