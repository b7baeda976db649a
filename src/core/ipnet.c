/* IP ranges (CIDR): allowlists, trusted proxies, the forwarded client address; see ipnet.h. */
#include "core/ipnet.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int is_v4(const uint8_t addr[16])
{
    return memcmp(addr, v4_mapped, 12) == 0;
}

int ipnet_parse(const char *s, struct ipnet *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    struct ipnet n;
    long long prefix;
    int v4;

    if (hlen == 0 || hlen >= sizeof(host))
        return -1;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(&n, 0, sizeof(n));
    if (inet_pton(AF_INET, host, n.addr + 12) == 1) {
        memcpy(n.addr, v4_mapped, 12);
        v4 = 1;
    } else if (inet_pton(AF_INET6, host, n.addr) == 1) {
        v4 = 0;
    } else {
        return -1;
    }
    if (slash == NULL)
        prefix = v4 ? 32 : 128;
    else if (kn_parse_int(slash + 1, 0, v4 ? 32 : 128, &prefix) != 0)
        return -1;
    n.prefix = (uint8_t)(v4 ? prefix + 96 : prefix);
    /* Host bits must be zero, so that "10.1.2.3/8" is caught as a likely mistake. */
    for (int bit = n.prefix; bit < 128; bit++)
        if (n.addr[bit / 8] & (0x80 >> (bit % 8)))
            return -1;
    *out = n;
    return 0;
}

void ipnet_format(const struct ipnet *n, char buf[IPNET_TEXT_MAX])
{
    char host[INET6_ADDRSTRLEN];
    int v4 = is_v4(n->addr) && n->prefix >= 96;
    int prefix = v4 ? n->prefix - 96 : n->prefix;

    if (v4)
        inet_ntop(AF_INET, n->addr + 12, host, sizeof(host));
    else
        inet_ntop(AF_INET6, n->addr, host, sizeof(host));
    if (prefix == (v4 ? 32 : 128))
        snprintf(buf, IPNET_TEXT_MAX, "%s", host);
    else
        snprintf(buf, IPNET_TEXT_MAX, "%s/%d", host, prefix);
}

struct iplist *iplist_parse(const char *text, char *err, size_t errsize)
{
    struct iplist *l = kn_calloc(1, sizeof(*l) + IPLIST_MAX * sizeof(l->nets[0]));
    const char *p = text;

    while (*p != '\0') {
        char item[IPNET_TEXT_MAX + 8];
        size_t len = strcspn(p, ", \t\n");
        if (len == 0) {
            p++;
            continue;
        }
        if (len >= sizeof(item)) {
            snprintf(err, errsize, "'%.*s…' is not an IP address or CIDR range", 20, p);
            goto fail;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (l->n == IPLIST_MAX) {
            snprintf(err, errsize, "an allowlist holds at most %d ranges", IPLIST_MAX);
            goto fail;
        }
        if (ipnet_parse(item, &l->nets[l->n]) != 0) {
            snprintf(err, errsize,
                     "'%s' is not an IP address or CIDR range (such as 203.0.113.7, "
                     "203.0.113.0/24 or 2001:db8::/32, with no host bits set)",
                     item);
            goto fail;
        }
        l->n++;
        p += len;
    }
    return kn_realloc(l, sizeof(*l) + l->n * sizeof(l->nets[0]));
fail:
    free(l);
    return NULL;
}

int iplist_format(const struct iplist *l, char *buf, size_t bufsize)
{
    size_t used = 0;

    if (bufsize == 0)
        return -1;
    buf[0] = '\0';
    for (size_t i = 0; l != NULL && i < l->n; i++) {
        char one[IPNET_TEXT_MAX];
        ipnet_format(&l->nets[i], one);
        int w = snprintf(buf + used, bufsize - used, "%s%s", i ? "," : "", one);
        if (w < 0 || (size_t)w >= bufsize - used)
            return -1;
        used += (size_t)w;
    }
    return 0;
}

int iplist_contains(const struct iplist *l, const struct sockaddr *sa)
{
    uint8_t a[16];

    if (sa->sa_family == AF_INET) {
        memcpy(a, v4_mapped, 12);
        memcpy(a + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else {
        return 0;
    }
    for (size_t i = 0; i < l->n; i++) {
        const struct ipnet *n = &l->nets[i];
        int full = n->prefix / 8, rest = n->prefix % 8;
        if (memcmp(a, n->addr, (size_t)full) != 0)
            continue;
        if (rest == 0 || ((a[full] ^ n->addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0)
            return 1;
    }
    return 0;
}

/* Parses one X-Forwarded-For entry: an address, optionally bracketed (IPv6) and with a port, as
 * some proxies write them. Returns 0 and fills *out, or -1. */
static int parse_forwarded(const char *s, size_t len, struct sockaddr_storage *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *end = s + len;

    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (s < end && *s == '[') {
        const char *close = memchr(s, ']', (size_t)(end - s));
        if (close == NULL)
            return -1;
        s++;
        end = close;
    } else if (memchr(s, ':', (size_t)(end - s)) != NULL &&
               memchr(s, '.', (size_t)(end - s)) != NULL) {
        end = memchr(s, ':', (size_t)(end - s)); /* "192.0.2.7:5678" */
    }
    if (end <= s || (size_t)(end - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(end - s));
    host[end - s] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)out)->sin_addr) == 1) {
        out->ss_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
        out->ss_family = AF_INET6;
        return 0;
    }
    return -1;
}

static void copy_addr(struct sockaddr_storage *out, const struct sockaddr *sa)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET)
        memcpy(out, sa, sizeof(struct sockaddr_in));
    else if (sa->sa_family == AF_INET6)
        memcpy(out, sa, sizeof(struct sockaddr_in6));
}

void ipnet_forwarded_client(const struct iplist *trusted, const struct sockaddr *peer,
                            const struct ipnet_text *xff, size_t n, struct sockaddr_storage *out)
{
    struct sockaddr_storage hop;

    copy_addr(out, peer);
    if (trusted == NULL || trusted->n == 0 || !iplist_contains(trusted, peer))
        return;
    for (size_t i = n; i-- > 0;) {
        const char *v = xff[i].base;
        size_t end = xff[i].len;
        while (end > 0) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            if (parse_forwarded(v + start, end - start, &hop) != 0)
                return; /* Garbage: keep the last hop we believed. */
            *out = hop;
            if (!iplist_contains(trusted, (struct sockaddr *)&hop))
                return;
            end = start > 0 ? start - 1 : 0;
        }
    }
}
