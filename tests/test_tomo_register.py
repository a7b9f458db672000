"""Registration of a porosity-like image onto a Compton-like image of the same phantom."""

import math

import numpy as np
import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("skimage")

from hexspec.errors import ConfigError
from hexspec.tomo import register

N = 80
C = (N - 1) / 2.0
_rng = np.random.default_rng(11)
# (row, col, sigma, amplitude) of smooth blobs: an analytic phantom that can be sampled anywhere
BLOBS = np.column_stack([_rng.uniform(10, 70, 25), _rng.uniform(10, 70, 25), _rng.uniform(2, 6, 25),
                         _rng.uniform(0.3, 1.0, 25)])
YY, XX = np.mgrid[0:N, 0:N].astype(float)


def phantom(y, x):
    g = np.zeros_like(y)
    for by, bx, s, a in BLOBS:
        g += a * np.exp(-((y - by) ** 2 + (x - bx) ** 2) / (2 * s * s))
    return g


def compton_like(rng):
    """Poisson counts rising with the phantom (the fixed image)."""
    return rng.poisson(200.0 * (0.3 + phantom(YY, XX))).astype(float)


def porosity_like(dy, dx, angle_rad, rng):
    """Inverted contrast, Gaussian noise, sampled where a moving pixel q lands on the fixed grid:
    p = R(angle) (q - c) + c + (dy, dx), R rotating (x, y) = (col, row)."""
    qx, qy = XX - C, YY - C
    px = math.cos(angle_rad) * qx - math.sin(angle_rad) * qy + C + dx
    py = math.sin(angle_rad) * qx + math.cos(angle_rad) * qy + C + dy
    return 0.5 - 0.3 * phantom(py, px) + rng.normal(0.0, 0.01, (N, N))


@pytest.mark.parametrize("dy, dx, angle_deg", [(2.3, -1.7, 0.0), (1.2, 3.4, 3.0), (-4.1, 2.2, -5.0)])
def test_rigid_mutual_information_recovers_shift_and_rotation_across_modalities(dy, dx, angle_deg):
    rng = np.random.default_rng(int(10 * abs(dy)))
    fixed = compton_like(rng)
    reg = register(fixed, porosity_like(dy, dx, math.radians(angle_deg), rng), "rigid")
    assert reg.shift_px[0] == pytest.approx(dy, abs=0.2)
    assert reg.shift_px[1] == pytest.approx(dx, abs=0.2)
    assert math.degrees(reg.angle_rad) == pytest.approx(angle_deg, abs=0.2)
    assert reg.scale == 1.0
    # the resampled moving image is anti-correlated with the fixed one where they overlap
    inside = reg.apply(np.ones((N, N))) > 0.999
    assert np.corrcoef(fixed[inside], reg.resampled[inside])[0, 1] < -0.9


def test_matrix_maps_moving_points_onto_fixed_points():
    rng = np.random.default_rng(3)
    dy, dx, angle = -2.0, 1.5, math.radians(4.0)
    reg = register(compton_like(rng), porosity_like(dy, dx, angle, rng), "similarity")
    q = np.array([10.0, 60.0, 1.0])        # (y, x) of a moving pixel
    qx, qy = q[1] - C, q[0] - C
    expected = (math.sin(angle) * qx + math.cos(angle) * qy + C + dy, math.cos(angle) * qx - math.sin(angle) * qy + C + dx)
    assert reg.matrix @ q == pytest.approx([*expected, 1.0], abs=0.3)
    assert reg.scale == pytest.approx(1.0, abs=0.01)


def test_quality_is_higher_for_the_registered_pair_than_for_unrelated_noise():
    rng = np.random.default_rng(4)
    fixed = compton_like(rng)
    good = register(fixed, porosity_like(1.0, 1.0, 0.0, rng), "translation")
    noise = register(fixed, rng.normal(size=(N, N)), "translation")
    assert good.quality > 1.2 > noise.quality


def test_phase_correlation_finds_a_subpixel_shift_between_images_of_one_modality():
    rng = np.random.default_rng(5)
    fixed = compton_like(rng)
    # moving(q) = phantom(q + (-1.5, 2.25)): the map onto fixed is p = q + (-1.5, 2.25)
    moving = rng.poisson(200.0 * (0.3 + phantom(YY - 1.5, XX + 2.25))).astype(float)
    reg = register(fixed, moving, "translation", method="phase_correlation")
    assert reg.shift_px == pytest.approx((-1.5, 2.25), abs=0.1)
    assert reg.angle_rad == 0.0


def test_masks_restrict_the_metric_to_the_electrode():
    rng = np.random.default_rng(6)
    fixed = compton_like(rng)
    moving = porosity_like(1.8, -2.6, 0.0, rng)
    moving[:, :15] = rng.uniform(0, 5, (N, 15))   # clutter outside the electrode
    mask = np.ones((N, N), bool)
    mask[:, :15] = False
    reg = register(fixed, moving, "translation", moving_mask=mask)
    assert reg.shift_px == pytest.approx((1.8, -2.6), abs=0.2)


@pytest.mark.parametrize("kwargs, words", [
    (dict(transform="perspective"), "transform must be one of"),
    (dict(method="phase_correlation", transform="rigid"), "translations only"),
])
def test_bad_options_are_one_clear_error(kwargs, words):
    img = np.zeros((20, 20))
    with pytest.raises(ConfigError, match=words):
        register(img, img, **kwargs)


def test_non_finite_pixels_are_refused():
    img = np.zeros((20, 20))
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        register(img, bad)
