/* API authentication: the bearer header, the key's format and checksum, the key table probe; see
 * bearer.h. */
#include "auth/bearer.h"

#include <sodium.h>
#include <stdatomic.h>
#include <strings.h>

#include "limits/quota.h"

static int is_b64token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

int bearer_parse(const char *value, size_t len, const char **token, size_t *token_len)
{
    size_t i = 0, start, end;

    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    if (len - i < 7 || strncasecmp(value + i, "Bearer", 6) != 0 || value[i + 6] != ' ')
        return -1;
    i += 6;
    while (i < len && value[i] == ' ')
        i++;
    start = i;
    while (i < len && is_b64token_char((unsigned char)value[i]))
        i++;
    /* b64token may end with '=' padding. */
    while (i < len && value[i] == '=')
        i++;
    end = i;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    if (end == start || i != len)
        return -1;
    *token = value + start;
    *token_len = end - start;
    return 0;
}

enum kn_err auth_authenticate(struct keytable *kt, const uint8_t secret[APIKEY_SECRET_LEN],
                              const struct auth_input *in, struct keyrec **rec)
{
    const char *token;
    size_t token_len;
    enum apikey_mode mode;
    uint8_t hash[APIKEY_HASH_LEN];
    struct keyrec *r;
    int64_t t;

    *rec = NULL;
    if (in->header_count == 0)
        return KN_ERR_MISSING_API_KEY;
    if (in->header_count > 1 || bearer_parse(in->header, in->header_len, &token, &token_len) != 0)
        return KN_ERR_INVALID_API_KEY;
    if (apikey_parse(token, token_len, &mode) != 0)
        return KN_ERR_INVALID_API_KEY;
    apikey_hash(secret, token, token_len, hash);
    r = keytable_lookup(kt, hash);
    sodium_memzero(hash, sizeof(hash));
    if (r == NULL)
        return KN_ERR_INVALID_API_KEY;
    *rec = r;
    /* One load of the key's class: its revocation, expiry, rules and account as of one moment. */
    const struct keyclass *c = keyrec_class(r);
    if (c->revoked_at != 0)
        return KN_ERR_API_KEY_REVOKED;
    t = c->expires_at;
    if (t != 0 && t <= in->now)
        return KN_ERR_API_KEY_EXPIRED;
    const struct keyrules *rules = c->rules;
    if (rules != NULL && rules->allow != NULL && rules->allow->n != 0 &&
        (in->peer == NULL || !iplist_contains(rules->allow, in->peer)))
        return KN_ERR_IP_NOT_ALLOWED;
    if (c->acct != NULL && atomic_load_explicit(&c->acct->suspended_at, memory_order_acquire) != 0)
        return KN_ERR_ACCOUNT_SUSPENDED;
    return KN_OK;
}
