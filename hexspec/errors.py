"""Exception hierarchy.

Every error a user can cause derives from :class:`HexspecError` and says what was
expected, what was found and where (file, byte offset, frame number). The command line
prints the message and exits non-zero without a traceback.
"""


class HexspecError(Exception):
    """Base class of every error hexspec raises on purpose."""


class FormatError(HexspecError):
    """A file or buffer does not follow the format it claims (FORMATS.md)."""


class ProtocolError(HexspecError):
    """A network or serial message does not follow its wire protocol."""


class CalibrationError(HexspecError):
    """A calibration cannot be computed or does not fit the detector."""


class ConfigError(HexspecError, ValueError):
    """A processing option has a wrong type, value or shape."""


class WriteError(HexspecError, OSError):
    """An output could not be written (disk full, quota, I/O error); what was flushed before is kept."""
