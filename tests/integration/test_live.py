"""Live keys against a real OpenAI-compatible backend (the local fake backend): answers, streaming,
every failure switch with its status, code and "not billed" outcome, cancellation when the client
goes away, the per-key concurrency cap, and monthly quotas that let exactly N requests through."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import unittest

import requests

import harness
from fake_backend import FakeBackend

PLANS = {
    "currency": "usd",
    "default_plan": "metered",
    "plans": [
        {"name": "metered", "price_per_request_micros": 100,
         "price_per_million_input_tokens_micros": 150000,
         "price_per_million_output_tokens_micros": 600000,
         "max_concurrent_requests": 64},
        {"name": "tiny", "requests_per_month": 20, "max_concurrent_requests": 64},
        {"name": "few-tokens", "tokens_per_month": 10},
        {"name": "one-at-a-time", "max_concurrent_requests": 2},
        {"name": "slow-lane", "requests_per_minute": 3},
    ],
}


def price(plan, prompt, completion):
    p = next(x for x in PLANS["plans"] if x["name"] == plan)
    tokens = (prompt * p.get("price_per_million_input_tokens_micros", 0)
              + completion * p.get("price_per_million_output_tokens_micros", 0))
    return p.get("price_per_request_micros", 0) + (tokens + 500000) // 1000000


class LiveTest(harness.ServerTest):
    def setUp(self):
        super().setUp()
        self.backend = FakeBackend()
        self.backend.start()
        self.addCleanup(self.backend.stop)
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        self.live = self.key(mode="live", name="prod")
        self.test = self.key(mode="test", name="dev")

    def serve(self, **env):
        env.setdefault("KONNECT_MODEL_URL", self.backend.url)
        env.setdefault("KONNECT_MODEL", "fake-model")
        return self.start(**env)

    def ledger(self):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            return db.execute("SELECT request_id, key_id, model, input_tokens, output_tokens, "
                              "price_micros, plan FROM usage_ledger").fetchall()
        finally:
            db.close()

    def set_plan(self, plan):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        db.execute("UPDATE accounts SET plan = ?", (plan,))
        db.commit()
        db.close()

    def chat(self, srv, key, body=None, path="/v1/chat", **kw):
        return srv.post(key, body if body is not None else {"message": "Hello live world"},
                        path=path, **kw)

    def test_a_backup_taken_under_live_load_is_whole_and_restores(self):
        # konnect backup copies the store while live requests are answered and billed: none
        # waits or fails for it, the copy is private, whole and holds no secret, and a server
        # started on it (with the same secret) serves the same keys and bills on.
        srv = self.serve()
        stop, statuses, lock = threading.Event(), [], threading.Lock()

        def load():
            s = requests.Session()
            while not stop.is_set():
                r = s.post(srv.url + "/v1/chat", json={"message": "bill me"}, timeout=10,
                           headers={"Authorization": f"Bearer {self.live}"})
                with lock:
                    statuses.append(r.status_code)
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            copy = os.path.join(self.data.path, "..", os.path.basename(self.data.path) + ".bak")
            self.addCleanup(lambda: os.path.exists(copy) and os.unlink(copy))
            p = self.data.cli("backup", "--to", copy)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertTrue(statuses)
        self.assertEqual(set(statuses), {200})
        self.assertRegex(p.stdout, r"read back whole\): 1 accounts, \d+ users, 2 keys, \d+ "
                                   r"ledger rows")
        self.assertIn("not in the backup", p.stderr)
        self.assertEqual(os.stat(copy).st_mode & 0o777, 0o600)
        with open(os.path.join(self.data.path, "secret"), "rb") as f:
            secret = f.read().strip()
        with open(copy, "rb") as f:
            self.assertNotIn(secret, f.read())
        db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            copied = db.execute("SELECT count(*) FROM usage_ledger").fetchone()[0]
            # Each row with its rollup: the copy is one moment of the store.
            rolled = db.execute("SELECT coalesce(sum(requests), 0) FROM usage_rollup").fetchone()[0]
        finally:
            db.close()
        self.assertGreater(copied, 0)
        self.assertEqual(rolled, copied)
        self.assertLess(copied, len(self.ledger()))
        # A file that exists is never replaced.
        p = self.data.cli("backup", "--to", copy, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("exists already", p.stderr)
        # Restored into another data directory with the same secret: the keys work, bills go on.
        srv.stop()
        restored = harness.DataDir()
        self.addCleanup(restored.cleanup)
        os.replace(copy, os.path.join(restored.path, "konnect.db"))
        for name in ("secret", "plans.json"):
            with open(os.path.join(self.data.path, name), "rb") as f, \
                    open(os.path.join(restored.path, name), "wb") as g:
                g.write(f.read())
        os.chmod(os.path.join(restored.path, "secret"), 0o600)
        again = harness.Server(restored, KONNECT_MODEL_URL=self.backend.url,
                               KONNECT_MODEL="fake-model")
        self.servers.append(again)
        self.assertEqual(self.chat(again, self.live).status_code, 200)
        self.assertEqual(self.chat(again, self.test).status_code, 200)
        usage = json.loads(restored.cli("usage", "--account", "dev@example.com", "--json").stdout)
        self.assertEqual(usage["totals"]["requests"], copied + 1)

    def completions(self, srv, key, model="fake-model", stream=False, **extra):
        body = {"model": model, "messages": [{"role": "user", "content": "Hello live world"}]}
        if stream:
            body["stream"] = True
        body.update(extra)
        return srv.post(key, body, path="/v1/chat/completions", stream=stream)

    # ---- answers --------------------------------------------------------------------------

    def test_live_chat_is_answered_by_the_backend_and_billed_once(self):
        srv = self.serve()
        r = self.chat(srv, self.live)
        self.assertEqual(r.status_code, 200, r.text)
        body = r.json()
        self.assertEqual(body["object"], "chat.response")
        self.assertTrue(body["livemode"])
        self.assertEqual(body["message"], {"role": "assistant",
                                           "content": "Echo: Hello live world"})
        self.assertEqual(body["usage"], {"input_tokens": 3, "output_tokens": 4})
        self.assertEqual(r.headers["request-id"], r.headers["x-request-id"])
        # The backend got an OpenAI request, with the default model and no customer secret.
        sent = self.backend.stats()["bodies"][-1]
        self.assertEqual(sent["model"], "fake-model")
        self.assertEqual(sent["messages"], [{"role": "user", "content": "Hello live world"}])
        self.assertNotIn(self.live, json.dumps(self.backend.stats()["last_headers"]))
        rows = self.ledger()
        self.assertEqual(len(rows), 1)
        rid, key_id, model, pin, pout, micros, plan = rows[0]
        self.assertEqual(rid, r.headers["request-id"])
        self.assertEqual(key_id, self.data.key_id(self.live))
        self.assertEqual((model, pin, pout, plan), ("fake-model", 3, 4, "metered"))
        self.assertEqual(micros, price("metered", 3, 4))
        # Its only index is the request id it is keyed by: a commit appends to one B-tree.
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        indexes = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                             "AND tbl_name = 'usage_ledger'").fetchall()
        db.close()
        self.assertEqual(indexes, [])

    def test_sigusr1_reports_the_stage_times_of_answered_requests(self):
        srv = self.serve()
        for _ in range(3):
            self.assertEqual(self.chat(srv, self.live).status_code, 200)
        self.assertEqual(self.chat(srv, self.test).status_code, 200)  # not a live request
        srv.proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 5
        while "stage total" not in srv.output() and time.time() < deadline:
            time.sleep(0.05)
        out = srv.output()
        self.assertIn("live stages of 3 answers since the last report", out)
        for stage in ("admit", "connect", "backend", "queue", "commit", "wake", "answer", "total"):
            self.assertRegex(out, r"konnect: stage %s +[0-9.]+ " % stage)
        # The next report counts only what came after, and the server goes on serving.
        srv.proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 5
        while "live stages of 0 answers" not in srv.output() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("live stages of 0 answers", srv.output())
        self.assertEqual(self.chat(srv, self.live).status_code, 200)

    def test_openai_endpoint_passes_the_backend_answer_through(self):
        srv = self.serve()
        r = self.completions(srv, self.live, temperature=0.2, max_tokens=50)
        self.assertEqual(r.status_code, 200, r.text)
        doc = r.json()
        self.assertEqual(doc["object"], "chat.completion")
        self.assertEqual(doc["choices"][0]["message"]["content"], "Echo: Hello live world")
        self.assertEqual(doc["usage"]["total_tokens"], 7)
        sent = self.backend.stats()["bodies"][-1]
        self.assertEqual((sent["temperature"], sent["max_tokens"]), (0.2, 50))
        self.assertNotIn("stream_options", sent)
        self.assertEqual(len(self.ledger()), 1)

    def test_backend_without_usage_is_billed_by_estimate(self):
        srv = self.serve()
        r = self.completions(srv, self.live, model="fake-no_usage")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertGreater(r.json()["usage"]["prompt_tokens"], 0)
        rows = self.ledger()
        self.assertEqual(len(rows), 1)
        self.assertGreater(rows[0][3], 0)
        self.assertGreater(rows[0][4], 0)

    def test_backend_connections_are_kept_alive_and_let_go(self):
        srv = self.serve()
        self.backend.reset()
        for i in range(30):
            r = self.completions(srv, self.live, stream=i % 2 == 1)
            self.assertEqual(r.status_code, 200, r.text)
            if i % 2:
                self.read_events(r)
        # Each event loop keeps its connection: at most one per loop (two threads).
        self.assertLessEqual(self.backend.stats()["connections"], 2)
        # A backend that closes an idle connection: the next request opens a new one instead of
        # failing on the closed one.
        for stream in (False, True, False):
            r = self.completions(srv, self.live, model="fake-idle_close", stream=stream)
            self.assertEqual(r.status_code, 200, r.text)
            if stream:
                self.read_events(r)
            time.sleep(0.3)
            for _ in range(4):
                r = self.completions(srv, self.live)
                self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(len(self.ledger()), 30 + 3 * 5)

    def test_backend_answers_in_every_http_framing(self):
        srv = self.serve()
        # Content-Length and chunked are the usual cases; an answer may also run to the end of
        # the connection, or come after a 100 Continue.
        for model in ("fake-until_close", "fake-informational"):
            for stream in (False, True):
                with self.subTest(model=model, stream=stream):
                    r = self.completions(srv, self.live, model=model, stream=stream)
                    self.assertEqual(r.status_code, 200, r.text)
                    if stream:
                        events = self.read_events(r)
                        text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or ""
                                       for _, d in events if d != b"[DONE]")
                        self.assertEqual(text, "Echo: Hello live world")
                    else:
                        self.assertEqual(r.json()["choices"][0]["message"]["content"],
                                         "Echo: Hello live world")
        self.assertEqual(len(self.ledger()), 4)

    def test_test_keys_never_reach_the_backend_or_the_ledger(self):
        srv = self.serve()
        r = self.completions(srv, self.test)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertTrue(r.json()["choices"][0]["message"]["content"].startswith("[mock response"))
        r = self.completions(srv, self.test, stream=True, stream_options={"include_usage": True})
        events = [line for line in r.iter_lines() if line]
        self.assertEqual(events[-1], b"data: [DONE]")
        self.assertIn(b'"usage"', events[-2])
        r = self.chat(srv, self.test, {"message": "hi", "stream": True}, stream=True)
        self.assertEqual(r.headers["Content-Type"].split(";")[0], "text/event-stream")
        self.assertEqual([line for line in r.iter_lines() if line][-1], b"data: [DONE]")
        self.assertEqual(self.backend.stats()["requests"], 0)
        self.assertEqual(self.ledger(), [])

    def test_https_backend_is_verified(self):
        cert = os.path.join(self.data.path, "backend.crt")
        key = os.path.join(self.data.path, "backend.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        tls = FakeBackend(tls=(cert, key)).start()
        self.addCleanup(tls.stop)
        # Trusted (the test's own CA file, read by OpenSSL from SSL_CERT_FILE): answered.
        srv = self.serve(KONNECT_MODEL_URL=tls.url, SSL_CERT_FILE=cert)
        r = self.chat(srv, self.live)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertTrue(r.json()["livemode"])
        srv.stop()
        # Not trusted by the system's CAs: refused, not billed.
        srv = self.serve(KONNECT_MODEL_URL=tls.url)
        self.assertError(self.chat(srv, self.live), 502, "model_backend_error")
        self.assertEqual(len(self.ledger()), 1)

    # ---- streaming ------------------------------------------------------------------------

    def read_events(self, r):
        """(seconds since start, data) for each event of a streamed answer."""
        start, out = time.monotonic(), []
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                out.append((time.monotonic() - start, line[6:]))
        return out

    def test_stream_arrives_chunk_by_chunk_and_ends_with_usage(self):
        srv = self.serve()
        self.backend.set_mode("normal", delay_ms=300)
        start = time.monotonic()
        r = self.chat(srv, self.live, {"message": "one two three", "model": "fake-slow_stream",
                                        "stream": True}, stream=True)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.headers["Content-Type"].split(";")[0], "text/event-stream")
        events = self.read_events(r)
        total = time.monotonic() - start
        self.assertEqual(events[-1][1], b"[DONE]")
        final = json.loads(events[-2][1])
        self.assertEqual(final["finish_reason"], "stop")
        self.assertGreater(final["usage"]["output_tokens"], 0)
        deltas = [json.loads(d)["delta"]["content"] for _, d in events[:-2]]
        self.assertEqual("".join(deltas), "Echo: one two three")
        # Not buffered: the first piece came long before the backend finished.
        self.assertLess(events[0][0], total - 0.6, events)
        self.assertEqual(len(self.ledger()), 1)

    def test_openai_stream_usage_only_when_asked(self):
        srv = self.serve()
        r = self.completions(srv, self.live, stream=True)
        events = self.read_events(r)
        self.assertEqual(events[-1][1], b"[DONE]")
        self.assertFalse(any(b'"usage"' in d for _, d in events))
        r = self.completions(srv, self.live, stream=True, stream_options={"include_usage": True})
        events = self.read_events(r)
        self.assertEqual(json.loads(events[-2][1])["usage"]["completion_tokens"], 4)
        # Konnect always asks the backend for usage: it bills from it.
        for sent in self.backend.stats()["bodies"]:
            self.assertEqual(sent["stream_options"], {"include_usage": True})
        self.assertEqual(len(self.ledger()), 2)

    # ---- failures: status, code, never billed ---------------------------------------------

    def test_what_the_backend_says_reaches_the_customer_and_the_operator(self):
        # A model the backend does not know is the customer's 404 model_not_found (OpenAI's and
        # Ollama's answers alike); a request it rejects gives its reason; a wrong key or a wrong
        # URL is the operator's mistake (502), which the server's log explains. None is billed.
        srv = self.serve()
        for model in ("fake-unknown_model", "fake-ollama_unknown_model"):
            with self.subTest(model=model):
                r = self.completions(srv, self.live, model=model)
                self.assertError(r, 404, "model_not_found")
                self.assertIn(f"'{model}'", r.json()["error"]["message"])
                self.assertIn("gpt-nope", r.json()["error"]["message"])
        r = self.completions(srv, self.live, model="fake-reject")
        self.assertError(r, 400, "model_backend_rejected")
        self.assertIn("fake backend rejected the request", r.json()["error"]["message"])
        r = self.completions(srv, self.live, model="fake-unauthorized")
        self.assertError(r, 502, "model_backend_error")
        self.assertNotIn("API key", r.json()["error"]["message"])
        self.assertEqual(self.ledger(), [])
        srv.stop()
        log = srv.output()
        self.assertIn("answered HTTP 401", log)
        self.assertIn("check KONNECT_MODEL_API_KEY", log)
        self.assertIn("Incorrect API key provided", log)
        # The backend's URL is wrong: its 404 is not about the model.
        wrong = self.serve(KONNECT_MODEL_URL=self.backend.url + "/nowhere")
        r = self.completions(wrong, self.live)
        self.assertError(r, 502, "model_backend_error")
        self.assertIn("misconfigured", r.json()["error"]["message"])
        wrong.stop()
        self.assertIn("answered HTTP 404", wrong.output())
        self.assertEqual(self.ledger(), [])

    def test_a_backend_that_fails_without_an_http_error_is_named_in_the_log(self):
        # Unreachable, silent, or answering what is not an answer: the operator's log says which
        # request, which backend and what happened (at most once a second per event loop).
        dead = f"http://127.0.0.1:{harness.free_port()}/v1"
        srv = self.serve(KONNECT_MODEL_URL=dead, KONNECT_THREADS=1)
        r = self.completions(srv, self.live)
        self.assertError(r, 502, "model_backend_error")
        srv.stop()
        self.assertRegex(srv.output(), rf"request {r.headers['request-id']}: model backend "
                         rf"{re.escape(dead)}/chat/completions failed: \S")
        srv = self.serve(KONNECT_MODEL_FIRST_BYTE_TIMEOUT_MS=300)
        self.backend.set_mode("normal", delay_ms=1500)
        r = self.completions(srv, self.live, model="fake-slow_head")
        self.assertError(r, 504, "model_backend_timeout")
        time.sleep(1.1)
        m = self.completions(srv, self.live, model="fake-garbage")
        self.assertError(m, 502, "model_backend_error")
        srv.stop()
        log = srv.output()
        self.assertIn(f"request {r.headers['request-id']}: model backend {self.backend.url}"
                      "/chat/completions failed: The model backend did not start answering "
                      "within 300 ms", log)
        self.assertIn(f"request {m.headers['request-id']}: model backend", log)
        self.assertEqual(self.ledger(), [])

    def test_every_backend_failure_has_its_status_and_is_not_billed(self):
        srv = self.serve(KONNECT_MODEL_FIRST_BYTE_TIMEOUT_MS=400)
        self.backend.set_mode("normal", delay_ms=1500)
        cases = [
            ("fake-fail", 502, "model_backend_error"),
            ("fake-unauthorized", 502, "model_backend_error"),
            ("fake-reject", 400, "model_backend_rejected"),
            ("fake-overloaded", 503, "model_backend_overloaded"),
            ("fake-malformed", 502, "model_backend_error"),
            ("fake-bad_shape", 502, "model_backend_error"),
            ("fake-disconnect", 502, "model_backend_error"),
            ("fake-garbage", 502, "model_backend_error"),
            ("fake-slow_head", 504, "model_backend_timeout"),
        ]
        billed = set()  # streams cut after part of the answer was sent: billed for that part
        for stream in (False, True):
            for model, status, code in cases:
                with self.subTest(model=model, stream=stream):
                    r = self.completions(srv, self.live, model=model, stream=stream)
                    if r.status_code == 200:
                        # The stream had started: it ends with an error event instead.
                        self.assertTrue(stream, r.text)
                        events = self.read_events(r)
                        err = json.loads(events[-1][1])["error"]
                        self.assertEqual(err["code"], code)
                        if "was billed" in err["message"]:
                            billed.add(r.headers["request-id"])
                        else:
                            self.assertIn("not billed", err["message"])
                    else:
                        err = self.assertError(r, status, code)
                        self.assertIn("not billed", err["message"])
                with self.subTest(model=model, stream=stream, api="konnect"):
                    r = self.chat(srv, self.live, {"message": "x", "model": model,
                                                    "stream": stream})
                    self.assertEqual(r.status_code, 200 if stream and r.status_code == 200
                                     else status, r.text)
                    if stream and r.status_code == 200 and "was billed" in r.text:
                        billed.add(r.headers["request-id"])
        # Only the cut streams that had sent part of an answer are in the ledger: the two
        # "disconnect" streams (one per API). Every failure before any answer is not billed.
        self.assertEqual(len(billed), 2)
        self.assertEqual({row[0] for row in self.ledger()}, billed)
        for row in self.ledger():
            self.assertGreater(row[4], 0)
        # The quota was given back: nothing else is counted against the account.
        self.assertEqual(self.completions(srv, self.live).status_code, 200)
        self.assertEqual(len(self.ledger()), 3)

    def readiness_backend(self, srv, until):
        return harness.readyz_backend(srv, until)

    def test_the_backend_is_probed_at_start_and_reported_by_readyz(self):
        srv = self.serve()
        b = self.readiness_backend(srv, "ok")
        self.assertEqual((b["status"], b["default_model"], b["default_model_listed"],
                          b["last_error"]), ("ok", "fake-model", True, None))
        self.assertEqual(b["url"], self.backend.url)
        out = srv.output()
        self.assertIn(f"live keys use the model backend {self.backend.url}; default model "
                      '"fake-model"', out)
        self.assertIn('answers and lists "fake-model"', out)

    def test_a_misconfigured_backend_is_said_at_start_and_never_fails_readiness(self):
        # The default model is not one the backend has.
        srv = self.serve(KONNECT_MODEL="llama-nope")
        b = self.readiness_backend(srv, "model_missing")
        self.assertEqual((b["status"], b["default_model_listed"]), ("model_missing", False))
        self.assertIn('does not list the default model "llama-nope"', srv.output())
        r = requests.get(srv.url + "/readyz", timeout=5)
        self.assertEqual((r.status_code, r.json()["status"]), (200, "ready"))
        self.assertEqual(self.chat(srv, self.test).status_code, 200)  # test keys unaffected
        srv.stop()
        # A wrong KONNECT_MODEL_API_KEY: the backend's 401, and a hint.
        keyed = FakeBackend(api_key="right").start()
        self.addCleanup(keyed.stop)
        srv = self.serve(KONNECT_MODEL_URL=keyed.url, KONNECT_MODEL_API_KEY="wrong")
        b = self.readiness_backend(srv, "error")
        self.assertIn("HTTP 401", b["last_error"])
        self.assertIn("KONNECT_MODEL_API_KEY", srv.output())
        self.assertNotIn("wrong", json.dumps(b))
        srv.stop()
        # Nothing listening.
        srv = self.serve(KONNECT_MODEL_URL=self.data.model_url)
        b = self.readiness_backend(srv, "unreachable")
        self.assertIn("cannot be reached", b["last_error"])
        self.assertIn("cannot be reached", srv.output())
        self.assertEqual(requests.get(srv.url + "/readyz", timeout=5).json()["status"], "ready")

    def test_backend_down_and_backend_timeouts(self):
        self.backend.stop()
        srv = self.serve(KONNECT_MODEL_TIMEOUT_MS=500)
        err = self.assertError(self.chat(srv, self.live), 502, "model_backend_error")
        self.assertIn("not billed", err["message"])
        self.assertEqual(self.ledger(), [])

    def test_total_timeout_cuts_a_slow_stream(self):
        srv = self.serve(KONNECT_MODEL_TIMEOUT_MS=700)
        self.backend.set_mode("normal", delay_ms=400)
        r = self.completions(srv, self.live, model="fake-slow_stream", stream=True)
        self.assertEqual(r.status_code, 200)
        events = self.read_events(r)
        err = json.loads(events[-1][1])["error"]
        self.assertEqual(err["code"], "model_backend_timeout")
        # The stream had delivered part of its answer: that part is billed.
        self.assertIn("already streamed was billed", err["message"])
        rows = self.ledger()
        self.assertEqual([row[0] for row in rows], [r.headers["request-id"]])
        self.assertGreaterEqual(rows[0][4], 1)

    def test_client_that_goes_away_cancels_the_backend_call(self):
        srv = self.serve()
        self.backend.set_mode("normal", delay_ms=3000)
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            body = json.dumps({"message": "hi", "model": "fake-slow_head"}).encode()
            s.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + self.live.encode() + b"\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.time() + 5
            while self.backend.stats()["active"] == 0 and time.time() < deadline:
                time.sleep(0.02)
        t0 = time.time()
        while self.backend.stats()["cancelled"] == 0 and time.time() < t0 + 2:
            time.sleep(0.02)
        self.assertEqual(self.backend.stats()["cancelled"], 1)
        self.assertLess(time.time() - t0, 1.5)
        time.sleep(0.2)
        self.assertEqual(self.ledger(), [])
        self.assertIn('"error":"client_closed_request"', srv.output())

    def test_client_that_goes_away_after_pipelining_a_second_request_is_not_billed(self):
        # The second request waits in the socket unread behind the first, so a peek at the
        # socket sees its bytes, not the end: the close must still be seen.
        srv = self.serve()
        self.backend.set_mode("normal", delay_ms=3000)
        body = json.dumps({"message": "hi", "model": "fake-slow_head"}).encode()
        req = (b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + self.live.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(req)
            deadline = time.time() + 5
            while self.backend.stats()["active"] == 0 and time.time() < deadline:
                time.sleep(0.02)
            s.sendall(req)
            time.sleep(0.2)
        t0 = time.time()
        while self.backend.stats()["cancelled"] == 0 and time.time() < t0 + 2:
            time.sleep(0.02)
        self.assertEqual(self.backend.stats()["cancelled"], 1)
        time.sleep(0.2)
        self.assertEqual(self.ledger(), [])

    def test_client_that_leaves_mid_stream_pays_for_what_it_got(self):
        srv = self.serve()
        self.backend.set_mode("normal", delay_ms=400)
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            body = json.dumps({"message": "one two three four five six",
                               "model": "fake-slow_stream", "stream": True}).encode()
            s.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + self.live.encode() + b"\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            got = b""
            while got.count(b"chat.response.chunk") < 1:
                got += s.recv(65536)
        t0 = time.time()
        while self.backend.stats()["cancelled"] == 0 and time.time() < t0 + 3:
            time.sleep(0.02)
        self.assertEqual(self.backend.stats()["cancelled"], 1)
        deadline = time.time() + 3
        while not self.ledger() and time.time() < deadline:
            time.sleep(0.05)
        rows = self.ledger()
        self.assertEqual(len(rows), 1)
        self.assertGreaterEqual(rows[0][4], 1)  # output tokens: the pieces it received
        self.assertLess(rows[0][4], 8)

    # ---- limits ---------------------------------------------------------------------------

    def test_concurrency_cap_per_key(self):
        self.set_plan("one-at-a-time")
        srv = self.serve()
        self.backend.set_mode("normal", delay_ms=800)
        results = []

        def one():
            results.append(self.chat(srv, self.live, {"message": "x", "model": "fake-slow_head"}))
        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        self.assertEqual(codes, [200, 200, 429, 429, 429])
        for r in results:
            if r.status_code == 429:
                self.assertError(r, 429, "too_many_concurrent_requests")
        self.assertEqual(len(self.ledger()), 2)
        # The slots come back.
        self.assertEqual(self.chat(srv, self.live).status_code, 200)

    def test_live_rate_limit_of_the_plan(self):
        self.set_plan("slow-lane")
        srv = self.serve()
        codes = [self.chat(srv, self.live).status_code for _ in range(4)]
        self.assertEqual(codes, [200, 200, 200, 429])
        self.assertEqual(len(self.ledger()), 3)

    def test_quota_lets_exactly_n_requests_through_under_concurrency(self):
        self.set_plan("tiny")  # 20 requests a month
        srv = self.serve()
        results = []
        lock = threading.Lock()

        def worker(i):
            s = requests.Session()
            for j in range(8):
                # Some requests fail at the backend: they must give their reservation back.
                model = "fake-fail" if (i + j) % 5 == 0 else "fake-model"
                r = s.post(srv.url + "/v1/chat/completions",
                           headers={"Authorization": f"Bearer {self.live}",
                                    "Content-Type": "application/json"},
                           data=json.dumps({"model": model,
                                            "messages": [{"role": "user", "content": "q"}]}),
                           timeout=10)
                with lock:
                    results.append((model, r.status_code, r.json()))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [r for r in results if r[1] == 200]
        refused = [r for r in results if r[1] == 429]
        self.assertEqual(len(ok), 20, [r[1] for r in results])
        self.assertTrue(refused)
        for _, _, body in refused:
            self.assertEqual(body["error"]["code"], "insufficient_quota")
            self.assertIn("20 live requests", body["error"]["message"])
            self.assertIn("resets at", body["error"]["message"])
        rows = self.ledger()
        self.assertEqual(len(rows), 20)
        self.assertEqual(len({r[0] for r in rows}), 20)
        # Test keys are never held back by the quota.
        self.assertEqual(self.chat(srv, self.test).status_code, 200)
        # The quota survives a restart: it is counted from the ledger.
        srv.stop()
        srv = self.serve()
        self.assertError(self.chat(srv, self.live), 429, "insufficient_quota")

    def test_token_quota(self):
        self.set_plan("few-tokens")  # 10 tokens a month; each answer here uses 7
        srv = self.serve()
        self.assertEqual(self.chat(srv, self.live).status_code, 200)
        self.assertEqual(self.chat(srv, self.live).status_code, 200)
        err = self.assertError(self.chat(srv, self.live), 429, "insufficient_quota")
        self.assertIn("tokens", err["message"])
        self.assertEqual(len(self.ledger()), 2)


if __name__ == "__main__":
    harness.main()
