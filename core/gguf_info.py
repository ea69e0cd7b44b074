"""The facts ingle needs from a GGUF file's header (see gguf_header.py), checked against the file.

Tensor data is never read; the header of the default model (491 MB, a
152k-token vocabulary plus 151k merges) takes a fraction of a second. Callers
still run this in a worker thread, and the result is stored in the manifest
instead of being read again.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from .errors import CorruptModel
from .gguf_header import VOCABULARY_KEY, GgufHeader, HeaderOutOfBounds, TensorEntry, read_header
from .manifest import GgufInfo

FIM_TOKEN_SETS: tuple[frozenset[str], ...] = (
    # Qwen2.5-Coder and CodeGemma
    frozenset({"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"}),
    # StarCoder / StarCoder2
    frozenset({"<fim_prefix>", "<fim_suffix>", "<fim_middle>"}),
    # CodeLlama (SentencePiece spells the leading space as ▁)
    frozenset({"▁<PRE>", "▁<SUF>", "▁<MID>"}),
    frozenset({"<PRE>", "<SUF>", "<MID>"}),
    # DeepSeek-Coder
    frozenset({"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"}),
    # Codestral: the middle is whatever follows [PREFIX]
    frozenset({"[PREFIX]", "[SUFFIX]"}),
)
"""Vocabulary entries that together make a fill-in-the-middle format ingle can build."""

_FIM_ID_KEYS = (
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
)


class _Malformed(ValueError):
    """A problem this module found itself; its message is already meant for users."""


class _Fields:
    """Typed access to a header's metadata; missing or mistyped keys read as None."""

    def __init__(self, header: GgufHeader) -> None:
        self._values = header.values

    def integer(self, key: str) -> int | None:
        value = self._values.get(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    def text(self, key: str) -> str | None:
        value = self._values.get(key)
        return value if isinstance(value, str) else None


def quantization_name(file_type: int | None) -> str | None:
    """`general.file_type` as llama.cpp names it, e.g. 15 -> 'Q4_K_M'; None when unknown."""
    if file_type is None:
        return None
    try:
        member = LlamaFileType(file_type)
    except ValueError:
        return None
    if member is LlamaFileType.GUESSED:
        return None
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _supports_fim(header: GgufHeader) -> bool:
    if any(fim_set <= header.vocabulary_found for fim_set in FIM_TOKEN_SETS):
        return True
    fields = _Fields(header)
    vocab_size = header.array_lengths.get(VOCABULARY_KEY)
    ids = [fields.integer(key) for key in _FIM_ID_KEYS]
    return all(i is not None and i >= 0 and (vocab_size is None or i < vocab_size) for i in ids)


def _tensor_bytes(tensor: TensorEntry) -> int:
    try:
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(tensor.type)]
    except (ValueError, KeyError) as error:
        raise _Malformed(f"tensor '{tensor.name[:80]}' has unknown type {tensor.type}") from error
    elements = 1
    for size in tensor.dimensions:
        elements *= size
    return elements * type_size // block_size


def read_gguf_info(path: Path) -> GgufInfo:
    """Read the GGUF header of `path`; CorruptModel if it is not a complete, readable GGUF file.

    Blocking (seconds for a large vocabulary): run it in a worker thread.
    """
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if size == 0:
            raise _Malformed("the file is empty")
        if magic != b"GGUF":
            raise _Malformed("it does not start with the GGUF magic bytes")
        try:
            header = read_header(path, vocabulary_entries=set().union(*FIM_TOKEN_SETS))
        except HeaderOutOfBounds as error:
            raise _Malformed(f"its header is damaged: {error}") from error
        fields = _Fields(header)
        architecture = fields.text("general.architecture")
        if not architecture:
            raise _Malformed("no general.architecture in its metadata")
        names = [tensor.name for tensor in header.tensors]
        if len(set(names)) != len(names):
            raise _Malformed("two tensors have the same name")
        ends = (header.data_offset + tensor.offset + _tensor_bytes(tensor) for tensor in header.tensors)
        data_end = max(ends, default=header.data_offset)
        if size < data_end:
            raise _Malformed(f"truncated: {size} of {data_end} bytes are there")
        elements = (math.prod(tensor.dimensions) for tensor in header.tensors)
        info = GgufInfo(
            architecture=architecture,
            name=fields.text("general.name"),
            parameter_count=sum(elements) or None,
            quantization=quantization_name(fields.integer("general.file_type")),
            context_length=fields.integer(f"{architecture}.context_length"),
            embedding_length=fields.integer(f"{architecture}.embedding_length"),
            block_count=fields.integer(f"{architecture}.block_count"),
            head_count=fields.integer(f"{architecture}.attention.head_count"),
            head_count_kv=fields.integer(f"{architecture}.attention.head_count_kv"),
            key_length=fields.integer(f"{architecture}.attention.key_length"),
            value_length=fields.integer(f"{architecture}.attention.value_length"),
            chat_template=fields.text("tokenizer.chat_template"),
            license=fields.text("general.license"),
            supports_fim=_supports_fim(header),
            pooling_type=fields.integer(f"{architecture}.pooling_type"),
        )
    except _Malformed as error:
        raise CorruptModel(f"'{Path(path).name}' is not a valid GGUF model file ({error}).") from error
    except (OSError, ValueError, struct.error, MemoryError) as error:
        # What reading a file can still raise past the header walk's own checks (an unreadable file,
        # an mmap that fails); translated here, the one place that reads headers.
        if isinstance(error, OSError):
            reason = error.strerror or type(error).__name__
        else:
            reason = f"truncated or malformed header: {str(error).splitlines()[0][:80] or type(error).__name__}"
        raise CorruptModel(f"'{Path(path).name}' is not a valid GGUF model file ({reason}).") from error
    return info
