#!/usr/bin/env bash
# Prepares a fresh Debian machine for the browser end-to-end test: Debian's Chromium and the
# locked node_modules. Idempotent and quiet; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v npm >/dev/null; then
  echo "setup: npm is missing (install Node.js 20 or later)" >&2
  exit 1
fi

# node_modules is stale when the lock file changed after the last install (npm writes its own
# copy of the lock into node_modules/.package-lock.json).
cd "$here"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --silent --no-audit --no-fund >/dev/null
fi
