"""The operator API (/v1/operator/...) against the real binary: operator keys (sk_op_...) made
with `konnect operator-key create`, accounts created, listed, shown, put on a plan and quotas,
suspended and reinstated, their first keys made, and every account's usage exported as JSON and
CSV; and what stops everyone else: an account's keys of any kind, revoked and made-up operator
keys. Every answer is checked against docs/openapi.yaml."""

import csv
import io
import json
import os
import sys
import time

import jsonschema
import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import KEY_RE, ServerTest  # noqa: E402
from test_manage import SPEC  # noqa: E402

PLANS = {"currency": "usd", "default_plan": "free",
         "plans": [{"name": "free", "price_per_request_micros": 0},
                   {"name": "pro", "price_per_request_micros": 2000,
                    "requests_per_month": 1000}]}


class OperatorTest(ServerTest):
    def setUp(self):
        super().setUp()
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            json.dump(PLANS, f)
        self.srv = self.start()
        p = self.data.cli("operator-key", "create", "--name", "billing")
        self.op = p.stdout.strip()
        self.secrets.append(self.op)
        self.assertRegex(self.op, r"^sk_op_[0-9A-Za-z]{38}$")
        self.assertIn("won't be shown again", p.stderr)

    def call(self, method, path, key=None, body=None, headers=None, documented=True):
        h = {"Authorization": f"Bearer {key or self.op}"}
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        r = requests.request(method, self.srv.url + path, headers=h, timeout=10,
                             data=None if body is None else json.dumps(body))
        self.assertRegex(r.headers.get("request-id", ""), r"^req_[0-9A-Za-z]{24}$")
        template = SPEC.check(method, path, r)
        if documented:
            self.assertIsNotNone(template, f"{path} is not in docs/openapi.yaml")
        if r.status_code >= 400:
            jsonschema.Draft202012Validator(
                {"$ref": "#/components/schemas/Error",
                 "components": SPEC.doc["components"]}).validate(r.json())
        return r

    def audit(self):
        return json.loads(self.data.cli("audit", "--limit", "500", "--json").stdout)

    def test_provision_an_account_end_to_end(self):
        r = self.call("POST", "/v1/operator/accounts",
                      body={"email": "acme@example.com", "plan": "pro", "quota_tokens": 50000})
        self.assertEqual(r.status_code, 201, r.text)
        made = r.json()
        acct = made["account"]
        self.assertEqual((acct["email"], acct["plan"], acct["quota_requests"],
                          acct["quota_tokens"], acct["suspended"]),
                         ("acme@example.com", "pro", None, 50000, None))
        link = made["password_link"]
        self.assertTrue(link.startswith("/set-password#token="))
        self.secrets.append(link.split("=", 1)[1])
        # The link works once: the owner chooses a password with it.
        r = requests.post(self.srv.url + "/dashboard/api/password/set", timeout=10,
                          json={"token": link.split("=", 1)[1], "password": "correct horse 1"})
        self.assertEqual(r.status_code, 200, r.text)
        # Its first key, made by the operator: a live key that works on /v1/chat at once.
        r = self.call("POST", f"/v1/operator/accounts/{acct['id']}/keys",
                      body={"name": "production", "mode": "live"})
        self.assertEqual(r.status_code, 201, r.text)
        live = r.json()["secret"]
        self.secrets.append(live)
        self.assertTrue(KEY_RE.match(live) and live.startswith("sk_live_"))
        self.assertNotIn(r.status_code, (401, 403), self.srv.post(live).text)
        r = self.call("POST", f"/v1/operator/accounts/{acct['id']}/keys",
                      body={"name": "ops", "mode": "admin"})
        self.assertEqual(r.status_code, 201, r.text)
        self.secrets.append(r.json()["secret"])
        shown = self.call("GET", f"/v1/operator/accounts/{acct['id']}").json()
        self.assertEqual(shown["account"]["id"], acct["id"])
        self.assertEqual(shown["usage"]["plan"]["name"], "pro")
        self.assertEqual(shown["usage"]["quota"]["tokens"]["limit"], 50000)
        by_email = self.call("GET", "/v1/operator/accounts/acme@example.com").json()
        self.assertEqual(by_email["account"]["id"], acct["id"])
        # A change of plan and quotas, in force at once, with the CLI's own view agreeing.
        r = self.call("PATCH", f"/v1/operator/accounts/{acct['id']}",
                      body={"plan": "default", "quota_requests": "unlimited",
                            "quota_tokens": None})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["propagation"]["lagging"], [])
        listed = [a for a in json.loads(self.data.cli("account", "list", "--json").stdout)
                  if a["id"] == acct["id"]][0]
        self.assertEqual((listed.get("plan"), listed["quota_requests"], listed["quota_tokens"]),
                         (None, "unlimited", None))
        actor = "operator key " + json.loads(
            self.data.cli("operator-key", "list", "--json").stdout)[0]["id"]
        actions = {(e["action"], e["actor"]) for e in self.audit()}
        for action in ("account.create", "account.plan", "account.quota", "key.create",
                       "user.password_link"):
            self.assertIn((action, actor), actions)
        for e in self.audit():
            for secret in self.secrets:
                self.assertNotIn(secret, json.dumps(e))

    def test_suspend_and_reinstate(self):
        key = self.key("dev@example.com", "test", "t")
        self.assertEqual(self.srv.post(key).status_code, 200)
        r = self.call("POST", "/v1/operator/accounts/dev@example.com/suspend")
        self.assertEqual(r.status_code, 200, r.text)
        self.assertIsInstance(r.json()["account"]["suspended"], int)
        self.assertEqual(r.json()["propagation"]["lagging"], [])
        self.assertError(self.srv.post(key), 403, "account_suspended")
        # Suspending twice changes nothing (the first time stays).
        again = self.call("POST", "/v1/operator/accounts/dev@example.com/suspend").json()
        self.assertEqual(again["account"]["suspended"], r.json()["account"]["suspended"])
        r = self.call("POST", "/v1/operator/accounts/dev@example.com/reinstate")
        self.assertIsNone(r.json()["account"]["suspended"])
        self.assertEqual(self.srv.post(key).status_code, 200)

    def test_accounts_are_listed_oldest_first_a_page_at_a_time(self):
        for i in range(4):
            self.call("POST", "/v1/operator/accounts", body={"email": f"c{i}@example.com"})
        seen, cursor = [], None
        while True:
            page = self.call("GET", "/v1/operator/accounts?limit=2" +
                             (f"&starting_after={cursor}" if cursor else "")).json()
            seen += [a["email"] for a in page["data"]]
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        # Oldest first; creation times are to the second, so ties go by id.
        every = self.call("GET", "/v1/operator/accounts?limit=100").json()["data"]
        self.assertEqual([a["email"] for a in every], seen)
        self.assertEqual(sorted(seen), sorted(["dev@example.com"] +
                                              [f"c{i}@example.com" for i in range(4)]))
        self.assertEqual([(a["created"], a["id"]) for a in every],
                         sorted((a["created"], a["id"]) for a in every))

    def test_usage_export_as_json_and_csv(self):
        self.call("POST", "/v1/operator/accounts", body={"email": "=cmd@example.com"})
        month = time.strftime("%Y-%m", time.gmtime())
        doc = self.call("GET", f"/v1/operator/usage?month={month}").json()
        self.assertEqual((doc["object"], doc["month"], doc["currency"]),
                         ("usage_export", month, "usd"))
        self.assertEqual(sorted(a["email"] for a in doc["data"]),
                         ["=cmd@example.com", "dev@example.com"])
        r = self.call("GET", f"/v1/operator/usage.csv?month={month}")
        self.assertTrue(r.headers["Content-Type"].startswith("text/csv"))
        self.assertIn(f"konnect-usage-{month}.csv", r.headers["Content-Disposition"])
        rows = list(csv.DictReader(io.StringIO(r.text)))
        self.assertEqual(len(rows), 2)
        self.assertEqual(set(rows[0]), {"account_id", "email", "plan", "suspended", "requests",
                                        "input_tokens", "output_tokens", "tokens",
                                        "cost_micros"})
        # A cell a spreadsheet would run as a formula is defused.
        self.assertIn("'=cmd@example.com", [row["email"] for row in rows])
        self.assertError(self.call("GET", "/v1/operator/usage?month=2999-01"), 400,
                         "invalid_parameter", "month")

    def test_bad_requests(self):
        self.assertError(self.call("POST", "/v1/operator/accounts", body={"email": "nope"}), 400,
                         "invalid_parameter", "email")
        self.assertError(self.call("POST", "/v1/operator/accounts",
                                   body={"email": "x@example.com", "plan": "gold"}),
                         400, "invalid_parameter", "plan")
        self.assertError(self.call("POST", "/v1/operator/accounts",
                                   body={"email": "x@example.com", "quota_requests": -1}),
                         400, "invalid_parameter", "quota_requests")
        # Nothing was made by the refusals.
        emails = [a["email"] for a in self.call("GET", "/v1/operator/accounts").json()["data"]]
        self.assertEqual(emails, ["dev@example.com"])
        self.assertError(self.call("POST", "/v1/operator/accounts",
                                   body={"email": "dev@example.com"}), 409, "email_taken",
                         "email")
        self.assertError(self.call("PATCH", "/v1/operator/accounts/acct_nope",
                                   body={"plan": "pro"}), 404, "not_found", "id")
        self.assertError(self.call("PATCH", "/v1/operator/accounts/dev@example.com", body={}),
                         400, "missing_parameter")
        self.assertError(self.call("GET", "/v1/operator/nothing", documented=False), 404, "not_found")
        r = self.call("DELETE", "/v1/operator/accounts")
        self.assertError(r, 405, "method_not_allowed")
        self.assertEqual(r.headers["Allow"], "GET, POST")

    def test_who_may_call_it(self):
        r = requests.get(self.srv.url + "/v1/operator/accounts", timeout=10)
        self.assertError(r, 401, "missing_api_key")
        # An account's keys, of every kind, are the wrong kind here.
        for mode in ("test", "live", "admin"):
            key = self.key("dev@example.com", mode, f"k-{mode}")
            err = self.assertError(self.call("GET", "/v1/operator/accounts", key=key), 403,
                                   "insufficient_scope")
            self.assertIn("sk_op_", err["message"])
        # An operator key is no key of the chat or management API.
        self.assertError(self.srv.post(self.op), 401, "invalid_api_key")
        self.assertError(self.call("GET", "/v1/keys", key=self.op), 401, "invalid_api_key")
        # A second operator key, revoked; and a mangled one (its checksum fails).
        other = self.data.cli("operator-key", "create", "--name", "x").stdout.strip()
        other_id = json.loads(self.data.cli("operator-key", "list", "--json").stdout)[-1]["id"]
        self.secrets.append(other)
        self.assertEqual(self.call("GET", "/v1/operator/accounts", key=other).status_code, 200)
        self.data.cli("operator-key", "revoke", other_id)
        r = self.call("GET", "/v1/operator/accounts", key=other)
        self.assertError(r, 401, "api_key_revoked")
        self.assertIn("invalid_token", r.headers["WWW-Authenticate"])
        self.assertError(self.call("GET", "/v1/operator/accounts",
                                   key=self.op[:-1] + ("a" if self.op[-1] != "a" else "b")),
                         401, "invalid_api_key")
        listed = json.loads(self.data.cli("operator-key", "list", "--json").stdout)
        self.assertEqual([k["revoked"] is None for k in listed], [True, False])
        self.assertIsNone(listed[0]["last_used"])  # never got past the checks above
        self.assertIsNotNone(listed[1]["last_used"])
        actions = [e["action"] for e in self.audit()]
        self.assertIn("operator_key.create", actions)
        self.assertIn("operator_key.revoke", actions)

    def test_idempotent_account_creation(self):
        h = {"Idempotency-Key": "signup-42"}
        first = self.call("POST", "/v1/operator/accounts", headers=h,
                          body={"email": "once@example.com"})
        self.assertEqual(first.status_code, 201, first.text)
        self.secrets.append(first.json()["password_link"].split("=", 1)[1])
        again = self.call("POST", "/v1/operator/accounts", headers=h,
                          body={"email": "once@example.com"})
        self.assertEqual(again.status_code, 201)
        self.assertEqual(again.headers["Idempotent-Replayed"], "true")
        self.assertEqual(again.json()["account"]["id"], first.json()["account"]["id"])
        self.assertIsNone(again.json()["password_link"])
        self.assertError(self.call("POST", "/v1/operator/accounts", headers=h,
                                   body={"email": "twice@example.com"}), 409,
                         "idempotency_error")


if __name__ == "__main__":
    harness.main()
