"""Every example in the README and docs/ runs, and prints what the page says it prints.

Each page runs in a fresh working directory. In a page:

* a ``python`` block is executed (blocks of one page share a namespace); when a ``text``
  block follows it, the printed output must equal it. A python block that defines
  ``test_`` functions is written to a file and run by pytest instead, which must pass;
* a ``toml`` block becomes that directory's ``pyproject.toml``;
* a ``console`` block's ``$ convprof ...`` lines run through ``main(argv)`` with the exit
  status shown as ``# exit N`` (default 0) and ``> FILE`` saving the output, and every
  line shown after a command must appear in its real output, in order (``...`` marks lines left out);
* a ``yaml`` block (a CI workflow): every ``convprof`` command in it must parse.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from convprof.cli import _parser, main

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def workflow_commands(yaml: str) -> list[str]:
    """The convprof commands of a workflow's ``run:`` steps (redirections dropped)."""
    found = []
    for line in yaml.splitlines():
        _, sep, command = line.partition("run:")
        for part in re.split(r"&&|\|\||;", command) if sep else []:
            part = part.split(">")[0].strip()
            if part.startswith("convprof "):
                found.append(part.removeprefix("convprof "))
    return found


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text())]


def run_console(block: str) -> None:
    commands: list[tuple[str, list[str]]] = []
    for line in block.rstrip("\n").splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    for command, expected in commands:
        command, _, status_text = command.partition(" # exit ")
        command, _, target = command.partition(" > ")
        words = shlex.split(command)
        status = int(status_text or 0)
        assert words[0] == "convprof", command
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(words[1:]) == status, command
        if target:
            Path(target).write_text(out.getvalue())
        actual = iter(line.rstrip() for line in out.getvalue().splitlines())
        for line in expected:
            if line.strip() == "...":
                continue
            assert any(line.rstrip() == got for got in actual), f"{command}: not in output: {line!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    found = blocks(page)
    for i, (lang, body) in enumerate(found):
        if lang == "python" and re.search(r"^def test_", body, re.M):
            (tmp_path / f"test_docs_{i}.py").write_text(body)
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"test_docs_{i}.py"],
                capture_output=True,
                text=True,
                cwd=tmp_path,
            )
            assert done.returncode == 0, done.stdout[-2000:]
        elif lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body, f"{page.name}[{i}]", "exec"), namespace)
            if i + 1 < len(found) and found[i + 1][0] == "text":
                assert out.getvalue().rstrip() == found[i + 1][1].rstrip(), f"{page.name} block {i}"
        elif lang == "toml":
            (tmp_path / "pyproject.toml").write_text(body)
        elif lang == "console":
            run_console(body)
        elif lang == "yaml":
            commands = workflow_commands(body)
            assert commands, "a workflow without convprof commands"
            for command in commands:
                _parser().parse_args(shlex.split(command))
