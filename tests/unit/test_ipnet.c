/* IP ranges for key allowlists: parsing, canonical text, matching over IPv4 and IPv6. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "core/ipnet.h"
#include "unit.h"

static int contains(const struct iplist *l, const char *addr)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    return iplist_contains(l, (struct sockaddr *)&ss);
}

static const char *client(const struct iplist *trusted, const char *peer, const char *const *xff,
                          size_t n)
{
    static char text[INET6_ADDRSTRLEN];
    struct sockaddr_storage p, out;
    struct ipnet_text v[8];

    memset(&p, 0, sizeof(p));
    if (inet_pton(AF_INET, peer, &((struct sockaddr_in *)&p)->sin_addr) == 1)
        p.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, peer, &((struct sockaddr_in6 *)&p)->sin6_addr) == 1)
        p.ss_family = AF_INET6;
    for (size_t i = 0; i < n; i++) {
        v[i].base = xff[i];
        v[i].len = strlen(xff[i]);
    }
    ipnet_forwarded_client(trusted, (struct sockaddr *)&p, v, n, &out);
    if (out.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&out)->sin_addr, text, sizeof(text));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&out)->sin6_addr, text, sizeof(text));
    return text;
}

static void test_forwarded(void)
{
    char err[256];
    struct iplist *t = iplist_parse("10.0.0.0/8, 2001:db8::/32", err, sizeof(err));
    const char *one[] = {"203.0.113.9"};
    const char *chain[] = {"198.51.100.1, 203.0.113.9, 10.1.1.1"};
    const char *spoof[] = {"1.2.3.4", "203.0.113.9,10.0.0.7"};
    const char *garbage[] = {"203.0.113.9, not-an-ip, 10.0.0.8"};
    const char *ports[] = {"[2001:db8::5]:443, 192.0.2.1:5678"};
    const char *all_trusted[] = {"10.9.9.9, 10.0.0.3"};

    CHECK(t != NULL);
    /* An untrusted peer is the client, whatever it says. */
    CHECK_STR(client(t, "192.0.2.50", one, 1), "192.0.2.50");
    CHECK_STR(client(NULL, "10.0.0.1", one, 1), "10.0.0.1");
    /* A trusted peer: the right-most address that is not a trusted proxy. */
    CHECK_STR(client(t, "10.0.0.1", one, 1), "203.0.113.9");
    CHECK_STR(client(t, "10.0.0.1", chain, 1), "203.0.113.9");
    /* Several headers read as one list: a client's own X-Forwarded-For is to the left. */
    CHECK_STR(client(t, "10.0.0.1", spoof, 2), "203.0.113.9");
    /* Garbage stops at the last hop believed. */
    CHECK_STR(client(t, "10.0.0.1", garbage, 1), "10.0.0.8");
    CHECK_STR(client(t, "10.0.0.1", ports, 1), "192.0.2.1");
    CHECK_STR(client(t, "10.0.0.1", all_trusted, 1), "10.9.9.9");
    CHECK_STR(client(t, "10.0.0.1", NULL, 0), "10.0.0.1");
    free(t);
}

int main(void)
{
    struct ipnet n;
    char buf[IPNET_TEXT_MAX], err[256], text[512];
    struct iplist *l;

    CHECK(ipnet_parse("192.0.2.7", &n) == 0 && n.prefix == 128);
    ipnet_format(&n, buf);
    CHECK_STR(buf, "192.0.2.7");
    CHECK(ipnet_parse("10.0.0.0/8", &n) == 0 && n.prefix == 104);
    ipnet_format(&n, buf);
    CHECK_STR(buf, "10.0.0.0/8");
    CHECK(ipnet_parse("2001:DB8::/32", &n) == 0);
    ipnet_format(&n, buf);
    CHECK_STR(buf, "2001:db8::/32");
    CHECK(ipnet_parse("0.0.0.0/0", &n) == 0);
    CHECK(ipnet_parse("10.1.2.3/8", &n) != 0); /* host bits set */
    CHECK(ipnet_parse("10.0.0.0/33", &n) != 0);
    CHECK(ipnet_parse("300.1.1.1", &n) != 0);
    CHECK(ipnet_parse("example.com", &n) != 0);
    CHECK(ipnet_parse("", &n) != 0);
    CHECK(ipnet_parse("/8", &n) != 0);
    CHECK(ipnet_parse("10.0.0.0/", &n) != 0);

    l = iplist_parse("203.0.113.7, 198.51.100.0/24 2001:db8::/32,::1", err, sizeof(err));
    CHECK(l != NULL && l->n == 4);
    CHECK(iplist_format(l, text, sizeof(text)) == 0);
    CHECK_STR(text, "203.0.113.7,198.51.100.0/24,2001:db8::/32,::1");
    CHECK(contains(l, "203.0.113.7"));
    CHECK(!contains(l, "203.0.113.8"));
    CHECK(contains(l, "198.51.100.255"));
    CHECK(!contains(l, "198.51.101.0"));
    CHECK(contains(l, "2001:db8:1::5"));
    CHECK(!contains(l, "2001:db9::1"));
    CHECK(contains(l, "::1"));
    CHECK(!contains(l, "127.0.0.1"));
    /* An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) matches its IPv4 range. */
    CHECK(contains(l, "::ffff:198.51.100.3"));
    free(l);

    l = iplist_parse("", err, sizeof(err));
    CHECK(l != NULL && l->n == 0);
    free(l);
    l = iplist_parse("10.0.0.0/8,nonsense", err, sizeof(err));
    CHECK(l == NULL && strstr(err, "nonsense") != NULL);
    l = iplist_parse("0.0.0.0/0", err, sizeof(err));
    CHECK(l != NULL && contains(l, "8.8.8.8") && !contains(l, "::2"));
    free(l);
    test_forwarded();
    return unit_result();
}
