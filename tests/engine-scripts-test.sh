#!/bin/bash
# Host-only checks of scripts/vctr and scripts/install-engine-config.sh (no VM, no root,
# no Docker or Podman needed: a fake ctr and files in a temporary directory).
#  - vctr puts --runtime io.containerd.vxn.v2 right after `run` / `containers create`,
#    past ctr's global flags, not when the user gave --runtime, and nothing elsewhere;
#  - install-engine-config.sh merges daemon.json (python3, and jq when present) keeping
#    every other setting, is idempotent, handles --default both ways, refuses a broken file,
#    and writes the Podman drop-in only.
# Prints PASS/FAIL per check and "N passed, N failed"; exits non-zero on a failure.
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
VCTR=$REPO/scripts/vctr
INSTALL=$REPO/scripts/install-engine-config.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
check() {  # check NAME WANT GOT
  if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "PASS $1"
  else fail=$((fail + 1)); echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fi
}

# shellcheck disable=SC2016 # the fake ctr's own $a
printf '#!/bin/sh\nfor a do printf "[%%s]" "$a"; done\n' > "$T/ctr"
chmod +x "$T/ctr"
v() { VXN_CTR=$T/ctr sh "$VCTR" "$@"; }
R='[--runtime][io.containerd.vxn.v2]'
check vctr-run "[run]${R}[--rm][IMG][t][echo][hi]" "$(v run --rm IMG t echo hi)"
check vctr-globals "[-n][k8s.io][--debug][-a][/s][--timeout][5s][--connect-timeout][1s][run]${R}[-t][IMG][t]" \
  "$(v -n k8s.io --debug -a /s --timeout 5s --connect-timeout 1s run -t IMG t)"
check vctr-global-eq "[--namespace=x][--address=/s][run]${R}[IMG][t]" "$(v --namespace=x --address=/s run IMG t)"
check vctr-user-runtime "[run][--env][A=b][--runtime][runc][IMG][t]" "$(v run --env A=b --runtime runc IMG t)"
check vctr-user-runtime-eq "[c][create][--runtime=x][IMG][t]" "$(v c create --runtime=x IMG t)"
check vctr-runtime-in-cmd "[run]${R}[IMG][t][prog][--runtime][x]" "$(v run IMG t prog --runtime x)"
check vctr-containers-create "[containers][create]${R}[--snapshotter][native][IMG][t]" "$(v containers create --snapshotter native IMG t)"
check vctr-namespace-named-run "[-n][run][images][ls]" "$(v -n run images ls)"
check vctr-other "[task][ls]" "$(v task ls)"
check vctr-quoting "[run]${R}[IMG][t][sh][-c][a  b'c]" "$(v run IMG t sh -c "a  b'c")"

export DOCKER_DAEMON_JSON=$T/docker/daemon.json CONTAINERS_CONF_D=$T/containers.conf.d
D=$DOCKER_DAEMON_JSON
P=$CONTAINERS_CONF_D/50-vxn.conf
PY=$(command -v python3)   # the checks' own JSON reader, also when PATH hides python3
# json FILE: the file's JSON, keys sorted, on one line
json() { "$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), sort_keys=True))' "$1"; }
run_install() { "$INSTALL" "$@" 2>&1 | grep -v '^install-engine-config: note:' || true; }

installs() {  # installs LABEL: the checks, with whichever JSON tool PATH offers
  local l=$1 out
  rm -rf "$T/docker" "$CONTAINERS_CONF_D"
  run_install > /dev/null
  check "$l-create" '{"runtimes": {"vxn": {"path": "/usr/local/bin/vxn-oci-runtime"}}}' "$(json "$D")"
  printf '{"log-driver": "journald", "iptables": false,\n "runtimes": {"vxn": {"path": "/old", "runtimeArgs": ["--debug"]}, "crun": {"path": "/usr/bin/crun"}}}\n' > "$D"
  run_install --default --path /opt/vxn-oci-runtime > /dev/null
  check "$l-merge-default" '{"default-runtime": "vxn", "iptables": false, "log-driver": "journald", "runtimes": {"crun": {"path": "/usr/bin/crun"}, "vxn": {"path": "/opt/vxn-oci-runtime", "runtimeArgs": ["--debug"]}}}' "$(json "$D")"
  check "$l-podman-default" "$(printf '[engine]\nruntime = "vxn"\n\n[engine.runtimes]\nvxn = ["/opt/vxn-oci-runtime"]')" "$(grep -v '^#' "$P")"
  cp "$D" "$T/before"
  out=$(run_install --default --path /opt/vxn-oci-runtime)
  check "$l-idempotent" "same file, 2 x already" "$(cmp -s "$D" "$T/before" && echo "same file"), $(grep -c 'already has' <<< "$out") x already"
  run_install --path /opt/vxn-oci-runtime > /dev/null
  check "$l-undefault" '"runc" no-default-in-dropin' "$("$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["default-runtime"]))' "$D") $(grep -q '^runtime' "$P" && echo default-in-dropin || echo no-default-in-dropin)"
  echo '{"default-runtime": "crun"}' > "$D"
  run_install > /dev/null
  check "$l-keeps-other-default" '{"default-runtime": "crun", "runtimes": {"vxn": {"path": "/usr/local/bin/vxn-oci-runtime"}}}' "$(json "$D")"
  echo '{broken' > "$D"
  if "$INSTALL" > /dev/null 2>&1; then out=accepted; else out=refused; fi
  check "$l-broken-json" "refused, untouched" "$out, $([ "$(cat "$D")" = '{broken' ] && echo untouched || echo changed)"
}

installs python
if command -v jq > /dev/null; then
  # a PATH without python3: the jq path
  mkdir -p "$T/bin"
  for f in /usr/bin/* /bin/*; do
    case ${f##*/} in python3*) continue ;; esac
    [ -e "$T/bin/${f##*/}" ] || ln -s "$f" "$T/bin/${f##*/}"
  done
  PATH=$T/bin installs jq
fi

check podman-only-dropin 50-vxn.conf "$(ls -A "$CONTAINERS_CONF_D")"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
