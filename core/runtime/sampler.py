"""Sampler chains: how the next token is chosen from the logits."""

from __future__ import annotations

import json
from typing import Any

import llama_cpp as llama
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from ..errors import InvalidRequest
from ..generation import SamplingOptions
from .llama_model import LlamaModel


def grammar_for_format(output_format: str | dict[str, Any] | None) -> str | None:
    """GBNF grammar constraining output to JSON, or to a JSON schema; None if unconstrained."""
    if output_format is None or output_format == "":
        return None
    if output_format == "json":
        return JSON_GBNF
    if isinstance(output_format, dict):
        try:
            return json_schema_to_gbnf(json.dumps(output_format))
        except Exception as error:  # the converter raises bare Exceptions on bad schemas
            raise InvalidRequest(f"format: the JSON schema cannot be used ({error}).") from error
    raise InvalidRequest('format: expected "json" or a JSON schema object.')


class Sampler:
    """A llama.cpp sampler chain built from SamplingOptions; free() it when done."""

    def __init__(self, model: LlamaModel, options: SamplingOptions, grammar: str | None = None) -> None:
        self._chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        # Greedy with nothing that reads the history or constrains tokens: the pick is the logits' argmax,
        # which the scheduler takes itself, without llama.cpp's copy of the whole vocabulary (~1 ms a token).
        self.argmax_only = (
            grammar is None
            and options.temperature <= 0
            and options.repeat_penalty == 1.0
            and not options.frequency_penalty
            and not options.presence_penalty
        )
        try:
            if grammar is not None:
                self._add_grammar(model, grammar)
            if options.repeat_penalty != 1.0 or options.frequency_penalty or options.presence_penalty:
                self._add(
                    llama.llama_sampler_init_penalties(
                        model.n_vocab,
                        options.repeat_last_n,
                        options.repeat_penalty,
                        options.frequency_penalty,
                        options.presence_penalty,
                    )
                )
            if options.temperature <= 0:
                self._add(llama.llama_sampler_init_greedy())
                return
            if options.top_k > 0:
                self._add(llama.llama_sampler_init_top_k(options.top_k))
            if options.top_p < 1.0:
                self._add(llama.llama_sampler_init_top_p(options.top_p, 1))
            if options.min_p > 0.0:
                self._add(llama.llama_sampler_init_min_p(options.min_p, 1))
            self._add(llama.llama_sampler_init_temp(options.temperature))
            seed = llama.LLAMA_DEFAULT_SEED if options.seed is None else options.seed & 0xFFFFFFFF
            self._add(llama.llama_sampler_init_dist(seed))
        except Exception:
            self.free()
            raise

    def _add(self, sampler: llama.llama_sampler_p) -> None:
        llama.llama_sampler_chain_add(self._chain, sampler)

    def _add_grammar(self, model: LlamaModel, grammar: str) -> None:
        sampler = llama.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidRequest("format: the grammar derived from it could not be parsed by llama.cpp.")
        self._add(sampler)

    def sample(self, context: llama.llama_context_p, batch_index: int) -> int:
        """Pick (and accept) the next token from the logits at `batch_index`."""
        return llama.llama_sampler_sample(self._chain, context, batch_index)

    def free(self) -> None:
        """Release the chain and every sampler in it."""
        if self._chain:
            llama.llama_sampler_free(self._chain)
            self._chain = None
