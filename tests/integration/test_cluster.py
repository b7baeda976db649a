"""Several servers on one PostgreSQL store and one Redis (private servers from tests/services.py):
a change made through the CLI or any server's dashboard is in force on every live server once it
returns; a server that lags is named and the command exits 3; a dead server is not waited for; a
dashboard session works on a server other than the one that signed in; an account's quota, a test
key's rate limit and an account's cap on requests in flight hold exactly over all the servers
together; PostgreSQL or Redis restarted, or one server killed, under live load loses and doubles
no bill; a server without Redis does not join servers that share a store."""

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import subprocess
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import harness  # noqa: E402
import services  # noqa: E402
from harness import DataDir, ServerTest  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402
from test_dashboard import Browser  # noqa: E402

PG = None
REDIS = None
PLANS = {"plans": [{"name": "metered", "price_per_request_micros": 1000,
                    "max_concurrent_requests": 100}]}


class NodeDir(DataDir):
    """A server's own data directory, on the shared store, with the shared server secret."""

    def __init__(self, database, secret_file, node_id):
        super().__init__()
        self.shared = {"KONNECT_DATABASE": database, "KONNECT_SECRET_FILE": secret_file,
                       "KONNECT_NODE_ID": node_id, "KONNECT_REDIS_URL": REDIS.url}

    def env(self, **extra):
        return super().env(**{**self.shared, **extra})


class ClusterTest(ServerTest):
    def setUp(self):
        self.servers = []
        self.secrets = []
        PG.counter += 1
        self.dbname = f"cluster_{PG.counter}"
        self.url = PG.database(self.dbname)
        self.dirs = []
        REDIS.cli("FLUSHALL")
        secret = os.path.join(DataDir().path, "secret")
        for name in ("node-a", "node-b", "node-c"):
            self.dirs.append(NodeDir(self.url, secret, name))
        self.data = self.dirs[0]
        self.data.account()
        self.addCleanup(lambda: [d.cleanup() for d in self.dirs[1:]])

    def node(self, i, **env):
        s = harness.Server(self.dirs[i], **env)
        self.servers.append(s)
        self.addCleanup(lambda: s.proc.poll() is None and s.proc.kill())
        return s

    def live_nodes(self, count=2, plans=None, **env):
        """count nodes with a model backend and a priced plan, and a live key."""
        self.backend = FakeBackend().start()
        self.addCleanup(self.backend.stop)
        for d in self.dirs:
            with open(os.path.join(d.path, "plans.json"), "w") as f:
                json.dump(plans or PLANS, f)
        self.live = self.key(mode="live", name="load")
        return [self.node(i, KONNECT_MODEL_URL=self.backend.url, **env) for i in range(count)]

    def storm(self, nodes, key, clients, per_client, path="/v1/chat"):
        """clients threads each send per_client requests with key, spread over the nodes;
        returns the status codes (and error codes) of every answer."""
        out, lock = [], threading.Lock()

        def client(i):
            s = requests.Session()
            node = nodes[i % len(nodes)]
            for _ in range(per_client):
                r = s.post(node.url + path, data=json.dumps({"message": "hi"}), timeout=30,
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": "application/json"})
                code = r.json()["error"]["code"] if r.status_code != 200 else None
                with lock:
                    out.append((r.status_code, code))
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def test_a_monthly_quota_is_exact_over_three_nodes_under_concurrency(self):
        nodes = self.live_nodes(3)
        p = self.data.cli("account", "set-quota", "--account", "dev@example.com",
                          "--requests", "25")
        self.assertIn("applied by every running server (3)", p.stderr)
        got = self.storm(nodes, self.live, 12, 5)
        ok = [c for c in got if c[0] == 200]
        self.assertEqual(len(ok), 25, got)
        self.assertEqual(sorted(set(got) - {(200, None)}), [(429, "insufficient_quota")])
        ids, rolled = self.ledger()
        self.assertEqual((len(ids), rolled), (25, 25))

    def test_a_test_keys_rate_limit_is_exact_over_nodes(self):
        nodes = [self.node(i, KONNECT_TEST_KEY_RPM="10", KONNECT_TEST_KEY_RPD="0")
                 for i in range(3)]
        key = self.key()
        got = self.storm(nodes, key, 6, 5)
        self.assertEqual(len([c for c in got if c[0] == 200]), 10, got)
        self.assertEqual(sorted(set(got) - {(200, None)}), [(429, "rate_limited")])

    def test_a_restricted_live_keys_own_rate_limit_is_exact_over_nodes(self):
        nodes = self.live_nodes(3)
        key = self.key("dev@example.com", "live", "narrow", "--rpm", "7")
        got = self.storm(nodes, key, 6, 4)
        self.assertEqual(len([c for c in got if c[0] == 200]), 7, got)
        self.assertEqual(sorted(set(got) - {(200, None)}), [(429, "rate_limited")])
        # The account's other keys still have room; only the key's own answers were billed.
        self.assertEqual(nodes[0].post(self.live).status_code, 200)
        ids, _ = self.ledger()
        self.assertEqual(len(ids), 8)

    def test_a_restricted_live_keys_own_monthly_quota_is_exact_over_nodes_and_redis_losses(self):
        nodes = self.live_nodes(3)
        key = self.key("dev@example.com", "live", "quota", "--monthly-requests", "9")
        got = self.storm(nodes, key, 6, 3)
        self.assertEqual(len([c for c in got if c[0] == 200]), 9, got)
        self.assertEqual(sorted(set(got) - {(200, None)}), [(429, "insufficient_quota")])
        # The account's other keys still have room.
        self.assertEqual(nodes[1].post(self.live).status_code, 200)
        # A roll does not start the quota again, on any node.
        key_id = self.data.key_id(key)
        new = self.data.cli("key", "roll", key_id, "--grace", "0").stdout.strip()
        self.secrets.append(new)
        for n in nodes:
            self.assertError(n.post(new), 429, "insufficient_quota")
        # Redis loses everything: while the nodes seed it again from the ledger, a storm of the
        # key's requests is refused, every one (503 until the month is seeded, lines included).
        REDIS.cli("FLUSHALL")
        got = self.storm(nodes, new, 6, 10)
        self.assertLessEqual(set(got), {(503, "quota_unavailable"), (429, "insufficient_quota")})
        for n in nodes:
            deadline = time.time() + 10
            while (r := n.post(new)).status_code == 503 and time.time() < deadline:
                time.sleep(0.05)
            self.assertError(r, 429, "insufficient_quota")
        # A Redis whose counts may be older than the ledger's (its run is not the one they were
        # checked under): the line is raised to the ledger's again, as its account is.
        lines = [k for k in REDIS.cli("--scan", "--pattern", f"kn:{{a:*}}:m:*:line:{key_id}").split()
                 if k]
        self.assertEqual(len(lines), 1)
        self.assertEqual(int(REDIS.cli("GET", lines[0])), 9)
        REDIS.cli("SET", lines[0], "2")
        REDIS.cli("DEL", "kn:run")
        deadline = time.time() + 10
        while int(REDIS.cli("GET", lines[0])) < 9 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(int(REDIS.cli("GET", lines[0])), 9)
        for n in nodes:
            deadline = time.time() + 10
            while (r := n.post(new)).status_code == 503 and time.time() < deadline:
                time.sleep(0.05)
            self.assertError(r, 429, "insufficient_quota")
        # Raised on one node, the others see it: exactly one more.
        self.data.cli("key", "update", self.data.key_id(new), "--monthly-requests", "10")
        got = self.storm(nodes, new, 3, 2)
        self.assertEqual(len([c for c in got if c[0] == 200]), 1, got)
        ids, _ = self.ledger()
        self.assertEqual(len(ids), 11)

    def test_a_key_quota_set_again_after_a_lift_and_a_rolling_restart_counts_every_request(self):
        nodes = self.live_nodes(2)
        key = self.key("dev@example.com", "live", "quota", "--monthly-requests", "3")
        key_id = self.data.key_id(key)
        self.assertEqual([nodes[i % 2].post(key).status_code for i in range(2)], [200, 200])
        self.data.cli("key", "update", key_id, "--monthly-requests", "none")
        for i, n in enumerate(list(nodes)):  # a rolling restart while it has no quota
            self.assertEqual(n.stop(), 0)
            self.servers.remove(n)
            nodes[i] = self.node(i, KONNECT_MODEL_URL=self.backend.url)
        self.assertEqual([nodes[i % 2].post(key).status_code for i in range(5)], [200] * 5)
        self.data.cli("key", "update", key_id, "--monthly-requests", "8")
        got = self.storm(nodes, key, 4, 2)
        self.assertEqual(len([c for c in got if c[0] == 200]), 1, got)
        ids, _ = self.ledger()
        self.assertEqual(len(ids), 8)

    def test_the_accounts_cap_on_requests_in_flight_holds_over_nodes(self):
        plans = {"plans": [{"name": "metered", "price_per_request_micros": 1000,
                            "max_concurrent_requests": 3}]}
        a, b = self.live_nodes(2, plans=plans)
        self.backend.set_mode("slow_head", delay_ms=1500)
        got = self.storm([a, b], self.live, 10, 1)
        self.assertEqual(len([c for c in got if c[0] == 200]), 3, got)
        self.assertEqual(sorted(set(got) - {(200, None)}),
                         [(429, "too_many_concurrent_requests")])
        # Every slot came back once its request was billed.
        self.backend.set_mode("normal")
        self.assertEqual(a.post(self.live).status_code, 200)
        ids, _ = self.ledger()
        self.assertEqual(len(ids), 4)

    def test_an_admission_that_timed_out_holds_no_quota_when_redis_applies_it_late(self):
        # Redis busy for longer than the node waits (KONNECT_REDIS_TIMEOUT_MS, 250): the live
        # request is refused, unbilled; the admission, still in Redis's input, is applied once
        # Redis is free. The node's release fences it: no lease, no request counted.
        plans = {"plans": [{"name": "metered", "price_per_request_micros": 1000,
                            "max_concurrent_requests": 1}]}
        (a,) = self.live_nodes(1, plans=plans)
        self.assertEqual(a.post(self.live).status_code, 200)
        busy = threading.Thread(target=REDIS.cli, args=(
            "EVAL", "local s = redis.call('TIME') repeat local n = redis.call('TIME') until "
            "(n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 1200000 return 1", "0"))
        busy.start()
        time.sleep(0.1)
        r = a.post(self.live)
        busy.join()
        self.assertError(r, 503, "quota_unavailable")
        # Once the node is connected again, the lease is gone and only the first request counts.
        deadline = time.time() + 10
        while time.time() < deadline:
            r = a.post(self.live)
            if r.status_code == 200:
                break
            time.sleep(0.1)
        self.assertEqual(r.status_code, 200, r.text)
        time.sleep(0.3)
        leases = [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:leases").split() if k]
        for k in leases:
            self.assertEqual(REDIS.cli("ZCARD", k).strip(), "0", k)
        counted = [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:m:*:req").split() if k]
        self.assertEqual(len(counted), 1)
        self.assertEqual(REDIS.cli("GET", counted[0]).strip(), "2")
        ids, _ = self.ledger()
        self.assertEqual(len(ids), 2)

    def test_backup_of_a_postgresql_store_points_to_pg_dump(self):
        copy = os.path.join(self.data.path, "copy.db")
        p = self.data.cli("backup", "--to", copy, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("pg_dump", p.stderr)
        self.assertFalse(os.path.exists(copy))

    def test_a_server_loads_its_functions_only_over_older_ones(self):
        # During a rolling upgrade, a server of an older version that reconnects must not put its
        # functions back under the newer servers: each loads its own only when Redis holds none
        # or older ones.
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "src", "limits",
                               "konnect.lua")) as f:
            lib = f.read()
        ours = int(re.search(r"local VERSION = (\d+)", lib).group(1))
        # The functions' text of each version: a change to konnect.lua must come with a new
        # VERSION (servers load only newer ones), and its text's hash here.
        texts = {3: "c737668d6142334f2071970ec7d1309273ac83cda4aa87e7038bfb930c396cb1",
                 4: "8f78fad54e2d46613564ea16fe49b3cfad35b120149d5cfd5f8eaabb396cdc28",
                 5: "61c824f5ee628306ffe6b9802c8c8869d428681eec24a9643a326c542fbbcb63"}
        body = re.sub(r"local VERSION = \d+", "local VERSION = ?", lib)
        self.assertEqual(hashlib.sha256(body.encode()).hexdigest(), texts.get(ours),
                         "konnect.lua changed: raise its VERSION and record the new text's hash")

        def load(version):
            REDIS.cli("FUNCTION", "LOAD", "REPLACE",
                      lib.replace(f"local VERSION = {ours}", f"local VERSION = {version}"))
        load(ours + 1)
        a = self.node(0)
        self.assertEqual(a.post(self.key()).status_code, 200)
        self.assertEqual(REDIS.cli("FCALL", "kn_version", "0").strip(), str(ours + 1))
        a.stop()
        load(ours - 1)
        a = self.node(0)
        self.assertEqual(a.post(self.key()).status_code, 200)
        deadline = time.time() + 5
        while REDIS.cli("FCALL", "kn_version", "0").strip() != str(ours) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(REDIS.cli("FCALL", "kn_version", "0").strip(), str(ours))
        # An older server that connects later puts its own back: the running server restores
        # its version within a second, without reconnecting.
        load(ours - 1)
        deadline = time.time() + 5
        while REDIS.cli("FCALL", "kn_version", "0").strip() != str(ours) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(REDIS.cli("FCALL", "kn_version", "0").strip(), str(ours))
        self.assertEqual(a.post(self.key()).status_code, 200)

    def test_a_release_that_arrives_before_its_admission_fences_it_off(self):
        self.node(0)  # loads the functions
        acct = "kn:{a:acct0}:"
        REDIS.cli("SET", acct + "m:1:req", "0")
        keys = [acct + "rate", acct + "m:1:req", acct + "m:1:tok", acct + "leases",
                acct + "held", acct + "reserved", "kn:seeded:1", acct + "voids", acct + "lapses"]

        def admit(lease, ms="60000", want="10"):
            return REDIS.cli("FCALL", "kn_admit", "9", *keys, "0", "0", "-1", "1000", want,
                             lease, ms, "1").split()

        def release(lease):
            REDIS.cli("FCALL", "kn_release", "7", keys[1], keys[3], keys[4], keys[5], keys[7],
                      keys[2], keys[8], lease, "1")

        def settle(lease, tokens, waited="0"):
            REDIS.cli("FCALL", "kn_settle", "7", keys[2], keys[3], keys[4], keys[5], keys[1],
                      keys[6], keys[8], lease, str(tokens), waited, "1")

        def get(k):
            return int(REDIS.cli("GET", k).strip() or 0)
        release("req_late")
        self.assertEqual(admit("req_late")[0], "6")  # void: nothing taken
        self.assertEqual(REDIS.cli("ZCARD", keys[3]).strip(), "0")
        self.assertEqual(get(keys[1]), 0)
        self.assertEqual(admit("req_next")[0], "0")  # the fence stops that one lease only
        self.assertEqual(get(keys[1]), 1)
        release("req_next")
        self.assertEqual(get(keys[1]), 0)
        self.assertEqual(REDIS.cli("ZCARD", keys[7]).strip(), "0")
        # A lease that lapses (its node was cut off for longer than a request may last) counts as
        # billed with the tokens it held; its settlement, arriving later, puts the tokens right,
        # and a late release gives request and tokens back.
        self.assertEqual(admit("req_cut", ms="1", want="40")[:2], ["0", "40"])
        self.assertEqual(admit("req_cut2", ms="1", want="30")[:2], ["0", "30"])
        time.sleep(0.01)
        self.assertEqual(admit("req_other")[0], "0")  # lapses the two
        self.assertEqual((get(keys[1]), get(keys[2]), get(keys[5])), (3, 70, 10))
        settle("req_cut", 25, waited="1")
        self.assertEqual(get(keys[2]), 55)
        release("req_cut2")
        self.assertEqual((get(keys[1]), get(keys[2])), (2, 25))
        settle("req_cut", 25, waited="1")  # once only
        self.assertEqual(get(keys[2]), 25)
        release("req_other")
        self.assertEqual((get(keys[1]), get(keys[2]), get(keys[5])), (1, 25, 0))
        # Raised to the ledger (a Redis that lost counts): requests to those billed plus those in
        # flight, tokens to those billed; never lowered.
        def reconcile(billed, tokens):
            return REDIS.cli("FCALL", "kn_reconcile", "4", keys[1], keys[2], keys[3], keys[6],
                             str(billed), str(tokens)).strip()
        REDIS.cli("SET", keys[6], "1")  # the month's seeded mark
        self.assertEqual(admit("req_a")[0], "0")
        self.assertEqual(admit("req_b")[0], "0")
        self.assertEqual(reconcile(1, 25), "0")  # nothing is lower than the ledger
        self.assertEqual(reconcile(6, 90), "1")
        self.assertEqual((get(keys[1]), get(keys[2])), (8, 90))
        self.assertEqual(reconcile(2, 10), "0")
        self.assertEqual((get(keys[1]), get(keys[2])), (8, 90))
        release("req_a")
        release("req_b")
        REDIS.cli("SET", keys[1], "1")
        REDIS.cli("SET", keys[2], "25")
        REDIS.cli("DEL", keys[6], keys[1])
        self.assertEqual(reconcile(6, 90), "0")  # unseeded: the seeding's
        REDIS.cli("SET", keys[1], "1")
        # A server of the version before (no fences: seven keys to admit, four to release) keeps
        # working while a newer one has replaced the functions during a rolling upgrade.
        old = REDIS.cli("FCALL", "kn_admit", "7", *keys[:7], "0", "0", "-1", "-1", "10",
                        "req_old", "60000", "1").split()
        self.assertEqual(old[0], "0", old)
        self.assertEqual(get(keys[1]), 2)
        REDIS.cli("FCALL", "kn_release", "4", keys[1], keys[3], keys[4], keys[5], "req_old")
        self.assertEqual(get(keys[1]), 1)
        self.assertEqual(REDIS.cli("ZCARD", keys[3]).strip(), "0")
        gone = REDIS.cli("FCALL", "kn_release", "4", keys[1], keys[3], keys[4], keys[5],
                         "req_old")
        self.assertNotIn("ERR", gone)
        self.assertNotIn("ERR", REDIS.cli("FCALL", "kn_settle", "6", keys[2], keys[3], keys[4],
                                          keys[5], keys[1], keys[6], "req_gone", "5", "0"))

    def test_a_settlement_kept_while_redis_was_away_is_sent_once_it_is_back(self):
        # Redis keeps its data (append-only file) across a restart during a streamed answer: the
        # lease it holds is settled as soon as the node is connected again, with no other
        # request to carry it, and the tokens counted are the ledger's.
        (a,) = self.live_nodes(1)
        self.assertEqual(a.post(self.live).status_code, 200)
        REDIS.cli("CONFIG", "SET", "appendonly", "yes")
        REDIS.appendonly = True

        def restore():
            REDIS.cli("CONFIG", "SET", "appendonly", "no")
            REDIS.appendonly = False
        self.addCleanup(restore)
        self.backend.set_mode("slow_stream", delay_ms=300)
        body = json.dumps({"model": "fake-model", "stream": True,
                           "messages": [{"role": "user", "content": "a slow one"}]})
        out = {}

        def stream():
            r = requests.post(a.url + "/v1/chat/completions", data=body, stream=True,
                              headers={"Authorization": f"Bearer {self.live}",
                                       "Content-Type": "application/json"}, timeout=30)
            out["status"], out["body"] = r.status_code, r.content
        t = threading.Thread(target=stream)
        t.start()
        leases = lambda: [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:leases").split()
                          if k and REDIS.cli("ZCARD", k).strip() != "0"]
        deadline = time.time() + 5
        while not leases() and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(len(leases()), 1)
        while REDIS.cli("INFO", "persistence").find("aof_rewrite_in_progress:0") < 0:
            time.sleep(0.02)
        REDIS.stop_server()
        t.join()
        self.assertEqual(out["status"], 200)
        self.assertIn(b"[DONE]", out["body"])
        REDIS.start()
        self.settled([a])
        deadline = time.time() + 5
        while leases() and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(leases(), [])
        ids, _ = self.ledger()
        self.assertEqual(len(ids), 2)
        tokens = int(PG.psql("SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM "
                             "usage_ledger WHERE voided = 0", self.dbname))
        req = [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:m:*:req").split() if k]
        tok = [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:m:*:tok").split() if k]
        self.assertEqual(int(REDIS.cli("GET", req[0])), 2)
        self.assertEqual(int(REDIS.cli("GET", tok[0])), tokens)

    def test_a_redis_restored_from_an_older_copy_is_raised_to_the_ledgers_counts(self):
        # Redis comes back from a snapshot taken before the last requests, its seeded mark
        # intact: the counts it lost are the ledger's again once the nodes reconnect, so the
        # account cannot spend them twice.
        a, b = self.live_nodes(2)
        for _ in range(3):
            self.assertEqual(a.post(self.live).status_code, 200)
        REDIS.cli("SAVE")
        dump = os.path.join(REDIS.dir, "dump.rdb")
        shutil.copy(dump, dump + ".old")
        self.addCleanup(lambda: os.path.exists(dump) and os.unlink(dump))
        for n in (a, b, a, b, a):
            self.assertEqual(n.post(self.live).status_code, 200)
        self.settled([a, b])
        REDIS.stop_server()
        shutil.move(dump + ".old", dump)
        REDIS.start()
        req = [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:m:*:req").split() if k]
        self.assertEqual(len(req), 1)
        tok = req[0][:-len("req")] + "tok"
        self.assertLess(int(REDIS.cli("GET", req[0]) or 0), 8)  # the copy is older
        ids, _ = self.ledger()
        tokens = int(PG.psql("SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM "
                             "usage_ledger WHERE voided = 0", self.dbname))
        deadline = time.time() + 10
        while time.time() < deadline and int(REDIS.cli("GET", req[0]) or 0) < len(ids):
            time.sleep(0.05)
        self.assertEqual(int(REDIS.cli("GET", req[0])), len(ids))
        self.assertEqual(int(REDIS.cli("GET", tok)), tokens)
        # Until then no live request was admitted on the lost counts (refused, unbilled); the
        # servers admit again once the counts are marked good for this run of Redis.
        for n in (a, b):
            deadline = time.time() + 5
            while (r := n.post(self.live)).status_code != 200 and time.time() < deadline:
                self.assertError(r, 503, "quota_unavailable")
                time.sleep(0.05)
            self.assertEqual(r.status_code, 200, r.text)
        self.settled([a, b])
        time.sleep(0.3)
        self.assertEqual(int(REDIS.cli("GET", req[0])), len(ids) + 2)

    def test_redis_restarted_under_load_loses_and_doubles_no_bill(self):
        a, b = self.live_nodes(2)

        def restart():
            time.sleep(1.5)
            REDIS.restart(downtime=0.5)
            time.sleep(2.5)
        answered, refused = self.load([a, b], 6, restart)
        self.settled([a, b])
        delivered = [rid for ids in answered.values() for rid in ids]
        ids, rolled = self.ledger()
        self.assertEqual([rid for rid in delivered if rid not in set(ids)], [])
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(rolled, len(ids))
        for n in (a, b):
            c = requests.get(n.url + "/readyz", timeout=5).json()["components"]["counters"]
            self.assertEqual(c, {"status": "ok", "where": "redis"})
        # While Redis was away (and until each month's usage was seeded again), live requests
        # were refused, fail closed, and not billed.
        self.assertEqual(sorted({c for c, _ in refused}), [503] if refused else [])
        self.assertEqual([rid for _, rid in refused if rid in set(ids)], [])
        print(f"{len(delivered)} answers, {len(refused)} refused while Redis was away",
              flush=True)
        for n in (a, b):
            r = n.post(self.live)
            self.assertEqual(r.status_code, 200, r.text)
        # Redis's counts are the ledger's again, exactly: no request or token counted twice (a
        # settlement that waited for Redis adds nothing the seeding counted) or left out.
        self.settled([a, b])
        time.sleep(0.3)
        ids, _ = self.ledger()
        tokens = int(PG.psql("SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM "
                             "usage_ledger WHERE voided = 0", self.dbname))
        req = [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:m:*:req").split() if k]
        tok = [k for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:m:*:tok").split() if k]
        self.assertEqual((len(req), len(tok)), (1, 1))
        self.assertEqual(int(REDIS.cli("GET", req[0])), len(ids))
        self.assertEqual(int(REDIS.cli("GET", tok[0])), tokens)
        for k in REDIS.cli("--scan", "--pattern", "kn:{a:*}:leases").split():
            self.assertEqual(REDIS.cli("ZCARD", k).strip(), "0", k)

    def test_plans_applied_in_the_store_reach_every_node_and_name_their_version(self):
        a, b = self.live_nodes(2)
        path = os.path.join(self.data.path, "new-plans.json")
        with open(path, "w") as f:
            json.dump({"plans": [{"name": "metered", "price_per_request_micros": 5000,
                                  "requests_per_month": 3, "max_concurrent_requests": 100}]}, f)
        p = self.data.cli("plans", "apply", path)
        self.assertIn("published plans version 1", p.stdout)
        self.assertIn("applied by every running server (2)", p.stderr)
        # In force on both nodes, with one quota for the account over both.
        got = [n.post(self.live).status_code for n in (a, b, a, b, a)]
        self.assertEqual(got, [200, 200, 200, 429, 429])
        rows = PG.psql("SELECT price_micros, plan_version FROM usage_ledger WHERE voided = 0",
                       self.dbname).split()
        self.assertEqual(rows, ["5000|1"] * 3)
        # A broken file publishes nothing; the servers keep version 1.
        with open(path, "w") as f:
            f.write('{"plans": [')
        p = self.data.cli("plans", "apply", path, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nothing was published", p.stderr)
        listed = json.loads(self.data.cli("plans", "--json").stdout)
        self.assertEqual(listed["version"], 1)
        # A node's own file no longer counts: SIGHUP's reload says where the plans come from.
        p = self.data.cli("plans", "reload", check=False)
        self.assertIn("the plans come from the store (version 1)", p.stderr)

    def test_a_single_node_store_copied_into_postgresql_keeps_keys_bills_and_users(self):
        # A SQLite installation with history: keys (one revoked), a dashboard user, bills.
        PG.counter += 1
        self.dbname = f"copy_{PG.counter}"
        self.url = PG.database(self.dbname)
        old = DataDir()
        self.addCleanup(old.cleanup)
        old.account()
        backend = FakeBackend().start()
        self.addCleanup(backend.stop)
        with open(os.path.join(old.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        live = old.key(mode="live", name="prod")
        gone = old.key(mode="test", name="gone")
        self.secrets += [live, gone]
        srv = harness.Server(old, KONNECT_MODEL_URL=backend.url)
        self.servers.append(srv)
        user = Browser(srv)
        user.signup("carol@example.com")
        for _ in range(3):
            self.assertEqual(srv.post(live).status_code, 200)
        old.cli("key", "revoke", old.key_id(gone))
        self.assertEqual(srv.stop(), 0)
        self.servers.remove(srv)

        p = old.cli("store", "copy", "--from", os.path.join(old.path, "konnect.db"), "--to",
                    self.url, check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"usage_ledger\s+3 rows")
        self.assertRegex(p.stdout, r"api_keys\s+2 rows")
        self.assertIn("copied", p.stderr)
        self.assertNotIn("password", p.stderr)
        # Copying into a store that is not empty is refused, and copies nothing.
        p = old.cli("store", "copy", "--from", os.path.join(old.path, "konnect.db"), "--to",
                    self.url, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("not empty", p.stderr)

        # A server on PostgreSQL with the same secret: the same keys, users and bills.
        node = NodeDir(self.url, os.path.join(old.path, "secret"), "node-new")
        self.addCleanup(node.cleanup)
        with open(os.path.join(node.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        srv = harness.Server(node, KONNECT_MODEL_URL=backend.url)
        self.servers.append(srv)
        self.assertEqual(srv.post(live).status_code, 200)
        self.assertError(srv.post(gone), 401, "api_key_revoked")
        carol = Browser(srv)
        r = carol.call("POST", "signin", {"email": "carol@example.com",
                                          "password": "correct horse battery staple"})
        self.assertEqual(r.status_code, 200, r.text)
        usage = json.loads(node.cli("usage", "--account", "dev@example.com", "--json").stdout)
        self.assertEqual(usage["totals"]["requests"], 4)
        audit = node.cli("audit", "--json").stdout
        self.assertIn("key.revoke", audit)
        # New audit entries and plans versions go on after the copied ones.
        node.cli("key", "create", "--account", "dev@example.com", "--mode", "test", "--name", "n")

    def nginx(self, nodes):
        """nginx with contrib/nginx/konnect-cluster.conf in front of nodes; returns its URL."""
        here = os.path.dirname(os.path.abspath(__file__))
        sample = os.path.join(here, "..", "..", "contrib", "nginx", "konnect-cluster.conf")
        d = DataDir()
        self.addCleanup(d.cleanup)
        port = harness.free_port()
        with open(sample) as f:
            conf = f.read()
        conf = conf.replace("127.0.0.1:8081", f"127.0.0.1:{nodes[0].port}")
        conf = conf.replace("127.0.0.1:8082", f"127.0.0.1:{nodes[1].port}")
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
        url = f"http://127.0.0.1:{port}"
        harness.start_nginx(self, d.path, conf, url + "/healthz")
        return url

    def test_two_nodes_behind_nginx_with_the_sample_configuration(self):
        a, b = (self.node(i, KONNECT_TRUSTED_PROXIES="127.0.0.1") for i in range(2))
        url = self.nginx([a, b])

        class Front:  # The load balancer, as the harness's servers are used.
            pass
        front = Front()
        front.url = url
        alice = Browser(front)
        alice.signup("alice@example.com")
        r = alice.call("POST", "keys", {"name": "web", "mode": "test"})
        self.assertEqual(r.status_code, 201, r.text)
        self.assertEqual(r.json()["propagation"]["servers"], 2)
        key, secret = r.json()["key"], r.json()["secret"]
        self.secrets.append(secret)
        s = requests.Session()
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        for _ in range(6):
            r = s.post(url + "/v1/chat", data=json.dumps({"message": "hi"}), headers=headers)
            self.assertEqual(r.status_code, 200, r.text)
        # Both servers answered (round robin), each with the one session the client has.
        for n in (a, b):
            self.assertIn('"path":"/v1/chat"', n.output())
        for _ in range(4):
            self.assertEqual(alice.call("GET", "keys").status_code, 200)
        r = alice.call("POST", f"keys/{key['id']}/revoke")
        self.assertEqual(r.status_code, 200, r.text)
        for _ in range(4):
            r = s.post(url + "/v1/chat", data=json.dumps({"message": "hi"}), headers=headers)
            self.assertError(r, 401, "api_key_revoked")
        # The revocation made through the proxy is audited.
        audit = json.loads(self.data.cli("audit", "--json").stdout)
        self.assertTrue(any(e["action"] == "key.revoke" for e in audit), audit)

    def test_of_two_nodes_without_redis_started_together_one_refuses(self):
        procs = []
        for d in self.dirs[:2]:
            env = d.env()
            env.pop("KONNECT_REDIS_URL")
            procs.append(subprocess.Popen(
                [harness.BINARY, "serve", "--listen", f"127.0.0.1:{harness.free_port()}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        deadline = time.time() + 20
        while time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        time.sleep(1)
        codes = [p.poll() for p in procs]
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
        # Exactly one refused (the younger); the other was serving.
        self.assertEqual(sorted(c is None for c in codes), [False, True],
                         [codes] + [p.stderr.read()[-600:] for p in procs])

    def test_a_node_without_redis_does_not_join_nodes_that_share_a_store(self):
        a = self.node(0)
        env = self.dirs[1].env(KONNECT_REDIS_URL="")
        env.pop("KONNECT_REDIS_URL")
        p = subprocess.run([harness.BINARY, "serve", "--listen", f"127.0.0.1:{harness.free_port()}"],
                           env=env, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("1 other live server uses this store", p.stderr)
        self.assertIn("KONNECT_REDIS_URL", p.stderr)
        self.assertEqual(a.post(self.key()).status_code, 200)

    def ledger(self):
        """The ledger's request ids (bills, not fences) and the rollup's request count."""
        ids = PG.psql("SELECT request_id FROM usage_ledger WHERE voided = 0",
                      self.dbname).split()
        rolled = int(PG.psql("SELECT coalesce(sum(requests), 0) FROM usage_rollup", self.dbname))
        return ids, rolled

    def load(self, nodes, clients, during):
        """Runs clients against the nodes in turn while during() runs; returns the request ids
        of every 200 answer and of every other answer, by node."""
        answered, refused, lock, stop = {}, [], threading.Lock(), threading.Event()
        body = json.dumps({"model": "fake-model",
                           "messages": [{"role": "user", "content": "bill me"}]})
        headers = {"Authorization": f"Bearer {self.live}", "Content-Type": "application/json"}

        def client(node):
            s = requests.Session()
            while not stop.is_set():
                try:
                    r = s.post(node.url + "/v1/chat/completions", data=body, headers=headers,
                               timeout=10)
                except requests.RequestException:
                    if node.proc.poll() is not None:
                        return  # The node is gone.
                    continue
                with lock:
                    if r.status_code == 200:
                        r.json()  # A whole answer, not a cut one.
                        answered.setdefault(node.url, []).append(r.headers["request-id"])
                    else:
                        refused.append((r.status_code, r.headers.get("request-id")))
        threads = [threading.Thread(target=client, args=(nodes[i % len(nodes)],))
                   for i in range(clients)]
        for t in threads:
            t.start()
        try:
            during()
        finally:
            stop.set()
            for t in threads:
                t.join()
        return answered, refused

    def settled(self, nodes, timeout=30):
        """Waits until every node is ready with nothing spooled."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            docs = [requests.get(n.url + "/readyz", timeout=5).json() for n in nodes]
            if all(d["status"] == "ready" and d["components"]["ledger"]["spooled"] == 0
                   for d in docs):
                return docs
            time.sleep(0.2)
        raise AssertionError(f"the nodes did not settle: {docs}")

    def test_postgresql_restarted_under_load_loses_and_doubles_no_bill(self):
        a, b = self.live_nodes()

        def restart():
            time.sleep(1.5)
            PG.restart(downtime=1.0)
            time.sleep(2.0)
        answered, refused = self.load([a, b], 6, restart)
        self.settled([a, b])
        delivered = [rid for ids in answered.values() for rid in ids]
        self.assertGreater(len(delivered), 50, "the load generator got too few answers")
        ids, rolled = self.ledger()
        self.assertEqual([rid for rid in delivered if rid not in set(ids)], [],
                         "answers delivered without a ledger row")
        self.assertEqual(len(ids), len(set(ids)), "a request was billed twice")
        self.assertEqual(rolled, len(ids), "the rollup disagrees with the ledger")
        # Refusals while the store was away were not billed.
        self.assertEqual([c for c, _ in refused if c != 503], [])
        self.assertEqual([rid for _, rid in refused if rid in set(ids)], [])
        # Extra rows are requests in flight whose answer could not be delivered: at most one
        # per client.
        self.assertLessEqual(len(ids) - len(delivered), 6)
        print(f"{len(delivered)} answers, {len(refused)} refused while the store was away, "
              f"{len(ids)} ledger rows", flush=True)
        # Service resumed by itself on both nodes.
        for n in (a, b):
            r = n.post(self.live)
            self.assertEqual(r.status_code, 200, r.text)

    def test_kill_9_of_one_node_under_load_loses_no_bill_and_the_other_serves_on(self):
        a, b = self.live_nodes()

        def kill_b():
            time.sleep(1.5)
            b.proc.send_signal(signal.SIGKILL)
            b.proc.wait()
            time.sleep(1.5)
        answered, refused = self.load([a, b], 6, kill_b)
        b.log.close()
        self.servers.remove(b)
        self.settled([a])
        delivered = [rid for ids in answered.values() for rid in ids]
        ids, rolled = self.ledger()
        self.assertEqual([rid for rid in delivered if rid not in set(ids)], [],
                         "answers delivered without a ledger row")
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(rolled, len(ids))
        self.assertLessEqual(len(ids) - len(delivered), 3, "more rows than requests in flight")
        self.assertEqual(refused, [])
        # Node A kept serving through the kill and after it.
        self.assertGreater(len(answered.get(a.url, [])), 20)
        self.assertEqual(a.post(self.live).status_code, 200)

    def revoke(self, secret, *extra):
        key_id = self.data.key_id(secret)
        return self.data.cli("key", "revoke", key_id, *extra, check=False)

    def test_a_revocation_through_the_cli_is_in_force_on_every_node_when_it_returns(self):
        a, b = self.node(0), self.node(1)
        key = self.key()
        # Created through the CLI: both nodes answer it once the command returned.
        self.assertEqual(a.post(key).status_code, 200)
        self.assertEqual(b.post(key).status_code, 200)
        p = self.revoke(key)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("applied by every running server (2)", p.stderr)
        self.assertError(b.post(key), 401, "api_key_revoked")
        self.assertError(a.post(key), 401, "api_key_revoked")

    def test_a_suspension_through_the_cli_is_in_force_on_every_node_when_it_returns(self):
        a, b = self.node(0), self.node(1)
        key = self.key()
        self.assertEqual(b.post(key).status_code, 200)
        p = self.data.cli("account", "suspend", "--account", "dev@example.com", check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("applied by every running server (2)", p.stderr)
        for node in (a, b):
            self.assertError(node.post(key), 403, "account_suspended")
        p = self.data.cli("account", "reinstate", "--account", "dev@example.com", check=False)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(a.post(key).status_code, 200)
        self.assertEqual(b.post(key).status_code, 200)

    def test_a_suspension_through_the_operator_api_is_in_force_on_every_node_when_it_answers(self):
        a, b = self.node(0), self.node(1)
        key = self.key()
        op = self.data.cli("operator-key", "create", "--name", "billing").stdout.strip()
        self.secrets.append(op)
        self.assertEqual(b.post(key).status_code, 200)

        def call(node, action):
            return requests.post(f"{node.url}/v1/operator/accounts/dev@example.com/{action}",
                                 headers={"Authorization": f"Bearer {op}"}, timeout=10)
        r = call(a, "suspend")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["propagation"], {"servers": 2, "lagging": []})
        for node in (b, a):
            self.assertError(node.post(key), 403, "account_suspended")
        r = call(b, "reinstate")
        self.assertEqual(r.status_code, 200, r.text)
        for node in (a, b):
            self.assertEqual(node.post(key).status_code, 200)

    def test_a_revocation_through_one_dashboard_is_refused_by_the_other_node(self):
        a, b = self.node(0), self.node(1)
        alice = Browser(a)
        alice.signup("alice@example.com")
        r = alice.call("POST", "keys", {"name": "web", "mode": "test"})
        self.assertEqual(r.status_code, 201, r.text)
        self.assertEqual(r.json()["propagation"], {"servers": 2, "lagging": []})
        key, secret = r.json()["key"], r.json()["secret"]
        self.secrets.append(secret)
        self.assertEqual(b.post(secret).status_code, 200)
        # The session signed in on node A works on node B (sessions are in the store).
        on_b = Browser(b)
        on_b.s, on_b.csrf = alice.s, alice.csrf
        self.assertEqual(on_b.call("GET", "session").json()["user"]["email"],
                         "alice@example.com")
        r = alice.call("POST", f"keys/{key['id']}/revoke")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["propagation"], {"servers": 2, "lagging": []})
        self.assertError(b.post(secret), 401, "api_key_revoked")
        # And the other way round: revoked through B's dashboard, refused by A.
        r = on_b.call("POST", "keys", {"name": "second", "mode": "test"})
        self.assertEqual(r.status_code, 201, r.text)
        second, secret2 = r.json()["key"], r.json()["secret"]
        self.secrets.append(secret2)
        self.assertEqual(a.post(secret2).status_code, 200)
        self.assertEqual(on_b.call("POST", f"keys/{second['id']}/revoke").status_code, 200)
        self.assertError(a.post(secret2), 401, "api_key_revoked")
        # A node frozen for longer than its heartbeat lasts is no longer waited for; when it
        # runs again it serves nothing before it has read the change logs.
        r = alice.call("POST", "keys", {"name": "third", "mode": "test"})
        third, secret3 = r.json()["key"], r.json()["secret"]
        self.secrets.append(secret3)
        self.assertEqual(b.post(secret3).status_code, 200)
        b.proc.send_signal(signal.SIGSTOP)
        try:
            r = alice.call("POST", f"keys/{third['id']}/revoke")
        finally:
            b.proc.send_signal(signal.SIGCONT)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["key"]["status"], "revoked")
        # Confirmed by the servers live at the end (node B's heartbeat has aged by then; once, in
        # a loaded run, B was still counted, having applied it): never a lagging server, and B
        # never serves the key again.
        self.assertEqual(r.json()["propagation"]["lagging"], [])
        self.assertIn(r.json()["propagation"]["servers"], (1, 2))
        r = b.post(secret3)
        self.assertIn(r.status_code, (401, 503), r.text)
        self.assertIn(r.json()["error"]["code"], ("api_key_revoked", "not_ready"))
        # Until then, and whenever a slow reading (a loaded sanitizer run) leaves it stale again
        # for a moment, it answers 503: never the key.
        deadline = time.time() + 10
        r = b.post(secret3)
        while r.status_code == 503 and time.time() < deadline:
            time.sleep(0.05)
            r = b.post(secret3)
        self.assertError(r, 401, "api_key_revoked")

    def test_a_node_whose_reading_hangs_serves_no_key_until_it_reads_again(self):
        # The store thread's reading of the change logs waits on a lock: the others stop
        # waiting for this server 3 s after its last heartbeat, so from 2.75 s it must serve no
        # key on any path (a key revoked meanwhile elsewhere would still be in its table).
        b = self.node(1)
        key = self.key()

        def models():
            return requests.get(b.url + "/v1/models", timeout=10,
                                headers={"Authorization": f"Bearer {key}"})
        self.assertEqual(b.post(key).status_code, 200)
        self.assertEqual(models().status_code, 200)
        lock = subprocess.Popen(
            [os.path.join(PG.bindir, "psql"), "-X", "-q", "-d", self.url, "-c",
             "BEGIN; LOCK TABLE key_changes IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(5); "
             "COMMIT;"], stdout=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while time.time() < deadline and PG.psql(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'key_changes' AND l.mode = 'AccessExclusiveLock' "
                    "AND l.granted", self.dbname).strip() != "1":
                time.sleep(0.02)
            time.sleep(3.2)  # the last reading began at most then; stale 2.75 s after it
            r = models()
            self.assertError(r, 503, "not_ready")
            self.assertEqual(r.headers.get("retry-after"), "1")
            self.assertError(b.post(key), 503, "not_ready")
            self.assertError(b.post(key, path="/v1/chat/completions",
                                    body={"model": "gpt-4o-mini",
                                          "messages": [{"role": "user", "content": "hi"}]}),
                             503, "not_ready")
        finally:
            self.assertEqual(lock.wait(timeout=30), 0)
        deadline = time.time() + 10
        while models().status_code == 503 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(models().status_code, 200)
        self.assertEqual(b.post(key).status_code, 200)

    def test_a_redis_that_hangs_does_not_make_a_node_stale(self):
        # Redis paused (SIGSTOP: connections are taken by the kernel, nothing answers). The
        # store thread's calls to it must not hold up its reading of the change logs past
        # 2.75 s, or every request with a key would be refused as not_ready; test keys go on
        # with this node's share of their limits, as with Redis down.
        b = self.node(1)
        key = self.key()
        self.assertEqual(b.post(key).status_code, 200)
        seen = []
        REDIS.proc.send_signal(signal.SIGSTOP)
        try:
            end = time.time() + 7
            while time.time() < end:
                r = b.post(key)
                seen.append((r.status_code, r.json().get("error", {}).get("code")))
                time.sleep(0.1)
        finally:
            REDIS.proc.send_signal(signal.SIGCONT)
        self.assertNotIn((503, "not_ready"), seen, seen)
        self.assertIn((200, None), seen[-10:], seen)
        deadline = time.time() + 10
        while b.post(key).status_code != 200 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(b.post(key).status_code, 200)

    def test_a_postgresql_that_hangs_makes_a_node_refuse_keys_until_it_answers(self):
        # PostgreSQL paused (every process of it stopped: connections are taken, nothing is
        # answered). The store thread waits on it, so it cannot tell a revocation it may have
        # missed: from 2.75 s the node refuses keys (503 not_ready), never serves them blind,
        # and serves again once PostgreSQL answers.
        b = self.node(1)
        key = self.key()
        self.assertEqual(b.post(key).status_code, 200)
        pids = [PG.pid()] + [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(PG.pid())], capture_output=True, text=True).stdout.split()]
        seen = []
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.time()
            while time.time() - t0 < 5:
                sent = round(time.time() - t0, 2)  # when it was sent: a loaded run may answer late
                r = b.post(key)
                seen.append((sent, r.status_code, r.json().get("error", {}).get("code")))
                time.sleep(0.1)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        self.assertTrue(all(c in (200, 503) for _, c, _ in seen), seen)
        self.assertTrue(all(e == "not_ready" for _, c, e in seen if c == 503), seen)
        self.assertTrue([t for t, c, _ in seen if c == 503 and t > 3.5], seen)
        self.assertFalse([t for t, c, _ in seen if c == 200 and t > 4], seen)
        deadline = time.time() + 15
        while b.post(key).status_code != 200 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(b.post(key).status_code, 200)

    def test_a_node_that_lags_is_named_and_catches_up(self):
        a, b = self.node(0), self.node(1)
        key = self.key()
        self.assertEqual(b.post(key).status_code, 200)
        # Frozen: its heartbeat is still fresh, but it applies nothing.
        b.proc.send_signal(signal.SIGSTOP)
        try:
            p = self.revoke(key, "--wait", "1s")
        finally:
            b.proc.send_signal(signal.SIGCONT)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("1 of 2 running servers had not applied it", p.stderr)
        self.assertIn("node-b", p.stderr)
        self.assertNotIn("node-a", p.stderr)
        self.assertError(a.post(key), 401, "api_key_revoked")
        # The change stays committed, and node B applies it once it runs again.
        deadline = time.time() + 10
        while b.post(key).status_code == 200 and time.time() < deadline:
            time.sleep(0.05)
        self.assertError(b.post(key), 401, "api_key_revoked")
        p = self.data.cli("key", "list", "--account", "dev@example.com", "--json")
        self.assertEqual(json.loads(p.stdout)[0]["status"], "revoked")

    def test_a_node_ahead_of_the_change_log_is_not_counted_as_having_applied_a_change(self):
        # A server that read a store since restored from an older copy has a heartbeat past the
        # log's newest change: its numbers are not this log's, so it confirms nothing.
        a = self.node(0)
        key = self.key()
        self.assertEqual(a.post(key).status_code, 200)
        stop = threading.Event()

        def beat():  # a server ahead of the log, alive all along
            while not stop.is_set():
                PG.psql("INSERT INTO nodes(id, started_at, seen_ms, key_seq, account_seq, "
                        "counters, version, address, plans_version) VALUES ('node-ahead', 0, "
                        "(extract(epoch from clock_timestamp()) * 1000)::bigint, 1000000, "
                        "1000000, 'redis', 'x', '', 1000000) ON CONFLICT (id) DO UPDATE SET "
                        "seen_ms = excluded.seen_ms", self.dbname)
                time.sleep(0.3)
        t = threading.Thread(target=beat)
        t.start()
        try:
            time.sleep(0.5)
            p = self.revoke(key, "--wait", "1s")
        finally:
            stop.set()
            t.join()
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("node-ahead", p.stderr)
        self.assertNotIn("node-a,", p.stderr)
        self.assertError(a.post(key), 401, "api_key_revoked")

    def test_a_node_behind_the_change_logs_retention_loads_every_key_again(self):
        # Node B is frozen while a key is revoked and the change log is pruned past B's reading
        # (as KONNECT_CHANGE_LOG_RETENTION_DAYS does to a node cut off for longer): B must not
        # read on from its cursor as if nothing were missing.
        b = self.node(1)
        key = self.key()
        self.assertEqual(b.post(key).status_code, 200)
        b.proc.send_signal(signal.SIGSTOP)
        try:
            self.revoke(key, "--wait", "0")
            self.key(name="later")  # a newer change, which the prune keeps
            PG.psql("DELETE FROM key_changes WHERE seq < (SELECT max(seq) FROM key_changes)",
                    db=self.dbname)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        deadline = time.time() + 10
        while b.post(key).status_code in (200, 503) and time.time() < deadline:
            time.sleep(0.05)
        self.assertError(b.post(key), 401, "api_key_revoked")
        self.assertIn("loading every key again", b.output())

    def test_a_dead_node_is_not_waited_for_and_a_stopped_one_leaves(self):
        a, b = self.node(0), self.node(1)
        key = self.key()
        b.proc.kill()
        b.proc.wait()
        p = self.revoke(key)
        # Waited until B's heartbeat was too old to count it live, then confirmed by A alone.
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("applied by every running server (1)", p.stderr)
        self.assertError(a.post(key), 401, "api_key_revoked")
        self.servers.remove(b)
        b.log.close()
        # A server stopped with SIGTERM removes itself: no command waits for it.
        self.assertEqual(a.stop(), 0)
        self.servers.remove(a)
        p = self.data.cli("key", "create", "--account", "dev@example.com", "--mode", "test",
                          "--name", "later")
        self.secrets.append(p.stdout.strip())
        self.assertIn("no server is running with this store", p.stderr)


def main():
    global PG, REDIS
    harness.BINARY = os.path.abspath(sys.argv.pop(1))
    PG = services.Postgres().start()
    REDIS = services.Redis().start()
    try:
        import unittest
        result = unittest.main(verbosity=2, exit=False).result
    finally:
        REDIS.stop()
        PG.stop()
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
