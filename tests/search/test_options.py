"""Strategy options from users (a request's ``options``, ``--set``) are typed and bounded, one line per error."""

import pytest

from steerable.errors import ConfigError
from steerable.search.refine import TEMPLATE, IterativeRefine
from steerable.search.registry import make_strategy


def ex(text):
    return None


@pytest.mark.parametrize(
    "method,options,needle",
    [
        ("pgibbs", {"sweeps": 1_000_000}, "pgibbs: sweeps must be >= 1 and <= 16"),
        ("beam", {"expansions": 0}, "beam: expansions must be >= 1"),
        ("beam", {"expansions": -3}, "beam: expansions must be >= 1"),
        ("beam", {"expansions": "x"}, "beam: expansions must be an integer"),
        ("mcts", {"c_uct": "a"}, "mcts: c_uct must be a number"),
        ("pf", {"temperature": float("nan")}, "pf: temperature must be a finite number"),
        ("pf", {"temperature": 10**400}, "pf: temperature is too large"),
        ("pgibbs", {"delimiter": ""}, "pgibbs: delimiter must be a non-empty string"),
        ("refine", {"template": "{0}"}, "refine: template placeholder '{0}' is not allowed"),
        ("refine", {"template": "{prompt.__class__.__mro__[1].__subclasses__}"}, "is not allowed"),
        ("refine", {"template": "{prompt!r}"}, "is not allowed"),
        ("refine", {"template": "{score:{prompt}}"}, "is not allowed"),
        ("refine", {"template": "{prompt"}, "not a valid template"),
        ("pf", {"warp": 9}, "pf: no option warp"),
        ("epf", {"resampling": "stratified-ish"}, "resampling must be one of"),
        ("astar", {"max_pops_per_sample": 10**400}, "max_pops_per_sample must be >= 1 and <= 1000"),
    ],
)
def test_bad_options_are_refused_naming_the_field(method, options, needle):
    with pytest.raises(ConfigError) as e:
        make_strategy(method, ex, options)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("options", [5, [1, 2], "sweeps"])
def test_options_must_be_an_object(options):
    with pytest.raises(ConfigError, match="options must be an object"):
        make_strategy("pgibbs", ex, options)


def test_options_override_the_preset_and_keep_the_extractor():
    s = make_strategy("epf", ex, {"temperature": 2, "t_max": 30})
    assert s.entropic and s.resampling == "systematic"  # epf's preset stays
    assert s.temperature == 2.0 and isinstance(s.temperature, float) and s.t_max == 30
    assert s.extract is ex


def test_documented_placeholders_are_accepted_and_fill_in():
    r = IterativeRefine(feedback="prompt", template="{prompt} | {attempt} | {score:.3f} {{literal}}")
    assert r.template.format(prompt="p", attempt="a", score=0.5) == "p | a | 0.500 {literal}"
    IterativeRefine(template=TEMPLATE)  # the default
