# shellcheck shell=bash
# Targets and checks for building vxn's binaries for one architecture, native or cross
# (scripts/build-agent.sh, scripts/build-cross.sh, scripts/install-deps.sh --cross).

# cross_target ARCH: the Rust target vxn builds for ARCH (x86_64 or aarch64).
cross_target() {
  case $1 in
    x86_64 | amd64) echo x86_64-unknown-linux-gnu ;;
    aarch64 | arm64) echo aarch64-unknown-linux-gnu ;;
    *) echo "cross: unsupported architecture: $1 (x86_64 or aarch64)" >&2; return 1 ;;
  esac
}

# cross_packages TARGET: Debian's packages a build for TARGET needs on this machine (none
# for the machine's own).
cross_packages() {
  case $1 in
    "$(uname -m)"-*) ;;
    aarch64-*) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    x86_64-*) echo gcc-x86-64-linux-gnu libc6-dev-amd64-cross ;;
  esac
}

# cross_toolchain_check TARGET: fail, saying what to install, unless Rust's std for TARGET
# and a linker for it are here.
cross_toolchain_check() {
  local target=$1 libdir linker
  libdir=$(rustc --print target-libdir --target "$target" 2> /dev/null) || libdir=
  if [ -z "$libdir" ] || ! compgen -G "$libdir/libstd-*.rlib" > /dev/null; then
    echo "cross: Rust's standard library for $target is not installed (rustup target add $target, or scripts/install-deps.sh --cross)" >&2
    return 1
  fi
  case $target in "$(uname -m)"-*) return 0 ;; esac
  linker=${target%%-*}-linux-gnu-gcc
  if ! command -v "$linker" > /dev/null; then
    echo "cross: no linker for $target: $linker (apt-get install $(cross_packages "$target"), or scripts/install-deps.sh --cross)" >&2
    return 1
  fi
}

# elf_check BIN ARCH [static]: BIN is an executable for ARCH (and, with static, has no
# program interpreter and no shared library), else say why and fail.
elf_check() {
  local bin=$1 arch=$2 want machine
  case $arch in
    x86_64 | amd64) want='Advanced Micro Devices X86-64' ;;
    aarch64 | arm64) want=AArch64 ;;
    *) echo "cross: unsupported architecture: $arch" >&2; return 1 ;;
  esac
  [ -f "$bin" ] || { echo "cross: $bin was not built" >&2; return 1; }
  machine=$(LC_ALL=C readelf -h "$bin" 2> /dev/null | sed -n 's/^ *Machine: *//p')
  if [ "$machine" != "$want" ]; then
    echo "cross: $bin is for ${machine:-no known machine}, not $arch" >&2
    return 1
  fi
  if [ "${3:-}" = static ] && LC_ALL=C readelf -lW "$bin" | grep -q 'INTERP'; then
    echo "cross: $bin is dynamically linked (it must run with no libc beside it)" >&2
    return 1
  fi
}
