"""Calling core for every chat-shaped route: run a generation, record it, split its text into an answer.

Ollama's /api/chat, OpenAI's chat completions and Responses, and Anthropic's
Messages all do the same three things between "convert in" and "convert
out"; they do them here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ...core.errors import ModelNotFound
from ...core.generation import GenerationChunk, GenerationRequest, GenerationStats, TokenLogprob
from ...core.runtime.text_output import StopMatcher
from ...core.tool_calls import (
    HERMES,
    AssistantOutputParser,
    AssistantPiece,
    ToolCallFormat,
    require_tool_format,
    tool_function,
)
from ...core.tool_calls import tool_names as offered_tool_names
from .errors import BadRequestBody
from .keys import BACKEND, ENGINE
from .metrics import record_generation


async def generate(app: web.Application, generation: GenerationRequest) -> AsyncGenerator[GenerationChunk]:
    """The backend's chunks; a finished generation's counts go to the metrics.

    The generation is closed however this iterator ends, so a client that
    goes away frees its sequence.
    """
    async with aclosing(app[BACKEND].generate(generation)) as stream:
        async for chunk in stream:
            if chunk.done:
                record_generation(app, generation.model, chunk.stats or GenerationStats())
            yield chunk


async def generate_all(app: web.Application, generation: GenerationRequest) -> GenerationChunk:
    """Run a generation to its end: the whole of it as one chunk."""
    whole = GenerationChunk(text="", done=True, stats=GenerationStats())
    parts: list[str] = []
    async with aclosing(generate(app, generation)) as stream:
        async for chunk in stream:
            parts.append(chunk.text)
            whole.logprobs += chunk.logprobs
            if chunk.done and chunk.stats is not None:
                whole.stats = chunk.stats
    whole.text = "".join(parts)
    return whole


def tool_format(app: web.Application, model: str) -> ToolCallFormat:
    """How `model` writes tool calls, from its chat template; a 400 when the template has no tool support.

    A model that is not in the local store is served by an upstream, whose
    answer arrives in the Hermes-style tags the parser also reads for bare JSON.
    """
    try:
        manifest = app[ENGINE].show(model)
    except ModelNotFound:
        return HERMES
    return require_tool_format(manifest.template or manifest.gguf.chat_template)


def chosen_tools(
    tools: list[dict[str, Any]], choice: str, forced: str | None, allowed: list[str] | None = None
) -> tuple[list[dict[str, Any]] | None, bool]:
    """The tools a request offers after its tool choice, and whether the answer must call one.

    `choice` is `none`, `auto` or `required`; `forced` names the one tool the answer must call; `allowed`
    names the only tools offered (OpenAI's `allowed_tools`, which keeps the tool list, and so the prompt's
    cache, the same from request to request); none named offers none.
    """
    if not tools or choice == "none" or allowed == []:
        return None, False
    offered = {tool_function(tool).get("name") for tool in tools}  # a set: a request may name thousands
    for name in [forced] if forced is not None else allowed or []:
        if name not in offered:
            raise BadRequestBody(f"tool_choice: names '{name}', which is not among the tools offered.", "tool_choice")
    if forced is not None:
        return [tool for tool in tools if tool_function(tool).get("name") == forced], True
    if allowed is not None:
        kept = set(allowed)
        tools = [tool for tool in tools if tool_function(tool).get("name") in kept]
    return tools, choice == "required"


def output_parser(app: web.Application, generation: GenerationRequest, keep_thinking: bool) -> AssistantOutputParser:
    """Splits the answer into content, reasoning and calls of the tools the request offered."""
    names = offered_tool_names(generation.tools)
    if names is None:
        return AssistantOutputParser(None, keep_thinking)
    return AssistantOutputParser(names, keep_thinking, tool_format(app, generation.model))


def logprob_fields(entry: TokenLogprob) -> dict[str, Any]:
    """A token's log-probability in the shape OpenAI's routes, Responses and Ollama all give it."""

    def fields(token: TokenLogprob) -> dict[str, Any]:
        return {"token": token.token, "logprob": token.logprob, "bytes": list(token.data)}

    return {**fields(entry), "top_logprobs": [fields(alt) for alt in entry.top]}


@dataclass
class AnswerStep:
    """A piece of a parsed answer, with the counts known so far (the prompt's, until `done`)."""

    piece: AssistantPiece
    stats: GenerationStats
    done: bool
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """When asked for: the tokens' log-probabilities since the step before (a parser may hold text back, so
    they line up with the text only roughly)."""


async def answer_pieces(
    app: web.Application,
    generation: GenerationRequest,
    parser: AssistantOutputParser | None,
    stops: StopMatcher | None = None,
) -> AsyncGenerator[AnswerStep]:
    """Run a generation, yielding non-empty pieces of the answer and, last, a step with the final stats.

    Without a parser the text is all content, as the model wrote it. The first
    step comes only once the backend has answered, so an error up front
    (unknown model, full queue) is raised before a stream starts. A hit stop
    sequence ends the generation there, as core's own stop strings do.
    """
    stats = GenerationStats()
    pieces = 0  # streamed pieces, about one per token: the count when a stop sequence cuts the generation short
    logprobs: list[TokenLogprob] = []
    async with aclosing(generate(app, generation)) as chunks:
        async for chunk in chunks:
            pieces += 1
            stats = chunk.stats or stats
            logprobs += chunk.logprobs
            text = chunk.text
            if stops is not None:
                text = stops.feed(text) + (stops.finish() if chunk.done else "")
            piece = parser.feed(text) if parser else AssistantPiece(content=text)
            done = chunk.done or (stops is not None and stops.hit is not None)
            if done:
                if parser:
                    piece.extend(parser.finish())
                if not chunk.done:
                    stats = dataclasses.replace(stats, done_reason="stop", completion_tokens=pieces)
                yield AnswerStep(piece, stats, True, logprobs)
                return
            if piece:
                yield AnswerStep(piece, stats, False, logprobs)
                logprobs = []


async def whole_answer(
    app: web.Application,
    generation: GenerationRequest,
    parser: AssistantOutputParser,
    stops: StopMatcher | None = None,
) -> AnswerStep:
    """Run a generation to its end: the parsed answer as one step, with the final stats."""
    whole = AnswerStep(AssistantPiece(), GenerationStats(), True)
    async with aclosing(answer_pieces(app, generation, parser, stops)) as steps:
        async for step in steps:
            whole.piece.extend(step.piece)
            whole.stats = step.stats
            whole.logprobs += step.logprobs
    return whole
