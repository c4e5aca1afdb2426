import dataclasses
from typing import Literal

import pytest

from steerable.config import check, from_mapping, opt
from steerable.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Knobs:
    width: int = opt(4, "Rows.", ge=1, le=64)
    temperature: float = opt(1.0, "T.", gt=0)
    scheme: Literal["a", "b"] = opt("a", "Which.")
    cap: int | None = opt(None, "Optional cap.", ge=1)
    positions: tuple[int, ...] = opt((-1, -2), "Positions.", le=-1)
    flag: bool = opt(False, "A switch.")

    def __post_init__(self) -> None:
        check(self, "knobs: ")


def test_defaults_pass_and_values_within_bounds_are_kept():
    k = from_mapping(Knobs, {"width": 64, "temperature": 3, "cap": 5, "positions": [-3], "scheme": "b"})
    assert (k.width, k.temperature, k.cap, k.positions, k.scheme) == (64, 3.0, 5, (-3,), "b")
    assert isinstance(k.temperature, float)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"width": 0}, "width must be >= 1 and <= 64 (got 0)"),
        ({"width": 10**400}, "width must be >= 1 and <= 64"),
        ({"width": "x"}, "width must be an integer (got 'x')"),
        ({"width": True}, "width must be an integer (got True)"),
        ({"width": 2.5}, "width must be an integer (got 2.5)"),
        ({"temperature": float("nan")}, "temperature must be a finite number (got nan)"),
        ({"temperature": float("-inf")}, "temperature must be a finite number"),
        ({"temperature": 0}, "temperature must be > 0 (got 0.0)"),
        ({"temperature": 10**400}, "temperature is too large"),
        ({"temperature": "a"}, "temperature must be a number (got 'a')"),
        ({"scheme": "c"}, "scheme must be one of 'a', 'b' (got 'c')"),
        ({"cap": 0}, "cap must be >= 1 (got 0)"),
        ({"cap": "x"}, "cap must be an integer or null (got 'x')"),
        ({"positions": 5}, "positions must be a list (got 5)"),
        ({"positions": [-1, 0]}, "positions[1] must be <= -1 (got 0)"),
        ({"flag": 1}, "flag must be true or false (got 1)"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_field(values, message):
    with pytest.raises(ConfigError) as e:
        from_mapping(Knobs, values)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_and_excluded_names_are_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="pf: no option sweeps: use cap, flag, positions, scheme, width"):
        from_mapping(Knobs, {"sweeps": 3}, "pf", exclude=frozenset({"temperature"}))
    with pytest.raises(ConfigError, match="no option temperature"):
        from_mapping(Knobs, {"temperature": 1.0}, exclude=frozenset({"temperature"}))
    with pytest.raises(ConfigError, match="options must be an object"):
        from_mapping(Knobs, [1, 2])


def test_check_guards_direct_construction_too():
    with pytest.raises(ConfigError, match="knobs: width must be >= 1"):
        Knobs(width=-3)


def test_mutable_defaults_are_refused_at_declaration():
    with pytest.raises(TypeError):
        opt([1], "A list.")


def test_integers_past_the_repr_limit_are_reported_by_size():
    with pytest.raises(ConfigError, match="width must be >= 1 and <= 64 \\(got an integer of about 5000 digits\\)"):
        from_mapping(Knobs, {"width": 10**4999})


# ---- NAME=VALUE pairs: one rule for every --set and method spec ---------------------------------------


def test_pairs_read_json_where_it_parses_else_the_string():
    from steerable.config import parse_pairs

    got = parse_pairs(["width=8", " temperature = 0.5", "flag=true", "cap=null", "scheme=b", "positions=[-3]"])
    assert got == {"width": 8, "temperature": 0.5, "flag": True, "cap": None, "scheme": "b", "positions": [-3]}
    assert parse_pairs(['scheme="8"', "scheme2= a word "]) == {"scheme": "8", "scheme2": "a word"}
    assert from_mapping(Knobs, parse_pairs(["width=8", "positions=[-3, -4]"])) == Knobs(width=8, positions=(-3, -4))


@pytest.mark.parametrize("pair", ["width", "=3", " =3"])
def test_a_pair_without_a_name_or_an_equals_sign_is_refused(pair):
    from steerable.config import parse_pairs

    with pytest.raises(ConfigError, match=f"--knob {pair!r}: write NAME=VALUE"):
        parse_pairs([pair], "--knob")


def test_the_ground_floor_knows_nothing_of_typer():
    # the typer binder lives in steerable.cli.flags; config.py only validates (a library user needs no CLI)
    import ast
    from pathlib import Path

    import steerable.config

    tree = ast.parse(Path(steerable.config.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.split(".")[0] in ("typer", "click", "steerable") and m != "steerable.errors"}
    assert "_getframe" not in Path(steerable.config.__file__).read_text()
