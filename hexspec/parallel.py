"""Offline reprocessing on Dask: many frame files, one ProcessingConfig, the serial result.

The files are cut into chunks of whole batches from their metadata alone (frame
counts; no frame is read on the client). Each chunk is a task that opens its file by
path on a worker, so workers need only the package and the files. A chunk first reads
the frame before it (the last frame of the previous chunk, possibly in the previous
file) to set the next-frame state exactly as the serial loop has it there; its gaps are
counted from that frame's number by the run's one gap counter (frames.GapCounter).
Cubes and counters are sums over chunks, reduced in a tree on the workers, so the
cube, the counters and the extractor statistics equal those of :func:`serial` bit for
bit.

A Dask LocalCluster is started by default (``workers`` processes of one thread);
``scheduler="tcp://host:8786"`` uses an existing cluster. A worker lost mid-run costs
only the chunks it held: Dask runs them again elsewhere (tasks are pure functions of
the chunk and the config).

Resumable: with ``manifest`` (the CLI puts it beside the output), finished chunks are
recorded as groups of them complete, their summed cube and counters kept in a sidecar
HDF5 file; a cancelled or crashed run given the same inputs continues from them, and
its result equals an uninterrupted run's. A missing or unreadable input file is
reported by name (``ParallelResult.failed``) while the other files finish; of a file
damaged in its middle, the chunks that could be read count and the others are named.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ProcessingConfig
from .errors import ConfigError, FormatError, HexspecError
from .eventlist import EventList
from .events import STAT_NAMES, EventExtractor, _prime_state
from .pipeline import RunResult, RunStats
from .spectra import SpectralCube, SpectrumAccumulator

__all__ = ["Chunk", "ChunkResult", "ParallelResult", "plan_chunks", "process_chunk", "process_files", "serial",
           "iter_files", "chunk_events_path", "load_chunk_events"]

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Chunk:
    """Frames [start, stop) of one file; ``prev`` = (path, index) of the frame before it in the run."""

    index: int
    path: str
    start: int
    stop: int
    prev: tuple | None


@dataclass
class ChunkResult:
    """Summable result of one or more chunks (counts None until a chunk has run)."""

    chunks: list
    counts: np.ndarray | None = None
    underflow: int = 0
    overflow: int = 0
    frames: int = 0
    frames_dropped: int = 0
    batches: int = 0
    events: int = 0
    first: tuple = (-1, -1)          # (chunk index, first frame number) of the earliest chunk
    last: tuple = (-1, -1)           # (chunk index, last frame number) of the latest chunk
    extractor: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)   # path -> message

    def __getstate__(self):
        # A chunk's cube is mostly empty (3% of the bins of 80 x 80 x 1024 after 15,625
        # simulated frames) but 26 MB dense, and Dask moves it between workers and to the
        # client at every reduction: pickled as its non-zero bins it is a tenth of that
        # (measured: 10-15% less CPU per transfer, sum and fetch of two such cubes).
        state = dict(self.__dict__)
        c = state["counts"]
        if isinstance(c, np.ndarray) and c.size:
            flat = c.reshape(-1)
            idx = np.flatnonzero(flat)
            if 3 * idx.size < flat.size:
                state["counts"] = ("nonzero", c.shape, c.dtype.str,
                                   idx.astype(np.int32 if flat.size < 2 ** 31 else np.int64), flat[idx])
        return state

    def __setstate__(self, state):
        c = state["counts"]
        if isinstance(c, tuple) and c and c[0] == "nonzero":
            _, shape, dtype, idx, values = c
            counts = np.zeros(int(np.prod(shape)), dtype=np.dtype(dtype))
            counts[idx] = values
            state = {**state, "counts": counts.reshape(shape)}
        self.__dict__.update(state)

    def __add__(self, other: "ChunkResult") -> "ChunkResult":
        if self.counts is None:
            counts = other.counts
        elif other.counts is None:
            counts = self.counts
        else:
            counts = self.counts + other.counts
        firsts = [r.first for r in (self, other) if r.first[0] >= 0]
        lasts = [r.last for r in (self, other) if r.last[0] >= 0]
        keys = set(self.extractor) | set(other.extractor)
        return ChunkResult(
            chunks=sorted(self.chunks + other.chunks), counts=counts,
            underflow=self.underflow + other.underflow, overflow=self.overflow + other.overflow,
            frames=self.frames + other.frames, frames_dropped=self.frames_dropped + other.frames_dropped,
            batches=self.batches + other.batches, events=self.events + other.events,
            first=min(firsts) if firsts else (-1, -1), last=max(lasts) if lasts else (-1, -1),
            extractor={k: self.extractor.get(k, 0) + other.extractor.get(k, 0) for k in keys},
            errors={**self.errors, **other.errors})


@dataclass
class ParallelResult(RunResult):
    """:class:`~hexspec.pipeline.RunResult` of a parallel run, plus what went wrong where.

    Attributes
    ----------
    failed : dict
        Input path -> one-line reason, for files that could not be (fully) processed.
    chunks : int
        Chunks of the plan; ``resumed`` of them came from a manifest.
    dashboard_link : str or None
    done_chunks : list of int
        Indices of the chunks in the result, in run order (their events, with
        ``events_dir``, are :func:`load_chunk_events`).
    """

    failed: dict = field(default_factory=dict)
    chunks: int = 0
    resumed: int = 0
    dashboard_link: str | None = None
    done_chunks: list = field(default_factory=list)


# ------------------------------------------------------------------ planning (client side)

def plan_chunks(paths, chunk_frames: int = 100_000, batch_frames: int = 1000, shape=None):
    """Cut frame files into chunks from their metadata only.

    Parameters
    ----------
    paths : sequence of path
        Frame files (GigE .bin, odin-data or hexspec HDF5), processed in this order.
    chunk_frames : int
        Frames per chunk, rounded up to whole batches.
    batch_frames : int
        Frames per batch inside a chunk (the serial loop's batch size).
    shape : (rows, cols), optional
        Frame shape for headerless .bin files; every file must have the same shape.

    Returns
    -------
    chunks : list of Chunk
    shape : (rows, cols)
    failed : dict
        Path -> reason for files whose metadata could not be read (left out of the plan).
    """
    from .io import framefile
    batch_frames = int(batch_frames)
    if batch_frames < 1 or int(chunk_frames) < 1:
        raise ConfigError(f"plan_chunks: chunk_frames and batch_frames must be >= 1, "
                          f"found {chunk_frames} and {batch_frames}")
    step = -(-int(chunk_frames) // batch_frames) * batch_frames
    chunks, failed = [], {}
    run_shape = tuple(shape) if shape is not None else None
    prev = None
    for p in paths:
        p = str(Path(p))
        try:
            kind = framefile.frame_file_kind(p)
            s = framefile.frame_shape(p, default=run_shape or (80, 80))
            if kind == "hexspec" and framefile.count_frames(p, s) == 0:
                raise FormatError(f"{p}: holds no raw frames (an event file is re-histogrammed serially)")
            if run_shape is None:
                run_shape = tuple(s)
            elif tuple(s) != run_shape:
                raise FormatError(f"{p}: expected frames of shape {run_shape} like the files before it, found {tuple(s)}")
            n = framefile.count_frames(p, s)
        except HexspecError as exc:
            failed[p] = str(exc)
            continue
        except (OSError, RuntimeError) as exc:
            failed[p] = f"{p}: cannot be read ({exc})"
            continue
        for a in range(0, n, step):
            b = min(a + step, n)
            chunks.append(Chunk(len(chunks), p, a, b, prev))
            prev = (p, b - 1)
    if run_shape is None:
        run_shape = (80, 80)
    return chunks, run_shape, failed


# ------------------------------------------------------------------ one chunk (worker side)

def _read_one(path, index, shape):
    from .io import framefile
    for batch in framefile.iter_frame_range(path, index, index + 1, 1, shape=shape):
        return batch
    raise FormatError(f"{path}: expected a frame at index {index}, found the file shorter")


def process_chunk(chunk: Chunk, config: ProcessingConfig, shape, batch_frames: int = 1000,
                  read_ahead: bool = True, decode_threads: int | None = 1, events_dir=None) -> ChunkResult:
    """Events and spectra of one chunk, with the serial loop's state at its start.

    Errors of the file (missing, damaged) are returned in ``errors``, not raised, so
    that the other chunks of a reduction still count. ``decode_threads`` decode
    compressed chunks ahead of the kernel (:mod:`hexspec.io.chunkread`; one by default:
    a worker is given one core, and that one thread already overlaps decoding with the
    kernel). With ``events_dir``, the chunk's events are also stored there
    (:func:`chunk_events_path`), for the client to merge in order.
    """
    from .io import framefile
    from .io.readahead import ReadAhead
    shape = (int(shape[0]), int(shape[1]))
    extractor = EventExtractor(config, shape)
    acc = SpectrumAccumulator(config, shape)
    stats = RunStats()
    prev = None
    if chunk.prev is not None:
        try:
            prev = _read_one(chunk.prev[0], chunk.prev[1], shape)
        except (HexspecError, OSError, RuntimeError):
            pass      # that frame's own chunk reports the damage; this one starts afresh, as after a restart
    try:
        if prev is not None:
            # the serial loop's next-frame state after that frame depends on it alone
            # (see EventExtractor._run_parallel, which primes its thread chunks the same way)
            _prime_state(prev.frames.reshape(1, -1)[0], extractor.thr, extractor._last_hit, extractor._state,
                         int(prev.frame_numbers[0]))
            # the gap counter's state after that frame, so the gap before this chunk (or a
            # restart there) is counted here as the serial loop counts it; the frame itself
            # belongs to the chunk before, so nothing else of the stats is touched
            stats.gaps.count(prev.frame_numbers)
        source = framefile.iter_frame_range(chunk.path, chunk.start, chunk.stop, batch_frames, shape=shape,
                                            decode_threads=decode_threads)
        if read_ahead:
            source = ReadAhead(source)
        parts = []
        for batch in source:
            stats.count_batch(batch.frame_numbers)
            events = extractor(batch, accumulator=acc)
            stats.events += len(events)
            stats.batches += 1
            if events_dir is not None:
                parts.append(events)
        if events_dir is not None:
            _save_events(chunk_events_path(events_dir, chunk.index), EventList.concatenate(parts))
    except (HexspecError, OSError, RuntimeError) as exc:
        msg = str(exc) if isinstance(exc, HexspecError) else f"{chunk.path}: cannot be read ({exc})"
        return ChunkResult(chunks=[], errors={chunk.path: msg})
    finally:
        extractor.close()
    cube = acc.cube
    ex = extractor.stats
    ex.pop("frames", None)
    return ChunkResult(chunks=[chunk.index], counts=cube.counts, underflow=cube.underflow,
                       overflow=cube.overflow, frames=stats.frames, frames_dropped=stats.frames_dropped,
                       batches=stats.batches, events=stats.events,
                       first=(chunk.index, stats.first_frame), last=(chunk.index, stats.last_frame),
                       extractor=ex)


def chunk_events_path(events_dir, index: int) -> Path:
    """Where a chunk's events are kept until the client merges them into the output."""
    return Path(events_dir) / f"chunk-{int(index):06d}.npz"


def _save_events(path, events):
    # written whole, then renamed: a chunk killed mid-write leaves no part that looks done
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{k: getattr(events, k) for k in EventList.__slots__})
    os.replace(tmp, path)


def load_chunk_events(events_dir, index: int):
    """The EventList a chunk stored with ``events_dir`` (FormatError if missing or unreadable)."""
    path = chunk_events_path(events_dir, index)
    try:
        with np.load(path) as z:
            return EventList(*(z[k] for k in EventList.__slots__))
    except (OSError, KeyError, ValueError) as exc:
        raise FormatError(f"{path}: expected the events of chunk {index}, cannot read them ({exc})") from None


def _sum(*parts) -> ChunkResult:
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def _to_run_result(total: ChunkResult, config, shape, elapsed_s, cls=RunResult, **extra):
    bins = config.resolved_bins()
    counts = total.counts if total.counts is not None else np.zeros((shape[0], shape[1], bins.n), np.uint32)
    cube = SpectralCube(counts, bins.edges, unit=config.energy_unit, underflow=total.underflow,
                        overflow=total.overflow)
    stats = RunStats(batches=total.batches, frames=total.frames, frames_dropped=total.frames_dropped,
                     first_frame=total.first[1], last_frame=total.last[1], events=total.events,
                     elapsed_s=elapsed_s)
    ex = {k: int(total.extractor.get(k, 0)) for k in STAT_NAMES}
    ex["frames"] = total.frames
    return cls(cube, stats, ex, **extra)


# ------------------------------------------------------------------ serial reference

def iter_files(paths, batch_frames: int = 1000, shape=None, read_ahead: bool = True, decode_threads: int | None = None):
    """FrameBatch iterator over several frame files in order (what the serial path reads);
    ``decode_threads`` as :func:`hexspec.io.framefile.iter_frame_file`."""
    from .io import framefile
    from .io.readahead import ReadAhead

    def chain():
        for p in paths:
            yield from framefile.iter_frame_file(p, batch_frames, shape=shape or (80, 80), decode_threads=decode_threads)
    return ReadAhead(chain()) if read_ahead else chain()


def serial(paths, config: ProcessingConfig, batch_frames: int = 1000, shape=None, threads: int = 1) -> RunResult:
    """The single-process result over ``paths``: :func:`hexspec.pipeline.run` over
    :func:`iter_files`, what :func:`process_files` reproduces."""
    from . import pipeline
    from .io import framefile
    shape = shape or framefile.frame_shape(paths[0])
    return pipeline.run(iter_files(paths, batch_frames, shape), config, shape=shape, threads=threads)


# ------------------------------------------------------------------ manifest

def _identity(chunks, config, shape, batch_frames, chunk_frames, events=False):
    files = []
    for p in dict.fromkeys(c.path for c in chunks):
        st = os.stat(p)
        files.append({"path": str(Path(p).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {"version": MANIFEST_VERSION, "files": files, "config": json.loads(config.to_json()),
            "shape": list(shape), "batch_frames": int(batch_frames), "chunk_frames": int(chunk_frames),
            "chunks": len(chunks), "events": bool(events)}


class _Checkpoint:
    """The manifest (JSON: what run, which chunks are done) and its sidecar (HDF5: their sum)."""

    def __init__(self, manifest, identity, resume: bool):
        self.manifest = Path(manifest)
        self.sidecar = self.manifest.with_name(self.manifest.name + ".partial.h5")
        self.identity = identity
        self.total = ChunkResult(chunks=[])
        if self.manifest.exists():
            if not resume:
                raise ConfigError(f"{self.manifest}: an unfinished run left this manifest; continue it with --resume "
                                  "(resume=True) or remove it and its .partial.h5")
            self._load()
        self.last_save = time.monotonic()

    def _load(self):
        import h5py
        try:
            stored = json.loads(self.manifest.read_text())
        except (OSError, ValueError) as exc:
            raise FormatError(f"{self.manifest}: expected a hexspec run manifest (JSON), cannot read it ({exc})") from None
        mine = {k: v for k, v in self.identity.items()}
        theirs = {k: stored.get(k) for k in mine}
        if theirs != mine:
            what = [k for k in mine if theirs.get(k) != mine[k]]
            raise ConfigError(f"{self.manifest}: made for another run (differs in {', '.join(what)}); "
                              "remove it and its .partial.h5 to start again")
        if not stored.get("done"):
            return
        try:
            with h5py.File(self.sidecar, "r", locking=False) as f:
                r = json.loads(f.attrs["result"])
                counts = f["counts"][...]
        except (OSError, KeyError, ValueError) as exc:
            raise FormatError(f"{self.sidecar}: expected the partial cube of {self.manifest}, "
                              f"cannot read it ({exc})") from None
        self.total = ChunkResult(counts=counts, first=tuple(r.pop("first")), last=tuple(r.pop("last")), **r)

    @property
    def done(self) -> set:
        return set(self.total.chunks)

    def add(self, part: ChunkResult):
        self.total = self.total + part

    def save(self):
        """Sidecar first, then the manifest, each replaced whole: a crash at any point
        leaves a manifest whose chunks are all in the sidecar beside it."""
        import h5py
        t = self.total
        if t.counts is not None:
            tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
            with h5py.File(tmp, "w", libver="earliest", locking=False) as f:
                f.create_dataset("counts", data=t.counts, compression="gzip", compression_opts=1, shuffle=True)
                r = {k: getattr(t, k) for k in ("chunks", "underflow", "overflow", "frames", "frames_dropped",
                                                "batches", "events", "extractor")}
                r["first"], r["last"] = list(t.first), list(t.last)
                f.attrs["result"] = json.dumps(r)
            os.replace(tmp, self.sidecar)
        tmp = self.manifest.with_name(self.manifest.name + ".tmp")
        tmp.write_text(json.dumps({**self.identity, "done": sorted(t.chunks)}, indent=1))
        os.replace(tmp, self.manifest)
        self.last_save = time.monotonic()

    def remove(self):
        for p in (self.manifest, self.sidecar):
            p.unlink(missing_ok=True)


# ------------------------------------------------------------------ the run

def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError("parallel processing needs Dask's distributed scheduler, which is not installed: "
                          "pip install 'hexspec[cluster]'") from None
    return distributed


def _client(workers, scheduler, processes):
    Client, LocalCluster = _distributed().Client, _distributed().LocalCluster
    if scheduler is not None:
        return Client(scheduler), None
    import dask
    # loopback only (DESIGN.md: endpoints bind to 127.0.0.1); threads use in-process comms
    where = {"host": "127.0.0.1"} if processes else {}
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_ in their workers, which turns off glibc's
    # adaptive mmap threshold: every batch-sized array is then a fresh mmap whose pages
    # fault in one by one. Measured here: a chunk ran 2x slower in such a worker than in
    # this process, and as fast without the variable.
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=processes,
                               dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, **where)
    return Client(cluster), cluster


def process_files(paths, config: ProcessingConfig, workers: int = 2, scheduler: str | None = None, *,
                  chunk_frames: int = 100_000, batch_frames: int = 1000, shape=None, manifest=None,
                  resume: bool = False, progress=None, processes: bool = True, client=None,
                  group_chunks: int | None = None, checkpoint_interval_s: float = 2.0,
                  read_ahead: bool = False, decode_threads: int | None = 1, events_dir=None) -> ParallelResult:
    """Process frame files on Dask; the result equals :func:`serial` over the same files.

    Parameters
    ----------
    paths : sequence of path
        Frame files, in the order the serial path reads them.
    config : ProcessingConfig
    workers : int
        Worker processes of the LocalCluster started when no ``scheduler`` or ``client``
        is given (one thread each: the kernel is single-threaded per chunk).
    scheduler : str, optional
        Address of an existing Dask scheduler, e.g. "tcp://host:8786"; its workers open
        the files by the paths given, so those must be valid there.
    chunk_frames, batch_frames : int
        Frames per task and per batch within it.
    shape : (rows, cols), optional
        Frame shape of headerless .bin files.
    manifest : path, optional
        Record finished chunks here (and their sum in ``manifest + ".partial.h5"``);
        both are removed once every planned chunk is done.
    resume : bool
        Continue from an existing manifest (otherwise its presence is an error).
    progress : callable, optional
        ``progress(frames_done, frames_total, frames_per_s, dashboard_link)`` after each
        group of chunks; an exception it raises (KeyboardInterrupt) cancels the run,
        keeping what finished in the manifest.
    processes : bool
        LocalCluster workers as processes (default) or threads of this process.
    client : distributed.Client, optional
        Use this client (and leave it open).
    group_chunks : int, optional
        Chunks reduced together before their sum reaches the client (default: 2 per worker).
    checkpoint_interval_s : float
        Longest time between manifest saves while groups complete.
    read_ahead : bool
        Read each chunk in a thread ahead of its kernel. Off by default: a worker of one
        thread is given one core, which the extra thread would share with the others.
    decode_threads : int, optional
        Threads per task decoding bitshuffle-LZ4 and Blosc chunks ahead of its kernel
        (None: one per core of the worker's machine, up to 4).
    events_dir : path, optional
        Each chunk also stores its events in this folder (which the workers must reach
        by the same path: local workers, or a shared filesystem), one file per chunk;
        merged in ``done_chunks`` order they are the serial run's events. Kept with the
        manifest, so that a resumed run still has the events of its finished chunks.

    Returns
    -------
    ParallelResult
        ``cube``, ``stats``, ``extractor_stats`` as :func:`hexspec.pipeline.run` gives them
        (``elapsed_s`` is the wall time), and ``failed`` files with their reasons.
    """
    if not isinstance(config, ProcessingConfig):
        raise ConfigError(f"process_files: expected a ProcessingConfig, found {type(config).__name__}")
    paths = [str(p) for p in paths]
    if not paths:
        raise ConfigError("process_files: expected at least one input file, found none")
    t0 = time.monotonic()
    if events_dir is not None:
        Path(events_dir).mkdir(parents=True, exist_ok=True)
    chunks, shape, failed = plan_chunks(paths, chunk_frames, batch_frames, shape)
    config.pixel_maps(shape)          # maps that do not fit fail here, naming the shape
    ckpt = None
    if manifest is not None and chunks:
        ckpt = _Checkpoint(manifest, _identity(chunks, config, shape, batch_frames, chunk_frames,
                                               events_dir is not None), resume)
    done = ckpt.done if ckpt is not None else set()
    todo = [c for c in chunks if c.index not in done]
    total_frames = sum(c.stop - c.start for c in chunks)
    frames_done = sum(c.stop - c.start for c in chunks if c.index in done)
    resumed = len(chunks) - len(todo)
    result = ckpt.total if ckpt is not None else ChunkResult(chunks=[])
    link = None
    own = client is None and todo
    cluster = None
    if todo:
        if own:
            client, cluster = _client(workers, scheduler, processes)
        link = getattr(client, "dashboard_link", None)
        try:
            nworkers = max(1, len(client.scheduler_info().get("workers", {})) or int(workers))
            group = int(group_chunks or 2 * nworkers)
            groups = [todo[i:i + group] for i in range(0, len(todo), group)]
            futures = {}
            for g in groups:
                level = client.map(process_chunk, g, config=config, shape=shape, batch_frames=batch_frames,
                                   read_ahead=read_ahead, decode_threads=decode_threads,
                                   events_dir=None if events_dir is None else str(events_dir), pure=False)
                while len(level) > 1:      # tree reduction on the workers, pairs at each level
                    level = [client.submit(_sum, *level[i:i + 2], pure=False) for i in range(0, len(level), 2)]
                futures[level[0]] = g
            as_completed = _distributed().as_completed
            t_run = time.monotonic()
            frames_run = 0
            for fut in as_completed(list(futures)):
                part = fut.result()
                g = futures.pop(fut)
                n = sum(c.stop - c.start for c in g if c.index in part.chunks)
                frames_done += n
                frames_run += n
                for p, msg in part.errors.items():
                    failed.setdefault(p, msg)
                part.errors = {}
                result = result + part
                if ckpt is not None:
                    ckpt.total = result
                    if time.monotonic() - ckpt.last_save >= checkpoint_interval_s or not futures:
                        ckpt.save()
                if progress is not None:
                    rate = frames_run / max(time.monotonic() - t_run, 1e-9)
                    progress(frames_done, total_frames, rate, link)
        except BaseException:
            if ckpt is not None:
                ckpt.save()
            raise
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    if ckpt is not None and set(result.chunks) >= {c.index for c in chunks}:
        ckpt.remove()     # complete: the output will hold it all (files missing at planning cannot resume)
    return _to_run_result(result, config, shape, time.monotonic() - t0, cls=ParallelResult, failed=failed,
                          chunks=len(chunks), resumed=resumed, dashboard_link=link,
                          done_chunks=sorted(result.chunks))

