import pytest
import torch

from conftest import FAMILIES, tiny_model
from steerable.errors import InputError
from steerable.lm.prefix_cache import PrefixCache


def _reference(model, row):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([row])).logits[0, :, :3].float()


def _rows(tokenizer):
    base = tokenizer("Q: 12+34*2=")["input_ids"]
    step1 = tokenizer("12+34=46\n", add_special_tokens=False)["input_ids"]
    step2 = tokenizer("46*2=92\n", add_special_tokens=False)["input_ids"]
    other = tokenizer("Q: 9-3=", add_special_tokens=False)["input_ids"]
    return base, step1, step2, other


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_rows_equal_a_full_pass(family, char_tokenizer):
    model = tiny_model(family, char_tokenizer)
    cache = PrefixCache(model, lambda logits: logits[..., :3])
    base, s1, s2, other = _rows(char_tokenizer)
    first = [base, base + s1, other]
    # then: children of a cached row, a row sharing only the prompt, an exact repeat, a fresh row
    second = [base + s1 + s2, base + s1 + s2[:3], base + s2, base + s1, other + s1, s2]
    for batch in (first, second):
        for row, got in zip(batch, cache(batch), strict=True):
            assert got.shape == (len(row), 3)
            torch.testing.assert_close(got, _reference(model, row), atol=1e-4, rtol=1e-4)
    assert cache.reused_tokens > 0
    # of the second batch only the new tokens ran: the two children of base+s1, base+s2 after base,
    # other+s1 after other, and all of s2 (it shares no cached prefix)
    assert cache.forward_tokens == sum(map(len, first)) + len(s2) + 3 + len(s2) + len(s1) + len(s2)


def test_eviction_keeps_results_exact(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    tiny = PrefixCache(model, lambda logits: logits[..., :3], max_mb=0.02)
    base, s1, s2, _ = _rows(char_tokenizer)
    rows = [base + s1[:k] for k in range(1, len(s1) + 1)] + [base + s1 + s2]
    for row in rows:
        torch.testing.assert_close(tiny([row])[0], _reference(model, row), atol=1e-4, rtol=1e-4)
    assert tiny._bytes <= tiny.max_bytes
    off = PrefixCache(model, lambda logits: logits[..., :3], max_mb=0)
    off([base]), off([base + s1])
    assert off.reused_tokens == 0


def test_empty_row_is_a_clear_error(char_tokenizer):
    cache = PrefixCache(tiny_model("llama", char_tokenizer), lambda logits: logits[..., :3])
    with pytest.raises(InputError, match="no tokens"):
        cache([[]])
