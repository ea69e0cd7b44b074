"""Anthropic Messages API wire format (`/v1/messages`): one pydantic model per request and response.

Fields follow Anthropic's API reference; those ingle accepts but cannot
act on say so. Inputs forbid unknown fields, so a typo is a 400 naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from .common_wire import Limit, ModelNameField, empty

MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 256


_NO_MCP = "MCP servers are not available here; call them from the client"


_TEXT_BLOCKS = {"items": {"properties": {"type": {"const": "text"}}}}
"""In the schema: a list of blocks holds text blocks only (a text or null stays allowed)."""
_BLOCKS_BY_ROLE = {
    "user": ("text", "tool_result", "thinking", "redacted_thinking"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}
"""The blocks ingle reads in each kind of turn."""


def _text_blocks_only(content: Any) -> bool:
    return not isinstance(content, list) or all(block.type == "text" for block in content)


def text_blocks() -> Limit:
    """A text, or a list of text blocks (a system prompt, a tool result)."""
    return Limit(_TEXT_BLOCKS, "only text blocks are supported here", _text_blocks_only)


_TURN_BLOCKS = ("text", "tool_use", "tool_result")
"""Blocks that make a turn of the conversation (thinking blocks alone do not)."""
SOMETHING_TO_ANSWER: JsonDict = {
    "allOf": [
        {
            "properties": {
                "messages": {
                    "contains": {
                        "anyOf": [
                            {"properties": {"content": {"type": "string"}}},
                            {
                                "properties": {
                                    "content": {"contains": {"properties": {"type": {"enum": list(_TURN_BLOCKS)}}}}
                                }
                            },
                        ]
                    }
                }
            }
        }
    ]
}
"""In the schema: some message is a text, or holds a block other than thinking."""


def _check_something_to_answer(messages: list[MessageIn]) -> None:
    if not any(
        isinstance(message.content, str) or any(block.type in _TURN_BLOCKS for block in message.content)
        for message in messages
    ):
        raise ValueError("messages: give at least one with text, tool_use or tool_result, not thinking alone")


class Strict(BaseModel):
    """An input model: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


class ContentBlockIn(Strict):
    """One block of a message's content; which fields apply depends on `type`."""

    type: Literal[
        "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "search_result"
    ]
    """The kind of block; ingle reads text, tool_use, tool_result and thinking blocks."""
    text: str | None = None
    """A text block's text."""
    id: str | None = Field(default=None, max_length=256)
    """A tool_use block's id, which its tool_result refers to."""
    name: str | None = Field(default=None, max_length=256)
    """A tool_use block's tool name."""
    input: dict[str, Any] | None = None
    """A tool_use block's arguments."""
    tool_use_id: str | None = Field(default=None, max_length=256)
    """A tool_result block's tool_use id."""
    content: Annotated[str | list[ContentBlockIn] | None, text_blocks()] = None
    """A tool_result block's result: a text, or text blocks."""
    is_error: bool | None = None
    """A tool_result block that reports a failed call."""
    thinking: str | None = None
    """A thinking block's reasoning (not sent back to the model)."""
    signature: str | None = None
    """A thinking block's signature; accepted and ignored."""
    data: str | None = None
    """A redacted_thinking block's data; accepted and ignored."""
    source: dict[str, Any] | None = None
    """An image's or document's source; such blocks are refused, ingle's models read text only."""
    title: str | None = None
    """A document's or search result's title."""
    context: str | None = None
    """A document's context."""
    citations: Any = None
    """Citations; accepted and ignored."""
    cache_control: dict[str, Any] | None = None
    """Prompt-caching hint; accepted and ignored (ingle reuses cached prompt prefixes on its own)."""


class MessageIn(Strict):
    """One turn of the conversation."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"role": {"const": "user"}}},
            "then": {
                "properties": {"content": {"items": {"properties": {"type": {"enum": list(_BLOCKS_BY_ROLE["user"])}}}}}
            },
            "else": {
                "properties": {
                    "content": {
                        "items": {
                            "properties": {"type": {"enum": list(_BLOCKS_BY_ROLE["assistant"])}},
                            "if": {"properties": {"type": {"const": "tool_use"}}},
                            "then": {"required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}},
                        }
                    }
                }
            },
        },
    )

    role: Literal["user", "assistant"]
    """Who wrote it."""
    content: str | list[ContentBlockIn]
    """A text, or content blocks."""

    @model_validator(mode="after")
    def _blocks_fit_the_role(self) -> MessageIn:
        for number, block in enumerate(self.content if isinstance(self.content, list) else []):
            if block.type not in _BLOCKS_BY_ROLE[self.role]:
                raise ValueError(
                    f"content.{number}: {block.type} blocks are not supported in {self.role} turns; send text"
                )
            if block.type == "tool_use" and not block.name:
                raise ValueError(f"content.{number}.name: is required")
        return self


class ToolIn(Strict):
    """A tool the model may call."""

    name: str = Field(min_length=1, max_length=128)
    """The tool's name."""
    description: str | None = None
    """What the tool does, for the model."""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    """JSON schema of the tool's input; the arguments the model writes are held to it."""
    type: Annotated[
        str | None,
        Limit(
            {"enum": ["custom", None]},
            "server tools are not available here; define a custom tool",
            lambda kind: kind in (None, "custom"),
        ),
    ] = None
    """`custom` (or absent) for a client tool; Anthropic's server tools are not available here."""
    cache_control: dict[str, Any] | None = None
    """Prompt-caching hint; accepted and ignored."""


class ToolChoice(Strict):
    """Whether and which tool the model should use."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"type": {"const": "tool"}}},
            "then": {"required": ["name"], "properties": {"name": {"type": "string"}}},
        },
    )

    type: Literal["auto", "any", "tool", "none"]
    """`none` hides the tools; `auto`, `any` and `tool` offer them (the model decides whether to call)."""
    name: str | None = None
    """The tool to use, with `type: tool`."""
    disable_parallel_tool_use: bool | None = None
    """Accepted; the model writes one call or several as it sees fit."""

    @model_validator(mode="after")
    def _tool_is_named(self) -> ToolChoice:
        if self.type == "tool" and self.name is None:
            raise ValueError("name: is required with type 'tool'")
        return self


class ThinkingConfig(Strict):
    """Extended thinking: a model that writes `<think>` gives thinking blocks when it is enabled."""

    type: Literal["enabled", "disabled", "adaptive"]
    """`enabled` returns the model's reasoning as thinking blocks."""
    budget_tokens: int | None = Field(default=None, ge=0)
    """Accepted; the reasoning counts against max_tokens."""


class OutputFormat(Strict):
    """Structured output: the answer is JSON matching a schema."""

    type: Literal["json_schema"]
    """Always `json_schema`."""
    json_schema: dict[str, Any] = Field(alias="schema")
    """The JSON schema the answer must match (held to it by a grammar)."""


class OutputConfig(Strict):
    """How the answer is shaped."""

    format: OutputFormat | None = None
    """Structured output; None for free text."""
    effort: str | None = None
    """Accepted and ignored: the model answers as it does."""


class MessagesRequest(Strict):
    """POST /v1/messages."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=SOMETHING_TO_ANSWER)

    model: ModelNameField
    """The model to answer with."""
    messages: list[MessageIn] = Field(min_length=1)
    """The conversation so far, alternating user and assistant turns."""
    max_tokens: int = Field(ge=1)
    """The most tokens to generate (bounded by the context)."""
    system: Annotated[str | list[ContentBlockIn] | None, text_blocks()] = None
    """The system prompt: a text, or text blocks."""
    stop_sequences: list[str] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    """Texts that end the answer; the one hit is named in `stop_sequence`."""
    stream: bool = False
    """Answer as server-sent events."""
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    """Randomness, 0 to 1 (0 is greedy)."""
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    """Nucleus sampling: keep the most likely tokens up to this probability mass."""
    top_k: int | None = Field(default=None, ge=0)
    """Keep only the K most likely tokens."""
    tools: list[ToolIn] | None = None
    """Tools the model may call."""
    tool_choice: ToolChoice | None = None
    """Whether the model should use the tools."""
    thinking: ThinkingConfig | None = None
    """Whether to return the model's reasoning."""
    metadata: dict[str, Any] | None = None
    """Request metadata (`user_id`); accepted and ignored."""
    service_tier: str | None = None
    """Accepted and ignored: there is one tier."""
    container: Any = None
    """Accepted and ignored: no code-execution containers here."""
    context_management: Any = None
    """Accepted and ignored."""
    mcp_servers: Annotated[list[dict[str, Any]] | None, empty(_NO_MCP)] = None
    """MCP servers for Anthropic to call; not available here (an empty list is fine)."""
    output_config: OutputConfig | None = None
    """Structured output (a JSON schema the answer must match)."""
    cache_control: dict[str, Any] | None = None
    """Prompt-caching hint; accepted and ignored (ingle reuses cached prompt prefixes on its own)."""
    diagnostics: Any = None
    """Accepted and ignored."""
    inference_geo: str | None = None
    """Accepted and ignored: inference runs here."""
    speed: str | None = None
    """Accepted and ignored."""
    user_profile_id: str | None = None
    """Accepted and ignored."""
    workspace_id: str | None = None
    """Accepted and ignored."""

    @model_validator(mode="after")
    def _something_to_answer(self) -> MessagesRequest:
        _check_something_to_answer(self.messages)
        return self


class CountTokensRequest(Strict):
    """POST /v1/messages/count_tokens: the parts of a Messages request that make the prompt."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=SOMETHING_TO_ANSWER)

    model: ModelNameField
    """The model whose tokenizer and template count."""
    messages: list[MessageIn] = Field(min_length=1)
    """The conversation."""
    system: Annotated[str | list[ContentBlockIn] | None, text_blocks()] = None
    """The system prompt."""
    tools: list[ToolIn] | None = None
    """Tools, which the template writes into the prompt."""
    tool_choice: ToolChoice | None = None
    """Whether the tools are offered."""
    thinking: ThinkingConfig | None = None
    """Accepted; thinking does not change the prompt."""
    mcp_servers: Annotated[list[dict[str, Any]] | None, empty(_NO_MCP)] = None
    """Not available here (an empty list is fine)."""

    @model_validator(mode="after")
    def _something_to_answer(self) -> CountTokensRequest:
        _check_something_to_answer(self.messages)
        return self


class TokenCount(BaseModel):
    """The answer of count_tokens."""

    input_tokens: int
    """Tokens the prompt takes, as the model's template and tokenizer make it."""


class ContentBlockOut(BaseModel):
    """A block of the answer: text, a tool call, or thinking."""

    type: Literal["text", "tool_use", "thinking"]
    """The kind of block."""
    text: str | None = None
    """A text block's text."""
    id: str | None = None
    """A tool_use block's id (`toolu_…`)."""
    name: str | None = None
    """A tool_use block's tool."""
    input: dict[str, Any] | None = None
    """A tool_use block's arguments."""
    thinking: str | None = None
    """A thinking block's reasoning."""
    signature: str | None = None
    """A thinking block's signature (empty: ingle does not sign reasoning)."""


class Usage(BaseModel):
    """Token counts."""

    input_tokens: int
    """Prompt tokens."""
    output_tokens: int
    """Generated tokens."""
    cache_read_input_tokens: int = 0
    """Prompt tokens reused from the cache instead of being decoded again."""
    cache_creation_input_tokens: int = 0
    """Always 0: ingle caches every prompt on its own."""


class MessageOut(BaseModel):
    """The answer to POST /v1/messages."""

    id: str
    """`msg_…`."""
    type: Literal["message"] = "message"
    """Always `message`."""
    role: Literal["assistant"] = "assistant"
    """Always `assistant`."""
    model: str
    """The model that answered."""
    content: list[ContentBlockOut]
    """The answer's blocks."""
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    """Why the answer ended."""
    stop_sequence: str | None = None
    """The stop sequence hit, when stop_reason is `stop_sequence`."""
    usage: Usage
    """Token counts."""
