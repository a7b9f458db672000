"""Running the per-pixel kernels of the calibration on pixel blocks in threads."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def in_blocks(kernel, npix, *args, threads=None):
    """Run ``kernel(first, last, *args)`` over pixel blocks in threads (the kernels release the GIL)."""
    threads = threads or min(os.cpu_count() or 1, 8)
    if threads == 1 or npix < 64:
        kernel(0, npix, *args)
        return
    # more blocks than threads so that slow pixels (long fits) do not leave a core idle
    bounds = np.linspace(0, npix, 4 * threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(kernel, int(a), int(b), *args) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        for f in futures:
            f.result()


def as_kernel_counts(flat):
    # Keep integer counts as they are (no 8-byte copy of a large cube); numba compiles one
    # kernel per dtype, so other dtypes are brought to one of two.
    if flat.dtype in (np.uint32, np.float64):
        return np.ascontiguousarray(flat)
    if flat.dtype.kind in "ui" and flat.size and flat.min() >= 0 and flat.max() <= np.iinfo(np.uint32).max:
        return np.ascontiguousarray(flat, dtype=np.uint32)
    return np.ascontiguousarray(flat, dtype=np.float64)
