"""Tiny but valid GGUF files, written with the `gguf` package's own GGUFWriter."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType

QWEN_FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
CODELLAMA_FIM_TOKENS = ("▁<PRE>", "▁<SUF>", "▁<MID>")
DEEPSEEK_FIM_TOKENS = ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>")
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def write_tiny_gguf(
    path: Path,
    *,
    extra_tokens: Sequence[str] = QWEN_FIM_TOKENS,
    seed: int = 0,
    rows: int = 64,
    fim_token_ids: bool = False,
) -> Path:
    """Write a llama-architecture GGUF with a small vocabulary and two tensors; return `path`.

    `seed` changes the tensor bytes, so files with different seeds have different digests.
    """
    tokens = ["<unk>", "<s>", "</s>", *extra_tokens] + [f"tok{i}" for i in range(32)]
    writer = GGUFWriter(path, "llama")
    writer.add_name("Tiny Test Model")
    writer.add_context_length(256)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_license("apache-2.0")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_chat_template(CHAT_TEMPLATE)
    if fim_token_ids:
        writer.add_uint32("tokenizer.ggml.fim_pre_token_id", 3)
        writer.add_uint32("tokenizer.ggml.fim_suf_token_id", 4)
        writer.add_uint32("tokenizer.ggml.fim_mid_token_id", 5)
    generator = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", generator.standard_normal((rows, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
