"""GET /metrics (Prometheus text format) against the real binary: on KONNECT_METRICS_LISTEN's own
address, or on the main listener behind KONNECT_METRICS_TOKEN; scraped and parsed before and
after traffic (test keys, refusals, live requests answered and failed by a local backend); never a
secret, a key id or an account in it."""

import os
import re
import sys

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402
from harness import ServerTest, free_port  # noqa: E402

TOKEN = "metrics-token-0123456789abcdef"
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf'^({NAME})(?:\{{((?:{NAME}="(?:[^"\\]|\\.)*",?)*)\}})? (\S+)$')


def parse(text):
    """The samples of a scrape as {(name, frozenset(labels)): value}, checking the format: every
    sample's family has one TYPE line before it, every value is a number."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in types, f"two TYPE lines for {name}"
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        if line.startswith("# HELP ") or line == "":
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line before it"
        float(value)
        pairs = frozenset(re.findall(rf'({NAME})="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return types, samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class MetricsTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.backend = FakeBackend().start()
        self.addCleanup(self.backend.stop)
        self.port = free_port()
        self.srv = self.start(KONNECT_METRICS_LISTEN=f"127.0.0.1:{self.port}",
                              KONNECT_METRICS_TOKEN=TOKEN, KONNECT_MODEL_URL=self.backend.url,
                              KONNECT_MODEL="fake-model")
        self.test = self.key("dev@example.com", "test", "t")
        self.live = self.key("dev@example.com", "live", "l")

    def scrape(self):
        r = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        for secret in self.secrets:
            self.assertNotIn(secret, r.text)
            self.assertNotIn(secret[8:20], r.text)
        self.assertNotIn("key_", r.text)
        self.assertNotIn("acct_", r.text)
        return parse(r.text)

    def test_counts_follow_traffic(self):
        types, before = self.scrape()
        for family, kind in (("konnect_requests_total", "counter"),
                             ("konnect_request_duration_seconds", "histogram"),
                             ("konnect_live_stage_seconds", "histogram"),
                             ("konnect_limit_refusals_total", "counter"),
                             ("konnect_backend_errors_total", "counter"),
                             ("konnect_backend_failovers_total", "counter"),
                             ("konnect_keys_loaded", "gauge"), ("konnect_store_up", "gauge"),
                             ("konnect_ledger_up", "gauge"), ("konnect_counters_up", "gauge"),
                             ("konnect_model_backend_up", "gauge"),
                             ("konnect_build_info", "gauge")):
            self.assertEqual(types.get(family), kind, family)
        for _ in range(3):
            self.assertEqual(self.srv.post(self.test).status_code, 200)
        self.assertError(self.srv.post("sk_test_" + "x" * 38), 401, "invalid_api_key")
        self.assertEqual(self.srv.post(self.live).status_code, 200)
        self.backend.set_mode("fail")
        self.assertError(self.srv.post(self.live), 502, "model_backend_error")
        self.backend.set_mode("normal")
        _, after = self.scrape()
        ok = dict(route="chat", status="200", code="")
        self.assertEqual(value(after, "konnect_requests_total", **ok) -
                         value(before, "konnect_requests_total", **ok), 4)
        bad = dict(route="chat", status="401", code="invalid_api_key")
        self.assertEqual(value(after, "konnect_requests_total", **bad), 1)
        self.assertEqual(value(after, "konnect_backend_errors_total", kind="model_backend_error"),
                         1)
        self.assertGreaterEqual(value(after, "konnect_request_duration_seconds_count",
                                      route="chat"), 6)
        self.assertEqual(value(after, "konnect_request_duration_seconds_bucket", route="chat",
                               le="+Inf"),
                         value(after, "konnect_request_duration_seconds_count", route="chat"))
        # Buckets are cumulative.
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                         if k[0] == "konnect_request_duration_seconds_bucket"
                         and dict(k[1])["route"] == "chat" and dict(k[1])["le"] != "+Inf")
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
        # The live request that was answered went through every stage, the ledger's commit too.
        for stage in ("backend", "commit", "total"):
            self.assertGreaterEqual(value(after, "konnect_live_stage_seconds_count",
                                          stage=stage), 1, stage)
        self.assertEqual(value(after, "konnect_keys_loaded"), 2)
        self.assertEqual(value(after, "konnect_store_up"), 1)
        self.assertEqual(value(after, "konnect_model_backend_up"), 1)

    def test_refusals_by_kind(self):
        self.srv.stop()
        self.servers.clear()
        self.srv = self.start(KONNECT_METRICS_LISTEN=f"127.0.0.1:{self.port}",
                              KONNECT_TEST_KEY_RPM="1", KONNECT_TEST_KEY_RPD="0")
        self.assertEqual(self.srv.post(self.test).status_code, 200)
        self.assertError(self.srv.post(self.test), 429, "rate_limited")
        _, s = self.scrape()
        self.assertEqual(value(s, "konnect_limit_refusals_total", kind="rate_limited"), 1)

    def test_who_may_scrape(self):
        url = self.srv.url + "/metrics"
        self.assertError(requests.get(url, timeout=10), 401, "missing_api_key")
        self.assertError(requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10),
                         401, "invalid_api_key")
        r = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        self.assertEqual(r.status_code, 200)
        parse(r.text)
        # The metrics address serves nothing else, whatever the key.
        r = requests.post(f"http://127.0.0.1:{self.port}/v1/chat", timeout=10,
                          headers={"Authorization": f"Bearer {self.test}"}, json={"message": "x"})
        self.assertError(r, 404, "not_found")
        r = requests.post(f"http://127.0.0.1:{self.port}/metrics", timeout=10)
        self.assertError(r, 405, "method_not_allowed")
        # Without a token, /metrics is not on the main listener.
        self.srv.stop()
        self.servers.clear()
        srv = self.start()
        self.assertError(requests.get(srv.url + "/metrics", timeout=10), 404, "not_found")

    def test_a_bad_setting_is_refused_at_start(self):
        for env in ({"KONNECT_METRICS_LISTEN": "nowhere:port"},
                    {"KONNECT_METRICS_TOKEN": "short"}):
            p = self.data.cli("serve", "--listen", "127.0.0.1:0", check=False, **env)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(list(env)[0], p.stderr)
            self.assertNotIn("short", p.stderr)


if __name__ == "__main__":
    harness.main()
