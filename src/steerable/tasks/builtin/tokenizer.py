"""The built-in world's character tokenizer, built with ``tokenizers``.

One token per printable ASCII character plus newline; ``<s>`` is prepended to
every encoded text, ``</s>`` ends a reply, ``<pad>`` pads. A BPE model with no
merges is exactly a character model, and keeps the tokenizer a standard
``tokenizer.json`` that ``AutoTokenizer`` loads.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(CHARS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )
    return fast
