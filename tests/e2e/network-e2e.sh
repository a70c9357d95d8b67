# shellcheck shell=bash
# Network tests of the shim in dom0 (xen backend only): sourced by shim-e2e.sh, which
# runs them as net_* tests. dom0's side is `vxnctl network up --dhcp` (bridge xenbr0
# with 10.0.100.1/24, NAT, dnsmasq); the shim's config is the default [network]
# (static pool 10.0.100.201-254).

GW=10.0.100.1
HTTP_PORT=8080
# busybox 1.35's `wget -T` segfaults: bound wget with `timeout` instead.
NET_WORK=${WORK:-/tmp}/net

# lease_of ID [NS]: the address leased to container ID ("" if none).
lease_of() { vxnctl network leases | awk -v o="${2:-$NS}/$1" '$3 == o {print $1}'; }

# dom0 serves $NET_WORK/www on the gateway address for the test's lifetime.
start_dom0_httpd() {
  mkdir -p "$NET_WORK/www"
  echo "hello-from-dom0" > "$NET_WORK/www/hello.txt"
  pkill -f "busybox httpd -f -p $GW:$HTTP_PORT" 2>/dev/null
  busybox httpd -f -p "$GW:$HTTP_PORT" -h "$NET_WORK/www" &
  DOM0_HTTPD=$!
}
stop_dom0_httpd() { kill "$DOM0_HTTPD" 2>/dev/null; wait "$DOM0_HTTPD" 2>/dev/null; }

# A container that serves "served-by-ID" on port 80, detached.
run_server() {
  "${CTR[@]}" run -d --runtime "$RT" "$@" "$IMG" "$SRV_ID" sh -c \
    "mkdir -p /www && echo served-by-$SRV_ID > /www/index.html && exec httpd -f -p 80 -h /www" >/dev/null
}

# n1. eth0 with a pool address, default route, hostname, resolv.conf and hosts; a file
# fetched over HTTP from dom0; the lease is freed by `ctr run --rm`.
test_net_basics() {
  local out ok=0
  start_dom0_httpd
  out=$("${CTR[@]}" run --rm --runtime "$RT" "$IMG" e2e-net sh -c \
    "ip -o -4 addr show eth0; ip route; hostname; cat /etc/resolv.conf /etc/hosts; timeout 20 wget -q -O - http://$GW:$HTTP_PORT/hello.txt" 2>&1)
  stop_dom0_httpd
  echo "$out" | grep -Eq 'inet 10\.0\.100\.(20[1-9]|2[1-5][0-9])/24' || { log "no pool address: $out"; ok=1; }
  echo "$out" | grep -q "^default via $GW dev eth0" || { log "no default route: $out"; ok=1; }
  echo "$out" | grep -qx "e2e-net" || { log "hostname is not the id: $out"; ok=1; }
  echo "$out" | grep -qx "nameserver $GW" || { log "resolv.conf: $out"; ok=1; }
  echo "$out" | grep -Eq '^10\.0\.100\.[0-9]+[[:space:]]+e2e-net$' || { log "hosts: $out"; ok=1; }
  echo "$out" | grep -qx "hello-from-dom0" || { log "HTTP from dom0 failed: $out"; ok=1; }
  [ -z "$(lease_of e2e-net)" ] || { log "lease of e2e-net not freed"; ok=1; }
  no_leftovers e2e-net || ok=1
  return $ok
}

# n2. dom0 reaches a server in a container on its leased address; a second container
# reaches it too (container to container over the bridge).
test_net_reach_container() {
  local ip out ok=0
  SRV_ID=e2e-srv run_server || { log "server did not start"; return 1; }
  ip=$(lease_of e2e-srv)
  [ -n "$ip" ] || { log "no lease for e2e-srv"; cleanup_id e2e-srv; return 1; }
  # The server needs a moment after Start; retry up to 60 s (TCG).
  for _ in $(seq 30); do
    out=$(timeout 5 busybox wget -q -O - "http://$ip/" 2>/dev/null) && break
    sleep 2
  done
  [ "$out" = "served-by-e2e-srv" ] || { log "dom0 -> $ip: [$out]"; ok=1; }
  out=$("${CTR[@]}" run --rm --runtime "$RT" "$IMG" e2e-cli timeout 20 wget -q -O - "http://$ip/" 2>&1)
  [ "$out" = "served-by-e2e-srv" ] || { log "container -> $ip: [$out]"; ok=1; }
  cleanup_id e2e-srv
  [ -z "$(lease_of e2e-srv)" ] || { log "lease of e2e-srv not freed"; ok=1; }
  no_leftovers e2e-srv || ok=1
  return $ok
}

# n3. a requested address is honoured when free and refused, clearly, when taken;
# vxn.network=none gives a container only lo.
test_net_annotations() {
  local out err ok=0
  SRV_ID=e2e-pin run_server --annotation vxn.network.ip=10.0.100.240 || { log "pinned create failed"; return 1; }
  [ "$(lease_of e2e-pin)" = 10.0.100.240 ] || { log "pinned lease: [$(lease_of e2e-pin)]"; ok=1; }
  err=$("${CTR[@]}" run --rm --runtime "$RT" --annotation vxn.network.ip=10.0.100.240 "$IMG" e2e-pin2 true 2>&1)
  echo "$err" | grep -q "10.0.100.240.*already leased by default/e2e-pin" || { log "taken address: $err"; ok=1; }
  no_leftovers e2e-pin2 || ok=1
  "${CTR[@]}" container rm e2e-pin2 >/dev/null 2>&1
  cleanup_id e2e-pin
  out=$("${CTR[@]}" run --rm --runtime "$RT" --annotation vxn.network=none "$IMG" e2e-nonet sh -c 'ls /sys/class/net' 2>&1)
  [ "$out" = lo ] || { log "vxn.network=none: interfaces [$out]"; ok=1; }
  return $ok
}

# n4. a SIGKILLed shim's lease is freed by `ctr task delete` (the delete action).
test_net_lease_after_shim_kill() {
  local ip shim i ok=0
  SRV_ID=e2e-netkill run_server || return 1
  ip=$(lease_of e2e-netkill)
  [ -n "$ip" ] || { log "no lease"; cleanup_id e2e-netkill; return 1; }
  shim=$(shim_pid e2e-netkill)
  [ -n "$shim" ] || { log "no shim process found"; cleanup_id e2e-netkill; return 1; }
  kill -9 "$shim"
  sleep 3
  "${CTR[@]}" task delete -f e2e-netkill >/dev/null 2>&1
  "${CTR[@]}" container rm e2e-netkill >/dev/null 2>&1
  # the delete action's teardown runs detached: give it its time
  for ((i = 0; i < 60; i++)); do [ -z "$(lease_of e2e-netkill)" ] && break; sleep 1; done
  [ -z "$(lease_of e2e-netkill)" ] || { log "lease $ip of e2e-netkill survived"; ok=1; }
  no_leftovers e2e-netkill || ok=1
  return $ok
}

# n5. N creates, VXN_E2E_NET_PAR at a time, all alive together, never share an address
# (N: VXN_E2E_NET_N, 20; ci: 6. Under TCG one `xl create` takes seconds and libxl
# serializes them: more at once only queues them past the create timeout).
test_net_concurrent() {
  local n=${VXN_E2E_NET_N:-20} par=${VXN_E2E_NET_PAR:-4} i ok=0 ips
  for ((i = 0; i < n; i++)); do
    "${CTR[@]}" run -d --runtime "$RT" --memory-limit $((128 << 20)) "$IMG" "e2e-conc$i" sleep 900 \
      >/dev/null 2>"$NET_WORK.conc$i" &
    (((i + 1) % par == 0)) && wait
  done
  wait
  ips=$(vxnctl network leases | awk '$3 ~ /^default\/e2e-conc/ {print $1}')
  [ "$(echo "$ips" | grep -c .)" = "$n" ] || { log "$(echo "$ips" | grep -c .) leases for $n containers: $(cat "$NET_WORK".conc* 2>/dev/null | sort | uniq -c | head -5)"; ok=1; }
  [ "$(echo "$ips" | sort | uniq -d)" = "" ] || { log "shared addresses: $(echo "$ips" | sort | uniq -d)"; ok=1; }
  for ((i = 0; i < n; i++)); do
    cleanup_id "e2e-conc$i" &
    (((i + 1) % par == 0)) && wait
  done
  wait
  for ((i = 0; i < n; i++)); do no_leftovers "e2e-conc$i" || ok=1; done
  rm -f "$NET_WORK".conc*
  return $ok
}

# n6. an exhausted pool is a clear error, never a silent network-less container.
test_net_exhausted() {
  local err ok=0 saved=""
  [ -f /etc/vxn/config.toml ] && saved=$(cat /etc/vxn/config.toml)
  mkdir -p /etc/vxn
  printf '[network]\nrange_start = "10.0.100.250"\nrange_end = "10.0.100.250"\n' > /etc/vxn/config.toml
  SRV_ID=e2e-full1 run_server || ok=1
  err=$("${CTR[@]}" run --rm --runtime "$RT" "$IMG" e2e-full2 true 2>&1)
  echo "$err" | grep -q "no free address in the pool 10.0.100.250-10.0.100.250" || { log "exhausted: $err"; ok=1; }
  "${CTR[@]}" container rm e2e-full2 >/dev/null 2>&1
  cleanup_id e2e-full1
  if [ -n "$saved" ]; then echo "$saved" > /etc/vxn/config.toml; else rm -f /etc/vxn/config.toml; fi
  no_leftovers e2e-full2 || ok=1
  no_leftovers e2e-full1 || ok=1
  return $ok
}

# n9. dom0 as a Docker host: dockerd, with its default "iptables": true, made its
# DOCKER-USER chain; with br_netfilter on and FORWARD's policy DROP (what dockerd sets
# when it turns forwarding on itself, as at boot before vxn's network), frames bridged
# on xenbr0 cross that chain. A container still reaches another one over the bridge
# because `vxnctl network up` let xenbr0 through in DOCKER-USER, though not into Docker's
# own networks; `vxnctl network down`
# takes those rules out, and `up` puts them back once.
test_net_docker_host() {
  local ip out ok=0 policy
  timeout 120 docker info > /dev/null 2>&1 || { log "dockerd does not answer"; return 1; }
  iptables -w 5 -S DOCKER-USER > /dev/null 2>&1 ||
    { log "no DOCKER-USER chain: dom0's dockerd runs without iptables, not as a Docker host's"; return 1; }
  modprobe br_netfilter 2> /dev/null
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 || { log "no br_netfilter"; return 1; }
  policy=$(iptables -w 5 -S FORWARD | awk '$1 == "-P" {print $3}')
  iptables -w 5 -P FORWARD DROP
  vxnctl network up --dhcp > /dev/null || { log "vxnctl network up failed"; ok=1; }
  out=$(vxnctl network status)
  echo "$out" | grep -q "(DOCKER-USER): xenbr0 allowed" || { log "status: $out"; ok=1; }
  if SRV_ID=e2e-dh run_server; then
    ip=$(lease_of e2e-dh)
    out=$("${CTR[@]}" run --rm --runtime "$RT" "$IMG" e2e-dh-cli sh -c \
      "for i in \$(seq 15); do timeout 5 wget -q -O - http://$ip/ && exit 0; sleep 2; done; exit 1" 2>&1)
    [ "$out" = served-by-e2e-dh ] || { log "container -> $ip over xenbr0 under FORWARD DROP: [$out]"; ok=1; }
    # ... but not into Docker's networks: a server on docker0 stays closed to it, as
    # Docker's isolation keeps its networks from one another
    local dip
    engine_setup && "${DOCKER[@]}" run -d --runtime runc --name vxn-e2e-dh-docker "$IMG" \
      httpd -f -p 80 -h /etc > /dev/null || { log "no Docker container to reach"; ok=1; }
    dip=$("${DOCKER[@]}" inspect -f '{{.NetworkSettings.IPAddress}}' vxn-e2e-dh-docker 2> /dev/null)
    out=$("${CTR[@]}" run --rm --runtime "$RT" "$IMG" e2e-dh-cli sh -c \
      "timeout 10 wget -q -O - http://$dip/hostname && echo reached" 2>&1)
    [ -n "$dip" ] && [[ $out != *reached* ]] || { log "container -> Docker's $dip on docker0: [$out]"; ok=1; }
    "${DOCKER[@]}" rm -f vxn-e2e-dh-docker > /dev/null 2>&1
  else
    log "server did not start"; ok=1
  fi
  cleanup_id e2e-dh
  no_leftovers e2e-dh || ok=1
  no_leftovers e2e-dh-cli || ok=1
  vxnctl network down > /dev/null || { log "vxnctl network down failed"; ok=1; }
  out=$(iptables -w 5 -S DOCKER-USER | grep -c 'vxn bridge xenbr0')
  [ "$out" = 0 ] || { log "$out rules of xenbr0 left in DOCKER-USER after down"; ok=1; }
  vxnctl network up --dhcp > /dev/null && vxnctl network up --dhcp > /dev/null || { log "vxnctl network up failed"; ok=1; }
  out=$(iptables -w 5 -S DOCKER-USER | grep -c 'vxn bridge xenbr0')
  [ "$out" = 4 ] || { log "DOCKER-USER after two ups: $out rules of xenbr0, not 4"; ok=1; }
  iptables -w 5 -P FORWARD "${policy:-ACCEPT}"
  return $ok
}

# n7. DHCP mode (annotation): the address is leased from vxn's DHCP range and bound to
# the container's MAC in dnsmasq; the guest gets it, the router and DNS by DHCP. A
# privileged guest (a hostile kernel's stand-in) asking for another address of the range
# gets its own, and one that takes another anyway is never heard from in dom0. The
# binding and dnsmasq's lease go with the container.
test_net_dhcp() {
  local out ip mac n other bound ok=0 hosts=/run/vxn-network/dhcp-hosts
  local leases=/run/vxn-network/dnsmasq-xenbr0.leases
  "${CTR[@]}" run -d --privileged --runtime "$RT" --annotation vxn.network=dhcp "$IMG" e2e-dhcp sleep 900 >/dev/null ||
    { log "the DHCP container did not start"; return 1; }
  wait_status e2e-dhcp RUNNING 120 || ok=1
  ip=$(lease_of e2e-dhcp)
  mac=$(vxnctl network leases | awk -v o="$NS/e2e-dhcp" '$3 == o {print $2}')
  n=${ip##*.}
  case $ip in
    10.0.100.*) [ "$n" -ge 50 ] && [ "$n" -le 200 ] || { log "lease $ip is not of the DHCP range"; ok=1; } ;;
    *) log "no lease of the DHCP range: [$ip]"; cleanup_id e2e-dhcp; return 1 ;;
  esac
  bound=$hosts/${mac//:/-}
  [ "$(cat "$bound" 2>/dev/null)" = "$mac,$ip" ] || { log "dnsmasq binding $bound: [$(cat "$bound" 2>&1)]"; ok=1; }
  dx() { "${CTR[@]}" task exec --exec-id "d$RANDOM" e2e-dhcp sh -c "$1" </dev/null 2>&1; }
  out=$(dx 'ip -o -4 addr show eth0; ip route; cat /etc/resolv.conf')
  echo "$out" | grep -q "inet $ip/24" || { log "the guest has not its leased $ip: $out"; ok=1; }
  echo "$out" | grep -q "^default via $GW" || { log "no default route: $out"; ok=1; }
  echo "$out" | grep -qx "nameserver $GW" || { log "resolv.conf: $out"; ok=1; }
  grep -q " $mac $ip " "$leases" || { log "dnsmasq has no lease of $ip for $mac: $(cat "$leases")"; ok=1; }
  other=10.0.100.$((n == 199 ? 198 : 199))
  out=$(dx "timeout 30 udhcpc -i eth0 -n -q -f -s /bin/true -r $other 2>&1")
  if echo "$out" | grep -q "lease of $other obtained"; then log "dnsmasq gave the guest $other: $out"; ok=1; fi
  dx "ip addr add $other/24 dev eth0; ping -c 2 -W 2 -I $other $GW" >/dev/null
  if ping -c 3 -W 2 "$other" >/dev/null 2>&1; then log "dom0 reaches $other, taken by a DHCP guest"; ok=1; fi
  cleanup_id e2e-dhcp
  [ ! -e "$bound" ] || { log "the binding $bound outlived its container"; ok=1; }
  for _ in $(seq 10); do grep -q " $mac " "$leases" || break; sleep 1; done
  if grep -q " $mac " "$leases"; then log "dnsmasq still leases to $mac: $(cat "$leases")"; ok=1; fi
  no_leftovers e2e-dhcp || ok=1
  return $ok
}

# n8. anti-spoofing (a privileged container stands in for a guest whose kernel is
# hostile): it takes an address nobody leased, a second tenant's address, the gateway's,
# and a MAC of its own choosing; none of it leaves its vif. dom0 still reaches the
# victim, never the spoofed addresses, and xenbr0 never learns the forged MAC.
test_net_antispoof() {
  local vip vmac out ok=0 spoof=10.0.100.78 fake_mac=00:16:3e:de:ad:01
  SRV_ID=e2e-victim run_server || { log "victim did not start"; return 1; }
  vip=$(lease_of e2e-victim)
  for _ in $(seq 30); do
    out=$(timeout 5 busybox wget -q -O - "http://$vip/" 2>/dev/null) && break
    sleep 2
  done
  [ "$out" = served-by-e2e-victim ] || { log "victim not reachable before the attack: [$out]"; ok=1; }
  vmac=$(ip neigh show "$vip" dev xenbr0 | awk '{print $3}')
  "${CTR[@]}" run -d --privileged --runtime "$RT" "$IMG" e2e-spoof sleep 900 >/dev/null ||
    { log "spoofer did not start"; cleanup_id e2e-victim; return 1; }
  wait_status e2e-spoof RUNNING 120 || ok=1
  spx() { "${CTR[@]}" task exec --exec-id "s$RANDOM" e2e-spoof sh -c "$1" </dev/null 2>&1; }
  # 1. an address nobody leased (the DHCP range): dom0 must not reach it.
  spx "ip addr add $spoof/24 dev eth0 && ping -c 2 -W 2 -I $spoof $GW" >/dev/null
  if ping -c 3 -W 2 "$spoof" >/dev/null 2>&1; then log "dom0 reaches the spoofed $spoof"; ok=1; fi
  # 2. the victim's address and the gateway's, announced by gratuitous ARP.
  spx "ip addr add $vip/32 dev eth0; arping -U -c 3 -s $vip -I eth0 $vip; arping -A -c 3 -s $GW -I eth0 $GW" >/dev/null
  out=$(ip neigh show "$vip" dev xenbr0 | awk '{print $3}')
  [ -z "$vmac" ] || [ -z "$out" ] || [ "$out" = "$vmac" ] ||
    { log "dom0's ARP entry of $vip moved from $vmac to $out"; ok=1; }
  out=""
  for _ in $(seq 5); do
    out=$(timeout 5 busybox wget -q -O - "http://$vip/" 2>/dev/null) && break
    sleep 1
  done
  [ "$out" = served-by-e2e-victim ] || { log "victim unreachable after the ARP attack: [$out]"; ok=1; }
  # 3. a forged MAC: nothing it sends reaches the bridge.
  spx "ip link set eth0 down; ip link set eth0 address $fake_mac; ip link set eth0 up; ping -c 3 -W 2 $GW" >/dev/null
  if bridge fdb show br xenbr0 2>/dev/null | grep -qi "^$fake_mac "; then
    log "xenbr0 learned the forged MAC $fake_mac"; ok=1
  fi
  cleanup_id e2e-spoof
  cleanup_id e2e-victim
  no_leftovers e2e-spoof || ok=1
  no_leftovers e2e-victim || ok=1
  return $ok
}
