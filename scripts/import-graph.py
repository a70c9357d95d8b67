#!/usr/bin/env python3
"""Module import graph of one Rust crate, and its cycles.

  scripts/import-graph.py [--folders] [--dot] [--check] CRATE_SRC_DIR...

Reads every .rs file under CRATE_SRC_DIR (bin/ and test-only code aside: `#[cfg(test)]`
modules, `*tests.rs`, `fake.rs`, `test_*.rs`), resolves each `crate::`, `super::` and
`self::` path to the module file that defines it, and prints the strongly connected
components of more than one file: the import circles. `--folders` draws the graph between
the crate's top-level modules (folders and root files) instead; `--dot` prints the graph
for Graphviz; `--check` looks at both and exits 1 when either has a circle, or when
a `--forbid A->B` rule is broken (CI's structure check: the model never names the Xen
backend, the seam never names a backend).
Why a script: cargo has no view of intra-crate imports, and a circle between files is
where a crate starts to knot.
"""
import argparse
import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_files(src):
    """{module path tuple: file path} for every .rs file of the crate (bin/ aside)."""
    mods = {}
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts[:1] == ["bin"]:
            continue
        for f in files:
            if not f.endswith(".rs"):
                continue
            stem = f[:-3]
            if not parts and stem in ("lib", "main"):
                path = ()
            elif stem == "mod":
                path = tuple(parts)
            else:
                path = tuple(parts + [stem])
            mods[path] = os.path.join(root, f)
    return mods


def is_test_only(path):
    name = path[-1] if path else ""
    return name in ("fake", "tests") or name.endswith("_tests") or name.startswith("test_")


def strip_test_modules(text):
    """Drops `#[cfg(test)] mod NAME { ... }` blocks (their imports are the tests')."""
    out, i = [], 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{")
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand_use_tree(tree):
    """`a::{b::C, d}` -> [[a, b, C], [a, d]]"""
    tree = tree.replace(" ", "").replace("\n", "")
    depth, start, items = 0, 0, []
    if "{" not in tree:
        return [[p for p in re.split(r"::", re.sub(r"\bas\b.*", "", tree)) if p]]
    head, rest = tree.split("{", 1)
    body = rest[: rest.rfind("}")]
    for k, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(body[start:k])
            start = k + 1
    items.append(body[start:])
    prefix = [p for p in head.split("::") if p]
    paths = []
    for it in items:
        if not it:
            continue
        for sub in expand_use_tree(it):
            paths.append(prefix + [s for s in sub if s != "self"])
    return paths


def referenced_paths(text, here):
    """Absolute module paths (lists of segments) a file names."""
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text):
        tree = re.sub(r"\s+as\s+" + IDENT, "", m.group(1))
        found.extend(expand_use_tree(tree))
    for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:crate|super|self)(?:::" + IDENT + r")+)", text):
        found.append(m.group(1).split("::"))
    out = []
    for segs in found:
        base = list(here)
        if segs[0] == "crate":
            base, segs = [], segs[1:]
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        out.append(base + segs)
    return out


def root_aliases(mods):
    """`pub use x::{A, B}` in lib.rs: crate::A is x's."""
    text = strip_comments(open(mods[()]).read())
    alias = {}
    for m in re.finditer(r"pub\s+use\s+([^;]*);", text):
        for p in expand_use_tree(m.group(1)):
            if len(p) >= 2:
                alias[p[-1]] = tuple(p[:-1])
    return alias


def resolve(path, mods, alias):
    if len(path) >= 1 and not path[:1] == [] and tuple(path[:1]) not in mods and path[0] in alias:
        path = list(alias[path[0]]) + path[1:]
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


def graph(src):
    mods = module_files(src)
    alias = root_aliases(mods) if () in mods else {}
    edges = {}
    for path, f in mods.items():
        if path == () or is_test_only(path):
            continue
        text = strip_test_modules(strip_comments(open(f).read()))
        deps = set()
        for ref in referenced_paths(text, path):
            target = resolve(ref, mods, alias)
            if target and target != path and target != () and not is_test_only(target):
                # a module names its own children: not an import of another file
                if target[: len(path)] == path:
                    continue
                deps.add(target)
        edges[path] = deps
    return edges


def folders(edges):
    out = {}
    for a, deps in edges.items():
        out.setdefault(a[:1], set())
        for b in deps:
            if b[:1] != a[:1]:
                out[a[:1]].add(b[:1])
    return out


def sccs(edges):
    """Tarjan's strongly connected components."""
    index, low, stack, on, res, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            res.append(comp)

    for v in list(edges):
        if v not in index:
            visit(v)
    return [c for c in res if len(c) > 1]


def name(path):
    return "::".join(path) or "crate"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("srcs", nargs="+", metavar="src")
    ap.add_argument("--folders", action="store_true")
    ap.add_argument("--dot", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument(
        "--forbid",
        action="append",
        default=[],
        metavar="A->B",
        help="top-level module A must not import B (with --check)",
    )
    a = ap.parse_args()
    found = False
    for src in a.srcs:
        files = graph(src)
        if a.dot:
            edges = folders(files) if a.folders else files
            print("digraph imports {")
            for v in sorted(edges):
                for w in sorted(edges[v]):
                    print(f'  "{name(v)}" -> "{name(w)}";')
            print("}")
            continue
        # --check: both; otherwise the one asked for
        views = [("folders", folders(files))] if a.folders else [("files", files)]
        if a.check:
            views = [("files", files), ("folders", folders(files))]
        for kind, edges in views:
            circles = sccs(edges)
            for c in circles:
                print(f"circle of {len(c)} {kind}: " + ", ".join(sorted(name(p) for p in c)))
            if not circles:
                print(f"no import circle between the {len(edges)} {kind} of {src}")
            found = found or bool(circles)
        tops = folders(files)
        for rule in a.forbid:
            user, _, used = rule.partition("->")
            if (used,) in tops.get((user,), ()):
                users = sorted(
                    name(f)
                    for f, deps in files.items()
                    if f[:1] == (user,) and any(d[:1] == (used,) for d in deps)
                )
                print(f"{src}: {user} imports {used} (forbidden): {', '.join(users)}")
                found = True
    if a.check and found:
        sys.exit(1)


if __name__ == "__main__":
    main()
