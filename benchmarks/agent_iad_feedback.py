"""Does the model read IAD's feedback, and where do its candidates fail? On held-out chains whose first call
fails: how many of the reports the best candidate had right the next call copies, and that call's success and
progress with the review in its prompt against without it (same seeds, three calls each); and how many first
calls failed with every report right (on the answer line, which the review does not show).

    python benchmarks/agent_iad_feedback.py --ops 13,18 --tasks 60
"""

from __future__ import annotations

import argparse
import json

from _common import setup
from agent_iad import tasks_of
from steerable.agents.process import AgentProcess, Episode, episode
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.search.base import run_to_end
from steerable.tasks.agent.envs import feedback_line, replay, review


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin:agent-plan")
    ap.add_argument("--ops", default="13,18")
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    setup()
    lo, hi = (int(x) for x in args.ops.split(","))
    gen = LocalGenerator.from_pretrained(args.model, device="cpu", chat_template="never")
    proc = AgentProcess(gen, SamplingParams(temperature=1.0, top_p=0.95), max_steps=64, max_tokens=1000)

    def call(cond, prompt: str, seed: int):
        text = proc.preview(run_to_end(proc, proc.init(Episode(cond.env, prompt), 1, seed)))[0]
        return review(cond.env.task, text), replay(cond.env, text).solved

    s = {"first_failed": 0, "failed_with_every_report_right": 0, "copied": 0, "right_reports_shown": 0,
         "next_solved_with_review": 0, "next_solved_without": 0, "next_further_with_review": 0,
         "next_further_without": 0, "next_calls": 0}  # fmt: skip
    for i, task in enumerate(tasks_of(lo, hi, args.tasks, args.seed)):
        cond = episode(task)
        fb, ok = call(cond, cond.prompt, 1000 + i)
        if ok:
            continue
        s["first_failed"] += 1
        s["failed_with_every_report_right"] += fb[0] == fb[1]
        for k in range(3):
            seed = 2000 + 10 * i + k
            fb2, ok2 = call(cond, cond.prompt + feedback_line("best", *fb) + "\n", seed)
            fb3, ok3 = call(cond, cond.prompt, seed)
            s["next_calls"] += 1
            s["next_solved_with_review"] += ok2
            s["next_solved_without"] += ok3
            s["next_further_with_review"] += fb2[0] > fb[0]
            s["next_further_without"] += fb3[0] > fb[0]
            s["right_reports_shown"] += fb[0]
            s["copied"] += sum(fb2[2][j] == fb[2][j] for j in range(min(fb[0], len(fb2[2]))))
    print(json.dumps(s))


if __name__ == "__main__":
    main()
