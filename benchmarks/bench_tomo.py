"""Reconstruction speed and accuracy against algotom's numba FBP, in the same run.

    python benchmarks/bench_tomo.py [--size 512] [--angles 720] [--slices 16] [--repeats 5]

A Shepp-Logan phantom (scikit-image) is projected with skimage.transform.radon (an
independent forward projector) over [0, 180) degrees; the same sinogram is stacked as
``--slices`` slices. hexspec reconstructs them with ring removal (the default "masked" method: stripes found and their offsets removed)
and the Ram-Lak filter; algotom's ``fbp_reconstruction`` (CPU, numba) without ring
removal, also Ram-Lak (filter_name=None). Printed: the time ratio algotom / hexspec
(median and range over repeats; > 1 means hexspec is faster), each method's RMS error
against the phantom inside the reconstruction circle, and the process's peak memory.

The rotation axis of a skimage sinogram of an N x N image sits on pixel N // 2, while both
reconstructions put it at (N - 1) / 2; for even N the phantom is therefore compared after
a half-pixel shift (linear interpolation), the same reference for both methods.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def phantom_sinogram(size, n_angles):
    from skimage.data import shepp_logan_phantom
    from skimage.transform import radon, resize
    image = resize(shepp_logan_phantom(), (size, size), order=1, anti_aliasing=False)
    theta_deg = np.arange(n_angles) * 180.0 / n_angles
    sino = radon(image, theta_deg, circle=True).T.astype(np.float32)     # (angles, cols)
    return image, sino, np.deg2rad(theta_deg)


def rms_error(recon, reference, radius):
    n = reference.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    inside = np.hypot(yy, xx) < radius
    return float(np.sqrt(np.mean((recon - reference)[inside] ** 2)))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--angles", type=int, default=720)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from algotom.rec.reconstruction import fbp_reconstruction
    from scipy import ndimage as ndi

    from hexspec.tomo import rec

    t0 = time.perf_counter()
    image, sino, theta = phantom_sinogram(args.size, args.angles)
    print(f"phantom {args.size}x{args.size}, {args.angles} angles, {args.slices} slices "
          f"(radon {time.perf_counter() - t0:.1f} s)")
    n = args.size
    center = n // 2                          # skimage radon's rotation axis
    shift = (n - 1) / 2 - n // 2             # -0.5 for even n
    reference = ndi.shift(image, (shift, shift), order=1) if shift else image
    stack = np.ascontiguousarray(np.repeat(sino[:, None, :], args.slices, axis=1))   # (angles, slices, cols)

    def run_hexspec():
        return rec.reconstruct(stack, theta, center=center, ring_removal="masked", filter_name="ramlak",
                               take_log=False)

    def run_algotom():
        out = fbp_reconstruction(stack.copy(), center, angles=theta, filter_name=None, apply_log=False, gpu=False,
                                 ratio=1.0)
        return np.moveaxis(out, 1, 0)

    import warnings
    warnings.filterwarnings("ignore", message=".*GPU.*")
    # compile both (numba caches) before timing
    rec.reconstruct(stack[:, :1], theta, center=center, take_log=False)
    fbp_reconstruction(stack[:, :1].copy(), center, angles=theta, filter_name=None, apply_log=False, gpu=False)

    ratios, t_hex, t_alg = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = run_hexspec()
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        theirs = run_algotom()
        t2 = time.perf_counter() - t
        t_hex.append(t1)
        t_alg.append(t2)
        ratios.append(t2 / t1)
    radius = 0.95 * (n - 1) / 2
    e_hex = np.mean([rms_error(s, reference, radius) for s in ours])
    e_alg = np.mean([rms_error(s, reference, radius) for s in theirs])
    r = np.array(ratios)
    print(f"hexspec FBP + ring removal: {np.median(t_hex) / args.slices * 1e3:.0f} ms/slice (median)")
    print(f"algotom fbp_reconstruction:  {np.median(t_alg) / args.slices * 1e3:.0f} ms/slice (median)")
    print(f"speed ratio algotom/hexspec: median {np.median(r):.2f}, range {r.min():.2f}-{r.max():.2f} "
          f"over {args.repeats} repeats")
    print(f"RMS error vs phantom (phantom mean {image.mean():.4f}): hexspec {e_hex:.5f}, algotom {e_alg:.5f} "
          f"(ratio {e_hex / e_alg:.3f})")
    print(f"peak memory (RSS) {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
