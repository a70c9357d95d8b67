#!/bin/bash
# critest.sh HANDLER [CRITEST-ARG...]: cri-tools' validation suite (critest) in dom0
# against containerd's CRI for runtime handler HANDLER (vxn or runc). The lab pushes it
# with the suite's helpers (e2e-lib.sh, cri-e2e.sh: CNI and the vxn handler), critest,
# the images (tests/critest/images/build.py) and the skip list; `lab critest` runs it.
# Prints critest's output, then "critest: HANDLER passed N failed N skipped N" and the
# failed specs; the JUnit report stays in /root/critest-HANDLER.xml.
# Env: VXN_CRITEST_FOCUS (a ginkgo focus regex, e.g. Conformance), VXN_CRITEST_PARALLEL
# (critest's -parallel: that many ginkgo nodes, each a spec at a time; needs ginkgo).
# A pod VM left behind fails the run. With /usr/local/bin/docker-registry (the lab pushes
# Debian's), the images are also served by a local registry, the mirror of every
# registry critest names, so the specs that pull (Image Manager) run too;
# VXN_CRITEST_REGISTRY=0 goes without (and skips those).
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

REGISTRY=127.0.0.1:5000
REGISTRY_DIR=/var/lib/vxn-critest-registry
MIRRORED=(registry.k8s.io gcr.io k8s.gcr.io)

registry_up() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "http://$REGISTRY/v2/" 2>/dev/null
}

# image_names: the names the images tarball carries.
image_names() {
  python3 -c 'import json, sys, tarfile
t = tarfile.open(sys.argv[1])
for m in json.load(t.extractfile("index.json"))["manifests"]:
    print(m["annotations"]["io.containerd.image.name"])' "$IMAGES"
}

# critest_registry: the local registry up, holding every image under its path
# (registry.k8s.io/pause:3.9 is $REGISTRY/pause:3.9), and containerd's CRI told to pull
# from it for each registry critest names (hosts.toml under config_path; 1.6 needs
# config_path set, 2.x reads /etc/containerd/certs.d by default).
critest_registry() {
  local h name changed=0 cfg=/etc/containerd/config.toml
  if ! registry_up; then
    mkdir -p "$REGISTRY_DIR/data"
    cat > "$REGISTRY_DIR/config.yml" <<EOC
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOC
    setsid docker-registry serve "$REGISTRY_DIR/config.yml" > "$REGISTRY_DIR/log" 2>&1 < /dev/null &
    for _ in $(seq 60); do registry_up && break; sleep 1; done
    registry_up || { echo "critest: the registry did not start: $(tail -3 "$REGISTRY_DIR/log")"; return 1; }
  fi
  if [ "$(cat "$REGISTRY_DIR/pushed" 2>/dev/null)" != "$want" ]; then
    for name in $(image_names); do
      ctr -n k8s.io images push --plain-http "$REGISTRY/${name#*/}" "$name" > /dev/null ||
        { echo "critest: pushing $name to the registry failed"; return 1; }
    done
    echo "$want" > "$REGISTRY_DIR/pushed"
  fi
  for h in "${MIRRORED[@]}"; do
    mkdir -p "/etc/containerd/certs.d/$h"
    printf 'server = "https://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
      "$h" "$REGISTRY" > "/etc/containerd/certs.d/$h/hosts.toml"
  done
  if ! grep -q '^# vxn-critest: registry' "$cfg"; then
    grep -q 'grpc.v1.cri".registry\]' "$cfg" &&
      { echo "critest: $cfg has a registry table of its own: set its config_path to /etc/containerd/certs.d"; return 1; }
    printf '%s\n' '# vxn-critest: registry mirrors (tests/critest/critest.sh)' \
      '[plugins."io.containerd.grpc.v1.cri".registry]' '  config_path = "/etc/containerd/certs.d"' >> "$cfg"
    changed=1
  fi
  if [ $changed = 1 ]; then
    systemctl restart containerd
    for _ in $(seq 60); do "${CRI[@]}" version > /dev/null 2>&1 && break; sleep 1; done
  fi
}

cri_setup || exit 1
# The images under critest's names (re-imported when the tarball changed).
want=$(sha256sum < "$IMAGES" | cut -c1-64)
if [ "$(cat /var/lib/vxn-critest-images 2>/dev/null)" != "$want" ]; then
  ctr -n k8s.io images import "$IMAGES" >/dev/null || { echo "critest: image import failed"; exit 1; }
  echo "$want" > /var/lib/vxn-critest-images
fi
REGISTRY_SKIP=
if [ "${VXN_CRITEST_REGISTRY:-1}" = 1 ] && command -v docker-registry > /dev/null; then
  critest_registry || exit 1
else
  # without a registry the specs that pull cannot run
  REGISTRY_SKIP='\[k8s.io\] Image Manager|\[k8s.io\] Image (Identifier )?Consistency'
  echo "critest: no registry: the Image Manager and Image Consistency specs are skipped"
fi
# The skips for this handler: "all" lines always, "vxn" lines for vxn.
skip=$(awk -F'\t' -v h="$H" '!/^#/ && NF >= 3 && ($1 == "all" || $1 == h) {printf "%s%s", (n++ ? "|" : ""), $2}' "$SKIPS")
[ -n "$REGISTRY_SKIP" ] && skip=${skip:+$skip|}$REGISTRY_SKIP
args=(-runtime-endpoint "unix:///run/containerd/containerd.sock" -runtime-handler "$H"
  -ginkgo.no-color -ginkgo.junit-report "$REPORT")
[ -n "$skip" ] && args+=(-ginkgo.skip "$skip")
[ -n "${VXN_CRITEST_FOCUS:-}" ] && args+=(-ginkgo.focus "$VXN_CRITEST_FOCUS")
[ "${VXN_CRITEST_PARALLEL:-1}" -gt 1 ] && args+=(-parallel "$VXN_CRITEST_PARALLEL")
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
[ -z "$left" ] || { echo "critest: domains left: $left"; rc=1; }
exit $rc
