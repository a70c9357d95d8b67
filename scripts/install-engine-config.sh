#!/bin/bash
# Register vxn-oci-runtime as the OCI runtime `vxn` of Docker and Podman, keeping every
# other setting (idempotent; a second run changes nothing):
#  - Docker: "runtimes": {"vxn": {"path": PATH}} merged into /etc/docker/daemon.json
#    (made when missing; python3, else jq, does the JSON), then a running dockerd is sent
#    SIGHUP: runtimes and default-runtime are reloadable, no restart, no container stops.
#  - Podman: the drop-in /etc/containers/containers.conf.d/50-vxn.conf
#    ([engine.runtimes] vxn = [PATH]); the user's containers.conf is never touched.
# Then `docker run --runtime vxn ...` and `podman run --runtime vxn ...` run each container
# as its own Xen DomU.
# Usage: install-engine-config.sh [--default] [--path PATH] [--no-docker] [--no-podman]
#   --default    make vxn the default runtime too (Docker "default-runtime", Podman
#                [engine] runtime). Without it, Docker's default-runtime "vxn" (an earlier
#                --default) becomes "runc", Docker's own default (a reload cannot unset a
#                key), and the drop-in names no default; any other default is kept.
#   --path PATH  the installed runtime (default /usr/local/bin/vxn-oci-runtime)
# Env: DOCKER_DAEMON_JSON (/etc/docker/daemon.json), CONTAINERS_CONF_D
# (/etc/containers/containers.conf.d).
set -euo pipefail

RT_PATH=/usr/local/bin/vxn-oci-runtime
DEFAULT=0
DOCKER=1
PODMAN=1
DAEMON_JSON=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
CONF_D=${CONTAINERS_CONF_D:-/etc/containers/containers.conf.d}
DROPIN=$CONF_D/50-vxn.conf

say() { echo "install-engine-config: $*"; }
die() { echo "install-engine-config: error: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }

while [ $# -gt 0 ]; do
  case $1 in
    --default) DEFAULT=1 ;;
    --path) [ $# -ge 2 ] || die "--path needs a value"; RT_PATH=$2; shift ;;
    --path=*) RT_PATH=${1#--path=} ;;
    --no-docker) DOCKER=0 ;;
    --no-podman) PODMAN=0 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
case $RT_PATH in
  /*) ;;
  *) die "--path must be absolute: $RT_PATH" ;;
esac
case $RT_PATH in
  *[\"\\]*|*[[:cntrl:]]*) die "--path has a quote, backslash or control character: $RT_PATH" ;;
esac
[ -x "$RT_PATH" ] || say "note: $RT_PATH does not exist yet (install vxn-oci-runtime there)"

# merge_daemon_json IN OUT: IN (may be missing or empty) with the vxn runtime -> OUT.
# Exit 0: OUT differs from IN in meaning; 3: nothing to change; else: error (message on stderr).
merge_daemon_json() {
  local in=$1 out=$2
  if command -v python3 > /dev/null; then
    python3 - "$in" "$out" "$RT_PATH" "$DEFAULT" <<'PY'
import json, os, sys
src, dst, path, default = sys.argv[1:5]
text = open(src).read() if os.path.exists(src) else ""
try:
    cfg = json.loads(text) if text.strip() else {}
except ValueError as e:
    sys.exit(f"{src} is not valid JSON ({e}); fix it first")
if not isinstance(cfg, dict):
    sys.exit(f"{src} is not a JSON object")
before = json.loads(json.dumps(cfg))
runtimes = cfg.setdefault("runtimes", {})
if not isinstance(runtimes, dict):
    sys.exit(f'{src}: "runtimes" is not an object')
entry = runtimes.get("vxn")
if not isinstance(entry, dict):
    entry = {}
entry["path"] = path       # runtimeArgs the user added to it stay
runtimes["vxn"] = entry
if default == "1":
    cfg["default-runtime"] = "vxn"
elif cfg.get("default-runtime") == "vxn":
    cfg["default-runtime"] = "runc"
if cfg == before and text.strip():
    sys.exit(3)
with open(dst, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
PY
  elif command -v jq > /dev/null; then
    local cur
    if [ -s "$in" ]; then
      cur=$(jq -e 'if type == "object" then . else error("not a JSON object") end' "$in" 2>&1) ||
        { echo "$in is not a valid JSON object ($cur); fix it first" >&2; return 1; }
    else
      cur='{}'
    fi
    jq --arg p "$RT_PATH" --arg d "$DEFAULT" '
      if (.runtimes // {} | type) != "object" then error("\"runtimes\" is not an object") else . end
      | .runtimes.vxn = ((if (.runtimes.vxn | type) == "object" then .runtimes.vxn else {} end) + {path: $p})
      | if $d == "1" then .["default-runtime"] = "vxn"
        elif .["default-runtime"] == "vxn" then .["default-runtime"] = "runc" else . end' \
      <<< "$cur" > "$out" || return 1
    if [ -s "$in" ] && [ "$(jq -S . <<< "$cur")" = "$(jq -S . "$out")" ]; then return 3; fi
  else
    echo "neither python3 nor jq found: one is needed to edit $in (apt-get install python3 or jq)" >&2
    return 1
  fi
}

# dockerd_pid: the running dockerd, if any (its pidfile, checked against its name).
dockerd_pid() {
  local pid
  pid=$(cat /run/docker.pid 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then echo "$pid"; return; fi
  pgrep -o -x dockerd || true
}

install_docker() {
  local dir tmp rc=0 pid i
  dir=$(dirname "$DAEMON_JSON")
  install -d -m 0755 "$dir"
  tmp=$(mktemp "$DAEMON_JSON.XXXXXX")
  # shellcheck disable=SC2064 # the name is fixed now
  trap "rm -f '$tmp'" EXIT
  merge_daemon_json "$DAEMON_JSON" "$tmp" || rc=$?
  case $rc in
    3) rm -f "$tmp"; say "docker: $DAEMON_JSON already has the vxn runtime"; return 0 ;;
    0) ;;
    *) rm -f "$tmp"; die "docker: $DAEMON_JSON left unchanged" ;;
  esac
  if [ -f "$DAEMON_JSON" ]; then chmod --reference="$DAEMON_JSON" "$tmp"; else chmod 0644 "$tmp"; fi
  mv -f "$tmp" "$DAEMON_JSON"
  trap - EXIT
  say "docker: $DAEMON_JSON: runtime vxn = $RT_PATH$([ $DEFAULT = 1 ] && echo ', the default')"
  pid=$(dockerd_pid)
  if [ -z "$pid" ]; then
    say "docker: dockerd is not running: it reads $DAEMON_JSON when it starts"
    return 0
  fi
  kill -HUP "$pid"
  # dockerd logs a bad file and keeps its old settings: check that it took the runtime
  if command -v docker > /dev/null; then
    for i in $(seq 30); do
      docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"vxn"' && break
      [ "$i" = 30 ] && die "docker: dockerd (pid $pid) did not take the vxn runtime after SIGHUP (journalctl -u docker)"
      sleep 1
    done
  fi
  say "docker: dockerd (pid $pid) reloaded its configuration"
}

install_podman() {
  local tmp
  install -d -m 0755 "$CONF_D"
  tmp=$(mktemp "$DROPIN.XXXXXX")
  {
    echo "# vxn: written by scripts/install-engine-config.sh (rerun it rather than editing this file)."
    echo "# podman run --runtime vxn: each container is its own Xen DomU."
    if [ $DEFAULT = 1 ]; then printf '[engine]\nruntime = "vxn"\n\n'; fi
    printf '[engine.runtimes]\nvxn = ["%s"]\n' "$RT_PATH"
  } > "$tmp"
  chmod 0644 "$tmp"
  if cmp -s "$tmp" "$DROPIN"; then
    rm -f "$tmp"
    say "podman: $DROPIN already has the vxn runtime"
    return 0
  fi
  mv -f "$tmp" "$DROPIN"
  say "podman: $DROPIN: runtime vxn = $RT_PATH$([ $DEFAULT = 1 ] && echo ', the default')"
}

[ $DOCKER = 1 ] && install_docker
[ $PODMAN = 1 ] && install_podman
exit 0
