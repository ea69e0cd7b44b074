"""llama.cpp's own grammar engine, asked whether a grammar lets a model write a given text."""

from __future__ import annotations

import ctypes

import llama_cpp as llama
import numpy as np

from ingle.core.runtime.llama_model import LlamaModel

# llama.cpp's llama_token_data, for candidate arrays handed to its samplers.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class GrammarEngine:
    """llama.cpp's grammar sampler over the default model's vocabulary."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model

    def accepts(self, grammar: str, text: str) -> bool:
        """Whether the grammar lets a model write `text`, token by token as it tokenizes, and then stop."""
        sampler = llama.llama_sampler_init_grammar(self.model.vocab, grammar.encode(), b"root")
        assert sampler, "llama.cpp refused the grammar"
        try:
            for token in self.model.tokenize(text, parse_special=False):
                if not self.allowed(sampler, token):
                    return False
                llama.llama_sampler_accept(sampler, token)  # pyright: ignore[reportArgumentType]
            return self.allowed(sampler, self.model.eos)
        finally:
            llama.llama_sampler_free(sampler)

    @staticmethod
    def allowed(sampler: object, token: int) -> bool:
        candidates = np.array([(token, 0.0, 0.0)], dtype=TOKEN_DATA)
        pointer = candidates.ctypes.data_as(ctypes.POINTER(llama.llama_token_data))
        array = llama.llama_token_data_array(pointer, 1, -1, False)
        llama.llama_sampler_apply(sampler, ctypes.byref(array))  # pyright: ignore[reportArgumentType]
        return bool(np.isfinite(candidates["logit"][0]))
