"""Failure paths that run (KONNECT_FAULT, debug builds only): ledger commits that fail give
`503 billing_unavailable` and bill nothing, a commit retried after a failure bills once, a store
that cannot be reached turns /readyz to 503 and back, and the request counts written while it was
down are kept and written later. A release build refuses the switch."""

import json
import os
import sqlite3
import subprocess
import time
import unittest

import requests

import harness
from fake_backend import FakeBackend

PLANS = {"currency": "usd", "default_plan": "metered",
         "plans": [{"name": "metered", "price_per_request_micros": 100}]}


def debug_build():
    out = subprocess.run([harness.BINARY, "--version"], capture_output=True, text=True).stdout
    return "debug build" in out


class FaultTest(harness.ServerTest):
    def setUp(self):
        if not debug_build():
            self.skipTest("the fault switch exists in debug builds only")
        super().setUp()
        self.backend = FakeBackend()
        self.backend.start()
        self.addCleanup(self.backend.stop)
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        self.live = self.key(mode="live", name="prod")

    def serve(self, fault):
        return self.start(KONNECT_MODEL_URL=self.backend.url, KONNECT_MODEL="fake-model",
                          KONNECT_FAULT=fault, KONNECT_TEST_KEY_RPM="0", KONNECT_TEST_KEY_RPD="0")

    def ledger(self):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            return db.execute("SELECT request_id FROM usage_ledger WHERE voided = 0").fetchall()
        finally:
            db.close()

    def test_a_ledger_that_cannot_be_written_delivers_nothing(self):
        # Five failed tries (the first and four retries over about a second) give the row up.
        srv = self.serve("ledger:1x5")
        r = srv.post(self.live, {"message": "Hello"})
        self.assertError(r, 503, "billing_unavailable")
        self.assertNotIn("Hello", r.text)
        self.assertEqual(self.ledger(), [])
        r = srv.post(self.live, {"message": "Hello"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual([row[0] for row in self.ledger()], [r.headers["request-id"]])
        self.assertIn("cannot write 1 ledger rows (attempt 5)", srv.output())

    def test_a_ledger_commit_that_fails_and_is_retried_bills_once(self):
        srv = self.serve("ledger:1x2")
        r = srv.post(self.live, {"message": "Hello"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual([row[0] for row in self.ledger()], [r.headers["request-id"]])

    def test_readyz_follows_the_store_and_usage_counts_survive_it(self):
        # The store thread makes two or three store calls a second once started: from the 15th
        # call on, a dozen fail, a few seconds of an unreachable store.
        test = self.key(mode="test", name="dev")
        srv = self.serve("store:15x12")
        seen = []
        deadline = time.time() + 30
        sent = 0
        while time.time() < deadline:
            code = requests.get(srv.url + "/readyz", timeout=5).status_code
            if not seen or seen[-1] != code:
                seen.append(code)
            # Test-key requests never wait for the store: they are answered throughout.
            self.assertEqual(srv.post(test, {"message": "hi"}).status_code, 200)
            sent += 1
            if seen[-3:] == [200, 503, 200]:
                break
            time.sleep(0.1)
        self.assertEqual(seen[-3:], [200, 503, 200], seen)
        self.assertIn("the store cannot be reached (KONNECT_FAULT)", srv.output())
        # Every request is counted once the store is back (counts that failed to be written went
        # back to their keys).
        deadline = time.time() + 10
        while time.time() < deadline:
            keys = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                            "--json").stdout)
            count = next(k["requests"] for k in keys if k["name"] == "dev")
            if count == sent:
                break
            time.sleep(0.2)
        self.assertEqual(count, sent)
        self.assertIn("cannot record key usage (will retry)", srv.output())


class ReleaseBuildTest(unittest.TestCase):
    def test_a_release_build_refuses_the_switch(self):
        if debug_build():
            self.skipTest("a debug build has the switch")
        data = harness.DataDir()
        try:
            r = subprocess.run([harness.BINARY, "serve", "--listen", "127.0.0.1:0"],
                               env=data.env(KONNECT_FAULT="store:1"), capture_output=True,
                               text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("release build", r.stderr)
        finally:
            data.cleanup()


class MalformedSwitchTest(unittest.TestCase):
    def test_a_malformed_switch_is_refused(self):
        if not debug_build():
            self.skipTest("a release build refuses any switch")
        data = harness.DataDir()
        try:
            for bad in ("store", "disk:1", "store:0", "store:1x", "store:1x0", "ledger:2y",
                        "store:-1", "store:+1", "store: 1", "store:3x-1", ",", "store:1,,ledger:2",
                        "store:99999999999999999999999", "store:1,"):
                r = subprocess.run([harness.BINARY, "serve", "--listen", "127.0.0.1:0"],
                                   env=data.env(KONNECT_FAULT=bad), capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(r.returncode, 2, bad)
                self.assertIn("KONNECT_FAULT must be", r.stderr)
        finally:
            data.cleanup()


if __name__ == "__main__":
    harness.main()
