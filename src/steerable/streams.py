"""Counter-based random streams: every row draws from its own, so its sample never depends on its batch-mates.

One module for every family. A row's random numbers are a pure function of
(its stream, a position, an element index): splitmix64's finaliser (Steele,
Lea and Flood, "Fast splittable pseudorandom number generators") turns each
counter into 64 random bits, with no generator object to carry, copy or fork.
A forked row gets a new stream mixed from its parent's, its copy number and
the step it forked at.

Two mixers, kept as they were because measured figures depend on their exact
values (a changed constant would re-draw every sample):

- :func:`mix` (63-bit, non-negative: any generator's seed) seeds language-model
  rows (:func:`uniforms`, Gumbel-max sampling in :mod:`steerable.lm.sampling`),
  a strategy's sub-streams (:func:`derive_seed`) and the HTTP backend's
  per-request seeds: every language-model figure.
- :func:`stream` (a signed 64-bit stream id, an int64 tensor element) seeds the
  Gaussian noise of diffusion and control rows (:func:`gaussian`) and every
  draw of the control room (episodes, forks, allocations): every diffusion and
  control figure.

New code takes :func:`mix` for a seed and :func:`stream` for a row of
:func:`gaussian`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1
_LOW = (1 << 63) - 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _srl(z: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> n) & (_LOW >> (n - 1))


def _finalise(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


# ---- seeds ------------------------------------------------------------------------------------------------


def mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 over their sum chain): language-model rows and sub-streams."""
    z = 0
    for v in values:
        z = (z * 0x9E3779B97F4A7C15 + v + 0x632BE59BD9B4E019) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z >> 1


def stream(*parts: int) -> int:
    """A signed 64-bit stream id from integers (a seed and a row; a parent stream, a copy number and a step):
    the rows of :func:`gaussian` (diffusion and control)."""
    z = 0
    for p in parts:
        z = (z + (p & _MASK64) * 0xBF58476D1CE4E5B9 + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return _signed(z)


def derive_seed(seed: int, *keys: int | str) -> int:
    """The seed of a sub-stream of a run seeded with ``seed`` (a strategy's round or sweep): :func:`mix` over
    ``seed`` and ``keys`` (a string by its CRC-32), so two sub-streams never share a seed the way ``seed + 7919 k``
    and another run's ``seed'`` can."""
    return mix(seed, *(zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys))


def item_seed(seed: int, i: int) -> int:
    """The seed of item ``i`` of a run seeded with ``seed`` (a scaling item, an evaluation episode).

    Kept as the plain ``seed * 1_000_003 + i`` rather than :func:`derive_seed`: results directories resume by these
    seeds and README's figures were measured with them, so changing the map would silently change both. Distinct
    for every (seed, i) with 0 <= i < 1,000,003."""
    return seed * 1_000_003 + i


def forks(streams: Sequence[int], rows: Sequence[int], at: Sequence[int], mixer=stream) -> list[int]:
    """The streams of ``rows`` selected from a batch (repeats fork): a row's first copy continues its stream, its
    k-th further copy branches off it as ``mixer(stream, k, at[row])`` (``at``: where the row stands, a step or a
    length, so forks at different points differ). Every process's ``select`` draws its copies' streams here
    (:func:`stream` for diffusion and control rows, :func:`mix` for language-model rows)."""
    out, copies = [], {}
    for r in rows:
        k = copies.get(r, 0)
        copies[r] = k + 1
        out.append(streams[r] if k == 0 else mixer(streams[r], k, at[r]))
    return out


# ---- draws ------------------------------------------------------------------------------------------------


def uniforms(streams: torch.Tensor, vocab: int) -> torch.Tensor:
    """Counter-based uniforms ``[rows, vocab]`` in (0, 1) from ``streams`` ``[rows, 2]`` = (row seed, position).

    One generator call per row and token cost more than the model at batch 64; this draws the whole
    block at once, and a row's numbers still depend only on its own seed and position.
    """
    z = streams[:, :1] * _GOLDEN + streams[:, 1:2] * _M1 + torch.arange(vocab, dtype=torch.long) * _M2
    return (_srl(_finalise(z + _GOLDEN), 11).double() + 0.5) / float(1 << 53)


def gaussian(streams: torch.Tensor, step: int | torch.Tensor, dims: int) -> torch.Tensor:
    """Standard normals ``[rows, dims]`` (float64) for each row's :func:`stream` at ``step`` (Box-Muller on pairs
    of counter-based uniforms); ``step`` is one int for every row or a ``[rows]`` tensor, one per row."""
    pairs = (dims + 1) // 2
    counter = torch.arange(2 * pairs, dtype=torch.long)
    steps = torch.as_tensor(step, dtype=torch.long)
    steps = steps[:, None] if steps.ndim else steps
    z = streams.long()[:, None] * _GOLDEN + (steps + 1) * _M2 + counter[None] * _M1
    u = (_srl(_finalise(z + _GOLDEN), 11).double() + 0.5) / float(1 << 53)  # (0, 1)
    u1, u2 = u[:, 0::2], u[:, 1::2]
    r = torch.sqrt(-2.0 * torch.log(u1))
    out = torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)], dim=1)
    return out[:, :dims]
