"""Read the facts ingle needs from a GGUF file's header, with the `gguf` package.

`GGUFReader` memory-maps the file and parses the header and the tensor
table; tensor data is never read. On the default model (491 MB, a 152k-token
vocabulary plus 151k merges) parsing takes a few seconds of CPU, which is why
callers run this in a worker thread and the result is stored in the manifest
instead of being read again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gguf import GGUFReader, LlamaFileType, ReaderField

from .errors import CorruptModel
from .gguf_bounds import HeaderOutOfBounds, check_header_bounds
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
    """Typed access to the metadata of one reader; missing or mistyped keys read as None."""

    def __init__(self, reader: GGUFReader) -> None:
        self._fields: dict[str, ReaderField] = reader.fields

    def value(self, key: str) -> Any:
        field = self._fields.get(key)
        return None if field is None else field.contents()

    def integer(self, key: str) -> int | None:
        value = self.value(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    def text(self, key: str) -> str | None:
        value = self.value(key)
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


def _supports_fim(fields: _Fields) -> bool:
    vocab_size = None
    tokens = fields.value("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        vocab_size = len(tokens)
        vocabulary = set(tokens)
        if any(fim_set <= vocabulary for fim_set in FIM_TOKEN_SETS):
            return True
    ids = [fields.integer(key) for key in _FIM_ID_KEYS]
    return all(i is not None and i >= 0 and (vocab_size is None or i < vocab_size) for i in ids)


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
            check_header_bounds(path)
        except HeaderOutOfBounds as error:
            raise _Malformed(f"its header is damaged: {error}") from error
        reader = GGUFReader(path)
        fields = _Fields(reader)
        architecture = fields.text("general.architecture")
        if not architecture:
            raise _Malformed("no general.architecture in its metadata")
        data_end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=reader.data_offset)
        if size < data_end:
            raise _Malformed(f"truncated: {size} of {data_end} bytes are there")
        info = GgufInfo(
            architecture=architecture,
            name=fields.text("general.name"),
            parameter_count=sum(int(t.n_elements) for t in reader.tensors) or None,
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
            supports_fim=_supports_fim(fields),
            pooling_type=fields.integer(f"{architecture}.pooling_type"),
        )
    except _Malformed as error:
        raise CorruptModel(f"'{Path(path).name}' is not a valid GGUF model file ({error}).") from error
    except (OSError, ValueError, KeyError, IndexError, TypeError, OverflowError, MemoryError) as error:
        # The reader signals every kind of malformed input with one of these;
        # translate them here, the one place that calls it.
        if isinstance(error, OSError):
            reason = error.strerror or type(error).__name__
        else:
            # The reader's own messages describe numpy internals; what they mean is this.
            reason = f"truncated or malformed header: {str(error).splitlines()[0][:80] or type(error).__name__}"
        raise CorruptModel(f"'{Path(path).name}' is not a valid GGUF model file ({reason}).") from error
    return info
