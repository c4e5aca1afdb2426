"""``steerable generate``: sample completions."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import typer

from steerable.cli.app import app
from steerable.cli.common import Printing, PromptsFile, generator, read_prompts
from steerable.cli.flags import command
from steerable.config import opt, unescape
from steerable.lm.loading import ModelConfig
from steerable.lm.types import SamplingParams


@dataclass(frozen=True)
class Batching:
    batch_size: int = opt(64, "Prompts per batch.", ge=1, le=4096)


@command(app, "generate")
def generate(
    prompts: list[str] = typer.Argument(None, help="Prompts (\\n and other escapes are understood)."),
    *,
    sampling: SamplingParams,
    batching: Batching,
    source: PromptsFile,
    model: ModelConfig,
    printing: Printing,
) -> None:
    """Sample completions (--json: one object per prompt with text, choices and usage)."""
    from steerable.lm.types import Usage
    from steerable.tasks.builtin.evaluate import generate_batched

    texts = read_prompts(prompts or [], source.prompts_file)
    params = dataclasses.replace(sampling, stop=tuple(unescape(s, "--stop") for s in sampling.stop))
    gen = generator(model.model, model.device, model.dtype)
    comps = generate_batched(gen, texts, params, batch_size=batching.batch_size)
    for i, prompt in enumerate(texts):
        mine = [c for c in comps if c.prompt_index == i]
        if printing.json:
            usage = sum((c.usage for c in mine), Usage())
            obj = {
                "prompt": prompt,
                "text": mine[0].text,
                "choices": [
                    {"text": c.text, "finish_reason": c.finish_reason, "tokens": len(c.token_ids)} for c in mine
                ],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "generated_tokens": usage.generated_tokens,
                    "forward_tokens": usage.forward_tokens,
                },
            }
            typer.echo(json.dumps(obj))
        else:
            for c in mine:
                typer.echo(c.text)
                if params.n > 1 or len(texts) > 1:
                    typer.echo("---")
