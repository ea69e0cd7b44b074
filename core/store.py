"""The model store: content-addressed blobs plus one JSON manifest per model name.

Layout under the store root (`settings.models_dir`):

    blobs/sha256-<hex>              immutable model files, named by their sha256
    manifests/<name>/<tag>.json     one per model name (see core/manifest.py)
    partial/                        downloads and imports in progress

Two rules keep the store consistent whatever happens to the process:
a file only ever appears under `blobs/` by a rename after its sha256 was
verified, and every manifest is written to a temporary file, fsynced and
renamed over the old one. A kill at any moment leaves at worst a file under
`partial/` or a stray temporary file that the next open removes.

Every digest is validated before a path is built from it, and every path is
checked to stay inside the store root as a second line of defence.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .errors import (
    CorruptModel,
    DigestMismatch,
    IngleError,
    InvalidDigest,
    InvalidModelName,
    ModelNotFound,
    SourceError,
    StorageFull,
)
from .manifest import Manifest
from .names import ModelName, validate_digest

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read and written per step when copying and hashing model files."""

_TEMP_PREFIX = ".tmp-"
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

BytesCallback = Callable[[int], None]
"""Told the number of bytes handled so far; used for progress reports."""


@dataclass(frozen=True)
class StoreProblem:
    """Something the consistency check found and worked around, for `ingle list` to report."""

    path: Path
    kind: Literal["damaged", "dangling", "misplaced", "foreign"]
    """damaged: a manifest that does not parse; dangling: its blob is missing;
    misplaced: a manifest whose path is not the name it records;
    foreign: a file under blobs/ whose name is not a digest."""
    reason: str


def is_disk_full(error: OSError) -> bool:
    """True when an OSError means the disk or the quota or the file-size limit is exhausted."""
    return error.errno in _DISK_FULL_ERRNOS


def storage_full_error(path: Path, bytes_needed: int | None) -> StorageFull:
    """The StorageFull error for a failed write to `path`, saying how much room is missing."""
    if bytes_needed and bytes_needed > 0:
        need = f"free {max(1, -(-bytes_needed // (1 << 20)))} MiB"
    else:
        need = "free some space"
    return StorageFull(f"The disk is full: writing to {path.parent} failed; {need} and pull again.")


def _names_same_model(recorded: str, model: ModelName) -> bool:
    """Whether the name a manifest records is MODEL, whose path it lies at (in any case)."""
    try:
        return ModelName.parse(recorded) == model
    except InvalidModelName:
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    # A rename is only durable once the directory entry itself reached the disk.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreUnusable(IngleError):
    """The store's folder cannot be created or written."""


class ModelStore:
    """Blobs, manifests and in-progress downloads under one root directory.

    Metadata methods are synchronous and fast. `import_file` and `hash_file`
    read whole model files: async callers run them with `asyncio.to_thread`.
    Opening the store creates its folders and runs `check()`, whose findings
    stay in `problems`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"
        self.partial_dir = self.root / "partial"
        try:
            for folder in (self.blobs_dir, self.manifests_dir, self.partial_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnusable(
                f"The model store at '{root}' cannot be used ({error.strerror or error}): "
                "point --home or INGLE_HOME at a writable folder."
            ) from error
        self._reported: list[StoreProblem] = []
        self.problems: list[StoreProblem] = self.check()

    # --- paths -------------------------------------------------------------

    def _inside(self, path: Path, error: type[IngleError] = InvalidDigest) -> Path:
        """Return `path` if it resolves inside the store root; raise `error` otherwise."""
        if not path.resolve().is_relative_to(self.root):
            raise error(f"'{path}' lies outside the model store; refusing to touch it.")
        return path

    def blob_path(self, digest: str) -> Path:
        """Where the blob with `digest` lives (whether or not it exists)."""
        return self._inside(self.blobs_dir / validate_digest(digest))

    def has_blob(self, digest: str) -> bool:
        """True when the blob with `digest` is in the store."""
        return self.blob_path(digest).is_file()

    def manifest_path(self, name: ModelName) -> Path:
        """Where the manifest of `name` lives; `name` was validated when it was parsed."""
        return self._inside(self.manifests_dir / name.name / f"{name.tag}.json", InvalidModelName)

    def partial_path(self, key: str) -> Path:
        """A file under `partial/` for an in-progress download identified by `key`.

        `key` is hashed, so any string (a URL, a list of packages) maps to one
        safe file name, and the same key finds the same file after a restart.
        """
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self._inside(self.partial_dir / f"{digest}.partial")

    def new_temp_partial(self, label: str) -> Path:
        """A fresh, unique file name under `partial/` that `check()` removes once its writer is gone."""
        return self._inside(self.partial_dir / f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.{label}")

    # --- manifests ---------------------------------------------------------

    @staticmethod
    def _parse(name: ModelName | str) -> ModelName:
        return name if isinstance(name, ModelName) else ModelName.parse(name)

    def _read_manifest(self, path: Path) -> Manifest:
        """Read one manifest file; CorruptModel when it does not parse."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = Manifest.from_json(data)
            validate_digest(manifest.digest)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, InvalidDigest) as error:
            relative = path.relative_to(self.manifests_dir)
            raise CorruptModel(
                f"The manifest {path.relative_to(self.root)} is damaged ({type(error).__name__}); "
                f"remove it with `ingle rm {relative.parent.as_posix()}:{path.stem}` and pull the model again."
            ) from error
        return manifest

    def _stored_manifest_path(self, model: ModelName) -> Path:
        """Where the manifest of MODEL lies: its path, or a file whose tag differs only in case.

        Tags were kept in their given case before names became case-insensitive (names.py), so
        an older store may hold `coder/Latest.json` for what is now `coder:latest`.
        """
        path = self.manifest_path(model)
        if path.is_file() or not path.parent.is_dir():
            return path
        for candidate in sorted(path.parent.glob("*.json")):
            if candidate.stem.lower() == model.tag and not candidate.name.startswith(_TEMP_PREFIX):
                return self._inside(candidate, InvalidModelName)
        return path

    def get(self, name: ModelName | str) -> Manifest:
        """The manifest of `name`; ModelNotFound when there is none or its blob is missing."""
        model = self._parse(name)
        path = self._stored_manifest_path(model)
        if not path.is_file():
            raise ModelNotFound(
                f"Model '{model}' is not in the store: `ingle list` shows what is there, and "
                f"`ingle pull SOURCE --name {model}` fetches it (`ingle pull --help` lists the sources)."
            )
        manifest = self._read_manifest(path)
        if not self.has_blob(manifest.digest):
            raise ModelNotFound(
                f"Model '{model}' is incomplete (its file {manifest.digest} is missing): "
                f"pull it again with `ingle pull {manifest.source}`."
            )
        return manifest

    def _manifest_files(self) -> Iterator[tuple[ModelName | None, Path]]:
        for path in sorted(self.manifests_dir.rglob("*.json")):
            if path.name.startswith(_TEMP_PREFIX) or not path.is_file():
                continue
            relative = path.relative_to(self.manifests_dir)
            try:
                model = ModelName.parse(f"{relative.parent.as_posix()}:{path.stem}")
            except InvalidModelName:
                model = None
            yield model, path

    def list(self) -> list[Manifest]:
        """Every usable model, sorted by name; damaged manifests are skipped and reported in `problems`."""
        manifests, self.problems = self._scan()
        return sorted(manifests, key=lambda m: m.name)

    def _scan(self) -> tuple[list[Manifest], list[StoreProblem]]:
        manifests: list[Manifest] = []
        problems: list[StoreProblem] = []
        for model, path in self._manifest_files():
            if model is None:
                problems.append(StoreProblem(path, "misplaced", "its path is not a valid model name"))
                continue
            try:
                manifest = self._read_manifest(path)
            except CorruptModel as error:
                problems.append(StoreProblem(path, "damaged", error.message))
                continue
            if not _names_same_model(manifest.name, model):
                problems.append(StoreProblem(path, "misplaced", f"it names '{manifest.name}' but lies at '{model}'"))
                continue
            if not self.has_blob(manifest.digest):
                problems.append(StoreProblem(path, "dangling", f"its blob {manifest.digest} is missing"))
                continue
            manifests.append(manifest)
        # Said once per process: a listing scans the store several times.
        for problem in problems:
            if problem not in self._reported:
                self._reported.append(problem)
                log.warning("model store: skipping %s: %s", problem.path, problem.reason)
        return manifests, problems

    def put(self, manifest: Manifest) -> Manifest:
        """Write `manifest` atomically (replacing any of the same name) and return it as stored."""
        model = ModelName.parse(manifest.name)
        if not self.has_blob(manifest.digest):
            raise CorruptModel(
                f"Cannot record '{model}': its file {manifest.digest} is not in the store; pull it again."
            )
        stored = replace(manifest, name=str(model))
        path = self.manifest_path(model)
        older = self._stored_manifest_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic_write(path, json.dumps(stored.to_json(), indent=2, sort_keys=True).encode("utf-8"))
        if older != path:
            older.unlink(missing_ok=True)  # the same name in an older tag case: replaced, not kept beside
        return stored

    def _atomic_write(self, path: Path, data: bytes) -> None:
        temp = self._inside(path.parent / f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            with open(temp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
            _fsync_dir(path.parent)
        except OSError as error:
            temp.unlink(missing_ok=True)
            if is_disk_full(error):
                raise storage_full_error(path, len(data)) from error
            raise

    def remove(self, name: ModelName | str) -> list[str]:
        """Delete the manifest of `name` (even a damaged one), then collect unreferenced blobs.

        Returns the digests of the blobs that were deleted.
        """
        model = self._parse(name)
        path = self._stored_manifest_path(model)
        if not path.is_file():
            raise ModelNotFound(f"Model '{model}' is not in the store: see `ingle list`.")
        path.unlink()
        # Drop folders left empty so `manifests/` mirrors the names that exist.
        folder = path.parent
        while folder != self.manifests_dir and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
        return self.collect_garbage()

    def copy(self, source: ModelName | str, destination: ModelName | str) -> Manifest:
        """Record `destination` as another name for the blob of `source`; returns the new manifest."""
        manifest = self.get(source)
        return self.put(replace(manifest, name=str(self._parse(destination))))

    def manifests_for(self, digest: str) -> list[Manifest]:
        """Manifests that point at `digest`."""
        validate_digest(digest)
        return [m for m in self._scan()[0] if m.digest == digest]

    # --- blobs -------------------------------------------------------------

    @contextlib.contextmanager
    def pull_guard(self) -> Iterator[None]:
        """Hold while a blob is being added and its manifest written, so garbage collection waits.

        Several pulls may hold it at once (a shared lock); `collect_garbage`
        needs it alone and skips its work while any pull is under way, which
        keeps it from deleting a blob whose manifest is about to be written.
        """
        with open(self.root / ".gc.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def collect_garbage(self) -> list[str]:
        """Delete blobs that no manifest references; returns their digests.

        A damaged manifest cannot say which blob it references, so while any
        exists nothing is collected. Skipped too while a pull holds `pull_guard`.
        """
        with open(self.root / ".gc.lock", "a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("model store: a pull is under way; unreferenced blobs are collected later")
                return []
            try:
                manifests, problems = self._scan()
                if any(p.kind in ("damaged", "misplaced") for p in problems):
                    log.warning("model store: damaged manifests present; not collecting blobs")
                    return []
                referenced = {m.digest for m in manifests}
                removed = []
                for blob in sorted(self.blobs_dir.iterdir()):
                    if blob.name in referenced or not blob.is_file():
                        continue
                    try:
                        validate_digest(blob.name)
                    except InvalidDigest:
                        continue  # not ours: leave it for a human to look at
                    blob.unlink()
                    removed.append(blob.name)
                return removed
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def commit_blob(self, path: Path, digest: str) -> Path:
        """Move a verified file from `partial/` to `blobs/<digest>`; the caller checked the hash.

        If the blob is already there the file is simply deleted: same digest, same bytes.
        """
        target = self.blob_path(digest)
        source = self._inside(path)
        if not source.is_relative_to(self.partial_dir):
            raise InvalidDigest(f"'{path}' is not an in-progress file of the store.")
        if target.is_file():
            source.unlink(missing_ok=True)
            return target
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(source, 0o444)
        os.replace(source, target)
        _fsync_dir(self.blobs_dir)
        return target

    def remove_blob(self, digest: str) -> None:
        """Delete a blob that no manifest references (e.g. one that proved not to be a GGUF)."""
        if self.manifests_for(digest):
            return
        self.blob_path(digest).unlink(missing_ok=True)

    def import_file(
        self,
        path: Path,
        expected_digest: str | None = None,
        progress: BytesCallback | None = None,
    ) -> str:
        """Copy a file into the store, hashing while copying; returns its digest.

        The copy goes to `partial/` first and is renamed into `blobs/` only
        once its sha256 is known (and matches `expected_digest`, if given).
        It is a real copy, never a hard link: a later edit of the user's file
        must not change a blob. Blocking: run it in a worker thread.
        """
        if expected_digest is not None:
            validate_digest(expected_digest)
            if self.has_blob(expected_digest):
                return expected_digest
        try:
            total = path.stat().st_size
            source = open(path, "rb")  # noqa: SIM115 - closed below, together with the target
        except OSError as error:
            raise SourceError(f"Cannot read '{path}': {error.strerror or error}.") from error
        temp = self.new_temp_partial("import")
        hasher = hashlib.sha256()
        copied = 0
        try:
            with source, open(temp, "xb") as target:
                while chunk := source.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    target.write(chunk)
                    copied += len(chunk)
                    if progress is not None:
                        progress(copied)
                target.flush()
                os.fsync(target.fileno())
        except OSError as error:
            temp.unlink(missing_ok=True)
            if is_disk_full(error):
                raise storage_full_error(temp, total - copied) from error
            raise SourceError(f"Cannot copy '{path}' into the model store: {error.strerror or error}.") from error
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        digest = f"sha256-{hasher.hexdigest()}"
        if expected_digest is not None and digest != expected_digest:
            temp.unlink(missing_ok=True)
            raise DigestMismatch(f"'{path}' hashes to {digest}, not the expected {expected_digest}.")
        self.commit_blob(temp, digest)
        return digest

    @staticmethod
    def hash_file(path: Path, progress: BytesCallback | None = None, hasher: Any = None) -> Any:
        """Feed the whole of `path` to a sha256 hasher (a new one unless given) and return it. Blocking."""
        hasher = hasher if hasher is not None else hashlib.sha256()
        done = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                hasher.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done)
        return hasher

    # --- consistency -------------------------------------------------------

    def check(self) -> list[StoreProblem]:
        """Remove temporary files left by dead writers and report damaged or dangling manifests.

        Never raises for what it finds: a broken manifest must not stop the
        other models from being listed. Partial downloads are kept for resume.
        """
        for folder in (self.blobs_dir, self.manifests_dir, self.partial_dir):
            for temp in folder.rglob(f"{_TEMP_PREFIX}*"):
                pid_text = temp.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
                if pid_text.isdigit() and _process_alive(int(pid_text)):
                    continue  # another process is still writing it
                with contextlib.suppress(OSError):
                    if temp.is_dir():
                        shutil.rmtree(temp)
                    else:
                        temp.unlink()
                    log.info("model store: removed the stray temporary file %s", temp)
        problems = self._scan()[1]
        for blob in self.blobs_dir.iterdir():
            try:
                validate_digest(blob.name)
            except InvalidDigest:
                problems.append(StoreProblem(blob, "foreign", "its name is not a digest; left alone"))
        return problems
