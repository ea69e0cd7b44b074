"""Embeddings: a separate llama context with pooling, on the model's decode thread."""

from __future__ import annotations

import math

from ..errors import ContextOverflow, InvalidRequest
from .llama_model import Batch, ContextShape, LlamaContext, LlamaModel


class EmbeddingContext:
    """Turns texts into mean-pooled, L2-normalised vectors."""

    def __init__(self, model: LlamaModel, threads: int, max_tokens: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        # Pooled embeddings need the whole input in one micro-batch, hence batch == context.
        shape = ContextShape(
            sequences=1, tokens_per_sequence=max_tokens, batch_tokens=max_tokens, threads=threads, embeddings=True
        )
        self._context: LlamaContext = model.new_context(shape)
        self._batch = Batch(max_tokens)

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Vectors for `texts` in order, and the number of tokens read."""
        vectors: list[list[float]] = []
        total_tokens = 0
        for index, text in enumerate(texts):
            tokens = self.model.tokenize(text, add_special=True, parse_special=False)
            if not tokens:
                raise InvalidRequest(f"input[{index}]: is empty.")
            if len(tokens) > self.max_tokens:
                if not truncate:
                    raise ContextOverflow(
                        f"input[{index}]: is {len(tokens)} tokens but embeddings take at most {self.max_tokens}."
                    )
                tokens = tokens[: self.max_tokens]
            total_tokens += len(tokens)
            vectors.append(self._embed_tokens(tokens))
        return vectors, total_tokens

    def _embed_tokens(self, tokens: list[int]) -> list[float]:
        self._context.clear()
        self._batch.clear()
        for position, token in enumerate(tokens):
            self._batch.add(token, position, 0, True)
        self._context.decode(self._batch)
        vector = self._context.embedding(0)
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector]

    def free(self) -> None:
        """Release the context."""
        self._batch.free()
        self._context.free()
