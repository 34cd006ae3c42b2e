#!/usr/bin/env bash
# Switchyard's performance run: builds the release binaries, then perf-harness starts each server
# itself (the plain UDP baseline, switchyard-engine + switchyard-control with io_uring and with
# mmsg, Janus's VideoRoom) and drives it with the load generator. Prints one table, writes
# perf/results/latest.json and updates perf/RESULTS.md. Arguments go to perf-harness
# (`bash perf/run.sh --help`; `--quick` for a short trial). Needs root for Janus's veth pair;
# Janus itself comes from Debian (`apt-get install -y janus`), perf from linux-perf.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v janus >/dev/null; then
    echo "janus is not installed (apt-get install -y janus): its runs will be skipped" >&2
fi
cargo build --release -p switchyard-engine -p switchyard-control -p switchyard-baseline -p switchyard-loadgen
exec target/release/perf-harness "$@"
