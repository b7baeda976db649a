/* The access log: one redacted JSON line per request; see accesslog.h. */
#include "http/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/redact.h"
#include "core/util.h"

struct accesslog {
    int fd;
    int owned;
    pthread_mutex_t lock;
};

struct accesslog *accesslog_open(const char *spec, char *err, size_t errsize)
{
    struct accesslog *log = kn_calloc(1, sizeof(*log));

    pthread_mutex_init(&log->lock, NULL);
    if (strcmp(spec, "off") == 0) {
        log->fd = -1;
    } else if (strcmp(spec, "-") == 0) {
        log->fd = STDERR_FILENO;
    } else {
        log->fd = open(spec, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (log->fd < 0) {
            snprintf(err, errsize, "cannot open access log %s: %s", spec, strerror(errno));
            pthread_mutex_destroy(&log->lock);
            free(log);
            return NULL;
        }
        log->owned = 1;
    }
    return log;
}

int accesslog_enabled(const struct accesslog *log)
{
    return log->fd >= 0;
}

void accesslog_close(struct accesslog *log)
{
    if (log == NULL)
        return;
    if (log->owned)
        close(log->fd);
    pthread_mutex_destroy(&log->lock);
    free(log);
}

static void reserve(struct logbuf *b, size_t more)
{
    if (b->len + more > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + more)
            cap *= 2;
        b->buf = kn_realloc(b->buf, cap);
        b->cap = cap;
    }
}

static void put(struct logbuf *b, const char *s, size_t len)
{
    reserve(b, len);
    memcpy(b->buf + b->len, s, len);
    b->len += len;
}

static void puts_(struct logbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_escaped(struct logbuf *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            /* Non-ASCII bytes are escaped one by one, so invalid UTF-8 cannot corrupt the line. */
            char e[7];
            snprintf(e, sizeof(e), "\\u%04x", c);
            put(b, e, 6);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
}

void logbuf_put_redacted(struct logbuf *b, const char *s, size_t len)
{
    size_t i = 0, start = 0;

    while (i + 8 <= len) {
        size_t m = redact_match(s + i, len - i);
        if (m != 0) {
            put_escaped(b, s + start, i + 8 - start);
            puts_(b, REDACTED);
            i = start = i + m;
        } else {
            i++;
        }
    }
    put_escaped(b, s + start, len - start);
}

static void put_field(struct logbuf *b, const char *name, const char *v, size_t len)
{
    puts_(b, ",\"");
    puts_(b, name);
    puts_(b, "\":");
    if (v == NULL) {
        puts_(b, "null");
        return;
    }
    puts_(b, "\"");
    logbuf_put_redacted(b, v, len);
    puts_(b, "\"");
}

void accesslog_append(struct accesslog *log, struct logbuf *b, const struct accesslog_entry *e)
{
    char num[96], tbuf[32];

    if (log->fd < 0)
        return;
    puts_(b, "{\"time\":\"");
    puts_(b, kn_format_time(e->time, tbuf, sizeof(tbuf)));
    puts_(b, "\"");
    put_field(b, "request_id", e->request_id, e->request_id ? strlen(e->request_id) : 0);
    put_field(b, "method", e->method, e->method_len);
    put_field(b, "path", e->path, e->path_len);
    snprintf(num, sizeof(num), ",\"status\":%d,\"duration_us\":%llu,\"body_bytes\":%zu", e->status,
             (unsigned long long)e->duration_us, e->body_bytes);
    puts_(b, num);
    put_field(b, "error", e->error_code, e->error_code ? strlen(e->error_code) : 0);
    put_field(b, "key_id", e->key_id, e->key_id ? strlen(e->key_id) : 0);
    put_field(b, "mode", e->mode, e->mode ? strlen(e->mode) : 0);
    put_field(b, "remote", e->remote, e->remote ? strlen(e->remote) : 0);
    puts_(b, "}\n");
}

void accesslog_flush(struct accesslog *log, struct logbuf *b)
{
    size_t off = 0;

    if (b->len == 0 || log->fd < 0) {
        b->len = 0;
        return;
    }
    pthread_mutex_lock(&log->lock);
    while (off < b->len) {
        ssize_t n = write(log->fd, b->buf + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* The log is unwritable; requests must not fail because of it. */
        off += (size_t)n;
    }
    pthread_mutex_unlock(&log->lock);
    b->len = 0;
}

void logbuf_free(struct logbuf *b)
{
    free(b->buf);
    memset(b, 0, sizeof(*b));
}
