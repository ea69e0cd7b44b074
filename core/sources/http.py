"""`https://…/model.gguf`: a GGUF file from any web server, with an optional expected sha256."""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from ..manifest import GgufInfo
from ..names import ModelName
from ..store import ModelStore
from .base import InvalidSourceSpec, name_from_file
from .download import commit, download, host_of, http_client, partial_lock
from .network import NetworkGuard
from .progress import ProgressCallback, ProgressReporter


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses, the only hosts plain http is allowed to."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpSource:
    """A file at a URL. Without an expected digest the hash is computed and recorded."""

    def __init__(self, spec: str, expected_digest: str | None = None) -> None:
        parts = urlsplit(spec)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InvalidSourceSpec(f"'{spec}' is not a URL ingle can download: use https://host/path/model.gguf.")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise InvalidSourceSpec(
                f"Refusing plain http for {parts.hostname}: use https (http is allowed for localhost only)."
            )
        self.spec = spec
        self.url = spec
        self.expected_digest = expected_digest
        self.gguf_info: GgufInfo | None = None
        self.guard: NetworkGuard | None = None
        self.filename = PurePosixPath(unquote(parts.path)).name or "model.gguf"

    def default_name(self) -> ModelName:
        """The file name without `.gguf` and quantization, tagged with the quantization (else 'latest')."""
        return name_from_file(self.filename.removesuffix(".gguf").removesuffix(".GGUF"))

    def _status_message(self, status: int) -> str:
        return f"{host_of(self.url)} answered {status} for {self.filename}: check the URL."

    async def fetch(self, store: ModelStore, progress: ProgressCallback | None = None) -> str:
        """Download the file (resuming a partial one), verify it if a digest is expected, store it."""
        if self.expected_digest and store.has_blob(self.expected_digest):
            return self.expected_digest
        reporter = ProgressReporter(progress)
        reporter.status(f"pulling {self.filename}")
        expected_hex = self.expected_digest.removeprefix("sha256-") if self.expected_digest else None
        async with http_client(guard=self.guard) as client, partial_lock(store.partial_path(self.url)):
            downloaded = await download(
                client,
                store,
                self.url,
                expected_hex=expected_hex,
                reporter=reporter,
                label=self.filename,
                status_message=self._status_message,
            )
            return commit(store, downloaded)
