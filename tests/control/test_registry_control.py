"""``steerable control eval``'s table: --budget fills the field the table names, --set the others, artifacts load."""

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("diffusers")

from steerable.control.registry import METHODS, EvalConfig, load_policy, make_controller, method_options  # noqa: E402
from steerable.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def policy():
    return load_policy(EvalConfig())


def test_budget_and_options_reach_the_controller(policy):
    vgps = make_controller(EvalConfig(method="vgps", budget=3, set=("beta=0.5",)), policy)
    assert (vgps.k, vgps.beta) == (3, 0.5) and vgps.critic is not None  # the shipped critic, loaded
    rti = make_controller(EvalConfig(method="rti", budget=2, set=("mode=renoise",)), policy)
    assert (rti.k_prime, rti.mode) == (2, "renoise")
    stl = make_controller(EvalConfig(env="builtin:stlnav", method="stl", budget=50), policy)
    assert stl.last == policy.steps_inference  # a budget past the DDIM steps guides them all
    search = make_controller(EvalConfig(method="search", budget=4, set=("strategy=beam", "depth=3")), policy)
    assert (search.budget, search.strategy, search.depth) == (4, "beam", 3)


def test_every_method_lists_its_options_and_the_budget_field_is_not_one_of_them():
    for name in METHODS:
        entry = METHODS.entry(name)
        assert entry.extra.get("budget") not in method_options(name)
    assert method_options("tgpo") == ["tgpo", "eta", "search"]


def test_tgpo_random_needs_no_critic_and_tgpo_reads_its_own_policy():
    cfg = EvalConfig(env="builtin:stlnav", method="tgpo", budget=4, set=("search=random",))
    ctl = make_controller(cfg, load_policy(cfg))
    assert ctl.critic is None and ctl.policy.obs_dim == 7
    with pytest.raises(ConfigError, match="tgpo: search must be one of"):
        make_controller(EvalConfig(env="builtin:stlnav", method="tgpo", set=("search=beam",)), load_policy(cfg))
