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



def test_engine_modules_are_small_and_open_with_a_charter() -> None:
    for path in sorted((ROOT / "data").rglob("*.py")) + sorted((ROOT / "dataserver").rglob("*.py")):
        text = path.read_text()
        if not text.strip():
            continue
        assert text.count("\n") <= 500, f"{path.name} has {text.count(chr(10))} lines"
        assert ast.get_docstring(ast.parse(text)), f"{path.name} has no charter docstring"
