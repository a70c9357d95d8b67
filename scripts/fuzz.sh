#!/bin/bash
# Run every fuzz target of runtime-core/fuzz for a bounded time each (default 60 s):
# the frame decoder and the connection codec, the host's handshake, and the host-side
# multiplexer fed a guest's frames. Installs cargo-fuzz on first use. Crashes fail the
# run and leave their input under runtime-core/fuzz/artifacts/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../runtime-core/fuzz"
secs=${1:-60}
[ $# -gt 0 ] && shift
# cargo-fuzz passes sanitizer flags only nightly accepts; this lets stable take them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz@0.13.2 >&2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
# One build of every target, then each runs for its time.
cargo fuzz build --release 2>&1 | tail -2 >&2
for t in "${targets[@]}"; do
  t0=$SECONDS
  mkdir -p "corpus/$t"
  cargo fuzz run --release "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    -print_final_stats=1 2>"fuzz-$t.log" || { tail -40 "fuzz-$t.log" >&2; echo "fuzz: $t FAILED" >&2; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz-$t.log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $t ok, $runs runs in $((SECONDS - t0))s"
  rm -f "fuzz-$t.log"
done
