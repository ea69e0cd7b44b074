"""A fake of the remote places models come from: a file server, Hugging Face, a package index.

One aiohttp server on an ephemeral loopback port, run in its own thread with
its own event loop, so it keeps answering while a test blocks (on a
subprocess, say). Tests configure it by plain attribute changes and read the
requests it saw in `requests`.

- `/files/<key>` serves `files[key]` with Range, If-Range and ETag support,
  optionally slowly, optionally dropping the connection after N bytes, or
  answering 200 to every Range request like a server without range support.
- `/<owner>/<repo>/resolve/<revision>/<path>` behaves like the Hugging Face hub:
  a 302 to the file with `X-Linked-Etag` (the LFS sha256), 401 for a gated repo
  without the right token, 404 for anything unknown.
- `/simple/<project>/` is a PEP 691 (JSON) or PEP 503 (HTML) project page.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import threading
import zipfile
from dataclasses import dataclass, field

from aiohttp import web

from . import start_on_loopback


@dataclass
class ServedFile:
    """A file the server serves, and how badly it behaves."""

    data: bytes
    etag: str | None = None
    """ETag header; by default the quoted sha256 of the data."""
    chunk_size: int = 64 * 1024
    chunk_delay: float = 0.0
    """Seconds to wait between chunks, to make a download slow enough to interrupt."""
    abort_after: int | None = None
    """Drop the connection after this many body bytes (on the next `abort_times` requests)."""
    abort_times: int = 1
    ignore_range: bool = False
    """Answer 200 with the whole file to Range requests."""
    hold_after: int | None = None
    """Stop after this many body bytes until `released` is set, so a download is caught mid-way for sure."""
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.etag is None:
            self.etag = f'"{self.sha256}"'

    @property
    def sha256(self) -> str:
        """Hex sha256 of the data."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class HfFile:
    """A file in a fake Hugging Face repository."""

    key: str
    """Key of the ServedFile in `FakeFileServer.files`."""
    linked_etag: str | None = None
    """X-Linked-Etag to announce; by default the file's sha256."""


@dataclass
class RecordedRequest:
    """A request the server saw."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class IndexFile:
    """A file listed on a fake package index project page."""

    filename: str
    key: str
    sha256: str | None = None
    """The hash the index announces; by default the file's real sha256."""
    yanked: bool = False


def build_wheel(distribution: str, version: str, members: dict[str, bytes]) -> tuple[str, bytes]:
    """A minimal py3-none-any wheel holding `members` (path -> bytes); returns (filename, bytes)."""
    package = re.sub(r"[-_.]+", "_", distribution).lower()
    filename = f"{package}-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{package}/__init__.py", "")
        for name, data in members.items():
            archive.writestr(name, data)
        info = f"{package}-{version}.dist-info"
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return filename, buffer.getvalue()


@dataclass
class FakeFileServer:
    """The fake server; use as a context manager, or call start() and stop()."""

    files: dict[str, ServedFile] = field(default_factory=dict)
    hf_files: dict[str, HfFile] = field(default_factory=dict)
    """Keyed by 'owner/repo/revision/path'."""
    hf_gated_token: str | None = None
    """When set, every hf file needs `Authorization: Bearer <token>`."""
    projects: dict[str, list[IndexFile]] = field(default_factory=dict)
    """Keyed by normalized project name."""
    index_format: str = "json"
    """'json' (PEP 691) or 'html' (PEP 503) project pages."""
    cdn_url: str | None = None
    """Where hf redirects for file content (another server, as the hub's CDN is); default: this one."""
    requests: list[RecordedRequest] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------

    def __enter__(self) -> FakeFileServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving on 127.0.0.1 and an ephemeral port; returns once it accepts connections."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as error:  # reported to start() below
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-file-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("the fake file server did not start within 30 s")
        if failure:
            raise failure[0]

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/files/{key}", self._serve_file)
        app.router.add_route("*", "/simple/{project}/", self._project_page)
        app.router.add_route("*", "/{owner}/{repo}/resolve/{revision}/{path:.+}", self._hf_resolve)
        self._runner, self.url = await start_on_loopback(app, access_log=None)

    def stop(self) -> None:
        """Stop serving and join the server thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    # --- helpers for tests -------------------------------------------------

    def add_file(self, key: str, data: bytes, **behaviour: object) -> ServedFile:
        """Serve `data` at /files/<key>; returns the ServedFile to tweak later."""
        served = ServedFile(data, **behaviour)  # type: ignore[arg-type]
        self.files[key] = served
        return served

    def file_url(self, key: str) -> str:
        """The URL of /files/<key>."""
        return f"{self.url}/files/{key}"

    def add_wheel(self, distribution: str, version: str, members: dict[str, bytes], **listing: object) -> str:
        """Build a wheel, serve it and list it on its project page; returns its file name."""
        filename, data = build_wheel(distribution, version, members)
        self.add_file(filename, data)
        project = re.sub(r"[-_.]+", "-", distribution).lower()
        self.projects.setdefault(project, []).append(IndexFile(filename, filename, **listing))  # type: ignore[arg-type]
        return filename

    def seen(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        """Requests seen so far, filtered by method and path prefix."""
        return [r for r in self.requests if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    # --- handlers ----------------------------------------------------------

    def _record(self, request: web.Request) -> None:
        self.requests.append(RecordedRequest(request.method, request.path, dict(request.headers)))

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        served = self.files.get(request.match_info["key"])
        if served is None:
            raise web.HTTPNotFound()
        data = served.data
        start, status = 0, 200
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if range_header and not served.ignore_range and (if_range is None or if_range == served.etag):
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            if match:
                start = int(match.group(1))
                if start >= len(data):
                    return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
                status = 206
        body = data[start:]
        response = web.StreamResponse(status=status)
        response.headers["ETag"] = served.etag or ""
        response.headers["Accept-Ranges"] = "bytes"
        response.content_length = len(body)
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        limit = None
        if served.abort_after is not None and served.abort_times > 0:
            served.abort_times -= 1
            limit = served.abort_after
        sent = 0
        for offset in range(0, len(body), served.chunk_size):
            chunk = body[offset : offset + served.chunk_size]
            if limit is not None and sent + len(chunk) > limit:
                await response.write(chunk[: limit - sent])
                # Drop the connection mid-body, as a broken network would.
                request.transport.abort()
                return response
            if served.hold_after is not None and sent >= served.hold_after:
                # Bounded: a test that never releases must not hang the server's shutdown.
                await asyncio.get_running_loop().run_in_executor(None, served.released.wait, 60)
                if request.transport is None or request.transport.is_closing():
                    return response
            await response.write(chunk)
            sent += len(chunk)
            if served.chunk_delay:
                await asyncio.sleep(served.chunk_delay)
        await response.write_eof()
        return response

    async def _hf_resolve(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        info = request.match_info
        key = f"{info['owner']}/{info['repo']}/{info['revision']}/{info['path']}"
        if self.hf_gated_token is not None and request.headers.get("Authorization") != f"Bearer {self.hf_gated_token}":
            return web.json_response({"error": "Access to this repo is restricted."}, status=401)
        entry = self.hf_files.get(key)
        if entry is None or entry.key not in self.files:
            return web.json_response(
                {"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"}
            )
        served = self.files[entry.key]
        headers = {
            "Location": f"{self.cdn_url or self.url}/files/{entry.key}",
            "X-Linked-Etag": f'"{entry.linked_etag or served.sha256}"',
            "X-Linked-Size": str(len(served.data)),
            "ETag": f'W/"{hashlib.sha1(served.data).hexdigest()}"',
        }
        return web.Response(status=302, headers=headers)

    async def _project_page(self, request: web.Request) -> web.Response:
        self._record(request)
        files = self.projects.get(request.match_info["project"])
        if files is None:
            return web.Response(status=404, text="Not Found")
        if self.index_format == "json" and "application/vnd.pypi.simple.v1+json" in request.headers.get("Accept", ""):
            payload = {
                "meta": {"api-version": "1.1"},
                "name": request.match_info["project"],
                "files": [
                    {
                        "filename": f.filename,
                        "url": f"../../files/{f.key}",
                        "hashes": {"sha256": f.sha256 or self.files[f.key].sha256},
                        "yanked": f.yanked,
                        "size": len(self.files[f.key].data),
                    }
                    for f in files
                ],
            }
            return web.json_response(payload, content_type="application/vnd.pypi.simple.v1+json")
        links = "\n".join(
            f'<a href="/files/{f.key}#sha256={f.sha256 or self.files[f.key].sha256}"'
            f"{' data-yanked' if f.yanked else ''}>{f.filename}</a><br/>"
            for f in files
        )
        return web.Response(text=f"<!DOCTYPE html><html><body>\n{links}\n</body></html>", content_type="text/html")
