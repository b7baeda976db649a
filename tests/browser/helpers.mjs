// What the browser and SDK tests share: the binary under test, free ports, bounded fetches, and
// redaction of anything key-shaped before it is printed.
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const redact = (s) => s.replace(/sk_(live|test)_[0-9A-Za-z]{6,}/g, 'sk_$1_[redacted]');

// The konnect binary: KONNECT_BIN, or build/konnect in this repository, or null.
export function konnectBin() {
  if (process.env.KONNECT_BIN) return path.resolve(process.env.KONNECT_BIN);
  const local = path.join(REPO, 'build', 'konnect');
  return existsSync(local) ? local : null;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function fetchT(url, opts = {}, ms = 5_000) {
  return fetch(url, { ...opts, redirect: 'manual', signal: AbortSignal.timeout(ms) });
}
