"""The resumable downloader every HTTP source shares.

A download goes to `partial/<sha256 of the URL>.partial`, with a small JSON
sidecar holding the URL and the server's validators (ETag, Last-Modified).
When the partial exists the next attempt hashes what is there, asks for the
rest with `Range` (and `If-Range`, so a changed file is sent whole), appends
on 206, starts over on 200, and checks the sha256 at the end. An interrupted
download (Ctrl-C, a dropped connection, kill -9) leaves only the partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import DigestMismatch, SourceError
from ..names import digest_from_hex
from ..store import ModelStore, is_disk_full, storage_full_error
from .network import GuardedTransport, NetworkGuard
from .progress import ProgressReporter

USER_AGENT = "ingle (+https://github.com/ingle)"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")

StatusMessage = Callable[[int], str]
"""Given an HTTP status, the one-sentence SourceError message for it."""


@dataclass(frozen=True)
class Downloaded:
    """A finished, verified download still under `partial/`."""

    path: Path
    hexdigest: str
    size: int

    @property
    def digest(self) -> str:
        """The store digest of the bytes."""
        return digest_from_hex(self.hexdigest)


def http_client(headers: dict[str, str] | None = None, guard: NetworkGuard | None = None) -> httpx.AsyncClient:
    """A client for one pull: follows redirects, generous read timeout, our User-Agent.

    httpx drops `Authorization` when a redirect leaves the origin, so a token
    for the model hub is never sent to the CDN it redirects to. With a guard
    (a pull a remote caller asked for) every connection, redirects included,
    goes only where the guard allows.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(guard) if guard is not None else None,
        follow_redirects=True,
        timeout=httpx.Timeout(30.0, read=120.0),
        headers={"User-Agent": USER_AGENT, **(headers or {})},
    )


def host_of(url: str) -> str:
    """The host[:port] of a URL, for messages."""
    return urlsplit(url).netloc or url


def transport_error(error: httpx.RequestError, url: str, hint: str, received: int = 0) -> SourceError:
    """Translate a connection-level failure into one sentence naming the host."""
    reason = str(error) or type(error).__name__
    if received > 0:
        return SourceError(
            f"The download from {host_of(url)} broke off after {received // (1 << 20)} MiB ({reason}); "
            "run the pull again to resume it."
        )
    return SourceError(f"Cannot reach {host_of(url)} ({reason}): check the network{hint}.")


@contextlib.asynccontextmanager
async def partial_lock(partial: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock on one in-progress download, across processes.

    Two pulls appending to the same partial would corrupt it; the second one
    is refused with a sentence instead of waiting without a word.
    """
    lock_path = partial.with_suffix(".lock")
    with open(lock_path, "a+b") as handle:  # noqa: ASYNC230 - opening an empty lock file does not wait on I/O
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise SourceError("Another pull of this model is already running; wait for it to finish.") from error
        try:
            yield
            # Unlinked while still held, so no one can lock the old file after us.
            lock_path.unlink(missing_ok=True)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def discard(partial: Path) -> None:
    """Delete a partial and its sidecar (after a commit, or when its bytes are wrong)."""
    partial.unlink(missing_ok=True)
    partial.with_suffix(".json").unlink(missing_ok=True)


def _read_sidecar(partial: Path, url: str) -> dict[str, Any]:
    try:
        data = json.loads(partial.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("url") == url else {}


def _write_sidecar(partial: Path, data: dict[str, Any]) -> None:
    sidecar = partial.with_suffix(".json")
    temp = sidecar.with_suffix(".json.tmp")
    temp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(temp, sidecar)


def _strong_etag(value: str | None) -> str | None:
    # If-Range only works with a strong validator (RFC 9110, 13.1.5).
    if not value or value.startswith("W/"):
        return None
    return value


async def download(
    client: httpx.AsyncClient,
    store: ModelStore,
    url: str,
    *,
    expected_hex: str | None,
    reporter: ProgressReporter,
    label: str,
    status_message: StatusMessage,
    network_hint: str = "",
) -> Downloaded:
    """Download `url` into `partial/`, resuming what an earlier attempt left; verify its sha256.

    The caller holds `partial_lock` on `store.partial_path(url)` and commits
    or discards the result. DigestMismatch deletes the partial, so the next
    attempt starts clean; any other failure keeps it for resume.
    """
    partial = store.partial_path(url)
    meta = _read_sidecar(partial, url)
    size = partial.stat().st_size if partial.exists() else 0
    validator = _strong_etag(meta.get("etag")) or meta.get("last_modified")
    # Without an expected digest or a validator a resumed file could be two
    # different versions glued together, and nothing would notice: start over.
    if size and not (expected_hex or validator):
        size = 0
    hasher = hashlib.sha256()
    if size:
        reporter.status(f"checking the partial download of {label}", total=size)
        with partial.open("r+b") as handle:
            handle.truncate(size)
        hasher = await asyncio.to_thread(ModelStore.hash_file, partial, reporter.advance)

    for _attempt in range(2):
        headers = {"Accept-Encoding": "identity"}
        if size:
            headers["Range"] = f"bytes={size}-"
            if validator:
                headers["If-Range"] = validator
        received = 0
        try:
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and size:
                    match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
                    if (match and int(match.group(1)) == size) or hasher.hexdigest() == expected_hex:
                        break  # the partial already holds the whole file
                    size, hasher = 0, hashlib.sha256()
                    continue
                if response.status_code == 206 and size:
                    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                    if not match or int(match.group(1)) != size:
                        size, hasher = 0, hashlib.sha256()
                        continue
                    total = None if match.group(3) == "*" else int(match.group(3))
                    mode = "ab"
                elif response.status_code == 200:
                    # A full answer, also to a Range request (the file changed
                    # or the server ignores ranges): start over.
                    size, hasher = 0, hashlib.sha256()
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    mode = "wb"
                else:
                    raise SourceError(status_message(response.status_code))
                _write_sidecar(
                    partial,
                    {
                        "url": url,
                        "etag": response.headers.get("ETag"),
                        "last_modified": response.headers.get("Last-Modified"),
                        "total": total,
                    },
                )
                reporter.status(f"downloading {label}", total=total, completed=size)
                try:
                    with partial.open(mode) as handle:
                        async for chunk in response.aiter_bytes():
                            handle.write(chunk)
                            hasher.update(chunk)
                            received += len(chunk)
                            reporter.advance(size + received)
                        handle.flush()
                        os.fsync(handle.fileno())
                except OSError as error:
                    if is_disk_full(error):
                        missing = (total - size - received) if total else None
                        raise storage_full_error(partial, missing) from error
                    raise
                size += received
                reporter.advance(size, force=True)
                break
        except httpx.RequestError as error:
            raise transport_error(error, url, network_hint, received) from error
    else:
        raise SourceError(f"{host_of(url)} did not answer a resumed download of {label} consistently; try again.")

    hexdigest = hasher.hexdigest()
    if expected_hex is not None and hexdigest != expected_hex:
        discard(partial)
        raise DigestMismatch(
            f"{label} from {host_of(url)} hashes to sha256-{hexdigest}, not the expected sha256-{expected_hex}; "
            "the partial file was deleted, pull again to retry."
        )
    return Downloaded(partial, hexdigest, partial.stat().st_size)


def commit(store: ModelStore, downloaded: Downloaded) -> str:
    """Move a verified download into `blobs/` and drop its sidecar; returns the digest."""
    digest = downloaded.digest
    store.commit_blob(downloaded.path, digest)
    discard(downloaded.path)
    return digest
