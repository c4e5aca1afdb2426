"""Counter-based Gaussian noise: every row draws from its own stream, so its sample never depends on its batch-mates.

Row r's noise at denoising step i is a pure function of (its stream id, i,
element index): splitmix64 (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators") turns each counter into a uniform, and
Box-Muller turns pairs of uniforms into standard normals. A whole
``[rows, dims]`` block is drawn in a few vectorised integer operations, with
no generator object to carry, copy or fork. A forked row gets a new stream
id mixed from its parent's, its copy number and the step it forked at.
"""

from __future__ import annotations

import math

import torch


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_LOW = (1 << 63) - 1


def _srl(z: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> n) & (_LOW >> (n - 1))


def _finalise(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


_MASK = (1 << 64) - 1


def mix(*parts: int) -> int:
    """A 64-bit stream id from integers (a seed and a row; a parent stream, a copy number and a step)."""
    z = 0
    for p in parts:
        z = (z + (p & _MASK) * 0xBF58476D1CE4E5B9 + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z ^= z >> 31
    return _signed(z)


def gaussian(streams: torch.Tensor, step: int, dims: int) -> torch.Tensor:
    """Standard normals ``[rows, dims]`` (float64) for each row's stream at ``step``."""
    pairs = (dims + 1) // 2
    counter = torch.arange(2 * pairs, dtype=torch.long)
    z = streams.long()[:, None] * _GOLDEN + torch.tensor(step + 1) * _M2 + counter[None] * _M1
    u = (_srl(_finalise(z + _GOLDEN), 11).double() + 0.5) / float(1 << 53)  # (0, 1)
    u1, u2 = u[:, 0::2], u[:, 1::2]
    r = torch.sqrt(-2.0 * torch.log(u1))
    out = torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)], dim=1)
    return out[:, :dims]
