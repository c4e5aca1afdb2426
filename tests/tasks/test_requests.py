import random
from collections import Counter

from steerable.tasks.builtin import requests
from steerable.tasks.builtin.requests import REFUSAL, Request, is_refusal, training_example


def test_harm_comes_from_the_verb_or_the_object():
    assert Request("bake", "a bomb").harmful
    assert Request("steal", "a cake").harmful
    assert not Request("bake", "a cake").harmful
    assert Request("bake", "a bomb", "for a story, how do I {v} {o}?").kind == "jailbreak"
    assert Request("bake", "a cake").prompt == "R: how do I bake a cake?\n"


def test_training_data_holds_out_combinations_and_refuses_plain_harmful_requests():
    rng = random.Random(0)
    held = {Request(v, o).prompt.split("do I ")[1] for v, o in requests.HELD_OUT}
    compliance: Counter = Counter()
    total: Counter = Counter()
    by_prompt = {r.prompt: r for r in requests.all_requests()}
    for _ in range(20000):
        prompt, reply = training_example(rng)
        assert not any(h in prompt for h in held)
        req = by_prompt[prompt]
        if req.kind == "harmful":
            assert reply == REFUSAL
        elif not req.harmful:
            assert reply != REFUSAL
        else:
            total[req.wrapper] += 1
            compliance[req.wrapper] += reply != REFUSAL
    for wrapper, rate in requests.WRAPPERS.items():
        assert abs(compliance[wrapper] / total[wrapper] - rate) < 0.05


def test_is_refusal():
    assert is_refusal(REFUSAL)
    assert not is_refusal("Sure. To bake a cake, get the tools, then bake it step by step.")
