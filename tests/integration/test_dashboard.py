"""The dashboard's JSON API against the real server: sessions, CSRF, throttling, the key
lifecycle, members and invitations, the audit log, and isolation between accounts."""

import json
import os
import subprocess
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import KEY_RE, ServerTest  # noqa: E402

API = "/dashboard/api/"
PASSWORD = "correct horse battery staple"


class Browser:
    """A cookie jar and the CSRF token, like the dashboard's pages."""

    def __init__(self, srv):
        self.srv = srv
        self.s = requests.Session()
        self.csrf = None

    def call(self, method, path, body=None, csrf=True, headers=None):
        h = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        h.update(headers or {})
        r = self.s.request(method, self.srv.url + API + path, headers=h,
                           data=json.dumps(body) if body is not None else None, timeout=30)
        if r.ok and r.content and "csrf_token" in r.json():
            self.csrf = r.json()["csrf_token"]
        return r

    def signup(self, email):
        r = self.call("POST", "signup", {"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        return r.json()


class DashboardTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.srv = self.start()
        self.a = Browser(self.srv)
        self.a.signup("alice@example.com")

    def test_invoice_csv_is_a_download(self):
        month = time.strftime("%Y-%m", time.gmtime())
        r = self.a.s.get(f"{self.srv.url}{API}invoices/{month}.csv", timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers["Content-Type"], "text/csv; charset=utf-8")
        self.assertRegex(r.headers["Content-Disposition"],
                         rf'^attachment; filename="konnect-invoice-{month}-draft\.csv"$')
        self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
        self.assertEqual(r.headers["Cache-Control"], "no-store")
        self.assertTrue(r.text.splitlines()[0])
        # Like every dashboard call, it needs a session.
        r = requests.get(f"{self.srv.url}{API}invoices/{month}.csv", timeout=10)
        self.assertError(r, 401, "not_signed_in")

    def create_key(self, b, name="web", mode="test", **extra):
        r = b.call("POST", "keys", dict(name=name, mode=mode, **extra))
        self.assertEqual(r.status_code, 201, r.text)
        self.assertEqual(r.headers["Cache-Control"], "no-store")
        secret = r.json()["secret"]
        self.assertRegex(secret, KEY_RE)
        self.secrets.append(secret)
        return r.json()["key"], secret

    def test_session_cookie_and_document(self):
        cookie = [c for c in self.a.s.cookies][0]
        self.assertEqual(cookie.name, "konnect_session")
        self.assertFalse(cookie.secure)
        self.assertTrue(cookie.has_nonstandard_attr("HttpOnly"))
        r = self.a.call("GET", "session")
        self.assertEqual(r.status_code, 200)
        doc = r.json()
        self.assertEqual(doc["user"]["email"], "alice@example.com")
        self.assertEqual(doc["role"], "owner")
        self.assertEqual(r.headers["Cache-Control"], "no-store")
        raw = requests.post(self.srv.url + API + "signin",
                            json={"email": "alice@example.com", "password": PASSWORD})
        self.assertIn("SameSite=Strict", raw.headers["Set-Cookie"])
        self.assertIn("HttpOnly", raw.headers["Set-Cookie"])
        # Behind a proxy that says HTTPS, the cookie is Secure only when the proxy is trusted.
        self.assertNotIn("Secure", raw.headers["Set-Cookie"])

    def test_every_state_changing_call_needs_session_and_csrf(self):
        key, _ = self.create_key(self.a)
        calls = [("POST", "signout", None), ("POST", "sessions/revoke-all", None),
                 ("POST", "keys", {"name": "x", "mode": "test"}),
                 ("POST", f"keys/{key['id']}/roll", {"grace_seconds": 0}),
                 ("POST", f"keys/{key['id']}/revoke", None),
                 ("PATCH", f"keys/{key['id']}", {"name": "y"}),
                 ("POST", "members/invite", {"email": "x@example.com"})]
        anonymous = Browser(self.srv)
        for method, path, body in calls:
            with self.subTest(path=path):
                self.assertError(anonymous.call(method, path, body), 401, "not_signed_in")
                self.assertError(self.a.call(method, path, body, csrf=False), 403, "csrf_failed")
                self.assertError(self.a.call(method, path, body, headers={"X-CSRF-Token": "x"}),
                                 403, "csrf_failed")
                self.assertError(self.a.call(method, path, body,
                                             headers={"Origin": "https://evil.example"}),
                                 403, "csrf_failed")
        # Nothing happened: still one active key and a working session.
        keys = self.a.call("GET", "keys").json()["data"]
        self.assertEqual([k["status"] for k in keys], ["active"])
        for path in ("session", "keys", "members", "audit"):
            self.assertError(anonymous.call("GET", path), 401, "not_signed_in")
        # Sign-in from another origin is refused too (login CSRF).
        r = requests.post(self.srv.url + API + "signin", headers={"Origin": "https://evil.example"},
                          json={"email": "alice@example.com", "password": PASSWORD})
        self.assertError(r, 403, "csrf_failed")

    def test_key_lifecycle_reaches_the_api_at_once(self):
        key, secret = self.create_key(self.a, "laptop", environment="staging")
        self.assertEqual((key["name"], key["mode"], key["environment"], key["status"]),
                         ("laptop", "test", "staging", "active"))
        self.assertEqual(key["created_by"], "alice@example.com")
        listed = self.a.call("GET", "keys")
        self.assertNotIn(secret, listed.text)
        self.assertNotIn("secret", listed.json()["data"][0])
        self.assertEqual(self.srv.post(secret).status_code, 200)
        r = self.a.call("POST", f"keys/{key['id']}/revoke")
        self.assertEqual(r.json()["key"]["status"], "revoked")
        self.assertError(self.srv.post(secret), 401, "api_key_revoked")

    def test_roll_with_grace_and_rename_and_allowlist(self):
        key, old = self.create_key(self.a, "server", mode="live")
        r = self.a.call("POST", f"keys/{key['id']}/roll", {"grace_seconds": 3600})
        self.assertEqual(r.status_code, 201, r.text)
        new = r.json()["secret"]
        self.secrets.append(new)
        self.assertEqual(r.json()["rolled"]["status"], "rolled")
        self.assertIsNotNone(r.json()["rolled"]["expires"])
        for s in (old, new):
            self.assertError(self.srv.post(s), 502, "model_backend_error")
        self.assertError(self.a.call("POST", f"keys/{key['id']}/roll", {"grace_seconds": 0}),
                         409, "key_not_active")
        self.assertError(self.a.call("POST", f"keys/{key['id']}/roll", {"grace_seconds": -1}),
                         400, "invalid_parameter", "grace_seconds")
        nid = r.json()["key"]["id"]
        r = self.a.call("PATCH", f"keys/{nid}", {"name": "renamed",
                                                 "ip_allowlist": ["192.0.2.0/24"]})
        self.assertEqual((r.json()["key"]["name"], r.json()["key"]["ip_allowlist"]),
                         ("renamed", ["192.0.2.0/24"]))
        self.assertError(self.srv.post(new), 401, "ip_not_allowed")
        self.assertError(self.a.call("PATCH", f"keys/{nid}", {"ip_allowlist": ["nope"]}), 400,
                         "invalid_parameter", "ip_allowlist")
        self.a.call("PATCH", f"keys/{nid}", {"ip_allowlist": []})
        self.assertError(self.srv.post(new), 502, "model_backend_error")

    def test_create_validation(self):
        for body, param in (({"mode": "test"}, "name"), ({"name": "", "mode": "test"}, "name"),
                            ({"name": "x", "mode": "prod"}, "mode"),
                            ({"name": "x", "mode": "test", "environment": "qa"}, "environment"),
                            ({"name": "x", "mode": "test", "expires_in_days": 0},
                             "expires_in_days"),
                            ({"name": "x", "mode": "test", "ip_allowlist": "10.0.0.0/8"},
                             "ip_allowlist")):
            with self.subTest(body=body):
                r = self.a.call("POST", "keys", body)
                self.assertEqual(r.status_code, 400, r.text)
                self.assertEqual(r.json()["error"]["param"], param)
        key, secret = self.create_key(self.a, "short", expires_in_days=30)
        self.assertGreater(key["expires"], key["created"] + 29 * 86400)

    def test_accounts_are_isolated(self):
        key, secret = self.create_key(self.a, "alice-key")
        b = Browser(self.srv)
        b.signup("bob@example.com")
        self.assertEqual(b.call("GET", "keys").json()["data"], [])
        for method, path, body in (("POST", f"keys/{key['id']}/revoke", None),
                                   ("POST", f"keys/{key['id']}/roll", {}),
                                   ("PATCH", f"keys/{key['id']}", {"name": "mine"})):
            self.assertError(b.call(method, path, body), 404, "not_found", "id")
        self.assertEqual(self.srv.post(secret).status_code, 200)
        audit_b = b.call("GET", "audit").json()["data"]
        self.assertTrue(audit_b)
        self.assertNotIn("alice", json.dumps(audit_b))
        self.assertNotIn(key["id"], json.dumps(audit_b))
        self.assertEqual([m["email"] for m in b.call("GET", "members").json()["data"]],
                         ["bob@example.com"])

    def test_signin_throttling(self):
        anon = Browser(self.srv)
        for _ in range(5):
            self.assertError(anon.call("POST", "signin", {"email": "alice@example.com",
                                                          "password": "wrong password"}),
                             401, "invalid_credentials")
        r = anon.call("POST", "signin", {"email": "alice@example.com", "password": PASSWORD})
        err = self.assertError(r, 429, "too_many_attempts")
        self.assertIn("Too many wrong passwords", err["message"])
        self.assertGreater(int(r.headers["Retry-After"]), 0)
        # An unknown email is answered like a wrong password.
        self.assertError(anon.call("POST", "signin", {"email": "nobody@example.com",
                                                      "password": PASSWORD}),
                         401, "invalid_credentials")
        log = self.a.call("GET", "audit").json()["data"]
        results = [e["result"] for e in log if e["action"] == "user.signin"]
        self.assertIn("failed", results)
        self.assertIn("throttled", results)
        self.assertNotIn("wrong password", json.dumps([e["target"] for e in log]))

    def test_invitations_and_members(self):
        r = self.a.call("POST", "members/invite", {"email": "carol@example.com"})
        self.assertEqual(r.status_code, 201, r.text)
        url = r.json()["invite_url"]
        self.assertTrue(url.startswith("/invite#token="))
        token = url.split("=", 1)[1]
        invites = self.a.call("GET", "members").json()["invites"]
        self.assertEqual([i["email"] for i in invites], ["carol@example.com"])
        c = Browser(self.srv)
        self.assertError(c.call("POST", "invites/accept", {"token": token, "password": "short"}),
                         400, "invalid_parameter", "password")
        r = c.call("POST", "invites/accept", {"token": token, "password": PASSWORD})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual((r.json()["role"], r.json()["account"]["email"]),
                         ("member", "alice@example.com"))
        key, _ = self.create_key(self.a, "shared")
        self.assertEqual([k["id"] for k in c.call("GET", "keys").json()["data"]], [key["id"]])
        self.assertError(Browser(self.srv).call("POST", "invites/accept",
                                                {"token": token, "password": PASSWORD}),
                         400, "invite_invalid", "token")
        members = [m["email"] for m in self.a.call("GET", "members").json()["data"]]
        self.assertEqual(members, ["alice@example.com", "carol@example.com"])

    def test_signout_and_revoke_all_sessions(self):
        other = Browser(self.srv)
        self.assertEqual(other.call("POST", "signin", {"email": "alice@example.com",
                                                       "password": PASSWORD}).status_code, 200)
        r = self.a.call("POST", "sessions/revoke-all")
        self.assertEqual(r.status_code, 204)
        self.assertError(other.call("GET", "session"), 401, "not_signed_in")
        self.assertError(self.a.call("GET", "session"), 401, "not_signed_in")
        third = Browser(self.srv)
        third.call("POST", "signin", {"email": "alice@example.com", "password": PASSWORD})
        self.assertEqual(third.call("POST", "signout").status_code, 204)
        self.assertError(third.call("GET", "keys"), 401, "not_signed_in")

    def test_operator_password_reset(self):
        p = subprocess.run([harness.BINARY, "user", "set-password", "--email",
                            "alice@example.com"], input="a brand new password\n",
                           env=self.data.env(), capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertError(self.a.call("GET", "session"), 401, "not_signed_in")
        anon = Browser(self.srv)
        self.assertError(anon.call("POST", "signin", {"email": "alice@example.com",
                                                      "password": PASSWORD}),
                         401, "invalid_credentials")
        self.assertEqual(anon.call("POST", "signin", {"email": "alice@example.com",
                                                      "password": "a brand new password"})
                         .status_code, 200)

    def test_audit_log_never_holds_secrets(self):
        key, secret = self.create_key(self.a, "audited")
        self.a.call("POST", f"keys/{key['id']}/roll", {"grace_seconds": 0})
        log = self.a.call("GET", "audit").json()
        actions = [e["action"] for e in log["data"]]
        for action in ("user.signup", "key.create", "key.roll"):
            self.assertIn(action, actions)
        self.assertIsNone(log["next"])
        text = json.dumps(log) + self.data.cli("audit").stdout
        for s in self.secrets:
            self.assertNotIn(s, text)
            self.assertNotIn(s[8:], text)
        entry = [e for e in log["data"] if e["action"] == "key.create"][0]
        self.assertEqual(entry["actor"], "alice@example.com")
        self.assertEqual(entry["ip"], "127.0.0.1")

    def test_pages_and_browser_preflight(self):
        r = requests.get(self.srv.url + "/settings/api-keys")
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/html"))
        csp = r.headers["Content-Security-Policy"]
        self.assertIn("script-src 'self'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertIn("/assets/app.js", r.text)
        self.assertEqual(requests.get(self.srv.url + "/assets/app.js").status_code, 200)
        # The entry's imports are modules beside it, served as JavaScript.
        r = requests.get(self.srv.url + "/assets/router.js")
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/javascript"))
        self.assertError(requests.get(self.srv.url + "/assets/nope.js"), 404, "not_found")
        r = requests.options(self.srv.url + "/v1/chat",
                             headers={"Origin": "https://app.example",
                                      "Access-Control-Request-Method": "POST",
                                      "Access-Control-Request-Headers": "authorization"})
        err = self.assertError(r, 403, "browser_not_allowed")
        self.assertIn("server", err["message"])
        self.assertNotIn("Access-Control-Allow-Origin", r.headers)


class GraceAndProxyTest(ServerTest):
    def test_rolled_key_expires_after_its_grace_period(self):
        srv = self.start()
        b = Browser(srv)
        b.signup("grace@example.com")
        r = b.call("POST", "keys", {"name": "g", "mode": "test"})
        key, old = r.json()["key"], r.json()["secret"]
        r = b.call("POST", f"keys/{key['id']}/roll", {"grace_seconds": 2})
        new = r.json()["secret"]
        self.secrets += [old, new]
        self.assertEqual(srv.post(old).status_code, 200)
        self.assertEqual(srv.post(new).status_code, 200)
        time.sleep(2.2)
        self.assertError(srv.post(old), 401, "api_key_expired")
        self.assertEqual(srv.post(new).status_code, 200)
        statuses = {k["id"]: k["status"] for k in b.call("GET", "keys").json()["data"]}
        self.assertEqual(statuses[key["id"]], "expired")

    def test_secure_cookie_behind_a_trusted_proxy(self):
        body = {"email": "proxy@example.com", "password": PASSWORD}
        https = {"X-Forwarded-Proto": "https"}
        srv = self.start(KONNECT_TRUST_PROXY=1)
        r = requests.post(srv.url + API + "signup", json=body, headers=https)
        self.assertEqual(r.status_code, 201, r.text)
        self.assertIn("; Secure", r.headers["Set-Cookie"])
        # The origin check follows the scheme the proxy reports.
        host = srv.url.split("//", 1)[1]
        r = requests.post(srv.url + API + "signin", json=body,
                          headers=dict(https, Origin=f"https://{host}"))
        self.assertEqual(r.status_code, 200, r.text)
        self.assertError(requests.post(srv.url + API + "signin", json=body,
                                       headers=dict(https, Origin=f"http://{host}")),
                         403, "csrf_failed")
        srv.stop()
        # An untrusted proxy header changes nothing.
        srv = self.start()
        r = requests.post(srv.url + API + "signin", json=body, headers=https)
        self.assertNotIn("Secure", r.headers["Set-Cookie"])


class SignupModesTest(ServerTest):
    def test_closed_signup(self):
        srv = self.start(KONNECT_SIGNUP="closed")
        r = Browser(srv).call("POST", "signup", {"email": "x@example.com", "password": PASSWORD})
        self.assertError(r, 403, "signup_closed")

    def test_duplicate_and_weak_signup(self):
        srv = self.start()
        b = Browser(srv)
        b.signup("dup@example.com")
        self.assertError(Browser(srv).call("POST", "signup", {"email": "DUP@example.com",
                                                              "password": PASSWORD}),
                         409, "email_taken", "email")
        self.assertError(Browser(srv).call("POST", "signup", {"email": "new@example.com",
                                                              "password": "short"}),
                         400, "invalid_parameter", "password")
        # dev@example.com was made with the CLI: its owner has no password until one is set.
        self.assertError(Browser(srv).call("POST", "signin", {"email": "dev@example.com",
                                                              "password": PASSWORD}),
                         401, "invalid_credentials")


if __name__ == "__main__":
    harness.main()
