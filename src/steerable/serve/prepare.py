"""From a validated body to what the engine runs: token ids, sampling parameters, steering, and the
checks that depend on the server (``--max-n``, ``--max-tokens``, ``--max-request-tokens``, the context,
the vocabulary, the loaded artifacts)."""

from __future__ import annotations

from dataclasses import dataclass

from steerable.lm.types import SamplingParams
from steerable.serve.openai import APIError
from steerable.serve.schemas import GREEDY_BELOW, ChatCompletionRequest, Sampling


@dataclass
class Prepared:
    """A generation request after the server's checks: token ids, sampling, steering and what to send back."""

    prompts: list[list[int]]
    texts: list[str]  # each prompt as text (echo)
    params: SamplingParams
    steering: tuple[str | None, float | None]
    score_only: bool  # max_tokens 0 (echo)


class Preparer:
    """The server-dependent checks and encodings, for one tokenizer, model context and set of artifacts."""

    def __init__(self, tokenizer, config, steering: dict, context: int | None):
        self.tok, self.config, self.steering, self.context = tokenizer, config, steering, context
        self.vocab = len(tokenizer)

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.config.model_name and name not in self.steering:
            served = ", ".join([self.config.model_name, *sorted(self.steering)])
            raise APIError(404, f"model {name!r} is not served here: use one of {served}", "model", "model_not_found")

    def model_steering(self, body):
        """A request for a model named like a steering artifact is steered by it (at the artifact's strength).

        So a client that can only choose a model name (lm-eval, most OpenAI
        clients) can ask for steering, as vLLM serves LoRA adapters by name.
        """
        self.check_model(body.model)
        if body.model is None or body.model == self.config.model_name:
            return body
        if body.steering is not None:
            raise APIError(
                400, f"model {body.model!r} is a steering artifact and steering is given too: give one", "steering"
            )
        return body.model_copy(update={"steering": body.model})

    def completion_prompts(self, prompt) -> tuple[list[str], list[list[int]]]:
        if isinstance(prompt, str) or prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        texts, out = [], []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                ids = self.tok(p)["input_ids"]
                texts.append(p)
            else:
                bad = next((t for t in p if t >= self.vocab), None)
                if bad is not None:
                    raise APIError(
                        400, f"prompt[{i}]: token id {bad} is not in the vocabulary of {self.vocab}", "prompt"
                    )
                ids = list(p)
                texts.append(self.tok.decode(ids))
            if not ids:
                raise APIError(400, f"prompt[{i}] encodes to no tokens: send a non-empty prompt", "prompt")
            out.append(ids)
        return texts, out

    def chat_prompt(self, body: ChatCompletionRequest) -> list[int]:
        msgs = []
        for m in body.messages:
            c = m.content
            if isinstance(c, list):
                c = "".join(part.text for part in c)
            msgs.append({"role": m.role, "content": c or ""})
        cont = body.continue_final_message
        add = body.add_generation_prompt if body.add_generation_prompt is not None else not cont
        if cont and add:
            raise APIError(400, "continue_final_message and add_generation_prompt cannot both be true", "messages")
        if cont and msgs[-1]["role"] != "assistant":
            raise APIError(400, "continue_final_message needs the last message to be the assistant's", "messages")
        if getattr(self.tok, "chat_template", None) is None:  # the built-in world's raw-prompt convention
            ids = self.tok("".join(m["content"] for m in msgs))["input_ids"]
        else:
            try:
                text = self.tok.apply_chat_template(
                    msgs, add_generation_prompt=add, continue_final_message=cont, tokenize=False
                )
            except Exception as e:  # a template that rejects these messages (roles out of order, ...)
                raise APIError(400, f"the chat template rejected the messages: {e}", "messages") from None
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise APIError(400, "the messages encode to no tokens: send some content", "messages")
        return ids

    def prepare(self, body: Sampling, prompts: list[list[int]], texts: list[str], default_max: int) -> Prepared:
        cfg = self.config
        if body.n > cfg.max_n:
            raise APIError(400, f"n must be <= {cfg.max_n}, this server's --max-n (got {body.n})", "n")
        if body.n * len(prompts) > cfg.max_n:
            raise APIError(400, f"{body.n} samples of {len(prompts)} prompts is over --max-n of {cfg.max_n}", "n")
        max_tokens = default_max if body.max_tokens is None else body.max_tokens
        if max_tokens > cfg.max_tokens:
            raise APIError(400, f"max_tokens must be <= {cfg.max_tokens}, this server's --max-tokens", "max_tokens")
        score_only = max_tokens == 0
        for i, ids in enumerate(prompts):
            if self.context and len(ids) >= self.context + score_only:
                raise APIError(
                    400,
                    f"prompt {i} has {len(ids)} tokens, over the model's context of {self.context}: shorten it",
                    "prompt",
                )
        temperature = 1.0 if body.temperature is None else body.temperature
        params = SamplingParams(
            temperature=0.0 if temperature < GREEDY_BELOW else temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=max(0, body.top_k or 0),
            max_new_tokens=max(1, max_tokens),
            n=body.n,
            stop=(body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()),
            seed=body.seed,
            ignore_eos=body.ignore_eos,
        )
        steering: tuple[str | None, float | None] = (None, None)
        if body.steering is not None:
            name, strength = (
                (body.steering, None)
                if isinstance(body.steering, str)
                else (body.steering.name, body.steering.strength)
            )
            if name not in self.steering:
                have = ", ".join(sorted(self.steering)) or "none (start the server with --steer NAME=PATH)"
                raise APIError(400, f"unknown steering artifact {name!r}: loaded are {have}", "steering")
            steering = (name, strength)
        return Prepared(prompts, texts, params, steering, score_only)

    def check_cap(self, prep: Prepared, scored: int) -> None:
        """Refuse up front a request whose tokens (at most every row to its cap, plus scored ones) pass the cap."""
        cap = self.config.max_request_tokens
        n, max_new = prep.params.n, 0 if prep.score_only else prep.params.max_new_tokens
        worst = scored + sum(n * min(max_new, (self.context or 1 << 62) - len(p)) for p in prep.prompts)
        if worst > cap:
            raise APIError(
                400,
                f"this request may use {worst} tokens ({len(prep.prompts)} prompts x n {n} x max_tokens {max_new}"
                + (f", plus {scored} scored" if scored else "")
                + f"), over the server's --max-request-tokens of {cap}: lower n or max_tokens, or split it",
                "max_tokens",
                "request_too_large",
            )
