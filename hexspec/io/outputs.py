"""Output files: never overwrite what the user did not name, never write over an input.

Every command that writes a file goes through :func:`check_output` (or
:func:`atomic_output`, which also writes to a temporary file in the same directory and
renames it into place, so a command that fails half way leaves any earlier file
untouched). The recorder cannot write to a temporary name (its file must be readable
while it grows and after a crash), so it takes an exclusive lock instead
(:class:`OutputLock`): a second recorder on the same path fails at once.

Inputs and outputs are compared by (device, inode), which catches hard links, symbolic
links and different spellings of one path alike.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ConfigError


def add_force_option(parser) -> None:
    """``--force`` (alias ``--overwrite``): allow replacing an existing output file."""
    parser.add_argument("--force", "--overwrite", dest="force", action="store_true",
                        help="replace an existing output file (never an input)")


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_file(a, b) -> bool:
    """True if ``a`` and ``b`` are the same file (same device and inode); False if either is missing."""
    ia = _identity(a)
    return ia is not None and ia == _identity(b)


def check_output(path, inputs=(), force: bool = False, option: str = "-o") -> Path:
    """Refuse an output that is an input, or that exists without ``force``; check it can be created.

    Parameters
    ----------
    path : str or Path
        The output file.
    inputs : iterable of str or Path
        Files the command reads; the output may be none of them, even with ``force``.
    force : bool
        Allow replacing an existing file.
    option : str
        How the output was given, for the message.

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        One line naming the output and what is wrong with it.
    """
    path = Path(path)
    for inp in inputs:
        if inp is not None and same_file(path, inp):
            how = "" if Path(inp).absolute() == path.absolute() else f" (the same file as {inp}: a link)"
            raise ConfigError(f"{option} {path}: the output would overwrite the input{how}; give another output file")
    if path.is_dir():
        raise ConfigError(f"{option} {path}: expected a file name, found a directory")
    if (path.exists() or path.is_symlink()) and not force:
        raise ConfigError(f"{option} {path}: already exists; give --force (or --overwrite) to replace it")
    check_writable_dir(path.parent, f"{option} {path}")
    return path


def check_writable_dir(directory, what: str) -> None:
    """Create ``directory`` if needed and prove a file can be created in it (before any work is done)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hexspec-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot create the output file in {directory} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def atomic_output(path, inputs=(), force: bool = False, option: str = "-o", keep_existing: bool = False):
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The checks of :func:`check_output` come first. If the block raises (or returns a
    non-zero status through an exception), the temporary file is removed and ``path``
    is left as it was. With ``keep_existing`` an existing ``path`` is copied to the
    temporary file first, so the block adds to it (results groups) without risking it.
    """
    path = check_output(path, inputs, force, option)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        if keep_existing and path.exists():
            shutil.copyfile(path, tmp)
        else:
            tmp.unlink()        # writers create it themselves (h5py, open "wb")
        yield tmp
        if not tmp.exists():
            raise ConfigError(f"{option} {path}: nothing was written")
        # an input may have been swapped in under our name meanwhile: check again
        for inp in inputs:
            if inp is not None and same_file(path, inp):
                raise ConfigError(f"{option} {path}: became the input {inp} while writing; result left in {tmp}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()
        raise


class OutputLock:
    """An exclusive ``flock`` on an output file, taken before anything is written to it.

    The file is created (empty) if missing, never truncated here. A second holder
    (another recorder, in this or another process) fails at once with a ConfigError
    naming the file. :meth:`release` (or leaving the ``with`` block) unlocks; the lock
    also goes when the process dies, so a killed recorder never leaves a stale lock.

    Parameters
    ----------
    path : str or Path
    remove_if_empty : bool
        On :meth:`release`, delete the file if it is still empty and was created here
        (a recording that never received a frame leaves nothing behind).
    """

    def __init__(self, path, remove_if_empty: bool = True):
        self.path = Path(path)
        self.remove_if_empty = remove_if_empty
        existed = self.path.exists()
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ConfigError(f"-o {self.path}: cannot create the output file ({exc.strerror or exc})") from None
        self.created = not existed
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"-o {self.path}: another process is writing this file (it holds the lock); "
                                  "give another output file") from None
            raise ConfigError(f"-o {self.path}: cannot lock the output file ({exc.strerror or exc})") from None
        self._identity = _identity(self.path)

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def release(self) -> None:
        """Unlock (and remove the file if it was created here and stayed empty). Idempotent."""
        if self.fd < 0:
            return
        try:
            if self.remove_if_empty and self.created and _identity(self.path) == self._identity \
                    and os.fstat(self.fd).st_size == 0:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
