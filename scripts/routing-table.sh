#!/usr/bin/env bash
# Regenerates the per-scenario table in docs/routing.md ("Defaults against the baselines"): for
# every shipped scenario, its first config (the defaults, with the scenario's provider list and
# policy) against seed_router, naive and oracle: failed requests in basis points, p99 latency and
# cost per 1 000 requests. The simulator is deterministic, so the table is a pure function of the
# scenarios and the code; `--check` exits 1 when docs/routing.md is not current (.ci/run runs it).
#
#   scripts/routing-table.sh            # rewrite the table
#   scripts/routing-table.sh --check    # fail if it is stale
set -euo pipefail
cd "$(dirname "$0")/.."
stilts=${STILTS:-target/release/stilts}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$stilts" sim scenarios/*.toml --format json --out "$work" --quiet >/dev/null 2>&1 || true
python3 - "$work" "${1:-}" <<'PY'
import json, glob, os, sys
work, mode = sys.argv[1], sys.argv[2]
rows = []
for path in sorted(glob.glob(os.path.join(work, "*.json"))):
    report = json.load(open(path))
    runs = {r["name"]: r for r in report["runs"]}
    default = next(r for r in report["runs"] if r["kind"] == "config")
    def cell(r):
        if r is None:
            return "-"
        bp = (1 - r["availability"]) * 1e4
        p99 = r["latency_ms_p99"]
        p99 = "-" if p99 is None else f"{p99 / 1000:.1f} s"
        return f"{bp:.1f} bp, {p99}, ${r['cost_per_1k_usd']:.2f}"
    def verdict(other):
        r = runs.get(other)
        if r is None:
            return "-"
        if default["answered"] > r["answered"]:
            return "more"
        if default["answered"] == r["answered"]:
            return "equal"
        return f"**fewer** ({r['answered'] - default['answered']})"
    rows.append(
        f"| `{report['scenario']}` | `{default['name']}` | {cell(default)} | {cell(runs.get('seed_router'))} "
        f"| {cell(runs.get('naive'))} | {cell(runs.get('oracle'))} | {verdict('seed_router')} / {verdict('naive')} |"
    )
table = "\n".join([
    "| scenario | default config | default | seed_router | naive | oracle | answered vs seed_router / naive |",
    "|---|---|---|---|---|---|---|",
    *rows,
])
doc_path = "docs/routing.md"
doc = open(doc_path).read()
begin, end = "<!-- routing-table:begin -->", "<!-- routing-table:end -->"
if begin not in doc or end not in doc:
    sys.exit(f"{doc_path}: the markers {begin} and {end} are missing")
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
new = f"{head}{begin}\n{table}\n{end}{tail}"
if mode == "--check":
    if new != doc:
        sys.exit(f"{doc_path}: the routing table is stale: run scripts/routing-table.sh and commit")
    print("routing table is current")
else:
    open(doc_path, "w").write(new)
    print(f"wrote the routing table of {len(rows)} scenarios into {doc_path}")
PY
