"""The documentation keeps up with the code: every public error code is in the OpenAPI reference
and the README, every KONNECT_* setting the code reads is in the README, and `konnect serve
--help` names every setting config.c reads, with the numeric settings' defaults of the README's
settings table.

Run as `test_docs.py BINARY` (like the other integration tests); without BINARY, the konnect of
the build tree CTest runs it from (its tests/ directory), else build/konnect."""

import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BINARY = None  # set from argv, or found, by main()

# Numeric settings whose default the README says in words: the default --help prints, and the
# README's words for it.
DEFAULTS_IN_WORDS = {"KONNECT_THREADS": ("0", "number of cores")}


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
                          "misdirected_request", "two_factor_code_required",
                          "invalid_two_factor_code", "two_factor_required",
                          "two_factor_conflict"}
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


def find_binary():
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        return os.path.abspath(sys.argv.pop(1))
    for tree in (os.path.join(os.getcwd(), ".."), os.path.join(ROOT, "build")):
        path = os.path.join(tree, "konnect")
        if os.path.isfile(os.path.join(tree, "CMakeCache.txt")) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    return None


def serve_help():
    """`konnect serve --help`, run without the caller's KONNECT_* settings (a bad one would stop
    it before the help)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONNECT_")}
    p = subprocess.run([BINARY, "serve", "--help"], env=env, capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"serve --help exited {p.returncode}: {p.stderr}")
    return p.stdout


def help_numbers(text):
    """{name: (default, min, max)} of the settings --help prints from config.c's table: a line
    "  KONNECT_NAME  what it sets", continued on indented lines, that ends in "(default D,
    MIN..MAX)"."""
    entries, name = {}, None
    for line in text.splitlines():
        m = re.match(r"  (KONNECT_[A-Z0-9_]+)\s", line)
        if m:
            name = m.group(1)
            entries.setdefault(name, []).append(line[m.end():].strip())
        elif name is not None and line.startswith("    "):
            entries[name][-1] += " " + line.strip()
        else:
            name = None
    numbers = {}
    for name, texts in entries.items():
        for t in texts:
            m = re.search(r"\(default (-?\d+), (-?\d+)\.\.(-?\d+)\)$", t)
            if m:
                if name in numbers:
                    raise AssertionError(f"serve --help prints {name} twice")
                numbers[name] = m.groups()
    return numbers


def config_settings():
    """The numeric settings of config.c's table, in order, and every KONNECT_* it reads."""
    src = read("src", "core", "config.c")
    numbers = re.findall(r'NUMBER\(\s*"(KONNECT_[A-Z0-9_]+)"', src)
    read_by_getenv = re.findall(r'getenv\(\s*"(KONNECT_[A-Z0-9_]+)"\s*\)', src)
    return numbers, set(numbers) | set(read_by_getenv)


def readme_defaults():
    """{name: [default cell, ...]} of the README's settings table (| `NAME` | flag | default |
    meaning |)."""
    rows = {}
    for line in read("README.md").splitlines():
        m = re.match(r"\| `(KONNECT_[A-Z0-9_]+)` \|[^|]*\|([^|]*)\|", line)
        if m:
            rows.setdefault(m.group(1), []).append(m.group(2).strip())
    return rows


class ServeHelpTest(unittest.TestCase):
    def setUp(self):
        if BINARY is None:
            self.skipTest("no konnect binary: run test_docs.py BINARY")
        self.help = serve_help()
        self.numbers, self.names = config_settings()
        self.assertGreater(len(self.numbers), 15)
        self.assertGreater(len(self.names), len(self.numbers) + 10)

    def test_every_setting_is_in_help(self):
        for name in sorted(self.names):
            with self.subTest(setting=name):
                self.assertTrue(re.search(rf"\b{name}\b", self.help),
                                f"{name} is not in serve --help")

    def test_numeric_settings_come_from_the_table(self):
        printed = help_numbers(self.help)
        self.assertEqual(list(printed), self.numbers,
                         "serve --help must print config.c's numbers[] table, in its order")
        for name, (default, low, high) in printed.items():
            with self.subTest(setting=name):
                self.assertLessEqual(int(low), int(default))
                self.assertLessEqual(int(default), int(high))

    def test_help_defaults_are_the_readme_defaults(self):
        printed = help_numbers(self.help)
        readme = readme_defaults()
        for name in self.numbers:
            with self.subTest(setting=name):
                self.assertIn(name, printed, f"serve --help gives no default for {name}")
                rows = readme.get(name, [])
                self.assertEqual(len(rows), 1,
                                 f"README.md's settings table must have one row for {name}")
                default = printed[name][0]
                if name in DEFAULTS_IN_WORDS:
                    self.assertEqual((default, rows[0]), DEFAULTS_IN_WORDS[name])
                else:
                    self.assertEqual(rows[0], f"`{default}`",
                                     f"README.md says {name} defaults to {rows[0]}, "
                                     f"serve --help (config.c) says {default}")

    def test_help_fits_80_columns(self):
        for line in self.help.splitlines():
            with self.subTest(line=line):
                self.assertLessEqual(len(line), 79)


if __name__ == "__main__":
    BINARY = find_binary()
    unittest.main(verbosity=2)
