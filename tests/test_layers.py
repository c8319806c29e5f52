"""Package dependencies point one way (issue 31): media -> features -> data -> methods ->
serve / experiments / report -> cli, read from every import statement in ``src/avar`` (those
inside functions too), at package level."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "avar"

LAYERS = [
    {"files", "plots", "cluster"},  # helpers that import nothing of avar
    {"media", "metrics"},
    {"features", "anonymize"},
    {"datasets", "training"},
    {"methods"},
    {"runs"},
    {"serve", "experiments", "report"},
    {"cli"},
]
LAYER = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def package_imports() -> dict[str, dict[str, list[str]]]:
    """``{package: {imported package: ["file:line", ...]}}`` for imports across packages."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).parts
        if parts == ("__init__.py",):
            continue
        source = parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                names = module.split(".")
                if names[0] == "avar" and len(names) > 1 and names[1] != source:
                    graph[source][names[1]].append(f"{path.relative_to(SRC)}:{node.lineno}")
    return graph


def test_every_package_has_a_layer():
    packages = {p.name.removesuffix(".py") for p in SRC.iterdir()
                if p.suffix == ".py" and p.name != "__init__.py" or p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYER), "add the new package to LAYERS"


def test_imports_only_point_down():
    wrong = [f"{source} imports {target} ({', '.join(where[:3])})"
             for source, targets in package_imports().items() for target, where in targets.items()
             if LAYER[target] > LAYER[source]]
    assert not wrong, "\n".join(wrong)


def test_no_two_packages_import_each_other():
    graph = {source: set(targets) for source, targets in package_imports().items()}
    cycles = []

    def visit(node, path):
        for nxt in graph.get(node, ()):
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and LAYER[nxt] == LAYER[path[0]]:
                visit(nxt, [*path, nxt])

    for package in graph:
        visit(package, [package])
    assert not cycles, "\n".join(cycles)
