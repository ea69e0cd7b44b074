"""The workspace's source files, found and read with bounds that no odd file or folder can break.

A workspace is whatever the editor opened: a clone holding a link to
/dev/zero, a FIFO named `pipe.py`, a generated tree a thousand folders deep.
Only regular files are read, and at most MAX_FILE_BYTES of each whatever
their size claims; the walk is a loop with a depth bound, not a recursion.
Nothing here can block for longer than a regular file takes to read.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ingle.core.regular_files import read_regular_file

log = logging.getLogger("ingle.lsp")

# Bigger than any hand-written module; past it a file is data or generated code, not worth the memory.
MAX_FILE_BYTES = 1_000_000
# Package layouts nest a dozen folders at most (src/company/product/module/...); deeper trees are generated or a
# link farm, and their files are not what the user imports.
MAX_DEPTH = 32
# Dependencies and build output, in each language's usual place (Go's vendored modules, Cargo's and Maven's target).
SKIPPED_FOLDERS = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__", "site-packages", "build", "dist"}
    | {"vendor", "target"}
)


def source_files(root: Path, suffixes: tuple[str, ...], stop: threading.Event | None = None) -> Iterator[Path]:
    """The names under `root` that end in one of `suffixes` (`.py`, `.ts`, ...), each folder's files in name order
    before its subfolders (as `os.walk`).

    Hidden, skipped and linked folders are not entered, nor folders deeper than
    MAX_DEPTH (said once in the log); a folder that cannot be listed is left
    out. Names only: whether one is a regular file is `read_source`'s business.
    Stops early once `stop` is set. Blocking.
    """
    # (folder, depth), the next to visit last: an explicit stack, since a recursive walk (Python 3.11's os.walk)
    # raises RecursionError in a deep enough tree and loses every folder after it.
    pending: list[tuple[Path, int]] = [(root, 0)]
    too_deep = False
    while pending and not (stop and stop.is_set()):
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            log.info("not indexing %s: %s", folder, error.strerror or error)
            continue
        subfolders: list[Path] = []
        for entry in entries:
            if _is_folder(entry):
                if entry.name not in SKIPPED_FOLDERS and not entry.name.startswith("."):
                    subfolders.append(Path(entry.path))
            elif entry.name.endswith(suffixes):
                yield Path(entry.path)
        if subfolders and depth >= MAX_DEPTH:
            if not too_deep:
                log.warning("not indexing folders more than %d levels deep, such as %s", MAX_DEPTH, subfolders[0])
                too_deep = True
            continue
        pending += [(subfolder, depth + 1) for subfolder in reversed(subfolders)]


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """A folder itself, not a link to one (a link can loop, or lead out of the workspace)."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def read_source(path: Path) -> str | None:
    """A regular file's text (line breaks as Python reads them); None if it is anything else (a FIFO, a device,
    a folder), cannot be read, or holds more than MAX_FILE_BYTES. Blocking, but only as long as reading at
    most MAX_FILE_BYTES of a regular file takes."""
    try:
        data = read_regular_file(path, MAX_FILE_BYTES)
    except (OSError, ValueError):  # ValueError: a NUL in a path from a file URI
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    # Universal newlines, as Path.read_text gives: the index splits lines at "\n".
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def workspace_path(root: str, path: str) -> str | None:
    """`path` relative to the workspace root; None if it lies outside (after `..` steps) or is the root itself."""
    try:
        relative = Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        return None
    return str(relative) if relative.parts else None
