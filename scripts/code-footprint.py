#!/usr/bin/env python3
"""The code a server runs per request, from a callgrind profile of N requests.

    scripts/code-footprint.py CALLGRIND_OUT REQUESTS [--label NAME]

CALLGRIND_OUT must come from `valgrind --tool=callgrind --dump-instr=yes --compress-pos=no
--compress-strings=no` (scripts/bench-gateway.sh's CALLGRIND mode writes such a file). Prints, per
shared object, the instructions per request and the code footprint per request: the 64-byte lines of
machine code holding an instruction that ran at least REQUESTS times, that is, code every request
runs (once-per-connection and once-per-second work falls out). When requests arrive far apart, a
request finds little of that code in the CPU's caches and fetches each line again, so at low rates
the time a proxy adds follows this footprint more than its instruction count (docs/benchmarks-
gateway.md, "Why low rates cost more").
"""
import argparse
import collections
import sys

LINE_BYTES = 64


def footprint(path):
    """(instructions, hottest count per code line) per shared object."""
    instructions = collections.Counter()
    hottest = collections.defaultdict(dict)
    obj = "?"
    call_cost_next = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip().rsplit("/", 1)[-1]
            elif line.startswith("calls="):
                # The next cost line is the inclusive cost of a call, not an instruction's own count.
                call_cost_next = True
            elif line.startswith("0x"):
                if call_cost_next:
                    call_cost_next = False
                    continue
                fields = line.split()
                count = int(fields[-1]) if len(fields) > 1 else 0
                if not count:
                    continue
                instructions[obj] += count
                code_line = int(fields[0], 16) // LINE_BYTES
                lines = hottest[obj]
                if lines.get(code_line, 0) < count:
                    lines[code_line] = count
    return instructions, hottest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("requests", type=int)
    parser.add_argument("--label", default="server")
    args = parser.parse_args()
    if args.requests < 1:
        sys.exit("REQUESTS must be at least 1")
    try:
        instructions, hottest = footprint(args.profile)
    except OSError as e:
        sys.exit(f"cannot read {args.profile}: {e}")
    if not instructions:
        sys.exit(f"{args.profile} holds no instruction counts: record it with --dump-instr=yes --compress-pos=no")
    n = args.requests
    rows = []
    for obj, lines in hottest.items():
        every = sum(1 for c in lines.values() if c >= n)
        rows.append((every, obj, instructions[obj] / n))
    rows.sort(reverse=True)
    total_kib = sum(r[0] for r in rows) * LINE_BYTES / 1024
    total_ir = sum(r[2] for r in rows)
    for every, obj, ir in rows:
        if every or ir >= 1:
            print(f"  {obj:40s} {every * LINE_BYTES / 1024:7.1f} KiB of code per request, {ir:9.0f} instructions")
    print(f"{args.label}: {total_kib:.1f} KiB of code per request, {total_ir:.0f} instructions per request")


if __name__ == "__main__":
    main()
