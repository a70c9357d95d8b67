#!/usr/bin/env python3
"""compare.py VXN.xml RUNC.xml SKIP.txt: critest's JUnit reports of the two handlers side
by side: passed/failed/skipped for each, then every spec whose result differs. Exits 1
when a spec runc passes is not passed by vxn, unless skip.txt lists it for vxn (a
documented exception)."""

import re
import sys
import xml.etree.ElementTree as ET

SUITE_NODES = ("[SynchronizedBeforeSuite]", "[SynchronizedAfterSuite]", "[BeforeSuite]",
               "[AfterSuite]", "[ReportAfterSuite]", "[ReportBeforeSuite]")


def results(path):
    out = {}
    for c in ET.parse(path).getroot().iter("testcase"):
        name = c.get("name", "")
        failed = c.find("failure") is not None or c.find("error") is not None
        if name.startswith(SUITE_NODES) and not failed:
            continue
        out[name] = "failed" if failed else "skipped" if c.find("skipped") is not None else "passed"
    return out


def vxn_exceptions(path):
    pats = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if not line.startswith("#") and len(parts) >= 3 and parts[0] == "vxn":
                pats.append((re.compile(parts[1]), parts[2]))
    return pats


def main():
    vxn, runc = results(sys.argv[1]), results(sys.argv[2])
    exceptions = vxn_exceptions(sys.argv[3])
    kinds = ("passed", "failed", "skipped")
    print(f"{'':10}{'vxn':>8}{'runc':>8}")
    for k in kinds:
        print(f"{k:10}{sum(v == k for v in vxn.values()):>8}{sum(v == k for v in runc.values()):>8}")
    bad = 0
    for name in sorted(set(vxn) | set(runc)):
        a, b = vxn.get(name, "absent"), runc.get(name, "absent")
        if a == b:
            continue
        why = next((w for p, w in exceptions if p.search(name)), None)
        mark = ""
        if b == "passed" and a != "passed":
            if why:
                mark = f"  (vxn exception: {why})"
            else:
                mark = "  <- REGRESSION"
                bad += 1
        print(f"differs: vxn {a:8} runc {b:8} {name}{mark}")
    print(f"compare: {bad} spec(s) runc passes and vxn does not (exceptions aside)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
