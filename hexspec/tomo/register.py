"""Register a 2-D image onto another: XCT porosity projections onto the Compton image grid.

Two routes:

- ``method="mutual_information"`` (default): SimpleITK's registration framework with
  Mattes mutual information, for images of different modalities (a Compton count image
  against a porosity map: contrast may be inverted and noise differs). Translation,
  rigid (Euler), similarity or affine transforms, a multi-resolution pyramid, optional
  masks. The start comes from phase correlation of the two gradient-magnitude images,
  which do not care about the sign of the contrast.
- ``method="phase_correlation"``: skimage.registration.phase_cross_correlation with
  sub-pixel upsampling (Guizar-Sicairos et al. 2008), translation only, for images of
  the same modality (fast, no iterations).

Coordinates. Images are (rows, cols); a point is (y, x) = (row, col) in pixels. The
result describes the map from the moving image's pixel coordinates onto the fixed image's,

    p_fixed = scale * R(angle_rad) (p_moving - c) + c + shift_px      (rigid/similarity)

with c = ((rows - 1) / 2, (cols - 1) / 2) the fixed image's centre and R the rotation of
the (x, y) = (col, row) plane, [[cos, -sin], [sin, cos]], that is clockwise as displayed
with row 0 at the top. ``matrix`` is the same map as a 3x3 homogeneous matrix acting on
(y, x, 1) (general for affine transforms). ``resampled`` is the moving image seen on the
fixed grid: resampled(p) = moving(inverse map of p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

TRANSFORMS = ("translation", "rigid", "similarity", "affine")
METHODS = ("mutual_information", "phase_correlation")


@dataclass
class Registration:
    """Result of :func:`register`.

    Attributes
    ----------
    shift_px : (float, float)
        (dy, dx) in pixels: translation of the moving image onto the fixed one, about the
        fixed image's centre (see the module docstring).
    angle_rad : float
        Rotation that maps the moving image onto the fixed one (0 for translation).
    scale : float
        Isotropic scale moving -> fixed (sqrt of the determinant for affine).
    matrix : ndarray (3, 3)
        Homogeneous map of (y, x, 1) from moving to fixed pixel coordinates.
    resampled : ndarray (rows, cols) float64
        The moving image on the fixed image's grid (linear interpolation; 0 outside).
    metric : float
        Final value of the optimised metric: Mattes mutual information (negative, lower is
        better) or, for phase correlation, its normalised RMS error.
    quality : float
        Normalised mutual information of fixed and resampled over their overlap
        (skimage.metrics.normalized_mutual_information: 1 for independent images, 2 for
        identical ones), comparable between methods.
    method, transform : str
    iterations : int
        Optimiser iterations at the finest level (0 for phase correlation).
    """

    shift_px: tuple
    angle_rad: float
    scale: float
    matrix: np.ndarray
    resampled: np.ndarray
    metric: float
    quality: float
    method: str
    transform: str
    iterations: int = 0

    def apply(self, image, order=1, cval=0.0):
        """Map another image on the moving grid (e.g. a second channel) onto the fixed grid.

        Parameters
        ----------
        image : ndarray (rows_m, cols_m)
            On the moving image's grid.
        order : int
            Spline order of scipy.ndimage.affine_transform (0 nearest, 1 linear).
        cval : float
            Value outside the moving image.

        Returns
        -------
        ndarray with the fixed image's shape.
        """
        from scipy import ndimage
        inv = np.linalg.inv(self.matrix)
        return ndimage.affine_transform(np.asarray(image, dtype=np.float64), inv[:2, :2], offset=inv[:2, 2],
                                        output_shape=self.resampled.shape, order=order, cval=cval)


def _check_image(name, image):
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ConfigError(f"register: {name} must be a 2-D image of at least 8 x 8 pixels, found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"register: {name} holds non-finite values (NaN or inf); fill them first")
    return arr


def _check_mask(name, mask, shape):
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise ConfigError(f"register: {name} must have its image's shape {shape}, found {m.shape}")
    if m.sum() < 16:
        raise ConfigError(f"register: {name} selects {int(m.sum())} pixels, expected at least 16")
    return m


def _quality(fixed, resampled, overlap):
    from skimage.metrics import normalized_mutual_information
    if overlap.sum() < 16:
        return float("nan")
    return float(normalized_mutual_information(fixed[overlap], resampled[overlap], bins=32))


def _homogeneous(linear_yx, offset_yx):
    m = np.eye(3)
    m[:2, :2] = linear_yx
    m[:2, 2] = offset_yx
    return m


def _gradient_magnitude(image):
    from scipy import ndimage
    smooth = ndimage.gaussian_filter(image, 1.0)
    return np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))


def _phase_correlation(fixed, moving, fixed_mask, moving_mask):
    from skimage.registration import phase_cross_correlation
    kw = {}
    if fixed_mask is not None or moving_mask is not None:
        kw = dict(reference_mask=fixed_mask if fixed_mask is not None else np.ones(fixed.shape, bool),
                  moving_mask=moving_mask if moving_mask is not None else np.ones(moving.shape, bool))
        shift = phase_cross_correlation(fixed, moving, **kw)[0]
        error = float("nan")
    else:
        shift, error, _ = phase_cross_correlation(fixed, moving, upsample_factor=100, normalization=None)
    return np.asarray(shift, dtype=np.float64), float(error)


def register(fixed, moving, transform="rigid", *, method="mutual_information", fixed_mask=None, moving_mask=None,
             levels=(4, 2, 1), bins=32, iterations=300, initial_shift_px=None):
    """Register ``moving`` onto ``fixed`` (2-D images).

    Parameters
    ----------
    fixed : ndarray (rows, cols)
        Reference image (the Compton count image in the correlative workflow).
    moving : ndarray (rows_m, cols_m)
        Image to map onto ``fixed`` (the XCT porosity projection on the Compton pixel size).
    transform : {"translation", "rigid", "similarity", "affine"}
    method : {"mutual_information", "phase_correlation"}
        Mattes mutual information (any pair of modalities) or phase correlation (same
        modality, translation only).
    fixed_mask, moving_mask : ndarray of bool, optional
        Pixels the metric may use in each image.
    levels : sequence of int
        Shrink factors of the multi-resolution pyramid, coarse to fine; each level is
        smoothed with a Gaussian of sigma = factor / 2 pixels.
    bins : int
        Histogram bins of the Mattes metric.
    iterations : int
        Largest number of optimiser iterations per level.
    initial_shift_px : (dy, dx), optional
        Starting translation; default from phase correlation of the gradient magnitudes.

    Returns
    -------
    Registration
    """
    if transform not in TRANSFORMS:
        raise ConfigError(f"register: transform must be one of {', '.join(TRANSFORMS)}, found {transform!r}")
    if method not in METHODS:
        raise ConfigError(f"register: method must be one of {', '.join(METHODS)}, found {method!r}")
    fixed = _check_image("fixed", fixed)
    moving = _check_image("moving", moving)
    fixed_mask = _check_mask("fixed_mask", fixed_mask, fixed.shape)
    moving_mask = _check_mask("moving_mask", moving_mask, moving.shape)

    if method == "phase_correlation":
        if transform != "translation":
            raise ConfigError(f"register: phase correlation finds translations only, found transform={transform!r}; "
                              "use method='mutual_information'")
        if fixed.shape != moving.shape:
            raise ConfigError(f"register: phase correlation needs images of one shape, found {fixed.shape} and "
                              f"{moving.shape}")
        shift, error = _phase_correlation(fixed, moving, fixed_mask, moving_mask)
        matrix = _homogeneous(np.eye(2), shift)
        reg = Registration(tuple(float(s) for s in shift), 0.0, 1.0, matrix, np.zeros(fixed.shape), error, float("nan"),
                           method, transform)
        reg.resampled = reg.apply(moving)
        overlap = reg.apply(np.ones(moving.shape), order=1) > 0.999
        reg.quality = _quality(fixed, reg.resampled, overlap)
        return reg
    return _register_mi(fixed, moving, transform, fixed_mask, moving_mask, levels, bins, iterations, initial_shift_px)


def _register_mi(fixed, moving, transform, fixed_mask, moving_mask, levels, bins, iterations, initial_shift_px):
    import SimpleITK as sitk

    rows, cols = fixed.shape
    center_xy = ((cols - 1) / 2.0, (rows - 1) / 2.0)
    if initial_shift_px is None:
        if fixed.shape == moving.shape:
            # Gradient magnitude is the same for inverted contrast: a fair start across modalities.
            gf, gm = _gradient_magnitude(fixed), _gradient_magnitude(moving)
            if fixed_mask is not None:
                gf *= fixed_mask
            if moving_mask is not None:
                gm *= moving_mask
            start, _ = _phase_correlation(gf, gm, None, None)
        else:
            start = np.zeros(2)
    else:
        start = np.asarray(initial_shift_px, dtype=np.float64)
    # SimpleITK transforms map fixed points to moving points: the inverse of the result's map.
    translation_xy = (-float(start[1]), -float(start[0]))
    if transform == "translation":
        tx = sitk.TranslationTransform(2, translation_xy)
    elif transform == "rigid":
        tx = sitk.Euler2DTransform(center_xy, 0.0, translation_xy)
    elif transform == "similarity":
        tx = sitk.Similarity2DTransform(1.0, 0.0, translation_xy, center_xy)
    else:
        tx = sitk.AffineTransform(2)
        tx.SetCenter(center_xy)
        tx.SetTranslation(translation_xy)

    f_img = sitk.GetImageFromArray(fixed.astype(np.float32))
    m_img = sitk.GetImageFromArray(moving.astype(np.float32))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    reg.SetMetricSamplingStrategy(reg.NONE)   # small images: every pixel counts
    reg.SetInterpolator(sitk.sitkLinear)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(sitk.GetImageFromArray(fixed_mask.astype(np.uint8)))
    if moving_mask is not None:
        # Eroded by a pixel: linear interpolation at a point inside the mask must not reach
        # the excluded pixels beside it.
        from scipy import ndimage
        inner = ndimage.binary_erosion(moving_mask, border_value=1)
        reg.SetMetricMovingMask(sitk.GetImageFromArray(inner.astype(np.uint8)))
    levels = [int(v) for v in levels]
    reg.SetShrinkFactorsPerLevel(levels)
    reg.SetSmoothingSigmasPerLevel([v / 2.0 for v in levels])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-5, numberOfIterations=int(iterations),
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f_img, m_img)
    metric = float(reg.GetMetricValue())
    n_iter = int(reg.GetOptimizerIteration())

    # Fixed -> moving in (x, y): q = M (p - c) + c + t. Moving -> fixed: p = M^-1 (q - c) + c - M^-1 t.
    if transform == "translation":
        m_xy = np.eye(2)
        t_xy = np.asarray(tx.GetOffset())
        c_xy = np.asarray(center_xy)
    else:
        m_xy = np.asarray(tx.GetMatrix()).reshape(2, 2)
        t_xy = np.asarray(tx.GetTranslation())
        c_xy = np.asarray(tx.GetCenter())
    f_xy = np.linalg.inv(m_xy)
    offset_xy = c_xy - f_xy @ c_xy - f_xy @ t_xy        # p = F q + offset
    swap = np.array([[0, 1], [1, 0]])
    linear_yx = swap @ f_xy @ swap
    offset_yx = offset_xy[::-1]
    matrix = _homogeneous(linear_yx, offset_yx)
    c_yx = np.array([(rows - 1) / 2.0, (cols - 1) / 2.0])
    shift = matrix[:2, :2] @ c_yx + offset_yx - c_yx   # where the centre goes: the shift about the centre
    angle = math.atan2(f_xy[1, 0], f_xy[0, 0]) if transform != "translation" else 0.0
    scale = math.sqrt(abs(np.linalg.det(f_xy))) if transform in ("similarity", "affine") else 1.0

    resampled = sitk.GetArrayFromImage(sitk.Resample(m_img, f_img, tx, sitk.sitkLinear, 0.0)).astype(np.float64)
    ones = sitk.GetImageFromArray(np.ones(moving.shape, np.float32))
    overlap = sitk.GetArrayFromImage(sitk.Resample(ones, f_img, tx, sitk.sitkLinear, 0.0)) > 0.999
    if fixed_mask is not None:
        overlap &= fixed_mask
    return Registration((float(shift[0]), float(shift[1])), float(angle), float(scale), matrix, resampled, metric,
                        _quality(fixed, resampled, overlap), "mutual_information", transform, n_iter)
