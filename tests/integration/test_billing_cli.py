"""Plans, quotas, usage and invoices from the operator CLI, against a real server billing live
requests answered by the fake model backend: the figures must match the requests sent and the
plan's prices exactly, and plan and quota changes must be in force on the running server."""

import calendar
import csv
import io
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

PLANS = {
    "currency": "usd",
    "default_plan": "free",
    "plans": [
        {"name": "free", "requests_per_month": 100, "tokens_per_month": 100000},
        {"name": "pro", "requests_per_month": None, "tokens_per_month": None,
         "price_per_request_micros": 2500,
         "price_per_million_input_tokens_micros": 1500000,
         "price_per_million_output_tokens_micros": 6000000},
        {"name": "tiny", "requests_per_month": 3, "price_per_request_micros": 7},
    ],
}


def price(plan, usage):
    """The plan's price of one request, as Konnect computes it: integers, halves rounded up."""
    t = (usage["input_tokens"] * plan.get("price_per_million_input_tokens_micros", 0) +
         usage["output_tokens"] * plan.get("price_per_million_output_tokens_micros", 0))
    return plan.get("price_per_request_micros", 0) + (t + 500000) // 1000000


def plan_named(name):
    return next(p for p in PLANS["plans"] if p["name"] == name)


def money(micros):
    return f"${micros // 1000000}.{micros % 1000000:06d}"


class BillingCliTest(ServerTest):
    def setUp(self):
        super().setUp()
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        self.backend = FakeBackend().start()
        self.addCleanup(self.backend.stop)
        self.month = time.strftime("%Y-%m", time.gmtime())

    def serve(self):
        return self.start(KONNECT_MODEL_URL=self.backend.url)

    def chat(self, srv, key, message="Hello"):
        return srv.post(key, {"message": message})

    def usage(self, account="dev@example.com", *extra):
        return json.loads(self.data.cli("usage", "--account", account, "--json", *extra).stdout)

    def test_usage_and_invoice_match_the_requests_and_prices(self):
        self.data.cli("account", "set-plan", "--account", "dev@example.com", "--plan", "pro")
        live = self.key("dev@example.com", "live", "Backend, \"main\"")
        live_id = self.data.key_id(live)
        staging = self.key("dev@example.com", "live", "staging box", "--environment", "staging")
        test = self.key("dev@example.com", "test", "laptop")
        srv = self.serve()

        sent = []  # (key id, environment, usage) of every billed request
        for i, msg in enumerate(["Hello", "Tell me a story about a cat",
                                 "one two three four five six seven eight nine ten",
                                 "x" * 3000]):
            r = self.chat(srv, live, msg)
            self.assertEqual(r.status_code, 200, r.text)
            sent.append((live_id, "production", r.json()["usage"]))
        r = self.chat(srv, staging, "from staging")
        self.assertEqual(r.status_code, 200, r.text)
        sent.append((self.data.key_id(staging), "staging", r.json()["usage"]))
        # Test keys are never billed.
        self.assertEqual(self.chat(srv, test).status_code, 200)

        pro = plan_named("pro")
        want_cost = sum(price(pro, u) for _, _, u in sent)
        want_in = sum(u["input_tokens"] for _, _, u in sent)
        want_out = sum(u["output_tokens"] for _, _, u in sent)
        self.assertGreater(want_cost, 0)

        u = self.usage()
        self.assertEqual(u["month"], self.month)
        self.assertEqual(u["currency"], "usd")
        self.assertEqual(u["plan"]["name"], "pro")
        self.assertEqual(u["plan"]["price_per_request_micros"], 2500)
        self.assertEqual(u["totals"], {"requests": 5, "input_tokens": want_in,
                                       "output_tokens": want_out,
                                       "tokens": want_in + want_out, "cost_micros": want_cost})
        self.assertEqual(u["quota"]["requests"],
                         {"limit": None, "used": 5, "remaining": None, "source": "plan"})
        by_key = {k["key_id"]: k for k in u["keys"]}
        self.assertEqual(set(by_key), {live_id, self.data.key_id(staging)})
        k = by_key[live_id]
        self.assertEqual((k["name"], k["mode"], k["environment"], k["requests"]),
                         ("Backend, \"main\"", "live", "production", 4))
        self.assertEqual(k["cost_micros"], sum(price(pro, x[2]) for x in sent[:4]))
        envs = {e["environment"]: e for e in u["environments"]}
        self.assertEqual((envs["production"]["requests"], envs["staging"]["requests"]), (4, 1))
        # Every day of the month up to today, today last with all of today's requests.
        today = time.strftime("%Y-%m-%d", time.gmtime())
        self.assertEqual(len(u["days"]), int(today[8:]))
        self.assertEqual(u["days"][0]["date"], f"{self.month}-01")
        self.assertEqual(u["days"][-1]["date"], today)
        self.assertEqual(u["days"][-1]["requests"], 5)
        self.assertEqual(u["days"][-1]["by_key"][live_id], 4)
        self.assertEqual(u["days"][-1]["by_environment"], {"production": 4, "staging": 1})
        self.assertEqual(sum(d["requests"] for d in u["days"]), 5)

        text = self.data.cli("usage", "--account", "dev@example.com").stdout
        self.assertIn(money(want_cost), text)
        self.assertIn(live_id, text)

        inv = json.loads(self.data.cli("invoice", "--account", "dev@example.com",
                                       "--month", self.month, "--json").stdout)
        self.assertEqual(inv["status"], "open")
        self.assertEqual(inv["currency"], "usd")
        self.assertEqual(inv["month"], self.month)
        self.assertEqual(inv["total_micros"], want_cost)
        self.assertEqual(inv["subtotal_micros"], want_cost)
        self.assertEqual(sum(line["amount_micros"] for line in inv["lines"]), want_cost)
        self.assertEqual(sum(line["requests"] for line in inv["lines"]), 5)
        # The open month's invoice is a draft: numbered once the month is over.
        self.assertIsNone(inv["number"])
        # Billed at the plan's prices: the plan and each line's unit prices are on it.
        self.assertEqual(inv["plan"], {"name": "pro"})
        for line in inv["lines"]:
            self.assertEqual(line["unit_prices"], {
                "per_request_micros": 2500, "per_million_input_tokens_micros": 1500000,
                "per_million_output_tokens_micros": 6000000})
        self.assertEqual(inv["period_start"], f"{self.month}-01T00:00:00Z")

        text = self.data.cli("invoice", "--account", "dev@example.com", "--month",
                             self.month).stdout
        self.assertIn("Invoice   draft (numbered once the month is over)", text)
        self.assertIn("Plan      pro\n", text)
        self.assertIn(": $0.002500 per request, $1.500000 per million input tokens, $6.000000 per "
                      "million output tokens", text)
        self.assertIn(money(want_cost), text)

        raw = self.data.cli("invoice", "--account", "dev@example.com", "--month", self.month,
                            "--csv").stdout
        rows = list(csv.DictReader(io.StringIO(raw, newline="")))
        items = [r for r in rows if r["type"] == "item"]
        total = [r for r in rows if r["type"] == "total"]
        self.assertEqual(len(total), 1)
        self.assertEqual(len(items), len(inv["lines"]))
        self.assertEqual({r["unit_price_per_request_micros"] for r in items}, {"2500"})
        self.assertEqual(total[0]["unit_price_per_request_micros"], "")
        self.assertEqual(sum(int(r["amount_micros"]) for r in items), want_cost)
        self.assertEqual(int(total[0]["amount_micros"]), want_cost)
        self.assertEqual(total[0]["amount"], money(want_cost)[1:])
        self.assertIn("Backend, \"main\"", [r["key_name"] for r in items])

        listing = json.loads(self.data.cli("invoice", "list", "--account", "dev@example.com",
                                           "--json").stdout)
        self.assertEqual(listing[0]["month"], self.month)
        self.assertEqual(listing[0]["total_micros"], want_cost)
        self.assertIsNone(listing[0]["number"])

        show = self.data.cli("account", "show", "--account", "dev@example.com").stdout
        self.assertIn("plan     pro", show)
        self.assertIn("requests 5 used this month, no limit", show)
        self.assertIn(money(want_cost), show)

    def test_closed_months_take_sequential_invoice_numbers(self):
        """Invoices of months that are over are numbered from one sequence for the whole server,
        without gaps, the first time they are issued, and keep their number; drafts and empty
        months spend none."""
        for email in ("first@example.com", "second@example.com"):
            self.data.cli("account", "create", "--email", email)
        y, m = map(int, self.month.split("-"))
        cur = y * 12 + m - 1
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        ids = dict(db.execute("SELECT email, id FROM accounts").fetchall())

        def billed(email, month, requests):
            # Usage of a month that is over, as the ledger's rollup holds it.
            day = calendar.timegm((month // 12, month % 12 + 1, 3, 12, 0, 0)) // 86400
            db.execute("INSERT INTO usage_rollup(account_id, day, key_id, model, environment, "
                       "month, requests, input_tokens, output_tokens, price_micros) "
                       "VALUES (?, ?, 'key_x', 'gpt', 'production', ?, ?, 10, 20, 5000)",
                       (ids[email], day, month, requests))
        billed("first@example.com", cur - 2, 3)
        billed("first@example.com", cur - 1, 2)
        billed("second@example.com", cur - 1, 7)
        db.commit()
        db.close()

        def months(email):
            return json.loads(self.data.cli("invoice", "list", "--account", email,
                                            "--json").stdout)

        def month_text(month):
            return f"{month // 12:04d}-{month % 12 + 1:02d}"

        # Listed for the first time: the first account's closed months, oldest first.
        listing = months("first@example.com")
        self.assertEqual([(x["month"], x["status"], x["number"]) for x in listing],
                         [(self.month, "open", None),
                          (month_text(cur - 1), "final", "INV-000002"),
                          (month_text(cur - 2), "final", "INV-000001")])
        text = self.data.cli("invoice", "list", "--account", "first@example.com").stdout
        self.assertIn("draft", text)
        self.assertIn("INV-000002", text)
        # Another account's invoice takes the next number; numbers are kept.
        inv = json.loads(self.data.cli("invoice", "--account", "second@example.com", "--month",
                                       month_text(cur - 1), "--json").stdout)
        self.assertEqual((inv["number"], inv["status"], inv["requests"]), ("INV-000003", "final", 7))
        self.assertEqual(months("second@example.com")[1]["number"], "INV-000003")
        self.assertEqual(months("first@example.com")[2]["number"], "INV-000001")
        # An empty month that is over has nothing to invoice: no number spent on it.
        inv = json.loads(self.data.cli("invoice", "--account", "second@example.com", "--month",
                                       month_text(cur - 2), "--json").stdout)
        self.assertIsNone(inv["number"])
        text = self.data.cli("invoice", "--account", "first@example.com", "--month",
                             month_text(cur - 2)).stdout
        self.assertIn("Invoice   INV-000001\n", text)
        raw = self.data.cli("invoice", "--account", "first@example.com", "--month",
                            month_text(cur - 2), "--csv").stdout
        total = [r for r in csv.DictReader(io.StringIO(raw, newline="")) if r["type"] == "total"]
        self.assertEqual(total[0]["invoice"], "INV-000001")
        # Kept in the store: a copy to PostgreSQL would carry them (store copy's table list).
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        self.assertEqual(db.execute("SELECT count(*), max(seq) FROM invoice_numbers").fetchone(),
                         (3, 3))
        db.close()

    def test_invoices_carry_the_sellers_details(self):
        self.assertIsNone(json.loads(self.data.cli("invoice", "--account", "dev@example.com",
                                                   "--json").stdout)["seller"])
        seller = {"name": "Example Models Ltd", "address": "1 Main Street\nDublin D01 X2Y3",
                  "email": "billing@example.com", "tax_id": "IE1234567X"}
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(dict(PLANS, seller=seller), f)
        inv = json.loads(self.data.cli("invoice", "--account", "dev@example.com",
                                       "--json").stdout)
        self.assertEqual(inv["seller"], seller)
        text = self.data.cli("invoice", "--account", "dev@example.com").stdout
        for part in ("Seller    Example Models Ltd", "          1 Main Street",
                     "          Dublin D01 X2Y3", "billing@example.com", "Tax id    IE1234567X"):
            self.assertIn(part, text)
        for bad, says in (({"address": "x"}, "\"name\" is required"),
                          ({"name": "A\u001b[2J"}, "control character"),
                          ({"name": "A", "vat": "1"}, "unknown member"),
                          ("Example", "must be an object")):
            with self.subTest(says=says):
                with open(os.path.join(self.data.path, "plans.json"), "w") as f:
                    json.dump(dict(PLANS, seller=bad), f)
                p = self.data.cli("plans", check=False)
                self.assertEqual(p.returncode, 1)
                self.assertIn(says, p.stderr)

    def test_set_quota_and_set_plan_change_what_the_running_server_enforces(self):
        self.data.account("quota@example.com")
        live = self.key("quota@example.com", "live", "prod")
        srv = self.serve()
        self.assertEqual(self.usage("quota@example.com")["totals"]["requests"], 0)

        p = self.data.cli("account", "set-quota", "--account", "quota@example.com",
                          "--requests", "2")
        self.assertIn("requests 2 a month", p.stdout)
        self.assertIn("applied by every running server (1)", p.stderr)
        self.assertEqual(self.chat(srv, live).status_code, 200)
        self.assertEqual(self.chat(srv, live).status_code, 200)
        self.assertError(self.chat(srv, live), 429, "insufficient_quota")
        q = self.usage("quota@example.com")["quota"]["requests"]
        self.assertEqual(q, {"limit": 2, "used": 2, "remaining": 0, "source": "override"})

        # Unlimited: at once.
        self.data.cli("account", "set-quota", "--account", "quota@example.com",
                      "--requests", "unlimited")
        self.assertEqual(self.chat(srv, live).status_code, 200)
        # Back to the plan's quota, on a plan of 3 requests a month: used up again.
        self.data.cli("account", "set-plan", "--account", "quota@example.com", "--plan", "tiny")
        self.data.cli("account", "set-quota", "--account", "quota@example.com",
                      "--requests", "plan")
        self.assertError(self.chat(srv, live), 429, "insufficient_quota")
        u = self.usage("quota@example.com")
        self.assertEqual(u["plan"]["name"], "tiny")
        self.assertEqual(u["quota"]["requests"],
                         {"limit": 3, "used": 3, "remaining": 0, "source": "plan"})
        # Refused requests are not billed.
        self.assertEqual(u["totals"]["requests"], 3)
        # A token quota already passed refuses the next request too.
        self.data.cli("account", "set-plan", "--account", "quota@example.com", "--plan", "default")
        self.data.cli("account", "set-quota", "--account", "quota@example.com", "--tokens", "1")
        self.assertError(self.chat(srv, live), 429, "insufficient_quota")
        u = self.usage("quota@example.com")
        self.assertEqual(u["plan"]["name"], "free")
        self.assertEqual(u["quota"]["tokens"]["limit"], 1)
        self.assertEqual(u["quota"]["requests"]["limit"], 100)

        # Every change is in the audit log.
        log = json.loads(self.data.cli("audit", "--account", "quota@example.com",
                                       "--json").stdout)
        actions = [e["action"] for e in log]
        self.assertEqual(actions.count("account.quota"), 4)
        self.assertEqual(actions.count("account.plan"), 2)
        entry = next(e for e in log if e["action"] == "account.plan")
        self.assertEqual((entry["actor"], entry["result"], entry["target"]),
                         ("cli", "ok", "quota@example.com"))
        self.assertIn("free", entry["detail"])

    def test_refusals(self):
        # An unknown plan is refused and changes nothing.
        p = self.data.cli("account", "set-plan", "--account", "dev@example.com", "--plan",
                          "platinum", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("platinum", p.stderr)
        self.assertIn("free", p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertEqual(self.usage()["plan"]["name"], "free")
        for args in (["account", "set-plan", "--account", "dev@example.com"],
                     ["account", "set-quota", "--account", "dev@example.com"],
                     ["account", "set-quota", "--account", "dev@example.com", "--requests",
                      "-1"],
                     ["account", "set-quota", "--account", "dev@example.com", "--tokens",
                      "lots"],
                     ["usage"],
                     ["usage", "--account", "dev@example.com", "--month", "2026-13"],
                     ["usage", "--account", "dev@example.com", "--month", "Nov"],
                     ["invoice", "--account", "dev@example.com", "--month", "2026-1"],
                     ["invoice", "--account", "dev@example.com", "--json", "--csv"],
                     ["invoice", "bogus", "--account", "dev@example.com"],
                     ["plans", "extra"]):
            with self.subTest(args=args):
                p = self.data.cli(*args, check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
                self.assertTrue(p.stderr.strip())
        # A month that has not started, and an unknown account.
        for args in (["invoice", "--account", "dev@example.com", "--month", "2999-01"],
                     ["usage", "--account", "dev@example.com", "--month", "2999-01"],
                     ["usage", "--account", "nobody@example.com"],
                     ["account", "set-plan", "--account", "nobody@example.com", "--plan",
                      "pro"]):
            with self.subTest(args=args):
                p = self.data.cli(*args, check=False)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(p.stdout, "")
        # A broken plans file named by KONNECT_PLANS is an error, not the built-in plan.
        p = self.data.cli("plans", check=False,
                          KONNECT_PLANS=os.path.join(self.data.path, "missing.json"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing.json", p.stderr)

    def test_plans_and_help(self):
        doc = json.loads(self.data.cli("plans", "--json").stdout)
        self.assertEqual(doc["currency"], "usd")
        self.assertEqual(doc["default_plan"], "free")
        self.assertEqual([p["name"] for p in doc["plans"]], ["free", "pro", "tiny"])
        self.assertEqual(doc["plans"][1]["price_per_million_output_tokens_micros"], 6000000)
        self.assertIsNone(doc["plans"][1]["requests_per_month"])
        text = self.data.cli("plans").stdout
        self.assertRegex(text, r"\n\* free ")
        self.assertIn("unlimited", text)
        # Without a plans file: the built-in plan.
        os.remove(os.path.join(self.data.path, "plans.json"))
        doc = json.loads(self.data.cli("plans", "--json").stdout)
        self.assertEqual((doc["builtin"], doc["default_plan"]), (True, "default"))
        self.data.cli("account", "set-plan", "--account", "dev@example.com", "--plan", "default")

        top = self.data.cli("--help").stdout
        for cmd in ("usage", "invoice", "plans"):
            self.assertIn(f"  {cmd} ", top)
        for args, want in ((["usage", "--help"], "--month"),
                           (["invoice", "--help"], "--csv"),
                           (["plans", "--help"], "default plan"),
                           (["account", "--help"], "set-quota"),
                           (["account", "set-plan", "--help"], "--plan NAME")):
            with self.subTest(args=args):
                p = self.data.cli(*args)
                self.assertIn("Usage:", p.stdout)
                self.assertIn(want, p.stdout)


if __name__ == "__main__":
    harness.main()
