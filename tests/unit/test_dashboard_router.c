/* The dashboard's router on a real SQLite store, called as the dashboard's lane calls it: which
 * calls go to the password lane, unknown paths and methods, the access each route demands (no
 * session, a session, its CSRF token, the dashboard's own origin), and the path parameter
 * reaching its handler. */
#include <stdlib.h>
#include <unistd.h>

#include "core/config.h"
#include "core/util.h"
#include "dashboard/dashboard.h"
#include "unit.h"

static struct dashboard *d;
static struct dash_response res;

static void call(const char *method, const char *path, const char *body, const char *cookie,
                 const char *csrf, const char *origin)
{
    struct dash_request req = {
        .method = method,
        .path = path,
        .body = body != NULL ? body : "",
        .body_len = body != NULL ? strlen(body) : 0,
        .cookie = cookie,
        .csrf_token = csrf,
        .origin = origin,
        .host = "dash.test",
        .content_type = "application/json",
        .ip = "127.0.0.1",
        .request_id = "req_0000000000000000000router",
    };
    free(res.body);
    dashboard_handle(d, &req, &res);
}

static int body_has(const char *s)
{
    return res.body != NULL && strstr(res.body, s) != NULL;
}

static int error_is(const char *code)
{
    char want[64];
    snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
    return body_has(want);
}

static void test_lanes(void)
{
    CHECK(dashboard_hashes_passwords("POST", "/dashboard/api/signin"));
    CHECK(dashboard_hashes_passwords("POST", "/dashboard/api/signup"));
    CHECK(dashboard_hashes_passwords("POST", "/dashboard/api/password"));
    CHECK(dashboard_hashes_passwords("POST", "/dashboard/api/invites/accept"));
    CHECK(!dashboard_hashes_passwords("GET", "/dashboard/api/signin")); /* No such route. */
    CHECK(!dashboard_hashes_passwords("POST", "/dashboard/api/keys/key_1/revoke"));
    CHECK(!dashboard_hashes_passwords("GET", "/dashboard/api/keys"));
    CHECK(!dashboard_hashes_passwords("POST", "/v1/signin"));
}

static void test_unknown_paths_and_methods(void)
{
    call("GET", "/dashboard/api/nope", NULL, NULL, NULL, NULL);
    CHECK(res.status == 404 && error_is("not_found"));
    call("GET", "/dashboard/apikeys", NULL, NULL, NULL, NULL);
    CHECK(res.status == 404);
    call("POST", "/dashboard/api/keys/a/b/roll", NULL, NULL, NULL, NULL);
    CHECK(res.status == 404); /* "*" is one segment. */
    call("POST", "/dashboard/api/keys//roll", NULL, NULL, NULL, NULL);
    CHECK(res.status == 404); /* ... and never an empty one. */
    char long_path[200];
    snprintf(long_path, sizeof(long_path), "/dashboard/api/keys/%0100d/roll", 7);
    call("POST", long_path, NULL, NULL, NULL, NULL);
    CHECK(res.status == 404);
    call("DELETE", "/dashboard/api/keys", NULL, NULL, NULL, NULL);
    CHECK(res.status == 405 && body_has("This call only accepts GET, POST."));
    call("GET", "/dashboard/api/signout", NULL, NULL, NULL, NULL);
    CHECK(res.status == 405 && body_has("only accepts POST"));
}

static void test_access(void)
{
    char cookie[300], csrf[128];

    /* Signed-in and owner routes, without a session: 401, and the cookie is cleared. */
    call("GET", "/dashboard/api/session", NULL, NULL, NULL, NULL);
    CHECK(res.status == 401 && error_is("not_signed_in"));
    CHECK(res.set_cookie[0] != '\0');
    call("POST", "/dashboard/api/members/invite", "{}", NULL, NULL, "http://dash.test");
    CHECK(res.status == 401);
    call("GET", "/dashboard/api/session", NULL, "konnect_session=forged", NULL, NULL);
    CHECK(res.status == 401);

    /* An open route from another origin is refused before it runs. */
    const char *signup = "{\"email\":\"owner@example.com\",\"password\":\"correct horse battery\"}";
    call("POST", "/dashboard/api/signup", signup, NULL, NULL, "http://evil.test");
    CHECK(res.status == 403 && error_is("csrf_failed"));
    call("POST", "/dashboard/api/signup", signup, NULL, NULL, "https://dash.test");
    CHECK(res.status == 403); /* The scheme is part of the origin. */
    call("POST", "/dashboard/api/signup", signup, NULL, NULL, "http://dash.test");
    CHECK(res.status == 201 || res.status == 200);
    CHECK(res.set_cookie[0] != '\0');
    size_t n = strcspn(res.set_cookie, ";");
    CHECK(n < sizeof(cookie));
    memcpy(cookie, res.set_cookie, n);
    cookie[n] = '\0';

    call("GET", "/dashboard/api/session", NULL, cookie, NULL, NULL);
    CHECK(res.status == 200 && body_has("owner@example.com"));
    const char *t = res.body != NULL ? strstr(res.body, "\"csrf_token\":\"") : NULL;
    CHECK(t != NULL);
    if (t == NULL)
        return;
    t += 14;
    n = strcspn(t, "\"");
    CHECK(n < sizeof(csrf));
    memcpy(csrf, t, n);
    csrf[n] = '\0';

    /* A state-changing call with a session needs its CSRF token and our origin. */
    call("PATCH", "/dashboard/api/keys/key_nope", "{\"name\":\"x\"}", cookie, NULL, NULL);
    CHECK(res.status == 403 && error_is("csrf_failed"));
    call("PATCH", "/dashboard/api/keys/key_nope", "{\"name\":\"x\"}", cookie, "wrong", NULL);
    CHECK(res.status == 403 && error_is("csrf_failed"));
    call("PATCH", "/dashboard/api/keys/key_nope", "{\"name\":\"x\"}", cookie, csrf,
         "http://evil.test");
    CHECK(res.status == 403 && error_is("csrf_failed"));
    /* With both, the route's handler runs with the path's segment as its parameter. */
    call("PATCH", "/dashboard/api/keys/key_nope", "{\"name\":\"x\"}", cookie, csrf,
         "http://dash.test");
    CHECK(res.status == 404 && body_has("No such API key.") && body_has("\"param\":\"id\""));
    /* A GET needs no token. */
    call("GET", "/dashboard/api/audit", NULL, cookie, NULL, NULL);
    CHECK(res.status == 200);
    /* Signing out ends the session: the same cookie is refused after. */
    call("POST", "/dashboard/api/signout", NULL, cookie, csrf, NULL);
    CHECK(res.status == 204);
    call("GET", "/dashboard/api/session", NULL, cookie, NULL, NULL);
    CHECK(res.status == 401);
}

int main(void)
{
    char dir[] = "/tmp/konnect-router-XXXXXX", err[256], cmd[64];
    struct kn_config cfg;
    uint8_t secret[32] = {1, 2, 3};

    CHECK(mkdtemp(dir) != NULL);
    unsetenv("KONNECT_DATABASE");
    unsetenv("KONNECT_PUBLIC_URL");
    unsetenv("KONNECT_SIGNUP");
    if (config_load(&cfg, err, sizeof(err)) != 0)
        kn_fatal("%s", err);
    config_set_data_dir(&cfg, dir);
    if ((d = dashboard_new(&cfg, secret, NULL, err, sizeof(err))) == NULL)
        kn_fatal("%s", err);
    test_lanes();
    test_unknown_paths_and_methods();
    test_access();
    free(res.body);
    dashboard_free(d);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return unit_result();
}
