"""Answer extraction and checking: the built-in ``A: n``, a user regex, or LaTeX ``\\boxed{}``.

``\\boxed{}`` answers are compared for mathematical equivalence with the
``math-verify`` package (how MATH-500 and GSM8K are scored in this field);
it is an optional dependency: ``pip install 'steerable[math]'``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from steerable.errors import ConfigError, InputError


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


@dataclass(frozen=True)
class AnswerChecker:
    extract: Callable[[str], str | None]
    equal: Callable[[str, str], bool]
    name: str

    def correct(self, text: str, gold: str) -> bool:
        got = self.extract(text)
        return got is not None and self.equal(got, gold)


def builtin_checker() -> AnswerChecker:
    from steerable.search.base import builtin_extract

    return AnswerChecker(builtin_extract, lambda a, b: a.strip() == b.strip(), "builtin")


def regex_checker(pattern: str) -> AnswerChecker:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"--answer-regex {pattern!r} does not compile ({e}): fix the pattern") from None

    def extract(text: str) -> str | None:
        found = list(rx.finditer(text))
        if not found:
            return None
        m = found[-1]
        return (m.group(1) if m.groups() else m.group(0)).strip()

    return AnswerChecker(extract, lambda a, b: a == b.strip(), "regex")


def boxed_checker() -> AnswerChecker:
    try:
        from math_verify import parse, verify
    except ImportError:
        raise InputError("boxed answers need math-verify: pip install 'steerable[math]'") from None

    def equal(a: str, b: str) -> bool:
        try:
            return bool(verify(parse(f"${b}$"), parse(f"${a}$")))
        except Exception:  # noqa: BLE001 - an unparseable answer is a wrong answer
            return a.strip() == b.strip()

    return AnswerChecker(_last_boxed, equal, "boxed")


def make_checker(kind: str = "builtin", regex: str | None = None) -> AnswerChecker:
    if regex:
        return regex_checker(regex)
    if kind == "builtin":
        return builtin_checker()
    if kind == "boxed":
        return boxed_checker()
    raise ConfigError(f"unknown answer format {kind!r}: use builtin, boxed, or pass --answer-regex")
