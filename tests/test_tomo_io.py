"""Tomography files: Data Exchange, TIFF and NumPy projections in; hexspec HDF5 volumes out and back."""

import h5py
import numpy as np
import pytest

from hexspec.errors import FormatError, HexspecError
from hexspec.tomo.io import (create_volume, read_dataexchange, read_numpy, read_projections, read_tiff_stack,
                             read_volume, write_volume)

from conftest import shared_file


def _volume(rng):
    return rng.random((4, 5, 6)).astype(np.float32)


def test_volume_round_trip_keeps_data_voxel_size_process_and_extra(tmp_path):
    rng = np.random.default_rng(0)
    vol = _volume(rng)
    mask = vol > 0.5
    path = tmp_path / "v.h5"
    write_volume(path, vol, (0.002, 0.001, 0.001), name="volume", process_name="reconstruction",
                 process={"center_px": 3.25, "filter_name": "ramlak", "ring_removal": "sorting",
                          "input": {"path": "/x/scan.h5", "size_bytes": 12}, "shape": [4, 5, 6]},
                 extra={"mask": mask}, units="1/mm")
    back = read_volume(path)
    np.testing.assert_array_equal(back.data, vol)
    assert back.data.dtype == np.float32
    assert back.voxel_size_mm == (0.002, 0.001, 0.001)
    assert back.name == "volume" and back.units == "1/mm"
    np.testing.assert_array_equal(back.extra["mask"], mask)
    proc = back.process["reconstruction"]
    assert proc["center_px"] == 3.25 and proc["filter_name"] == "ramlak" and proc["ring_removal"] == "sorting"
    assert proc["input"] == {"path": "/x/scan.h5", "size_bytes": 12} and proc["shape"] == [4, 5, 6]
    assert proc["program"] == "hexspec" and "version" in proc and "date" in proc


def test_volume_file_is_nexus_with_mm_axes_and_hdf5_110_format(tmp_path):
    path = tmp_path / "v.h5"
    write_volume(path, np.zeros((3, 4, 5), np.uint8), 0.5, name="labels", process_name="segmentation", process={})
    with h5py.File(path, "r") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry" and f["entry"].attrs["default"] == "labels"
        g = f["entry/labels"]
        assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "data"
        assert list(g.attrs["axes"]) == ["z", "y", "x"]
        np.testing.assert_allclose(g["x"][()], [0.25, 0.75, 1.25, 1.75, 2.25])   # voxel centres in mm
        assert g["z"].attrs["units"] == "mm"
        assert f["entry/segmentation"].attrs["NX_class"] == "NXprocess"
        # superblock version 0..2 is what HDF5 1.10 readers accept (3 would be 1.10 too, but not 1.8)
        assert f.id.get_create_plist().get_version()[0] <= 3
    assert read_volume(path, name="labels").data.dtype == np.uint8


def test_write_volume_refuses_an_existing_file_unless_forced(tmp_path):
    path = tmp_path / "v.h5"
    path.write_bytes(b"keep me")
    with pytest.raises(FormatError, match="exists"):
        write_volume(path, np.zeros((2, 2, 2)), 1.0, process_name="p", process={})
    assert path.read_bytes() == b"keep me"
    write_volume(path, np.ones((2, 2, 2)), 1.0, process_name="p", process={}, force=True)
    assert read_volume(path).data.sum() == 8


def test_streamed_volume_writer_leaves_nothing_when_interrupted(tmp_path):
    path = tmp_path / "v.h5"
    with pytest.raises(RuntimeError):
        with create_volume(path, (4, 3, 3), np.float32, 1.0, process_name="p", process={}) as w:
            w[0:2] = np.ones((2, 3, 3))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with create_volume(path, (4, 3, 3), np.float32, 1.0, process_name="p", process={}) as w:
        for z in range(4):
            w[z:z + 1] = np.full((1, 3, 3), z)
    np.testing.assert_array_equal(read_volume(path).data[:, 1, 1], [0, 1, 2, 3])


@pytest.mark.parametrize("content", [None, b"not hdf5 at all", "other"])
def test_read_volume_names_the_problem_in_one_line(tmp_path, content):
    path = tmp_path / "v.h5"
    if content == "other":
        with h5py.File(path, "w") as f:
            f["something"] = 1
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(HexspecError) as info:
        read_volume(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_volume_reports_a_truncated_file(tmp_path):
    path = tmp_path / "v.h5"
    write_volume(path, np.random.default_rng(1).random((8, 64, 64)), 1.0, process_name="p", process={})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError, match=str(path)):
        read_volume(path)


def _dataexchange(path, theta_deg=True):
    rng = np.random.default_rng(2)
    proj = rng.random((6, 2, 8)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["exchange/data"] = proj
        f["exchange/data_white"] = np.ones((3, 2, 8), np.float32)
        f["exchange/data_dark"] = np.zeros((2, 2, 8), np.float32)
        if theta_deg:
            f["exchange/theta"] = np.arange(6) * 30.0
            f["exchange/theta"].attrs["units"] = "degrees"
    return proj


def test_read_dataexchange_converts_degrees_to_radians(tmp_path):
    proj = _dataexchange(tmp_path / "s.h5")
    p, flat, dark, theta = read_dataexchange(tmp_path / "s.h5")
    np.testing.assert_array_equal(p, proj)
    assert flat.shape == (3, 2, 8) and dark.shape == (2, 2, 8)
    np.testing.assert_allclose(theta, np.arange(6) * np.pi / 6)


def test_read_dataexchange_without_theta_spreads_angles_over_180_degrees_and_warns(tmp_path):
    _dataexchange(tmp_path / "s.h5", theta_deg=False)
    with pytest.warns(UserWarning, match="180 degrees"):
        _, _, _, theta = read_dataexchange(tmp_path / "s.h5")
    np.testing.assert_allclose(theta, np.arange(6) * np.pi / 6)


def test_read_dataexchange_refuses_a_file_without_exchange_data(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["data"] = np.zeros((3, 3, 3))
    with pytest.raises(FormatError, match="exchange/data"):
        read_dataexchange(tmp_path / "s.h5")


def test_read_real_tooth_dataexchange():
    proj, flat, dark, theta = read_dataexchange(shared_file("tomo_tooth_dataexchange.h5"))
    assert proj.shape == (181, 2, 640) and flat.shape == (10, 2, 640) and dark.shape == (10, 2, 640)
    np.testing.assert_allclose(np.rad2deg(theta[[0, -1]]), [0.0, 179.0055], atol=1e-3)


def test_tiff_stack_file_and_folder(tmp_path):
    import tifffile
    stack = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    np.testing.assert_array_equal(read_tiff_stack(tmp_path / "stack.tif"), stack)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"p_{i:03d}.tif", stack[i])
    with pytest.warns(UserWarning):
        proj, flat, dark, theta = read_projections(folder)
    np.testing.assert_array_equal(proj, stack)
    assert flat is None and theta.shape == (3,)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(FormatError, match="bad.tif"):
        read_tiff_stack(tmp_path / "bad.tif")


def test_numpy_npz_with_fields_and_theta_in_degrees(tmp_path):
    proj = np.ones((4, 2, 3))
    np.savez(tmp_path / "s.npz", proj=proj, flat=np.ones((1, 2, 3)) * 2, theta=[0, 45, 90, 135])
    p, flat, dark, theta = read_numpy(tmp_path / "s.npz")
    assert p.dtype == np.float32 and flat[0, 0, 0] == 2 and dark is None
    np.testing.assert_allclose(theta, np.deg2rad([0, 45, 90, 135]))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(FormatError, match="obj.npy"):
        read_numpy(tmp_path / "obj.npy")
    np.savez(tmp_path / "wrong.npz", other=proj)
    with pytest.raises(FormatError, match="'proj'"):
        read_numpy(tmp_path / "wrong.npz")
