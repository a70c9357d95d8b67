# shellcheck shell=bash
# Cache upkeep shared by the build scripts and the lab. Every routine here is written for
# an empty cache, one entry and many (tests/cache-test.sh runs each in all three states):
# no pipeline whose middle stage may legitimately select nothing (grep exits 1 on no
# match, and under `set -o pipefail` that fails the caller on a fresh machine).

# cache_prune DIR PATTERN KEEP OTHERS: remove the entries DIR/PATTERN except KEEP (a path,
# may be empty) and the OTHERS newest others (by mtime). Entries are our own names
# (no newlines). Never fails for an empty or missing DIR.
cache_prune() {
  local dir=$1 pattern=$2 keep=$3 others=$4 entry n=0
  [ -d "$dir" ] || return 0
  local -a entries=()
  # shellcheck disable=SC2206 # PATTERN is a glob of our own names
  entries=($(cd "$dir" && ls -1dt -- $pattern 2> /dev/null || true))
  for entry in "${entries[@]}"; do
    [ "$dir/$entry" = "$keep" ] && continue
    n=$((n + 1))
    [ "$n" -le "$others" ] && continue
    rm -rf -- "${dir:?}/$entry"
  done
  return 0
}
