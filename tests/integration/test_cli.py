"""The operator CLI: help, errors, key creation shown once, listing, revocation and expiry."""

import json
import os
import re
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import DataDir, KEY_RE, ServerTest  # noqa: E402


class CliTest(ServerTest):
    def test_help_everywhere(self):
        for args in (["--help"], ["serve", "--help"], ["account", "--help"], ["key", "--help"],
                     ["migrate", "--help"], ["backup", "--help"], ["key", "create", "--help"],
                     ["key", "list", "--help"], ["key", "revoke", "--help"],
                     ["account", "create", "--help"], ["operator-key", "--help"],
                     ["operator-key", "create", "--help"], ["account", "suspend", "--help"]):
            with self.subTest(args=args):
                p = self.data.cli(*args)
                self.assertIn("Usage:", p.stdout)
        self.assertRegex(self.data.cli("version").stdout, r"^konnect \d+\.\d+\.\d+")

    def test_usage_errors_go_to_stderr_with_nonzero_status(self):
        for args in ([], ["bogus"], ["key"], ["key", "bogus"], ["account", "create"],
                     ["key", "create", "--account", "dev@example.com", "--name", "x"],
                     ["key", "create", "--account", "dev@example.com", "--name", "x",
                      "--mode", "prod"],
                     ["key", "create", "--account", "dev@example.com", "--name", "x",
                      "--mode", "test", "--environment", "qa"],
                     ["key", "create", "--account", "dev@example.com", "--name", "",
                      "--mode", "test"],
                     # A name that is not UTF-8 (the byte 0xff): it could not be shown in JSON.
                     ["key", "create", "--account", "dev@example.com", "--name", "bad\udcffname",
                      "--mode", "test"],
                     ["key", "create", "--account", "dev@example.com", "--name", "x",
                      "--mode", "test", "--expires-in", "soon"],
                     ["key", "revoke"], ["key", "list"], ["account", "create", "--nope"],
                     ["operator-key", "create"], ["operator-key", "revoke"],
                     ["operator-key", "bogus"], ["account", "suspend"],
                     ["key", "create", "--account", "dev@example.com", "--name", "x",
                      "--mode", "operator"]):
            with self.subTest(args=args):
                p = self.data.cli(*args, check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertEqual(p.stdout, "")
                self.assertTrue(p.stderr.strip())

    def test_each_usage_error_is_said_in_one_line(self):
        """A mistyped option or command gets one line that says what is wrong and which --help
        to read, not a screen of usage that hides it."""
        cases = [
            (["bogus"], "unknown command 'bogus'", "konnect --help"),
            (["key", "bogus"], "unknown key command 'bogus': it has create", "konnect key --help"),
            (["key"], "key needs a command: create, list", "konnect key --help"),
            (["account"], "account needs a command: create, list", "konnect account --help"),
            (["operator-key"], "operator-key needs a command: create", "konnect operator-key --help"),
            (["key", "create", "--bogus"], "unknown option", "konnect key --help"),
            (["account", "list", "--nope"], "'--nope'", "konnect account --help"),
            (["serve", "--nope"], "'--nope'", "konnect serve --help"),
            (["serve", "extra"], "serve takes no arguments", "konnect serve --help"),
            (["user", "bogus"], "unknown user command 'bogus'", "konnect user --help"),
            (["user"], "user needs a command: set-password", "konnect user --help"),
            (["user", "set-password"], "needs --email", "konnect user --help"),
            (["audit", "x"], "audit takes no arguments", "konnect audit --help"),
            (["audit", "--limit", "0"], "--limit takes a number", "konnect audit --help"),
            (["plans", "x"], "unknown plans command 'x'", "konnect plans --help"),
            (["backup"], "backup needs --to FILE", "konnect backup --help"),
            (["store", "x"], "store has one command, copy", "konnect store --help"),
            (["usage"], "usage needs --account", "konnect usage --help"),
            (["invoice"], "invoice needs --account", "konnect invoice --help"),
            (["key", "create", "--account", "dev@example.com", "--name", "x", "--mode", "p"],
             "--mode must be", None),
            (["key", "roll", "key_x", "--grace", "5"], "--grace takes", None),
            (["serve", "--threads", "abc"], "--threads takes a number", None),
        ]
        for args, says, help_ in cases:
            with self.subTest(args=args):
                p = self.data.cli(*args, check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                lines = p.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, p.stderr)
                self.assertIn(says, lines[0])
                if help_:
                    self.assertIn(f"(see '{help_}", lines[0])

    def test_a_duration_without_its_unit_is_refused(self):
        key = self.key()
        for args in (["key", "expire", "-", "--in", "90"],
                     ["key", "roll", "-", "--grace", "10"],
                     ["key", "revoke", "-", "--wait", "5"],
                     ["key", "create", "--account", "dev@example.com", "--mode", "test",
                      "--name", "x", "--expires-in", "30"]):
            with self.subTest(args=args):
                p = subprocess.run([harness.BINARY, *args], env=self.data.env(), input=key,
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                self.assertRegex(p.stderr, r"takes .*(90s|5s)")
        # The key is as it was: neither expired, rolled nor revoked.
        listed = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                          "--json").stdout)
        self.assertEqual([k["status"] for k in listed], ["active"])
        # 0 needs no unit.
        p = subprocess.run([harness.BINARY, "key", "expire", "-", "--in", "0"],
                           env=self.data.env(), input=key, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_accounts(self):
        p = self.data.cli("account", "create", "--email", "dev@example.com", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("already exists", p.stderr)
        p = self.data.cli("account", "create", "--email", "not an email", check=False)
        self.assertEqual(p.returncode, 2)
        acct = self.data.cli("account", "create", "--email", "Other@Example.com").stdout.strip()
        self.assertRegex(acct, r"^acct_[0-9A-Za-z]{20}$")
        show = self.data.cli("account", "show", "--account", "other@example.com").stdout
        self.assertIn(acct, show)
        self.assertIn("other@example.com", show)
        # Every account, oldest first, with the quotas set on it.
        self.data.cli("account", "set-quota", "--account", acct, "--requests", "5", "--tokens",
                      "unlimited")
        listed = json.loads(self.data.cli("account", "list", "--json").stdout)
        # Oldest first (times are to the second: ties go by id).
        self.assertEqual(listed, sorted(listed, key=lambda a: (a["created"], a["id"])))
        by_email = {a["email"]: a for a in listed}
        self.assertEqual(set(by_email), {"dev@example.com", "other@example.com"})
        other = by_email["other@example.com"]
        self.assertEqual((other["id"], other["plan"], other["quota_requests"],
                          other["quota_tokens"]), (acct, None, 5, "unlimited"))
        self.assertIsNone(by_email["dev@example.com"]["quota_requests"])
        text = self.data.cli("account", "list").stdout.splitlines()
        self.assertEqual(text[0].split(), ["ID", "EMAIL", "CREATED", "PLAN"])
        self.assertEqual(len(text), 3)
        self.assertTrue(any(acct in line for line in text[1:]))
        p = self.data.cli("key", "create", "--account", "nobody@example.com", "--mode", "test",
                          "--name", "x", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no account", p.stderr)

    def test_key_create_prints_only_the_secret(self):
        p = self.data.cli("key", "create", "--account", "dev@example.com", "--mode", "live",
                          "--name", "prod server")
        self.secrets.append(p.stdout.strip())
        self.assertRegex(p.stdout, r"^sk_live_[0-9A-Za-z]{38}\n$")
        self.assertIn("won't be shown again", p.stderr)
        self.assertNotIn(p.stdout.strip(), p.stderr)
        p = self.data.cli("key", "create", "--account", "dev@example.com", "--mode", "test",
                          "--name", "bulk", "--count", "5")
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 5)
        self.assertEqual(len(set(lines)), 5)
        for line in lines:
            self.assertRegex(line, KEY_RE)
            self.secrets.append(line)

    def test_key_list(self):
        test = self.key()
        live = self.key(mode="live", name="prod")
        staging = self.key("dev@example.com", "test", "stage", "--environment", "staging")
        out = self.data.cli("key", "list", "--account", "dev@example.com").stdout
        for header in ("ID", "NAME", "MODE", "ENVIRONMENT", "KEY", "CREATED", "LAST USED",
                       "STATUS"):
            self.assertIn(header, out)
        for secret in (test, live, staging):
            self.assertNotIn(secret, out)
            self.assertNotIn(secret[8:-4], out)
            self.assertIn(secret[:8] + "\u2026" + secret[-4:], out)
        keys = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                        "--json").stdout)
        by_name = {k["name"]: k for k in keys}
        self.assertEqual(by_name["laptop"]["environment"], "development")
        self.assertEqual(by_name["prod"]["environment"], "production")
        self.assertEqual(by_name["prod"]["mode"], "live")
        self.assertEqual(by_name["stage"]["environment"], "staging")
        self.assertEqual({k["status"] for k in keys}, {"active"})
        self.assertIsNone(by_name["laptop"]["last_used"])
        self.assertNotIn(test, json.dumps(keys))

    def test_revoke_and_expire(self):
        key = self.key()
        kid = self.data.key_id(key)
        p = self.data.cli("key", "revoke", kid)
        self.assertIn(kid, p.stdout)
        p = self.data.cli("key", "revoke", kid)  # idempotent
        self.assertIn("already revoked", p.stderr)
        keys = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                        "--json").stdout)
        self.assertEqual(keys[0]["status"], "revoked")
        p = self.data.cli("key", "revoke", "key_doesnotexist", check=False)
        self.assertEqual(p.returncode, 1)
        # Something that is neither an id nor a valid key is not echoed (it may be a typo'd key).
        typo = key[:-1] + ("x" if key[-1] != "x" else "y")
        p = self.data.cli("key", "revoke", typo, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertNotIn(typo, p.stderr)
        self.assertNotIn(typo[8:], p.stderr)
        other = self.key(name="other")
        self.data.cli("key", "expire", other)
        keys = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                        "--json").stdout)
        self.assertEqual([k["status"] for k in keys if k["name"] == "other"], ["expired"])

    def test_secrets_in_arguments_are_never_echoed(self):
        key = self.key()
        for args in (["key", key], [key], ["key", "list", "--account", key],
                     ["key", "revoke", "--" + key], ["serve", "--" + key],
                     ["account", "create", "--email", key]):
            with self.subTest(args=args[:1]):
                p = self.data.cli(*args, check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertNotIn(key[8:], p.stdout + p.stderr)

    def test_revoke_reads_the_secret_from_stdin(self):
        import subprocess
        key = self.key()
        p = subprocess.run([harness.BINARY, "key", "revoke", "-"], input=key + "\n",
                           env=self.data.env(), capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("revoked key_", p.stdout)
        self.assertNotIn(key, p.stdout + p.stderr)

    def test_data_dir_and_secret_file(self):
        other = DataDir()
        try:
            nested = os.path.join(other.path, "nested")
            p = self.data.cli("--help")  # no side effects
            self.assertEqual(p.returncode, 0)
            env_dir = os.path.join(other.path, "var")
            import subprocess
            subprocess.run([harness.BINARY, "account", "create", "--email", "a@b.co"],
                           env=dict(os.environ, KONNECT_DATA_DIR=env_dir), check=True,
                           capture_output=True)
            self.assertTrue(os.path.exists(os.path.join(env_dir, "konnect.db")))
            p = subprocess.run([harness.BINARY, "key", "create", "--account", "a@b.co", "--mode",
                                "test", "--name", "k", "--data-dir", nested],
                               env=dict(os.environ, KONNECT_DATA_DIR=env_dir),
                               capture_output=True, text=True)
            # --data-dir wins over the environment, and key create makes no database there.
            self.assertEqual(p.returncode, 1)
            self.assertIn(f"no database at {os.path.realpath(other.path)}/nested/konnect.db",
                          p.stderr)
            self.assertFalse(os.path.exists(nested))
            secret = os.path.join(env_dir, "secret")
            subprocess.run([harness.BINARY, "key", "create", "--account", "a@b.co", "--mode",
                            "test", "--name", "k"], env=dict(os.environ, KONNECT_DATA_DIR=env_dir),
                           check=True, capture_output=True)
            mode = stat.S_IMODE(os.stat(secret).st_mode)
            self.assertEqual(mode, 0o600)
            with open(secret) as f:
                self.assertRegex(f.read(), r"^[0-9a-f]{64}\n$")
            os.chmod(secret, 0o644)
            p = subprocess.run([harness.BINARY, "key", "create", "--account", "a@b.co", "--mode",
                                "test", "--name", "k"],
                               env=dict(os.environ, KONNECT_DATA_DIR=env_dir),
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 1)
            self.assertIn("chmod 600", p.stderr)
            self.assertEqual(p.stdout, "")
        finally:
            other.cleanup()

    def test_a_wrong_data_directory_is_said_and_never_silently_created(self):
        """From another working directory the CLI used to make a fresh database and secret, and
        the key made there then got 401 from the real server."""
        import subprocess
        import tempfile
        elsewhere = tempfile.mkdtemp(prefix="konnect-cwd-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONNECT_")}
        try:
            for args in (["key", "list", "--account", "dev@example.com"],
                         ["account", "show", "--account", "dev@example.com"],
                         ["usage", "--account", "dev@example.com"],
                         ["invoice", "--account", "dev@example.com"],
                         ["audit"],
                         ["key", "create", "--account", "dev@example.com", "--mode", "test",
                          "--name", "x"],
                         ["key", "revoke", "key_abc"]):
                p = subprocess.run([harness.BINARY, *args], cwd=elsewhere, env=env,
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 1, (args, p.stderr))
                self.assertIn(f"no database at {os.path.realpath(elsewhere)}/var/konnect.db",
                              p.stderr)
                self.assertEqual(os.listdir(elsewhere), [], "nothing was created")
            p = subprocess.run([harness.BINARY, "plans"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, timeout=30)
            self.assertIn(f"no plans file at {os.path.realpath(elsewhere)}/var/plans.json",
                          p.stderr)
            # A command that creates the store says so, with the absolute paths.
            p = subprocess.run([harness.BINARY, "account", "create", "--email", "x@example.com"],
                               cwd=elsewhere, env=env, capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(f"created a new database at {os.path.realpath(elsewhere)}/var/konnect.db",
                          p.stderr)
            self.assertIn(f"created a new server secret at {os.path.realpath(elsewhere)}/var/secret",
                          p.stderr)
            p = subprocess.run([harness.BINARY, "key", "create", "--account", "x@example.com",
                                "--mode", "test", "--name", "k"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(f"no server is running with the data directory "
                          f"{os.path.realpath(elsewhere)}/var", p.stderr)
        finally:
            import shutil
            shutil.rmtree(elsewhere, ignore_errors=True)

    def test_files_are_private_and_public_ones_are_warned_about(self):
        srv = harness.Server(self.data)
        try:
            d = self.data.path
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode) & 0o077, 0)
            for name in ("konnect.db", "secret", "konnect.sock"):
                self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) & 0o077, 0,
                                 name)
            for name in os.listdir(d):
                if name.startswith("konnect.db"):
                    self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) & 0o077,
                                     0, name)
        finally:
            srv.stop()
        os.chmod(os.path.join(self.data.path, "konnect.db"), 0o644)
        os.chmod(self.data.path, 0o755)
        p = self.data.cli("audit")
        self.assertIn("konnect.db can be read by other users", p.stderr)
        self.assertIn("chmod 600", p.stderr)
        self.assertIn("chmod 700", p.stderr)

    def test_migrate(self):
        p = self.data.cli("migrate")
        self.assertIn("up to date", p.stderr)

    def test_store_holds_only_hashes(self):
        key = self.key()
        with open(os.path.join(self.data.path, "konnect.db"), "rb") as f:
            db = f.read()
        for name in os.listdir(self.data.path):
            with open(os.path.join(self.data.path, name), "rb") as f:
                content = f.read()
            self.assertNotIn(key.encode(), content, name)
            self.assertNotIn(key[8:40].encode(), content, name)
        self.assertIn(b"sk_test_", db)  # the hint is there


if __name__ == "__main__":
    harness.main()
