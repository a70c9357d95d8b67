# shellcheck shell=bash
# The busybox test image: a hand-written OCI image layout (tar, for `ctr images import`),
# the same image as a docker-archive (tar, for `docker load` and `podman load`: Docker 20.10
# cannot load an OCI layout) and a raw ext4 image of the same rootfs (the smoke test's
# xvdb). Only needs busybox-static, tar, sha256sum and e2fsprogs. Sourced by tests/lab/lab
# and tests/lab/make-test-image.sh.

BUSYBOX=${VXN_BUSYBOX:-/bin/busybox}
TEST_PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# make_busybox_rootfs DIR: /bin/busybox + one symlink per applet, users root and user (1000),
# group extra (2000) with user in it, and the usual empty directories.
make_busybox_rootfs() {
  local d=$1 applet
  [ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
  rm -rf "$d"
  mkdir -p "$d"/{bin,etc,dev,proc,sys,tmp,root,home/user}
  install -m 0755 "$BUSYBOX" "$d/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$d/bin/$applet"
  done
  cat > "$d/etc/passwd" <<'EOP'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
EOP
  cat > "$d/etc/group" <<'EOG'
root:x:0:
user:x:1000:
extra:x:2000:user
EOG
  chmod 1777 "$d/tmp"
  chmod 0700 "$d/root"
  chown 1000:1000 "$d/home/user"
  find "$d" -exec touch -h -d @0 {} +
}

# tar_layer ROOTFS OUT: one uncompressed, reproducible layer; all root-owned except the
# user's home, which is appended with uid/gid 1000 so that `user` can write there.
tar_layer() {
  local src=$1 out=$2
  local repro=(--sort=name --mtime=@0 --numeric-owner)
  tar -C "$src" -cf "$out" "${repro[@]}" --owner=0 --group=0 --exclude=./home/user .
  tar -C "$src" -rf "$out" "${repro[@]}" --owner=1000 --group=1000 ./home/user
}

# blob DIR FILE: move FILE into DIR/blobs/sha256 under its digest; print "digest size".
blob() {
  local dir=$1 f=$2 sum size
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  size=$(stat -c %s "$f")
  mkdir -p "$dir/blobs/sha256"
  mv -f "$f" "$dir/blobs/sha256/$sum"
  echo "sha256:$sum $size"
}

# full_image_name NAME:TAG -> docker.io/library/NAME:TAG (containerd's normalized form).
full_image_name() {
  local n=$1
  [[ $n == *:* ]] || n=$n:latest
  case ${n%%/*} in
    *.*|*:*|localhost) [[ $n == */* ]] && { echo "$n"; return; } ;;
  esac
  if [[ $n == */* ]]; then echo "docker.io/$n"; else echo "docker.io/library/$n"; fi
}

# image_manifest OCI DIFF LAYERDESC USER [CMD]: a config (image user USER, "" = none; CMD a
# JSON array, default ["/bin/sh"]) and its manifest, both as blobs of OCI; prints the
# manifest's "digest size".
image_manifest() {
  local oci=$1 diff=$2 layer=$3 user=$4 cmd=${5:-'["/bin/sh"]'} tmp cfg man cdesc ldesc
  read -r -a ldesc <<< "$layer"
  tmp=$(mktemp -d)
  cfg=$tmp/config.json
  printf '{"architecture":"amd64","os":"linux","config":{"User":"%s","Env":["%s"],"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/lab/make-test-image.sh"}]}' \
    "$user" "$TEST_PATH_ENV" "$cmd" "$diff" > "$cfg"
  read -r -a cdesc <<< "$(blob "$oci" "$cfg")"
  man=$tmp/manifest.json
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
    "${cdesc[0]}" "${cdesc[1]}" "${ldesc[0]}" "${ldesc[1]}" > "$man"
  blob "$oci" "$man"
  rm -rf "$tmp"
}

# index_entry DESC NAME: one index.json manifest entry naming image NAME.
index_entry() {
  local -a d
  read -r -a d <<< "$1"
  printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
    "${d[0]}" "${d[1]}" "$2" "${2##*:}"
}

# make_oci_tar OUT.tar [NAME:TAG]: the busybox rootfs as an OCI image layout tarball with three
# images on the same layer: NAME:TAG (runs as root), NAME:user (image user "user", 1000) and
# NAME:pause (a pause process: sleeps until SIGTERM/SIGINT, then exits 0; CRI's sandbox image
# for runc pods in the lab; vxn never runs it).
make_oci_tar() {
  local out=$1 name tmp diff layer main user pause
  name=$(full_image_name "${2:-vxn-test:latest}")
  tmp=$(mktemp -d)
  make_busybox_rootfs "$tmp/rootfs"
  mkdir -p "$tmp/oci"
  tar_layer "$tmp/rootfs" "$tmp/layer.tar"
  diff=sha256:$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)   # uncompressed: digest == diff_id
  layer=$(blob "$tmp/oci" "$tmp/layer.tar")
  main=$(image_manifest "$tmp/oci" "$diff" "$layer" "")
  user=$(image_manifest "$tmp/oci" "$diff" "$layer" user)
  pause=$(image_manifest "$tmp/oci" "$diff" "$layer" "" \
    '["/bin/sh","-c","trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]')
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s,%s]}' \
    "$(index_entry "$main" "$name")" "$(index_entry "$user" "${name%:*}:user")" \
    "$(index_entry "$pause" "${name%:*}:pause")" > "$tmp/oci/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$tmp/oci/oci-layout"
  find "$tmp/oci" -exec touch -h -d @0 {} +
  tar -C "$tmp/oci" -cf "$out.tmp" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    oci-layout index.json blobs
  mv -f "$out.tmp" "$out"
  rm -rf "$tmp"
  echo "$name ${main%% *}"
}

# docker_config DIR DIFF USER: an image config (image user USER, "" = none) as DIR/<sha256>.json;
# prints the sha256.
docker_config() {
  local dir=$1 diff=$2 user=$3 sum
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"User":"%s","Env":["%s"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/lab/make-test-image.sh"}]}' \
    "$user" "$TEST_PATH_ENV" "$diff" > "$dir/config.tmp"
  sum=$(sha256sum "$dir/config.tmp" | cut -d' ' -f1)
  mv "$dir/config.tmp" "$dir/$sum.json"
  echo "$sum"
}

# make_docker_tar OUT.tar [NAME:TAG]: the busybox rootfs as a docker-archive (`docker save`'s
# format: manifest.json, one config per image, the layer as <id>/layer.tar, repositories)
# with two images on the same layer: NAME:TAG (runs as root) and NAME:user (image user
# "user", 1000), named docker.io/library/NAME:TAG when NAME is short.
make_docker_tar() {
  local out=$1 name repo tag tmp diff lid cfg cfg_user
  # fully qualified: Podman names a short RepoTag localhost/NAME, Docker shows NAME either way
  name=$(full_image_name "${2:-vxn-test:latest}")
  repo=${name%:*} tag=${name##*:}
  [ "$tag" != user ] || die "make_docker_tar: the tag \"user\" is the user variant's"
  tmp=$(mktemp -d)
  make_busybox_rootfs "$tmp/rootfs"
  mkdir -p "$tmp/img"
  tar_layer "$tmp/rootfs" "$tmp/layer.tar"
  lid=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
  diff=sha256:$lid
  mkdir -p "$tmp/img/$lid"
  mv "$tmp/layer.tar" "$tmp/img/$lid/layer.tar"
  echo '1.0' > "$tmp/img/$lid/VERSION"
  printf '{"id":"%s","created":"1970-01-01T00:00:00Z","os":"linux"}' "$lid" > "$tmp/img/$lid/json"
  cfg=$(docker_config "$tmp/img" "$diff" "")
  cfg_user=$(docker_config "$tmp/img" "$diff" user)
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]},{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' \
    "$cfg" "$name" "$lid" "$cfg_user" "$repo:user" "$lid" > "$tmp/img/manifest.json"
  printf '{"%s":{"%s":"%s","user":"%s"}}\n' "$repo" "$tag" "$lid" "$lid" > "$tmp/img/repositories"
  find "$tmp/img" -exec touch -h -d @0 {} +
  tar -C "$tmp/img" -cf "$out.tmp" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    manifest.json repositories "$cfg.json" "$cfg_user.json" "$lid"
  mv -f "$out.tmp" "$out"
  rm -rf "$tmp"
  echo "$name sha256:$cfg"
}

# make_rootfs_ext4 OUT.ext4 [SIZE]: the same busybox rootfs as a raw ext4 filesystem image
# (mkfs.ext4 -d keeps ownership and modes; no mount needed).
make_rootfs_ext4() {
  local out=$1 size=${2:-16M} tmp
  tmp=$(mktemp -d)
  make_busybox_rootfs "$tmp/rootfs"
  rm -f "$out.tmp"
  mkfs.ext4 -q -F -L vxn-test -U clear -E hash_seed=00000000-0000-0000-0000-000000000000 \
    -d "$tmp/rootfs" "$out.tmp" "$size" > /dev/null
  mv -f "$out.tmp" "$out"
  rm -rf "$tmp"
}

# build_test_images: $TESTIMG/{vxn-test.tar,vxn-test-docker.tar,busybox.ext4}, rebuilt when
# busybox or this file changed.
build_test_images() {
  local want
  want=$(hash_of "$BUSYBOX" "$LAB_DIR/lib/testimg.sh")
  if [ -f "$TESTIMG/vxn-test.tar" ] && [ -f "$TESTIMG/vxn-test-docker.tar" ] && [ -f "$TESTIMG/busybox.ext4" ] &&
     [ "$(cat "$TESTIMG/stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  mkdir -p "$TESTIMG"
  make_oci_tar "$TESTIMG/vxn-test.tar" > /dev/null
  make_docker_tar "$TESTIMG/vxn-test-docker.tar" > /dev/null
  make_rootfs_ext4 "$TESTIMG/busybox.ext4"
  echo "$want" > "$TESTIMG/stamp"
}

cmd_test_image() {
  build_test_images
  log "test-image: $TESTIMG/vxn-test.tar ($(stat -c %s "$TESTIMG/vxn-test.tar") bytes), $TESTIMG/vxn-test-docker.tar ($(stat -c %s "$TESTIMG/vxn-test-docker.tar") bytes), $TESTIMG/busybox.ext4 ($(du -h "$TESTIMG/busybox.ext4" | cut -f1) used)"
}
