"""The documentation keeps up with the code: every public error code is in the OpenAPI reference
and the README, and every KONNECT_* setting the code reads is in the README."""

import os
import re
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


class DocsTest(unittest.TestCase):
    def test_error_codes_are_documented(self):
        table = read("src", "core", "errors.c")
        codes = set(re.findall(r'\{\d{3},\s*"[^"]*",\s*"[a-z_]+",\s*"([a-z_]+)"', table))
        self.assertGreater(len(codes), 15)
        openapi = read("docs", "openapi.yaml")
        dashboard = read("docs", "dashboard-api.md")
        readme = read("README.md")
        dashboard_only = {"not_signed_in", "csrf_failed", "invalid_credentials",
                          "too_many_attempts", "signup_closed", "email_taken", "invite_invalid",
                          "key_not_active", "password_not_set", "invite_for_another_user",
                          "link_invalid", "owner_required", "limit_reached", "dashboard_busy",
                          "misdirected_request"}
        for code in sorted(codes):
            with self.subTest(code=code):
                if code in dashboard_only:
                    self.assertTrue(code in dashboard,
                                    f"{code} is not in docs/dashboard-api.md")
                    continue
                self.assertTrue(code in openapi, f"{code} is not in docs/openapi.yaml")
                if code not in ("internal_error", "not_ready", "bad_request",
                                "expectation_failed"):
                    self.assertTrue(f"`{code}`" in readme, f"{code} is not in README.md")

    def test_settings_are_documented(self):
        readme = read("README.md")
        names = set()
        for root, _, files in os.walk(os.path.join(ROOT, "src")):
            for name in files:
                with open(os.path.join(root, name), encoding="utf-8") as f:
                    names.update(re.findall(r'"(KONNECT_[A-Z_]+)"', f.read()))
        self.assertGreater(len(names), 10)
        for name in sorted(names):
            with self.subTest(setting=name):
                self.assertTrue(f"`{name}`" in readme, f"{name} is not in README.md")


if __name__ == "__main__":
    unittest.main(verbosity=2)
