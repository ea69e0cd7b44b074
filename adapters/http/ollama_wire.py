"""The Ollama API's wire format: one pydantic model per request and response.

Requests accept every field the official `ollama` client (0.6.x) sends, so a
client never trips over `extra="forbid"`; fields ingle cannot honour are
either accepted and ignored (load-time tuning such as `num_gpu`) or refused
by the handler with a sentence naming the field. Durations are nanoseconds
and timestamps RFC 3339, as Ollama writes them.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.config import JsonDict

from ...core.errors import InvalidRequest
from ...core.generation import MAX_TOP_LOGPROBS
from .common_wire import KnowledgeNameField, Limit, ModelNameField, absent, empty
from .openai_wire import EMBEDDING_INPUTS

# --- request pieces -----------------------------------------------------------

_INT32_MAX = 2**31 - 1
"""llama.cpp takes these knobs as C ints."""

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)")
DURATION_PATTERN = rf"^[+-]?(?:{_NUMBER}|(?:{_NUMBER}(?:ns|us|µs|μs|ms|s|m|h))+)(?![\s\S])"
"""A keep_alive text: seconds, or a Go duration like `5m` or `1h30m`; in JSON Schema's and Python's regex alike."""
_DURATION_MAX_LENGTH = 64
_FOREVER = 100 * 365 * 24 * 3600.0
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float | None:
    """Seconds from Ollama's keep_alive: a number of seconds, or a Go duration like "5m", "1h30m", "-1".

    Any negative duration means "stay loaded" and becomes -1, as ingle's engine spells it; so does
    one longer than a century (Ollama's own ceiling is Go's largest duration, ~292 years).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds or a duration like '5m'")
    if isinstance(value, int):
        # Clamped first: an integer of hundreds of digits does not fit a float (OverflowError).
        seconds = float(max(-1, min(value, int(_FOREVER) + 1)))
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        # Bounded before the pattern, whose repeated group costs memory in proportion to the text.
        if len(value) > _DURATION_MAX_LENGTH or not re.search(DURATION_PATTERN, value):
            raise ValueError(f"'{value}' is not a duration: use seconds or units like '30s', '5m', '1h'")
        seconds = _parse_duration(value)
    else:
        raise ValueError("expected a number of seconds or a duration like '5m'")
    if math.isnan(seconds):
        raise ValueError("expected a number of seconds or a duration like '5m'")
    return -1.0 if seconds < 0 or seconds > _FOREVER else seconds


def _parse_duration(text: str) -> float:
    """A Go `time.ParseDuration` string in seconds; a bare number counts as seconds (as Ollama allows)."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)
    except ValueError:
        pass
    position, seconds = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(f"'{text}' is not a duration: use seconds or units like '30s', '5m', '1h'")
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not body:
        raise ValueError("expected a number of seconds or a duration like '5m'")
    return sign * seconds


KeepAlive = Annotated[
    float | None,
    BeforeValidator(parse_keep_alive),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": DURATION_PATTERN, "maxLength": _DURATION_MAX_LENGTH},
                {"type": "null"},
            ],
            "description": "Seconds, or a duration like '5m'; 0 unloads after the request, negative keeps it loaded.",
        }
    ),
]


def _check_format(value: Any) -> Any:
    if value is None or isinstance(value, dict) or value in ("", "json"):
        return value
    raise ValueError('expected "json" or a JSON schema object')


OutputFormat = Annotated[
    str | dict[str, Any] | None,
    BeforeValidator(_check_format),
    WithJsonSchema(
        {
            "anyOf": [{"enum": ["", "json"]}, {"type": "object"}, {"type": "null"}],
            "description": '"json" for any JSON value, or a JSON schema the answer must match.',
        }
    ),
]


_NO_IMAGES = "images are not supported; ingle's models read text only"
_NO_IMAGE_GENERATION = "image generation is not supported"
_TEMPLATE_NEEDS_RAW: JsonDict = {
    "if": {"required": ["template"], "properties": {"template": {"type": "string", "minLength": 1}}},
    "then": {"required": ["raw"], "properties": {"raw": {"const": True}}},
}
"""A non-empty `template` only with `raw: true`, in the schema's words."""


class OllamaOptions(BaseModel):
    """Ollama's `options`: sampling knobs ingle honours, and load-time knobs it accepts and ignores."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_predict: int | None = None
    """Tokens to generate at most; -1 (or -2) means no limit; 0 is refused."""
    temperature: float | None = Field(default=None, ge=0.0)
    """Randomness of sampling; 0 always picks the most likely token."""
    top_k: int | None = Field(default=None, ge=0, le=_INT32_MAX)
    """Keep only the K most likely tokens (0 disables)."""
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    """Keep the smallest set of tokens whose probabilities add up to this."""
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    """Drop tokens less likely than this fraction of the most likely one."""
    repeat_penalty: float | None = Field(default=None, ge=0.0)
    """Penalty for repeating recent tokens (1.0 disables)."""
    repeat_last_n: int | None = Field(default=None, ge=-1, le=_INT32_MAX)
    """How many recent tokens the repeat penalty looks at (-1: the whole context)."""
    presence_penalty: float | None = None
    """Penalty for tokens that appeared at all."""
    frequency_penalty: float | None = None
    """Penalty growing with how often a token appeared."""
    seed: int | None = None
    """Random seed, for repeatable sampling; negative means random."""
    stop: list[str] | str | None = None
    """Strings that end the answer; they are not included in it."""

    num_keep: int | None = None
    """Accepted for compatibility; not used."""
    typical_p: float | None = None
    """Accepted for compatibility; not used."""
    tfs_z: float | None = None
    """Accepted for compatibility; not used."""
    mirostat: int | None = None
    """Accepted for compatibility; not used."""
    mirostat_tau: float | None = None
    """Accepted for compatibility; not used."""
    mirostat_eta: float | None = None
    """Accepted for compatibility; not used."""
    penalize_newline: bool | None = None
    """Accepted for compatibility; not used."""
    numa: bool | None = None
    """Accepted for compatibility; the server's settings decide how models load."""
    num_ctx: int | None = Field(default=None, ge=0)
    """Accepted for compatibility; the context size is the server's `num_ctx` setting."""
    num_batch: int | None = Field(default=None, ge=0)
    """Accepted for compatibility; the batch size is the server's `num_batch` setting."""
    num_gpu: int | None = None
    """Accepted for compatibility; not used."""
    main_gpu: int | None = None
    """Accepted for compatibility; not used."""
    low_vram: bool | None = None
    """Accepted for compatibility; not used."""
    f16_kv: bool | None = None
    """Accepted for compatibility; not used."""
    logits_all: bool | None = None
    """Accepted for compatibility; not used."""
    vocab_only: bool | None = None
    """Accepted for compatibility; not used."""
    use_mmap: bool | None = None
    """Accepted for compatibility; not used."""
    use_mlock: bool | None = None
    """Accepted for compatibility; not used."""
    embedding_only: bool | None = None
    """Accepted for compatibility; not used."""
    num_thread: int | None = Field(default=None, ge=0)
    """Accepted for compatibility; the thread count is the server's `num_threads` setting."""


class ToolCallFunction(BaseModel):
    """The function a tool call names, with its arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """Name of the function."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Arguments, as a JSON object."""
    index: int | None = None
    """Position of the call among the message's calls (sent by newer clients)."""


class ToolCall(BaseModel):
    """One call of a tool by the model."""

    model_config = ConfigDict(extra="forbid")

    function: ToolCallFunction
    """What is called."""
    id: str | None = None
    """Identifier of the call (sent by newer clients)."""


class Message(BaseModel):
    """One turn of a chat, as the client sends it."""

    model_config = ConfigDict(extra="forbid")

    role: str
    """`system`, `user`, `assistant` or `tool`."""
    content: str = ""
    """Text of the message."""
    thinking: str | None = None
    """Reasoning of an earlier assistant turn; not fed back to the model."""
    images: Annotated[list[str] | None, empty(_NO_IMAGES)] = None
    """Base64 images; ingle's models take text only, so a non-empty list is refused."""
    tool_calls: list[ToolCall] | None = None
    """Tools an earlier assistant turn called."""
    tool_name: str | None = None
    """For a `tool` message: the tool whose result this is."""
    tool_call_id: str | None = None
    """For a `tool` message: the call it answers (sent by newer clients)."""


class _ModelRequest(BaseModel):
    """Fields every generation request shares."""

    model_config = ConfigDict(extra="forbid")

    model: ModelNameField
    """Name of the model, like `qwen2.5-coder:0.5b`."""
    stream: bool = True
    """Stream NDJSON chunks (default), or answer with one JSON object at the end."""
    options: OllamaOptions | None = None
    """Sampling options."""
    format: OutputFormat = None
    """Constrain the answer to JSON, or to a JSON schema."""
    keep_alive: KeepAlive = None
    """How long the model stays loaded after this request."""
    think: bool | str | None = None
    """Return the model's reasoning (`<think>…</think>`) separately as `thinking`; a level string counts as true."""
    logprobs: bool | None = None
    """Give each generated token's log-probability (`logprobs` on each line)."""
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    """And this many of the most likely tokens at each place, with theirs; more than 0 implies `logprobs`."""

    @property
    def logprob_count(self) -> int | None:
        """The alternatives to report per token; None when no log-probabilities were asked for."""
        return (self.top_logprobs or 0) if self.logprobs or self.top_logprobs else None


class GenerateRequest(_ModelRequest):
    """POST /api/generate: complete a prompt, or fill in the middle between prompt and suffix."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_TEMPLATE_NEEDS_RAW)

    prompt: str | None = None
    """Text to answer; empty (with no suffix) only loads the model."""
    suffix: str | None = None
    """Text after the cursor: makes this a fill-in-the-middle request."""
    system: str | None = None
    """System prompt; overrides the model's own."""
    template: str | None = None
    """Per-request prompt templates are not supported: only an empty one, or any with `raw: true` (then unused)."""
    context: list[int] | None = None
    """Accepted for compatibility and ignored: ingle reuses cached prompt prefixes on its own."""
    raw: bool | None = None
    """Feed the prompt as is, without the chat template."""
    images: Annotated[list[str] | None, empty(_NO_IMAGES)] = None
    """Base64 images; ingle's models take text only, so a non-empty list is refused."""
    width: Annotated[int | None, absent(_NO_IMAGE_GENERATION)] = None
    """Image generation is not supported; must be left out."""
    height: Annotated[int | None, absent(_NO_IMAGE_GENERATION)] = None
    """Image generation is not supported; must be left out."""
    steps: Annotated[int | None, absent(_NO_IMAGE_GENERATION)] = None
    """Image generation is not supported; must be left out."""

    @model_validator(mode="after")
    def _template_only_when_raw(self) -> GenerateRequest:
        if self.template and not self.raw:
            raise ValueError(
                "template: per-request templates are not supported; use raw: true with a prompt you formatted yourself"
            )
        return self


class ChatRequest(_ModelRequest):
    """POST /api/chat: answer the next turn of a conversation."""

    messages: list[Message] = Field(default_factory=list)
    """The conversation so far; empty only loads (or, with keep_alive 0, unloads) the model."""
    tools: list[dict[str, Any]] | None = None
    """Tools the model may call, as JSON schemas (`{"type": "function", "function": {…}}`)."""
    knowledge: list[KnowledgeNameField] | None = Field(default=None, max_length=8)
    """ingle extension: knowledge bases to answer from; the answer cites numbered sources."""


class EmbedRequest(BaseModel):
    """POST /api/embed: one vector per input text."""

    model_config = ConfigDict(extra="forbid")

    model: ModelNameField
    """Name of the model."""
    input: Annotated[
        str | list[str],
        Limit(
            # Empty (or one empty text) loads the model, as in Ollama; otherwise no text may be empty.
            {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "maxItems": 1},
                    {"type": "array", "items": {"type": "string", "minLength": 1}},
                ]
            },
            "no text may be empty",
            lambda texts: isinstance(texts, str) or len(texts) <= 1 or all(texts),
        ),
        EMBEDDING_INPUTS,
    ] = ""
    """A text or a list of at most 2048 texts."""
    truncate: bool = True
    """Cut inputs longer than the embedding context instead of refusing them."""
    options: OllamaOptions | None = None
    """Accepted for compatibility; sampling options do not affect embeddings."""
    keep_alive: KeepAlive = None
    """How long the model stays loaded after this request."""
    dimensions: int | None = Field(default=None, ge=1)
    """Cut each vector to this many dimensions (and normalise it again)."""


class EmbeddingsRequest(BaseModel):
    """POST /api/embeddings (legacy): the vector of one prompt."""

    model_config = ConfigDict(extra="forbid")

    model: ModelNameField
    """Name of the model."""
    prompt: str = ""
    """Text to embed."""
    options: OllamaOptions | None = None
    """Accepted for compatibility; sampling options do not affect embeddings."""
    keep_alive: KeepAlive = None
    """How long the model stays loaded after this request."""


_MODEL_OR_NAME: JsonDict = {"anyOf": [{"required": ["model"]}, {"required": ["name"]}]}
"""The schema's way of saying that one of the two is required."""


class _NamedModelRequest(BaseModel):
    """A request about one stored model, by `model` or by its legacy name `name`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_MODEL_OR_NAME)

    # Field(default=None) without `| None`: leaving a name out is fine, sending null is not.
    model: ModelNameField = Field(default=None)  # pyright: ignore[reportAssignmentType]
    """Name of the model."""
    name: ModelNameField = Field(default=None)  # pyright: ignore[reportAssignmentType]
    """Legacy spelling of `model`."""

    @property
    def model_name(self) -> str:
        """The model the request is about; InvalidRequest naming `model` when neither field is given."""
        return _model_or_name(self.model, self.name)


def _model_or_name(model: str | None, name: str | None) -> str:
    if not (model or name):
        raise InvalidRequest("model: a model name is required.")
    return model or name or ""


class ShowRequest(_NamedModelRequest):
    """POST /api/show: what the store knows about a model."""

    verbose: bool | None = None
    """Accepted for compatibility; the answer is the same."""
    system: str | None = None
    """Accepted for compatibility (old clients); ignored."""
    options: OllamaOptions | None = None
    """Accepted for compatibility (old clients); ignored."""


class DeleteRequest(_NamedModelRequest):
    """DELETE /api/delete: remove a model's name (and its file once no name uses it)."""


class PullRequest(BaseModel):
    """POST /api/pull: fetch a model. `model` is a pull spec (`default`, `hf:…`, `https://…`, `pypi:…`, `file:…`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_MODEL_OR_NAME)

    model: str = Field(default=None, min_length=1, max_length=4096)  # pyright: ignore[reportAssignmentType]
    """What to pull: `default`, `hf:owner/repo/file.gguf`, `https://…`, `pypi:…`, or a model name."""
    name: str = Field(default=None, min_length=1, max_length=4096)  # pyright: ignore[reportAssignmentType]
    """Legacy spelling of `model`."""

    @property
    def model_name(self) -> str:
        """What to pull; InvalidRequest naming `model` when neither field is given."""
        return _model_or_name(self.model, self.name).strip()

    insecure: bool | None = None
    """Accepted for compatibility; sources decide what they accept (plain http is refused)."""
    stream: bool = True
    """Stream progress as NDJSON (default), or answer once at the end."""
    store_as: ModelNameField | None = None
    """ingle's extension (`ingle pull --name`): the name to store the model under, instead of one from the source."""
    sha256: str | None = Field(default=None, pattern=r"^(sha256[:-])?[0-9a-fA-F]{64}$")
    """ingle's extension (`ingle pull --sha256`): the file's expected sha256 (hex); a pull of other bytes fails."""


class CopyRequest(BaseModel):
    """POST /api/copy: give a model a second name."""

    model_config = ConfigDict(extra="forbid")

    source: ModelNameField
    """Existing model name."""
    destination: ModelNameField
    """New name."""


# --- responses ----------------------------------------------------------------


class GenerationTimings(BaseModel):
    """Counts and timings of the final chunk of a generation; durations in nanoseconds."""

    done_reason: str | None = None
    """Why generation ended: `stop`, `length`, `load`, `unload`."""
    total_duration: int | None = None
    """Whole request, loading included."""
    load_duration: int | None = None
    """Time spent loading the model."""
    prompt_eval_count: int | None = None
    """Tokens in the prompt."""
    prompt_eval_duration: int | None = None
    """Time to process the prompt."""
    eval_count: int | None = None
    """Tokens generated."""
    eval_duration: int | None = None
    """Time spent generating them."""


class TokenLogprobOut(BaseModel):
    """A token and its log-probability under the model (raw logits, before penalties and temperature)."""

    token: str
    """The token's text."""
    logprob: float
    """Natural log of its probability."""
    bytes: list[int]
    """The token's UTF-8 bytes (a token may end inside a character)."""


class LogprobOut(TokenLogprobOut):
    """A generated token's log-probability, with the most likely tokens at its place."""

    top_logprobs: list[TokenLogprobOut] | None = None
    """As many as `top_logprobs` asked for, most likely first."""


class GenerateChunk(GenerationTimings):
    """One line of a /api/generate stream, or the whole non-streamed answer."""

    model: str
    """The model, as the request named it."""
    created_at: str
    """When this chunk was made (RFC 3339, UTC)."""
    response: str
    """Generated text (a fragment, when streaming)."""
    thinking: str | None = None
    """Reasoning, when `think` was asked for."""
    done: bool
    """True on the last chunk, which carries the timings."""
    logprobs: list[LogprobOut] | None = None
    """The log-probabilities of the tokens of this line, when `logprobs` was asked for."""


class ResponseMessage(BaseModel):
    """The assistant's message (or a fragment of it, when streaming)."""

    role: str = "assistant"
    """Always `assistant`."""
    content: str = ""
    """Answer text."""
    thinking: str | None = None
    """Reasoning, when `think` was asked for."""
    tool_calls: list[ToolCall] | None = None
    """Tools the model called."""


class ChatChunk(GenerationTimings):
    """One line of a /api/chat stream, or the whole non-streamed answer."""

    model: str
    """The model, as the request named it."""
    created_at: str
    """When this chunk was made (RFC 3339, UTC)."""
    message: ResponseMessage
    """The assistant's message, or a fragment of it."""
    done: bool
    """True on the last chunk, which carries the timings."""
    logprobs: list[LogprobOut] | None = None
    """The log-probabilities of the tokens of this line, when `logprobs` was asked for."""


class EmbedResponse(BaseModel):
    """Answer of /api/embed."""

    model: str
    """The model, as the request named it."""
    embeddings: list[list[float]]
    """One normalised vector per input, in order."""
    total_duration: int
    """Whole request, in nanoseconds."""
    load_duration: int
    """Time spent loading the model, in nanoseconds."""
    prompt_eval_count: int
    """Tokens read from all inputs."""


class EmbeddingsResponse(BaseModel):
    """Answer of the legacy /api/embeddings."""

    embedding: list[float]
    """The prompt's vector."""


class ModelDetails(BaseModel):
    """What kind of model a file holds."""

    parent_model: str = ""
    """Always empty: ingle models are not derived from other models."""
    format: str = "gguf"
    """File format."""
    family: str
    """Architecture, like `qwen2`."""
    families: list[str]
    """Architectures (one)."""
    parameter_size: str
    """Parameter count, like `494.03M` (empty when unknown)."""
    quantization_level: str
    """Quantization, like `Q4_K_M` (empty when unknown)."""


class ListedModel(BaseModel):
    """One model of /api/tags."""

    name: str
    """Model name, `name:tag`."""
    model: str
    """Model name again (newer clients read this one)."""
    modified_at: str
    """When it was pulled (RFC 3339)."""
    size: int
    """Bytes of the model file."""
    digest: str
    """sha256 of the file, hex."""
    details: ModelDetails
    """What kind of model it is."""
    remote_model: str | None = None
    """For a model an upstream serves: its name there (Ollama's field for models served elsewhere)."""
    remote_host: str | None = None
    """For a model an upstream serves: which upstream (its `name`, else its host and port)."""


class TagsResponse(BaseModel):
    """Answer of /api/tags: the models in the store."""

    models: list[ListedModel]
    """Every stored model, by name."""


class ShowResponse(BaseModel):
    """Answer of /api/show."""

    modelfile: str
    """The model as an Ollama Modelfile."""
    parameters: str
    """Default parameters, one `name value` per line."""
    template: str
    """Chat template (Jinja, from the GGUF or the manifest)."""
    system: str | None = None
    """Default system prompt."""
    license: str | None = None
    """License named in the GGUF."""
    details: ModelDetails
    """What kind of model it is."""
    model_info: dict[str, Any]
    """GGUF metadata: `general.architecture`, `<arch>.context_length`, …"""
    capabilities: list[str]
    """`completion`, `insert` (fill-in-the-middle), `tools`, `embedding`."""
    modified_at: str
    """When it was pulled (RFC 3339)."""


class RunningModelInfo(BaseModel):
    """One model of /api/ps."""

    name: str
    """Model name."""
    model: str
    """Model name again (newer clients read this one)."""
    size: int
    """Bytes the loaded model occupies in memory."""
    digest: str
    """sha256 of the file, hex."""
    details: ModelDetails
    """What kind of model it is."""
    expires_at: str
    """When it unloads (RFC 3339); far in the future when it stays loaded; already past while an unload waits
    for the requests in flight, which `ollama ps` shows as stopping."""
    size_vram: int = 0
    """Bytes in GPU memory: ingle runs on the CPU."""
    context_length: int
    """Context window of one sequence, in tokens."""
    parallel: int = 1
    """Requests the model serves at once (its sequences); ingle's addition."""


class PsResponse(BaseModel):
    """Answer of /api/ps: the models in memory."""

    models: list[RunningModelInfo]
    """Loaded models."""


class ProgressLine(BaseModel):
    """One line of /api/pull progress."""

    status: str
    """What is happening: `pulling manifest`, `downloading …`, `writing manifest`, `success`."""
    digest: str | None = None
    """The blob the step is about (`sha256:<hex>`)."""
    total: int | None = None
    """Bytes the step will take."""
    completed: int | None = None
    """Bytes done."""


class VersionResponse(BaseModel):
    """Answer of /api/version."""

    version: str
    """ingle's version."""
