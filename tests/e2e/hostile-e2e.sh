#!/bin/bash
# A hostile guest against the shim, through real containerd and ctr: the process backend
# runs tests/hostile-agent (vxn-hostile-agent) instead of vxn-agent, which lies, floods and
# stalls according to the container id. tests/e2e/vmless.sh sets this up.
# Every case asserts what a user sees: the task ends, memory stays bounded, errors stay
# readable, nothing is left behind.
# Usage: hostile-e2e.sh [TEST...]   Env: as shim-e2e.sh, plus VXN_CONTAINERD_LOG.
set -u
# shellcheck source=e2e-lib.sh
. "$(dirname "$(readlink -f "$0")")/e2e-lib.sh"
SUITE_PREFIX=hostile_
WORK=$(mktemp -d /tmp/vxn-hostile.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# finish ID: SIGKILL, delete, remove: must work whatever the guest does.
finish() {
  "${CTR[@]}" task kill -s KILL "$1" >/dev/null 2>&1
  local i
  for ((i = 0; i < 150; i++)); do [ "$(status_of "$1")" = RUNNING ] || break; sleep 0.2; done
  "${CTR[@]}" task delete -f "$1" >/dev/null 2>&1
  "${CTR[@]}" container rm "$1" >/dev/null 2>&1
  no_leftovers "$1"
}

run_bg() {
  "${CTR[@]}" run -d --runtime "$RT" "$IMG" "$1" sleep 1000 >/dev/null || return 1
  [ "$(status_of "$1")" = RUNNING ]
}

# A guest that acks SIGKILL and never reports the exit: the task still stops (137) within
# the kill grace period (5 s in vmless.sh's config), and Delete works.
test_never_exit() {
  local id=hostile-never-exit t0 i ok=0 err
  run_bg "$id" || return 1
  t0=$SECONDS
  "${CTR[@]}" task kill -s KILL "$id" || ok=1
  for ((i = 0; i < 150; i++)); do [ "$(status_of "$id")" = STOPPED ] && break; sleep 0.2; done
  [ "$(status_of "$id")" = STOPPED ] || { log "still $(status_of "$id") $((SECONDS - t0))s after SIGKILL"; ok=1; }
  log "stopped $((SECONDS - t0))s after SIGKILL"
  err=$("${CTR[@]}" task delete "$id" 2>&1) || { log "delete: $err"; ok=1; }
  [[ $err =~ exit\ code\ 137 ]] || { log "delete said [$err] (want exit code 137)"; ok=1; }
  "${CTR[@]}" container rm "$id" >/dev/null 2>&1
  no_leftovers "$id" || ok=1
  return $ok
}

# A guest that never answers Start: ctr gets an error within the call timeout (10 s), and
# nothing is left.
test_silent_start() {
  local id=hostile-silent-start t0 err rc ok=0
  t0=$SECONDS
  err=$(timeout 120 "${CTR[@]}" run --rm --runtime "$RT" "$IMG" "$id" true 2>&1)
  rc=$?
  log "ctr run: rc=$rc after $((SECONDS - t0))s: $(echo "$err" | tail -1 | cut -c1-160)"
  [ $rc != 0 ] && [ $rc != 124 ] || { log "ctr run did not fail in time"; ok=1; }
  echo "$err" | grep -q "did not answer start" || { log "error lacks the reason: [$err]"; ok=1; }
  finish "$id" || ok=1
  return $ok
}

# A guest that grants 4 GiB of credit and then stops reading its channel, while the client
# pipes 256 MiB into stdin: the shim's memory stays bounded, and SIGKILL still ends the task.
test_no_read() {
  local id=hostile-no-read shim max=0 r i ok=0
  head -c $((256 << 20)) /dev/zero | "${CTR[@]}" run --rm --runtime "$RT" "$IMG" "$id" cat >/dev/null 2>&1 &
  local ctrpid=$!
  for ((i = 0; i < 100; i++)); do shim=$(shim_pid "$id"); [ -n "$shim" ] && [ "$(status_of "$id")" = RUNNING ] && break; sleep 0.1; done
  [ -n "$shim" ] || { log "no shim"; kill $ctrpid; return 1; }
  for ((i = 0; i < 25; i++)); do
    r=$(rss_kib "$shim")
    [ "$r" -gt "$max" ] && max=$r
    sleep 0.2
  done
  log "shim VmRSS peak ${max} kB while the guest read nothing"
  [ "$max" -lt $((48 << 10)) ] || { log "shim grew to ${max} kB"; ok=1; }
  "${CTR[@]}" task kill -s KILL "$id" || ok=1
  for ((i = 0; i < 150; i++)); do kill -0 $ctrpid 2>/dev/null || break; sleep 0.2; done
  kill -0 $ctrpid 2>/dev/null && { log "ctr run still waiting 30 s after SIGKILL"; kill $ctrpid; ok=1; }
  wait $ctrpid
  finish "$id" || ok=1
  return $ok
}

# A guest that raises OOM events by the thousand: containerd gets a handful (rate limit),
# and the shim keeps answering.
test_oom_flood() {
  local id=hostile-oom-flood evpid n ok=0
  "${CTR[@]}" events >"$WORK/events" 2>&1 &
  evpid=$!
  run_bg "$id" || { kill $evpid; return 1; }
  sleep 3
  "${CTR[@]}" task ps "$id" >/dev/null || { log "the shim stopped answering"; ok=1; }
  kill $evpid 2>/dev/null
  n=$(grep -c "/tasks/oom.*$id" "$WORK/events")
  log "/tasks/oom events published in ~3 s of flooding: $n"
  [ "$n" -ge 1 ] && [ "$n" -le 12 ] || ok=1
  finish "$id" || ok=1
  return $ok
}

# A 4 MiB answer fails that request with a clear error; the connection and task live on.
test_big_answer() {
  local id=hostile-big-answer err ok=0
  run_bg "$id" || return 1
  err=$("${CTR[@]}" task ps "$id" 2>&1) && { log "ps succeeded"; ok=1; }
  echo "$err" | grep -q "message limit" || { log "ps error: [$err]"; ok=1; }
  "${CTR[@]}" task ps "$id" >/dev/null || { log "the task is unreachable after the oversized answer"; ok=1; }
  finish "$id" || ok=1
  return $ok
}

# 100000 processes: ctr task ps lists them all (the answer comes in bounded pages).
test_many_pids() {
  local id=hostile-many-pids n ok=0
  run_bg "$id" || return 1
  n=$("${CTR[@]}" task ps "$id" | tail -n +2 | grep -c '^[0-9]')
  [ "$n" = 100000 ] || { log "ps listed $n processes"; ok=1; }
  finish "$id" || ok=1
  return $ok
}

# Endless pages of processes with 1000-byte command lines (each page near the frame limit):
# `ctr task ps` fails clearly, and the shim's memory stays bounded (peak RSS).
test_fat_pids() {
  local id=hostile-fat-pids err ok=0 pid hwm
  run_bg "$id" || return 1
  err=$(timeout 120 "${CTR[@]}" task ps "$id" 2>&1 >/dev/null) && { log "ps succeeded"; ok=1; }
  case $err in *"bytes of process list"*) ;; *) log "ps said [${err:0:300}]"; ok=1 ;; esac
  pid=$(shim_pid "$id")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  log "shim peak RSS ${hwm:-?} KiB"
  [ -n "$hwm" ] && [ "$hwm" -lt 262144 ] || { log "the shim's peak RSS is ${hwm:-unknown} KiB"; ok=1; }
  finish "$id" || ok=1
  return $ok
}

# An error text that tries to forge log lines and terminal escapes, 100 KiB long: ctr shows
# it escaped and capped, and the shim's log (in containerd's) gains no forged line.
test_forge() {
  local id=hostile-forge err ok=0
  run_bg "$id" || return 1
  err=$("${CTR[@]}" task exec --exec-id x "$id" true 2>&1 </dev/null) && { log "exec succeeded"; ok=1; }
  [ "${#err}" -lt 2048 ] || { log "the error shown is ${#err} bytes"; ok=1; }
  echo "$err" | grep -q 'forged\\ntime=' || { log "error not escaped: [${err:0:200}]"; ok=1; }
  if [ -n "${VXN_CONTAINERD_LOG:-}" ] && grep -q '^time="2026-01-01T00:00:00Z"' "$VXN_CONTAINERD_LOG"; then
    log "a forged line reached containerd's log"
    ok=1
  fi
  printf '%s' "$err" | grep -q $'\x1b' && { log "a terminal escape reached the user"; ok=1; }
  finish "$id" || ok=1
  return $ok
}

ALL=(never_exit silent_start no_read oom_flood big_answer many_pids fat_pids forge)
TESTS=("$@")
case "${TESTS[*]:-all}" in all | ci) TESTS=("${ALL[@]}") ;; esac
for t in "${TESTS[@]}"; do run_test "$t"; done
[ $fail = 0 ] || echo "failed: ${failed[*]}"
echo "hostile: $pass passed, $fail failed"
[ $fail = 0 ]
