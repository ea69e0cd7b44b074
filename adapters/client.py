"""`IngleClient`: the daemon's Ollama-compatible API seen as an engine (see adapters/engine_api.py).

The CLI, the language server and the bots use it interchangeably with an
in-process engine. It speaks HTTP over TCP (`http://host:port`) or the
daemon's unix socket. Every aiohttp call goes through `_call`, which is the
one place aiohttp exceptions and HTTP error statuses become ingle's typed
errors; streamed bodies are read through `_lines`, under the same
translation.

Fill-in-the-middle with extra context has no Ollama field, so such requests
go to the llama-server-compatible `/infill` route instead of `/api/generate`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from ..core import errors
from ..core.engine import RunningModel
from ..core.generation import (
    EmbeddingResult,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    SamplingOptions,
)
from ..core.manifest import GgufInfo, Manifest
from ..core.names import ModelName
from ..core.settings import Settings
from ..core.sources import ProgressCallback, PullProgress, parse_source

NANOSECONDS = 1e9
# How long connecting may take; generations themselves may legitimately run for minutes.
CONNECT_TIMEOUT = 10.0


class DaemonUnavailable(errors.IngleError):
    """No ingle daemon answers at the address, or it went away mid-request."""


class AccessDenied(errors.IngleError):
    """The daemon refused the request: a missing or wrong API key, or a Host it does not accept."""


# The machine-readable `code` of an error body (see adapters/http/errors.py), for errors the status alone does
# not tell apart: a prompt too long for the context is a 400 like any malformed request.
_ERROR_FOR_CODE: dict[str, type[errors.IngleError]] = {"context_length_exceeded": errors.ContextOverflow}


def _error_for_status(status: int, message: str, retry_after: float | None, code: Any = None) -> errors.IngleError:
    """The typed error for an HTTP error status and body `code` (the inverse of adapters/http/errors.py)."""
    if isinstance(code, str) and code in _ERROR_FOR_CODE:
        return _ERROR_FOR_CODE[code](message)
    if status == 400 or status == 413:
        return errors.InvalidRequest(message)
    if status in (401, 403):
        return AccessDenied(message)
    if status == 404:
        return errors.ModelNotFound(message)
    if status == 422:
        return errors.CorruptModel(message)
    if status == 502:
        return errors.SourceError(message)
    if status == 503:
        # Both a full queue and a model that does not fit are 503; only the queue says when to retry.
        if retry_after is not None:
            return errors.QueueFull(message, retry_after=retry_after)
        return errors.InsufficientMemory(message)
    if status == 504:
        return errors.ModelLoadTimeout(message)
    if status == 507:
        return errors.StorageFull(message)
    return errors.IngleError(message)


class IngleClient:
    """An async client of a running ingle daemon with the engine's methods. Use as `async with`.

    `url` is `http://host:port`; `socket_path`, when given, is used instead of
    TCP (the URL then only names the daemon in messages). `api_key` goes with
    every request; `management_key`, when given, instead with the requests that
    manage models (pull, remove, copy), which need it over TCP.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:11435",
        *,
        socket_path: str | Path | None = None,
        api_key: str | None = None,
        management_key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._management_headers = {"Authorization": f"Bearer {management_key}"} if management_key else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def daemon_url(self) -> str:
        """Where the daemon is: `unix:<path>` or the HTTP URL."""
        return f"unix:{self.socket_path}" if self.socket_path is not None else self.url

    async def __aenter__(self) -> IngleClient:
        # Entering an open client again (connect_daemon hands out open clients) must not orphan its
        # session: an unclosed one makes aiohttp log "Unclosed client session" on stderr at exit.
        if self._session is not None:
            return self
        connector = aiohttp.UnixConnector(path=str(self.socket_path)) if self.socket_path is not None else None
        # Over the socket the host part is a placeholder; it is a loopback name, so the Host check passes.
        base_url = "http://localhost" if self.socket_path is not None else self.url
        self._session = aiohttp.ClientSession(
            base_url=base_url,
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the one place that calls aiohttp ---------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn aiohttp's and the socket's exceptions into DaemonUnavailable, with a sentence."""
        try:
            yield
        except aiohttp.ClientConnectorError as error:
            raise DaemonUnavailable(
                f"No ingle daemon answers at {self.daemon_url}: start one with `ingle serve`, "
                "or run the command with --embedded."
            ) from error
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise DaemonUnavailable(
                f"The ingle daemon at {self.daemon_url} stopped answering ({type(error).__name__}); "
                "check that it is still running."
            ) from error

    @asynccontextmanager
    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        manage: bool = False,
        answered: tuple[int, ...] = (),
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request and yield the successful response; error statuses raise typed errors.

        `manage` marks a request that manages models: it carries the management key, if any.
        `answered` lists error statuses whose body is the route's answer (a 422 that says what failed).
        """
        if self._session is None:
            raise RuntimeError("use IngleClient as `async with IngleClient(...) as client`")
        options: dict[str, Any] = {"json": body} if body is not None else {}
        if manage and self._management_headers:
            options["headers"] = self._management_headers
        if timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        with self._translated():
            async with self._session.request(method, path, **options) as response:
                if response.status >= 400 and response.status not in answered:
                    raise await self._error_from(response)
                yield response

    async def _error_from(self, response: aiohttp.ClientResponse) -> errors.IngleError:
        text = await response.text()
        code = None
        try:
            payload = json.loads(text)
            message = payload["error"]
            code = payload.get("code")
            if isinstance(message, dict):  # the OpenAI shape, from /v1 routes
                message, code = message.get("message", ""), message.get("code")
        except (ValueError, KeyError, TypeError):
            message = text.strip() or f"the daemon answered HTTP {response.status}"
        retry_after = response.headers.get("Retry-After")
        try:
            retry = float(retry_after) if retry_after is not None else None
        except ValueError:
            retry = None
        return _error_for_status(response.status, str(message), retry, code)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.request_json(method, path, body)

    async def request_json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        manage: bool = False,
        answered: tuple[int, ...] = (),
    ) -> Any:
        """Any route's decoded JSON answer (None if empty), for callers with their own wire models (`ingle kb`)."""
        async with self._call(method, path, body, manage=manage, answered=answered) as response:
            with self._translated():
                text = await response.text()
        return json.loads(text) if text.strip() else None

    async def _lines(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        """The objects of an NDJSON or SSE body, in order; an `error` item raises it."""
        while True:
            with self._translated():
                line = await response.content.readline()
            if not line:
                return
            text = line.decode().strip()
            if text.startswith("data:"):
                text = text[len("data:") :].strip()
            if not text or text == "[DONE]":
                continue
            item = json.loads(text)
            if isinstance(item, dict) and "error" in item:
                # After the start a failure arrives as the stream's last item, in the route's error shape.
                error = item["error"]
                detail = error if isinstance(error, dict) else item
                message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
                kind = _ERROR_FOR_CODE.get(str(detail.get("code")), errors.IngleError)
                raise kind(message)
            yield item

    # --- reachability -----------------------------------------------------------

    async def version(self, timeout: float | None = None) -> str:
        """The daemon's version; DaemonUnavailable if none answers within `timeout` seconds."""
        async with self._call("GET", "/api/version", timeout=timeout) as response:
            with self._translated():
                payload = await response.json(content_type=None)
        return str(payload.get("version", ""))

    # --- the store ----------------------------------------------------------------

    async def pull(
        self, spec: str, name: str | None = None, sha256: str | None = None, progress: ProgressCallback | None = None
    ) -> Manifest:
        """Have the daemon pull SPEC, streaming its progress into `progress`; return the manifest.

        `name` and `sha256` travel in ingle's extension fields of /api/pull (`store_as`, `sha256`).
        """
        spec = self._spec_for_daemon(spec)
        body: dict[str, Any] = {"model": spec, "stream": True}
        if name is not None:
            body["store_as"] = name
        if sha256 is not None:
            body["sha256"] = sha256
        async with self._call("POST", "/api/pull", body, manage=True) as response:
            async for item in self._lines(response):
                if progress is not None:
                    progress(
                        PullProgress(
                            status=str(item.get("status", "")),
                            completed=int(item.get("completed") or 0),
                            total=item.get("total"),
                            digest=_digest(item["digest"]) if item.get("digest") else None,
                        )
                    )
        return await self.show(name or _pulled_name(spec))

    def _spec_for_daemon(self, spec: str) -> str:
        """A local path made absolute, since the daemon has its own working directory."""
        spec = spec.strip()
        if spec.startswith(("hf:", "http://", "https://", "pypi:", "file://")):
            return spec
        path = Path(spec.removeprefix("file:")).expanduser()
        return f"file:{path.resolve()}" if path.exists() else spec

    async def list_models(self) -> list[Manifest]:
        """Every model in the daemon's store."""
        return [_manifest_from_tag(entry) for entry in await self._tags()]

    async def show(self, name: str) -> Manifest:
        """One model's manifest; ModelNotFound if the daemon's store lacks it."""
        details = await self._json("POST", "/api/show", {"model": name})
        # Ollama's /api/show carries neither the name, nor the digest, nor the size; /api/tags has them.
        canonical = str(ModelName.parse(name))
        entry = next(
            (item for item in await self._tags() if _same_name(item.get("name", ""), canonical)), {"name": canonical}
        )
        return _manifest_from_show(details, entry)

    async def _tags(self) -> list[dict[str, Any]]:
        """/api/tags' entries for the daemon's store (not the models it lists for its upstreams)."""
        return [
            entry for entry in (await self._json("GET", "/api/tags")).get("models", []) if not entry.get("remote_host")
        ]

    async def remove(self, name: str) -> None:
        """Delete a model's name in the daemon's store."""
        async with self._call("DELETE", "/api/delete", {"model": name}, manage=True):
            pass

    async def copy(self, source: str, destination: str) -> Manifest:
        """Give a model a second name in the daemon's store."""
        async with self._call("POST", "/api/copy", {"source": source, "destination": destination}, manage=True):
            pass
        return await self.show(destination)

    # --- loading --------------------------------------------------------------------

    async def running(self) -> list[RunningModel]:
        """The models the daemon has in memory."""
        payload = await self._json("GET", "/api/ps")
        # /api/ps reports memory as `size`; the file's size is in /api/tags.
        file_sizes = {_digest(item.get("digest", "")): int(item.get("size") or 0) for item in await self._tags()}
        return [_running_from_ps(entry, file_sizes) for entry in payload.get("models", [])]

    async def load(self, model: str, keep_alive: float | None = None) -> RunningModel:
        """Load a model in the daemon (an empty /api/generate, as Ollama does)."""
        body: dict[str, Any] = {"model": model, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        await self._json("POST", "/api/generate", body)
        canonical = (await self.show(model)).name
        for running in await self.running():
            if _same_name(running.name, canonical):
                return running
        raise errors.IngleError(f"The daemon loaded {model} but does not list it as running.")

    async def unload(self, model: str) -> None:
        """Unload a model in the daemon now (keep_alive 0, as Ollama does)."""
        await self._json("POST", "/api/generate", {"model": model, "keep_alive": 0, "stream": False})

    # --- generation -------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Stream a generation from the daemon; closing the iterator closes the HTTP response,
        which cancels the generation there and frees its sequence."""
        if request.suffix is not None:
            path, body, read = "/infill", _infill_body(request), _chunk_from_infill
        elif request.raw and (request.extra_context or request.filename):
            path, body, read = "/completion", _file_completion_body(request), _chunk_from_infill
        elif request.messages is not None:
            path, body, read = "/api/chat", _chat_body(request), _chunk_from_ollama
        else:
            path, body, read = "/api/generate", _generate_body(request), _chunk_from_ollama
        async with self._call("POST", path, body) as response:
            finished = False
            try:
                async for item in self._lines(response):
                    chunk = read(item)
                    finished = chunk.done
                    yield chunk
                    if finished:
                        return
            finally:
                if not finished:
                    response.close()  # drop the connection: the daemon cancels the generation

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Embed each input with the daemon's model."""
        body: dict[str, Any] = {"model": model, "input": inputs, "truncate": truncate}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        payload = await self._json("POST", "/api/embed", body)
        return EmbeddingResult(
            model=payload.get("model", model),
            embeddings=payload["embeddings"],
            prompt_tokens=int(payload.get("prompt_eval_count") or 0),
        )


# --- requests out ---------------------------------------------------------------------


def _sampling_fields(options: SamplingOptions, max_tokens_field: str) -> dict[str, Any]:
    """Sampling options under the names Ollama's options and llama-server share; only the token limit differs."""
    values: dict[str, Any] = {
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p,
        "min_p": options.min_p,
        "repeat_penalty": options.repeat_penalty,
        "repeat_last_n": options.repeat_last_n,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
    }
    if options.seed is not None:
        values["seed"] = options.seed
    if options.max_tokens is not None:
        values[max_tokens_field] = options.max_tokens
    if options.stop:
        values["stop"] = list(options.stop)
    return values


def _common(request: GenerationRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "stream": True,
        "options": _sampling_fields(request.options, "num_predict"),
    }
    if request.format is not None:
        body["format"] = request.format
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    return body


def _generate_body(request: GenerationRequest) -> dict[str, Any]:
    body = _common(request)
    body["prompt"] = request.prompt or ""
    if request.suffix is not None:
        body["suffix"] = request.suffix
    if request.system is not None:
        body["system"] = request.system
    if request.raw:
        body["raw"] = True
    return body


def _chat_body(request: GenerationRequest) -> dict[str, Any]:
    body = _common(request)
    messages = []
    for message in request.messages or []:
        wire = {key: value for key, value in asdict(message).items() if value is not None}
        if "name" in wire:
            wire["tool_name"] = wire.pop("name")  # Ollama's name for the tool a result comes from
        messages.append(wire)
    if request.system is not None:
        # Ollama's chat has no system field: the system prompt is the first message.
        messages = [{"role": "system", "content": request.system}] + [m for m in messages if m["role"] != "system"]
    body["messages"] = messages
    if request.tools is not None:
        body["tools"] = request.tools
    return body


def _infill_body(request: GenerationRequest) -> dict[str, Any]:
    return {"input_prefix": request.prompt or "", "input_suffix": request.suffix or "", **_code_body(request)}


def _file_completion_body(request: GenerationRequest) -> dict[str, Any]:
    """A raw prompt continuing a file, with other files ahead: /completion with ingle's `input_extra`."""
    return {"prompt": request.prompt or "", **_code_body(request)}


def _code_body(request: GenerationRequest) -> dict[str, Any]:
    """What /infill and /completion share: the other files, the file's name, streaming and sampling."""
    return {
        "model": request.model,
        "input_extra": [{"filename": chunk.filename, "text": chunk.text} for chunk in request.extra_context],
        "filename": request.filename or "",
        "stream": True,
        # The prompt's counts with every piece: a stream closed early never gets the last one.
        "timings_per_token": True,
        **_sampling_fields(request.options, "n_predict"),
    }


# --- answers in -------------------------------------------------------------------------


def _chunk_from_ollama(item: dict[str, Any]) -> GenerationChunk:
    """A chunk of /api/generate (`response`) or /api/chat (`message.content`)."""
    text = item.get("response")
    if text is None:
        text = (item.get("message") or {}).get("content", "")
    if not item.get("done"):
        return GenerationChunk(text)

    def seconds(key: str) -> float:
        return float(item.get(key) or 0) / NANOSECONDS

    stats = GenerationStats(
        prompt_tokens=int(item.get("prompt_eval_count") or 0),
        cached_tokens=int(item.get("prompt_cache_count") or 0),
        completion_tokens=int(item.get("eval_count") or 0),
        done_reason=item.get("done_reason") or "stop",
        load_seconds=seconds("load_duration"),
        prompt_seconds=seconds("prompt_eval_duration"),
        generate_seconds=seconds("eval_duration"),
        total_seconds=seconds("total_duration"),
    )
    return GenerationChunk(text, done=True, stats=stats)


def _chunk_from_infill(item: dict[str, Any]) -> GenerationChunk:
    """A chunk of llama-server's /infill stream (`content`, `stop`, `timings`)."""
    text = item.get("content", "")
    timings = item.get("timings") or {}
    if not item.get("stop"):
        if not timings:
            return GenerationChunk(text)
        snapshot = GenerationStats(
            prompt_tokens=int(timings.get("prompt_n") or 0) + int(timings.get("cache_n") or 0),
            cached_tokens=int(timings.get("cache_n") or 0),
            prompt_seconds=float(timings.get("prompt_ms") or 0) / 1000,
        )
        return GenerationChunk(text, stats=snapshot)
    stop_type = item.get("stop_type")
    stats = GenerationStats(
        prompt_tokens=int(item.get("tokens_evaluated") or timings.get("prompt_n") or 0),
        cached_tokens=int(item.get("tokens_cached") or timings.get("cache_n") or 0),
        completion_tokens=int(item.get("tokens_predicted") or timings.get("predicted_n") or 0),
        done_reason="length" if stop_type == "limit" else "stop",
        prompt_seconds=float(timings.get("prompt_ms") or 0) / 1000,
        generate_seconds=float(timings.get("predicted_ms") or 0) / 1000,
    )
    stats.total_seconds = stats.prompt_seconds + stats.generate_seconds
    return GenerationChunk(text, done=True, stats=stats)


def _digest(text: str) -> str:
    """ingle's digest form, `sha256-<hex>`, from Ollama's `sha256:<hex>` or a bare hex string."""
    hexdigest = text.removeprefix("sha256:").removeprefix("sha256-")
    return f"sha256-{hexdigest}"


def _same_name(a: str, b: str) -> bool:
    """Names equal once both are canonical (`Model` means `model:latest`)."""
    try:
        return ModelName.parse(a) == ModelName.parse(b)
    except errors.InvalidRequest:
        return False


def _pulled_name(spec: str) -> str:
    """The name a pull of SPEC stores the model under: the spec itself if it names a model, else the
    source's default name, which depends on the spec alone (the settings only matter for fetching)."""
    try:
        return str(parse_source(spec, Settings.model_construct()).default_name())
    except errors.SourceError:
        return spec


def _parse_parameters(parameters: Any) -> dict[str, Any]:
    """Ollama's `parameters` text (`key value` lines; `stop` repeats) as a dict."""
    if isinstance(parameters, dict):
        return parameters
    result: dict[str, Any] = {}
    for line in str(parameters or "").splitlines():
        key, _, raw = line.strip().partition(" ")
        if not key:
            continue
        try:
            value = json.loads(raw.strip())
        except ValueError:
            value = raw.strip()
        if key == "stop":
            result.setdefault("stop", []).append(value)
        else:
            result[key] = value
    return result


def _gguf_from(details: dict[str, Any], model_info: dict[str, Any], extra: dict[str, Any]) -> GgufInfo:
    architecture = model_info.get("general.architecture") or details.get("family") or "unknown"

    def fact(key: str) -> Any:
        return model_info.get(f"{architecture}.{key}")

    return GgufInfo(
        architecture=architecture,
        name=model_info.get("general.name"),
        parameter_count=model_info.get("general.parameter_count"),
        quantization=details.get("quantization_level") or None,
        context_length=fact("context_length"),
        embedding_length=fact("embedding_length"),
        block_count=fact("block_count"),
        head_count=fact("attention.head_count"),
        head_count_kv=fact("attention.head_count_kv"),
        key_length=fact("attention.key_length"),
        value_length=fact("attention.value_length"),
        chat_template=extra.get("template"),
        license=extra.get("license") or None,
        supports_fim="insert" in (extra.get("capabilities") or []),
    )


def _source_of(modelfile: str) -> str:
    """The source on the Modelfile's FROM line (ingle writes the pull spec there)."""
    for line in modelfile.splitlines():
        if line.startswith("FROM "):
            return line[len("FROM ") :].strip()
    return ""


def _manifest_from_show(show: dict[str, Any], entry: dict[str, Any]) -> Manifest:
    details = show.get("details") or entry.get("details") or {}
    return Manifest(
        name=entry["name"],
        digest=_digest(entry["digest"]) if entry.get("digest") else "",
        size=int(entry.get("size") or 0),
        source=_source_of(show.get("modelfile") or ""),
        created_at=show.get("modified_at") or entry.get("modified_at") or "",
        gguf=_gguf_from(details, show.get("model_info") or {}, show),
        parameters=_parse_parameters(show.get("parameters")),
        template=None,  # /api/show gives the template in use; it lands in gguf.chat_template
        system=show.get("system") or None,
    )


def _manifest_from_tag(entry: dict[str, Any]) -> Manifest:
    details = entry.get("details") or {}
    return Manifest(
        name=entry.get("name") or entry.get("model", ""),
        digest=_digest(entry.get("digest", "")),
        size=int(entry.get("size") or 0),
        source=entry.get("source") or "",
        created_at=entry.get("modified_at", ""),
        gguf=GgufInfo(
            architecture=details.get("family") or "unknown",
            quantization=details.get("quantization_level") or None,
        ),
    )


def _timestamp(text: Any) -> float | None:
    if not text:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    # Ollama writes a date centuries away for "stays loaded"; ingle says None.
    return None if moment.year >= 2200 else moment.timestamp()


def _running_from_ps(entry: dict[str, Any], file_sizes: dict[str, int]) -> RunningModel:
    digest = _digest(entry.get("digest", ""))
    return RunningModel(
        name=entry.get("name") or entry.get("model", ""),
        digest=digest,
        size=file_sizes.get(digest, 0),
        memory=int(entry.get("size") or 0),
        context_length=int(entry.get("context_length") or 0),
        parallel=int(entry.get("parallel") or 1),
        expires_at=_timestamp(entry.get("expires_at")),
        active_requests=int(entry.get("active_requests") or 0),
    )
