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

With a calculator (``config.calculator``, a small causal LM of its own,
trained only on single arithmetic lines), two more features: at the newline
that ends each solution line ``L`` holding an ``=`` at index ``q``, the
calculator, reading the line alone (``<s> L``), scores what was written after
the ``=`` and the newline::

    line_k = sum_{j > q} log p_calc((L + newline)_j | <s> (L + newline)_{<j})

and the head also reads ``[sum_k line_k, min(0, min_k line_k)]`` over the
lines ended so far. Lines of more than ``calc_max_line`` tokens, and lines
without ``=``, add nothing.

Why this ranks: the policy's sampled errors are mostly tokens it gave low
probability to (greedy decoding is right far more often than sampling), and
a planted error (a skipped operand, a wrong digit) is a token the policy would
not write. Normalising within the class keeps a style choice (a ``check``
line or the next step) from looking like an error while a wrong digit among
digits still does. What the policy's surprise cannot see is an error the
policy itself makes confidently: it knows no more arithmetic than the
policy. The calculator is there for those (a PRM that knows more than its
policy, as real PRMs are larger than the policies they judge).

It is a transformers model (registered as ``steerable_surprise_prm`` with
``AutoModelForTokenClassification`` when this module is imported, as
:class:`steerable.reward.prm.TokenClassifierPRM` does), so it loads and
saves like any token classifier. Incremental scoring works with a
``DynamicCache``: layers ``0..L-1`` hold the LM's keys and values, the last
layer holds, per position, the running state (the LM's log-probabilities
for the next token, the aggregates and, with a calculator, the tokens of the
unfinished line), so a continuation scores exactly as a full run does.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, PreTrainedModel
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_outputs import TokenClassifierOutput

from steerable.lm import cache as kv

FEATURES = ("sum_raw", "min_raw", "sum_class", "min_class")
CALC_FEATURES = ("sum_calc", "min_calc")
#: Longest line (tokens, without its newline) the calculator scores.
CALC_MAX_LINE = 24


def line_batch(lines: list[list[int]], eq: int, nl: int, bos: int, pad: int):
    """Right-padded ``<s> line newline`` ids ``[n, width]``, their mask, and a mask of the calculator's targets
    (every token after the line's first ``eq``, the newline included): how the calculator reads and is trained."""
    seqs = [[bos, *line, nl] for line in lines]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for i, (line, seq) in enumerate(zip(lines, seqs, strict=True)):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        target[i, line.index(eq) + 2 : len(seq)] = True  # seq[0] is <s>, so the '=' sits at index + 1
    return ids, mask, target


class SurprisePRMConfig(PreTrainedConfig):
    model_type = "steerable_surprise_prm"

    def __init__(
        self,
        policy: dict | None = None,
        token_classes: list[list[int]] | None = None,
        start_token_id: int = 4,
        calculator: dict | None = None,
        equals_token_id: int | None = None,
        calc_max_line: int = CALC_MAX_LINE,
        **kwargs,
    ):
        self.policy = dict(policy or {})
        self.token_classes = [list(c) for c in (token_classes or [])]
        self.start_token_id = start_token_id
        self.calculator = dict(calculator) if calculator else None
        self.equals_token_id = equals_token_id
        self.calc_max_line = calc_max_line
        if self.calculator and equals_token_id is None:
            raise ValueError("equals_token_id: a calculator needs the id of the '=' token")
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
        self.calc = (
            AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.calculator)) if config.calculator else None
        )
        self.n_features = len(FEATURES) + (len(CALC_FEATURES) if config.calculator else 0)
        self.score = torch.nn.Linear(self.n_features, config.num_labels)
        self.post_init()

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURES + (CALC_FEATURES if self.calc is not None else ())

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
        """``[batch, time, n_features]`` running features of the new tokens (and the state rows to cache)."""
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
        vocab, nf, k = logp.shape[-1], self.n_features, self.config.calc_max_line
        buf_width = k + 1 if self.calc is not None else 0  # the unfinished line's tokens (-1: none), its length
        prev = logp.new_zeros(b, vocab + nf + 1 + buf_width)
        if buf_width:
            prev[:, vocab + nf + 1 : -1] = -1
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
        was_started = prev[:, vocab + nf : vocab + nf + 1]
        started_before = was_started + torch.cumsum(is_start, 1) - is_start > 0
        real = (
            attention_mask[:, past:].bool()
            if attention_mask is not None
            else torch.ones_like(input_ids, dtype=torch.bool)
        )
        on = started_before & real
        raw, within = raw.masked_fill(~on, 0.0), within.masked_fill(~on, 0.0)
        agg = prev[:, vocab : vocab + nf]
        cols = [
            agg[:, 0:1] + raw.cumsum(1),
            torch.minimum(agg[:, 1:2], raw.cummin(1).values),
            agg[:, 2:3] + within.cumsum(1),
            torch.minimum(agg[:, 3:4], within.cummin(1).values),
        ]
        bufs = None
        if self.calc is not None:
            lines, bufs = self.calc_lines(input_ids, prev[:, vocab + nf + 1 :], real, on, keep=cache is not None)
            cols += [agg[:, 4:5] + lines.cumsum(1), torch.minimum(agg[:, 5:6], lines.cummin(1).values)]
        feats = torch.stack(cols, -1)
        started = (was_started + torch.cumsum(is_start, 1) > 0).float()
        if cache is not None:
            parts = [logp, feats, started[..., None]] + ([bufs.to(logp.device)] if bufs is not None else [])
            state = torch.cat(parts, -1)[:, None].to(out.logits.dtype)
            cache.update(state, state, self.state_layer)
        return feats

    def calc_lines(self, input_ids, prev_buf, real, on, keep: bool):
        """``([b, t] line scores, [b, t, k+1] line buffers or None)``: each solution line's calculator score at its
        newline, and (``keep``: for the cache) the unfinished line after every token.

        ``prev_buf`` is the unfinished line carried in from the cache (token ids, -1 for none, then its length;
        ``k + 1`` means too long to score). Pad tokens leave the buffer as it was.
        """
        k, nl, eq = self.config.calc_max_line, self.config.start_token_id, self.config.equals_token_id
        b, t = input_ids.shape
        ids, real_l, on_l = input_ids.tolist(), real.tolist(), on.tolist()
        carried = prev_buf.long().tolist()
        queue: list[tuple[int, int, list[int]]] = []
        states = []
        for r in range(b):
            n = carried[r][-1]
            line = carried[r][: min(n, k)]
            row_states = []
            for j in range(t):
                if real_l[r][j]:
                    x = ids[r][j]
                    if x == nl:
                        if on_l[r][j] and n <= k and eq in line:
                            queue.append((r, j, line))
                        line, n = [], 0
                    else:
                        if n < k:
                            line = [*line, x]
                        n = min(n + 1, k + 1)
                if keep:
                    row_states.append(line + [-1] * (k - len(line)) + [n])
            states.append(row_states)
        scores = torch.zeros(b, t, device=input_ids.device)
        if queue:
            line_scores = self.score_lines([q[2] for q in queue])
            rows = torch.tensor([q[0] for q in queue], device=input_ids.device)
            cols = torch.tensor([q[1] for q in queue], device=input_ids.device)
            scores[rows, cols] = line_scores.to(scores.device)
        return scores, torch.tensor(states, dtype=torch.float32) if keep else None

    def score_lines(self, lines: list[list[int]]) -> torch.Tensor:
        """The calculator's log-probability of what each line writes after its ``=`` (then the newline), given
        ``<s>`` and the line before it."""
        conf = self.config
        dev = next(self.calc.parameters()).device
        batch = line_batch(lines, conf.equals_token_id, conf.start_token_id, conf.bos_token_id, conf.pad_token_id or 0)
        ids, mask, target = (x.to(dev) for x in batch)
        logp = self.calc(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
        return tok_lp.masked_fill(~target[:, 1:], 0.0).sum(1)

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


def from_policy(
    policy,
    token_classes: list[list[int]],
    start_token_id: int,
    calculator=None,
    equals_token_id: int | None = None,
) -> SurprisePRMForTokenClassification:
    """A PRM holding a copy of ``policy``'s weights (and of ``calculator``'s, a causal LM trained on single
    arithmetic lines, if given), head at zero (every score 0.5 until fitted)."""
    conf = SurprisePRMConfig(
        policy=_portable(policy.config),
        token_classes=token_classes,
        start_token_id=start_token_id,
        calculator=_portable(calculator.config) if calculator is not None else None,
        equals_token_id=equals_token_id,
        id2label={0: "on_correct_path"},
        label2id={"on_correct_path": 0},
        pad_token_id=policy.config.pad_token_id,
        bos_token_id=policy.config.bos_token_id,
        eos_token_id=policy.config.eos_token_id,
    )
    model = SurprisePRMForTokenClassification(conf)
    model.lm.load_state_dict(policy.state_dict())
    if calculator is not None:
        model.calc.load_state_dict(calculator.state_dict())
    return model.eval()


def _portable(config) -> dict:
    """A sub-model's config as a dict, without the local path it was loaded from."""
    out = config.to_dict()
    out.pop("_name_or_path", None)
    return out


AutoConfig.register(SurprisePRMConfig.model_type, SurprisePRMConfig, exist_ok=True)
AutoModelForTokenClassification.register(SurprisePRMConfig, SurprisePRMForTokenClassification, exist_ok=True)
