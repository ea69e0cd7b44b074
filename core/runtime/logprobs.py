"""Log-probabilities of generated tokens, for requests that ask for them (OpenAI's and Ollama's `logprobs`).

They are read from the raw logits a token was picked from, as llama-server
and Ollama report them: what the model thought of each token, whatever the
penalties, temperature or grammar then did with it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..generation import TokenLogprob


def token_logprob(logits: np.ndarray, token: int, top: int, token_bytes: Callable[[int], bytes]) -> TokenLogprob:
    """`token`'s log-probability among `logits`, with the `top` most likely tokens (most likely first)."""
    peak = float(logits.max())
    # In float64: float32's sum over 150k exponentials loses the last digits OpenAI clients print.
    log_total = peak + float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))
    alternatives: list[TokenLogprob] = []
    if top:
        best = np.argpartition(logits, -top)[-top:]
        # Most likely first; equal logits in id order, as llama.cpp breaks ties.
        for index in sorted(best.tolist(), key=lambda candidate: (-logits[candidate], candidate)):
            alternatives.append(_entry(index, float(logits[index]) - log_total, token_bytes))
    chosen = _entry(token, float(logits[token]) - log_total, token_bytes)
    chosen.top = alternatives
    return chosen


def _entry(token: int, logprob: float, token_bytes: Callable[[int], bytes]) -> TokenLogprob:
    data = token_bytes(token)
    return TokenLogprob(token=data.decode("utf-8", errors="replace"), logprob=logprob, data=data, id=token)
