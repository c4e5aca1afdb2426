"""The surprise PRM: features as defined (by hand, tiny random policy), cache-exact, a transformers model."""

import math

import pytest
import torch

from steerable.reward.surprise_prm import SurprisePRMForTokenClassification, from_policy

START, CLASSES = 4, [[21, 22, 23], [15, 16]]


def tiny_llama(layers: int):
    """A random causal LM over 40 tokens (0 pads, 1 begins)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
    )
    return LlamaForCausalLM(conf).eval()


def assert_cached_scoring_equals_a_full_run(model, rows: list[list[int]]) -> None:
    """Score ``rows[0]``, then every row reusing its cache (left-padded rows): each equals the row scored alone."""
    from steerable.lm.prefix_cache import PrefixCache

    cache = PrefixCache(model, lambda logits: logits[..., :1], 64, 64, 0)
    cache(rows[:1])
    got = cache(rows)
    assert cache.reused_tokens > 0
    for row, out in zip(rows, got, strict=True):
        full = model(input_ids=torch.tensor([row])).logits[0, :, :1]
        assert torch.allclose(out, full, atol=1e-5)


@pytest.fixture(scope="module")
def prm():
    torch.manual_seed(0)
    model = from_policy(tiny_llama(2), CLASSES, START)
    with torch.no_grad():
        model.score.weight.copy_(torch.tensor([[0.3, -0.2, 0.5, 0.7]]))
        model.score.bias.fill_(1.5)
    return model


def by_hand(prm, ids: list[int]) -> list[list[float]]:
    """The four running features at every token, from the LM's log-probabilities, in plain Python."""
    with torch.no_grad():
        logp = prm.lm(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1).tolist()
    cls = {t: k for k, c in enumerate(CLASSES) for t in c}
    out, raws, withins, started = [], [], [], False
    for t, x in enumerate(ids):
        if started:
            p = logp[t - 1]
            same = [v for v in range(len(p)) if cls.get(v, -1) == cls.get(x, -1)]
            raws.append(p[x])
            withins.append(p[x] - math.log(sum(math.exp(p[v]) for v in same)))
        started = started or x == START
        out.append([sum(raws), min([0.0, *raws]), sum(withins), min([0.0, *withins])])
    return out


def test_features_are_the_running_sums_and_minima_of_the_solution_tokens_surprise(prm):
    ids = [1, 30, 21, 16, 22, 4, 21, 15, 23, 4, 30, 22]  # prompt tokens up to the first START are not counted
    got = prm.features(torch.tensor([ids]))[0]
    want = torch.tensor(by_hand(prm, ids))
    assert torch.allclose(got, want, atol=1e-5)
    assert got[:6].abs().max() == 0 and got[6:, 0].lt(0).all()
    logits = prm(input_ids=torch.tensor([ids])).logits[0, :, 0]
    assert torch.allclose(logits, want @ torch.tensor([0.3, -0.2, 0.5, 0.7]) + 1.5, atol=1e-5)


def test_right_padding_does_not_change_a_row(prm):
    a, b = [1, 30, 4, 21, 16, 22, 4], [1, 30, 4, 21]
    ids = torch.tensor([a, b + [0] * 3])
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    both = prm(input_ids=ids, attention_mask=mask).logits[..., 0]
    alone = prm(input_ids=torch.tensor([b])).logits[0, :, 0]
    assert torch.allclose(both[1, :4], alone, atol=1e-5)


def test_prefix_cached_scoring_equals_a_full_run(prm):
    """What search does: score a partial, then its continuations, reusing the partial's cache (left-padded rows)."""
    rows = [[1, 30, 4, 21, 16], [1, 30, 4, 21, 16, 22, 4, 23], [1, 31, 22, 4, 15], [1, 30, 4, 21, 16, 23, 15, 4, 22]]
    assert_cached_scoring_equals_a_full_run(prm, rows)


def test_saves_and_loads_through_the_transformers_auto_class(prm, tmp_path):
    from transformers import AutoModelForTokenClassification

    prm.save_pretrained(tmp_path)
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, SurprisePRMForTokenClassification)
    ids = torch.tensor([[1, 30, 4, 21, 16, 22, 4]])
    assert torch.allclose(loaded(input_ids=ids).logits, prm(input_ids=ids).logits, atol=1e-6)


def test_an_unfitted_head_scores_one_half():
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(vocab_size=40, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    model = from_policy(LlamaForCausalLM(conf), CLASSES, START)
    assert model(input_ids=torch.tensor([[1, 4, 21, 22]])).logits.abs().max() == 0


# ---------------------------------------------------------------- with a calculator

EQ = 34


@pytest.fixture(scope="module")
def calc_prm():
    torch.manual_seed(1)
    model = from_policy(tiny_llama(2), CLASSES, START, calculator=tiny_llama(1), equals_token_id=EQ)
    with torch.no_grad():
        model.score.weight.copy_(torch.tensor([[0.3, -0.2, 0.5, 0.7, 0.4, 0.9]]))
        model.score.bias.fill_(1.5)
    return model


def calc_by_hand(prm, line: list[int]) -> float:
    """The calculator's log-probability of what the line writes after '=', then the newline, one token at a time."""
    q = line.index(EQ)
    seq = [1, *line[: q + 1]]
    total = 0.0
    for x in [*line[q + 1 :], START]:
        with torch.no_grad():
            logp = prm.calc(input_ids=torch.tensor([seq])).logits[0, -1].log_softmax(-1)
        total += float(logp[x])
        seq.append(x)
    return total


def test_calculator_features_score_each_finished_solution_line_with_an_equals_sign(calc_prm):
    # prompt line (ends at the first START: not scored), a line with '=', a line without, a line with '=' unfinished
    ids = [1, 30, EQ, 21, 4, 21, 16, 22, EQ, 23, 30, 4, 38, 21, 4, 22, 16, EQ, 23]
    got = calc_prm.features(torch.tensor([ids]))[0]
    line = calc_by_hand(calc_prm, [21, 16, 22, EQ, 23, 30])
    want_sum = [0.0] * 11 + [line] * 8
    want_min = [min(0.0, v) for v in want_sum]
    assert torch.allclose(got[:, 4], torch.tensor(want_sum), atol=1e-5)
    assert torch.allclose(got[:, 5], torch.tensor(want_min), atol=1e-5)
    assert torch.allclose(got[:, :4], torch.tensor(by_hand(calc_prm, ids)), atol=1e-5)
    # a second finished line adds its own score, and the minimum takes the lower one
    more = ids + [4]
    second = calc_by_hand(calc_prm, [22, 16, EQ, 23])
    last = calc_prm.features(torch.tensor([more]))[0, -1]
    assert last[4].item() == pytest.approx(line + second, abs=1e-5)
    assert last[5].item() == pytest.approx(min(line, second, 0.0), abs=1e-5)


def test_a_line_longer_than_the_calculators_window_adds_nothing(calc_prm):
    k = calc_prm.config.calc_max_line
    ids = [1, 4] + [21] * k + [EQ, 22, 4]  # k + 2 tokens before the newline
    assert calc_prm.features(torch.tensor([ids]))[0, -1, 4:].abs().max() == 0


def test_calculator_features_survive_padding_and_cached_continuations_split_inside_a_line(calc_prm):
    rows = [
        [1, 30, 4, 21, 16],  # cut inside a line: the cache must carry the unfinished line
        [1, 30, 4, 21, 16, 22, EQ, 23, 4, 22],
        [1, 30, 4, 21, 16, 22, EQ, 23, 4, 22, 15, 21, EQ, 24, 4],
        [1, 31, 22, 4, 15, EQ, 21, 4],
    ]
    assert_cached_scoring_equals_a_full_run(calc_prm, rows)
    a, b = rows[2], rows[3]
    ids = torch.tensor([a, b + [0] * (len(a) - len(b))])
    mask = torch.tensor([[1] * len(a), [1] * len(b) + [0] * (len(a) - len(b))])
    both = calc_prm(input_ids=ids, attention_mask=mask).logits[..., 0]
    assert torch.allclose(both[1, : len(b)], calc_prm(input_ids=torch.tensor([b])).logits[0, :, 0], atol=1e-5)


def test_a_prm_with_a_calculator_saves_and_loads_through_the_auto_class(calc_prm, tmp_path):
    from transformers import AutoModelForTokenClassification

    calc_prm.save_pretrained(tmp_path)
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert loaded.calc is not None and loaded.feature_names[-2:] == ("sum_calc", "min_calc")
    assert "_name_or_path" not in loaded.config.calculator
    ids = torch.tensor([[1, 30, 4, 21, 16, 22, EQ, 23, 4]])
    assert torch.allclose(loaded(input_ids=ids).logits, calc_prm(input_ids=ids).logits, atol=1e-6)
