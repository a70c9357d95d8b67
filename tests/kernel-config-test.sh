#!/bin/bash
# Host-only checks of the guest kernel's configuration (no kernel build, no root):
#  - scripts/build-guest-kernel.sh --check-config, the check every build runs after Kconfig:
#    a fragment fully kept passes; a `=y` that Kconfig turned off, a symbol it does not know
#    (renamed or a dependency missing), a `=n` that ended up on and a changed string are each
#    reported by name, and fail;
#  - kernel/*.config: no symbol is given two different values across the fragments one
#    architecture combines (the later line would win without a word).
# Prints PASS/FAIL per check and "N passed, N failed"; exits non-zero on a failure.
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
BUILD=$REPO/scripts/build-guest-kernel.sh
# shellcheck source=lib/check.sh
. "$REPO/tests/lib/check.sh"

printf '# a comment\nCONFIG_A=y\nCONFIG_B=n\nCONFIG_S="vxn"\n' > "$T/a.config"
printf 'CONFIG_C=y\n' > "$T/b.config"
printf 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S="vxn"\nCONFIG_C=y\nCONFIG_OTHER=y\n' > "$T/kept"
out=$("$BUILD" --check-config "$T/kept" "$T/a.config" "$T/b.config" 2>&1) && rc=0 || rc=$?
check kept-passes "0:" "$rc:$out"

printf '# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_S="other"\n' > "$T/lost"
out=$("$BUILD" --check-config "$T/lost" "$T/a.config" "$T/b.config" 2>&1) && rc=0 || rc=$?
check lost-fails 1 "$rc"
check lost-lists "CONFIG_A: wanted y, got n|CONFIG_B: wanted n, got y|CONFIG_C: wanted y, got n|CONFIG_S: wanted \"vxn\", got \"other\"" \
  "$(echo "$out" | sed 's/^ *//' | LC_ALL=C sort | paste -sd'|')"

out=$("$BUILD" --check-config "$T/kept" 2>&1) && rc=0 || rc=$?
check no-fragment-refused 1 "$rc"

# conflicts ARCH: symbols given two different values in vxn.config + ARCH.config
conflicts() {
  grep -h '^CONFIG_' "$REPO/kernel/vxn.config" "$REPO/kernel/$1.config" | LC_ALL=C sort -u |
    sed 's/=.*//' | uniq -d | paste -sd' '
}
check fragments-x86_64-consistent "" "$(conflicts x86_64)"
check fragments-arm64-consistent "" "$(conflicts arm64)"
check fragments-no-modules "CONFIG_MODULES=n" "$(grep -h '^CONFIG_MODULES=' "$REPO/kernel/vxn.config")"

checks_done
