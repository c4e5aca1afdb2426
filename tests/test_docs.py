"""The front door cannot go stale: README's Python runs, and every command in README and docs/ parses.

A command is checked the way the shell would hand it to ``steerable``: the
command path must exist and every flag must parse (name, type, bounds-free
conversion, required options) against the typer app itself, without running
anything. ``python benchmarks/X.py --flag`` lines must name a script that
exists and flags it defines. README's Python blocks run in order in one
namespace (slow: they load the built-in models and sample); the serving block
runs against a live server on a free port.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(path: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(path.read_text()) if kind == lang]


def _drop_substitutions(line: str) -> str:
    """``$(...)`` (balanced) becomes one word: it is an argument here, not a command."""
    while (i := line.find("$(")) >= 0:
        depth, j = 0, i + 1
        for j in range(i + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[j], 0)
            if depth == 0:
                break
        line = line[:i] + "X" + line[j + 1 :]
    return re.sub(r"\$\{?\w+\}?", "4", line)  # loop variables: for n in 4 8; do ... $n


def _words(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split, lex.commenters = True, "#"
    return list(lex)


def shell_commands(path: Path) -> list[list[str]]:
    """Each simple command of the file's bash blocks, as argv (continuations joined, comments dropped)."""
    out = []
    for body in blocks(path, "bash"):
        lines, buf = _drop_substitutions(body.replace("\\\n", " ")).splitlines(), ""
        for line in lines:
            buf = f"{buf}\n{line}" if buf else line
            try:
                words = _words(buf)
            except ValueError:  # a quoted string goes on to the next line
                continue
            buf, argv = "", []
            for tok in [*words, ";"]:
                if set(tok) <= set(";&|"):  # the end of a simple command
                    if argv:
                        out.append(argv)
                    argv = []
                elif argv or not (re.fullmatch(r"\w+=\S*", tok) or tok in ("do", "then", "done")):
                    argv.append(tok)  # leading VAR=value assignments and loop keywords are not the command
        assert not buf, f"{path.name}: unclosed quote in a bash block"
    return out


def steerable_lines(path: Path) -> list[list[str]]:
    return [argv[1:] for argv in shell_commands(path) if argv[0] == "steerable"]


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, "README.md is a front door (at most 300 lines): move detail into docs/"
    first = FENCE.search(text)
    assert first[1] == "bash" and [line.split("#")[0].split() for line in first[2].splitlines()[:2]] == [
        ["make", "demo"],
        ["make", "test"],
    ], "README opens with the two set-up commands"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_steerable_command_in_the_docs_parses(path):
    import typer

    from steerable.cli import app

    root = typer.main.get_command(app)
    for args in steerable_lines(path):
        cmd, ctx, rest = root, None, list(args)
        while getattr(cmd, "commands", None) and rest and not rest[0].startswith("-"):
            name = rest.pop(0)
            ctx = cmd.context_class(cmd, info_name=name, parent=ctx)
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{path.name}: `steerable {' '.join(args)}`: no command {name!r}"
            cmd = sub
        assert not getattr(cmd, "commands", None), f"{path.name}: `steerable {' '.join(args)}` names a group"
        try:
            cmd.make_context(" ".join(args[: len(args) - len(rest)]), rest, parent=ctx)
        except Exception as e:  # typer's click raises its own usage errors; any of them is a stale command
            pytest.fail(f"{path.name}: `steerable {' '.join(args)}`: {e}")


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_benchmark_command_in_the_docs_names_a_script_and_its_flags(path):
    for argv in shell_commands(path):
        if argv[0] != "python" or len(argv) < 2 or not argv[1].startswith("benchmarks/"):
            continue
        script = ROOT / argv[1]
        assert script.exists(), f"{path.name}: {argv[1]} does not exist"
        source = script.read_text()
        for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
            assert f'"{flag}"' in source, f"{path.name}: {argv[1]} has no flag {flag}"


@pytest.mark.slow
def test_readme_python_runs(serve_app, artifact, capsys):
    """Every Python block of README, in order; the serving block against a live server."""
    from steerable.serve import build

    code = blocks(README, "python")
    assert len(code) >= 5, "README shows Python for language models, sampling, activations and diffusion"
    namespace: dict = {}
    for body in code:
        if "http://127.0.0.1:8000" not in body:
            exec(compile(body, "README.md", "exec"), namespace)
            continue
        _, app = build("builtin", [f"refusal={artifact}"], prm="builtin", device="cpu", max_n=16, max_tokens=200)
        server = serve_app(app)
        try:
            exec(compile(body.replace("http://127.0.0.1:8000", server.url), "README.md", "exec"), {})
        finally:
            server.close()
    printed = capsys.readouterr().out
    assert "198" in printed, "the particle filter's answer to (37+48-19)*3"
    assert "I can't help with that." in printed, "the refusal vector makes a benign request refuse"
