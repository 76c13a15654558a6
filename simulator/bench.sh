#!/usr/bin/env sh
# Simulator speed: simulated requests per second of wall time, and a day at 100 rps per config.
# Usage: simulator/bench.sh [HOURS] [RPS]   (defaults: 24 h at 100 rps = 8.64 M requests per run)
# Pins the run to one core when taskset is available. Results go in docs/benchmarks-sim.md.
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p stilts-sim --example throughput
bin="$CARGO_TARGET_DIR/release/examples/throughput"
if command -v taskset >/dev/null 2>&1; then
    exec taskset -c 0 "$bin" "${1:-24}" "${2:-100}"
else
    exec "$bin" "${1:-24}" "${2:-100}"
fi
