"""A scripted step generator (the agent tests import it as ``scripted``): a policy function of the context
writes each line, so the agent process and the searches over it are tested on exact behaviour (no model's whims)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from steerable.usage import Usage


@dataclass
class ScriptRows:
    prompts: list[str]
    texts: list[str]
    finished: list[bool]
    rngs: list[random.Random]

    def __len__(self) -> int:
        return len(self.texts)

    def seed(self, seed: int) -> None:
        self.rngs = [random.Random(f"{seed}-{r}") for r in range(len(self))]

    def select(self, rows):
        first: set[int] = set()
        rngs = []
        for r in rows:  # a row's first copy continues its stream, later ones branch
            rngs.append(self.rngs[r] if r not in first else random.Random(self.rngs[r].random()))
            first.add(r)
        return ScriptRows([self.prompts[r] for r in rows], [self.texts[r] for r in rows],
                          [self.finished[r] for r in rows], rngs)  # fmt: skip


@dataclass
class ScriptGenerator:
    """``policy(context, rng, greedy) -> line``; a line ending the episode (``A: ...``) is followed by EOS."""

    policy: object
    remote: bool = False
    usage: Usage = field(default_factory=Usage)

    def start(self, prompts, n=1):
        rows = [p for p in prompts for _ in range(n)]
        return ScriptRows(rows, [""] * len(rows), [False] * len(rows), [random.Random(r) for r in range(len(rows))])

    def step(self, seqs, params, stop=None, max_tokens=None, rows=None):
        from steerable.lm.types import StepOutput

        new = [""] * len(seqs)
        for r in rows if rows is not None else range(len(seqs)):
            if seqs.finished[r]:
                continue
            line = self.policy(seqs.prompts[r] + seqs.texts[r], seqs.rngs[r], params.greedy)
            if line.startswith("A:"):
                seqs.finished[r] = True
                new[r] = line
            else:
                new[r] = line + "\n"
            seqs.texts[r] += new[r]
            self.usage = self.usage + Usage(generated_tokens=len(new[r]))
        return StepOutput(texts=tuple(new), token_ids=(), logprobs=(), finish_reasons=(), usage=Usage())

    def append(self, seqs, texts):
        for r, t in enumerate(texts):
            if t:
                seqs.texts[r] += t
                seqs.finished[r] = False
                self.usage = self.usage + Usage(appended_tokens=len(t))

    def concat(self, batches):
        out = ScriptRows([], [], [], [])
        for b in batches:
            out.prompts += b.prompts
            out.texts += b.texts
            out.finished += b.finished
            out.rngs += b.rngs
        return out

    def texts(self, seqs):
        return list(seqs.texts)

    def generated_tokens(self, seqs, row):
        return len(seqs.texts[row])


def lookup_policy(context: str, rng: random.Random, greedy: bool) -> str:
    """Follow the last cell read: its only key, one of a fork's two (the first when greedy), or answer its number;
    no backtracking."""
    last = [ln for ln in context.split("\n") if ln.startswith("= ")]
    if not last:
        return "get " + context.split("find ")[1].split("\n")[0]
    cell = last[-1][2:].split()
    if cell[0].isdigit():
        return f"A: {cell[0]}"
    if cell == ["none"]:
        return "A: 0"
    return "get " + (cell[0] if greedy or len(cell) == 1 else rng.choice(cell))
