"""GGUF header facts, read from files the `gguf` package's GGUFWriter wrote, and from crafted ones."""

from __future__ import annotations

import os
import resource
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingle.core.errors import CorruptModel
from ingle.core.gguf_info import quantization_name, read_gguf_info

from .fakes.gguf_files import (
    CHAT_TEMPLATE,
    CODELLAMA_FIM_TOKENS,
    DEEPSEEK_FIM_TOKENS,
    write_tiny_gguf,
)


def test_reads_the_facts_of_a_tiny_model(tmp_path: Path) -> None:
    info = read_gguf_info(write_tiny_gguf(tmp_path / "tiny.gguf"))
    assert info.architecture == "llama"
    assert info.name == "Tiny Test Model"
    assert info.context_length == 256
    assert info.embedding_length == 8
    assert info.block_count == 1
    assert (info.head_count, info.head_count_kv) == (2, 1)
    assert info.quantization == "Q4_K_M"
    assert info.parameter_count == 64 * 8 + 8
    assert info.chat_template == CHAT_TEMPLATE
    assert info.license == "apache-2.0"
    assert info.supports_fim is True
    assert info.kv_bytes_per_token() == 1 * 1 * (4 + 4) * 2


@pytest.mark.parametrize(
    ("tokens", "fim_ids", "expected"),
    [
        ((), False, False),
        (CODELLAMA_FIM_TOKENS, False, True),
        (DEEPSEEK_FIM_TOKENS, False, True),
        (("<fim_prefix>", "<fim_suffix>", "<fim_middle>"), False, True),
        (("[PREFIX]", "[SUFFIX]"), False, True),
        (("<|fim_prefix|>", "<|fim_suffix|>"), False, False),  # no middle token: not a usable set
        ((), True, True),  # tokenizer.ggml.fim_*_token_id keys
    ],
)
def test_fim_support_comes_from_the_vocabulary(
    tmp_path: Path, tokens: tuple[str, ...], fim_ids: bool, expected: bool
) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", extra_tokens=tokens, fim_token_ids=fim_ids)
    assert read_gguf_info(path).supports_fim is expected


def test_quantization_names() -> None:
    assert quantization_name(15) == "Q4_K_M"
    assert quantization_name(0) == "F32"
    assert quantization_name(1) == "F16"
    assert quantization_name(None) is None
    assert quantization_name(9999) is None


def test_random_bytes_are_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "random.gguf"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CorruptModel, match=r"'random.gguf' is not a valid GGUF model file \(.*magic"):
        read_gguf_info(path)


def test_an_empty_file_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(CorruptModel, match="empty"):
        read_gguf_info(path)


@pytest.mark.parametrize("keep", [8, 40, 300, -100, -1])
def test_a_truncated_model_is_refused(tmp_path: Path, keep: int) -> None:
    data = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    with pytest.raises(CorruptModel, match=r"'cut\.gguf' is not a valid GGUF model file"):
        read_gguf_info(path)


def test_a_missing_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptModel):
        read_gguf_info(tmp_path / "nope.gguf")


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _crafted_header(tensor_count: int, fields: bytes, field_count: int, tail: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, field_count) + fields + tail


_ARCHITECTURE = _string("general.architecture") + struct.pack("<I", 8) + _string("llama")
_HUGE = 2**62


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("data", "named"),
    [
        # An array of bytes claiming 2^62 items: the reader loops over the claim (the reported 178-byte file).
        (_crafted_header(0, _ARCHITECTURE + _string("tokens") + struct.pack("<IIQ", 9, 0, _HUGE), 2), "'tokens'"),
        # The same for strings and for arrays of arrays.
        (_crafted_header(0, _ARCHITECTURE + _string("merges") + struct.pack("<IIQ", 9, 8, _HUGE), 2), "'merges'"),
        (_crafted_header(0, _ARCHITECTURE + _string("nested") + struct.pack("<IIQ", 9, 9, _HUGE), 2), "'nested'"),
        # A string longer than the file, and more fields or tensors than it can hold.
        (_crafted_header(0, struct.pack("<Q", 2**40) + b"general", 1), "metadata field 0"),
        (_crafted_header(0, _ARCHITECTURE, _HUGE), "metadata fields"),
        (_crafted_header(_HUGE, _ARCHITECTURE, 1), "tensors"),
        # A tensor whose dimensions claim more elements than the file has bits.
        (
            _crafted_header(
                1, _ARCHITECTURE, 1, _string("w") + struct.pack("<IQQIQ", 2, 2**40, 2**40, 0, 0) + bytes(64)
            ),
            "tensor 'w'",
        ),
    ],
    ids=["byte-array", "string-array", "nested-array", "long-key", "field-count", "tensor-count", "tensor-size"],
)
def test_a_header_claiming_more_than_the_file_holds_is_refused_at_once(tmp_path: Path, data: bytes, named: str) -> None:
    path = tmp_path / "crafted.gguf"
    path.write_bytes(data.ljust(178, b"\0"))
    with pytest.raises(
        CorruptModel, match=rf"'crafted\.gguf' is not a valid GGUF model file \(its header is damaged: .*{named}"
    ):
        read_gguf_info(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=4, max_value=400), value=st.binary(min_size=1, max_size=8))
def test_any_damaged_header_gives_a_sentence(tmp_path: Path, position: int, value: bytes) -> None:
    """Overwriting header bytes (counts, lengths, types) never hangs, and never fails other than CorruptModel."""
    whole = tmp_path / "whole.gguf"
    if not whole.exists():
        write_tiny_gguf(whole)
    data = bytearray(whole.read_bytes())
    data[position : position + len(value)] = value
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(data))
    try:
        read_gguf_info(path)
    except CorruptModel as error:
        assert str(error).startswith("'damaged.gguf' is not a valid GGUF model file (")


def test_a_huge_vocabulary_is_read_in_little_memory(tmp_path: Path) -> None:
    # A 16 MB file of two million empty tokens: the gguf package's reader built objects per item and took 3 GB
    # (a 40 MB file of five million took 8 GB). Read as a real model's header is: its length, and only the
    # entries asked about (here the FIM markers, which this vocabulary ends with).
    count = 2_000_000
    fim = [_string(token) for token in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")]
    tokens = _string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, count + 3) + _string("") * count
    path = tmp_path / "vocabulary.gguf"
    data = _crafted_header(0, _ARCHITECTURE + tokens + b"".join(fim), 2)
    path.write_bytes(data.ljust(-(-len(data) // 32) * 32, b"\0"))  # the data section starts aligned
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    info = read_gguf_info(path)
    assert info.architecture == "llama" and info.supports_fim
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 200  # MiB
