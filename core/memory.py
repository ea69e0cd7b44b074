"""How much memory a model needs, and how much the machine can give it."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from .manifest import Manifest

MIB = 1024 * 1024
# Compute buffers, the logits of a batch and allocator slack: measured at
# 150-250 MiB for sub-8B models on CPU with num_batch 512; rounded up so that estimates err high.
_FIXED_OVERHEAD = 256 * MIB
# llama.cpp's compute buffer grows with the batch (a batch's logits alone are vocabulary x batch
# floats: 38 GB for Qwen2.5's 152k words at 65536), so the overhead is scaled from this batch up.
_MEASURED_BATCH_TOKENS = 512
# Batched decoding on a CPU keeps gaining up to about four sequences per core
# (llama-batched-bench, 2 cores: 1.65x one sequence's rate at 4, 1.92x at 8);
# past that every stream slows while the total hardly grows.
SEQUENCES_PER_CORE = 4
MOST_DEFAULT_SEQUENCES = 16


PARKED_SHARE = 0.5
"""Share of a shared KV pool's size that idle sequences' caches may take in RAM besides it (the scheduler
copies them out of the pool, which every decode reads up to its last cell in use); the estimate counts it."""

KV_BLOCK_BYTES = {"f16": 64, "q8_0": 34, "q4_0": 18}
"""Bytes 32 cached keys or values take in each kv_cache_type: 16 bits each, or 8 and 4 bits and a 16-bit scale."""


def kv_bytes_per_token(manifest: Manifest, kv_cache_type: str = "f16") -> int:
    """Bytes one cached token takes across all layers, keys and values, in `kv_cache_type` (0 if unknown)."""
    return manifest.gguf.kv_bytes_per_token() * KV_BLOCK_BYTES[kv_cache_type] // KV_BLOCK_BYTES["f16"]


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

    def plus(self, other: MemoryEstimate) -> MemoryEstimate:
        """Both together (a model and its draft model)."""
        return MemoryEstimate(
            self.weights + other.weights, self.kv_cache + other.kv_cache, self.overhead + other.overhead
        )


def parked_bytes(manifest: Manifest, context_tokens: int, kv_cache_type: str, shared_pool: bool) -> int:
    """Bytes of idle caches a shared pool of `context_tokens` may keep in RAM besides it (PARKED_SHARE); 0 for
    a buffer per sequence."""
    return kv_bytes_per_token(manifest, kv_cache_type) * int(context_tokens * PARKED_SHARE) if shared_pool else 0


def estimate_memory(
    manifest: Manifest,
    context_tokens: int,
    batch_tokens: int = _MEASURED_BATCH_TOKENS,
    attention_span: int = 0,
    kv_cache_type: str = "f16",
    shared_pool: bool = False,
) -> MemoryEstimate:
    """Estimate weights + KV cache (of `kv_cache_type`) for `context_tokens` tokens over all sequences, and the
    compute buffers of decode steps of `batch_tokens` (num_batch) tokens. A `shared_pool` adds the idle
    caches copied out of it (parked_bytes) to the KV cache.

    `attention_span` is how many cached tokens one decode attends over without flash attention (0 with
    it): llama.cpp then holds a score for each of them, per batch token and head, as 32-bit floats. A
    4,000-token prompt grew the process by 163 MiB without flash attention and 42 MiB with it (the
    default model, num_batch 512; 512 x 4,000 x 14 heads x 4 bytes is 115 MB)."""
    compute = _FIXED_OVERHEAD * max(batch_tokens, _MEASURED_BATCH_TOKENS) // _MEASURED_BATCH_TOKENS
    compute += batch_tokens * attention_span * (manifest.gguf.head_count or 0) * 4
    return MemoryEstimate(
        weights=manifest.size,
        kv_cache=kv_bytes_per_token(manifest, kv_cache_type) * context_tokens
        + parked_bytes(manifest, context_tokens, kv_cache_type, shared_pool),
        overhead=compute + manifest.size // 20,
    )


def attention_span(flash_attention: str, tokens_per_sequence: int, pool_tokens: int, shared_pool: bool) -> int:
    """How many cached tokens one decode scores (estimate_memory's attention_span): none with flash attention
    (the `flash_attention` setting; "auto" turns it on on the CPU), else its own sequence's buffer, or the
    whole pool when the sequences share one."""
    if flash_attention != "off":
        return 0
    return pool_tokens if shared_pool else tokens_per_sequence


def default_parallel(
    manifest: Manifest,
    tokens_per_sequence: int,
    cores: int,
    free: int,
    kv_cache_type: str = "f16",
    shared_pool: bool = False,
) -> int:
    """Sequences a model gets when num_parallel is not set: what `cores` batch well, as far as the KV cache fits.

    Every sequence may fill its whole context, so each costs `tokens_per_sequence`
    tokens of KV cache (of `kv_cache_type`; more in a shared pool, see parked_bytes) in `free` bytes besides
    the weights; at least one always.
    """
    by_cores = min(MOST_DEFAULT_SEQUENCES, SEQUENCES_PER_CORE * max(1, cores))
    per_sequence = kv_bytes_per_token(manifest, kv_cache_type) * tokens_per_sequence
    per_sequence += parked_bytes(manifest, tokens_per_sequence, kv_cache_type, shared_pool)
    if per_sequence <= 0:
        return by_cores
    by_memory = (free - estimate_memory(manifest, 0).total) // per_sequence
    return max(1, min(by_cores, by_memory))


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
