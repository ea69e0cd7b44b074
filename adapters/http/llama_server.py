"""The llama-server-compatible routes, for llama.vim and llama.vscode: /infill, /completion, /health.

llama-server's `n_indent` and `t_max_predict_ms` stops are applied here, on
the text as it streams in: when one fires, the generation is closed, which
frees its sequence in the engine at once. Token probabilities (`n_probs`)
go out with the text they belong to, so a token the stops cut off is not
reported either.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from aiohttp import web

from ...core.generation import ContextChunk, GenerationRequest, GenerationStats, SamplingOptions, TokenLogprob
from .errors import read_body
from .keys import BACKEND, SERVICES, SETTINGS
from .llama_server_wire import (
    CompletionOptions,
    CompletionPartial,
    CompletionRequest,
    CompletionResult,
    Health,
    InfillRequest,
    RepositoryContext,
    Timings,
    TokenProbability,
)
from .metrics import record_generation
from .openapi import documented
from .sampling import sampling_options
from .streaming import server_sent_events

TAGS = ("llama-server",)


# --- handlers -----------------------------------------------------------------


@documented(
    "Fill in the middle with extra context (llama-server).",
    request=InfillRequest,
    response=CompletionResult,
    selectable=True,
    stream_type="text/event-stream",
    tags=TAGS,
)
async def infill(request: web.Request) -> web.StreamResponse:
    """Complete the code at the cursor, as llama.vim and llama.vscode ask for it."""
    body = await read_body(request, InfillRequest)
    generation = infill_generation(body, request.app[SETTINGS].default_model)
    return await answer(request, body, generation)


@documented(
    "Continue a raw prompt (llama-server).",
    request=CompletionRequest,
    response=CompletionResult,
    selectable=True,
    stream_type="text/event-stream",
    tags=TAGS,
)
async def completion(request: web.Request) -> web.StreamResponse:
    """Continue a prompt without the chat template."""
    body = await read_body(request, CompletionRequest)
    generation = completion_generation(body, request.app[SETTINGS].default_model)
    return await answer(request, body, generation)


@documented("Whether the server is up (llama-server).", response=Health, tags=TAGS)
async def health(request: web.Request) -> web.Response:
    """Always ok while the server runs, with each service's state; needs no API key."""
    services = {name: status.state.value for name, status in request.app[SERVICES].statuses().items()}
    return compact_json(Health(services=services or None).model_dump(exclude_none=True))


def add_routes(app: web.Application) -> None:
    """Register the llama-server routes."""
    app.router.add_post("/infill", infill)
    app.router.add_post("/completion", completion)
    app.router.add_post("/completions", completion)
    app.router.add_get("/health", health)


async def answer(request: web.Request, body: CompletionOptions, generation: GenerationRequest) -> web.StreamResponse:
    """Run the generation and answer whole, or as server-sent events without a [DONE] marker."""
    rules = StopRules(body.n_indent, body.t_max_predict_ms)
    run = CompletionRun(request.app, generation, rules, warm_only=_n_predict(body) == 0)
    if body.stream:
        events = stream_events(
            run, timings_per_token=bool(body.timings_per_token), as_probs=bool(body.post_sampling_probs)
        )
        return await server_sent_events(request, events, done_marker=False)
    async with aclosing(run.pieces()) as pieces:
        async for _ in pieces:
            pass
    result = run.result(as_probs=bool(body.post_sampling_probs)).model_dump(mode="json", exclude_none=True)
    return compact_json(select_fields(result, body.response_fields))


# --- convert in ---------------------------------------------------------------


def infill_generation(body: InfillRequest, default_model: str) -> GenerationRequest:
    """A FIM GenerationRequest; the cursor line's text (`prompt`) continues the prefix."""
    return GenerationRequest(
        model=_model(body, default_model),
        prompt=body.input_prefix + body.prompt,
        suffix=body.input_suffix,
        extra_context=_extra_context(body),
        filename=body.filename or None,
        options=_options(body),
        format=_output_format(body),
    )


def completion_generation(body: CompletionRequest, default_model: str) -> GenerationRequest:
    """A raw-completion GenerationRequest."""
    # The wire model let through one text, alone or in a list of one.
    prompt = body.prompt if isinstance(body.prompt, str) else str(body.prompt[0])
    return GenerationRequest(
        model=_model(body, default_model),
        prompt=prompt,
        raw=True,
        extra_context=_extra_context(body),
        filename=body.filename or None,
        options=_options(body),
        format=_output_format(body),
    )


def _extra_context(body: RepositoryContext) -> list[ContextChunk]:
    return [ContextChunk(text=chunk.text, filename=chunk.filename) for chunk in body.input_extra]


def _model(body: CompletionOptions, default_model: str) -> str:
    # Editor plugins send an empty model when none is configured.
    return body.model or default_model


def _n_predict(body: CompletionOptions) -> int | None:
    return body.n_predict if body.n_predict is not None else body.max_tokens


def _options(body: CompletionOptions) -> SamplingOptions:
    n_predict = _n_predict(body)
    options = sampling_options(
        body,
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        # n_predict 0 only loads the prompt into the cache: one token is the least the engine generates.
        max_tokens=1 if n_predict == 0 else n_predict,
        stop=body.stop,
    )
    options.logprobs = body.n_probs or None
    return options


def _output_format(body: CompletionOptions) -> str | dict[str, Any] | None:
    if body.json_schema is None:
        return None
    return body.json_schema or "json"


# --- call core ----------------------------------------------------------------


class StopRules:
    """llama-server's stops that ingle applies to the text: `n_indent` and `t_max_predict_ms`."""

    def __init__(self, n_indent: int, t_max_predict_ms: float | None) -> None:
        self.n_indent = n_indent
        self.max_seconds = t_max_predict_ms / 1000 if t_max_predict_ms else None
        self.text = ""
        """All text generated so far (after a cut: up to the cut)."""
        self.released = 0
        self.first_at: float | None = None

    def feed(self, piece: str, now: float) -> tuple[str, bool]:
        """Add generated text; return the text now final, and whether generation must stop."""
        if self.first_at is None:
            self.first_at = now
        self.text += piece
        if self.n_indent:
            cut = self._dedent_cut()
            if cut is not None:
                self.text = self.text[:cut]
                return self._release(cut), True
        if self.max_seconds is not None and "\n" in self.text and now - self.first_at >= self.max_seconds:
            return self._release(len(self.text)), True
        return self._release(self._final_end()), False

    def finish(self) -> str:
        """The text held back, once generation has ended on its own."""
        return self._release(len(self.text))

    def _dedent_cut(self) -> int | None:
        """Start of the first new line indented by fewer than n_indent characters, if any.

        The cursor's own line is never checked; an empty line counts as not
        indented, as in llama-server.
        """
        newline = self.text.find("\n")
        while newline >= 0:
            start = newline + 1
            newline = self.text.find("\n", start)
            line = self.text[start:] if newline < 0 else self.text[start:newline]
            indent = len(line) - len(line.lstrip(" \t"))
            if newline < 0 and indent == len(line):
                return None  # the last line is only indentation so far: not decided yet
            if indent < self.n_indent:
                return start
        return None

    def _final_end(self) -> int:
        """How much text no later rule can take back: all but an undecided last line's indentation."""
        if not self.n_indent:
            return len(self.text)
        start = self.text.rfind("\n") + 1
        if start and not self.text[start:].strip(" \t"):
            return start
        return len(self.text)

    def _release(self, end: int) -> str:
        released = self.text[self.released : end]
        self.released = max(self.released, end)
        return released


class CompletionRun:
    """One generation with llama-server's stop rules, and what its answer reports."""

    def __init__(self, app: web.Application, generation: GenerationRequest, rules: StopRules, warm_only: bool) -> None:
        self.app = app
        self.generation = generation
        self.rules = rules
        self.warm_only = warm_only
        """n_predict 0: load the prompt into the cache, answer no text."""
        self.content = ""
        self.probabilities: list[TokenLogprob] = []
        """The probabilities of the tokens whose text is in `content` (when the request asked)."""
        self._pending: deque[tuple[int, TokenLogprob]] = deque()
        """Probabilities whose token's text the stop rules have not released yet, by where that text ends."""
        self._generated_bytes = 0
        self._released_bytes = 0
        self.predicted = 0
        self.stats: GenerationStats | None = None
        self.finished = False
        """True once the engine's final counts arrived."""
        self.stopped_by_rule = False
        self.started = time.perf_counter()
        self.ended = self.started

    async def pieces(self) -> AsyncGenerator[tuple[str, list[TokenLogprob]], None]:
        """The text as it becomes final, with its tokens' probabilities; closing this closes the generation."""
        async with aclosing(self.app[BACKEND].generate(self.generation)) as stream:
            async for chunk in stream:
                if chunk.stats is not None:  # the prompt's counts on the first piece, final counts at the end
                    self.stats = chunk.stats
                    self.finished = chunk.done
                if self.warm_only:
                    continue
                if chunk.text:
                    self.predicted += 1
                for entry in chunk.logprobs:
                    self._generated_bytes += len(entry.data)
                    self._pending.append((self._generated_bytes, entry))
                text, stop = self.rules.feed(chunk.text, time.perf_counter())
                if chunk.done and not stop:
                    text += self.rules.finish()
                if text:
                    self.content += text
                    yield text, self._released_probabilities(text)
                if stop:
                    self.stopped_by_rule = True
                    break
        self.ended = time.perf_counter()
        record_generation(self.app, self.generation.model, self.final_stats())

    def _released_probabilities(self, text: str) -> list[TokenLogprob]:
        """The pending probabilities whose token's text is now all released (bytes count: a token can end
        inside a character)."""
        self._released_bytes += len(text.encode())
        released = []
        while self._pending and self._pending[0][0] <= self._released_bytes:
            released.append(self._pending.popleft()[1])
        self.probabilities += released
        return released

    def final_stats(self) -> GenerationStats:
        """The engine's counts; after a stop by a rule, completed with what was measured here."""
        stats = replace(self.stats) if self.stats is not None else GenerationStats()
        first = self.rules.first_at or self.ended
        if self.stats is None:
            stats.prompt_seconds = first - self.started
        if not self.finished:  # stopped here: the engine's final counts never came
            stats.completion_tokens, stats.generate_seconds = self.predicted, self.ended - first
            stats.done_reason = "length"
        if self.warm_only:
            stats.completion_tokens, stats.generate_seconds = 0, 0.0
        return stats

    def result(self, streamed: bool = False, as_probs: bool = False) -> CompletionResult:
        """The final answer; streamed answers carry no text (nor probabilities) in it."""
        stats = self.final_stats()
        timings = _timings(
            stats.cached_tokens,
            stats.prompt_tokens - stats.cached_tokens,
            stats.prompt_seconds,
            stats.completion_tokens,
            stats.generate_seconds,
        )
        ended_on_its_own = stats.done_reason == "stop" and not (self.warm_only or self.stopped_by_rule)
        return CompletionResult(
            content="" if streamed else self.content,
            model=self.generation.model,
            tokens_predicted=stats.completion_tokens,
            tokens_evaluated=stats.prompt_tokens,
            tokens_cached=stats.cached_tokens,
            has_new_line="\n" in self.content,
            stop_type="eos" if ended_on_its_own else "limit",
            timings=timings,
            completion_probabilities=_probabilities(self.probabilities, as_probs) if not streamed else None,
        )


async def stream_events(
    run: CompletionRun, timings_per_token: bool = False, as_probs: bool = False
) -> AsyncGenerator[dict[str, Any], None]:
    """Server-sent events: one per piece of text, then the final result.

    The prompt's counts go out with every piece, so a client that closes the
    stream early (an editor that has its line) still learns what was evaluated.
    """
    count = 0
    async with aclosing(run.pieces()) as pieces:
        async for text, probabilities in pieces:
            count += 1
            stats = run.stats or GenerationStats()
            partial = CompletionPartial(
                content=text,
                tokens_predicted=count,
                tokens_evaluated=stats.prompt_tokens,
                completion_probabilities=_probabilities(probabilities, as_probs),
            )
            if timings_per_token:
                prompt_n = stats.prompt_tokens - stats.cached_tokens
                partial.timings = _timings(stats.cached_tokens, prompt_n, stats.prompt_seconds, count, 0.0)
            yield partial.model_dump(mode="json", exclude_none=True)
    yield run.result(streamed=True).model_dump(mode="json", exclude_none=True)


# --- convert out --------------------------------------------------------------


def _timings(cached: int, prompt_n: int, prompt_seconds: float, predicted_n: int, predicted_seconds: float) -> Timings:
    prompt_ms, predicted_ms = prompt_seconds * 1000, predicted_seconds * 1000
    return Timings(
        cache_n=cached,
        prompt_n=prompt_n,
        prompt_ms=prompt_ms,
        prompt_per_token_ms=prompt_ms / prompt_n if prompt_n else 0.0,
        prompt_per_second=prompt_n / prompt_seconds if prompt_seconds > 0 else 0.0,
        predicted_n=predicted_n,
        predicted_ms=predicted_ms,
        predicted_per_token_ms=predicted_ms / predicted_n if predicted_n else 0.0,
        predicted_per_second=predicted_n / predicted_seconds if predicted_seconds > 0 else 0.0,
    )


def _probabilities(entries: list[TokenLogprob], as_probs: bool) -> list[TokenProbability] | None:
    """llama-server's `completion_probabilities` for these tokens; None where none were asked for."""
    if not entries:
        return None
    return [_probability(entry, entry.top, as_probs) for entry in entries]


def _probability(entry: TokenLogprob, top: list[TokenLogprob] | None, as_probs: bool) -> TokenProbability:
    alternatives = None if top is None else [_probability(other, None, as_probs) for other in top]
    # As llama-server: a token that ends inside a character shows only its whole characters.
    probability = TokenProbability(
        id=-1 if entry.id is None else entry.id,
        token=entry.data.decode("utf-8", errors="ignore"),
        bytes=list(entry.data),
    )
    if as_probs:
        probability.prob, probability.top_probs = math.exp(entry.logprob), alternatives
    else:
        probability.logprob, probability.top_logprobs = entry.logprob, alternatives
    return probability


def select_fields(data: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """Only the `response_fields` asked for; `a/b` names field `b` of object `a`, as llama-server does."""
    if fields is None:
        return data
    selected: dict[str, Any] = {}
    for path in fields:
        value: Any = data
        for key in path.split("/"):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            selected[path] = value
    return selected


def compact_json(data: dict[str, Any]) -> web.Response:
    """JSON without spaces: llama.vim checks for `"content":"` literally before parsing."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return web.Response(text=text, content_type="application/json")
