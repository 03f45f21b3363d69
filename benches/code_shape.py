#!/usr/bin/env python3
"""The shape of src/, as issue #36 measures it: files over 600 lines, functions over 100 lines (a
brace count from each `fn`), import circles between files, upward imports inside folders (a file
using its own folder's mod.rs), `.raw.` reads outside config/, timestamps kept as `String`, and the
`duplicates` tool's pairs. Run from the repository root: `python3 benches/code_shape.py [--list]`.
"""
import os
import re
import subprocess
import sys

SRC = "src"
LIST = "--list" in sys.argv


def rust_files():
    for root, _, files in os.walk(SRC):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(root, f)


def strip(line):
    """The line without string literals and line comments (for brace counting)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//")[0]


def functions(path, lines):
    out = []
    i = 0
    in_test = False
    while i < len(lines):
        line = lines[i]
        if re.match(r"\s*#\[cfg\(test\)\]", line):
            in_test = True
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)", line)
        if m and not in_test:
            depth, started, j = 0, False, i
            while j < len(lines):
                s = strip(lines[j])
                if not started and ";" in s and "{" not in s:
                    break  # a declaration without a body
                depth += s.count("{") - s.count("}")
                if "{" in s:
                    started = True
                if started and depth <= 0:
                    break
                j += 1
            if started:
                out.append((j - i + 1, f"{path}:{i + 1} {m.group(6)}"))
                i = j
        i += 1
    return out


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def main():
    big_files, long_fns, raw_uses, string_times = [], [], [], []
    edges = {}  # file -> set of sibling files it uses
    upward = []
    files = list(rust_files())
    by_module = {tuple(module_of(f)): f for f in files}
    for f in files:
        lines = open(f, encoding="utf-8").read().split("\n")
        if len(lines) > 600:
            big_files.append((len(lines), f))
        long_fns += [x for x in functions(f, lines) if x[0] > 100]
        # code only: comments and doc comments name modules without importing them
        text = "\n".join(l.split("//")[0] for l in lines)
        if not f.startswith(os.path.join(SRC, "config")):
            raw_uses += [f"{f}:{n + 1}" for n, l in enumerate(lines) if ".raw." in l]
        for n, l in enumerate(lines):
            if re.search(r"\b\w*(time|_utc|_local|_at)\w*\s*:\s*(Option<)?String\b", l) and not l.strip().startswith("//"):
                string_times.append(f"{f}:{n + 1}")
        mod = module_of(f)
        is_mod_rs = f.endswith("mod.rs")
        folder = mod if is_mod_rs else mod[:-1]
        # references to siblings (super::x / crate::folder::x) and to the folder's own mod.rs items
        siblings = {k[-1]: v for k, v in by_module.items() if list(k[:-1]) == folder and v != f}
        refs = set()
        for m in re.finditer(r"\bsuper::(\w+)", text):
            if is_mod_rs:
                continue
            name = m.group(1)
            if name in siblings:
                refs.add(siblings[name])
            else:
                upward.append(f"{f}: super::{name}")
        if folder:
            for m in re.finditer(r"\bcrate::" + "::".join(folder) + r"::(\w+)", text):
                name = m.group(1)
                if name in siblings:
                    refs.add(siblings[name])
        edges[f] = refs
    # circles between files: strongly connected components with more than one file
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def strong(v, counter=[0]):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
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
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            strong(v)
    dup = subprocess.run(["duplicates", "--most", "1", "--seconds", "120"], capture_output=True, text=True).stdout
    m = re.match(r"(\d+) pairs of places.*?\((\d+) by shape alone, (\d+) of those marked boilerplate\)", dup)
    pairs = f"{m.group(1)} ({m.group(2)} by shape alone, {m.group(3)} of those boilerplate)" if m else dup.splitlines()[:1]
    print(f"files over 600 lines: {len(big_files)}")
    for n, f in sorted(big_files, reverse=True):
        print(f"  {n:5} {f}")
    print(f"functions over 100 lines: {len(long_fns)}")
    for n, f in sorted(long_fns, reverse=True):
        print(f"  {n:5} {f}")
    print(f"import circles between files: {len(sccs)}")
    for c in sccs:
        print("  " + " <-> ".join(c))
    print(f"upward imports inside folders (a file using its folder's mod.rs): {len(upward)}")
    if LIST:
        for u in upward:
            print("  " + u)
    print(f".raw. outside config/: {len(raw_uses)}")
    if LIST:
        for u in raw_uses:
            print("  " + u)
    print(f"timestamps held as String: {len(string_times)}")
    if LIST:
        for u in string_times:
            print("  " + u)
    print(f"duplicates pairs: {pairs}")


main()
