"""Upstreams: other OpenAI-compatible servers that requests can be routed to.

`[[upstreams]]` in ingle.toml names servers (another ingle, llama-server,
vLLM, Ollama) and the models each serves. `OpenAIUpstream` is a
GenerationBackend over one of them; `BackendRouter` is a GenerationBackend
over the local engine plus every upstream, sending each request to the least
busy healthy backend that serves the model it names, and never to one that
serves another model.

aiohttp exceptions and the upstream's HTTP statuses are translated into
ingle's typed errors in exactly one place, `OpenAIUpstream._translated` and
`_raise_for_status`, so the router only ever sees ingle errors.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, aclosing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from ..core.backend import GenerationBackend
from ..core.engine import Engine
from ..core.errors import (
    IngleError,
    InsufficientMemory,
    InvalidModelName,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
    SourceError,
)
from ..core.generation import (
    MAX_COMPLETION_LOGPROBS,
    DoneReason,
    EmbeddingResult,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    TokenLogprob,
)
from ..core.json_text import parse_json
from ..core.names import ModelName
from ..core.settings import Settings, UpstreamSettings

log = logging.getLogger("ingle.upstreams")

CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection to an upstream; a dead host must not hold a request for long."""

FIRST_COOLDOWN = 30.0
"""Seconds a failed upstream is skipped after its first failure; doubles with each failure in a row."""

MAX_COOLDOWN = 300.0
"""Longest an unreachable upstream is skipped before it is tried again."""

DONE_REASONS: dict[str, DoneReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "content_filter": "stop",
}


FORWARDED_HEADER = "X-Ingle-Forwarded"
"""Sent with every request ingle passes to an upstream. A daemon answers such a request from its own
store only: two daemons listing each other as upstreams would otherwise hand it back and forth."""

_forwarded_to_us: ContextVar[bool] = ContextVar("forwarded_to_us", default=False)
"""True while this daemon handles a request another ingle forwarded (see `forwarded_requests_stay_local`)."""


@web.middleware
async def forwarded_requests_stay_local(request: web.Request, handler: Any) -> web.StreamResponse:
    """Mark a request that came through another ingle, so the router keeps it on the local engine."""
    if FORWARDED_HEADER not in request.headers:
        return await handler(request)
    token = _forwarded_to_us.set(True)
    try:
        return await handler(request)
    finally:
        _forwarded_to_us.reset(token)


class UpstreamUnavailable(SourceError):
    """An upstream could not be reached or failed; another server may still answer (HTTP 502)."""


# Errors after which the router tries the next server, if it has not yet streamed anything.
RETRYABLE: tuple[type[IngleError], ...] = (QueueFull, UpstreamUnavailable, InsufficientMemory)


class Upstream(GenerationBackend, Protocol):
    """A remote backend the router can use: a GenerationBackend with a name, models and a lifetime."""

    label: str
    models: list[str]

    async def start(self) -> None:
        """Open connections; called once before the first request."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...


def same_model(a: str, b: str) -> bool:
    """Whether two names mean the same model (`coder` and `coder:latest` do)."""
    if a == b:
        return True
    try:
        return ModelName.parse(a) == ModelName.parse(b)
    except InvalidModelName:
        return False


class OpenAIUpstream:
    """A GenerationBackend over a remote OpenAI-compatible server. Use as `async with`."""

    def __init__(self, config: UpstreamSettings, read_timeout: float) -> None:
        self.config = config
        self.label = config.label
        self.models = list(config.models)
        self.base_url = config.url.rstrip("/").removesuffix("/v1")
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OpenAIUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the HTTP session (never on import or in __init__: it needs the running loop)."""
        headers = {"User-Agent": "ingle", FORWARDED_HEADER: "1"}
        if self.config.api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=self._read_timeout)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout)

    async def close(self) -> None:
        """Close the HTTP session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the GenerationBackend contract --------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream a chat or completion from the upstream; the last chunk has `done=True` and the stats."""
        path, body = openai_request(request)
        started = time.perf_counter()
        first_token: float | None = None
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        pieces = 0
        with self._translated():
            async with self._post(path, body) as response:
                await _raise_for_status(response, self.label, request.model)
                finished = False
                try:
                    async for event in _server_sent_events(response):
                        if "error" in event:
                            raise UpstreamUnavailable(f"{self.label} failed mid-answer: {_error_text(event)}")
                        usage = event.get("usage") or usage
                        for choice in event.get("choices") or []:
                            text = _choice_text(choice)
                            logprobs = _choice_logprobs(choice)
                            finish_reason = choice.get("finish_reason") or finish_reason
                            if text:
                                pieces += 1
                                first_token = first_token or time.perf_counter()
                            if text or logprobs:
                                yield GenerationChunk(text=text, logprobs=logprobs)
                    if finish_reason is None:
                        raise UpstreamUnavailable(f"{self.label} ended its answer without a finish reason.")
                    finished = True
                finally:
                    # An early close must drop the connection, not drain the rest of the answer.
                    if not finished:
                        response.close()
        yield GenerationChunk(text="", done=True, stats=_stats(started, first_token, finish_reason, usage, pieces))

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Embed each input on the upstream; vectors are L2-normalised like the engine's."""
        with self._translated():
            async with self._post("/v1/embeddings", {"model": model, "input": inputs}) as response:
                await _raise_for_status(response, self.label, model)
                try:
                    body = await response.json(content_type=None)
                except ValueError as error:
                    raise UpstreamUnavailable(
                        f"{self.label} answered /v1/embeddings with something not JSON."
                    ) from error
        try:
            rows = sorted(body["data"], key=lambda row: row.get("index", 0))
            vectors = [_normalised(row["embedding"]) for row in rows]
        except (KeyError, TypeError) as error:
            raise UpstreamUnavailable(f"{self.label} answered /v1/embeddings without embeddings.") from error
        tokens = (body.get("usage") or {}).get("prompt_tokens", 0)
        return EmbeddingResult(model=model, embeddings=vectors, prompt_tokens=tokens)

    # --- the one place that calls aiohttp --------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        if self._session is None:
            raise RuntimeError("OpenAIUpstream.start() was not called")
        return self._session.post(self.base_url + path, json=body)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn aiohttp's and the socket's exceptions into UpstreamUnavailable."""
        try:
            yield
        except aiohttp.ClientError as error:
            raise UpstreamUnavailable(f"{self.label} is unreachable: {type(error).__name__}: {error}.") from error
        except TimeoutError as error:
            raise UpstreamUnavailable(f"{self.label} did not answer within {self._read_timeout:.0f} s.") from error
        except json.JSONDecodeError as error:
            raise UpstreamUnavailable(f"{self.label} sent an event that is not JSON.") from error


def openai_request(request: GenerationRequest) -> tuple[str, dict[str, Any]]:
    """The OpenAI path and body for a request: raw prompts and FIM to /v1/completions, the rest to chat.

    Besides the standard OpenAI fields it sends llama.cpp's `top_k`, `min_p`
    and `repeat_penalty`, which ingle's and llama-server's /v1 routes accept
    (and vLLM and Ollama ignore), so a routed request samples as a local one
    would. `keep_alive` and FIM extra context have no field there and are left out.
    """
    options = request.options
    body: dict[str, Any] = {
        "model": request.model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "repeat_penalty": options.repeat_penalty,
    }
    if options.max_tokens is not None:
        body["max_tokens"] = options.max_tokens
    if options.stop:
        body["stop"] = list(options.stop)
    if options.seed is not None:
        body["seed"] = options.seed
    if options.presence_penalty:
        body["presence_penalty"] = options.presence_penalty
    if options.frequency_penalty:
        body["frequency_penalty"] = options.frequency_penalty
    if request.prompt is not None and (request.raw or request.suffix is not None):
        body["prompt"] = request.prompt
        if request.suffix is not None:
            body["suffix"] = request.suffix
        if options.logprobs is not None:
            body["logprobs"] = min(options.logprobs, MAX_COMPLETION_LOGPROBS)
        return "/v1/completions", body
    if options.logprobs is not None:
        body.update(logprobs=True, top_logprobs=options.logprobs)
    messages: list[dict[str, Any]] = []
    for message in request.messages or []:
        wire: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            wire["tool_calls"] = message.tool_calls
        if message.name:
            wire["name"] = message.name
        messages.append(wire)
    if request.prompt is not None:
        messages.append({"role": "user", "content": request.prompt})
    if request.system is not None:
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": request.system})
    body["messages"] = messages
    if request.tools:
        body["tools"] = request.tools
    if request.format == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(request.format, dict):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": request.format}}
    return "/v1/chat/completions", body


async def _raise_for_status(response: aiohttp.ClientResponse, label: str, model: str) -> None:
    """Map an upstream's error status to an ingle error (after reading its message)."""
    if response.status < 400:
        return
    try:
        detail = _error_text(await response.json(content_type=None))
    except (ValueError, aiohttp.ClientError):
        detail = response.reason or "no details"
    status = response.status
    if status in (429, 503):
        raise QueueFull(f"{label} is busy: {detail}", retry_after=_retry_after(response))
    if status == 404:
        raise ModelNotFound(f"{label} does not have the model '{model}': {detail}")
    if status in (400, 413, 422):
        raise InvalidRequest(f"{label} refused the request: {detail}")
    if status in (401, 403):
        raise UpstreamUnavailable(
            f"{label} refused ingle's credentials (HTTP {status}): check its api_key in ingle.toml."
        )
    raise UpstreamUnavailable(f"{label} failed with HTTP {status}: {detail}")


def _retry_after(response: aiohttp.ClientResponse) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:  # an HTTP date; not worth parsing
        return 1.0


def _error_text(body: Any) -> str:
    """The message of an error body: OpenAI's `{"error": {"message"}}` or Ollama's `{"error": "…"}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error).rstrip(".") + "." if error else "no details."


async def _server_sent_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON payload of each `data:` line, until `data: [DONE]` or the end of the body."""
    async for line in response.content:
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        event = parse_json(data)
        if isinstance(event, dict):
            yield event


def _choice_text(choice: dict[str, Any]) -> str:
    """The text of one streamed choice: chat's `delta.content` or completions' `text`."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta.get("content") or ""
    return choice.get("text") or ""


def _choice_logprobs(choice: dict[str, Any]) -> list[TokenLogprob]:
    """The tokens' log-probabilities of one streamed choice, in chat's shape or legacy completions'; none
    when the upstream sent none or sent them malformed (the answer matters more than its figures)."""
    wire = choice.get("logprobs")
    try:
        if not isinstance(wire, dict):
            return []
        if wire.get("content") is not None:  # chat: one object per token, each with its alternatives
            return [
                _token_logprob(entry, [_token_logprob(alt, []) for alt in entry["top_logprobs"] or []])
                for entry in wire["content"]
            ]
        tops = wire.get("top_logprobs") or [{} for _ in wire["tokens"]]
        return [
            TokenLogprob(
                token,
                float(logprob),
                token.encode(),
                [
                    TokenLogprob(alt, float(alt_logprob), alt.encode())
                    for alt, alt_logprob in sorted(top.items(), key=lambda item: -item[1])
                ],
            )
            for token, logprob, top in zip(wire["tokens"], wire["token_logprobs"], tops, strict=True)
        ]
    except (KeyError, TypeError, ValueError, AttributeError):
        return []


def _token_logprob(entry: dict[str, Any], top: list[TokenLogprob]) -> TokenLogprob:
    token = str(entry["token"])
    data = bytes(entry["bytes"]) if entry.get("bytes") is not None else token.encode()
    return TokenLogprob(token, float(entry["logprob"]), data, top)


def _stats(
    started: float, first_token: float | None, finish_reason: str | None, usage: dict[str, Any] | None, pieces: int
) -> GenerationStats:
    ended = time.perf_counter()
    first = first_token or ended
    usage = usage or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return GenerationStats(
        prompt_tokens=usage.get("prompt_tokens", 0),
        cached_tokens=cached,
        completion_tokens=usage.get("completion_tokens", pieces),
        done_reason=DONE_REASONS.get(finish_reason or "stop", "stop"),
        prompt_seconds=first - started,
        generate_seconds=ended - first,
        total_seconds=ended - started,
    )


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else list(vector)


# --- the router ------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteModel:
    """A model only an upstream serves, as /api/tags and /v1/models list it."""

    name: str
    upstream: str
    """The upstream's label (its `name`, else its URL)."""


@dataclass
class UpstreamState:
    """What the router knows about one upstream: load and health."""

    upstream: Upstream
    in_flight: int = 0
    """Requests this router has sent there that have not finished."""
    failures: int = 0
    """Failures in a row; each doubles the cooldown."""
    cooling_until: float = 0.0
    """Monotonic time before which the upstream is skipped."""
    last_error: IngleError | None = None


@dataclass
class Candidate:
    """One backend that serves the requested model, under the name it knows the model by."""

    backend: GenerationBackend
    model: str
    busy: int
    state: UpstreamState | None
    """None for the local engine."""

    @property
    def label(self) -> str:
        return "local" if self.state is None else self.state.upstream.label


class BackendRouter:
    """Routes each request to the least busy healthy backend serving its model. Use as `async with`.

    Candidates are the local engine (when the model is in its store; busy =
    its requests in flight on that model) and every upstream listing the
    model (busy = this router's requests in flight there). If a candidate is
    busy or unreachable before it produced anything, the next one is tried;
    an unreachable upstream is skipped for a cooldown that doubles with each
    failure in a row (30 s up to 5 min) and resets on success; a busy one for
    its Retry-After. A model nothing serves is ModelNotFound: never another model.
    """

    def __init__(
        self,
        engine: Engine,
        upstreams: Sequence[Upstream],
        *,
        cooldown: float = FIRST_COOLDOWN,
        max_cooldown: float = MAX_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.upstreams = [UpstreamState(upstream) for upstream in upstreams]
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._resources = AsyncExitStack()

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings) -> BackendRouter:
        """A router over the engine and every `[[upstreams]]` table of the settings."""
        upstreams = [OpenAIUpstream(config, read_timeout=settings.request_timeout) for config in settings.upstreams]
        return cls(engine, upstreams)

    async def __aenter__(self) -> BackendRouter:
        await self._resources.__aenter__()
        for state in self.upstreams:
            await state.upstream.start()
            self._resources.push_async_callback(state.upstream.close)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._resources.aclose()

    def remote_models(self) -> list[RemoteModel]:
        """Every model an upstream serves and the local store lacks, once, for model listings."""
        found: list[RemoteModel] = []
        for state in self.upstreams:
            for model in state.upstream.models:
                if any(same_model(model, known.name) for known in found) or self._stored(model):
                    continue
                found.append(RemoteModel(model, state.upstream.label))
        return found

    def _stored(self, model: str) -> bool:
        try:
            self.engine.show(model)
        except (ModelNotFound, InvalidModelName):
            return False
        return True

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream from the first candidate that starts answering; see the class docstring for the order."""
        failures: list[IngleError] = []
        for candidate in self._candidates(request.model):
            stream = candidate.backend.generate(replace(request, model=candidate.model))
            with self._in_flight(candidate):
                async with aclosing(stream):
                    try:
                        first = await anext(stream)
                    except StopAsyncIteration:
                        self._succeeded(candidate)
                        return
                    except (*RETRYABLE, ModelNotFound) as error:
                        self._failed(candidate, error)
                        failures.append(error)
                        continue
                    self._succeeded(candidate)
                    yield first
                    async for chunk in stream:
                        yield chunk
                    return
        raise self._final_error(request.model, failures)

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Embed on the first candidate that answers."""
        failures: list[IngleError] = []
        for candidate in self._candidates(model):
            with self._in_flight(candidate):
                try:
                    result = await candidate.backend.embed(candidate.model, inputs, keep_alive, truncate)
                except (*RETRYABLE, ModelNotFound) as error:
                    self._failed(candidate, error)
                    failures.append(error)
                    continue
            self._succeeded(candidate)
            return replace(result, model=model)
        raise self._final_error(model, failures)

    # --- choosing ----------------------------------------------------------------------

    def _candidates(self, model: str) -> list[Candidate]:
        """Backends serving `model` that are not cooling down, least busy first (local first on ties)."""
        found: list[Candidate] = []
        invalid_name: InvalidModelName | None = None
        try:
            local = self.engine.show(model)
        except ModelNotFound:
            pass
        except InvalidModelName as error:  # may still be a name an upstream uses, like `org/model`
            invalid_name = error
        else:
            busy = sum(running.active_requests for running in self.engine.running() if running.digest == local.digest)
            found.append(Candidate(self.engine, model, busy, None))
        now = self._clock()
        cooling: list[UpstreamState] = []
        for state in [] if _forwarded_to_us.get() else self.upstreams:
            served = next((name for name in state.upstream.models if same_model(name, model)), None)
            if served is None:
                continue
            if state.cooling_until > now:
                cooling.append(state)
                continue
            found.append(Candidate(state.upstream, served, state.in_flight, state))
        if found:
            return sorted(found, key=lambda candidate: candidate.busy)
        if cooling:
            raise self._cooling_error(model, cooling, now)
        if invalid_name is not None:
            raise invalid_name
        raise ModelNotFound(
            f"No model named '{model}' is in the local store or served by a configured upstream: "
            "pull it first, or list it under an [[upstreams]] table in ingle.toml."
        )

    @contextmanager
    def _in_flight(self, candidate: Candidate) -> Iterator[None]:
        if candidate.state is not None:
            candidate.state.in_flight += 1
        try:
            yield
        finally:
            if candidate.state is not None:
                candidate.state.in_flight -= 1

    def _succeeded(self, candidate: Candidate) -> None:
        state = candidate.state
        if state is not None:
            state.failures = 0
            state.cooling_until = 0.0
            state.last_error = None

    def _failed(self, candidate: Candidate, error: IngleError) -> None:
        """Put a failed upstream in cooldown; the local engine is never skipped."""
        log.info("%s could not take a request for %s: %s", candidate.label, candidate.model, error)
        state = candidate.state
        if state is None or isinstance(error, ModelNotFound):
            return
        state.last_error = error
        if isinstance(error, QueueFull):  # alive but busy: back off only as long as it asked
            state.cooling_until = self._clock() + min(error.retry_after, self.cooldown)
            return
        state.failures += 1
        pause = min(self.cooldown * 2 ** (state.failures - 1), self.max_cooldown)
        state.cooling_until = self._clock() + pause
        log.warning("upstream %s failed (%s); skipping it for %.0f s", state.upstream.label, error, pause)

    @staticmethod
    def _final_error(model: str, failures: list[IngleError]) -> IngleError:
        """The error that tells the client most: busy (retry soon) over unreachable over not found."""
        busy = [error for error in failures if isinstance(error, QueueFull)]
        if busy:
            retry = min(error.retry_after for error in busy)
            return QueueFull(f"Every server with the model '{model}' is busy; try again shortly.", retry_after=retry)
        unavailable = [error for error in failures if not isinstance(error, ModelNotFound)]
        return (unavailable or failures)[-1]

    @staticmethod
    def _cooling_error(model: str, cooling: list[UpstreamState], now: float) -> IngleError:
        wait = max(1.0, min(state.cooling_until for state in cooling) - now)
        if all(isinstance(state.last_error, QueueFull) for state in cooling):
            return QueueFull(f"Every server with the model '{model}' is busy; try again shortly.", retry_after=wait)
        names = ", ".join(state.upstream.label for state in cooling)
        return UpstreamUnavailable(
            f"Every server with the model '{model}' failed recently ({names}); the next try is in {wait:.0f} s."
        )
