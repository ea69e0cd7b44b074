"""What the store records about a model: its manifest and the GGUF facts in it."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import TypeAdapter


@dataclass
class GgufInfo:
    """Facts read from a GGUF header, enough to show a model and size its memory."""

    architecture: str
    name: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    embedding_length: int | None = None
    block_count: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    chat_template: str | None = None
    license: str | None = None
    supports_fim: bool = False
    """True when the vocabulary has fill-in-the-middle tokens ingle knows how to use."""
    pooling_type: int | None = None

    @property
    def embeds_only(self) -> bool:
        """True for an embedding model (its GGUF names a pooling): it turns text into vectors and writes none."""
        return bool(self.pooling_type)

    def kv_bytes_per_token(self) -> int:
        """Bytes of f16 K+V cache one token takes across all layers (0 if unknown)."""
        if not (self.block_count and self.embedding_length and self.head_count):
            return 0
        head_dim = self.embedding_length // self.head_count
        kv_heads = self.head_count_kv or self.head_count
        k = self.key_length or head_dim
        v = self.value_length or head_dim
        return self.block_count * kv_heads * (k + v) * 2


@dataclass
class Manifest:
    """One named model: which blob, where it came from, and how to run it."""

    name: str
    digest: str
    size: int
    source: str
    created_at: str
    gguf: GgufInfo
    parameters: dict[str, Any] = field(default_factory=dict)
    """Default sampling options for this model (Ollama's `parameters`)."""
    template: str | None = None
    """Chat template override; None uses the one in the GGUF."""
    system: str | None = None
    """Default system prompt."""

    def to_json(self) -> dict[str, Any]:
        """The manifest as stored on disk."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Read a manifest written by `to_json`; pydantic.ValidationError when a field is missing or mistyped.

        Checked field by field, so a damaged file (`"size": "big"`) is refused here, as one
        damaged model, instead of failing later in whatever formats the field.
        """
        return _manifest_format().validate_python(data)


@functools.cache
def _manifest_format() -> TypeAdapter[Manifest]:
    # Built on first use: building the validator takes tens of milliseconds, which
    # commands that never read a manifest (`ingle --version`) should not pay.
    return TypeAdapter(Manifest)
