"""Prompt scoring as lm-eval asks for it: token-id prompts, ``max_tokens`` 0 or 1, ``echo``, ``logprobs`` k.

lm-eval's loglikelihood request (``local-completions``) is
``{"prompt": [ids...] or [[ids...], ...], "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": true}``;
it sums ``token_logprobs[ctxlen:-1]`` and checks greediness against ``top_logprobs``.
Every number here is compared with the model's own log-softmax, computed from scratch.
"""

from __future__ import annotations

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

CONTEXT = "R: how do I bake bread?\n"
REPLIES = ["Sure. Mix flour and water.\n", "I can't help with that.\n"]


def from_scratch(model, ids: list[int]) -> torch.Tensor:
    """log p(. | ids[:j]) for every position j: ``[len(ids), vocab]``."""
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def lm_eval_request(url: str, prompts, **extra) -> dict:
    body = {"model": "builtin", "prompt": prompts, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234}
    r = httpx.post(url + "/v1/completions", json={**body, "echo": True, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def loglikelihood(choice: dict, ctxlen: int) -> tuple[float, bool]:
    """What lm-eval 0.4.13's ``LocalCompletionsAPI.parse_logprobs`` computes from one choice."""
    lps = choice["logprobs"]["token_logprobs"][ctxlen:-1]
    tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
    return sum(lps), all(lp == max(top.values()) for lp, top in zip(lps, tops, strict=True))


def test_echoed_logprobs_are_the_models_own(server, local):
    tok = local.tokenizer
    ctx = tok(CONTEXT)["input_ids"]
    seqs = [ctx + tok(r, add_special_tokens=False)["input_ids"] for r in REPLIES]
    out = lm_eval_request(server.url, seqs)  # a batch: a list of token-id lists
    assert [c["index"] for c in out["choices"]] == [0, 1]
    for ids, choice in zip(seqs, out["choices"], strict=True):
        lp = choice["logprobs"]
        logp = from_scratch(local.model, ids)
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        want = [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
        assert lp["token_logprobs"][1 : len(ids)] == pytest.approx(want, abs=1e-4)
        assert len(lp["tokens"]) == len(ids) + 1  # the prompt, then the one sampled token
        for j in range(1, len(ids)):  # top-1 alternative at each prompt position
            ((piece, value),) = lp["top_logprobs"][j].items()
            best = int(logp[j - 1].argmax())
            assert piece == tok.decode([best]) and value == pytest.approx(float(logp[j - 1, best]), abs=1e-4)
        greedy_next = int(logp[-1].argmax())
        assert lp["tokens"][-1] == tok.decode([greedy_next])
        ll, _ = loglikelihood(choice, len(ctx))
        assert ll == pytest.approx(sum(want[len(ctx) - 1 :]), abs=1e-3)
        assert choice["text"].startswith(tok.decode(ids))  # echo: the prompt, then the sampled text
    # the helpful reply to a benign request is the likelier one, as lm-eval would score it
    (h, _), (r, _) = (loglikelihood(c, len(ctx)) for c in out["choices"])
    assert h != r


def test_greediness_is_exact_where_the_continuation_is_the_argmax(server, local):
    tok = local.tokenizer
    ctx = tok("Q: 2+2=\n")["input_ids"]
    logp = from_scratch(local.model, ctx)
    greedy = [int(logp[-1].argmax())]
    out = lm_eval_request(server.url, ctx + greedy)  # a single token-id prompt
    ll, is_greedy = loglikelihood(out["choices"][0], len(ctx))
    assert is_greedy and ll == pytest.approx(float(logp[-1, greedy[0]]), abs=1e-4)
    other = [int(logp[-1].argsort()[-2])]
    _, is_greedy = loglikelihood(lm_eval_request(server.url, ctx + other)["choices"][0], len(ctx))
    assert not is_greedy


def test_max_tokens_zero_with_echo_scores_the_prompt_only(server, local):
    ids = local.tokenizer(CONTEXT + REPLIES[1])["input_ids"]
    out = lm_eval_request(server.url, [ids], max_tokens=0, logprobs=2)
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(ids) and out["usage"]["completion_tokens"] == 0
    assert out["choices"][0]["text"] == local.tokenizer.decode(ids)
    logp = from_scratch(local.model, ids)
    for j in range(1, len(ids)):
        assert len(lp["top_logprobs"][j]) <= 2
        assert max(lp["top_logprobs"][j].values()) == pytest.approx(float(logp[j - 1].max()), abs=1e-4)


def test_top_k_alternatives_of_generated_tokens(server, local):
    prompt = "Q: 37+48-19=\n"
    r = httpx.post(
        server.url + "/v1/completions",
        json={"prompt": prompt, "max_tokens": 6, "temperature": 0, "logprobs": 3},
        timeout=60,
    ).json()
    lp = r["choices"][0]["logprobs"]
    ids = local.tokenizer(prompt)["input_ids"]
    full = ids + list(local.generate([prompt], _greedy(6))[0].token_ids)
    logp = from_scratch(local.model, list(full))
    for j, top in enumerate(lp["top_logprobs"]):
        at = len(ids) - 1 + j
        best = torch.topk(logp[at], 3)
        assert list(top.values()) == pytest.approx(best.values.tolist(), abs=1e-4)
        assert lp["token_logprobs"][j] == pytest.approx(float(logp[at, full[at + 1]]), abs=1e-4)
    chat = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 4,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 2,
        },
        timeout=60,
    ).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert all(len(c["top_logprobs"]) == 2 for c in content)
    assert content[0]["top_logprobs"][0]["logprob"] == pytest.approx(float(logp[len(ids) - 1].max()), abs=1e-4)


def _greedy(n: int):
    from steerable.lm.types import SamplingParams

    return SamplingParams(temperature=0, max_new_tokens=n)


def test_steering_applies_to_scored_prompts(server, local, artifact):
    from steerable.steer.artifact import load_steering, steering_context

    ids = local.tokenizer(CONTEXT + REPLIES[0])["input_ids"]
    plain = lm_eval_request(server.url, [ids], max_tokens=0)["choices"][0]["logprobs"]["token_logprobs"]
    steered = lm_eval_request(server.url, [ids], max_tokens=0, steering="noise")["choices"][0]["logprobs"]
    art = load_steering(artifact, local.model, local.tokenizer)
    with steering_context(art, local.model):  # a plain forward pass under the same vector
        logp = from_scratch(local.model, ids)
    want = [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
    assert steered["token_logprobs"][1:] == pytest.approx(want, abs=1e-4)
    assert steered["token_logprobs"][1:] != pytest.approx(plain[1:], abs=1e-3)
