"""The engine's prefix cache across requests: the same outputs, fewer prefilled tokens, bounded memory, and
no reuse across steering."""

from __future__ import annotations

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

PROMPT = "Q: 37+48-19=\n"


@pytest.fixture(scope="module")
def vector(tiny_dir, tmp_path_factory):
    from steerable.lm.local import LocalGenerator
    from steerable.steer.artifact import SteeringVector, fingerprint

    gen = LocalGenerator.from_pretrained(tiny_dir, device="cpu")
    v = torch.randn(gen.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    art = SteeringVector("mean", "add", fingerprint(gen.model, gen.tokenizer), vector=v * 4, layers=(1,))
    return art.save(tmp_path_factory.mktemp("vec") / "push")


@pytest.fixture(scope="module")
def servers(tiny_dir, vector, serve_app):
    from steerable.serve import build

    out = {}
    for name, mb in (("cached", 64.0), ("plain", 0.0), ("small", 0.01)):
        engine, app = build(tiny_dir, [f"push={vector}"], device="cpu", model_name="m", prefix_cache_mb=mb)
        out[name] = serve_app(app)
        out[name].engine = engine
    yield out
    for s in out.values():
        s.close()


def ask(server, prompt: str, **kw):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    return client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=12, **kw)


def test_a_continued_prompt_prefills_only_its_new_tokens_and_gives_the_same_text(servers):
    first = ask(servers["cached"], PROMPT)
    follow = PROMPT + first.choices[0].text + "\n= 7\n"
    again = ask(servers["cached"], follow)
    plain = ask(servers["plain"], follow)
    assert again.choices[0].text == plain.choices[0].text
    hit = again.usage.prompt_tokens_details.cached_tokens
    # everything the first request ran is reused: its prompt and its text but the last token (never fed)
    assert hit == first.usage.prompt_tokens + first.usage.completion_tokens - 1
    assert again.model_extra["steerable"]["forward_tokens"] == plain.model_extra["steerable"]["forward_tokens"] - hit
    # a prompt sharing only a beginning reuses that beginning (rows are indexed every 16 tokens)
    other = ask(servers["cached"], PROMPT + first.choices[0].text[:4] + "x" * 20)
    assert other.usage.prompt_tokens_details.cached_tokens >= 16
    assert other.choices[0].text == ask(servers["plain"], PROMPT + first.choices[0].text[:4] + "x" * 20).choices[0].text


def test_steered_requests_never_reuse_unsteered_rows(servers):
    base = ask(servers["cached"], PROMPT)
    follow = PROMPT + base.choices[0].text
    steered = ask(servers["cached"], follow, extra_body={"steering": "push"})
    assert steered.usage.prompt_tokens_details.cached_tokens == 0
    want = ask(servers["plain"], follow, extra_body={"steering": "push"}).choices[0].text
    assert steered.choices[0].text == want
    # the same steering reuses its own rows, and gives the same text
    again = ask(servers["cached"], follow, extra_body={"steering": "push"})
    assert again.usage.prompt_tokens_details.cached_tokens > 0 and again.choices[0].text == want
    other = ask(servers["cached"], follow, extra_body={"steering": {"name": "push", "strength": 0.5}})
    assert other.usage.prompt_tokens_details.cached_tokens == 0  # another strength is another KV


def test_memory_stays_within_the_bound(servers):
    small = servers["small"].engine.prefix.store
    for i in range(12):
        ask(servers["small"], f"Q: {i}+{i * 7}-{i * 3}=\n")
    assert 0 < small.nbytes <= small.max_bytes
    assert len(small) < 12  # least recently used rows were dropped
    assert servers["plain"].engine.prefix.store.nbytes == 0  # 0 MB: off
