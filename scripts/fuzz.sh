#!/bin/bash
# Run every fuzz target of runtime-core/fuzz for a bounded time each (default 60 s):
# the frame decoder and the connection codec, the host's handshake, and the host-side
# multiplexer fed a guest's frames. Crashes fail the run and leave their input under
# runtime-core/fuzz/artifacts/TARGET/.
# Built as `cargo fuzz build --release` builds (libFuzzer's coverage passes, AddressSanitizer),
# by cargo itself: a fresh machine then needs no cargo-fuzz, whose own install costs minutes;
# and with cargo's default codegen units, not one: runs of seconds to minutes gain less from
# the faster binary than the single unit costs to build.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (VXN_FUZZ_OPT: the build's opt-level, 1;
# 3 for long runs, where the faster binary pays)
set -euo pipefail
cd "$(dirname "$0")/../runtime-core/fuzz"
secs=${1:-60}
[ $# -gt 0 ] && shift
# The sanitizer flag is unstable: this lets stable rustc take it, as cargo-fuzz does.
export RUSTC_BOOTSTRAP=1
triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing
  -Zsanitizer=address
)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -vx vxn-runtime-core-fuzz)
# One build of every target (--target: the flags then skip build scripts and proc macros),
# then each runs for its time.
# opt-level 1: the build (every dependency, instrumented) is most of a short run's time
RUSTFLAGS="${flags[*]}" cargo build --release --bins --target "$triple" \
  --config 'profile.release.debug="line-tables-only"' --config "profile.release.opt-level=${VXN_FUZZ_OPT:-1}" 2>&1 | tail -2 >&2
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0
for t in "${targets[@]}"; do
  t0=$SECONDS
  mkdir -p "corpus/$t" "artifacts/$t"
  "target/$triple/release/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -rss_limit_mb=2048 \
    -print_final_stats=1 "corpus/$t" 2>"fuzz-$t.log" || { tail -40 "fuzz-$t.log" >&2; echo "fuzz: $t FAILED" >&2; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz-$t.log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $t ok, $runs runs in $((SECONDS - t0))s"
  rm -f "fuzz-$t.log"
done
