"""The HTTP layer tried as an attacker would: proxies that may or may not be trusted, ambiguous
request framing (request smuggling), memory held before authentication, and connections from
one address."""

import json
import os
import re
import signal
import socket
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest  # noqa: E402
from test_accounts import Browser, SourceAdapter  # noqa: E402


def session_from(address):
    s = requests.Session()
    s.mount("http://", SourceAdapter(address))
    return s


def access_log(srv):
    lines = []
    for line in srv.output().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def remotes_of(srv, path, n):
    """The client addresses of the first n access-log entries for path, waiting for them: a
    request's entry is written after its answer."""
    deadline = time.time() + 5
    while True:
        remotes = [e["remote"] for e in access_log(srv) if e["path"] == path]
        if len(remotes) >= n or time.time() > deadline:
            return remotes[:n]
        time.sleep(0.05)


class TrustedProxyTest(ServerTest):
    """KONNECT_TRUSTED_PROXIES=127.0.0.1: requests from 127.0.0.1 are a proxy's, from 127.0.0.2
    a client's own."""

    def setUp(self):
        super().setUp()
        self.srv = self.start(KONNECT_TRUSTED_PROXIES="127.0.0.1/32, 10.0.0.0/8")
        self.forwarded = self.key("dev@example.com", "test", "fwd", "--allow-ip", "203.0.113.9")
        self.proxy = self.key("dev@example.com", "test", "proxy", "--allow-ip", "127.0.0.1")

    def chat(self, key, address, **headers):
        h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        h.update(headers)
        return session_from(address).post(self.srv.url + "/v1/chat", headers=h,
                                          data='{"message": "Hello"}', timeout=10)

    def test_allowlists_see_the_forwarded_client_only_behind_a_trusted_proxy(self):
        xff = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
        self.assertEqual(self.chat(self.forwarded, "127.0.0.1", **xff).status_code, 200)
        # Behind the proxy, the proxy's own address is not the client's.
        self.assertError(self.chat(self.proxy, "127.0.0.1", **xff), 401, "ip_not_allowed")
        # A trusted hop in the chain is skipped; the client's own claim to the left is not read.
        self.assertEqual(self.chat(self.forwarded, "127.0.0.1",
                                   **{"X-Forwarded-For": "1.2.3.4, 203.0.113.9, 10.1.2.3"})
                         .status_code, 200)
        # A client that is not a trusted proxy cannot claim an address.
        self.assertError(self.chat(self.forwarded, "127.0.0.2", **xff), 401, "ip_not_allowed")
        self.assertEqual(remotes_of(self.srv, "/v1/chat", 4),
                         ["203.0.113.9", "203.0.113.9", "203.0.113.9", "127.0.0.2"])

    def test_a_client_cannot_push_the_proxy_s_line_out_of_reach(self):
        # The proxy appends its own X-Forwarded-For line after however many the client sent;
        # only the last address is the one it vouches for.
        for spoofed in (1, 16, 40):
            head = "".join("X-Forwarded-For: 203.0.113.9\r\n" for _ in range(spoofed))
            body = b'{"message":"hi"}'
            got = raw(self.srv.port, (
                f"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.forwarded}"
                f"\r\nContent-Type: application/json\r\n{head}"
                f"X-Forwarded-For: 198.51.100.1\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode() + body)
            with self.subTest(spoofed=spoofed):
                self.assertTrue(got.startswith(b"HTTP/1.1 401 "), got[:200])
                self.assertIn(b"ip_not_allowed", got)
        self.assertEqual(remotes_of(self.srv, "/v1/chat", 3), ["198.51.100.1"] * 3)

    def test_throttles_and_audit_use_the_forwarded_client(self):
        Browser(self.srv).signup("alice@example.com")

        def signin(xff, password):
            return requests.post(self.srv.url + "/dashboard/api/signin",
                                 headers={"Content-Type": "application/json",
                                          "X-Forwarded-For": xff},
                                 data=json.dumps({"email": "alice@example.com",
                                                  "password": password}), timeout=30)

        for i in range(5):
            self.assertError(signin("203.0.113.50", f"wrong {i} xxxxxx"), 401,
                             "invalid_credentials")
        self.assertError(signin("203.0.113.50", "correct horse battery staple"), 429,
                         "too_many_attempts")
        # Everyone behind the same proxy is not throttled with the guesser.
        self.assertEqual(signin("203.0.113.51", "correct horse battery staple").status_code,
                         200)
        log = json.loads(self.data.cli("audit", "--json").stdout)
        ips = {e["ip"] for e in log if e["action"] == "user.signin"}
        self.assertEqual(ips, {"203.0.113.50", "203.0.113.51"})

    def test_forwarded_proto_is_believed_only_from_a_trusted_proxy(self):
        body = json.dumps({"email": "bob@example.com", "password": "correct horse battery"})
        h = {"Content-Type": "application/json", "X-Forwarded-Proto": "https"}
        r = session_from("127.0.0.1").post(self.srv.url + "/dashboard/api/signup", headers=h,
                                           data=body, timeout=30)
        self.assertEqual(r.status_code, 201, r.text)
        self.assertIn("Secure", r.headers["Set-Cookie"])
        body = json.dumps({"email": "eve@example.com", "password": "correct horse battery"})
        r = session_from("127.0.0.2").post(self.srv.url + "/dashboard/api/signup", headers=h,
                                           data=body, timeout=30)
        self.assertEqual(r.status_code, 201, r.text)
        self.assertNotIn("Secure", r.headers["Set-Cookie"])


class CookiesAndOriginsTest(ServerTest):
    def test_over_https_the_cookie_is_host_prefixed_and_hsts_is_sent(self):
        srv = self.start(KONNECT_TRUSTED_PROXIES="127.0.0.1")
        https = {"Content-Type": "application/json", "X-Forwarded-Proto": "https"}
        s = requests.Session()
        r = s.post(srv.url + "/dashboard/api/signup", headers=https, timeout=30,
                   data=json.dumps({"email": "h@example.com", "password": "correct horse battery"}))
        self.assertEqual(r.status_code, 201, r.text)
        cookie = r.headers["Set-Cookie"]
        self.assertTrue(cookie.startswith("__Host-konnect_session="), cookie)
        for attr in ("; Secure", "; Path=/", "; HttpOnly", "; SameSite=Strict"):
            self.assertIn(attr, cookie)
        self.assertNotIn("Domain", cookie)
        self.assertEqual(r.headers["Strict-Transport-Security"], "max-age=31536000")
        token = r.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
        # The prefixed cookie is the session over HTTPS; the unprefixed name is not read there,
        # so a cookie planted by another host over plain HTTP cannot stand in for it.
        ok = requests.get(srv.url + "/dashboard/api/session", timeout=10,
                          headers={"X-Forwarded-Proto": "https",
                                   "Cookie": f"__Host-konnect_session={token}"})
        self.assertEqual(ok.status_code, 200, ok.text)
        planted = requests.get(srv.url + "/dashboard/api/session", timeout=10,
                               headers={"X-Forwarded-Proto": "https",
                                        "Cookie": f"konnect_session={token}"})
        self.assertError(planted, 401, "not_signed_in")
        # Every answer over HTTPS carries HSTS, API errors included; none over plain HTTP.
        r = requests.post(srv.url + "/v1/chat", headers={"X-Forwarded-Proto": "https"}, timeout=10)
        self.assertEqual(r.headers.get("Strict-Transport-Security"), "max-age=31536000")
        r = requests.post(srv.url + "/v1/chat", timeout=10)
        self.assertNotIn("Strict-Transport-Security", r.headers)

    def test_public_url_is_the_only_dashboard_host_and_origin(self):
        srv = self.start(KONNECT_PUBLIC_URL="http://dash.example.test")
        key = self.key()
        host = {"Host": "dash.example.test"}
        # A page or call under another Host (DNS rebinding) is refused.
        r = requests.get(srv.url + "/signin", timeout=10)
        self.assertError(r, 421, "misdirected_request")
        r = requests.post(srv.url + "/dashboard/api/signin", timeout=10,
                          headers={"Content-Type": "application/json", "Host": "evil.test:80"},
                          data=json.dumps({"email": "a@example.com", "password": "x" * 12}))
        self.assertError(r, 421, "misdirected_request")
        self.assertEqual(requests.get(srv.url + "/signin", headers=host, timeout=10).status_code,
                         200)
        body = json.dumps({"email": "p@example.com", "password": "correct horse battery"})
        ct = {"Content-Type": "application/json"}
        r = requests.post(srv.url + "/dashboard/api/signup", timeout=30, data=body,
                          headers=dict(ct, Origin=srv.url, **host))
        self.assertError(r, 403, "csrf_failed")
        r = requests.post(srv.url + "/dashboard/api/signup", timeout=30, data=body,
                          headers=dict(ct, Origin="http://dash.example.test", **host))
        self.assertEqual(r.status_code, 201, r.text)
        # The API for keys answers at any host.
        self.assertEqual(srv.post(key).status_code, 200)


def raw(port, data, source="127.0.0.1", timeout=5.0, wait_close=True):
    """Sends bytes on a new connection and reads until the server closes it (or timeout)."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.sendall(data)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if not wait_close and b"\r\n\r\n" in got:
                break
    except socket.timeout:
        pass
    s.close()
    return got


class FramingTest(ServerTest):
    """Request smuggling: a body whose end two servers could read differently is refused with
    400 and the connection closed, so that nothing after it is read as a request."""

    def setUp(self):
        super().setUp()
        self.srv = self.start()
        self.k = self.key()

    def request(self, version, headers, body):
        head = f"POST /v1/chat HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {self.k}\r\n"
        head += "Content-Type: application/json\r\n" + "".join(h + "\r\n" for h in headers)
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        return raw(self.srv.port, head.encode() + b"\r\n" + body + smuggled)

    def assert_refused(self, got, why):
        self.assertTrue(got.startswith(b"HTTP/1.1 400 "), got[:200])
        self.assertEqual(got.count(b"HTTP/1.1 "), 1, "nothing after it was answered")
        self.assertIn(b"Connection: close", got)
        body = json.loads(got.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(body["error"]["code"], "bad_request")
        self.assertIn(why, body["error"]["message"])
        self.assertRegex(body["error"]["request_id"], r"^req_")

    def test_ambiguous_framings_are_refused(self):
        body = b'{"message":"hi"}'
        n = len(body)
        for version in ("1.1", "1.0"):
            with self.subTest(version=version):
                self.assert_refused(self.request(version, [f"Content-Length: {n}",
                                                           f"Content-Length: {n + 40}"], body),
                                    "different values")
                self.assert_refused(self.request(version, [f"Content-Length: {n}",
                                                           "Transfer-Encoding: chunked"],
                                                 f"{n:x}\r\n".encode() + body + b"\r\n0\r\n\r\n"),
                                    "Transfer-Encoding" if version == "1.0" else "both")
        self.assert_refused(self.request("1.0", ["Transfer-Encoding: chunked"],
                                         f"{n:x}\r\n".encode() + body + b"\r\n0\r\n\r\n"),
                            "HTTP/1.0")
        self.assert_refused(self.request("1.1", ["Transfer-Encoding: chunked",
                                                 "Transfer-Encoding: chunked"],
                                         f"{n:x}\r\n".encode() + body + b"\r\n0\r\n\r\n"),
                            "more than one")

    def test_unambiguous_framings_still_work(self):
        body = b'{"message":"hi"}'
        n = len(body)
        # Equal Content-Length values say the same thing (RFC 9112 allows them).
        for headers, payload in (([f"Content-Length: {n}"], body),
                                 ([f"Content-Length: {n}", f"Content-Length: {n}"], body),
                                 (["Transfer-Encoding: chunked"],
                                  f"{n:x}\r\n".encode() + body + b"\r\n0\r\n\r\n")):
            got = self.request("1.1", headers + ["Connection: close"], payload)
            self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:300])


class ProtocolTest(ServerTest):
    def test_no_cleartext_http2(self):
        # Prior knowledge and Upgrade: h2c both stay HTTP/1.1: HTTP/2 without TLS would hold
        # many streams' bodies before authentication and keep a connection open after a 401.
        srv = self.start()
        got = raw(srv.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 400 "), got[:200])
        key = self.key()
        body = b'{"message":"hi"}'
        got = raw(srv.port, (
            f"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body, wait_close=False)
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:200])

    def test_a_query_string_does_not_change_what_a_path_is(self):
        # /v1/chat/completions?api-version=... is the same call, with the same body limit.
        srv = self.start()
        key = self.key()
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 70000}]})
        for path in ("/v1/chat/completions", "/v1/chat/completions?api-version=2024-06-01"):
            with self.subTest(path=path):
                r = srv.post(key, body, path=path)
                self.assertEqual(r.status_code, 200, r.text[:300])


class MemoryBeforeAuthenticationTest(ServerTest):
    def test_first_request_with_a_bad_key_is_refused_before_its_body(self):
        srv = self.start()
        for key in ("", "Authorization: Bearer sk_live_" + "A" * 38 + "\r\n"):
            head = (f"POST /v1/chat HTTP/1.1\r\nHost: x\r\n{key}Content-Type: application/json"
                    "\r\nContent-Length: 1000000\r\n\r\n").encode()
            t0 = time.monotonic()
            got = raw(srv.port, head + b"{", timeout=5)  # the body never comes
            self.assertLess(time.monotonic() - t0, 2, "answered without waiting for the body")
            self.assertTrue(got.startswith(b"HTTP/1.1 401 "), got[:200])
            self.assertIn(b"www-authenticate: bearer", got.lower())
            self.assertIn(b"Connection: close", got)
        # A dashboard call larger than the dashboard takes, and a body sent to a page.
        for path in ("/dashboard/api/signin", "/healthz"):
            head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: 900000\r\n\r\n").encode()
            got = raw(srv.port, head, timeout=5)
            self.assertTrue(got.startswith(b"HTTP/1.1 413 "), got[:200])
        # A valid key's request is read in full, as always.
        key = self.key()
        body = json.dumps({"message": "x" * 5000}).encode()
        head = (f"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.assertTrue(raw(srv.port, head + body).startswith(b"HTTP/1.1 200 "))

    def test_a_bad_key_with_its_body_in_hand_keeps_the_connection(self):
        # Refusing early saves only a body still to come (the test above); a 401 whose body
        # came with its head keeps the connection, as any answer does: bad keys must cost no
        # more than good ones.
        srv = self.start()
        key = self.key()
        body = b'{"message":"hi"}'

        def req(k, last=False):
            close = "Connection: close\r\n" if last else ""
            return (f"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {k}\r\n"
                    f"Content-Type: application/json\r\n{close}Content-Length: {len(body)}"
                    "\r\n\r\n").encode() + body
        for requests_, expected in (((req("nope"), req(key, True)), [b"401", b"200"]),
                                    ((req(key), req("nope"), req(key, True)),
                                     [b"200", b"401", b"200"])):
            got = raw(srv.port, b"".join(requests_))
            self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3}) ", got), expected)

    def test_connections_per_address_are_capped_except_for_trusted_proxies(self):
        srv = self.start(KONNECT_MAX_CONNECTIONS_PER_IP=3, KONNECT_TRUSTED_PROXIES="127.0.0.20")
        held = []
        for _ in range(3):
            c = socket.socket()
            c.bind(("127.0.0.19", 0))
            c.connect(("127.0.0.1", srv.port))
            held.append(c)
        time.sleep(0.2)
        got = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.19")
        self.assertTrue(got.startswith(b"HTTP/1.1 503 "), got[:200])
        body = json.loads(got.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(body["error"]["code"], "too_many_connections")
        self.assertIn("one address", body["error"]["message"])
        # Another address is unaffected; a trusted proxy is not capped.
        ok = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        self.assertTrue(raw(srv.port, ok, source="127.0.0.21").startswith(b"HTTP/1.1 200 "))
        for _ in range(5):
            c = socket.socket()
            c.bind(("127.0.0.20", 0))
            c.connect(("127.0.0.1", srv.port))
            held.append(c)
        self.assertTrue(raw(srv.port, ok, source="127.0.0.20").startswith(b"HTTP/1.1 200 "))
        # Closing frees the address's share.
        for c in held[:3]:
            c.close()
        time.sleep(0.3)
        self.assertTrue(raw(srv.port, ok, source="127.0.0.19").startswith(b"HTTP/1.1 200 "))
        for c in held[3:]:
            c.close()


class ProcessTest(ServerTest):
    def test_a_silent_control_client_never_stalls_billing(self):
        """The store thread used to wait 200 ms for each control-socket client to speak, with
        every live answer waiting behind it."""
        from fake_backend import FakeBackend
        backend = FakeBackend().start()
        self.addCleanup(backend.stop)
        srv = self.start(KONNECT_MODEL_URL=backend.url)
        live = self.key(mode="live", name="prod")
        silent = []
        for _ in range(8):
            c = socket.socket(socket.AF_UNIX)
            c.connect(os.path.join(self.data.path, "konnect.sock"))
            silent.append(c)
        time.sleep(0.1)
        t0 = time.monotonic()
        r = srv.post(live)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertLess(time.monotonic() - t0, 1.0)
        # The command line still reaches the server once a slot frees.
        p = self.data.cli("key", "create", "--account", "dev@example.com", "--mode", "test",
                          "--name", "later")
        self.secrets.append(p.stdout.strip())
        self.assertIn("applied by every running server (1)", p.stderr)
        for c in silent:
            c.close()

    def test_the_model_api_key_can_come_from_a_file(self):
        from fake_backend import FakeBackend
        backend = FakeBackend(api_key="backend-secret-from-file").start()
        self.addCleanup(backend.stop)
        path = os.path.join(self.data.path, "model-key")
        with open(path, "w") as f:
            f.write("backend-secret-from-file\n")
        os.chmod(path, 0o600)
        srv = self.start(KONNECT_MODEL_URL=backend.url, KONNECT_MODEL_API_KEY_FILE=path)
        live = self.key(mode="live", name="prod")
        self.assertEqual(srv.post(live).status_code, 200)
        srv.stop()
        self.assertNotIn("backend-secret-from-file", srv.output())
        p = self.data.cli("plans", check=False, KONNECT_MODEL_API_KEY_FILE=path,
                          KONNECT_MODEL_API_KEY="x")
        self.assertEqual(p.returncode, 2)
        self.assertIn("not both", p.stderr)

    def test_the_server_leaves_no_core_dump(self):
        import resource
        import subprocess
        import tempfile
        version = subprocess.run([harness.BINARY, "version"], capture_output=True, text=True)
        if "debug" in version.stdout:
            self.skipTest("debug builds keep core dumps, for debugging")
        with open("/proc/sys/kernel/core_pattern") as f:
            if f.read().startswith("|"):
                self.skipTest("core dumps go to a program on this machine")
        cwd = tempfile.mkdtemp(prefix="konnect-core-")

        def allow_cores():
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                                      resource.RLIM_INFINITY))
        # The machine writes cores for a process that allows them (else the test proves nothing).
        control = subprocess.Popen(["sleep", "30"], cwd=cwd, preexec_fn=allow_cores)
        control.send_signal(signal.SIGABRT)
        control.wait()
        if not [n for n in os.listdir(cwd) if n.startswith("core")]:
            self.skipTest("this machine writes no core dumps")
        for n in os.listdir(cwd):
            os.remove(os.path.join(cwd, n))
        port = harness.free_port()
        proc = subprocess.Popen([harness.BINARY, "serve", "--listen", f"127.0.0.1:{port}"],
                                cwd=cwd, env=self.data.env(), preexec_fn=allow_cores,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGABRT)
        proc.wait()
        self.assertEqual([n for n in os.listdir(cwd) if n.startswith("core")], [])
        import shutil
        shutil.rmtree(cwd, ignore_errors=True)


class NoProxySettingTest(ServerTest):
    def test_without_the_setting_forwarded_headers_change_nothing(self):
        srv = self.start()
        key = self.key("dev@example.com", "test", "fwd", "--allow-ip", "203.0.113.9")
        r = srv.post(key, headers={"X-Forwarded-For": "203.0.113.9"})
        self.assertError(r, 401, "ip_not_allowed")
        srv.stop()
        self.assertEqual([e["remote"] for e in access_log(srv) if e["path"] == "/v1/chat"],
                         ["127.0.0.1"])

    def test_old_setting_still_works_with_a_warning(self):
        srv = self.start(KONNECT_TRUST_PROXY=1)
        time.sleep(0.1)
        self.assertIn("KONNECT_TRUSTED_PROXIES", srv.output())

    def test_bad_proxy_list_is_refused_at_start(self):
        p = self.data.cli("plans", check=False, KONNECT_TRUSTED_PROXIES="10.0.0.1/8")
        self.assertEqual(p.returncode, 2)
        self.assertIn("KONNECT_TRUSTED_PROXIES", p.stderr)


if __name__ == "__main__":
    harness.main()
