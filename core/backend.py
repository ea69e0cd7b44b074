"""The one small contract a generation backend implements.

The local engine and remote upstreams (another ingle, llama-server, vLLM,
Ollama) both satisfy it, so adapters route a request to either without
knowing which; streaming, cancellation and bookkeeping stay in one place.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from .generation import EmbeddingResult, GenerationChunk, GenerationRequest


@runtime_checkable
class GenerationBackend(Protocol):
    """Something that can generate text and embeddings for named models."""

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream a generation; the last chunk has `done=True`. Closing the iterator cancels it."""
        ...

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """One normalised vector per input."""
        ...
