# shellcheck shell=bash disable=SC2015,SC2016 # A && B || C on purpose; sh -c scripts run in containers
# Docker and Podman tests in dom0 (xen backend only): sourced by shim-e2e.sh, which runs
# them as docker_*, podman_* and vctr_* tests. Docker 20.10 and Podman 4.3 run containers
# with `--runtime vxn`: vxn-oci-runtime (runc's command line), registered by
# scripts/install-engine-config.sh (daemon.json's runtimes, a containers.conf.d drop-in),
# each container its own DomU. The image is the busybox test image as a docker-archive
# (/root/vxn-test-docker.tar, `lab push --test-image` loads it); no registry is reachable.
# Every test ends by checking that nothing of its containers is left in dom0: domain,
# vxn state and images, the runtime's state, files, mounts, loop devices, processes.
# Env: VXN_E2E_ENGINE_RUNTIME (vxn; `runc` checks the tests themselves),
# VXN_E2E_ENGINE_TIMEOUT (300 s: the bound of each docker/podman command).

ENGINE_RT=${VXN_E2E_ENGINE_RUNTIME:-vxn}
ENGINE_BIN=${VXN_OCI_RUNTIME:-/usr/local/bin/vxn-oci-runtime}
ENGINE_TAR=/root/vxn-test-docker.tar
ENGINE_WORK=${WORK:-/tmp}/engine
ET=${VXN_E2E_ENGINE_TIMEOUT:-300}
# where a container's state may be left: vxn's, the runtime's (docker gives it --root
# /run/docker/runtime-NAME; podman none: the runtime's default), temporary files
# (Docker 20.10 passes --root /run/docker/runtime-runc/moby to every runc-like runtime)
ENGINE_DIRS=(/run/vxn /var/lib/vxn/.shares /var/lib/vxn /run/vxn-oci-runtime /run/docker/runtime-runc
  "/run/docker/runtime-$ENGINE_RT" /tmp /var/tmp)
# where paths named after a container's id may be left
ENGINE_ID_DIRS=(/run /var/lib/vxn /var/lib/docker/containers /var/lib/containers/storage/overlay-containers /tmp /var/tmp)
DOCKER=(timeout "$ET" docker)
# a docker/podman CLI on script's terminal: the foreground process group of that terminal
# (--foreground), killed after ET (script's own timeout would leave it behind, in its session)
ENGINE_TTY_TIMEOUT="timeout --foreground -k 10 $ET"
PODMAN=(timeout "$ET" podman)

# engine_setup: docker and podman answer, the runtime is registered with both, the image
# is loaded in both. Idempotent; run before the first docker_*/podman_* test.
ENGINE_READY=0
engine_setup() {
  [ $ENGINE_READY = 1 ] && return 0
  local c out
  mkdir -p "$ENGINE_WORK"
  for c in docker podman vctr install-engine-config.sh script; do
    command -v $c >/dev/null || { log "$c is not installed in dom0"; return 1; }
  done
  if [ "$ENGINE_RT" = vxn ]; then
    [ -x "$ENGINE_BIN" ] || { log "$ENGINE_BIN is not installed (cargo build --release; lab e2e pushes it)"; return 1; }
  fi
  # the project's installer, as a user runs it (the lab's push ran it already: no change)
  out=$(install-engine-config.sh --path "$ENGINE_BIN" 2>&1) || { log "install-engine-config: $out"; return 1; }
  # docker.socket starts dockerd on the first call (~10-20 s under TCG)
  out=$("${DOCKER[@]}" info --format '{{json .Runtimes}}' 2>&1) || { log "docker info: $out"; return 1; }
  [[ $out == *"\"$ENGINE_RT\""* ]] || { log "docker has no runtime $ENGINE_RT: $out"; return 1; }
  if [ "$ENGINE_RT" = vxn ]; then
    out=$("${PODMAN[@]}" --runtime vxn info --format '{{.Host.OCIRuntime.Path}}' 2>&1)
    [ "$out" = "$ENGINE_BIN" ] || { log "podman's runtime vxn: [$out]"; return 1; }
  fi
  "${DOCKER[@]}" image inspect "$IMG" >/dev/null 2>&1 || "${DOCKER[@]}" load -q -i "$ENGINE_TAR" >/dev/null ||
    { log "docker load $ENGINE_TAR failed"; return 1; }
  "${PODMAN[@]}" image exists "$IMG" || "${PODMAN[@]}" load -q -i "$ENGINE_TAR" >/dev/null ||
    { log "podman load $ENGINE_TAR failed"; return 1; }
  ENGINE_READY=1
}

# (the EROFS image cache outlives containers by design: its first entry is not a leftover)
engine_files() {
  find "${ENGINE_DIRS[@]}" -mindepth 1 -maxdepth 4 ! -type d 2>/dev/null |
    grep -v -e "^${WORK:-/nowhere}/" -e "^/var/lib/vxn/.image-cache/" -e "^/var/lib/vxn/.hotplug/" | sort
}
# (the image cache and vxn's hotplug scripts are dom0's, made on first use: not a container's)
# (/run/netns itself becomes a mount when an engine makes its first netns, and stays: not
# a container's; the netns files under it are. Docker binds dom0's own netns as
# /run/docker/netns/default for its first host-network sandbox, for its whole life)
engine_mounts() { awk '$2 != "/run/netns" && $2 != "/run/docker/netns/default" {print $2}' /proc/mounts | sort; }
engine_loops() { losetup -n -O NAME,BACK-FILE 2>/dev/null | sort; }
engine_domains() { xl list 2>/dev/null | tail -n +2 | awk '$1 != "Domain-0" {print $1}' | sort; }

# engine_begin: what dom0 holds before a test (engine_gone compares with it); the time
# the journal is shown from when the test fails.
engine_begin() {
  ENGINE_T0=$(date +%s)
  ENGINE_FILES0=$(engine_files)
  ENGINE_MOUNTS0=$(engine_mounts)
  ENGINE_LOOPS0=$(engine_loops)
  ENGINE_DOMAINS0=$(engine_domains)
  rm -f "$ENGINE_WORK"/cid*
}

# new_lines BEFORE AFTER: lines of AFTER that BEFORE does not have.
new_lines() { comm -13 <(echo "$1") <(echo "$2") | sed '/^$/d'; }

# engine_left ID...: print what is left of these containers (nothing: all gone).
engine_left() {
  local id n
  n=$(new_lines "$ENGINE_DOMAINS0" "$(engine_domains)")
  [ -z "$n" ] || echo "domains: $(echo "$n" | tr '\n' ' ')"
  n=$(new_lines "$ENGINE_FILES0" "$(engine_files)")
  [ -z "$n" ] || echo "files: $(echo "$n" | head -20 | tr '\n' ' ')"
  n=$(new_lines "$ENGINE_MOUNTS0" "$(engine_mounts)")
  [ -z "$n" ] || echo "mounts: $(echo "$n" | tr '\n' ' ')"
  n=$(new_lines "$ENGINE_LOOPS0" "$(engine_loops)")
  [ -z "$n" ] || echo "loop devices: $(echo "$n" | tr '\n' ' ')"
  for id in "$@"; do
    [ -n "$id" ] || continue
    n=$(find "${ENGINE_ID_DIRS[@]}" -path "*$id*" -prune 2>/dev/null | head -10)
    [ -z "$n" ] || echo "paths of $id: $(echo "$n" | tr '\n' ' ')"
    n=$(pgrep -af -- "$id" | head -5)
    [ -z "$n" ] || echo "processes of $id: $n"
    if timeout 60 docker ps -aq --no-trunc 2>/dev/null | grep -q "^$id"; then echo "docker still lists $id"; fi
    if timeout 60 podman ps -aq --no-trunc 2>/dev/null | grep -q "^$id"; then echo "podman still lists $id"; fi
  done
}

# engine_gone ID...: nothing of the containers is left (after up to 30 s of teardown).
# When something is, it is reported, then removed as well as can be (the engine's rm -f,
# the domain destroyed) so that the next test starts clean.
engine_gone() {
  local t0=$SECONDS left first='' id d
  while :; do
    left=$(engine_left "$@")
    [ -n "$first" ] || first=$left
    [ -z "$left" ] && { [ -z "$first" ] || log "teardown took $((SECONDS - t0))s more after the command returned; there were: $(echo "$first" | cut -c1-300)"; return 0; }
    [ $((SECONDS - t0)) -lt 30 ] || break
    sleep 1
  done
  log "left behind: $left"
  for id in "$@"; do
    [ -n "$id" ] || continue
    timeout 120 docker rm -f "$id" >/dev/null 2>&1
    timeout 120 podman rm -f "$id" >/dev/null 2>&1
  done
  for d in $(new_lines "$ENGINE_DOMAINS0" "$(engine_domains)"); do timeout 60 xl destroy "$d" 2>/dev/null; done
  return 1
}

# engine_logs: the journal of docker, containerd, podman/conmon since the test began.
engine_logs() {
  local n=${VXN_E2E_ENGINE_LOG_LINES:-40}
  # (units and identifiers in one journalctl call would be ANDed)
  log "journal since the test began: docker, containerd (last $n lines)"
  journalctl --no-pager -q -o short-precise --since "@$ENGINE_T0" -u docker -u containerd 2>/dev/null |
    tail -n "$n" | cut -c1-400 | sed 's/^/    /' >&2
  log "journal since the test began: conmon, podman (last $n lines)"
  journalctl --no-pager -q -o short-precise --since "@$ENGINE_T0" -t conmon -t podman 2>/dev/null |
    tail -n "$n" | cut -c1-400 | sed 's/^/    /' >&2
}

# engine_cid FILE: the container id a --cidfile holds ("" if none).
engine_cid() { cat "$1" 2>/dev/null; }

ENGINE_NET=vxn-e2e-net
ENGINE_NET2=vxn-e2e-net2
ENGINE_PORT=18080
# engine_net_create ENGINE...: a fresh $ENGINE_NET, without an earlier run's containers
engine_net_create() {
  "$@" rm -f vxn-e2e-srv vxn-e2e-atk >/dev/null 2>&1
  "$@" network rm $ENGINE_NET $ENGINE_NET2 >/dev/null 2>&1
  "$@" network create $ENGINE_NET >/dev/null || { log "network create failed"; return 1; }
}

# engine_net_connect ENGINE... BODY: `network connect` of the running server to a second
# network: dom0 (the network's gateway) reaches it at its address there; after
# `network disconnect` it does not, and the VM's vif for it is gone.
engine_net_connect() {
  local body=$1 ok=0 ip2 out vifs id
  shift
  local E=("$@")
  "${E[@]}" network create $ENGINE_NET2 >/dev/null || { log "network create $ENGINE_NET2 failed"; return 1; }
  id=$("${E[@]}" inspect -f '{{.Id}}' vxn-e2e-srv)
  vifs=$(engine_vifs "$id")
  "${E[@]}" network connect $ENGINE_NET2 vxn-e2e-srv || { log "network connect failed"; ok=1; }
  ip2=$("${E[@]}" inspect -f "{{(index .NetworkSettings.Networks \"$ENGINE_NET2\").IPAddress}}" vxn-e2e-srv 2>/dev/null)
  [ -n "$ip2" ] || { log "no address on $ENGINE_NET2"; ok=1; }
  out=$(for _ in $(seq 30); do timeout 10 busybox wget -q -O - "http://$ip2:8080/" 2>/dev/null && break; sleep 1; done)
  [ "$out" = "$body" ] || { log "dom0 -> $ip2:8080 on $ENGINE_NET2 after network connect: [$out]"; ok=1; }
  if [ "$ENGINE_RT" = vxn ] && [ "$(engine_vifs "$id")" != $((vifs + 1)) ]; then
    log "the VM has $(engine_vifs "$id") vifs after network connect (had $vifs)"; ok=1
  fi
  "${E[@]}" network disconnect $ENGINE_NET2 vxn-e2e-srv || { log "network disconnect failed"; ok=1; }
  out=$(timeout 10 busybox wget -q -O - "http://$ip2:8080/" 2>/dev/null)
  [ -z "$out" ] || { log "$ip2 still answers after network disconnect"; ok=1; }
  if [ "$ENGINE_RT" = vxn ]; then
    for _ in $(seq 20); do [ "$(engine_vifs "$id")" = "$vifs" ] && break; sleep 1; done
    [ "$(engine_vifs "$id")" = "$vifs" ] || { log "the VM's vif stays after network disconnect"; ok=1; }
  fi
  "${E[@]}" network rm $ENGINE_NET2 >/dev/null || ok=1
  return $ok
}

# engine_vifs ID: how many vifs the VM of a vxn container has (its domain's name holds
# the container's id's start)
engine_vifs() {
  local id=$1 dom
  [ ${#id} -ge 12 ] || { echo 0; return; }
  dom=$(xl list | awk -v id="${id:0:12}" 'index($1, id) {print $1; exit}')
  [ -n "$dom" ] || { echo 0; return; }
  xl network-list "$dom" 2>/dev/null | tail -n +2 | grep -c .
}

# peer_host_up [ENGINE]: "another host" for -p: a network namespace on a veth link to dom0
# (PEER_GW on dom0's side), its default route through dom0. peer_host_down removes it.
PEER_NS=vxn-e2e-peer PEER_GW=192.168.77.1
peer_host_up() {
  peer_host_down
  ip netns add $PEER_NS && ip link add vxn-e2e-up type veth peer name eth0 netns $PEER_NS &&
    ip addr add $PEER_GW/24 dev vxn-e2e-up && ip link set vxn-e2e-up up &&
    ip -n $PEER_NS addr add 192.168.77.2/24 dev eth0 && ip -n $PEER_NS link set eth0 up &&
    ip -n $PEER_NS link set lo up && ip -n $PEER_NS route add default via $PEER_GW ||
    { log "could not make the peer host's netns"; peer_host_down; return 1; }
  # Podman (CNI) on a Docker host: Docker sets FORWARD's policy to DROP and CNI's firewall
  # plugin accepts only replies towards a container, so a published port is closed to
  # other hosts, with runc as with vxn. The admin override CNI leaves for this (its
  # CNI-ADMIN chain) lets DNATed connections in from the uplink, as a Docker host's admin would.
  if [ "${1:-}" = podman ] && iptables -S CNI-ADMIN >/dev/null 2>&1; then
    iptables -I CNI-ADMIN "${PEER_ADMIN_RULE[@]}" || { log "could not open CNI-ADMIN to the peer link"; peer_host_down; return 1; }
  fi
}
PEER_ADMIN_RULE=(-i vxn-e2e-up -m conntrack --ctstate DNAT -m comment --comment vxn-e2e-peer -j ACCEPT)
peer_host_down() {
  while iptables -D CNI-ADMIN "${PEER_ADMIN_RULE[@]}" 2>/dev/null; do :; done
  ip link del vxn-e2e-up 2>/dev/null
  ip netns del $PEER_NS 2>/dev/null
  return 0
}

# engine_net_test ENGINE...: on a user network of ENGINE's, a server container publishes
# 8080 as $ENGINE_PORT: a second container reaches it by IP, dom0 through -p; rm -f leaves
# nothing (the VM's vif, the runtime's netns, tc filters go with the container)
engine_net_test() {
  local ok=0 srv ip out www='mkdir -p /www && echo hello-over-NET > /www/index.html && exec httpd -f -p 8080 -h /www'
  local E=("$@")
  engine_net_create "${E[@]}" || return 1
  "${E[@]}" run -d --runtime "$ENGINE_RT" --network $ENGINE_NET --name vxn-e2e-srv -p $ENGINE_PORT:8080 \
    --cidfile "$ENGINE_WORK/cid" "$IMG" sh -c "${www/NET/${E[-1]}}" >/dev/null 2>"$ENGINE_WORK/err" ||
    { log "run the server: $(cat "$ENGINE_WORK/err")"; ok=1; }
  srv=$(engine_cid "$ENGINE_WORK/cid")
  ip=$("${E[@]}" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' vxn-e2e-srv 2>/dev/null)
  [ -n "$ip" ] || { log "the server has no address"; ok=1; }
  # by IP, then by name (Docker's embedded DNS at 127.0.0.11 in the netns; Podman's, with
  # CNI's dnsname plugin as in the lab, dnsmasq on the network's gateway); busybox's
  # wget -T crashes: timeout bounds each try
  local name=vxn-e2e-srv
  if [ "${E[-1]}" = podman ] && [ "$("${E[@]}" network inspect -f '{{.DNSEnabled}}' $ENGINE_NET)" != true ]; then
    log "podman's $ENGINE_NET has no DNS (is CNI's dnsname plugin installed?)"
    ok=1
  fi
  # the engine's --hostname and --add-host reach the guest's files
  out=$("${E[@]}" run --rm --runtime "$ENGINE_RT" --network $ENGINE_NET --hostname vxn-cli \
    --add-host vxn-extra:10.1.2.3 "$IMG" sh -c "
    hostname; grep -q '^10.1.2.3[[:space:]].*vxn-extra' /etc/hosts && echo extra-host
    for i in \$(seq 60); do timeout 5 wget -q -O - http://$ip:8080/ && break; sleep 1; done
    for i in \$(seq 20); do timeout 5 wget -q -O - http://$name:8080/ && exit 0; sleep 1; done
    cat /etc/resolv.conf; exit 1" 2>&1)
  [ "$(echo "$out" | sed -n 1,2p | tr '\n' ' ')" = "vxn-cli extra-host " ] || { log "--hostname/--add-host: [$out]"; ok=1; }
  [ "$(echo "$out" | sed -n 3p)" = "hello-over-${E[-1]}" ] || { log "container -> container at $ip: [$out]"; ok=1; }
  [ "$(echo "$out" | sed -n 4p)" = "hello-over-${E[-1]}" ] || { log "container -> container as $name: [$out]"; ok=1; }
  # -p from dom0's loopback and from its address on its uplink (what another host dials)
  local addr a
  addr=$(ip -4 -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  for a in 127.0.0.1 $addr; do
    out=$(for _ in $(seq 30); do timeout 10 busybox wget -q -O - "http://$a:$ENGINE_PORT/" 2>/dev/null && break; sleep 1; done)
    [ "$out" = "hello-over-${E[-1]}" ] || { log "dom0 -> $a:$ENGINE_PORT (-p $ENGINE_PORT:8080): [$out]"; ok=1; }
  done
  # -p from another host: its packets come in over a link (the engine's DNAT in
  # PREROUTING, then FORWARD), not from dom0's own stack
  if peer_host_up "${E[-1]}"; then
    out=$(for _ in $(seq 30); do ip netns exec $PEER_NS timeout 10 busybox wget -q -O - "http://$PEER_GW:$ENGINE_PORT/" 2>/dev/null && break; sleep 1; done)
    [ "$out" = "hello-over-${E[-1]}" ] || { log "another host -> $PEER_GW:$ENGINE_PORT (-p $ENGINE_PORT:8080): [$out]"; ok=1; }
    peer_host_down
  else
    ok=1
  fi
  engine_net_connect "hello-over-${E[-1]}" "${E[@]}" || ok=1
  if [ "$ENGINE_RT" = vxn ]; then
    # a VM cannot share dom0's stack: refused, saying so
    out=$("${E[@]}" run --rm --runtime "$ENGINE_RT" --network host "$IMG" true 2>&1) &&
      { log "--network host was accepted"; ok=1; }
    [[ $out == *"--network=host"* ]] || { log "--network host: [$out]"; ok=1; }
  fi
  "${E[@]}" rm -f vxn-e2e-srv >/dev/null || ok=1
  "${E[@]}" network rm $ENGINE_NET >/dev/null || ok=1
  engine_gone "$srv" || ok=1
  return $ok
}

# e8. docker run --network USERNET -p: the container's VM takes the veth Docker put in its netns
test_docker_network() {
  engine_setup || return 1
  engine_begin
  engine_net_test "${DOCKER[@]}" || { engine_logs; return 1; }
}

# e9. on a Docker network, a container with NET_ADMIN cannot leave its veth's MAC and address:
# an address of the subnet nobody has is not reachable, a forged MAC is not learnt by the
# bridge, and the neighbour it attacks stays reachable
test_docker_antispoof() {
  engine_setup || return 1
  engine_begin
  local ok=0 srv atk ip gw br spoof fake_mac=02:42:de:ad:00:01 out D=("${DOCKER[@]}")
  engine_net_create "${D[@]}" || return 1
  br=br-$("${D[@]}" network inspect -f '{{.Id}}' $ENGINE_NET | cut -c1-12)
  gw=$("${D[@]}" network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' $ENGINE_NET)
  "${D[@]}" run -d --runtime "$ENGINE_RT" --network $ENGINE_NET --name vxn-e2e-srv --cidfile "$ENGINE_WORK/cid" \
    "$IMG" sh -c 'mkdir -p /www && echo victim > /www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null || ok=1
  srv=$(engine_cid "$ENGINE_WORK/cid")
  ip=$("${D[@]}" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' vxn-e2e-srv)
  spoof=${ip%.*}.99
  "${D[@]}" run -d --runtime "$ENGINE_RT" --network $ENGINE_NET --name vxn-e2e-atk --cidfile "$ENGINE_WORK/cid2" \
    --cap-add NET_ADMIN --cap-add NET_RAW "$IMG" sleep 900 >/dev/null || ok=1
  atk=$(engine_cid "$ENGINE_WORK/cid2")
  out=$(for _ in $(seq 30); do timeout 10 busybox wget -q -O - "http://$ip:8080/" 2>/dev/null && break; sleep 1; done)
  [ "$out" = victim ] || { log "victim not reachable before the attack: [$out]"; ok=1; }
  # 1. an address of the subnet nobody has
  "${D[@]}" exec vxn-e2e-atk sh -c "ip addr add $spoof/16 dev eth0 && ping -c 2 -W 2 -I $spoof $gw" >/dev/null 2>&1
  if ping -c 3 -W 2 "$spoof" >/dev/null 2>&1; then log "dom0 reaches the spoofed $spoof"; ok=1; fi
  # 2. the victim's address, announced by gratuitous ARP
  "${D[@]}" exec vxn-e2e-atk sh -c "ip addr add $ip/32 dev eth0; arping -U -c 3 -s $ip -I eth0 $ip" >/dev/null 2>&1
  out=$(for _ in $(seq 5); do timeout 10 busybox wget -q -O - "http://$ip:8080/" 2>/dev/null && break; sleep 1; done)
  [ "$out" = victim ] || { log "victim unreachable after the ARP attack: [$out]"; ok=1; }
  # 3. a forged MAC: nothing it sends reaches the bridge
  "${D[@]}" exec vxn-e2e-atk sh -c "ip link set eth0 down; ip link set eth0 address $fake_mac; ip link set eth0 up; ping -c 3 -W 2 $gw" >/dev/null 2>&1
  if bridge fdb show br "$br" 2>/dev/null | grep -qi "^$fake_mac "; then log "$br learned the forged MAC $fake_mac"; ok=1; fi
  "${D[@]}" rm -f vxn-e2e-srv vxn-e2e-atk >/dev/null || ok=1
  "${D[@]}" network rm $ENGINE_NET >/dev/null || ok=1
  engine_gone "$srv" "$atk" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# p3. the same with Podman (netavark or CNI names the netns in the spec)
test_podman_network() {
  engine_setup || return 1
  engine_begin
  engine_net_test "${PODMAN[@]}" || { engine_logs; return 1; }
}

# e1. docker run --rm: output, exit 0, the container and its VM gone
test_docker_echo() {
  engine_setup || return 1
  engine_begin
  local out rc ok=0
  out=$("${DOCKER[@]}" run --runtime "$ENGINE_RT" --network=none --rm --cidfile "$ENGINE_WORK/cid" "$IMG" \
    echo hello-from-docker 2>"$ENGINE_WORK/err")
  rc=$?
  [ "$out" = hello-from-docker ] && [ $rc = 0 ] || { log "out=[$out] rc=$rc err=[$(cat "$ENGINE_WORK/err")]"; ok=1; }
  engine_gone "$(engine_cid "$ENGINE_WORK/cid")" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# e2. the container's exit code is docker's
test_docker_exit() {
  engine_setup || return 1
  engine_begin
  local rc ok=0
  "${DOCKER[@]}" run --runtime "$ENGINE_RT" --network=none --rm --cidfile "$ENGINE_WORK/cid" "$IMG" \
    sh -c 'exit 7' 2>"$ENGINE_WORK/err"
  rc=$?
  [ $rc = 7 ] || { log "rc=$rc (want 7) err=[$(cat "$ENGINE_WORK/err")]"; ok=1; }
  engine_gone "$(engine_cid "$ENGINE_WORK/cid")" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# e3. docker run -t: a pty in the container with the terminal's size. Docker 20.10 sizes
# the pty by a resize right after the start (with runc too: an immediate `stty size` sees
# no size yet; busybox stty then prints an error and exits 0): the size is asked until
# it is the terminal's, 10 s at most, then shown.
ENGINE_SIZE='s=; for i in $(seq 20); do s=$(stty size 2>/dev/null); [ "$s" = "33 101" ] && break; sleep 0.5; done; echo "$s"'
test_docker_tty() {
  engine_setup || return 1
  engine_begin
  local out ok=0
  out=$(timeout $((ET + 30)) script -qec "stty rows 33 cols 101; $ENGINE_TTY_TIMEOUT docker run --runtime $ENGINE_RT -t --rm --cidfile $ENGINE_WORK/cid $IMG sh -c 'tty; $ENGINE_SIZE'" /dev/null 2>&1 | tr -d '\r')
  out=${out//^@/}
  echo "$out" | grep -q '^/dev/pts/[0-9]' && echo "$out" | grep -qx '33 101' || { log "out=[$out]"; ok=1; }
  engine_gone "$(engine_cid "$ENGINE_WORK/cid")" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# engine_run_d ARGS...: docker run -d; prints the id.
engine_run_d() { "${DOCKER[@]}" run -d --runtime "$ENGINE_RT" "$@" 2>"$ENGINE_WORK/err-d" || { log "docker run -d: $(cat "$ENGINE_WORK/err-d")"; return 1; }; }

# engine_is_vm: with the vxn runtime, a running container is a domain.
engine_is_vm() {
  [ "$ENGINE_RT" = vxn ] || return 0
  [ "$(domain_count)" -ge 1 ] || { log "the running container is no domain: $(xl list | tail -n +2)"; return 1; }
}

# e4. docker exec: output and exit code of a second process in the running container
test_docker_exec() {
  engine_setup || return 1
  engine_begin
  local cid out rc ok=0
  cid=$(engine_run_d "$IMG" sleep 600) || { engine_logs; return 1; }
  engine_is_vm || ok=1
  out=$("${DOCKER[@]}" exec "$cid" sh -c 'echo hi; exit 5' 2>"$ENGINE_WORK/err" </dev/null)
  rc=$?
  [ "$out" = hi ] && [ $rc = 5 ] || { log "exec: out=[$out] rc=$rc err=[$(cat "$ENGINE_WORK/err")]"; ok=1; }
  "${DOCKER[@]}" rm -f "$cid" >/dev/null || { log "docker rm -f failed"; ok=1; }
  engine_gone "$cid" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# engine_wait_log ID LINE [SECONDS]: until `docker logs ID` has LINE on stdout.
engine_wait_log() {
  local i
  for ((i = 0; i < ${3:-120}; i++)); do
    "${DOCKER[@]}" logs "$1" 2>/dev/null | grep -qx "$2" && return 0
    sleep 1
  done
  log "no [$2] in docker logs $1: [$("${DOCKER[@]}" logs "$1" 2>&1 | head -c 300)]"
  return 1
}

# e5. docker stop: SIGTERM reaches the trapping process, its exit code is the container's
test_docker_stop() {
  engine_setup || return 1
  engine_begin
  local cid code ok=0
  cid=$(engine_run_d "$IMG" sh -c 'trap "exit 42" TERM; echo ready; while :; do sleep 1; done') || { engine_logs; return 1; }
  engine_wait_log "$cid" ready || ok=1
  # a long grace: under TCG a slow TERM must not turn into docker's SIGKILL (137)
  "${DOCKER[@]}" stop -t 60 "$cid" >/dev/null || { log "docker stop failed"; ok=1; }
  code=$("${DOCKER[@]}" inspect -f '{{.State.ExitCode}}' "$cid")
  [ "$code" = 42 ] || { log "exit code after docker stop: [$code] (want 42)"; ok=1; }
  "${DOCKER[@]}" rm -f "$cid" >/dev/null || { log "docker rm failed"; ok=1; }
  engine_gone "$cid" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# e6. docker kill: SIGKILL, exit code 137
test_docker_kill() {
  engine_setup || return 1
  engine_begin
  local cid code ok=0
  cid=$(engine_run_d "$IMG" sleep 600) || { engine_logs; return 1; }
  "${DOCKER[@]}" kill "$cid" >/dev/null || { log "docker kill failed"; ok=1; }
  code=$("${DOCKER[@]}" wait "$cid")
  [ "$code" = 137 ] || { log "docker wait after kill: [$code] (want 137)"; ok=1; }
  code=$("${DOCKER[@]}" inspect -f '{{.State.ExitCode}}' "$cid")
  [ "$code" = 137 ] || { log "exit code after docker kill: [$code] (want 137)"; ok=1; }
  "${DOCKER[@]}" rm -f "$cid" >/dev/null || { log "docker rm failed"; ok=1; }
  engine_gone "$cid" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# e7. docker logs: output while the container runs (not only at its exit), stdout and
# stderr kept apart
test_docker_logs() {
  engine_setup || return 1
  engine_begin
  local cid ok=0 running
  cid=$(engine_run_d "$IMG" sh -c 'echo first; echo err >&2; sleep 2; echo second; sleep 600') || { engine_logs; return 1; }
  engine_wait_log "$cid" first || ok=1
  engine_is_vm || ok=1
  running=$("${DOCKER[@]}" inspect -f '{{.State.Running}}' "$cid")
  [ "$running" = true ] || { log "not running while its first line is logged: [$running]"; ok=1; }
  engine_wait_log "$cid" second 60 || ok=1
  "${DOCKER[@]}" logs "$cid" >"$ENGINE_WORK/out" 2>"$ENGINE_WORK/err"
  [ "$(cat "$ENGINE_WORK/out")" = "$(printf 'first\nsecond')" ] && [ "$(cat "$ENGINE_WORK/err")" = err ] ||
    { log "docker logs: stdout=[$(cat "$ENGINE_WORK/out")] stderr=[$(cat "$ENGINE_WORK/err")]"; ok=1; }
  running=$("${DOCKER[@]}" inspect -f '{{.State.Running}}' "$cid")
  [ "$running" = true ] || { log "the container stopped: [$running]"; ok=1; }
  "${DOCKER[@]}" rm -f "$cid" >/dev/null || { log "docker rm -f failed"; ok=1; }
  engine_gone "$cid" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# e8. podman run --rm: output, exit 0, nothing left
test_podman_echo() {
  engine_setup || return 1
  engine_begin
  local out rc ok=0
  out=$("${PODMAN[@]}" run --runtime "$ENGINE_RT" --network=none --rm --cidfile "$ENGINE_WORK/cid" "$IMG" \
    echo hello-from-podman 2>"$ENGINE_WORK/err")
  rc=$?
  [ "$out" = hello-from-podman ] && [ $rc = 0 ] || { log "out=[$out] rc=$rc err=[$(cat "$ENGINE_WORK/err")]"; ok=1; }
  engine_gone "$(engine_cid "$ENGINE_WORK/cid")" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# e9. podman run -it: a pty in the container, the exit code is podman's
test_podman_it() {
  engine_setup || return 1
  engine_begin
  local out rc ok=0
  out=$(timeout $((ET + 30)) script -qec "stty rows 33 cols 101; $ENGINE_TTY_TIMEOUT podman run --runtime $ENGINE_RT -it --rm --cidfile $ENGINE_WORK/cid $IMG sh -c 'tty; exit 3'" /dev/null 2>&1 </dev/null)
  rc=$?
  out=$(echo "$out" | tr -d '\r')
  out=${out//^@/}
  echo "$out" | grep -q '^/dev/pts/[0-9]' && [ $rc = 3 ] || { log "out=[$out] rc=$rc (want 3)"; ok=1; }
  engine_gone "$(engine_cid "$ENGINE_WORK/cid")" || ok=1
  [ $ok = 0 ] || engine_logs
  return $ok
}

# e10. vctr: ctr with vxn's runtime put in (global flags kept, the user's --runtime wins),
# other commands unchanged; a real `vctr run --rm` prints the output and leaves nothing
test_vctr_run() {
  local out want ok=0 fake=$ENGINE_WORK/fake-ctr
  mkdir -p "$ENGINE_WORK"
  printf '#!/bin/sh\nfor a do printf "[%%s]" "$a"; done\n' > "$fake"
  chmod +x "$fake"
  out=$(VXN_CTR=$fake vctr -n k8s.io --debug --timeout 5s run --rm -t --env A=b "$IMG" x sh -c 'a b')
  want="[-n][k8s.io][--debug][--timeout][5s][run][--runtime][$RT][--rm][-t][--env][A=b][$IMG][x][sh][-c][a b]"
  [ "$out" = "$want" ] || { log "vctr run: $out"; ok=1; }
  out=$(VXN_CTR=$fake vctr --address=/s c create --runtime io.containerd.runc.v2 "$IMG" x)
  [ "$out" = "[--address=/s][c][create][--runtime][io.containerd.runc.v2][$IMG][x]" ] || { log "vctr c create: $out"; ok=1; }
  out=$(VXN_CTR=$fake vctr -n run images ls)
  [ "$out" = "[-n][run][images][ls]" ] || { log "vctr images ls: $out"; ok=1; }
  engine_begin
  # the guest kernel's command line (vxn.log=...) shows that a DomU ran it, not runc
  out=$(timeout "$ET" vctr -n "$NS" run --rm "$IMG" e2e-vctr sh -c 'echo hi; cat /proc/cmdline' 2>&1)
  [ "$(echo "$out" | head -1)" = hi ] && [[ $out == *vxn.log=* ]] || { log "vctr run: [$out]"; ok=1; }
  "${CTR[@]}" containers info e2e-vctr >/dev/null 2>&1 && { log "e2e-vctr still exists"; ok=1; }
  no_leftovers e2e-vctr || ok=1
  engine_gone e2e-vctr || ok=1
  return $ok
}
