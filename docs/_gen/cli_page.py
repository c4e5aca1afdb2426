"""Write the command-line reference at build time from the ``steerable`` typer app itself (mkdocs-gen-files).

Every flag of every command is a field of a config dataclass
(``steerable.config.opt``: default, help, bounds); the binder turns the field
into a click option whose help carries the bounds. This page reads those
options back, the way ``--help`` does, so it is never a hand-written copy.
Only objects reachable from ``steerable.cli.app`` are used
(``typer.main.get_command`` and click's commands and parameters), not the
binder's internals, so the binder may move without breaking the page.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import mkdocs_gen_files
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the checkout's code, installed or not

from steerable.cli import app  # noqa: E402


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def code(text: object) -> str:
    text = str(text).replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def default_of(param) -> str:
    if getattr(param, "required", False):
        return "required"
    value = param.default
    if callable(value) or value is None or value == () or value == []:
        return ""
    if getattr(param, "is_flag", False) and value is False:
        return "off"
    if isinstance(value, list | tuple):
        return code(" ".join(str(v) for v in value))
    return code(repr(value) if value == "" else value)


def help_markdown(text: str) -> str:
    """A command's help as Markdown: a paragraph click prints unwrapped (it starts with ``\\b``, a table of
    methods) becomes a text block, the others stay prose."""
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        out.append(f"```text\n{para[2:]}\n```" if para.startswith("\b\n") else para)
    return "\n\n".join(out) + "\n\n"


def write_command(f, path: list[str], cmd, parent_ctx) -> None:
    ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent_ctx)
    if getattr(cmd, "commands", None):  # a group: its commands, in the order --help lists them
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                write_command(f, [*path, name], sub, ctx)
        return
    f.write(f"## `{' '.join(path)}`\n\n")
    if cmd.help:
        f.write(help_markdown(cmd.help))
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    f.write(f"```text\n{' '.join(path)} {usage}\n```\n\n")
    rows = []
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        record = p.get_help_record(ctx)
        if getattr(p, "param_type_name", "") == "argument" or record is None:
            name = p.human_readable_name if hasattr(p, "human_readable_name") else p.name
            rows.append(
                (
                    code(name.upper()),
                    "argument" + (", required" if p.required else ""),
                    cell(getattr(p, "help", "") or ""),
                )
            )
            continue
        flag = record[0]
        help_text = getattr(p, "help", None) or ""
        rows.append((code(flag), default_of(p), cell(help_text)))
    if rows:
        f.write("| flag | default | help (bounds in parentheses) |\n|---|---|---|\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")
        f.write("\n")


root = typer.main.get_command(app)
with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(
        "# Command-line reference\n\n"
        "Generated at build time from the `steerable` command itself: every flag below is a field of a config "
        "dataclass, with the default, help and bounds declared once in the code (`steerable.config.opt`). "
        "`steerable COMMAND --help` prints the same. Bad values are refused with one line on stderr and exit "
        "code 2 (see [the command line](../guides/command-line.md)).\n\n"
    )
    if root.help:
        f.write(f"`steerable`: {inspect.cleandoc(root.help)}\n\n")
    write_command(f, ["steerable"], root, None)
