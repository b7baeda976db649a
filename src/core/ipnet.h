/* IP address ranges (CIDR) for per-key allowlists. */
#ifndef KN_CORE_IPNET_H
#define KN_CORE_IPNET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define IPLIST_MAX 64     /* Ranges one allowlist may hold. */
#define IPNET_TEXT_MAX 50 /* "ffff:…:ffff/128" and its NUL fit. */

/* One range: an IPv4 or IPv6 network and its prefix length. IPv4 ranges are stored as
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) with the prefix raised by 96, so that one
 * comparison covers clients that arrive over either family. */
struct ipnet {
    uint8_t addr[16];
    uint8_t prefix; /* 0..128 */
};

/* An allowlist: n ranges. Immutable once built. */
struct iplist {
    size_t n;
    struct ipnet nets[];
};

/* Parses "192.0.2.7", "192.0.2.0/24", "2001:db8::1" or "2001:db8::/32". Host bits below the
 * prefix must be zero. Returns 0 and writes *out, or -1 when s is not such a range. */
int ipnet_parse(const char *s, struct ipnet *out);

/* Writes the canonical text of n ("192.0.2.0/24", a lone address without "/32") into buf. */
void ipnet_format(const struct ipnet *n, char buf[IPNET_TEXT_MAX]);

/* Parses a comma- or space-separated list of ranges into a new allowlist (free with free()), or
 * returns NULL and writes a message naming the bad entry into err. An empty text gives an empty
 * list (n == 0), which callers treat as "no allowlist". */
struct iplist *iplist_parse(const char *text, char *err, size_t errsize);

/* Writes the canonical comma-separated text of l into buf. Returns 0, or -1 when it does not fit.
 */
int iplist_format(const struct iplist *l, char *buf, size_t bufsize);

/* Returns 1 when the address sa (AF_INET or AF_INET6) lies in one of l's ranges. */
int iplist_contains(const struct iplist *l, const struct sockaddr *sa);

/* One header value, borrowed: the X-Forwarded-For values of a request, in the order received. */
struct ipnet_text {
    const char *base;
    size_t len;
};

/* The client behind trusted proxies: given the socket peer and the request's X-Forwarded-For
 * values, writes the client's address to *out. Only a peer in `trusted` is believed; then the
 * list is read from the right, skipping addresses that are themselves trusted proxies, and the
 * first one that is not is the client (if all are, the left-most). An entry that is not an
 * address stops the walk at the last hop believed, never at something a client wrote. With a
 * NULL or empty list, or an untrusted peer, the client is the peer. */
void ipnet_forwarded_client(const struct iplist *trusted, const struct sockaddr *peer,
                            const struct ipnet_text *xff, size_t n, struct sockaddr_storage *out);

#endif
