/* A key as JSON; see keyjson.h. */
#include "keys/keyjson.h"

#include <string.h>

#include "core/util.h"
#include "keys/lifecycle.h"

static json_t *time_or_null(int64_t t)
{
    return t != 0 ? json_integer(t) : json_null();
}

json_t *keyjson_doc(const struct store_key *k, uint64_t requests, int64_t now)
{
    json_t *allow = json_array();
    const char *p = k->ip_allowlist;

    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        json_array_append_new(allow, json_stringn(p, len));
        p += len + (p[len] == ',');
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:o}", "id", k->id, "name",
                          k->name, "mode", k->mode, "environment", k->environment, "hint", k->hint,
                          "status", lifecycle_status(k, now), "created", (json_int_t)k->created_at,
                          "created_by", k->created_by, "requests", (json_int_t)requests,
                          "ip_allowlist", allow);
    if (o == NULL)
        kn_fatal("cannot build a key's JSON");
    json_object_set_new(o, "last_used", time_or_null(k->last_used_at));
    json_object_set_new(o, "expires", time_or_null(k->expires_at));
    json_object_set_new(o, "revoked", time_or_null(k->revoked_at));
    json_object_set_new(o, "rolled_to", k->rolled_to[0] ? json_string(k->rolled_to) : json_null());
    json_t *models = json_null();
    if (k->models[0] != '\0') {
        models = json_array();
        for (p = k->models; *p != '\0';) {
            size_t len = strcspn(p, ",");
            json_array_append_new(models, json_stringn(p, len));
            p += len + (p[len] == ',');
        }
    }
    json_object_set_new(o, "models", models);
    json_object_set_new(o, "requests_per_minute",
                        k->requests_per_minute > 0 ? json_integer(k->requests_per_minute)
                                                   : json_null());
    json_object_set_new(o, "refused", json_integer(k->refused));
    json_object_set_new(o, "monthly_requests",
                        k->monthly_requests > 0 ? json_integer(k->monthly_requests) : json_null());
    return o;
}
