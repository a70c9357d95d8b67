# shellcheck shell=bash
# One lab's QEMU from outside: stop it, say whether it is up, a shell in its dom0. Both
# labs (x86_64: tests/lab/lab, aarch64: tests/lab/arm/lab) source it after common.sh
# (qemu_pid, dom0, PIDFILE, SSH_PORT, SSH_OPTS, WORK are each lab's own).

cmd_down() {
  local pid _
  pid=$(qemu_pid)
  if [ -z "$pid" ]; then rm -f "$PIDFILE"; log "down: not running"; return 0; fi
  # a clean poweroff first when dom0 answers (Xen powers the machine off, QEMU exits)
  if dom0 true > /dev/null 2>&1 < /dev/null; then
    dom0 'poweroff' > /dev/null 2>&1 < /dev/null || true
    for _ in $(seq 1 "${LAB_POWEROFF_WAIT:-30}"); do [ -d "/proc/$pid" ] || break; sleep 1; done
  fi
  if [ -d "/proc/$pid" ]; then
    log "down: QEMU $pid still running after poweroff, killing it"
    kill "$pid" 2> /dev/null || true
    for _ in $(seq 1 10); do [ -d "/proc/$pid" ] || break; sleep 1; done
    if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2> /dev/null || true; fi
  fi
  rm -f "$PIDFILE"
  log "down: stopped (pid $pid)"
}

cmd_status() {
  local pid
  pid=$(qemu_pid)
  if [ -z "$pid" ]; then echo "down"; return 1; fi
  if dom0 true 2> /dev/null < /dev/null; then echo "up (qemu pid $pid, ssh 127.0.0.1:$SSH_PORT, work $WORK)"
  else echo "booting (qemu pid $pid, dom0 ssh not answering yet)"; fi
}

# ssh [CMD...]: without CMD and with a terminal, an interactive shell.
# One argument is a shell command line (`lab ssh 'xl list | tail -1'`); several arguments
# are an argv, quoted for the remote shell (`lab ssh sh -c 'exit 5'` exits 5).
cmd_ssh() {
  [ -n "$(qemu_pid)" ] || die "lab is not up (run: ${LAB_UP_CMD:-lab up})"
  if [ $# = 0 ] && [ -t 0 ]; then exec ssh -t "${SSH_OPTS[@]}" root@127.0.0.1; fi
  [ $# -gt 0 ] || set -- sh
  if [ $# = 1 ]; then exec ssh "${SSH_OPTS[@]}" root@127.0.0.1 "$1"; fi
  local q=() a
  for a in "$@"; do q+=("$(printf '%q' "$a")"); done
  exec ssh "${SSH_OPTS[@]}" root@127.0.0.1 "${q[*]}"
}
