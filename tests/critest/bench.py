#!/usr/bin/env python3
"""critest's benchmarks (critest -benchmark), vxn against runc, side by side.

Usage: bench.py VXN_DIR RUNC_DIR

Each DIR holds what one handler's run left: critest's -benchmarking-output-dir files
(pod_benchmark_data.json, container_benchmark_data.json, ...: every operation's duration
per sample) and its log (critest.log), whose "create PodSandbox and container" line is
the start-from-scratch benchmark (a gmeasure experiment, reported in the log only).
Prints, per operation, the median and the maximum for each handler and vxn/runc of the
medians.
"""

import json
import os
import re
import statistics
import sys

FILES = ("pod_benchmark_data.json", "container_benchmark_data.json",
         "image_lifecycle_benchmark_data.json", "image_listing_benchmark_data.json")


def lifecycle(d):
    """{operation: [seconds, ...]} from one handler's output dir."""
    ops = {}
    for f in FILES:
        p = os.path.join(d, f)
        if not os.path.exists(p):
            continue
        with open(p) as fh:
            data = json.load(fh)
        names = data.get("operationsNames") or []
        for point in data.get("datapoints") or []:
            for name, ns in zip(names, point.get("operationsDurationsNs") or []):
                ops.setdefault(name, []).append(ns / 1e9)
    return ops


# gmeasure's table row: "create PodSandbox and container [duration] | N | min | median |
# mean | stddev | max", durations in Go's notation (9.07s, 1m2.5s, 850ms).
SCRATCH = re.compile(r"create PodSandbox and container \[duration\]((?:\s*\|[^|\n]*)+)")
GO_DURATION = re.compile(r"([0-9.]+)(h|ms|µs|us|ns|m|s)")
UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}


def go_seconds(text):
    parts = GO_DURATION.findall(text.strip())
    return sum(float(v) * UNIT[u] for v, u in parts) if parts else None


def scratch(d):
    """The start-from-scratch benchmark's median, as a one-sample list."""
    p = os.path.join(d, "critest.log")
    if not os.path.exists(p):
        return []
    with open(p, errors="replace") as fh:
        m = SCRATCH.search(fh.read())
    if not m:
        return []
    cells = [c.strip() for c in m.group(1).split("|") if c.strip()]
    median = go_seconds(cells[2]) if len(cells) > 2 else None
    return [median] if median is not None else []


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    vxn, runc = ({**lifecycle(d), **({"PodAndContainerFromScratch": scratch(d)} if scratch(d) else {})}
                 for d in sys.argv[1:])
    names = list(dict.fromkeys([*vxn, *runc]))
    if not names:
        sys.exit("bench: no benchmark data in either directory")
    print(f"{'operation':<28} {'n':>3} {'vxn median':>11} {'vxn max':>9} {'runc median':>12} {'runc max':>9} {'vxn/runc':>9}")
    for n in names:
        a, b = vxn.get(n, []), runc.get(n, [])
        ma = statistics.median(a) if a else None
        mb = statistics.median(b) if b else None
        ratio = f"{ma / mb:.1f}x" if ma is not None and mb else "-"
        def fmt(x):
            return f"{x:.3f}s" if x is not None else "-"
        print(f"{n:<28} {max(len(a), len(b)):>3} {fmt(ma):>11} {fmt(max(a) if a else None):>9} "
              f"{fmt(mb):>12} {fmt(max(b) if b else None):>9} {ratio:>9}")


if __name__ == "__main__":
    main()
