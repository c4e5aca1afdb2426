import json

import pytest
import torch

from steerable.agents.process import episode
from steerable.agents.registry import make_value
from steerable.agents.value import ValueTrainConfig, features, train_value
from steerable.errors import InputError
from steerable.lm.loading import model_fingerprint
from steerable.lm.local import LocalGenerator
from steerable.tasks.agent.data import split_tasks


@pytest.fixture(scope="module")
def fitted(tiny_dir, tmp_path_factory):
    gen = LocalGenerator.from_pretrained(tiny_dir, device="cpu", chat_template="never")
    out = tmp_path_factory.mktemp("value")
    cfg = ValueTrainConfig(out=str(out), model=tiny_dir, envs=("lookup",), episodes=8, steps=50, max_turns=2)
    return gen, out, train_value(cfg, gen, model_fingerprint(tiny_dir))


def test_the_head_is_fitted_on_every_turn_state_and_recorded(fitted):
    gen, out, record = fitted
    assert 16 <= record["states"] <= 24  # the prompt and one or two turns of each of 8 episodes
    saved = json.loads((out / "value.json").read_text())
    assert saved["states"] == record["states"] and 0.0 <= saved["solved_share"] <= 1.0


def test_scores_are_the_logistic_of_the_hidden_state_and_the_model_is_checked(fitted, tiny_dir, tmp_path):
    gen, out, _ = fitted
    head = make_value(f"head:{out}", gen, tiny_dir)
    cond = episode(split_tasks("lookup", "easy", 1)[0])
    texts = ["get k1\n= k2\n", ""]
    got = head.score([cond, cond], texts)
    from safetensors.torch import load_file

    t = load_file(str(out / "value_head.safetensors"))
    h = features(gen.model, gen.tokenizer, [cond.prompt + x for x in texts])
    assert got == pytest.approx(torch.sigmoid(h @ t["weight"] + t["bias"]).tolist(), abs=1e-6)
    assert head.calls == 2 and head.forward_tokens > 0
    with pytest.raises(InputError, match="another model"):
        make_value(f"head:{out}", gen, "builtin")
    with pytest.raises(InputError, match="train-value"):
        make_value(f"head:{tmp_path}", gen, tiny_dir)
