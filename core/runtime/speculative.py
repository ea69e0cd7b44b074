"""Guesses for speculative decoding: prompt lookup, and how deep guessing pays.

Speculative decoding guesses several tokens ahead and lets the model check
them all in one decode; every guess it confirms is a token that cost no decode
step of its own. Prompt lookup guesses without a second model: when the last
few tokens also occur earlier in the prompt or the answer, the tokens that
followed them there are the guess. That pays off where answers repeat their
input, which is most work on code (edits, refactors, docstrings, quoting).

The scheduler verifies the drafts (scheduler.py); this module only proposes
them, as far ahead as pays: a guessed token costs part of a decode step
whether or not it is kept, so how deep to guess follows how often the
sequence's guesses were kept, how wide the batch already is, and what a token
adds to a step on this machine (StepCost). A draft model (draft_model.py)
uses the same bookkeeping (Guesses) for its own guesses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Shortest run of tokens that must match before its continuation is trusted: one token
# ("the", "(") recurs everywhere and would mostly draft wrong continuations.
MIN_MATCH = 2
# Longest run looked up; longer matches are preferred, as their continuation is likelier right.
MAX_MATCH = 4
# What one more token adds to a decode step, against the step's fixed cost, on a CPU: llama-batched-bench
# on 2 cores takes about 11.5 ms + 9.8 ms per token (1.65x one sequence's rate at 4 sequences, 1.92x at 8).
EXTRA_TOKEN_SHARE = 0.85
# How fast the estimate of a drafted token's chance to be kept follows the latest verifications.
HIT_RATE_STEP = 0.2


@dataclass(frozen=True)
class DraftSettings:
    """How far sequences may guess ahead."""

    most_tokens: int
    """Most tokens drafted for one sequence in one step; 0 turns speculative decoding off."""
    first_hit_rate: float = 0.75
    """Assumed chance that a drafted token is kept, before a sequence has any verifications of its own."""


class StepCost:
    """Learns from the decode steps themselves what one more token adds to a step.

    A step of n tokens takes about fixed + per_token * n; a least-squares fit
    over recent generation steps (older ones fading) gives per_token / fixed.
    It starts from EXTRA_TOKEN_SHARE and moves to what this machine does: far
    less on a GPU, far more on a CPU crowded by other work, where a step of
    nine tokens can take nine times as long as a step of one.
    """

    FADE = 0.98
    """Weight left to a step after each newer one."""

    def __init__(self, share: float = EXTRA_TOKEN_SHARE) -> None:
        self.share = share
        self._sums = [0.0] * 5  # weights, n, n*n, t, n*t

    def record(self, tokens: int, seconds: float) -> None:
        """Take in one decode step of `tokens` tokens that took `seconds`."""
        sums = [value * self.FADE for value in self._sums]
        for index, value in enumerate((1.0, tokens, tokens * tokens, seconds, tokens * seconds)):
            sums[index] += value
        self._sums = sums
        weight, n, nn, t, nt = sums
        spread = weight * nn - n * n
        if spread < weight * weight * 0.25:  # too little variety in step sizes to tell slope from noise
            return
        per_token = (weight * nt - n * t) / spread
        fixed = (t - per_token * n) / weight
        if per_token > 0:
            self.share = min(20.0, max(0.05, per_token / max(fixed, per_token / 20.0)))

    def token_cost(self, width: int) -> float:
        """token_cost for a step over `width` sequences on this machine."""
        return token_cost(width, self.share)


def token_cost(width: int, extra_token_share: float = EXTRA_TOKEN_SHARE) -> float:
    """What one more token in a decode step costs, in tokens the step yields per sequence.

    A step over `width` sequences takes about (1 + width * r) units, where r is
    what each token adds (`extra_token_share`) against the step's fixed cost,
    and yields one token per sequence. One guessed token adds r units, so it pays
    only if kept with a chance above r * width / (1 + r * width): about 0.45 for
    one stream on a 2-core CPU, but 0.87 with eight, where the batch is already wide.
    """
    load = extra_token_share * max(1, width)
    return load / (1 + load)


class Guesses:
    """One sequence's history (prompt + generated tokens) and how well its guesses have done."""

    def __init__(self, prompt: list[int], settings: DraftSettings) -> None:
        self.settings = settings
        self.hit_rate = settings.first_hit_rate
        self.history: list[int] = []
        self.extend(prompt)

    def extend(self, tokens: list[int]) -> None:
        """Add tokens to the history (the prompt, then each token as it is generated)."""
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """Add one token to the history."""
        self.history.append(token)

    def depth(self, cost: float) -> int:
        """How many guessed tokens are worth checking when each costs `cost` (see token_cost).

        The i-th guessed token is kept with a chance of about hit_rate**i, so
        guesses stop where that falls below the cost.
        """
        most = self.settings.most_tokens
        if self.hit_rate <= cost:
            return 0
        if self.hit_rate >= 0.999 or cost <= 0:
            return most
        return min(most, int(math.log(cost) / math.log(self.hit_rate)))

    def feedback(self, drafted: int, accepted: int) -> None:
        """Update the hit rate: each kept token counts as a hit, the first rejected one as a miss."""
        for _ in range(accepted):
            self.hit_rate += HIT_RATE_STEP * (1.0 - self.hit_rate)
        if accepted < drafted:
            self.hit_rate -= HIT_RATE_STEP * self.hit_rate


class PromptLookup(Guesses):
    """Guesses from the sequence's own history: what followed its last few tokens where they occurred before.

    An index maps every run of MIN_MATCH..MAX_MATCH tokens to where it last
    ended, so a lookup costs a few dictionary probes rather than a scan of the
    history, whatever its length.
    """

    def __init__(self, prompt: list[int], settings: DraftSettings) -> None:
        self._ends: list[dict[tuple[int, ...], int]] = [{} for _ in range(MIN_MATCH, MAX_MATCH + 1)]
        super().__init__(prompt, settings)

    def append(self, token: int) -> None:
        """Add one token to the history and index the runs it completes."""
        history = self.history
        end = len(history)
        # Index the runs that end just before the new token: their continuation now exists.
        for size, ends in enumerate(self._ends, start=MIN_MATCH):
            if end >= size:
                ends[tuple(history[end - size : end])] = end
        history.append(token)

    def draft(self, room: int, cost: float) -> list[int]:
        """Tokens that would follow the history if it repeats itself, as many as are worth checking; maybe [].

        A match of the longest kind is checked at least one token deep, so that
        a sequence whose guesses were poor can find out when they become good.
        """
        worth = self.depth(cost)
        history = self.history
        end = len(history)
        for size in range(MAX_MATCH, MIN_MATCH - 1, -1):
            if end < size:
                continue
            start = self._ends[size - MIN_MATCH].get(tuple(history[end - size :]))
            if start is not None:
                depth = max(worth, 1) if size == MAX_MATCH else worth
                return history[start : start + min(room, depth)]
        return []
