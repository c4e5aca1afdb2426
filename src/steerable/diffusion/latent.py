"""Stable Diffusion as a process: unet, scheduler, VAE and text encoder driven in our own loop, with CFG.

A diffusers pipeline's ``callback_on_step_end`` sees neither the noise
prediction nor the x0-prediction, so, as FK steering's ``fkd_pipeline_sd.py``
does, the loop is ours: a step runs the UNet on [uncond, cond] copies of the
live rows (classifier-free guidance, Ho & Salimans:
eps = eps_u + w (eps_c - eps_u)), so one step of one row costs 2 NFE;
``preview`` decodes the x0-prediction of the latents with the VAE into images
in [0, 1] (``decoder_calls`` counts the rows decoded), which is what image
rewards (ImageReward, aesthetic predictors, CLIP scores) take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steerable.diffusion.process import DiffusionProcess, DiffusionState
from steerable.errors import ConfigError
from steerable.usage import Usage


@dataclass
class StableDiffusionProcess(DiffusionProcess):
    vae: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    guidance_scale: float = 7.5  # CFG weight w; 1 runs the conditional model alone (1 NFE a row)
    negative_prompt: str = ""
    condition_arg: str = "encoder_hidden_states"

    def __post_init__(self) -> None:
        if self.vae is None or self.text_encoder is None or self.tokenizer is None:
            raise ConfigError("StableDiffusionProcess needs vae, text_encoder and tokenizer (see from_pipeline)")
        if not 0 <= self.guidance_scale <= 100:
            raise ConfigError(f"guidance_scale must be in [0, 100] (got {self.guidance_scale})")
        if self.sample_shape is None:
            c = self.denoiser.config
            self.sample_shape = (c.in_channels, c.sample_size, c.sample_size)
        self.encode = self._encode_prompt
        super().__post_init__()
        self.vae.eval()
        self.text_encoder.eval()

    @classmethod
    def from_pipeline(cls, pipe, **kw) -> StableDiffusionProcess:
        """From a loaded ``StableDiffusionPipeline`` (its scheduler's config becomes DDIM's)."""
        return cls(
            pipe.unet, pipe.scheduler, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, **kw
        )

    @property
    def cfg(self) -> bool:
        return self.guidance_scale != 1.0

    @torch.no_grad()
    def _embed(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(
            [text],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0][0]  # [tokens, dim]

    def _encode_prompt(self, prompt: str) -> torch.Tensor:
        """``[2, tokens, dim]``: the negative (unconditional) and the prompt's embeddings."""
        return torch.stack([self._embed(self.negative_prompt), self._embed(prompt)])

    def model_output(self, state: DiffusionState, rows: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        x = state.x[rows.to(state.x.device)] if x is None else x
        t = self.timestep(state.index[rows]).to(x.device)
        uncond, cond = state.condition[0], state.condition[1]
        n = len(x)
        if not self.cfg:
            self._usage = self._usage + Usage(nfe=n)
            return self.denoiser(x, t, encoder_hidden_states=cond.expand(n, *cond.shape)).sample
        self._usage = self._usage + Usage(nfe=2 * n)
        emb = torch.cat([uncond.expand(n, *uncond.shape), cond.expand(n, *cond.shape)])
        out = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=emb).sample
        eps_u, eps_c = out.chunk(2)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents ``[rows, c, h, w]`` to images ``[rows, 3, H, W]`` in [0, 1]."""
        self._usage = self._usage + Usage(decoder_calls=len(x0))
        image = self.vae.decode(x0 / self.vae.config.scaling_factor).sample
        return (image / 2 + 0.5).clamp(0, 1)
