"""The product page's three examples, word for word but for the host name, against a local server
with KONNECT_API_KEY set to a test key: cURL, Node.js fetch and Python requests."""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ServerTest  # noqa: E402

SEED_CURL = """curl https://api.konnect.ai/v1/chat \\
-H "Authorization: Bearer $KONNECT_API_KEY" \\
-H "Content-Type: application/json" \\
-d '{"message": "Hello"}'"""

SEED_NODE = """const response = await fetch('https://api.konnect.ai/v1/chat', {
method: 'POST',
headers: {
'Authorization': `Bearer ${process.env.KONNECT_API_KEY}`,
'Content-Type': 'application/json',
},
body: JSON.stringify({ message: 'Hello' }),
});"""

SEED_PYTHON = """import os
import requests
response = requests.post(
'https://api.konnect.ai/v1/chat',
headers={
'Authorization': f'Bearer {os.environ["KONNECT_API_KEY"]}',
'Content-Type': 'application/json',
},
json={'message': 'Hello'}
)"""


class SeedExamplesTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.srv = self.start()
        self.api_key = self.key()
        self.env = dict(os.environ, KONNECT_API_KEY=self.api_key)
        self.tmp = tempfile.mkdtemp(prefix="konnect-seed-")

    def local(self, text):
        return text.replace("https://api.konnect.ai", self.srv.url)

    def check_body(self, status, body):
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        self.assertEqual(doc["object"], "chat.response")
        self.assertIs(doc["livemode"], False)
        self.assertTrue(doc["message"]["content"])

    def test_curl(self):
        script = self.local(SEED_CURL) + ' -sS -o body.json -w "%{http_code}"'
        p = subprocess.run(["sh", "-c", script], env=self.env, cwd=self.tmp,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.tmp, "body.json")) as f:
            self.check_body(int(p.stdout), f.read())

    def test_node_fetch(self):
        path = os.path.join(self.tmp, "example.mjs")
        with open(path, "w") as f:
            f.write(self.local(SEED_NODE))
            f.write("\nconsole.log(JSON.stringify({status: response.status, "
                    "body: await response.text()}));\n")
        p = subprocess.run(["node", path], env=self.env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        self.check_body(out["status"], out["body"])

    def test_python_requests(self):
        path = os.path.join(self.tmp, "example.py")
        with open(path, "w") as f:
            f.write(self.local(SEED_PYTHON))
            f.write("\nimport json\nprint(json.dumps({'status': response.status_code, "
                    "'body': response.text}))\n")
        p = subprocess.run([sys.executable, path], env=self.env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        self.check_body(out["status"], out["body"])


if __name__ == "__main__":
    harness.main()
