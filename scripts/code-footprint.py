#!/usr/bin/env python3
"""The code a server runs per request, from a callgrind profile of N requests.

    scripts/code-footprint.py CALLGRIND_OUT REQUESTS [--label NAME] [--crates K]

CALLGRIND_OUT must come from `valgrind --tool=callgrind --dump-instr=yes --compress-pos=no
--compress-strings=no` (scripts/bench-gateway.sh's CALLGRIND mode writes such a file). Prints, per
shared object, the instructions per request and the code run per request: the 64-byte lines of
machine code holding an instruction that ran at least REQUESTS times in all (on average at least
once per request), so once-per-connection and once-per-second work falls out. `--crates K` also
prints the K largest shares of that code by crate (the first path segment of each function's
name). docs/benchmarks-gateway.md ("Why low rates cost more") says what the figure is used for.
"""
import argparse
import collections
import re
import sys

LINE_BYTES = 64


def fail(message):
    sys.exit(f"code-footprint: {message}")


def read_counts(path):
    """Instruction counts per (object, function, address), summed over the cost lines that repeat
    an address (callgrind writes one line per instruction and basic block or context)."""
    counts = collections.Counter()
    n_positions = ir_column = None
    obj, fn = "?", "?"
    skip_next = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("positions:"):
                positions = line.split(":", 1)[1].split()
                if positions[:1] != ["instr"]:
                    fail(f"{path} has no instruction positions: record it with --dump-instr=yes")
                n_positions = len(positions)
            elif line.startswith("events:"):
                if n_positions is None:
                    fail(f"{path} names its events before its positions: not a callgrind profile")
                events = line.split(":", 1)[1].split()
                if "Ir" not in events:
                    fail(f"{path} counts no instructions (events: {' '.join(events)})")
                ir_column = n_positions + events.index("Ir")
            elif line.startswith("ob="):
                obj = line[3:].strip().rsplit("/", 1)[-1]
                if obj.startswith("("):
                    fail(f"{path} has compressed names: record it with --compress-strings=no")
            elif line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith(("calls=", "jump=", "jcnd=")):
                # The next line is a call's inclusive cost or a jump's count, not an instruction's own.
                skip_next = True
            elif line[:1] in ("+", "-", "*"):
                fail(f"{path} has compressed positions: record it with --compress-pos=no")
            elif line.startswith("0x"):
                if skip_next:
                    skip_next = False
                    continue
                if ir_column is None:
                    fail(f"{path} has cost lines before its positions: and events: headers")
                fields = line.split()
                ir = int(fields[ir_column]) if len(fields) > ir_column else 0
                if ir:
                    counts[(obj, fn, int(fields[0], 16))] += ir
    return counts


def crate_of(fn):
    name = re.sub(r"^(<+|impl |dyn |&mut |&)+", "", fn)
    match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", name)
    return match.group(0) if match else name[:24]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("requests", type=int)
    parser.add_argument("--label", default="server")
    parser.add_argument("--crates", type=int, default=0, metavar="K")
    args = parser.parse_args()
    if args.requests < 1:
        fail("REQUESTS must be at least 1")
    try:
        counts = read_counts(args.profile)
    except OSError as e:
        fail(f"cannot read {args.profile}: {e}")
    if not counts:
        fail(f"{args.profile} holds no instruction counts")
    n = args.requests
    instructions = collections.Counter()
    hottest = {}  # (object, code line) -> (count, function of the hottest instruction)
    for (obj, fn, addr), ir in counts.items():
        instructions[obj] += ir
        key = (obj, addr // LINE_BYTES)
        if hottest.get(key, (0, ""))[0] < ir:
            hottest[key] = (ir, fn)
    per_object = collections.Counter()
    per_crate = collections.Counter()
    for (obj, _), (ir, fn) in hottest.items():
        if ir >= n:
            per_object[obj] += 1
            per_crate[f"{crate_of(fn)} ({obj})"] += 1
    kib = lambda lines: lines * LINE_BYTES / 1024
    for obj in sorted(instructions, key=lambda o: (-per_object[o], -instructions[o])):
        if per_object[obj] or instructions[obj] >= n:
            print(f"  {obj:40s} {kib(per_object[obj]):7.1f} KiB of code per request, "
                  f"{instructions[obj] / n:9.0f} instructions")
    for crate, lines in per_crate.most_common(args.crates):
        print(f"    {kib(lines):6.1f} KiB  {crate}")
    print(f"{args.label}: {kib(sum(per_object.values())):.1f} KiB of code per request, "
          f"{sum(instructions.values()) / n:.0f} instructions per request")


if __name__ == "__main__":
    main()
