#!/usr/bin/env bash
# Regenerates crates/cli/hot-code.txt, the functions a gateway request runs, hottest first, which
# the release build's linker places together (crates/cli/build.rs; docs/benchmarks-gateway.md,
# "Hot code together"): builds the release binary, counts what 2,000 plain requests run under
# callgrind (scripts/bench-gateway.sh's CALLGRIND mode), maps the instructions that ran at least
# once per request to the binary's symbols, writes the list and rebuilds with it.
#
# The linker's names for generic code depend on which packages one cargo command builds (features
# are unified across them): `--workspace`, as .ci/run and a plain `cargo build --release` at the
# root build, and the benches' `-p stilts-cli -p stilts-plugin-openai` give the same names;
# `-p stilts-cli` alone does not, and such a build runs without most of the layout.
#
#   scripts/hot-code.sh            # regenerate the list (needs valgrind; about 5 minutes)
#   scripts/hot-code.sh --check    # fail when the release binary lacks too many listed names,
#                                  # or did not lay them out in order (.ci/run runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=crates/cli/hot-code.txt
BIN=${STILTS_BIN:-target/release/stilts}
# The share of listed names the binary must still have: a renamed or moved hot function drops out
# of the list, and below this much of it the layout is worth regenerating.
MIN_PRESENT=${MIN_PRESENT:-0.7}

symbols() { # name, address and size of every function symbol in $1
    nm --defined-only -S "$1" | awk 'NF == 4 && ($3 == "t" || $3 == "T") {print $4, $1, $2}'
}

RUSTC_VERSION="$(rustc --version)"

if [ "${1:-}" = --check ]; then
    [ -x "$BIN" ] || { echo "hot-code: no $BIN: build it with cargo build --release" >&2; exit 1; }
    # The linker's names carry a hash of the compiler's version: a list made with another rustc
    # names nothing in this build. That is worth a regeneration, not a failed check.
    made_with="$(sed -n 's/^# made with //p' "$LIST")"
    if [ "$made_with" != "$RUSTC_VERSION" ]; then
        echo "hot-code: $LIST was made with ${made_with:-an unknown rustc}, this is $RUSTC_VERSION:" \
            "the layout does not apply; regenerate it with scripts/hot-code.sh" >&2
        exit 0
    fi
    symbols "$BIN" | python3 -c '
import sys
listed = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
addr = {}
for line in sys.stdin:
    name, a, _ = line.split()
    addr[name] = int(a, 16)
present = [addr[n] for n in listed if n in addr]
share = len(present) / max(len(listed), 1)
in_order = all(a < b for a, b in zip(present, present[1:]))
print(f"hot-code: {len(present)} of {len(listed)} listed functions in {sys.argv[2]} ({share:.0%}), "
      + ("laid out in the listed order" if in_order else "NOT laid out in the listed order"))
if not in_order:
    sys.exit("hot-code: the linker did not apply crates/cli/hot-code.txt (see crates/cli/build.rs for when it does)")
if share < float(sys.argv[3]):
    sys.exit(f"hot-code: under {float(sys.argv[3]):.0%} of the list is left: regenerate it with scripts/hot-code.sh and commit")
' "$LIST" "$BIN" "$MIN_PRESENT"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "== profiling 2,000 requests (scripts/bench-gateway.sh, CALLGRIND mode)"
CALLGRIND=2000 CALLGRIND_OUT="$WORK/callgrind.out" SATURATE=0 scripts/bench-gateway.sh >"$WORK/bench.log" 2>&1 \
    || { tail -20 "$WORK/bench.log" >&2; exit 1; }
symbols "$BIN" >"$WORK/symbols"
python3 - "$WORK/callgrind.out" 2000 "$WORK/symbols" "$LIST" "$RUSTC_VERSION" <<'PY'
import bisect, collections, importlib.util, os, sys
profile, requests, symbols, out, rustc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
spec = importlib.util.spec_from_file_location("footprint", os.path.join("scripts", "code-footprint.py"))
footprint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(footprint)
syms = []
for line in open(symbols):
    name, a, size = line.split()
    syms.append((int(a, 16), int(size, 16), name))
syms.sort()
starts = [s[0] for s in syms]
heat = collections.Counter()
for (obj, _fn, a), count in footprint.read_counts(profile).items():
    if os.path.basename(obj) != "stilts":
        continue
    i = bisect.bisect_right(starts, a) - 1
    if i >= 0 and a < syms[i][0] + max(syms[i][1], 1):
        heat[syms[i][2]] += count
hot = [name for name, count in heat.most_common() if count >= requests]
with open(out, "w") as f:
    f.write("# Written by scripts/hot-code.sh: the functions of the stilts binary that a plain request\n")
    f.write("# through the gateway runs, hottest first (crates/cli/build.rs). Do not edit by hand.\n")
    f.write(f"# made with {rustc}\n")
    f.write("\n".join(hot) + "\n")
print(f"hot-code: {len(hot)} functions, {sum(heat[n] for n in hot) / requests:.0f} instructions per request, written to {out}")
PY
echo "== rebuilding with the new list"
cargo build --locked --release -q --workspace
"$0" --check
