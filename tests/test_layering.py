"""The architecture, enforced: record -> count -> report -> render / CI / CLI, package by package.

``LAYERS`` is the layering itself: what each package (or top-level module) may import of
convprof, besides itself. docs/architecture.md draws the same picture; a change to one is a
change to the other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import convprof

SRC = Path(convprof.__file__).parent
FILES = {p.relative_to(SRC).as_posix(): ast.parse(p.read_text()) for p in SRC.rglob("*.py")}
LINES = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}

_VOCABULARY = {"records", "units", "roofline"}
LAYERS: dict[str, set[str]] = {
    # the shared vocabulary: plain facts, quantities, machine presets
    "records": set(),
    "units": set(),
    "roofline": set(),
    # frozen results, no torch
    "report": {"records", "units"},
    # formulas: pure functions of records, in a registry
    "count.formulas": {"records"},
    # storage lifetimes (shown the operators by the recorder), peaks, optimizers, fit
    "memory": {"records", "report", "units"},
    # records -> report; the registry's formulas, the memory summary
    "count": {"count.formulas", "memory", "records", "report", "units"},
    # the only package touching PyTorch's machinery; the registry says what to record
    "record": {"count.formulas", "memory", "records", "report", "units"},
    # the multi-GPU wing: a plan run per rank class through record and count
    "parallel": {"count", "memory", "record", "records", "report", "units"},
    # the entry points: record, then count (or the parallel wing)
    "api": {"count", "parallel", "record", "report"},
    "calculator": {"api", "report"},
    # report -> text
    "rendering": {"report", "roofline", "units"},
    # model specs and inputs
    "models": {"records", "report", "units"},
    # budgets, pyproject config, baselines, the pytest plugin
    "ci": {"api", "models", "parallel.plan", "records", "rendering", "report", "units"},
    # the command line: anything below it
    "cli": {
        "__init__",
        "api",
        "calculator",
        "ci",
        "count",
        "memory",
        "models",
        "parallel",
        "record",
        "rendering",
        "report",
    }
    | _VOCABULARY,
    "__main__": {"cli"},
    # the public surface imports what it re-exports (the torch-bound names on first use)
    "__init__": {"api", "calculator", "ci", "count.formulas", "record", "rendering", "report"} | _VOCABULARY,
}


def _dotted(path: str) -> str:
    """``record/session.py`` -> ``record.session``; a package's ``__init__.py`` -> the package."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_dotted(path): tree for path, tree in FILES.items()}


def _unit(module: str) -> str:
    """The entry of LAYERS a module belongs to: the longest that is its name or a prefix."""
    found = [key for key in LAYERS if module == key or module.startswith(f"{key}.")]
    assert found, f"{module} belongs to no layer: add its package to LAYERS (and docs/architecture.md)"
    return max(found, key=len)


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _ours(name: str | None) -> bool:
    return name is not None and (name == "convprof" or name.startswith("convprof."))


def _imports(tree: ast.AST, runtime: bool) -> Iterator[str]:
    """The convprof modules a module imports (dotted, without ``convprof.``; the root is
    ``__init__``), in functions too; ``runtime`` leaves out ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if runtime and _type_checking(node):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    yield alias.name.removeprefix("convprof").removeprefix(".") or "__init__"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module):
            base = str(node.module).removeprefix("convprof").removeprefix(".")
            for alias in node.names:  # ``from convprof.ci import baseline``: a submodule
                sub = f"{base}.{alias.name}" if base else alias.name
                yield sub if sub in MODULES else base or "__init__"
        yield from _imports(node, runtime)


def _allowed(importer: str, target: str) -> bool:
    unit = _unit(importer)
    if target == "__init__":
        return "__init__" in LAYERS[unit] or unit == "__init__"
    return any(target == key or target.startswith(f"{key}.") for key in (unit, *LAYERS[unit]))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_the_layers_below_it(module: str) -> None:
    bad = sorted({t for t in _imports(MODULES[module], runtime=False) if not _allowed(module, t)})
    assert not bad, f"{module} ({_unit(module)}) imports {bad}; it may import {sorted(LAYERS[_unit(module)])}"


def _edges(module: str) -> set[str]:
    """What importing ``module`` runs first: each module it imports and the packages above
    those (their ``__init__``), less the packages above ``module`` itself (already running)."""
    parts = module.split(".")
    own = {".".join(parts[:i]) for i in range(1, len(parts))}
    found = set()
    for target in _imports(MODULES[module], runtime=True):
        pieces = target.split(".")
        for i in range(1, len(pieces) + 1):
            name = ".".join(pieces[:i])
            if name in MODULES and name not in own and name != module:
                found.add(name)
    return found


def test_no_import_circles() -> None:
    graph = {module: _edges(module) for module in MODULES if module != "__init__"}
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)


def test_no_module_imports_its_own_package() -> None:
    """A module inside a package importing the package's ``__init__`` would run into the
    half-initialised package (a circle through it): import the sibling module instead."""
    bad = [
        (module, target)
        for module in MODULES
        for target in _imports(MODULES[module], runtime=True)
        if target != module and module.startswith(f"{target}.") and target in MODULES
    ]
    assert not bad


def test_each_package_says_what_it_owns_and_may_import() -> None:
    for path, tree in FILES.items():
        if path.endswith("/__init__.py"):
            doc = ast.get_docstring(tree) or ""
            assert len(doc.split()) > 15 and "import" in doc.lower(), (
                f"{path}: say what it owns and may import"
            )


def test_only_rendering_tables_call_tabulate() -> None:
    assert [f for f, t in FILES.items() if any(n.startswith("tabulate") for n in _plain_imports(t))] == [
        "rendering/tables.py"
    ]


def _plain_imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _calls(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            found.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return found


def test_only_the_recording_layer_touches_hooks_and_dispatch() -> None:
    hooks = {
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_module_forward_hook",
        "register_module_forward_pre_hook",
    }
    touching = [
        f
        for f, t in FILES.items()
        if _calls(t) & hooks or any("_python_dispatch" in n or "fake_tensor" in n for n in _plain_imports(t))
    ]
    assert touching and all(f.startswith("record/") for f in touching), touching


def test_nothing_prints_outside_the_cli() -> None:
    printing = [f for f, t in FILES.items() if "print" in _calls(t)]
    assert printing and all(f.startswith("cli/") for f in printing), printing  # the plugin writes via pytest


def test_counting_reporting_and_rendering_do_not_import_torch() -> None:
    pure = [
        f
        for f in FILES
        if f.startswith(("report/", "rendering/", "ci/"))
        or f in {"records.py", "units.py", "roofline.py", "count/counter.py", "count/blocks.py"}
        or f in {"memory/peak.py", "memory/fit.py"}
    ]
    for name in pure:
        assert not any(n == "torch" or n.startswith("torch.") for n in _plain_imports(FILES[name])), name


def test_the_architecture_page_names_every_package() -> None:
    """docs/architecture.md's table and LAYERS describe the same packages as the source tree."""
    page = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    packages = {p.parent.relative_to(SRC).as_posix() for p in SRC.glob("*/__init__.py")}
    assert packages <= set(LAYERS), packages - set(LAYERS)
    assert not [p for p in packages if f"`{p}/`" not in page]


def test_no_grab_bag_modules() -> None:
    assert not [f for f in FILES if Path(f).stem in {"utils", "helpers", "misc", "common"}]


# Sizes a newcomer can read: a module on a few screens, a function on one, a class in one
# sitting. Docstrings are not counted for functions and classes (they are what explains them).
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 200


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> int:
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_module_function_or_class_too_large() -> None:
    big = [f"{f}: {n} lines" for f, n in LINES.items() if n > MAX_MODULE_LINES]
    for path, tree in FILES.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and _code_lines(node) > MAX_FUNCTION_LINES
            ):
                big.append(f"{path}: function {node.name}, {_code_lines(node)} lines")
            if isinstance(node, ast.ClassDef) and _code_lines(node) > MAX_CLASS_LINES:
                big.append(f"{path}: class {node.name}, {_code_lines(node)} lines")
    assert not big


def test_the_layering_catches_a_violation() -> None:
    """The checks above can fail: an import from below the line, a circle, a large function."""
    assert not _allowed("report.rows", "rendering.render")
    assert not _allowed("count.formulas.conv", "count.counter")
    assert not _allowed("record.session", "api")
    assert _allowed("rendering.footer", "report.tokens")
    tree = ast.parse("def f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES + 1))
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef) and _code_lines(function) > MAX_FUNCTION_LINES


def test_public_surface() -> None:
    assert len(set(convprof.__all__)) == len(convprof.__all__)
    for name in convprof.__all__:
        assert hasattr(convprof, name), name
