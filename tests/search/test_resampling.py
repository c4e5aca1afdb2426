import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerable.search.particle_filter import multinomial_resample, systematic_resample


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
