"""House rules for the source tree, checked with `ast` (no import of the package needed):

- no import cycle between modules of ``src/sam3studio`` (imports inside functions count; imports under
  ``if TYPE_CHECKING:`` do not; a package's ``__init__`` importing its own submodules does not);
- no function longer than 150 lines;
- the edges are packages (``api``, ``ui``, ``cli``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "sam3studio"
MAX_FUNCTION_LINES = 150


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module of ours that ``module`` imports, anywhere in its body (TYPE_CHECKING blocks aside)."""
    found: set[str] = set()
    base = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                target = ".".join([*parent, node.module] if node.module else parent)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = {t for t in _imports(ast.parse(path.read_text(encoding="utf-8")), name, is_package) if t in modules}
        targets.discard(name)
        if is_package:  # a package's __init__ re-exporting its own submodules is not a dependency
            targets = {t for t in targets if not t.startswith(name + ".")}
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_checker_finds_a_cycle_and_a_type_checking_import_is_not_one():
    a = ast.parse("from sam3studio import b\n")
    b = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sam3studio import a\n"
                  "def f():\n    from sam3studio.c import x\n")
    assert _imports(a, "sam3studio.a", False) >= {"sam3studio.b"}
    assert "sam3studio.a" not in _imports(b, "sam3studio.b", False)
    assert "sam3studio.c" in _imports(b, "sam3studio.b", False)  # a deferred import still counts
    assert find_cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_function_is_too_long():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("package", ["api", "ui", "cli", "jobs"])
def test_edges_are_packages(package):
    assert (SRC / PACKAGE / package / "__init__.py").is_file()
    assert not (SRC / PACKAGE / f"{package}.py").exists()


# The layers of docs/architecture.md, lowest first: a module may import its own layer and the ones below.
LAYERS = {
    "leaves": {"errors", "settings", "results", "schemas", "prompts", "translate", "io", "validation", "cleanup",
               "render", "masks", "refine"},
    "model": {"random_model", "model", "interactive", "testing"},
    "engine": {"core", "loading", "video", "onnx"},
    "work": {"export", "evaluation", "batch", "bench", "finetune", "dataset"},
    "service": {"service", "jobs", "observability", "sessions"},
    "llm": {"llm", "agent"},
    "edges": {"api", "ui", "cli"},
}
# Documented exceptions: `bench` builds the API app to time its overhead.
LAYER_EXCEPTIONS = {("bench", "api")}


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if module.count(".") else ""
    if not top:
        return -1  # the package's __init__: lazy names only, imports nothing statically
    for rank, members in enumerate(LAYERS.values()):
        if top in members:
            return rank
    return None


def test_every_module_has_a_layer():
    unknown = sorted({m.split(".")[1] for m in _modules() if m.count(".") and _layer(m) is None})
    assert not unknown, f"add these to LAYERS here and to the layer table in docs/architecture.md: {unknown}"


def test_modules_import_only_their_layer_and_below():
    wrong = []
    for module, targets in import_graph().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            pair = (module.split(".")[1] if module.count(".") else "", target.split(".")[1] if target.count(".") else "")
            if here is not None and there is not None and there > here and pair not in LAYER_EXCEPTIONS:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports from a higher layer: " + "; ".join(sorted(wrong))
