"""Embeddings: a separate llama context with pooling, on the compute thread (scheduler.py).

For a non-causal model (BERT, as its GGUF says), short inputs share one
decode: each gets its own sequence id in the batch, and llama.cpp attends
and pools within each sequence separately. The context stays
at the model's trained length (BERT's position table ends there), so inputs
are packed until their tokens fill it. Packing makes indexing a knowledge
base several times faster than one decode per input.

A request is embedded one decode at a time (`steps`): its caller runs each
step on the compute thread, where the scheduler fits generation steps
in between, so a long request never stalls the streams of others, and a
caller that goes away simply asks for no further step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from ..errors import ContextOverflow, InvalidRequest
from .llama_model import Batch, ContextShape, LlamaContext, LlamaModel

EMBED_SEQUENCES = 7
"""Most inputs pooled in one decode. The context gets one more sequence (LlamaContext's scratch one), and
llama.cpp sizes its worst-case graph by splitting the batch evenly over all sequences: a count that does not
divide the batch trips a GGML assertion that aborts the process. 7 + 1 divides any multiple of 8."""


class EmbeddingContext:
    """Turns texts into pooled, L2-normalised vectors."""

    def __init__(self, model: LlamaModel, threads: int, max_tokens: int) -> None:
        self.model = model
        max_tokens -= max_tokens % (EMBED_SEQUENCES + 1)
        self.max_tokens = max_tokens
        # Pooled embeddings need every input whole in one micro-batch, hence batch == the longest input.
        shape = ContextShape(
            sequences=EMBED_SEQUENCES,
            tokens_per_sequence=-(-max_tokens // EMBED_SEQUENCES),
            batch_tokens=max_tokens,
            threads=threads,
            embeddings=True,
        )
        self._context: LlamaContext = model.new_context(shape)
        # A causal model reads its inputs through an F16 KV cache whose rounding depends on what else is
        # in the batch, so a text's vector would change with its neighbours: one input per decode there.
        architecture = model.metadata("general.architecture")
        causal = model.metadata(f"{architecture}.attention.causal") != "false"
        self._group_size = 1 if causal else EMBED_SEQUENCES
        self._batch = Batch(max_tokens)
        self.inputs_embedded = 0
        """Inputs embedded since the context was made (read from any thread, for metrics and tests)."""

    def steps(self, texts: list[str], truncate: bool = True) -> Iterator[tuple[list[list[float]], int]]:
        """Embed `texts` in order, one decode per `next()`: each yields the next inputs' vectors and their tokens.

        Each step tokenizes only the inputs it decodes, so no step grows with
        the size of the whole request. Call `next()` on the compute thread only.
        """
        group: list[list[int]] = []
        for index, text in enumerate(texts):
            tokens = self._tokenize(index, text, truncate)
            if group and (len(group) == self._group_size or sum(map(len, group)) + len(tokens) > self.max_tokens):
                yield self._embed_group(group)
                group = []
            group.append(tokens)
        if group:
            yield self._embed_group(group)

    def _tokenize(self, index: int, text: str, truncate: bool) -> list[int]:
        tokens = self.model.tokenize(text, add_special=True, parse_special=False)
        if not tokens:
            raise InvalidRequest(f"input[{index}]: is empty.")
        if len(tokens) > self.max_tokens:
            if not truncate:
                raise ContextOverflow(
                    f"input[{index}]: is {len(tokens)} tokens but embeddings take at most {self.max_tokens}."
                )
            tokens = tokens[: self.max_tokens]
        return tokens

    def _embed_group(self, group: list[list[int]]) -> tuple[list[list[float]], int]:
        self._context.clear()
        self._batch.clear()
        for sequence, tokens in enumerate(group):
            for position, token in enumerate(tokens):
                self._batch.add(token, position, sequence, True)
        self._context.decode(self._batch)
        vectors = [_normalised(self._context.embedding(sequence)) for sequence in range(len(group))]
        self.inputs_embedded += len(group)
        return vectors, sum(map(len, group))

    def free(self) -> None:
        """Release the context."""
        self._batch.free()
        self._context.free()


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]
