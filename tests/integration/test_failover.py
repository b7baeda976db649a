"""Per-model backends with failover, as an operator who runs two and a customer who would like a
failed attempt to be free (or a retried one to be billed twice) would try them: the first backend
down, failing, overloaded or silent, each backend with its own key and its own name for the model,
a stream cut after its first piece (billed, never sent to the next backend), a refusal about the
request itself (never retried), and every backend failing (nothing billed)."""

import json
import os
import sqlite3
import sys

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402


class FailoverTest(harness.ServerTest):
    def setUp(self):
        super().setUp()
        self.a = FakeBackend(api_key="key-of-a").start()
        self.b = FakeBackend(api_key="key-of-b").start()
        self.addCleanup(self.a.stop)
        self.addCleanup(self.b.stop)
        self.live = self.key(mode="live", name="prod")

    def plans(self, backends):
        doc = {
            "currency": "usd", "default_plan": "free", "default_model": "chat",
            "models": [{"name": "chat", "backend_model": "llama",
                        "price_per_request_micros": 1000, "backends": backends}],
            "plans": [{"name": "free", "max_concurrent_requests": 8}],
        }
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(doc, f)

    def serve(self, backends=None, **env):
        if backends is None:
            backends = [{"url": self.a.url, "api_key_env": "A_KEY", "model": "model-a"},
                        {"url": self.b.url, "api_key_env": "B_KEY", "model": "model-b"}]
        self.plans(backends)
        env.setdefault("A_KEY", "key-of-a")
        env.setdefault("B_KEY", "key-of-b")
        # The default backend is neither: a request that reached it would fail.
        env.setdefault("KONNECT_MODEL_URL", f"http://127.0.0.1:{harness.free_port()}/v1")
        env.setdefault("KONNECT_MODEL_FIRST_BYTE_TIMEOUT_MS", "400")
        return self.start(**env)

    def ledger(self):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            return db.execute("SELECT request_id, model, price_micros FROM usage_ledger "
                              "ORDER BY at_ms").fetchall()
        finally:
            db.close()

    def chat(self, srv, path="/v1/chat/completions", stream=False):
        if path == "/v1/chat":
            body = {"message": "Hello failover", "stream": stream}
        else:
            body = {"model": "chat", "stream": stream,
                    "messages": [{"role": "user", "content": "Hello failover"}]}
        return srv.post(self.live, body, path=path, stream=stream)

    def assert_answered_by_b(self, r, stream=False):
        self.assertEqual(r.status_code, 200, r.text)
        # Streamed, the echo comes in pieces.
        self.assertIn("failover" if stream else "Echo: Hello failover", r.text)
        if not stream and "choices" in r.json():
            self.assertEqual(r.json()["model"], "chat")  # the public name, never a backend's
        self.assertEqual(self.b.stats()["requests"], 1)
        # B was asked with its own key and its own name for the model.
        self.assertEqual(self.b.stats()["last_headers"].get("Authorization"), "Bearer key-of-b")
        self.assertEqual(self.b.stats()["bodies"][-1]["model"], "model-b")

    def assert_billed_once(self, srv, r):
        srv.stop()
        rows = self.ledger()
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(rows[0][0], r.headers["X-Request-Id"])
        self.assertEqual(rows[0][1], "chat")
        self.assertEqual(rows[0][2], 1000 + 0)

    def test_a_failing_backend_hands_the_request_to_the_next_billed_once(self):
        srv = self.serve(KONNECT_METRICS_TOKEN="metrics-token-0123456789")
        self.a.set_mode("fail")
        r = self.chat(srv)
        self.assert_answered_by_b(r)
        self.assertEqual(self.a.stats()["requests"], 1)
        self.assertEqual(self.a.stats()["last_headers"].get("Authorization"), "Bearer key-of-a")
        self.assertIn("trying backend 2 of 2", srv.output())
        m = requests.get(srv.url + "/metrics", timeout=5,
                         headers={"Authorization": "Bearer metrics-token-0123456789"})
        self.assertIn("konnect_backend_failovers_total 1", m.text)
        self.assert_billed_once(srv, r)

    def test_overloaded_unreachable_and_silent_backends_are_skipped(self):
        dead = f"http://127.0.0.1:{harness.free_port()}/v1"
        for how in ("overloaded", "unreachable", "slow_head"):
            with self.subTest(how=how):
                self.a.reset()
                self.b.reset()
                first = {"url": dead} if how == "unreachable" else \
                    {"url": self.a.url, "api_key_env": "A_KEY", "model": "model-a"}
                srv = self.serve([first, {"url": self.b.url, "api_key_env": "B_KEY",
                                          "model": "model-b"}])
                try:
                    if how != "unreachable":
                        self.a.set_mode(how, delay_ms=3000)
                    for path in ("/v1/chat/completions", "/v1/chat"):
                        for stream in (False, True):
                            self.b.reset()
                            r = self.chat(srv, path=path, stream=stream)
                            self.assert_answered_by_b(r, stream=stream)
                finally:
                    srv.stop()
                self.assertEqual(len(self.ledger()), 4)  # each answer once, no attempt billed
                with sqlite3.connect(os.path.join(self.data.path, "konnect.db")) as db:
                    db.execute("DELETE FROM usage_ledger")

    def test_a_stream_cut_after_its_first_piece_is_billed_and_not_sent_again(self):
        srv = self.serve()
        self.a.set_mode("disconnect")
        r = self.chat(srv, stream=True)
        self.assertEqual(r.status_code, 200)
        self.assertIn("model_backend_error", r.text)  # the stream ends with an error event
        self.assertEqual(self.b.stats()["requests"], 0)
        srv.stop()
        self.assertEqual(len(self.ledger()), 1)  # the part that was delivered

    def test_a_refusal_about_the_request_is_the_customer_s_and_not_retried(self):
        srv = self.serve()
        self.a.set_mode("reject")
        r = self.chat(srv)
        self.assertError(r, 400, "model_backend_rejected")
        self.assertIn("fake backend rejected the request", r.json()["error"]["message"])
        self.assertEqual(self.b.stats()["requests"], 0)
        srv.stop()
        self.assertEqual(self.ledger(), [])

    def test_when_every_backend_fails_nothing_is_billed(self):
        srv = self.serve()
        self.a.set_mode("fail")
        self.b.set_mode("overloaded")
        for stream in (False, True):
            r = self.chat(srv, stream=stream)
            self.assertIn(r.status_code, (429, 502, 503), r.text)
            self.assertIn("was not billed", r.text)
        self.assertEqual(self.a.stats()["requests"], 2)
        self.assertEqual(self.b.stats()["requests"], 2)
        srv.stop()
        self.assertEqual(self.ledger(), [])

    def test_a_client_that_leaves_during_the_failover_is_not_billed(self):
        srv = self.serve()
        self.a.set_mode("slow_head", delay_ms=3000)
        self.b.set_mode("slow_head", delay_ms=3000)
        with self.assertRaises(requests.exceptions.ReadTimeout):
            requests.post(srv.url + "/v1/chat/completions", timeout=0.7,
                          headers={"Authorization": f"Bearer {self.live}"},
                          json={"model": "chat", "messages": [{"role": "user", "content": "x"}]})
        srv.stop()
        self.assertEqual(self.ledger(), [])

    def test_backends_are_checked_when_the_plans_are_read(self):
        bad = [
            ([{"url": self.a.url, "api_key": "sk-secret"}], "api_key_env"),
            ([{"url": "ftp://example.com/v1"}], "http:// or https://"),
            ([{"url": "http://user:pw@example.com/v1"}], "without a user"),
            ([{"url": self.a.url, "api_key_env": "NOT-A-NAME"}], "environment variable"),
            # Plans must not send the server's own settings (its database URL) as a key.
            ([{"url": self.a.url, "api_key_env": "KONNECT_DATABASE"}], "not a KONNECT_"),
            ([{"url": self.a.url, "api_key_env": "HOME"}], "ending in _KEY or _TOKEN"),
            ([{"url": self.a.url}] * 9, "1 to 8 backends"),
            ([], "1 to 8 backends"),
            ([{"url": self.a.url, "weight": 2}], "unknown member"),
        ]
        for backends, says in bad:
            with self.subTest(says=says):
                self.plans(backends)
                p = self.data.cli("plans", check=False)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(says, p.stderr)
                self.assertNotIn("sk-secret", p.stderr)

    def test_the_server_names_each_backend_and_a_missing_key(self):
        srv = self.serve(B_KEY=None)
        out = srv.output()
        self.assertIn('model "chat" backend 1 of 2: ' + self.a.url, out)
        self.assertIn("B_KEY (its api_key_env) is not set", out)
        self.assertNotIn("key-of-a", out)

    def test_the_default_models_own_backend_is_the_one_probed_and_reported(self):
        # KONNECT_MODEL_URL is down, but the default model has backends of its own: those are
        # what the start-up message, the probe and /readyz speak of.
        srv = self.serve([{"url": self.a.url, "api_key_env": "A_KEY", "model": "fake-model"}])
        b = harness.readyz_backend(srv, "ok")
        self.assertEqual((b["url"], b["status"], b["default_model"], b["default_model_listed"]),
                         (self.a.url, "ok", "fake-model", True))
        out = srv.output()
        self.assertIn(f'default model "chat" (the catalogue\'s) goes to its own backends, first '
                      f'{self.a.url}', out)
        self.assertIn(f"the model backend {self.a.url} answers and lists", out)
        self.assertNotIn("cannot be reached", out)
        srv.stop()
        # Its first backend does not list the backend's name for the model: said, not "ok".
        srv = self.serve()
        b = harness.readyz_backend(srv, "model_missing")
        self.assertEqual((b["url"], b["default_model"]), (self.a.url, "model-a"))
        srv.stop()
        # Its first backend is down: unreachable, naming that backend.
        dead = f"http://127.0.0.1:{harness.free_port()}/v1"
        srv = self.serve([{"url": dead, "model": "m"}])
        b = harness.readyz_backend(srv, "unreachable")
        self.assertEqual(b["url"], dead)
        self.assertEqual(requests.get(srv.url + "/readyz", timeout=5).json()["status"], "ready")


if __name__ == "__main__":
    harness.main()
