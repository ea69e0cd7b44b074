"""Planning KV cache reuse: which cached runs a new prompt keeps, where they move, what is decoded."""

from __future__ import annotations

from ingle.core.runtime.kv_reuse import Move, ReusePlan, plan_reuse


def test_a_shared_prefix_is_kept_and_the_last_token_is_always_decoded() -> None:
    plan = plan_reuse([1, 2, 3, 4], [1, 2, 3, 4], min_run=0)
    assert (plan.prefix, plan.moves, plan.resume_at) == (3, (), 3)


def test_text_inserted_in_the_middle_costs_only_the_inserted_tokens() -> None:
    head, tail = list(range(100, 140)), list(range(200, 260))
    cached = head + tail
    prompt = head + [7, 8, 9] + tail + [5]
    plan = plan_reuse(cached, prompt, min_run=8)
    assert plan.prefix == 40
    assert plan.moves == (Move(source=40, target=43, length=60),)
    assert plan.holes() == [(40, 43)]
    assert plan.resume_at == 103 and plan.reused == 100
    assert list(plan.removals()) == [(100, -1)]


def test_removed_text_moves_the_rest_back_and_drops_the_removed_cells() -> None:
    head, gone, tail = list(range(100, 140)), [1, 2, 3, 4, 5], list(range(200, 260))
    plan = plan_reuse(head + gone + tail, head + tail + [9], min_run=8)
    assert plan.moves == (Move(source=45, target=40, length=60),)
    assert plan.holes() == []
    assert list(plan.removals()) == [(40, 45), (105, -1)]


def test_runs_shorter_than_the_minimum_are_decoded_again() -> None:
    cached = list(range(100, 140)) + list(range(300, 306))
    prompt = list(range(100, 140)) + [1] + list(range(300, 306)) + [2]
    assert plan_reuse(cached, prompt, min_run=8).moves == ()
    assert plan_reuse(cached, prompt, min_run=4).moves == (Move(40, 41, 6),)


def test_runs_keep_their_order_and_the_moves_never_collide() -> None:
    a, b, c = list(range(100, 120)), list(range(200, 220)), list(range(300, 320))
    # b moves towards the start, c towards the end: b first, then c from the back.
    plan = plan_reuse(a + [1] * 10 + b + c, a + b + [2] * 15 + c + [3], min_run=8)
    assert [(move.source, move.target) for move in plan.moves] == [(30, 20), (50, 55)]
    assert [move.delta for move in plan.ordered_moves()] == [-10, 5]
    # A run that appears only before an earlier match is not reused out of order.
    swapped = plan_reuse(a + b + c, a + c + b + [3], min_run=8)
    assert len(swapped.moves) == 1


def test_a_plan_is_cut_where_its_holes_would_cost_too_much() -> None:
    plan = ReusePlan(prefix=10, moves=(Move(20, 15, 30), Move(100, 200, 40)), prompt_length=300)
    assert plan.with_holes_up_to(10).moves == (Move(20, 15, 30),)
    assert plan.with_holes_up_to(10).resume_at == 45
    assert plan.with_holes_up_to(1000) == plan


def test_a_plan_cut_before_a_hole_resumes_decoding_there() -> None:
    plan = ReusePlan(prefix=10, moves=(Move(20, 15, 30), Move(100, 200, 40)), prompt_length=300)
    assert plan.before(45).moves == (Move(20, 15, 30),)
    assert (plan.before(45).resume_at, plan.before(45).reused) == (45, 40)
