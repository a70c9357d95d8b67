#!/usr/bin/env bash
# Build the busybox test image as an OCI image layout tarball (for `ctr images import`),
# with --docker as a docker-archive (for `docker load` / `podman load`), or with --ext4,
# the same rootfs as a raw ext4 image.
# Usage: make-test-image.sh OUT.tar [NAME:TAG]          (default vxn-test:latest)
#        make-test-image.sh --docker OUT.tar [NAME:TAG] (also NAME:user)
#        make-test-image.sh --ext4 OUT.ext4 [SIZE]      (default 16M)
set -euo pipefail
LAB_DIR=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
# shellcheck source=lib/common.sh
. "$LAB_DIR/lib/common.sh"
# shellcheck source=lib/testimg.sh
. "$LAB_DIR/lib/testimg.sh"

case ${1:-} in
  ''|-h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  --docker) [ $# -ge 2 ] || die "usage: $0 --docker OUT.tar [NAME:TAG]"
    res=$(make_docker_tar "$2" "${3:-vxn-test:latest}"); echo "$2: $res" ;;
  --ext4) [ $# -ge 2 ] || die "usage: $0 --ext4 OUT.ext4 [SIZE]"; make_rootfs_ext4 "$2" "${3:-16M}"; echo "$2" ;;
  *) res=$(make_oci_tar "$1" "${2:-vxn-test:latest}"); echo "$1: $res" ;;
esac
