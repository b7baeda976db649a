/* Throttles for password guessing and sign-up floods: their delays and lockouts; see throttle.h. */
#include "auth/throttle.h"

#include <string.h>

#include "core/ipnet.h"
#include "core/util.h"

const struct throttle_policy throttle_signin_pair = {5, 3600, 15, 900};
const struct throttle_policy throttle_signin_address = {20, 3600, 15, 900};
const struct throttle_policy throttle_code_user = {10, 3600, 60, 3600};

int64_t throttle_wait(const struct throttle_policy *p, const struct store_throttle *t, int64_t now)
{
    int64_t over, delay, until;

    if (t->count < p->limit || now - t->last_at >= p->window)
        return 0;
    over = t->count - p->limit;
    delay = p->base_s;
    while (over-- > 0 && delay < p->max_s)
        delay *= 2;
    if (delay > p->max_s)
        delay = p->max_s;
    until = t->last_at + delay;
    return until > now ? until - now : 0;
}

void throttle_address_key(const char *ip, char *out, size_t outsize)
{
    struct ipnet n;

    out[0] = '\0';
    if (ip == NULL || ipnet_parse(ip, &n) != 0)
        return;
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(n.addr, v4_mapped, sizeof(v4_mapped)) != 0 && n.prefix > 64) {
        memset(n.addr + 8, 0, 8);
        n.prefix = 64;
    }
    char text[IPNET_TEXT_MAX];
    ipnet_format(&n, text);
    kn_strlcpy(out, text, outsize);
}
