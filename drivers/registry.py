"""Opening a frame source by URL: each scheme maps to the transport module that serves it.

=========================================  ==============================================
``tcp://HOST:PORT[?socket=sub|pull]``       odin-data live-view ZMQ stream (:mod:`.zmq`); also
                                            ``hwm``, ``max_message_bytes``, ``queue_bytes``
``ipc://PATH[?socket=...]``                 the same over a local socket
``serial://PORT?baud=..&timeout=s``         FORMATS.md serial framing (:mod:`.serial`)
``loop://``, ``socket://``, ``rfc2217://``  pyserial URLs, same framing
``file://PATH[?rate=fps]``                  GigE .bin, odin-data or hexspec HDF5 (:mod:`.files`)
``sim://?rate=fps&source=am241&seed=N``     the HEXITEC simulator (:mod:`hexspec.sim`)
=========================================  ==============================================

Transport modules load when their scheme is opened, so importing the drivers stays cheap.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import _float_option, _int_option, _no_leftovers, _shape_option, parse_timeout, query_options

_SERIAL_URL_SCHEMES = ("loop", "socket", "rfc2217", "spy", "alt", "hwgrep", "cp2110")


def open_source(url: str, *, shape=None, max_frames=None, timeout_s="default", **options):
    """Open a frame source by URL.

    Parameters
    ----------
    url : str
        One of the forms in this module's docstring. Query options (after ``?``)
        common to several sources: ``frames=N`` (stop after N frames), ``timeout=s``
        (end after this many seconds without data; 0 or ``none`` waits without limit
        but still stops when closed), ``batch=N`` (frames per yielded batch),
        ``shape=R,C`` (expected or, for headerless files, actual frame shape).
    shape : (rows, cols), optional
        Same as the ``shape`` option; the URL wins if both are given.
    max_frames : int, optional
        Same as ``frames``.
    timeout_s : float or None, optional
        Same as ``timeout``.
    **options
        Passed on to the source's constructor.

    Returns
    -------
    FrameSource
    """
    if "://" not in url:
        raise ConfigError(f"source {url!r}: expected a URL such as tcp://HOST:PORT, serial:///dev/ttyACM0, "
                          "file:///data/run.h5 or sim://")
    scheme, rest, query = query_options(url)
    shape = _shape_option(query, shape)
    max_frames = _int_option(query, "frames", max_frames, minimum=1)
    kw = dict(options)
    if "timeout" in query:
        kw["timeout_s"] = parse_timeout(query.pop("timeout"), None)
    elif timeout_s != "default":
        kw["timeout_s"] = timeout_s
    batch = _int_option(query, "batch", None, minimum=1)
    if batch is not None:
        kw["batch_frames"] = batch

    opener = SCHEMES.get(scheme)
    if opener is None:
        raise ConfigError(f"source {url!r}: unknown scheme {scheme!r} (expected tcp, ipc, serial, loop, file or sim)")
    return opener(url, scheme, rest, query, shape, max_frames, kw)


# -- one opener per transport: (url, scheme, url without query, query options, shape,
#    max_frames, constructor keywords) -> source; each consumes its own query options

def _open_zmq(url, scheme, rest, query, shape, max_frames, kw):
    from .zmq import ZmqSource
    socket_type = query.pop("socket", "sub").upper()
    if "hwm" in query:
        kw["hwm"] = _int_option(query, "hwm", minimum=1)
    if "bind" in query:
        kw["bind"] = query.pop("bind").lower() in ("1", "true", "yes")
    for key in ("max_message_bytes", "queue_bytes"):
        if key in query:
            kw[key] = _int_option(query, key, minimum=1)
    if "dataset" in query:
        kw["dataset"] = query.pop("dataset")
    if "sampled" in query:
        kw["sampled"] = query.pop("sampled").lower()
    _no_leftovers(url, query)
    return ZmqSource(rest, socket_type=socket_type, shape=shape, max_frames=max_frames, **kw)


def _open_serial(url, scheme, rest, query, shape, max_frames, kw):
    from .serial import SerialSource
    baud = _int_option(query, "baud", 115200, minimum=1)
    if scheme == "serial":
        port = url.split("?", 1)[0][len("serial://"):]
        if not port:
            raise ConfigError(f"{url}: expected serial://PORT, e.g. serial:///dev/ttyACM0")
        _no_leftovers(url, query)
    else:
        port = url      # pyserial understands its own URL options
        query.clear()
    return SerialSource(port, baud=baud, shape=shape, max_frames=max_frames, **kw)


def _open_file(url, scheme, rest, query, shape, max_frames, kw):
    from .files import FileSource
    path = url.split("?", 1)[0][len("file://"):]
    rate = _float_option(query, "rate", None)
    if "reorder" in query:
        kw["reorder"] = query.pop("reorder").lower() in ("1", "true", "yes")
    kw.pop("timeout_s", None)
    _no_leftovers(url, query)
    return FileSource(path, rate_hz=rate, shape=shape, max_frames=max_frames, **kw)


def _open_sim(url, scheme, rest, query, shape, max_frames, kw):
    from .replay import SimSource
    rate = _float_option(query, "rate", None)
    photon_rate = _float_option(query, "photon_rate", None)
    name = query.pop("source", "am241")
    seed = _int_option(query, "seed", 0)
    kw.pop("timeout_s", None)
    _no_leftovers(url, query)
    return SimSource(source=name, rate_hz=rate, seed=seed, photon_rate_hz=photon_rate, shape=shape,
                     max_frames=max_frames, **kw)


#: URL scheme -> opener. The pyserial URL schemes share the serial framing.
SCHEMES = {"tcp": _open_zmq, "ipc": _open_zmq, "inproc": _open_zmq, "serial": _open_serial,
           **{scheme: _open_serial for scheme in _SERIAL_URL_SCHEMES},
           "file": _open_file, "sim": _open_sim}
