import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast  # noqa: E402

from steerable.diffusion.fk import FKSteering  # noqa: E402
from steerable.diffusion.guidance import RewardGuidance  # noqa: E402
from steerable.diffusion.latent import StableDiffusionProcess  # noqa: E402


class Brightness:
    """A differentiable image reward: the mean pixel, in [0, 1]."""

    range = (0.0, 1.0)

    def __init__(self):
        self.calls, self.forward_tokens = 0, 0

    def reward(self, prompts, images):
        return images.mean(dim=(1, 2, 3))

    def score(self, prompts, images):
        self.calls += 1
        with torch.no_grad():
            return self.reward(prompts, images).tolist()


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        layers_per_block=1,
    )
    text = CLIPTextModel(
        CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1, vocab_size=64)
    )
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "a", "red", "blue", "cat", "dog"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", model_max_length=8)
    sched = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True)
    return unet, sched, vae, text, tok


def sd(parts, **kw):
    unet, sched, vae, text, tok = parts
    return StableDiffusionProcess(unet, sched, vae=vae, text_encoder=text, tokenizer=tok, **kw)


def test_cfg_step_costs_two_nfe_per_row_and_preview_decodes_images(parts):
    p = sd(parts, num_steps=4, guidance_scale=5.0)
    s = p.init("a red cat", 3, seed=0)
    assert s.x.shape == (3, 4, 8, 8)
    p.propose(s)
    assert p.usage.nfe == 6
    img = p.preview(s)
    assert img.shape == (3, 3, 16, 16) and float(img.min()) >= 0 and float(img.max()) <= 1
    assert p.usage.decoder_calls == 3 and p.usage.nfe == 12  # the preview ran the next step's model call ...
    p.propose(s)
    assert p.usage.nfe == 12  # ... which the step reused


def test_prompts_condition_the_sample_and_rows_are_independent(parts):
    p = sd(parts, num_steps=3, guidance_scale=3.0)

    def run(prompt, n, rows=None):
        s = p.init(prompt, n, seed=4)
        if rows is not None:
            s = p.select(s, rows)
        while not all(p.is_terminal(s)):
            p.propose(s)
        return s.x

    assert not torch.allclose(run("a red cat", 1), run("a blue dog", 1))
    assert torch.allclose(run("a red cat", 3)[2], run("a red cat", 3, [2])[0], atol=1e-5)


def test_fk_and_guidance_run_on_stable_diffusion_parts(parts):
    reward = Brightness()
    p = sd(parts, num_steps=4, guidance_scale=2.0)
    res = FKSteering(resample_every=2, t_start=2, t_end=2).run(p, reward, 2, "a cat", seed=0)
    assert res.sample.shape == (3, 16, 16)
    assert res.cost.nfe == 2 * 2 * 4 and res.cost.decoder_calls == 2 * 2  # two weighings of two particles
    g = sd(parts, num_steps=3, guidance_scale=1.0, guidance=RewardGuidance(reward, scale=1.0))
    s = g.init("a dog", 2, seed=0)
    g.propose(s)
    assert g.backward_passes == 1 and g.usage.nfe == 2 and torch.isfinite(s.log_ratio).all()
