"""Anthropic's Messages API (`/v1/messages`), so Claude Code and Anthropic's SDKs work against ingle.

Convert in (system, text / tool_use / tool_result blocks, tools) to a core
GenerationRequest, call the backend through the shared generating helpers,
convert out to message blocks or Anthropic's exact event stream. Errors
take Anthropic's body (see errors.py); an unknown model is a 404
`not_found_error`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import Any, Literal

from aiohttp import web

from ...core.generation import ChatMessage, GenerationRequest, GenerationStats, SamplingOptions
from ...core.runtime.text_output import StopMatcher
from ...core.tool_calls import AssistantPiece
from .anthropic_wire import (
    MAX_STOP_LENGTH,
    ContentBlockIn,
    ContentBlockOut,
    CountTokensRequest,
    MessageOut,
    MessagesRequest,
    TokenCount,
    Usage,
)
from .errors import BadRequestBody, read_body
from .generating import answer_pieces, chosen_tools, output_parser, whole_answer
from .keys import ENGINE
from .openapi import documented
from .streaming import typed_events

TAGS = ("anthropic",)
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


@documented(
    "Answer a conversation (Anthropic Messages).",
    request=MessagesRequest,
    response=MessageOut,
    stream_type="text/event-stream",
    tags=TAGS,
)
async def messages(request: web.Request) -> web.StreamResponse:
    """Answer with a message, whole or as Anthropic's event stream."""
    body = await read_body(request, MessagesRequest)
    generation = messages_generation(body)
    parser = output_parser(request.app, generation, keep_thinking=_wants_thinking(body))
    stops = StopMatcher(_stop_sequences(body.stop_sequences))
    if body.stream:
        events = message_events(request.app, generation, parser, stops)
        return await typed_events(request, events)
    whole = await whole_answer(request.app, generation, parser, stops)
    answer, stats = whole.piece, whole.stats
    message = MessageOut(
        id=_new_id("msg"),
        model=generation.model,
        content=list(_answer_blocks(answer)),
        stop_reason=_stop_reason(answer, stats, stops),
        stop_sequence=stops.hit,
        usage=_usage(stats),
    )
    return web.Response(text=message.model_dump_json(exclude_none=True), content_type="application/json")


@documented(
    "Count a conversation's prompt tokens (Anthropic Messages).",
    request=CountTokensRequest,
    response=TokenCount,
    tags=TAGS,
)
async def count_tokens(request: web.Request) -> web.Response:
    """How many tokens the conversation's prompt takes on the model."""
    body = await read_body(request, CountTokensRequest)
    generation = messages_generation(body)
    count = await request.app[ENGINE].count_prompt_tokens(generation)
    return web.json_response(TokenCount(input_tokens=count).model_dump())


def add_routes(app: web.Application) -> None:
    """Register the Messages routes."""
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)


# --- convert in ---------------------------------------------------------------


def messages_generation(body: MessagesRequest | CountTokensRequest) -> GenerationRequest:
    """The GenerationRequest a Messages request asks for (stop sequences are matched by the caller)."""
    tools = [_tool(tool) for tool in body.tools or []]
    choice = body.tool_choice
    kind = "auto" if choice is None else {"any": "required", "tool": "required"}.get(choice.type, choice.type)
    offered, required = chosen_tools(tools, kind, choice.name if choice is not None and choice.type == "tool" else None)
    options = SamplingOptions(repeat_penalty=1.0)
    if isinstance(body, MessagesRequest):
        options = SamplingOptions(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=0 if body.top_k is None else body.top_k,
            min_p=0.0,
            repeat_penalty=1.0,
            max_tokens=body.max_tokens,
        )
    output = body.output_config.format if isinstance(body, MessagesRequest) and body.output_config else None
    return GenerationRequest(
        model=body.model,
        messages=_chat_messages(body),
        options=options,
        format=output.json_schema if output is not None else None,
        tools=offered,
        require_tool_call=required,
    )


def _stop_sequences(sequences: list[str] | None) -> list[str]:
    for index, sequence in enumerate(sequences or []):
        if len(sequence) > MAX_STOP_LENGTH:
            field = f"stop_sequences.{index}"
            raise BadRequestBody(f"{field}: a stop sequence is at most {MAX_STOP_LENGTH} characters.", field)
    return list(sequences or [])


def _tool(tool: Any) -> dict[str, Any]:
    function = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _chat_messages(body: MessagesRequest | CountTokensRequest) -> list[ChatMessage]:
    """The conversation as core's chat messages: tool_use blocks become calls, tool_result blocks tool turns.

    The wire model let through only the blocks each role may hold, named tool_use blocks and text-only
    system prompts and tool results; thinking blocks are not fed back.
    """
    chat: list[ChatMessage] = []
    system = _text_of(body.system)
    if system:
        chat.append(ChatMessage("system", system))
    tool_names: dict[str, str] = {}
    for message in body.messages:
        blocks = (
            [ContentBlockIn(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        )
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in blocks:
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "tool_use":
                name = block.name or ""
                tool_names[block.id or ""] = name
                calls.append(
                    {"type": "function", "id": block.id, "function": {"name": name, "arguments": block.input or {}}}
                )
            elif block.type == "tool_result":
                result = _text_of(block.content)
                name = tool_names.get(block.tool_use_id or "")
                chat.append(ChatMessage("tool", f"Error: {result}" if block.is_error else result, name=name))
        if texts or calls:
            chat.append(ChatMessage(message.role, "\n".join(texts), tool_calls=calls or None))
    return chat


def _text_of(content: str | list[ContentBlockIn] | None) -> str:
    """A system prompt's or tool result's text: a string, or text blocks joined."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(block.text or "" for block in content)


def _wants_thinking(body: MessagesRequest) -> bool:
    return body.thinking is not None and body.thinking.type != "disabled"


# --- convert out --------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _answer_blocks(answer: AssistantPiece) -> Iterator[ContentBlockOut]:
    if answer.thinking:
        yield ContentBlockOut(type="thinking", thinking=answer.thinking, signature="")
    if answer.content:
        yield ContentBlockOut(type="text", text=answer.content)
    for call in answer.tool_calls:
        function = call["function"]
        yield ContentBlockOut(type="tool_use", id=_new_id("toolu"), name=function["name"], input=function["arguments"])


def _stop_reason(answer: AssistantPiece, stats: GenerationStats, stops: StopMatcher) -> StopReason:
    if answer.tool_calls:
        return "tool_use"
    if stops.hit is not None:
        return "stop_sequence"
    # Only an answer that ended on its own is "end_turn": one cut short for any other reason says so.
    return "end_turn" if stats.done_reason == "stop" else "max_tokens"


def _usage(stats: GenerationStats) -> Usage:
    return Usage(
        input_tokens=stats.prompt_tokens,
        output_tokens=stats.completion_tokens,
        cache_read_input_tokens=stats.cached_tokens,
    )


class _BlockEvents:
    """The content_block_* events of a streamed answer: one block open at a time, numbered in order."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None
        self.answer = AssistantPiece()
        """Everything streamed so far, for the stop reason."""

    def events(self, piece: AssistantPiece) -> Iterator[dict[str, Any]]:
        """Events for a piece of the answer."""
        self.answer.extend(piece)
        if piece.thinking:
            yield from self._ensure_open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            yield self._delta({"type": "thinking_delta", "thinking": piece.thinking})
        if piece.content:
            yield from self._ensure_open("text", {"type": "text", "text": ""})
            yield self._delta({"type": "text_delta", "text": piece.content})
        for call in piece.tool_calls:
            function = call["function"]
            block = {"type": "tool_use", "id": _new_id("toolu"), "name": function["name"], "input": {}}
            yield from self._start("tool_use", block)
            yield self._delta({"type": "input_json_delta", "partial_json": json.dumps(function["arguments"])})
            yield from self.close()

    def close(self) -> Iterator[dict[str, Any]]:
        """content_block_stop for the open block, if any."""
        if self.open is not None:
            self.open = None
            yield {"type": "content_block_stop", "index": self.index}

    def _ensure_open(self, kind: str, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if self.open != kind:
            yield from self._start(kind, block)

    def _start(self, kind: str, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self.close()
        self.index += 1
        self.open = kind
        yield {"type": "content_block_start", "index": self.index, "content_block": block}
        if self.index == 0:
            yield {"type": "ping"}

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}


async def message_events(
    app: web.Application, generation: GenerationRequest, parser: Any, stops: StopMatcher
) -> AsyncGenerator[dict[str, Any], None]:
    """Anthropic's event sequence: message_start, content blocks, message_delta, message_stop."""
    blocks = _BlockEvents()
    stats = GenerationStats()
    started = False
    async with aclosing(answer_pieces(app, generation, parser, stops)) as steps:
        async for step in steps:  # the first step comes before any event, so up-front errors keep their status
            stats = step.stats
            if not started:
                started = True
                usage = Usage(
                    input_tokens=stats.prompt_tokens, output_tokens=0, cache_read_input_tokens=stats.cached_tokens
                )
                start = MessageOut(id=_new_id("msg"), model=generation.model, content=[], stop_reason=None, usage=usage)
                yield {"type": "message_start", "message": start.model_dump()}
            for event in blocks.events(step.piece):
                yield event
    for event in blocks.close():
        yield event
    delta = {"stop_reason": _stop_reason(blocks.answer, stats, stops), "stop_sequence": stops.hit}
    yield {"type": "message_delta", "delta": delta, "usage": _usage(stats).model_dump()}
    yield {"type": "message_stop"}
