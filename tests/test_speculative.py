"""Speculative decoding by prompt lookup: the same output, fewer decode steps."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import httpx._urlparse
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import ModelNotFound
from ingle.core.generation import ChatMessage, GenerationRequest, GenerationStats, SamplingOptions
from ingle.core.runtime.speculative import DraftSettings, PromptLookup, StepCost, token_cost

from .conftest import DEFAULT_MODEL, link_home, settings_for

# A real function from a library in the environment (not ingle's own code): rewriting it repeats most of it.
FUNCTION = inspect.getsource(httpx._urlparse.normalize_path)
EDIT = f"Add type hints to this function. Answer with the whole function only.\n\n```python\n{FUNCTION}```"


def test_a_repeated_run_drafts_what_followed_it() -> None:
    lookup = PromptLookup([5, 6, 7, 8, 9, 1, 2, 5, 6], DraftSettings(most_tokens=8, first_hit_rate=0.99))
    assert lookup.draft(room=3, cost=0.5) == [7, 8, 9]
    lookup.append(7)
    assert lookup.draft(room=8, cost=0.5) == [8, 9, 1, 2, 5, 6, 7]


def test_text_that_never_repeats_drafts_nothing() -> None:
    lookup = PromptLookup(list(range(100)), DraftSettings(most_tokens=8))
    assert lookup.draft(room=8, cost=0.1) == []


def test_guesses_go_deeper_while_kept_and_stop_when_they_do_not_pay() -> None:
    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 3
    lookup = PromptLookup(history, DraftSettings(most_tokens=8, first_hit_rate=0.75))
    first = len(lookup.draft(room=64, cost=0.45))
    lookup.feedback(drafted=first, accepted=first)
    assert len(lookup.draft(room=64, cost=0.45)) > first
    for _ in range(5):
        lookup.feedback(drafted=2, accepted=0)
    # Poor guesses: only a match of the longest kind is still checked, one token deep.
    assert lookup.draft(room=64, cost=0.45) == [1]
    assert PromptLookup([1, 2, 9, 1, 2], DraftSettings(most_tokens=8, first_hit_rate=0.3)).draft(8, 0.45) == []
    # A batch already wide makes the same guesses not worth their cost.
    assert token_cost(8) > token_cost(1)
    lookup = PromptLookup(history, DraftSettings(most_tokens=8, first_hit_rate=0.75))
    assert len(lookup.draft(room=64, cost=token_cost(8))) < len(lookup.draft(room=64, cost=token_cost(1)))


def test_the_cost_of_a_guessed_token_is_learned_from_the_steps() -> None:
    cost = StepCost()
    for step in range(60):  # a machine where a token adds a tenth of a step's fixed cost (a GPU, say)
        tokens = (1, 5, 9)[step % 3]
        cost.record(tokens, 0.020 + 0.002 * tokens)
    assert cost.share == pytest.approx(0.1, rel=0.05)
    cheap = cost.token_cost(1)
    for step in range(300):  # then one where every token costs as much as the step itself: a crowded CPU
        tokens = (1, 5, 9)[step % 3]
        cost.record(tokens, 0.001 + 0.010 * tokens)
    assert cost.share > 5
    assert cost.token_cost(1) > 0.8 > cheap
    steady = StepCost()
    for _ in range(50):  # all steps the same size: nothing to learn from, the first estimate stays
        steady.record(4, 0.05)
    assert steady.share == StepCost().share


@pytest.fixture(scope="module")
async def plain_engine(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    """An engine with speculative decoding off, to compare against."""
    home = link_home(default_model_cache, tmp_path_factory.mktemp("plain") / "home")
    async with Engine(settings_for(home, keep_alive=-1, draft_tokens=0, num_parallel=2)) as plain:
        yield plain


async def answer(engine: Engine, request: GenerationRequest) -> tuple[str, GenerationStats]:
    text, stats = "", GenerationStats()
    async for chunk in engine.generate(request):
        text += chunk.text
        if chunk.done and chunk.stats is not None:
            stats = chunk.stats
    return text, stats


def edit_request(**options: object) -> GenerationRequest:
    sampling = {"temperature": 0.0, "max_tokens": 64, **options}
    return GenerationRequest(
        model=DEFAULT_MODEL, messages=[ChatMessage("user", EDIT)], options=SamplingOptions(**sampling)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"repeat_penalty": 1.0}, id="greedy"),
        pytest.param({"repeat_penalty": 1.1, "repeat_last_n": 64}, id="greedy-with-repeat-penalty"),
        # The same seed draws the same random numbers in the same order with and without drafts.
        pytest.param({"temperature": 0.8, "seed": 7, "repeat_penalty": 1.0}, id="sampled-with-seed"),
    ],
)
async def test_an_edit_comes_out_the_same_with_fewer_decode_steps(
    engine: Engine, plain_engine: Engine, options: dict[str, object]
) -> None:
    drafted, drafted_stats = await answer(engine, edit_request(**options))
    plain, plain_stats = await answer(plain_engine, edit_request(**options))
    assert drafted == plain
    assert drafted_stats.completion_tokens == plain_stats.completion_tokens
    assert plain_stats.draft_tokens == 0
    # The answer repeats the function: guesses were made and kept (how many depends on what a guessed
    # token costs on this machine right now, which the scheduler measures).
    assert drafted_stats.accepted_draft_tokens > 0
    assert drafted_stats.accepted_draft_tokens <= drafted_stats.draft_tokens


@pytest.mark.slow
async def test_json_format_holds_with_drafts(engine: Engine, plain_engine: Engine) -> None:
    request = GenerationRequest(
        model=DEFAULT_MODEL,
        messages=[ChatMessage("user", "List the names of the parameters of this function as JSON.\n\n" + FUNCTION)],
        format="json",
        options=SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=48),
    )
    drafted, _ = await answer(engine, request)
    plain, _ = await answer(plain_engine, request)
    assert drafted == plain


@pytest.mark.slow
async def test_a_draft_model_drafting_for_itself_is_always_right(
    default_model_home: Path, plain_engine: Engine
) -> None:
    # No smaller model of the same vocabulary is available offline: the default model drafts for itself,
    # which must give the same greedy answer with (nearly) every guess kept.
    settings = settings_for(default_model_home, keep_alive=-1, num_parallel=2, draft_model=DEFAULT_MODEL)
    async with Engine(settings) as drafting:
        drafted, stats = await answer(drafting, edit_request(max_tokens=48, repeat_penalty=1.0))
    plain, _ = await answer(plain_engine, edit_request(max_tokens=48, repeat_penalty=1.0))
    assert drafted == plain
    assert stats.draft_tokens >= stats.completion_tokens // 3
    assert stats.accepted_draft_tokens >= 0.9 * stats.draft_tokens


async def test_a_draft_model_missing_from_the_store_is_named(default_model_home: Path) -> None:
    async with Engine(settings_for(default_model_home, draft_model="tiny:1b")) as engine:
        with pytest.raises(ModelNotFound, match="draft_model 'tiny:1b' is not in the store"):
            await answer(engine, edit_request())


@pytest.mark.slow
async def test_editor_completions_are_not_speculated(engine: Engine) -> None:
    # Measured slower with prompt lookup: short answers, guessed poorly from their prompt (README).
    prefix, suffix = FUNCTION.split("\n", 1)
    request = GenerationRequest(
        model=DEFAULT_MODEL,
        prompt=prefix + "\n",
        suffix=suffix,
        options=SamplingOptions(temperature=0, repeat_penalty=1.0, max_tokens=16),
    )
    _, stats = await answer(engine, request)
    assert stats.completion_tokens > 0
    assert stats.draft_tokens == 0
