"""Private PostgreSQL and Redis servers for the tests: initdb into a temporary directory, a unix
socket only (no TCP port), no system service. When the tests run as root, PostgreSQL runs as the
`postgres` user that Debian's package creates (initdb refuses root); Redis listens on a unix
socket only (--port 0).

As a module: Postgres().start() and .database(name) give a libpq URL per empty database.
As a command: `services.py postgres -- CMD ARGS...` starts one server, replaces every `{pg}` in
the arguments with the URL of a fresh database (`{pg2}`, `{pg3}`: more of them), runs CMD, stops
the server and exits with CMD's status."""

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time


def pg_bindir():
    """The directory of initdb and pg_ctl (Debian keeps them out of PATH)."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise RuntimeError("PostgreSQL is not installed: run scripts/install-deps.sh test")


class Postgres:
    """A PostgreSQL server of its own in a temporary directory."""

    def __init__(self, fsync=False):
        self.bindir = pg_bindir()
        self.fsync = fsync
        self.dir = tempfile.mkdtemp(prefix="kn-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = self.dir
        self.user = None
        self.counter = 0
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *args, check=True, **kw):
        cmd = list(args)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)

    def start(self):
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self):
        # Unix socket only; fsync off because a test restarts the server, never the machine
        # (synchronous_commit stays on: a commit still waits for the server's own log write).
        # The benchmarks ask for fsync, so that a commit waits for the disk as in production.
        durable = "-c fsync=on" if self.fsync else "-c fsync=off -c full_page_writes=off"
        opts = (f"-c listen_addresses='' -c unix_socket_directories='{self.sock}' "
                f"{durable} -c max_connections=200 -c shared_buffers=64MB")
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l",
                  os.path.join(self.dir, "log"), "-o", opts, "-w", "-t", "60", "start")

    def pid(self):
        """The postmaster's process id."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def url(self, db="postgres", user="postgres"):
        return f"postgresql:///{db}?host={self.sock}&user={user}"

    def psql(self, sql, db="postgres"):
        return subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-v",
                               "ON_ERROR_STOP=1", "-At", "-d", self.url(db), "-c", sql],
                              check=True, capture_output=True, text=True).stdout

    def database(self, name=None):
        """Creates an empty database and returns its URL."""
        if name is None:
            self.counter += 1
            name = f"test_{self.counter}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self, downtime=0.0):
        """Stops the server (fast: every connection is cut), waits, starts it again."""
        self.stop_server()
        time.sleep(downtime)
        self._pg_ctl_start()

    def stop_server(self):
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                  "-t", "60", "stop", check=False)

    def stop(self):
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.dir, "log")) as f:
                return f.read()
        except OSError:
            return ""


class Redis:
    """A Redis server of its own: a unix socket only (--port 0), no persistence unless asked."""

    def __init__(self, appendonly=False):
        self.dir = tempfile.mkdtemp(prefix="kn-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.appendonly = appendonly
        self.proc = None

    def start(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is not installed: run scripts/install-deps.sh test")
        args = [binary, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--dir", self.dir, "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no"]
        self.log_file = open(os.path.join(self.dir, "log"), "a")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(self.sock) and self.cli("PING").strip() == "PONG":
                return self
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self):
        return f"unix://{self.sock}"

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-s", self.sock, *args], capture_output=True,
                              text=True).stdout

    def stop_server(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
        if getattr(self, "log_file", None) is not None:
            self.log_file.close()
            self.log_file = None

    def restart(self, downtime=0.0):
        self.stop_server()
        time.sleep(downtime)
        self.start()

    def stop(self):
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv):
    if len(argv) < 3 or argv[0] != "postgres" or argv[1] != "--":
        print("usage: services.py postgres -- CMD ARGS... ({pg}, {pg2}... become database URLs)",
              file=sys.stderr)
        return 2
    pg = Postgres().start()
    try:
        args = []
        for a in argv[2:]:
            for i in range(9, 0, -1):
                tag = "{pg}" if i == 1 else "{pg%d}" % i
                if tag in a:
                    a = a.replace(tag, pg.database())
            args.append(a)
        return subprocess.run(args).returncode
    finally:
        pg.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
