/* The dashboard's pages and assets (embedded at build time), their Host check and CORS
 * preflights. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>
#include "http/internal.h"

/* ---- dashboard pages ---------------------------------------------------------------------- */

struct embedded_file {
    const char *name;
    const unsigned char *data;
    size_t len;
};
extern const struct embedded_file web_assets[];

static const struct embedded_file *asset(const char *name, size_t len)
{
    for (const struct embedded_file *f = web_assets; f->name != NULL; f++)
        if (strlen(f->name) == len && memcmp(f->name, name, len) == 0)
            return f;
    return NULL;
}

static const char *content_type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot == NULL)
        return "application/octet-stream";
    if (strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (strcmp(dot, ".svg") == 0)
        return "image/svg+xml";
    return "application/octet-stream";
}

static void send_asset(h2o_req_t *req, struct reqinfo *info, const struct embedded_file *f)
{
    http_response_head(req, info, 200, "OK", content_type_of(f->name), "no-cache", f->len);
    /* No inline script or style, no framing, no referrer: the pages handle sessions and keys. */
    http_add_header(
        req, "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
    http_add_header(req, "x-frame-options", "DENY");
    http_add_header(req, "referrer-policy", "no-referrer");
    http_log_request(req, info, 200);
    h2o_send_inline(req, (const char *)f->data, f->len);
}

static const char *const page_paths[] = {
    "/",
    "/signin",
    "/signup",
    "/invite",
    "/set-password",
    "/settings",
    "/settings/api-keys",
    "/settings/billing",
    "/settings/members",
    "/settings/security",
    "/dashboard",
};

/* With KONNECT_PUBLIC_URL set, the dashboard answers only at that host: a page or call asked for
 * under any other Host (a DNS-rebinding page that made its own name point here, say) is refused.
 * Returns 1 when the request may go on; otherwise sends 421. */
int http_dashboard_host_ok(h2o_req_t *req, struct reqinfo *info)
{
    const char *want = http_worker_of(req)->srv->cfg->public_host;

    if (want == NULL || h2o_lcstris(req->authority.base, req->authority.len, want, strlen(want)))
        return 1;
    req->http1_is_persistent = 0;
    http_send_error(req, info, KN_ERR_MISDIRECTED, NULL, NULL);
    return 0;
}

/* Serves the dashboard's pages and assets for GET and HEAD. Returns 1 when it answered. */
int http_handle_page(h2o_req_t *req, struct reqinfo *info)
{
    h2o_iovec_t p = req->path_normalized, m = req->method;
    const struct embedded_file *f = NULL;

    if (!h2o_memis(m.base, m.len, H2O_STRLIT("GET")) &&
        !h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return 0;
    if (p.len > 8 && memcmp(p.base, "/assets/", 8) == 0) {
        f = asset(p.base + 8, p.len - 8);
    } else {
        for (size_t i = 0; i < sizeof(page_paths) / sizeof(page_paths[0]); i++)
            if (h2o_memis(p.base, p.len, page_paths[i], strlen(page_paths[i])))
                f = asset(H2O_STRLIT("index.html"));
    }
    if (f == NULL)
        return 0;
    if (http_dashboard_host_ok(req, info))
        send_asset(req, info, f);
    return 1;
}

/* A browser's CORS preflight to the API gets a refusal that says why. */
int http_handle_preflight(h2o_req_t *req, struct reqinfo *info)
{
    h2o_iovec_t p = req->path_normalized;

    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) || p.len < 4 ||
        memcmp(p.base, "/v1/", 4) != 0 || http_find_header(req, NULL, "origin") == NULL)
        return 0;
    http_send_error(req, info, KN_ERR_BROWSER_NOT_ALLOWED, NULL, NULL);
    return 1;
}
