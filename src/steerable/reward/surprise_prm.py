"""A PRM that reads a policy's own next-token distribution: where the text leaves what the policy would write.

:class:`SurprisePRMForTokenClassification` holds a causal LM (a copy of the
policy) and a linear head over four running features of the solution so far.
For every solution token ``x_t`` (the tokens after the first ``start_token_id``,
the newline that ends the built-in prompt), with ``p`` the LM's distribution
given the tokens before it and ``C(x)`` the token class of ``x`` (digits,
operators, the rest; ``config.token_classes``)::

    raw_t   = log p(x_t)
    class_t = log p(x_t) - log sum_{v in C(x_t)} p(v)       # surprise within the token's class

and at token ``t`` the head reads ``[sum_{s<=t} raw_s, min_{s<=t} raw_s,
sum_{s<=t} class_s, min_{s<=t} class_s]`` (0 before the first solution
token): ``logit_t = w . features_t + b``, fitted by logistic regression on
checker-labelled policy steps (:mod:`steerable.tasks.builtin.train_prm`).

Why this ranks: the policy's sampled errors are mostly tokens it gave low
probability to (greedy decoding is right far more often than sampling), and
a planted error (a skipped operand, a wrong digit) is a token the policy would
not write. Normalising within the class keeps a style choice (a ``check``
line or the next step) from looking like an error while a wrong digit among
digits still does. What it cannot see is an error the policy itself makes
confidently: it knows no more arithmetic than the policy.

It is a transformers model (registered as ``steerable_surprise_prm`` with
``AutoModelForTokenClassification`` when this module is imported, as
:class:`steerable.reward.prm.TokenClassifierPRM` does), so it loads and
saves like any token classifier. Incremental scoring works with a
``DynamicCache``: layers ``0..L-1`` hold the LM's keys and values, the last
layer holds, per position, the running state (the LM's log-probabilities
for the next token and the four aggregates), so a continuation scores
exactly as a full run does.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, PreTrainedModel
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_outputs import TokenClassifierOutput

from steerable.lm import cache as kv

N_FEATURES = 4
FEATURES = ("sum_raw", "min_raw", "sum_class", "min_class")


class SurprisePRMConfig(PreTrainedConfig):
    model_type = "steerable_surprise_prm"

    def __init__(
        self,
        policy: dict | None = None,
        token_classes: list[list[int]] | None = None,
        start_token_id: int = 4,
        **kwargs,
    ):
        self.policy = dict(policy or {})
        self.token_classes = [list(c) for c in (token_classes or [])]
        self.start_token_id = start_token_id
        layers = int(self.policy.get("num_hidden_layers", 0)) + 1  # the LM's, then the running state
        kwargs.setdefault("num_labels", 1)
        kwargs.setdefault("vocab_size", self.policy.get("vocab_size", 0))
        if "max_position_embeddings" in self.policy:  # the context a server checks texts against
            kwargs.setdefault("max_position_embeddings", self.policy["max_position_embeddings"])
        super().__init__(**kwargs)
        self.num_hidden_layers = layers
        self.layer_types = ["full_attention"] * layers


class SurprisePRMForTokenClassification(PreTrainedModel):
    config_class = SurprisePRMConfig
    base_model_prefix = "prm"
    _no_split_modules: list[str] = []

    def __init__(self, config: SurprisePRMConfig):
        super().__init__(config)
        self.lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.policy))
        self.score = torch.nn.Linear(N_FEATURES, config.num_labels)
        self.post_init()

    def _init_weights(self, module) -> None:
        if module is self.score:
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)

    def token_class(self, vocab: int, device) -> torch.Tensor:
        """``[vocab]``: each token's class index (the last class is every token not listed)."""
        cls = torch.full((vocab,), len(self.config.token_classes), dtype=torch.long)
        for k, ids in enumerate(self.config.token_classes):
            cls[torch.tensor(ids, dtype=torch.long)] = k
        return cls.to(device)

    @property
    def state_layer(self) -> int:
        return self.config.num_hidden_layers - 1

    def features(self, input_ids, attention_mask=None, position_ids=None, cache=None):
        """``[batch, time, 4]`` running features of the new tokens (and the state rows to cache)."""
        b, t = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        lm_kwargs = {kv.CACHE_KWARG: cache} if cache is not None else {}
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=cache is not None,
            **lm_kwargs,
        )
        logp = out.logits.float().log_softmax(-1)  # [b, t, V]: the next token's distribution
        vocab = logp.shape[-1]
        prev = logp.new_zeros(b, vocab + N_FEATURES + 1)
        if past:
            state = cache.layers[self.state_layer].keys[:, 0, past - 1]  # left-padded: the last slot is the last token
            valid = attention_mask[:, past - 1 : past].bool() if attention_mask is not None else True
            prev = torch.where(valid, state.float(), prev)
        pred = torch.cat([prev[:, None, :vocab], logp[:, :-1]], 1)  # the distribution each new token was drawn from
        raw = pred.gather(-1, input_ids[..., None])[..., 0]
        token_class = self.token_class(vocab, logp.device)
        member = token_class[None, :] == torch.arange(int(token_class.max()) + 1, device=logp.device)[:, None]
        lse = torch.logsumexp(pred[..., None, :].masked_fill(~member, float("-inf")), -1)  # [b, t, classes]
        within = raw - lse.gather(-1, token_class[input_ids][..., None])[..., 0]
        is_start = (input_ids == self.config.start_token_id).long()
        started_before = prev[:, -1:] + torch.cumsum(is_start, 1) - is_start > 0
        on = started_before & (attention_mask[:, past:].bool() if attention_mask is not None else True)
        raw, within = raw.masked_fill(~on, 0.0), within.masked_fill(~on, 0.0)
        agg = prev[:, vocab:-1]
        feats = torch.stack(
            [
                agg[:, 0:1] + raw.cumsum(1),
                torch.minimum(agg[:, 1:2], raw.cummin(1).values),
                agg[:, 2:3] + within.cumsum(1),
                torch.minimum(agg[:, 3:4], within.cummin(1).values),
            ],
            -1,
        )
        started = (prev[:, -1:] + torch.cumsum(is_start, 1) > 0).float()
        if cache is not None:
            state = torch.cat([logp, feats, started[..., None]], -1)[:, None].to(out.logits.dtype)
            cache.update(state, state, self.state_layer)
        return feats

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        use_cache: bool | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        if use_cache and cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
        logits = self.score(self.features(input_ids, attention_mask, position_ids, cache))
        loss = None
        if labels is not None:
            seen = labels >= 0
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[..., 0][seen], labels[seen].float())
        return TokenClassifierOutput(loss=loss, logits=logits)  # the cache passed in holds the new state


def from_policy(policy, token_classes: list[list[int]], start_token_id: int) -> SurprisePRMForTokenClassification:
    """A PRM holding a copy of ``policy``'s weights, head at zero (every score 0.5 until fitted)."""
    conf = SurprisePRMConfig(
        policy=policy.config.to_dict(),
        token_classes=token_classes,
        start_token_id=start_token_id,
        id2label={0: "on_correct_path"},
        label2id={"on_correct_path": 0},
        pad_token_id=policy.config.pad_token_id,
        bos_token_id=policy.config.bos_token_id,
        eos_token_id=policy.config.eos_token_id,
    )
    model = SurprisePRMForTokenClassification(conf)
    model.lm.load_state_dict(policy.state_dict())
    return model.eval()


AutoConfig.register(SurprisePRMConfig.model_type, SurprisePRMConfig, exist_ok=True)
AutoModelForTokenClassification.register(SurprisePRMConfig, SurprisePRMForTokenClassification, exist_ok=True)
