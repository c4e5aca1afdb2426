"""What ``GET /v1/playground`` says about a language-model server: its steering artifacts and scaling methods.

The Steering and Search tabs build their controls from this: one slider per
artifact (its kind's range around the strength it was saved with), the
methods a ``scaling`` request accepts with the budget the API uses when none
is given, and, for the built-in model, held-out arithmetic problems to try
(the response of a scaling run on one of them says whether its answer is
right: ``steerable.correct``).
"""

from __future__ import annotations

from typing import Any

#: the budget a ``scaling`` request without one gets (the schema's default)
DEFAULT_BUDGET = 4


def artifact_entry(name: str, art: Any) -> dict:
    """``{"name", "kind", "strength", "range", "per_layer_weights"}`` for one loaded artifact.

    ``range`` is the slider's: a vector from minus to plus three times its
    saved strength (0 is no steering, a negative one pushes the other way);
    a controller's alpha and RICE's beta from 0 to three times theirs (neither
    is meant negative: RICE refuses one). A direction that is ablated has no
    strength (the slider is an on/off box). Any strength the API accepts (|s| <= 100) can still be sent.
    """
    from steerable.serve.schemas import MAX_STRENGTH
    from steerable.steer.controller import Controller

    def clip(lo: float, hi: float) -> list[float]:
        return [max(-MAX_STRENGTH, lo), min(MAX_STRENGTH, hi)]

    if isinstance(art, Controller):
        a = float(art.config.alpha)
        return {"name": name, "kind": "controller", "strength": a, "range": clip(0.0, 3 * a),
                "per_layer_weights": True}  # fmt: skip
    if hasattr(art, "beta"):  # RICE: a multiplier on chosen experts' routing weights (1 leaves them alone)
        b = float(art.beta)
        return {"name": name, "kind": "rice", "strength": b, "range": clip(0.0, max(3 * b, 2.0)),
                "per_layer_weights": False}  # fmt: skip
    if getattr(art, "mode", "add") == "ablate":
        return {"name": name, "kind": "direction", "strength": None, "range": None, "per_layer_weights": False}
    s = float(getattr(art, "strength", 1.0))
    top = 3 * abs(s) or 3.0
    return {"name": name, "kind": "vector", "strength": s, "range": clip(-top, top), "per_layer_weights": False}


def lm_keys(steering: dict[str, Any], config, builtin: bool) -> dict:
    """What the Steering and Search tabs add to ``GET /v1/playground`` over the shell's
    :func:`~steerable.serve.playground.lm_info`: ``sliders`` (each artifact's slider range and whether it reports
    per-layer weights, by name), ``scaling`` (each method's default budget, the scorers), ``builtin``, and on the
    built-in model held-out ``problems``."""
    from steerable.search.registry import METHODS, UNSCORED

    budget = min(DEFAULT_BUDGET, config.max_budget)
    methods = [
        {"name": name, "budget": 1 if name == "greedy" else budget, "scored": name not in UNSCORED,
         "summary": entry.summary, "budget_counts": entry.budget}
        for name, entry in METHODS.entries.items()
    ]  # fmt: skip
    out: dict = {
        # beside the shell's "steering" list (name, kind, strength): each artifact's slider
        "sliders": {name: artifact_entry(name, art) for name, art in sorted(steering.items())},
        # in the server's order: the first is the one a request that names none gets
        "scaling": {"methods": methods, "scorers": list(config.scorers), "default_budget": budget},
        "builtin": builtin,
    }
    if builtin:
        from steerable.tasks.builtin.arithmetic import eval_problems

        # held-out problems (never in the model's training data), two to four operations
        out["problems"] = [p.prompt for p in eval_problems("medium", 12)] + [p.prompt for p in eval_problems("easy", 4)]
    return out
