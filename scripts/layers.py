"""The package's import graph, checked against the layers of docs/architecture.md.

    python scripts/layers.py          # prints violations and cycles; exit 1 if any

Every module of ``src/sellerlift`` has a layer; a module may import only from its own
layer or below, the graph (module-level and function-level imports alike) has no
cycles, nothing below ``models`` imports torch or Lightning, and ``serve/`` uses only
the runtime and what the runtime itself imports. ``tests/test_layers.py`` runs this.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "sellerlift"

# Lowest first. A new module must be placed here (the check fails on unknown modules).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "schema",
            "columns",
            "file_formats",
            "constants",
            "delimited",
            "io",
            "allocate",
            "allocate.*",
            "metrics",
            "bootstrap",
            "value_metrics",
            "tracking",
            "plots",
        ),
    ),
    (
        "data",
        (
            "features",
            "labels",
            "promotion_features",
            "offer_outcomes",
            "bgnbd",
            "gamma_gamma",
            "data",
            "data.*",
            "sim",
            "sim.*",
        ),
    ),
    (
        "runtime",
        (
            "runtime",
            "runtime.*",
            "k_selection",
            "segment",
            "action_segments",
            "baselines",
            "clv_baseline",
            "policy_eval",
            "champion",
            "report",
            "ceiling",
            "score_parts",
            "score_allocate",
            "closed_loop",
            "closed_loop.experiments",
            "closed_loop.did",
            "closed_loop.ope",
            "closed_loop.observe",
            "closed_loop.policies",
        ),
    ),
    ("models", ("models", "models.*", "export", "sweep", "reliability", "engine", "engine.*")),
    (
        "stages",
        (
            "stages",
            "stages.*",
            "pipeline",
            "config_checks",
            "closed_loop.forward",
            "closed_loop.outcomes",
            "closed_loop.studies",
            "closed_loop.evaluate",
            "closed_loop.report",
            "closed_loop.seeds",
        ),
    ),
    ("entries", ("score", "evaluate", "data.check", "data.__main__")),
]
TORCH = ("torch", "lightning", "pytorch_lightning", "torchmetrics")
RAY_HOME = "engine"  # the only package that imports ray (docs/scale.md)


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts) or "__init__"] = p
    out.pop("__init__", None)
    return out


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``sellerlift.x.y`` -> ``x.y``)."""
    mods = modules()
    g = {}
    for name, path in mods.items():
        deps = set()
        for imp in imports_of(path):
            if imp.startswith("sellerlift."):
                rel = imp[len("sellerlift.") :]
                while rel and rel not in mods:  # `from sellerlift.x import y` where y is not a module
                    rel = rel.rpartition(".")[0]
                if rel and rel != name and not name.startswith(rel + "."):  # a package's own __init__ is not a dep
                    deps.add(rel)
        g[name] = deps
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return found


def layer_of() -> dict[str, int]:
    """Module -> layer index; ``pkg.*`` in LAYERS places every module of a package."""
    explicit = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods if not m.endswith(".*")}
    for m in modules():
        for i, (_, mods) in enumerate(LAYERS):
            if m not in explicit and any(p.endswith(".*") and m.startswith(p[:-1]) for p in mods):
                explicit[m] = i
    return explicit


def violations() -> list[str]:
    g, lay, out = graph(), layer_of(), []
    models_layer = next(i for i, (n, _) in enumerate(LAYERS) if n == "models")
    for m in g:
        if m not in lay:
            out.append(f"{m}: no layer (add it to scripts/layers.py LAYERS)")
    for m, deps in g.items():
        for d in deps:
            if m in lay and d in lay and lay[d] > lay[m]:
                out.append(f"{m} ({LAYERS[lay[m]][0]}) imports {d} ({LAYERS[lay[d]][0]}), a higher layer")
        if m in lay and lay[m] < models_layer:
            heavy = sorted(i for i in imports_of(modules()[m]) if i.split(".")[0] in TORCH)
            if heavy:
                out.append(f"{m} ({LAYERS[lay[m]][0]}) imports {heavy}: nothing below models may import torch")
        if m != RAY_HOME and not m.startswith(RAY_HOME + "."):
            rays = sorted(i for i in imports_of(modules()[m]) if i.split(".")[0] == "ray")
            if rays:
                out.append(f"{m} imports {rays}: only sellerlift.{RAY_HOME} may import ray")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(g)]
    return out + serve_violations(g)


def serve_violations(g: dict[str, set[str]]) -> list[str]:
    """serve/ may use the runtime and what the runtime imports (transitively), plus its own modules."""
    allowed, todo = set(), ["runtime"]
    while todo:
        m = todo.pop()
        if m not in allowed:
            allowed.add(m)
            todo += sorted(g.get(m, ()))
    out = []
    for p in sorted((REPO / "serve").glob("*.py")):
        for imp in imports_of(p):
            if imp.startswith("sellerlift."):
                rel = imp[len("sellerlift.") :]
                mods = modules()
                while rel and rel not in mods:
                    rel = rel.rpartition(".")[0]
                if rel and rel not in allowed:
                    out.append(f"serve/{p.name} imports sellerlift.{rel}, which the runtime does not use")
            elif imp.split(".")[0] in TORCH:
                out.append(f"serve/{p.name} imports {imp}: the server never needs torch")
    return out


if __name__ == "__main__":
    problems = violations()
    print("\n".join(problems) or "layers: ok (no cycles, every import goes down)")
    sys.exit(1 if problems else 0)
