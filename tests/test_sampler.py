"""Picks made without handing llama.cpp's chain the whole vocabulary are the picks its chain makes."""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp as llama
import numpy as np
import pytest

from ingle.core.generation import SamplingOptions
from ingle.core.runtime.sampler import FewCandidates, apply_chain

from .grammar_engine import TOKEN_DATA

VOCABULARY = 512
SEED = 5


def chain_of(*samplers: llama.llama_sampler_p) -> llama.llama_sampler_p:
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    for sampler in samplers:
        llama.llama_sampler_chain_add(chain, sampler)
    return chain


def penalties(options: SamplingOptions) -> llama.llama_sampler_p:
    return llama.llama_sampler_init_penalties(
        VOCABULARY, options.repeat_last_n, options.repeat_penalty, options.frequency_penalty, options.presence_penalty
    )


def sampling(options: SamplingOptions) -> list[llama.llama_sampler_p]:
    """What follows the penalties in a sampled chain, as Sampler builds it."""
    return [
        llama.llama_sampler_init_top_k(options.top_k),
        llama.llama_sampler_init_top_p(options.top_p, 1),
        llama.llama_sampler_init_min_p(options.min_p, 1),
        llama.llama_sampler_init_temp(options.temperature),
        llama.llama_sampler_init_dist(SEED),
    ]


def llama_cpp_pick(chain: llama.llama_sampler_p, logits: np.ndarray) -> int:
    """What llama.cpp's chain picks from all of `logits` (and remembers, as sampling does)."""
    candidates = np.zeros(len(logits), TOKEN_DATA)
    candidates["id"] = np.arange(len(logits), dtype=np.int32)
    candidates["logit"] = logits
    array = apply_chain(chain, candidates)
    token = int(array.data[array.selected].id)
    llama.llama_sampler_accept(chain, token)
    return token


def logits_stream(ties: bool) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Random logits where penalties decide: recent picks made likely again, every other step every logit
    below zero (where a penalty multiplies rather than divides), and, if asked, a tie for the highest."""
    rng = np.random.default_rng(11)
    picked: list[int] = []
    for step in range(600):
        logits = rng.normal(size=VOCABULARY).astype(np.float32)
        for token in picked[-6:]:
            logits[token] += np.float32(rng.uniform(1.0, 4.0))
        if ties:
            logits[rng.integers(VOCABULARY)] = logits.max()
        if step % 2:
            logits -= np.float32(12.0)
        yield logits, picked


@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(temperature=0, repeat_penalty=1.3, repeat_last_n=8),
        SamplingOptions(temperature=0, repeat_penalty=1.1, frequency_penalty=0.4, presence_penalty=0.3),
        SamplingOptions(temperature=0, repeat_penalty=0.7, presence_penalty=-0.5, repeat_last_n=3),
        SamplingOptions(temperature=0.8, repeat_penalty=1.3, repeat_last_n=8, top_k=40, top_p=0.9, min_p=0.05),
        SamplingOptions(temperature=1.5, repeat_penalty=1.1, frequency_penalty=0.4, top_k=5, top_p=1.0, min_p=0.0),
        # A penalty so small that dividing by it overflows: infinities, as C floats give them, without a warning.
        SamplingOptions(temperature=0, repeat_penalty=1e-40, presence_penalty=100.0, repeat_last_n=8),
    ],
)
def test_picks_are_llama_cpps(options: SamplingOptions) -> None:
    tail = [llama.llama_sampler_init_greedy()] if options.temperature <= 0 else sampling(options)
    reference = chain_of(penalties(options), *tail)
    # The same samplers after the penalties, which FewCandidates applies itself.
    ours_chain = chain_of(*([llama.llama_sampler_init_greedy()] if options.temperature <= 0 else sampling(options)))
    ours = FewCandidates(options, options.repeat_last_n)
    penalty_decided = 0
    try:
        for logits, picked in logits_stream(ties=options.temperature <= 0):
            untouched = logits.copy()
            expected = llama_cpp_pick(reference, logits)
            assert ours.pick(logits, ours_chain) == expected
            assert np.array_equal(logits, untouched)  # llama.cpp's buffer is left as it was
            penalty_decided += expected != int(logits.argmax())
            picked.append(expected)
    finally:
        llama.llama_sampler_free(reference)
        llama.llama_sampler_free(ours_chain)
    assert penalty_decided > 20  # the penalties (or the draw) changed the pick often enough to be tested
