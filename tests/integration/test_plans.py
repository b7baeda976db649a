"""Plans as a customer who wants more than they pay for would try them: any model name, costly
parameters, more keys to get around a limit, many long requests at once against a token quota,
and an operator whose plans file changed while the server runs."""

import calendar
import json
import os
import signal
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

CATALOGUE = {
    "currency": "usd",
    "default_plan": "free",
    "default_model": "small",
    "models": [
        {"name": "small", "backend_model": "fake-normal",
         "price_per_million_output_tokens_micros": 1000000},
        {"name": "large", "backend_model": "fake-slow_stream",
         "price_per_request_micros": 1000},
    ],
    "plans": [
        {"name": "free", "models": ["small"], "max_concurrent_requests": 8},
        {"name": "pro", "allowed_parameters": ["n"], "max_concurrent_requests": 8},
        {"name": "rpm3", "requests_per_minute": 3},
        {"name": "solo", "max_concurrent_requests": 1},
        {"name": "tokens300", "tokens_per_month": 300, "max_concurrent_requests": 64},
        {"name": "tokens20k", "tokens_per_month": 20000, "max_concurrent_requests": 64},
    ],
}


class PlansTest(harness.ServerTest):
    plans = CATALOGUE

    def setUp(self):
        super().setUp()
        self.backend = FakeBackend().start()
        self.addCleanup(self.backend.stop)
        self.write_plans(self.plans)
        self.live = self.key(mode="live", name="prod")
        self.test = self.key(mode="test", name="dev")

    def write_plans(self, plans):
        with open(os.path.join(self.data.path, "plans.json"), "w") as f:
            f.write(plans if isinstance(plans, str) else json.dumps(plans))

    def serve(self, **env):
        env.setdefault("KONNECT_MODEL_URL", self.backend.url)
        return self.start(**env)

    def set_plan(self, plan):
        self.data.cli("account", "set-plan", "--account", "dev@example.com", "--plan", plan)

    def ledger(self):
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            return db.execute("SELECT request_id, model, plan, input_tokens, output_tokens, "
                              "price_micros FROM usage_ledger ORDER BY at_ms").fetchall()
        finally:
            db.close()

    def at_once(self, srv, n, model="large", **params):
        """n streamed live requests sent together, each read to its end; their status codes."""
        codes = []

        def one():
            r = self.completions(srv, self.live, model, stream=True, **params)
            codes.append(r.status_code)
            r.close()

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return codes

    def completions(self, srv, key, model=None, **extra):
        body = {"messages": [{"role": "user", "content": "Hello plans"}]}
        if model is not None:
            body["model"] = model
        body.update(extra)
        return srv.post(key, body, path="/v1/chat/completions")

    def models(self, srv, key, path="/v1/models"):
        import requests
        return requests.get(srv.url + path, headers={"Authorization": f"Bearer {key}"},
                            timeout=10)


class CatalogueTest(PlansTest):
    def test_only_the_plan_s_models_exist_under_their_public_names(self):
        srv = self.serve()
        for key in (self.live, self.test):
            err = self.assertError(self.completions(srv, key, "gpt-4o"), 404, "model_not_found",
                                   "model")
            self.assertIn("/v1/models", err["message"])
            self.assertError(self.completions(srv, key, "large"), 404, "model_not_found", "model")
            self.assertError(srv.post(key, {"message": "hi", "model": "large"}), 404,
                             "model_not_found", "model")
        r = self.completions(srv, self.live, "small")
        self.assertEqual(r.status_code, 200, r.text)
        # The backend is asked for its own name; the client only ever sees the public one.
        self.assertEqual(self.backend.stats()["bodies"][-1]["model"], "fake-normal")
        self.assertEqual(r.json()["model"], "small")
        r = srv.post(self.live, {"message": "hi"})  # the catalogue's default model
        self.assertEqual(r.json()["model"], "small")
        r = srv.post(self.live, {"message": "hi", "stream": True}, stream=True)
        text = r.text
        self.assertNotIn("fake-normal", text)
        self.assertIn('"model":"small"', text)
        rows = self.ledger()
        self.assertEqual({row[1] for row in rows}, {"small"})

    def test_models_lists_what_the_caller_s_plan_may_use(self):
        srv = self.serve()
        r = self.models(srv, self.live)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["object"], "list")
        self.assertEqual([m["id"] for m in r.json()["data"]], ["small"])
        self.assertEqual(r.json()["data"][0]["object"], "model")
        self.assertEqual(self.models(srv, self.live, "/v1/models/small").json()["id"], "small")
        self.assertError(self.models(srv, self.live, "/v1/models/large"), 404, "model_not_found",
                         "model")
        self.set_plan("pro")
        self.assertEqual([m["id"] for m in self.models(srv, self.test).json()["data"]],
                         ["small", "large"])
        self.assertError(self.models(srv, "sk_test_" + "x" * 38), 401, "invalid_api_key")

    def test_each_model_is_priced_on_its_own(self):
        srv = self.serve()
        self.set_plan("pro")
        self.assertEqual(self.completions(srv, self.live, "small").status_code, 200)
        self.assertEqual(self.completions(srv, self.live, "large").status_code, 200)
        (small, large) = self.ledger()
        self.assertEqual(small[1:3], ("small", "pro"))
        self.assertEqual(small[5], small[4])  # 1 micro-unit per output token
        self.assertEqual(large[5], 1000)  # per request, no token price

    def test_costly_parameters_are_refused_unless_the_plan_allows_them(self):
        srv = self.serve()
        for key in (self.live, self.test):
            self.assertError(self.completions(srv, key, "small", n=3), 400,
                             "unsupported_parameter", "n")
            self.assertError(self.completions(srv, key, "small", store=True), 400,
                             "unsupported_parameter", "store")
            self.assertError(self.completions(srv, key, "small", service_tier="priority"), 400,
                             "unsupported_parameter", "service_tier")
            self.assertError(self.completions(srv, key, "small",
                                              modalities=["text", "audio"]), 400,
                             "unsupported_parameter", "modalities")
        self.assertEqual(self.completions(srv, self.live, "small", n=1).status_code, 200)
        self.set_plan("pro")
        self.assertEqual(self.completions(srv, self.live, "small", n=3).status_code, 200)
        self.assertError(self.completions(srv, self.live, "small", store=True), 400,
                         "unsupported_parameter", "store")


class ExamplesTest(harness.ServerTest):
    def test_example_plans_files_are_valid(self):
        root = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
        for name in ("plans.json", "plans-catalogue.json"):
            p = self.data.cli("plans", "--json", KONNECT_PLANS=os.path.join(root, name))
            self.assertTrue(json.loads(p.stdout)["plans"], name)


class AccountLimitsTest(PlansTest):
    def test_more_keys_do_not_buy_more_requests_per_minute(self):
        srv = self.serve()
        self.set_plan("rpm3")
        second = self.key(mode="live", name="second")
        for _ in range(3):
            self.assertEqual(self.completions(srv, self.live, "small").status_code, 200)
        err = self.assertError(self.completions(srv, second, "small"), 429, "rate_limited")
        self.assertIn("all of them together", err["message"])

    def test_more_keys_do_not_buy_more_requests_in_flight(self):
        srv = self.serve()
        self.set_plan("solo")
        second = self.key(mode="live", name="second")
        self.backend.set_mode("normal", delay_ms=800)
        slow = threading.Thread(target=lambda: self.completions(srv, self.live, "large",
                                                                stream=True))
        slow.start()
        deadline = time.time() + 5
        while self.backend.stats()["active"] == 0 and time.time() < deadline:
            time.sleep(0.02)
        self.assertError(self.completions(srv, second, "small"), 429,
                         "too_many_concurrent_requests")
        slow.join()
        self.assertEqual(self.completions(srv, second, "small").status_code, 200)

    def test_a_client_one_request_at_a_time_is_never_refused_for_in_flight(self):
        # The slot comes back before the answer's last bytes leave: a client that sends its next
        # request the moment it has an answer (streamed or not) is within one in flight.
        srv = self.serve()
        self.set_plan("solo")
        for i in range(20):
            r = self.completions(srv, self.live, "small", stream=i % 2 == 0)
            self.assertEqual(r.status_code, 200, r.text)

    def test_long_requests_at_once_cannot_run_past_the_token_quota(self):
        """Each request reserves its input estimate and max_tokens at admission: 20 requests at
        once against a quota of 300 tokens, each allowed 100, admit only as many as fit."""
        srv = self.serve()
        self.set_plan("tokens300")
        self.backend.set_mode("normal", delay_ms=300)
        codes = self.at_once(srv, 20, max_tokens=100)
        admitted = codes.count(200)
        self.assertGreaterEqual(admitted, 2)
        self.assertLessEqual(admitted, 3, codes)
        self.assertEqual(codes.count(429), 20 - admitted)

    def test_input_that_packs_many_tokens_into_few_bytes_cannot_run_past_the_token_quota(self):
        """A hostile prompt of one-letter words is some two bytes a token, where a rule of
        thumb of four bytes a token would reserve half of it: the input is reserved at one
        token a byte (no tokenizer makes a token of less than a byte), so a prompt of 200
        tokens (400 bytes) takes the whole quota of 300 and only one request gets in."""
        srv = self.serve()
        self.set_plan("tokens300")
        self.backend.set_mode("normal", delay_ms=300)
        codes = self.at_once(srv, 8, max_tokens=1,
                             messages=[{"role": "user", "content": "a " * 200}])
        self.assertEqual(codes.count(200), 1, codes)
        self.assertEqual(codes.count(429), 7, codes)
        # Text that looks like a data URL is text all the same (another account, a fresh quota).
        self.data.account("other@example.com")
        self.data.cli("account", "set-plan", "--account", "other@example.com", "--plan",
                      "tokens300")
        self.live = self.key("other@example.com", "live", "other")
        codes = self.at_once(srv, 8, max_tokens=1,
                             messages=[{"role": "user", "content": "data:" + "a " * 200}])
        self.assertEqual(codes.count(200), 1, codes)
        self.assertEqual(codes.count(429), 7, codes)

    def test_an_images_bytes_do_not_hold_the_token_quota_as_text(self):
        """An image sent as a data URL is not text: it reserves a token for four of its bytes
        (at least 1,024), not one a byte, so three requests with a 12,000-byte image each fit a
        quota of 20,000 at once (at one a byte, the third would be refused)."""
        srv = self.serve()
        self.set_plan("tokens20k")
        self.backend.set_mode("normal", delay_ms=300)
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 12000}}
        codes = self.at_once(srv, 3, max_tokens=10, messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}, image]}])
        self.assertEqual(codes, [200, 200, 200])

    def test_a_limit_the_backend_may_ignore_does_not_shrink_the_reservation(self):
        """max_completion_tokens alone is ignored by some backends (Ollama's OpenAI API; the
        fake backend too): a tiny one must not let many long answers in at once."""
        srv = self.serve()
        self.set_plan("tokens300")
        self.backend.set_mode("normal", delay_ms=300)
        codes = self.at_once(srv, 20, max_completion_tokens=1)
        self.assertEqual(codes.count(200), 1, codes)
        # The backends' own names for the limit would override max_tokens: refused.
        for name in ("n_predict", "num_predict", "max_new_tokens"):
            self.assertError(self.completions(srv, self.live, "small", max_tokens=5,
                                              **{name: 100000}),
                             400, "unsupported_parameter", name)
        self.assertError(self.completions(srv, self.live, "small", max_tokens="5"), 400,
                         "invalid_parameter", "max_tokens")


class MonthTurnTest(PlansTest):
    """A server whose wall clock is moved to 10 s before the end of the month (a preloaded library,
    tests/support/clockshift.c): requests still running when the month ends are billed in the
    new month (their rows are dated when they end), so they count in its quota there."""

    plans = {"currency": "usd", "plans": [
        {"name": "three", "requests_per_month": 3, "max_concurrent_requests": 8,
         "price_per_request_micros": 1000}]}

    def serve_at_month_end(self):
        now = time.time()
        t = time.gmtime(now)
        nxt = (t.tm_year + (t.tm_mon == 12), t.tm_mon % 12 + 1, 1, 0, 0, 0, 0, 0, 0)
        shift = calendar.timegm(nxt) - 10 - int(now)  # a slow start (TSan) still begins before
        asan = os.environ.get("ASAN_OPTIONS", "")
        return self.serve(LD_PRELOAD=os.environ["KONNECT_TEST_CLOCKSHIFT"],
                          KONNECT_TEST_CLOCK_SHIFT=shift,
                          ASAN_OPTIONS=(asan + ":" if asan else "") + "verify_asan_link_order=0")

    def test_requests_running_at_the_end_of_a_month_count_in_the_new_ones_quota(self):
        self.set_plan("three")
        srv = self.serve_at_month_end()
        self.backend.set_mode("normal", delay_ms=1200)  # 11 pieces: some 13 s, past the turn
        codes = self.at_once(srv, 3, model="fake-slow_stream", messages=[
            {"role": "user", "content": "one two three four five six seven eight nine ten"}])
        self.assertEqual(codes, [200, 200, 200])
        # The month has turned: the three were billed in it, which its quota of 3 counts.
        for _ in range(3):
            self.assertError(self.completions(srv, self.live, "fake-normal"), 429,
                             "insufficient_quota")
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            months = db.execute("SELECT month, count(*) FROM usage_ledger GROUP BY month").fetchall()
        finally:
            db.close()
        self.assertEqual(len(months), 1, months)
        self.assertEqual(months[0][1], 3, months)


class ReloadTest(PlansTest):
    plans = {"currency": "usd", "plans": [
        {"name": "basic", "price_per_request_micros": 10, "max_concurrent_requests": 8}]}

    def test_plans_reach_the_running_server(self):
        srv = self.serve()
        self.assertEqual(self.completions(srv, self.live).status_code, 200)
        # A plan added to the file after start: the server must know it before accounts use it.
        self.write_plans({"currency": "usd", "plans": [
            {"name": "basic", "price_per_request_micros": 10, "max_concurrent_requests": 8},
            {"name": "gold", "price_per_request_micros": 777, "max_concurrent_requests": 8}]})
        p = self.data.cli("account", "set-plan", "--account", "dev@example.com", "--plan",
                          "gold", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("does not know plan gold", p.stderr)
        p = self.data.cli("plans", "reload")
        self.assertIn("2 plans in force", p.stderr)
        self.set_plan("gold")
        self.assertEqual(self.completions(srv, self.live).status_code, 200)
        self.assertEqual((self.ledger()[-1][2], self.ledger()[-1][5]), ("gold", 777))
        # An invalid file is refused; the plans in force stay.
        self.write_plans('{"plans": [{"name": "gold", "typo": 1}]}')
        p = self.data.cli("plans", "reload", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("typo", p.stderr)
        self.assertEqual(self.completions(srv, self.live).status_code, 200)
        self.assertEqual(self.ledger()[-1][5], 777)
        # SIGHUP reads it again, as `plans reload` does.
        self.write_plans({"currency": "usd", "plans": [
            {"name": "basic"}, {"name": "gold", "price_per_request_micros": 888}]})
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while "SIGHUP: 2 plans in force" not in srv.output() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("SIGHUP: 2 plans in force", srv.output())
        self.assertEqual(self.completions(srv, self.live).status_code, 200)
        self.assertEqual(self.ledger()[-1][5], 888)

    def test_plans_applied_to_the_store_win_over_the_file(self):
        srv = self.serve()
        path = os.path.join(self.data.path, "published.json")
        with open(path, "w") as f:
            json.dump({"currency": "usd", "plans": [
                {"name": "basic", "max_concurrent_requests": 8},
                {"name": "gold", "price_per_request_micros": 4242,
                 "max_concurrent_requests": 8}]}, f)
        p = self.data.cli("plans", "apply", path)
        self.assertIn("published plans version 1: 2 plans", p.stdout)
        self.assertIn("applied by every running server (1)", p.stderr)
        self.assertIn("plans version 1 from the store in force", srv.output())
        # The store's plans are the ones the commands check against and the server bills with.
        self.set_plan("gold")
        self.assertEqual(self.completions(srv, self.live).status_code, 200)
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            row = db.execute("SELECT plan, price_micros, plan_version FROM usage_ledger "
                             "ORDER BY at_ms DESC LIMIT 1").fetchone()
        finally:
            db.close()
        self.assertEqual(row, ("gold", 4242, 1))
        # The server's own file no longer counts.
        p = self.data.cli("plans", "reload", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("the plans come from the store (version 1)", p.stderr)
        audit = self.data.cli("audit", "--json").stdout
        self.assertIn("plans.apply", audit)

    def test_an_account_on_an_unknown_plan_is_refused_never_served_free(self):
        srv = self.serve()
        self.write_plans({"currency": "usd", "plans": [
            {"name": "basic", "price_per_request_micros": 10},
            {"name": "gold", "price_per_request_micros": 777}]})
        self.data.cli("plans", "reload")
        self.set_plan("gold")
        # The operator takes gold out of the file and reloads: gold accounts stop, visibly.
        self.write_plans({"currency": "usd", "plans": [{"name": "basic"}]})
        self.data.cli("plans", "reload")
        err = self.assertError(self.completions(srv, self.live), 503, "plan_unavailable")
        self.assertIn('"gold"', err["message"])
        self.assertEqual(self.completions(srv, self.test).status_code, 200)  # test keys work
        self.assertEqual(len(self.ledger()), 0)
        self.assertIn('is on plan "gold", which the plans file does not define', srv.output())


class ReloadRaceTest(PlansTest):
    """Reloads while requests are in flight: a request reads its account's plan once, so a plan
    that disappears between two reads of it can neither crash the server nor serve the request
    on no plan."""
    plans = {"plans": [{"name": "free"}, {"name": "gold", "requests_per_minute": 0}]}

    def test_reloads_under_load_neither_crash_nor_serve_without_a_plan(self):
        self.set_plan("gold")
        srv = self.serve(KONNECT_THREADS=4)
        req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               f"{self.live}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
               ).encode()
        stop = threading.Event()
        answers = []

        def load():
            import socket
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                        for _ in range(20):
                            s.sendall(req * 50)
                            got = b""
                            while got.count(b"HTTP/1.1 ") < 50 or not got.endswith(b"}"):
                                chunk = s.recv(1 << 20)
                                if not chunk:
                                    raise OSError("closed")
                                got += chunk
                            answers.append(got)
                except OSError:
                    if srv.proc.poll() is not None:
                        return
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        with_gold, without = json.dumps(self.plans), json.dumps({"plans": [{"name": "free"}]})
        deadline, n = time.time() + 4, 0
        while time.time() < deadline and srv.proc.poll() is None:
            self.write_plans(without if n % 2 == 0 else with_gold)
            srv.proc.send_signal(signal.SIGHUP)
            n += 1
            time.sleep(0.002)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertIsNone(srv.proc.poll(), srv.output()[-2000:])
        self.assertGreater(n, 100)
        statuses = set()
        for got in answers:
            for head in got.split(b"HTTP/1.1 ")[1:]:
                statuses.add(int(head[:3]))
        # Taken on gold and refused for its body (400: it holds no messages), or refused
        # because gold was gone at that moment; nothing else.
        self.assertLessEqual(statuses, {400, 503}, statuses)
        self.assertIn(503, statuses)


if __name__ == "__main__":
    harness.main()
