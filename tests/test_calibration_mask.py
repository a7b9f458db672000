"""`process --calibration` applies the calibration's good-pixel mask: rejected pixels give no events."""

import h5py
import numpy as np

from hexspec.cli import main
from hexspec.io import hdf5


def test_pixels_the_calibration_rejected_give_no_events_and_good_pixels_keep_theirs(tmp_path, am241_calibrated):
    sim, cal = am241_calibrated
    with h5py.File(cal, "r", locking=False) as f:
        good = f["entry/results/calibration/good"][()].astype(bool)
    assert 0 < good.sum() < good.size          # some pixels rejected (the simulator's dead and hot ones)
    opts = ["--charge-sharing", "none", "--no-next-frame", "--events", "--frames", "1500", "-q"]
    # the same calibration without its mask: the gradients and intercepts as maps, in text files
    arrays, _ = hdf5.read_results(cal, "calibration")
    np.savetxt(tmp_path / "g.txt", np.nan_to_num(arrays["gradients"]))
    np.savetxt(tmp_path / "c.txt", np.nan_to_num(arrays["intercepts"]))
    assert main(["process", str(sim), "--gradients", str(tmp_path / "g.txt"), "--intercepts", str(tmp_path / "c.txt"),
                 "-o", str(tmp_path / "unmasked.h5"), *opts]) == 0
    assert main(["process", str(sim), "--calibration", str(cal), "-o", str(tmp_path / "masked.h5"), *opts]) == 0
    un, ma = hdf5.read_events(tmp_path / "unmasked.h5"), hdf5.read_events(tmp_path / "masked.h5")
    per_pixel = lambda ev: np.bincount(ev.row.astype(int) * 8 + ev.col, minlength=64).reshape(8, 8)
    n_un, n_ma = per_pixel(un), per_pixel(ma)
    assert n_un[~good].sum() > 0                # rejected pixels do see hits...
    assert n_ma[~good].sum() == 0               # ...which the mask removes
    assert np.array_equal(n_ma[good], n_un[good])   # and nothing else changes without charge sharing
