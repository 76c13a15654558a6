#!/usr/bin/env bash
# Fuzzing: every parser fed from outside (docs/testing.md, "Fuzzing").
#
#   scripts/fuzz.sh [CASES]               every proptest fuzz target (the `fuzz` tests), CASES cases
#                                         each (default 1000; `cargo test` runs 256)
#   scripts/fuzz.sh --afl TARGET [SECS]   coverage-guided: AFL++ on one target for SECS seconds
#                                         (default 600); installs cargo-afl on first use
#   scripts/fuzz.sh --afl list            the AFL++ targets
#
# A proptest failure prints the shrunk input and saves its seed in the test's
# .proptest-regressions file (commit it with the fix). An AFL++ crash is left in
# target/fuzz-afl/out/TARGET/default/crashes/ and replayed here, so its panic message shows.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

if [ "${1:-}" != "--afl" ]; then
  cases=${1:-1000}
  case "$cases" in '' | *[!0-9]*) usage ;; esac
  export PROPTEST_CASES=$cases
  start=$(date +%s)
  # The whole workspace in one invocation: the same build as `cargo test --workspace`, so the
  # test binaries are reused, not rebuilt with other features.
  cargo test --workspace --locked --test fuzz
  echo "fuzz: $cases cases per target, $(($(date +%s) - start)) s"
  exit 0
fi

target=${2:-}
secs=${3:-600}
[ -n "$target" ] || usage
case "$secs" in '' | *[!0-9]*) usage ;; esac

if ! cargo afl --version >/dev/null 2>&1; then
  echo "==> installing cargo-afl from crates.io (once; a few minutes)"
  cargo install cargo-afl --locked --version '~0.18'
fi
# AFL++ itself is built once per toolchain, from the source cargo-afl ships, with the system's C
# compiler; an existing build makes this a no-op error.
cargo afl config --build >/dev/null 2>&1 || true

export CARGO_TARGET_DIR="$PWD/target/fuzz-afl"
bin="$CARGO_TARGET_DIR/release/stilts-fuzz"
build() { (cd fuzz && cargo afl build --release --locked ${1:+--features "$1"}); }

if [ "$target" = list ]; then
  for plugin in "" openai anthropic gemini; do
    build "$plugin" >/dev/null 2>&1
    # Without a target the binary lists this build's targets (and exits 2).
    { "$bin" 2>&1 || true; } | tail -n +3 | { if [ -n "$plugin" ]; then grep "^  $plugin-"; else cat; fi; }
  done | sort -u
  exit 0
fi

case "$target" in
  openai-* | anthropic-* | gemini-*) build "${target%%-*}" ;;
  *) build "" ;;
esac
corpus=$("$bin" "$target" --corpus) || usage
out="$CARGO_TARGET_DIR/out/$target"
mkdir -p "$out"
echo "==> AFL++ on $target for $secs s (seeds: tests/fuzz-corpus/$corpus, output: $out)"
# AFL_AUTORESUME: a second run continues the first one's queue.
AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_AUTORESUME=1 \
  cargo afl fuzz -i "tests/fuzz-corpus/$corpus" -o "$out" -V "$secs" -t 5000 "$bin" "$target" \
  >"$out/afl.log" 2>&1 || { tail -n 30 "$out/afl.log"; exit 1; }
stats="$out/default/fuzzer_stats"
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs) ' "$stats"
shopt -s nullglob
found=("$out"/default/crashes/id:* "$out"/default/hangs/id:*)
if [ ${#found[@]} -gt 0 ]; then
  echo "==> $target: ${#found[@]} crash(es) or hang(s); the first, replayed:"
  "$bin" "$target" --run "${found[0]}" || true
  exit 1
fi
echo "==> $target: no crash, no hang"
