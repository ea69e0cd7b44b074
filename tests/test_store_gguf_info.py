"""GGUF header facts, read with the `gguf` package from files its GGUFWriter wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
