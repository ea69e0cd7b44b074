"""Reading a file that a user, a workspace or a document folder named, when only a regular file may be read.

A name can lead to a device that never ends (/dev/zero), to someone's pipe
(/dev/stdin), or to a FIFO whose open waits for a writer. Such files are
refused before they are opened, and again on what was opened (the name may
have been swapped since); a regular file is read up to a limit, whatever its
size says (a /proc file says 0).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (fstat then refuses it); on a
# regular file it changes nothing. O_NOCTTY: a terminal never becomes this process's. Windows has neither.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


class NotARegularFile(OSError):
    """The name leads to a FIFO, a socket, a device or a folder; the message says which."""


def kind_of_file(mode: int) -> str:
    """What a file that is not a regular one is, in words ("a named pipe")."""
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the regular file at `path` (more than `limit` means: too large).

    NotARegularFile for anything else, OSError if it cannot be read. Blocking, but only as long as reading
    that much of a regular file takes.
    """
    _check_regular(os.stat(path).st_mode)  # through a link: its target is what would be read
    descriptor = os.open(path, _OPEN_FLAGS)
    try:
        _check_regular(os.fstat(descriptor).st_mode)
        pieces: list[bytes] = []
        left = limit + 1
        while left > 0:
            piece = os.read(descriptor, min(left, 1 << 20))
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
        return b"".join(pieces)
    finally:
        os.close(descriptor)


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"{kind_of_file(mode)}, not a file ingle reads")
