"""The packages depend on each other one way, and no modules import each other in a circle.

    cli        -> retrieval, indexer      (parses, makes one library call, renders)
    retrieval  -> indexer                 (models, query, search, fine-tuning, server, index runs)
    indexer                               (media, stores, pipeline: knows no model, no CLI)

Inside `indexer`, media readers see only the plain records of the stores, and the stores never
see the pipeline; inside `retrieval`, the models know nothing of the layers built on them. Every
import counts, also one inside a function: a lazy import against the direction is still a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "retrieval", "indexer")

# module prefix -> prefixes it must never import
FORBIDDEN = {
    "indexer": ("retrieval", "cli"),
    "retrieval": ("cli",),
    "indexer.store": ("indexer.media", "indexer.pipeline", "indexer.integrity", "indexer.status"),
    "indexer.media": ("indexer.pipeline", "indexer.store.library", "indexer.store.database", "indexer.store.items",
                      "indexer.store.reads", "indexer.store.staging", "indexer.store.runs", "indexer.store.vectors"),
    "retrieval.models": ("retrieval.query", "retrieval.server", "retrieval.finetune", "retrieval.indexing",
                         "retrieval.index_model", "retrieval.media", "retrieval.classify"),
    "retrieval.query": ("retrieval.server", "retrieval.finetune", "retrieval.indexing"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """First-party modules `name` imports anywhere in its file (resolved to the longest known module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] not in PACKAGES:
                continue
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_imports_run_one_way():
    wrong = []
    for module, targets in _graph().items():
        for prefix, forbidden in FORBIDDEN.items():
            if _under(module, prefix):
                wrong.extend(f"{module} imports {target}" for target in targets
                             if any(_under(target, bad) for bad in forbidden))
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, circles


def test_the_checks_see_a_wrong_import(tmp_path, monkeypatch):
    """The checks above would fail on an import against the direction, even inside a function."""
    fake = tmp_path / "indexer"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from retrieval.models import encoders\n")
    modules = {"indexer": fake / "__init__.py", "indexer.bad": fake / "bad.py", "retrieval.models.encoders": fake / "x"}
    assert _imports("indexer.bad", fake / "bad.py", modules) == {"retrieval.models.encoders"}


def test_big_modules_say_why():
    """A module over about 400 lines says at its top why it is one module."""
    long = []
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > 420:
            head = "\n".join(lines[:25]).lower()
            if "one module" not in head and "why" not in head and "kept together" not in head:
                long.append(f"{name} ({len(lines)} lines)")
    assert not long, long
