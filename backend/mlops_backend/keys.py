"""Auth keys from a file only its owner can read, re-read when it changes (rotation without a restart).

The file holds one key per line: the primary, then the secondary; both are valid, so a client
moves to the secondary while the primary is regenerated, then back. Blank lines and lines
starting with ``#`` are ignored. The server checks the file's identity (inode, size, mtime) at
most once a second, off the request path; a rewrite that cannot be used (left readable by
others, empty, half-written) is reported in the log and the keys in force stay, so a botched
rotation never opens the service or locks every client out.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

#: Most keys in a file: a primary and a secondary, as Azure ML services have.
MAX_KEYS = 2
_MAX_FILE_BYTES = 65536
MIN_KEY_LENGTH = 8


class KeyFileError(Exception):
    """The key file cannot be used; the message says why and how to fix it."""


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when the file is rewritten or replaced: (device, inode, size, mtime in ns).

    Raises:
        OSError: the file cannot be examined.
    """
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def read_key_file(path: Path) -> tuple[str, ...]:
    """The keys in ``path``, after checking that only its owner can read or write it.

    Raises:
        KeyFileError: the file is missing, not a regular file, open to group or others, too large,
            empty, or holds an invalid key or more than two.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: a FIFO must not hang the server
    except FileNotFoundError:
        raise KeyFileError(f"The auth key file {str(path)!r} does not exist.") from None
    except OSError as exc:
        raise KeyFileError(f"The auth key file {str(path)!r} cannot be read: {exc.strerror}.") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"The auth key file {str(path)!r} is not a regular file.")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"The auth key file {str(path)!r} is open to group or others (mode {stat.filemode(info.st_mode)}, "
                f"{info.st_mode & 0o777:o}): anyone on the machine could read the keys. Make it readable by its "
                f"owner only: chmod 600 {path}")
        if info.st_size > _MAX_FILE_BYTES:
            raise KeyFileError(f"The auth key file {str(path)!r} is {info.st_size} bytes: a key file holds one or "
                               f"two keys, one per line. Is it the right file?")
        raw = os.read(fd, _MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"The auth key file {str(path)!r} is not UTF-8 text.") from None
    keys = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise KeyFileError(f"The auth key file {str(path)!r} holds no key: write one key per line "
                           "(primary, then secondary).")
    if len(keys) > MAX_KEYS:
        raise KeyFileError(f"The auth key file {str(path)!r} holds {len(keys)} keys: at most {MAX_KEYS}, one per "
                           "line (primary, then secondary).")
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
            raise KeyFileError(f"Key {number} in {str(path)!r} is invalid: a key is at least {MIN_KEY_LENGTH} "
                               "characters without spaces.")
    return keys


class KeyFile:
    """The keys of a key file, as last read; :meth:`refresh` re-reads the file when it changed."""

    def __init__(self, path: Path, keys: tuple[str, ...]) -> None:
        self.path = path
        self.keys = keys
        try:
            self._identity: tuple[int, int, int, int] | None = file_identity(path)
        except OSError:
            self._identity = None
        self._problem: str | None = None

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the keys changed.

        A file that cannot be used keeps the keys in force and is reported once on stderr.
        """
        try:
            identity: tuple[int, int, int, int] | None = file_identity(self.path)
        except OSError:
            identity = None
        if identity == self._identity:
            return False
        self._identity = identity
        try:
            keys = read_key_file(self.path)
        except KeyFileError as exc:
            if str(exc) != self._problem:
                self._problem = str(exc)
                print(f"mlops-serve[{os.getpid()}]: {exc} The keys in force stay valid until the file is fixed.",
                      file=sys.stderr, flush=True)
            return False
        self._problem = None
        if keys == self.keys:
            return False
        self.keys = keys
        print(f"mlops-serve[{os.getpid()}]: auth keys reloaded from {self.path} ({len(keys)} "
              f"key{'s' if len(keys) > 1 else ''}).", file=sys.stderr, flush=True)
        return True
