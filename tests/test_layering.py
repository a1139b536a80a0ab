"""The imports flow one way (docs/architecture.md): every import of a shortllm module, at module level or inside a
function, goes to a module of the same layer or one below, and no modules import each other in a circle. The
test reads the source, so a new circle or an arrow back up a layer fails here, whatever is imported at run time."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Bottom to top; a module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("shortllm.errors", "shortllm.wording", "shortllm.tempdirs", "shortllm.optim", "shortllm.plotting",
              "shortllm")),
    ("models, data and file formats", ("shortllm.models", "shortllm.data", "shortllm.formats")),
    ("what every job shares: the removal arithmetic and the output folders",
     ("shortllm.pruning.plan", "shortllm.pruning.export")),
    ("criteria", ("shortllm.scoring",)),
    ("jobs", ("shortllm.pruning", "shortllm.training", "shortllm.evaluation", "shortllm.benchmark",
              "shortllm.models.summary")),
    ("recipes", ("shortllm.pipeline",)),
    ("command line", ("shortllm.cli", "shortllm.__main__")),
]
# The recipe runner still drives each verb through the CLI's own parser (a recipe accepts exactly what the command
# line accepts); these two arrows, and the circle they close, go when it calls the Python API instead.
KNOWN_UPWARD = {("shortllm.pipeline.runner", "shortllm.cli.click_errors"), ("shortllm.pipeline.verbs", "shortllm.cli.app"),
                ("shortllm.pipeline.runner", "shortllm.cli.applies")}


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "shortllm").rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        found[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The shortllm modules ``name`` imports anywhere in its source (``from shortllm.x import y`` names the
    module ``shortllm.x.y`` when that is one, else ``shortllm.x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
            out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                    for a in node.names}
    return out - {name}


def layer(name: str) -> int:
    best = max(((len(prefix), rank) for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if name == prefix or name.startswith(prefix + ".")), default=None)
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best[1]


def edges() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_import_goes_to_the_same_layer_or_below():
    upward = sorted((src, dst) for src, targets in edges().items() for dst in targets
                    if layer(dst) > layer(src) and (src, dst) not in KNOWN_UPWARD)
    assert upward == [], "\n".join(f"{s} ({LAYERS[layer(s)][0]}) imports {d} ({LAYERS[layer(d)][0]})"
                                   for s, d in upward)


def test_the_known_exceptions_still_exist():
    """An exception that no longer happens is taken off the list, so the list only shrinks."""
    graph = edges()
    assert all(dst in graph[src] for src, dst in KNOWN_UPWARD)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other_in_a_circle():
    # a package's __init__ that re-exports is its face, not a room: edges through it are not circles
    faces = {name for name, path in modules().items() if path.name == "__init__.py"}
    graph = {s: {d for d in ts if d not in faces and (s, d) not in KNOWN_UPWARD}
             for s, ts in edges().items() if s not in faces}
    assert _cycles(graph) == []


def test_the_checker_sees_a_circle_and_an_upward_arrow():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert layer("shortllm.cli.app") > layer("shortllm.scoring.run") > layer("shortllm.models.loading")
    assert layer("shortllm.pruning.plan") < layer("shortllm.scoring.run") < layer("shortllm.pruning.run")
