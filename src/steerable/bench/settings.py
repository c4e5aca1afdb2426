"""What a scaling run's numbers depend on, recorded in its directory so that no run resumes another's rows.

``settings.json`` holds the task (and a hash of its content), the model (and a
hash of its files), the scorer (and a hash of its files when it has any), the
sampling settings, the token caps, the delimiter and the budget unit. A rerun
into the same directory must bring the same settings: a different one is a
one-line :class:`~steerable.errors.ConfigError` naming the setting, never a
mix of two runs' rows. Methods, budgets and ``--limit`` may change between
runs: they choose which rows a run needs, not what a row means.
"""

from __future__ import annotations

import json
from pathlib import Path

from steerable.errors import ConfigError

SETTINGS = "settings.json"

#: How each setting is spelled on the command line, for messages.
FLAGS = {
    "task": "--task",
    "task_sha256": "the content of --task",
    "model": "--model",
    "model_sha256": "the model's files (--model)",
    "scorer": "--scorer",
    "scorer_sha256": "the scorer's files (--scorer)",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "seed": "--seed",
    "max_tokens": "--max-tokens",
    "max_step_tokens": "--max-step-tokens",
    "delimiter": "--delimiter",
    "budget_unit": "--budget-unit",
    "tokens_per_sample": "--tokens-per-sample",
    "answer_format": "--answer-format",
    "answer_regex": "--answer-regex",
    "http_mode": "--http-mode",
}


def scale_settings(task: str, seed: int, setup, temperature: float, top_p: float) -> dict:
    """The settings of one ``steerable scale`` directory (``setup``: a ``ScaleSetup``)."""
    from steerable.lm.loading import files_fingerprint, model_fingerprint
    from steerable.tasks.loader import task_fingerprint

    s = {"task": task, "task_sha256": task_fingerprint(task, seed), "model": setup.model}
    if setup.remote:
        s["model_name"] = setup.model_name
        s["http_mode"] = setup.http_mode
    else:
        s["model_sha256"] = model_fingerprint(setup.model)
    s["scorer"] = setup.scorer
    scorer_dir = _scorer_dir(setup.scorer)
    if scorer_dir is not None:
        s["scorer_sha256"] = files_fingerprint(scorer_dir)
    s.update(
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        max_tokens=setup.max_tokens,
        max_step_tokens=setup.max_step_tokens,
        delimiter=setup.delimiter,
        answer_format=setup.answer_format,
        answer_regex=setup.answer_regex,
    )
    return s


def _scorer_dir(scorer: str) -> Path | None:
    """The directory whose files a scorer's scores depend on, when it has one."""
    if scorer == "builtin-prm":
        from steerable.lm.builtin import BUILTIN_PRM_DIR

        return BUILTIN_PRM_DIR
    name = scorer.split(":", 1)[1] if scorer.startswith(("prm:", "orm:")) else scorer
    return Path(name) if Path(name).is_dir() else None


def record_settings(out: Path, settings: dict) -> dict:
    """Write ``settings`` to ``out/settings.json``, or check them against the ones already there.

    Returns the settings in force (the recorded ones, with any the new run
    leaves out, such as a measured ``tokens_per_sample``).
    """
    path = out / SETTINGS
    if not path.exists():
        if (out / "results.jsonl").exists() and (out / "results.jsonl").stat().st_size:
            raise ConfigError(
                f"{out} holds results.jsonl but no {SETTINGS} (an older steerable wrote it): its settings are unknown, "
                "so use another --out"
            )
        path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        return dict(settings)
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not readable JSON: fix or delete it, or use another --out") from None
    for key in sorted(settings, key=lambda k: k.endswith("_sha256")):  # name a flag before a hash it changes
        value = settings[key]
        if key in old and old[key] != value:
            what = FLAGS.get(key, key)
            raise ConfigError(
                f"{out} holds a run with {what} {_shown(old[key])}, this one has {_shown(value)}: "
                "resume with the same settings, or use another --out"
            )
    merged = {**settings, **old}
    if merged != old:
        path.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    return merged


def _shown(value) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
