#!/usr/bin/env python3
"""The several-servers part of `make bench` (bench/run.sh runs it last; BENCH_CLUSTER=0 skips it):
private PostgreSQL and Redis (tests/services.py), two `konnect serve` on them, one on SQLite.

Prints:
  - revocation propagation over BENCH_REVOCATIONS revocations (default 100): for each, the time
    from `konnect key revoke` starting to its return (it returns once every live server has
    applied the change) and to the first refusal seen on the other server by a client that sends
    the key in a loop; p50, p99, max (target: p99 < 100 ms).
  - test-key requests/s: one server on SQLite, and two on PostgreSQL + Redis together (each
    request one Redis call), wrk -t1 -c32 on each server, BENCH_DURATION (default 5s).

Usage: bench/cluster.py KONNECT_BINARY"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import services  # noqa: E402
import harness  # noqa: E402

REVOCATIONS = int(os.environ.get("BENCH_REVOCATIONS", "100"))
DURATION = os.environ.get("BENCH_DURATION", "5s")
NODES = 2


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Node(harness.DataDir):
    def __init__(self, shared):
        super().__init__()
        self.shared = shared

    def env(self, **extra):
        return super().env(**{**self.shared, **extra})


def wrk(url, keys_file):
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{DURATION}", "-s",
                          os.path.join(HERE, "chat.lua"), url + "/v1/chat", "--", keys_file],
                         capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def throughput(servers, keys_file):
    results = [0.0] * len(servers)

    def one(i):
        results[i] = wrk(servers[i].url, keys_file)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results)


def main():
    harness.BINARY = os.path.abspath(sys.argv[1])
    pg = services.Postgres().start()
    redis = services.Redis().start()
    servers, dirs = [], []
    try:
        secret = os.path.join(tempfile.mkdtemp(prefix="kn-bench-"), "secret")
        shared = {"KONNECT_DATABASE": pg.database("bench"), "KONNECT_SECRET_FILE": secret,
                  "KONNECT_REDIS_URL": redis.url, "KONNECT_ACCESS_LOG": "off",
                  "KONNECT_TEST_KEY_RPM": "0", "KONNECT_TEST_KEY_RPD": "0"}
        for i in range(NODES):
            dirs.append(Node(dict(shared, KONNECT_NODE_ID=f"bench-{i}")))
        dirs[0].account()
        keys = [dirs[0].key(mode="test", name=f"k{i}") for i in range(REVOCATIONS + 10)]
        for d in dirs:
            servers.append(harness.Server(d, threads=1))

        # Revocation propagation, seen by the command and by a client of the other server.
        by_cli, by_client = [], []
        for key in keys[:REVOCATIONS]:
            key_id = dirs[0].key_id(key)
            seen = {}
            stop = threading.Event()

            def watch():
                s = requests.Session()
                h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                while not stop.is_set():
                    r = s.post(servers[1].url + "/v1/chat", data='{"message":"hi"}', headers=h)
                    if r.status_code == 401:
                        seen["t"] = time.monotonic()
                        return
            t = threading.Thread(target=watch)
            t.start()
            time.sleep(0.02)
            t0 = time.monotonic()
            dirs[0].cli("key", "revoke", key_id)
            by_cli.append((time.monotonic() - t0) * 1000)
            t.join(timeout=5)
            stop.set()
            if "t" in seen:
                by_client.append((seen["t"] - t0) * 1000)
        print(f"revocation propagation over {len(by_cli)} revocations, 2 servers on PostgreSQL"
              f" + Redis (ms):")
        for name, v in (("command returned (all servers applied)", by_cli),
                        ("first refusal on the other server", by_client)):
            print(f"  {name:40s} p50 {pct(v, 50):7.1f}  p99 {pct(v, 99):7.1f}  max {max(v):7.1f}")
        print(f"  target p99 < 100 ms (first refusal): "
              f"{'met' if pct(by_client, 99) < 100 else 'not met'}")

        # Test-key throughput: two servers on PostgreSQL + Redis, then one on SQLite.
        keys_file = os.path.join(dirs[0].path, "keys.txt")
        with open(keys_file, "w") as f:
            f.write("\n".join(keys[REVOCATIONS:]) + "\n")
        cluster = throughput(servers, keys_file)
        for s in servers:
            s.stop()
        servers = []
        single = harness.DataDir()
        dirs.append(single)
        single.account()
        skeys = [single.key(mode="test", name=f"s{i}") for i in range(10)]
        sfile = os.path.join(single.path, "keys.txt")
        with open(sfile, "w") as f:
            f.write("\n".join(skeys) + "\n")
        servers.append(harness.Server(single, threads=2, KONNECT_ACCESS_LOG="off",
                                      KONNECT_TEST_KEY_RPM="0", KONNECT_TEST_KEY_RPD="0"))
        alone = throughput(servers, sfile)
        print(f"test-key requests/s (wrk -t1 -c32 -d{DURATION} per server, limits counted):")
        print(f"  one server, SQLite, limits in memory  {alone:10.0f}")
        print(f"  two servers, PostgreSQL + Redis       {cluster:10.0f}  (one Redis call each)")
    finally:
        for s in servers:
            s.stop()
        for d in dirs:
            d.cleanup()
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
