"""What the server sends back, in OpenAI's shapes: errors, choices, logprobs, usage and stream chunks.

Logprobs are finite numbers or null in every body: ``-inf`` (a token the
model rules out) is sent as -9999.0, as vLLM does, since JSON has no
infinities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from steerable.lm.local import PromptLogprobs
from steerable.search.result import Result
from steerable.serve.engine import RequestResult, RowDelta, RowResult
from steerable.serve.schemas import FIELD_NAMES
from steerable.tasks.answers import builtin_checker

#: how a JSON body shows ``-inf``
FLOOR = -9999.0


class APIError(Exception):
    """A request the server refuses or could not finish: the HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = {401: "authentication_error", 404: "not_found_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    # a lone surrogate echoed from the request must not make the error itself unencodable
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def dumps(obj: Any) -> str:
    """JSON for a body or a stream event: ASCII-escaped, never NaN or infinity (they are not JSON)."""
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


# ---- validation errors ---------------------------------------------------------------------------

#: fields that take several forms, described as a whole when a value fits none of them
FORMS = {
    "prompt": "a string, a list of strings, token ids, or a list of token-id lists",
    "stop": "a non-empty string or a list of them",
    "steering": 'an artifact name or {"name": NAME, "strength": S}',
    "content": "a string or a list of text parts",
    "tool_choice": 'none, auto, or {"type": "function", "function": {"name": NAME}} (required is not supported: '
    "nothing here constrains decoding)",
}
_KIND_ERRORS = ("_type", "model_attributes_type", "union_tag_invalid")


def shown(value: Any) -> str:
    """A short repr for messages (a huge integer by its size: repr refuses past 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(loc: Sequence[Any]) -> str:
    """``("body", "messages", 0, "content", "list[ContentPart]", 1, "text")`` -> ``messages[0].content[1].text``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in FIELD_NAMES:
            out += ("." if out else "") + part
    return out


def describe(errors: Sequence[dict]) -> tuple[str | None, str]:
    """``(param, one-line message)`` for pydantic's errors about a request body.

    When a field takes several forms pydantic reports one error per form; the
    one that says something about the value (a bound, a bad character) is
    the one the client meant, and one that only says "not this kind" is
    replaced by the list of accepted forms.
    """

    def rank(e: dict) -> tuple[int, int]:
        kind = str(e.get("type", ""))
        is_kind = kind.endswith(_KIND_ERRORS) or kind in ("missing", "extra_forbidden")
        return (0 if not is_kind else 1, -len(_path(e.get("loc", ()))))

    best = min(errors, key=rank)
    loc = tuple(best.get("loc", ()))
    path = _path(loc)
    if best.get("type") == "extra_forbidden" and loc:  # the unknown name is no field: name it anyway
        path = f"{_path(loc[:-1])}.{loc[-1]}".lstrip(".")
    msg = str(best.get("msg", "is not valid")).removeprefix("Value error, ")
    kind = str(best.get("type", ""))
    same_field = [e for e in errors if _path(e.get("loc", ())) == path]
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    if kind == "extra_forbidden":
        msg = "is not a field of this request: remove it (see /docs for the fields)"
    elif kind == "missing":
        msg = "is required"
    elif kind.endswith(_KIND_ERRORS) and len(same_field) > 1 and last in FORMS:
        msg = f"must be {FORMS[last]}"
    if kind not in ("missing", "extra_forbidden", "value_error", "json_invalid") and "input" in best:
        msg += f" (got {shown(best['input'])})"
    if kind == "json_invalid":
        return None, f"the body is not valid JSON ({best.get('ctx', {}).get('error', msg)})"
    return (path or None), (f"{path}: {msg}" if path else msg)


# ---- logprobs ------------------------------------------------------------------------------------


def finite(x: float | None) -> float | None:
    if x is None or math.isnan(x):
        return None
    return max(x, FLOOR) if x != math.inf else None


class Formatter:
    """Turns the engine's rows into OpenAI JSON for one tokenizer."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def piece(self, token: int) -> str:
        return self.tok.decode([token])

    def _top(self, alternatives: Sequence[tuple[int, float]]) -> dict[str, float | None]:
        return {self.piece(t): finite(lp) for t, lp in alternatives}

    def completion_logprobs(
        self,
        ids: Sequence[int],
        lps: Sequence[float],
        top: Sequence[Sequence[tuple[int, float]]],
        k: int,
        prompt: PromptLogprobs | None = None,
        offset: int = 0,
    ) -> dict:
        """The legacy completions ``logprobs`` object; with ``prompt`` (echo) the prompt's tokens come first."""
        tokens, values, tops = [], [], []
        if prompt is not None:
            tokens += list(prompt.token_ids)
            values += [finite(v) for v in prompt.logprobs]
            tops += [self._top(a[:k]) if i else None for i, a in enumerate(prompt.top)]
        tokens += list(ids)
        values += [finite(v) for v in lps]
        tops += [self._top(a) for a in top] if k else [{} for _ in ids]
        pieces = [self.piece(t) for t in tokens]
        offsets, at = [], offset
        for p in pieces:
            offsets.append(at)
            at += len(p)
        return {"tokens": pieces, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    def chat_logprobs(self, ids: Sequence[int], lps: Sequence[float], top: Sequence[Sequence[tuple[int, float]]]):
        def entry(t: int, lp: float) -> dict:
            p = self.piece(t)
            return {"token": p, "logprob": finite(lp), "bytes": list(p.encode("utf-8"))}

        tops = list(top) if top else [[] for _ in ids]
        return {
            "content": [
                {**entry(t, lp), "top_logprobs": [entry(a, alp) for a, alp in alts]}
                for t, lp, alts in zip(ids, lps, tops, strict=True)
            ]
        }

    # ---- bodies ----------------------------------------------------------------------------------

    def completion_choice(self, i: int, row: RowResult, want_lp: bool, k: int, echo_text: str | None) -> dict:
        text = row.text if echo_text is None else echo_text + row.text
        c: dict = {"index": i, "text": text, "finish_reason": row.finish_reason, "stop_reason": row.stop_reason}
        c["logprobs"] = (
            self.completion_logprobs(row.token_ids, row.logprobs, row.top, k, row.prompt if echo_text else None)
            if want_lp
            else None
        )
        return c

    def chat_choice(self, i: int, row: RowResult, want_lp: bool) -> dict:
        return {
            "index": i,
            "message": {"role": "assistant", "content": row.text},
            "finish_reason": row.finish_reason,
            "stop_reason": row.stop_reason,
            "logprobs": self.chat_logprobs(row.token_ids, row.logprobs, row.top) if want_lp else None,
        }

    def delta_choice(self, d: RowDelta, chat: bool, want_lp: bool, k: int, first: bool) -> dict:
        if chat:
            delta = {"content": d.text, **({"role": "assistant"} if first else {})}
            lp = self.chat_logprobs(d.token_ids, d.logprobs, d.top) if want_lp else None
            return {"index": d.row, "delta": delta, "finish_reason": None, "logprobs": lp}
        lp = self.completion_logprobs(d.token_ids, d.logprobs, d.top, k) if want_lp else None
        return {"index": d.row, "text": d.text, "finish_reason": None, "logprobs": lp}


def usage(res: RequestResult) -> dict:
    return {
        "prompt_tokens": res.prompt_tokens,
        "completion_tokens": res.completion_tokens,
        "total_tokens": res.prompt_tokens + res.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": res.cached_tokens},
    }


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by null (a strategy's ``info`` may hold one)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def builtin_gold(prompt: str) -> str | None:
    """The answer of a built-in arithmetic problem (``Q: 37+48-19=``), or None for any other prompt."""
    from steerable.tasks.builtin.arithmetic import parse_problem

    problem = parse_problem(prompt)
    return None if problem is None else str(problem.answer)


def scaling_body(
    res: Result,
    seconds: float,
    prompt_tokens: int,
    chat: bool,
    controller: dict | None = None,
    gold: str | None = None,
) -> dict:
    """The choices, usage and ``steerable`` field of a scaling request: the chosen sample and every candidate
    (and, steered by a controller, what it chose for the prompt; on a built-in problem, whether it is right)."""
    choice: dict = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": res.text}
    else:
        choice["text"] = res.text
    generated = res.cost.generated_tokens
    return {
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": prompt_tokens + generated,
        },
        "steerable": json_safe(
            {
                "method": res.method,
                "budget": res.budget,
                "answer": res.answer,
                "candidates": [
                    {"text": c.text, "answer": c.answer, "score": c.score, "weight": c.weight} for c in res.candidates
                ],
                "cost": {
                    "generated_tokens": generated,
                    "forward_tokens": res.cost.forward_tokens,
                    "scorer_calls": res.cost.scorer_calls,
                    "scorer_tokens": res.cost.scorer_tokens,
                    "seconds": round(seconds, 4),
                },
                "info": res.info,
                **({"controller": controller} if controller is not None else {}),
                # judged as `steerable scale` judges the built-in world: the text's A: n against the problem's
                **({"expected": gold, "correct": builtin_checker().correct(res.text or "", gold)} if gold else {}),
            }
        ),
    }


def agent_scaling_body(res: Result, seconds: float, task: dict) -> dict:
    """An agent scaling run's response: the committed transcript as the assistant's message, and under
    ``steerable`` the server environment's verdict on it and what the run cost (environment steps apart)."""
    from steerable.agents.process import episode
    from steerable.tasks.agent.envs import replay

    cond = episode(task)
    final = replay(cond.env, res.text or "")
    generated = res.cost.generated_tokens
    return {
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": res.text}}],
        "usage": {"prompt_tokens": 0, "completion_tokens": generated, "total_tokens": generated},
        "steerable": json_safe({
            "method": res.method, "budget": res.budget, "answer": res.answer, "prompt": cond.prompt,
            "success": final.solved, "real_steps": final.steps,
            "cost": {"generated_tokens": generated, "env_steps": res.cost.env_steps, "tool_calls":
                     res.cost.tool_calls, "env_tokens": res.cost.env_tokens, "scorer_calls": res.cost.scorer_calls,
                     "seconds": round(seconds, 4)},
            "info": res.info,
        }),
    }  # fmt: skip
