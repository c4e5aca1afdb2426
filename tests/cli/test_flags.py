"""Every command's flags come from config dataclasses, and their defaults are the configs' defaults."""

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from steerable.cli import app
from steerable.cli.flags import command
from steerable.config import opt, unescape
from steerable.errors import ConfigError


def commands(group: typer.Typer, prefix: str = ""):
    for c in group.registered_commands:
        yield (prefix + (c.name or c.callback.__name__)).strip(), c.callback
    for g in group.registered_groups:
        yield from commands(g.typer_instance, prefix + g.name + " ")


def test_every_command_takes_its_flags_from_config_dataclasses():
    import inspect

    found = dict(commands(app))
    assert {"generate", "scale", "serve", "demo", "builtin eval", "steer apply", "train rl"} <= set(found)
    for name, fn in found.items():
        params = inspect.signature(fn).parameters
        configs = getattr(fn, "configs", {})
        fields = {f.name for cls in configs.values() for f in dataclasses.fields(cls)}
        for p in params.values():
            is_argument = type(p.default).__name__ == "ArgumentInfo"
            assert is_argument or p.name in fields, f"steerable {name}: --{p.name} is declared by hand"


def _flag_defaults(fn) -> dict[str, object]:
    return {p.name: p.default.default for p in __import__("inspect").signature(fn).parameters.values()}


@pytest.mark.parametrize("name", ["generate", "scale", "serve", "train rl", "steer select-refusal", "steer apply"])
def test_flag_defaults_are_the_config_defaults(name):
    from steerable.cli.flags import _field_default

    fn = dict(commands(app))[name]
    shown = _flag_defaults(fn)
    for cls in fn.configs.values():
        for f in dataclasses.fields(cls):
            if f.name not in shown:
                continue
            default = _field_default(f, None)
            flag = shown[f.name]
            if isinstance(default, tuple) and f.metadata.get("sep"):
                default = f.metadata["sep"].join(str(x) for x in default)
            elif isinstance(default, tuple):
                default = list(default)
            elif isinstance(default, dict):
                default = []
            if name == "steer apply" and f.name in ("temperature", "max_new_tokens"):
                continue  # steer apply's own defaults (greedy, 64 tokens), set on its SamplingParams parameter
            assert flag == default, (name, f.name, flag, default)


def test_the_refusal_positions_flag_and_config_agree():
    from steerable.steer.refusal import RefusalConfig

    fn = dict(commands(app))["steer select-refusal"]
    assert _flag_defaults(fn)["positions"] == "-1,-2,-3"
    assert RefusalConfig().positions == (-1, -2, -3)


def test_steer_apply_samples_greedily_by_default():
    fn = dict(commands(app))["steer apply"]
    assert _flag_defaults(fn)["temperature"] == 0.0 and _flag_defaults(fn)["max_new_tokens"] == 64


def test_choices_declared_as_literals_match_the_registries_they_name():
    # --algo and --template take their choices from the registries themselves (rl.run.AlgoName)
    from steerable.cli.steer import ExtractOptions
    from steerable.lm.loading import DTYPES, DeviceConfig
    from steerable.steer.extract import METHODS
    from steerable.steer.interventions import SCOPES
    from steerable.tasks.builtin.arithmetic import SPLITS
    from steerable.tasks.builtin.evaluate import EvalSet

    lit = lambda cls, name: set(typing.get_args(typing.get_type_hints(cls)[name]))  # noqa: E731
    assert lit(ExtractOptions, "method") == set(METHODS)
    assert lit(ExtractOptions, "scope") == set(SCOPES)
    assert lit(EvalSet, "split") == set(SPLITS) | {"all"}
    assert lit(DeviceConfig, "dtype") == set(DTYPES)


# ---- the machinery, on a toy command ---------------------------------------------------------------


@dataclass(frozen=True)
class Toy:
    sizes: tuple[int, ...] = opt((1, 4), "Sizes.", ge=1, le=100, min_items=1)
    names: tuple[str, ...] = opt((), "Names (repeatable).", sep=None, min_len=1)
    knobs: dict = opt(..., "NAME=VALUE.", flag="--set", factory=dict)
    rate: float = opt(0.5, "Rate.", gt=0, le=1)
    cap: int | None = opt(None, "Cap.", ge=1)
    loud: bool = opt(False, "Shout.", flag="--loud")
    hidden: int = opt(3, "Not a flag.", cli=False)


@pytest.fixture
def toy(capsys):
    got = {}
    toy_app = typer.Typer()

    @command(toy_app, "go")
    def go(where: Path = typer.Argument(...), *, toy: Toy = Toy(rate=0.25)) -> None:
        got["where"], got["toy"] = where, toy

    @toy_app.command("other")
    def other() -> None:  # a second command keeps typer from collapsing the app into one command
        pass

    def run(*args: str):
        got.clear()
        try:
            toy_app(["go", *args], standalone_mode=False)
        except ConfigError as e:
            return str(e)
        return got["toy"]

    return run


def test_flags_parse_into_the_config(toy):
    t = toy("here", "--sizes", "2, 8", "--names", "a", "--names", "b c", "--set", "x=1", "--set", "y = two", "--loud")
    assert t == Toy(sizes=(2, 8), names=("a", "b c"), knobs={"x": 1, "y": "two"}, rate=0.25, loud=True)
    assert toy("here") == Toy(rate=0.25)  # the parameter's instance sets this command's defaults


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sizes", "2.7"], "--sizes takes integers (got '2.7')"),
        (["--sizes", ","], "--sizes has an empty item (got ',')"),
        (["--sizes", "4,,8"], "--sizes has an empty item"),
        (["--sizes", ""], "--sizes must have at least 1 item (got empty)"),
        (["--sizes", "1000000000"], "--sizes[0] must be >= 1 and <= 100 (got 1000000000)"),
        (["--names", ""], "--names[0] must have at least 1 character (got empty)"),
        (["--set", "novalue"], "--set 'novalue': write NAME=VALUE"),
        (["--rate", "nan"], "--rate must be a finite number (got nan)"),
        (["--rate", "inf"], "--rate must be a finite number (got inf)"),
        (["--rate", "0"], "--rate must be > 0 and <= 1 (got 0.0)"),
        (["--cap", "0"], "--cap must be >= 1 (got 0)"),
    ],
)
def test_bad_flag_values_are_one_line_errors_naming_the_flag(toy, args, message):
    assert message in toy("here", *args)


def test_two_configs_may_not_declare_the_same_flag():
    @dataclass(frozen=True)
    class Other:
        rate: float = opt(1.0, "Another rate.")

    with pytest.raises(TypeError, match="two flags named 'rate'"):

        @command(typer.Typer(), "clash")
        def clash(a: Toy, b: Other) -> None:
            pass


# ---- escapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, decoded",
    [
        ("café\\n", "café\n"),
        ("naïve\\tπ", "naïve\tπ"),
        ("\\u00e9t\\xe9", "été"),
        ("a\\\\nb", "a\\nb"),  # an escaped backslash stays one backslash
        ("ends in \\", "ends in \\"),
        ("hex \\x without digits", "hex \\x without digits"),
        ("\\d+ stays", "\\d+ stays"),
        ("\\U0001F600", "\U0001f600"),
        ("plain", "plain"),
    ],
)
def test_unescape_decodes_escapes_and_leaves_everything_else(text, decoded):
    assert unescape(text) == decoded


def test_unescape_refuses_a_lone_surrogate():
    with pytest.raises(ConfigError, match="prompt 1 holds a lone surrogate"):
        unescape("a\\ud800b", "prompt 1")
