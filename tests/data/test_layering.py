"""Issue 10's must-show for the volume engine: it knows nothing of the web, and stays in small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import arkor

ROOT = Path(arkor.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_engines_import_nothing_from_the_web_or_the_data_server_role() -> None:
    offenders = []
    for package in ("data", "transfer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = {n for n in _imports(path) if n.startswith(("arkor.web", "arkor.dataserver", "quart"))}
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders, offenders

