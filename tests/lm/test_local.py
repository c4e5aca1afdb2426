import pytest
import torch

from conftest import FAMILIES, tiny_model
from steerable.errors import ConfigError, InputError
from steerable.lm.local import LocalGenerator, Sequences
from steerable.lm.types import SamplingParams, Usage

PROMPTS = ["Q: 1+2=\n", "R: how do I bake a cake?\n", "x"]


@pytest.fixture(scope="module")
def gen(char_tokenizer):
    return LocalGenerator(tiny_model("llama", char_tokenizer), char_tokenizer)


def recomputed_logits(model, ids):
    return model(input_ids=torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("family", FAMILIES)
def test_continued_forked_and_concatenated_rows_match_recomputation(family, char_tokenizer):
    model = tiny_model(family, char_tokenizer)
    g = LocalGenerator(model, char_tokenizer)
    seqs = g.start(PROMPTS)
    for i in range(3):  # steps of unequal length leave padding holes between rows
        g.step(seqs, SamplingParams(seed=i), stop=("e", " "), max_tokens=6)
    forked = seqs.select([2, 0, 0, 1])
    g.step(forked, SamplingParams(seed=5), max_tokens=4)
    both = Sequences.concat([seqs, forked])
    logits = g.logits(both)
    for r in range(len(both)):
        torch.testing.assert_close(logits[r], recomputed_logits(model, both.token_ids[r]), atol=1e-4, rtol=1e-4)


def test_a_batch_gives_what_each_prompt_gives_alone(gen):
    params = SamplingParams(temperature=0.0, max_new_tokens=10)
    batched = [c.text for c in gen.generate(PROMPTS, params)]
    alone = [gen.generate([p], params)[0].text for p in PROMPTS]
    assert batched == alone


def test_seed_makes_sampling_reproducible(gen):
    params = SamplingParams(temperature=1.0, max_new_tokens=12, n=3, seed=7)
    a = [c.text for c in gen.generate(PROMPTS, params)]
    assert a == [c.text for c in gen.generate(PROMPTS, params)]
    b = [c.text for c in gen.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, n=3, seed=8))]
    assert a != b
    assert len(a) == 9


def test_top_k_one_and_tiny_top_p_are_greedy(gen):
    greedy = [c.text for c in gen.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=8))]
    assert greedy == [c.text for c in gen.generate(PROMPTS, SamplingParams(top_k=1, max_new_tokens=8, seed=1))]
    assert greedy == [c.text for c in gen.generate(PROMPTS, SamplingParams(top_p=1e-6, max_new_tokens=8, seed=1))]


def test_logprobs_are_the_models_own(gen):
    c = gen.generate(["Q: 5"], SamplingParams(temperature=1.0, max_new_tokens=5, seed=3))[0]
    ids = gen.tokenizer("Q: 5")["input_ids"]
    for tok, lp in zip(c.token_ids, c.logprobs, strict=True):
        want = torch.log_softmax(recomputed_logits(gen.model, ids).detach(), -1)[tok]
        assert abs(float(want) - lp) < 1e-4
        ids.append(tok)


def test_stop_strings_end_generation_and_are_cut_from_text(gen):
    params = SamplingParams(temperature=1.0, max_new_tokens=40, n=8, seed=0)
    free = gen.generate(["Q: 1"], params)
    stopper = next(ch for ch in "etaoinsr" if any(ch in c.text for c in free))
    stopped = gen.generate(["Q: 1"], SamplingParams(temperature=1.0, max_new_tokens=40, n=8, seed=0, stop=(stopper,)))
    for f, s in zip(free, stopped, strict=True):
        if stopper in f.text:
            assert s.text == f.text[: f.text.index(stopper)]
            assert s.finish_reason == "stop"
        else:  # ended by EOS or length, as before
            assert (s.text, s.finish_reason) == (f.text, f.finish_reason)


def test_multi_character_stop_strings(gen):
    free = gen.generate(["Q: 1"], SamplingParams(temperature=1.0, max_new_tokens=30, seed=0))[0]
    stop = free.text[10:12]
    c = gen.generate(["Q: 1"], SamplingParams(temperature=1.0, max_new_tokens=30, seed=0, stop=(stop,)))[0]
    assert c.text == free.text[: free.text.index(stop)]


def test_eos_finishes_a_row_for_good(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    with torch.no_grad():
        model.lm_head.bias = None
        model.model.norm.weight.zero_()  # all logits zero ...
        model.lm_head.weight.zero_()
        model.lm_head.weight[char_tokenizer.eos_token_id] = 0.0
    g = LocalGenerator(model, char_tokenizer)
    # make EOS certain by a logits bias hook
    model.lm_head.register_forward_hook(lambda m, i, o: o.index_fill(-1, torch.tensor([2]), 100.0))
    seqs = g.start(["abc"])
    out = g.step(seqs, SamplingParams(temperature=1.0, seed=0), max_tokens=5)
    assert out.finish_reasons == ("eos",) and seqs.finished == [True]
    again = g.step(seqs, SamplingParams(temperature=1.0, seed=0), max_tokens=5)
    assert again.finish_reasons == (None,) and again.texts == ("",)
    comp = g.generate(["abc"], SamplingParams(max_new_tokens=5, seed=0))[0]
    assert comp.finish_reason == "stop" and comp.text == "" and comp.token_ids == ()


def test_usage_adds_up_and_n_samples_prefill_the_prompt_once(gen):
    before = gen.usage
    comps = gen.generate(PROMPTS, SamplingParams(max_new_tokens=6, n=4, seed=0, ignore_eos=True))
    total = sum((c.usage for c in comps), Usage())
    spent = gen.usage - before
    assert total.forward_tokens == spent.forward_tokens
    assert total.generated_tokens == spent.generated_tokens == 4 * 3 * 6
    prompt_tokens = sum(len(gen.tokenizer(p)["input_ids"]) for p in PROMPTS)
    assert total.prompt_tokens == prompt_tokens
    # each prompt once + every sampled token except each row's last (nothing reads its successor)
    assert total.forward_tokens == prompt_tokens + 4 * 3 * 5


def test_stepping_never_reruns_a_prefix(gen):
    seqs = gen.start(PROMPTS, n=2)
    before = gen.usage
    gen_tokens = 0
    for i in range(5):
        out = gen.step(seqs, SamplingParams(seed=i), stop=("\n",), max_tokens=4)
        gen_tokens += sum(len(t) for t in out.token_ids)
        seqs = seqs.select([0, 0, 2, 3, 4, 5])  # fork row 0 over row 1
    spent = gen.usage - before
    assert spent.forward_tokens <= gen_tokens + len(seqs)  # only the pending last prompt token of each row is extra


def test_select_leaves_the_original_batch_usable(gen):
    seqs = gen.start(PROMPTS)
    gen.step(seqs, SamplingParams(seed=0), max_tokens=3)
    snapshot = [list(t) for t in seqs.token_ids]
    child = seqs.fork(1, 3)
    gen.step(child, SamplingParams(seed=1), max_tokens=3)
    assert seqs.token_ids == snapshot
    logits = gen.logits(seqs)
    for r in range(3):
        torch.testing.assert_close(logits[r], recomputed_logits(gen.model, seqs.token_ids[r]), atol=1e-4, rtol=1e-4)


def test_append_feeds_fixed_text(gen):
    seqs = gen.start(["Q: 1+2=\n"])
    gen.step(seqs, SamplingParams(seed=0), max_tokens=3)
    gen.append(seqs, ["A: 3\n"])
    logits = gen.logits(seqs)
    assert gen.tokenizer.decode(seqs.token_ids[0]).endswith("A: 3\n")
    torch.testing.assert_close(logits[0], recomputed_logits(gen.model, seqs.token_ids[0]), atol=1e-4, rtol=1e-4)


def test_appending_to_some_rows_of_a_fresh_fork_refreshes_only_their_logits(gen):
    seqs = gen.start(["Q: 1+2=\n"], n=3)  # prefilled once, next-token logits shared by the forks
    gen.append(seqs, ["", "1+2=3\n", ""])
    logits = gen.logits(seqs)
    for r in range(3):
        torch.testing.assert_close(logits[r], recomputed_logits(gen.model, seqs.token_ids[r]), atol=1e-4, rtol=1e-4)
    out = gen.step(seqs, SamplingParams(temperature=0.0), max_tokens=2)
    assert out.texts[0] == out.texts[2] and len(out.token_ids[1]) > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=-0.1),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(max_new_tokens=0),
        dict(n=0),
        dict(stop=("",)),
        dict(top_k=-1),
    ],
)
def test_bad_sampling_params_raise_one_line_errors(kwargs):
    with pytest.raises(ConfigError) as e:
        SamplingParams(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_prompts_raise(gen):
    with pytest.raises(InputError):
        gen.generate([], SamplingParams())
    with pytest.raises(InputError):
        gen.generate([["not", "messages"]], SamplingParams())
    with pytest.raises(InputError):
        gen.generate(["x" * 300], SamplingParams())  # over the tiny model's 256-token context


def test_chat_template_is_applied_when_the_tokenizer_has_one(char_tokenizer):
    import copy

    tok = copy.deepcopy(char_tokenizer)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    g = LocalGenerator(tiny_model("llama", tok), tok)
    ids = g.encode("hi")
    assert tok.decode(ids) == "<user>hi\n<assistant>"
    assert tok.decode(g.encode([{"role": "user", "content": "hi"}])) == "<user>hi\n<assistant>"
    raw = LocalGenerator(g.model, tok, chat_template="never")
    assert tok.decode(raw.encode("hi"), skip_special_tokens=True) == "hi"
    with pytest.raises(InputError):
        LocalGenerator(g.model, char_tokenizer).encode([{"role": "user", "content": "hi"}])


def test_seeded_sampling_draws_from_the_filtered_distribution():
    from steerable.lm.sampling import sample as _sample

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    streams = torch.stack([torch.arange(4000) * 7919 + 3, torch.full((4000,), 5)], dim=1)
    chosen, _ = _sample(logits, SamplingParams(temperature=1.0), streams)
    share = torch.bincount(chosen, minlength=4) / 4000
    assert (share - torch.tensor([0.5, 0.3, 0.15, 0.05])).abs().max() < 0.03
    top2, _ = _sample(logits, SamplingParams(temperature=1.0, top_k=2), streams)
    assert set(top2.tolist()) == {0, 1} and abs((top2 == 0).float().mean() - 0.625) < 0.03
    again, _ = _sample(logits, SamplingParams(temperature=1.0), streams)
    assert torch.equal(chosen, again)


def test_step_on_chosen_rows_leaves_the_others_unchanged(gen):
    seqs = gen.start(PROMPTS)
    before = [list(t) for t in seqs.token_ids]
    out = gen.step(seqs, SamplingParams(seed=0), max_tokens=3, rows=[1])
    assert seqs.token_ids[0] == before[0] and seqs.token_ids[2] == before[2]
    assert len(seqs.token_ids[1]) == len(before[1]) + 3
    assert out.finish_reasons[0] is None and out.texts[2] == ""
    logits = gen.logits(seqs)
    for r in range(3):
        torch.testing.assert_close(logits[r], recomputed_logits(gen.model, seqs.token_ids[r]), atol=1e-4, rtol=1e-4)


def scratch_logprobs(model, ids):
    """log p(token j | tokens before it) for j >= 1, from one plain forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    return [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))], logp


@pytest.mark.parametrize("hold_last", [False, True])
def test_prefill_measures_prompt_logprobs_like_a_plain_forward_pass(gen, hold_last):
    ids = [gen.encode(p) for p in PROMPTS]
    seqs = Sequences([list(x) for x in ids], [len(x) for x in ids], list(range(len(ids))))
    scored = gen.prefill(seqs, hold_last=hold_last, logprobs=3)
    for x, s in zip(ids, scored, strict=True):
        want, logp = scratch_logprobs(gen.model, x)
        assert s.token_ids == x and s.logprobs[0] is None and s.top[0] == []
        assert s.logprobs[1:] == pytest.approx(want, abs=1e-4)
        for j in range(1, len(x)):  # the 3 most likely tokens at each position, best first
            best = torch.topk(logp[j - 1], 3)
            assert [t for t, _ in s.top[j]] == best.indices.tolist()
            assert [v for _, v in s.top[j]] == pytest.approx(best.values.tolist(), abs=1e-4)
    assert seqs.pending == ([x[-1:] for x in ids] if hold_last else [[], [], []])
    assert (seqs.next_logits is None) == hold_last
    # what follows is what a fresh batch would sample
    out = gen.step(seqs, SamplingParams(temperature=0), max_tokens=5)
    fresh = gen.start(PROMPTS)
    assert out.token_ids == gen.step(fresh, SamplingParams(temperature=0), max_tokens=5).token_ids


def test_prefill_logprobs_need_the_start_of_a_sequence(gen):
    seqs = gen.start(PROMPTS[:1])
    gen.step(seqs, SamplingParams(seed=0), max_tokens=2)
    with pytest.raises(InputError, match="start of a sequence"):
        gen.prefill(seqs, logprobs=1)


def test_step_returns_the_top_alternatives_of_each_sampled_token(gen):
    seqs = gen.start(PROMPTS[:2])
    out = gen.step(seqs, SamplingParams(seed=4), max_tokens=4, top=2)
    for r in range(2):
        assert len(out.top_logprobs[r]) == len(out.token_ids[r]) == 4
        _, logp = scratch_logprobs(gen.model, seqs.token_ids[r])
        for j, alts in enumerate(out.top_logprobs[r]):
            at = len(seqs.token_ids[r]) - 4 + j - 1  # the position that predicted new token j
            best = torch.topk(logp[at], 2)
            assert [t for t, _ in alts] == best.indices.tolist()
            assert [v for _, v in alts] == pytest.approx(best.values.tolist(), abs=1e-4)
    assert gen.step(seqs, SamplingParams(seed=4), max_tokens=1).top_logprobs == ()


def test_stop_token_lookup_is_bounded_and_matches_decoding(gen):
    tok = gen.tokenizer
    want = {i for i in tok.get_vocab().values() if i not in tok.all_special_ids and "e" in tok.decode([i])}
    assert set(gen._stop_tokens(("e",)).tolist()) == want
    for k in range(300):  # a server sees whatever stop strings its clients send
        gen._stop_tokens((f"stop-{k}",))
    assert len(gen._stop_token_cache) == 256
    assert set(gen._stop_tokens(("e",)).tolist()) == want
