"""Failure paths that run (KONNECT_FAULT, debug builds only): a ledger commit that fails for good
goes to the spool and is replayed once (its answer delivered), and without a spool gives `503
billing_unavailable` and bills nothing; while the store takes no rows, new live requests are
refused before they start; a commit retried after a failure bills once; a store that cannot be
reached turns /readyz to 503 and back, and the request counts written while it was down are kept
and written later. A release build refuses the switch."""

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

    def serve(self, fault, **env):
        return self.start(KONNECT_MODEL_URL=self.backend.url, KONNECT_MODEL="fake-model",
                          KONNECT_FAULT=fault, KONNECT_TEST_KEY_RPM="0", KONNECT_TEST_KEY_RPD="0",
                          **env)

    def spool(self):
        with open(os.path.join(self.data.path, "ledger.spool")) as f:
            return f.read()

    def until_billed(self, request_ids, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = sorted(row[0] for row in self.ledger())
            if rows == sorted(request_ids):
                return rows
            time.sleep(0.1)
        return sorted(row[0] for row in self.ledger())

    def ledger(self):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            return db.execute("SELECT request_id FROM usage_ledger WHERE voided = 0").fetchall()
        finally:
            db.close()

    def test_a_ledger_that_cannot_be_written_spools_the_row_and_replays_it_once(self):
        # Five failed tries (the first and four retries over about a second): the row goes to the
        # spool, synced, and the answer is delivered; the next tick replays it into the store.
        srv = self.serve("ledger:1x5")
        r = srv.post(self.live, {"message": "Hello"})
        self.assertEqual(r.status_code, 200, r.text)
        rid = r.headers["request-id"]
        self.assertIn("spooled 1 ledger rows", srv.output())
        self.assertEqual(self.until_billed([rid]), [rid])
        # Said once the replay's commit is done (the row may be visible a moment before).
        deadline = time.time() + 5
        while "replayed 1 spooled" not in srv.output() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("replayed 1 spooled ledger rows into the store", srv.output())
        self.assertEqual(self.spool(), "")
        # The store takes rows again: the next request is billed the usual way.
        r2 = srv.post(self.live, {"message": "Hello"})
        self.assertEqual(r2.status_code, 200, r2.text)
        self.assertEqual(self.until_billed([rid, r2.headers["request-id"]]),
                         sorted([rid, r2.headers["request-id"]]))

    def test_while_the_ledger_is_down_live_requests_are_refused_and_the_spool_outlives_a_stop(self):
        test = self.key(mode="test", name="dev")
        srv = self.serve("ledger:1x*")
        r = srv.post(self.live, {"message": "Hello"})
        self.assertEqual(r.status_code, 200, r.text)
        rid = r.headers["request-id"]
        # Nothing new starts that could not be billed; test keys go on.
        r = srv.post(self.live, {"message": "Hello"})
        self.assertError(r, 503, "billing_unavailable")
        self.assertEqual(r.headers["retry-after"], "1")
        self.assertIn("refused before they start", r.text)
        self.assertEqual(srv.post(test, {"message": "hi"}).status_code, 200)
        self.assertEqual(self.ledger(), [])
        self.assertIn(rid, self.spool())
        self.assertEqual(srv.stop(), 0)
        self.servers.remove(srv)
        # The next start replays the spool before it serves, and bills the request once.
        srv = self.serve("")
        self.assertIn("replayed 1 spooled ledger rows", srv.output())
        self.assertEqual([row[0] for row in self.ledger()], [rid])
        self.assertEqual(srv.post(self.live, {"message": "Hello"}).status_code, 200)

    def test_without_a_spool_a_ledger_that_cannot_be_written_delivers_nothing(self):
        # Five failed tries (the first and four retries over about a second) give the row up.
        srv = self.serve("ledger:1x5", KONNECT_LEDGER_SPOOL="off")
        r = srv.post(self.live, {"message": "Hello"})
        self.assertError(r, 503, "billing_unavailable")
        self.assertNotIn("Hello", r.text)
        self.assertEqual(self.ledger(), [])
        # Refused while the store takes no rows, then billed once a heartbeat went through.
        deadline = time.time() + 10
        while time.time() < deadline:
            r = srv.post(self.live, {"message": "Hello"})
            if r.status_code != 503:
                break
            time.sleep(0.1)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual([row[0] for row in self.ledger()], [r.headers["request-id"]])
        self.assertIn("cannot write 1 ledger rows (attempt 5)", srv.output())

    def test_a_ledger_commit_that_fails_and_is_retried_bills_once(self):
        srv = self.serve("ledger:1x2")
        r = srv.post(self.live, {"message": "Hello"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual([row[0] for row in self.ledger()], [r.headers["request-id"]])

    def test_readyz_follows_the_store_and_usage_counts_survive_it(self):
        # The store thread makes two or three store calls a second once started: from the 20th
        # call on, a dozen fail, a few seconds of an unreachable store.
        test = self.key(mode="test", name="dev")
        srv = self.serve("store:20x12")
        seen = []
        deadline = time.time() + 30
        sent = 0
        while time.time() < deadline:
            r = requests.get(srv.url + "/readyz", timeout=5)
            # Degraded, not out of service: known keys are served from memory.
            self.assertEqual(r.status_code, 200, r.text)
            state = (r.json()["status"], r.json()["components"]["store"]["status"])
            if not seen or seen[-1] != state:
                seen.append(state)
            # Test-key requests never wait for the store: they are answered throughout.
            self.assertEqual(srv.post(test, {"message": "hi"}).status_code, 200)
            sent += 1
            if [s[0] for s in seen[-3:]] == ["ready", "degraded", "ready"]:
                break
            time.sleep(0.1)
        self.assertEqual(seen[-3:], [("ready", "ok"), ("degraded", "unreachable"), ("ready", "ok")],
                         seen)
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
