"""Speculative decoding by prompt lookup: the same output, fewer decode steps."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import httpx._urlparse
import numpy
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import ModelNotFound
from ingle.core.generation import ChatMessage, GenerationRequest, GenerationStats, SamplingOptions
from ingle.core.runtime.speculative import DraftSettings, PromptLookup, StepCost, StepPlan

from .conftest import DEFAULT_MODEL, link_home, settings_for

# A real function from a library in the environment (not ingle's own code): rewriting it repeats most of it.
FUNCTION = inspect.getsource(httpx._urlparse.normalize_path)
EDIT = f"Add type hints to this function. Answer with the whole function only.\n\n```python\n{FUNCTION}```"


# Step times by batch size (all tokens with logits) as measured on this project's 2-core CPU:
# a step of 2 tokens costs 2.5 steps of 1, a step of 16 only 5.5. Sizes between are interpolated.
CPU_MEASURED = {1: 0.0161, 2: 0.0406, 3: 0.0499, 4: 0.0526, 8: 0.0688, 12: 0.0827, 16: 0.0889, 24: 0.136, 32: 0.168}
CPU_STEPS = {
    tokens: float(numpy.interp(tokens, list(CPU_MEASURED), list(CPU_MEASURED.values()))) for tokens in range(1, 33)
}


def measured(steps: dict[int, float]) -> StepCost:
    cost = StepCost()
    for tokens, seconds in steps.items():
        cost.record(tokens, seconds)
    return cost


def plan_for(steps: dict[int, float], streams: int = 1) -> StepPlan:
    return StepPlan(measured(steps), streams, capacity=512)


def test_a_repeated_run_drafts_what_followed_it() -> None:
    history = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1, 2, 5, 6, 7, 8, 9]
    lookup = PromptLookup(history, DraftSettings(most_tokens=16, first_hit_rate=0.9))
    # A match of five tokens is trusted for up to nine guesses; the room left in the batch caps them too.
    assert lookup.draft(room=3, plan=plan_for(CPU_STEPS)) == [10, 11, 12]
    assert lookup.draft(room=64, plan=plan_for(CPU_STEPS)) == [10, 11, 12, 13, 14, 1, 2, 5, 6]


def test_text_that_never_repeats_or_repeats_only_a_few_tokens_drafts_nothing() -> None:
    assert PromptLookup(list(range(100)), DraftSettings(most_tokens=16)).draft(16, plan_for(CPU_STEPS)) == []
    # "of the", "in order to": runs of up to four tokens recur by chance and are not trusted.
    short = PromptLookup([1, 2, 3, 4, 9, 9, 1, 2, 3, 4], DraftSettings(most_tokens=16, first_hit_rate=0.99))
    assert short.draft(16, plan_for(CPU_STEPS)) == []


def test_the_step_takes_as_many_guesses_as_its_measured_cost_makes_worth_it() -> None:
    # On the CPU, 15 guesses (a batch of 16) pay; one guess (a batch of 2, 2.5 times a step) never does.
    assert plan_for(CPU_STEPS).choose(most=15, hit_rate=0.9) == 15
    assert plan_for(CPU_STEPS).choose(most=1, hit_rate=0.99) == 0
    # A batch already eight wide gains less from the same guesses than one stream does.
    wide = plan_for(CPU_STEPS, streams=8)
    assert wide.choose(most=15, hit_rate=0.5) < plan_for(CPU_STEPS).choose(most=15, hit_rate=0.5)
    # A crowded CPU, where each token costs a whole step: guessing never pays.
    crowded = {tokens: 0.02 * tokens for tokens in range(1, 17)}
    assert plan_for(crowded).choose(most=15, hit_rate=0.9) == 0
    # A GPU, where a few more tokens cost almost nothing: guess as deep as allowed.
    flat = {tokens: 0.02 + 0.0001 * tokens for tokens in range(1, 17)}
    assert plan_for(flat).choose(most=15, hit_rate=0.5) == 15
    # Guesses of several sequences share one step: the second sees the batch the first made wide
    # (here a machine where tokens past 16 cost a whole step each).
    steep = CPU_STEPS | {tokens: CPU_STEPS[16] + 0.0161 * (tokens - 16) for tokens in range(17, 33)}
    shared = plan_for(steep, streams=2)
    assert shared.choose(most=14, hit_rate=0.9) == 14
    assert shared.choose(most=14, hit_rate=0.9) == 0
    assert shared.tokens == 16
    # Nothing measured yet: the first step goes without guesses, and measures a step.
    assert StepPlan(StepCost(), 1, capacity=512).choose(most=15, hit_rate=0.99) == 0


def test_a_run_repeated_by_chance_is_guessed_shallower_than_a_copied_one() -> None:
    # Step costs the AMX machine learned over code edits, in lone steps: eight rows cost less than seven
    # (llama.cpp's tiled kernels start at eight).
    amx = {1: 1.0, 2: 1.26, 3: 1.67, 4: 2.09, 5: 2.58, 6: 2.82, 7: 3.12, 8: 2.73, 9: 3.6, 10: 3.83}
    # A story repeating five tokens: a guess is only kept if all before it were, so seven guesses (a step of
    # eight, all of them missed in the story this was measured on) would not pay.
    assert 1 <= plan_for(amx).choose(most=9, hit_rate=0.75, copying=False) <= 2
    # An answer copying its input keeps a run of guesses whole or misses it at once.
    assert plan_for(amx).choose(most=9, hit_rate=0.75) == 7
    # Prompt lookup tells the two apart by the length of the match.
    chance = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20, 1, 2, 3, 4, 5], DraftSettings(16))
    assert 1 <= len(chance.draft(64, plan_for(amx))) <= 2
    copied = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20, 1, 2, 3, 4, 5, 6, 7, 8], DraftSettings(16))
    assert len(copied.draft(64, plan_for(amx))) >= 7


def test_with_a_kv_buffer_per_sequence_each_sequences_guesses_are_priced_as_a_pass_of_their_own() -> None:
    # Steps measured on the AMX machine (no repacked weights): llama.cpp decodes eight streams' tokens in one
    # pass, and one stream's 15 guesses beside them in a second pass, as long as a lone stream's 16 tokens.
    amx = {1: 0.038, 2: 0.049, 4: 0.065, 8: 0.092, 16: 0.160, 24: 0.21}
    # Were it one pass, the eight streams' step would take guesses at the price of a wider batch.
    assert plan_for(amx, streams=8).choose(most=15, hit_rate=0.75) >= 8
    own = StepPlan(measured(amx), 8, capacity=512, guesses_in_own_pass=True)
    assert own.choose(most=15, hit_rate=0.75) == 0
    # Guesses nearly sure to be kept still pay for their pass, and the next sequence's pass comes on top.
    own = StepPlan(measured(amx), 2, capacity=512, guesses_in_own_pass=True)
    assert own.choose(most=15, hit_rate=0.99) == 15
    assert own.choose(most=3, hit_rate=0.99) == 0
    # A pass of a size no lone sequence was measured at is not explored: its cost would never be learned.
    never = StepPlan(measured({1: 0.038, 8: 0.092}), 8, capacity=512, guesses_in_own_pass=True)
    assert never.choose(most=15, hit_rate=0.99, explore=True) == 0


def test_a_step_size_never_measured_is_tried_once_then_known() -> None:
    cost = measured({1: 0.016})
    # Guesses likely to be kept (from the longest matches) may try it, as if it cost nothing more...
    assert cost.seconds(16, explore=True) == 0.016
    assert plan_for({1: 0.016}).choose(most=15, hit_rate=0.5, explore=True) == 15
    # ...others count a full step per token for it, and so never guess on it.
    assert cost.seconds(16) == pytest.approx(0.016 * 16)
    assert plan_for({1: 0.016}).choose(most=15, hit_rate=0.9) == 0
    cost.record(16, 0.32)  # a machine where 16 tokens cost 20 steps
    assert cost.seconds(16) == 0.32
    assert cost.seconds(8, explore=True) == 0.016  # still untried: the next candidate
    assert StepPlan(cost, 1, capacity=512).choose(most=15, hit_rate=0.5, explore=True) < 15


def test_a_sequence_whose_guesses_fail_stops_guessing_and_later_tries_again() -> None:
    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 3
    lookup = PromptLookup(history, DraftSettings(most_tokens=16, first_hit_rate=0.75))
    assert lookup.draft(room=64, plan=plan_for(CPU_STEPS))
    for _ in range(10):
        lookup.feedback(drafted=9, accepted=0)
    assert lookup.draft(room=64, plan=plan_for(CPU_STEPS)) == []
    for _ in range(100):  # steps without guesses: the trust drifts back to where it started
        lookup.draft(room=64, plan=plan_for(CPU_STEPS))
    assert lookup.draft(room=64, plan=plan_for(CPU_STEPS))


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
