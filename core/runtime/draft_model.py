"""A draft model: a smaller model with the same vocabulary guesses the next tokens of every sequence.

It keeps one sequence of its own beside each of the target's, holding the same
tokens. Before it guesses, each of its sequences is brought up to the target
sequence's history: what they share stays cached, the rest (the tokens the
target accepted since, or a new prompt) is decoded. Then it picks its most
likely token a few times over, for all sequences in one decode per token.
Guesses the target rejected are dropped from its cache at the next catch-up,
as they are no longer part of the history.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .llama_model import Batch, ContextShape, LlamaContext, LlamaModel


@dataclass(frozen=True)
class DraftRequest:
    """What one sequence wants guessed."""

    history: list[int]
    """Prompt and generated tokens, ending with the pending token."""
    depth: int
    """How many tokens to guess."""


class DraftModel:
    """A smaller model drafting for every sequence of one scheduler (used on the compute thread only)."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        self.model = model
        # The target checks every guess, so the draft's own rounding never reaches an answer: fast kernels.
        self._context: LlamaContext = model.new_context(replace(shape, deterministic=False))
        self._batch = Batch(shape.batch_tokens)
        self._cached: list[list[int]] = [[] for _ in range(shape.sequences)]

    def draft(self, requests: dict[int, DraftRequest]) -> dict[int, list[int]]:
        """Guess `depth` tokens after each sequence's history, by sequence."""
        wanted = {sequence: request for sequence, request in requests.items() if request.depth > 0}
        if not wanted:
            return {}
        logits_at = self._catch_up(wanted)
        drafts: dict[int, list[int]] = {sequence: [] for sequence in wanted}
        while logits_at:
            batch = self._batch
            batch.clear()
            following: dict[int, int] = {}
            for sequence, index in logits_at.items():
                token = self._context.argmax(index)
                drafts[sequence].append(token)
                if len(drafts[sequence]) < wanted[sequence].depth:
                    cached = self._cached[sequence]
                    following[sequence] = batch.add(token, len(cached), sequence, True)
                    cached.append(token)
            if following:
                self._context.decode(batch)
            logits_at = following
        return drafts

    def _catch_up(self, wanted: dict[int, DraftRequest]) -> dict[int, int]:
        """Make each sequence's cache hold its history; return where each one's last logits are in the batch."""
        missing: dict[int, list[int]] = {}
        for sequence, request in wanted.items():
            cached = self._cached[sequence]
            # Keep the shared prefix, but decode the last history token again if need be: its logits are wanted.
            keep = min(_shared_prefix(cached, request.history), len(request.history) - 1)
            if keep < len(cached):
                self._context.forget(sequence, keep)
                del cached[keep:]
            missing[sequence] = request.history[keep:]
        # Everything but each sequence's last token, in as many decodes as it takes...
        batch = self._batch
        pending = [(sequence, token) for sequence, tokens in missing.items() for token in tokens[:-1]]
        for start in range(0, len(pending), batch.capacity):
            batch.clear()
            for sequence, token in pending[start : start + batch.capacity]:
                cached = self._cached[sequence]
                batch.add(token, len(cached), sequence, False)
                cached.append(token)
            self._context.decode(batch)
        # ...then the last tokens together, with logits, so that they are all readable after one decode.
        batch.clear()
        logits_at = {}
        for sequence, tokens in missing.items():
            cached = self._cached[sequence]
            logits_at[sequence] = batch.add(tokens[-1], len(cached), sequence, True)
            cached.append(tokens[-1])
        self._context.decode(batch)
        return logits_at

    def reset(self) -> None:
        """Forget every cached token (after a failed decode, whose cache state is unknown)."""
        self._context.clear()
        self._cached = [[] for _ in self._cached]

    def free(self) -> None:
        """Release the draft context, its batch and the draft model's weights."""
        self._batch.free()
        self._context.free()
        self.model.free()


def _shared_prefix(first: list[int], second: list[int]) -> int:
    count = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        count += 1
    return count
