#!/usr/bin/env python3
"""callgrind_ir.py - instructions per op from a callgrind profile.

usage: callgrind_ir.py CALLGRIND_OUT FUNCTION_REGEX OP_REGEX [PER_OP]

Prints one number: the instructions (Ir) of the one function matching
FUNCTION_REGEX (the benchmark function, every run Google Benchmark makes of
it) per op.  Ops are the calls of the functions matching OP_REGEX divided by
PER_OP (default 1); counting calls rather than trusting the benchmark's
printed iterations takes in the runs Google Benchmark makes to choose its
iteration count.  What the function spends per op is its own instructions
plus the inclusive cost of the calls it makes at least once per two ops:
calls made fewer times than that are set-up (building a registry once per
run), which would otherwise weigh in when a loaded machine leaves few
iterations to a run.  Instruction counts do not move with the
machine's load, which wall-clock times on these shared machines do.
"""
import re
import sys
from collections import defaultdict


def read_profile(path):
    """Returns (self Ir per function, calls per function, calls and
    inclusive Ir per (caller, callee))."""
    names = {}
    self_ir = defaultdict(int)
    calls = defaultdict(int)
    edges = defaultdict(lambda: [0, 0])
    fn = cfn = None
    pending = None

    def name(kind, value):
        # Compressed names: "(id) name" the first time, "(id)" after.
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[kind, m.group(1)] = m.group(2)
        return names[kind, m.group(1)]

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                fn = name("fn", line[3:])
            elif line.startswith("cfn="):
                cfn = name("fn", line[4:])
            elif line.startswith("calls="):
                pending = int(line[6:].split()[0])
            elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending is not None:
                    calls[cfn] += pending
                    if cfn != fn:
                        edges[fn, cfn][0] += pending
                        edges[fn, cfn][1] += cost
                    pending = None
                else:
                    self_ir[fn] += cost
    return self_ir, calls, edges


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[2])
    path, fn_re, op_re = sys.argv[1:4]
    per_op = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    self_ir, calls, edges = read_profile(path)
    fns = [k for k in self_ir if re.search(fn_re, k)]
    if len(fns) != 1:
        sys.exit(f"callgrind_ir.py: '{fn_re}' matches {len(fns)} functions in {path}: {fns[:5]}")
    ops = sum(n for k, n in calls.items() if re.search(op_re, k)) // per_op
    if ops == 0:
        sys.exit(f"callgrind_ir.py: no calls of '{op_re}' in {path}")
    fn = fns[0]
    per_op = self_ir[fn] + sum(cost for (caller, _), (n, cost) in edges.items() if caller == fn and 2 * n >= ops)
    print(f"{per_op / ops:.1f}")


if __name__ == "__main__":
    main()
