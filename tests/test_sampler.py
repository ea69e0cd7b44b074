"""Greedy picks under penalties, taken without llama.cpp's chain, are the picks llama.cpp's chain makes."""

from __future__ import annotations

import ctypes

import llama_cpp as llama
import numpy as np
import pytest

from ingle.core.generation import SamplingOptions
from ingle.core.runtime.sampler import PenalizedArgmax

# llama.cpp's llama_token_data, as numpy lays out an array of them.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
VOCABULARY = 512


def llama_cpp_pick(chain: llama.llama_sampler_p, logits: np.ndarray) -> int:
    """What llama.cpp's penalties + greedy chain picks from `logits` (and remembers, as sampling does)."""
    candidates = np.zeros(len(logits), TOKEN_DATA)
    candidates["id"] = np.arange(len(logits), dtype=np.int32)
    candidates["logit"] = logits
    pointer = candidates.ctypes.data_as(ctypes.POINTER(llama.llama_token_data))
    array = llama.llama_token_data_array(pointer, len(candidates), -1, False)
    llama.llama_sampler_apply(chain, ctypes.byref(array))  # pyright: ignore[reportArgumentType] - the binding types a pointer as an array
    token = int(array.data[array.selected].id)
    llama.llama_sampler_accept(chain, token)
    return token


@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(temperature=0, repeat_penalty=1.3, repeat_last_n=8),
        SamplingOptions(temperature=0, repeat_penalty=1.1, frequency_penalty=0.4, presence_penalty=0.3),
        SamplingOptions(temperature=0, repeat_penalty=0.7, presence_penalty=-0.5, repeat_last_n=3),
    ],
)
def test_greedy_with_penalties_picks_as_llama_cpp_does(options: SamplingOptions) -> None:
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    penalties = llama.llama_sampler_init_penalties(
        VOCABULARY, options.repeat_last_n, options.repeat_penalty, options.frequency_penalty, options.presence_penalty
    )
    llama.llama_sampler_chain_add(chain, penalties)
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
    ours = PenalizedArgmax(options, options.repeat_last_n)
    rng = np.random.default_rng(11)
    picked: list[int] = []
    penalty_decided = 0
    try:
        for step in range(600):
            logits = rng.normal(size=VOCABULARY).astype(np.float32)
            # Recent picks made likely again, ties, and every other step all logits below zero (where a
            # penalty multiplies rather than divides): the cases where penalties decide.
            for token in picked[-6:]:
                logits[token] += np.float32(rng.uniform(1.0, 4.0))
            logits[rng.integers(VOCABULARY)] = logits.max()
            if step % 2:
                logits -= np.float32(12.0)
            untouched = logits.copy()
            expected = llama_cpp_pick(chain, logits)
            assert ours.pick(logits) == expected
            assert np.array_equal(logits, untouched)  # llama.cpp's buffer is left as it was
            penalty_decided += expected != int(logits.argmax())
            picked.append(expected)
    finally:
        llama.llama_sampler_free(chain)
    assert penalty_decided > 20  # the penalties changed the pick often enough to be tested
