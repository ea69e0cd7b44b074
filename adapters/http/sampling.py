"""Sampling options from the OpenAI and llama-server wire formats to core's SamplingOptions.

Both APIs default like llama-server does (no repeat penalty: it hurts code),
and both accept llama.cpp's own knobs, since llama.vscode and other
llama-server clients send them even to the OpenAI routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from ...core.generation import SamplingOptions


def _not_zero(limit: int) -> int:
    if limit == 0:
        # OpenAI refuses 0 as well; refused here, the sentence names the field the client sent.
        raise PydanticCustomError("no_tokens", "0 tokens would be no answer; ask for at least 1, or -1 for no limit")
    return limit


TokenLimit = Annotated[int, Field(ge=-1, json_schema_extra={"not": {"const": 0}}), AfterValidator(_not_zero)]
"""A token limit on the OpenAI routes: at least 1, or -1 for none."""

# llama-server's sampler names (and the one-letter codes of its `samplers` string form)
# for the stages ingle's sampler chain has; the others have no counterpart here.
_SAMPLER_NAMES = {
    "top_k": "top_k",
    "k": "top_k",
    "top_p": "top_p",
    "p": "top_p",
    "min_p": "min_p",
    "m": "min_p",
    "temperature": "temperature",
    "temp": "temperature",
    "t": "temperature",
    "infill": "infill",
}
# llama.cpp's infill sampler drops candidates below 20% probability; the nearest stage ingle has.
INFILL_MIN_P = 0.2


class LlamaCppSampling(BaseModel):
    """llama.cpp sampling fields that llama-server accepts on every generation route."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(default=None, ge=0)
    """Keep only the K most likely tokens (0 disables)."""
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    """Drop tokens less likely than this fraction of the most likely one."""
    repeat_penalty: float | None = Field(default=None, ge=0.0)
    """Penalty for repeating recent tokens (1.0 disables)."""
    repeat_last_n: int | None = Field(default=None, ge=-1)
    """How many recent tokens the repeat penalty looks at (-1: the whole context; 0: off)."""
    samplers: list[str] | str | None = None
    """Sampler stages to use; `top_k`, `top_p`, `min_p` and `temperature` are honoured, a stage left out is off."""
    cache_prompt: bool | None = None
    """Accepted for compatibility: ingle always reuses the longest cached prompt prefix."""
    typical_p: float | None = None
    """Accepted for compatibility; not used."""
    dynatemp_range: float | None = None
    """Accepted for compatibility; not used."""
    dynatemp_exponent: float | None = None
    """Accepted for compatibility; not used."""
    xtc_probability: float | None = None
    """Accepted for compatibility; not used."""
    xtc_threshold: float | None = None
    """Accepted for compatibility; not used."""
    dry_multiplier: float | None = None
    """Accepted for compatibility; not used."""
    dry_base: float | None = None
    """Accepted for compatibility; not used."""
    dry_allowed_length: int | None = None
    """Accepted for compatibility; not used."""
    dry_penalty_last_n: int | None = None
    """Accepted for compatibility; not used."""
    dry_sequence_breakers: list[str] | None = None
    """Accepted for compatibility; not used."""
    mirostat: int | None = None
    """Accepted for compatibility; not used."""
    mirostat_tau: float | None = None
    """Accepted for compatibility; not used."""
    mirostat_eta: float | None = None
    """Accepted for compatibility; not used."""
    top_n_sigma: float | None = None
    """Accepted for compatibility; not used."""
    min_keep: int | None = None
    """Accepted for compatibility; not used."""
    ignore_eos: bool | None = None
    """Accepted for compatibility; not used."""
    n_probs: int | None = None
    """Accepted for compatibility; the OpenAI routes answer token probabilities for `logprobs` instead."""
    post_sampling_probs: bool | None = None
    """Accepted for compatibility; not used here."""
    n_keep: int | None = None
    """Accepted for compatibility; not used."""
    n_cache_reuse: int | None = None
    """Accepted for compatibility; ingle reuses cached prompts on its own."""
    id_slot: int | None = None
    """Accepted for compatibility; ingle picks the sequence with the longest cached prefix."""
    lora: list[dict[str, Any]] | None = None
    """Accepted for compatibility; LoRA adapters are not supported and not applied."""
    timings_per_token: bool | None = None
    """/infill and /completion: send the token counts with every streamed piece, not only the last."""
    return_tokens: bool | None = None
    """Accepted for compatibility; token ids are not returned."""
    return_progress: bool | None = None
    """Accepted for compatibility; not used."""
    sse_ping_interval: float | None = None
    """Accepted for compatibility; not used."""


def stop_list(stop: str | list[str] | None) -> list[str]:
    """`stop` as a list of non-empty strings (the wire allows one string or a list)."""
    if stop is None:
        return []
    values = [stop] if isinstance(stop, str) else stop
    return [value for value in values if value]


def sampling_options(
    knobs: LlamaCppSampling,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    stop: str | list[str] | None = None,
) -> SamplingOptions:
    """SamplingOptions with llama-server's defaults, overridden by what the request gave.

    `max_tokens` of None or a negative number means no limit; a negative seed
    means a random one.
    """
    options = SamplingOptions(
        temperature=0.8 if temperature is None else temperature,
        top_k=40 if knobs.top_k is None else knobs.top_k,
        top_p=0.95 if top_p is None else top_p,
        min_p=0.05 if knobs.min_p is None else knobs.min_p,
        repeat_penalty=1.0 if knobs.repeat_penalty is None else knobs.repeat_penalty,
        repeat_last_n=64 if knobs.repeat_last_n is None else knobs.repeat_last_n,
        presence_penalty=presence_penalty or 0.0,
        frequency_penalty=frequency_penalty or 0.0,
        seed=seed if seed is not None and seed >= 0 else None,
        max_tokens=max_tokens if max_tokens is not None and max_tokens >= 0 else None,
        stop=stop_list(stop),
    )
    if knobs.samplers is not None:
        _keep_only_listed_samplers(options, knobs.samplers)
    return options


def _keep_only_listed_samplers(options: SamplingOptions, samplers: list[str] | str) -> None:
    """Turn off the stages a `samplers` list leaves out, as llama-server does.

    Without a temperature stage llama-server samples the remaining tokens
    as they are, which is temperature 1; a greedy request stays greedy. The
    `infill` stage (llama.vim's and llama.vscode's default) is approximated
    by a min-p cut, which likewise keeps only strong candidates.
    """
    listed = {_SAMPLER_NAMES.get(name.strip().lower()) for name in samplers}
    if "top_k" not in listed:
        options.top_k = 0
    if "top_p" not in listed:
        options.top_p = 1.0
    if "min_p" not in listed:
        options.min_p = INFILL_MIN_P if "infill" in listed else 0.0
    if "temperature" not in listed and options.temperature > 0:
        options.temperature = 1.0
