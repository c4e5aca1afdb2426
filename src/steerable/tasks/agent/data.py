"""Tasks and demonstrations of the built-in agent world, its splits, and the training mixture.

A demonstration is a list of segments ``(text, trained)``: the prompt and
every observation the environment writes are ``trained=False``, so they carry
no loss (the environment mask), and the model's own lines are ``True``. Every
demonstration is checked against its environment when built (see the tests).

Splits (``easy``/``hard``) of every environment are drawn from fixed seeds
and exclude nothing the model trained on: a task is held out by a hash of its
JSON (one in :data:`HELD_OUT_MODULUS`), and training never draws a held-out one.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable
from typing import Any

from steerable.errors import InputError
from steerable.tasks.agent.envs import CHUNK, MOVES, chain_ops, distances, feedback_line, make_env, running_values

Segment = tuple[str, bool]
HELD_OUT_MODULUS = 16
SPLITS = ("easy", "hard")


def held_out(task: dict[str, Any]) -> bool:
    return zlib.crc32(json.dumps(task, sort_keys=True).encode()) % HELD_OUT_MODULUS == 0


# -- calculator ---------------------------------------------------------------------------------------------


def calc_task(rng: random.Random, hard: bool) -> dict[str, Any]:
    """A 2-4 operation chain; ``hard`` holds one two-digit by two-digit product (at a random place), the
    rest stays below 1000 (multipliers 2-9), as the arithmetic world's chains."""
    n_ops = rng.randint(2, 4)
    big_at = rng.randrange(n_ops) if hard else -1
    acc = rng.randint(10, 99) if big_at == 0 else rng.randint(1, 99)
    expr = str(acc)
    for i in range(n_ops):
        if i == big_at:
            if not 10 <= acc <= 99:  # bring the value into 10..99 for the two-digit product
                op, b = ("-", acc - rng.randint(10, 99)) if acc > 99 else ("+", rng.randint(10 - acc, 99 - acc))
                if b <= 0 or b > 99:
                    return calc_task(rng, hard)
                expr += f"{op}{b}"
                acc = acc + b if op == "+" else acc - b
            b = rng.randint(11, 99)
            expr, acc = expr + f"*{b}", acc * b
            continue
        limit = 9999 if big_at >= 0 and i > big_at else 999
        choices = [c for c, ok in (("+", acc < limit), ("-", acc >= 1), ("*", limit // max(acc, 1) >= 2)) if ok]
        op = rng.choice(choices)
        if op == "+":
            b = rng.randint(1, min(99, limit - acc))
        elif op == "-":
            b = rng.randint(1, min(99, acc))
        else:
            b = rng.randint(2, min(9, limit // max(acc, 1)))
        expr += f"{op}{b}"
        acc = acc + b if op == "+" else acc - b if op == "-" else acc * b
    return {"env": "calculator", "expression": expr, "answer": acc}


def _calc_steps(expr: str) -> list[tuple[int, str, int, int]]:
    first = int(expr[: len(expr) - len(expr.lstrip("0123456789"))])
    out, acc = [], first
    for op, b in chain_ops(expr[len(str(first)) :]):
        r = acc + b if op == "+" else acc - b if op == "-" else acc * b
        out.append((acc, op, b, r))
        acc = r
    return out


def mental(a: int, op: str, b: int, r: int) -> str:
    """A step worked in text; a product by a two-digit number goes by its tens and its units."""
    if op == "*" and b >= 10 and b % 10:
        t, u = b - b % 10, b % 10
        return f"{a}*{b}={a}*{t}+{a}*{u}={a * t}+{a * u}={r}"
    return f"{a}{op}{b}={r}"


def calc_demo(task: dict[str, Any], style: str) -> list[Segment]:
    """``text`` (no tool), ``tool`` (every step a call) or ``mixed`` (a call for two-digit products only)."""
    env = make_env("calculator")
    segs: list[Segment] = [(env.reset(task, tools=style != "text"), False)]
    for a, op, b, r in _calc_steps(task["expression"]):
        if style == "tool" or (style == "mixed" and op == "*" and b >= 10):
            segs += [(f">>> {a}{op}{b}\n", True), (f"= {r}\n", False)]
        else:
            segs.append((mental(a, op, b, r) + "\n", True))
    segs.append((f"A: {task['answer']}", True))
    return segs


# -- lookup -------------------------------------------------------------------------------------------------


def lookup_task(rng: random.Random, hops: int, forks: int, slack: int) -> dict[str, Any]:
    """A live path of ``hops`` cells ending in a number, ``forks`` of its cells holding a second key that
    leads into a dead end of 1-2 cells ending in ``none``; ``max_steps`` = hops + ``slack``."""
    keys = [f"k{i}" for i in rng.sample(range(16), hops + 2 * forks)]
    path, spare = keys[:hops], keys[hops:]
    table = {k: nxt for k, nxt in zip(path, path[1:], strict=False)}
    table[path[-1]] = str(rng.randint(10, 99))
    for at in rng.sample(range(hops - 1), min(forks, hops - 1)):
        dead = [spare.pop() for _ in range(rng.randint(1, 2))]
        for k, nxt in zip(dead, dead[1:], strict=False):
            table[k] = nxt
        table[dead[-1]] = "none"
        pair = [table[path[at]], dead[0]]
        rng.shuffle(pair)
        table[path[at]] = " ".join(pair)
    table = dict(sorted(table.items(), key=lambda kv: int(kv[0][1:])))
    return {"env": "lookup", "start": path[0], "table": table, "max_steps": hops + slack}


def lookup_demo(task: dict[str, Any], rng: random.Random) -> list[Segment]:
    """Depth first: at a fork take either key at random; after ``none`` go back to the last fork's other key."""
    env = make_env("lookup")
    segs: list[Segment] = [(env.reset(task), False)]
    todo = [task["start"]]
    while todo:
        key = todo.pop()
        cell = task["table"][key]
        segs += [(f"get {key}\n", True), (f"= {cell}\n", False)]
        parts = cell.split()
        if parts[0].isdigit():
            segs.append((f"A: {cell}", True))
            return segs
        if parts != ["none"]:
            rng.shuffle(parts)
            todo += parts[::-1]  # the first of the shuffled keys is read next, the other waits
    raise AssertionError("a lookup task always has a live path")


# -- maze ---------------------------------------------------------------------------------------------------


def maze_task(rng: random.Random, lo: int, hi: int, slack: int = 2) -> dict[str, Any]:
    """A random 5x5 maze whose shortest path from S to G takes ``lo``..``hi`` moves; ``max_steps`` = that
    length + ``slack``."""
    while True:
        cells = ["#" if rng.random() < 0.35 else "." for _ in range(25)]
        s, g = rng.sample(range(25), 2)
        cells[s], cells[g] = "S", "G"
        grid = "/".join("".join(cells[i : i + 5]) for i in range(0, 25, 5))
        d = distances(grid)[divmod(s, 5)]
        if d is not None and lo <= d <= hi:
            return {"env": "maze", "grid": grid, "max_steps": d + slack}


def maze_demo(task: dict[str, Any], rng: random.Random) -> list[Segment]:
    """A shortest path, ties broken at random."""
    env = make_env("maze")
    segs: list[Segment] = [(env.reset(task), False)]
    dist = distances(task["grid"])
    while not env.done:
        r, c = env.pos
        best = [m for m, (dr, dc) in MOVES.items() if dist.get((r + dr, c + dc)) == dist[(r, c)] - 1]
        move = rng.choice(sorted(best))
        obs = env.step(f"go {move}")
        segs += [(f"go {move}\n", True), (obs.text + "\n", False)]
    return segs


# -- chains -------------------------------------------------------------------------------------------------


def chains_task(rng: random.Random, n_ops: int) -> dict[str, Any]:
    """A chain of ``n_ops`` operations under the arithmetic world's rules (values 0-999, multipliers 2-9)."""
    acc = rng.randint(1, 99)
    start, ops = acc, ""
    for _ in range(n_ops):
        choices = [c for c, ok in (("+", acc < 999), ("-", acc >= 1), ("*", acc * 2 <= 999)) if ok]
        op = rng.choice(choices)
        b = (
            rng.randint(1, min(99, 999 - acc))
            if op == "+"
            else rng.randint(1, min(99, acc))
            if op == "-"
            else rng.randint(2, min(9, 999 // max(acc, 1)))
        )
        ops += f"{op}{b}"
        acc = acc + b if op == "+" else acc - b if op == "-" else acc * b
    return {"env": "chains", "start": start, "ops": ops}


def _round_lines(values: list[int], ops: list[tuple[str, int]], at: int) -> str:
    out = ""
    for i in range(at, min(at + CHUNK, len(ops))):
        op, b = ops[i]
        out += f"{values[i]}{op}{b}={values[i + 1]}\n"
    return out + f"S: {values[min(at + CHUNK, len(ops))]}\n"


def chains_demo(task: dict[str, Any]) -> list[Segment]:
    """The growing transcript: every round's ``next``, its operations worked, the running value ``S:``."""
    env = make_env("chains")
    segs: list[Segment] = [(env.reset(task), False)]
    ops, values = chain_ops(task["ops"]), running_values(task["start"], task["ops"])
    at = 0
    while True:
        obs = env.step("next")
        segs += [("next\n", True), (obs.text + "\n", False)]
        if obs.text == "= end":
            segs.append((f"A: {values[-1]}", True))
            return segs
        segs.append((_round_lines(values, ops, at), True))
        at += CHUNK


def workspace(task: dict[str, Any], report: int, last_obs: str | None) -> str:
    """The Markovian workspace of IterResearch: the question, the report (the running value) and the last
    action with its observation; the context a round starts from, whatever the round."""
    env = make_env("chains")
    text = env.reset(task) + f"S: {report}\n"
    return text + (f"next\n{last_obs}\n" if last_obs is not None else "")


def workspace_demo(task: dict[str, Any], rng: random.Random) -> list[Segment]:
    """One round in the workspace: the ops just revealed worked, the new report, then ``next`` (or the answer
    after ``= end``)."""
    ops, values = chain_ops(task["ops"]), running_values(task["start"], task["ops"])
    rounds = (len(ops) + CHUNK - 1) // CHUNK
    r = rng.randint(0, rounds + 1)  # 0: the round before any op; rounds + 1: the one that reads ``= end``
    if r == 0:
        return [(workspace(task, values[0], None), False), ("next", True)]
    if r == rounds + 1:
        return [(workspace(task, values[-1], "= end"), False), (f"A: {values[-1]}", True)]
    at = (r - 1) * CHUNK
    chunk = "".join(f"{op}{b}" for op, b in ops[at : at + CHUNK])
    return [(workspace(task, values[at], f"= {chunk}"), False), (_round_lines(values, ops, at) + "next", True)]


def iad_prompt(task: dict[str, Any], reviewed: list[tuple[str, tuple[int, int, list[int]]]]) -> str:
    """The chains question followed by the reviewed candidates, one line each (``best 2/4: 576 568 640``, then
    ``worst ...``): the prompt of a round of iterative agent decoding."""
    env = make_env("chains")
    text = env.reset(task)
    return text + "".join(feedback_line(label, *fb) + "\n" for label, fb in reviewed)


def _slip(rng: random.Random, value: int) -> int:
    """A wrong value as a model writes one: off by a unit, a ten or a hundred."""
    delta = rng.choice((1, 2, 10, 20, 100)) * rng.choice((-1, 1))
    return value + delta if 0 <= value + delta <= 999 else value - delta


def simulated_candidate(task: dict[str, Any], rng: random.Random, right: int) -> tuple[int, int, list[int]]:
    """The feedback on a candidate that reports ``right`` rounds correctly, slips on the next and carries on
    from the slip (as a model would), sometimes stopping early."""
    ops, values = chain_ops(task["ops"]), running_values(task["start"], task["ops"])
    rounds = (len(ops) + CHUNK - 1) // CHUNK
    reports = [values[min((i + 1) * CHUNK, len(ops))] for i in range(right)]
    acc = _slip(rng, values[min((right + 1) * CHUNK, len(ops))])
    reports.append(acc)
    for i in range(right + 1, rounds):
        for op, b in ops[i * CHUNK : (i + 1) * CHUNK]:
            acc = acc + b if op == "+" else acc - b if op == "-" else acc * b
        reports.append(acc)
    if rng.random() < 0.2:
        reports = reports[: rng.randint(right + 1, len(reports))]
    return right, rounds, reports


def iad_demo(task: dict[str, Any], rng: random.Random) -> list[Segment]:
    """A round of iterative agent decoding on a chain: the best (and, when two were tried, the worst) earlier
    candidate with the environment's feedback, then the whole right transcript, whose first reports are the
    ones the best candidate had right."""
    rounds = (len(chain_ops(task["ops"])) + CHUNK - 1) // CHUNK
    best = simulated_candidate(task, rng, rng.randint(0, rounds - 1))
    reviewed = [("best", best)]
    if rng.random() < 0.7:
        reviewed.append(("worst", simulated_candidate(task, rng, rng.randint(0, best[0]))))
    demo = chains_demo(task)
    return [(iad_prompt(task, reviewed), False)] + demo[1:]


def demo_of(task: dict[str, Any], rng: random.Random, calc_style: str = "mixed") -> list[Segment]:
    """The demonstration of any task: the calculator in ``calc_style``, the others as their own demos do."""
    env = task["env"]
    if env == "calculator":
        return calc_demo(task, calc_style)
    if env == "lookup":
        return lookup_demo(task, rng)
    if env == "maze":
        return maze_demo(task, rng)
    return chains_demo(task)


# -- splits and the training mixture -------------------------------------------------------------------------

SPLIT_MAKERS: dict[str, dict[str, Callable[[random.Random], dict[str, Any]]]] = {
    "calculator": {"easy": lambda rng: calc_task(rng, False), "hard": lambda rng: calc_task(rng, True)},
    "lookup": {
        "easy": lambda rng: lookup_task(rng, rng.randint(2, 3), rng.randint(0, 1), slack=4),
        "hard": lambda rng: lookup_task(rng, rng.randint(4, 5), 2, slack=1),
    },
    # the shipped model reads the grid poorly (it bumps into walls): its hard split is sized so that greedy
    # decoding solves 30-70% (measured in the model's training.json), not by the maze's length alone
    "maze": {
        "easy": lambda rng: maze_task(rng, 1, 3, slack=2),
        "hard": lambda rng: maze_task(rng, 3, 5, slack=4),
    },
    "chains": {
        "easy": lambda rng: chains_task(rng, rng.randint(3, 6)),
        "hard": lambda rng: chains_task(rng, rng.randint(20, 30)),
    },
}


def split_tasks(env: str, split: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` held-out tasks of a split, the same for the same seed."""
    env = env.removeprefix("builtin:")
    if env not in SPLIT_MAKERS:
        raise InputError(f"unknown environment {env!r}: use one of {', '.join(SPLIT_MAKERS)}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    rng = random.Random(f"agent-{env}-{split}-{seed}")
    out, seen = [], set()
    while len(out) < n:
        task = SPLIT_MAKERS[env][split](rng)
        key = json.dumps(task, sort_keys=True)
        if held_out(task) and key not in seen:
            seen.add(key)
            out.append(task)
    return out


def _train(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    while True:
        task = make()
        if not held_out(task):
            return task


def held_out_tasks(make: Callable[[], dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The first ``count`` held-out tasks ``make`` draws (the benchmarks' tasks of a given shape; repeats kept)."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        task = make()
        if held_out(task):
            out.append(task)
    return out


#: Shares of the mixture: (environment, share).
MIX = (("calculator", 0.35), ("lookup", 0.2), ("maze", 0.2), ("chains", 0.25))
#: Calculator prompts that offer the tool, and among them the share solved in the mixed style (the rest call
#: the tool for every step): greedy decoding then prefers mixed, and ASPO has an earlier first call to find.
CALC_TOOLS, CALC_MIXED = 0.6, 0.6


#: Demonstration kinds a ``--mix`` names: an environment's own demos, or the chains in IterResearch's workspace
#: (``workspace``) or with iterative agent decoding's feedback (``iad``). Chains transcripts are 3-12 operations
#: (longer ones are what the transcript is measured to fail on); workspace rounds come from chains of 3-30.
KINDS = ("calculator", "lookup", "maze", "chains", "workspace", "iad")
#: ``builtin:agent-plan``'s mixture: chains-heavy, fine-tuned from the arithmetic model (``steerable agent train
#: --init builtin --mix plan``).
#: Lookup and maze stay out: the methods run on them use ``builtin:agent``.
PLAN_MIX = (("calculator", 0.1), ("chains", 0.3), ("workspace", 0.3), ("iad", 0.3))


def _chains_n(rng: random.Random) -> int:
    return rng.choices(range(3, 13), weights=[3, 3, 3, 2, 2, 2, 1, 1, 1, 1])[0]


def kind_demo(kind: str, rng: random.Random) -> list[Segment]:
    """One demonstration of a kind of :data:`KINDS`."""
    if kind in ("calculator", "lookup", "maze"):
        return training_demo(rng, ((kind, 1.0),))
    if kind == "chains":
        return chains_demo(_train(lambda: chains_task(rng, _chains_n(rng))))
    if kind == "workspace":
        return workspace_demo(_train(lambda: chains_task(rng, rng.randint(3, 30))), rng)
    if kind == "iad":
        return iad_demo(_train(lambda: chains_task(rng, rng.randint(4, 12))), rng)
    raise InputError(f"unknown demonstration kind {kind!r}: use one of {', '.join(KINDS)}")


def training_demo(rng: random.Random, mix: tuple[tuple[str, float], ...] = MIX) -> list[Segment]:
    """One demonstration of the mixture (the default: :data:`MIX`, ``builtin:agent``'s; chains there are half
    transcripts, half workspace rounds)."""
    if mix is not MIX and not (len(mix) == 1 and mix[0][0] in ("calculator", "lookup", "maze")):
        return kind_demo(rng.choices([k for k, _ in mix], weights=[w for _, w in mix])[0], rng)
    env = rng.choices([e for e, _ in mix], weights=[w for _, w in mix])[0]
    if env == "calculator":
        task = _train(lambda: calc_task(rng, rng.random() < 0.5))
        if rng.random() >= CALC_TOOLS:
            return calc_demo(task, "text")
        return calc_demo(task, "mixed" if rng.random() < CALC_MIXED else "tool")
    if env == "lookup":
        hops = rng.randint(2, 5)
        task = _train(lambda: lookup_task(rng, hops, rng.randint(0, 2), slack=8))
        return lookup_demo(task, rng)
    if env == "maze":
        task = _train(lambda: maze_task(rng, 1, 10, slack=2))
        return maze_demo(task, rng)
    if rng.random() < 0.5:
        n = _chains_n(rng)
        return chains_demo(_train(lambda: chains_task(rng, n)))
    return workspace_demo(_train(lambda: chains_task(rng, rng.randint(3, 30))), rng)


def read_tasks(path) -> list[dict[str, Any]]:
    """Task objects from a JSONL file, one per line (the format the built-in splits are written in), each checked
    by its environment: a bad one is a one-line error naming the file and line."""
    from steerable.tasks.loader import read_jsonl

    out = []
    for n, row in read_jsonl(path, 'a task object with an "env" field'):
        try:
            env = make_env(str(row.get("env", "")))
            env.reset(row)
        except InputError as e:
            raise InputError(f"{path}:{n}: {e}") from None
        out.append(env.task)  # with its answer computed
    if not out:
        raise InputError(f"{path} holds no tasks: write one task object per line")
    return out


def tasks_of(env: str, split: str, task_file, limit: int, seed: int) -> list[dict[str, Any]]:
    """The tasks a command runs: ``limit`` of the file's, or ``limit`` held-out tasks of a built-in split."""
    if task_file is not None:
        return read_tasks(task_file)[:limit]
    return split_tasks(env, split, limit, seed=seed)
