#!/usr/bin/env bash
# The replay gate: three shipped scenarios through the real gateway against fault-injecting
# loopback upstreams, compared with the simulator's prediction (docs/scenarios.md, "Replay").
# Exits non-zero on the first disagreement beyond the tolerances. Needs the release build
# (target/release/stilts and the plugins beside it); .ci/run runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
stilts=${STILTS:-target/release/stilts}

# A hard outage: refused connections on the primary from 600 s.
"$stilts" replay scenarios/openai-2024-12-11-outage.toml --speed 50 --until 1200
# A 429 storm with Retry-After 5 s on one of two weighted peers from 600 s.
"$stilts" replay scenarios/rate-limit-retry-after.toml --speed 25 --until 1200
# Cut and stalled streams from 600 s, continued exactly on an Anthropic deployment.
"$stilts" replay scenarios/stream-cut-and-stall.toml --speed 25 --until 1200
