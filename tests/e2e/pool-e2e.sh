# shellcheck shell=bash
# The warm pool (docs/warm-pool.md) in dom0 (xen backend only): sourced by shim-e2e.sh,
# which runs them as pool_* tests. Each test writes a [pool] section into
# /etc/vxn/config.toml (the rest of it kept), fills the pool with `vxnctl pool fill`, and
# ends with `vxnctl pool drain` and the config as it was: no pooled VM outlives a test.

POOL_CONFIG=/etc/vxn/config.toml
POOL_SAVED=$WORK/pool-config.saved

# pool_config SIZE [KEY=VALUE...]: the config with a [pool] of SIZE VMs (and KEYs).
pool_config() {
  local size=$1 kv
  shift
  mkdir -p /etc/vxn
  if [ ! -e "$POOL_SAVED" ]; then
    if [ -f "$POOL_CONFIG" ]; then cp "$POOL_CONFIG" "$POOL_SAVED"; else : > "$POOL_SAVED"; fi
  fi
  { cat "$POOL_SAVED"; echo; echo "[pool]"; echo "size = $size"
    for kv in "$@"; do echo "${kv%%=*} = ${kv#*=}"; done; } > "$POOL_CONFIG"
}

# pool_end: drain (every pooled VM destroyed, refills stopped), the config restored, and
# nothing of the pool left: no pooled domain, no ready or half-made entry.
pool_end() {
  local ok=0 out i
  out=$(vxnctl pool drain 2>&1) || { log "vxnctl pool drain: $out"; ok=1; }
  if [ -s "$POOL_SAVED" ]; then cp "$POOL_SAVED" "$POOL_CONFIG"; else rm -f "$POOL_CONFIG"; fi
  rm -f "$POOL_SAVED"
  # a refill started by a claim may still be making its VM: the drain's lock waits for it
  for ((i = 0; i < 60; i++)); do [ -z "$(pool_domains)" ] && break; sleep 1; done
  [ -z "$(pool_domains)" ] || { log "pooled domains left after the drain: $(pool_domains)"; ok=1; }
  out=$(find "$STATE_DIR/pool" -path '*/ready/*' -o -path '*/filling/*' 2>/dev/null)
  [ -z "$out" ] || { log "pool entries left after the drain: $out"; ok=1; }
  # nor a pooled VM's writable layer, or a loop device on one
  out=$(ls -A "$IMAGE_DIR/.pool" 2>/dev/null)
  [ -z "$out" ] || { log "pooled writable layers left after the drain: $out"; ok=1; }
  out=$(losetup -l -n -O BACK-FILE 2>/dev/null | grep "$IMAGE_DIR/.pool/")
  [ -z "$out" ] || { log "loop devices left on pooled writable layers: $out"; ok=1; }
  return $ok
}

# pool_domains: "NAME DOMID" of every pooled VM (named vxn--pool-...).
pool_domains() { xl list 2>/dev/null | awk '$1 ~ /^vxn--pool-/ {print $1, $2}'; }
# pool_ready: how many VMs of the config's shape `vxnctl pool status` says are ready.
pool_ready() { vxnctl pool status | awk '/\(the config.s\):/ {print $4; f=1} END {if (!f) print 0}'; }
# domid NAME: the domain's id ("" if none).
domid() { xl domid "$1" 2>/dev/null; }

# pool_fill: fill the pool and say what it holds; fails unless it holds WANT ready VMs.
pool_fill() {
  local want=$1 out
  out=$(vxnctl pool fill 2>&1) || { log "vxnctl pool fill: $out"; return 1; }
  log "pool fill: $out"
  [ "$(pool_ready)" = "$want" ] || { log "pool status: $(vxnctl pool status)"; return 1; }
}

# wait_ready N SECONDS: until the pool holds N ready VMs.
wait_ready() {
  local i
  for ((i = 0; i < $2; i++)); do [ "$(pool_ready)" = "$1" ] && return 0; sleep 1; done
  log "the pool never held $1 ready VM(s): $(vxnctl pool status)"
  return 1
}

# p1. A container runs in the pooled VM (the domain keeps its id under the container's
# name), with its image, its vif and its lease plugged in at the claim and the pooled VM's
# blank writable layer (attached when it was made) as its own; the claimed VM is destroyed
# at delete, never pooled again; a refill makes a new one; exit codes and output pass
# through a claimed VM as through a booted one.
test_pool_claim() {
  local ok=0 pooled pooled_id out d ip state
  pool_config 1 && pool_fill 1 || { pool_end; return 1; }
  read -r pooled pooled_id <<< "$(pool_domains)"
  # a pooled VM waits running (its frontends connect the claimant's devices at once)
  state=$(xl list "$pooled" 2>/dev/null | awk 'NR == 2 {print $5}')
  [[ $state == *p* || -z $state ]] && { log "the pooled VM $pooled is [$state], not running"; ok=1; }
  # with a blank writable layer as its xvdc (vdev 51744), on a loop device of the pool's
  out=$(xl block-list "$pooled" 2>&1)
  awk 'NR > 1 {print $1}' <<< "$out" | grep -qx 51744 || { log "the pooled VM has no writable layer: [$out]"; ok=1; }
  losetup -l -n -O BACK-FILE | grep -qx "$IMAGE_DIR/.pool/$pooled/upper.ext4" ||
    { log "no loop device on $IMAGE_DIR/.pool/$pooled/upper.ext4: $(losetup -l -n -O BACK-FILE)"; ok=1; }
  "${CTR[@]}" run -d --runtime "$RT" "$IMG" e2e-pool sh -c 'echo written > /tmp/f; exec sleep 1000' >/dev/null ||
    { log "run -d failed"; ok=1; }
  wait_status e2e-pool RUNNING || ok=1
  d=$(domain e2e-pool)
  [ "$(domid "$d")" = "$pooled_id" ] || { log "$d has id [$(domid "$d")], the pooled VM had $pooled_id"; ok=1; }
  domain_exists "$pooled" && { log "the claimed VM is still named $pooled"; ok=1; }
  ip=$(lease_of e2e-pool)
  out=$("${CTR[@]}" task exec --exec-id x e2e-pool sh -c "cat /tmp/f; ip -o -4 addr show eth0; ping -c 1 -W 10 $GW >/dev/null && echo pong" 2>&1)
  echo "$out" | grep -qx written || { log "rootfs: [$out]"; ok=1; }
  [ -n "$ip" ] && echo "$out" | grep -q "inet $ip/" || { log "eth0 lacks the lease [$ip]: [$out]"; ok=1; }
  echo "$out" | grep -qx pong || { log "the gateway did not answer: [$out]"; ok=1; }
  # (the written file above is in that layer, now the container's)
  losetup -l -n -O BACK-FILE | grep -qx "$IMAGE_DIR/$NS/e2e-pool/upper.ext4" ||
    { log "the pooled VM's layer is not the container's: $(losetup -l -n -O BACK-FILE)"; ok=1; }
  [ ! -e "$IMAGE_DIR/.pool/$pooled" ] || { log "$IMAGE_DIR/.pool/$pooled left after the claim"; ok=1; }
  cleanup_id e2e-pool
  no_leftovers e2e-pool || ok=1
  xl list | awk '{print $2}' | grep -qx "$pooled_id" && { log "domain id $pooled_id outlived its container"; ok=1; }
  # the claim started a refill: a new VM, never the claimed one
  wait_ready 1 180 || ok=1
  read -r out _ <<< "$(pool_domains)"
  [ -n "$out" ] && [ "$out" != "$pooled" ] || { log "the refill made [$out]"; ok=1; }
  out=$("${CTR[@]}" run --rm --runtime "$RT" "$IMG" e2e-pool2 sh -c 'echo hello; exit 7')
  local rc=$?
  [ "$out" = hello ] && [ $rc = 7 ] || { log "through a claimed VM: out=[$out] rc=$rc"; ok=1; }
  no_leftovers e2e-pool2 || ok=1
  pool_end || ok=1
  return $ok
}

# p2. What the pool cannot serve boots as today, without error: a container larger than
# the shape's maxima (the pooled VM stays pooled), and any container once the pool is
# drained (and a drained pool is not refilled by a create).
test_pool_fallback() {
  local ok=0 pooled pooled_id out
  pool_config 1 max_memory_mib=256 refill=false && pool_fill 1 || { pool_end; return 1; }
  read -r pooled pooled_id <<< "$(pool_domains)"
  out=$("${CTR[@]}" run --rm --runtime "$RT" --memory-limit $((512 * 1024 * 1024)) "$IMG" e2e-pool-big \
    sh -c 'echo big' 2>&1)
  [ "$out" = big ] || { log "a container above the shape's maxima: [$out]"; ok=1; }
  [ "$(domid "$pooled")" = "$pooled_id" ] || { log "the pooled VM $pooled ($pooled_id) was taken or lost"; ok=1; }
  no_leftovers e2e-pool-big || ok=1
  pool_config 1 && vxnctl pool drain >/dev/null || { log "drain failed"; ok=1; }
  [ -z "$(pool_domains)" ] || { log "pooled VMs after the drain: $(pool_domains)"; ok=1; }
  out=$("${CTR[@]}" run --rm --runtime "$RT" "$IMG" e2e-pool-cold echo cold 2>&1)
  [ "$out" = cold ] || { log "a create with the pool drained: [$out]"; ok=1; }
  no_leftovers e2e-pool-cold || ok=1
  sleep 5
  [ -z "$(pool_domains)" ] || { log "a drained pool was refilled: $(pool_domains)"; ok=1; }
  vxnctl pool status | grep -q ', drained' || { log "status: $(vxnctl pool status)"; ok=1; }
  pool_end || ok=1
  return $ok
}

# p3. Creates racing for fewer pooled VMs than containers: each VM serves one container
# at most, the others boot, every container runs, and all of it goes at delete.
test_pool_race() {
  local ok=0 ids=() id pids=() pooled_ids d n_pooled=0 seen=""
  pool_config 2 refill=false && pool_fill 2 || { pool_end; return 1; }
  pooled_ids=$(pool_domains | awk '{print $2}')
  for id in e2e-race-1 e2e-race-2 e2e-race-3; do
    ids+=("$id")
    "${CTR[@]}" run -d --runtime "$RT" "$IMG" "$id" sleep 1000 >/dev/null 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  for id in "${ids[@]}"; do
    wait_status "$id" RUNNING || { ok=1; continue; }
    d=$(domid "$(domain "$id")")
    case " $seen " in *" $d "*) log "$id shares domain id $d"; ok=1 ;; esac
    seen="$seen $d"
    grep -qx "$d" <<< "$pooled_ids" && n_pooled=$((n_pooled + 1))
  done
  log "containers in pooled VMs: $n_pooled of ${#ids[@]}"
  [ "$n_pooled" = 2 ] || { log "want both pooled VMs claimed, once each"; ok=1; }
  for id in "${ids[@]}"; do cleanup_id "$id"; no_leftovers "$id" || ok=1; done
  pool_end || ok=1
  return $ok
}

# p4. The shim is SIGKILLed at points of a claim (the instant the claim is seen, in the
# fitting, at the agent): the delete action destroys the claimed VM under whichever name
# it has, and nothing of the container or the pool is left.
test_pool_shim_killed() {
  local ok=0 delay id n=0 shim i ctrpid pooled pooled_id
  # shellcheck disable=SC2206 # a list of numbers
  local delays=(${VXN_E2E_POOL_KILL_DELAYS:-0 0.5 2})
  for delay in "${delays[@]}"; do
    n=$((n + 1))
    id=e2e-pool-kill-$n
    pool_config 1 refill=false && pool_fill 1 || { ok=1; continue; }
    read -r pooled pooled_id <<< "$(pool_domains)"
    "${CTR[@]}" run -d --runtime "$RT" "$IMG" "$id" sleep 1000 >/dev/null 2>&1 &
    ctrpid=$!
    # claimed: the claim recorded in the state (it goes once the VM is renamed), or the
    # pooled VM renamed already
    for ((i = 0; i < 600; i++)); do
      [ -e "$STATE_DIR/$NS/$id/pooled.json" ] || ! domain_exists "$pooled" && break
      sleep 0.02
    done
    shim=$(shim_pid "$id")
    [ -e "$STATE_DIR/$NS/$id/pooled.json" ] || ! domain_exists "$pooled" || { log "$id: no claim seen"; ok=1; }
    [ -n "$shim" ] || { log "$id: no shim"; ok=1; }
    sleep "$delay"
    [ -n "$shim" ] && kill -9 "$shim" 2>/dev/null
    wait $ctrpid
    cleanup_id "$id"
    for ((i = 0; i < 60; i++)); do no_leftovers "$id" 2>/dev/null && break; sleep 1; done
    no_leftovers "$id" || { log "$id: leftovers after a shim SIGKILL ${delay}s into a claim"; ok=1; }
    xl list | awk '{print $2}' | grep -qx "$pooled_id" &&
      { log "$id: the claimed VM ($pooled, id $pooled_id) is left: $(xl list | awk -v d="$pooled_id" '$2 == d')"; ok=1; }
  done
  for ((i = 0; i < 30; i++)); do xl list | grep -q '^(null)' || break; sleep 1; done
  xl list | grep -q '^(null)' && { log "dying domains left: $(xl list | grep '^(null)')"; ok=1; }
  pool_end || ok=1
  return $ok
}

# p5. A CRI pod takes a pooled pod VM: its share, made with the VM, becomes the pod's, so
# a volume is read and written through it; the pod's removal leaves no domain, share or
# pool entry.
test_pool_pod() {
  cri_setup || return 1
  local ok=0 pooled pooled_id pod c out vol=$CRI_WORK/vol-pool
  pool_config 0 pod_size=1 refill=false || return 1
  out=$(vxnctl pool fill 2>&1) || { log "vxnctl pool fill: $out"; pool_end; return 1; }
  read -r pooled pooled_id <<< "$(pool_domains)"
  [ -n "$pooled_id" ] || { log "no pooled pod VM: $(vxnctl pool status)"; pool_end; return 1; }
  rm -rf "$vol"
  mkdir -p "$vol"
  echo from-dom0 > "$vol/in"
  pod=$(run_pod e2e-poolpod) || { log "runp failed"; pool_end; return 1; }
  [ "$(domid "$(domain "$pod" "$CRI_NS")")" = "$pooled_id" ] ||
    { log "the pod's VM is not the pooled $pooled ($pooled_id): $(xl list | tail -n +2 | tr '\n' ';')"; ok=1; }
  c=$(CRI_MOUNTS="[{\"container_path\": \"/data\", \"host_path\": \"$vol\"}]" \
    start_in "$pod" c 0 sh -c 'cat /data/in; echo from-pod > /data/out') || { log "the container did not start"; ok=1; }
  [ $ok = 0 ] && wait_exited "$c" || ok=1
  out=$("${CRI[@]}" logs "$c" 2>&1)
  [ "$out" = from-dom0 ] || { log "the container read [$out] from its volume"; ok=1; }
  [ "$(cat "$vol/out" 2>/dev/null)" = from-pod ] || { log "dom0 does not see the pod's write"; ok=1; }
  cri_cleanup
  pod_gone "$pod" || ok=1
  out=$(find "/var/lib/vxn/.shares/$CRI_NS" /var/lib/vxn/.shares/.pool -mindepth 1 -maxdepth 1 2>/dev/null)
  [ -z "$out" ] || { log "shares left: $out"; ok=1; }
  pool_end || ok=1
  return $ok
}
