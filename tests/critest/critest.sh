#!/bin/bash
# critest.sh HANDLER [CRITEST-ARG...]: cri-tools' validation suite (critest) in dom0
# against containerd's CRI for runtime handler HANDLER (vxn or runc). The lab pushes it
# with the suite's helpers (e2e-lib.sh, cri-e2e.sh: CNI and the vxn handler), critest,
# the images (tests/critest/images/build.py) and the skip list; `lab critest` runs it.
# Prints critest's output, then "critest: HANDLER passed N failed N skipped N" and the
# failed specs; the JUnit report stays in /root/critest-HANDLER.xml.
# Env: VXN_CRITEST_FOCUS (a ginkgo focus regex, e.g. Conformance).
set -u
H=${1:?usage: critest.sh HANDLER [CRITEST-ARG...]}
shift
. "$(dirname "$(readlink -f "$0")")/e2e-lib.sh"
. "$(dirname "$(readlink -f "$0")")/cri-e2e.sh"
WORK=$(mktemp -d /tmp/vxn-critest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SKIPS=${VXN_CRITEST_SKIPS:-/usr/local/share/vxn/critest-skip.txt}
IMAGES=${VXN_CRITEST_IMAGES:-/root/critest-images.tar}
REPORT=/root/critest-$H.xml

cri_setup || exit 1
# The images under critest's names (re-imported when the tarball changed).
want=$(sha256sum < "$IMAGES" | cut -c1-64)
if [ "$(cat /var/lib/vxn-critest-images 2>/dev/null)" != "$want" ]; then
  ctr -n k8s.io images import "$IMAGES" >/dev/null || { echo "critest: image import failed"; exit 1; }
  echo "$want" > /var/lib/vxn-critest-images
fi
# The skips for this handler: "all" lines always, "vxn" lines for vxn.
skip=$(awk -F'\t' -v h="$H" '!/^#/ && NF >= 3 && ($1 == "all" || $1 == h) {printf "%s%s", (n++ ? "|" : ""), $2}' "$SKIPS")
args=(-runtime-endpoint "unix:///run/containerd/containerd.sock" -runtime-handler "$H"
  -ginkgo.no-color -ginkgo.junit-report "$REPORT")
[ -n "$skip" ] && args+=(-ginkgo.skip "$skip")
[ -n "${VXN_CRITEST_FOCUS:-}" ] && args+=(-ginkgo.focus "$VXN_CRITEST_FOCUS")
rm -f "$REPORT"
t0=$SECONDS
cd "$WORK" && critest "${args[@]}" "$@"
rc=$?
echo "critest: $H took $((SECONDS - t0))s (critest exit $rc)"
[ -f "$REPORT" ] || { echo "critest: no report"; exit 1; }
python3 - "$REPORT" "$H" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
res = {"passed": [], "failed": [], "skipped": []}
for c in cases:
    name = c.get("name", "")
    if name.startswith("[SynchronizedBeforeSuite]") or name.startswith("[SynchronizedAfterSuite]") \
       or name.startswith("[BeforeSuite]") or name.startswith("[AfterSuite]"):
        if c.find("failure") is None and c.find("error") is None:
            continue
    kind = "failed" if c.find("failure") is not None or c.find("error") is not None \
        else "skipped" if c.find("skipped") is not None else "passed"
    res[kind].append(name)
print(f"critest: {sys.argv[2]} passed {len(res['passed'])} failed {len(res['failed'])} skipped {len(res['skipped'])}")
for n in sorted(res["failed"]):
    print(f"critest: FAILED {n}")
PY
# Nothing of the suite's may be left: no pod VM, no sandbox.
left=$(xl list 2>/dev/null | awk 'NR > 2 {print $1}')
[ -z "$left" ] || echo "critest: domains left: $left"
exit $rc
