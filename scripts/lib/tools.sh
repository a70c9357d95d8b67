# shellcheck shell=bash
# Third-party test tools that Debian 12 does not package (containerd 2.x, critest): static
# x86_64 binaries, xz-compressed, kept outside the repo (VXN_TOOLS_DIR, default
# ../shared/tools beside the checkout; see its README). Unpacked once into a cache and
# checked against the digests pinned here: a test runs exactly the build it was written for.

VXN_TOOLS_DIR=${VXN_TOOLS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/../shared/tools}
VXN_TOOLS_CACHE=${VXN_TOOLS_CACHE:-/var/tmp/vxn-tools}
# containerd v2.3.4 (db8809540e1a), cri-tools v1.36.0 (88d8ad9d40f8), ginkgo v2.28.1
declare -A VXN_TOOL_SHA256=(
  [containerd]=cf83f54ffea1cdc01e14d9cce6653e034a718e50ff66e118c140e74939af736a
  [containerd-shim-runc-v2]=873cbeed23a8ffecad8e4f1f11475dafdd96b4a47bd7445151c8b75e0b95f84b
  [ctr]=55084fddfbd6ac40a16da7ea95e739a4cdc574c14c8fa7277cab4ce0c1e79c23
  [critest]=b377aaae5fc90dfd7eed1a6ca0ce21165427d96aa2d371398c54e2bcc7519068
  [ginkgo]=70165fcbd701293ae8238fb5997adf0e786a78e800aec9662768f9f8e4ecd1d8
)
CONTAINERD2_TOOLS=(containerd ctr containerd-shim-runc-v2)

# tools_available NAME...: whether every tool's archive is there.
tools_available() {
  local t
  for t in "$@"; do [ -f "$VXN_TOOLS_DIR/$t.xz" ] || return 1; done
}

# tools_unpack NAME...: unpack (once) and verify; prints the directory holding them.
tools_unpack() {
  local dir=$VXN_TOOLS_CACHE/bin t sum
  mkdir -p "$dir"
  for t in "$@"; do
    [ -n "${VXN_TOOL_SHA256[$t]:-}" ] || { echo "tools: unknown tool $t" >&2; return 1; }
    if [ ! -x "$dir/$t" ] || [ "$(sha256sum < "$dir/$t" | cut -c1-64)" != "${VXN_TOOL_SHA256[$t]}" ]; then
      [ -f "$VXN_TOOLS_DIR/$t.xz" ] || { echo "tools: $VXN_TOOLS_DIR/$t.xz not found (set VXN_TOOLS_DIR)" >&2; return 1; }
      xz -dc "$VXN_TOOLS_DIR/$t.xz" > "$dir/$t.tmp"
      sum=$(sha256sum < "$dir/$t.tmp" | cut -c1-64)
      if [ "$sum" != "${VXN_TOOL_SHA256[$t]}" ]; then
        rm -f "$dir/$t.tmp"
        echo "tools: $t: sha256 $sum, expected ${VXN_TOOL_SHA256[$t]}" >&2
        return 1
      fi
      chmod 0755 "$dir/$t.tmp" && mv -f "$dir/$t.tmp" "$dir/$t"
    fi
  done
  echo "$dir"
}
