"""The counter-based streams against from-scratch splitmix64 and against the properties rows rely on."""

import math

import torch

from steerable.streams import derive_seed, gaussian, item_seed, mix, stream, uniforms

M64 = (1 << 64) - 1


def splitmix64_first(state: int) -> int:
    """The first output of Steele et al.'s splitmix64 from ``state``, written from the paper's pseudocode."""
    z = (state + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def test_stream_of_zero_is_splitmix64s_published_first_output():
    # splitmix64 seeded with 0 first returns 0xE220A8397B1DCDAF (the reference implementation's value)
    assert stream(0) % (1 << 64) == 0xE220A8397B1DCDAF == splitmix64_first(0)


def test_stream_chains_splitmix_over_its_parts():
    a, b = 12345, 678
    z = splitmix64_first((a * 0xBF58476D1CE4E5B9) & M64)
    z = splitmix64_first((z + b * 0xBF58476D1CE4E5B9) & M64)
    assert stream(a, b) % (1 << 64) == z
    assert -(1 << 63) <= stream(a, b) < (1 << 63)


def test_mix_is_a_63_bit_seed_that_depends_on_order():
    z = 0
    for v in (3, 9):
        z = (z * 0x9E3779B97F4A7C15 + v + 0x632BE59BD9B4E019) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
    assert mix(3, 9) == z >> 1
    assert 0 <= mix(3, 9) < (1 << 63)
    assert mix(3, 9) != mix(9, 3)


def test_derive_seed_reads_a_string_key_by_its_crc32_and_item_seed_is_affine():
    import zlib

    assert derive_seed(5, "round", 2) == mix(5, zlib.crc32(b"round"), 2)
    assert item_seed(2, 7) == 2 * 1_000_003 + 7


def test_uniforms_are_the_finalised_counter_of_seed_position_and_index():
    streams = torch.tensor([[mix(1), 4]])
    u = uniforms(streams, 3)
    for k in range(3):
        c = (mix(1) * 0x9E3779B97F4A7C15 + 4 * 0xBF58476D1CE4E5B9 + k * 0x94D049BB133111EB) & M64
        bits = splitmix64_first(c)
        assert u[0, k].item() == ((bits >> 11) + 0.5) / 2**53


def test_a_rows_gaussian_is_its_own_whatever_its_batch_and_looks_standard_normal():
    rows = torch.tensor([stream(0, r) for r in range(400)])
    block = gaussian(rows, 3, 50)
    assert torch.equal(gaussian(rows[7:8], 3, 50), block[7:8])  # one row alone draws what it drew in the batch
    assert not torch.equal(gaussian(rows, 4, 50), block)  # the next step draws anew
    x = block.flatten()
    assert abs(x.mean().item()) < 0.03 and abs(x.std().item() - 1) < 0.03
    # Box-Muller on the counters 0 and 1 of (stream, step): r = sqrt(-2 ln u1), (r cos 2 pi u2, r sin 2 pi u2)
    s, step = stream(0, 0), 0
    u = []
    for c in (0, 1):
        z = (s * 0x9E3779B97F4A7C15 + (step + 1) * 0x94D049BB133111EB + c * 0xBF58476D1CE4E5B9) & M64
        u.append(((splitmix64_first(z) >> 11) + 0.5) / 2**53)
    r = math.sqrt(-2 * math.log(u[0]))
    pair = gaussian(torch.tensor([s]), step, 2)[0]
    assert abs(pair[0].item() - r * math.cos(2 * math.pi * u[1])) < 1e-12
    assert abs(pair[1].item() - r * math.sin(2 * math.pi * u[1])) < 1e-12


def test_forks_keep_the_first_copys_stream_and_branch_the_others_where_the_row_stands():
    from steerable.streams import forks

    parents, at = [11, 22, 33], [5, 6, 7]
    got = forks(parents, [2, 0, 2, 2], at)
    assert got == [33, 11, stream(33, 1, 7), stream(33, 2, 7)]
    assert forks(parents, [1, 1], at, mix) == [22, mix(22, 1, 6)]


def test_gaussian_with_a_step_per_row_draws_what_each_row_draws_alone():
    from steerable.streams import gaussian

    streams, steps = torch.tensor([5, 9, 5, 123]), torch.tensor([0, 4, 7, 4])
    both = gaussian(streams, steps, 5)
    for r in range(4):
        assert torch.equal(both[r], gaussian(streams[r : r + 1], int(steps[r]), 5)[0])
