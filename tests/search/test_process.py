import pytest

from conftest import tiny_model
from steerable.errors import ConfigError
from steerable.lm.local import LocalGenerator
from steerable.lm.types import SamplingParams
from steerable.search.lm_process import LMProcess


@pytest.fixture(scope="module")
def process(char_tokenizer):
    gen = LocalGenerator(tiny_model("llama", char_tokenizer), char_tokenizer)
    return LMProcess(gen, delimiter="e", params=SamplingParams(temperature=1.0), max_step_tokens=6, max_steps=3)


def test_steps_end_at_the_delimiter_or_the_cap_and_samples_at_max_steps(process):
    state = process.init("Q: 1+2=\n", 8, seed=0)
    ends = set()
    for _ in range(3):
        before = process.preview(state)
        live = [not t for t in process.is_terminal(state)]
        n0 = [len(state.seqs.generated(r)) for r in range(8)]
        process.propose(state)
        for r, (old, new) in enumerate(zip(before, process.preview(state), strict=True)):
            if not live[r]:
                continue
            added, n_new = new[len(old) :], len(state.seqs.generated(r)) - n0[r]
            assert new.startswith(old)
            if "e" in added:  # the step stops at its first delimiter, which it keeps
                assert added.endswith("e") and added.count("e") == 1
                ends.add("delimiter")
            elif state.seqs.finished[r]:
                ends.add("eos")
            else:  # no delimiter: the step ran to its token cap
                assert n_new == 6
                ends.add("cap")
    assert {"delimiter", "cap"} <= ends  # both ways of ending a step happened
    assert all(process.is_terminal(state))
    frozen = process.preview(state)
    process.propose(state)
    assert process.preview(state) == frozen  # terminal rows never grow


def test_select_and_concat_keep_rows_and_their_step_counts(process):
    state = process.init("x", 2, seed=1)
    process.propose(state)
    forked = process.select(state, [1, 1, 0])
    assert process.preview(forked) == [process.preview(state)[i] for i in (1, 1, 0)]
    both = process.concat([state, forked])
    assert process.size(both) == 5 and both.steps == [1] * 5
    process.propose(both)
    texts = process.preview(both)
    assert texts[2].startswith(process.preview(state)[1]) and texts[3].startswith(process.preview(state)[1])


def test_seeded_processes_repeat_themselves(process):
    a = process.init("x", 3, seed=5)
    b = process.init("x", 3, seed=5)
    process.propose(a)
    process.propose(b)
    assert process.preview(a) == process.preview(b)


def test_a_process_needs_a_way_to_end_a_step(process):
    with pytest.raises(ConfigError):
        LMProcess(process.generator, delimiter="")
