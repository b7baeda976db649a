"""Who may get into an account, tried as a hostile customer would: invitations that would hand a
stranger someone else's user, emails claimed before the operator creates their account, passwords
guessed through invitations, and the operator's one-time link that lets an operator-made account
in. Every test here was a hole once."""

import json
import os
import re
import subprocess
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest  # noqa: E402

API = "/dashboard/api/"
PASSWORD = "correct horse battery staple"
OTHER = "a different long password"
LINK_RE = re.compile(r"(http://\S+)/set-password#token=([0-9A-Za-z]+)")


class SourceAdapter(requests.adapters.HTTPAdapter):
    """Connects from a chosen loopback address (127.0.0.2, ...), as a second client machine."""

    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class Browser:
    """A cookie jar, the CSRF token and a source address, like the dashboard's pages."""

    def __init__(self, srv, address="127.0.0.1"):
        self.srv = srv
        self.s = requests.Session()
        self.s.mount("http://", SourceAdapter(address))
        self.csrf = None

    def call(self, method, path, body=None, csrf=True):
        h = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        r = self.s.request(method, self.srv.url + API + path, headers=h,
                           data=json.dumps(body) if body is not None else None, timeout=30)
        if r.ok and r.content and "csrf_token" in r.json():
            self.csrf = r.json()["csrf_token"]
        return r

    def signup(self, email, password=PASSWORD):
        r = self.call("POST", "signup", {"email": email, "password": password})
        assert r.status_code == 201, r.text
        return r.json()

    def signin(self, email, password=PASSWORD):
        return self.call("POST", "signin", {"email": email, "password": password})

    def invite(self, email):
        r = self.call("POST", "members/invite", {"email": email})
        assert r.status_code == 201, r.text
        return r.json()["invite_url"].split("#token=")[1]


def set_password_link(stderr):
    m = LINK_RE.search(stderr)
    assert m, f"no set-password link in: {stderr}"
    return m.group(1), m.group(2)


class AccountTakeoverTest(ServerTest):
    """The owner made by `konnect account create` (dev@example.com, in ServerTest.setUp) has no
    password until they use the operator's link."""

    def setUp(self):
        super().setUp()
        self.srv = self.start()
        self.stranger = Browser(self.srv)
        self.stranger.signup("stranger@example.net")

    def test_invitation_cannot_give_an_operator_made_owner_a_password(self):
        token = self.stranger.invite("dev@example.com")
        anon = Browser(self.srv)
        r = anon.call("POST", "invites/accept", {"token": token, "password": OTHER})
        self.assertError(r, 403, "password_not_set")
        self.assertNotIn("konnect_session", anon.s.cookies)
        # The stranger's password does not open the owner's user, and the owner is still not a
        # member of the stranger's account.
        self.assertError(Browser(self.srv).signin("dev@example.com", OTHER), 401,
                         "invalid_credentials")
        members = self.stranger.call("GET", "members").json()["data"]
        self.assertEqual([m["email"] for m in members], ["stranger@example.net"])

    def test_invitation_never_replaces_an_existing_password(self):
        victim = Browser(self.srv)
        victim.signup("victim@example.org")
        token = self.stranger.invite("victim@example.org")
        r = Browser(self.srv).call("POST", "invites/accept", {"token": token, "password": OTHER})
        self.assertError(r, 401, "invalid_credentials", "password")
        self.assertEqual(victim.signin("victim@example.org").status_code, 200)
        self.assertError(Browser(self.srv).signin("victim@example.org", OTHER), 401,
                         "invalid_credentials")

    def test_existing_user_joins_with_their_own_session(self):
        victim = Browser(self.srv)
        victim.signup("victim@example.org")
        token = self.stranger.invite("victim@example.org")
        # Signed in as someone else: refused, the link stays usable.
        r = self.stranger.call("POST", "invites/accept", {"token": token})
        self.assertError(r, 403, "invite_for_another_user")
        # The session alone is not enough without its CSRF token.
        r = victim.call("POST", "invites/accept", {"token": token}, csrf=False)
        self.assertError(r, 403, "csrf_failed")
        r = victim.call("POST", "invites/accept", {"token": token})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["account"]["email"], "stranger@example.net")
        self.assertEqual(r.json()["role"], "member")

    def test_existing_user_joins_with_their_current_password(self):
        Browser(self.srv).signup("victim@example.org")
        token = self.stranger.invite("victim@example.org")
        b = Browser(self.srv)
        r = b.call("POST", "invites/accept", {"token": token, "password": PASSWORD})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["user"]["email"], "victim@example.org")

    def test_guessing_through_an_invitation_is_throttled_audited_and_voids_it(self):
        Browser(self.srv).signup("victim@example.org")
        token = self.stranger.invite("victim@example.org")
        guesser = Browser(self.srv)
        codes = []
        for i in range(8):
            r = guesser.call("POST", "invites/accept", {"token": token, "password": f"guess {i:04}xx"})
            codes.append(r.json()["error"]["code"])
        # Five wrong passwords void the invitation; after that it is gone for everyone, the
        # right password included.
        self.assertEqual(codes[:5], ["invalid_credentials"] * 5, codes)
        self.assertTrue(all(c in ("invite_invalid", "too_many_attempts") for c in codes[5:]),
                        codes)
        r = Browser(self.srv, "127.0.0.2").call("POST", "invites/accept",
                                               {"token": token, "password": PASSWORD})
        self.assertError(r, 400, "invite_invalid", "token")
        audit = json.loads(self.data.cli("audit", "--json").stdout)
        accepts = [e for e in audit if e["action"] == "member.join" and e["result"] == "failed"]
        self.assertGreaterEqual(len(accepts), 5)
        self.assertTrue(any(e["action"] == "member.invite_voided" for e in audit), audit[:5])
        # The victim's own sign-in from another address is not locked out by any of it.
        self.assertEqual(Browser(self.srv, "127.0.0.3").signin("victim@example.org").status_code,
                         200)

    def test_claimed_email_is_not_handed_an_account_by_the_operator(self):
        token = self.stranger.invite("boss@example.com")
        r = Browser(self.srv).call("POST", "invites/accept", {"token": token, "password": OTHER})
        self.assertEqual(r.status_code, 200, r.text)  # a new user, chosen by the stranger
        p = self.data.cli("account", "create", "--email", "boss@example.com", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("already a dashboard user", p.stderr)
        self.assertIn("--existing-user", p.stderr)
        self.assertEqual(p.stdout, "")
        p2 = self.data.cli("account", "show", "--account", "boss@example.com", check=False)
        self.assertNotEqual(p2.returncode, 0)
        # Naming the user explicitly is the operator's informed choice.
        user_id = re.search(r"--existing-user (user_[0-9A-Za-z]+)", p.stderr)
        self.assertTrue(user_id, p.stderr)
        p = self.data.cli("account", "create", "--email", "boss@example.com",
                          "--existing-user", "user_doesnotexist", check=False)
        self.assertNotEqual(p.returncode, 0)
        p = self.data.cli("account", "create", "--email", "boss@example.com",
                          "--existing-user", user_id.group(1))
        self.assertRegex(p.stdout.strip(), r"^acct_[0-9A-Za-z]+$")

    def test_signup_closed_does_not_open_a_way_in(self):
        self.srv.stop()
        self.servers.remove(self.srv)
        srv = self.start(KONNECT_SIGNUP="closed")
        stranger = Browser(srv)
        self.assertEqual(stranger.signin("stranger@example.net").status_code, 200)
        token = stranger.invite("dev@example.com")
        r = Browser(srv).call("POST", "invites/accept", {"token": token, "password": OTHER})
        self.assertError(r, 403, "password_not_set")


class ThrottleTest(ServerTest):
    """Throttles per email and address and per address, with growing delays, never per email
    alone; refused attempts are counted, not logged one row each; sign-ups are throttled."""

    def setUp(self):
        super().setUp()
        self.srv = self.start(KONNECT_SIGNUPS_PER_HOUR_PER_IP=2)
        self.alice = Browser(self.srv)
        self.alice.signup("alice@example.com")

    def test_guesses_from_one_address_do_not_lock_out_another(self):
        attacker = Browser(self.srv, "127.0.0.2")
        for i in range(5):
            self.assertError(attacker.signin("alice@example.com", f"guess {i} xxxxx"), 401,
                             "invalid_credentials")
        r = attacker.signin("alice@example.com")  # even the right password waits now
        self.assertError(r, 429, "too_many_attempts")
        self.assertGreaterEqual(int(r.headers["Retry-After"]), 10)
        # The real user, from their own address, is not locked out.
        self.assertEqual(Browser(self.srv, "127.0.0.1").signin("alice@example.com").status_code,
                         200)

    def test_one_address_guessing_many_emails_is_throttled(self):
        attacker = Browser(self.srv, "127.0.0.4")
        codes = [attacker.signin(f"nobody{i}@example.com", "a wrong password").json()["error"]
                 ["code"] for i in range(21)]
        self.assertEqual(codes[:20], ["invalid_credentials"] * 20)
        self.assertEqual(codes[20], "too_many_attempts")
        # Another address is unaffected.
        self.assertEqual(Browser(self.srv, "127.0.0.5").signin("alice@example.com").status_code,
                         200)

    def test_invitations_cannot_list_who_has_a_user(self):
        # Without a password, accepting an invitation says whether its email has a user (the
        # page must ask for the password or for a new one). The inviter holds the link, so an
        # owner inviting email after email would learn who uses this server: such probes count
        # on the address's sign-in throttle, like the wrong passwords of a sign-in.
        prober, anon = Browser(self.srv, "127.0.0.6"), Browser(self.srv, "127.0.0.6")
        prober.signup("prober@example.net")
        Browser(self.srv).signup("someone3@example.com")
        codes = []
        for i in range(22):
            token = prober.invite(f"someone{i}@example.com")
            r = anon.call("POST", "invites/accept", {"token": token})
            codes.append(r.json()["error"]["code"])
            for inv in prober.call("GET", "members").json()["invites"]:
                prober.call("POST", f"invites/{inv['id']}/cancel")
        self.assertEqual(codes[:20], ["missing_parameter"] * 20, codes)
        self.assertEqual(codes[20:], ["too_many_attempts"] * 2, codes)
        # The invitee of a real invitation, from another address, is not held up.
        token = self.alice.invite("newcomer@example.org")
        r = Browser(self.srv, "127.0.0.7").call("POST", "invites/accept", {"token": token})
        self.assertError(r, 400, "missing_parameter", "password")

    def test_refused_attempts_are_counted_not_logged_one_by_one(self):
        attacker = Browser(self.srv, "127.0.0.6")
        for i in range(5):
            attacker.signin("alice@example.com", f"guess {i} xxxxx")
        for i in range(40):
            self.assertError(attacker.signin("alice@example.com", "still guessing"), 429,
                             "too_many_attempts")
        log = self.alice.call("GET", "audit").json()["data"]
        signins = [e for e in log if e["action"] == "user.signin"]
        self.assertEqual(sum(1 for e in signins if e["result"] == "throttled"), 1, signins)
        self.assertEqual(sum(1 for e in signins if e["result"] == "failed"), 5)
        self.assertLess(len(log), 20)

    def test_invalid_emails_are_refused_before_any_lookup(self):
        for bad in ["no-at-sign", "a@", "@b", "a b@example.com", "x\n@example.com", "a@b@c"]:
            r = Browser(self.srv).signin(bad)
            self.assertError(r, 400, "invalid_parameter", "email")
        log = json.loads(self.data.cli("audit", "--json").stdout)
        self.assertFalse(any(e["action"] == "user.signin" for e in log), log)

    def test_signups_are_throttled_per_address(self):
        b = Browser(self.srv, "127.0.0.7")
        b.signup("one@example.com")
        Browser(self.srv, "127.0.0.7").signup("two@example.com")
        r = Browser(self.srv, "127.0.0.7").call("POST", "signup",
                                              {"email": "three@example.com", "password": PASSWORD})
        self.assertError(r, 429, "too_many_attempts")
        self.assertGreater(int(r.headers["Retry-After"]), 60)
        Browser(self.srv, "127.0.0.8").signup("four@example.com")


class TerminalSafetyTest(ServerTest):
    """A stored string cannot forge lines or drive the operator's terminal through the CLI."""

    def test_cli_text_output_escapes_controls_and_bidi_overrides(self):
        srv = self.start()
        evil_email = "\u202eevil\u2066@example.com"
        b = Browser(srv)
        b.signup(evil_email)
        name = "ok\u202etxt.exe\u009b2J\u2028forged line"
        r = b.call("POST", "keys", {"name": name, "mode": "test"})
        self.assertEqual(r.status_code, 201, r.text)
        self.secrets.append(r.json()["secret"])
        Browser(srv).signin(evil_email, "a wrong password")
        outputs = [
            self.data.cli("key", "list", "--account", evil_email).stdout,
            self.data.cli("audit").stdout,
            self.data.cli("audit", "--json").stdout,
            self.data.cli("account", "show", "--account", evil_email).stdout,
            self.data.cli("usage", "--account", evil_email).stdout,
            self.data.cli("invoice", "--account", evil_email).stdout,
            self.data.cli("key", "list", "--account", evil_email, "--json").stdout,
        ]
        for out in outputs:
            for bad in ("\u202e", "\u2066", "\u009b", "\u2028", "\x1b"):
                self.assertNotIn(bad, out)
        self.assertIn("\\u202e", outputs[0] + outputs[1])
        # Each audit entry is still one line.
        for line in outputs[1].splitlines()[1:]:
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT")


class DashboardLanesTest(ServerTest):
    """Password hashing has a lane of its own with a bounded queue: a flood of sign-ins is refused
    with 503 and Retry-After, never delays a key revocation, and jobs whose client left are
    skipped."""

    def test_signin_flood_neither_delays_revocation_nor_grows_a_queue(self):
        srv = self.start(KONNECT_DASHBOARD_QUEUE=3)
        alice = Browser(srv)
        alice.signup("alice@example.com")
        r = alice.call("POST", "keys", {"name": "k", "mode": "test"})
        self.assertEqual(r.status_code, 201, r.text)
        key, secret = r.json()["key"], r.json()["secret"]
        self.secrets.append(secret)
        import threading
        import time
        results, done_at = [], []

        def signin(i):
            b = Browser(srv, f"127.0.1.{i + 1}")
            r = b.signin(f"user{i}@example.com", "a wrong password")
            results.append((r.status_code, r.json()["error"]["code"], r.headers.get("Retry-After")))
            done_at.append(time.monotonic())

        threads = [threading.Thread(target=signin, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        r = alice.call("POST", f"keys/{key['id']}/revoke")
        revoked_at = time.monotonic()
        self.assertEqual(r.status_code, 200, r.text)
        for t in threads:
            t.join()
        busy = [x for x in results if x[1] == "dashboard_busy"]
        self.assertTrue(busy, results)
        self.assertTrue(all(x[0] == 503 and x[2] == "1" for x in busy), busy)
        self.assertTrue(all(x[1] in ("dashboard_busy", "invalid_credentials") for x in results))
        # The revocation was answered while accepted sign-ins were still being checked.
        self.assertLess(revoked_at, max(done_at))
        self.assertEqual(srv.post(secret).json()["error"]["code"], "api_key_revoked")

    def test_job_of_a_client_that_left_is_skipped(self):
        import socket
        import time
        srv = self.start(KONNECT_DASHBOARD_QUEUE=8)
        body = json.dumps({"email": "gone@example.com", "password": "a wrong password"})
        head = (f"POST {API}signin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
        socks = []
        for _ in range(6):
            c = socket.create_connection(("127.0.0.1", srv.port))
            c.sendall(head)
            socks.append(c)
        for c in socks[1:]:
            c.close()  # gone before its turn
        socks[0].settimeout(30)
        self.assertIn(b"401", socks[0].recv(4096))
        socks[0].close()
        time.sleep(0.5)
        audit = json.loads(self.data.cli("audit", "--json", "--limit", "100").stdout)
        checked = [e for e in audit if e["action"] == "user.signin" and e["target"] == "gone@example.com"]
        self.assertLess(len(checked), 6, "jobs of clients that left were still run")


class RolesTest(ServerTest):
    """A member, invited by the owner, tries what only the owner may do with the live keys."""

    def test_a_member_cannot_take_over_or_widen_live_keys(self):
        srv = self.start()
        owner = Browser(srv)
        owner.signup("owner@example.com")
        r = owner.call("POST", "keys", {"name": "prod", "mode": "live",
                                        "ip_allowlist": ["203.0.113.9"]})
        self.assertEqual(r.status_code, 201, r.text)
        live, secret = r.json()["key"]["id"], r.json()["secret"]
        self.secrets.append(secret)
        test = owner.call("POST", "keys", {"name": "dev", "mode": "test"}).json()["key"]["id"]
        r = owner.call("POST", "keys", {"name": "ops", "mode": "admin"})
        self.assertEqual(r.status_code, 201, r.text)
        admin, admin_secret = r.json()["key"]["id"], r.json()["secret"]
        self.secrets.append(admin_secret)
        self.assertTrue(admin_secret.startswith("sk_admin_"))
        self.assertEqual(r.json()["key"]["environment"], "production")
        member = Browser(srv)
        r = member.call("POST", "invites/accept", {"token": owner.invite("mate@example.com"),
                                                   "password": OTHER})
        self.assertEqual(r.json()["role"], "member")
        for method, path, body in (
                ("POST", "keys", {"name": "mine", "mode": "live"}),
                ("POST", f"keys/{live}/roll", {"grace_seconds": 0}),
                ("PATCH", f"keys/{live}", {"ip_allowlist": []}),
                ("PATCH", f"keys/{live}", {"name": "x", "ip_allowlist": ["0.0.0.0/0"]}),
                ("PATCH", f"keys/{live}", {"expires_at": int(time.time()) + 86400 * 365}),
                ("POST", "keys", {"name": "mine", "mode": "admin"}),
                ("POST", f"keys/{admin}/roll", {"grace_seconds": 3600}),
                ("PATCH", f"keys/{admin}", {"ip_allowlist": ["0.0.0.0/0"]}),
                ("POST", "members/invite", {"email": "friend@example.com"})):
            with self.subTest(path=path, body=body):
                self.assertError(member.call(method, path, body), 403, "owner_required")
        # Nothing changed: the live key still answers only from its address, under its name.
        key = [k for k in owner.call("GET", "keys").json()["data"] if k["id"] == live][0]
        self.assertEqual((key["name"], key["ip_allowlist"]), ("prod", ["203.0.113.9"]))
        self.assertError(srv.post(secret, {"message": "x"}), 401, "ip_not_allowed")
        # What a member may do: rename a live key, change a test key, revoke a leaked live key.
        self.assertEqual(member.call("PATCH", f"keys/{live}", {"name": "prod 2"}).status_code,
                         200)
        self.assertEqual(member.call("PATCH", f"keys/{test}",
                                     {"ip_allowlist": ["127.0.0.1"]}).status_code, 200)
        self.assertEqual(member.call("POST", f"keys/{live}/revoke").status_code, 200)
        self.assertError(srv.post(secret, {"message": "x"}), 401, "api_key_revoked")
        # The owner's admin key works on the management API until a member revokes it too.
        h = {"Authorization": f"Bearer {admin_secret}"}
        self.assertEqual(requests.get(srv.url + "/v1/keys", headers=h, timeout=10).status_code,
                         200)
        self.assertEqual(member.call("POST", f"keys/{admin}/revoke").status_code, 200)
        self.assertError(requests.get(srv.url + "/v1/keys", headers=h, timeout=10), 401,
                         "api_key_revoked")

    def test_a_removed_member_cannot_come_back_with_an_older_invitation(self):
        srv = self.start()
        owner = Browser(srv)
        owner.signup("owner@example.com")
        first, second = owner.invite("bob@example.com"), owner.invite("Bob@Example.com")
        bob = Browser(srv)
        r = bob.call("POST", "invites/accept", {"token": first, "password": OTHER})
        self.assertEqual(r.status_code, 200, r.text)
        # Joining used up every invitation of the account for that email: the second link
        # cannot bring bob back once the owner removes him.
        self.assertEqual(owner.call("GET", "members").json()["invites"], [])
        bob_id = [m["user_id"] for m in owner.call("GET", "members").json()["data"]
                  if m["email"] == "bob@example.com"][0]
        self.assertEqual(owner.call("POST", f"members/{bob_id}/remove").status_code, 204)
        again = Browser(srv)
        self.assertError(again.call("POST", "invites/accept",
                                    {"token": second, "password": OTHER}),
                         400, "invite_invalid", "token")
        members = [m["email"] for m in owner.call("GET", "members").json()["data"]]
        self.assertEqual(members, ["owner@example.com"])

    def test_refused_attempts_cannot_be_hidden_from_the_audit_log(self):
        # Bytes that are not UTF-8 in a path once made the entry impossible to show.
        srv = self.start()
        owner = Browser(srv)
        owner.signup("owner@example.com")
        member = Browser(srv)
        member.call("POST", "invites/accept", {"token": owner.invite("mate@example.com"),
                                               "password": OTHER})
        self.assertError(member.call("POST", "members/%FF%FE/remove"), 403, "owner_required")
        self.assertError(member.call("PATCH", "keys/%C3", {"name": "x"}, csrf=False), 403,
                         "csrf_failed")
        entries = owner.call("GET", "audit").json()["data"]
        refused = {e["action"]: e["target"] for e in entries if e["result"] == "denied"}
        self.assertEqual(refused.get("member.refused"), "members/\ufffd\ufffd/remove")
        self.assertEqual(refused.get("csrf.refused"), "keys/\ufffd")
        log = json.loads(self.data.cli("audit", "--json").stdout)
        self.assertIn("members/\ufffd\ufffd/remove", [e["target"] for e in log])


class PasswordChangeTest(ServerTest):
    """A signed-in user changes their password: the current one is checked (and guesses at it
    throttled like sign-in), the new one must be long enough, and every other session ends."""

    def test_a_password_change_checks_the_current_one_and_ends_every_other_session(self):
        srv = self.start()
        here, there = Browser(srv), Browser(srv)
        here.signup("pat@example.com")
        self.assertEqual(there.signin("pat@example.com").status_code, 200)
        for body, status, code, param in (
                ({"current_password": "not it at all", "new_password": OTHER}, 401,
                 "invalid_credentials", "current_password"),
                ({"current_password": PASSWORD, "new_password": "short"}, 400,
                 "invalid_parameter", "new_password"),
                ({"current_password": PASSWORD}, 400, None, None)):
            with self.subTest(body=body):
                r = here.call("POST", "password", body)
                self.assertEqual(r.status_code, status, r.text)
                if code:
                    self.assertEqual((r.json()["error"]["code"], r.json()["error"]["param"]),
                                     (code, param))
        # Nothing changed yet: both sessions work, the old password signs in.
        self.assertEqual(there.call("GET", "keys").status_code, 200)
        r = here.call("POST", "password", {"current_password": PASSWORD, "new_password": OTHER})
        self.assertEqual(r.status_code, 204, r.text)
        self.assertEqual(here.call("GET", "keys").status_code, 200)  # this session goes on
        self.assertEqual(there.call("GET", "keys").status_code, 401)  # the other one ended
        self.assertEqual(Browser(srv).signin("pat@example.com").status_code, 401)
        self.assertEqual(Browser(srv).signin("pat@example.com", OTHER).status_code, 200)
        # Without the CSRF token, or without a session, it is refused.
        self.assertEqual(here.call("POST", "password", {"current_password": OTHER,
                                                        "new_password": PASSWORD},
                                   csrf=False).status_code, 403)
        self.assertEqual(Browser(srv).call("POST", "password", {
            "current_password": OTHER, "new_password": PASSWORD}).status_code, 401)
        # Guesses at the current password are throttled like sign-in.
        codes = [here.call("POST", "password", {"current_password": f"guess number {i}",
                                                 "new_password": PASSWORD}).status_code
                 for i in range(12)]
        self.assertIn(429, codes)
        audit = [e for e in json.loads(self.data.cli("audit", "--account", "pat@example.com",
                                                      "--json").stdout)
                 if e["action"] == "user.password_change"]
        self.assertTrue(any(e["result"] == "ok" for e in audit), audit)
        self.assertTrue(any(e["result"] == "failed" for e in audit), audit)


class SetPasswordLinkTest(ServerTest):
    """`konnect account create` prints a one-time link; the owner chooses a password with it."""

    def setUp(self):
        self.data = harness.DataDir()
        self.servers = []
        self.secrets = []

    def test_operator_made_owner_signs_in_through_the_link(self):
        srv = self.start()
        p = self.data.cli("account", "create", "--email", "owner@example.com")
        self.assertRegex(p.stdout.strip(), r"^acct_[0-9A-Za-z]+$")
        base, token = set_password_link(p.stderr)
        self.assertEqual(base, srv.url)  # where the running server answers
        b = Browser(srv)
        r = b.call("POST", "password/set", {"token": token, "password": "short"})
        self.assertError(r, 400, "invalid_parameter", "password")
        r = b.call("POST", "password/set", {"token": token, "password": PASSWORD})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["user"]["email"], "owner@example.com")
        self.assertEqual(r.json()["role"], "owner")
        self.assertEqual(b.call("GET", "session").status_code, 200)
        # Single use.
        r = Browser(srv).call("POST", "password/set", {"token": token, "password": OTHER})
        self.assertError(r, 400, "link_invalid", "token")
        self.assertEqual(Browser(srv).signin("owner@example.com").status_code, 200)
        audit = json.loads(self.data.cli("audit", "--json").stdout)
        self.assertTrue(any(e["action"] == "user.password_set" for e in audit))
        self.assertNotIn(token, json.dumps(audit))

    def test_link_points_at_the_running_server_wherever_it_listens(self):
        srv = self.start()
        # The command's own KONNECT_LISTEN names another port: the running server's wins.
        p = self.data.cli("account", "create", "--email", "owner@example.com",
                          KONNECT_LISTEN="127.0.0.1:1")
        base, _ = set_password_link(p.stderr)
        self.assertEqual(base, srv.url)

    def test_link_uses_the_public_url_and_expires(self):
        p = self.data.cli("account", "create", "--email", "owner@example.com",
                          KONNECT_PUBLIC_URL="https://dash.example.com")
        base, token = set_password_link(p.stderr.replace("https://", "http://"))
        self.assertIn("https://dash.example.com/set-password#token=", p.stderr)
        # A fresh link for an existing user replaces the old one.
        p = self.data.cli("user", "password-link", "--email", "owner@example.com")
        _, token2 = set_password_link(p.stderr.replace("https://", "http://") + p.stdout)
        self.assertNotEqual(token, token2)
        srv = self.start()
        for stale in ("x" * 43, token):
            r = Browser(srv).call("POST", "password/set", {"token": stale, "password": PASSWORD})
            self.assertError(r, 400, "link_invalid", "token")
        r = Browser(srv).call("POST", "password/set", {"token": token2, "password": PASSWORD})
        self.assertEqual(r.status_code, 200, r.text)

    def test_a_password_set_any_way_voids_every_older_link(self):
        # Links sit in shell histories and chats for days: once the owner has a password, none
        # of them may set another.
        srv = self.start()
        p = self.data.cli("account", "create", "--email", "owner@example.com")
        _, first = set_password_link(p.stderr)
        owner = Browser(srv)
        r = owner.call("POST", "password/set", {"token": first, "password": PASSWORD})
        self.assertEqual(r.status_code, 200, r.text)
        for how in ("dashboard", "cli"):
            with self.subTest(how=how):
                p = self.data.cli("user", "password-link", "--email", "owner@example.com")
                _, old = set_password_link(p.stderr + p.stdout)
                if how == "dashboard":
                    r = owner.call("POST", "password", {"current_password": PASSWORD,
                                                        "new_password": OTHER})
                    self.assertEqual(r.status_code, 204, r.text)
                    owner.call("POST", "password", {"current_password": OTHER,
                                                    "new_password": PASSWORD})
                else:
                    p = subprocess.run([harness.BINARY, "user", "set-password", "--email",
                                        "owner@example.com"], input=PASSWORD + "\n",
                                       env=self.data.env(), capture_output=True, text=True)
                    self.assertEqual(p.returncode, 0, p.stderr)
                r = Browser(srv).call("POST", "password/set",
                                      {"token": old, "password": "an attacker's password"})
                self.assertError(r, 400, "link_invalid", "token")
        self.assertEqual(Browser(srv).signin("owner@example.com").status_code, 200)

    def test_link_token_never_reaches_the_server_output(self):
        srv = self.start()
        p = self.data.cli("account", "create", "--email", "owner@example.com")
        _, token = set_password_link(p.stderr)
        Browser(srv).call("POST", "password/set", {"token": token, "password": PASSWORD})
        srv.stop()
        self.assertNotIn(token, srv.output())


if __name__ == "__main__":
    harness.main()
