"""Restricted keys as a customer holding one would try to get around them: another model of the
plan (by either API, listed or asked for directly), more requests per minute than the key's own
limit (while the account has room), a roll to shed the restriction, restrictions wider than the
account's, and the CLI; every answer checked against docs/openapi.yaml."""

import concurrent.futures
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402
import test_manage  # noqa: E402

PLANS = {
    "currency": "usd", "default_plan": "pro", "default_model": "small",
    "models": [{"name": "small", "backend_model": "fake-normal"},
               {"name": "large", "backend_model": "fake-normal"},
               {"name": "slow", "backend_model": "fake-slow_head"}],
    "plans": [{"name": "pro", "requests_per_minute": 50, "max_concurrent_requests": 8,
               "requests_per_month": 1000}],
}


class RestrictedKeysTest(harness.ServerTest):
    # The management API's call, checked against docs/openapi.yaml (test_manage.py).
    call = test_manage.ManageTest.call
    audit = test_manage.ManageTest.audit

    def setUp(self):
        super().setUp()
        self.backend = FakeBackend().start()
        self.addCleanup(self.backend.stop)
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        self.srv = self.start(KONNECT_MODEL_URL=self.backend.url, KONNECT_TEST_KEY_RPM=30)
        self.admin = self.key("dev@example.com", "admin", "ops")

    def create(self, **body):
        body.setdefault("name", "restricted")
        body.setdefault("mode", "live")
        r = self.call("POST", "/v1/keys", body=body)
        self.assertEqual(r.status_code, 201, r.text)
        self.secrets.append(r.json()["secret"])
        return r.json()["key"], r.json()["secret"]

    def chat(self, secret, model, api="openai"):
        if api == "openai":
            return self.srv.post(secret, {"model": model, "messages": [
                {"role": "user", "content": "hi"}]}, path="/v1/chat/completions")
        return self.srv.post(secret, {"model": model, "message": "hi"})

    def test_a_key_limited_to_some_models_uses_no_other(self):
        for mode in ("live", "test"):
            with self.subTest(mode=mode):
                key, secret = self.create(mode=mode, models=["small"])
                self.assertEqual(key["models"], ["small"])
                self.assertIsNone(key["requests_per_minute"])
                for api in ("openai", "konnect"):
                    self.assertEqual(self.chat(secret, "small", api).status_code, 200)
                    r = self.chat(secret, "large", api)
                    self.assertError(r, 403, "model_not_allowed", "model")
                    self.assertIn("small", r.json()["error"]["message"])
                # The default model is small: a request naming none works.
                self.assertEqual(self.srv.post(secret, {"message": "hi"}).status_code, 200)
                r = self.call("GET", "/v1/models", key=secret)
                self.assertEqual([m["id"] for m in r.json()["data"]], ["small"])
                self.assertEqual(self.call("GET", "/v1/models/large", key=secret).status_code,
                                 404)
                # Lifting the restriction works on the very next request.
                r = self.call("PATCH", f"/v1/keys/{key['id']}", body={"models": None})
                self.assertEqual(r.status_code, 200, r.text)
                self.assertIsNone(r.json()["key"]["models"])
                self.assertEqual(self.chat(secret, "large").status_code, 200)
        # A refused request was not billed, nor sent to the backend.
        self.assertNotIn("large", json.dumps(self.backend.stats()["bodies"][:2]))

    def test_a_key_s_own_rate_limit_holds_while_its_account_has_room(self):
        key, secret = self.create(mode="live", requests_per_minute=3)
        other, other_secret = self.create(mode="live", name="unrestricted")
        codes = [self.chat(secret, "small").status_code for _ in range(4)]
        self.assertEqual(codes, [200, 200, 200, 429])
        r = self.chat(secret, "small")
        self.assertError(r, 429, "rate_limited")
        self.assertIn("its own limit is 3 requests per minute", r.json()["error"]["message"])
        self.assertTrue(r.headers.get("Retry-After"))
        # The account's other keys are not held back by it.
        self.assertEqual(self.chat(other_secret, "small").status_code, 200)
        # Rolling the key does not shed the restriction.
        r = self.call("POST", f"/v1/keys/{key['id']}/roll", body={"grace_seconds": 0})
        self.assertEqual(r.status_code, 201, r.text)
        self.secrets.append(r.json()["secret"])
        self.assertEqual(r.json()["key"]["requests_per_minute"], 3)
        # A test key: its own limit below every test key's.
        _, test_secret = self.create(mode="test", requests_per_minute=2)
        codes = [self.chat(test_secret, "small").status_code for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])

    def test_a_key_s_own_monthly_quota_holds_across_a_burst_a_roll_and_a_restart(self):
        key, secret = self.create(mode="live", monthly_requests=3)
        self.assertEqual(key["monthly_requests"], 3)
        _, other_secret = self.create(mode="live", name="unrestricted")
        # A burst of 8 at once: exactly 3 are answered, and billed.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(lambda _: self.chat(secret, "small").status_code, range(8)))
        self.assertEqual(codes, [200] * 3 + [429] * 5)
        r = self.chat(secret, "small")
        self.assertError(r, 429, "insufficient_quota")
        self.assertIn(f"This key ({key['id']}) has used its own monthly quota of 3 live "
                      "requests", r.json()["error"]["message"])
        # The account's other keys go on.
        self.assertEqual(self.chat(other_secret, "small").status_code, 200)
        # The key list labels the refused requests apart from those that passed its limits.
        deadline = time.time() + 5
        while time.time() < deadline:
            listed = {k["id"]: k for k in self.call("GET", "/v1/keys").json()["data"]}
            if listed[key["id"]]["refused"] == 6:
                break
            time.sleep(0.1)
        self.assertEqual(listed[key["id"]]["refused"], 6, listed[key["id"]])
        self.assertEqual(listed[key["id"]]["usage"]["requests"], 3)
        # Rolling the key does not start its quota again.
        r = self.call("POST", f"/v1/keys/{key['id']}/roll", body={"grace_seconds": 0})
        self.assertEqual(r.status_code, 201, r.text)
        new_id, new_secret = r.json()["key"]["id"], r.json()["secret"]
        self.secrets.append(new_secret)
        self.assertEqual(r.json()["key"]["monthly_requests"], 3)
        self.assertError(self.chat(new_secret, "small"), 429, "insufficient_quota")
        # Raised, it counts what was used: 2 more; a restart reloads the count from the ledger.
        r = self.call("PATCH", f"/v1/keys/{new_id}", body={"monthly_requests": 5})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["key"]["monthly_requests"], 5)
        self.assertEqual(self.chat(new_secret, "small").status_code, 200)
        self.srv.stop()
        self.srv = self.start(KONNECT_MODEL_URL=self.backend.url, KONNECT_TEST_KEY_RPM=30)
        self.assertEqual(self.chat(new_secret, "small").status_code, 200)
        self.assertError(self.chat(new_secret, "small"), 429, "insufficient_quota")
        # Exactly the quota was billed to the line: 5 requests, none of the refused ones.
        usage = self.call("GET", "/v1/usage").json()
        billed = sum(k["requests"] for k in usage["keys"] if k["key_id"] in (key["id"], new_id))
        self.assertEqual(billed, 5, usage)
        # Lifted, the key goes on at once; the change is audited.
        r = self.call("PATCH", f"/v1/keys/{new_id}", body={"monthly_requests": None})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertIsNone(r.json()["key"]["monthly_requests"])
        self.assertEqual(self.chat(new_secret, "small").status_code, 200)
        details = [e["detail"] for e in self.audit() if e["action"] == "key.restrict"]
        self.assertTrue(any("5 requests a month" in (d or "") for d in details), details)

    def billed(self, *ids):
        usage = self.call("GET", "/v1/usage").json()
        return sum(k["requests"] for k in usage["keys"] if k["key_id"] in ids)

    def roll(self, key_id, grace):
        r = self.call("POST", f"/v1/keys/{key_id}/roll", body={"grace_seconds": grace})
        self.assertEqual(r.status_code, 201, r.text)
        self.secrets.append(r.json()["secret"])
        return r.json()["key"]["id"], r.json()["secret"]

    def quota(self, key_id, n):
        r = self.call("PATCH", f"/v1/keys/{key_id}", body={"monthly_requests": n})
        self.assertEqual(r.status_code, 200, r.text)

    def test_a_quota_set_again_after_a_lift_and_a_roll_counts_every_request_of_the_line(self):
        key, secret = self.create(mode="live", monthly_requests=3)
        self.assertEqual(self.chat(secret, "small").status_code, 200)
        self.quota(key["id"], None)
        new_id, new_secret = self.roll(key["id"], 0)
        for _ in range(5):
            self.assertEqual(self.chat(new_secret, "small").status_code, 200)
        # Six billed to the line while it had no quota: a quota of 3 refuses at once...
        self.quota(new_id, 3)
        self.assertError(self.chat(new_secret, "small"), 429, "insufficient_quota")
        # ...and after a restart, which counts the line again from the ledger.
        self.srv.stop()
        self.srv = self.start(KONNECT_MODEL_URL=self.backend.url, KONNECT_TEST_KEY_RPM=30)
        self.assertError(self.chat(new_secret, "small"), 429, "insufficient_quota")
        self.quota(new_id, 7)
        self.assertEqual(self.chat(new_secret, "small").status_code, 200)
        self.assertError(self.chat(new_secret, "small"), 429, "insufficient_quota")
        self.assertEqual(self.billed(key["id"], new_id), 7)

    def test_a_quota_on_the_old_key_or_its_replacement_counts_both(self):
        key, secret = self.create(mode="live")
        new_id, new_secret = self.roll(key["id"], 3600)
        self.quota(key["id"], 3)  # the old key, in its grace period
        for _ in range(5):  # the replacement has none of its own
            self.assertEqual(self.chat(new_secret, "small").status_code, 200)
        self.assertError(self.chat(secret, "small"), 429, "insufficient_quota")
        self.quota(new_id, 3)
        self.assertError(self.chat(new_secret, "small"), 429, "insufficient_quota")
        self.assertEqual(self.billed(key["id"], new_id), 5)

    def test_requests_in_flight_when_a_quota_is_set_count_toward_it(self):
        key, secret = self.create(mode="live")
        self.backend.set_mode("normal", delay_ms=1500)  # the delay of the "slow" model
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            slow = [pool.submit(self.chat, secret, "slow") for _ in range(6)]
            deadline = time.time() + 5
            while self.backend.stats()["requests"] < 6 and time.time() < deadline:
                time.sleep(0.02)
            self.quota(key["id"], 8)  # six in flight: two more
            codes = [self.chat(secret, "small").status_code for _ in range(3)]
            self.assertEqual(sorted(f.result().status_code for f in slow), [200] * 6)
        self.assertEqual(codes, [200, 200, 429])
        self.assertEqual(self.billed(key["id"]), 8)

    def test_restrictions_cannot_be_wider_than_the_account(self):
        for body, param in (({"models": ["huge"]}, "models"),
                            ({"models": []}, "models"),
                            ({"models": "small"}, "models"),
                            ({"requests_per_minute": 51}, "requests_per_minute"),
                            ({"requests_per_minute": 0}, "requests_per_minute"),
                            ({"requests_per_minute": 31, "mode": "test"}, "requests_per_minute"),
                            ({"models": ["small"], "mode": "admin"}, "models"),
                            ({"monthly_requests": 0}, "monthly_requests"),
                            ({"monthly_requests": "10"}, "monthly_requests"),
                            ({"monthly_requests": 1001}, "monthly_requests"),
                            ({"monthly_requests": 5, "mode": "test"}, "monthly_requests")):
            with self.subTest(body=body):
                b = dict(name="x", mode="live")
                b.update(body)
                r = self.call("POST", "/v1/keys", body=b)
                if b["mode"] == "admin":
                    self.assertIn(r.status_code, (400, 403), r.text)
                else:
                    self.assertError(r, 400, "invalid_parameter", param)
        names = [k["name"] for k in self.call("GET", "/v1/keys").json()["data"]]
        self.assertNotIn("x", names)

    def test_the_cli_restricts_and_lifts(self):
        secret = self.key("dev@example.com", "live", "cli", "--models", "large", "--rpm", "5")
        self.assertError(self.chat(secret, "small"), 403, "model_not_allowed", "model")
        self.assertEqual(self.chat(secret, "large").status_code, 200)
        p = self.data.cli("key", "create", "--account", "dev@example.com", "--mode", "live",
                          "--name", "bad", "--models", "huge", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--models", p.stderr)
        key_id = self.data.key_id(secret)
        self.data.cli("key", "update", key_id, "--models", "none")
        self.assertEqual(self.chat(secret, "small").status_code, 200)
        audit = [e for e in self.audit() if e["action"] == "key.restrict"]
        self.assertTrue(audit, "the change is audited")
        # A monthly quota: set, enforced, lifted; refused for a test key and above the account's.
        # The key's two requests so far count: a quota of 3 leaves one.
        self.data.cli("key", "update", key_id, "--rpm", "none", "--monthly-requests", "3")
        self.assertEqual(self.chat(secret, "small").status_code, 200)
        self.assertError(self.chat(secret, "small"), 429, "insufficient_quota")
        self.data.cli("key", "update", key_id, "--monthly-requests", "none")
        self.assertEqual(self.chat(secret, "small").status_code, 200)
        for mode, n in (("test", "5"), ("live", "1001"), ("live", "0")):
            p = self.data.cli("key", "create", "--account", "dev@example.com", "--mode", mode,
                              "--name", "bad", "--monthly-requests", n, check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("--monthly-requests", p.stderr)


if __name__ == "__main__":
    harness.main()
