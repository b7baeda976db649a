/* Throttles for people guessing passwords or creating accounts in bulk, the way OWASP's
 * authentication guidance describes: counted per email and address and per address (never per
 * email alone, so that a stranger cannot lock the real user out from elsewhere), with delays that
 * grow with every attempt beyond a free allowance instead of a hard lockout. The counters live in
 * the store (store_throttle_*); this module is the policy, pure arithmetic. */
#ifndef KN_AUTH_THROTTLE_H
#define KN_AUTH_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* `limit` attempts are free while each comes within `window` seconds of the one before; every
 * attempt beyond them must wait after the last one, starting at `base_s` and doubling each time,
 * up to `max_s`. A quiet `window` starts the count again. */
struct throttle_policy {
    int64_t limit, window, base_s, max_s;
};

/* Wrong passwords for one email from one address (sign-in, invitations, password changes). */
extern const struct throttle_policy throttle_signin_pair;
/* Wrong passwords from one address, whatever the email. */
extern const struct throttle_policy throttle_signin_address;
/* Wrong two-factor codes for one user, from anywhere: whoever gives them has the password, so
 * spreading guesses over many addresses must not help (ten free, then growing delays). */
extern const struct throttle_policy throttle_code_user;

/* Returns the seconds to wait at `now` before the next attempt that counter t counts is allowed,
 * or 0 when it is allowed now. */
int64_t throttle_wait(const struct throttle_policy *p, const struct store_throttle *t, int64_t now);

/* The key an address is throttled under: the address itself for IPv4, its /64 network for IPv6
 * (one host is given a whole /64). Writes "" for an address that does not parse. */
void throttle_address_key(const char *ip, char *out, size_t outsize);

#endif
