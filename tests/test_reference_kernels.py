"""Answer steps on llama.cpp's reference kernels (core/runtime/reference_kernels.py): a token's logits are the
same bit for bit whether it is decoded alone, among speculative guesses, or beside another sequence's token,
so neither guesses nor other users can tip a greedy answer at a near tie."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import click.core
import numpy as np
import pytest

from ingle.core.errors import RuntimeFailure
from ingle.core.runtime import reference_kernels
from ingle.core.runtime.llama_model import Batch, ContextShape, LlamaContext, LlamaModel
from ingle.core.settings import Settings
from ingle.core.store import ModelStore

from .conftest import DEFAULT_MODEL

GUESSES = 9
"""Rows in one guess step: llama.cpp's fastest kernels tile matrix products from eight rows."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(default_model_cache: Path) -> Iterator[LlamaModel]:
    store = ModelStore(Settings(home=default_model_cache).models_dir)
    # Weights unpacked, as on an AMX CPU and with deterministic: llama.cpp's kernels for repacked weights add
    # up four rows at once in another order, and have no reference version.
    loaded = LlamaModel(store.blob_path(store.get(DEFAULT_MODEL).digest), repack=False)
    yield loaded
    loaded.free()


def read_prompt(context: LlamaContext, batch: Batch, prompt: list[int], sequence: int) -> int:
    """Decode a prompt with the fast kernels, as the scheduler reads prompts; the greedy next token."""
    for start in range(0, len(prompt), batch.capacity):
        batch.clear()
        for offset, token in enumerate(prompt[start : start + batch.capacity]):
            batch.add(token, start + offset, sequence, start + offset == len(prompt) - 1)
        context.decode(batch)
    return int(context.logits(len(batch) - 1).argmax())


def test_guessed_tokens_and_tokens_beside_others_get_the_logits_they_get_alone(model: LlamaModel) -> None:
    context = model.new_context(
        ContextShape(sequences=2, tokens_per_sequence=2048, batch_tokens=512, threads=2, shared_cache=False)
    )
    batch = Batch(512)
    source = inspect.getsource(click.core)
    # Past 256 cached tokens: llama.cpp's fastest kernels then split a lone token's attention across threads.
    prompt = model.tokenize("Rewrite with type hints:\n" + source[:2000])
    other = model.tokenize("Explain this code:\n" + source[2000:3500])
    try:
        tokens = [read_prompt(context, batch, prompt, 0)]
        other_token = read_prompt(context, batch, other, 1)
        alone = []
        for offset in range(GUESSES):
            batch.clear()
            batch.add(tokens[-1], len(prompt) + offset, 0, True)
            context.decode(batch, generated_only=True)
            alone.append(context.logits(0).copy())
            tokens.append(int(alone[-1].argmax()))

        def guessed(generated_only: bool) -> list[np.ndarray]:
            """The same tokens again, in one step, as if the last eight had been guessed."""
            context.forget(0, len(prompt))
            batch.clear()
            for offset in range(GUESSES):
                batch.add(tokens[offset], len(prompt) + offset, 0, True)
            context.decode(batch, generated_only=generated_only)
            return [context.logits(row).copy() for row in range(GUESSES)]

        def first_again(generated_only: bool, beside_another: bool) -> np.ndarray:
            """The first of them again, alone or in one step with another sequence's next token."""
            context.forget(0, len(prompt))
            context.forget(1, len(other))
            batch.clear()
            batch.add(tokens[0], len(prompt), 0, True)
            if beside_another:
                batch.add(other_token, len(other), 1, True)
            context.decode(batch, generated_only=generated_only)
            return context.logits(0).copy()

        assert all(np.array_equal(row, lone) for row, lone in zip(guessed(True), alone, strict=True))
        assert np.array_equal(first_again(True, beside_another=True), alone[0])
        # What the switch is for: with llama.cpp's fastest kernels the same rows come out otherwise.
        assert not all(np.array_equal(row, lone) for row, lone in zip(guessed(False), alone, strict=True))
        assert not np.array_equal(first_again(False, beside_another=True), first_again(False, beside_another=False))
    finally:
        batch.free()
        context.free()


def test_without_the_reference_kernels_deterministic_says_so_and_other_contexts_still_work(
    model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As with a llama-cpp-python build whose CPU device is laid out otherwise than the pinned one's.
    monkeypatch.setattr(reference_kernels, "_cpu_device", lambda: None)
    with pytest.raises(RuntimeFailure, match=r"deterministic needs llama\.cpp's reference CPU kernels"):
        model.new_context(
            ContextShape(sequences=1, tokens_per_sequence=256, batch_tokens=64, threads=2, deterministic=True)
        )
    context = model.new_context(ContextShape(sequences=1, tokens_per_sequence=256, batch_tokens=64, threads=2))
    batch = Batch(64)
    prompt = model.tokenize("def add(a, b):\n    return")
    try:
        token = read_prompt(context, batch, prompt, 0)
        batch.clear()
        batch.add(token, len(prompt), 0, True)
        context.decode(batch, generated_only=True)  # the fast kernels: there is no switch to turn
        assert np.isfinite(context.logits(0)).all()
    finally:
        batch.free()
        context.free()
