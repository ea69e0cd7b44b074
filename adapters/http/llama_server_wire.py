"""Wire models of the llama-server-compatible routes (/infill, /completion, /health).

The fields are llama-server's, listed one by one, so llama.vim and
llama.vscode never get a 400 for a field llama-server knows; a field nobody
has heard of still is one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...core.generation import MAX_TOP_LOGPROBS
from .common_wire import ONLY_ONE, Limit, ModelNameField, one_prompt
from .sampling import LlamaCppSampling


class ExtraContextChunk(BaseModel):
    """A chunk of another file, from the editor's ring buffer."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    """The chunk's text."""
    filename: str = ""
    """The file it comes from."""
    time: float | None = None
    """When the editor picked it (llama.vim sends it); not used."""


class CompletionOptions(LlamaCppSampling):
    """What /completion and /infill share: llama-server's generation options."""

    model: ModelNameField | Literal[""] | None = None
    """Model to use; default (also when empty, as editor plugins send it): the configured default model."""
    temperature: float | None = None
    """Sampling temperature; 0 or less is greedy."""
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    """Nucleus sampling threshold."""
    n_predict: int | None = Field(default=None, ge=-1)
    """Tokens to generate at most; -1: until the model stops; 0: only load the prompt into the cache."""
    max_tokens: int | None = Field(default=None, ge=-1)
    """Alias of `n_predict`."""
    n_indent: int = Field(default=0, ge=0)
    """Stop at a new line indented by fewer than this many spaces or tabs (0: off)."""
    t_max_predict_ms: float | None = Field(default=None, ge=0)
    """Stop after this many milliseconds of generation, once a new line has been generated (0: off)."""
    t_max_prompt_ms: float | None = None
    """Accepted for compatibility; llama-server does not implement it either."""
    stream: bool = False
    """Stream the text as server-sent events."""
    stop: list[str] | str | None = None
    """Text at which generation stops (not included)."""
    presence_penalty: float | None = None
    """Penalty for tokens that appeared at all."""
    frequency_penalty: float | None = None
    """Penalty growing with how often a token appeared."""
    seed: int | None = None
    """Random seed; -1 or absent: random."""
    json_schema: dict[str, Any] | None = None
    """A JSON schema the output must match (`{}` for any JSON)."""
    grammar: Annotated[
        str | None,
        Limit({"maxLength": 0}, "GBNF grammars are not supported; send a json_schema instead", lambda text: not text),
    ] = None
    """A GBNF grammar; not supported (use json_schema)."""
    logit_bias: list[Any] | dict[str, Any] | None = None
    """Accepted for compatibility; not used."""
    n_cmpl: Annotated[int | None, Field(ge=1), ONLY_ONE] = None
    """Completions per prompt; only 1 is supported."""
    response_fields: list[str] | None = None
    """Answer only these fields; `a/b` takes field `b` of object `a` and names it `a/b`."""
    chat_format: int | None = None
    """Accepted for compatibility; not used."""
    n_probs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    """Answer each generated token's probability with this many most likely tokens at its place
    (`completion_probabilities`); 0: none."""
    post_sampling_probs: bool | None = None
    """Give probabilities (`prob`, `top_probs`) rather than log-probabilities. Either way they are the
    model's own, before the sampler's cuts, temperature or penalties."""


class RepositoryContext(BaseModel):
    """Other files ahead of the one being completed."""

    input_extra: list[ExtraContextChunk] = Field(default_factory=list)
    """Chunks of other files, placed ahead of the prompt (on /completion, ingle's addition)."""
    filename: str = ""
    """ingle's addition: the path of the file being completed, written ahead of it in the repository
    formats of the models that have one (Qwen2.5-Coder, StarCoder2)."""


class CompletionRequest(CompletionOptions, RepositoryContext):
    """POST /completion: continue a raw prompt (no chat template); with `input_extra` or `filename`, the prompt
    is the start of that file and continues it after the other files, in the model's repository format."""

    prompt: Annotated[str | list[Any], one_prompt(min_length=1)]
    """The text to continue (a list holding one string is accepted too)."""


class InfillRequest(CompletionOptions, RepositoryContext):
    """POST /infill: fill in the middle, with extra context from other files."""

    input_prefix: str = ""
    """Text before the cursor, up to the start of the cursor's line."""
    input_suffix: str = ""
    """Text after the cursor."""
    prompt: str = ""
    """The cursor's line up to the cursor (continued by the completion)."""


class TokenProbability(BaseModel):
    """A token and how likely the model thought it, in llama-server's `completion_probabilities` form."""

    id: int
    """Its id in the model's vocabulary."""
    token: str
    """Its text (a token that ends inside a UTF-8 character has only the whole characters)."""
    bytes: list[int]
    """Its text's bytes."""
    logprob: float | None = None
    """Its log-probability (absent with `post_sampling_probs`)."""
    prob: float | None = None
    """Its probability, 0 to 1 (only with `post_sampling_probs`)."""
    top_logprobs: list[TokenProbability] | None = None
    """The `n_probs` most likely tokens at its place, most likely first (absent with `post_sampling_probs`)."""
    top_probs: list[TokenProbability] | None = None
    """The same with probabilities (only with `post_sampling_probs`)."""


class Timings(BaseModel):
    """How long the prompt and the generation took."""

    cache_n: int
    """Prompt tokens reused from the cache."""
    prompt_n: int
    """Prompt tokens processed (not reused)."""
    prompt_ms: float
    """Milliseconds until the first token."""
    prompt_per_token_ms: float
    """prompt_ms per processed token."""
    prompt_per_second: float
    """Processed tokens per second."""
    predicted_n: int
    """Tokens generated."""
    predicted_ms: float
    """Milliseconds spent generating."""
    predicted_per_token_ms: float
    """predicted_ms per generated token."""
    predicted_per_second: float
    """Generated tokens per second."""


class CompletionResult(BaseModel):
    """The answer of /completion and /infill (and the last event of a stream)."""

    index: int = 0
    """Always 0."""
    content: str
    """The generated text (empty in the last event of a stream)."""
    tokens: list[int] = Field(default_factory=list)
    """Always empty: token ids are not returned."""
    id_slot: int = -1
    """Always -1: ingle picks sequences itself."""
    stop: bool = True
    """True: generation has ended."""
    model: str
    """The model that generated."""
    tokens_predicted: int
    """Tokens generated."""
    tokens_evaluated: int
    """Tokens in the prompt."""
    tokens_cached: int
    """Prompt tokens reused from an earlier request's cache."""
    truncated: bool = False
    """Always false: a prompt that does not fit is refused instead."""
    has_new_line: bool
    """Whether the text contains a new line."""
    stop_type: Literal["eos", "limit", "word"]
    """Why it stopped: end of text, a limit (n_predict, n_indent, t_max_predict_ms), or a stop word."""
    stopping_word: str = ""
    """Always empty."""
    timings: Timings
    """Token counts and durations."""
    completion_probabilities: list[TokenProbability] | None = None
    """Each generated token's probability, with `n_probs` alternatives; only when `n_probs` asks, and only in
    a whole answer (a stream sends them with each piece)."""


class CompletionPartial(BaseModel):
    """One event of a streamed /completion or /infill, before the last."""

    index: int = 0
    """Always 0."""
    content: str
    """The next piece of text."""
    tokens: list[int] = Field(default_factory=list)
    """Always empty."""
    stop: bool = False
    """False: more follows."""
    id_slot: int = -1
    """Always -1."""
    tokens_predicted: int
    """Tokens generated so far."""
    tokens_evaluated: int
    """Tokens in the prompt once known (from the first piece of text), as llama-server sends it."""
    timings: Timings | None = None
    """Token counts and durations so far; only with `timings_per_token` (as llama-server)."""
    completion_probabilities: list[TokenProbability] | None = None
    """The probabilities of the tokens of this piece; only when `n_probs` asks."""


class Health(BaseModel):
    """The answer of GET /health."""

    status: Literal["ok"] = "ok"
    """Always `ok`: the server is up (models load on first use)."""
    services: dict[str, str] | None = None
    """Where each of the daemon's services stands, by name: `bots.telegram` is `starting`, `running`,
    `retrying` (after a failure) or `stopped` (its section is wrong). Absent when no bot is configured, so the
    answer stays llama-server's own."""
