"""Control methods by name, as ``steerable control eval`` names them: a controller, its budget, its options.

:data:`METHODS` is the table (a :class:`~steerable.registry.Registry`, as the
search and diffusion rooms keep theirs). Each name builds a controller, a
dataclass whose ``opt()`` fields are its options (``--set NAME=VALUE``);
``--budget`` fills the one field that the table says it counts. Options that
name a file (a critic, a noise policy, a TGPO run) are artifacts: the option
takes a path (or ``builtin``, the shipped one for ``--env``) and the
controller gets what it loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerable.config import check, opt, parse_pairs
from steerable.control.steering.controller import Controller
from steerable.control.steering.dsrl import DSRLController
from steerable.control.steering.lookahead import Lookahead
from steerable.control.steering.ptp import PTP
from steerable.control.steering.rti import RTI
from steerable.control.steering.stl_guide import STLFK, STLGuided
from steerable.control.steering.tgpo import TGPO
from steerable.control.steering.vgps import VGPS
from steerable.errors import ConfigError, InputError
from steerable.registry import Entry, Registry

BUILTIN = Path(__file__).parent / "builtin"


def builtin_dir(env: str, what: str) -> Path:
    """The shipped ``policy`` / ``critic`` of a built-in env (``builtin:pointnav`` -> builtin/pointnav/policy).

    STLNav is PointNav with a task on top: it is steered from PointNav's policy."""
    name = env.removeprefix("builtin:").replace("-", "_").lower()
    return BUILTIN / {"stlnav": "pointnav"}.get(name, name) / what


@dataclass(frozen=True)
class Artifact:
    """A method option that names something to load: the user gives a path (``builtin``: the shipped one)."""

    help: str
    load: Callable[[str, str], Any]  # (the option's value, --env) -> what the controller gets
    default: str = "builtin"  # "" : required
    field: str | None = None  # the controller field it fills (None: read by the policy's loader only)
    needed: Callable[[Mapping[str, Any]], bool] = lambda options: True  # noqa: E731 - loaded only for these options


def _iql(value: str, env: str):
    from steerable.control.policies.critics import IQLCritic

    return IQLCritic.load(builtin_dir(env, "critic") if value == "builtin" else Path(value))


def _noise_policy(value: str, env: str):
    from steerable.control.policies.noise import load_na_actor, load_noise_policy, load_sac_actor

    path = builtin_dir(env, "noise_policy") if value == "builtin" else Path(value)
    if value == "builtin" and not (path / "noise_policy.safetensors").exists():
        raise InputError(
            f"dsrl: no shipped noise policy for {env}: train one with `steerable control dsrl` "
            "and pass --set noise_policy=DIR"
        )
    if path.is_dir() and (path / "noise_policy.safetensors").exists():
        return load_sac_actor(path)  # the actor alone, as `control dsrl` writes it and as PointNav's ships
    if not path.is_file():
        raise InputError(f"dsrl: no noise policy at {value!r}: train one with `steerable control dsrl`")
    return load_na_actor(path) if path.suffix == ".pt" else load_noise_policy(path)  # .pt: --variant na


def tgpo_dir(value: str) -> Path:
    return BUILTIN / "tgpo" if value == "builtin" else Path(value)


def _allocation_critic(value: str, env: str):
    from steerable.control.policies.critics import AllocationCritic

    return AllocationCritic.load(tgpo_dir(value) / "critic")


_CRITIC = Artifact("IQL critic directory (`steerable control train-q`), or builtin.", _iql, field="critic")
METHODS = Registry(
    "control method",
    {
        "base": Entry(Controller, "ignored: one chunk per prediction", "the policy as trained (BC)"),
        "vgps": Entry(
            VGPS, "K chunks sampled per control step, the best by Q executed", "value-guided policy steering",
            hidden=frozenset({"k"}), extra={"budget": "k", "artifacts": {"critic": _CRITIC}},
        ),
        "rti": Entry(
            RTI, "K' denoising steps per prediction, warm-started (1 action executed)", "real-time iteration",
            hidden=frozenset({"k_prime"}), extra={"budget": "k_prime"},
        ),
        "ptp": Entry(
            PTP, "M candidates per prediction, verified on the past actions", "past-token prediction",
            hidden=frozenset({"m"}), extra={"budget": "m"},
        ),
        "stl": Entry(
            STLGuided, "guided last denoising steps (at most the policy's DDIM steps)", "CTG-style STL guidance",
            hidden=frozenset({"last"}), extra={"budget": "last", "most": "steps_inference"},
        ),
        "fk": Entry(
            STLFK, "particles per prediction", "FK steering toward STL robustness",
            hidden=frozenset({"particles"}), extra={"budget": "particles"},
        ),
        "dsrl": Entry(
            DSRLController, "ignored: the noise policy's one chunk per prediction", "a learnt latent-noise policy",
            extra={"artifacts": {"noise_policy": Artifact(
                "The noise policy of `steerable control dsrl` (its directory, sac.zip, or actor.pt of --variant na), "
                "or builtin.", _noise_policy, field="noise_policy")}},
        ),
        "search": Entry(
            Lookahead, "plans: the strategy's budget (each plan depth chunks run in env forks)",
            "a search strategy over chunks run in env forks, scored by r + gamma^n V",
            hidden=frozenset({"budget"}), extra={"budget": "budget", "artifacts": {"critic": _CRITIC}},
        ),
        "tgpo": Entry(
            TGPO, "allocations scored per episode", "deadlines for STLNav's subgoals chosen by V(s0, tau)",
            hidden=frozenset({"budget", "prior"}), extra={"budget": "budget", "env": "stlnav", "artifacts": {
                "tgpo": Artifact("The directory of `steerable control tgpo` (policy/ and critic/), or builtin.",
                                 _allocation_critic, field="critic",
                                 needed=lambda options: options.get("search") != "random")}},
        ),
    },
)  # fmt: skip


@dataclass(frozen=True)
class EvalConfig:
    """How ``steerable control eval`` runs (the CLI's flags are these fields)."""

    env: str = opt(
        "builtin:pointnav", "builtin:pointnav, builtin:memorynav, builtin:stlnav, builtin:cuenav or Pendulum-v1."
    )
    method: str = opt("base", "A control method: " + ", ".join(METHODS) + ".", min_len=1)
    budget: int = opt(1, "What it counts depends on the method (the command's help lists them).", ge=1, le=1024)
    episodes: int = opt(200, "Episodes (seeded: episode i starts at seed*1000003 + i).", ge=1, le=100_000)
    seed: int = opt(0, "Seed.", ge=0)
    policy: str = opt("builtin", "Diffusion policy directory, or 'builtin' (the shipped one for --env).")
    execute: int = opt(0, "Actions run per prediction (0: the policy's own; rti always runs 1).", ge=0, le=64)
    set: tuple[str, ...] = opt(
        (), "A method option NAME=VALUE (repeat): critic=DIR, beta=0.5, mode=renoise, strategy=beam ...", sep=None
    )
    resume: str = opt("", "JSONL file of finished episodes: appended to, and a rerun skips them.")
    threads: int = opt(1, "torch threads.", ge=1, le=256)

    def __post_init__(self) -> None:
        check(self, "eval: ")
        METHODS.entry(self.method)
        self.options()

    def options(self) -> dict[str, Any]:
        """``--set`` as a mapping (:func:`steerable.config.parse_pairs`: JSON where a value parses, else text)."""
        return parse_pairs(self.set)


def method_options(name: str) -> list[str]:
    """What ``--set`` takes for ``name``: its artifacts, then its controller's fields the command does not fill."""
    arts: Mapping[str, Artifact] = METHODS.entry(name).extra.get("artifacts", {})
    filled = {"policy", "execute", *arts, *(a.field for a in arts.values() if a.field)}
    return [*arts, *METHODS.settable(name, frozenset(filled))]


def options_help() -> str:
    """A table of each method, what its --budget counts and its --set options (``steerable control eval --help``;
    ``\\b`` keeps click from rewrapping it)."""
    width = max(map(len, METHODS))
    rows = [
        f"{n:<{width}}  --budget: {b}; --set: {', '.join(method_options(n)) or 'none'}" for n, b, _ in METHODS.table()
    ]
    return "\b\n" + "\n".join(rows)


def load_policy(cfg: EvalConfig, options: Mapping[str, Any] | None = None):
    """The diffusion policy ``cfg`` names (tgpo: its run's time-conditioned policy; ``options`` default ``--set``)."""
    from steerable.control.policies.diffusion_policy import DiffusionPolicy

    if cfg.method == "tgpo":
        run = (cfg.options() if options is None else options).get("tgpo", "builtin")
        return DiffusionPolicy.load(tgpo_dir(str(run)) / "policy")
    path = builtin_dir(cfg.env, "policy") if cfg.policy == "builtin" else Path(cfg.policy)
    if cfg.policy == "builtin" and not path.exists():
        raise InputError(
            f"no shipped policy for {cfg.env}: train one with `steerable control train-policy` and pass --policy DIR"
        )
    return DiffusionPolicy.load(path)


def make_controller(cfg: EvalConfig, policy, options: Mapping[str, Any] | None = None) -> Controller:
    """``cfg.method``'s controller over ``policy``: ``--budget`` fills its budget field, ``options`` (default:
    ``--set``) its other fields, artifacts loaded."""
    name = cfg.method
    entry = METHODS.entry(name)
    values = dict(cfg.options() if options is None else options)
    arts: Mapping[str, Artifact] = entry.extra.get("artifacts", {})
    world = entry.extra.get("env")
    if world is not None and not cfg.env.endswith(world):
        raise ConfigError(f"{name} plans {world}'s task: run it with --env builtin:{world} (got {cfg.env})")
    passed: dict[str, Any] = {"policy": policy, "execute": cfg.execute or None}
    unknown = sorted(set(values) - set(method_options(name)))
    if unknown:
        raise ConfigError(f"{name}: no option {', '.join(unknown)}: use {', '.join(method_options(name)) or 'none'}")
    for key, art in arts.items():
        value = values.pop(key, art.default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name}: {key} takes a path ({art.help}): --set {key}=PATH")
        if art.field is not None and art.needed(values):
            passed[art.field] = art.load(value, cfg.env)
    if "budget" in entry.extra:  # a budget past the policy's own "most" (stl: its DDIM steps) takes them all
        most = getattr(policy, entry.extra["most"]) if "most" in entry.extra else cfg.budget
        passed[entry.extra["budget"]] = min(cfg.budget, most)
    return METHODS.build(name, values, **passed)
