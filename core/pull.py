"""`ingle pull`: fetch a model from its source, check it is a GGUF, and record its manifest."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from .errors import CorruptModel, ModelNotFound
from .gguf_info import read_gguf_info
from .manifest import GgufInfo, Manifest
from .names import ModelName
from .settings import Settings
from .sources import ProgressCallback, PullProgress, parse_source
from .sources.network import NetworkGuard
from .store import ModelStore


async def pull(
    store: ModelStore,
    settings: Settings,
    spec: str,
    name: str | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    remote_caller: bool = False,
) -> Manifest:
    """Pull `spec` into the store as `name` (default: the source's own name) and return its manifest.

    Nothing is downloaded when the expected digest is already in the store, so
    pulling the same pinned model twice is instant. A file that turns out not
    to be a valid GGUF never gets a manifest, and its blob is removed. A pull
    a `remote_caller` asked for (over the HTTP API) reaches only what the
    settings open to it (core/sources/network.py); PullRefused otherwise.
    """
    guard = NetworkGuard.for_settings(settings) if remote_caller else None
    source = parse_source(spec, settings, sha256, guard)
    model = ModelName.parse(name) if name else source.default_name()
    report = progress or (lambda _: None)

    existing = _existing(store, model)
    if existing is not None and source.expected_digest == existing.digest:
        report(PullProgress("success", existing.size, existing.size, existing.digest))
        return existing

    with store.pull_guard():
        if source.expected_digest and store.has_blob(source.expected_digest):
            digest = source.expected_digest
        else:
            digest = await source.fetch(store, progress)
        info = source.gguf_info or _info_of_same_blob(store, digest)
        if info is None:
            report(PullProgress("reading model metadata", digest=digest))
            try:
                info = await asyncio.to_thread(read_gguf_info, store.blob_path(digest))
            except CorruptModel:
                store.remove_blob(digest)
                raise
        report(PullProgress("writing manifest", digest=digest))
        manifest = Manifest(
            name=str(model),
            digest=digest,
            size=store.blob_path(digest).stat().st_size,
            source=spec,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            gguf=info,
        )
        if existing is not None:
            # A new file for a known name keeps what the user set for it.
            manifest = replace(
                manifest, parameters=existing.parameters, template=existing.template, system=existing.system
            )
        manifest = store.put(manifest)
    # The file the name pointed at before may be unused now, and collections
    # skipped while this pull held the guard are due.
    store.collect_garbage()
    report(PullProgress("success", manifest.size, manifest.size, digest))
    return manifest


def _existing(store: ModelStore, model: ModelName) -> Manifest | None:
    try:
        return store.get(model)
    except (ModelNotFound, CorruptModel):
        return None


def _info_of_same_blob(store: ModelStore, digest: str) -> GgufInfo | None:
    """GGUF facts already recorded for this blob under another name, to skip reading it again."""
    for manifest in store.manifests_for(digest):
        return manifest.gguf
    return None
