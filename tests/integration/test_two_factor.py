"""Two-factor sign-in as its user and as someone who has their password would try it: setting up
needs the password, turning on needs a computed code, sign-in without or with a wrong, replayed
or old code is refused (and counted), each recovery code works once, a set-password link or an
invitation is no way around the code, the seed in the store is sealed, an owner can require it of
every member, and the operator can turn it off for a locked-out user."""

import base64
import hashlib
import hmac
import os
import re
import sqlite3
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest  # noqa: E402
from test_dashboard import PASSWORD, Browser  # noqa: E402


def totp(secret, at=None, step_offset=0):
    """RFC 6238's code for a base32 secret, as an authenticator app computes it."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30) + step_offset
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1000000)


def fresh_code(secret, used):
    """A code later than every one used (the server takes each step once, and none older than
    the last): the current step's, else the next one's (the server allows a step of clock drift
    ahead), else it waits for the clock."""
    while True:
        cur = int(time.time() // 30)
        step = max(cur, max(used) + 1) if used else cur
        if step <= cur + 1:
            used.add(step)
            return totp(secret, step_offset=step - cur)
        time.sleep(0.5)


class TwoFactorTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.srv = self.start()
        self.a = Browser(self.srv)
        self.a.signup("alice@example.com")
        self.used = set()

    def enable(self, b, password=PASSWORD):
        r = b.call("POST", "two-factor/setup", {"password": password})
        self.assertEqual(r.status_code, 200, r.text)
        doc = r.json()
        self.assertRegex(doc["secret"], r"^[A-Z2-7]{32}$")
        self.assertTrue(doc["otpauth_url"].startswith("otpauth://totp/Konnect:"), doc)
        self.assertIn("secret=" + doc["secret"], doc["otpauth_url"])
        r = b.call("POST", "two-factor/enable", {"code": fresh_code(doc["secret"], self.used)})
        self.assertEqual(r.status_code, 200, r.text)
        codes = r.json()["recovery_codes"]
        self.assertEqual(len(codes), 10)
        self.assertEqual(len(set(codes)), 10)
        for c in codes:
            self.assertRegex(c, r"^[2-9a-z]{5}-[2-9a-z]{5}$")
        return doc["secret"], codes

    def signin(self, email="alice@example.com", password=PASSWORD, code=None):
        b = Browser(self.srv)
        body = {"email": email, "password": password}
        if code is not None:
            body["code"] = code
        return b, b.call("POST", "signin", body)

    def test_setup_needs_the_password_and_a_right_first_code(self):
        self.assertError(self.a.call("POST", "two-factor/setup", {"password": "wrong password!"}),
                         401, "invalid_credentials", "password")
        self.assertError(self.a.call("POST", "two-factor/enable", {"code": "123456"}), 409,
                         "two_factor_conflict")
        r = self.a.call("POST", "two-factor/setup", {"password": PASSWORD})
        secret = r.json()["secret"]
        # Wrong, and two steps away: refused; still off.
        for bad in ("000000", totp(secret, step_offset=3), "12345", "abcdef"):
            self.assertError(self.a.call("POST", "two-factor/enable", {"code": bad}), 401,
                             "invalid_two_factor_code", "code")
        self.assertFalse(self.a.call("GET", "session").json()["two_factor"]["enabled"])
        self.assertTrue(self.a.call("GET", "session").json()["two_factor"]["pending"])
        # Not on yet: signing in still needs only the password.
        self.assertEqual(self.signin()[1].status_code, 200)
        other, _ = self.signin()
        r = self.a.call("POST", "two-factor/enable", {"code": fresh_code(secret, self.used)})
        self.assertEqual(r.status_code, 200, r.text)
        state = self.a.call("GET", "session").json()["two_factor"]
        self.assertEqual((state["enabled"], state["recovery_codes_left"]), (True, 10))
        # Turning it on ended every other session.
        self.assertError(other.call("GET", "keys"), 401, "not_signed_in")
        self.assertError(self.a.call("POST", "two-factor/setup", {"password": PASSWORD}), 409,
                         "two_factor_conflict")

    def test_signin_needs_a_fresh_right_code(self):
        secret, _ = self.enable(self.a)
        b, r = self.signin()
        self.assertError(r, 401, "two_factor_code_required", "code")
        self.assertNotIn("Set-Cookie", r.headers)
        self.assertError(self.signin(password="wrong password!", code=totp(secret))[1], 401,
                         "invalid_credentials")
        self.assertError(self.signin(code="000000")[1], 401, "invalid_two_factor_code", "code")
        self.assertError(self.signin(code=totp(secret, step_offset=-3))[1], 401,
                         "invalid_two_factor_code", "code")
        code = fresh_code(secret, self.used)
        b, r = self.signin(code=code)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(b.call("GET", "keys").status_code, 200)
        # The same code again (someone who watched it typed): refused.
        self.assertError(self.signin(code=code)[1], 401, "invalid_two_factor_code", "code")
        audit = self.a.call("GET", "audit").json()["data"]
        self.assertTrue(any(e["action"] == "user.signin" and e["result"] == "failed" and
                            "wrong two-factor code" in (e["detail"] or "") for e in audit))
        self.assertTrue(any(e["action"] == "user.signin" and e["result"] == "ok" and
                            "authenticator code" in (e["detail"] or "") for e in audit))

    def test_wrong_codes_are_throttled_like_wrong_passwords(self):
        self.enable(self.a)
        statuses = [self.signin(code="%06d" % i)[1].status_code for i in range(7)]
        self.assertEqual(statuses[:5], [401] * 5)
        self.assertIn(429, statuses[5:])

    def test_code_guesses_spread_over_addresses_are_counted_per_user(self):
        # Behind a proxy every guess may come from another address: the user's own count holds.
        self.srv.stop()
        self.srv = self.start(KONNECT_TRUSTED_PROXIES="127.0.0.1")
        self.a = Browser(self.srv)
        self.assertEqual(self.a.call("POST", "signin", {"email": "alice@example.com",
                                                       "password": PASSWORD}).status_code, 200)
        secret, _ = self.enable(self.a)
        statuses = []
        for i in range(12):
            b = Browser(self.srv)
            r = b.call("POST", "signin", {"email": "alice@example.com", "password": PASSWORD,
                                          "code": "%06d" % i},
                       headers={"X-Forwarded-For": f"198.51.100.{i + 1}"})
            statuses.append((r.status_code, r.json()["error"]["code"]))
        self.assertEqual(statuses[:10], [(401, "invalid_two_factor_code")] * 10)
        self.assertEqual(statuses[10:], [(429, "too_many_attempts")] * 2)
        # Even the right code waits now (whoever guesses has the password).
        b = Browser(self.srv)
        r = b.call("POST", "signin", {"email": "alice@example.com", "password": PASSWORD,
                                      "code": fresh_code(secret, self.used)},
                   headers={"X-Forwarded-For": "203.0.113.9"})
        self.assertError(r, 429, "too_many_attempts", "code")
        self.assertTrue(r.headers.get("Retry-After"))

    def test_each_recovery_code_works_once(self):
        secret, codes = self.enable(self.a)
        b, r = self.signin(code=codes[0].upper())
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(b.call("GET", "session").json()["two_factor"]["recovery_codes_left"], 9)
        self.assertError(self.signin(code=codes[0])[1], 401, "invalid_two_factor_code", "code")
        b, r = self.signin(code=codes[1].replace("-", ""))
        self.assertEqual(r.status_code, 200, r.text)
        # New codes (password and a code): the old ones stop working.
        r = self.a.call("POST", "two-factor/recovery-codes",
                        {"password": PASSWORD, "code": fresh_code(secret, self.used)})
        self.assertEqual(r.status_code, 200, r.text)
        fresh = r.json()["recovery_codes"]
        self.assertError(self.signin(code=codes[2])[1], 401, "invalid_two_factor_code", "code")
        self.assertEqual(self.signin(code=fresh[0])[1].status_code, 200)

    def test_the_store_holds_the_seed_sealed(self):
        secret, codes = self.enable(self.a)
        db = sqlite3.connect(os.path.join(self.data.path, "konnect.db"))
        try:
            seed, recovery = db.execute("SELECT totp_seed, recovery_codes FROM users "
                                        "WHERE email = 'alice@example.com'").fetchone()
        finally:
            db.close()
        raw = base64.b32decode(secret)
        self.assertNotIn(secret, seed)
        self.assertNotIn(raw.hex(), seed)
        self.assertNotIn(codes[0], recovery)
        self.assertNotIn(codes[0].replace("-", ""), recovery)
        self.assertNotIn(secret, self.srv.output())
        for c in codes:
            self.assertNotIn(c, self.srv.output())

    def test_no_way_around_the_code(self):
        self.enable(self.a)
        # A set-password link sets the password but opens no session.
        p = self.data.cli("user", "password-link", "--email", "alice@example.com")
        token = re.search(r"#token=([0-9A-Za-z]+)", p.stderr + p.stdout).group(1)
        b = Browser(self.srv)
        r = b.call("POST", "password/set", {"token": token, "password": "another password 1"})
        self.assertEqual(r.status_code, 204, r.text)
        self.assertNotIn("Set-Cookie", r.headers)
        self.assertError(b.call("GET", "keys"), 401, "not_signed_in")
        self.assertError(self.signin(password="another password 1")[1], 401,
                         "two_factor_code_required", "code")
        # An invitation for the user, accepted with the password alone, is refused too.
        owner = Browser(self.srv)
        owner.signup("bob@example.com")
        url = owner.call("POST", "members/invite", {"email": "alice@example.com"}).json()[
            "invite_url"]
        r = Browser(self.srv).call("POST", "invites/accept",
                                   {"token": url.split("=", 1)[1],
                                    "password": "another password 1"})
        self.assertError(r, 401, "two_factor_code_required", "code")

    def test_an_owner_can_require_it_of_every_member(self):
        # An owner without it may not require it (they would lock themselves out).
        self.assertError(self.a.call("POST", "account/two-factor", {"required": True}), 409,
                         "two_factor_conflict")
        url = self.a.call("POST", "members/invite", {"email": "carol@example.com"}).json()[
            "invite_url"]
        carol = Browser(self.srv)
        r = carol.call("POST", "invites/accept", {"token": url.split("=", 1)[1],
                                                  "password": PASSWORD})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertError(carol.call("POST", "account/two-factor", {"required": True}), 403,
                         "owner_required")
        self.enable(self.a)
        self.assertError(self.a.call("POST", "account/two-factor", {"required": "yes"}), 400,
                         "invalid_parameter", "required")
        r = self.a.call("POST", "account/two-factor", {"required": True})
        self.assertEqual(r.json(), {"required": True})
        # Carol, without it: only the session, signing out, and turning it on.
        self.assertTrue(carol.call("GET", "session").json()["two_factor"]["required"])
        for method, path in (("GET", "keys"), ("GET", "usage"), ("GET", "audit"),
                             ("POST", "keys")):
            self.assertError(carol.call(method, path, {"name": "x", "mode": "test"}
                                        if method == "POST" else None), 403,
                             "two_factor_required")
        secret, _ = self.enable(carol)
        self.assertEqual(carol.call("GET", "keys").status_code, 200)
        self.assertError(carol.call("POST", "two-factor/disable",
                                    {"password": PASSWORD, "code": fresh_code(secret, self.used)}),
                         403, "two_factor_required")
        audit = self.a.call("GET", "audit").json()["data"]
        self.assertTrue(any(e["action"] == "account.two_factor_required" for e in audit))
        # Lifting it needs the owner's password and a code, not only a session.
        self.assertError(self.a.call("POST", "account/two-factor", {"required": False}), 400,
                         "missing_parameter", "password")
        self.assertError(self.a.call("POST", "account/two-factor",
                                     {"required": False, "password": PASSWORD}), 401,
                         "two_factor_code_required", "code")
        self.assertTrue(carol.call("GET", "session").json()["two_factor"]["required"])

    def test_turning_it_off_needs_the_password_and_a_code(self):
        secret, _ = self.enable(self.a)
        self.assertError(self.a.call("POST", "two-factor/disable", {"password": PASSWORD}), 401,
                         "two_factor_code_required", "code")
        self.assertError(self.a.call("POST", "two-factor/disable",
                                     {"password": "wrong password!", "code": totp(secret)}),
                         401, "invalid_credentials", "password")
        r = self.a.call("POST", "two-factor/disable",
                        {"password": PASSWORD, "code": fresh_code(secret, self.used)})
        self.assertEqual(r.status_code, 204, r.text)
        self.assertEqual(self.signin()[1].status_code, 200)

    def test_the_operator_turns_it_off_for_a_locked_out_user(self):
        self.enable(self.a)
        p = self.data.cli("user", "two-factor-off", "--email", "alice@example.com")
        self.assertIn("turned off", p.stdout)
        self.assertError(self.a.call("GET", "keys"), 401, "not_signed_in")
        b, r = self.signin()
        self.assertEqual(r.status_code, 200, r.text)
        self.assertFalse(b.call("GET", "session").json()["two_factor"]["enabled"])
        audit = b.call("GET", "audit").json()["data"]
        self.assertTrue(any(e["action"] == "user.two_factor_off" for e in audit))


if __name__ == "__main__":
    harness.main()
