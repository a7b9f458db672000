"""Open any supported frame file by its content: GigE .bin, odin-data HDF5, hexspec HDF5."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError


def frame_file_kind(path) -> str:
    """"gige", "odin" or "hexspec"; FormatError for anything else."""
    from .hdf5 import is_hexspec_file
    from .odin import is_odin_file
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.suffix.lower() in (".bin", ".raw", ".dat"):
        return "gige"
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        if is_hexspec_file(path):
            return "hexspec"
        if is_odin_file(path):
            return "odin"
        raise FormatError(f"{path}: an HDF5 file, but neither hexspec (/entry) nor odin-data (raw_frames at the root)")
    raise FormatError(f"{path}: expected a GigE .bin, odin-data HDF5 or hexspec HDF5 frame file, "
                      f"found neither (first bytes {magic!r}; raw frame files need a .bin suffix)")


def count_frames(path, shape=(80, 80)) -> int:
    kind = frame_file_kind(path)
    if kind == "gige":
        return Path(path).stat().st_size // (int(shape[0]) * int(shape[1]) * 2)
    if kind == "odin":
        from .h5open import open_h5
        with open_h5(path) as f:
            return f["raw_frames"].shape[0] if "raw_frames" in f else 0
    from .hdf5 import count_frames as _count
    return _count(path)


def iter_frame_file(path, batch_size: int = 1000, shape=(80, 80), reorder: bool = False, allow_partial: bool = False):
    """FrameBatch iterator over a frame file of any supported kind (bounded memory)."""
    kind = frame_file_kind(path)
    if kind == "gige":
        from .gige_bin import iter_gige_bin
        return iter_gige_bin(path, shape, batch_size, reorder=reorder, allow_partial=allow_partial)
    if kind == "odin":
        from .odin import iter_odin_frames
        return iter_odin_frames(path, batch_size)
    from .hdf5 import iter_frames
    return iter_frames(path, batch_size)


def frame_shape(path, default=(80, 80)):
    """(rows, cols) of the frames in a file; ``default`` for headerless .bin files."""
    kind = frame_file_kind(path)
    if kind == "gige":
        return tuple(default)
    from .h5open import open_h5
    with open_h5(path) as f:
        if kind == "odin":
            return tuple(f["raw_frames"].shape[1:])
        if "entry/instrument/detector" not in f:
            raise FormatError(f"{path}: a hexspec file without /entry/instrument/detector holds no frames or events")
        d = f["entry/instrument/detector"]
        return (int(d["rows"][()]), int(d["cols"][()]))


# ------------------------------------------------------------------ frame compression

#: Frame-dataset compressions hexspec writes (``--compression``). bslz4 and blosc are
#: HDF5 filter plugins (shipped by hdf5plugin, also what odin-data and the synchrotron
#: HDF5 world use); gzip is HDF5's built-in deflate after byte shuffle; lz4 is the
#: plain LZ4 plugin.
COMPRESSIONS = ("bslz4", "blosc", "lz4", "gzip", "none")
DEFAULT_COMPRESSION = "bslz4"

# HDF5 filter ids (registered with the HDF Group) -> hexspec's name for them
_FILTER_NAMES = {32008: "bslz4", 32001: "blosc", 32004: "lz4", 1: "gzip"}


def frame_compression(name: str = DEFAULT_COMPRESSION) -> dict:
    """h5py ``create_dataset`` keywords for frames compressed as ``name``.

    Parameters
    ----------
    name : {"bslz4", "blosc", "lz4", "gzip", "none"}
        bslz4: bitshuffle + LZ4 (hdf5plugin.Bitshuffle); blosc: Blosc with LZ4 after
        byte shuffle (hdf5plugin.Blosc, level 5); lz4: plain LZ4 (hdf5plugin.LZ4);
        gzip: byte shuffle + deflate level 1; none: stored as is.
    """
    import hdf5plugin
    from ..errors import ConfigError
    if name == "bslz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if name == "blosc":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if name == "lz4":
        return dict(hdf5plugin.LZ4())
    if name == "gzip":
        return dict(compression="gzip", compression_opts=1, shuffle=True)
    if name == "none":
        return {}
    raise ConfigError(f"compression: expected one of {', '.join(COMPRESSIONS)}, found {name!r}")


def dataset_compression(ds) -> str:
    """hexspec's name for the compression of an h5py dataset ("bslz4", "blosc", "lz4",
    "gzip", "none"), or "filter <id>" for another HDF5 filter."""
    plist = ds.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        fid = plist.get_filter(i)[0]
        if fid == 2:          # byte shuffle: part of gzip (and of nothing else hexspec writes)
            continue
        names.append(_FILTER_NAMES.get(fid, f"filter {fid}"))
    return "+".join(names) if names else "none"


def file_compression(path) -> str:
    """Compression of the frames of a frame file ("none" for .bin files)."""
    kind = frame_file_kind(path)
    if kind == "gige":
        return "none"
    from .h5open import open_h5
    with open_h5(path) as f:
        ds = f["raw_frames"] if kind == "odin" else f.get("entry/frames/data")
        if ds is None:
            raise FormatError(f"{path}: a hexspec file without /entry/frames/data holds no frames")
        return dataset_compression(ds)
