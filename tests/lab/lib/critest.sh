# shellcheck shell=bash
# critest [vxn|runc|both] [CRITEST-ARG...]: cri-tools' validation suite (critest 1.36.0,
# scripts/lib/tools.sh) in dom0 against containerd's CRI, per runtime handler, then the
# two side by side (tests/critest/compare.py): passed/failed/skipped each and every spec
# whose result differs. The images critest names are built here (tests/critest/images,
# cached on their inputs), the skips are tests/critest/skip.txt (each says why).
# VXN_CRITEST_FOCUS picks specs (e.g. Conformance), VXN_CRITEST_PARALLEL runs that many at
# a time (ginkgo nodes), VXN_CRITEST_REGISTRY=0 goes without the local registry (and the
# specs that pull). Reports: $WORK/critest/containerdN/HANDLER.{log,xml}.
# Its status is kept in CRITEST_RC.

CRITEST_DIR=$WORK/critest
CRITEST_RC=0  # read by lab (critest)

# critest_images: $CRITEST_DIR/images.tar, rebuilt when its inputs change. The busybox is
# Debian's dynamic one (its shell is not standalone, as upstream's; busybox-static's is),
# fetched with apt-get download (a .deb, never installed: it conflicts with busybox-static).
critest_images() {
  local src=$REPO_DIR/tests/critest/images deb want
  mkdir -p "$CRITEST_DIR/busybox"
  deb=$(find "$CRITEST_DIR/busybox" -maxdepth 1 -name 'busybox_*.deb' | head -1)
  if [ -z "$deb" ]; then
    (cd "$CRITEST_DIR/busybox" && apt-get download busybox >/dev/null 2>&1) ||
      die "critest: apt-get download busybox failed"
    deb=$(find "$CRITEST_DIR/busybox" -maxdepth 1 -name 'busybox_*.deb' | head -1)
  fi
  want=$(hash_of "$deb" "$src"/*)
  [ -f "$CRITEST_DIR/images.tar" ] && [ "$(cat "$CRITEST_DIR/images.stamp" 2>/dev/null)" = "$want" ] && return 0
  rm -rf "$CRITEST_DIR/busybox/root"
  dpkg-deb -x "$deb" "$CRITEST_DIR/busybox/root"
  python3 "$src/build.py" "$CRITEST_DIR/images.tar" --busybox "$CRITEST_DIR/busybox/root/bin/busybox" >&2 ||
    die "critest: building the images failed"
  echo "$want" > "$CRITEST_DIR/images.stamp"
}

# critest_registry_bin: Debian's docker-registry (the binary of its .deb, which is not
# installed in dom0), for the local registry the pulling specs use (critest.sh).
critest_registry_bin() {
  local dir=$CRITEST_DIR/registry deb
  mkdir -p "$dir"
  deb=$(find "$dir" -maxdepth 1 -name 'docker-registry_*.deb' | head -1)
  if [ -z "$deb" ]; then
    (cd "$dir" && apt-get download docker-registry >/dev/null 2>&1) ||
      die "critest: apt-get download docker-registry failed"
    deb=$(find "$dir" -maxdepth 1 -name 'docker-registry_*.deb' | head -1)
  fi
  if [ ! -x "$dir/root/usr/bin/docker-registry" ]; then
    rm -rf "$dir/root"
    dpkg-deb -x "$deb" "$dir/root"
  fi
  echo "$dir/root/usr/bin/docker-registry"
}

# critest_push: critest, ginkgo, the registry, the images, the skips and the suite to dom0.
critest_push() {
  local bin gbin reg
  tools_available critest ginkgo || die "critest: no critest in $VXN_TOOLS_DIR (see scripts/lib/tools.sh)"
  bin=$(tools_unpack critest) || die "critest: unpacking critest failed"
  gbin=$(tools_unpack ginkgo) || die "critest: unpacking ginkgo failed"
  critest_images
  reg=$(critest_registry_bin)
  push_suite "$REPO_DIR/tests/critest/critest.sh" "$bin/critest" "$gbin/ginkgo" "$reg"
  dom0_put "$CRITEST_DIR/images.tar" /root/critest-images.tar 0644 \
    "$REPO_DIR/tests/critest/skip.txt" /usr/local/share/vxn/critest-skip.txt 0644
}

# critest_bench [N]: critest's benchmark mode for runc, then vxn: N pods (create, status,
# stop, remove), N containers each in a pod of its own (create, start, status, stop,
# remove), one at a time, and a pod with its container from scratch; side by side
# (tests/critest/bench.py). Image benchmarks are left out: the image service is
# containerd's whatever the handler. Output: $CRITEST_DIR/bench/HANDLER/.
critest_bench() {
  local n=${1:-5} h out f
  case $n in '' | *[!0-9]*) die "bench critest: N is a number, not $n" ;; esac
  critest_push
  for h in runc vxn; do
    out=$CRITEST_DIR/bench/$h
    rm -rf "$out"
    mkdir -p "$out"
    log "bench critest: $h ($n samples each; log: $out/critest.log)"
    # TCG is 20-50x slower than hardware: no timeout of critest's may judge it
    dom0 "d=/root/critest-bench-$h; rm -rf \$d; mkdir -p \$d
      printf '%s: %s\n' podsNumber $n containersNumber $n imagesNumber 0 podBenchmarkTimeoutSeconds 3600 \
        containerBenchmarkTimeoutSeconds 3600 podContainerStartBenchmarkTimeoutSeconds 3600 > \$d.yaml
      VXN_CRITEST_REGISTRY=0 critest.sh $h -benchmark -benchmarking-params-file \$d.yaml -benchmarking-output-dir \$d" \
      < /dev/null > "$out/critest.log" 2>&1 || log "bench critest: $h: critest failed (see its log)"
    for f in pod_benchmark_data.json container_benchmark_data.json; do
      dom0 "cat /root/critest-bench-$h/$f" < /dev/null > "$out/$f" 2>/dev/null || rm -f "$out/$f"
    done
  done
  python3 "$REPO_DIR/tests/critest/bench.py" "$CRITEST_DIR/bench/vxn" "$CRITEST_DIR/bench/runc"
}

cmd_critest() {
  local which=${1:-both} h hs=()
  case $which in
    vxn | runc) hs=("$which") ;;
    both) hs=(vxn runc) ;;
    *) die "critest: vxn, runc or both, not $which" ;;
  esac
  [ $# -gt 0 ] && shift
  critest_push
  local q=() a
  for a in "$@"; do q+=("$(printf '%q' "$a")"); done
  # One handler: critest's own verdict. Both: the comparison's (runc fails some specs
  # itself, e.g. execSync with timeout under containerd 1.6; vxn must not fail more).
  # Per containerd: `lab e2e all` runs it under both.
  local out=$CRITEST_DIR/containerd$LAB_CONTAINERD
  mkdir -p "$out"
  for h in "${hs[@]}"; do
    log "critest: handler $h (log: $out/$h.log)"
    rm -f "$out/$h.xml"
    dom0 "VXN_CRITEST_FOCUS=$(printf '%q' "${VXN_CRITEST_FOCUS:-}") VXN_CRITEST_PARALLEL=$(printf '%q' "${VXN_CRITEST_PARALLEL:-1}") VXN_CRITEST_REGISTRY=$(printf '%q' "${VXN_CRITEST_REGISTRY:-1}") critest.sh $h ${q[*]}" < /dev/null \
      > "$out/$h.log" 2>&1 || { [ "$which" = both ] || CRITEST_RC=1; }
    grep '^critest: ' "$out/$h.log" || true
    # whatever the verdict on the specs, a pod VM left behind fails the run
    if grep -q '^critest: domains left' "$out/$h.log"; then CRITEST_RC=1; fi
    dom0 "cat /root/critest-$h.xml" < /dev/null > "$out/$h.xml" 2>/dev/null || rm -f "$out/$h.xml"
  done
  if [ "$which" = both ]; then
    if [ -f "$out/vxn.xml" ] && [ -f "$out/runc.xml" ]; then
      python3 "$REPO_DIR/tests/critest/compare.py" "$out/vxn.xml" "$out/runc.xml" \
        "$REPO_DIR/tests/critest/skip.txt" || CRITEST_RC=1
    else
      log "critest: a handler left no report"; CRITEST_RC=1
    fi
  fi
}
