"""Wire models of the OpenAI-compatible API (/v1): one pydantic model per request and response.

Requests list every field the official `openai` client sends, so a real
client never meets a 400 for a field it sets by default; fields ingle cannot
honour are accepted and either ignored (when ignoring changes nothing the
caller relies on) or refused in the handler with a sentence naming them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from ...core.generation import MAX_COMPLETION_LOGPROBS, MAX_TOP_LOGPROBS
from .common_wire import ONLY_ONE, KnowledgeNameField, Limit, ModelNameField, absent, one_prompt
from .sampling import LlamaCppSampling, TokenLimit

# --- requests -----------------------------------------------------------------


NO_LOGIT_BIAS = Limit({"maxProperties": 0}, "per-token biases are not supported", lambda biases: not biases)
_TEXT = {"type": "string", "minLength": 1}
TEXTS = Limit(
    {"anyOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1}]},
    "send a text or a list of texts, none empty; token-id arrays are not supported",
    lambda texts: (
        (isinstance(texts, str) and texts != "")
        or (isinstance(texts, list) and len(texts) > 0 and all(isinstance(text, str) and text for text in texts))
    ),
)

MAX_EMBEDDING_INPUTS = 2048
"""Texts per embedding request, as OpenAI allows: each answer holds a vector per text."""
EMBEDDING_INPUTS = Limit(
    {"maxItems": MAX_EMBEDDING_INPUTS},
    f"send at most {MAX_EMBEDDING_INPUTS} texts per request; split the rest over more requests",
    lambda texts: isinstance(texts, str) or len(texts) <= MAX_EMBEDDING_INPUTS,
)


class Input(BaseModel):
    """Base of every request part: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StreamOptions(Input):
    """What a streamed answer carries besides the text."""

    include_usage: bool | None = None
    """Send a last chunk with the token counts (and empty `choices`)."""
    include_obfuscation: bool | None = None
    """Accepted for compatibility; ingle adds no obfuscation padding."""


class ContentPart(Input):
    """One part of a message's content; only text parts can be used."""

    type: Annotated[
        Literal["text", "image_url", "input_audio", "file", "refusal"],
        Limit(
            {"enum": ["text", "refusal"]},
            "only text parts are supported; ingle's models read text",
            lambda kind: kind in ("text", "refusal"),
        ),
    ]
    """The kind of part; ingle's models read `text` (and earlier `refusal`) parts only."""
    text: str | None = None
    """The text of a `text` part."""
    refusal: str | None = None
    """The text of a `refusal` part (an earlier assistant turn)."""
    image_url: dict[str, Any] | None = None
    """An image; not supported."""
    input_audio: dict[str, Any] | None = None
    """Audio; not supported."""
    file: dict[str, Any] | None = None
    """A file; not supported."""
    prompt_cache_breakpoint: dict[str, Any] | None = None
    """Accepted for compatibility; ingle caches prompts on its own."""


class FunctionCallIn(Input):
    """The function an earlier assistant turn called."""

    name: str
    """Name of the function."""
    arguments: str = "{}"
    """Its arguments, as a JSON text."""


class ToolCallIn(Input):
    """A tool call made in an earlier assistant turn."""

    id: str | None = None
    """The call's id, which the `tool` message answering it repeats."""
    type: Literal["function"] = "function"
    """Only function tools exist here."""
    function: FunctionCallIn
    """Which function, with which arguments."""


class ChatMessageIn(Input):
    """One turn of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    """Who speaks; `developer` is treated as `system`, `function` as `tool`."""
    content: str | list[ContentPart] | None = None
    """The text, or a list of parts of which only `text` parts are allowed."""
    name: str | None = None
    """Optional name of the speaker (or the function, for `function` messages)."""
    tool_calls: list[ToolCallIn] | None = None
    """Tool calls an assistant turn made."""
    tool_call_id: str | None = None
    """For `tool` messages: the call this answers."""
    refusal: str | None = None
    """An assistant turn's refusal; accepted and ignored."""
    function_call: FunctionCallIn | None = None
    """Legacy function call of an assistant turn; read as a tool call."""
    audio: Annotated[dict[str, Any] | None, absent("audio is not supported")] = None
    """Audio of an assistant turn; not supported."""


class FunctionDefinition(Input):
    """A function the model may call."""

    name: str
    """Name the model uses to call it."""
    description: str | None = None
    """What it does, for the model."""
    parameters: dict[str, Any] | None = None
    """JSON schema of its arguments."""
    strict: bool | None = None
    """Accepted for compatibility; arguments are not constrained to the schema."""


class ToolDefinition(Input):
    """A tool the model may call; only function tools exist here."""

    type: Literal["function"] = "function"
    """Always `function`."""
    function: FunctionDefinition
    """The function."""


class JsonSchemaSpec(Input):
    """The schema a `json_schema` response format names."""

    name: str | None = None
    """Name of the schema (informational)."""
    description: str | None = None
    """What the output is (informational)."""
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    """The JSON schema the answer must match."""
    strict: bool | None = None
    """Accepted for compatibility; the schema is always enforced by a grammar."""


class ResponseFormat(Input):
    """Constraint on the answer's shape."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "if": {"properties": {"type": {"const": "json_schema"}}},
            "then": {
                "required": ["json_schema"],
                "properties": {
                    "json_schema": {
                        "type": "object",
                        "required": ["schema"],
                        "properties": {"schema": {"type": "object"}},
                    }
                },
            },
        },
    )

    type: Literal["text", "json_object", "json_schema"]
    """`text` (none), `json_object` (any JSON object) or `json_schema` (match a schema)."""
    json_schema: JsonSchemaSpec | None = None
    """The schema, for `json_schema`."""

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.json_schema is None):
            raise ValueError("json_schema.schema: give the JSON schema")
        return self


class ChatCompletionRequest(LlamaCppSampling):
    """POST /v1/chat/completions."""

    model: ModelNameField
    """Model to use, as `ingle list` shows it."""
    messages: list[ChatMessageIn] = Field(min_length=1)
    """The conversation so far."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Sampling temperature; 0 is greedy."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches this."""
    max_tokens: TokenLimit | None = None
    """Tokens to generate at most (-1 or absent: until the model stops; 0 is refused, as OpenAI does)."""
    max_completion_tokens: TokenLimit | None = None
    """Newer name of `max_tokens`; wins when both are given."""
    stop: str | list[str] | None = None
    """Text at which the answer ends (not included)."""
    seed: int | None = None
    """Seed for reproducible sampling."""
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    """Penalty for tokens that appeared at all."""
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    """Penalty growing with how often a token appeared."""
    response_format: ResponseFormat | None = None
    """Constrain the answer to JSON or to a JSON schema."""
    tools: list[ToolDefinition] | None = None
    """Functions the model may call."""
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    """`none` hides the tools; `auto`, `required` or a named function offer them (best effort);
    `{"type": "allowed_tools", "allowed_tools": {"mode": …, "tools": […]}}` offers only those it names."""
    knowledge: list[KnowledgeNameField] | None = Field(default=None, max_length=8)
    """ingle extension: knowledge bases to answer from; the answer cites numbered sources."""
    parallel_tool_calls: bool | None = None
    """Accepted for compatibility; the model may make several calls."""
    n: Annotated[int | None, Field(ge=1), ONLY_ONE] = None
    """Number of choices; only 1 is supported."""
    stream: bool | None = False
    """Stream the answer as server-sent events."""
    stream_options: StreamOptions | None = None
    """Options of a streamed answer."""
    logprobs: bool | None = None
    """Give each generated token's log-probability (in `choices[0].logprobs.content`)."""
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    """And this many of the most likely tokens at each place, with theirs; more than 0 implies `logprobs`."""
    logit_bias: Annotated[dict[str, float] | None, NO_LOGIT_BIAS] = None
    """Per-token biases; not supported."""
    user: str | None = None
    """End-user id; accepted and ignored."""
    metadata: dict[str, Any] | None = None
    """Accepted and ignored."""
    store: bool | None = None
    """Accepted and ignored; ingle stores no completions."""
    service_tier: str | None = None
    """Accepted and ignored."""
    prompt_cache_key: str | None = None
    """Accepted and ignored; ingle caches prompts on its own."""
    prompt_cache_retention: str | None = None
    """Accepted and ignored."""
    safety_identifier: str | None = None
    """Accepted and ignored."""
    reasoning_effort: str | None = None
    """Accepted and ignored."""
    verbosity: str | None = None
    """Accepted and ignored."""
    modalities: Annotated[
        list[str] | None,
        Limit(
            {"items": {"const": "text"}},
            "only text output is supported",
            lambda kinds: set(kinds or ["text"]) == {"text"},
        ),
    ] = None
    """Output modalities; only `text`."""
    audio: Annotated[dict[str, Any] | None, absent("only text output is supported")] = None
    """Audio output; not supported."""
    prediction: dict[str, Any] | None = None
    """Predicted output; accepted and ignored."""
    web_search_options: Annotated[dict[str, Any] | None, absent("web search is not supported")] = None
    """Web search; not supported."""
    functions: list[FunctionDefinition] | None = None
    """Legacy name of `tools` (functions only)."""
    function_call: str | dict[str, Any] | None = None
    """Legacy name of `tool_choice`."""


class CompletionRequest(LlamaCppSampling):
    """POST /v1/completions."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {  # echo repeats the prompt, which a suffix would split
                    "if": {"required": ["echo"], "properties": {"echo": {"const": True}}},
                    "then": {"properties": {"suffix": {"type": "null"}}},
                },
                {  # an empty prompt ("" or [""]) is fine before a suffix (the cursor at a file's start), not alone
                    "if": {
                        "required": ["prompt"],
                        "properties": {"prompt": {"maxLength": 0, "items": {"maxLength": 0}}},
                    },
                    "then": {"required": ["suffix"], "properties": {"suffix": {"type": "string"}}},
                },
            ]
        },
    )

    model: ModelNameField
    """Model to use."""
    prompt: Annotated[str | list[str] | list[int] | list[list[int]], one_prompt(min_length=0)]
    """The text to continue (one string); with `suffix`, the text before the cursor."""
    suffix: str | None = None
    """Text after the cursor: makes this a fill-in-the-middle completion."""
    max_tokens: TokenLimit | None = 16
    """Tokens to generate at most (default 16, as OpenAI; -1: until the model stops; 0 is refused)."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Sampling temperature; 0 is greedy."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    stop: str | list[str] | None = None
    """Text at which the completion ends (not included)."""
    seed: int | None = None
    """Seed for reproducible sampling."""
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    """Penalty for tokens that appeared at all."""
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    """Penalty growing with how often a token appeared."""
    echo: bool | None = None
    """Put the prompt in front of the completion."""
    n: Annotated[int | None, Field(ge=1), ONLY_ONE] = None
    """Number of choices; only 1 is supported."""
    best_of: Annotated[int | None, Field(ge=1), ONLY_ONE] = None
    """Candidates to pick from; only 1 is supported."""
    stream: bool | None = False
    """Stream the completion as server-sent events."""
    stream_options: StreamOptions | None = None
    """Options of a streamed answer."""
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    """Give each generated token's log-probability, with this many of the most likely tokens at its place."""
    logit_bias: Annotated[dict[str, float] | None, NO_LOGIT_BIAS] = None
    """Per-token biases; not supported."""
    user: str | None = None
    """End-user id; accepted and ignored."""

    @model_validator(mode="after")
    def _echo_without_suffix(self) -> CompletionRequest:
        if self.echo and self.suffix is not None:
            raise ValueError("echo: cannot be combined with suffix")
        if self.prompt in ("", [""]) and self.suffix is None:
            raise ValueError("prompt: is empty; give the model some text to continue")
        return self


class EmbeddingRequest(Input):
    """POST /v1/embeddings."""

    model: ModelNameField
    """Model to embed with."""
    input: Annotated[str | list[str] | list[int] | list[list[int]], TEXTS, EMBEDDING_INPUTS]
    """A text or a list of at most 2048 texts."""
    encoding_format: Literal["float", "base64"] = "float"
    """`float` lists, or `base64` of little-endian float32 bytes (the openai client's default)."""
    dimensions: Annotated[int | None, Field(ge=1), absent("is not supported; vectors have the model's own size")] = None
    """Truncated dimensions; not supported (vectors have the model's size)."""
    user: str | None = None
    """End-user id; accepted and ignored."""


# --- responses ----------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    """Breakdown of the prompt tokens."""

    cached_tokens: int
    """Prompt tokens reused from the cache instead of being processed again."""


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    """Tokens in the prompt."""
    completion_tokens: int
    """Tokens generated."""
    total_tokens: int
    """Sum of both."""
    prompt_tokens_details: PromptTokensDetails | None = None
    """How many prompt tokens came from the cache."""


class FunctionCallOut(BaseModel):
    """The function a tool call calls."""

    name: str
    """Function name."""
    arguments: str
    """Arguments as a JSON text."""


class ToolCallOut(BaseModel):
    """One tool call the model made."""

    id: str
    """Id the answering `tool` message repeats."""
    type: Literal["function"] = "function"
    """Always `function`."""
    function: FunctionCallOut
    """Name and arguments."""


class AssistantMessage(BaseModel):
    """The answer."""

    role: Literal["assistant"] = "assistant"
    """Always `assistant`."""
    content: str | None
    """The text; null when the answer is only tool calls."""
    reasoning_content: str | None = None
    """The model's reasoning (`<think>` text), kept out of `content`, as llama-server does."""
    tool_calls: list[ToolCallOut] | None = None
    """Tool calls, when the model made any."""
    refusal: str | None = None
    """Always null."""


class TopLogprob(BaseModel):
    """A token and its log-probability under the model (raw logits, before penalties and temperature)."""

    token: str
    """The token's text."""
    logprob: float
    """Natural log of its probability."""
    bytes: list[int] | None
    """The token's UTF-8 bytes (a token may end inside a character)."""


class TokenLogprobOut(TopLogprob):
    """A generated token's log-probability, with the most likely tokens at its place."""

    top_logprobs: list[TopLogprob]
    """As many as `top_logprobs` asked for, most likely first."""


class ChoiceLogprobs(BaseModel):
    """The log-probabilities of a chat answer's tokens (of a chunk's, when streamed)."""

    content: list[TokenLogprobOut] | None
    """One per token, in order."""
    refusal: None = None
    """Always null."""


class ChatChoice(BaseModel):
    """The one choice of a chat completion."""

    index: int = 0
    """Always 0."""
    message: AssistantMessage
    """The answer."""
    finish_reason: Literal["stop", "length", "tool_calls"]
    """Why it ended: end of answer or stop text, token limit, or tool calls."""
    logprobs: ChoiceLogprobs | None = None
    """The tokens' log-probabilities, when `logprobs` was asked for."""


class ChatCompletion(BaseModel):
    """Answer of POST /v1/chat/completions."""

    id: str
    """`chatcmpl-…`."""
    object: Literal["chat.completion"] = "chat.completion"
    """Object type."""
    created: int
    """Unix seconds."""
    model: str
    """The model that answered."""
    system_fingerprint: str = "ingle"
    """Always `ingle`."""
    choices: list[ChatChoice]
    """One choice."""
    usage: Usage
    """Token counts."""


class ToolCallDelta(BaseModel):
    """A tool call inside a streamed chunk."""

    index: int
    """Position among the answer's tool calls."""
    id: str
    """Id of the call."""
    type: Literal["function"] = "function"
    """Always `function`."""
    function: FunctionCallOut
    """Name and the complete arguments."""


class ChatDelta(BaseModel):
    """What a streamed chunk adds to the answer; absent fields are left out."""

    role: Literal["assistant"] | None = None
    """`assistant`, in the first chunk only."""
    content: str | None = None
    """More text."""
    reasoning_content: str | None = None
    """More reasoning (`<think>` text)."""
    tool_calls: list[ToolCallDelta] | None = None
    """Tool calls, sent whole once the answer is complete."""

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class ChatChunkChoice(BaseModel):
    """The one choice of a streamed chunk."""

    index: int = 0
    """Always 0."""
    delta: ChatDelta
    """What this chunk adds."""
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None
    """Set in the last content chunk."""
    logprobs: ChoiceLogprobs | None = None
    """The log-probabilities of this chunk's tokens, when `logprobs` was asked for."""


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    """Same id in every chunk of one answer."""
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    """Object type."""
    created: int
    """Unix seconds."""
    model: str
    """The model that answers."""
    system_fingerprint: str = "ingle"
    """Always `ingle`."""
    choices: list[ChatChunkChoice]
    """One choice; empty in the usage chunk."""
    usage: Usage | None = None
    """Token counts, in the last chunk when `stream_options.include_usage` is set."""


class CompletionLogprobs(BaseModel):
    """The legacy completions API's log-probabilities: parallel lists, one entry per token."""

    tokens: list[str]
    """Each token's text."""
    token_logprobs: list[float]
    """Each token's log-probability."""
    top_logprobs: list[dict[str, float]] | None
    """The most likely tokens at each place, by text; null when none were asked for."""
    text_offset: list[int]
    """Where each token's text starts in the completion (in characters)."""


class CompletionChoice(BaseModel):
    """The one choice of a text completion."""

    index: int = 0
    """Always 0."""
    text: str
    """The completion (or, streamed, the next piece of it)."""
    finish_reason: Literal["stop", "length"] | None = None
    """Why it ended; null in streamed chunks before the last."""
    logprobs: CompletionLogprobs | None = None
    """The tokens' log-probabilities, when `logprobs` was asked for."""


class Completion(BaseModel):
    """Answer of POST /v1/completions, and each of its streamed chunks."""

    id: str
    """`cmpl-…`."""
    object: Literal["text_completion"] = "text_completion"
    """Object type."""
    created: int
    """Unix seconds."""
    model: str
    """The model that answered."""
    system_fingerprint: str = "ingle"
    """Always `ingle`."""
    choices: list[CompletionChoice]
    """One choice; empty in the usage chunk."""
    usage: Usage | None = None
    """Token counts (streamed: in the last chunk, when asked for)."""


class EmbeddingData(BaseModel):
    """The vector of one input."""

    object: Literal["embedding"] = "embedding"
    """Object type."""
    index: int
    """Position of the input."""
    embedding: list[float] | str
    """The vector: floats, or base64 of little-endian float32 bytes."""


class EmbeddingUsage(BaseModel):
    """Token counts of an embedding request."""

    prompt_tokens: int
    """Tokens read."""
    total_tokens: int
    """Same as prompt_tokens."""


class EmbeddingList(BaseModel):
    """Answer of POST /v1/embeddings."""

    object: Literal["list"] = "list"
    """Object type."""
    data: list[EmbeddingData]
    """One vector per input, in input order."""
    model: str
    """The model that embedded."""
    usage: EmbeddingUsage
    """Token counts."""


class ModelCard(BaseModel):
    """One model, as GET /v1/models lists it."""

    id: str
    """The model's name, to pass as `model`."""
    object: Literal["model"] = "model"
    """Object type."""
    created: int
    """Unix seconds at which it entered the store."""
    owned_by: str = "ingle"
    """`ingle` for a model of this server's store; `upstream:<name>` for one an upstream serves."""


class ModelList(BaseModel):
    """Answer of GET /v1/models."""

    object: Literal["list"] = "list"
    """Object type."""
    data: list[ModelCard]
    """Every model in the store, then those only an upstream serves."""
