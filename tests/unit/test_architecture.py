"""The package's shape, checked on every run: layers only import downwards, nothing imports in a circle,
run paths are spelled in one place, and nothing rebinds a model's forward or swaps a class.

Layers, lowest first (shared/ARCHITECTURE.md): text, glossary, recipe, models, runs -> data, docs -> evaluate, rag
-> train, export, serve, synth -> studio, update, tune, chat -> cli.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import seektune

PACKAGE = Path(seektune.__file__).parent
LAYERS = {
    "text": 0, "glossary": 0, "recipe": 0, "models": 0, "runs": 0,
    "data": 1, "docs": 1,
    "evaluate": 2, "rag": 2,
    "train": 3, "export": 3, "serve": 3, "synth": 3,
    "studio": 4, "update": 4, "tune": 4, "chat": 4,
    "cli": 5, "__main__": 5,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the seektune modules it imports, at the top level or inside functions alike."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    candidate = f"{source}.{alias.name}"
                    targets.add(candidate if candidate in modules else source)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in graph.items() for b in targets
                  if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
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
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_top_level_module_has_a_layer():
    unplaced = sorted({m.split(".")[1] for m in import_graph() if "." in m} - set(LAYERS))
    assert not unplaced, f"add these to the layer table in ARCHITECTURE.md and here: {unplaced}"


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(import_graph()) == []


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The graph walker sees lazy and relative imports; the checks flag a cycle and an upward arrow."""
    root = tmp_path / "seektune"
    (root / "data").mkdir(parents=True)
    (root / "train").mkdir()
    for init in (root / "__init__.py", root / "data" / "__init__.py", root / "train" / "__init__.py"):
        init.write_text("")
    (root / "data" / "clean.py").write_text("def f():\n    from seektune.train import sft\n")
    (root / "train" / "sft.py").write_text("from ..data import clean\n")
    graph = import_graph(root)
    assert graph["seektune.data.clean"] == {"seektune.train.sft"}
    assert graph["seektune.train.sft"] == {"seektune.data.clean"}
    assert upward_imports(graph) == ["seektune.data.clean (layer 1) imports seektune.train.sft (layer 3)"]
    assert cycles(graph) == [["seektune.data.clean", "seektune.train.sft"]]


# a run directory's own files and folders (runs.py spells them; nothing else may)
RUN_PARTS = ("data", "eval", "eval-old", "adapter", "model", "checkpoints", "last-good", "logs", "distill",
             "export", "stages", "human_eval", "train.json", "update.json", "report.html", "report.json",
             "feedback.sqlite", "feedback.jsonl", "train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl",
             "summary.json", "metrics.json", "samples.jsonl", "card.json", "card.html", "recipe.resolved.yaml")
RUN_JOIN = re.compile(r"/\s*[\"'](" + "|".join(re.escape(p) for p in RUN_PARTS) + r")[\"']")


def test_run_paths_are_joined_only_in_runs_py():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path.name != "runs.py"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if RUN_JOIN.search(line)]
    assert offenders == [], "use seektune.runs.RunDir instead:\n" + "\n".join(offenders)


def test_nothing_rebinds_forward_or_swaps_a_class():
    pattern = re.compile(r"\.__class__\s*=[^=]|\.forward\s*=[^=]|MethodType\(")
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
                 for path in sorted(PACKAGE.rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert long == {}
