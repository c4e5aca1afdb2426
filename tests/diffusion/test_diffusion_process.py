import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import DDPMScheduler  # noqa: E402

from steerable.diffusion.denoiser import MLPDenoiser  # noqa: E402
from steerable.diffusion.process import DiffusionProcess  # noqa: E402
from steerable.errors import ConfigError, InputError  # noqa: E402


def tiny(num_steps=10, eta=1.0, **kw) -> DiffusionProcess:
    torch.manual_seed(0)
    model = MLPDenoiser(sample_shape=(2, 3), hidden=16, layers=2, time_dim=8)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return DiffusionProcess(model, sched, num_steps=num_steps, eta=eta, **kw)


def run(p, s):
    while not all(p.is_terminal(s)):
        p.propose(s)
    return p.preview(s)


def test_a_rows_sample_does_not_depend_on_its_batch_mates():
    p = tiny()
    together = run(p, p.init("", 6, seed=7))
    alone = run(p, p.select(p.init("", 6, seed=7), [3]))
    assert torch.allclose(together[3], alone[0], atol=1e-5)
    assert together.shape == (6, 2, 3)
    assert not torch.allclose(together[3], together[4])


def test_same_seed_same_samples_other_seed_other_samples():
    p = tiny()
    a, b, c = (run(p, p.init("", 3, seed=s)) for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_forks_branch_off_while_the_first_copy_continues_its_stream():
    p = tiny()
    s = p.init("", 2, seed=3)
    p.propose(s, steps=4)
    forked = p.select(s, [0, 0, 1])
    plain = run(p, p.select(s, [0, 1]))
    out = run(p, forked)
    assert torch.allclose(out[0], plain[0], atol=1e-6)  # first copy = unforked row
    assert torch.allclose(out[2], plain[1], atol=1e-6)
    assert not torch.allclose(out[0], out[1])  # the fork drew its own noise


def test_eta_zero_is_a_deterministic_map_of_the_initial_noise():
    p = tiny(eta=0.0)
    s = p.init("", 1, seed=3)
    out = run(p, p.select(s, [0, 0, 0]))
    assert torch.allclose(out[0], out[1], atol=1e-6) and torch.allclose(out[1], out[2], atol=1e-6)


def test_nfe_counts_rows_times_steps_and_a_preview_is_reused_by_the_next_step():
    p = tiny(num_steps=10)
    run(p, p.init("", 4, seed=0))
    assert p.usage.nfe == 40
    q = tiny(num_steps=10)
    s = q.init("", 4, seed=0)
    for _ in range(10):
        q.preview(s)  # the noise it predicts is the next step's
        q.propose(s)
    q.preview(s)  # done rows: the sample itself, no call
    assert q.usage.nfe == 40
    assert torch.allclose(q.preview(s), run(p, p.init("", 4, seed=0)))


def test_preview_is_the_clipped_x0_prediction():
    p = tiny(num_steps=10)
    s = p.init("", 5, seed=0)
    p.propose(s, steps=3)
    t = p.timesteps[3]
    eps = p.denoiser(s.x, t).sample
    abar = p.scheduler.alphas_cumprod[t]
    x0 = ((s.x - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
    assert torch.allclose(p.preview(s), x0, atol=1e-5)


def test_the_last_step_lands_on_its_x0_prediction():
    p = tiny(num_steps=10)
    s = p.init("", 3, seed=0)
    p.propose(s, steps=9)
    x0 = p.preview(s).clone()
    p.propose(s)
    assert all(p.is_terminal(s))
    assert torch.allclose(p.preview(s), x0, atol=1e-6)


def test_rows_at_different_steps_denoise_in_one_batch_as_they_would_alone():
    p = tiny(num_steps=10)
    a = p.init("", 2, seed=1)
    p.propose(a, steps=6)
    b = p.init("", 2, seed=2)
    both = p.concat([a, b])
    n0 = p.usage.nfe
    p.propose(both)
    assert p.usage.nfe - n0 == 4  # one batched call for all four rows
    p.propose(a)
    p.propose(b)
    assert torch.allclose(both.x, torch.cat([a.x, b.x]), atol=1e-6)
    assert both.index.tolist() == [7, 7, 1, 1]


def test_segment_takes_k_steps_and_stops_at_the_end():
    p = tiny(num_steps=10, segment=4)
    s = p.init("", 2, seed=0)
    p.propose(s)
    assert s.index.tolist() == [4, 4]
    p.propose(s)
    p.propose(s)
    assert s.index.tolist() == [10, 10] and all(p.is_terminal(s))


def test_sigma_is_ddim_eq_16_times_eta():
    p = tiny(num_steps=10, eta=0.5)
    i = torch.tensor([0, 4, 9])
    t = p.timesteps[i]
    a = p.scheduler.alphas_cumprod
    want = []
    for tt in t.tolist():
        prev = tt - 100
        ap = a[prev] if prev >= 0 else torch.tensor(1.0)
        want.append(0.5 * float(((1 - ap) / (1 - a[tt]) * (1 - a[tt] / ap)).sqrt()))
    assert torch.allclose(p.sigma(i), torch.tensor(want), atol=1e-6)
    assert float(p.sigma(torch.tensor([9]))) == 0.0  # DDIM's last step adds no noise


def test_conditioning_reaches_the_denoiser():
    torch.manual_seed(0)
    model = MLPDenoiser(sample_shape=(3,), condition_dim=2, hidden=16, layers=2, time_dim=8)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    codes = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 5.0])}
    p = DiffusionProcess(model, sched, num_steps=5, eta=0.0, encode=codes.__getitem__)
    assert not torch.allclose(run(p, p.init("a", 1, seed=0)), run(p, p.init("b", 1, seed=0)))


def test_bad_input_is_a_one_line_error():
    p = tiny()
    with pytest.raises(InputError):
        p.init("", 0)
    s = p.init("", 2, seed=0)
    with pytest.raises(InputError):
        p.select(s, [2])
    with pytest.raises(InputError):
        p.concat([s, p.init("other", 1, seed=0)])
    with pytest.raises(ConfigError):
        tiny(eta=1.5)
    with pytest.raises(ConfigError):
        tiny(num_steps=0)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MLPDenoiser(sample_shape=(4,), hidden=8, layers=1, time_dim=4)
    model.save_pretrained(tmp_path)
    back = MLPDenoiser.from_pretrained(tmp_path)
    x, t = torch.randn(3, 4), torch.tensor([1, 500, 999])
    assert back.config.sample_shape in ((4,), [4])
    assert torch.equal(model(x, t).sample, back(x, t).sample)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_one_pass_ddim_step_over_mixed_steps_has_the_schedulers_bits(eta):
    # rows at different steps take one tensor pass; each row must get exactly what DDIMScheduler.step gives it
    p = tiny(num_steps=10, eta=eta)
    g = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(7, 2, 3, generator=g) * 2 for _ in range(3))
    index = torch.tensor([0, 3, 3, 9, 5, 0, 8])
    prev, x0 = p.ddim_step(eps, index, x, z)
    for r in range(7):
        out = p.scheduler.step(eps[r], p.timesteps[int(index[r])], x[r], eta=eta, variance_noise=z[r])
        assert torch.equal(prev[r], out.prev_sample) and torch.equal(x0[r], out.pred_original_sample)
