"""Bad input: one line on stderr naming what was expected and what was found, exit status
non-zero, never a traceback.

Each case builds a broken file (or option) the way a user makes one, runs the command and
checks the message. The command runs in-process: an exception that escapes the command
line's catcher fails the test just as a traceback would show on a terminal.
"""

import json

import h5py
import numpy as np
import pytest

from hexspec.cli import main
from hexspec.io import hdf5
from hexspec.frames import FrameBatch

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _frames_file(path, n=40, shape=(4, 4)):
    frames = (np.arange(n * shape[0] * shape[1]) % 300).astype(np.uint16).reshape(n, *shape)
    with hdf5.HexspecWriter(path, shape, frames=True, events=False, spectra=False, frame_chunk=8) as w:
        w.write_frames(FrameBatch(frames, np.arange(n)))
    return path


def _hexspec_skeleton(path, rows=4, cols=4):
    f = h5py.File(path, "w")
    e = f.create_group("entry")
    e.attrs["program"] = "hexspec"
    d = e.create_group("instrument/detector")
    d["rows"], d["cols"] = rows, cols
    return f


# ---------------------------------------------------------------- builders: (tmp) -> argv

def bad_superblock(tmp):
    p = tmp / "bad.h5"
    p.write_bytes(HDF5_MAGIC + bytes(range(256)) * 16)
    return ["process", str(p), "-o", str(tmp / "o.h5")], "HDF5"


def bad_superblock_calibration(tmp):
    p = tmp / "cal.h5"
    p.write_bytes(HDF5_MAGIC + bytes(range(256)) * 16)
    return ["process", str(_frames_file(tmp / "in.h5")), "--calibration", str(p), "-o", str(tmp / "o.h5")], "HDF5"


def missing_frame_number(tmp):
    with _hexspec_skeleton(tmp / "in.h5") as f:
        f["entry/frames/data"] = np.zeros((3, 4, 4), np.uint16)
    return ["process", str(tmp / "in.h5"), "-o", str(tmp / "o.h5")], "frame_number"


def string_frame_number(tmp):
    with _hexspec_skeleton(tmp / "in.h5") as f:
        f["entry/frames/data"] = np.zeros((3, 4, 4), np.uint16)
        f["entry/frames/frame_number"] = np.array([b"a", b"b", b"c"])
    return ["process", str(tmp / "in.h5"), "-o", str(tmp / "o.h5")], "frame_number"


def rows_text(tmp):
    with _hexspec_skeleton(tmp / "in.h5", rows="sixteen") as f:
        f["entry/frames/data"] = np.zeros((3, 4, 4), np.uint16)
        f["entry/frames/frame_number"] = np.arange(3)
    return ["process", str(tmp / "in.h5"), "-o", str(tmp / "o.h5")], "rows"


def rows_negative(tmp):
    with _hexspec_skeleton(tmp / "in.h5", rows=-16) as f:
        f["entry/frames/data"] = np.zeros((3, 4, 4), np.uint16)
        f["entry/frames/frame_number"] = np.arange(3)
    return ["process", str(tmp / "in.h5"), "-o", str(tmp / "o.h5")], "rows"


def string_energies(tmp):
    with _hexspec_skeleton(tmp / "in.h5") as f:
        g = f.create_group("entry/events")
        for name, dt in (("frame", np.int64), ("row", np.uint16), ("col", np.uint16), ("size", np.uint8)):
            g[name] = np.zeros(3, dt)
        g["energy"] = np.array([b"1", b"2", b"x"])
    return ["process", str(tmp / "in.h5"), "-o", str(tmp / "o.h5")], "energy"


def odin_2d(tmp):
    with h5py.File(tmp / "odin.h5", "w") as f:
        f["raw_frames"] = np.zeros((4, 4), np.uint16)
    return ["process", str(tmp / "odin.h5"), "-o", str(tmp / "o.h5")], "raw_frames"


def odin_group(tmp):
    with h5py.File(tmp / "odin.h5", "w") as f:
        f.create_group("raw_frames")
    return ["process", str(tmp / "odin.h5"), "-o", str(tmp / "o.h5")], "raw_frames"


def corrupt_chunk(tmp):
    p = _frames_file(tmp / "in.h5")
    with h5py.File(p, "r", locking=False) as f:
        info = f["entry/frames/data"].id.get_chunk_info(1)
    raw = bytearray(p.read_bytes())
    raw[info.byte_offset:info.byte_offset + info.size] = b"\xa5" * info.size
    p.write_bytes(bytes(raw))
    return ["process", str(p), "-o", str(tmp / "o.h5")], "chunk"


def _truncated(fraction, command):
    def build(tmp):
        p = _frames_file(tmp / "in.h5", n=400)
        raw = p.read_bytes()
        cut = 1024 if fraction is None else int(len(raw) * fraction)
        p.write_bytes(raw[:cut])
        if command == "process":
            return ["process", str(p), "-o", str(tmp / "o.h5")], "truncated"
        if command == "calibrate":
            return ["calibrate", "am241", str(p), "-o", str(tmp / "o.h5")], "truncated"
        return [command, str(p), "--energy-window-kev", "1", "2", "-o", str(tmp / "o.h5")], "truncated"
    build.__name__ = f"truncated_{command}_{fraction or '1KB'}"
    return build


def empty_bin(tmp):
    (tmp / "empty.bin").write_bytes(b"")
    return ["process", str(tmp / "empty.bin"), "--shape", "80", "80", "-o", str(tmp / "o.h5")], "empty"


def _config(name, content):
    def build(tmp):
        p = tmp / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return ["process", str(_frames_file(tmp / "in.h5")), "--config", str(p), "-o", str(tmp / "o.h5")], name
    build.__name__ = f"config_{name}"
    return build


def config_directory(tmp):
    (tmp / "conf.toml").mkdir()
    return ["process", str(_frames_file(tmp / "in.h5")), "--config", str(tmp / "conf.toml"), "-o",
            str(tmp / "o.h5")], "directory"


def gradients_directory(tmp):
    (tmp / "grad").mkdir()
    return ["process", str(_frames_file(tmp / "in.h5")), "--gradients", str(tmp / "grad"), "-o",
            str(tmp / "o.h5")], "directory"


def unwritable_png(tmp):
    (tmp / "afile").write_text("")
    return ["process", str(_frames_file(tmp / "in.h5")), "--png", str(tmp / "afile" / "x.png"), "-o",
            str(tmp / "o.h5")], "png"


def lithium_cal_missing(tmp):
    edges = np.arange(60.0, 130.0001, 0.25)
    hdf5.write_cube(tmp / "cube.h5", __import__("hexspec").SpectralCube(np.ones((2, 2, len(edges) - 1)), edges))
    return ["sparam", str(tmp / "cube.h5"), "--theta", "90", "--no-background", "--lithium-cal",
            str(tmp / "missing.json"), "-o", str(tmp / "o.h5")], "missing.json"


CASES = [bad_superblock, bad_superblock_calibration, missing_frame_number, string_frame_number, rows_text,
         rows_negative, string_energies, odin_2d, odin_group, corrupt_chunk,
         _truncated(None, "process"), _truncated(0.5, "process"), _truncated(0.9, "process"),
         _truncated(None, "calibrate"), _truncated(0.5, "calibrate"), _truncated(0.9, "fit"),
         empty_bin,
         _config("binary.toml", b"\xff\xfe\x00threshold = \x00\x81"),
         _config("nested.json", "[" * 100_000 + "]" * 100_000),
         _config("nested.toml", "threshold = " + "[" * 100_000 + "]" * 100_000),
         _config("ragged.json", json.dumps({"threshold": [[1, 2, 3, 4], [1, 2], [1, 2, 3, 4], [1, 2, 3, 4]]})),
         config_directory, gradients_directory, unwritable_png, lithium_cal_missing]


@pytest.mark.parametrize("build", CASES, ids=lambda b: b.__name__)
def test_bad_input_gives_one_line_naming_expected_and_found(build, tmp_path, capsys):
    argv, word = build(tmp_path)
    capsys.readouterr()
    rc = main(argv + ["-q"])
    err = capsys.readouterr().err
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"hexspec {argv[0]}: error: ")
    assert word.lower() in lines[0].lower(), lines[0]
    assert "expected" in lines[0] or "no such" in lines[0] or "cannot" in lines[0], lines[0]


def test_unwritable_png_is_found_before_the_hdf5_output_is_written(tmp_path):
    argv, _ = unwritable_png(tmp_path)
    assert main(argv + ["-q"]) != 0
    assert not (tmp_path / "o.h5").exists()


def test_a_bin_file_without_shape_says_it_assumes_80_by_80_and_records_it(tmp_path, capsys):
    (tmp_path / "f.bin").write_bytes(np.zeros((3, 80, 80), "<u2").tobytes())
    assert main(["process", str(tmp_path / "f.bin"), "-o", str(tmp_path / "o.h5"), "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "80 x 80" in err[0] and "--shape" in err[0]
    with h5py.File(tmp_path / "o.h5", "r", locking=False) as f:
        notes = [g["notes"][()].decode() for g in f["entry"].values()
                 if g.attrs.get("NX_class") == "NXprocess" and "notes" in g]
    assert notes and "80 x 80" in notes[0]


def test_hxt_with_nan_bin_edges_or_negative_counts_is_refused(tmp_path):
    import hexspec as hx
    from hexspec.errors import FormatError
    from hexspec.io.hxt import HEADER, read_hxt, write_hxt

    edges = np.arange(0.0, 10.5, 0.5)
    nbins = len(edges) - 1
    write_hxt(tmp_path / "ok.hxt", hx.SpectralCube(np.ones((2, 3, nbins)), edges))
    assert read_hxt(tmp_path / "ok.hxt").counts.sum() == 6 * nbins
    raw = (tmp_path / "ok.hxt").read_bytes()
    at = HEADER.itemsize
    nan_edge = raw[:at + 8 * 3] + np.float64(np.nan).tobytes() + raw[at + 8 * 4:]
    (tmp_path / "nan.hxt").write_bytes(nan_edge)
    with pytest.raises(FormatError, match="bin"):
        read_hxt(tmp_path / "nan.hxt")
    c = at + 8 * nbins + 8 * 7
    negative = raw[:c] + np.float64(-3.0).tobytes() + raw[c + 8:]
    (tmp_path / "neg.hxt").write_bytes(negative)
    with pytest.raises(FormatError, match="negative"):
        read_hxt(tmp_path / "neg.hxt")
