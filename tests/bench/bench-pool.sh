# shellcheck shell=bash
# Sourced by the benchmarks (in dom0, beside them in /usr/local/bin): a warm pool turned on
# for one measured run and off again. Needs WORK (the benchmark's scratch directory).
POOL_CONFIG=/etc/vxn/config.toml
POOL_SAVED=$WORK/config.toml.saved

# pool_on KEY: a [pool] of one VM (KEY: `size` for containers, `pod_size` for pods) with no
# refill (nothing boots behind a measured run), filled now (untimed).
pool_on() {
  mkdir -p /etc/vxn
  [ -e "$POOL_SAVED" ] || { if [ -f "$POOL_CONFIG" ]; then cp "$POOL_CONFIG" "$POOL_SAVED"; else : > "$POOL_SAVED"; fi; }
  { cat "$POOL_SAVED"; printf '\n[pool]\n%s = 1\nrefill = false\n' "$1"; } > "$POOL_CONFIG"
  vxnctl pool fill > /dev/null || echo "vxnctl pool fill failed" >&2
}

# pool_off: the config as it was (the pool's VMs stay until drained).
pool_off() {
  [ -e "$POOL_SAVED" ] || return 0
  if [ -s "$POOL_SAVED" ]; then cp "$POOL_SAVED" "$POOL_CONFIG"; else rm -f "$POOL_CONFIG"; fi
  rm -f "$POOL_SAVED"
}
