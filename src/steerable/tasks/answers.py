"""Answer extraction and checking: the built-in ``A: n``, a user regex, or LaTeX ``\\boxed{}``.

``\\boxed{}`` answers are compared for mathematical equivalence with the
``math-verify`` package (how MATH-500 and GSM8K are scored in this field);
it is an optional dependency: ``pip install 'steerable[math]'``.

A user's regex (``--answer-regex``, a request's ``answer_regex``) is matched
by RE2 (google-re2), in time linear in the text whatever the pattern: a
backtracking engine can take exponential time on a pattern like
``^((.|\\n)+)+!$``, and on a server that freezes every request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from steerable.errors import ConfigError, InputError
from steerable.tasks.builtin.verifier import extract_answer


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


def builtin_extract(text: str) -> str | None:
    """The built-in world's ``A: n`` answer."""
    a = extract_answer(text)
    return None if a is None else str(a)


def builtin_checker() -> AnswerChecker:
    return AnswerChecker(builtin_extract, lambda a, b: a.strip() == b.strip(), "builtin")


#: the longest user pattern accepted (RE2 also bounds the memory a compiled pattern may take)
MAX_PATTERN = 1000


def compile_user_regex(pattern: str, what: str = "--answer-regex"):
    """A user's ``pattern`` compiled by RE2 (linear-time matching); ``what`` names it in the one-line errors.

    RE2 has Python's syntax except lookarounds and backreferences, which
    cannot be matched in linear time; a pattern using them is refused.
    """
    import re2

    if not isinstance(pattern, str):
        raise ConfigError(f"{what} must be a string (got {type(pattern).__name__})")
    if len(pattern) > MAX_PATTERN:
        raise ConfigError(f"{what} is {len(pattern)} characters long, over the limit of {MAX_PATTERN}: shorten it")
    options = re2.Options()
    options.max_mem = 8 << 20
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ConfigError(
            f"{what} {pattern[:60]!r} does not compile under RE2 ({why}): fix the pattern "
            "(RE2 takes Python's syntax without lookarounds and backreferences)"
        ) from None


def regex_checker(pattern: str, what: str = "--answer-regex") -> AnswerChecker:
    rx = compile_user_regex(pattern, what)

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


def make_checker(kind: str = "builtin", regex: str | None = None, what: str = "--answer-regex") -> AnswerChecker:
    """``what`` names the regex in errors (``--answer-regex`` on the command line, a field on the server)."""
    if regex:
        return regex_checker(regex, what)
    if kind == "builtin":
        return builtin_checker()
    if kind == "boxed":
        return boxed_checker()
    raise ConfigError(f"unknown answer format {kind!r}: use builtin, boxed, or pass --answer-regex")
