"""HTTPS without a proxy (KONNECT_TLS_CERT, KONNECT_TLS_KEY) as clients and an operator use it:
curl over HTTP/2 and HTTP/1.1, TLS 1.1 refused, Secure __Host- session cookies and HSTS, a
certificate renewed and reloaded on SIGHUP (a broken one keeps the one in force), settings that
cannot work refused at start, and OpenAI's own SDK trusting the server's certificate."""

import json
import os
import signal
import ssl
import socket
import subprocess
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SDK = os.path.join(ROOT, "tests", "browser", "node_modules", "openai")


def make_cert(directory, name, cn="localhost", passphrase=None):
    """A self-signed certificate for localhost and 127.0.0.1, and its key (mode 600)."""
    cert, key = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-days", "2", "-subj", f"/CN={cn}", "-addext",
           "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert]
    cmd += ["-passout", f"pass:{passphrase}"] if passphrase else ["-nodes"]
    subprocess.run(cmd, check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def served_subject(port):
    """The subject CN of the certificate the server shows a new connection."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                         capture_output=True, check=True).stdout.decode()
    return out.strip().split("CN = ")[-1].split("CN=")[-1]


class TLSTest(harness.ServerTest):
    def setUp(self):
        super().setUp()
        self.cert, self.key_file = make_cert(self.data.path, "server")
        self.test = self.key(mode="test", name="dev")

    def serve(self, **env):
        env.setdefault("KONNECT_TLS_CERT", self.cert)
        env.setdefault("KONNECT_TLS_KEY", self.key_file)
        return self.start(**env)

    def curl(self, srv, *args):
        p = subprocess.run(["curl", "-sS", "--cacert", self.cert, "-o", "/dev/null", "-w",
                            "%{http_version} %{http_code}", *args], capture_output=True,
                           text=True, timeout=30)
        return p

    def test_https_with_http2_and_http1(self):
        srv = self.serve()
        self.assertTrue(srv.url.startswith("https://"))
        self.assertIn("listening on https://", srv.output())
        chat = ["-H", f"Authorization: Bearer {self.test}", "-H",
                "Content-Type: application/json", "-d", '{"message": "Hello TLS"}',
                srv.url + "/v1/chat"]
        self.assertEqual(self.curl(srv, "--http2", *chat).stdout, "2 200")
        self.assertEqual(self.curl(srv, "--http1.1", *chat).stdout, "1.1 200")
        self.assertEqual(self.curl(srv, "--tlsv1.2", "--tls-max", "1.2", *chat).stdout, "2 200")
        # A streamed answer over HTTP/2.
        p = subprocess.run(["curl", "-sS", "--http2", "--cacert", self.cert, "-N", "-H",
                            f"Authorization: Bearer {self.test}", "-H",
                            "Content-Type: application/json", "-d",
                            '{"message": "Hello TLS", "stream": true}', srv.url + "/v1/chat"],
                           capture_output=True, text=True, timeout=30)
        self.assertIn("data: [DONE]", p.stdout)
        r = srv.post(self.test, {"message": "Hello TLS"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers["Strict-Transport-Security"], "max-age=31536000")
        # Errors are the same documents over HTTPS.
        r = srv.post("sk_test_" + "x" * 38)
        self.assertError(r, 401, "invalid_api_key")
        # Plain HTTP on the TLS port is not served.
        with self.assertRaises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=3)

    def test_live_answers_over_http2_are_billed(self):
        from fake_backend import FakeBackend
        backend = FakeBackend().start()
        self.addCleanup(backend.stop)
        live = self.key(mode="live", name="prod")
        srv = self.serve(KONNECT_MODEL_URL=backend.url)
        ids = []
        for stream in ("false", "true"):
            p = subprocess.run(["curl", "-sS", "--http2", "--cacert", self.cert, "-N", "-D", "-",
                                "-H", f"Authorization: Bearer {live}", "-H",
                                "Content-Type: application/json", "-d",
                                '{"message": "Hello h2", "stream": %s}' % stream,
                                srv.url + "/v1/chat"], capture_output=True, text=True, timeout=30)
            self.assertTrue(p.stdout.startswith("HTTP/2 200"), p.stdout)
            self.assertIn("Echo", p.stdout.split("\n\n", 1)[1])
            ids += [line.split(":", 1)[1].strip() for line in p.stdout.splitlines()
                    if line.lower().startswith("x-request-id:")]
        srv.stop()
        import sqlite3
        with sqlite3.connect(os.path.join(self.data.path, "konnect.db")) as db:
            billed = [r[0] for r in db.execute("SELECT request_id FROM usage_ledger")]
        self.assertEqual(sorted(billed), sorted(ids))
        self.assertEqual(len(ids), 2)

    def test_tls_below_1_2_is_refused(self):
        srv = self.serve()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                with ctx.wrap_socket(raw, server_hostname="localhost"):
                    pass
        # The server goes on serving.
        self.assertEqual(srv.post(self.test).status_code, 200)

    def test_sessions_get_secure_host_cookies(self):
        srv = self.serve()
        r = requests.post(srv.url + "/dashboard/api/signup", verify=self.cert,
                          json={"email": "tls@example.com", "password": "correct horse battery"},
                          headers={"Origin": srv.url})
        self.assertEqual(r.status_code, 201, r.text)
        cookie = r.headers["Set-Cookie"]
        self.assertTrue(cookie.startswith("__Host-konnect_session="), cookie)
        self.assertIn("; Secure", cookie)
        self.assertIn("Path=/", cookie)
        self.assertNotIn("Domain=", cookie)

    def test_sighup_reloads_the_certificate_and_keeps_it_when_the_new_one_is_broken(self):
        srv = self.serve()
        self.assertEqual(served_subject(srv.port), "localhost")
        # A client connected before the renewal keeps its connection.
        s = requests.Session()
        self.assertEqual(s.get(srv.url + "/healthz", verify=self.cert).status_code, 200)
        renewed, renewed_key = make_cert(self.data.path, "renewed", cn="renewed.localhost")
        os.replace(renewed, self.cert)
        os.replace(renewed_key, self.key_file)
        srv.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "now serving the TLS certificate /CN=renewed.localhost"
                         in srv.output(), "the reload is logged")
        self.assertEqual(served_subject(srv.port), "renewed.localhost")
        self.assertEqual(s.get(srv.url + "/healthz", verify=False).status_code, 200)
        # A key that does not match, then a file that is not a key: both refused, the renewed
        # pair stays in force.
        other, other_key = make_cert(self.data.path, "other", cn="other")
        os.replace(other_key, self.key_file)
        srv.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "is not the key of KONNECT_TLS_CERT" in srv.output(),
                         "the mismatch is logged")
        with open(self.key_file, "w") as f:
            f.write("not a key\n")
        srv.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "holds no unencrypted PEM private key" in srv.output(),
                         "the broken key is logged")
        self.assertEqual(served_subject(srv.port), "renewed.localhost")
        self.assertEqual(srv.post(self.test).status_code, 200)
        self.assertNotIn("PRIVATE KEY", srv.output())

    def test_settings_that_cannot_work_are_refused_at_start(self):
        _, locked = make_cert(self.data.path, "locked", passphrase="pw1234")
        other, _ = make_cert(self.data.path, "other", cn="other")
        cases = [
            (dict(KONNECT_TLS_CERT=self.cert), "go together"),
            (dict(KONNECT_TLS_KEY=self.key_file), "go together"),
            (dict(KONNECT_TLS_CERT=self.cert, KONNECT_TLS_KEY=locked), "unencrypted"),
            (dict(KONNECT_TLS_CERT=other, KONNECT_TLS_KEY=self.key_file), "is not the key"),
            (dict(KONNECT_TLS_CERT=os.path.join(self.data.path, "nope.crt"),
                  KONNECT_TLS_KEY=self.key_file), "cannot read KONNECT_TLS_CERT"),
            (dict(KONNECT_TLS_CERT=self.key_file, KONNECT_TLS_KEY=self.key_file),
             "holds no PEM certificate"),
        ]
        for env, says in cases:
            with self.subTest(says=says):
                p = subprocess.run([harness.BINARY, "serve", "--listen",
                                    f"127.0.0.1:{harness.free_port()}"],
                                   env=self.data.env(**env), capture_output=True, text=True,
                                   timeout=30)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(says, p.stderr)

    def test_openai_sdk_trusts_the_certificate(self):
        if not os.path.isdir(SDK):
            self.skipTest("the openai npm package is not installed (make test installs it)")
        srv = self.serve()
        script = """
import OpenAI from 'openai';
const client = new OpenAI({ apiKey: process.env.KEY, baseURL: process.env.BASE + '/v1' });
const c = await client.chat.completions.create({
  model: 'konnect-default', messages: [{ role: 'user', content: 'Hello SDK' }] });
const stream = await client.chat.completions.create({
  model: 'konnect-default', stream: true, messages: [{ role: 'user', content: 'Hello SDK' }] });
let text = '';
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
let status = 0;
try { await client.chat.completions.create({ model: 'x', messages: [] }); }
catch (e) { status = e.status; }
console.log(JSON.stringify({ plain: c.choices[0].message.content, streamed: text, status }));
"""
        env = dict(os.environ, NODE_EXTRA_CA_CERTS=self.cert, KEY=self.test, BASE=srv.url)
        p = subprocess.run(["node", "--input-type=module", "-e", script], env=env,
                           cwd=os.path.join(ROOT, "tests", "browser"), capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertTrue(out["plain"])
        self.assertTrue(out["streamed"])
        self.assertEqual(out["status"], 400)


if __name__ == "__main__":
    harness.main()
