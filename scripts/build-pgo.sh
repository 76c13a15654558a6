#!/usr/bin/env bash
# A profile-guided build of the gateway and its plugins, for deployments that want the lowest added
# latency: the compiler lays out the code the gateway runs on every request together and moves the
# rest aside, so a request touches fewer lines of code (docs/benchmarks-gateway.md measures both
# builds). The steps: an instrumented build (target/pgo-train), a training run of that build (the
# soak driver, crates/soak: plain and streamed requests over the three client dialects, every
# fault kind and config reloads, for TRAIN_S seconds), the profiles merged with llvm-profdata
# (rustup's llvm-tools component, added when missing), and the optimised build (target/pgo/release:
# `stilts` and the openai, anthropic and gemini plugins). The plain `cargo build --release` stays the
# default build; this one is the same code, compiled with a profile.
#
#   scripts/build-pgo.sh                       # target/pgo/release/stilts and its plugins
#   TRAIN_S=60 TRAIN_RATE=500 scripts/build-pgo.sh
#   STILTS_BIN=target/pgo/release/stilts scripts/bench-peers.sh   # measure it against the peers
#
# Code the training does not run (embeddings, the cluster link) is compiled as rarely used: it works
# the same, a little slower. Profiles older than the code are refused by the compiler's checks; run
# the script again after a change.
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
mkdir -p "$WORK/profiles"

echo "== the soak driver (plain release build: its own code must not enter the profile)"
cargo build --locked --release -q -p stilts-soak

echo "== instrumented build ($TRAIN_DIR)"
CARGO_TARGET_DIR="$TRAIN_DIR" RUSTFLAGS="-Cprofile-generate=$WORK/profiles" \
    cargo build --locked --release -q "${PACKAGES[@]}"
# Build scripts and proc macros ran instrumented too and wrote profiles of their own: not ours.
rm -f "$WORK"/profiles/*.profraw

echo "== training: ${TRAIN_S} s at ${TRAIN_RATE} requests/s through the instrumented gateway, every fault kind"
. "$ROOT/scripts/placement.sh"
GW_PLACE=()
[ "$PINNED" = 1 ] && GW_PLACE=(--gateway-cpus "$GW_CPUS")
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$WORK/soak"
# The instrumented gateway is slower than the real one: the soak's own verdict does not matter
# here, only that the gateway served the traffic and exited normally (which writes its profile).
LLVM_PROFILE_FILE="$WORK/profiles/gateway-%p-%m.profraw" \
    ${ON_REST[@]+"${ON_REST[@]}"} "$TARGET/release/stilts-soak" --stilts "$TRAIN_DIR/release/stilts" \
    --duration-s "$TRAIN_S" --rate "$TRAIN_RATE" --work-dir "$WORK/soak" \
    ${GW_PLACE[@]+"${GW_PLACE[@]}"} >"$WORK/soak.log" 2>&1 || true
if ! compgen -G "$WORK/profiles/gateway-*.profraw" >/dev/null; then
    echo "the training wrote no profile: the gateway did not exit normally. The soak's last lines:"
    tail -n 30 "$WORK/soak.log"
    exit 1
fi
"$PROFDATA" merge -o "$WORK/stilts.profdata" "$WORK"/profiles/gateway-*.profraw
echo "   merged $(ls "$WORK"/profiles/gateway-*.profraw | wc -l) profiles"

echo "== optimised build ($OUT_DIR)"
CARGO_TARGET_DIR="$OUT_DIR" RUSTFLAGS="-Cprofile-use=$WORK/stilts.profdata" \
    cargo build --locked --release -q "${PACKAGES[@]}"
ls "$OUT_DIR"/release/stilts "$OUT_DIR"/release/libstilts_plugin_*.so
