import pytest
import torch

from conftest import tiny_model
from steerable.errors import ConfigError
from steerable.lm.types import Completion
from steerable.reward.hf import CausalLMPRM, SequenceClassifierORM, aggregate
from steerable.reward.judge import META, GenerativeRewardModel, LLMJudge, parse_score


def test_aggregations():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8 and aggregate(s, "min") == 0.5
    assert aggregate(s, "product") == pytest.approx(0.36) and aggregate(s, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ConfigError):
        aggregate(s, "max")


def test_causal_lm_prm_scores_one_probability_per_step(char_tokenizer):
    prm = CausalLMPRM(tiny_model("llama", char_tokenizer), char_tokenizer, step_tag="#", delimiter="\n")
    steps = prm.step_scores("Q: 1+2=\n", "1+2=3\nA: 3")
    assert len(steps) == 2 and all(0 < s < 1 for s in steps)
    assert prm.score(["Q: 1+2=\n"], ["1+2=3\nA: 3"]) == pytest.approx([steps[-1]])
    prm_min = CausalLMPRM(prm.model, char_tokenizer, step_tag="#", delimiter="\n", aggregation="min")
    assert prm_min.score(["Q: 1+2=\n"], ["1+2=3\nA: 3"]) == pytest.approx([min(steps)])
    batch = prm.score(["Q: 1+2=\n", "Q: 5*5=\n"], ["1+2=3\nA: 3", "5*5=25\n"])
    assert batch[0] == pytest.approx(steps[-1], abs=1e-5)  # padding changes nothing
    with pytest.raises(ConfigError):
        CausalLMPRM(prm.model, char_tokenizer, good_token="++")


def test_sequence_classifier_orm(char_tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(char_tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_labels=1,
        pad_token_id=0,
    )
    orm = SequenceClassifierORM(LlamaForSequenceClassification(cfg), char_tokenizer)
    together = orm.score(["a", "bbb"], ["x", "yyyy"])
    assert together == pytest.approx([orm.score(["a"], ["x"])[0], orm.score(["bbb"], ["yyyy"])[0]], abs=1e-5)
    assert all(0 < s < 1 for s in together)


class Canned:
    """A generator that answers with given texts, in turn."""

    def __init__(self, texts):
        self.texts, self.asked = list(texts), []

    def generate(self, prompts, params):
        self.asked += list(prompts)
        out = []
        for i, _ in enumerate(prompts):
            for _ in range(params.n):
                out.append(Completion(i, self.texts.pop(0), (), (), "stop"))
        return out


def test_parse_score():
    assert parse_score("looks fine.\nScore: 10", 10) == 1.0
    assert parse_score("Score: 1", 10) == 0.0
    assert parse_score("Score: 3 then score = 6", 11) == 0.5
    assert parse_score("Score: 12", 10) is None and parse_score("no score", 10) is None


def test_genrm_votes_and_unparseable_critiques_do_not_vote():
    grm = GenerativeRewardModel(Canned(["Score: 10", "bad", "Score: 4", "x", "y", "z"]), k=3)
    assert grm.score(["q1", "q2"], ["a1", "a2"]) == pytest.approx([(1.0 + 1 / 3) / 2, 0.5])
    assert "a1" in grm.generator.asked[0]


def test_genrm_meta_scorer_keeps_the_best_critiques():
    meta = GenerativeRewardModel(Canned(["Score: 2", "Score: 9", "Score: 5"]), k=1, template=META)
    grm = GenerativeRewardModel(Canned(["Score: 1", "Score: 10", "Score: 7"]), k=3, meta=meta, keep=2)
    # critique quality 2, 9, 5 -> keep critiques 2 and 3 (scores 10 and 7)
    assert grm.score(["q"], ["a"]) == pytest.approx([(1.0 + 6 / 9) / 2])
    assert "Score: 10" in meta.generator.asked[1]


def test_llm_judge_is_one_greedy_critique():
    judge = LLMJudge(Canned(["fine. Score: 8"]))
    assert judge.score(["q"], ["a"]) == pytest.approx([7 / 9])
    with pytest.raises(ConfigError):
        GenerativeRewardModel(Canned([]), k=2, meta=judge, keep=3)
