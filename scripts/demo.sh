#!/bin/bash
# The main job: containerd runs a container as its own Xen DomU.
# On a Xen dom0 this runs right here; anywhere else it runs inside the lab
# (real Xen 4.17 + a Debian dom0 under QEMU, tests/lab), built on first use.
# Usage: scripts/demo.sh [COMMAND...]   (default: a short self-description)
set -euo pipefail
cd "$(dirname "$0")/.."
CMD=("$@")
[ ${#CMD[@]} -gt 0 ] || CMD=(sh -c 'echo "hello from $(hostname), a Xen DomU: kernel $(uname -r), pid $$"; ip -4 -o addr show eth0; cat /proc/cmdline')
IMG=docker.io/library/vxn-test:latest
quote() { printf '%q ' "$@"; }
RUN="ctr run --rm --runtime io.containerd.vxn.v2 $IMG vxn-demo-$$ $(quote "${CMD[@]}")"

if grep -qs control_d /proc/xen/capabilities; then
  echo "demo: this host is a Xen dom0; installing and running locally" >&2
  cargo build --release --locked -p containerd-shim-vxn-v2 -p vxn-runtime-core >&2
  install -m 0755 target/release/containerd-shim-vxn-v2 target/release/vxnctl scripts/vctr /usr/local/bin/
  scripts/install-containerd-config.sh >&2
  # the containers' bridge, NAT and DNS (docs/networking.md); idempotent
  vxnctl network up >&2
  tests/lab/make-test-image.sh /tmp/vxn-test.tar >&2
  ctr images import /tmp/vxn-test.tar >&2
  echo "+ $RUN" >&2
  exec bash -c "$RUN"
fi

echo "demo: not a Xen dom0; using the lab (the first run builds it and the guest kernel: ~15 min on 2 cores)" >&2
LAB=tests/lab/lab
"$LAB" deps >&2
"$LAB" build >&2
cargo build --release --locked -p containerd-shim-vxn-v2 -p vxn-runtime-core >&2
"$LAB" guest-image >&2
# `lab status` says "up (qemu pid ...)": a lab the user had up stays up
was_up=$("$LAB" status || true)
"$LAB" up >&2
case $was_up in up*) ;; *) trap '"$LAB" down >&2' EXIT ;; esac
"$LAB" push --test-image >&2
echo "+ $RUN" >&2
"$LAB" ssh "vxnctl network up >/dev/null && $RUN"
