"""The key lifecycle from the CLI against a running server: IP allowlists, rolling with a grace
period, renaming, and the audit log."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import KEY_RE, ServerTest  # noqa: E402


class LifecycleTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.srv = self.start()

    def keys(self):
        return json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                        "--json").stdout)

    def test_ip_allowlist(self):
        key = self.key("dev@example.com", "test", "office", "--allow-ip", "10.0.0.0/8, 192.0.2.1")
        err = self.assertError(self.srv.post(key), 401, "ip_not_allowed")
        self.assertIn("IP", err["message"])
        listed = [k for k in self.keys() if k["name"] == "office"][0]
        self.assertEqual(listed["ip_allowlist"], ["10.0.0.0/8", "192.0.2.1"])
        # Allowing this machine takes effect on the next request; removing the list too.
        self.data.cli("key", "update", listed["id"], "--allow-ip", "127.0.0.0/8")
        self.assertEqual(self.srv.post(key).status_code, 200)
        self.data.cli("key", "update", listed["id"], "--allow-ip", "::1")
        self.assertError(self.srv.post(key), 401, "ip_not_allowed")
        self.data.cli("key", "update", listed["id"], "--allow-ip", "none")
        self.assertEqual(self.srv.post(key).status_code, 200)
        p = self.data.cli("key", "update", listed["id"], "--allow-ip", "10.1.2.3/8", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("10.1.2.3/8", p.stderr)

    def test_roll_with_grace_period(self):
        old = self.key(name="server")
        old_id = self.data.key_id(old)
        p = self.data.cli("key", "roll", old_id, "--grace", "3s")
        new = p.stdout.strip()
        self.secrets.append(new)
        self.assertRegex(new, KEY_RE)
        self.assertEqual(p.stdout, new + "\n")
        self.assertIn("won't be shown again", p.stderr)
        # Both work during the grace period.
        self.assertEqual(self.srv.post(old).status_code, 200)
        self.assertEqual(self.srv.post(new).status_code, 200)
        listed = {k["id"]: k for k in self.keys()}
        self.assertEqual(listed[old_id]["status"], "rolled")
        self.assertIsNotNone(listed[old_id]["expires"])
        new_id = listed[old_id]["rolled_to"]
        self.assertEqual(listed[new_id]["name"], "server")
        self.assertEqual(listed[new_id]["status"], "active")
        time.sleep(3.2)
        self.assertError(self.srv.post(old), 401, "api_key_expired")
        self.assertEqual(self.srv.post(new).status_code, 200)
        # A rolled key cannot be rolled again.
        p = self.data.cli("key", "roll", old_id, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, "")

    def test_roll_now_keeps_settings(self):
        old = self.key("dev@example.com", "live", "prod", "--environment", "staging",
                       "--allow-ip", "127.0.0.1")
        p = subprocess_run([harness.BINARY, "key", "roll", "-"], old + "\n", self.data.env())
        self.assertEqual(p.returncode, 0, p.stderr)
        new = p.stdout.strip()
        self.secrets.append(new)
        self.assertTrue(new.startswith("sk_live_"))
        self.assertError(self.srv.post(old), 401, "api_key_expired")
        self.assertError(self.srv.post(new), 502, "model_backend_error")
        k = [k for k in self.keys() if k["status"] == "active"][0]
        self.assertEqual((k["environment"], k["ip_allowlist"]), ("staging", ["127.0.0.1"]))

    def test_rename_and_audit_log(self):
        key = self.key(name="first")
        kid = self.data.key_id(key)
        self.data.cli("key", "update", kid, "--name", "second name")
        self.assertEqual([k["name"] for k in self.keys()], ["second name"])
        self.data.cli("key", "revoke", kid)
        log = [e for e in json.loads(self.data.cli("audit", "--json").stdout)
               if e["action"].startswith("key.")]
        actions = [e["action"] for e in log]
        self.assertEqual(actions[:3], ["key.revoke", "key.rename", "key.create"])
        for e in log:
            self.assertEqual(e["actor"], "cli")
            self.assertEqual(e["result"], "ok")
            self.assertIn(kid, e["target"])
        self.assertIn('"first" -> "second name"', log[1]["detail"])
        text = self.data.cli("audit", "--account", "dev@example.com").stdout
        self.assertIn("key.revoke", text)
        self.assertNotIn(key, json.dumps(log) + text)
        self.assertNotIn(key[8:], json.dumps(log) + text)


class RollExpiryTest(harness.ServerTest):
    def test_rolling_keeps_the_expiry(self):
        """Rolling used to give the replacement no expiry: a way out of `key expire`."""
        key = self.key("dev@example.com", "test", "expiring", "--expires-in", "2h")
        kid = self.data.key_id(key)
        old = [k for k in json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                                   "--json").stdout) if k["id"] == kid][0]
        self.assertIsNotNone(old["expires"])
        p = self.data.cli("key", "roll", kid, "--grace", "1h")
        self.secrets.append(p.stdout.strip())
        keys = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                        "--json").stdout)
        new = [k for k in keys if k["id"] == old["rolled_to"] or k["id"] != kid][0]
        self.assertEqual(new["expires"], old["expires"])
        # A later expiry is inherited as well (the dashboard rolls through the same code).
        self.data.cli("key", "expire", new["id"], "--in", "3h")
        expires = [k for k in json.loads(self.data.cli(
            "key", "list", "--account", "dev@example.com", "--json").stdout)
            if k["id"] == new["id"]][0]["expires"]
        p = self.data.cli("key", "roll", new["id"])
        self.secrets.append(p.stdout.strip())
        latest = json.loads(self.data.cli("key", "list", "--account", "dev@example.com",
                                          "--json").stdout)[-1]
        self.assertEqual(latest["expires"], expires)


def subprocess_run(args, stdin, env):
    import subprocess
    return subprocess.run(args, input=stdin, env=env, capture_output=True, text=True, timeout=60)


if __name__ == "__main__":
    harness.main()
