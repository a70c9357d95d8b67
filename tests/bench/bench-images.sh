# shellcheck shell=bash
# Sourced by the benchmarks (in dom0, beside them in /usr/local/bin: floor-bench.sh,
# pod-bench.sh): test images of a chosen size, built in dom0. Needs WORK (the benchmark's
# scratch directory), IMG (the base image, in the namespace the image is built in) and
# python3.

# disk_free_kb: KiB free on containerd's filesystem (content store, snapshots; the vxn
# image cache is on the same one in the lab's dom0).
disk_free_kb() { df -Pk /var/lib/containerd | awk 'NR==2 {print $4}'; }

# build_image NAME MIB [NAMESPACE]: IMG plus one uncompressed layer holding /floor/blob.bin
# (MIB MiB of non-zero, incompressible bytes: mkfs.ext4 -d would skip zero blocks), in
# containerd namespace NAMESPACE (default: default; CRI's is k8s.io). The layer is generated
# by python3 straight into containerd's content store (no copy on disk), then a layout with
# only the new config and manifest is imported (its layers are in the store already) and
# unpacked for the namespace's default snapshotter (overlayfs: CRI's too). Nothing when
# NAME exists in NAMESPACE already.
# KEEP_LAYER=0: the layer blob is removed after the unpack (the snapshot is what runs), at
# once.
build_image() {
  local name=$1 mib=$2 ns=${3:-default}
  ctr -n "$ns" images ls -q | grep -qx "$name" && return 0
  python3 - "$IMG" "$name" "$mib" "$WORK/layer-$ns-$mib" "$ns" <<'PY' || return 1
import hashlib, json, os, random, subprocess, sys, tarfile, tempfile
base, name, mib, out, ns = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def ctr(*a):
    return subprocess.run(["ctr", "-n", ns, *a], check=True, capture_output=True).stdout
def get(d):
    return json.loads(ctr("content", "get", d))
target = None
for line in ctr("images", "ls").decode().splitlines()[1:]:
    f = line.split()
    if f and f[0] == base:
        target = f[2]
if not target:
    sys.exit("build_image: image %s not found in namespace %s" % (base, ns))
manifest = get(target)
config = get(manifest["config"]["digest"])
size = mib << 20
# straight into the content store's directory (containerd's gRPC ingest moves ~2 MB/s under
# TCG); `ctr content ingest` then records it: the store already holds the blob and shares it
# (the default content sharing policy), resuming at its end (stdin: the blob itself).
store = "/var/lib/containerd/io.containerd.content.v1.content"
tmpf = "/var/lib/containerd/floor-layer.tmp"
w = open(tmpf, "wb")
h = hashlib.sha256()
n = 0
def emit(b):
    global n
    h.update(b); w.write(b); n += len(b)
d = tarfile.TarInfo("floor"); d.type = tarfile.DIRTYPE; d.mode = 0o755; d.mtime = 0
emit(d.tobuf(tarfile.GNU_FORMAT))
t = tarfile.TarInfo("floor/blob.bin"); t.size = size; t.mode = 0o644; t.mtime = 0
emit(t.tobuf(tarfile.GNU_FORMAT))
chunk = random.Random(1).randbytes(1 << 20)
for _ in range(mib):
    emit(chunk)
emit(b"\0" * 10240)
w.close()
layer = "sha256:" + h.hexdigest()
path = store + "/blobs/sha256/" + h.hexdigest()
os.rename(tmpf, path)
with open(path, "rb") as f:
    subprocess.run(["ctr", "-n", ns, "content", "ingest", "--expected-digest", layer,
                    "--expected-size", str(n), "floor-layer-%d" % mib], stdin=f, check=True)
config["rootfs"]["diff_ids"].append(layer)
config.setdefault("history", []).append({"created": "1970-01-01T00:00:00Z", "created_by": "floor-bench.sh: %d MiB" % mib})
tmp = tempfile.mkdtemp()
os.makedirs(tmp + "/blobs/sha256")
def blob(b):
    d = hashlib.sha256(b).hexdigest()
    open(tmp + "/blobs/sha256/" + d, "wb").write(b)
    return "sha256:" + d, len(b)
cd, cs = blob(json.dumps(config).encode())
manifest["config"]["digest"], manifest["config"]["size"] = cd, cs
manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": n})
md, ms = blob(json.dumps(manifest).encode())
json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
     "platform": {"architecture": "amd64", "os": "linux"},
     "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]},
    open(tmp + "/index.json", "w"))
open(tmp + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
with tarfile.open(tmp + ".tar", "w") as tf:
    for e in ("oci-layout", "index.json", "blobs"):
        tf.add(tmp + "/" + e, e)
subprocess.run(["ctr", "-n", ns, "images", "import", tmp + ".tar"], check=True, stdout=subprocess.DEVNULL)
subprocess.run(["rm", "-rf", tmp, tmp + ".tar"])
open(out, "w").write(layer + "\n")
PY
  if [ "${KEEP_LAYER:-1}" = 0 ]; then
    ctr -n "$ns" content rm "$(cat "$WORK/layer-$ns-$mib")" > /dev/null
    # containerd's garbage collector deletes the blob's file whenever it next runs: a
    # synchronous removal of a throwaway tag runs it now (the space is free for what follows)
    ctr -n "$ns" images tag "$name" "$name-gc" > /dev/null &&
      ctr -n "$ns" images rm --sync "$name-gc" > /dev/null
  fi
}

# image_chain_id NAME [NAMESPACE]: the chain ID of NAME's layers (its top snapshot's name
# once unpacked).
image_chain_id() {
  local name=$1 ns=${2:-default}
  python3 - "$name" "$ns" <<'PY'
import hashlib, json, subprocess, sys
name, ns = sys.argv[1], sys.argv[2]
def ctr(*a):
    return subprocess.run(["ctr", "-n", ns, *a], check=True, capture_output=True).stdout
target = [l.split()[2] for l in ctr("images", "ls").decode().splitlines()[1:] if l.split() and l.split()[0] == name]
if not target:
    sys.exit("image_chain_id: image %s not found in namespace %s" % (name, ns))
manifest = json.loads(ctr("content", "get", target[0]))
ids = json.loads(ctr("content", "get", manifest["config"]["digest"]))["rootfs"]["diff_ids"]
chain = ids[0]
for d in ids[1:]:
    chain = "sha256:" + hashlib.sha256((chain + " " + d).encode()).hexdigest()
print(chain)
PY
}
