"""The OpenAI-compatible server, driven over real HTTP by the official ``openai`` client and httpx."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from steerable.lm.types import SamplingParams  # noqa: E402

PROMPT = "Q: 37+48-19=\n"


def test_chat_and_completion_equal_local_greedy(client, local):
    want = local.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=60))[0]
    chat = client.chat.completions.create(
        model="builtin", messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=60
    )
    assert chat.choices[0].message.content == want.text
    assert chat.usage.completion_tokens == want.usage.generated_tokens  # EOS counts: the model sampled it
    assert chat.model_extra["steerable"]["forward_tokens"] == want.usage.forward_tokens
    assert chat.usage.prompt_tokens == len(local.encode(PROMPT))
    comp = client.completions.create(model="builtin", prompt=PROMPT, temperature=0, max_tokens=60)
    assert comp.choices[0].text == want.text
    assert comp.choices[0].finish_reason == "stop"
    models = client.models.list()
    assert [m.id for m in models.data] == ["builtin", "noise"]  # the model, then each artifact as a model


def test_streaming_is_token_by_token_and_equals_the_whole(client):
    kw = dict(model="builtin", messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=60)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == whole
    assert len(texts) > 10  # one chunk per token or so, not one buffered blob
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 10
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]


def test_stop_strings_are_cut_and_never_streamed(client):
    kw = dict(model="builtin", prompt=PROMPT, temperature=0, max_tokens=80, stop=["check"])
    whole = client.completions.create(**kw)
    assert "check" not in whole.choices[0].text and whole.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw))
    assert streamed == whole.choices[0].text


def test_seeded_samples_do_not_depend_on_batch_mates(client):
    kw = dict(model="builtin", prompt=PROMPT, temperature=1.0, max_tokens=40, n=3, seed=11)
    alone = [c.text for c in client.completions.create(**kw).choices]
    assert len(set(alone)) > 1  # three different samples

    def other(i):
        return client.completions.create(model="builtin", prompt=f"Q: {i}+{i}=\n", temperature=1.0, max_tokens=40)

    with ThreadPoolExecutor(8) as pool:
        noise = [pool.submit(other, i) for i in range(6)]
        again = pool.submit(lambda: [c.text for c in client.completions.create(**kw).choices])
        [f.result() for f in noise]
        assert again.result() == alone


def test_concurrent_requests_decode_together(server, client):
    widths = []
    previous = server.engine.on_step

    def spy(rows, depth):
        widths.append(rows)
        previous(rows, depth)

    server.engine.on_step = spy
    try:
        with ThreadPoolExecutor(8) as pool:
            futs = [
                pool.submit(
                    client.completions.create, model="builtin", prompt=f"Q: {i}+7=\n", temperature=0, max_tokens=30
                )
                for i in range(8)
            ]
            outs = [f.result() for f in futs]
    finally:
        server.engine.on_step = previous
    assert all(o.choices[0].text for o in outs)
    assert max(widths) >= 4  # rows of different requests decoded in one step


def test_steering_per_request_matches_local_steering(client, local, artifact):
    from steerable.steer.artifact import load_steering, steering_context

    plain = client.completions.create(model="builtin", prompt=PROMPT, temperature=0, max_tokens=30).choices[0].text
    steered = client.completions.create(
        model="builtin", prompt=PROMPT, temperature=0, max_tokens=30, extra_body={"steering": "noise"}
    )
    art = load_steering(artifact, local.model, local.tokenizer)
    with steering_context(art, local.model):
        want = local.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=30))[0].text
    assert steered.choices[0].text == want != plain
    half = client.completions.create(
        model="builtin",
        prompt=PROMPT,
        temperature=0,
        max_tokens=30,
        extra_body={"steering": {"name": "noise", "strength": 0.0}},
    )
    assert half.choices[0].text == plain  # strength 0 is no steering
    by_name = client.completions.create(model="noise", prompt=PROMPT, temperature=0, max_tokens=30)
    assert by_name.choices[0].text == want  # an artifact's name as the model: steered by it, as vLLM serves LoRAs
    with pytest.raises(openai.BadRequestError, match="give one"):
        client.completions.create(model="noise", prompt=PROMPT, max_tokens=3, extra_body={"steering": "noise"})


def test_scaling_per_request(client):
    out = client.completions.create(
        model="builtin",
        prompt=PROMPT,
        temperature=0.8,
        max_tokens=120,
        seed=3,
        extra_body={"scaling": {"method": "pf", "budget": 4, "scorer": "prm"}},
    )
    meta = out.model_extra["steerable"]
    assert meta["method"] == "pf" and meta["budget"] == 4 and len(meta["candidates"]) == 4
    assert out.choices[0].text in [c["text"] for c in meta["candidates"]]
    assert out.usage.completion_tokens == meta["cost"]["generated_tokens"] > 0
    sc = client.chat.completions.create(
        model="builtin",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=120,
        extra_body={"scaling": {"method": "sc", "budget": 3}},
    )
    assert sc.model_extra["steerable"]["answer"] == "66"


def test_score_route(server):
    from steerable.reward.prm import TokenClassifierPRM

    partials = ["37+48=85\n", "37+48=85\n85-19=66\nA: 66", "37+48=12\n"]
    r = httpx.post(server.url + "/v1/score", json={"prompt": PROMPT, "partials": partials})
    assert r.status_code == 200
    want = TokenClassifierPRM.from_pretrained("builtin", device="cpu").score([PROMPT] * 3, partials)
    assert r.json()["scores"] == pytest.approx(want, abs=1e-5)
    assert r.json()["usage"]["scorer_tokens"] > 0
    bad = httpx.post(server.url + "/v1/score", json={"prompt": PROMPT, "partials": "x"})
    assert bad.status_code == 400 and "partials" in bad.json()["error"]["message"]


def test_continue_final_message(server, local):
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "37+48=85\n"}],
            "continue_final_message": True,
            "add_generation_prompt": False,
            "temperature": 0,
            "max_tokens": 40,
        },
    )
    assert r.status_code == 200, r.text
    want = local.generate([PROMPT + "37+48=85\n"], SamplingParams(temperature=0, max_new_tokens=40))[0].text
    assert r.json()["choices"][0]["message"]["content"] == want


@pytest.mark.parametrize(
    "body,status,needle",
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "gpt-9", "prompt": "x"}).encode(), 404, "not served"),
        (json.dumps({"prompt": PROMPT, "n": 99}).encode(), 400, "n must be"),
        (json.dumps({"prompt": PROMPT, "max_tokens": 10_000}).encode(), 400, "max_tokens"),
        (json.dumps({"prompt": PROMPT, "temperature": "hot"}).encode(), 400, "temperature"),
        (json.dumps({"prompt": PROMPT, "steering": "nope"}).encode(), 400, "unknown steering"),
        (json.dumps({"prompt": PROMPT, "scaling": {"method": "magic"}}).encode(), 400, "unknown method"),
        (json.dumps({"prompt": PROMPT, "scaling": {"method": "pf", "options": {"warp": 9}}}).encode(), 400, "option"),
        (json.dumps({"prompt": "1" * 600}).encode(), 400, "context"),
        (json.dumps({"prompt": []}).encode(), 400, "prompt"),
    ],
)
def test_bad_input_is_a_clear_4xx(server, body, status, needle):
    r = httpx.post(server.url + "/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    ok = httpx.post(server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 3})
    assert ok.status_code == 200  # the worker lives on


def test_health_and_metrics(server, client):
    client.completions.create(model="builtin", prompt=PROMPT, max_tokens=5)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    text = httpx.get(server.url + "/metrics").text
    assert 'steerable_requests_total{route="/v1/completions",status="200"}' in text
    assert "steerable_request_seconds_bucket" in text and "steerable_queue_depth" in text
    assert 'steerable_tokens_total{kind="completion"}' in text


def test_api_key_and_body_limit(serve_app):
    from steerable.serve import build

    engine, app = build("builtin", device="cpu", api_key="sekrit", max_body_bytes=1000)
    s = serve_app(app)
    try:
        body = {"prompt": PROMPT, "max_tokens": 3}
        assert httpx.post(s.url + "/v1/completions", json=body).status_code == 401
        bad = httpx.post(s.url + "/v1/completions", json=body, headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and "API key" in bad.json()["error"]["message"]
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit", max_retries=0)
        assert good.completions.create(model="builtin", **body).choices[0].text
        big = httpx.post(
            s.url + "/v1/completions", json={"prompt": "x" * 5000}, headers={"Authorization": "Bearer sekrit"}
        )
        assert big.status_code == 413
        assert httpx.get(s.url + "/health").status_code == 200  # health needs no key
    finally:
        s.close()


def test_shutdown_finishes_in_flight_requests(serve_app):
    from steerable.serve import build

    engine, app = build("builtin", device="cpu")
    s = serve_app(app)
    out = {}

    def long_request():
        body = {"prompt": PROMPT, "max_tokens": 150, "temperature": 0.0, "ignore_eos": True}
        out["r"] = httpx.post(s.url + "/v1/completions", json=body, timeout=60)

    import threading

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.time() + 10
    while engine.running_rows == 0 and time.time() < deadline:  # the request is decoding
        time.sleep(0.005)
    assert engine.running_rows > 0
    s.close()  # SIGTERM-like: uvicorn stops accepting, waits for the open request, then the engine drains
    t.join(30)
    assert out["r"].status_code == 200
    assert out["r"].json()["usage"]["completion_tokens"] == 150


def test_a_controller_steers_per_request_like_locally(serve_app, tmp_path, local):
    from steerable.serve import build
    from steerable.steer.controller import ControllerConfig, train_controller
    from steerable.tasks.builtin.contrast import contrast_set

    harmful, benign = contrast_set("jailbreak")
    v = torch.randn(local.model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    ctl = train_controller(local.model, local.tokenizer, harmful[:16], benign[:16], v, ControllerConfig(epochs=1))
    path = ctl.save(tmp_path / "ctl")
    engine, app = build("builtin", [f"ctl={path}"], device="cpu")
    s = serve_app(app)
    try:
        prompts = [harmful[0], PROMPT]
        body = {"prompt": prompts, "temperature": 0, "max_tokens": 30, "steering": {"name": "ctl", "strength": 8.0}}
        got = [c["text"] for c in httpx.post(s.url + "/v1/completions", json=body, timeout=60).json()["choices"]]
    finally:
        s.close()
    with ctl.steering(local.model, strength=8.0):
        want = [c.text for c in local.generate(prompts, SamplingParams(temperature=0, max_new_tokens=30))]
    assert got == want


def test_groups_end_with_their_requests_so_strengths_sent_do_not_pile_up(server):
    """A group (and a controller's per-prompt table in it) per strength a client sends lives only while it has rows."""
    for strength in (0.5, 1.0, 1.5):
        body = {"prompt": PROMPT, "max_tokens": 3, "steering": {"name": "noise", "strength": strength}}
        assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code == 200
    for _ in range(100):  # the worker prunes after the step that finished the last request
        if not server.engine._groups:
            break
        time.sleep(0.01)
    assert server.engine._groups == {}
