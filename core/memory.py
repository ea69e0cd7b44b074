"""How much memory a model needs, and how much the machine can give it."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from .manifest import Manifest

MIB = 1024 * 1024
# Compute buffers, the logits of a batch and allocator slack: measured at
# 150-250 MiB for sub-8B models on CPU; rounded up so that estimates err high.
_FIXED_OVERHEAD = 256 * MIB


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model takes, split the way users reason about it."""

    weights: int
    kv_cache: int
    overhead: int

    @property
    def total(self) -> int:
        """All of it."""
        return self.weights + self.kv_cache + self.overhead


def estimate_memory(manifest: Manifest, context_tokens: int) -> MemoryEstimate:
    """Estimate weights + f16 KV cache for `context_tokens` tokens over all sequences."""
    return MemoryEstimate(
        weights=manifest.size,
        kv_cache=manifest.gguf.kv_bytes_per_token() * context_tokens,
        overhead=_FIXED_OVERHEAD + manifest.size // 20,
    )


def memory_available(headroom: int, limit: int | None, in_use_by_models: int) -> int:
    """Bytes a new model may take now: what the OS has free less headroom, within ingle's own limit."""
    free_now = psutil.virtual_memory().available - headroom
    if limit is not None:
        free_now = min(free_now, limit - in_use_by_models)
    return max(0, free_now)


def format_bytes(count: int) -> str:
    """`1.2 GiB`, `463 MiB`: sizes as people read them."""
    if count >= 1024 * MIB:
        return f"{count / (1024 * MIB):.1f} GiB"
    return f"{count / MIB:.0f} MiB"
