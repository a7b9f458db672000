"""HXT v3 spectra files, checked byte by byte against FORMATS.md."""

import struct

import numpy as np
import pytest

import hexspec as hx
from hexspec.io import read_hxt, write_hxt

HEADER_BYTES = 8 + 8 + 9 * 4 + 4 + 100 + 16 + 3 * 4     # = 184


def hand_hxt(rows, cols, lower_edges, counts, version=3, magic=b"HEXITECH"):
    """An HXT file built with struct from the format description."""
    head = magic + struct.pack("<Q", version) + struct.pack("<9I", *range(1, 10)) + struct.pack("<i", 3)
    head += b"abc".ljust(100, b"\0") + b"20240131_101500".ljust(16, b"\0") + struct.pack("<3I", rows, cols, len(lower_edges))
    assert len(head) == HEADER_BYTES
    return head + struct.pack(f"<{len(lower_edges)}d", *lower_edges) + struct.pack(f"<{counts.size}d", *counts.ravel())


def test_written_file_has_the_v3_layout_with_lower_edges_and_pixel_major_counts(tmp_path):
    counts = np.arange(2 * 3 * 4, dtype=np.uint32).reshape(2, 3, 4)
    cube = hx.SpectralCube(counts, [10.0, 10.5, 11.0, 11.5, 12.0])
    path = tmp_path / "s.hxt"
    write_hxt(path, cube)
    data = path.read_bytes()
    assert data[:8] == b"HEXITECH"
    assert struct.unpack_from("<Q", data, 8)[0] == 3
    assert struct.unpack_from("<3I", data, 172) == (2, 3, 4)
    assert struct.unpack_from("<4d", data, 184) == (10.0, 10.5, 11.0, 11.5)
    # counts of pixel (row 1, col 2), bin 3: pixel index 1 * 3 + 2 = 5, value 5 * 4 + 3
    offset = 184 + 4 * 8 + ((1 * 3 + 2) * 4 + 3) * 8
    assert struct.unpack_from("<d", data, offset)[0] == 23.0
    assert len(data) == 184 + 8 * 4 + 8 * 24


def test_hand_built_file_reads_into_a_cube(tmp_path):
    counts = np.random.default_rng(0).integers(0, 100, (3, 2, 5)).astype(float)
    path = tmp_path / "h.hxt"
    path.write_bytes(hand_hxt(3, 2, [1.0, 2.0, 3.0, 4.0, 5.0], counts))
    cube = read_hxt(path)
    np.testing.assert_array_equal(cube.counts, counts)
    np.testing.assert_array_equal(cube.edges, [1, 2, 3, 4, 5, 6])


def test_round_trip_keeps_counts_and_edges(tmp_path):
    cube = hx.SpectralCube(np.random.default_rng(1).integers(0, 1000, (4, 5, 30)), hx.EnergyBins(0, 150, 5).edges)
    write_hxt(tmp_path / "r.hxt", cube)
    back = read_hxt(tmp_path / "r.hxt")
    np.testing.assert_array_equal(back.counts, cube.counts)
    np.testing.assert_allclose(back.edges, cube.edges)


def test_truncated_file_is_an_error_naming_expected_and_found_sizes(tmp_path):
    data = hand_hxt(2, 2, [0.0, 1.0], np.ones((2, 2, 2)))
    path = tmp_path / "cut.hxt"
    path.write_bytes(data[:-8])
    with pytest.raises(hx.FormatError, match=rf"{len(data)} bytes, found {len(data) - 8}.*truncated"):
        read_hxt(path)


def test_wrong_magic_is_an_error(tmp_path):
    path = tmp_path / "bad.hxt"
    path.write_bytes(hand_hxt(1, 1, [0.0], np.ones(1), magic=b"HEXITECX"))
    with pytest.raises(hx.FormatError, match="magic"):
        read_hxt(path)


def test_other_version_is_an_error_naming_it(tmp_path):
    path = tmp_path / "v2.hxt"
    path.write_bytes(hand_hxt(1, 1, [0.0], np.ones(1), version=2))
    with pytest.raises(hx.FormatError, match="version 3, found 2"):
        read_hxt(path)
