"""A small OpenAI-compatible chat-completions server that stands in for the model backend
(Ollama, llama.cpp, vLLM, OpenAI) in tests and benchmarks.

Answers are deterministic: the assistant says "Echo: " followed by the last user message, so a
test can predict every byte that should come back through Konnect. Modes make the backend slow,
failing, malformed or rude on purpose, to test how Konnect copes.

As a module:

    backend = FakeBackend(api_key="backend-secret").start()
    ... point KONNECT_MODEL_URL at backend.url ...
    backend.set_mode("slow_head", delay_ms=500)
    backend.stats()["cancelled"]
    backend.stop()

As a script (serves until SIGTERM or SIGINT):

    python3 fake_backend.py [--port N] [--api-key K] [--mode M] [--delay-ms D]

It prints one line, "listening on http://127.0.0.1:PORT/v1", once it accepts connections.

HTTP endpoints:
    POST /v1/chat/completions   the OpenAI chat-completions API, streaming or not
    GET  /v1/models             one model, "fake-model"
    POST /_fake/mode            {"mode": "...", "delay_ms": N}: the mode for later requests (204)
    GET  /_fake/stats           the counters as JSON
    POST /_fake/reset           clear the counters and go back to normal mode (204)

A request whose "model" is "fake-<mode>" (for example "fake-slow_head") gets that mode whatever
the global one is. After the mode, "+" adds shapes of answer that real backends give, in any
number: "fake-slow_stream+tools+no_usage" streams a tool call slowly and reports no usage.

Modes: normal, slow_head, slow_stream, fail, reject, unauthorized, overloaded, malformed,
bad_shape, disconnect, no_usage, garbage, until_close, informational, idle_close. See MODES below
for what each one does. Shapes: tools, reasoning, multi_token, long, big_event, no_finish,
bad_usage, huge_usage, no_usage, early_usage, odd_finish (SHAPES below).
"""

import argparse
import collections
import http.server
import itertools
import json
import re
import select
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time

MODES = {
    "normal": "a correct answer",
    "slow_head": "wait delay_ms before sending the status line",
    "slow_stream": "streaming: wait delay_ms between events; otherwise like slow_head",
    "fail": "500 with an OpenAI error document",
    "reject": "400 with an OpenAI error document",
    "unauthorized": "401 with an OpenAI error document",
    "unknown_model": "404 with OpenAI's model_not_found error document",
    "ollama_unknown_model": "404 with Ollama's error document for a model it has not pulled",
    "overloaded": "429 with Retry-After: 1",
    "malformed": "200 whose body (or one stream event) is not JSON",
    "bad_shape": "200 with valid JSON that is not a completion",
    "disconnect": "close the connection in the middle of the response",
    "no_usage": "a correct answer without any usage",
    "garbage": "a line that is not HTTP, then close",
    "until_close": "a correct answer without Content-Length or chunks: it ends with the connection",
    "informational": "a correct answer after a 100 Continue",
    "idle_close": "a correct answer, then the connection is closed 100 ms later (a short "
                  "keep-alive timeout)",
}
# Shapes of answer, combined with a mode through the model name ("fake-normal+tools+no_usage").
SHAPES = {
    "tools": "a tool call (get_weather) instead of text; streamed as tool_calls argument pieces",
    "reasoning": "reasoning_content pieces before the answer, as vLLM and DeepSeek stream them",
    "multi_token": "several words (tokens) per streamed piece",
    "long": "a long answer: the echo repeated to 600 pieces",
    "big_event": "streaming: two pieces, then one event of more than 1 MiB",
    "no_finish": "streaming: the pieces and [DONE], without finish_reason or usage",
    "bad_usage": "usage that cannot be read: a negative and a fractional count",
    "huge_usage": "usage of 10^11 completion tokens",
    "no_usage": "no usage, streamed or not",
    "early_usage": "streaming: usage (the prompt and 1 completion token) after the first piece, "
                   "as some proxies send it, and none at the end",
    "odd_finish": "a finish_reason of 20 non-ASCII characters (40 bytes)",
    "huge": "streaming: 60 MB of text pieces before the answer, written as fast as the proxy "
            "reads them (stats: huge_bytes written so far)",
}
HUGE_BATCHES = 600  # of HUGE_BATCH events of about 200 bytes each: 60 MB in all
HUGE_BATCH = 500
DELAYED_MODES = ("slow_head", "slow_stream")
DEFAULT_DELAY_MS = 2000
MAX_BODIES = 1000
ECHO_LIMIT = 200
POLL_S = 0.02  # how often a delay checks whether the client has gone

# Error documents in OpenAI's shape, which is what SDKs and Konnect parse.
def _error(message, type_, code, param=None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


ERR_BAD_KEY = _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
ERR_FAIL = _error("The server had an error while processing your request. Sorry about that!",
                  "server_error", "server_error")
ERR_REJECT = _error("fake backend rejected the request", "invalid_request_error",
                    "invalid_request")
ERR_OVERLOADED = _error("Rate limit reached for requests. Please try again in 1s.",
                        "requests", "rate_limit_exceeded")
ERR_UNKNOWN_MODEL = _error("The model `gpt-nope` does not exist or you do not have access to it.",
                           "invalid_request_error", "model_not_found")
ERR_NOT_FOUND = _error("Unknown request URL. Please check the URL for typos.",
                       "invalid_request_error", "unknown_url")

REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
           500: "Internal Server Error"}


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _text(content):
    """The text of a message's content: a string, or OpenAI's list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def answer_for(messages, shapes=()):
    """(content, pieces, usage) for a list of messages, exactly as the backend answers them.

    Tests can call this to predict what Konnect should pass through. With shapes (SHAPES), the
    answer is the one for that shape: see shaped_answer."""
    last_user = ""
    words = 0
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        text = _text(m.get("content"))
        words += len(text.split())
        if m.get("role") == "user":
            last_user = text
    content = "Echo: " + last_user[:ECHO_LIMIT]
    if "long" in shapes:
        content = " ".join([content] * (600 // max(len(content.split()), 1) + 1))
    # Each piece is a word and the whitespace after it; content starts with "Echo:", so the
    # pieces join back to exactly the content.
    pieces = re.findall(r"\S+\s*", content)
    tokens = len(pieces)
    if "multi_token" in shapes:
        pieces = ["".join(pieces[i:i + 4]) for i in range(0, len(pieces), 4)]
    prompt = max(words, 1)
    usage = {"prompt_tokens": prompt, "completion_tokens": tokens,
             "total_tokens": prompt + tokens}
    return content, pieces, usage


TOOL_NAME = "get_weather"


def shaped_answer(messages, shapes):
    """Everything a shaped answer holds: {"content", "pieces" (streamed text), "reasoning" (pieces),
    "tool_args" (pieces of the tool call's arguments), "usage" (or None), "finish"}. Usage counts
    one token per word of text and of reasoning, and one per argument piece plus one for the
    tool's name."""
    content, pieces, usage = answer_for(messages, shapes)
    out = {"content": content, "pieces": pieces, "reasoning": [], "tool_args": [],
           "finish": "stop"}
    completion = usage["completion_tokens"]
    if "reasoning" in shapes:
        out["reasoning"] = re.findall(r"\S+\s*", "Let me think about what was asked: "
                                      + content[6:] + " I will echo it.")
        completion += len(out["reasoning"])
    if "tools" in shapes:
        args = json.dumps({"location": content[6:60] or "Paris", "unit": "celsius"})
        out["tool_args"] = [args[i:i + 8] for i in range(0, len(args), 8)]
        out["content"], out["pieces"], out["finish"] = None, [], "tool_calls"
        completion = len(out["tool_args"]) + 1
    usage = {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": completion,
             "total_tokens": usage["prompt_tokens"] + completion}
    if "bad_usage" in shapes:
        usage = {"prompt_tokens": -3, "completion_tokens": 2.5, "total_tokens": -0.5}
    elif "huge_usage" in shapes:
        usage = {"prompt_tokens": 5, "completion_tokens": 10**11, "total_tokens": 10**11 + 5}
    out["usage"] = None if "no_usage" in shapes else usage
    if "odd_finish" in shapes:
        out["finish"] = "\u00e9" * 20
    return out


class _Cancelled(Exception):
    """The client closed the connection before the response was written."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-backend"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # quiet: thousands of requests per test run

    def setup(self):
        super().setup()
        # Small SSE events must leave at once, not wait for a delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.backend = self.server.backend
        self.backend._track(self.connection, True)

    def finish(self):
        self.backend._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, data):
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            raise _Cancelled() from e

    def _head(self, status, headers):
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status, body=b"", content_type="application/json", extra=()):
        """A whole response in one write."""
        headers = list(extra)
        if status != 204:
            headers = [("Content-Type", content_type), ("Content-Length", len(body))] + headers
        self._write(self._head(status, headers) + (body if status != 204 else b""))

    def _send_json(self, status, obj, extra=()):
        self._send(status, _dumps(obj), extra=extra)

    def _wait(self, ms):
        """Sleep ms, in short polls of the socket, and raise _Cancelled as soon as the client
        closes the connection: a delayed backend must notice the proxy giving up."""
        deadline = time.monotonic() + ms / 1000.0
        poller = select.poll()
        poller.register(self.connection, select.POLLIN | select.POLLPRI)
        client_sent_more = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            step = min(left, POLL_S)
            if client_sent_more:
                # Bytes of a pipelined request are waiting, so the socket is always readable and
                # an end of file behind them cannot be seen; just wait.
                time.sleep(step)
                continue
            events = poller.poll(step * 1000)
            if not events:
                continue
            if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                raise _Cancelled()
            try:
                peek = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError as e:
                raise _Cancelled() from e
            if not peek:
                raise _Cancelled()
            client_sent_more = True

    def _abort(self):
        """Close the connection at once, mid-response (the server closes the socket object)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _authorized(self):
        key = self.backend.api_key
        return key is None or self.headers.get("Authorization", "") == f"Bearer {key}"

    # -- routes -----------------------------------------------------------------------------

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method):
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._safe(lambda: self._send_json(400, _error(
                "The request body could not be read.", "invalid_request_error", None)))
            return
        path = self.path.split("?", 1)[0]
        routes = {
            ("POST", "/v1/chat/completions"): lambda: self._chat(body),
            ("GET", "/v1/models"): self._models,
            ("POST", "/_fake/mode"): lambda: self._set_mode(body),
            ("GET", "/_fake/stats"): lambda: self._send_json(200, self.backend.stats()),
            ("POST", "/_fake/reset"): lambda: (self.backend.reset(), self._send(204)),
        }
        route = routes.get((method, path))
        if route is None:
            self._safe(lambda: self._send_json(404, ERR_NOT_FOUND))
        elif path == "/v1/chat/completions":
            route()  # counts its own outcome
        else:
            self._safe(route)

    def _safe(self, fn):
        try:
            fn()
        except _Cancelled:
            self.close_connection = True

    def _models(self):
        if not self._authorized():
            self._send_json(401, ERR_BAD_KEY)
            return
        self._send_json(200, {"object": "list", "data": [
            {"id": "fake-model", "object": "model", "owned_by": "konnect-tests"}]})

    def _set_mode(self, body):
        try:
            req = json.loads(body or b"{}")
            self.backend.set_mode(req["mode"], int(req.get("delay_ms") or 0))
        except (ValueError, KeyError, TypeError) as e:
            self._send_json(400, _error(f"bad mode request: {e}", "invalid_request_error", None))
            return
        self._send(204)

    def _chat(self, raw):
        backend = self.backend
        req = None
        try:
            req = json.loads(raw)
        except (ValueError, RecursionError):
            pass  # answered with a 400 below, after the key check
        backend._received(req, self.headers)
        try:
            self._chat_answer(req)
        except _Cancelled:
            self.close_connection = True
            backend._count("cancelled")
        finally:
            backend._count("active", -1)

    def _chat_answer(self, req):
        backend = self.backend
        if not self._authorized():
            self._send_json(401, ERR_BAD_KEY)
            backend._count("completed")
            return
        if not isinstance(req, dict):
            self._send_json(400, _error(
                "We could not parse the JSON body of your request. The OpenAI API expects a "
                "JSON payload.", "invalid_request_error", None))
            backend._count("completed")
            return
        if not isinstance(req.get("messages"), list):
            self._send_json(400, _error("'messages' is a required property",
                                        "invalid_request_error", None, "messages"))
            backend._count("completed")
            return
        mode, delay_ms, shapes = backend._mode_for(req.get("model"))
        stream = req.get("stream") is True
        model = req.get("model") if isinstance(req.get("model"), str) else "fake-model"
        opts = req.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        if "no_usage" in shapes:
            include_usage = False

        if mode == "slow_head" or (mode == "slow_stream" and not stream):
            self._wait(delay_ms)

        if mode == "informational":
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if mode == "garbage":
            self._write(b"this is not http\r\n\r\n")
            self._abort()
            backend._count("aborted")
            return
        simple = {"fail": (500, ERR_FAIL, ()), "reject": (400, ERR_REJECT, ()),
                  "unauthorized": (401, ERR_BAD_KEY, ()),
                  "unknown_model": (404, ERR_UNKNOWN_MODEL, ()),
                  "ollama_unknown_model": (
                      404, {"error": "model \"gpt-nope\" not found, try pulling it first"}, ()),
                  "overloaded": (429, ERR_OVERLOADED, (("Retry-After", "1"),))}
        if mode in simple:
            status, doc, extra = simple[mode]
            self._send_json(status, doc, extra)
            backend._count("completed")
            return

        answer = shaped_answer(req["messages"], shapes)
        ident = f"chatcmpl-fake{backend._next_id()}"
        created = int(time.time())
        if stream:
            self._stream(mode, delay_ms, ident, created, model, answer, shapes, include_usage)
            return

        if mode == "malformed":
            self._send(200, b'{"choices": [')
            backend._count("completed")
            return
        if mode == "bad_shape":
            self._send_json(200, {"hello": "world"})
            backend._count("completed")
            return
        message = {"role": "assistant", "content": answer["content"]}
        if answer["reasoning"]:
            message["reasoning_content"] = "".join(answer["reasoning"])
        if answer["tool_args"]:
            message["tool_calls"] = [{"id": "call_fake1", "type": "function", "function": {
                "name": TOOL_NAME, "arguments": "".join(answer["tool_args"])}}]
        doc = {"id": ident, "object": "chat.completion", "created": created, "model": model,
               "choices": [{"index": 0, "message": message, "finish_reason": answer["finish"]}]}
        if answer["usage"] is not None:
            doc["usage"] = answer["usage"]
        body = _dumps(doc)
        if mode == "disconnect":
            # Promise the whole body, send half of it, then close.
            self._write(self._head(200, [("Content-Type", "application/json"),
                                         ("Content-Length", len(body))]) + body[:len(body) // 2])
            self._abort()
            backend._count("aborted")
            return
        if mode == "until_close":
            self.close_connection = True
            self._write(self._head(200, [("Content-Type", "application/json")]) + body)
            backend._count("completed")
            return
        self._send(200, body)
        backend._count("completed")
        if mode == "idle_close":
            self._close_soon()

    def _close_soon(self):
        """Ends a keep-alive connection from this side after a moment, without having said so."""
        time.sleep(0.1)
        self.close_connection = True

    def _stream(self, mode, delay_ms, ident, created, model, answer, shapes, include_usage):
        backend = self.backend

        def chunk(delta=None, finish=None, **extra):
            obj = {"id": ident, "object": "chat.completion.chunk", "created": created,
                   "model": model}
            if delta is not None:
                obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
            obj.update(extra)
            return b"data: " + _dumps(obj) + b"\n\n"

        def http_chunk(event):
            return f"{len(event):x}\r\n".encode() + event + b"\r\n"

        first = chunk({"role": "assistant", "content": ""})
        if mode == "malformed":
            events = [b"data: {not json\n\n"]
        elif mode == "bad_shape":
            events = [chunk(hello="world"), chunk(hello="again")]
        else:
            events = [chunk({"reasoning_content": p}) for p in answer["reasoning"]]
            events += [chunk({"content": p}) for p in answer["pieces"]]
            if "early_usage" in shapes and answer["usage"] is not None:
                early = {"prompt_tokens": answer["usage"]["prompt_tokens"],
                         "completion_tokens": 1,
                         "total_tokens": answer["usage"]["prompt_tokens"] + 1}
                events.insert(len(answer["reasoning"]) + 1, chunk(choices=[], usage=early))
            if answer["tool_args"]:
                events.append(chunk({"tool_calls": [{"index": 0, "id": "call_fake1",
                                                     "type": "function", "function": {
                                                         "name": TOOL_NAME, "arguments": ""}}]}))
                events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]})
                           for a in answer["tool_args"]]
            if "big_event" in shapes:
                events = events[:2] + [chunk({"content": "x" * (1100 * 1024)})]
            if mode == "disconnect":
                events = events[:2]
            elif "no_finish" not in shapes and "big_event" not in shapes:
                events.append(chunk({}, answer["finish"]))
                if include_usage and answer["usage"] is not None and \
                        "early_usage" not in shapes:
                    events.append(chunk(choices=[], usage=answer["usage"]))
        if mode != "disconnect" and "big_event" not in shapes:
            events.append(b"data: [DONE]\n\n")

        if mode == "until_close":
            self.close_connection = True
            http_chunk = lambda event: event  # noqa: E731 - the events as they are
            head = self._head(200, [("Content-Type", "text/event-stream"),
                                    ("Cache-Control", "no-cache")])
        else:
            head = self._head(200, [("Content-Type", "text/event-stream"),
                                    ("Cache-Control", "no-cache"),
                                    ("Transfer-Encoding", "chunked")])
        self._write(head + http_chunk(first))
        if "huge" in shapes:
            batch = http_chunk(chunk({"content": "lorem ipsum dolor sit amet, consectetur "
                                                 "adipiscing elit, sed do eiusmod tempor "
                                                 "incididunt ut labore et dolore magna aliqua. "})
                               ) * HUGE_BATCH
            for _ in range(HUGE_BATCHES):
                self._write(batch)
                backend._count("huge_bytes", len(batch))
        for event in events:
            if mode == "slow_stream":
                self._wait(delay_ms)
            self._write(http_chunk(event))
        if mode == "disconnect":
            self._abort()
            backend._count("aborted")
            return
        if mode != "until_close":
            self._write(b"0\r\n\r\n")
        backend._count("completed")
        if mode == "idle_close":
            self._close_soon()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind would look up the host's name, which can stall on a machine
        # without working DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # A client that resets or drops a connection is normal here; anything else is a bug.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _TLSServer(_Server):
    """HTTPS on every local address, IPv4 and IPv6 (a client resolving "localhost" may get
    either): the certificate names localhost."""

    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        try:
            return self.ssl_context.wrap_socket(sock, server_side=True), addr
        except (OSError, ssl.SSLError):
            sock.close()
            raise


class FakeBackend:
    """The fake backend on 127.0.0.1:port (0 picks a free port), in daemon threads. With
    tls=(certfile, keyfile) it speaks HTTPS as https://localhost:port/v1 instead."""

    def __init__(self, port=0, api_key=None, tls=None):
        self.api_key = api_key
        self.tls = tls
        self._port = port
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._conns = set()
        self._server = None
        self._thread = None
        self._mode = "normal"
        self._delay_ms = 0
        self._reset_stats()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        if self.tls is not None:
            self._server = _TLSServer(("::", self._port), _Handler)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self._server.ssl_context = ctx
        else:
            self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._server.backend = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                         kwargs={"poll_interval": 0.05},
                                         name="fake-backend", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop accepting, and close every open connection, as a backend that goes down."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._port

    @property
    def url(self):
        if self.tls is not None:
            return f"https://localhost:{self._port}/v1"
        return f"http://127.0.0.1:{self._port}/v1"

    # -- behaviour --------------------------------------------------------------------------

    def set_mode(self, mode, delay_ms=0):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        with self._lock:
            self._mode = mode
            self._delay_ms = int(delay_ms)

    def _mode_for(self, model):
        """The mode for one request, its delay and its shapes: "fake-<mode>[+<shape>...]" as the
        model overrides the global mode."""
        with self._lock:
            mode, delay = self._mode, self._delay_ms
        shapes = set()
        if isinstance(model, str) and model.startswith("fake-"):
            parts = model[5:].split("+")
            if parts[0] in MODES:
                mode = parts[0]
            shapes = {p for p in parts if p in SHAPES}
        if mode == "no_usage":
            shapes.add("no_usage")
        if mode in DELAYED_MODES and delay <= 0:
            delay = DEFAULT_DELAY_MS
        return mode, delay, shapes

    # -- counters ---------------------------------------------------------------------------

    def _reset_stats(self):
        self._stats = {"requests": 0, "completed": 0, "cancelled": 0, "aborted": 0, "huge_bytes": 0,
                       "active": 0, "max_active": 0, "connections": 0}
        self._bodies = collections.deque(maxlen=MAX_BODIES)
        self._last_headers = {}

    def reset(self):
        with self._lock:
            active = self._stats["active"]
            self._reset_stats()
            # Requests still in progress finish later and count themselves down.
            self._stats["active"] = active
            self._mode = "normal"
            self._delay_ms = 0

    def stats(self):
        """requests: chat requests received; completed: responses written whole; cancelled:
        clients that closed before the response was whole; aborted: responses the backend cut
        short on purpose (disconnect, garbage); active / max_active: chat requests in progress,
        now and at most; connections: connections accepted (keep-alive reuse keeps it low);
        bodies: the parsed request bodies, oldest first (the last 1000); last_headers: the
        headers of the last chat request; mode, delay_ms: the global mode."""
        with self._lock:
            out = dict(self._stats)
            out["bodies"] = list(self._bodies)
            out["last_headers"] = dict(self._last_headers)
            out["mode"] = self._mode
            out["delay_ms"] = self._delay_ms
        return out

    def _count(self, name, n=1):
        with self._lock:
            self._stats[name] += n

    def _received(self, body, headers):
        with self._lock:
            s = self._stats
            s["requests"] += 1
            s["active"] += 1
            s["max_active"] = max(s["max_active"], s["active"])
            if body is not None:
                self._bodies.append(body)
            self._last_headers = dict(headers.items())

    def _next_id(self):
        with self._lock:
            return next(self._ids)

    def _track(self, conn, open_):
        with self._lock:
            if open_:
                self._conns.add(conn)
                self._stats["connections"] += 1
            else:
                self._conns.discard(conn)


def main(argv=None):
    p = argparse.ArgumentParser(description="A fake OpenAI chat-completions backend.")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--mode", default="normal", choices=sorted(MODES))
    p.add_argument("--delay-ms", type=int, default=0)
    args = p.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    backend = FakeBackend(port=args.port, api_key=args.api_key)
    backend.set_mode(args.mode, args.delay_ms)
    backend.start()
    print(f"listening on {backend.url}", flush=True)
    while not stop.wait(0.5):
        pass
    backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
