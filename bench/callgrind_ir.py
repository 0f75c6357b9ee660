#!/usr/bin/env python3
"""callgrind_ir.py - instructions per op from a callgrind profile.

usage: callgrind_ir.py CALLGRIND_OUT FUNCTION_REGEX OP_REGEX [PER_OP]

Prints one number: the inclusive instruction count (Ir) of the one function
matching FUNCTION_REGEX (the benchmark function: every run Google Benchmark
makes of it, the timed loops and their set-up), divided by the number of
ops, which is the number of calls of the functions matching OP_REGEX
divided by PER_OP (default 1).  Counting calls rather than trusting the
benchmark's printed iterations takes in the runs Google Benchmark makes to
choose its iteration count.  Instruction counts do not move with the
machine's load, which wall-clock times on these shared machines do.
"""
import re
import sys
from collections import defaultdict


def read_profile(path):
    """Returns (inclusive Ir per function, calls per function)."""
    names = {}
    self_ir = defaultdict(int)
    callee_ir = defaultdict(int)
    calls = defaultdict(int)
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
                        callee_ir[fn] += cost
                    pending = None
                else:
                    self_ir[fn] += cost
    inclusive = {k: self_ir[k] + callee_ir[k] for k in set(self_ir) | set(callee_ir)}
    return inclusive, calls


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[2])
    path, fn_re, op_re = sys.argv[1:4]
    per_op = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    inclusive, calls = read_profile(path)
    fns = [k for k in inclusive if re.search(fn_re, k)]
    if len(fns) != 1:
        sys.exit(f"callgrind_ir.py: '{fn_re}' matches {len(fns)} functions in {path}: {fns[:5]}")
    ops = sum(n for k, n in calls.items() if re.search(op_re, k)) // per_op
    if ops == 0:
        sys.exit(f"callgrind_ir.py: no calls of '{op_re}' in {path}")
    print(f"{inclusive[fns[0]] / ops:.1f}")


if __name__ == "__main__":
    main()
