"""`file:/path/model.gguf` (or a plain path): import a GGUF file that is already on this machine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import SourceError
from ..gguf_info import read_gguf_info
from ..manifest import GgufInfo
from ..names import ModelName
from ..store import ModelStore
from .base import name_from_file
from .network import NetworkGuard
from .progress import ProgressCallback, ProgressReporter


def path_from_spec(spec: str) -> Path:
    """The local path a `file:` spec or plain path names, with `~` expanded."""
    if spec.startswith("file://"):
        return Path(unquote(urlsplit(spec).path))
    return Path(spec.removeprefix("file:")).expanduser()


class FileSource:
    """A local GGUF file, checked to be a readable GGUF before it is copied into the store."""

    def __init__(self, spec: str, expected_digest: str | None = None) -> None:
        self.spec = spec
        self.path = path_from_spec(spec)
        self.expected_digest = expected_digest
        self.gguf_info: GgufInfo | None = None
        self.guard: NetworkGuard | None = None  # never set: a remote caller cannot import files (parse.py)

    def default_name(self) -> ModelName:
        """The file name without extension and quantization, tagged with the quantization."""
        stem = self.path.name
        if stem.lower().endswith(".gguf"):
            stem = stem[: -len(".gguf")]
        return name_from_file(stem)

    async def fetch(self, store: ModelStore, progress: ProgressCallback | None = None) -> str:
        """Check the GGUF header, then copy the file into the store while hashing it."""
        if not self.path.is_file():
            raise SourceError(f"There is no file '{self.path}': check the path.")
        reporter = ProgressReporter(progress)
        reporter.status(f"reading {self.path.name}")
        # A bad file is refused before hundreds of megabytes are copied.
        self.gguf_info = await asyncio.to_thread(read_gguf_info, self.path)
        if self.expected_digest and store.has_blob(self.expected_digest):
            return self.expected_digest
        reporter.status(f"copying {self.path.name}", total=self.path.stat().st_size)
        return await asyncio.to_thread(store.import_file, self.path, self.expected_digest, reporter.advance)
