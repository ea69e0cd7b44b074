"""Which sequence a new request takes, and when a step is one pass over the weights (core/runtime/scheduler.py).

With a KV buffer per sequence, llama.cpp decodes a batch in passes of
consecutive sequences with as many tokens each; every extra pass reads the
weights again. These rules keep the busy sequences in one run.
"""

from __future__ import annotations

from ingle.core.runtime.scheduler import REUSE_WORTH_A_SPLIT, Slot, choose_slot, single_pass


def free_slots(*sequences: int) -> list[Slot]:
    return [Slot(sequence, last_used=float(sequence)) for sequence in sequences]


def test_a_new_request_joins_the_run_of_busy_sequences() -> None:
    # Sequences 0 and 1 are busy; 7 was used longest ago, but 2 keeps one run.
    free = free_slots(7, 2, 5)
    assert choose_slot(free, {7: 0, 2: 0, 5: 0}, busy={0, 1}, prompt_length=1000).sequence == 2
    # A hole between two runs is filled first: it turns two passes into one.
    free = free_slots(5, 6, 2)
    assert choose_slot(free, {5: 0, 6: 0, 2: 0}, busy={0, 1, 3, 4}, prompt_length=1000).sequence == 2


def test_cached_prompt_tokens_decide_among_slots_that_keep_the_run() -> None:
    free = free_slots(0, 3, 6)
    assert choose_slot(free, {0: 10, 3: 40, 6: 0}, busy={1, 2}, prompt_length=1000).sequence == 3
    # With nothing busy every slot starts a run: the one that reuses most wins, then the least recently used.
    assert choose_slot(free, {0: 10, 3: 40, 6: 0}, busy=set(), prompt_length=1000).sequence == 3
    assert choose_slot(free, {0: 0, 3: 0, 6: 0}, busy=set(), prompt_length=1000).sequence == 0


def test_a_long_cached_prompt_is_worth_a_second_pass() -> None:
    free = free_slots(2, 6)
    assert choose_slot(free, {2: 0, 6: REUSE_WORTH_A_SPLIT - 1}, busy={0, 1}, prompt_length=1000).sequence == 2
    assert choose_slot(free, {2: 0, 6: REUSE_WORTH_A_SPLIT}, busy={0, 1}, prompt_length=1000).sequence == 6


def test_one_shared_kv_pool_decodes_any_sequences_together_so_only_reuse_counts() -> None:
    free = free_slots(2, 6)
    assert choose_slot(free, {2: 0, 6: 5}, busy=None, prompt_length=1000).sequence == 6


def test_a_new_conversation_leaves_the_cache_of_another_that_shares_only_its_first_tokens() -> None:
    # Slot 3 holds a 576-token conversation; a new one of 200 tokens shares its chat template's first 20.
    conversation = Slot(3, cached=list(range(576)), last_used=5.0)
    empty, stale = Slot(6), Slot(1, cached=list(range(40)), last_used=1.0)
    for busy in (None, set()):
        assert choose_slot([conversation, empty], {3: 20, 6: 0}, busy, prompt_length=200).sequence == 6
        # With no empty slot, the least recently used cache goes.
        assert choose_slot([conversation, stale], {3: 20, 1: 0}, busy, prompt_length=200).sequence == 1
        # Its next turn keeps the whole cache and takes the slot back.
        assert choose_slot([conversation, empty], {3: 575, 6: 0}, busy, prompt_length=600).sequence == 3
        # So does the same question asked again, though the answer cached after it is dropped.
        assert choose_slot([conversation, empty], {3: 199, 6: 0}, busy, prompt_length=200).sequence == 3


def test_a_step_is_one_pass_when_its_sequences_are_consecutive_with_as_many_tokens_each() -> None:
    assert single_pass({3: [], 4: [], 5: []})
    assert single_pass({3: [9, 9], 4: [8, 8]})
    assert single_pass({})
    assert not single_pass({0: [], 7: []})
    assert not single_pass({0: [9, 9, 9], 1: []})
