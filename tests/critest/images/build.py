#!/usr/bin/env python3
"""Build every image critest 1.36.0 uses, under the names it uses, as one OCI image
layout tarball for `ctr -n k8s.io images import` (no registry is reachable).

What each image must hold comes from cri-tools v1.36.0's pkg/validate (see
tests/critest/README.md): a busybox whose shell is not "standalone" (a masked /bin/ls
must fail as upstream's busybox 1.29 does; Debian's busybox-static runs applets
in-process, so Debian's dynamic busybox is used with its libraries), pgrep and ipcs,
a `nobody` user; web servers that answer GET / on port 80 (and 12003 for host
network); a setuid program that prints its effective uid; the pause program; the
test-image-* family with the distinctness and shared tags the Image Manager specs check.

Usage: build.py OUT.tar --busybox PATH [--cc gcc]
Stdlib only; reproducible (fixed times and owners), so the same inputs give the same
image IDs.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
R = "registry.k8s.io/e2e-test-images/"
G = "gcr.io/k8s-staging-cri-tools/"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
www-data:x:33:
operator:x:37:
nogroup:x:65534:
"""


class Layer:
    """One uncompressed (digest == diff_id), reproducible layer tar."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.names = set()

    def _info(self, name, kind, mode, uid=0, gid=0):
        t = tarfile.TarInfo(name.lstrip("/"))
        t.type, t.mode, t.uid, t.gid, t.mtime = kind, mode, uid, gid, 0
        t.uname = t.gname = ""
        return t

    def dir(self, name, mode=0o755, uid=0, gid=0):
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.names:
                last = i == len(parts)
                self.tar.addfile(self._info(p, tarfile.DIRTYPE, mode if last else 0o755,
                                            uid if last else 0, gid if last else 0))
                self.names.add(p)

    def file(self, name, data, mode=0o644, uid=0, gid=0):
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        t = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        t.size = len(data)
        self.tar.addfile(t, io.BytesIO(data))
        self.names.add(name.strip("/"))

    def hardlink(self, name, target):
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        t = self._info(name, tarfile.LNKTYPE, 0o755)
        t.linkname = target.lstrip("/")
        self.tar.addfile(t)
        self.names.add(name.strip("/"))

    def close(self):
        self.tar.close()
        return self.buf.getvalue()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def compile_static(cc, src, out):
    subprocess.run([cc, "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", out, src],
                   check=True)
    subprocess.run(["strip", out], check=False)
    return read(out)


def libraries(binary):
    """The shared libraries (and loader) a dynamic binary needs, by absolute path."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/") and os.path.exists(word):
                libs.append(word)
    return sorted(set(libs))


def busybox_layer(busybox):
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    if "sh" not in applets or "httpd" not in applets:
        sys.exit(f"{busybox}: no sh or httpd applet")
    lay = Layer()
    for d in ("bin", "dev", "etc", "home", "proc", "root", "sys", "usr/bin", "usr/sbin",
              "usr/local/bin", "var/run", "var/www"):
        lay.dir(d, 0o700 if d == "root" else 0o755)
    lay.dir("tmp", 0o1777)
    lay.file("bin/busybox", read(busybox), 0o755)
    # Hard links, as upstream's busybox image has them: masking /bin/ls (a bind mount
    # over it) must hide ls only, not the busybox a symlink would lead to.
    for a in applets:
        if a != "busybox":
            lay.hardlink(f"bin/{a}", "bin/busybox")
    for lib in libraries(busybox):
        lay.file(lib, read(os.path.realpath(lib)), 0o755)
    for tool in ("pgrep", "ipcs"):
        if tool not in applets:
            lay.file(f"usr/bin/{tool}", read(os.path.join(HERE, tool)), 0o755)
    lay.file("etc/passwd", PASSWD.encode())
    lay.file("etc/group", GROUP.encode())
    return lay.close()


def one_file_layer(path, data, mode=0o644, uid=0, gid=0):
    lay = Layer()
    lay.file(path, data, mode, uid, gid)
    return lay.close()


class Layout:
    """An OCI image layout: blobs, and an index naming each manifest."""

    def __init__(self):
        self.blobs = {}
        self.index = []

    def blob(self, data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[d] = data
        return {"digest": d, "size": len(data)}

    def image(self, names, layers, config):
        descs = [self.blob(l) for l in layers]
        cfg = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Env": [PATH_ENV], "WorkingDir": "/", **config},
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
            "history": [{"created": "1970-01-01T00:00:00Z",
                         "created_by": "tests/critest/images/build.py"} for _ in descs],
        }
        c = self.blob(json.dumps(cfg, sort_keys=True).encode())
        man = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **c},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **d}
                       for d in descs],
        }
        m = self.blob(json.dumps(man, sort_keys=True).encode())
        for n in names:
            self.index.append({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **m,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": n,
                                "org.opencontainers.image.ref.name": n.rsplit(":", 1)[1]},
            })
        return m["digest"]

    def write(self, out):
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
               "manifests": self.index}
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                 ("index.json", json.dumps(idx, sort_keys=True).encode())]
        files += [(f"blobs/sha256/{d[7:]}", data) for d, data in sorted(self.blobs.items())]
        tmp = out + ".tmp"
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
            for d in ("blobs", "blobs/sha256"):
                i = tarfile.TarInfo(d)
                i.type, i.mode, i.mtime = tarfile.DIRTYPE, 0o755, 0
                t.addfile(i)
            for name, data in files:
                i = tarfile.TarInfo(name)
                i.size, i.mode, i.mtime = len(data), 0o644, 0
                t.addfile(i, io.BytesIO(data))
        os.replace(tmp, out)


def build(out, busybox, cc):
    lay = Layout()
    base = busybox_layer(busybox)
    with tempfile.TemporaryDirectory() as tmp:
        prog = {n: compile_static(cc, os.path.join(HERE, f"{n}.c"), os.path.join(tmp, n))
                for n in ("pause", "nnp", "nginx")}

    lay.image([R + "busybox:1.29-2"], [base], {"Cmd": ["sh"]})

    def web(port):
        l = Layer()
        l.file("usr/sbin/nginx", prog["nginx"], 0o755)
        l.file("usr/share/nginx/html/index.html", b"<h1>Welcome to nginx!</h1>\n")
        l.file("etc/nginx/port", f"{port}\n".encode())
        return l.close()

    nginx_cfg = {"Cmd": ["nginx", "-g", "daemon off;"], "StopSignal": "SIGQUIT"}
    lay.image([R + "nginx:1.14-2"], [base, web(80)],
              {**nginx_cfg, "ExposedPorts": {"80/tcp": {}}})
    lay.image([G + "hostnet-nginx-amd64:latest"], [base, web(12003)],
              {**nginx_cfg, "ExposedPorts": {"12003/tcp": {}}})

    h = Layer()
    h.file("usr/local/bin/httpd-foreground", read(os.path.join(HERE, "httpd-foreground")), 0o755)
    h.file("usr/local/apache2/htdocs/index.html", b"<html><body><h1>It works!</h1></body></html>\n")
    lay.image([R + "httpd:2.4.39-4"], [base, h.close()],
              {"Cmd": ["httpd-foreground"], "ExposedPorts": {"80/tcp": {}}})

    lay.image([R + "nonewprivs:1.3"],
              [base, one_file_layer("usr/local/bin/nnp", prog["nnp"], 0o4755)],
              {"Cmd": ["nnp"]})

    g = Layer()
    g.file("etc/passwd", (PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n").encode())
    g.file("etc/group", (GROUP + "default-user:x:1000:\n"
                         "group-defined-in-image:x:50000:default-user\n").encode())
    g.dir("home/default-user", 0o755, 1000, 1000)
    lay.image([G + "test-image-predefined-group:latest"], [base, g.close()],
              {"Cmd": ["sh"], "User": "1000"})

    for suffix, user in (("uid", "1002"), ("username", "www-data"),
                         ("uid-group", "1003:1004"), ("username-group", "www-data:1004")):
        lay.image([f"{G}test-image-user-{suffix}:latest"], [base], {"Cmd": ["sh"], "User": user})

    # The Image Manager family: each image distinct (a file named after it), except
    # test-image-tags, one image under three tags (as upstream's images/build makes them).
    def marked(name, tags):
        lay.image([f"{G}{name}:{t}" for t in tags],
                  [base, one_file_layer(name + "-" + "-".join(tags), b"")], {"Cmd": ["sh"]})

    marked("test-image-tag", ["test"])
    marked("test-image-tag", ["all"])
    marked("test-image-latest", ["latest"])
    for i in (1, 2, 3):
        marked(f"test-image-{i}", ["latest"])
    marked("test-image-tags", ["1", "2", "3"])

    lay.image(["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"],
              [one_file_layer("pause", prog["pause"], 0o755)], {"Entrypoint": ["/pause"]})
    lay.write(out)
    for e in lay.index:
        print(e["annotations"]["io.containerd.image.name"], e["digest"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--busybox", required=True,
                    help="a busybox whose sh is not standalone (Debian's dynamic one)")
    ap.add_argument("--cc", default="gcc")
    a = ap.parse_args()
    build(a.out, a.busybox, a.cc)


if __name__ == "__main__":
    main()
