"""POST /v1/chat, /healthz and /readyz against the real server: every documented outcome."""

import json
import os
import signal
import socket
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import DataDir, ServerTest  # noqa: E402


def raw_request(port, data, timeout=5):
    """Sends raw bytes and returns everything the server answers before closing or timing out."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except socket.timeout:
            pass
        return b"".join(chunks)


class ChatTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.test_key = self.key()
        self.live_key = self.key(mode="live", name="production")
        self.srv = self.start()

    def test_test_key_gets_mock_response(self):
        r = self.srv.post(self.test_key)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers["Content-Type"], "application/json")
        self.assertRegex(r.headers["request-id"], r"^req_[0-9A-Za-z]{24}$")
        body = r.json()
        self.assertRegex(body["id"], r"^chat_[0-9A-Za-z]{24}$")
        self.assertEqual(body["object"], "chat.response")
        self.assertLess(abs(body["created"] - time.time()), 60)
        self.assertEqual(body["model"], "konnect-default")
        self.assertIs(body["livemode"], False)
        self.assertEqual(body["message"]["role"], "assistant")
        self.assertIn("mock", body["message"]["content"])
        self.assertGreater(body["usage"]["input_tokens"], 0)
        self.assertGreater(body["usage"]["output_tokens"], 0)
        self.assertEqual(set(body), {"id", "object", "created", "model", "livemode", "message",
                                     "finish_reason", "usage"})

    def test_mock_is_deterministic(self):
        a = self.srv.post(self.test_key, {"message": "Same input"}).json()
        b = self.srv.post(self.test_key, {"message": "Same input"}).json()
        c = self.srv.post(self.test_key, {"message": "Other input"}).json()
        self.assertEqual(a["message"]["content"], b["message"]["content"])
        self.assertNotEqual(a["id"], b["id"])
        self.assertNotEqual(a["message"]["content"], c["message"]["content"])
        d = self.srv.post(self.test_key, {"message": "Same input", "model": "my-model"}).json()
        self.assertEqual(d["model"], "my-model")

    def test_live_key_with_unreachable_backend_is_not_billed(self):
        r = self.srv.post(self.live_key)
        self.assertError(r, 502, "model_backend_error")
        self.assertIn("not billed", r.json()["error"]["message"])

    def test_missing_key(self):
        r = self.srv.post(None)
        self.assertError(r, 401, "missing_api_key")
        # RFC 6750 section 3.1: no error attribute when no credentials were sent.
        self.assertEqual(r.headers["WWW-Authenticate"], 'Bearer realm="konnect"')

    def test_malformed_and_unknown_keys(self):
        bad = self.test_key[:-1] + ("A" if self.test_key[-1] != "A" else "B")
        other = DataDir()
        try:
            other.account()
            unknown = other.key()  # valid format and checksum, but not in this store
        finally:
            other.cleanup()
        self.secrets.append(unknown)
        cases = {
            "Basic Zm9vOmJhcg==": "scheme",
            "Bearer": "no token",
            "Bearer ": "empty token",
            "Bearer sk_test_abc": "short",
            f"Bearer {bad}": "bad checksum",
            f"Bearer {self.test_key} extra": "trailing",
            f"Token {self.test_key}": "wrong scheme",
            f"Bearer {unknown}": "unknown",
            "Bearer " + "x" * 4000: "long",
        }
        for value, why in cases.items():
            with self.subTest(why):
                r = self.srv.post(headers={"Authorization": value})
                err = self.assertError(r, 401, "invalid_api_key")
                self.assertIn('error="invalid_token"', r.headers["WWW-Authenticate"])
                if len(value) > 12:
                    self.assertNotIn(value[7:], err["message"])

    def test_two_authorization_headers_are_refused(self):
        r = harness_raw_two_auth(self.srv.port, self.test_key)
        self.assertIn(b"401", r.split(b"\r\n")[0])
        self.assertIn(b"invalid_api_key", r)

    def test_revocation_acts_on_the_very_next_request(self):
        key = self.key(name="to-revoke")
        self.assertEqual(self.srv.post(key).status_code, 200)
        with requests.Session() as s:  # the same keep-alive connection before and after
            h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            self.assertEqual(s.post(self.srv.url + "/v1/chat", headers=h,
                                    json={"message": "a"}).status_code, 200)
            self.data.cli("key", "revoke", self.data.key_id(key))
            r = s.post(self.srv.url + "/v1/chat", headers=h, json={"message": "a"})
            self.assertError(r, 401, "api_key_revoked")
        self.assertEqual(self.srv.post(self.test_key).status_code, 200)

    def test_revoke_by_secret(self):
        key = self.key(name="by-secret")
        self.assertEqual(self.srv.post(key).status_code, 200)
        p = self.data.cli("key", "revoke", key)
        self.assertNotIn(key, p.stdout + p.stderr)
        self.assertError(self.srv.post(key), 401, "api_key_revoked")

    def test_key_created_while_running_works_at_once(self):
        key = self.key(name="new")
        self.assertEqual(self.srv.post(key).status_code, 200)

    def test_expired_keys(self):
        soon = self.key("dev@example.com", "test", "short-lived", "--expires-in", "1s")
        now = self.key(name="expire-now")
        self.assertEqual(self.srv.post(now).status_code, 200)
        self.data.cli("key", "expire", self.data.key_id(now))
        self.assertError(self.srv.post(now), 401, "api_key_expired")
        time.sleep(2.1)
        self.assertError(self.srv.post(soon), 401, "api_key_expired")
        later = self.key(name="later")
        self.data.cli("key", "expire", self.data.key_id(later), "--in", "1h")
        self.assertEqual(self.srv.post(later).status_code, 200)

    def test_request_validation(self):
        k = self.test_key
        self.assertError(self.srv.post(k, "{"), 400, "invalid_json")
        self.assertError(self.srv.post(k, ""), 400, "invalid_json")
        self.assertError(self.srv.post(k, "[1]"), 400, "invalid_json")
        self.assertError(self.srv.post(k, '{"message":"a","message":"b"}'), 400, "invalid_json")
        self.assertError(self.srv.post(k, b'{"message":"\xff"}'), 400, "invalid_json")
        self.assertError(self.srv.post(k, {}), 400, "missing_parameter", "message")
        self.assertError(self.srv.post(k, {"message": 42}), 400, "invalid_parameter", "message")
        self.assertError(self.srv.post(k, {"message": ""}), 400, "invalid_parameter", "message")
        self.assertError(self.srv.post(k, {"message": "a" * 32769}), 400, "invalid_parameter",
                         "message")
        self.assertEqual(self.srv.post(k, {"message": "é" * 16384}).status_code, 200)
        self.assertError(self.srv.post(k, {"message": "a", "model": ["x"]}), 400,
                         "invalid_parameter", "model")
        self.assertError(self.srv.post(k, {"mesage": "typo"}), 400, "unknown_parameter", "mesage")
        self.assertError(self.srv.post(k, {"message": "a", "stream": "yes"}), 400,
                         "invalid_parameter", "stream")

    def test_bodies_that_break_error_messages(self):
        # A JSON error right after a cut UTF-8 sequence, and an unknown member named like a key:
        # both get their 400, the second without the key, and the server stays up.
        r = self.srv.post(self.test_key, b'{"a\\ud\xc3\xa9": 1}')
        self.assertError(r, 400, "invalid_json")
        r = self.srv.post(self.test_key, b'{"message": "\xc3"}')
        self.assertError(r, 400, "invalid_json")
        r = self.srv.post(self.test_key, {"message": "a", self.test_key: 1})
        err = self.assertError(r, 400, "unknown_parameter", "sk_test_[redacted]")
        self.assertNotIn(self.test_key[8:], r.text)
        self.assertEqual(self.srv.post(self.test_key).status_code, 200)

    def test_content_type(self):
        k = self.test_key
        self.assertError(self.srv.post(k, headers={"Content-Type": "text/plain"}), 415,
                         "unsupported_media_type")
        r = requests.post(self.srv.url + "/v1/chat", data=b'{"message":"a"}',
                          headers={"Authorization": f"Bearer {k}"})
        self.assertError(r, 415, "unsupported_media_type")
        ok = self.srv.post(k, headers={"Content-Type": "Application/JSON; charset=utf-8"})
        self.assertEqual(ok.status_code, 200)

    def test_methods_and_paths(self):
        r = requests.get(self.srv.url + "/v1/chat")
        self.assertError(r, 405, "method_not_allowed")
        self.assertEqual(r.headers["Allow"], "POST")
        r = requests.post(self.srv.url + "/healthz")
        self.assertError(r, 405, "method_not_allowed")
        self.assertEqual(r.headers["Allow"], "GET, HEAD")
        self.assertError(requests.get(self.srv.url + "/v2/chat"), 404, "not_found")
        self.assertError(self.srv.post(self.test_key, path="/v1/chat/x"), 404, "not_found")
        # The query string does not change the route.
        self.assertEqual(self.srv.post(self.test_key, path="/v1/chat?x=1").status_code, 200)

    def post_or_reset(self, **kw):
        """h2o answers 413 as soon as it knows a body is too large and closes the connection
        without draining it, so a client still writing may see a reset instead of the answer."""
        try:
            return requests.post(self.srv.url + "/v1/chat", **kw)
        except requests.ConnectionError:
            return None

    def test_body_too_large(self):
        h = {"Authorization": f"Bearer {self.test_key}", "Content-Type": "application/json"}
        # A client that asks first (Expect: 100-continue) always gets the JSON answer.
        head = (b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                self.test_key.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: 2000000\r\n\r\n")
        resp = raw_request(self.srv.port, head)
        self.assertTrue(resp.startswith(b"HTTP/1.1 413"), resp[:80])
        self.assertIn(b"request_too_large", resp)
        self.assertIn(b"request-id", resp.lower())
        r = self.post_or_reset(data=b'{"message":"' + b"a" * (1024 * 1024 + 10) + b'"}',
                               headers=h)
        if r is not None:
            self.assertError(r, 413, "request_too_large")
        # Chunked bodies are counted as they arrive.
        def gen():
            for _ in range(20):
                yield b"a" * 65536 + b"b" * 100
        r = self.post_or_reset(data=gen(), headers=h)
        if r is not None:
            self.assertError(r, 413, "request_too_large")
        # The server is still fine.
        self.assertEqual(self.srv.post(self.test_key).status_code, 200)

    def test_headers_too_large(self):
        r = self.srv.post(self.test_key, headers={"X-Padding": "p" * 20000})
        self.assertError(r, 431, "headers_too_large")
        # Beyond h2o's own parser limit (about 400 KiB) the server answers a plain 400 and closes
        # the connection; the client may see the answer or a reset, but never a hang.
        try:
            resp = raw_request(self.srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " +
                               b"a" * 500000 + b"\r\n\r\n")
            self.assertTrue(resp == b"" or resp.startswith(b"HTTP/1.1 400"), resp[:100])
        except ConnectionResetError:
            pass
        self.assertEqual(requests.get(self.srv.url + "/healthz").status_code, 200)

    def test_garbage_http_gets_an_answer(self):
        resp = raw_request(self.srv.port, b"THIS IS NOT HTTP\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 400"), resp[:100])
        resp = raw_request(self.srv.port, b"POST /v1/chat HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
        self.assertIn(b"400", resp.split(b"\r\n")[0])
        self.assertIn(b"request-id", resp.lower())
        resp = raw_request(self.srv.port, b"POST /v1/chat HTTP/1.1\r\nHost: x\r\n"
                           b"Expect: something-else\r\nContent-Length: 5\r\n\r\n")
        self.assertIn(b"417", resp.split(b"\r\n")[0])
        self.assertEqual(requests.get(self.srv.url + "/healthz").status_code, 200)

    def test_health_and_readiness(self):
        r = requests.get(self.srv.url + "/healthz")
        self.assertEqual((r.status_code, r.json()), (200, {"status": "ok"}))
        self.assertIn("request-id", r.headers)
        r = requests.head(self.srv.url + "/healthz")
        self.assertEqual((r.status_code, r.text), (200, ""))
        r = requests.get(self.srv.url + "/readyz")
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json()["status"], "ready")
        self.assertEqual(r.json()["keys"], 2)
        c = r.json()["components"]
        self.assertEqual((c["store"]["status"], c["store"]["backend"]), ("ok", "sqlite"))
        self.assertEqual((c["ledger"]["status"], c["ledger"]["spooled"]), ("ok", 0))
        self.assertEqual(c["counters"]["where"], "local")
        self.assertTrue(r.json()["node"])

    def test_keep_alive_and_concurrency(self):
        errors = []

        def client(key):
            with requests.Session() as s:
                h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                for i in range(20):
                    r = s.post(self.srv.url + "/v1/chat", headers=h, json={"message": f"m{i}"})
                    if r.status_code != 200:
                        errors.append(r.text)

        keys = [self.key(name=f"c{i}") for i in range(8)]
        threads = [threading.Thread(target=client, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_last_used_is_recorded(self):
        key = self.key(name="used")
        for _ in range(3):
            self.srv.post(key)
        time.sleep(1.5)
        keys = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                        "--json").stdout)
        k = [k for k in keys if k["name"] == "used"][0]
        self.assertIsNotNone(k["last_used"])
        self.assertEqual(k["requests"], 3)

    def test_access_log_names_key_never_secret(self):
        r = self.srv.post(self.test_key)
        rid = r.headers["request-id"]
        # A secret put in the URL by mistake is redacted too.
        requests.get(self.srv.url + f"/v1/chat/{self.test_key}?key={self.test_key}")
        time.sleep(0.3)
        lines = [json.loads(l) for l in self.srv.output().splitlines() if l.startswith("{")]
        mine = [l for l in lines if l["request_id"] == rid]
        self.assertEqual(len(mine), 1)
        self.assertEqual(mine[0]["status"], 200)
        self.assertTrue(mine[0]["key_id"].startswith("key_"))
        self.assertEqual(mine[0]["mode"], "test")
        self.assertIn("sk_test_[redacted]", self.srv.output())


def harness_raw_two_auth(port, key):
    body = b'{"message":"a"}'
    req = (b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer " + key.encode() + b"\r\nAuthorization: Bearer " +
           key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\nConnection: close\r\n\r\n" + body)
    return raw_request(port, req)


class RateLimitTest(ServerTest):
    def test_per_minute_limit(self):
        srv = self.start(KONNECT_TEST_KEY_RPM=5, KONNECT_TEST_KEY_RPD=0)
        key, other = self.key(name="a"), self.key(name="b")
        for i in range(5):
            r = srv.post(key)
            self.assertEqual(r.status_code, 200)
            self.assertEqual(r.headers["x-ratelimit-limit-requests"], "5")
            self.assertEqual(r.headers["x-ratelimit-remaining-requests"], str(4 - i))
            self.assertEqual(r.headers["RateLimit-Policy"], '"minute";q=5;w=60')
            self.assertRegex(r.headers["RateLimit"], r'^"minute";r=%d;t=\d+$' % (4 - i))
        r = srv.post(key)
        err = self.assertError(r, 429, "rate_limited")
        self.assertIn("5 requests per minute", err["message"])
        self.assertGreaterEqual(int(r.headers["Retry-After"]), 1)
        self.assertEqual(r.headers["x-ratelimit-remaining-requests"], "0")
        # Another key has its own allowance; live keys have no test limits.
        self.assertEqual(srv.post(other).status_code, 200)
        live = self.key(mode="live", name="live")
        for _ in range(7):
            self.assertEqual(srv.post(live).status_code, 502)
        # After Retry-After seconds one more request goes through.
        time.sleep(int(r.headers["Retry-After"]) + 0.1)
        self.assertEqual(srv.post(key).status_code, 200)

    def test_refused_requests_do_not_count_toward_the_day(self):
        srv = self.start(KONNECT_TEST_KEY_RPM=2, KONNECT_TEST_KEY_RPD=5)
        key = self.key(name="burst")
        codes = [srv.post(key).status_code for _ in range(10)]
        self.assertEqual(codes, [200, 200] + [429] * 8)
        r = srv.post(key)
        # Both limits are reported; the headers describe the tighter one (the minute).
        self.assertEqual(r.headers["RateLimit-Policy"], '"minute";q=2;w=60, "day";q=5;w=86400')
        self.assertEqual(srv.stop(), 0)
        srv = self.start(KONNECT_TEST_KEY_RPM=0, KONNECT_TEST_KEY_RPD=5)
        # Two requests were admitted today, so three remain after the restart.
        codes = [srv.post(key).status_code for _ in range(4)]
        self.assertEqual(codes, [200, 200, 200, 429])

    def test_per_day_limit_survives_restart(self):
        srv = self.start(KONNECT_TEST_KEY_RPM=0, KONNECT_TEST_KEY_RPD=3)
        key = self.key(name="daily")
        for _ in range(2):
            r = srv.post(key)
            self.assertEqual(r.status_code, 200)
            self.assertEqual(r.headers["RateLimit-Policy"], '"day";q=3;w=86400')
        self.assertEqual(srv.stop(), 0)
        srv = self.start(KONNECT_TEST_KEY_RPM=0, KONNECT_TEST_KEY_RPD=3)
        self.assertEqual(srv.post(key).status_code, 200)
        r = srv.post(key)
        err = self.assertError(r, 429, "rate_limited")
        self.assertIn("per UTC day", err["message"])
        self.assertGreater(int(r.headers["Retry-After"]), 0)
        self.assertLessEqual(int(r.headers["Retry-After"]), 86400)

    def test_limits_can_be_disabled(self):
        srv = self.start(KONNECT_TEST_KEY_RPM=0, KONNECT_TEST_KEY_RPD=0)
        key = self.key(name="free")
        with requests.Session() as s:
            h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            for _ in range(100):
                r = s.post(srv.url + "/v1/chat", headers=h, json={"message": "x"})
                self.assertEqual(r.status_code, 200)
                self.assertNotIn("RateLimit", r.headers)


class ServerLifecycleTest(ServerTest):
    def test_graceful_shutdown(self):
        srv = self.start()
        key = self.key()
        self.assertEqual(srv.post(key).status_code, 200)
        self.assertEqual(srv.stop(signal.SIGINT), 0)
        self.assertIn("stopped", srv.output())

    def test_second_server_on_same_data_dir_refuses_to_start(self):
        self.start()
        with self.assertRaises(AssertionError) as ctx:
            self.start()
        self.assertIn("already running", str(ctx.exception))

    def test_connection_limit(self):
        srv = self.start(KONNECT_MAX_CONNECTIONS=2, threads=1)
        held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
        try:
            time.sleep(0.2)
            resp = raw_request(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(resp.startswith(b"HTTP/1.1 503"), resp[:80])
            self.assertIn(b"too_many_connections", resp)
            head, body = resp.split(b"\r\n\r\n", 1)
            rid = json.loads(body)["error"]["request_id"]
            self.assertRegex(rid, r"^req_[0-9A-Za-z]{24}$")
            self.assertIn(b"request-id: " + rid.encode(), head)
            again = raw_request(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertNotIn(rid.encode(), again)
        finally:
            for s in held:
                s.close()
        time.sleep(0.2)
        self.assertEqual(requests.get(srv.url + "/healthz").status_code, 200)

    def test_idle_keep_alive_connections_do_not_hold_shutdown(self):
        srv = self.start()
        s = requests.Session()
        self.assertEqual(s.get(srv.url + "/healthz").status_code, 200)  # stays open, idle
        t0 = time.time()
        self.assertEqual(srv.stop(), 0, srv.output())
        self.assertLess(time.time() - t0, 3.5)
        s.close()

    def test_shutdown_with_a_refused_connection_pending(self):
        srv = self.start(KONNECT_MAX_CONNECTIONS=1, threads=1)
        held = socket.create_connection(("127.0.0.1", srv.port))
        refused = socket.create_connection(("127.0.0.1", srv.port))
        time.sleep(0.2)
        held.close()
        self.assertEqual(srv.stop(), 0, srv.output())
        refused.close()

    def test_slow_client_is_timed_out(self):
        srv = self.start(KONNECT_REQUEST_TIMEOUT_MS=500)
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\n")
            data = s.recv(100)  # returns when the server closes the connection
        self.assertLess(time.time() - t0, 5)
        self.assertIn(data[:12], (b"", b"HTTP/1.1 408"))

    def test_keys_persist_across_restart(self):
        key = self.key()
        srv = self.start()
        self.assertEqual(srv.post(key).status_code, 200)
        srv.stop()
        self.data.cli("key", "revoke", key)  # while no server runs
        srv = self.start()
        self.assertError(srv.post(key), 401, "api_key_revoked")

    def test_bad_settings_are_refused(self):
        p = self.data.cli("serve", check=False, KONNECT_TEST_KEY_RPM="many")
        self.assertEqual(p.returncode, 2)
        self.assertIn("KONNECT_TEST_KEY_RPM", p.stderr)
        p = self.data.cli("serve", "--listen", "nonsense:port", check=False)
        self.assertEqual(p.returncode, 2)
        p = self.data.cli("serve", "--bogus", check=False)
        self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    harness.main()
