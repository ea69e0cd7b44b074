"""OpenAI Responses API wire format (`/v1/responses`): one pydantic model per request and response.

Requests list the fields the official `openai` client sends; fields ingle
cannot act on are accepted and ignored when ignoring them changes nothing the
caller relies on, or refused in the handler with a sentence naming them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...core.generation import MAX_TOP_LOGPROBS
from .common_wire import Limit, ModelNameField, absent

MAX_INPUT_ITEMS = 10_000
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
"""OpenAI's limits on a response's metadata, which is stored with it for responses_keep_days."""
METADATA = Limit(
    {
        "maxProperties": MAX_METADATA_PAIRS,
        "propertyNames": {"maxLength": MAX_METADATA_KEY},
        "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
    },
    f"give at most {MAX_METADATA_PAIRS} pairs, with keys of at most {MAX_METADATA_KEY} characters "
    f"and values of at most {MAX_METADATA_VALUE}",
    lambda pairs: (
        pairs is None
        or (
            len(pairs) <= MAX_METADATA_PAIRS
            and all(len(key) <= MAX_METADATA_KEY and len(value) <= MAX_METADATA_VALUE for key, value in pairs.items())
        )
    ),
)

MAX_TOOL_NAME = 128
"""The longest function name a tool may have, and so a tool choice, which names one of the tools."""
TOOL_CHOICE_MODES = ("none", "auto", "required")
MAX_ALLOWED_TOOLS = 128
"""The most tools an `allowed_tools` choice may name."""
_FUNCTION_NAMED = {
    "type": "object",
    "properties": {
        "type": {"const": "function"},
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_TOOL_NAME},
    },
    "required": ["type", "name"],
    "additionalProperties": False,
}


def _names_a_function(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and item.keys() == {"type", "name"}
        and item["type"] == "function"
        and isinstance(item["name"], str)
        and 1 <= len(item["name"]) <= MAX_TOOL_NAME
    )


def _is_tool_choice(choice: Any) -> bool:
    if choice is None or choice in TOOL_CHOICE_MODES or _names_a_function(choice):
        return True
    return (
        isinstance(choice, dict)
        and choice.keys() == {"type", "mode", "tools"}
        and choice["type"] == "allowed_tools"
        and choice["mode"] in ("auto", "required")
        and isinstance(choice["tools"], list)
        and len(choice["tools"]) <= MAX_ALLOWED_TOOLS
        and all(_names_a_function(item) for item in choice["tools"])
    )


TOOL_CHOICE = Limit(
    {
        "anyOf": [
            {"enum": list(TOOL_CHOICE_MODES)},
            _FUNCTION_NAMED,
            {
                "type": "object",
                "properties": {
                    "type": {"const": "allowed_tools"},
                    "mode": {"enum": ["auto", "required"]},
                    "tools": {"type": "array", "items": _FUNCTION_NAMED, "maxItems": MAX_ALLOWED_TOOLS},
                },
                "required": ["type", "mode", "tools"],
                "additionalProperties": False,
            },
            {"type": "null"},
        ]
    },
    f'give \'none\', \'auto\', \'required\', {{"type": "function", "name": NAME}} or {{"type": "allowed_tools", '
    f'"mode": "auto" or "required", "tools": [up to {MAX_ALLOWED_TOOLS} of those]}}, with names of at most '
    f"{MAX_TOOL_NAME} characters",
    _is_tool_choice,
)
"""What a tool choice means, and no more: a mode, or the one function to call. It is stored with the response."""

TEXT_PARTS = ("input_text", "output_text", "refusal")
"""The content parts ingle's models can read."""
_NOT_HERE = "is not available here; continue with previous_response_id"


class Input(BaseModel):
    """Base of every request part: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ContentPartIn(Input):
    """A part of an input message: text, or something ingle's models cannot read."""

    type: Annotated[
        Literal["input_text", "output_text", "refusal", "input_image", "input_file", "input_audio"],
        Limit({"enum": list(TEXT_PARTS)}, "only text is supported", lambda kind: kind in TEXT_PARTS),
    ]
    """The kind of part; ingle reads the text kinds."""
    text: str | None = None
    """The text of a text part."""
    refusal: str | None = None
    """The text of a refusal part (an earlier answer)."""
    annotations: list[Any] | None = None
    """An earlier answer's annotations; ignored."""
    logprobs: list[Any] | None = None
    """An earlier answer's log-probabilities; ignored."""
    image_url: str | None = None
    """An image; not supported."""
    file_id: str | None = None
    """A file; not supported."""
    file_data: str | None = None
    """A file; not supported."""
    filename: str | None = None
    """A file's name; not supported."""
    detail: str | None = None
    """An image's detail level; not supported."""
    input_audio: dict[str, Any] | None = None
    """Audio; not supported."""


class InputItem(Input):
    """One item of the input: a message, an earlier function call, a function's output, or earlier reasoning."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "allOf": [
                {  # a message (also when `type` is left out) names its author
                    "if": {"properties": {"type": {"const": "message"}}},
                    "then": {"required": ["role"], "properties": {"role": {"type": "string"}}},
                },
                {
                    "if": {"required": ["type"], "properties": {"type": {"const": "function_call"}}},
                    "then": {
                        "required": ["name", "call_id"],
                        "properties": {"name": {"type": "string", "minLength": 1}, "call_id": {"type": "string"}},
                    },
                },
                {"properties": {"type": {"not": {"const": "item_reference"}}}},
            ]
        },
    )

    type: Annotated[
        Literal["message", "function_call", "function_call_output", "reasoning", "item_reference"],
        Limit(
            {"enum": ["message", "function_call", "function_call_output", "reasoning"]},
            "item references are not available; send the item itself",
            lambda kind: kind != "item_reference",
        ),
    ] = "message"
    """The kind of item (a message when absent); item references are not available."""
    role: Literal["user", "assistant", "system", "developer"] | None = None
    """A message's author."""
    content: str | list[ContentPartIn] | None = None
    """A message's text, or its parts."""
    id: str | None = None
    """The item's id, when it came from an earlier response."""
    status: str | None = None
    """An earlier item's status; ignored."""
    call_id: str | None = Field(default=None, max_length=256)
    """A function call's id, which its output refers to."""
    name: str | None = Field(default=None, max_length=256)
    """A function call's function."""
    arguments: str | None = None
    """A function call's arguments, as a JSON text."""
    output: str | list[ContentPartIn] | None = None
    """A function call's output."""
    summary: list[Any] | None = None
    """Earlier reasoning's summary; ignored."""
    encrypted_content: str | None = None
    """Earlier reasoning; ignored."""

    @model_validator(mode="after")
    def _complete(self) -> InputItem:
        if self.type == "message" and self.role is None:
            raise ValueError("role: is required for a message")
        if self.type == "function_call" and (not self.name or self.call_id is None):
            raise ValueError("a function_call needs name and call_id")
        return self


class FunctionTool(Input):
    """A function the model may call."""

    type: Annotated[
        str,
        Field(max_length=64),
        Limit({"const": "function"}, "only function tools are available here", lambda kind: kind == "function"),
    ]
    """Only `function` tools are available here."""
    name: str = Field(min_length=1, max_length=MAX_TOOL_NAME)
    """The function's name."""
    description: str | None = None
    """What the function does, for the model."""
    parameters: dict[str, Any] | None = None
    """JSON schema of its arguments; the arguments the model writes are held to it."""
    strict: bool | None = None
    """Accepted: arguments are always held to the schema."""


class TextFormat(Input):
    """The shape of the answer's text."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "if": {"properties": {"type": {"const": "json_schema"}}},
            "then": {"required": ["schema"], "properties": {"schema": {"type": "object"}}},
        },
    )

    type: Literal["text", "json_object", "json_schema"]
    """Free text, any JSON, or JSON matching `schema`."""
    name: str | None = None
    """The schema's name."""
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    """The JSON schema the answer must match (held to it by a grammar)."""
    description: str | None = None
    """What the format is for; ignored."""
    strict: bool | None = None
    """Accepted: the answer always matches the schema."""

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> TextFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("schema: give the JSON schema")
        return self


class TextOptions(Input):
    """Text output options."""

    format: TextFormat | None = None
    """The answer's format."""
    verbosity: str | None = None
    """Accepted and ignored."""


class ReasoningOptions(Input):
    """Reasoning options."""

    effort: str | None = None
    """Accepted and ignored."""
    summary: str | None = None
    """Accepted and ignored."""
    generate_summary: str | None = None
    """Accepted and ignored."""


class ResponseRequest(Input):
    """POST /v1/responses."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            # Without an earlier response or instructions, the input must hold something to answer.
            "if": {"properties": {"previous_response_id": {"type": "null"}, "instructions": {"maxLength": 0}}},
            "then": {
                "properties": {
                    "input": {
                        "anyOf": [
                            {"type": "string"},
                            {
                                "contains": {
                                    "not": {"required": ["type"], "properties": {"type": {"const": "reasoning"}}}
                                }
                            },
                        ]
                    }
                }
            },
        },
    )

    model: ModelNameField
    """The model to answer with."""
    input: str | list[InputItem] = Field(max_length=MAX_INPUT_ITEMS)
    """A text, or input items."""
    instructions: str | None = None
    """A system prompt for this response (not carried to the next one)."""
    max_output_tokens: int | None = Field(default=None, ge=1)
    """The most tokens to generate (bounded by the context)."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Randomness (0 is greedy)."""
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    """Nucleus sampling."""
    text: TextOptions | None = None
    """The answer's format."""
    tools: list[FunctionTool] | None = None
    """Functions the model may call."""
    tool_choice: Annotated[str | dict[str, Any] | None, TOOL_CHOICE] = None
    """`none` hides the tools, `auto` offers them, `required` makes the answer call one;
    `{"type": "function", "name": NAME}` makes it call that one; `{"type": "allowed_tools", "mode": "auto" or
    "required", "tools": [{"type": "function", "name": NAME}, …]}` offers only those."""
    parallel_tool_calls: bool | None = None
    """Accepted; the model writes one call or several as it sees fit."""
    previous_response_id: str | None = Field(default=None, max_length=128)
    """Continue from a stored response: its conversation comes before `input`."""
    store: bool = True
    """Keep this response so it can be fetched or continued (until it expires)."""
    stream: bool = False
    """Answer as server-sent events."""
    metadata: Annotated[dict[str, str] | None, METADATA] = None
    """Up to 16 key-value pairs (keys of at most 64 characters, values of at most 512), returned and stored
    with the response, as OpenAI limits them."""
    reasoning: ReasoningOptions | None = None
    """Accepted and ignored."""
    truncation: Literal["auto", "disabled"] | None = None
    """Accepted; a prompt too long for the context is an error."""
    user: str | None = None
    """Accepted and ignored."""
    include: list[str] | None = None
    """`message.output_text.logprobs` adds the answer's token log-probabilities; the rest is accepted and ignored."""
    background: Annotated[
        bool | None,
        Limit({"not": {"const": True}}, "background responses are not available; leave it out", lambda on: not on),
    ] = None
    """Background responses are not available; false is fine."""
    prompt_cache_key: str | None = None
    """Accepted and ignored: ingle reuses cached prompt prefixes on its own."""
    prompt_cache_retention: str | None = None
    """Accepted and ignored."""
    safety_identifier: str | None = None
    """Accepted and ignored."""
    service_tier: str | None = None
    """Accepted and ignored."""
    stream_options: dict[str, Any] | None = None
    """Accepted and ignored."""
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    """This many of the most likely tokens at each place, with the log-probabilities; more than 0 implies
    `message.output_text.logprobs`."""
    max_tool_calls: int | None = None
    """Accepted and ignored."""
    conversation: Annotated[Any, absent(_NOT_HERE)] = None
    """Conversations are not available; use previous_response_id."""
    prompt: Annotated[Any, absent(_NOT_HERE)] = None
    """Stored prompts are not available."""

    @model_validator(mode="after")
    def _something_to_answer(self) -> ResponseRequest:
        alone = self.previous_response_id is None and not self.instructions
        if alone and isinstance(self.input, list) and all(item.type == "reasoning" for item in self.input):
            raise ValueError("input: give at least one message to answer (or previous_response_id)")
        return self


class ResponseObject(BaseModel):
    """A response, as created, fetched or streamed."""

    id: str
    """`resp_…`."""
    object: Literal["response"] = "response"
    """Always `response`."""
    created_at: int
    """Unix time of creation."""
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    """Whether the answer is whole."""
    model: str
    """The model that answered."""
    output: list[dict[str, Any]]
    """Output items: a `message` with `output_text`, `function_call`s, `reasoning`."""
    instructions: str | None = None
    """The instructions this response was made with."""
    max_output_tokens: int | None = None
    """The token limit it was made with."""
    temperature: float | None = None
    """The temperature it was made with."""
    top_p: float | None = None
    """The top_p it was made with."""
    tools: list[dict[str, Any]] = Field(default_factory=list)
    """The tools it was offered."""
    tool_choice: Any = "auto"
    """The tool choice it was made with."""
    parallel_tool_calls: bool = True
    """Always true."""
    previous_response_id: str | None = None
    """The response it continued."""
    store: bool = True
    """Whether it is stored."""
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    """The text format it was made with."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """The request's metadata."""
    usage: dict[str, Any] | None = None
    """Token counts: input_tokens (with cached_tokens), output_tokens, total_tokens."""
    incomplete_details: dict[str, Any] | None = None
    """Why the answer is incomplete (`max_output_tokens`)."""
    error: dict[str, Any] | None = None
    """Always null for an answered response."""


class DeletedResponse(BaseModel):
    """The answer to DELETE /v1/responses/{id}."""

    id: str
    """The deleted response's id."""
    object: Literal["response.deleted"] = "response.deleted"
    """Always `response.deleted`."""
    deleted: bool = True
    """Always true."""
