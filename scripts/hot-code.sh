#!/usr/bin/env bash
# Regenerates the hot-code lists, the functions a gateway request runs, hottest first, which the
# release build's linker places together (crates/hot-code; docs/benchmarks-gateway.md, "Hot code
# together"): crates/cli/hot-code.txt for the `stilts` binary and plugins/openai/hot-code.txt for
# the openai plugin. It counts what 2,000 plain requests run under callgrind (scripts/
# bench-gateway.sh's CALLGRIND mode, which builds the release binary and plugin), maps the
# instructions that ran at least once per request to each file's symbols, writes the lists and
# rebuilds with them.
#
#   scripts/hot-code.sh            # regenerate the lists (needs valgrind; about 5 minutes)
#   scripts/hot-code.sh --check    # fail when a release build lacks too many listed names, or did
#                                  # not lay them out in order (.ci/run runs it)
#
# The linker's names carry a hash of the compiler's version, and those of generic code depend on
# which packages one cargo command builds (features are unified across them): `--workspace`, the
# default members (a plain `cargo build --release` at the root) and the benches'
# `-p stilts-cli -p stilts-plugin-openai` give the lists' names; `-p stilts-cli` alone does not,
# and such a build runs without most of the layout.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${CARGO_TARGET_DIR:-target}/release
# file in the build, its list
ARTIFACTS=("$DIR/stilts" crates/cli/hot-code.txt "$DIR/libstilts_plugin_openai.so" plugins/openai/hot-code.txt)
# The share of listed names a build must still have: a renamed or moved hot function drops out of
# the list, and below this much of it the layout is worth regenerating.
MIN_PRESENT=${MIN_PRESENT:-0.7}
RUSTC_VERSION="$(rustc --version)"

symbols() { # name, address and size of every function symbol in $1
    nm --defined-only -S "$1" | awk 'NF == 4 && ($3 == "t" || $3 == "T") {print $4, $1, $2}'
}

check() { # file list
    local file=$1 list=$2 made_with
    [ -f "$file" ] || { echo "hot-code: no $file: build it with cargo build --release" >&2; return 1; }
    # A list made with another rustc names nothing in this build: worth a regeneration, not a
    # failed check.
    made_with="$(sed -n 's/^# made with //p' "$list")"
    if [ "$made_with" != "$RUSTC_VERSION" ]; then
        echo "hot-code: $list was made with ${made_with:-an unknown rustc}, this is $RUSTC_VERSION:" \
            "the layout does not apply; regenerate it with scripts/hot-code.sh" >&2
        return 0
    fi
    symbols "$file" | python3 -c '
import sys
listed = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
addr = {}
for line in sys.stdin:
    name, a, _ = line.split()
    addr[name] = int(a, 16)
present = [addr[n] for n in listed if n in addr]
share = len(present) / max(len(listed), 1)
in_order = all(a < b for a, b in zip(present, present[1:]))
print(f"hot-code: {len(present)} of {len(listed)} functions of {sys.argv[1]} in {sys.argv[2]} ({share:.0%}), "
      + ("laid out in the listed order" if in_order else "NOT laid out in the listed order"))
if not in_order:
    sys.exit(f"hot-code: the linker did not apply {sys.argv[1]} (see crates/hot-code for when it does)")
if share < float(sys.argv[3]):
    sys.exit(f"hot-code: under {float(sys.argv[3]):.0%} of {sys.argv[1]} is left: regenerate it with scripts/hot-code.sh and commit")
' "$list" "$file" "$MIN_PRESENT"
}

if [ "${1:-}" = --check ]; then
    status=0
    for ((i = 0; i < ${#ARTIFACTS[@]}; i += 2)); do
        check "${ARTIFACTS[i]}" "${ARTIFACTS[i + 1]}" || status=1
    done
    exit $status
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "== profiling 2,000 requests (scripts/bench-gateway.sh, CALLGRIND mode)"
CALLGRIND=2000 CALLGRIND_OUT="$WORK/callgrind.out" SATURATE=0 scripts/bench-gateway.sh >"$WORK/bench.log" 2>&1 \
    || { tail -20 "$WORK/bench.log" >&2; exit 1; }
for ((i = 0; i < ${#ARTIFACTS[@]}; i += 2)); do
    file=${ARTIFACTS[i]} list=${ARTIFACTS[i + 1]}
    symbols "$file" >"$WORK/symbols"
    python3 - "$WORK/callgrind.out" 2000 "$WORK/symbols" "$file" "$list" "$RUSTC_VERSION" <<'PY'
import bisect, collections, importlib.util, os, sys
profile, requests, symbols, file, out, rustc = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
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
# callgrind gives the addresses of a shared object's code as offsets in its file, as nm does.
for (obj, _fn, a), count in footprint.read_counts(profile).items():
    if os.path.basename(obj) != os.path.basename(file):
        continue
    i = bisect.bisect_right(starts, a) - 1
    if i >= 0 and a < syms[i][0] + max(syms[i][1], 1):
        heat[syms[i][2]] += count
hot = [name for name, count in heat.most_common() if count >= requests]
if not hot:
    sys.exit(f"hot-code: the profile ran nothing of {file}")
with open(out, "w") as f:
    f.write(f"# Written by scripts/hot-code.sh: the functions of {os.path.basename(file)} that a plain\n")
    f.write("# request through the gateway runs, hottest first (crates/hot-code). Do not edit by hand.\n")
    f.write(f"# made with {rustc}\n")
    f.write("\n".join(hot) + "\n")
print(f"hot-code: {len(hot)} functions of {os.path.basename(file)}, {sum(heat[n] for n in hot) / requests:.0f} instructions per request, written to {out}")
PY
done
echo "== rebuilding with the new lists"
cargo build --locked --release -q --workspace
"$0" --check
