#!/bin/bash
# Host-only checks of scripts/lib/cross.sh, what scripts/build-cross.sh and
# scripts/build-agent.sh decide with (no cross toolchain, no cargo build needed):
#  - cross_target: the Rust target per architecture, Debian's names too; anything else refused;
#  - elf_check: a binary for this machine passes for its architecture and fails for the other
#    one, saying which machine it is for; a dynamic binary fails the static check, a static
#    one (busybox-static) passes it; a file that is not ELF and a missing file fail;
#  - cross_toolchain_check: with no Rust std for the target, or no cross linker, it fails
#    and names what to install.
# Prints PASS/FAIL per check and "N passed, N failed"; exits non-zero on a failure.
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
# shellcheck source=lib/check.sh
. "$REPO/tests/lib/check.sh"
# shellcheck source=../scripts/lib/cross.sh
. "$REPO/scripts/lib/cross.sh"

[ "$(uname -m)" = x86_64 ] || { echo "cross-test: written for an x86_64 machine"; exit 0; }
# run CMD...: "rc:stderr" of CMD
run() { local err rc; err=$("$@" 2>&1 > /dev/null) && rc=0 || rc=$?; echo "$rc:$err"; }

check target-aarch64 aarch64-unknown-linux-gnu "$(cross_target aarch64)"
check target-arm64 aarch64-unknown-linux-gnu "$(cross_target arm64)"
check target-amd64 x86_64-unknown-linux-gnu "$(cross_target amd64)"
check target-other-refused "1:cross: unsupported architecture: riscv64 (x86_64 or aarch64)" "$(run cross_target riscv64)"
check packages-own-none "" "$(cross_packages x86_64-unknown-linux-gnu)"
check packages-aarch64 "gcc-aarch64-linux-gnu libc6-dev-arm64-cross" "$(cross_packages aarch64-unknown-linux-gnu)"

dyn=$(readlink -f /bin/true)
check elf-own-arch "0:" "$(run elf_check "$dyn" x86_64)"
check elf-other-arch "1:cross: $dyn is for Advanced Micro Devices X86-64, not aarch64" "$(run elf_check "$dyn" aarch64)"
check elf-dynamic-not-static "1:cross: $dyn is dynamically linked (it must run with no libc beside it)" \
  "$(run elf_check "$dyn" x86_64 static)"
if [ -x /bin/busybox ] && ! LC_ALL=C readelf -lW /bin/busybox | grep -q INTERP; then
  check elf-static "0:" "$(run elf_check /bin/busybox x86_64 static)"
fi
printf '#!/bin/sh\n' > "$T/script"
check elf-not-elf "1:cross: $T/script is for no known machine, not x86_64" "$(run elf_check "$T/script" x86_64)"
check elf-missing "1:cross: $T/none was not built" "$(run elf_check "$T/none" aarch64)"

# a rustc that knows the target but has no std for it, and one that has it (an empty rlib)
mkdir -p "$T/bin" "$T/nostd" "$T/std"
touch "$T/std/libstd-0123.rlib"
printf '#!/bin/sh\necho "$RUSTC_LIBDIR"\n' > "$T/bin/rustc"
chmod +x "$T/bin/rustc"
check toolchain-no-std "1:cross: Rust's standard library for aarch64-unknown-linux-gnu is not installed (rustup target add aarch64-unknown-linux-gnu, or scripts/install-deps.sh --cross)" \
  "$(PATH=$T/bin:$PATH RUSTC_LIBDIR=$T/nostd run cross_toolchain_check aarch64-unknown-linux-gnu)"
# std but no cross linker: PATH without one (the fake rustc, uname, the shell's builtins)
ln -s "$(command -v uname)" "$T/bin/uname"
check toolchain-no-linker "1:cross: no linker for aarch64-unknown-linux-gnu: aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross, or scripts/install-deps.sh --cross)" \
  "$(PATH=$T/bin RUSTC_LIBDIR=$T/std run cross_toolchain_check aarch64-unknown-linux-gnu)"
ln -s /bin/true "$T/bin/aarch64-linux-gnu-gcc"
check toolchain-complete "0:" "$(PATH=$T/bin RUSTC_LIBDIR=$T/std run cross_toolchain_check aarch64-unknown-linux-gnu)"

checks_done
