"""Every example in the README and docs/ runs, and prints what the page says it prints.

In a page, a ``python`` block is executed (blocks of one page share a namespace); when a
``text`` block follows it, the printed output must equal it. A ``console`` block's ``$ convprof
...`` line runs through ``main(argv)`` and every line shown after it must appear in the real
output, in order (``...`` marks lines left out of the excerpt).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from convprof.cli import main

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text())]


def run_console(block: str) -> None:
    lines = block.rstrip("\n").splitlines()
    command, expected = lines[0], lines[1:]
    assert command.startswith("$ convprof "), command
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(shlex.split(command)[2:]) == 0
    actual = iter(line.rstrip() for line in out.getvalue().splitlines())
    for line in expected:
        if line.strip() == "...":
            continue
        assert any(line.rstrip() == got for got in actual), f"not in output (in order): {line!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    found = blocks(page)
    for i, (lang, body) in enumerate(found):
        if lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body, f"{page.name}[{i}]", "exec"), namespace)
            if i + 1 < len(found) and found[i + 1][0] == "text":
                assert out.getvalue().rstrip() == found[i + 1][1].rstrip(), f"{page.name} block {i}"
        elif lang == "console":
            run_console(body)
