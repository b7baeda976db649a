#!/usr/bin/env python3
"""The several-servers part of `make bench` (bench/run.sh runs it last; BENCH_CLUSTER=0 skips it):
private PostgreSQL and Redis (tests/services.py), two `konnect serve` on them, one on SQLite.

Prints:
  - revocation propagation over BENCH_REVOCATIONS revocations (default 100): for each, the time
    from `konnect key revoke` starting to its return (it returns once every live server has
    applied the change) and to the first refusal seen on the other server by a client that sends
    the key in a loop; p50, p99, max (target: p99 < 100 ms).
  - test-key requests/s: one server on SQLite, and two on PostgreSQL + Redis together (each
    request one Redis call), wrk -t1 -c128 on each server (BENCH_CLUSTER_CONNECTIONS),
    BENCH_DURATION (default 5s). A live request waits for its group commit, so what a server
    bills per second is at most its requests in flight over their latency: with 32 connections
    the figure is that latency's, not the capacity's.
  - live billed requests/s the same way (a live key, a plan with prices and no quota, nginx as
    the model backend): ledger rows added per second, counted in the store (target >= 20,000
    billed/s in aggregate on one PostgreSQL). PostgreSQL runs with fsync on, as in production.
  - the latency Redis admission adds at BENCH_LIVE_RATE (default 2,000) requests/s, open loop
    (bench/loadgen, 32 connections): one server on PostgreSQL with Redis against the same server
    on PostgreSQL without it, for a live key (admission and settlement: two Redis calls) and a
    test key (one), and the backend called directly.

Usage: bench/cluster.py KONNECT_BINARY (BENCH_LOADGEN: a built bench/loadgen; else it is built)"""

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
RATE = os.environ.get("BENCH_LIVE_RATE", "2000")
CONNS = os.environ.get("BENCH_CLUSTER_CONNECTIONS", "128")
NODES = 2
LIVE_ANSWER = ('{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
               '"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant",'
               '"content":"Hello! How can I help you today?"},"finish_reason":"stop"}],'
               '"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}')
PLANS = {"currency": "usd", "default_plan": "bench", "plans": [{
    "name": "bench", "price_per_request_micros": 100,
    "price_per_million_input_tokens_micros": 150000,
    "price_per_million_output_tokens_micros": 600000, "max_concurrent_requests": 100000}]}


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Node(harness.DataDir):
    def __init__(self, shared):
        super().__init__()
        self.shared = shared

    def env(self, **extra):
        return super().env(**{**self.shared, **extra})


def wrk(url, keys_file, duration=DURATION):
    out = subprocess.run(["wrk", "-t1", f"-c{CONNS}", f"-d{duration}", "-s",
                          os.path.join(HERE, "chat.lua"), url + "/v1/chat", "--", keys_file],
                         capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return (float(m.group(1)) if m else 0.0), (int(bad.group(1)) if bad else 0)


def throughput(servers, keys_file, duration=DURATION):
    """wrk on every server at once: the sum of requests/s, and of the answers that were not 2xx."""
    results = [(0.0, 0)] * len(servers)

    def one(i):
        results[i] = wrk(servers[i].url, keys_file, duration)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r[0] for r in results), sum(r[1] for r in results)


def seconds(duration):
    return float(duration.rstrip("s"))


def tree(root):
    """root and every process below it."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = {root}, [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def cpu_seconds(groups):
    """The CPU time (user + system) each group of process trees has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, roots in groups.items():
        total = 0
        for pid in set().union(*(tree(r) for r in roots)):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        out[name] = total / tick
    return out


def billed(servers, keys_file, rows, groups):
    """Live requests/s and ledger rows added per second (rows() counts them in the store) with
    wrk on every server at once, after a warm-up; the non-2xx answers too, and the CPU seconds
    each group of processes used per 1,000 rows."""
    throughput(servers, keys_file, "2s")
    time.sleep(0.5)  # the requests in flight when the warm-up stopped get their rows
    r0 = rows()
    c0 = cpu_seconds(groups)
    rps, bad = throughput(servers, keys_file)
    c1 = cpu_seconds(groups)
    time.sleep(1)
    added = rows() - r0
    cpu = {k: 1000 * (c1[k] - c0[k]) / max(added, 1) for k in groups}
    return rps, added / seconds(DURATION), bad, cpu


def nginx_backend(path):
    """nginx answering every POST /v1/chat/completions with one chat completion with usage;
    returns its process and the base URL of the model backend."""
    port = harness.free_port()
    temp = "".join(f"{t}_temp_path {path}/{t};\n"
                   for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(os.path.join(path, "nginx.conf"), "w") as f:
        f.write(f"{'user root;' if os.geteuid() == 0 else ''}\n"
                f"worker_processes 1;\ndaemon off;\npid {path}/nginx.pid;\n"
                f"error_log {path}/error.log;\nevents {{ worker_connections 4096; }}\n"
                f"http {{\naccess_log off;\ndefault_type application/json;\n"
                f"keepalive_requests 1000000;\n{temp}"
                f"server {{\nlisten 127.0.0.1:{port};\n"
                f"location = /healthz {{ return 200 '{{}}'; }}\n"
                f"location = /v1/chat/completions {{ return 200 '{LIVE_ANSWER}'; }}\n}}\n}}\n")
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([binary, "-c", os.path.join(path, "nginx.conf"), "-p", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            requests.get(url + "/healthz", timeout=1)
            return proc, url + "/v1"
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nginx did not start: " + open(f"{path}/error.log").read())


def loadgen_binary(path):
    given = os.environ.get("BENCH_LOADGEN")
    if given:
        return given
    out = os.path.join(path, "loadgen")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libh2o-evloop"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-std=gnu17", "-O2", "-DH2O_USE_LIBUV=0", "-o", out,
                    os.path.join(HERE, "loadgen.c"), *flags, "-lssl", "-lcrypto", "-lm"],
                   check=True)
    return out


def quiet(pg):
    """A checkpoint (so that no earlier write is flushed during the run), then up to 15 s for the
    cores to be at least 80 % idle over half a second."""
    pg.psql("CHECKPOINT")

    def idle():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    deadline = time.time() + 15
    while time.time() < deadline:
        i0, t0 = idle()
        time.sleep(0.5)
        i1, t1 = idle()
        if t1 > t0 and (i1 - i0) / (t1 - t0) >= 0.8:
            return


def disk_sync(path):
    """The disk's own write-and-fdatasync latency over BENCH_DURATION (bench/syncbench.c), in
    the directory of PostgreSQL's data: p50, p99, max in ms."""
    binary = os.path.join(path, "syncbench")
    subprocess.run(["cc", "-std=gnu17", "-O2", "-o", binary, os.path.join(HERE, "syncbench.c")],
                   check=True)
    out = subprocess.run([binary, os.path.join(path, "sync.tmp"), DURATION.rstrip("s")],
                         capture_output=True, text=True).stdout
    v = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
    return tuple(float(v.get(k, 0)) / 1000 for k in ("p50_us", "p99_us", "max_us"))


def latency(loadgen, url, *headers, body='{"message": "Hello"}'):
    """One open-loop run at RATE requests/s: p50 and p99 in ms, and the failures."""
    args = [loadgen, "-r", RATE, "-c", "32", "-d", DURATION.rstrip("s"), "-w", "2"]
    for h in ("Content-Type: application/json",) + headers:
        args += ["-H", h]
    out = subprocess.run(args + ["-b", body, url], capture_output=True, text=True).stdout
    v = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
    return (float(v.get("p50_us", 0)) / 1000, float(v.get("p99_us", 0)) / 1000,
            int(v.get("errors", 0)) + int(v.get("non200", 0)))


def keys_file(path, keys):
    with open(path, "w") as f:
        f.write("\n".join(keys) + "\n")
    return path


def main():
    harness.BINARY = os.path.abspath(sys.argv[1])
    pg = services.Postgres(fsync=True).start()
    redis = services.Redis().start()
    work = tempfile.mkdtemp(prefix="kn-bench-")
    servers, dirs, backend = [], [], None
    try:
        loadgen = loadgen_binary(work)
        backend, model_url = nginx_backend(work)
        secret = os.path.join(work, "secret")
        shared = {"KONNECT_DATABASE": pg.database("bench"), "KONNECT_SECRET_FILE": secret,
                  "KONNECT_REDIS_URL": redis.url, "KONNECT_ACCESS_LOG": "off",
                  "KONNECT_TEST_KEY_RPM": "0", "KONNECT_TEST_KEY_RPD": "0",
                  "KONNECT_MODEL_URL": model_url}
        for i in range(NODES):
            dirs.append(Node(dict(shared, KONNECT_NODE_ID=f"bench-{i}")))
        dirs[0].account()
        plans = os.path.join(work, "plans.json")
        with open(plans, "w") as f:
            json.dump(PLANS, f)
        dirs[0].cli("plans", "apply", plans)
        keys = [dirs[0].key(mode="test", name=f"k{i}") for i in range(REVOCATIONS + 10)]
        live = dirs[0].key(mode="live", name="live")

        # The latency of Redis admission: one server on PostgreSQL without Redis first (it may
        # not run beside servers that use Redis), then, below, one of the two that use it.
        header = "Authorization: Bearer "
        alone = Node({k: v for k, v in shared.items() if k != "KONNECT_REDIS_URL"})
        dirs.append(alone)
        servers.append(harness.Server(alone, threads=1, KONNECT_NODE_ID="bench-alone"))
        quiet(pg)
        disk = disk_sync(pg.dir)
        direct = latency(loadgen, model_url + "/chat/completions",
                         body='{"model":"m","messages":[{"role":"user","content":"Hello"}]}')
        without = (latency(loadgen, servers[0].url + "/v1/chat", header + live),
                   latency(loadgen, servers[0].url + "/v1/chat", header + keys[-1]))
        servers[0].stop()
        servers = []

        for d in dirs[:NODES]:
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

        # The latency of Redis admission, on a server that uses it (the other one idle).
        quiet(pg)
        with_redis = (latency(loadgen, servers[0].url + "/v1/chat", header + live),
                      latency(loadgen, servers[0].url + "/v1/chat", header + keys[-1]))

        # Throughput: two servers on PostgreSQL + Redis, then one on SQLite.
        tkeys = keys_file(os.path.join(work, "test.keys"), keys[REVOCATIONS:])
        lkeys = keys_file(os.path.join(work, "live.keys"), [live])
        cluster_test, _ = throughput(servers, tkeys)
        groups = {"konnect": [sv.proc.pid for sv in servers], "postgresql": [pg.pid()],
                  "redis": [redis.proc.pid], "backend": [backend.pid]}
        cluster_live = billed(servers, lkeys, lambda: int(pg.psql(
            "SELECT count(*) FROM usage_ledger", db="bench")), groups)
        for sv in servers:
            sv.stop()
        servers = []

        single = harness.DataDir()
        dirs.append(single)
        single.account()
        with open(os.path.join(single.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        skeys = keys_file(os.path.join(work, "single-test.keys"),
                          [single.key(mode="test", name=f"s{i}") for i in range(10)])
        slive = keys_file(os.path.join(work, "single-live.keys"),
                          [single.key(mode="live", name="live")])
        servers.append(harness.Server(single, threads=2, KONNECT_ACCESS_LOG="off",
                                      KONNECT_TEST_KEY_RPM="0", KONNECT_TEST_KEY_RPD="0",
                                      KONNECT_MODEL_URL=model_url))
        single_test, _ = throughput(servers, skeys)
        single_live = billed(servers, slive, lambda: int(subprocess.run(
            ["sqlite3", "-readonly", "-cmd", ".timeout 5000",
             os.path.join(single.path, "konnect.db"), "SELECT count(*) FROM usage_ledger"],
            capture_output=True, text=True, check=True).stdout),
            {"konnect": [servers[0].proc.pid], "backend": [backend.pid]})

        print(f"requests/s (wrk -t1 -c{CONNS} -d{DURATION} per server, all at once; live: ledger rows"
              f" added per second, counted in the store):")
        print(f"  {'':38s} {'test keys':>10s} {'live':>10s} {'billed/s':>10s} {'non-2xx':>8s}")
        for name, t, (rps, rows, bad, _) in (
                ("one server, SQLite, limits in memory", single_test, single_live),
                ("two servers, PostgreSQL + Redis", cluster_test, cluster_live)):
            print(f"  {name:38s} {t:10.0f} {rps:10.0f} {rows:10.0f} {bad:8d}")
        print(f"  target >= 20,000 billed/s on one PostgreSQL: "
              f"{'met' if cluster_live[1] >= 20000 else 'not met'} on this machine's "
              f"{os.cpu_count()} cores, shared by every process")
        print("  CPU seconds per 1,000 billed requests (user + system), and the billed/s one core"
              " of each would carry:")
        for name, cpu in (("one server, SQLite", single_live[3]),
                          ("two servers, PostgreSQL + Redis", cluster_live[3])):
            print(f"    {name:32s} " + "  ".join(
                f"{k} {v:.3f} ({1000 / v if v > 0 else 0:,.0f}/s)" for k, v in cpu.items()))
        print(f"latency at {RATE} requests/s, open loop (bench/loadgen, 32 connections), one server"
              f" on PostgreSQL (ms):")
        print(f"  {'':34s} {'p50':>7s} {'p99':>7s} {'failed':>7s}")
        rows = [("backend direct", direct)]
        for kind, i in (("live key", 0), ("test key", 1)):
            rows.append((f"{kind}, without Redis", without[i]))
            rows.append((f"{kind}, with Redis", with_redis[i]))
        for name, (p50, p99, bad) in rows:
            print(f"  {name:34s} {p50:7.3f} {p99:7.3f} {bad:7d}")
        print(f"  {'the disk: 8 KiB write + fdatasync':34s} {disk[0]:7.3f} {disk[1]:7.3f}"
              f"  (max {disk[2]:.1f}; PostgreSQL runs with fsync on)")
        for kind, i in (("live key", 0), ("test key", 1)):
            print(f"  Redis adds to a {kind}: p50 {with_redis[i][0] - without[i][0]:+.3f}"
                  f"  p99 {with_redis[i][1] - without[i][1]:+.3f}")
    finally:
        for s in servers:
            s.stop()
        for d in dirs:
            d.cleanup()
        if backend is not None:
            backend.terminate()
            backend.wait()
        shutil.rmtree(work, ignore_errors=True)
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
