"""Starts the real konnect binary for integration tests, like h2o's spawn_h2o: a free port, a fresh
data directory, real clients. Every server is stopped with SIGTERM and must exit cleanly."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import requests

BINARY = None  # set from argv by main()
KEY_RE = re.compile(r"^sk_(live|test|admin)_[0-9A-Za-z]{38}$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn, what, timeout=10):
    """Polls fn until it is true; fails with what after timeout seconds."""
    deadline = time.time() + timeout
    while not fn():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.05)


def start_nginx(test, directory, server_conf, probe_url, verify=True):
    """Runs nginx (in the foreground, as a child) with server_conf in its http block, its files
    under directory; stops it at the test's cleanup. Returns once probe_url answers."""

    with open(os.path.join(directory, "konnect.conf"), "w") as f:
        f.write(server_conf)
    temp = "".join(f"{t}_temp_path {directory}/{t};\n"
                   for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(os.path.join(directory, "nginx.conf"), "w") as f:
        f.write(f"{'user root;' if os.geteuid() == 0 else ''}\n"
                f"worker_processes 1;\ndaemon off;\npid {directory}/nginx.pid;\n"
                f"error_log {directory}/error.log;\nevents {{ worker_connections 256; }}\n"
                f"http {{\naccess_log off;\n{temp}include {directory}/konnect.conf;\n}}\n")
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([binary, "-c", os.path.join(directory, "nginx.conf"), "-p", directory],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    test.addCleanup(lambda: (proc.terminate(), proc.wait()))
    deadline = time.time() + 10
    while True:
        try:
            requests.get(probe_url, timeout=1, verify=verify)
            return proc
        except requests.ConnectionError:
            if time.time() > deadline or proc.poll() is not None:
                with open(os.path.join(directory, "error.log")) as f:
                    raise AssertionError("nginx did not start: " + f.read())
            time.sleep(0.05)


class DataDir:
    """A fresh KONNECT_DATA_DIR and the CLI run against it."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="konnect-it-")
        # No model backend unless a test starts one: a port that nothing listens on.
        self.model_url = f"http://127.0.0.1:{free_port()}/v1"

    def env(self, **extra):
        env = dict(os.environ)
        env["KONNECT_DATA_DIR"] = self.path
        env.setdefault("KONNECT_MODEL_URL", self.model_url)
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)  # unset
            else:
                env[k] = str(v)
        return env

    def cli(self, *args, check=True, **env):
        p = subprocess.run([BINARY, *args], env=self.env(**env), capture_output=True, text=True,
                           timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"konnect {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p

    def account(self, email="dev@example.com"):
        return self.cli("account", "create", "--email", email).stdout.strip()

    def key(self, account="dev@example.com", mode="test", name="laptop", *extra):
        out = self.cli("key", "create", "--account", account, "--mode", mode, "--name", name,
                       *extra).stdout
        lines = out.splitlines()
        assert len(lines) == 1 and KEY_RE.match(lines[0]), "key create must print one key"
        return lines[0]

    def key_id(self, secret, account="dev@example.com"):
        """The id of the key whose hint matches secret's last four characters."""
        keys = json.loads(self.cli("key", "list", "--account", account, "--json").stdout)
        for k in keys:
            if k["hint"].endswith(secret[-4:]) and k["hint"].startswith(secret[:8]):
                return k["id"]
        raise AssertionError("key not listed")

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def readyz_backend(srv, until, timeout=10):
    """/readyz's model_backend component once its status is `until` (or after timeout s)."""
    deadline = time.time() + timeout
    while True:
        b = requests.get(srv.url + "/readyz", timeout=5).json()["components"]["model_backend"]
        if b["status"] == until or time.time() > deadline:
            return b
        time.sleep(0.05)


class Server:
    """A running `konnect serve` on a free port."""

    def __init__(self, data, threads=2, **env):
        self.data = data
        # With KONNECT_TLS_CERT the server speaks HTTPS; clients trust that certificate alone.
        self.verify = env.get("KONNECT_TLS_CERT", True)
        # A port free a moment ago can be taken before the server binds it (by another test's
        # server or a client's ephemeral port, with tests in parallel): then it starts again on
        # another one.
        for attempt in range(5):
            self.port = free_port()
            self.url = f"https://localhost:{self.port}" if self.verify is not True else \
                f"http://127.0.0.1:{self.port}"
            self.log_path = os.path.join(data.path, f"server-{self.port}.log")
            self.log = open(self.log_path, "w")
            self.proc = subprocess.Popen(
                [BINARY, "serve", "--listen", f"127.0.0.1:{self.port}", "--threads", str(threads)],
                env=data.env(**env), stdout=self.log, stderr=subprocess.STDOUT)
            if self._wait_healthy(attempt < 4):
                return

    def _wait_healthy(self, may_retry):
        """True once /healthz answers; False when the port was taken and may_retry."""
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                out = self.output()
                if may_retry and "cannot listen on" in out and "Address already in use" in out:
                    self.log.close()
                    return False
                raise AssertionError(f"server exited at start: {out}")
            try:
                # "Connection: close" so that the probe holds no connection once it returns.
                if requests.get(self.url + "/healthz", timeout=1, verify=self.verify,
                                headers={"Connection": "close"}).status_code == 200:
                    return True
            except requests.ConnectionError:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError("server did not become healthy in 30 s")

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop within 30 s of SIGTERM")
        self.log.close()
        return self.proc.returncode

    def post(self, key=None, body=None, headers=None, path="/v1/chat", **kw):
        h = {"Content-Type": "application/json"}
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        data = json.dumps(body if body is not None else {"message": "Hello"}) \
            if not isinstance(body, (bytes, str)) else body
        kw.setdefault("verify", self.verify)
        return requests.post(self.url + path, headers=h, data=data, timeout=10, **kw)


class ServerTest(unittest.TestCase):
    """Base class: one data directory with an account; servers started by tests are stopped in
    tearDown, must exit 0, and must never have printed a secret or a sanitizer report."""

    def setUp(self):
        self.data = DataDir()
        self.data.account()
        self.servers = []
        self.secrets = []

    def start(self, **env):
        s = Server(self.data, **env)
        self.servers.append(s)
        # If setUp fails after this, tearDown is not run: the server must not outlive the test.
        self.addCleanup(lambda: s.proc.poll() is None and s.proc.kill())
        return s

    def key(self, *args, **kw):
        k = self.data.key(*args, **kw)
        self.secrets.append(k)
        return k

    def tearDown(self):
        # Stop every server before judging any, so that a failure never leaves one running.
        results = []
        for s in self.servers:
            try:
                results.append((s, s.stop(), None))
            except AssertionError as e:
                results.append((s, None, e))
        try:
            for s, code, err in results:
                if err is not None:
                    raise err
                out = s.output()
                self.assertNotIn("ERROR: AddressSanitizer", out)
                self.assertNotIn("runtime error:", out)
                self.assertNotIn("WARNING: ThreadSanitizer", out)
                self.assertEqual(code, 0, f"server exit status {code}: {out[-2000:]}")
                for secret in self.secrets:
                    self.assertNotIn(secret, out, "a secret key reached the server's output")
                    self.assertNotIn(secret[8:], out, "a secret key's body reached the output")
        finally:
            self.data.cleanup()

    def assertError(self, r, status, code, param=None):
        """The response is the JSON error document with this status and code, and its request id
        matches the request-id header."""
        self.assertEqual(r.status_code, status, r.text)
        self.assertTrue(r.headers["Content-Type"].startswith("application/json"))
        body = r.json()
        err = body["error"]
        self.assertEqual(err["code"], code, r.text)
        self.assertIn(err["type"], ("authentication_error", "invalid_request_error", "permission_error",
                                    "rate_limit_error", "api_error", "insufficient_quota"))
        self.assertTrue(err["message"])
        self.assertEqual(err["param"], param)
        self.assertRegex(err["request_id"], r"^req_[0-9A-Za-z]{24}$")
        self.assertEqual(r.headers["request-id"], err["request_id"])
        for secret in self.secrets:
            self.assertNotIn(secret, r.text)
        return err


def main():
    global BINARY
    BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
