"""Where PRM-guided search stops: the items the policy gets wrong greedily, and what the PRM thinks of them.

On every ``builtin:hard`` item: the policy's greedy solution, and the PRM's
score of it against its score of the right solution (the better of the two
styles). Where greedy is wrong: the checker's reason for its first wrong
line, and for arithmetic slips (``a op b = c`` with ``c`` wrong) whether the
policy gets that one step right when asked it alone (``Q: a op b=``). A PRM
that scores a wrong greedy solution above the right one steers search
towards it; a slip the policy also makes alone is something the policy does
not know, so no PRM read from the policy can flag it. With a PRM that holds
a calculator (the built-in one), also how many of those slips' lines the
calculator writes right (greedy, the line alone).

    python benchmarks/prm_ceiling.py [--prm builtin] [--limit 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prm", default="builtin", help="builtin or a PRM directory")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    setup()
    from steerable.lm.local import LocalGenerator
    from steerable.lm.types import SamplingParams
    from steerable.reward.prm import TokenClassifierPRM
    from steerable.tasks.builtin.arithmetic import apply, parse_problem
    from steerable.tasks.builtin.verifier import check_steps, extract_answer
    from steerable.tasks.loader import load_task

    gen = LocalGenerator.from_pretrained("builtin", device="cpu")
    prm = TokenClassifierPRM.from_pretrained(args.prm)
    items = load_task("builtin:hard", limit=args.limit)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=320)
    comps = gen.generate([it.prompt for it in items], greedy)
    wrong, prefers_wrong, reasons, asks, lines = 0, 0, Counter(), [], []
    for it, c in zip(items, comps, strict=True):
        p = parse_problem(it.prompt)
        if extract_answer(c.text) == p.answer:
            continue
        wrong += 1
        s_greedy, *s_right = prm.score([it.prompt] * 3, [c.text, p.solution("concise"), p.solution("verbose")])
        prefers_wrong += s_greedy > max(s_right)
        first = next((s for s in check_steps(p, c.text) if not s.correct), None)
        reasons[first.reason if first else "no wrong line"] += 1
        m = re.match(r"\s*(\d+)([+\-*])(\d+)=", first.line) if first and first.reason == "arithmetic wrong" else None
        if m:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            asks.append((f"Q: {a}{op}{b}=\n", apply(a, op, b)))
            lines.append(f"{a}{op}{b}={apply(a, op, b)}")
    alone = gen.generate([q for q, _ in asks], greedy)
    right_alone = sum(extract_answer(o.text) == want for o, (_, want) in zip(alone, asks, strict=True))
    out = {
        "items": len(items),
        "greedy_accuracy": round(1 - wrong / len(items), 4),
        "greedy_wrong": wrong,
        "prm_prefers_greedy_wrong_over_right": prefers_wrong,
        "first_wrong_line": dict(reasons),
        "arithmetic_slips": len(asks),
        "slips_right_when_asked_alone": right_alone,
    }
    calc = getattr(prm.model, "calc", None)
    if calc is not None and lines:
        from steerable.tasks.builtin.calculator import accuracy

        out["slips_the_calculator_writes_right"] = round(accuracy(calc, prm.tokenizer, lines) * len(lines))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{len(items)} hard items; greedy {out['greedy_accuracy']:.1%} ({wrong} wrong)")
    print(f"PRM {args.prm} scores the wrong greedy solution above the right one on {prefers_wrong} of {wrong}")
    print("first wrong line: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    print(f"arithmetic slips the policy gets right when asked the step alone: {right_alone} of {len(asks)}")
    if "slips_the_calculator_writes_right" in out:
        print(f"... and the PRM's calculator writes right: {out['slips_the_calculator_writes_right']} of {len(asks)}")


if __name__ == "__main__":
    main()
