#!/usr/bin/env bash
# Runs every test Switchyard has: the Rust workspace (unit, integration, loopback engine tests) and,
# when their runtimes are installed (.ci/run installs them), the browser and aiortc end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace) =="
cargo test --workspace --no-fail-fast 2>&1 | tee target/cargo-test.log
