#!/usr/bin/env bash
# A profile-guided build of the gateway and its plugins, for deployments that want the lowest added
# latency: the compiler lays out the code the gateway runs on every request together and moves the
# rest aside, so a request touches fewer lines of code (docs/benchmarks-gateway.md measures both
# builds). The steps: an instrumented build (target/pgo-train), a training run of that build (the
# soak driver, crates/soak: plain and streamed requests over the three client dialects, every
# fault kind and config reloads, for TRAIN_S seconds), the profiles merged with llvm-profdata
# (rustup's llvm-tools component, added when missing), and the optimised build (target/pgo/release:
# `stilts` and the openai, anthropic and gemini plugins; gemini untrained, see below). The plain `cargo build --release` stays the
# default build; this one is the same code, compiled with a profile.
#
#   scripts/build-pgo.sh                       # target/pgo/release/stilts and its plugins
#   TRAIN_S=60 TRAIN_RATE=500 scripts/build-pgo.sh
#   STILTS_BIN=target/pgo/release/stilts scripts/bench-peers.sh   # measure it against the peers
#
# Code the training does not run (embeddings, the cluster link, the gemini plugin: the soak routes
# to the openai and anthropic plugins) is compiled as rarely used or without a profile: it works the
# same, a little slower. The profile lives only for one run of this script: after a change to the
# code, target/pgo is stale until the script runs again. The training gateway logs at the soak's
# level (info); the benches run with RUST_LOG=warn.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
TRAIN_S="${TRAIN_S:-60}"
TRAIN_RATE="${TRAIN_RATE:-500}"
TRAIN_DIR="$ROOT/target/pgo-train"
OUT_DIR="$ROOT/target/pgo"
for v in TRAIN_S TRAIN_RATE; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, got '${!v}'" >&2; exit 2; }
done
PACKAGES=(-p stilts-cli -p stilts-plugin-openai -p stilts-plugin-anthropic -p stilts-plugin-gemini)
cd "$ROOT"

profdata() { # the llvm-profdata that matches this rustc
    local bin
    bin="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata"
    if [ ! -x "$bin" ]; then
        echo "== adding rustup's llvm-tools component (llvm-profdata)" >&2
        rustup component add llvm-tools >&2 || { echo "cannot add llvm-tools: install it with rustup" >&2; return 1; }
    fi
    [ -x "$bin" ] || { echo "no llvm-profdata at $bin after adding llvm-tools" >&2; return 1; }
    echo "$bin"
}
PROFDATA="$(profdata)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# A fixed place for the raw profiles, so that the instrumented build's flags, and with them its
# cached crates, stay the same from one run to the next. The profile itself goes to a new path each
# run: a changed profile must rebuild every crate that uses it.
PROFILES="$TRAIN_DIR/profiles"
mkdir -p "$PROFILES"

echo "== the soak driver (plain release build: its own code must not enter the profile)"
cargo build --locked --release -q -p stilts-soak

echo "== instrumented build ($TRAIN_DIR)"
CARGO_TARGET_DIR="$TRAIN_DIR" RUSTFLAGS="-Cprofile-generate=$PROFILES" \
    cargo build --locked --release -q "${PACKAGES[@]}"
# Build scripts and proc macros ran instrumented too and wrote profiles of their own: not ours.
rm -f "$PROFILES"/*.profraw

echo "== training: ${TRAIN_S} s at ${TRAIN_RATE} requests/s through the instrumented gateway, every fault kind"
. "$ROOT/scripts/placement.sh"
GW_PLACE=()
[ "$PINNED" = 1 ] && GW_PLACE=(--gateway-cpus "$GW_CPUS")
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$WORK/soak"
# The instrumented gateway is slower than the real one: the soak's own checks do not matter here,
# only that the gateway served the traffic and exited normally (which writes its profile, and one
# per plugin it loaded). The plugins must be the instrumented ones beside it.
unset STILTS_PLUGIN_DIR
soak_status=0
LLVM_PROFILE_FILE="$PROFILES/gateway-%p-%m.profraw" \
    ${ON_REST[@]+"${ON_REST[@]}"} "$TARGET/release/stilts-soak" --stilts "$TRAIN_DIR/release/stilts" \
    --duration-s "$TRAIN_S" --rate "$TRAIN_RATE" --work-dir "$WORK/soak" \
    ${GW_PLACE[@]+"${GW_PLACE[@]}"} >"$WORK/soak.log" 2>&1 || soak_status=$?
answered="$(grep -oE '[0-9]+ sent, [0-9]+ answered' "$WORK/soak.log" | head -1 || true)"
echo "   soak: ${answered:-no count} (its own checks: $([ "$soak_status" = 0 ] && echo passed || echo "exit $soak_status"))"
profiles=$(compgen -G "$PROFILES/gateway-*.profraw" | wc -l || true)
if [ "${answered:-}" = "" ] || [ "$(echo "$answered" | awk '{print $3}')" -lt $((TRAIN_S * TRAIN_RATE / 2)) ] \
    || [ "$profiles" -lt 2 ]; then
    echo "the training did not run (answered: ${answered:-none}, expected at least $((TRAIN_S * TRAIN_RATE / 2));"
    echo "profiles written: $profiles, expected the gateway's and its plugins'). The soak's last lines:"
    tail -n 30 "$WORK/soak.log"
    exit 1
fi
"$PROFDATA" merge -o "$WORK/stilts.profdata" "$PROFILES"/gateway-*.profraw
echo "   merged $profiles profiles (the gateway and the plugins it loaded)"

echo "== optimised build ($OUT_DIR)"
CARGO_TARGET_DIR="$OUT_DIR" RUSTFLAGS="-Cprofile-use=$WORK/stilts.profdata" \
    cargo build --locked --release -q "${PACKAGES[@]}"
ls "$OUT_DIR"/release/stilts "$OUT_DIR"/release/libstilts_plugin_*.so
