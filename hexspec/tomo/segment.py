"""Segment a reconstructed electrode volume: filters, thresholds, electrode mask, phases.

The reference chain (PHYSICS.md section 6): 3x3x3 median, morphological opening
(radius 11 voxels), threshold, largest connected component (the electrode), unsharp
mask, binary pore/solid segmentation. :func:`segment_electrode` runs it with each step
optional and records every step with its parameters, in order.

Volumes are (z, y, x) arrays of grey values (attenuation: pores dark, solid bright).

Phase codes of the label volume (uint8)::

    0  outside the electrode
    1  pore
    2  solid                  (two phases)
    2  binder, 3 active       (three phases: pore < binder < active material in attenuation)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi

from ..errors import ConfigError

OUTSIDE, PORE, SOLID = 0, 1, 2
BINDER, ACTIVE = 2, 3
PHASES_2 = {"pore": PORE, "solid": SOLID}
PHASES_3 = {"pore": PORE, "binder": BINDER, "active": ACTIVE}


def _volume(volume, name="volume") -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ConfigError(f"{name}: expected a 3-D array (z, y, x), found shape {volume.shape}")
    if volume.dtype.kind not in "biuf":
        raise ConfigError(f"{name}: expected numbers, found dtype {volume.dtype}")
    return volume


def median3(volume) -> np.ndarray:
    """3x3x3 median filter (scipy.ndimage), edges by reflection."""
    return ndi.median_filter(_volume(volume), size=3, mode="reflect")


def ball(radius) -> np.ndarray:
    """Euclidean ball of ``radius`` voxels as a boolean (2r+1)^3 structuring element."""
    r = int(radius)
    z, y, x = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
    return z * z + y * y + x * x <= r * r


def binary_opening_ball(mask, radius) -> np.ndarray:
    """Opening of a mask by a Euclidean ball of ``radius`` voxels.

    Erosion and dilation by a ball are thresholds of Euclidean distance transforms
    (scipy.ndimage.distance_transform_edt), so the cost does not grow with the radius as
    it does for binary_opening with a (2r+1)^3 structuring element (radius 11: 12167
    voxels per output voxel). Beyond the box the mask continues as its outermost layer
    (edge padding): a background region open to a box face (the air above an electrode)
    stays background however thin it is inside the box, and a pore cut by a side face
    stays a narrow pore.
    """
    mask = np.asarray(mask, dtype=bool)
    r = float(radius)
    if r <= 0:
        return mask.copy()
    pad = int(np.ceil(r)) + 1
    m = np.pad(mask, pad, mode="edge")
    eroded = ndi.distance_transform_edt(m) > r            # distance to the nearest non-mask voxel
    opened = ndi.distance_transform_edt(~eroded) <= r     # distance to the nearest eroded voxel
    return opened[pad:-pad, pad:-pad, pad:-pad]


def grey_opening_ball(volume, radius) -> np.ndarray:
    """Grey-level opening (skimage.morphology) by a ball of ``radius`` voxels."""
    from skimage.morphology import opening
    return opening(_volume(volume), ball(radius))


def otsu_threshold(values, nbins=256) -> float:
    """Otsu's threshold (skimage.filters.threshold_otsu) of an array of grey values."""
    from skimage.filters import threshold_otsu
    values = np.asarray(values).ravel()
    if values.size == 0 or np.all(values == values[0]):
        raise ConfigError("threshold: Otsu's method needs at least two distinct grey values, found "
                          + ("none" if values.size == 0 else f"only {values[0]!r}"))
    return float(threshold_otsu(values, nbins=nbins))


def multi_otsu_thresholds(values, classes=3, nbins=256) -> np.ndarray:
    """Multi-Otsu thresholds (skimage.filters.threshold_multiotsu): ``classes - 1`` increasing values."""
    from skimage.filters import threshold_multiotsu
    values = np.asarray(values).ravel()
    if np.unique(values[: min(values.size, 1_000_000)]).size < classes:
        raise ConfigError(f"threshold: {classes} classes need at least {classes} distinct grey values")
    return np.asarray(threshold_multiotsu(values, classes=classes, nbins=nbins), dtype=np.float64)


def largest_component(mask, connectivity=1) -> np.ndarray:
    """Largest connected component of a mask (connectivity 1: faces, 3: faces, edges, corners)."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndi.label(mask, structure=ndi.generate_binary_structure(mask.ndim, connectivity))
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def unsharp_mask(volume, radius=1.0, amount=1.0) -> np.ndarray:
    """Unsharp mask (skimage.filters.unsharp_mask): v + amount (v - gaussian(v, radius)), in grey units."""
    from skimage.filters import unsharp_mask as _unsharp
    volume = _volume(volume)
    return _unsharp(volume.astype(np.float32), radius=radius, amount=amount, preserve_range=True)


def segment_phases(volume, electrode_mask, thresholds) -> np.ndarray:
    """Label volume from grey values and increasing thresholds inside the electrode.

    Parameters
    ----------
    volume : array (z, y, x)
    electrode_mask : bool array (z, y, x)
    thresholds : sequence of float
        One threshold: pore (below) / solid; two: pore / binder / active.

    Returns
    -------
    uint8 array (z, y, x) with the phase codes of the module docstring.
    """
    t = np.sort(np.atleast_1d(np.asarray(thresholds, dtype=np.float64)))
    labels = (np.digitize(volume, t) + 1).astype(np.uint8)     # 1 below t[0], 2, 3, ...
    labels[~np.asarray(electrode_mask, dtype=bool)] = OUTSIDE
    return labels


@dataclass
class Segmentation:
    """Result of :func:`segment_electrode`.

    Attributes
    ----------
    labels : uint8 array (z, y, x)
        Phase codes (module docstring).
    electrode_mask : bool array (z, y, x)
    thresholds : float array
        Grey-value thresholds between the phases inside the electrode.
    phases : dict of name -> code
    steps : list of dict
        Every step that ran, in order: {"step": name, parameters...}.
    """

    labels: np.ndarray
    electrode_mask: np.ndarray
    thresholds: np.ndarray
    phases: dict
    steps: list = field(default_factory=list)


def _threshold_value(threshold, values, what):
    if threshold is None or (isinstance(threshold, str) and threshold == "otsu"):
        return otsu_threshold(values), "otsu"
    try:
        return float(threshold), "given"
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected 'otsu' or a grey value, found {threshold!r}") from None


def restore_pore_mouths(envelope, material) -> np.ndarray:
    """Give back to the envelope the pore mouths that the opening took at faces normal to z.

    On the voxel grid the opening by a ball reaches the first voxel of every pore mouth on
    a flat face: a ball tangent to the face, at distance r from its solid, is more than r
    from the solid beside a pore, so the dilation takes the pore's first voxel. A voxel
    outside the envelope, not material, whose z neighbour is a pore voxel of the envelope
    (not material) is such a mouth. One pass: the space above a mouth stays outside.

    Parameters
    ----------
    envelope, material : bool arrays (z, y, x)

    Returns
    -------
    bool array (z, y, x)
    """
    envelope = np.asarray(envelope, dtype=bool)
    material = np.asarray(material, dtype=bool)
    pore = envelope & ~material
    next_to_pore = np.zeros_like(envelope)
    next_to_pore[:-1] |= pore[1:]
    next_to_pore[1:] |= pore[:-1]
    return envelope | (~material & next_to_pore)


def segment_electrode(volume, *, median=True, electrode_threshold="otsu", opening_radius=11,
                      largest=True, pore_mouths=True, unsharp=(1.0, 1.0), threshold="otsu",
                      phases=2) -> Segmentation:
    """The reference segmentation chain, each step optional and recorded.

    1. 3x3x3 median (``median``).
    2. Electrode threshold: grey > ``electrode_threshold`` (Otsu by default) is material.
    3. Opening of the background (the voxels below that threshold) by a ball of
       ``opening_radius`` voxels: background narrower than the ball (the pores) is
       removed from it, so what is left of the background is the space outside the
       electrode, and its complement the electrode envelope, pores included (0: skip).
    4. Largest connected component of the envelope: the electrode (``largest``).
    4b. Pore mouths on the faces normal to z given back (``pore_mouths``): the opening takes
       the first voxel of each (:func:`restore_pore_mouths`), which would drop the pores of
       both face slices of a layered electrode.
    5. Unsharp mask (``unsharp`` = (radius voxels, amount), None: skip) of the grey volume.
    6. Phases inside the electrode: Otsu of the electrode's voxels (``threshold="otsu"``),
       or a given grey value, for two phases (pore/solid); multi-Otsu for three
       (pore/binder/active); ``threshold`` may also be a sequence of two values.

    Parameters
    ----------
    volume : array (z, y, x)
        Reconstructed grey values (pores dark).
    median : bool
    electrode_threshold : "otsu" or float
    opening_radius : float
        Ball radius in voxels.
    largest : bool
    pore_mouths : bool
    unsharp : (radius, amount) or None
    threshold : "otsu", float, or sequence of floats
    phases : {2, 3}

    Returns
    -------
    Segmentation
    """
    volume = _volume(volume)
    if phases not in (2, 3):
        raise ConfigError(f"phases: expected 2 (pore/solid) or 3 (pore/binder/active), found {phases!r}")
    steps = []
    grey = volume
    if median:
        grey = median3(grey)
        steps.append({"step": "median", "size": 3})
    t_el, how = _threshold_value(electrode_threshold, grey, "electrode_threshold")
    material = grey > t_el
    steps.append({"step": "electrode_threshold", "method": how, "value": t_el})
    envelope = material
    if opening_radius and opening_radius > 0:
        envelope = ~binary_opening_ball(~material, opening_radius)
        steps.append({"step": "opening", "of": "background", "radius_voxels": float(opening_radius),
                      "structuring_element": "ball"})
    if largest:
        envelope = largest_component(envelope, connectivity=1)
        steps.append({"step": "largest_component", "connectivity": "faces"})
    if pore_mouths and opening_radius and opening_radius > 0:
        envelope = restore_pore_mouths(envelope, material)
        steps.append({"step": "pore_mouths", "axis": "z"})
    if not envelope.any():
        raise ConfigError("segmentation: no electrode found (nothing above the electrode threshold "
                          f"{t_el:g}); give --threshold or check the volume")
    if unsharp is not None:
        radius, amount = unsharp
        grey = unsharp_mask(grey, radius=radius, amount=amount)
        steps.append({"step": "unsharp_mask", "radius_voxels": float(radius), "amount": float(amount)})
    inside = grey[envelope]
    if isinstance(threshold, str) and threshold == "otsu":
        t = [otsu_threshold(inside)] if phases == 2 else list(multi_otsu_thresholds(inside, classes=3))
        how = "otsu" if phases == 2 else "multi_otsu"
    else:
        t = [float(v) for v in np.atleast_1d(threshold)]
        how = "given"
        if len(t) != phases - 1:
            raise ConfigError(f"threshold: {phases} phases need {phases - 1} grey value(s), found {len(t)}")
    labels = segment_phases(grey, envelope, t)
    steps.append({"step": "phase_threshold", "method": how, "values": [float(v) for v in t], "phases": phases})
    return Segmentation(labels=labels, electrode_mask=envelope, thresholds=np.array(t),
                        phases=dict(PHASES_2 if phases == 2 else PHASES_3), steps=steps)
