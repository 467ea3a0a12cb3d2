"""The architecture, enforced: record -> count -> report -> render / CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import convprof

SRC = Path(convprof.__file__).parent
FILES = {p.relative_to(SRC).as_posix(): ast.parse(p.read_text()) for p in SRC.rglob("*.py")}


def imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def calls(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            found.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return found


def test_only_render_imports_tabulate() -> None:
    assert [f for f, t in FILES.items() if any(n.startswith("tabulate") for n in imports(t))] == [
        "rendering/tables.py"
    ]


def test_only_recorder_touches_hooks_and_dispatch() -> None:
    hooks = {
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_module_forward_hook",
        "register_module_forward_pre_hook",
    }
    touching = [
        f
        for f, t in FILES.items()
        if calls(t) & hooks or any("_python_dispatch" in n or "fake_tensor" in n for n in imports(t))
    ]
    assert touching and all(f.startswith("record/") for f in touching), touching


def test_nothing_prints_outside_the_cli() -> None:
    assert [f for f, t in FILES.items() if "print" in calls(t)] == [
        "cli/__init__.py"
    ]  # the plugin writes via pytest


def test_counting_reporting_and_rendering_do_not_import_torch() -> None:
    for name in (
        "records.py",
        "count/counter.py",
        "count/blocks.py",
        "report/results.py",
        "rendering/render.py",
        "units.py",
    ):
        assert not any(n == "torch" or n.startswith("torch.") for n in imports(FILES[name])), name


def test_no_grab_bag_modules() -> None:
    assert not [f for f in FILES if Path(f).stem in {"utils", "helpers", "misc", "common"}]


def test_public_surface() -> None:
    assert len(set(convprof.__all__)) == len(convprof.__all__)
    for name in convprof.__all__:
        assert hasattr(convprof, name), name
