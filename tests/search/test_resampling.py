import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerable.search.resampling import (
    RESAMPLERS,
    ess,
    multinomial_resample,
    normalise,
    resample,
    stratified_resample,
    systematic_resample,
)


@settings(max_examples=100, deadline=None)
@given(w=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=12), n=st.integers(1, 32), seed=st.integers(0, 999))
def test_systematic_resampling_gives_each_particle_its_share_within_one(w, n, seed):
    weights = torch.tensor(w) / sum(w)
    idx = systematic_resample(weights, n, torch.Generator().manual_seed(seed))
    assert len(idx) == n
    counts = torch.bincount(torch.tensor(idx), minlength=len(w)).double()
    assert ((counts - n * weights.double()).abs() < 1 + 1e-9).all()


def test_multinomial_resampling_is_seeded_and_follows_weights():
    w = torch.tensor([0.7, 0.2, 0.1])
    a = multinomial_resample(w, 2000, torch.Generator().manual_seed(1))
    assert a == multinomial_resample(w, 2000, torch.Generator().manual_seed(1))
    share = torch.bincount(torch.tensor(a), minlength=3) / 2000
    assert (share - w).abs().max() < 0.05


@settings(max_examples=100, deadline=None)
@given(w=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=12), n=st.integers(1, 32), seed=st.integers(0, 999))
def test_stratified_resampling_puts_one_pointer_in_each_stratum(w, n, seed):
    weights = torch.tensor(w, dtype=torch.float64) / sum(w)
    idx = stratified_resample(weights, n, torch.Generator().manual_seed(seed))
    assert len(idx) == n and idx == sorted(idx)  # pointers rise through the strata, so ancestors come in order
    cdf = torch.cumsum(weights, 0)
    for k, i in enumerate(idx):  # ancestor i's CDF interval [cdf[i-1], cdf[i]) meets stratum [k/n, (k+1)/n)
        lo = 0.0 if i == 0 else float(cdf[i - 1])
        assert lo <= (k + 1) / n + 1e-12 and float(cdf[i]) >= k / n - 1e-12


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_every_scheme_copies_each_particle_n_w_times_on_average(scheme):
    w = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4, dtype=torch.float64)
    for _ in range(2000):
        counts += torch.bincount(torch.tensor(resample(scheme, w, 8, g)), minlength=4)
    assert (counts / 2000 - 8 * w).abs().max() < 0.1


def test_ess_is_n_for_uniform_weights_and_one_for_a_single_winner():
    assert ess(normalise(torch.zeros(5))) == pytest.approx(5.0)
    assert ess(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert ess(torch.tensor([0.5, 0.5, 0.0, 0.0])) == pytest.approx(2.0)
