"""The registry helper every family's table stands on: presets, options checked by their fields, budget tables."""

from dataclasses import dataclass

import pytest

from steerable.config import opt
from steerable.errors import ConfigError
from steerable.registry import Entry, Registry


@dataclass(frozen=True)
class Walker:
    model: object  # what the family passes itself
    steps: int = opt(4, "Steps.", ge=1, le=10)
    mode: str = opt("fast", "Mode.", min_len=1)
    width: int = opt(2, "Width.", ge=1)


TABLE = Registry(
    "walk",
    {
        "walk": Entry(Walker, "N steps", "a plain walk"),
        "run": Entry(Walker, "N strides", "a run", {"mode": "sprint"}, hidden=frozenset({"width"})),
    },
)


def test_build_applies_the_preset_then_the_users_options_and_passes_the_familys_own():
    assert TABLE.build("run", None, model="m") == Walker("m", 4, "sprint", 2)
    assert TABLE.build("run", {"mode": "jog", "steps": 7}, model="m") == Walker("m", 7, "jog", 2)
    assert TABLE.build("walk", {"width": 3}, model="m").width == 3


def test_options_are_checked_by_their_fields_and_unknown_or_hidden_ones_named():
    with pytest.raises(ConfigError, match=r"walk: steps must be >= 1 and <= 10 \(got 11\)"):
        TABLE.build("walk", {"steps": 11}, model="m")
    with pytest.raises(ConfigError, match="run: no option width: use mode, steps"):
        TABLE.build("run", {"width": 3}, model="m")  # hidden by the entry
    with pytest.raises(ConfigError, match="walk: no option model: use mode, steps, width"):
        TABLE.build("walk", {"model": 1}, model="m")  # passed by the family, never the user's
    with pytest.raises(ConfigError, match="unknown walk 'fly': use one of walk, run"):
        TABLE.entry("fly")
    with pytest.raises(ConfigError, match="options must be an object"):
        TABLE.options("walk", ["steps"])


def test_the_budget_table_lists_every_name_unwrapped_for_click():
    text = TABLE.budget_help()
    assert text.splitlines() == ["\b", "walk  N steps", "run   N strides"]
    assert TABLE.settable("run", frozenset({"model"})) == ["steps", "mode"] and "walk" in TABLE
