# shellcheck shell=bash
# Kubernetes CRI tests of the shim in dom0 (xen backend only): sourced by shim-e2e.sh,
# which runs them as cri_* tests. Through containerd's CRI plugin with runtime handler
# `vxn` (config/containerd-vxn.toml) and vxn-crictl (tests/cri-client): a pod is one
# DomU, its containers join it, its network comes from CNI (Debian's bridge + host-local
# plugins, config below; no ipMasq/portmap: dom0 has nftables, not iptables). No registry
# is reachable: the test image is imported into k8s.io, its pause variant tagged as CRI's
# sandbox image (vxn never runs it; runc pods do).

CRI=(vxn-crictl)
CRI_NS=k8s.io
CRI_SUBNET=10.89.0.0/24
CRI_WORK=${WORK:-/tmp}/cri
CRI_LOGS=/var/log/vxn-e2e-pods

# cri_setup: the vxn handler and CNI in containerd (restarted only when they change),
# the images in k8s.io. Idempotent; run before the first cri_* test.
CRI_READY=0
cri_setup() {
  [ $CRI_READY = 1 ] && return 0
  local changed=0 f sandbox_image out
  mkdir -p /etc/cni/net.d "$CRI_WORK" "$CRI_LOGS"
  # the project's installer, as a user runs it (Debian's config already points CNI at
  # /usr/lib/cni, where containernetworking-plugins installs)
  out=$(VXN_CONFIG_SRC=/usr/local/bin install-containerd-config.sh) || { log "install-containerd-config: $out"; return 1; }
  case $out in *"already has"*) ;; *) changed=1 ;; esac
  f=/etc/cni/net.d/10-vxn-e2e.conflist
  [ -f $f ] || {
    cat > $f <<EOC
{"cniVersion": "0.4.0", "name": "vxn-e2e", "plugins": [
  {"type": "bridge", "bridge": "cni-vxn0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$CRI_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOC
    changed=1
  }
  if [ $changed = 1 ]; then
    systemctl restart containerd
    for _ in $(seq 60); do "${CRI[@]}" version >/dev/null 2>&1 && break; sleep 1; done
  fi
  "${CRI[@]}" version >/dev/null || { log "CRI does not answer"; return 1; }
  ctr -n $CRI_NS images ls -q | grep -qx "$IMG" || ctr -n $CRI_NS images import /root/vxn-test.tar >/dev/null
  # 1.x: sandbox_image = "..."; 2.x: pinned_images' sandbox = '...'
  sandbox_image=$(containerd config dump 2>/dev/null | awk -F"[\"']" '/^ *(sandbox_image|sandbox) *=/ {print $2; exit}')
  [ -n "$sandbox_image" ] || { log "no sandbox_image in containerd's config"; return 1; }
  # the test image's pause variant: a real pause process for runc pods (the bench's yardstick)
  ctr -n $CRI_NS images ls -q | grep -qx "$sandbox_image" ||
    ctr -n $CRI_NS images tag "${IMG%:*}:pause" "$sandbox_image" >/dev/null
  CRI_READY=1
}

# pod_json NAME: a pod config with logs under $CRI_LOGS/NAME.
pod_json() {
  local name=$1
  rm -rf "${CRI_LOGS:?}/$name"   # CRI appends to a log path that exists
  mkdir -p "$CRI_LOGS/$name"
  cat > "$CRI_WORK/$name-pod.json" <<EOP
{"metadata": {"name": "$name", "namespace": "e2e", "uid": "uid-$name", "attempt": 0},
 "hostname": "$name", "log_directory": "$CRI_LOGS/$name",
 "linux": {}}
EOP
  echo "$CRI_WORK/$name-pod.json"
}

# ctr_json NAME ATTEMPT IMAGE CMD...: a container config running CMD, with the mounts of
# $CRI_MOUNTS (a JSON list, default none), a memory limit of $CRI_MEMORY (64 MiB) and the
# security context $CRI_SECURITY (a JSON object, default none).
ctr_json() {
  local name=$1 attempt=$2 image=$3 args
  shift 3
  args=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")
  cat > "$CRI_WORK/$name.json" <<EOC
{"metadata": {"name": "$name", "attempt": $attempt}, "image": {"image": "$image"},
 "command": $args, "log_path": "$name-$attempt.log", "mounts": ${CRI_MOUNTS:-[]},
 "linux": {"resources": {"memory_limit_in_bytes": ${CRI_MEMORY:-67108864}}${CRI_SECURITY:+, \"security_context\": $CRI_SECURITY}}}
EOC
  echo "$CRI_WORK/$name.json"
}

# json_field FILE-OR-- KEY...: a field of vxn-crictl's JSON output.
json_field() {
  python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1:]: v = v.get(k, "") if isinstance(v, dict) else ""
print(v)' "$@"
}

# run_pod NAME: runp; prints the pod id.
run_pod() { "${CRI[@]}" runp --runtime vxn "$(pod_json "$1")"; }

# start_in POD NAME ATTEMPT CMD...: create and start a container; prints its id.
start_in() {
  local pod=$1 name=$2 attempt=$3 id
  shift 3
  id=$("${CRI[@]}" create "$pod" "$(ctr_json "$name" "$attempt" "$IMG" "$@")" "$CRI_WORK/$(pod_name "$pod")-pod.json") || return 1
  "${CRI[@]}" start "$id" >/dev/null || return 1
  echo "$id"
}
pod_name() { "${CRI[@]}" inspectp "$1" | json_field name; }

# wait_exited ID [SECONDS]: until the container is EXITED.
wait_exited() {
  local i
  for ((i = 0; i < ${2:-120}; i++)); do
    [ "$("${CRI[@]}" inspect "$1" | json_field state)" = CONTAINER_EXITED ] && return 0
    sleep 1
  done
  log "container $1 never exited: $("${CRI[@]}" inspect "$1")"
  return 1
}

# pod_gone POD NAME: nothing of the pod is left: domain, netns, state, images, mounts, leases.
pod_gone() {
  local pod=$1 ok=0
  if domain_exists "$(domain "$pod" $CRI_NS)"; then log "domain of pod $pod still exists"; ok=1; fi
  if [ -n "$(ls -A "$STATE_DIR/$CRI_NS" 2>/dev/null)" ]; then log "state left: $(ls "$STATE_DIR/$CRI_NS")"; ok=1; fi
  if [ -n "$(ls -A "$IMAGE_DIR/$CRI_NS" 2>/dev/null)" ]; then log "images left: $(ls "$IMAGE_DIR/$CRI_NS")"; ok=1; fi
  if grep -q "$STATE_DIR/$CRI_NS\|$IMAGE_DIR/$CRI_NS" /proc/mounts; then log "mounts left"; ok=1; fi
  if [ "$(domain_count)" != 0 ]; then log "domains left: $(xl list | tail -n +2)"; ok=1; fi
  if ip netns list | grep -q cni-; then log "netns left: $(ip netns list)"; ok=1; fi
  if ip -o link | grep -q 'vif[0-9]'; then log "vif left: $(ip -o link | grep vif)"; ok=1; fi
  return $ok
}

cri_cleanup() {
  local p
  for p in $("${CRI[@]}" pods -q 2>/dev/null); do
    "${CRI[@]}" stopp "$p" >/dev/null 2>&1
    "${CRI[@]}" rmp "$p" >/dev/null 2>&1
  done
}

# c1. A pod of two containers: one serves on localhost, the other fetches it; the
# fetcher's stdout is in its CRI log; exec-sync gives output and exit code; stats; the
# pod IP (CNI's) is reachable from dom0, and so is the server from the pod namespace's
# localhost (as CRI's PortForward reaches it); removing the pod leaves nothing.
test_cri_pod() {
  cri_setup || return 1
  local pod srv cli out ip ns rc ok=0 t0=$SECONDS
  pod=$(run_pod e2e-pod) || { log "runp failed"; return 1; }
  srv=$(start_in "$pod" srv 0 sh -c 'mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www') ||
    { log "server did not start"; cri_cleanup; return 1; }
  log "pod + first container started in $((SECONDS - t0)) s"
  cli=$(start_in "$pod" cli 0 sh -c 'for i in $(seq 60); do timeout 5 wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 1; done; exit 1') ||
    { log "client did not start"; ok=1; }
  [ $ok = 0 ] && wait_exited "$cli" || ok=1
  [ "$("${CRI[@]}" inspect "$cli" | json_field exit_code)" = 0 ] || { log "client: $("${CRI[@]}" inspect "$cli")"; ok=1; }
  out=$("${CRI[@]}" logs "$cli")
  [ "$out" = hello-from-pod ] || { log "client's log: [$out]"; ok=1; }
  out=$("${CRI[@]}" exec-sync "$srv" sh -c 'echo exec-out; echo exec-err >&2; exit 3' 2>"$CRI_WORK/err")
  rc=$?
  [ "$out" = exec-out ] && [ $rc = 3 ] && grep -qx exec-err "$CRI_WORK/err" ||
    { log "exec-sync: out=[$out] rc=$rc err=[$(cat "$CRI_WORK/err")]"; ok=1; }
  out=$("${CRI[@]}" exec-sync "$srv" hostname)
  [ "$out" = e2e-pod ] || { log "hostname: [$out]"; ok=1; }
  out=$("${CRI[@]}" stats "$srv")
  [ "$(echo "$out" | awk '{print $3}')" -gt 0 ] 2>/dev/null || { log "stats: [$out]"; ok=1; }
  ip=$("${CRI[@]}" inspectp "$pod" | json_field network ip)
  case $ip in 10.89.0.*) ;; *) log "pod ip: [$ip]"; ok=1 ;; esac
  out=$(timeout 20 busybox wget -q -O - "http://$ip:8080/" 2>&1)
  [ "$out" = hello-from-pod ] || { log "dom0 -> pod $ip: [$out]"; ok=1; }
  out=$("${CRI[@]}" exec-sync "$srv" sh -c 'ip -o -4 addr show eth0')
  echo "$out" | grep -q "inet $ip/24" || { log "guest eth0: [$out]"; ok=1; }
  # CRI's PortForward dials localhost:PORT in the pod's namespace (kubectl port-forward)
  ns=$(ip netns list | awk '/^cni-/ {print $1; exit}')
  out=$(timeout 20 ip netns exec "$ns" busybox wget -q -O - "http://127.0.0.1:8080/" 2>&1)
  [ "$out" = hello-from-pod ] || { log "the pod namespace's localhost:8080 ($ns): [$out]"; ok=1; }
  "${CRI[@]}" stopp "$pod" >/dev/null || { log "stopp failed"; ok=1; }
  "${CRI[@]}" rmp "$pod" >/dev/null || { log "rmp failed"; ok=1; }
  pod_gone "$pod" || ok=1
  return $ok
}

# c2. A container restarted in the same pod (a new attempt, the same disk slot), while
# another keeps running; per-container exit codes.
test_cri_restart() {
  cri_setup || return 1
  local pod a b1 b2 ok=0
  pod=$(run_pod e2e-restart) || { log "runp failed"; return 1; }
  a=$(start_in "$pod" keep 0 sleep 3000) || { log "keep did not start"; cri_cleanup; return 1; }
  b1=$(start_in "$pod" job 0 sh -c 'echo first; exit 4') || ok=1
  [ $ok = 0 ] && wait_exited "$b1" || ok=1
  [ "$("${CRI[@]}" inspect "$b1" | json_field exit_code)" = 4 ] || { log "job 0: $("${CRI[@]}" inspect "$b1")"; ok=1; }
  "${CRI[@]}" rm "$b1" >/dev/null || { log "rm job 0 failed"; ok=1; }
  b2=$(start_in "$pod" job 1 sh -c 'echo second') || ok=1
  [ $ok = 0 ] && wait_exited "$b2" || ok=1
  [ "$("${CRI[@]}" logs "$b2")" = second ] || { log "job 1 log: [$("${CRI[@]}" logs "$b2")]"; ok=1; }
  [ "$("${CRI[@]}" inspect "$a" | json_field state)" = CONTAINER_RUNNING ] || { log "keep stopped"; ok=1; }
  "${CRI[@]}" stop --timeout 5 "$a" >/dev/null || { log "stop keep failed"; ok=1; }
  [ "$("${CRI[@]}" inspect "$a" | json_field exit_code)" = 137 ] || [ "$("${CRI[@]}" inspect "$a" | json_field exit_code)" = 143 ] ||
    { log "keep after stop: $("${CRI[@]}" inspect "$a")"; ok=1; }
  cri_cleanup
  pod_gone "$pod" || ok=1
  return $ok
}

# c3. A container whose image is missing fails clearly and the pod lives on; a pod
# whose runtime handler is unknown is refused.
test_cri_bad_image() {
  cri_setup || return 1
  local pod err ok=0
  pod=$(run_pod e2e-bad) || { log "runp failed"; return 1; }
  if "${CRI[@]}" create "$pod" "$(ctr_json missing 0 vxn.invalid/missing:1 true)" "$CRI_WORK/e2e-bad-pod.json" 2>"$CRI_WORK/err" >/dev/null; then
    log "a container of a missing image was created"; ok=1
  fi
  err=$(cat "$CRI_WORK/err")
  echo "$err" | grep -q 'vxn.invalid/missing' || { log "error does not name the image: $err"; ok=1; }
  [ "$("${CRI[@]}" inspectp "$pod" | json_field state)" = SANDBOX_READY ] || { log "pod not ready after"; ok=1; }
  cri_cleanup
  pod_gone "$pod" || ok=1
  return $ok
}

# c4. Volumes: a host directory shared by two containers of a pod (an emptyDir: one
# writes, the other reads, dom0 sees the file), a read-only one (writes fail in the guest,
# the host copy is untouched); removing the pod leaves the host directories' contents.
test_cri_volumes() {
  cri_setup || return 1
  local pod w r out ok=0 vol=$CRI_WORK/vol-shared ro=$CRI_WORK/vol-ro
  rm -rf "$vol" "$ro"
  mkdir -p "$vol" "$ro"
  echo setting-1 > "$ro/setting"
  pod=$(run_pod e2e-vol) || { log "runp failed"; return 1; }
  w=$(CRI_MOUNTS="[{\"container_path\": \"/data\", \"host_path\": \"$vol\"}]" \
    start_in "$pod" writer 0 sh -c 'echo written-in-pod > /data/from-writer; sleep 3000') ||
    { log "writer did not start"; ok=1; }
  r=$(CRI_MOUNTS="[{\"container_path\": \"/data\", \"host_path\": \"$vol\"},
      {\"container_path\": \"/config\", \"host_path\": \"$ro\", \"readonly\": true}]" \
    start_in "$pod" reader 0 sh -c 'for i in $(seq 60); do [ -f /data/from-writer ] && break; sleep 1; done
      cat /data/from-writer /config/setting; touch /config/x 2>/dev/null && echo ro-broken || echo ro-ok') ||
    { log "reader did not start"; ok=1; }
  [ $ok = 0 ] && wait_exited "$r" || ok=1
  out=$("${CRI[@]}" logs "$r")
  [ "$out" = "$(printf 'written-in-pod\nsetting-1\nro-ok')" ] || { log "reader's log: [$out]"; ok=1; }
  [ "$(cat "$vol/from-writer" 2>/dev/null)" = written-in-pod ] || { log "dom0 does not see the write"; ok=1; }
  [ ! -e "$ro/x" ] || { log "a read-only volume was written"; ok=1; }
  cri_cleanup
  pod_gone "$pod" || ok=1
  [ "$(cat "$vol/from-writer" 2>/dev/null)" = written-in-pod ] && [ "$(cat "$ro/setting")" = setting-1 ] ||
    { log "removing the pod touched the host directories"; ok=1; }
  if [ -n "$(ls -A /var/lib/vxn/.shares/$CRI_NS 2>/dev/null)" ]; then log "shares left: $(ls /var/lib/vxn/.shares/$CRI_NS)"; ok=1; fi
  return $ok
}

# c5. A container's memory limit holds inside the pod's VM: over it, that container is
# OOM-killed (137, reason OOMKilled: the OOM event reached it before its exit) and the
# others of the pod run on.
test_cri_oom() {
  cri_setup || return 1
  local pod keep hog ok=0 st
  pod=$(run_pod e2e-oom) || { log "runp failed"; return 1; }
  keep=$(start_in "$pod" keep 0 sleep 3000) || { log "keep did not start"; cri_cleanup; return 1; }
  # tail buffers /dev/zero (no newline) until the container's limit stops it
  hog=$(CRI_MEMORY=$((32 << 20)) start_in "$pod" hog 0 tail /dev/zero) || ok=1
  [ $ok = 0 ] && wait_exited "$hog" || ok=1
  st=$("${CRI[@]}" inspect "$hog")
  [ "$(echo "$st" | json_field exit_code)" = 137 ] && [ "$(echo "$st" | json_field reason)" = OOMKilled ] ||
    { log "hog: $(echo "$st" | head -c 600)"; ok=1; }
  [ "$("${CRI[@]}" inspect "$keep" | json_field state)" = CONTAINER_RUNNING ] || { log "keep died with the hog"; ok=1; }
  cri_cleanup
  pod_gone "$pod" || ok=1
  return $ok
}

# c6. The pod's shim SIGKILLed with a container and a volume in the pod: containerd's
# delete action cleans up by record and by name; CRI then removes the pod, and nothing is
# left (domain, disk, netns, vif, share, mounts, state) while the volume's files stay.
test_cri_shim_killed() {
  cri_setup || return 1
  local pod c pid ok=0 vol=$CRI_WORK/vol-killed
  rm -rf "$vol"; mkdir -p "$vol"; echo keep-me > "$vol/file"
  pod=$(run_pod e2e-killed) || { log "runp failed"; return 1; }
  c=$(CRI_MOUNTS="[{\"container_path\": \"/data\", \"host_path\": \"$vol\"}]" \
    start_in "$pod" app 0 sleep 3000) || { log "app did not start"; ok=1; }
  pid=$(shim_pid "$pod")
  [ -n "$pid" ] || { log "no shim for pod $pod"; cri_cleanup; return 1; }
  kill -9 "$pid"
  for _ in $(seq 60); do
    [ "$("${CRI[@]}" inspect "$c" 2>/dev/null | json_field state)" = CONTAINER_EXITED ] && break
    sleep 1
  done
  cri_cleanup
  # the delete action's teardown runs detached (containerd kills the action after 5 s)
  for _ in $(seq 90); do pod_gone "$pod" 2>/dev/null && break; sleep 1; done
  pod_gone "$pod" || ok=1
  [ "$(cat "$vol/file" 2>/dev/null)" = keep-me ] || { log "the volume's file is gone"; ok=1; }
  if [ -n "$(ls -A /var/lib/vxn/.shares/$CRI_NS 2>/dev/null)" ]; then log "shares left: $(ls /var/lib/vxn/.shares/$CRI_NS)"; ok=1; fi
  return $ok
}

# What kubelet puts in every container's security context unless the pod says otherwise
# (its own PID namespace, the default masked and read-only paths); CRI's defaults for an
# unset context are the pod's PID namespace and no paths.
KUBELET_SC='{"namespace_options": {"pid": "CONTAINER"},
 "masked_paths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
   "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
   "/sys/devices/virtual/powercap"],
 "readonly_paths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]}'

# c8. Containers of one pod are apart as runc keeps them (kubelet's defaults: NamespaceMode
# CONTAINER, default capabilities, the default masked and read-only paths): a container
# sees only its own processes, is its own PID 1, cannot reach another's files through
# /proc/PID/root, cannot write /proc/sys or read /proc/kcore; seccomp profiles hold (the
# runtime's default, and a node's own that denies mkdir).
test_cri_isolation() {
  cri_setup || return 1
  local pod a b out ok=0
  pod=$(run_pod e2e-iso) || { log "runp failed"; return 1; }
  b=$(CRI_SECURITY=$KUBELET_SC start_in "$pod" holder 0 sh -c 'echo b-secret > /b-file; exec sleep 3000') ||
    { log "holder did not start"; ok=1; }
  a=$(CRI_SECURITY=$KUBELET_SC start_in "$pod" spy 0 sh -c 'sleep 2
    cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\0" " " | grep -q "slee[p] 3000" && echo SEES-B
    for p in /proc/[0-9]*; do cat "$p/root/b-file" 2>/dev/null; done
    v=$(cat /proc/sys/kernel/core_pattern); { echo "$v" > /proc/sys/kernel/core_pattern; } 2>/dev/null && echo WROTE-SYSCTL
    [ "$(head -c 16 /proc/kcore 2>/dev/null | wc -c)" = 0 ] || echo READ-KCORE
    echo "pid1=$(cat /proc/1/comm)"') || { log "spy did not start"; ok=1; }
  [ $ok = 0 ] && wait_exited "$a" || ok=1
  out=$("${CRI[@]}" logs "$a" 2>&1)
  [ "$out" = "pid1=sh" ] || { log "the spy saw: [$out]"; ok=1; }
  # seccomp: the runtime's default profile is loaded, a node's own profile is enforced
  a=$(CRI_SECURITY='{"seccomp": {"profile_type": 0}}' start_in "$pod" sc-default 0 \
    sh -c 'grep "^Seccomp:" /proc/self/status') || { log "sc-default did not start"; ok=1; }
  printf '%s' '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}' \
    > "$CRI_WORK/no-mkdir.json"
  b=$(CRI_SECURITY="{\"seccomp\": {\"profile_type\": 2, \"localhost_ref\": \"$CRI_WORK/no-mkdir.json\"}}" \
    start_in "$pod" sc-local 0 sh -c 'mkdir /x 2>/dev/null && echo MADE || echo denied') || { log "sc-local did not start"; ok=1; }
  wait_exited "$a" && wait_exited "$b" || ok=1
  out=$("${CRI[@]}" logs "$a" 2>&1)
  [ "$(echo "$out" | tr -d '[:space:]')" = "Seccomp:2" ] || { log "RuntimeDefault: [$out]"; ok=1; }
  out=$("${CRI[@]}" logs "$b" 2>&1)
  [ "$out" = denied ] || { log "a Localhost profile denying mkdir: [$out]"; ok=1; }
  cri_cleanup
  pod_gone "$pod" || ok=1
  return $ok
}

# c9. A pod's VM that dies behind the runtime's back (`xl destroy`): within 10 s CRI
# reports the pod NOTREADY and its container EXITED (kubelet then recreates the pod);
# removing the pod leaves nothing.
test_cri_vm_destroyed() {
  cri_setup || return 1
  local pod a d i state="" ok=0
  pod=$(run_pod e2e-vmgone) || { log "runp failed"; return 1; }
  a=$(start_in "$pod" sleeper 0 sleep 3000) || { log "sleeper did not start"; ok=1; }
  d=$(domain "$pod" $CRI_NS)
  xl destroy "$d" || { log "xl destroy $d failed"; ok=1; }
  for ((i = 0; i < 10; i++)); do
    state=$("${CRI[@]}" inspectp "$pod" | json_field state)
    [ "$state" = SANDBOX_NOTREADY ] && break
    sleep 1
  done
  [ "$state" = SANDBOX_NOTREADY ] || { log "the pod is $state 10 s after its VM died"; ok=1; }
  [ "$("${CRI[@]}" inspect "$a" | json_field state)" = CONTAINER_EXITED ] ||
    { log "its container: $("${CRI[@]}" inspect "$a" | json_field state)"; ok=1; }
  cri_cleanup
  pod_gone "$pod" || ok=1
  return $ok
}
