"""The package's imports point one way: no module imports, at any depth, a module that imports it.

Layers, lowest first; a module may import its own layer and those below, never those above:

    base      errors, config, fileio, plots (and the package itself)
    data      datasets, formats, readers, nuisances, batches
    models    networks; metrics.accuracy (pure scores of predictions, which training selects weights by)
    train     configs, runtime, checkpoint, losses, distributed, inference, the two training loops;
              git (the public GIT mixer, which the classifier loop calls)
    metrics   invariance and generator quality of trained runs (they load them through train.inference);
              invariance (the public eKLD, on top of metrics.invariance)
    report    report, demo
    cli       cli, __main__

Every import counts, also one inside a function: a function-local import must not hide a cycle.
Run as a script to print the module graph.
"""

from __future__ import annotations

import ast
import os
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
PACKAGE = "invtransfer"

# The most specific prefix decides a module's layer.
LAYERS = {
    "invtransfer": 0, "invtransfer.errors": 0, "invtransfer.config": 0, "invtransfer.fileio": 0,
    "invtransfer.plots": 0,
    "invtransfer.data": 1,
    "invtransfer.models": 2, "invtransfer.metrics.accuracy": 2,
    "invtransfer.train": 3, "invtransfer.git": 3,
    "invtransfer.metrics": 4, "invtransfer.invariance": 4,
    "invtransfer.report": 5, "invtransfer.demo": 5,
    "invtransfer.cli": 6, "invtransfer.__main__": 6,
}


def modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    root = os.path.join(SRC, PACKAGE)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), SRC)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, f)
    return out


def imports_of(path: str, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere (``from a import b`` counts as ``a.b``
    when ``b`` is a module)."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == PACKAGE:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(p, set(mods)) - {m} for m, p in sorted(mods.items())}


def layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise KeyError(f"{module} has no layer: add it to LAYERS")


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``g`` as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        path.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_layer():
    for m in graph():
        layer(m)


def test_no_import_cycle():
    assert find_cycle(graph()) is None


def test_imports_point_only_downwards():
    upward = [f"{m} (layer {layer(m)}) imports {n} (layer {layer(n)})"
              for m, deps in graph().items() for n in sorted(deps) if layer(n) > layer(m)]
    assert not upward, "\n".join(upward)


if __name__ == "__main__":
    g = graph()
    for m, deps in sorted(g.items(), key=lambda kv: (layer(kv[0]), kv[0])):
        print(f"[{layer(m)}] {m} -> {', '.join(sorted(deps)) or '-'}")
    cycle = find_cycle(g)
    print("cycle: " + " -> ".join(cycle) if cycle else "no cycle")
    sys.exit(1 if cycle else 0)
