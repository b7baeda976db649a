#!/bin/sh
# Installs the Debian packages a task needs, and only those that are missing. Silent when
# everything is already there. Usage: scripts/install-deps.sh build|test|bench|fuzz ...
set -eu

pkgs=""
for group in "$@"; do
    case "$group" in
    build) pkgs="$pkgs gcc make cmake pkg-config libh2o-evloop-dev libsodium-dev libjansson-dev
                 libsqlite3-dev libpq-dev libhiredis-dev libssl-dev zlib1g-dev libhttp-parser-dev libjs-chart.js" ;;
    test) pkgs="$pkgs curl python3 python3-requests python3-yaml python3-jsonschema clang-format git chromium openssl postgresql redis-server nginx-light systemd" ;;
    bench) pkgs="$pkgs wrk nginx-light sqlite3 postgresql redis-server python3 python3-requests" ;;
    fuzz) pkgs="$pkgs clang libclang-rt-14-dev" ;;
    *) echo "install-deps: unknown group $group" >&2; exit 2 ;;
    esac
done

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# The seed page's Node.js example needs a node with fetch (18 or later), and the browser tests
# need npm; any install of them will do.
case " $* " in
*" test "*)
    command -v node >/dev/null 2>&1 || missing="$missing nodejs"
    command -v npm >/dev/null 2>&1 || missing="$missing npm"
    ;;
esac

[ -z "$missing" ] && exit 0

echo "Installing missing packages:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# PostgreSQL's package makes and starts a system cluster on port 5432; the tests run their own
# servers on unix sockets and never use it.
if echo "$missing" | grep -q postgresql; then
    $SUDO systemctl stop postgresql >/dev/null 2>&1 || $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
# nginx-light starts a system nginx on port 80 on install; the benchmarks run their own.
if echo "$missing" | grep -q nginx; then
    $SUDO systemctl stop nginx >/dev/null 2>&1 || $SUDO service nginx stop >/dev/null 2>&1 || true
fi
