"""Tests of the fake model backend itself, so that a failing Konnect test can trust it.

    python3 tests/integration/test_fake_backend.py
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fake_backend import FakeBackend, answer_for  # noqa: E402

HELLO = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Hello from the tests"}]


def until(fn, seconds=2.0):
    """Polls fn until it is truthy or seconds pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.01)


def raw_request(port, body, headers=None, path="/v1/chat/completions"):
    """A request as bytes, for tests that read the response off the socket themselves."""
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {len(data)}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def read_until_close(sock, seconds=5.0):
    sock.settimeout(seconds)
    out = b""
    while True:
        try:
            b = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not b:
            return out
        out += b


def split_head(raw):
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


def dechunk(data):
    """(list of chunk payloads, whether the terminating zero-size chunk was there)."""
    chunks = []
    while data:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            return chunks, data == b"\r\n"
        if len(data) < size + 2:
            chunks.append(data[:size])
            break
        chunks.append(data[:size])
        assert data[size:size + 2] == b"\r\n"
        data = data[size + 2:]
    return chunks, False


def sse_data(chunks):
    """The data: payloads of SSE events, one event per HTTP chunk."""
    out = []
    for c in chunks:
        text = c.decode()
        assert text.startswith("data: ") and text.endswith("\n\n"), text
        out.append(text[6:-2])
    return out


class FakeBackendTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = FakeBackend().start()
        cls.url = cls.backend.url

    @classmethod
    def tearDownClass(cls):
        cls.backend.stop()

    def setUp(self):
        # A response the last test has read may still be being counted; let it finish first.
        until(lambda: self.backend.stats()["active"] == 0)
        self.backend.reset()

    def post(self, body, **kw):
        kw.setdefault("timeout", 5)
        return requests.post(self.url + "/chat/completions", json=body, **kw)

    def settled(self, **expected):
        """The stats once they show expected: a client can read a whole response a moment
        before the backend has counted it."""
        until(lambda: all(self.backend.stats()[k] == v for k, v in expected.items()))
        st = self.backend.stats()
        self.assertEqual({k: st[k] for k in expected}, expected)
        return st

    def stream_raw(self, body, headers=None):
        """(status line, headers, SSE data payloads, terminated) of a streamed answer."""
        with socket.create_connection(("127.0.0.1", self.backend.port), timeout=5) as s:
            s.sendall(raw_request(self.backend.port, body,
                                  dict(headers or {}, Connection="close")))
            raw = read_until_close(s)
        status, hdrs, rest = split_head(raw)
        chunks, terminated = dechunk(rest)
        return status, hdrs, sse_data(chunks), terminated

    # -- the normal answers -----------------------------------------------------------------

    def test_completion_shape_and_usage(self):
        r = self.post({"model": "fake-model", "messages": HELLO, "temperature": 0.2})
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.headers["Content-Type"], "application/json")
        self.assertEqual(int(r.headers["Content-Length"]), len(r.content))
        doc = r.json()
        self.assertRegex(doc["id"], r"^chatcmpl-fake\d+$")
        self.assertEqual(doc["object"], "chat.completion")
        self.assertIsInstance(doc["created"], int)
        self.assertEqual(doc["model"], "fake-model")
        self.assertEqual(doc["choices"], [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Echo: Hello from the tests"}}])
        # 2 + 4 words in; "Echo: ", "Hello ", "from ", "the ", "tests" out.
        self.assertEqual(doc["usage"], {"prompt_tokens": 6, "completion_tokens": 5,
                                        "total_tokens": 11})
        st = self.settled(requests=1, completed=1, cancelled=0)
        self.assertEqual(st["bodies"][-1]["temperature"], 0.2)

    def test_model_defaults_and_long_messages(self):
        doc = self.post({"messages": [{"role": "user", "content": "x" * 500}]}).json()
        self.assertEqual(doc["model"], "fake-model")
        self.assertEqual(doc["choices"][0]["message"]["content"], "Echo: " + "x" * 200)
        doc = self.post({"model": "m", "messages": []}).json()
        self.assertEqual(doc["choices"][0]["message"]["content"], "Echo: ")
        self.assertEqual(doc["usage"], {"prompt_tokens": 1, "completion_tokens": 1,
                                        "total_tokens": 2})
        parts = [{"role": "user", "content": [{"type": "text", "text": "in parts"}]}]
        doc = self.post({"model": "m", "messages": parts}).json()
        self.assertEqual(doc["choices"][0]["message"]["content"], "Echo: in parts")

    def test_stream_with_usage(self):
        body = {"model": "fake-model", "messages": HELLO, "stream": True,
                "stream_options": {"include_usage": True}}
        status, hdrs, events, terminated = self.stream_raw(body)
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertEqual(hdrs["content-type"], "text/event-stream")
        self.assertEqual(hdrs["transfer-encoding"], "chunked")
        self.assertTrue(terminated, "the stream ends with the zero-size chunk")
        self.assertEqual(events[-1], "[DONE]")
        docs = [json.loads(e) for e in events[:-1]]
        self.assertEqual(len({d["id"] for d in docs}), 1, "one id for the whole stream")
        for d in docs:
            self.assertEqual(d["object"], "chat.completion.chunk")
            self.assertEqual(d["model"], "fake-model")
        self.assertEqual(docs[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        pieces = [d["choices"][0]["delta"]["content"] for d in docs[1:-2]]
        self.assertEqual(pieces, ["Echo: ", "Hello ", "from ", "the ", "tests"])
        self.assertEqual(docs[-2]["choices"], [{"index": 0, "delta": {}, "finish_reason": "stop"}])
        self.assertEqual(docs[-1]["choices"], [])
        self.assertEqual(docs[-1]["usage"], {"prompt_tokens": 6, "completion_tokens": 5,
                                             "total_tokens": 11})
        self.assertEqual(docs[-1]["usage"], answer_for(HELLO)[2])
        self.settled(requests=1, completed=1)

    def test_stream_without_usage(self):
        for opts in ({}, {"stream_options": {"include_usage": False}}):
            body = dict({"model": "fake-model", "messages": HELLO, "stream": True}, **opts)
            _, _, events, terminated = self.stream_raw(body)
            self.assertTrue(terminated)
            self.assertEqual(events[-1], "[DONE]")
            docs = [json.loads(e) for e in events[:-1]]
            self.assertEqual(docs[-1]["choices"][0]["finish_reason"], "stop")
            self.assertFalse(any("usage" in d for d in docs), "no usage chunk")

    def test_stream_through_requests(self):
        body = {"model": "fake-model", "messages": HELLO, "stream": True}
        with self.post(body, stream=True) as r:
            lines = [ln for ln in r.iter_lines() if ln]
        text = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content", "")
                       for ln in lines[:-1])
        self.assertEqual(text, "Echo: Hello from the tests")
        self.assertEqual(lines[-1], b"data: [DONE]")

    def test_models_and_unknown_paths(self):
        r = requests.get(self.url + "/models", timeout=5)
        self.assertEqual(r.json(), {"object": "list", "data": [
            {"id": "fake-model", "object": "model", "owned_by": "konnect-tests"}]})
        r = requests.get(self.url + "/nope", timeout=5)
        self.assertEqual(r.status_code, 404)
        self.assertIn("error", r.json())

    def test_invalid_requests(self):
        r = requests.post(self.url + "/chat/completions", data=b"{nope", timeout=5,
                          headers={"Content-Type": "application/json"})
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.json()["error"]["type"], "invalid_request_error")
        r = self.post({"model": "fake-model"})
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.json()["error"]["param"], "messages")
        st = self.settled(requests=2, completed=2)
        self.assertEqual(st["bodies"], [{"model": "fake-model"}], "only parsed bodies are kept")

    # -- modes ------------------------------------------------------------------------------

    def test_error_modes(self):
        cases = {"fail": (500, "server_error"), "reject": (400, "invalid_request"),
                 "unauthorized": (401, "invalid_api_key"),
                 "overloaded": (429, "rate_limit_exceeded")}
        for mode, (status, code) in cases.items():
            for stream in (False, True):
                with self.subTest(mode=mode, stream=stream):
                    self.backend.set_mode(mode)
                    r = self.post({"model": "fake-model", "messages": HELLO, "stream": stream})
                    self.assertEqual(r.status_code, status)
                    self.assertEqual(r.headers["Content-Type"], "application/json")
                    err = r.json()["error"]
                    self.assertEqual(err["code"], code)
                    self.assertIn("param", err)
                    self.assertTrue(err["message"] and err["type"])
                    if mode == "reject":
                        self.assertEqual(err["message"], "fake backend rejected the request")
                    if mode == "overloaded":
                        self.assertEqual(r.headers["Retry-After"], "1")

    def test_malformed(self):
        self.backend.set_mode("malformed")
        r = self.post({"model": "fake-model", "messages": HELLO})
        self.assertEqual(r.status_code, 200)
        self.assertEqual(int(r.headers["Content-Length"]), len(r.content))
        with self.assertRaises(ValueError):
            json.loads(r.content)
        _, _, events, terminated = self.stream_raw(
            {"model": "fake-model", "messages": HELLO, "stream": True})
        self.assertTrue(terminated)
        self.assertEqual(len(events), 3)
        self.assertIn("choices", json.loads(events[0]))
        with self.assertRaises(ValueError):
            json.loads(events[1])
        self.assertEqual(events[2], "[DONE]")

    def test_bad_shape(self):
        self.backend.set_mode("bad_shape")
        r = self.post({"model": "fake-model", "messages": HELLO})
        self.assertEqual((r.status_code, r.json()), (200, {"hello": "world"}))
        _, _, events, terminated = self.stream_raw(
            {"model": "fake-model", "messages": HELLO, "stream": True,
             "stream_options": {"include_usage": True}})
        self.assertTrue(terminated)
        self.assertEqual(events[-1], "[DONE]")
        later = [json.loads(e) for e in events[1:-1]]
        self.assertTrue(later)
        for d in later:
            self.assertNotIn("choices", d)
            self.assertNotIn("usage", d)

    def test_no_usage(self):
        self.backend.set_mode("no_usage")
        doc = self.post({"model": "fake-model", "messages": HELLO}).json()
        self.assertNotIn("usage", doc)
        self.assertEqual(doc["choices"][0]["message"]["content"], "Echo: Hello from the tests")
        _, _, events, terminated = self.stream_raw(
            {"model": "fake-model", "messages": HELLO, "stream": True,
             "stream_options": {"include_usage": True}})
        self.assertTrue(terminated)
        self.assertEqual(events[-1], "[DONE]")
        self.assertFalse(any("usage" in json.loads(e) for e in events[:-1]))

    def test_disconnect(self):
        self.backend.set_mode("disconnect")
        with socket.create_connection(("127.0.0.1", self.backend.port), timeout=5) as s:
            s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO}))
            raw = read_until_close(s)
        status, hdrs, rest = split_head(raw)
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertGreater(int(hdrs["content-length"]), len(rest))
        self.assertGreater(len(rest), 0)
        with self.assertRaises(requests.exceptions.RequestException):
            self.post({"model": "fake-model", "messages": HELLO}).json()

        body = {"model": "fake-model", "messages": HELLO, "stream": True,
                "stream_options": {"include_usage": True}}
        _, hdrs, events, terminated = self.stream_raw(body)
        self.assertEqual(hdrs["transfer-encoding"], "chunked")
        self.assertFalse(terminated, "no zero-size chunk")
        self.assertNotIn("[DONE]", events)
        self.assertEqual([json.loads(e)["choices"][0]["delta"].get("content") for e in events],
                         ["", "Echo: ", "Hello "])
        self.settled(aborted=3, completed=0, cancelled=0)

    def test_garbage(self):
        self.backend.set_mode("garbage")
        with socket.create_connection(("127.0.0.1", self.backend.port), timeout=5) as s:
            s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO}))
            self.assertEqual(read_until_close(s), b"this is not http\r\n\r\n")

    def test_until_close(self):
        self.backend.set_mode("until_close")
        with socket.create_connection(("127.0.0.1", self.backend.port), timeout=5) as s:
            s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO}))
            status, hdrs, rest = split_head(read_until_close(s))
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertNotIn("content-length", hdrs)
        self.assertNotIn("transfer-encoding", hdrs)
        self.assertEqual(hdrs["connection"], "close")
        self.assertEqual(json.loads(rest)["choices"][0]["message"]["content"],
                         "Echo: Hello from the tests")
        with socket.create_connection(("127.0.0.1", self.backend.port), timeout=5) as s:
            s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO,
                                                      "stream": True}))
            status, hdrs, rest = split_head(read_until_close(s))
        self.assertNotIn("transfer-encoding", hdrs)
        self.assertTrue(rest.endswith(b"data: [DONE]\n\n"), rest)

    def test_informational(self):
        self.backend.set_mode("informational")
        with socket.create_connection(("127.0.0.1", self.backend.port), timeout=5) as s:
            s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO},
                                  headers={"Connection": "close"}))
            raw = read_until_close(s)
        self.assertTrue(raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), raw)

    def test_idle_close(self):
        self.backend.set_mode("idle_close")
        with socket.create_connection(("127.0.0.1", self.backend.port), timeout=5) as s:
            s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO}))
            t = time.monotonic()
            status, hdrs, rest = split_head(read_until_close(s))
            self.assertGreaterEqual(time.monotonic() - t, 0.09)
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertNotIn("connection", hdrs)
        self.assertEqual(len(rest), int(hdrs["content-length"]))

    def test_slow_head(self):
        self.backend.set_mode("slow_head", delay_ms=300)
        t = time.monotonic()
        r = self.post({"model": "fake-model", "messages": HELLO})
        self.assertGreaterEqual(time.monotonic() - t, 0.3)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json()["choices"][0]["message"]["content"],
                         "Echo: Hello from the tests")

    def test_slow_stream(self):
        self.backend.set_mode("slow_stream", delay_ms=100)
        body = {"model": "fake-model", "messages": HELLO, "stream": True}
        t = time.monotonic()
        with self.post(body, stream=True) as r:
            self.assertEqual(r.status_code, 200)
            arrivals = []
            for line in r.iter_lines():
                if line:
                    arrivals.append(time.monotonic() - t)
        # The first event comes with the headers, then one every 100 ms: 5 pieces, stop, [DONE].
        self.assertEqual(len(arrivals), 8)
        self.assertLess(arrivals[0], 0.09)
        self.assertGreaterEqual(arrivals[-1], 0.7)
        # Not streaming: the delay comes before the head, once.
        t = time.monotonic()
        r = self.post({"model": "fake-model", "messages": HELLO})
        self.assertEqual(r.status_code, 200)
        self.assertTrue(0.1 <= time.monotonic() - t < 0.5)

    def test_per_request_mode(self):
        r = self.post({"model": "fake-fail", "messages": HELLO})
        self.assertEqual(r.status_code, 500)
        r = self.post({"model": "fake-model", "messages": HELLO})
        self.assertEqual(r.status_code, 200, "fake-model is not a mode")
        self.backend.set_mode("reject")
        self.assertEqual(self.post({"model": "fake-normal", "messages": HELLO}).status_code, 200)
        self.assertEqual(self.post({"model": "gpt-4o", "messages": HELLO}).status_code, 400)
        # A delayed mode named by the model takes the global delay...
        self.backend.set_mode("normal", delay_ms=150)
        t = time.monotonic()
        self.assertEqual(self.post({"model": "fake-slow_head", "messages": HELLO}).status_code, 200)
        self.assertTrue(0.15 <= time.monotonic() - t < 1.0)
        # ... or 2000 ms when none was given.
        self.backend.set_mode("normal")
        with self.assertRaises(requests.exceptions.Timeout):
            self.post({"model": "fake-slow_head", "messages": HELLO}, timeout=0.5)

    def test_control_endpoints(self):
        r = requests.post(self.backend.url.replace("/v1", "/_fake/mode"), timeout=5,
                          json={"mode": "overloaded", "delay_ms": 5})
        self.assertEqual(r.status_code, 204)
        st = requests.get(self.backend.url.replace("/v1", "/_fake/stats"), timeout=5).json()
        self.assertEqual((st["mode"], st["delay_ms"]), ("overloaded", 5))
        self.assertEqual(self.post({"model": "fake-model", "messages": HELLO}).status_code, 429)
        r = requests.post(self.backend.url.replace("/v1", "/_fake/mode"), timeout=5,
                          json={"mode": "nonsense"})
        self.assertEqual(r.status_code, 400)
        self.settled(requests=1, completed=1)
        st = requests.get(self.backend.url.replace("/v1", "/_fake/stats"), timeout=5).json()
        self.assertEqual((st["requests"], st["completed"], len(st["bodies"])), (1, 1, 1))
        r = requests.post(self.backend.url.replace("/v1", "/_fake/reset"), timeout=5)
        self.assertEqual(r.status_code, 204)
        st = self.backend.stats()
        self.assertEqual((st["mode"], st["requests"], st["bodies"]), ("normal", 0, []))
        with self.assertRaises(ValueError):
            self.backend.set_mode("nonsense")

    # -- a client that goes away ------------------------------------------------------------

    def test_cancelled_while_delaying_the_head(self):
        self.backend.set_mode("slow_head", delay_ms=5000)
        s = socket.create_connection(("127.0.0.1", self.backend.port), timeout=5)
        s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO}))
        self.settled(active=1)
        t = time.monotonic()
        s.close()
        self.settled(cancelled=1, completed=0, active=0)
        self.assertLess(time.monotonic() - t, 1.0, "noticed long before the delay ends")

    def test_cancelled_in_the_middle_of_a_stream(self):
        self.backend.set_mode("slow_stream", delay_ms=5000)
        s = socket.create_connection(("127.0.0.1", self.backend.port), timeout=5)
        s.sendall(raw_request(self.backend.port, {"model": "fake-model", "messages": HELLO,
                                                  "stream": True}))
        s.settimeout(5)
        first = s.recv(65536)
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b'"role":"assistant"', first, "the first event comes with the head")
        t = time.monotonic()
        s.close()
        self.settled(cancelled=1, completed=0, active=0)
        self.assertLess(time.monotonic() - t, 1.0, "noticed long before the next event")

    # -- connections ------------------------------------------------------------------------

    def test_keep_alive(self):
        with requests.Session() as session:
            for i in range(100):
                r = session.post(self.url + "/chat/completions", timeout=5, json={
                    "model": "fake-model", "stream": i % 2 == 1,
                    "messages": [{"role": "user", "content": f"n {i}"}]})
                self.assertEqual(r.status_code, 200)
                if i % 2:
                    self.assertTrue(r.text.endswith("data: [DONE]\n\n"))
                else:
                    self.assertEqual(r.json()["choices"][0]["message"]["content"], f"Echo: n {i}")
        st = self.settled(requests=100, completed=100)
        self.assertEqual(st["connections"], 1, "one connection for all 100 requests")

    def test_concurrent_connections(self):
        socks = [socket.create_connection(("127.0.0.1", self.backend.port), timeout=5)
                 for _ in range(50)]
        try:
            for s in socks:
                s.sendall(raw_request(self.backend.port, {"model": "fake-model",
                                                          "messages": HELLO}))
            for s in socks:
                status, hdrs, rest = split_head(s.recv(65536))
                self.assertEqual(status, "HTTP/1.1 200 OK")
        finally:
            for s in socks:
                s.close()
        self.assertEqual(self.backend.stats()["connections"], 50)

    def test_api_key(self):
        with FakeBackend(api_key="backend-key") as b:
            url = b.url + "/chat/completions"
            body = {"model": "fake-model", "messages": HELLO}
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "backend-key"}):
                r = requests.post(url, json=body, headers=headers, timeout=5)
                self.assertEqual(r.status_code, 401)
                self.assertEqual(r.json(), {"error": {
                    "message": "Incorrect API key provided.", "type": "invalid_request_error",
                    "param": None, "code": "invalid_api_key"}})
            r = requests.post(url, json=body, headers={"Authorization": "Bearer backend-key"},
                              timeout=5)
            self.assertEqual(r.status_code, 200)
            self.assertEqual(requests.get(b.url + "/models", timeout=5).status_code, 401)
            self.assertEqual(b.stats()["last_headers"]["Authorization"], "Bearer backend-key")

    def test_stop_closes_kept_alive_connections(self):
        b = FakeBackend().start()
        with requests.Session() as session:
            r = session.post(b.url + "/chat/completions", timeout=5,
                             json={"model": "fake-model", "messages": HELLO})
            self.assertEqual(r.status_code, 200)
            b.stop()
            with self.assertRaises(requests.exceptions.ConnectionError):
                session.post(b.url + "/chat/completions", timeout=5,
                             json={"model": "fake-model", "messages": HELLO})

    def test_script(self):
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_backend.py"),
                              "--mode", "reject", "--api-key", "k"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            self.assertRegex(line, r"^listening on http://127\.0\.0\.1:\d+/v1\n$")
            url = line.split()[-1]
            r = requests.post(url + "/chat/completions", headers={"Authorization": "Bearer k"},
                              json={"model": "fake-model", "messages": HELLO}, timeout=5)
            self.assertEqual(r.status_code, 400)
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=5), 0)
            self.assertEqual(p.stdout.read(), "", "one line on stdout")
            self.assertEqual(p.stderr.read(), "")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
