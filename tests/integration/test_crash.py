"""Crash safety of billing: while clients send live requests, the server is killed with SIGKILL
and started again. Every 200 answer a client received must have its ledger row (nothing billed is
lost), no request may be billed twice, and the only rows without an answer are requests that were
in flight at the moment of the kill (at most one per client)."""

import json
import os
import signal
import sqlite3
import threading
import time
import unittest

import requests

import harness
from fake_backend import FakeBackend

CLIENTS = 8
ROUNDS = 2


class CrashTest(harness.ServerTest):
    def setUp(self):
        super().setUp()
        self.backend = FakeBackend()
        self.backend.start()
        self.addCleanup(self.backend.stop)
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump({"plans": [{"name": "metered", "price_per_request_micros": 1000,
                                  "max_concurrent_requests": 100}]}, f)
        self.live = self.key(mode="live", name="load")

    def ledger(self):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            ids = [r[0] for r in db.execute("SELECT request_id FROM usage_ledger")]
            rollup = db.execute("SELECT coalesce(sum(requests), 0), coalesce(sum(price_micros), 0) "
                                "FROM usage_rollup").fetchone()
            return ids, rollup
        finally:
            db.close()

    def load_then_kill(self, srv, seconds):
        """Runs CLIENTS clients against srv, kills srv after `seconds`, and returns the request
        ids of every 200 answer received."""
        answered, lock, stop = [], threading.Lock(), threading.Event()

        def client():
            s = requests.Session()
            body = json.dumps({"model": "fake-model",
                               "messages": [{"role": "user", "content": "bill me"}]})
            headers = {"Authorization": f"Bearer {self.live}",
                       "Content-Type": "application/json"}
            while not stop.is_set():
                try:
                    r = s.post(srv.url + "/v1/chat/completions", data=body, headers=headers,
                               timeout=5)
                except requests.RequestException:
                    return  # The server is gone.
                if r.status_code == 200:
                    r.json()  # A whole answer, not a cut one.
                    with lock:
                        answered.append(r.headers["request-id"])
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        srv.log.close()
        self.servers.remove(srv)
        return answered

    def test_kill_during_load_loses_no_billed_answer(self):
        answered = []
        for _ in range(ROUNDS):
            srv = self.start(KONNECT_MODEL_URL=self.backend.url)
            got = self.load_then_kill(srv, 2.0)
            self.assertGreater(len(got), 50, "the load generator got too few answers")
            answered += got
            ids, (rollup_requests, rollup_micros) = self.ledger()
            billed = set(ids)
            lost = [rid for rid in answered if rid not in billed]
            self.assertEqual(lost, [], "answers delivered without a ledger row")
            self.assertEqual(len(ids), len(billed), "a request was billed twice")
            extra = len(ids) - len(answered)
            self.assertGreaterEqual(extra, 0)
            self.assertLessEqual(extra, CLIENTS * ROUNDS,
                                 "more unanswered rows than requests in flight")
            print(f"round: {len(got)} answers, {len(ids)} ledger rows in all, "
                  f"{extra} rows for requests in flight at the kills", flush=True)
            # The rollup the invoices read was written in the same commits.
            self.assertEqual(rollup_requests, len(ids))
            self.assertEqual(rollup_micros, 1000 * len(ids))
        # And the server comes back and keeps billing.
        srv = self.start(KONNECT_MODEL_URL=self.backend.url)
        r = srv.post(self.live, path="/v1/chat")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertIn(r.headers["request-id"], self.ledger()[0])


if __name__ == "__main__":
    harness.main()
