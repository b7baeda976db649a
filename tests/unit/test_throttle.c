/* The throttle policy: free attempts, then delays that double up to a cap, and a quiet window
 * that starts the count again. */
#include "auth/throttle.h"

#include <string.h>

#include "unit.h"

int main(void)
{
    struct throttle_policy p = {5, 3600, 15, 900};
    struct store_throttle t = {0};
    char key[64];

    /* Under the allowance: never a wait. */
    t.count = 4;
    t.last_at = 1000;
    CHECK(throttle_wait(&p, &t, 1000) == 0);
    /* The fifth failure makes the next attempt wait 15 s after it, the sixth 30 s, ... */
    t.count = 5;
    CHECK(throttle_wait(&p, &t, 1000) == 15);
    CHECK(throttle_wait(&p, &t, 1010) == 5);
    CHECK(throttle_wait(&p, &t, 1015) == 0);
    t.count = 6;
    CHECK(throttle_wait(&p, &t, 1000) == 30);
    t.count = 8;
    CHECK(throttle_wait(&p, &t, 1000) == 120);
    /* ... up to the cap. */
    t.count = 12;
    CHECK(throttle_wait(&p, &t, 1000) == 900);
    t.count = 1000000;
    CHECK(throttle_wait(&p, &t, 1000) == 900);
    /* A quiet window forgives everything. */
    CHECK(throttle_wait(&p, &t, 1000 + 3600) == 0);

    /* Addresses: IPv4 as it is, IPv6 by its /64, garbage as nothing. */
    throttle_address_key("192.0.2.7", key, sizeof(key));
    CHECK_STR(key, "192.0.2.7");
    throttle_address_key("2001:db8:1:2:3:4:5:6", key, sizeof(key));
    CHECK_STR(key, "2001:db8:1:2::/64");
    throttle_address_key("::ffff:192.0.2.7", key, sizeof(key));
    CHECK_STR(key, "192.0.2.7");
    throttle_address_key("not an address", key, sizeof(key));
    CHECK_STR(key, "");
    throttle_address_key(NULL, key, sizeof(key));
    CHECK_STR(key, "");
    return unit_result();
}
