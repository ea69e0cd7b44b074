"""Plain dataclasses for what is asked of a model and what comes back.

Adapters convert their wire formats (Ollama, OpenAI, llama-server, LSP, chat)
into a GenerationRequest, call the engine, and convert the chunks back out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidRequest

DoneReason = Literal["stop", "length", "cancel"]

# Stop strings end an answer at a marker ("\n\n", "```", "<|im_end|>", "User:"). OpenAI takes 4 and
# Anthropic's API here 16; editor plugins send a handful. 64 of up to 256 characters is far more than any
# client needs, and keeps the stop matcher built for a request (one state per character) small.
MAX_STOP_STRINGS = 64
MAX_STOP_LENGTH = 256
# Penalties beyond this mean nothing more (logits are tens at most) and past float32's range they turn into
# infinities that make every pick the same; OpenAI's presence and frequency penalties stop at 2.
MAX_PENALTY = 100.0
# OpenAI's and Ollama's limit on the alternatives reported beside each token, and that of OpenAI's legacy
# completions route.
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5


@dataclass
class SamplingOptions:
    """How tokens are chosen and when generation stops."""

    temperature: float = 0.8
    top_k: int = 40
    """Keep the K most likely tokens (0: all; more than the vocabulary: all)."""
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    """Recent tokens the penalties look at; -1, or more than the context: the whole context."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = None
    """Tokens to generate at most (at least 1); None means until the end-of-text token or a full context."""
    stop: list[str] = field(default_factory=list)
    """Texts that end the answer (not included): at most MAX_STOP_STRINGS of MAX_STOP_LENGTH characters."""
    logprobs: int | None = None
    """Report each generated token's log-probability and those of this many most likely tokens at its place
    (0 to MAX_TOP_LOGPROBS); None: none."""

    @property
    def penalized(self) -> bool:
        """Whether any penalty (repeat, frequency, presence) is on: they read the tokens picked so far."""
        return self.repeat_penalty != 1.0 or bool(self.frequency_penalty) or bool(self.presence_penalty)

    def check(self) -> None:
        """InvalidRequest naming the option when a value means nothing or would cost without bound."""
        for name in ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidRequest(f"{name}: must be a finite number.")
        # llama.cpp divides by the repeat penalty: 0 would make every repeated token certain, not turn it off.
        if not 0 < self.repeat_penalty <= MAX_PENALTY:
            limit = f"above 0 and at most {MAX_PENALTY:g} (1 turns it off)"
            raise InvalidRequest(f"repeat_penalty: must be {limit}, not {self.repeat_penalty:g}.")
        for name in ("presence_penalty", "frequency_penalty"):
            if abs(getattr(self, name)) > MAX_PENALTY:
                raise InvalidRequest(f"{name}: must be between -{MAX_PENALTY:g} and {MAX_PENALTY:g} (0 turns it off).")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequest(
                f"A token limit of {self.max_tokens} would be no answer: ask for at least 1 token, or leave it out."
            )
        if self.repeat_last_n < -1:
            raise InvalidRequest("repeat_last_n: must be -1 (the whole context), 0 (off) or a number of tokens.")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidRequest(f"stop: at most {MAX_STOP_STRINGS} stop strings are allowed, not {len(self.stop)}.")
        if any(len(stop) > MAX_STOP_LENGTH for stop in self.stop):
            raise InvalidRequest(f"stop: a stop string may be at most {MAX_STOP_LENGTH} characters long.")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequest(f"top_logprobs: must be from 0 to {MAX_TOP_LOGPROBS}, not {self.logprobs}.")


@dataclass
class ChatMessage:
    """One turn of a conversation."""

    role: str
    content: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    name: str | None = None


@dataclass
class ContextChunk:
    """Text from another file, given to fill-in-the-middle as extra context."""

    text: str
    filename: str = ""


@dataclass
class GenerationRequest:
    """One generation: a raw or templated prompt, a chat, or a fill-in-the-middle."""

    model: str
    prompt: str | None = None
    """Completion text; with `suffix` it is the text before the cursor."""
    messages: list[ChatMessage] | None = None
    """A chat; rendered with the model's chat template."""
    suffix: str | None = None
    """Text after the cursor: makes this a fill-in-the-middle request."""
    extra_context: list[ContextChunk] = field(default_factory=list)
    """Chunks from other files, placed ahead of a fill-in-the-middle prompt, or of a `raw` prompt that then
    continues the file `filename` in the model's repository format."""
    filename: str | None = None
    """Path of the file being completed, for the repository formats that carry it."""
    system: str | None = None
    """System prompt; overrides the model's own."""
    raw: bool = False
    """Feed `prompt` as is, without the chat template."""
    options: SamplingOptions = field(default_factory=SamplingOptions)
    format: str | dict[str, Any] | None = None
    """`"json"` for any JSON value, or a JSON schema the output must match."""
    tools: list[dict[str, Any]] | None = None
    require_tool_call: bool = False
    """The answer must be a call of one of `tools` (OpenAI's tool_choice `required`, Anthropic's `any`)."""
    keep_alive: float | None = None
    """Seconds to keep the model loaded after this request; None uses the default."""
    knowledge: list[str] = field(default_factory=list)
    """Knowledge bases to answer a chat from, with numbered sources (core/knowledge/grounding.py)."""


@dataclass
class GenerationStats:
    """Counts and timings of a finished generation."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens reused from a sequence's cache instead of being decoded again."""
    completion_tokens: int = 0
    draft_tokens: int = 0
    """Tokens guessed ahead by speculative decoding and checked by the model."""
    accepted_draft_tokens: int = 0
    """Guessed tokens the model confirmed: each one saved a decode step."""
    done_reason: DoneReason = "stop"
    load_seconds: float = 0.0
    prompt_seconds: float = 0.0
    generate_seconds: float = 0.0
    total_seconds: float = 0.0


@dataclass
class TokenLogprob:
    """A token and its log-probability under the model: the log-softmax of its raw logits, before penalties,
    temperature or a grammar."""

    token: str
    """Its text (a token that ends inside a UTF-8 character shows U+FFFD there; `data` has the bytes)."""
    logprob: float
    data: bytes
    top: list[TokenLogprob] = field(default_factory=list)
    """The most likely tokens at its place, most likely first, as many as the request asked."""
    id: int | None = None
    """Its id in the model's vocabulary (None where an upstream server did not say)."""


@dataclass
class GenerationChunk:
    """A piece of streamed output; the last one has `done=True` and the stats."""

    text: str
    done: bool = False
    stats: GenerationStats | None = None
    """Final counts when `done`; on the first piece of text, a snapshot with the prompt's counts."""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """When the request asked: one entry per generated token whose text this chunk brings out, in order."""


@dataclass
class EmbeddingResult:
    """Embeddings of several inputs, one vector each, in input order."""

    model: str
    embeddings: list[list[float]]
    prompt_tokens: int
