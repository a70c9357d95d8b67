#!/bin/bash
# End-to-end tests of vxn-oci-runtime, the runc-compatible CLI: through containerd's own
# runc shim (containerd-shim-runc-v2 with the runtime as its runc binary: the path Docker
# takes), and called directly as a person or conmon calls runc.
# Either backend (VXN_E2E_BACKEND): process (VM-less, tests/e2e/vmless.sh sets it up) or xen.
# Usage: oci-e2e.sh [TEST...|all]. Prints PASS/FAIL per test and "N passed, N failed".
# Env: VXN_OCI_RUNTIME (the binary; default: on PATH), VXN_OCI_ROOT (the runc shim's root,
# default /run/vxn-oci-e2e), plus e2e-lib.sh's.
set -u
# shellcheck source=e2e-lib.sh
. "$(dirname "$(readlink -f "$0")")/e2e-lib.sh"
RUNTIME=${VXN_OCI_RUNTIME:-$(command -v vxn-oci-runtime)}
[ -x "$RUNTIME" ] || { echo "vxn-oci-runtime not found"; exit 1; }
OCI_ROOT=${VXN_OCI_ROOT:-/run/vxn-oci-e2e}
# containerd's runc shim runs the binary with --root <runc-root>/<namespace>.
ROOT=$OCI_ROOT/$NS
RUNC=(--runtime io.containerd.runc.v2 --runc-binary "$RUNTIME" --runc-root "$OCI_ROOT")
WORK=$(mktemp -d /tmp/vxn-oci-e2e.XXXXXX)
DIRECT=$WORK/root
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$ROOT" "$DIRECT"

# The model namespace of a runtime root: as the runtime derives it.
oci_ns() { printf 'oci-%s' "$(printf %s "$(readlink -f "$1")" | sha256sum | cut -c1-8)"; }

# Nothing of container $1 (under root $2) may remain: domain, model state, image, runtime dir, keeper.
oci_clean() {
  local id=$1 root=${2:-$ROOT} ns ok=0
  ns=$(oci_ns "$root")
  no_leftovers "$id" "$ns" 2>/dev/null || {
    if domain_exists "$(domain "$id" "$ns")"; then log "domain of $id still exists"; fi
    if [ -e "$STATE_DIR/$ns/$id" ]; then log "$STATE_DIR/$ns/$id still exists"; fi
    if [ -e "$IMAGE_DIR/$ns/$id" ]; then log "$IMAGE_DIR/$ns/$id still exists"; fi
    ok=1
  }
  if [ -e "$root/$id" ]; then log "$root/$id still exists: $(ls -a "$root/$id")"; ok=1; fi
  if pgrep -f "vxn-oci-runtime .*__keep.* $id --ready-fd" >/dev/null; then log "a keeper of $id is still running"; ok=1; fi
  "${CTR[@]}" task ls -q 2>/dev/null | grep -qx "$id" && { log "task $id still listed"; ok=1; }
  return $ok
}

oci_finish() {
  "${CTR[@]}" task kill -s KILL "$1" >/dev/null 2>&1
  "${CTR[@]}" task delete -f "$1" >/dev/null 2>&1
  "${CTR[@]}" container rm "$1" >/dev/null 2>&1
  oci_clean "$1"
}

# a. the runc shim runs it: output, and the exit status reaches ctr
test_oci_echo() {
  local out rc ok=0
  out=$("${CTR[@]}" run --rm "${RUNC[@]}" "$IMG" oci-echo /bin/echo hello-from-oci)
  rc=$?
  [ "$out" = hello-from-oci ] && [ $rc = 0 ] || { log "out=[$out] rc=$rc"; ok=1; }
  oci_clean oci-echo || ok=1
  "${CTR[@]}" run --rm "${RUNC[@]}" "$IMG" oci-exit sh -c 'exit 7'
  rc=$?
  [ $rc = 7 ] || { log "exit 7 came back as $rc"; ok=1; }
  oci_clean oci-exit || ok=1
  return $ok
}

# b. stdout and stderr apart, argv kept whole, live output
test_oci_stdio() {
  local ok=0 out
  "${CTR[@]}" run --rm "${RUNC[@]}" "$IMG" oci-io sh -c 'echo out; echo err >&2' >"$WORK/o" 2>"$WORK/e"
  [ "$(cat "$WORK/o")" = out ] && [ "$(cat "$WORK/e")" = err ] ||
    { log "out=[$(cat "$WORK/o")] err=[$(cat "$WORK/e")]"; ok=1; }
  # (stdin: through exec below; ctr 1.6's run never closes a runc shim's stdin, runc's neither)
  out=$("${CTR[@]}" run --rm "${RUNC[@]}" "$IMG" oci-argv sh -c 'printf "[%s]" "$@"' x 'a b' '$HOME;*')
  [ "$out" = '[a b][$HOME;*]' ] || { log "argv: out=[$out]"; ok=1; }
  "${CTR[@]}" run --rm "${RUNC[@]}" "$IMG" oci-live sh -c 'echo first; sleep 600' >"$WORK/live" 2>&1 &
  local i seen=1
  for ((i = 0; i < 300; i++)); do
    grep -q first "$WORK/live" && { seen=0; break; }
    sleep 0.2
  done
  [ $seen = 0 ] || { log "no live output: [$(cat "$WORK/live")]"; ok=1; }
  "${CTR[@]}" task kill -s KILL oci-live >/dev/null 2>&1
  wait
  for id in oci-io oci-argv oci-live; do oci_clean $id || ok=1; done
  return $ok
}

# c. a terminal: the master over the console socket, the size reaches the guest
test_oci_tty() {
  local out
  out=$(script -qec "stty rows 33 cols 101; ${CTR[*]} run --rm -t ${RUNC[*]} $IMG oci-tty sh -c 'tty; sleep 1; stty size'" /dev/null | tr -d '\r')
  out=${out//^@/}
  echo "$out" | grep -q '^/dev/pts/[0-9]' && echo "$out" | grep -qx '33 101' || { log "out=[$out]"; return 1; }
  oci_clean oci-tty
}

# d. signals: TERM to a trapping process gives its code; KILL gives 137
test_oci_signals() {
  local ok=0 code
  "${CTR[@]}" run -d "${RUNC[@]}" "$IMG" oci-term sh -c 'trap "exit 42" TERM; while :; do sleep 1; done' >/dev/null
  wait_status oci-term RUNNING || ok=1
  sleep 1
  "${CTR[@]}" task kill -s TERM oci-term
  wait_status oci-term STOPPED 60 || ok=1
  code=$(delete_exit oci-term)
  [ "$code" = 42 ] || { log "TERM: exit $code"; ok=1; }
  "${CTR[@]}" container rm oci-term >/dev/null 2>&1
  oci_clean oci-term || ok=1
  "${CTR[@]}" run -d "${RUNC[@]}" "$IMG" oci-kill sleep 600 >/dev/null
  wait_status oci-kill RUNNING || ok=1
  "${CTR[@]}" task kill -s KILL oci-kill
  wait_status oci-kill STOPPED 60 || ok=1
  code=$(delete_exit oci-kill)
  [ "$code" = 137 ] || { log "KILL: exit $code"; ok=1; }
  "${CTR[@]}" container rm oci-kill >/dev/null 2>&1
  oci_clean oci-kill || ok=1
  return $ok
}

# e. exec through the runc shim: codes, stdio, a terminal; pause, resume, ps
test_oci_exec() {
  local id=oci-exec ok=0 rc out
  "${CTR[@]}" run -d "${RUNC[@]}" "$IMG" $id sleep 1000 >/dev/null
  wait_status $id RUNNING || return 1
  "${CTR[@]}" task exec --exec-id x1 $id sh -c 'echo out; echo err >&2; exit 5' >"$WORK/xo" 2>"$WORK/xe" </dev/null
  rc=$?
  [ $rc = 5 ] && [ "$(cat "$WORK/xo")" = out ] && [ "$(cat "$WORK/xe")" = err ] ||
    { log "exec: rc=$rc out=[$(cat "$WORK/xo")] err=[$(cat "$WORK/xe")]"; ok=1; }
  out=$(printf 'xyz' | "${CTR[@]}" task exec --exec-id x2 $id cat)
  [ "$out" = xyz ] || { log "exec stdin: out=[$out]"; ok=1; }
  out=$(script -qec "stty rows 21 cols 77; ${CTR[*]} task exec -t --exec-id x3 $id sh -c 'tty; sleep 2; stty size'" /dev/null | tr -d '\r')
  out=${out//^@/}
  echo "$out" | grep -q '^/dev/pts/[0-9]' && echo "$out" | grep -qx '21 77' || { log "exec tty: out=[$out]"; ok=1; }
  "${CTR[@]}" task pause $id || ok=1
  [ "$("$RUNTIME" --root "$ROOT" state $id | grep -o '"status": "[a-z]*"')" = '"status": "paused"' ] ||
    { log "state while paused: $("$RUNTIME" --root "$ROOT" state $id)"; ok=1; }
  "${CTR[@]}" task resume $id || ok=1
  out=$("${CTR[@]}" task ps $id | tail -n +2 | awk '{print $1}')
  [ "$out" = "$(pgrep -f "vxn-oci-runtime .*__keep .* $id --ready-fd")" ] || { log "ps: [$out]"; ok=1; }
  oci_finish $id || ok=1
  return $ok
}

# f. the keeper SIGKILLed: the task ends 137, delete removes the VM by its record
test_oci_keeper_killed() {
  local id=oci-kk ok=0 pid code
  "${CTR[@]}" run -d "${RUNC[@]}" "$IMG" $id sleep 1000 >/dev/null
  wait_status $id RUNNING || return 1
  pid=$(pgrep -f "vxn-oci-runtime .*__keep .* $id --ready-fd")
  [ -n "$pid" ] || { log "no keeper"; return 1; }
  domain_exists "$(domain $id "$(oci_ns "$ROOT")")" || { log "no domain before"; ok=1; }
  kill -9 "$pid"
  wait_status $id STOPPED 60 || ok=1
  code=$(delete_exit $id)
  [ "$code" = 137 ] || { log "exit $code"; ok=1; }
  "${CTR[@]}" container rm $id >/dev/null 2>&1
  oci_clean $id || ok=1
  return $ok
}

# A bundle for direct calls: the test image's busybox rootfs, built the same way.
die() { echo "$*" >&2; exit 1; }
# shellcheck source=../lab/lib/testimg.sh
. "$(dirname "$(readlink -f "$0")")/testimg.sh" 2>/dev/null ||
  . "$(dirname "$(readlink -f "$0")")/../lab/lib/testimg.sh"
make_bundle() {
  local dir=$1 args=$2 terminal=${3:-false}
  mkdir -p "$dir"
  make_busybox_rootfs "$dir/rootfs"
  cat >"$dir/config.json" <<EOF
{"ociVersion":"1.0.2","process":{"terminal":$terminal,"user":{"uid":0,"gid":0},"args":$args,
 "env":["PATH=/usr/bin:/bin"],"cwd":"/"},"root":{"path":"rootfs"},"hostname":"direct",
 "linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"mount"}]}}
EOF
}

# g. runc's verbs called directly: create/start/state/kill/delete, the pid file and the
# keeper's exit status, exec, update, run, features, and clear refusals
test_oci_direct() {
  local ok=0 b=$WORK/bundle pid st code out R=("$RUNTIME" --root "$DIRECT" --log "$WORK/log.json" --log-format json)
  make_bundle "$b" '["sh","-c","trap \"exit 3\" TERM; echo started; while :; do sleep 1; done"]'
  [ -x "$b/rootfs/bin/sh" ] || { log "no rootfs"; return 1; }
  "${R[@]}" create --bundle "$b" --pid-file "$WORK/pid" d1 >"$WORK/d1.out" 2>"$WORK/d1.err" || { log "create: $(cat "$WORK/d1.err")"; return 1; }
  pid=$(cat "$WORK/pid")
  [ -d "/proc/$pid" ] && [ "$(wc -l <"$WORK/pid")" = 0 ] || { log "pid file [$pid]"; ok=1; }
  st=$("${R[@]}" state d1)
  echo "$st" | grep -q '"status": "created"' && echo "$st" | grep -q "\"pid\": $pid" || { log "state: $st"; ok=1; }
  "${R[@]}" start d1 || ok=1
  "${R[@]}" state d1 | grep -q '"status": "running"' || { log "not running"; ok=1; }
  for _ in $(seq 100); do grep -q started "$WORK/d1.out" && break; sleep 0.2; done
  grep -q started "$WORK/d1.out" || { log "no output: [$(cat "$WORK/d1.out")]"; ok=1; }
  out=$("${R[@]}" exec d1 sh -c 'echo in-exec; exit 4')
  code=$?
  [ "$out" = in-exec ] && [ $code = 4 ] || { log "exec: [$out] $code"; ok=1; }
  # (the process backend cannot resize: the VM's own size is a no-op, above its maximum is
  # refused; a VM of its own is the limit plus guest_overhead_mib: 208 + 48 = the default 256)
  "${R[@]}" update --memory 208m d1 || { log "update --memory"; ok=1; }
  "${R[@]}" update --memory 100g d1 2>"$WORK/err" && { log "update above the maximum accepted"; ok=1; }
  grep -q "above the maximum" "$WORK/err" || { log "update 100g: $(cat "$WORK/err")"; ok=1; }
  "${R[@]}" update --pids-limit 10 d1 2>"$WORK/err" && { log "update --pids-limit accepted"; ok=1; }
  grep -q "not supported" "$WORK/err" || { log "pids-limit: $(cat "$WORK/err")"; ok=1; }
  "${R[@]}" delete d1 2>"$WORK/err" && { log "deleted while running"; ok=1; }
  "${R[@]}" kill d1 TERM || ok=1
  for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  # our child here: the keeper's status is the container's (reaped by this shell's wait? no: poll)
  "${R[@]}" state d1 | grep -q '"status": "stopped"' || { log "not stopped: $("${R[@]}" state d1)"; ok=1; }
  "${R[@]}" kill d1 KILL 2>"$WORK/err" && { log "kill of a stopped container succeeded"; ok=1; }
  # as Podman calls delete: an environment of XDG_RUNTIME_DIR alone (no PATH)
  env -i XDG_RUNTIME_DIR=/run ${VXN_CONFIG:+VXN_CONFIG=$VXN_CONFIG} "${R[@]}" delete d1 || ok=1
  oci_clean d1 "$DIRECT" || ok=1
  # run: foreground, its status
  make_bundle "$WORK/b2" '["sh","-c","exit 9"]'
  "${R[@]}" run --bundle "$WORK/b2" d2 </dev/null
  code=$?
  [ $code = 9 ] || { log "run: exit $code"; ok=1; }
  oci_clean d2 "$DIRECT" || ok=1
  # refusals and errors say what is wrong, and leave nothing
  "${R[@]}" checkpoint d1 2>"$WORK/err" && ok=1
  grep -q "checkpoint/restore" "$WORK/err" || { log "checkpoint: $(cat "$WORK/err")"; ok=1; }
  "${R[@]}" create --bundle "$b" --preserve-fds 2 d3 2>"$WORK/err" && ok=1
  grep -q "preserve-fds" "$WORK/err" || { log "preserve-fds: $(cat "$WORK/err")"; ok=1; }
  # the host's network (no network namespace in the spec): a VM cannot share dom0's stack
  make_bundle "$WORK/b5" '["true"]'
  sed -i 's/,{"type":"network"}//' "$WORK/b5/config.json"
  "${R[@]}" create --bundle "$WORK/b5" d5 </dev/null 2>"$WORK/err" && { log "host network accepted"; ok=1; }
  grep -q -- "--network=host" "$WORK/err" || { log "host network: $(cat "$WORK/err")"; ok=1; }
  "${R[@]}" delete --force d5 2>/dev/null
  oci_clean d5 "$DIRECT" || ok=1
  "${R[@]}" start nosuch 2>"$WORK/err" && ok=1
  grep -q "does not exist" "$WORK/err" || { log "start nosuch: $(cat "$WORK/err")"; ok=1; }
  "${R[@]}" delete --force nosuch || { log "delete --force of nothing failed"; ok=1; }
  "${R[@]}" create --bundle /nonexistent d4 2>"$WORK/err" && ok=1
  [ -e "$DIRECT/d4" ] && { log "a failed create left its dir"; ok=1; }
  tail -1 "$WORK/log.json" | grep -q '"level":"error"' || { log "no error in the log: $(tail -1 "$WORK/log.json")"; ok=1; }
  "${R[@]}" features | grep -q ociVersionMax || ok=1
  "${R[@]}" --version | grep -q '^vxn-oci-runtime version' || ok=1
  return $ok
}

# set_hooks CONFIG HOOK STAGE...: the spec's hooks, HOOK (JSON, STAGE in it replaced) at each stage
set_hooks() {
  python3 -c '
import json, sys
path, hook, stages = sys.argv[1], sys.argv[2], sys.argv[3:]
spec = json.load(open(path))
spec["hooks"] = {s: [json.loads(hook.replace("STAGE", s))] for s in stages}
json.dump(spec, open(path, "w"))' "$@"
}

# h. the spec's hooks run in dom0 as runc runs them: prestart (Docker's network hook) with a
# pid in a new network namespace of the runtime's making, poststart, poststop; that
# namespace is gone after delete; hooks that would run inside the container are refused
test_oci_hooks() {
  local ok=0 b=$WORK/hooked R=("$RUNTIME" --root "$DIRECT") hook=$WORK/hook.sh netns_before h
  printf '%s\n' '#!/bin/sh' 's=$(cat)' "echo \"\$s\" >\"$WORK/\$1.json\"" \
    'pid=$(echo "$s" | sed -n "s/.*\"pid\":\([0-9]*\).*/\1/p")' \
    "readlink \"/proc/\$pid/ns/net\" >\"$WORK/\$1.ns\"" 'exit 0' >"$hook"
  chmod +x "$hook"
  rm -f "$WORK"/prestart.* "$WORK"/poststart.* "$WORK"/poststop.*
  make_bundle "$b" '["sh","-c","echo hooked"]'
  h='{"path":"'$hook'","args":["hook.sh","STAGE"],"env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}'
  set_hooks "$b/config.json" "$h" prestart poststart poststop
  netns_before=$(ls /run/netns 2>/dev/null | grep -c '^vxn-' || true)
  "${R[@]}" create --bundle "$b" h1 </dev/null >/dev/null 2>"$WORK/err" || { log "create: $(cat "$WORK/err")"; return 1; }
  [ -s "$WORK/prestart.ns" ] || { log "prestart did not run"; ok=1; }
  grep -q '"status":"creating"' "$WORK/prestart.json" || { log "prestart state: $(cat "$WORK/prestart.json")"; ok=1; }
  [ "$(cat "$WORK/prestart.ns")" != "$(readlink /proc/self/ns/net)" ] || { log "prestart's pid is in dom0's network namespace"; ok=1; }
  [ ! -e "$WORK/poststart.json" ] || { log "poststart ran before start"; ok=1; }
  "${R[@]}" start h1 || ok=1
  grep -q '"status":"running"' "$WORK/poststart.json" 2>/dev/null || { log "poststart: $(cat "$WORK/poststart.json" 2>&1)"; ok=1; }
  for _ in $(seq 100); do "${R[@]}" state h1 | grep -q '"status": "stopped"' && break; sleep 0.2; done
  "${R[@]}" delete h1 || ok=1
  grep -q '"status":"stopped"' "$WORK/poststop.json" 2>/dev/null || { log "poststop: $(cat "$WORK/poststop.json" 2>&1)"; ok=1; }
  [ "$(ls /run/netns 2>/dev/null | grep -c '^vxn-' || true)" = "$netns_before" ] || { log "netns left: $(ls /run/netns)"; ok=1; }
  oci_clean h1 "$DIRECT" || ok=1
  # the keeper SIGKILLed: delete still removes the netns the runtime made
  local kpid
  "${R[@]}" create --bundle "$b" --pid-file "$WORK/h4.pid" h4 </dev/null >/dev/null 2>"$WORK/err" ||
    { log "create h4: $(cat "$WORK/err")"; ok=1; }
  kpid=$(cat "$WORK/h4.pid" 2>/dev/null)
  [ -n "$kpid" ] && kill -9 "$kpid"
  for _ in $(seq 50); do [ -d "/proc/$kpid" ] || break; sleep 0.1; done
  "${R[@]}" delete --force h4 || ok=1
  [ "$(ls /run/netns 2>/dev/null | grep -c '^vxn-' || true)" = "$netns_before" ] ||
    { log "netns left after a killed keeper: $(ls /run/netns)"; ok=1; }
  oci_clean h4 "$DIRECT" || ok=1
  # a netns the spec names (Podman's): the hook's pid is in that one
  ip netns add vxn-e2e-hooks || ok=1
  rm -f "$WORK"/prestart.*
  python3 -c '
import json, sys
spec = json.load(open(sys.argv[1]))
for n in spec["linux"]["namespaces"]:
    if n["type"] == "network": n["path"] = "/run/netns/vxn-e2e-hooks"
json.dump(spec, open(sys.argv[1], "w"))' "$b/config.json"
  "${R[@]}" create --bundle "$b" h3 </dev/null >/dev/null 2>"$WORK/err" || { log "create h3: $(cat "$WORK/err")"; ok=1; }
  [ "$(cat "$WORK/prestart.ns" 2>/dev/null)" = "$(ip netns exec vxn-e2e-hooks readlink /proc/self/ns/net)" ] ||
    { log "prestart's pid is not in the spec's netns: $(cat "$WORK/prestart.ns" 2>&1)"; ok=1; }
  "${R[@]}" delete --force h3 || ok=1
  ip netns delete vxn-e2e-hooks
  oci_clean h3 "$DIRECT" || ok=1
  # a hook inside the container's namespaces: a clear refusal, nothing left
  set_hooks "$b/config.json" "$h" createContainer
  "${R[@]}" create --bundle "$b" h2 </dev/null >/dev/null 2>"$WORK/err" && { log "createContainer hook accepted"; ok=1; }
  grep -q "createContainer hook" "$WORK/err" || { log "createContainer: $(cat "$WORK/err")"; ok=1; }
  "${R[@]}" delete --force h2 2>/dev/null
  oci_clean h2 "$DIRECT" || ok=1
  return $ok
}

ALL=(oci_echo oci_stdio oci_tty oci_signals oci_exec oci_keeper_killed oci_direct oci_hooks)
TESTS=("$@")
[ "${TESTS[*]:-all}" = all ] && TESTS=("${ALL[@]}")
"${CTR[@]}" images ls -q | grep -qx "$IMG" || { echo "test image $IMG is not imported"; exit 1; }
for t in "${TESTS[@]}"; do run_test "$t"; done
[ $fail = 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
