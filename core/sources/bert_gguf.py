"""Write a sentence-transformers BERT model (safetensors + tokenizer.json) as a GGUF llama.cpp runs.

llama.cpp's BERT support wants: architecture `bert`, non-causal attention, the
pooling type of the sentence-transformers Pooling module, and the WordPiece
vocabulary in "phantom space" form (a word-initial piece carries a leading
U+2581, a `##` continuation loses its `##`, control tokens stay as they are).
The weights are read straight from the safetensors file (a JSON header, then
raw little-endian arrays), so no deep-learning framework is needed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ..errors import CorruptModel

# HF tensors that an embedding model does not use.
_SKIPPED_TENSORS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
_MAX_HEADER = 100 * 1024 * 1024
_PHANTOM_SPACE = "\u2581"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, memory-mapped; CorruptModel if the header does not fit the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise CorruptModel(f"{path.name} is too short to be a safetensors file.")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > min(size - 8, _MAX_HEADER):
            raise CorruptModel(f"{path.name} declares a header longer than the file.")
        try:
            header = json.loads(handle.read(header_size))
        except ValueError as error:
            raise CorruptModel(f"{path.name} has an unreadable safetensors header.") from error
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    arrays: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise CorruptModel(f"{path.name}: tensor {name} has the unsupported type {entry.get('dtype')}.")
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not 0 <= start <= end <= len(data) or end - start != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            raise CorruptModel(f"{path.name}: tensor {name} lies outside the file.")
        arrays[name] = data[start:end].view(dtype).reshape(shape)
    return arrays


def _vocabulary(tokenizer: dict[str, Any]) -> tuple[list[str], list[int]]:
    """Tokens in id order in phantom-space form, and their GGUF token types."""
    model = tokenizer.get("model", {})
    if model.get("type") != "WordPiece":
        raise CorruptModel("tokenizer.json does not describe a WordPiece tokenizer.")
    vocab: dict[str, int] = model["vocab"]
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [token_id for _, token_id in by_id] != list(range(len(by_id))):
        raise CorruptModel("tokenizer.json's vocabulary has gaps in its ids.")
    special = {entry["content"] for entry in tokenizer.get("added_tokens", []) if entry.get("special")}
    tokens, types = [], []
    for token, _ in by_id:
        if token in special:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(token[2:] if token.startswith("##") else _PHANTOM_SPACE + token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _pooling(folder: Path) -> gguf.PoolingType:
    """The pooling of the sentence-transformers Pooling module (mean when the model has none)."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return gguf.PoolingType.MEAN
    for module in modules:
        if module.get("type", "").endswith(".Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text(encoding="utf-8"))
            if config.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            if config.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            raise CorruptModel("The model pools in a way llama.cpp does not (only mean and CLS are supported).")
    return gguf.PoolingType.MEAN


def convert_bert(folder: Path, target: Path, name: str, license_id: str) -> None:
    """Write the model in `folder` (config.json, tokenizer.json, model.safetensors) to `target` as a GGUF."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CorruptModel(f"The model's config.json or tokenizer.json is unreadable: {error}.") from error
    if config.get("model_type") != "bert":
        raise CorruptModel(f"The model is a {config.get('model_type')!r}, not a BERT model.")
    layers = int(config["num_hidden_layers"])
    tokens, types = _vocabulary(tokenizer)

    writer = gguf.GGUFWriter(target, "bert")
    writer.add_name(name)
    writer.add_license(license_id)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(layers)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling(folder))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # llama.cpp's BERT reads [CLS] as its BOS token; gguf's SpecialVocab has no slot for `cls`.
    writer.add_bos_token_id(tokenizer["model"]["vocab"]["[CLS]"])
    gguf.SpecialVocab(folder, n_vocab=len(tokens), special_token_types=("unk", "sep", "pad", "mask")).add_to_gguf(
        writer, quiet=True
    )

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, layers)
    for hf_name, array in read_safetensors(folder / "model.safetensors").items():
        if hf_name.removeprefix("bert.") in _SKIPPED_TENSORS:
            continue
        gguf_name = names.get_name(hf_name.removeprefix("bert."), try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise CorruptModel(f"The model has a tensor llama.cpp's BERT does not know: {hf_name}.")
        writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
