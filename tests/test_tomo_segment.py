"""Segmentation steps and the reference chain on synthetic volumes of known phases."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.morphology import opening

from hexspec.errors import ConfigError
from hexspec.tomo import segment as seg


def electrode_phantom(seed=1, noise=0.15, sigma=3.0, porosity=0.3):
    """Slab electrode (z 8-39) of solid (1.0) with smooth pores (0.3) in air (0.0), plus noise.

    Pores stay two slices inside the slab faces, so the electrode's true outline is the slab.
    """
    rng = np.random.default_rng(seed)
    shape = (48, 64, 64)
    z = np.indices(shape)[0]
    electrode = (z >= 8) & (z < 40)
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    pores = (f < np.quantile(f, porosity)) & (z >= 10) & (z < 38)
    clean = np.where(electrode, np.where(pores, 0.3, 1.0), 0.0)
    return clean + rng.normal(0, noise, shape), electrode, pores


def test_ball_opening_by_distance_transforms_equals_skimage():
    rng = np.random.default_rng(0)
    m = ndi.gaussian_filter(rng.standard_normal((30, 30, 30)), 2) > 0
    for r in (1, 2, 4):
        ours = seg.binary_opening_ball(m, r)
        # skimage pads with background; compare away from the box faces, where the edge
        # padding of ours and skimage's differ by construction
        ref = opening(m, seg.ball(r))
        inner = (slice(r + 1, -r - 1),) * 3
        assert np.mean(ours[inner] != ref[inner]) < 1e-3


def test_largest_component_and_otsu_threshold():
    m = np.zeros((10, 10, 10), bool)
    m[1:3, 1:3, 1:3] = True
    m[5:9, 5:9, 5:9] = True
    big = seg.largest_component(m)
    assert big.sum() == 64 and big[6, 6, 6] and not big[1, 1, 1]
    values = np.r_[np.full(500, 10.0), np.full(300, 20.0)]
    assert 10.0 <= seg.otsu_threshold(values) < 20.0
    with pytest.raises(ConfigError, match="distinct"):
        seg.otsu_threshold(np.ones(10))


def test_median_removes_salt_noise():
    v = np.zeros((9, 9, 9))
    v[4, 4, 4] = 100.0
    assert seg.median3(v).max() == 0.0


def test_chain_recovers_electrode_and_porosity_of_a_noisy_phantom():
    vol, electrode, pores = electrode_phantom()
    true_porosity = pores.sum() / electrode.sum()
    s = seg.segment_electrode(vol, opening_radius=11)
    assert np.mean(s.electrode_mask != electrode) < 1e-3
    found = np.mean(s.labels[s.electrode_mask] == seg.PORE)
    # the 3x3x3 median rounds the pores' corners: a few percent of their volume
    assert found == pytest.approx(true_porosity, abs=0.02)
    assert np.mean((s.labels == seg.PORE) != pores) < 0.02
    assert [st["step"] for st in s.steps] == ["median", "electrode_threshold", "opening", "largest_component",
                                             "pore_mouths", "unsharp_mask", "phase_threshold"]
    assert s.steps[2]["radius_voxels"] == 11.0
    assert set(np.unique(s.labels)) == {0, 1, 2}


def test_pores_open_at_both_faces_of_the_electrode_stay_in_it():
    # A disc of 15 slices crossed by vertical channels (as in a calendered cathode): the
    # channels' mouths on both faces are pores of the electrode, not space outside it.
    rng = np.random.default_rng(4)
    shape = (19, 96, 96)
    z, y, x = np.indices(shape)
    electrode = (z >= 2) & (z < 17) & ((y - 47.5) ** 2 + (x - 47.5) ** 2 < 42.0 ** 2)
    field = ndi.gaussian_filter(rng.standard_normal(shape[1:]), 2.0)
    pores = electrode & (field < np.quantile(field, 0.3))[None]
    vol = np.where(electrode & ~pores, 1.0, 0.0) + rng.normal(0, 0.05, shape)
    s = seg.segment_electrode(vol, median=False, unsharp=None)
    # (the ball still dips into the pore mouths on the disc's rim: compare inside it)
    inner = (z >= 2) & (z < 17) & ((y - 47.5) ** 2 + (x - 47.5) ** 2 < 36.0 ** 2)
    assert np.mean(s.electrode_mask[inner]) > 0.9995
    found = s.labels == seg.PORE
    for k in (2, 9, 16):   # both face slices and the middle slice
        assert found[k][inner[k]].mean() == pytest.approx(pores[k][inner[k]].mean(), abs=0.005)


def test_chain_steps_are_optional_and_recorded():
    vol, electrode, _ = electrode_phantom(noise=0.05)
    s = seg.segment_electrode(vol, median=False, opening_radius=0, largest=False, pore_mouths=False, unsharp=None,
                              threshold=0.65)
    assert [st["step"] for st in s.steps] == ["electrode_threshold", "phase_threshold"]
    assert s.steps[-1]["method"] == "given" and s.thresholds.tolist() == [0.65]


def test_three_phases_by_multi_otsu():
    rng = np.random.default_rng(2)
    shape = (20, 40, 40)
    truth = rng.choice([1, 2, 3], size=shape, p=[0.3, 0.2, 0.5]).astype(np.uint8)
    truth = ndi.median_filter(truth, 3)               # blocky phases, not single voxels
    grey = np.choose(truth, [0.0, 0.25, 0.6, 1.0]) + rng.normal(0, 0.04, shape)
    s = seg.segment_electrode(grey, median=False, opening_radius=0, largest=False, unsharp=None,
                              electrode_threshold=0.1, phases=3)
    assert s.phases == {"pore": 1, "binder": 2, "active": 3}
    assert len(s.thresholds) == 2
    for code in (1, 2, 3):
        assert np.mean(s.labels == code) == pytest.approx(np.mean(truth == code), abs=0.01)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="3-D"):
        seg.segment_electrode(np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="phases"):
        seg.segment_electrode(np.zeros((4, 4, 4)), phases=4)
