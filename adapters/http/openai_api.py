"""The OpenAI-compatible API under /v1: chat, completions (with FIM), embeddings, models.

Each handler converts the wire request into a core GenerationRequest, calls
the backend, and converts the chunks back out. Errors are ingle's typed
errors; the middleware answers them in OpenAI's error shape on /v1 paths.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from ...core.errors import ModelNotFound
from ...core.generation import ChatMessage, GenerationRequest, GenerationStats, SamplingOptions, TokenLogprob
from ...core.json_text import parse_json
from ...core.manifest import Manifest
from ...core.tool_calls import AssistantPiece
from ..upstreams import same_model
from .common_wire import ModelPath
from .errors import BadRequestBody, read_body, read_path
from .generating import (
    answer_pieces,
    chosen_tools,
    generate,
    generate_all,
    logprob_fields,
    output_parser,
    whole_answer,
)
from .keys import BACKEND, ENGINE, ROUTER
from .openai_wire import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatMessageIn,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    FunctionCallOut,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    TokenLogprobOut,
    ToolCallDelta,
    ToolCallOut,
    Usage,
)
from .openapi import documented
from .sampling import sampling_options
from .streaming import json_off_the_loop, server_sent_events

TAGS = ("openai",)


# --- handlers -----------------------------------------------------------------


@documented(
    "Chat completion (OpenAI).",
    request=ChatCompletionRequest,
    response=ChatCompletion,
    stream_type="text/event-stream",
    tags=TAGS,
)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer a conversation, whole or as a stream of chunks."""
    body = await read_body(request, ChatCompletionRequest)
    generation = chat_generation(body)
    if body.stream:
        return await server_sent_events(request, chat_chunks(request.app, generation, _usage_asked(body)))
    whole = await whole_answer(request.app, generation, output_parser(request.app, generation, True))
    logprobs = whole.logprobs if generation.options.logprobs is not None else None
    return json_body(chat_completion(generation.model, whole.piece, whole.stats, logprobs))


@documented(
    "Text completion, or fill-in-the-middle with `suffix` (OpenAI).",
    request=CompletionRequest,
    response=Completion,
    stream_type="text/event-stream",
    tags=TAGS,
)
async def completions(request: web.Request) -> web.StreamResponse:
    """Continue a prompt (or fill in between prompt and suffix), whole or streamed."""
    body = await read_body(request, CompletionRequest)
    generation = completion_generation(body)
    echo = (generation.prompt or "") if body.echo else ""
    if body.stream:
        chunks = completion_chunks(request.app, generation, echo, _usage_asked(body))
        return await server_sent_events(request, chunks)
    whole = await generate_all(request.app, generation)
    logprobs = completion_logprobs(whole.logprobs, len(echo)) if body.logprobs is not None else None
    stats = whole.stats or GenerationStats()
    return json_body(text_completion(generation.model, echo + whole.text, stats, logprobs))


@documented("Embed texts (OpenAI).", request=EmbeddingRequest, response=EmbeddingList, tags=TAGS)
async def embeddings(request: web.Request) -> web.Response:
    """One normalised vector per input text."""
    body = await read_body(request, EmbeddingRequest)
    result = await request.app[BACKEND].embed(body.model, embedding_inputs(body))
    data = [
        EmbeddingData(index=index, embedding=encode_vector(vector, body.encoding_format))
        for index, vector in enumerate(result.embeddings)
    ]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return await json_off_the_loop(EmbeddingList(data=data, model=body.model, usage=usage))


@documented("List the models (OpenAI).", response=ModelList, tags=TAGS)
async def list_models(request: web.Request) -> web.Response:
    """Every model in the store, then those only an upstream serves (owned by that upstream)."""
    cards = [model_card(manifest) for manifest in request.app[ENGINE].list_models()]
    return json_body(ModelList(data=cards + _upstream_cards(request.app)))


@documented("Describe one model (OpenAI).", response=ModelCard, tags=TAGS, path=ModelPath)
async def retrieve_model(request: web.Request) -> web.Response:
    """One model of the store or of an upstream, or 404."""
    name = read_path(request, ModelPath).model
    try:
        return json_body(model_card(request.app[ENGINE].show(name)))
    except ModelNotFound:
        remote = next((card for card in _upstream_cards(request.app) if same_model(card.id, name)), None)
        if remote is None:
            raise
        return json_body(remote)


def _upstream_cards(app: web.Application) -> list[ModelCard]:
    """Models only an upstream serves; `created` is unknown there, so 0."""
    router = app.get(ROUTER)
    remote = [] if router is None else router.remote_models()
    return [ModelCard(id=model.name, created=0, owned_by=f"upstream:{model.upstream}") for model in remote]


def add_routes(app: web.Application) -> None:
    """Register the /v1 routes."""
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)


# --- convert in ---------------------------------------------------------------


def _usage_asked(body: ChatCompletionRequest | CompletionRequest) -> bool:
    """Whether a stream should end with a chunk of token counts."""
    return bool(body.stream_options and body.stream_options.include_usage)


def chat_generation(body: ChatCompletionRequest) -> GenerationRequest:
    """The GenerationRequest a chat completion asks for."""
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    tools += [{"type": "function", "function": f.model_dump(exclude_none=True)} for f in body.functions or []]
    tools, required = chosen_tools(tools, *_tool_choice(body))
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs or body.top_logprobs else None
    return GenerationRequest(
        model=body.model,
        messages=[_chat_message(message) for message in body.messages],
        options=_sampling(body, max_tokens, logprobs),
        format=_output_format(body),
        tools=tools,
        require_tool_call=required,
        knowledge=body.knowledge or [],
    )


def _tool_choice(body: ChatCompletionRequest) -> tuple[str, str | None, list[str] | None]:
    """`none`, `auto` or `required`, the one function named, and the only ones allowed, from tool_choice or
    legacy function_call."""
    for field, choice in (("tool_choice", body.tool_choice), ("function_call", body.function_call)):
        if isinstance(choice, dict) and field == "tool_choice" and choice.get("type") == "allowed_tools":
            return _allowed_tools(choice.get("allowed_tools"))
        if isinstance(choice, dict):
            function = choice.get("function", choice)
            if not isinstance(function, dict):
                raise BadRequestBody(
                    f'{field}.function: must be an object that names the function, like {{"name": "get_weather"}}.',
                    f"{field}.function",
                )
            named = function.get("name")
            return "required", named if isinstance(named, str) else None, None
        if choice in ("none", "required"):
            return choice, None, None
    return "auto", None, None


def _allowed_tools(allowed: Any) -> tuple[str, None, list[str]]:
    """The mode and the names of `{"mode": "auto" or "required", "tools": [{"type": "function", "function":
    {"name": NAME}}, …]}`, OpenAI's allowed_tools."""
    tools = allowed.get("tools") if isinstance(allowed, dict) else None
    names = [
        tool["function"].get("name")
        for tool in tools or []
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
    ]
    if (
        not isinstance(allowed, dict)
        or allowed.get("mode") not in ("auto", "required")
        or not isinstance(tools, list)
        or len(names) != len(tools)
        or not all(isinstance(name, str) for name in names)
    ):
        raise BadRequestBody(
            'tool_choice.allowed_tools: give {"mode": "auto" or "required", "tools": [{"type": "function", '
            '"function": {"name": NAME}}, …]}.',
            "tool_choice.allowed_tools",
        )
    return allowed["mode"], None, names


def completion_generation(body: CompletionRequest) -> GenerationRequest:
    """The GenerationRequest a text completion asks for: raw, or FIM with a suffix."""
    # The wire model let through one text, alone or in a list of one.
    prompt = body.prompt if isinstance(body.prompt, str) else str(body.prompt[0])
    options = _sampling(body, body.max_tokens, body.logprobs)
    return GenerationRequest(model=body.model, prompt=prompt, suffix=body.suffix, raw=True, options=options)


def _sampling(
    body: ChatCompletionRequest | CompletionRequest, max_tokens: int | None, logprobs: int | None
) -> SamplingOptions:
    """The sampling options of either route, from the fields they share."""
    options = sampling_options(
        body,
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        max_tokens=max_tokens,
        stop=body.stop,
    )
    options.logprobs = logprobs
    return options


def embedding_inputs(body: EmbeddingRequest) -> list[str]:
    """The texts to embed (the wire model let through texts only)."""
    return [body.input] if isinstance(body.input, str) else [str(text) for text in body.input]


def _chat_message(message: ChatMessageIn) -> ChatMessage:
    role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
    calls: list[Any] = list(message.tool_calls or [])  # and a legacy function_call: both go to the template
    if message.function_call is not None:
        calls.append(message.function_call)
    return ChatMessage(
        role=role,
        content=_message_text(message),
        tool_calls=[_tool_call_for_template(call) for call in calls] or None,
        name=message.name,
    )


def _message_text(message: ChatMessageIn) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return "\n".join(part.text or part.refusal or "" for part in message.content)  # text parts only, by the model


def _tool_call_for_template(call: Any) -> dict[str, Any]:
    """A tool call as chat templates expect it: arguments as an object, not a JSON text."""
    function = getattr(call, "function", call)
    try:
        arguments = parse_json(function.arguments)
    except ValueError:
        arguments = function.arguments
    return {
        "type": "function",
        "id": getattr(call, "id", None),
        "function": {"name": function.name, "arguments": arguments},
    }


def _output_format(body: ChatCompletionRequest) -> str | dict[str, Any] | None:
    response_format = body.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return "json"
    spec = response_format.json_schema
    return spec.json_schema if spec is not None else None  # the wire model requires it for json_schema


# --- streams ------------------------------------------------------------------


async def chat_chunks(
    app: web.Application, generation: GenerationRequest, include_usage: bool
) -> AsyncGenerator[dict[str, Any], None]:
    """Chat completion chunks: the role first, then text, tool calls, the finish reason, and usage if asked."""
    answer = ChunkFactory(generation.model, "chatcmpl")
    parser = output_parser(app, generation, True)
    stats = GenerationStats()
    calls = 0
    started = False
    async with aclosing(answer_pieces(app, generation, parser)) as pieces:
        async for step in pieces:  # the first step comes before any event, so up-front errors keep their status
            if not started:
                started = True
                yield answer.chat(ChatDelta(role="assistant", content=""))
            piece, stats = step.piece, step.stats
            logprobs = chat_logprobs(step.logprobs) if step.logprobs else None
            if piece.content or piece.thinking or (logprobs and not piece.tool_calls):
                delta = ChatDelta(content=piece.content or None, reasoning_content=piece.thinking or None)
                yield answer.chat(delta, logprobs=logprobs)
                logprobs = None
            if piece.tool_calls:
                made = [tool_call(call) for call in piece.tool_calls]
                deltas = [ToolCallDelta(index=calls + i, id=c.id, function=c.function) for i, c in enumerate(made)]
                calls += len(deltas)
                yield answer.chat(ChatDelta(tool_calls=deltas), logprobs=logprobs)
    yield answer.chat(ChatDelta(), finish_reason="tool_calls" if calls else _finish_reason(stats))
    if include_usage:
        yield answer.usage_chunk(usage(stats), chat=True)


async def completion_chunks(
    app: web.Application, generation: GenerationRequest, echo: str, include_usage: bool
) -> AsyncGenerator[dict[str, Any], None]:
    """Text completion chunks: text pieces, the finish reason, and usage if asked."""
    answer = ChunkFactory(generation.model, "cmpl")
    stats = GenerationStats()
    started = False
    offset = len(echo)  # where the next piece starts in the text the client puts together
    async with aclosing(generate(app, generation)) as stream:
        async for piece in stream:
            if not started and echo:
                yield answer.text(echo)
            started = True
            if piece.text or piece.logprobs:
                logprobs = (
                    completion_logprobs(piece.logprobs, offset) if generation.options.logprobs is not None else None
                )
                yield answer.text(piece.text, logprobs=logprobs)
                offset += len(piece.text)
            if piece.done and piece.stats is not None:
                stats = piece.stats
    yield answer.text("", finish_reason=_finish_reason(stats))
    if include_usage:
        yield answer.usage_chunk(usage(stats), chat=False)


# --- convert out --------------------------------------------------------------


class ChunkFactory:
    """Builds the streamed chunks of one answer, which share an id and a creation time."""

    def __init__(self, model: str, prefix: str) -> None:
        self.model = model
        self.id = new_id(prefix)
        self.created = int(time.time())

    def chat(
        self,
        delta: ChatDelta,
        finish_reason: Literal["stop", "length", "tool_calls"] | None = None,
        logprobs: ChoiceLogprobs | None = None,
    ) -> dict[str, Any]:
        """A chat.completion.chunk."""
        choice = ChatChunkChoice(delta=delta, finish_reason=finish_reason, logprobs=logprobs)
        return dump(ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[choice]))

    def text(
        self,
        text: str,
        finish_reason: Literal["stop", "length"] | None = None,
        logprobs: CompletionLogprobs | None = None,
    ) -> dict[str, Any]:
        """A text_completion chunk."""
        choice = CompletionChoice(text=text, finish_reason=finish_reason, logprobs=logprobs)
        return dump(Completion(id=self.id, created=self.created, model=self.model, choices=[choice]))

    def usage_chunk(self, counts: Usage, chat: bool) -> dict[str, Any]:
        """The last chunk: no choices, only the token counts."""
        kind = ChatCompletionChunk if chat else Completion
        return dump(kind(id=self.id, created=self.created, model=self.model, choices=[], usage=counts))


def tool_call(call: dict[str, Any]) -> ToolCallOut:
    """A parsed tool call in OpenAI's shape, with the arguments as a JSON text."""
    function = call["function"]
    arguments = json.dumps(function["arguments"], ensure_ascii=False)
    return ToolCallOut(id=new_id("call"), function=FunctionCallOut(name=function["name"], arguments=arguments))


def chat_completion(
    model: str, answer: AssistantPiece, stats: GenerationStats, logprobs: list[TokenLogprob] | None = None
) -> ChatCompletion:
    """A whole chat.completion answer; `logprobs` when they were asked for."""
    calls = [tool_call(call) for call in answer.tool_calls]
    message = AssistantMessage(
        content=answer.content if answer.content or not calls else None,
        reasoning_content=answer.thinking or None,
        tool_calls=calls or None,
    )
    choice = ChatChoice(
        message=message,
        finish_reason="tool_calls" if calls else _finish_reason(stats),
        logprobs=chat_logprobs(logprobs) if logprobs is not None else None,
    )
    return ChatCompletion(
        id=new_id("chatcmpl"), created=int(time.time()), model=model, choices=[choice], usage=usage(stats)
    )


def text_completion(
    model: str, text: str, stats: GenerationStats, logprobs: CompletionLogprobs | None = None
) -> Completion:
    """A whole text_completion answer."""
    choice = CompletionChoice(text=text, finish_reason=_finish_reason(stats), logprobs=logprobs)
    return Completion(id=new_id("cmpl"), created=int(time.time()), model=model, choices=[choice], usage=usage(stats))


def chat_logprobs(entries: list[TokenLogprob]) -> ChoiceLogprobs:
    """Tokens' log-probabilities in the chat API's shape."""
    return ChoiceLogprobs(content=[TokenLogprobOut.model_validate(logprob_fields(entry)) for entry in entries])


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> CompletionLogprobs:
    """Tokens' log-probabilities in the legacy completions API's shape; `offset` is where the first token's text
    starts in the text the client receives."""
    offsets: list[int] = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    tops = [{alt.token: alt.logprob for alt in entry.top} for entry in entries]
    return CompletionLogprobs(
        tokens=[entry.token for entry in entries],
        token_logprobs=[entry.logprob for entry in entries],
        top_logprobs=tops if any(entry.top for entry in entries) else None,
        text_offset=offsets,
    )


def usage(stats: GenerationStats) -> Usage:
    """OpenAI's token counts from the generation stats."""
    return Usage(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=stats.cached_tokens),
    )


def encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    """A vector as floats, or as base64 of little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def model_card(manifest: Manifest) -> ModelCard:
    """A store entry as OpenAI's model object."""
    try:
        created = int(datetime.fromisoformat(manifest.created_at).timestamp())
    except ValueError:
        created = 0
    return ModelCard(id=manifest.name, created=created)


def _finish_reason(stats: GenerationStats) -> Literal["stop", "length"]:
    # Only an answer that ended on its own is "stop": one cut short for any other reason says so.
    return "stop" if stats.done_reason == "stop" else "length"


def new_id(prefix: str) -> str:
    """A fresh id such as `chatcmpl-<24 hex digits>`."""
    return f"{prefix}-{secrets.token_hex(12)}"


def dump(model: BaseModel) -> dict[str, Any]:
    """A response model as JSON-ready data."""
    return model.model_dump(mode="json")


def json_body(model: BaseModel) -> web.Response:
    """A response model as a JSON response."""
    return web.Response(text=model.model_dump_json(), content_type="application/json")
