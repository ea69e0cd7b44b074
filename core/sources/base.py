"""What every model source is, and the naming rules they share."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from ..errors import InvalidRequest, SourceError
from ..manifest import GgufInfo
from ..names import ModelName
from .progress import ProgressCallback

if TYPE_CHECKING:
    from ..store import ModelStore
    from .network import NetworkGuard

_QUANT_SUFFIX = re.compile(r"[-_.](i?q[0-9][a-z0-9_]*|bf16|fp16|f16|f32)$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


class InvalidSourceSpec(SourceError, InvalidRequest):
    """A source written wrong (an unknown scheme, `hf:` without owner/repo/file.gguf): the caller's mistake
    (HTTP 400), where a SourceError otherwise means a source that could not be reached (HTTP 502)."""


class Source(Protocol):
    """Where a model comes from: it fetches the file into the store and names it."""

    spec: str
    """The source as the user wrote it, recorded in the manifest."""
    expected_digest: str | None
    """The digest the file must have, when known before fetching (pinned or given by the user)."""
    gguf_info: GgufInfo | None
    """The GGUF facts, if `fetch` already read them (a local file is checked before it is copied)."""
    guard: NetworkGuard | None
    """Where `fetch` may connect, for a pull a remote caller asked for; None for the local user's own pulls."""

    def default_name(self) -> ModelName:
        """The name the model gets when the user gives none."""
        ...

    async def fetch(self, store: ModelStore, progress: ProgressCallback | None = None) -> str:
        """Put the verified file in the store (unless already there) and return its digest."""
        ...


def split_quantization(stem: str) -> tuple[str, str | None]:
    """Split a file stem like 'Qwen2.5-Coder-0.5B-Q4_K_M' into ('Qwen2.5-Coder-0.5B', 'q4_k_m')."""
    match = _QUANT_SUFFIX.search(stem)
    if match is None:
        return stem, None
    return stem[: match.start()], match.group(1).lower()


def safe_name_part(text: str, fallback: str = "model") -> str:
    """`text` lowercased and reduced to characters a model name may hold (see core/names.py)."""
    cleaned = _UNSAFE.sub("-", text.lower())
    cleaned = re.sub(r"\.{2,}", ".", cleaned).lstrip(".-")[:80].rstrip(".-")
    return cleaned or fallback


def name_from_file(stem: str) -> ModelName:
    """A model name for a file: its stem without the quantization, tagged with it (else 'latest')."""
    base, quantization = split_quantization(stem)
    return ModelName.parse(f"{safe_name_part(base)}:{quantization or 'latest'}")
