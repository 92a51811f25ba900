"""The layering the code relies on, checked on the source: lower layers never import upper
ones, and the command line's modules import each other without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
#: package -> packages it must never import
FORBIDDEN = {
    "knowledge": {"coagent", "serving", "pipelines", "realtime"},
    "serving": {"coagent"},
    "realtime": {"coagent", "serving"},
    "pipelines": {"coagent", "serving"},
}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_lower_layers_never_import_upper_ones() -> None:
    offenders = [
        f"{module_name(path)} imports {name}"
        for package, banned in FORBIDDEN.items()
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imports(path))
        if name.split(".")[0] in banned
    ]
    assert offenders == []


def test_the_command_line_modules_have_no_import_cycle() -> None:
    graph = nx.DiGraph()
    for path in sorted((ROOT / "coagent").rglob("*.py")):
        source = module_name(path)
        graph.add_node(source)
        for name in imports(path):
            if name.startswith("coagent."):
                graph.add_edge(source, name)
    assert list(nx.simple_cycles(graph)) == []
