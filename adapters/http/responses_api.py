"""OpenAI's Responses API (`/v1/responses`), which Codex CLI and newer OpenAI SDK code speak.

Convert in (input text or items, instructions, function tools and their
outputs, a stored conversation for `previous_response_id`), call the backend
through the shared generating helpers, convert out to output items or the
documented event stream. Responses are stored in SQLite under the home
unless `store: false`, and expire after `responses_keep_days`.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from aiohttp import web

from ...core.errors import IngleError
from ...core.generation import ChatMessage, GenerationRequest, GenerationStats, SamplingOptions, TokenLogprob
from ...core.json_text import parse_json
from ...core.tool_calls import AssistantOutputParser, AssistantPiece
from .common_wire import ResponsePath
from .errors import StoredResponseNotFound, code_for, read_body, read_path
from .generating import answer_pieces, chosen_tools, logprob_fields, output_parser, whole_answer
from .keys import SETTINGS
from .openapi import documented
from .response_store import ResponseStore, StoredResponse
from .responses_wire import ContentPartIn, DeletedResponse, InputItem, ResponseObject, ResponseRequest
from .streaming import typed_events

TAGS = ("openai",)
# The `include` entry that asks for the answer's token log-probabilities.
LOGPROBS = "message.output_text.logprobs"
RESPONSES = web.AppKey("responses", ResponseStore)


@documented(
    "Create a response (OpenAI Responses).",
    request=ResponseRequest,
    response=ResponseObject,
    stream_type="text/event-stream",
    tags=TAGS,
)
async def create_response(request: web.Request) -> web.StreamResponse:
    """Answer the input (after a stored conversation), whole or as the documented event stream."""
    body = await read_body(request, ResponseRequest)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        history = (await _stored(request, body.previous_response_id)).conversation
    turns = [*(ChatMessage(**turn) for turn in history), *_input_turns(body, history)]
    generation = response_generation(body, turns)
    parser = output_parser(request.app, generation, keep_thinking=True)
    draft = _draft(body, generation.model)
    if body.stream:
        events = response_events(request.app, generation, parser, draft, turns)
        return await typed_events(request, events, _stream_error)
    whole = await whole_answer(request.app, generation, parser)
    answer, stats = whole.piece, whole.stats
    response = _finished(draft, list(_output_items(answer, _logprobs(whole.logprobs))), stats)
    await _keep(request.app, draft, response, turns, answer)
    return web.json_response(response)


@documented("Fetch a stored response (OpenAI Responses).", response=ResponseObject, tags=TAGS, path=ResponsePath)
async def get_response(request: web.Request) -> web.Response:
    """A stored response, or 404."""
    return web.json_response((await _stored(request, read_path(request, ResponsePath).response_id)).response)


@documented("Delete a stored response (OpenAI Responses).", response=DeletedResponse, tags=TAGS, path=ResponsePath)
async def delete_response(request: web.Request) -> web.Response:
    """Forget a stored response, or 404."""
    response_id = read_path(request, ResponsePath).response_id
    if not await request.app[RESPONSES].delete(response_id):
        raise _not_found(response_id)
    return web.json_response(DeletedResponse(id=response_id).model_dump())


def add_routes(app: web.Application) -> None:
    """Register the Responses routes and open the response store with the app."""
    app.cleanup_ctx.append(_response_store)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)


async def _response_store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with ResponseStore(settings.home / "responses.sqlite", settings.responses_keep_days * 86400) as store:
        app[RESPONSES] = store
        yield


async def _stored(request: web.Request, response_id: str) -> StoredResponse:
    stored = await request.app[RESPONSES].get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return stored


def _not_found(response_id: str) -> StoredResponseNotFound:
    # The id is the client's text: in the body, never in the status line (where a newline is an error).
    return StoredResponseNotFound(
        f"No stored response '{response_id}': it was made with store: false, deleted, or has expired."
    )


# --- convert in ---------------------------------------------------------------


def response_generation(body: ResponseRequest, turns: list[ChatMessage]) -> GenerationRequest:
    """The GenerationRequest a Responses request asks for, over the whole conversation."""
    tools = [_function_tool(tool) for tool in body.tools or []]
    choice = body.tool_choice  # a mode, one function or allowed tools (responses_wire.TOOL_CHOICE)
    if isinstance(choice, dict) and choice["type"] == "allowed_tools":
        allowed = [item["name"] for item in choice["tools"]]
        offered, required = chosen_tools(tools, choice["mode"], None, allowed)
    elif isinstance(choice, dict):
        offered, required = chosen_tools(tools, "required", choice["name"])
    else:
        offered, required = chosen_tools(tools, choice or "auto", None)
    system = [ChatMessage("system", body.instructions)] if body.instructions else []
    return GenerationRequest(
        model=body.model,
        messages=system + turns,
        options=SamplingOptions(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            max_tokens=body.max_output_tokens,
            logprobs=(body.top_logprobs or 0) if LOGPROBS in (body.include or []) or body.top_logprobs else None,
        ),
        format=_output_format(body),
        tools=offered,
        require_tool_call=required,
    )


def _function_tool(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters or {"type": "object"}}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _output_format(body: ResponseRequest) -> str | dict[str, Any] | None:
    text_format = body.text.format if body.text is not None else None
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return "json"
    return text_format.json_schema  # the wire model requires it for json_schema


def _input_turns(body: ResponseRequest, history: list[dict[str, Any]]) -> list[ChatMessage]:
    """The request's input as chat turns: function calls join an assistant turn, their outputs are tool turns."""
    if isinstance(body.input, str):
        return [ChatMessage("user", body.input)]
    tool_names = {call["id"]: call["function"]["name"] for turn in history for call in turn.get("tool_calls") or []}
    turns: list[ChatMessage] = []
    for item in body.input:  # complete items of the kinds ingle reads, as the wire model checked
        if item.type == "message":
            role = "system" if item.role == "developer" else item.role
            turns.append(ChatMessage(role or "user", _text_of(item.content)))
        elif item.type == "function_call":
            turns.append(_with_call(turns, item))
            tool_names[item.call_id or ""] = item.name or ""
        elif item.type == "function_call_output":
            name = tool_names.get(item.call_id or "")
            turns.append(ChatMessage("tool", _text_of(item.output), name=name))
    return turns


def _with_call(turns: list[ChatMessage], item: InputItem) -> ChatMessage:
    """The assistant turn with this function call added: the previous one if it is an assistant's, else a new one."""
    try:
        arguments = parse_json(item.arguments or "{}")
    except ValueError:
        arguments = item.arguments
    call = {"type": "function", "id": item.call_id, "function": {"name": item.name, "arguments": arguments}}
    if turns and turns[-1].role == "assistant":
        last = turns.pop()
        return dataclasses.replace(last, tool_calls=[*(last.tool_calls or []), call])
    return ChatMessage("assistant", "", tool_calls=[call])


def _text_of(content: str | list[ContentPartIn] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text or part.refusal or "" for part in content)  # text parts only, by the wire model


# --- convert out --------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _draft(body: ResponseRequest, model: str) -> dict[str, Any]:
    """The response as it starts: in progress, no output yet, echoing the request's settings."""
    text = body.text.model_dump(exclude_none=True, by_alias=True) if body.text else {"format": {"type": "text"}}
    return ResponseObject(
        id=_new_id("resp"),
        created_at=int(time.time()),
        status="in_progress",
        model=model,
        output=[],
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools or []],
        tool_choice=body.tool_choice or "auto",
        previous_response_id=body.previous_response_id,
        store=body.store,
        text=text,
        metadata=body.metadata or {},
    ).model_dump()


def _finished(draft: dict[str, Any], output: list[dict[str, Any]], stats: GenerationStats) -> dict[str, Any]:
    """The response once answered: its output, status and usage."""
    called = any(item["type"] == "function_call" for item in output)
    # Only an answer that ended on its own is "completed" (and stored so): one cut short for any reason is not.
    cut = stats.done_reason != "stop" and not called
    return {
        **draft,
        "status": "incomplete" if cut else "completed",
        "output": output,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "usage": {
            "input_tokens": stats.prompt_tokens,
            "input_tokens_details": {"cached_tokens": stats.cached_tokens},
            "output_tokens": stats.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        },
    }


def _reasoning_item(text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": _new_id("rs"),
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def _message_item(text: str, status: str = "completed", logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}
    content = [part] if status == "completed" else []
    return {"type": "message", "id": _new_id("msg"), "status": status, "role": "assistant", "content": content}


def _call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call["function"]
    arguments = json.dumps(function["arguments"], ensure_ascii=False) if status == "completed" else ""
    return {
        "type": "function_call",
        "id": _new_id("fc"),
        "call_id": _new_id("call"),
        "name": function["name"],
        "arguments": arguments,
        "status": status,
    }


def _logprobs(entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    """Tokens' log-probabilities as an output_text part holds them."""
    return [logprob_fields(entry) for entry in entries]


def _output_items(answer: AssistantPiece, logprobs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if answer.thinking:
        yield _reasoning_item(answer.thinking)
    if answer.content or not answer.tool_calls:
        yield _message_item(answer.content, logprobs=logprobs)
    for call in answer.tool_calls:
        yield _call_item(call)


async def _keep(
    app: web.Application,
    draft: dict[str, Any],
    response: dict[str, Any],
    turns: list[ChatMessage],
    answer: AssistantPiece,
) -> None:
    """Store the response with its conversation (the answer as the last turn), unless `store: false`."""
    if not draft["store"]:
        return
    calls = [
        {
            "type": "function",
            "id": item["call_id"],
            "function": {"name": item["name"], "arguments": json.loads(item["arguments"])},
        }
        for item in response["output"]
        if item["type"] == "function_call"
    ]
    reply = ChatMessage("assistant", answer.content, tool_calls=calls or None)
    conversation = [dataclasses.asdict(turn) for turn in [*turns, reply]]
    await app[RESPONSES].put(draft["id"], StoredResponse(response=response, conversation=conversation))


def _stream_error(error: IngleError) -> dict[str, Any]:
    code = code_for(error) or "server_error"
    return {"type": "error", "code": code, "message": error.message, "param": None, "sequence_number": 0}


class _OutputEvents:
    """The output_item / content_part / delta events of a streamed response, one item open at a time."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.answer = AssistantPiece()
        self._open: dict[str, Any] | None = None
        self._sequence = 0

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """One event, numbered in order."""
        self._sequence += 1
        return {"type": kind, "sequence_number": self._sequence, **fields}

    def events(self, piece: AssistantPiece, logprobs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Events for a piece of the answer, with its tokens' log-probabilities when asked for."""
        self.answer.extend(piece)
        if piece.thinking:
            yield from self._ensure_open("reasoning")
            yield self._delta("response.reasoning_text.delta", piece.thinking)
        if piece.content:
            yield from self._ensure_open("message")
            yield self._delta("response.output_text.delta", piece.content, logprobs)
        for call in piece.tool_calls:
            yield from self.close()
            item = _call_item(call, status="in_progress")
            yield from self._add(item)
            arguments = json.dumps(call["function"]["arguments"], ensure_ascii=False)
            index = len(self.items) - 1
            yield self.event(
                "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments
            )
            yield self.event(
                "response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=arguments
            )
            item.update(arguments=arguments, status="completed")
            yield self.event("response.output_item.done", output_index=index, item=item)

    def finish(self) -> Iterator[dict[str, Any]]:
        """Close the open item; an answer with no output at all still gets its (empty) message."""
        if not self.items:
            yield from self._ensure_open("message")
        yield from self.close()

    def close(self) -> Iterator[dict[str, Any]]:
        """The closing events of the open message or reasoning item, if any."""
        item, self._open = self._open, None
        if item is None:
            return
        index = len(self.items) - 1
        item["status"] = "completed"
        if item["type"] == "message":
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            yield self.event("response.output_text.done", **where, text=part["text"], logprobs=part["logprobs"])
            yield self.event("response.content_part.done", **where, part=part)
        else:
            text = item["content"][0]["text"]
            yield self.event(
                "response.reasoning_text.done", item_id=item["id"], output_index=index, content_index=0, text=text
            )
        yield self.event("response.output_item.done", output_index=index, item=item)

    def _ensure_open(self, kind: str) -> Iterator[dict[str, Any]]:
        if self._open is not None and self._open["type"] == kind:
            return
        yield from self.close()
        item = _message_item("", status="in_progress") if kind == "message" else _reasoning_item("")
        yield from self._add(item)
        self._open = item
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        if kind == "message":
            item["content"].append(part)
            where = {"item_id": item["id"], "output_index": len(self.items) - 1, "content_index": 0}
            yield self.event("response.content_part.added", **where, part={**part})

    def _add(self, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self.items.append(item)
        yield self.event("response.output_item.added", output_index=len(self.items) - 1, item={**item})

    def _delta(self, kind: str, text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A delta to the open item (`_ensure_open` ran just before) and its text."""
        item = self._open or self.items[-1]
        part = item["content"][0]
        part["text"] += text
        if logprobs:
            part["logprobs"] = [*part.get("logprobs", []), *logprobs]
        where = {"item_id": item["id"], "output_index": len(self.items) - 1, "content_index": 0}
        return self.event(kind, **where, delta=text, logprobs=logprobs or [])


async def response_events(
    app: web.Application,
    generation: GenerationRequest,
    parser: AssistantOutputParser,
    draft: dict[str, Any],
    turns: list[ChatMessage],
) -> AsyncGenerator[dict[str, Any], None]:
    """The documented event stream: response.created, in_progress, the output items, then completed (or incomplete)."""
    output = _OutputEvents()
    stats = GenerationStats()
    started = False
    async with aclosing(answer_pieces(app, generation, parser)) as steps:
        async for step in steps:  # the first step comes before any event, so up-front errors keep their status
            stats = step.stats
            if not started:
                started = True
                yield output.event("response.created", response=draft)
                yield output.event("response.in_progress", response=draft)
            for event in output.events(step.piece, _logprobs(step.logprobs)):
                yield event
    for event in output.finish():
        yield event
    response = _finished(draft, output.items, stats)
    await _keep(app, draft, response, turns, output.answer)
    kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    yield output.event(kind, response=response)
