"""No answer leaves without its bill: streams of every shape real backends send (tool calls,
reasoning, several tokens per piece, no usage, long), ended every way they can end (complete,
client gone, backend cut, total timeout, an event too large, no finish), compared with what the
backend generated. The rule (README "Billing rules"): a stream that delivered anything is billed
for what the backend generated until Konnect stopped the call; the backend's usage when it
reported one, otherwise about 4 bytes of generated text a token and at least 1 per event, and the
whole upstream request for the input."""

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from fake_backend import TOOL_NAME, FakeBackend, shaped_answer  # noqa: E402

PLANS = {"currency": "usd", "plans": [{"name": "metered", "max_concurrent_requests": 64,
                                       "price_per_million_output_tokens_micros": 1000000}]}
HELLO = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]


def est(piece):
    """The estimate for one event that generated `piece`."""
    n = len(piece.encode())
    return 0 if n == 0 else max(1, math.ceil(n / 4))


def stream_estimate(answer, pieces=None):
    """What Konnect bills for a stream of `answer` without usage (all of it, or its first
    `pieces` events of generated text)."""
    events = [est(p) for p in answer["reasoning"]] + [est(p) for p in answer["pieces"]]
    if answer["tool_args"]:
        events.append(est(TOOL_NAME))
        events += [est(a) for a in answer["tool_args"]]
    return sum(events if pieces is None else events[:pieces])


class StreamBillingTest(harness.ServerTest):
    def setUp(self):
        super().setUp()
        self.backend = FakeBackend().start()
        self.addCleanup(self.backend.stop)
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        self.live = self.key(mode="live", name="prod")

    def serve(self, **env):
        env.setdefault("KONNECT_MODEL_URL", self.backend.url)
        return self.start(**env)

    def row(self, request_id, wait=3.0):
        """(input_tokens, output_tokens) of a request's ledger row, or None."""
        deadline = time.time() + wait
        while True:
            db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
            try:
                r = db.execute("SELECT input_tokens, output_tokens FROM usage_ledger "
                               "WHERE request_id = ?", (request_id,)).fetchone()
            finally:
                db.close()
            if r is not None or time.time() > deadline:
                return r
            time.sleep(0.05)

    def rows(self):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            return db.execute("SELECT request_id, input_tokens, output_tokens FROM usage_ledger"
                              ).fetchall()
        finally:
            db.close()

    def stream(self, srv, model, messages=HELLO, api="openai", **extra):
        if api == "openai":
            body = {"model": model, "messages": messages, "stream": True}
            body.update(extra)
            r = srv.post(self.live, body, path="/v1/chat/completions", stream=True)
        else:
            r = srv.post(self.live, {"message": messages[-1]["content"], "model": model,
                                     "stream": True}, stream=True)
        self.assertEqual(r.status_code, 200, r.text)
        events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
        return r.headers["request-id"], events

    # ---- complete streams -------------------------------------------------------------------

    def test_complete_streams_are_billed_as_the_backend_reports(self):
        srv = self.serve()
        for shape in ("tools", "reasoning", "multi_token", "long"):
            with self.subTest(shape=shape):
                rid, events = self.stream(srv, f"fake-normal+{shape}",
                                          stream_options={"include_usage": True})
                usage = shaped_answer(HELLO, {shape})["usage"]
                self.assertEqual(self.row(rid), (usage["prompt_tokens"],
                                                 usage["completion_tokens"]))
                self.assertEqual(json.loads(events[-2])["usage"]["completion_tokens"],
                                 usage["completion_tokens"])

    def test_streams_without_usage_are_billed_for_every_generated_byte(self):
        srv = self.serve()
        for shape in ("tools", "reasoning", "multi_token", "long"):
            for api in ("openai", "konnect"):
                if shape == "tools" and api == "konnect":
                    continue  # /v1/chat takes no tools
                with self.subTest(shape=shape, api=api):
                    rid, events = self.stream(srv, f"fake-normal+{shape}+no_usage", api=api)
                    answer = shaped_answer(HELLO, {shape})
                    billed = self.row(rid)
                    self.assertEqual(billed[1], stream_estimate(answer))
                    # More than one token per piece when pieces hold several tokens.
                    if shape == "multi_token":
                        self.assertGreater(billed[1], len(answer["pieces"]))
                    if shape == "tools":
                        self.assertGreater(billed[1], len(answer["tool_args"]))

    def test_input_estimate_covers_tools_and_schemas(self):
        srv = self.serve()
        tools = [{"type": "function", "function": {
            "name": f"tool_{i}", "description": "does a thing " * 20,
            "parameters": {"type": "object", "properties": {
                f"p{j}": {"type": "string", "description": "a field " * 5} for j in range(10)}}}}
            for i in range(5)]
        rid, _ = self.stream(srv, "fake-normal+tools+no_usage", tools=tools)
        schema_bytes = len(json.dumps(tools, separators=(",", ":")))
        self.assertGreaterEqual(self.row(rid)[0], schema_bytes // 4)

    def test_non_streamed_answers_without_usage_are_estimated_from_the_whole_message(self):
        srv = self.serve()
        body = {"model": "fake-normal+tools+no_usage", "messages": HELLO}
        r = srv.post(self.live, body, path="/v1/chat/completions")
        self.assertEqual(r.status_code, 200, r.text)
        call = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]
        self.assertEqual(call["name"], TOOL_NAME)
        answer = shaped_answer(HELLO, {"tools"})
        generated = len(TOOL_NAME) + len("".join(answer["tool_args"]))
        self.assertEqual(self.row(r.headers["request-id"])[1], math.ceil(generated / 4))
        self.assertEqual(r.json()["usage"]["completion_tokens"], math.ceil(generated / 4))
        body["model"] = "fake-normal+reasoning+no_usage"
        r = srv.post(self.live, body, path="/v1/chat/completions")
        answer = shaped_answer(HELLO, {"reasoning"})
        generated = len("".join(answer["reasoning"])) + len(answer["content"])
        self.assertEqual(self.row(r.headers["request-id"])[1], math.ceil(generated / 4))

    # ---- streams that end early -------------------------------------------------------------

    def raw_stream(self, srv, model, stop_after):
        """Starts a streamed /v1/chat/completions on a raw socket, reads until stop_after events
        carried generated text, then closes the connection as a client that leaves."""
        body = json.dumps({"model": model, "messages": HELLO, "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + self.live.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        rid = None
        while True:
            got += s.recv(65536)
            if rid is None and b"\r\n\r\n" in got:
                head = got.split(b"\r\n\r\n", 1)[0].decode()
                rid = [h.split(": ", 1)[1] for h in head.split("\r\n")
                       if h.lower().startswith("request-id:")][0]
            if got.count(b'"arguments":"') + got.count(b'"content":"') - 1 >= stop_after:
                break
        s.close()
        return rid

    def test_a_client_leaving_a_tool_call_stream_pays_for_what_was_generated(self):
        srv = self.serve()
        self.backend.set_mode("normal", delay_ms=300)
        rid = self.raw_stream(srv, "fake-slow_stream+tools", stop_after=3)
        deadline = time.time() + 3
        while self.backend.stats()["cancelled"] == 0 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.backend.stats()["cancelled"], 1, "the backend call is cancelled")
        billed = self.row(rid)
        self.assertIsNotNone(billed, "a tool-call stream the client left must be billed")
        answer = shaped_answer(HELLO, {"tools"})
        self.assertGreaterEqual(billed[1], stream_estimate(answer, 3))
        self.assertLess(billed[1], stream_estimate(answer))

    def test_a_client_leaving_a_multi_token_stream_is_billed_by_bytes_not_pieces(self):
        srv = self.serve()
        self.backend.set_mode("normal", delay_ms=300)
        rid = self.raw_stream(srv, "fake-slow_stream+multi_token", stop_after=2)
        billed = self.row(rid)
        answer = shaped_answer(HELLO, {"multi_token"})
        self.assertIsNotNone(billed)
        self.assertGreaterEqual(billed[1], stream_estimate(answer, 2))
        self.assertGreater(billed[1], 2)

    def test_cut_streams_are_billed_for_what_they_delivered(self):
        srv = self.serve(KONNECT_MODEL_TIMEOUT_MS=900)
        self.backend.set_mode("normal", delay_ms=250)
        cases = [
            ("fake-disconnect+multi_token", "model_backend_error", "closed the connection"),
            ("fake-normal+big_event", "model_backend_error", "larger than 1 MiB"),
            ("fake-normal+no_finish", "model_backend_error", "without finishing"),
            ("fake-slow_stream+long", "model_backend_timeout", "did not finish"),
        ]
        for model, code, why in cases:
            for api in ("openai", "konnect"):
                with self.subTest(model=model, api=api):
                    rid, events = self.stream(srv, model, api=api)
                    err = json.loads(events[-1])["error"]
                    self.assertEqual(err["code"], code)
                    self.assertIn(why, err["message"])
                    self.assertIn("already streamed was billed", err["message"])
                    billed = self.row(rid)
                    self.assertIsNotNone(billed)
                    delivered = [json.loads(e) for e in events[:-1] if e != b"[DONE]"]
                    text = "".join(
                        (d.get("delta") or {}).get("content", "") if api == "konnect" else
                        "".join((c.get("delta") or {}).get("content") or ""
                                for c in d.get("choices", []))
                        for d in delivered)
                    self.assertGreaterEqual(billed[1], math.ceil(len(text.encode()) / 4))
                    self.assertGreater(billed[1], 0)

    def test_a_client_that_never_reads_holds_the_backend_not_the_server_memory(self):
        """A 60 MB stream to a client that reads nothing: Konnect stops reading the backend past
        its bound instead of buffering the stream, the pause is no backend silence (the call is
        not cancelled by the silence timeout), and the stream, cut by the total timeout, is
        billed like any other early end."""
        srv = self.serve(KONNECT_MODEL_TIMEOUT_MS=5000, KONNECT_MODEL_FIRST_BYTE_TIMEOUT_MS=1000)

        def rss_kb():
            with open(f"/proc/{srv.proc.pid}/status") as f:
                return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])

        before = rss_kb()
        s = self.open_huge_stream(srv)
        time.sleep(2.5)  # past the silence timeout, within the total one; nothing read
        stats = self.backend.stats()
        grown = rss_kb() - before
        self.assertEqual((stats["cancelled"], stats["completed"]), (0, 0), stats)
        # The backend is held back: far less than the 60 MB went out (kernel buffers took some).
        self.assertLess(stats["huge_bytes"], 30 * 1024 * 1024, stats)
        if "debug build" not in subprocess.run([harness.BINARY, "--version"],
                                               capture_output=True, text=True).stdout:
            # (AddressSanitizer keeps freed memory aside, so only a release build can say.) What
            # remains is what h2o read from the kernel at once, parsed a slice at a time.
            self.assertLess(grown, 16 * 1024, f"the server grew by {grown} kB")
        # The total timeout ends the stream; what the backend generated is billed though the
        # client never read a byte of it.
        rows = []
        deadline = time.time() + 10
        while not rows and time.time() < deadline:
            rows = self.rows()
            time.sleep(0.2)
        self.assertEqual(len(rows), 1)
        self.assertGreater(rows[0][2], 1000)
        s.close()  # (a connection still open at shutdown is left to the process's exit)

    def open_huge_stream(self, srv, rcvbuf=4096):
        body = json.dumps({"model": "fake-normal+huge", "stream": True,
                           "messages": HELLO}).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect(("127.0.0.1", srv.port))
        self.addCleanup(s.close)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + self.live.encode() + b"\r\n"
                  b"Content-Type: application/json\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\n\r\n" + body)
        return s

    def test_a_client_that_never_reads_the_end_is_let_go(self):
        """Once its stream is over and billed, a client that still reads nothing has its
        connection closed after the request timeout: it cannot hold the request (its buffers,
        its account's in-flight slot) for ever."""
        srv = self.serve(KONNECT_MODEL_TIMEOUT_MS=1500, KONNECT_REQUEST_TIMEOUT_MS=1500)
        s = self.open_huge_stream(srv)
        deadline = time.time() + 8
        while not self.rows() and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(len(self.rows()), 1)
        deadline = time.time() + 8
        while "read nothing of its answer's end" not in srv.output() and time.time() < deadline:
            time.sleep(0.1)
        self.assertIn("read nothing of its answer's end for 1500 ms", srv.output())
        # The connection is gone: what remains in flight drains, then the end (or a reset).
        s.settimeout(5)
        try:
            while s.recv(1 << 20):
                pass
        except ConnectionError:
            pass

    def test_what_was_billed_reaches_a_slow_client_before_the_error_event(self):
        """A stream cut by the total timeout while its text waited for a slow client: the client
        still gets all of that text, then the error event; it is billed for no more than it
        got."""
        srv = self.serve(KONNECT_MODEL_TIMEOUT_MS=1500)
        s = self.open_huge_stream(srv)
        time.sleep(3)  # the total timeout ends the stream while the client reads nothing
        s.settimeout(10)
        got = b""
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
                if b'"code":"model_backend_timeout"' in got[-4096:]:
                    break
        except socket.timeout:
            pass
        self.assertIn(b"model_backend_timeout", got)
        delivered = 0
        for line in got.split(b"\n"):
            if line.startswith(b"data: {") and b'"choices"' in line:
                for c in json.loads(line[6:])["choices"]:
                    delivered += est((c.get("delta") or {}).get("content") or "")
        billed = self.rows()[0][2]
        self.assertGreater(billed, 1000)
        self.assertLessEqual(billed, delivered)

    def test_streams_still_running_at_shutdown_are_billed_for_what_they_delivered(self):
        # Longer than the drain: the server ends them at its deadline, as any other end.
        srv = self.serve(KONNECT_SHUTDOWN_TIMEOUT_MS=600)
        self.backend.set_mode("normal", delay_ms=100)
        streams = []
        for api in ("openai", "konnect"):
            r = self.stream_open(srv, "fake-slow_stream+long", api)
            streams.append((api, r, r.iter_lines()))
        for _, _, lines in streams:  # both have started
            while not next(lines).startswith(b"data: {"):
                pass
        # A non-streamed request in flight gets an answer too, unbilled.
        self.backend.set_mode("normal", delay_ms=5000)
        import threading
        plain = {}
        t = threading.Thread(target=lambda: plain.update(r=srv.post(
            self.live, {"model": "fake-slow_head", "messages": HELLO},
            path="/v1/chat/completions")))
        t.start()
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        for api, r, lines in streams:
            with self.subTest(api=api):
                events = [line[6:] for line in lines if line.startswith(b"data: ")]
                err = json.loads(events[-1])["error"]
                self.assertEqual(err["code"], "server_shutting_down")
                self.assertIn("already streamed was billed", err["message"])
                billed = self.row(r.headers["request-id"])
                self.assertIsNotNone(billed, "a stream cut by shutdown must be billed")
                self.assertGreater(billed[1], 0)
        t.join(10)
        self.assertError(plain["r"], 503, "server_shutting_down")
        self.assertIsNone(self.row(plain["r"].headers["request-id"], wait=0.2))
        self.assertEqual(srv.proc.wait(10), 0)

    def test_a_request_that_arrives_after_the_drain_never_reaches_the_backend(self):
        # Its body completes in the second the server gives the last bills: it must not start.
        srv = self.serve(KONNECT_SHUTDOWN_TIMEOUT_MS=300)
        body = json.dumps({"model": "fake-normal+long", "messages": HELLO,
                           "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + self.live.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:-1])
        time.sleep(0.2)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        s.sendall(body[-1:])
        s.settimeout(5)
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, ConnectionError):
            pass
        s.close()
        self.assertEqual(srv.proc.wait(10), 0)
        if got:  # answered, not silently dropped: and never with an answer
            self.assertTrue(got.startswith(b"HTTP/1.1 503 "), got[:300])
            self.assertIn(b"server_shutting_down", got)
        self.assertEqual(self.backend.stats().get("completed", 0), 0)
        self.assertEqual(self.rows(), [])

    def stream_open(self, srv, model, api):
        if api == "openai":
            r = srv.post(self.live, {"model": model, "messages": HELLO, "stream": True},
                         path="/v1/chat/completions", stream=True)
        else:
            r = srv.post(self.live, {"message": "hi", "model": model, "stream": True},
                         stream=True)
        self.assertEqual(r.status_code, 200)
        return r

    def test_a_stream_that_failed_before_any_answer_is_not_billed(self):
        srv = self.serve()
        for model in ("fake-malformed", "fake-bad_shape"):
            r = srv.post(self.live, {"model": model, "messages": HELLO, "stream": True},
                         path="/v1/chat/completions", stream=True)
            if r.status_code == 200:  # the role chunk went out first: an error event ends it
                last = [e for e in r.iter_lines() if e.startswith(b"data: ")][-1][6:]
                self.assertIn("not billed", json.loads(last)["error"]["message"])
            else:
                self.assertError(r, 502, "model_backend_error")
            self.assertIsNone(self.row(r.headers["request-id"], wait=0.5))

    # ---- usage that cannot be read ----------------------------------------------------------

    def test_unreadable_usage_is_ignored_logged_and_estimated(self):
        srv = self.serve()
        ids = []
        for shape in ("bad_usage", "huge_usage"):
            with self.subTest(shape=shape, stream=True):
                rid, _ = self.stream(srv, f"fake-normal+{shape}",
                                     stream_options={"include_usage": True})
                ids.append(rid)
                answer = shaped_answer(HELLO, {shape})
                self.assertEqual(self.row(rid)[1], stream_estimate(answer))
            with self.subTest(shape=shape, stream=False):
                r = srv.post(self.live, {"model": f"fake-normal+{shape}", "messages": HELLO},
                             path="/v1/chat/completions")
                self.assertEqual(r.status_code, 200, r.text)
                ids.append(r.headers["request-id"])
                content = r.json()["choices"][0]["message"]["content"]
                self.assertEqual(self.row(ids[-1])[1], math.ceil(len(content) / 4))
        srv.stop()
        out = srv.output()
        for rid in ids:
            self.assertIn(f"usage that cannot be read for request {rid}", out)

    def test_usage_reported_early_does_not_cap_the_bill(self):
        # A backend (or a proxy in front of one) that reports usage after the first piece and
        # never again: what it generated after that usage is billed too.
        srv = self.serve()
        answer = shaped_answer(HELLO, {"long"})
        expected = 1 + sum(est(p) for p in answer["pieces"][1:])
        for api in ("openai", "konnect"):
            with self.subTest(api=api):
                extra = {"stream_options": {"include_usage": True}} if api == "openai" else {}
                rid, events = self.stream(srv, "fake-normal+long+early_usage", api=api, **extra)
                self.assertEqual(self.row(rid)[1], expected)
                docs = [json.loads(e) for e in events if e != b"[DONE]"]
                usage = [d["usage"] for d in docs if d.get("usage")][-1]
                # The client is told what it was billed.
                self.assertEqual(usage.get("completion_tokens", usage.get("output_tokens")),
                                 expected)

    def test_a_finish_reason_that_does_not_fit_never_stops_the_server(self):
        # 20 two-byte characters: /v1/chat's final event keeps what fits, cut at a whole one.
        srv = self.serve()
        rid, events = self.stream(srv, "fake-normal+odd_finish", api="konnect")
        self.assertEqual(events[-1], b"[DONE]")
        self.assertEqual(json.loads(events[-2])["finish_reason"], "\u00e9" * 15)
        self.assertIsNotNone(self.row(rid))
        rid, events = self.stream(srv, "fake-normal+odd_finish")  # passed on as it came
        finishes = [c["finish_reason"] for e in events if e != b"[DONE]"
                    for c in json.loads(e).get("choices", []) if c.get("finish_reason")]
        self.assertEqual(finishes, ["\u00e9" * 20])
        self.assertIsNotNone(self.row(rid))
        self.assertEqual(srv.post(self.live, {"message": "still here?"}).status_code, 200)

if __name__ == "__main__":
    harness.main()
