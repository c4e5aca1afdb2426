import itertools

import pytest
import torch

from steerable.control.worlds.stl import Always, And, Eventually, Not, Or, Predicate, Until, inside_disk, nav_spec


def _x(values):
    """A 1-D signal as a trajectory batch [1, T, 1]; the predicate reads it directly."""
    return torch.tensor(values, dtype=torch.float64)[None, :, None]


P = Predicate(lambda x: x[..., 0], "p")
Q = Predicate(lambda x: 1.0 - x[..., 0], "q")


def test_exact_robustness_matches_hand_computation():
    x = _x([-1.0, 0.5, 2.0, -0.5])
    assert Eventually(P, 0, 3).at0(x).item() == 2.0
    assert Always(P, 0, 3).at0(x).item() == -1.0
    assert Eventually(P, 1, 2).robustness(x)[0].tolist() == [2.0, 2.0, -0.5, -1e4]  # window past the end
    assert Always(P, 0, 1).robustness(x)[0].tolist() == [-1.0, 0.5, -0.5, -0.5]
    assert And((P, Q)).robustness(x)[0].tolist() == [-1.0, 0.5, -1.0, -0.5]
    assert Or((P, Q)).robustness(x)[0].tolist() == [2.0, 0.5, 2.0, 1.5]
    assert Not(P).robustness(x)[0].tolist() == [1.0, -0.5, -2.0, 0.5]


def _until_brute(rp, rq, a, b):
    out = []
    for t in range(len(rp)):
        best = -1e4
        for s in range(t + a, min(len(rp), t + b + 1)):
            best = max(best, min([rq[s], *rp[t:s]]))
        out.append(best)
    return out


def test_until_matches_brute_force_on_random_signals():
    g = torch.Generator().manual_seed(0)
    for a, b in itertools.product([0, 1], [2, 5]):
        v = torch.randn(7, generator=g, dtype=torch.float64)
        w = torch.randn(7, generator=g, dtype=torch.float64)
        phi = Predicate(lambda x, v=v: v.expand(x.shape[0], -1))
        psi = Predicate(lambda x, w=w: w.expand(x.shape[0], -1))
        got = Until(phi, psi, a, b).robustness(torch.zeros(1, 7, 1))[0].tolist()
        assert got == pytest.approx(_until_brute(v.tolist(), w.tolist(), a, b))


def test_smooth_robustness_tends_to_exact_as_temperature_falls():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 30, 2, generator=g, dtype=torch.float64)
    phi = And((Eventually(inside_disk(0.5, 0.5, 1.0), 0, 20), Always(Not(inside_disk(-1, -1, 0.5)), 0, 29)))
    exact = phi.at0(x, 0.0)
    gaps = [(phi.at0(x, tau) - exact).abs().max().item() for tau in (0.5, 0.05, 0.005)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.05
    # log-sum-exp bounds: the smooth max never falls below the exact max
    assert (Eventually(P, 0, 29).at0(x, 0.1) >= Eventually(P, 0, 29).at0(x, 0.0) - 1e-12).all()


def test_smooth_robustness_has_finite_gradients_everywhere():
    x = torch.randn(4, 40, 2, dtype=torch.float64, requires_grad=True)
    spec = nav_spec((2.0, 1.0, 0.3), (4.0, 0.0), 0.3, [(2.0, 0.0, 0.8)], reach_by=25, horizon=39)
    spec.at0(x, 0.1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_nav_spec_separates_a_satisfying_path_from_one_that_skips_a():
    t = torch.linspace(0, 1, 60, dtype=torch.float64)
    # through A = (2, 1.05) on the way to (4, 0): a polyline (0,0) -> (2,1.05) -> (4,0)
    first = torch.stack([4 * t[:30] / t[29] * 0.5, 1.05 * t[:30] / t[29]], -1)
    second = torch.stack([2 + 2 * (t[30:] - t[30]) / (1 - t[30]), 1.05 * (1 - (t[30:] - t[30]) / (1 - t[30]))], -1)
    via_a = torch.cat([first, second])[None]
    below = via_a.clone()
    below[..., 1] *= -1  # the mirror path goes below: it misses A
    spec = nav_spec((2.0, 1.05, 0.3), (4.0, 0.0), 0.3, [(2.0, 0.0, 0.8)], reach_by=40, horizon=59)
    assert spec.at0(via_a).item() > 0 > spec.at0(below).item()
