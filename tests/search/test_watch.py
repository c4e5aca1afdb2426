"""A watched run is the same run, and its events say what the strategy did to its rows."""

import pytest
import torch

from conftest import tiny_model
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.search.lm_process import LMProcess
from steerable.search.registry import make_strategy
from steerable.search.watch import Watch
from steerable.tasks.builtin.arithmetic import Problem
from steerable.tasks.builtin.verifier import OraclePRM
from steerable.usage import Usage

PROMPT = Problem((12, 30), ("+",)).prompt


@pytest.fixture(scope="module")
def process(char_tokenizer):
    gen = LocalGenerator(tiny_model("llama", char_tokenizer), char_tokenizer)
    return LMProcess(
        gen, delimiter="\n", params=SamplingParams(temperature=1.0), max_step_tokens=6, max_steps=3, max_tokens=18
    )


def watched(method, process, scorer, budget=4, seed=3):
    events = []
    watch = Watch(events.append, show=lambda p, s: list(p.preview(s)))
    res = make_strategy(method, lambda t: t[:3] or None).run(
        watch.process(process), watch.scorer(scorer), budget, PROMPT, seed=seed
    )
    return res, events


@pytest.mark.parametrize("method", ["pf", "beam", "bon"])
def test_a_watched_run_is_the_same_run_and_its_events_replay_its_rows(method, process):
    plain = make_strategy(method, lambda t: t[:3] or None).run(process, OraclePRM(), 4, PROMPT, seed=3)
    res, events = watched(method, process, OraclePRM())
    assert res.text == plain.text and res.cost.generated_tokens == plain.cost.generated_tokens
    assert events[0] == {"type": "init", "state": 0, "rows": 4}
    steps = [e for e in events if e["type"] == "step"]
    assert steps and [e["step"] for e in steps] == list(range(1, len(steps) + 1))
    # replay: a state's rows are what its last step showed, and a selection's row i continues its parent's text
    shown: dict[int, list[str]] = {}
    for e in events:
        if e["type"] == "step":
            before = shown.get(e["state"])
            if before is not None:  # a step only extends rows (finished ones stay as they were)
                assert all(now.startswith(was) for now, was in zip(e["previews"], before, strict=True))
            assert len(e["previews"]) == e["rows"] == len(e["done"])
            shown[e["state"]] = e["previews"]
        elif e["type"] == "select":
            shown[e["state"]] = [shown[e["from"]][p] for p in e["parents"]]
        elif e["type"] == "score":
            assert all(r >= 0 for r in e["rows"])  # every scored sample is a row the strategy previewed
            texts = [shown[e["state"]][r] for r in e["rows"]]
            assert e["scores"] == pytest.approx(OraclePRM().score([PROMPT] * len(texts), texts))
    if method == "pf":
        assert any(e["type"] == "select" for e in events)  # it resampled, and the replay above followed it


def test_tensor_samples_are_matched_to_their_rows():
    class Walk:
        """Rows of a 2-D walk: previews are rows of one tensor, so scored samples are views into it."""

        def init(self, cond, n, seed=None):
            self.g = torch.Generator().manual_seed(seed or 0)
            return {"x": torch.zeros(n, 2), "t": 0}

        def size(self, s):
            return len(s["x"])

        def is_terminal(self, s):
            return [s["t"] >= 3] * len(s["x"])

        def propose(self, s):
            s["x"] += torch.randn(s["x"].shape, generator=self.g)
            s["t"] += 1

        def select(self, s, rows):
            return {"x": s["x"][list(rows)].clone(), "t": s["t"]}

        def concat(self, states):
            return {"x": torch.cat([s["x"] for s in states]), "t": states[0]["t"]}

        def preview(self, s):
            return s["x"]

        def start_run(self):
            pass

        usage = Usage()

    class Near:
        range = (-float("inf"), 0.0)
        calls = forward_tokens = 0

        def score(self, conds, xs):
            return [-float(x.square().sum()) for x in xs]

    events = []
    watch = Watch(events.append)
    make_strategy("beam", lambda x: None).run(watch.process(Walk()), watch.scorer(Near()), 4, "0", seed=0)
    scored = [e for e in events if e["type"] == "score"]
    assert scored and all(r >= 0 for e in scored for r in e["rows"])
    assert all("previews" not in e for e in events if e["type"] == "step")  # no show: nothing previewed for it


def test_an_emit_that_raises_stops_the_run(process):
    class Gone(Exception):
        pass

    def emit(event):
        if event["type"] == "step" and event["step"] == 2:
            raise Gone

    watch = Watch(emit)
    with pytest.raises(Gone):
        make_strategy("pf", lambda t: None).run(watch.process(process), watch.scorer(OraclePRM()), 4, PROMPT, seed=0)
    assert watch.steps == 2


def test_rows_with_the_same_text_each_get_their_own_score():
    class Two:  # two rows whose texts are equal (a particle and its resampled copy)
        def preview(self, state):
            return ["".join(["1+1", "=2"]), "".join(["1+1=", "2"])]

    events = []
    watch = Watch(events.append)
    process = watch.process(Two())
    shown = process.preview(object())
    watch.scorer(OraclePRM()).score(["Q: 1+1=\n"] * 2, [shown[1], "1+1=2"])
    assert events[-1]["rows"] == [1, 0]  # the very object first, then the equal row not yet matched
