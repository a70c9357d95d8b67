#!/bin/bash
# Host-only checks of scripts/vctr, scripts/install-engine-config.sh and
# scripts/install-containerd-config.sh (no VM, no root, no Docker, Podman or containerd
# needed: fakes and files in a temporary directory).
#  - vctr puts --runtime io.containerd.vxn.v2 right after `run` / `containers create`,
#    past ctr's global flags, not when the user gave --runtime, and nothing elsewhere;
#  - install-engine-config.sh merges daemon.json (python3, and jq when present) keeping
#    every other setting, is idempotent, handles --default both ways, refuses a broken file,
#    and writes the Podman drop-in only;
#  - install-containerd-config.sh writes the vxn handler into a version 2 and a version 3
#    config (a new file in the installed containerd's format), keeps the rest, is
#    idempotent, refuses version 1; containerd 2.3.4 (scripts/lib/tools.sh) reads both.
# Prints PASS/FAIL per check and "N passed, N failed"; exits non-zero on a failure.
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
VCTR=$REPO/scripts/vctr
INSTALL=$REPO/scripts/install-engine-config.sh
# shellcheck source=lib/check.sh
. "$REPO/tests/lib/check.sh"

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

# install-containerd-config.sh: the vxn handler in either config format, the rest kept
CC=$REPO/scripts/install-containerd-config.sh
printf '#!/bin/sh\necho "containerd github.com/containerd/containerd/v2 v2.3.4 db88095"\n' > "$T/containerd2"
printf '#!/bin/sh\necho "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1"\n' > "$T/containerd1"
chmod +x "$T/containerd1" "$T/containerd2"
cc() { CONTAINERD_CONFIG=$T/ctd/$1 VXN_ETC=$T/etc CONTAINERD=$T/$2 "$CC" > /dev/null 2>&1; }
tables() { grep -o '^\[[^]]*\]' "$T/ctd/$1" | paste -sd' '; }
V2T='plugins."io.containerd.grpc.v1.cri".containerd.runtimes'
V3T='plugins."io.containerd.cri.v1.runtime".containerd.runtimes'
cc new2.toml containerd2
check containerd-new-v2x "version = 3|[$V3T.vxn]" "$(head -1 "$T/ctd/new2.toml")|$(tables new2.toml)"
cc new1.toml containerd1
check containerd-new-v1x "version = 2|[$V2T.vxn] [$V2T.runc]" "$(head -1 "$T/ctd/new1.toml")|$(tables new1.toml)"
check containerd-vxn-config-installed yes "$([ -f "$T/etc/config.toml" ] && echo yes)"
printf 'version = 3\n[plugins."io.containerd.cri.v1.images".pinned_images]\n  sandbox = "p:1"\n' > "$T/ctd/v3.toml"
cc v3.toml containerd2
cp "$T/ctd/v3.toml" "$T/before"
cc v3.toml containerd2
check containerd-v3-kept-idempotent "[plugins.\"io.containerd.cri.v1.images\".pinned_images] [$V3T.vxn]|same" \
  "$(tables v3.toml)|$(cmp -s "$T/before" "$T/ctd/v3.toml" && echo same)"
printf 'version = 2\n[%s.runc]\n  runtime_type = "io.containerd.runc.v2"\n' "$V2T" > "$T/ctd/v2.toml"
cc v2.toml containerd1
check containerd-v2-own-runc "[$V2T.runc] [$V2T.vxn]" "$(tables v2.toml)"
printf 'root = "/x"\n' > "$T/ctd/v1.toml"
if cc v1.toml containerd1; then out=accepted; else out=refused; fi
check containerd-v1-refused "refused, untouched" "$out, $([ "$(cat "$T/ctd/v1.toml")" = 'root = "/x"' ] && echo untouched || echo changed)"
# what containerd 2.3.4 itself makes of both (when the test tools are there)
# shellcheck source=../scripts/lib/tools.sh
. "$REPO/scripts/lib/tools.sh"
if tools_available containerd && bin=$(tools_unpack containerd 2> /dev/null); then
  for f in v3.toml new1.toml; do
    out=$("$bin/containerd" --config "$T/ctd/$f" config dump 2> /dev/null |
      awk '/runtimes.vxn\]/ {s=1; next} s && /runtime_type/ {print $3; exit}')
    check "containerd-2.3.4-reads-$f" "'io.containerd.vxn.v2'" "$out"
  done
else
  echo "SKIP containerd-2.3.4-reads: no containerd 2.x in $VXN_TOOLS_DIR"
fi
checks_done
