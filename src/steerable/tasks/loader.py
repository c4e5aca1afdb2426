"""Tasks for experiments: the built-in splits, or the user's JSONL (``prompt`` and ``answer`` fields)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from steerable.errors import InputError

#: Items in a built-in split when none is asked for: large enough that the
#: standard error of an accuracy is ~3.5 points, small enough for two cores.
BUILTIN_ITEMS = 200


@dataclass(frozen=True)
class Item:
    id: str
    prompt: str
    answer: str


def read_jsonl(path: Path, fields: str) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-empty line; ``fields`` names what a line needs, for errors.

    A missing file, a directory, bytes that are not UTF-8, a line that is not a
    JSON object and a string holding a lone surrogate (``"\\ud800"``) are each
    a one-line :class:`InputError` naming the file (and line).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist: pass a JSONL file with {fields} per line")
    if path.is_dir():
        raise InputError(f"{path} is a directory: pass a JSONL file with {fields} per line")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is harmless
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line} is not UTF-8 text (byte {e.start}): save the file as UTF-8") from None
    except OSError as e:
        raise InputError(f"{path} cannot be read: {e.strerror}") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise InputError(f"{path}:{n} is not JSON: write one object with {fields} per line") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n} is not a JSON object: write one object with {fields} per line")
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"{path}:{n} holds a lone surrogate (a \\ud800-style escape): use real characters"
            ) from None
        rows.append((n, row))
    return rows


def load_task(spec: str, limit: int | None = None, seed: int = 0) -> list[Item]:
    """``builtin:easy|medium|hard|all`` or a path to a JSONL file."""
    if spec.startswith("builtin:"):
        from steerable.tasks.builtin.arithmetic import eval_problems, split_range

        split = spec.split(":", 1)[1]
        split_range(split)
        problems = eval_problems(split, limit or BUILTIN_ITEMS, seed=seed)
        return [Item(f"{split}-{i}", p.prompt, str(p.answer)) for i, p in enumerate(problems)]
    path = Path(spec)
    if not path.exists():
        raise InputError(f"task {spec!r} is neither builtin:SPLIT nor an existing JSONL file")
    items: list[Item] = []
    seen: dict[str, int] = {}
    for n, row in read_jsonl(path, "'prompt' and 'answer'"):
        if not isinstance(row.get("prompt"), str) or row.get("answer") is None:
            raise InputError(f"{path}:{n} needs a string 'prompt' and a non-null 'answer'")
        if not isinstance(row["answer"], str | int | float) or isinstance(row["answer"], bool):
            raise InputError(f"{path}:{n} has an 'answer' that is not a string or a number (got {row['answer']!r:.40})")
        items.append(Item(str(row.get("id", n)), row["prompt"], str(row["answer"])))
        if items[-1].id in seen:  # results are kept by id: two items with one id would share rows
            raise InputError(
                f"{path}:{n} repeats the id {items[-1].id!r} of line {seen[items[-1].id]}: ids must differ"
            )
        seen[items[-1].id] = n
    if not items:
        raise InputError(f'{path} holds no items: write one {{"prompt": ..., "answer": ...}} per line')
    return items[:limit] if limit else items


def task_fingerprint(spec: str, seed: int = 0) -> str:
    """A sha256 of a task's items (all of them, whatever ``limit`` a run takes): ids, prompts and answers."""
    items = load_task(spec, seed=seed)
    text = json.dumps([[i.id, i.prompt, i.answer] for i in items], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _label(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("positive", "pos", "negative", "neg", "true", "false"):
        return value.lower() in ("positive", "pos", "true")
    return None


def contrast_prompts(spec: str) -> tuple[list[str], list[str]]:
    """``builtin:refusal``, ``builtin:efficiency``... or a JSONL file of ``prompt`` and ``label`` (1 = positive)."""
    if spec.startswith("builtin:"):
        from steerable.tasks.builtin.contrast import contrast_set

        return contrast_set(spec.split(":", 1)[1])
    pos, neg = [], []
    for n, row in read_jsonl(Path(spec), "'prompt' and 'label'"):
        label = _label(row.get("label"))
        if not isinstance(row.get("prompt"), str) or label is None:
            raise InputError(f"{spec}:{n} needs a string 'prompt' and a 'label' of 1/0 (positive/negative)")
        (pos if label else neg).append(row["prompt"])
    if not pos or not neg:
        raise InputError(f"{spec} needs both positive (label 1) and negative (label 0) prompts")
    return pos, neg
