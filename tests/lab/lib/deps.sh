# shellcheck shell=bash
# `lab deps`: host packages for the lab. Idempotent: apt only runs when something is missing.

# protobuf-compiler: host-bins builds the CRI test client (k8s-cri runs protoc)
HOST_PKGS=(qemu-system-x86 debootstrap cpio e2fsprogs busybox-static openssh-client gzip zstd xz-utils protobuf-compiler)
# the guest kernel (scripts/build-guest-kernel.sh) and the static agent
HOST_PKGS+=(linux-source-6.1 make gcc bc flex bison libelf-dev libc6-dev)
BACKPORTS_LIST=/etc/apt/sources.list.d/vxn-lab-backports.sources

pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

# apt_install ARGS...: apt-get install, refreshing the package lists once if the first
# attempt fails (fresh machines may carry stale lists), and waiting out a busy dpkg lock.
apt_install() {
  local i
  for i in 1 2 3 4 5 6; do
    # (scripts/test.sh runs this beside the guest kernel's build, which may hold the lock)
    if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@"; then return 0; fi
    log "apt-get install failed (attempt $i); refreshing lists and retrying"
    apt-get update -q || true
    sleep $((i * 5))
  done
  die "apt-get install $* failed"
}

# The image ships qemu-utils from bookworm-backports (a ~bpo12 version); bookworm's
# qemu-system-common 7.2 is "Breaks"-ed by it, so qemu-system-x86 must come from
# bookworm-backports too. The backports source uses the host's own mirror.
ensure_backports() {
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local mirror
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || die "no Debian mirror found in the host apt config"
  log "adding bookworm-backports source ($BACKPORTS_LIST)"
  cat > "$BACKPORTS_LIST" <<EOS
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  apt-get update -q
}

cmd_deps() {
  need_root
  local missing=() p qv
  for p in "${HOST_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} = 0 ]; then log "deps: all host packages present"; return 0; fi
  log "deps: installing ${missing[*]}"
  qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* && "$qv" == *bpo12* ]]; then
    ensure_backports
    apt_install -t bookworm-backports qemu-system-x86 qemu-utils
    missing=("${missing[@]/qemu-system-x86}")
  fi
  # shellcheck disable=SC2206 # drop the emptied entry
  missing=(${missing[@]})
  [ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
}
