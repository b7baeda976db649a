"""contrib/ as an operator installs it: nginx with contrib/nginx/konnect.conf in front of one
server (TLS at nginx, HTTP/2 to clients, plain HTTP redirected, X-Forwarded-For believed from
nginx alone: a client's forged address never passes an allowlist, streamed answers unbuffered,
Secure __Host- session cookies), and contrib/systemd/konnect.service checked by systemd's own
tools (it parses, and its hardening rates as a low exposure)."""

import os
import re
import shutil
import subprocess
import sys

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from test_tls import make_cert  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CLIENT = "127.0.0.3"  # the client's own address: neither nginx's nor Konnect's


class NginxInFrontTest(harness.ServerTest):
    def setUp(self):
        super().setUp()
        self.srv = self.start(KONNECT_TRUSTED_PROXIES="127.0.0.1")
        self.cert, key = make_cert(self.data.path, "nginx")
        self.https, self.http = harness.free_port(), harness.free_port()
        d = os.path.join(self.data.path, "nginx")
        os.makedirs(d)
        with open(os.path.join(ROOT, "contrib", "nginx", "konnect.conf")) as f:
            conf = f.read()
        for old, new in (("server 127.0.0.1:8080;", f"server 127.0.0.1:{self.srv.port};"),
                         ("listen 80;", f"listen 127.0.0.1:{self.http};"),
                         ("listen 443 ssl http2;", f"listen 127.0.0.1:{self.https} ssl http2;"),
                         ("/etc/letsencrypt/live/api.example.com/fullchain.pem", self.cert),
                         ("/etc/letsencrypt/live/api.example.com/privkey.pem", key),
                         ("server_name api.example.com;", "server_name localhost;")):
            self.assertIn(old, conf)
            conf = conf.replace(old, new)
        self.url = f"https://localhost:{self.https}"
        harness.start_nginx(self, d, conf, self.url + "/healthz", verify=self.cert)

    def curl(self, *args):
        p = subprocess.run(["curl", "-sS", "--interface", CLIENT, "--cacert", self.cert, *args],
                           capture_output=True, text=True, timeout=30)
        return p.stdout

    def chat(self, key, *extra, body='{"message": "Hello nginx"}'):
        return self.curl("-w", "\n%{http_version} %{http_code}", "-H",
                         f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
                         *extra, "-d", body, self.url + "/v1/chat")

    def test_the_client_address_is_nginx_s_word_never_the_client_s(self):
        mine = self.key("dev@example.com", "test", "mine", "--allow-ip", CLIENT)
        forged = self.key("dev@example.com", "test", "forged", "--allow-ip", "10.9.9.9")
        out = self.chat(mine, "-H", "X-Forwarded-For: 10.9.9.9")
        self.assertTrue(out.endswith("\n2 200"), out)  # HTTP/2 from the client to nginx
        out = self.chat(forged, "-H", "X-Forwarded-For: 10.9.9.9")
        self.assertTrue(out.endswith("\n2 401"), out)
        self.assertIn("ip_not_allowed", out)
        self.assertIn('"remote":"%s"' % CLIENT, self.srv.output())
        self.assertNotIn('"remote":"10.9.9.9"', self.srv.output())

    def test_streams_are_not_buffered_and_http_is_redirected(self):
        key = self.key(mode="test", name="stream")
        out = self.chat(key, "-N", body='{"message": "Hello nginx", "stream": true}')
        self.assertIn("data: [DONE]", out)
        self.assertTrue(out.endswith("\n2 200"), out)
        r = requests.get(f"http://127.0.0.1:{self.http}/v1/models", allow_redirects=False,
                         timeout=5)
        self.assertEqual(r.status_code, 308)
        self.assertTrue(r.headers["Location"].startswith("https://"), r.headers)

    def test_sessions_through_nginx_get_secure_host_cookies(self):
        r = requests.post(self.url + "/dashboard/api/signup", verify=self.cert, timeout=30,
                          json={"email": "proxy@example.com", "password": "correct horse battery"})
        self.assertEqual(r.status_code, 201, r.text)
        cookie = r.headers["Set-Cookie"]
        self.assertTrue(cookie.startswith("__Host-konnect_session="), cookie)
        self.assertIn("; Secure", cookie)
        r = requests.get(self.url + "/v1/models", verify=self.cert, timeout=5)
        self.assertEqual(r.headers["Strict-Transport-Security"], "max-age=31536000")


class SystemdUnitTest(harness.ServerTest):
    def test_the_unit_parses_and_is_hardened(self):
        tool = shutil.which("systemd-analyze")
        self.assertIsNotNone(tool, "systemd-analyze (Debian's systemd package) is needed")
        with open(os.path.join(ROOT, "contrib", "systemd", "konnect.service")) as f:
            unit = f.read()
        for line in ("User=konnect", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "ReadWritePaths=/var/lib/konnect", "StateDirectory=konnect",
                     "Environment=KONNECT_DATA_DIR=/var/lib/konnect",
                     "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
            self.assertIn("\n" + line + "\n", unit)
        # The binary where the unit expects it, so that verify can check ExecStart.
        path = os.path.join(self.data.path, "konnect.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/local/bin/konnect", harness.BINARY))
        p = subprocess.run([tool, "verify", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(os.path.basename(path), p.stderr)  # no warning about the unit
        p = subprocess.run([tool, "security", "--offline=yes", path], capture_output=True,
                           text=True, timeout=60)
        m = re.search(r"Overall exposure level for konnect\.service: ([0-9.]+) (\w+)", p.stdout)
        self.assertIsNotNone(m, p.stdout + p.stderr)
        self.assertLessEqual(float(m.group(1)), 2.0, m.group(0))
        # The server it would run refuses nothing in the sample settings file.
        env = {}
        with open(os.path.join(ROOT, "contrib", "systemd", "konnect.env")) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    k, v = line.strip().split("=", 1)
                    env[k] = v
        self.assertEqual(env["KONNECT_TRUSTED_PROXIES"], "127.0.0.1")
        env["KONNECT_PUBLIC_URL"] = "https://api.example.com"
        srv = self.start(**env)
        self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    harness.main()
