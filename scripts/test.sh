#!/usr/bin/env bash
# Runs every test Switchyard has: the Rust workspace (unit, integration and loopback engine tests),
# the aiortc interop tests and the headless-Chromium browser tests. .ci/run installs what the last two
# need (Debian's chromium, aiortc from PyPI, playwright-core from npm).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target

echo "== cargo test (workspace) =="
cargo test --workspace --no-fail-fast

echo "== build the switchyard binary for end-to-end tests =="
cargo build --bin switchyard

echo "== ops: systemd units, daemons under sd_notify, malformed config =="
bash tests/ops/verify-units.sh
python3 -m pytest -q tests/ops

echo "== interop: aiortc (pytest) =="
python3 -m pytest -q tests/interop

echo "== browser: headless Chromium (node --test) =="
if [ ! -d tests/browser/node_modules ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
fi
(cd tests/browser && node --test --test-concurrency=1 --test-reporter=spec)
