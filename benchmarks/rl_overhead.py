"""Step time of our policy losses against TRL's own GRPO loss, in one run on the built-in model.

Every variant trains the same fresh copy of the built-in model on the same
prompts with the same seed, for ``--steps`` steps, in rotation over
``--rounds`` rounds: TRL's ``loss_type="grpo"`` (``trl_grpo``), and ours:
``grpo``, ``dapo``, ``clip_cov``, ``kl_cov``. Two times per step: the whole
step (generation, scoring, loss, backward, optimiser; TRL's ``step_time``)
and the loss alone (``compute_loss``: the forward pass that gives per-token
log-probabilities, the loss and its statistics). Prints medians and the ratios
to TRL's (target <= 1.1).

    python benchmarks/rl_overhead.py [--steps 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

from _common import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    setup()
    warnings.filterwarnings("ignore")
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig

    from steerable.lm.loading import load_model
    from steerable.rl.algos import ALGOS, rl_config_for
    from steerable.rl.rewards import exact_reward
    from steerable.rl.session import task_rows
    from steerable.rl.trainer import SteerableGRPOTrainer as Trainer
    from steerable.tasks.builtin.verifier import extract_answer

    extract = lambda t: None if extract_answer(t) is None else str(extract_answer(t))  # noqa: E731
    ds = Dataset.from_list(task_rows("builtin:medium", 512, 0))
    variants = ["trl_grpo", "grpo", "dapo", "clip_cov", "kl_cov"]
    step_t: dict[str, list[float]] = {v: [] for v in variants}
    loss_t: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for name in variants:
            model, tok = load_model("builtin", device="cpu")
            algo = ALGOS[name]
            with tempfile.TemporaryDirectory() as tmp:
                cfg = GRPOConfig(
                    output_dir=tmp,
                    per_device_train_batch_size=32,
                    num_generations=8,
                    max_completion_length=160,
                    learning_rate=1e-5,
                    beta=0.0,
                    loss_type="grpo",
                    epsilon_high=rl_config_for(algo).eps_high,
                    max_steps=args.steps,
                    logging_steps=1,
                    save_strategy="no",
                    report_to="none",
                    use_cpu=True,
                    disable_tqdm=True,
                    seed=0,
                    data_seed=0,
                )
                tr = Trainer(
                    model=model,
                    processing_class=tok,
                    reward_funcs=[exact_reward(extract)],
                    args=cfg,
                    train_dataset=ds,
                    algo=algo,
                    rl_config=rl_config_for(algo),
                    extract=extract,
                )
                tr.remove_callback(PrinterCallback)
                inner = tr.compute_loss

                def timed(*a, _inner=inner, _name=name, **k):
                    t0 = time.perf_counter()
                    out = _inner(*a, **k)
                    loss_t[_name].append(time.perf_counter() - t0)
                    return out

                tr.compute_loss = timed
                tr.train()
                step_t[name] += [h["step_time"] for h in tr.state.log_history if "step_time" in h][1:]  # no warm-up
    base_s, base_l = statistics.median(step_t["trl_grpo"]), statistics.median(loss_t["trl_grpo"])
    print(f"built-in model, 4 prompts x 8 rollouts per step, {args.steps} steps x {args.rounds} rounds each")
    print(f"{'loss':<10} {'step s':>8} {'ratio':>6} {'loss ms':>8} {'ratio':>6}")
    for name in variants:
        s, lo = statistics.median(step_t[name]), statistics.median(loss_t[name])
        print(f"{name:<10} {s:>8.3f} {s / base_s:>6.3f} {lo * 1000:>8.1f} {lo / base_l:>6.3f}")


if __name__ == "__main__":
    main()
