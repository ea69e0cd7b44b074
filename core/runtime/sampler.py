"""Sampler chains: how the next token is chosen from the logits."""

from __future__ import annotations

import ctypes
import logging
import math
from collections import Counter, deque

import llama_cpp as llama
import numpy as np

from ..errors import InvalidRequest, RuntimeFailure
from ..generation import SamplingOptions
from .grammar import LazyGrammar
from .indentation import HeldIndentation
from .llama_model import LlamaModel

log = logging.getLogger("ingle.sampler")

# llama.cpp's llama_token_data, as numpy lays out an array of them.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


def _penalty_window(repeat_last_n: int, model: LlamaModel) -> int:
    """The tokens the penalties look back over: llama.cpp allocates this many up front, so never more than
    a context holds (-1 asks for the whole context, as in llama.cpp)."""
    context = max(model.n_ctx_train, 0)
    return context if repeat_last_n < 0 else min(repeat_last_n, context)


class Sampler:
    """A llama.cpp sampler chain built from SamplingOptions; free() it when done.

    `grammar` constrains the whole output; `tool_grammar` only what follows its
    trigger (ignored when `grammar` is given: the output format wins).
    `indentation` holds the first tokens to the cursor's indentation (see indentation.py).
    """

    def __init__(
        self,
        model: LlamaModel,
        options: SamplingOptions,
        grammar: str | None = None,
        tool_grammar: LazyGrammar | None = None,
        indentation: HeldIndentation | None = None,
    ) -> None:
        options.check()
        self._chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        constrained = grammar is not None or tool_grammar is not None
        self._greedy_only = not constrained and options.temperature <= 0 and not options.penalized
        self._model = model
        self._indentation = indentation
        # Without a grammar, the penalties and the top_k cut are applied here (see FewCandidates).
        window = _penalty_window(options.repeat_last_n, model)
        self._few = None
        if not constrained and (options.temperature <= 0 or 0 < options.top_k < model.n_vocab):
            self._few = FewCandidates(options, window)
        # A grammar's picks are checked before llama.cpp accepts them (see sample), in this reused buffer;
        # held indentation needs the logits in hand too.
        in_hand = constrained or (indentation is not None and self._few is None)
        self._candidates = np.zeros(model.n_vocab, _TOKEN_DATA) if in_hand else None
        try:
            if grammar is not None:
                self._add_grammar(model, grammar)
            elif tool_grammar is not None and tool_grammar.triggers:
                self._add_lazy_grammar(model, tool_grammar)
            elif tool_grammar is not None:
                self._add_grammar(model, tool_grammar.grammar)
            if options.penalized and self._few is None:
                self._add(
                    llama.llama_sampler_init_penalties(
                        model.n_vocab,
                        window,
                        options.repeat_penalty,
                        options.frequency_penalty,
                        options.presence_penalty,
                    )
                )
            if options.temperature <= 0:
                self._add(llama.llama_sampler_init_greedy())
                return
            if options.top_k > 0:
                # More than the vocabulary keeps it all; ctypes would wrap a larger count to int32.
                self._add(llama.llama_sampler_init_top_k(min(options.top_k, model.n_vocab)))
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

    @property
    def argmax_only(self) -> bool:
        """Whether the pick is the logits' argmax, which the scheduler takes itself, without llama.cpp's copy of
        the whole vocabulary (~1 ms a token): greedy, with nothing that reads the history or constrains tokens
        (held indentation only until it is written)."""
        return self._greedy_only and (self._indentation is None or not self._indentation.held)

    def _add(self, sampler: llama.llama_sampler_p) -> None:
        llama.llama_sampler_chain_add(self._chain, sampler)  # pyright: ignore[reportArgumentType] - None only once freed

    def _add_grammar(self, model: LlamaModel, grammar: str) -> None:
        sampler = llama.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidRequest("format: the grammar derived from it could not be parsed by llama.cpp.")
        self._add(sampler)

    def _add_lazy_grammar(self, model: LlamaModel, lazy: LazyGrammar) -> None:
        patterns = (ctypes.c_char_p * len(lazy.triggers))(*(pattern.encode() for pattern in lazy.triggers))
        no_tokens = (llama.llama_token * 0)()
        sampler = llama.llama_sampler_init_grammar_lazy_patterns(
            model.vocab, lazy.grammar.encode(), b"root", patterns, len(lazy.triggers), no_tokens, 0
        )
        if not sampler:
            raise InvalidRequest("tools: the grammar derived from the tools' schemas could not be parsed by llama.cpp.")
        self._add(sampler)

    def sample(self, context: llama.llama_context_p, batch_index: int) -> int:
        """Pick (and accept) the next token from the logits at `batch_index`.

        When a grammar allows no token, llama.cpp's own sampling picks one
        anyway and aborts the process on accepting it. With a grammar the pick
        is made here instead and checked first: at such a dead end the output
        ends (the end-of-text token) and nothing is accepted.
        """
        if self._candidates is None and self._few is None:
            return llama.llama_sampler_sample(self._chain, context, batch_index)  # pyright: ignore[reportArgumentType] - as above
        logits = llama.llama_get_logits_ith(context, batch_index)
        if not logits:
            raise RuntimeFailure(f"llama.cpp returned no logits for batch position {batch_index}.")
        view = np.ctypeslib.as_array(logits, shape=(self._model.n_vocab,))
        held = self._indentation
        if held is not None and held.held:
            view = held.masked(view)
        token = self._pick(view)
        if held is not None and held.held:
            held.advance(token)
        return token

    def _pick(self, logits: np.ndarray) -> int:
        if self._few is not None:
            return self._few.pick(logits, self._chain)
        candidates = self._candidates
        assert candidates is not None
        candidates["id"] = np.arange(len(candidates), dtype=np.int32)
        candidates["logit"] = logits
        array = apply_chain(self._chain, candidates)
        # The grammar sets what it forbids to -inf, and nothing after it raises a logit again.
        if not 0 <= array.selected < array.size or not math.isfinite(array.data[array.selected].logit):
            log.warning("the output's grammar allows no token here; ending the output")
            return self._model.eos
        token = int(array.data[array.selected].id)
        llama.llama_sampler_accept(self._chain, token)  # pyright: ignore[reportArgumentType] - as above
        return token

    def free(self) -> None:
        """Release the chain and every sampler in it."""
        if self._chain:
            llama.llama_sampler_free(self._chain)
            self._chain = None


def apply_chain(chain: llama.llama_sampler_p | None, candidates: np.ndarray) -> llama.llama_token_data_array:
    """Run a sampler chain over `candidates` (ids and logits filled in; _TOKEN_DATA) and return llama.cpp's
    view of them, whose `selected` is the pick."""
    candidates["p"] = 0.0
    pointer = candidates.ctypes.data_as(ctypes.POINTER(llama.llama_token_data))
    array = llama.llama_token_data_array(pointer, len(candidates), -1, False)
    llama.llama_sampler_apply(chain, ctypes.byref(array))  # pyright: ignore[reportArgumentType] - as above
    return array


class FewCandidates:
    """Picks what llama.cpp's chain of penalties, then greedy or top_k and the rest, picks, without handing
    it the whole vocabulary.

    llama.cpp's chain starts by copying every logit (152k for Qwen) into an array of candidates, which its
    penalties sampler then searches token by token: together 0.4-0.5 ms a token, 3% of a decode step of the
    default model on 2 cores, spent while the decode threads wait. Here the penalties are applied to the
    few logits of the tokens in their window, and the chain is given only the top_k most likely tokens,
    which is all its top_k sampler would keep. A greedy pick is the first highest logit, as llama.cpp's
    greedy sampler takes it. The chain given to `pick` must hold no penalties of its own.
    """

    def __init__(self, options: SamplingOptions, window: int) -> None:
        self._repeat = np.float32(options.repeat_penalty)
        self._frequency = np.float32(options.frequency_penalty)
        self._presence = np.float32(options.presence_penalty)
        self._recent: deque[int] = deque(maxlen=max(window, 0) if options.penalized else 0)
        self._counts: Counter[int] = Counter()
        self._candidates = np.zeros(options.top_k, _TOKEN_DATA) if options.temperature > 0 else None

    def pick(self, logits: np.ndarray, chain: llama.llama_sampler_p | None) -> int:
        """The next token from one position's logits (left unchanged: they are llama.cpp's buffer)."""
        if self._counts:
            ids = np.fromiter(self._counts.keys(), np.int64, len(self._counts))
            counts = np.fromiter(self._counts.values(), np.float32, len(self._counts))
            penalized = logits[ids]
            # As llama.cpp's C floats: dividing by a tiny penalty overflows to infinity silently (numpy would
            # warn on stderr about a client's number).
            with np.errstate(all="ignore"):
                penalized = np.where(penalized <= 0, penalized * self._repeat, penalized / self._repeat)
                penalized -= counts * self._frequency + np.float32(1) * self._presence
            logits = logits.copy()
            logits[ids] = penalized
        if self._candidates is None:
            token = int(logits.argmax())
        else:
            top = np.argpartition(logits, -len(self._candidates))[-len(self._candidates) :]
            self._candidates["id"] = top
            self._candidates["logit"] = logits[top]
            array = apply_chain(chain, self._candidates)
            token = int(array.data[array.selected].id)
            llama.llama_sampler_accept(chain, token)  # pyright: ignore[reportArgumentType] - None only once freed
        self._accept(token)
        return token

    def _accept(self, token: int) -> None:
        """Remember a picked token, as llama.cpp's penalties sampler does: the last `window` picks count."""
        if self._recent.maxlen == 0:
            return
        if len(self._recent) == self._recent.maxlen:
            oldest = self._recent[0]
            self._counts[oldest] -= 1
            if not self._counts[oldest]:
                del self._counts[oldest]
        self._recent.append(token)
        self._counts[token] += 1
