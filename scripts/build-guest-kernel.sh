#!/bin/bash
# Build vxn's guest kernel from Debian's kernel source package (linux-source-6.1):
# `make allnoconfig` with kernel/vxn.config + kernel/<arch>.config forced on top, then the
# boot image. No modules: everything the agent needs is built in (kernel/README.md).
#
# usage: scripts/build-guest-kernel.sh [--arch x86_64] [--cache DIR] [--out FILE] [--jobs N]
#   Prints the path of the kernel image on stdout (with --out: copies it there too).
#   --config-only: resolve the fragments with Kconfig and check every line was kept, but
#   build nothing (seconds; CI's check of the architectures it does not boot).
#   --key: print the cache entry's name (ARCH-HEX) for this source, fragments, compiler
#   and script, and exit (what a prepared cache must hold: tests/cache-test.sh).
#   Cached by the hash of the source package version, the fragments, the compiler and this
#   script: a second run with nothing changed returns at once. Sources are unpacked once
#   per source version and the object tree is reused, so a changed fragment rebuilds
#   only what it touches.
# scripts/build-guest-kernel.sh --check-config CONFIG FRAGMENT...: print the fragments' lines
#   a resolved .config does not have (as the build checks its own); exit 1 if any.
# Environment: VXN_KERNEL_CACHE (default /var/cache/vxn/kernel), VXN_KERNEL_JOBS (nproc).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
SRC_PKG=linux-source-6.1
SRC_TAR=/usr/src/$SRC_PKG.tar.xz
BUILD_PKGS=("$SRC_PKG" make gcc bc flex bison libelf-dev libc6-dev xz-utils)

arch=x86_64
cache=${VXN_KERNEL_CACHE:-/var/cache/vxn/kernel}
out=
jobs=${VXN_KERNEL_JOBS:-$(nproc)}
print_key=0
config_only=0

# shellcheck source=lib/cache.sh
. "$REPO_DIR/scripts/lib/cache.sh"

log() { echo "build-guest-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

# unmet FRAGMENT CONFIG: the fragment's lines the resolved config does not have (a symbol
# renamed, or a dependency left out): printed as "SYMBOL: wanted X, got Y".
unmet() {
  awk '
    NR == FNR { if ($0 ~ /^CONFIG_[A-Za-z0-9_]+=/) { k = $0; sub(/=.*/, "", k); want[k] = substr($0, length(k) + 2) }; next }
    /^CONFIG_[A-Za-z0-9_]+=/ { k = $0; sub(/=.*/, "", k); have[k] = substr($0, length(k) + 2) }
    /^# CONFIG_[A-Za-z0-9_]+ is not set/ { have[$2] = "n" }
    END { for (k in want) { h = (k in have) ? have[k] : "n"; if (h != want[k]) printf "  %s: wanted %s, got %s\n", k, want[k], h } }
  ' "$1" "$2"
}

while [ $# -gt 0 ]; do
  case $1 in
    --check-config)
      # --check-config CONFIG FRAGMENT...: the fragments' lines CONFIG lacks; exit 1 if any
      [ $# -ge 3 ] || die "--check-config CONFIG FRAGMENT..."
      conf=$2; shift 2
      bad=$(cat "$@" | unmet /dev/stdin "$conf")
      [ -z "$bad" ] || { echo "$bad"; exit 1; }
      exit 0 ;;
    --arch) arch=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --key) print_key=1; shift ;;
    --config-only) config_only=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

cross=
case $arch in
  x86_64) karch=x86_64; image=arch/x86/boot/bzImage; target=bzImage ;;
  aarch64|arm64)
    arch=aarch64; karch=arm64; image=arch/arm64/boot/Image.gz; target=Image.gz
    if [ "$(uname -m)" != aarch64 ]; then cross=aarch64-linux-gnu-; BUILD_PKGS+=(gcc-aarch64-linux-gnu); fi ;;
  *) die "unsupported arch: $arch (x86_64 or aarch64)" ;;
esac
fragments=("$REPO_DIR/kernel/vxn.config" "$REPO_DIR/kernel/$karch.config")
for f in "${fragments[@]}"; do [ -f "$f" ] || die "missing fragment $f"; done

pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

# install_build_deps: Debian's source package and the kernel's build tools, when missing.
install_build_deps() {
  local missing=() p
  for p in "${BUILD_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing packages (install as root): ${missing[*]}"
  log "installing ${missing[*]}"
  # another apt (the lab's deps) may hold the dpkg lock: wait for it
  local apt=(apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends)
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 && DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >&2; } ||
    die "apt-get install ${missing[*]} failed"
}

install_build_deps
srcver=$(dpkg-query -W -f='${Version}' "$SRC_PKG")
# (sed, not head: head's early exit could SIGPIPE gcc, and pipefail would fail the key)
key=$( { echo "$srcver $arch"; "${cross}gcc" --version | sed -n 1p; cat "${fragments[@]}" "$0"; } | sha256sum | cut -c1-16)
if [ "$print_key" = 1 ]; then echo "$arch-$key"; exit 0; fi
result=$cache/$arch-$key
mkdir -p "$cache"
exec 9> "$cache/.lock"
flock 9

# configure: the object tree's .config from allnoconfig and the fragments, each line of
# which Kconfig must have kept.
configure() {
  src=$cache/src-$srcver
  if [ ! -f "$src/.unpacked" ]; then
    log "unpacking $SRC_TAR ($SRC_PKG $srcver)"
    rm -rf "$src" && mkdir -p "$src"
    tar -xf "$SRC_TAR" -C "$src" --strip-components=1
    touch "$src/.unpacked"
  fi
  obj=$cache/obj-$arch-$srcver
  mkdir -p "$obj"
  cat "${fragments[@]}" > "$obj/vxn.fragment"
  make -s -C "$src" O="$obj" ARCH="$karch" CROSS_COMPILE="$cross" KCONFIG_ALLCONFIG="$obj/vxn.fragment" allnoconfig >&2
  bad=$(unmet "$obj/vxn.fragment" "$obj/.config")
  [ -z "$bad" ] || die "fragment options Kconfig did not keep (renamed, or a dependency missing):
$bad"
}
if [ "$config_only" = 1 ]; then
  configure
  log "$arch: every fragment line kept ($SRC_PKG $srcver)"
  exit 0
fi

if [ ! -f "$result/vmlinuz" ]; then
  t0=$SECONDS
  configure
  log "building $target ($SRC_PKG $srcver, $arch, -j$jobs)"
  make -s -C "$src" O="$obj" ARCH="$karch" CROSS_COMPILE="$cross" -j"$jobs" "$target" > "$obj/build.log" 2>&1 ||
    { tail -30 "$obj/build.log" >&2; die "kernel build failed (log: $obj/build.log)"; }
  mkdir -p "$result.tmp"
  cp "$obj/$image" "$result.tmp/vmlinuz"
  cp "$obj/.config" "$result.tmp/config"
  make -s -C "$src" O="$obj" ARCH="$karch" CROSS_COMPILE="$cross" kernelrelease > "$result.tmp/release"
  rm -rf "$result" && mv "$result.tmp" "$result"
  log "built $(cat "$result/release") in $((SECONDS - t0)) s: $(stat -c %s "$result/vmlinuz") bytes"
else
  log "cached: $result ($(cat "$result/release"))"
fi
# The cache keeps this result and the two newest others (switching a fragment back and
# forth stays instant), and the trees of this source version only.
cache_prune "$cache" "$arch-*" "$result" 2
for old in "$cache"/src-* "$cache"/obj-*-*; do
  case $old in *"-$srcver") ;; *) rm -rf -- "$old" ;; esac
done
if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  cp "$result/vmlinuz" "$out.tmp" && mv -f "$out.tmp" "$out"
fi
echo "$result/vmlinuz"
