"""Frame sources and sinks: ZMQ (odin-data live view), serial links, files, the simulator.

>>> from hexspec.drivers import open_source
>>> with open_source("tcp://127.0.0.1:5020?socket=pull") as source:   # doctest: +SKIP
...     for batch in source:
...         ...
...     print(source.stats)

Transport modules load on first use, so importing this package stays cheap.
"""

from importlib import import_module as _import_module

from . import base as _base
from .base import FrameSource, GapCounter, SourceStats
from .registry import open_source

# open_source lived in .base; it moved to .registry so that the base imports no transport
# (each transport imports the base). Old imports from .base still find it: importing
# hexspec.drivers.base runs this package first, which puts the name there.
_base.open_source = open_source

_LAZY = {
    "ZmqSource": "zmq", "ZmqPublisher": "zmq", "decode_message": "zmq", "encode_header": "zmq",
    "SerialSource": "serial", "SerialWriter": "serial", "FrameParser": "serial", "encode_frame": "serial",
    "FileSource": "files",
    "SimSource": "replay", "Pacer": "pacer",
    "Recorder": "recorder", "record": "recorder",
}

__all__ = [
    "FileSource",
    "FrameParser",
    "FrameSource",
    "GapCounter",
    "Pacer",
    "Recorder",
    "SerialSource",
    "SerialWriter",
    "SimSource",
    "SourceStats",
    "ZmqPublisher",
    "ZmqSource",
    "decode_message",
    "encode_frame",
    "encode_header",
    "open_source",
    "record",
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hexspec.drivers' has no attribute {name!r}")
