"""Sanity limits checked before anything sized by a file, a message or an option is allocated.

A header or an option can ask for any size; these limits turn an absurd request into
one clear error instead of a machine that swaps to death. Each can be raised from the
environment for unusual hardware:

``HEXSPEC_MAX_ALLOCATION_GB``  largest single array built from untrusted sizes (default 16)
``HEXSPEC_MAX_BINS``           most energy bins of a histogram (default 1,000,000)
``HEXSPEC_MAX_PIXELS``         most pixels of a detector (default 4096 x 4096)
"""

from __future__ import annotations

import math
import os

from .errors import ConfigError


def _env_number(name, default):
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, found {text!r}") from None
    if not value > 0:
        raise ConfigError(f"{name}: expected a positive number, found {text!r}")
    return value


MAX_ALLOCATION_BYTES = int(_env_number("HEXSPEC_MAX_ALLOCATION_GB", 16) * 2 ** 30)
MAX_BINS = int(_env_number("HEXSPEC_MAX_BINS", 1_000_000))
MAX_PIXELS = int(_env_number("HEXSPEC_MAX_PIXELS", 4096 * 4096))


def check_allocation(shape, itemsize: int, what: str, error=ConfigError) -> int:
    """Bytes of an array of ``shape``; raises ``error`` if over :data:`MAX_ALLOCATION_BYTES`.

    Sizes are multiplied as Python integers, so a hostile shape cannot wrap around.
    """
    dims = [int(s) for s in shape]
    if any(d < 0 for d in dims):
        raise error(f"{what}: expected sizes >= 0, found shape {tuple(dims)}")
    nbytes = math.prod(dims) * int(itemsize)
    if nbytes > MAX_ALLOCATION_BYTES:
        raise error(f"{what}: shape {tuple(dims)} would need {nbytes / 2 ** 30:,.1f} GiB, more than the "
                    f"{MAX_ALLOCATION_BYTES / 2 ** 30:g} GiB allowed (HEXSPEC_MAX_ALLOCATION_GB)")
    return nbytes


def check_detector_shape(shape, what: str, error=ConfigError) -> tuple:
    """(rows, cols) as ints; raises ``error`` unless both are >= 1 and rows*cols <= MAX_PIXELS."""
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1 or rows * cols > MAX_PIXELS:
        raise error(f"{what}: expected a detector of 1..{MAX_PIXELS} pixels (HEXSPEC_MAX_PIXELS), "
                    f"found {rows} x {cols}")
    return rows, cols
