"""A thin, typed wrapper over llama-cpp-python's low-level (ctypes) API.

ingle drives llama.cpp directly instead of through `llama_cpp.Llama`
because it needs one context with several sequences and its own batching.
This module is the one place that calls llama.cpp and translates its failures
into ingle's errors; everything above it speaks Python types.
"""

# llama-cpp-python declares every pointer it returns Optional and every pointer it takes as not, and
# calls a buffer `bytes`; this module checks the NULLs that can happen where they come back (model,
# context, embeddings) and sets freed pointers to None, which the checker cannot follow through `self`.
# pyright: reportOptionalMemberAccess=false, reportArgumentType=false, reportReturnType=false

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any
from unittest.mock import patch

import llama_cpp as llama
import numpy as np

from ..errors import ContextOverflow, CorruptModel, RuntimeFailure
from .reference_kernels import catch_cpu_backend

log = logging.getLogger("ingle.llama")

_LOG_LEVEL_ERROR = 4  # GGML_LOG_LEVEL_ERROR
_backend_lock = threading.Lock()
_backend_ready = False

_GGML_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}
"""ggml's numbers for the KV cache types ingle offers (kv_cache_type)."""


@llama.llama_log_callback
def _forward_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # llama.cpp prints hundreds of lines per model load to stderr; route them to
    # logging instead so the CLI and the journal stay readable.
    if level >= _LOG_LEVEL_ERROR:
        log.error(text.decode("utf-8", "replace").rstrip())
    else:
        log.debug(text.decode("utf-8", "replace").rstrip())


@llama.llama_progress_callback
def _quiet_load_progress(_progress: float, _user_data: ctypes.c_void_p) -> bool:
    # The default callback prints a dot per step to stderr; loading continues either way.
    return True


def init_backend() -> None:
    """Initialise llama.cpp once per process and silence its stderr logging."""
    global _backend_ready  # a process-wide fact about the C library, not app state
    with _backend_lock:
        if not _backend_ready:
            llama.llama_log_set(_forward_llama_log, ctypes.c_void_p())
            llama.llama_backend_init()
            _backend_ready = True


@cache
def runs_amx() -> bool:
    """Whether llama.cpp would put weights in AMX buffers: built for AMX (as a native build on such a CPU is),
    and the CPU has it (Sapphire Rapids and later Xeons)."""
    init_backend()
    return b"AMX_INT8 = 1" in llama.llama_print_system_info()


def model_params(repack: bool = True) -> llama.llama_model_params:
    """llama.cpp's model parameters as ingle loads every model.

    Weights stay in plain CPU buffers, not llama.cpp's "extra" ones, in two cases:
    - `repack` is False (deterministic answers): llama.cpp's kernels for repacked weights add up four rows
      of a batch in another order than a lone one, and have no reference-kernel switch;
    - an AMX CPU: llama.cpp's AMX matrix product segfaults on the first decode of the default model
      (Q4_K_M) there (llama.cpp issue 20824, closed unfixed; seen on this project's machines and on
      GitHub's Sapphire Rapids runners). Dropping the AMX buffer drops repacking too, which cost no
      speed on such a machine here (a 512-token prompt at 252 against 243 tok/s, generation the same).
    """
    params = llama.llama_model_default_params()
    params.progress_callback = _quiet_load_progress
    params.use_extra_bufts = repack and not runs_amx()
    return params


def reference_llama(path: Path, **options: Any) -> llama.Llama:
    """llama-cpp-python's own high-level model (what tests and benchmarks compare ingle with), loaded with
    ingle's model parameters: its defaults would crash on an AMX CPU (see model_params)."""
    init_backend()
    with patch.object(llama.llama_cpp, "llama_model_default_params", model_params):
        return llama.Llama(str(path), **options)


@dataclass(frozen=True)
class ContextShape:
    """How a llama context is sized."""

    sequences: int
    """Independent sequences (concurrent requests)."""
    tokens_per_sequence: int
    batch_tokens: int
    threads: int
    embeddings: bool = False
    shared_cache: bool = True
    """One KV pool for all sequences, as decode_inside needs (its scratch sequence shares cells with
    the one it fills). Otherwise each sequence has a buffer of its own and a decode attends over its
    own tokens only: in a shared pool every token also reads past the masked tokens of the others,
    which made decodes 12-13% slower on the 2-core CPU once the other sequences held 1,500 tokens."""
    flash_attention: bool | None = None
    """Flash attention on or off; None lets llama.cpp choose (on where supported)."""
    kv_cache_type: str = "f16"
    """How cached keys and values are kept: "f16", "q8_0" or "q4_0" (the latter two need flash attention)."""
    deterministic: bool = False
    """Every decode, prompts too, with llama.cpp's reference kernels (reference_kernels.py), so each token's
    logits are the same whatever it is decoded beside; otherwise only steps of generated tokens use them."""


class Batch:
    """A reusable llama_batch that holds up to `capacity` tokens."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._batch = llama.llama_batch_init(capacity, 0, 1)

    def clear(self) -> None:
        """Forget the tokens added so far."""
        self._batch.n_tokens = 0

    def __len__(self) -> int:
        return self._batch.n_tokens

    def add(self, token: int, position: int, sequence: int, want_logits: bool) -> int:
        """Append a token; return its index in the batch (where its logits land)."""
        batch = self._batch
        index = batch.n_tokens
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = sequence
        batch.logits[index] = want_logits
        batch.n_tokens = index + 1
        return index

    @property
    def raw(self) -> llama.llama_batch:
        """The ctypes struct for llama_decode."""
        return self._batch

    def free(self) -> None:
        """Release the C memory; the batch is unusable afterwards."""
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None


class LlamaModel:
    """A loaded GGUF model: weights, vocabulary and tokenizer."""

    def __init__(self, path: Path, repack: bool = True) -> None:
        init_backend()
        self.path = path
        self._model = llama.llama_model_load_from_file(str(path).encode(), model_params(repack))
        if not self._model:
            raise CorruptModel(f"llama.cpp could not load '{path.name}': the file is not a model it can read.")
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = llama.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = llama.llama_model_n_ctx_train(self._model)
        self.n_embd = llama.llama_model_n_embd(self._model)
        self.add_bos = bool(llama.llama_vocab_get_add_bos(self._vocab))
        # Declared as ctypes.c_int32 (llama_token), returned as a plain int: say so once, here.
        self.bos = int(llama.llama_vocab_bos(self._vocab))
        self.eos = int(llama.llama_vocab_eos(self._vocab))

    @property
    def raw(self) -> llama.llama_model_p:
        """The llama_model pointer."""
        return self._model

    @property
    def vocab(self) -> llama.llama_vocab_p:
        """The llama_vocab pointer."""
        return self._vocab

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Turn text into tokens; `parse_special` lets template markers become control tokens."""
        data = text.encode("utf-8", "replace")  # a lone surrogate (valid JSON, not UTF-8) becomes "?"
        capacity = len(data) + 16
        buffer = (llama.llama_token * capacity)()
        count = llama.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_special, parse_special)
        if count < 0:  # buffer too small: llama.cpp says how many it needs
            capacity = -count
            buffer = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_special, parse_special)
        return list(buffer[:count])

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (may be part of a UTF-8 character)."""
        buffer = ctypes.create_string_buffer(64)
        count = llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if count < 0:
            buffer = ctypes.create_string_buffer(-count)
            count = llama.llama_token_to_piece(self._vocab, token, buffer, -count, 0, special)
        return buffer.raw[:count]

    def token_text(self, token: int) -> str:
        """The vocabulary entry of a token, as stored in the GGUF."""
        return llama.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")

    def is_end_of_generation(self, token: int) -> bool:
        """True for end-of-text/turn tokens that end a generation."""
        return bool(llama.llama_vocab_is_eog(self._vocab, token))

    @cached_property
    def _vocabulary_texts(self) -> tuple[tuple[str, ...], int]:
        # One pass over the vocabulary (0.2-0.7 s for 150k tokens), made by the first prompt that needs it.
        control = llama.LLAMA_TOKEN_ATTR_CONTROL | llama.LLAMA_TOKEN_ATTR_UNKNOWN
        control_texts, longest = [], 1
        for token in range(self.n_vocab):
            text = llama.llama_vocab_get_text(self._vocab, token) or b""
            longest = max(longest, len(text))
            if text and llama.llama_vocab_get_attr(self._vocab, token) & control:
                control_texts.append(text.decode("utf-8", "replace"))
        return tuple(control_texts), longest

    @property
    def control_texts(self) -> tuple[str, ...]:
        """The texts of the control tokens (`<|im_start|>`, …): a chat template writes them, a user's text never."""
        return self._vocabulary_texts[0]

    @property
    def most_bytes_per_token(self) -> int:
        """No token stands for more bytes of text than this (vocabulary entries are at least as long as their bytes)."""
        return self._vocabulary_texts[1]

    def find_token(self, text: str) -> int | None:
        """The id of a special token written exactly as `text`, if the vocabulary has one."""
        tokens = self.tokenize(text, add_special=False, parse_special=True)
        if len(tokens) == 1 and self.token_text(tokens[0]) == text:
            return tokens[0]
        return None

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text, or None."""
        buffer = ctypes.create_string_buffer(4096)
        count = llama.llama_model_meta_val_str(self._model, key.encode(), buffer, 4096)
        if count < 0:
            return None
        if count >= 4096:
            buffer = ctypes.create_string_buffer(count + 1)
            llama.llama_model_meta_val_str(self._model, key.encode(), buffer, count + 1)
        return buffer.value.decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        """The model's default chat template from its GGUF metadata."""
        value = llama.llama_model_chat_template(self._model, None)
        return value.decode("utf-8", "replace") if value else None

    def new_context(self, shape: ContextShape) -> LlamaContext:
        """Create a context (KV cache + compute buffers) on this model."""
        return LlamaContext(self, shape)

    def free(self) -> None:
        """Release the weights."""
        if self._model:
            llama.llama_model_free(self._model)
            self._model = None


class LlamaContext:
    """A llama context: the KV cache of several sequences and the decode call."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        params = llama.llama_context_default_params()
        params.n_ctx = shape.sequences * shape.tokens_per_sequence
        params.n_batch = shape.batch_tokens
        params.n_ubatch = shape.batch_tokens
        # A shared pool has one more sequence than requests: the scratch sequence of decode_inside.
        params.n_seq_max = shape.sequences + 1 if shape.shared_cache else shape.sequences
        self._scratch = shape.sequences
        params.kv_unified = shape.shared_cache
        params.n_threads = shape.threads
        params.n_threads_batch = shape.threads
        params.embeddings = shape.embeddings
        params.no_perf = True
        if shape.flash_attention is not None:
            params.flash_attn_type = (
                llama.LLAMA_FLASH_ATTN_TYPE_ENABLED if shape.flash_attention else llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        params.type_k = params.type_v = _GGML_TYPES[shape.kv_cache_type]
        if shape.deterministic:
            # Without flash attention the reference kernels still add up a batch's rows in other orders.
            params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if shape.embeddings:
            params.pooling_type = llama.LLAMA_POOLING_TYPE_MEAN
        self.model = model
        self.shape = shape
        self._ctx, self._reference_kernels = catch_cpu_backend(lambda: llama.llama_init_from_model(model.raw, params))
        if not self._ctx:
            # A quantized KV cache and deterministic need flash attention, which llama.cpp has for most
            # architectures, not all.
            raise RuntimeFailure(
                f"llama.cpp could not create a context of {params.n_ctx} tokens: lower num_ctx or num_parallel"
                + (
                    ', or set kv_cache_type = "f16" and deterministic = false if this model\'s architecture has no '
                    "flash attention on the CPU (a quantized KV cache and deterministic need it)."
                    if shape.kv_cache_type != "f16" or shape.deterministic
                    else "."
                )
            )
        if shape.deterministic and self._reference_kernels is None:
            llama.llama_free(self._ctx)
            raise RuntimeFailure(
                "deterministic needs llama.cpp's reference CPU kernels, which this build of llama-cpp-python does "
                "not let ingle reach: install the version pyproject.toml names, or set deterministic = false."
            )
        self._memory = llama.llama_get_memory(self._ctx)
        self.n_ctx = llama.llama_n_ctx(self._ctx)

    @property
    def raw(self) -> llama.llama_context_p:
        """The llama_context pointer."""
        return self._ctx

    def decode(self, batch: Batch, generated_only: bool = False) -> None:
        """Evaluate a batch; raise RuntimeFailure if llama.cpp cannot.

        `generated_only`: the batch holds only tokens of answers (each sequence's last pick and its guesses),
        which are then computed with the reference kernels: each row gets the logits it would get decoded
        alone, so neither speculative guesses nor other answers' tokens beside it change a greedy answer.
        On the 2-core CPU such steps took as long either way; prompts read faster with the default kernels.
        """
        if self._reference_kernels is not None:
            self._reference_kernels.use(generated_only or self.shape.deterministic)
        status = llama.llama_decode(self._ctx, batch.raw)
        if status == 1:
            raise ContextOverflow("The model's context is full: shorten the conversation or raise num_ctx.")
        if status != 0:
            raise RuntimeFailure(f"llama.cpp failed to evaluate the prompt (llama_decode returned {status}).")

    def logits(self, batch_index: int) -> np.ndarray:
        """The next-token logits after the batch token at `batch_index` (they were requested): a view of
        llama.cpp's buffer, no copy, valid until the next decode."""
        logits = llama.llama_get_logits_ith(self._ctx, batch_index)
        if not logits:
            raise RuntimeFailure(f"llama.cpp returned no logits for batch position {batch_index}.")
        return np.ctypeslib.as_array(logits, shape=(self.model.n_vocab,))

    def argmax(self, batch_index: int) -> int:
        """The most likely next token after the batch token at `batch_index` (its logits were requested)."""
        # Ties go to the lowest id, as llama.cpp's greedy sampler does.
        return int(self.logits(batch_index).argmax())

    def forget(self, sequence: int, start: int = 0, end: int = -1) -> None:
        """Drop a sequence's cached tokens at positions [start, end); end -1 means to the end."""
        llama.llama_memory_seq_rm(self._memory, sequence, start, end)

    @property
    def can_shift(self) -> bool:
        """Whether cached tokens can move to other positions (RoPE models can; some others cannot)."""
        return bool(llama.llama_memory_can_shift(self._memory))

    def shift(self, sequence: int, start: int, end: int, delta: int) -> None:
        """Move a sequence's cached tokens at positions [start, end) by `delta` positions.

        llama.cpp re-rotates the moved keys at the next decode, over the whole
        cache at once, so several moves cost about as much as one.
        """
        llama.llama_memory_seq_add(self._memory, sequence, start, end, delta)

    def clear(self) -> None:
        """Drop every cached token of every sequence."""
        llama.llama_memory_clear(self._memory, True)

    def save_sequence(self, sequence: int) -> ctypes.Array[ctypes.c_ubyte]:
        """A copy of a sequence's cache (its cells' keys and values), for restore_sequence."""
        size = llama.llama_state_seq_get_size(self._ctx, sequence)
        saved = (ctypes.c_ubyte * size)()
        if llama.llama_state_seq_get_data(self._ctx, saved, size, sequence) != size:
            raise RuntimeFailure(f"llama.cpp could not copy the cache of sequence {sequence}.")
        return saved

    def restore_sequence(self, sequence: int, saved: ctypes.Array[ctypes.c_ubyte]) -> bool:
        """Put back a copy from save_sequence as the cache of `sequence`; False (and the sequence empty) when
        the pool has no room for it."""
        if llama.llama_state_seq_set_data(self._ctx, saved, len(saved), sequence) == len(saved):
            return True
        self.forget(sequence)
        return False

    def decode_inside(self, sequence: int, tokens: list[int], start: int, batch: Batch) -> None:
        """Decode `tokens` at positions start, start+1, ... of a sequence that already holds later positions.

        llama.cpp only appends after a sequence's last position, so the tokens
        go to a scratch sequence that shares the cells before `start`, and
        their cells are then shared back. They attend to everything before
        them, as if decoded in order.
        """
        if not self.shape.shared_cache:
            # llama.cpp aborts the process on a partial copy between separate buffers.
            raise RuntimeFailure("Decoding between cached tokens needs a shared KV cache (kv_reuse_min_tokens > 0).")
        memory, scratch = self._memory, self._scratch
        self.forget(scratch)
        llama.llama_memory_seq_cp(memory, sequence, scratch, 0, start)
        try:
            for offset in range(0, len(tokens), batch.capacity):
                batch.clear()
                for index, token in enumerate(tokens[offset : offset + batch.capacity]):
                    batch.add(token, start + offset + index, scratch, False)
                self.decode(batch)
            llama.llama_memory_seq_cp(memory, scratch, sequence, start, start + len(tokens))
        finally:
            self.forget(scratch)

    def embedding(self, sequence: int) -> list[float]:
        """The pooled embedding of a sequence after decoding it with embeddings on."""
        pointer = llama.llama_get_embeddings_seq(self._ctx, sequence)
        if not pointer:
            raise RuntimeFailure("llama.cpp returned no embedding for the input.")
        return pointer[: self.model.n_embd]

    def free(self) -> None:
        """Release the KV cache and buffers."""
        if self._ctx:
            llama.llama_free(self._ctx)
            self._ctx = None
