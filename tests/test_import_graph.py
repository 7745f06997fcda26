"""The packages of auditkit import each other without cycles, except the known ones below.

Every module under ``auditkit/`` is parsed with ``ast``; imports inside functions count too
(the code imports lazily so that ``auditkit --help`` stays instant, but a lazy import is still a
dependency), and so do ``TYPE_CHECKING`` imports. A node of the graph is the first name under
``auditkit``: ``auditkit.report.context`` belongs to ``report``, ``auditkit/run.py`` is ``run``.
Nothing is imported, so the test needs no torch and takes well under a second.

A new cycle fails the test, and so does a known one that is gone (delete it from
:data:`KNOWN_CYCLES`, so the list stays exactly what is left to break).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "auditkit"

KNOWN_CYCLES: dict[str, str] = {}
"""Cycles not broken yet, each written from its alphabetically first package, with why (none
left: the last ones went with the run directory's owner, the analysis stage above analyze,
the toyworld audit harness in the CLI, the lean-to-share mapping beside the min_effect rule
and load_run_spec in the spec loader)."""

FORBIDDEN_IMPORTS = {("models", "toyworld"): "builtin models resolve through models/builtin.py"}
"""Imports that must not come back even where they would close no cycle."""


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of a source file and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every module name an import statement anywhere in ``tree`` may load, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = here[: len(here) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source, node.lineno
            for alias in node.names:  # ``from auditkit import run`` loads a module
                yield f"{source}.{alias.name}", node.lineno


def import_graph(root: Path = PACKAGE_DIR) -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the ``path:line`` of each import."""
    name = root.name
    nodes = {p.stem if p.is_file() else p.name for p in root.iterdir()}
    nodes = {n for n in nodes if n.isidentifier() and n != "__init__"}
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        parts = module.split(".")
        if len(parts) < 2:
            continue  # the package's own __init__ (version only) is no node
        source = parts[1]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported, line in _imported(tree, module, is_package):
            target = imported.split(".")
            if len(target) < 2 or target[0] != name or target[1] not in nodes:
                continue
            if target[1] != source:
                site = f"{path.relative_to(root.parent).as_posix()}:{line}"
                if site not in edges[source, target[1]]:
                    edges[source, target[1]].append(site)
    return dict(edges)


def elementary_cycles(edges: dict[tuple[str, str], list[str]]) -> set[tuple[str, ...]]:
    """Every cycle that visits no node twice, each once, starting at its smallest node."""
    succ: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    cycles: set[tuple[str, ...]] = set()
    for start in sorted(succ):
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for nxt in succ[node]:
                if nxt == start:
                    cycles.add(path)
                elif nxt > start and nxt not in path:
                    stack.append((nxt, (*path, nxt)))
    return cycles


def _named(cycle: tuple[str, ...]) -> str:
    return " -> ".join((*cycle, cycle[0]))


def _explain(cycle: tuple[str, ...], edges: dict[tuple[str, str], list[str]]) -> str:
    steps = zip(cycle, (*cycle[1:], cycle[0]), strict=True)
    return _named(cycle) + "".join(f"\n    {a} -> {b}: {', '.join(edges[a, b])}" for a, b in steps)


def test_no_new_import_cycles() -> None:
    edges = import_graph()
    found = elementary_cycles(edges)
    new = sorted(c for c in found if _named(c) not in KNOWN_CYCLES)
    assert not new, "new import cycles between auditkit packages:\n" + "\n".join(
        _explain(c, edges) for c in new
    )


def test_known_cycles_still_exist() -> None:
    found = {_named(c) for c in elementary_cycles(import_graph())}
    gone = sorted(set(KNOWN_CYCLES) - found)
    assert not gone, "these cycles are broken now; delete them from KNOWN_CYCLES: " + "; ".join(
        gone
    )


def test_forbidden_imports_stay_out() -> None:
    edges = import_graph()
    back = {pair: edges[pair] for pair in FORBIDDEN_IMPORTS if pair in edges}
    assert not back, f"imports that must not come back: {back} ({FORBIDDEN_IMPORTS})"


def test_the_graph_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    root = tmp_path / "auditkit"
    files = {
        "__init__.py": '__version__ = "0"\n',
        "run.py": "def go():\n    from auditkit.report import render\n",
        "report/__init__.py": "from .render import page\n",
        "report/render.py": "from .. import run\npage = 1\n",
        "models/__init__.py": "",
        "models/tiny.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from auditkit.spec.models import X\n"
        ),
        "spec/__init__.py": "from auditkit import __version__\n",
        "spec/models.py": "import auditkit.models.tiny\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    edges = import_graph(root)
    assert edges == {
        ("run", "report"): ["auditkit/run.py:2"],
        ("report", "run"): ["auditkit/report/render.py:1"],
        ("models", "spec"): ["auditkit/models/tiny.py:3"],
        ("spec", "models"): ["auditkit/spec/models.py:1"],
    }
    assert elementary_cycles(edges) == {("report", "run"), ("models", "spec")}
