"""Inlined uniform random numbers for the simulator's numba kernels.

numpy's Generator is usable inside numba, but each draw is an indirect call (about
6 ns here); the kernels need about ten uniforms per photon, so they use xoshiro256**
(Blackman and Vigna 2018), inlined by numba (about 1 ns a draw). Its 256-bit state is
seeded from the caller's numpy Generator for every batch, so results stay a pure
function of the simulator seed. Gaussian, exponential and Poisson draws still come from
the Generator (ziggurat methods, already fast).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

_U53 = 1.0 / 9007199254740992.0   # 2**-53


def new_state(rng):
    """A xoshiro256** state (4 uint64, not all zero) drawn from a numpy Generator."""
    state = rng.integers(0, np.iinfo(np.uint64).max, size=4, dtype=np.uint64, endpoint=True)
    if not state.any():
        state[0] = 1
    return state


@njit(cache=True, nogil=True, inline="always")
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(cache=True, nogil=True, inline="always")
def next_uint64(state):
    """Next 64-bit output of xoshiro256** (updates ``state`` in place)."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    result = _rotl(s1 * uint64(5), 7) * uint64(9)
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return result


@njit(cache=True, nogil=True, inline="always")
def uniform(state):
    """A double uniform on [0, 1) from the top 53 bits."""
    return (next_uint64(state) >> uint64(11)) * _U53
