"""The import rules that keep core, front ends and lab apart, read from every module's imports.

handlers -> bot -> storage, one way; bot/app.py, the one composition root, may import handlers;
the lab (stand-ins for the outside world) may import product code, product code never the lab.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = "bot.app"
LAB = "bot.lab"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from bot import bench
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for package in ("bot", "handlers", "storage")
            for p in sorted((ROOT / package).rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _broken(rule: str, importer: str, imported: str) -> str:
    return f"{importer} imports {imported} ({rule})"


def test_imports_run_handlers_then_bot_then_storage_and_never_into_the_lab() -> None:
    graph = _graph()
    assert COMPOSITION_ROOT in graph and any(_within(m, LAB) for m in graph), "the layout this test guards moved"
    broken = []
    for importer, imports in graph.items():
        lab = _within(importer, LAB)
        for imported in imports:
            if _within(imported, "handlers") and _within(importer, "bot") and importer != COMPOSITION_ROOT \
                    and not lab:
                broken.append(_broken("only the composition root and the lab import handlers", importer, imported))
            if _within(importer, "storage") and (_within(imported, "bot") or _within(imported, "handlers")):
                broken.append(_broken("storage imports nothing of gwbot's above it", importer, imported))
            if _within(imported, LAB) and not lab and not _within(importer, "bot.frontends") \
                    and importer != COMPOSITION_ROOT:
                broken.append(_broken("product code never imports the lab", importer, imported))
    assert broken == []


def test_the_rule_sees_a_product_module_importing_the_lab(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("from bot.lab.simulator import SimulatedGateway\nfrom bot import lab\nimport handlers.results\n")
    assert {"bot.lab.simulator", "bot.lab", "handlers.results"} <= _imports(source)
