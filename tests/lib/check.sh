# shellcheck shell=bash
# The host-only script tests' frame (tests/*-test.sh): a scratch directory $T removed at
# exit, `check NAME WANT GOT` printing PASS/FAIL, and `checks_done` printing the counts
# and failing if any check did.
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
check() {  # check NAME WANT GOT
  if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "PASS $1"
  else fail=$((fail + 1)); echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fi
}
checks_done() {
  echo "$pass passed, $fail failed"
  [ "$fail" = 0 ]
}
