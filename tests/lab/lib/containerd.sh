# shellcheck shell=bash
# Which containerd dom0 runs: VXN_LAB_CONTAINERD=1 (default: Debian's 1.6, from the dom0
# image) or 2 (containerd 2.3.4 with its ctr and runc shim, scripts/lib/tools.sh). The 2.x
# binaries go to /usr/local/bin (ahead of /usr/bin on every PATH, systemd's included) and
# a drop-in points containerd.service at them; Debian's package stays installed. Applied
# by every push (dom0's disk starts from the built image at each boot), so every verb that
# pushes (e2e, bench, smoke's setup, demo) runs against the chosen containerd.

# shellcheck source=../../../scripts/lib/tools.sh
. "$REPO_DIR/scripts/lib/tools.sh"
LAB_CONTAINERD=${VXN_LAB_CONTAINERD:-1}
CONTAINERD2_DROPIN=/etc/systemd/system/containerd.service.d/50-vxn-lab-containerd2.conf

# containerd_apply: make dom0's containerd the chosen one (a no-op when it is).
containerd_apply() {
  local want have bin t put=()
  case $LAB_CONTAINERD in
    1) want=1 ;;
    2) want=2 ;;
    *) die "VXN_LAB_CONTAINERD=$LAB_CONTAINERD: 1 (Debian's 1.6) or 2 (2.3.4 from $VXN_TOOLS_DIR)" ;;
  esac
  have=$(dom0 'containerd --version' < /dev/null | awk '{sub(/^v/, "", $3); split($3, v, "."); print v[1]}')
  if [ "$have" = "$want" ]; then return 0; fi
  if [ "$want" = 2 ]; then
    bin=$(tools_unpack "${CONTAINERD2_TOOLS[@]}") || die "containerd 2.x: the test tools are not there (VXN_TOOLS_DIR)"
    for t in "${CONTAINERD2_TOOLS[@]}"; do put+=("$bin/$t" "/usr/local/bin/$t" 0755); done
    dom0_put "${put[@]}"
    # shellcheck disable=SC2016 # expanded in dom0
    dom0 "set -e; mkdir -p ${CONTAINERD2_DROPIN%/*}
      printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/containerd\n' > $CONTAINERD2_DROPIN
      systemctl daemon-reload; systemctl restart containerd" < /dev/null || die "containerd 2.x did not start in dom0"
  else
    dom0 "set -e; rm -f $CONTAINERD2_DROPIN /usr/local/bin/containerd /usr/local/bin/ctr /usr/local/bin/containerd-shim-runc-v2
      systemctl daemon-reload; systemctl restart containerd" < /dev/null || die "Debian's containerd did not start in dom0"
  fi
  dom0 'for i in $(seq 60); do ctr version > /dev/null 2>&1 && exit 0; sleep 1; done; exit 1' < /dev/null ||
    die "dom0's containerd does not answer after the switch"
  log "push: dom0 runs containerd $(dom0 'containerd --version' < /dev/null | awk '{print $3}')"
}
