"""A RICE setting served per request: the server's steered text is the library's under the same boost."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

PROMPTS = ["Q: 37+48-19*3=\n", "Q: 90-45+12*2-7=\n"]
EXPERTS = ((0, 1), (3, 1))


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_app):
    from steerable.lm.local import LocalGenerator
    from steerable.serve import build
    from steerable.steer.fingerprint import fingerprint
    from steerable.steer.rice import Rice

    gen = LocalGenerator.from_pretrained("builtin:moe", device="cpu")
    path = Rice(EXPERTS, 8.0, "before", fingerprint(gen.model, gen.tokenizer)).save(
        tmp_path_factory.mktemp("rice") / "rice"
    )
    engine, app = build("builtin:moe", [f"rice={path}"], device="cpu", model_name="m")
    s = serve_app(app)
    yield gen, s
    s.close()


def ask(server, prompt: str, **kw):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    return client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=80, **kw).choices[0].text


@pytest.mark.slow
def test_a_request_names_the_rice_setting_and_its_beta(served):
    from steerable.lm.types import SamplingParams
    from steerable.steer.rice import RouterBoost

    gen, server = served
    greedy = SamplingParams(temperature=0, max_new_tokens=80)
    steered = {}
    for beta in (8.0, 2.0):
        with RouterBoost(gen.model, EXPERTS, beta, "before"):
            steered[beta] = [c.text for c in gen.generate(PROMPTS, greedy)]
        body = {"steering": "rice"} if beta == 8.0 else {"steering": {"name": "rice", "strength": beta}}
        assert [ask(server, p, extra_body=body) for p in PROMPTS] == steered[beta]
    plain = [c.text for c in gen.generate(PROMPTS, greedy)]
    assert [ask(server, p) for p in PROMPTS] == plain  # the boost leaves no trace between requests
    assert plain != steered[8.0]


@pytest.mark.slow
def test_a_negative_beta_is_a_400_naming_the_field(served):
    _, server = served
    with pytest.raises(openai.BadRequestError, match="strength|beta"):
        ask(server, PROMPTS[0], extra_body={"steering": {"name": "rice", "strength": -1}})
