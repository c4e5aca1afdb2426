"""The built-in digits world: scikit-learn's bundled 8x8 digits, a reward that steers and a judge that checks.

- Data: ``sklearn.datasets.load_digits`` (1,797 images, bundled in the wheel:
  no download), pixels 0..16 scaled to [-1, 1], flattened to 64 values.
- Split: a fixed permutation (seed 0) cuts the data in two halves. The
  **reward** is a logistic regression fitted on half A; the **judge** is an
  RBF SVC fitted on half B. A sample that games the reward (an image the
  linear model likes but that is no digit) does not fool the judge, so the
  judge's verdict is what counts as success.
- Reward: r(x) = log p(target | x) under the logistic regression, <= 0. It is
  a torch linear layer holding the fitted weights, so reward guidance can take
  its gradient. Its weights are shipped (``builtin/digits/reward.safetensors``,
  2.6 kB) rather than refitted: every machine, the server and a GPU box
  without scikit-learn then score with exactly the same function.
- Judge: fitted at load (about 25 ms on one core). It is evaluation only, and
  shipping its ~900 support vectors would mean re-implementing libsvm's
  one-vs-one RBF decision function beside scikit-learn's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from steerable.errors import InputError

BUILTIN = Path(__file__).parent / "builtin" / "digits"
SPLIT_SEED = 0
SHAPE = (64,)


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """``(x [1797, 64] in [-1, 1], labels [1797])``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 8.0 - 1.0).astype(np.float32), d.target.astype(np.int64)


def split() -> tuple[np.ndarray, np.ndarray]:
    """Row indices of half A (the reward's) and half B (the judge's)."""
    n = 1797
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    return perm[: n // 2], perm[n // 2 :]


def parse_target(prompt: str) -> int:
    """A digits prompt is the target digit, ``"0"`` .. ``"9"``."""
    p = str(prompt).strip()
    if len(p) != 1 or not p.isdigit():
        raise InputError(f"a digits target must be one digit 0-9 (got {prompt!r})")
    return int(p)


class DigitReward(torch.nn.Module):
    """r(x) = log p(target | x) from the shipped logistic regression; range (-inf, 0].

    ``score`` is the :class:`~steerable.reward.scorer.Scorer` entry (floats,
    no gradient); ``reward`` is differentiable for guidance.
    """

    range = (float("-inf"), 0.0)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
        self.requires_grad_(False)
        self.calls = 0
        self.forward_tokens = 0  # a scorer's token counter; this one runs no language model

    @classmethod
    def load(cls, directory: Path = BUILTIN) -> DigitReward:
        w = load_file(str(Path(directory) / "reward.safetensors"))
        return cls(w["weight"], w["bias"])

    def reward(self, prompts: Sequence[str], samples: torch.Tensor) -> torch.Tensor:
        """``[rows]`` log p(target | x), differentiable in ``samples`` ``[rows, 64]``."""
        targets = torch.tensor([parse_target(p) for p in prompts], device=samples.device)
        logp = torch.log_softmax(self.linear(samples.reshape(len(samples), -1).float()), dim=-1)
        return logp.gather(1, targets[:, None]).squeeze(1).clamp(max=0.0)

    def score(self, prompts: Sequence[str], samples: torch.Tensor) -> list[float]:
        self.calls += 1
        with torch.no_grad():
            return self.reward(prompts, torch.as_tensor(samples)).tolist()


class DigitJudge:
    """The independent judge: an RBF SVC fitted on half B; ``correct`` says whether a sample shows its target."""

    def __init__(self) -> None:
        from sklearn.svm import SVC

        x, y = load_data()
        _, b = split()
        self.svc = SVC(C=10.0, gamma="scale").fit(x[b], y[b])

    def predict(self, samples: torch.Tensor | np.ndarray) -> list[int]:
        x = torch.as_tensor(samples).detach().reshape(len(samples), -1).float().clamp(-1, 1).cpu().numpy()
        return [int(c) for c in self.svc.predict(x)]

    def answer(self, sample: torch.Tensor) -> str:
        """The digit the judge sees in one sample, as a string (the runner's extracted answer)."""
        return str(self.predict(torch.as_tensor(sample)[None])[0])


@functools.cache
def judge() -> DigitJudge:
    return DigitJudge()
