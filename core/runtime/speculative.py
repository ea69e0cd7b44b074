"""Guesses for speculative decoding: prompt lookup, and how deep guessing pays.

Speculative decoding guesses several tokens ahead and lets the model check
them all in one decode; every guess it confirms is a token that cost no decode
step of its own. Prompt lookup guesses without a second model: when the last
few tokens also occur earlier in the prompt or the answer, the tokens that
followed them there are the guess. That pays off where answers repeat their
input, which is most work on code (edits, refactors, docstrings, quoting).

The scheduler verifies the drafts (scheduler.py); this module only proposes
them, as far ahead as pays. What a guess costs is the time it adds to a decode
step, and on a CPU that is far from proportional to the tokens: on this
project's 2-core machine a step of 2 tokens (all with logits) takes 2.5 times
a step of 1, but a step of 16 only 5.5 times, because llama.cpp's matrix
kernels work in blocks of several tokens. So StepCost learns each batch size's
time from the steps themselves, and StepPlan picks the number of guesses that
makes the step yield the most tokens per second. How much a guess is trusted
follows how long the run that matched is (a long match means the answer is
copying its input) and how often the sequence's guesses were kept. A draft
model (draft_model.py) uses the same bookkeeping (Guesses) for its own guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

# Shortest run of tokens that must match before its continuation is trusted: in prose, runs of up
# to four tokens ("of the", "in order to") recur by chance and mostly draft wrong continuations
# (measured on chat answers of the default model: under half of such guesses were kept).
MIN_MATCH = 5
# Longest run looked up; longer matches are preferred, as their continuation is likelier right.
MAX_MATCH = 8
# A match of n tokens is trusted for up to 2n - 1 guessed tokens: a long match means the answer is
# copying its input, where whole lines are kept (so 8 matched tokens allow 15 guesses, a batch of 16).
GUESSES_PER_MATCHED_TOKEN = 2
# How fast the estimate of a drafted token's chance to be kept follows the latest verifications.
HIT_RATE_STEP = 0.2
# How fast a sequence that stopped guessing (its guesses failed) drifts back to trying again.
HIT_RATE_RECOVERY = 0.05


@dataclass(frozen=True)
class DraftSettings:
    """How far sequences may guess ahead."""

    most_tokens: int
    """Most tokens drafted for one sequence in one step; 0 turns speculative decoding off."""
    first_hit_rate: float = 0.75
    """Assumed chance that a drafted token is kept, before a sequence has any verifications of its own."""


class StepCost:
    """How long a decode step of each size takes on this machine, learned from the steps themselves.

    A size not measured yet is assumed, when exploring, to cost what the
    largest measured smaller size costs: that optimism makes the scheduler
    try it once, after which its own time is known. So the sizes that pay are
    found on any machine (a GPU, where a few more tokens cost almost nothing,
    or a CPU crowded by other work, where they cost nearly a step each).
    Otherwise an unmeasured size is assumed to cost a full step per token.
    """

    KEEP = 0.8
    """Weight of the old estimate against a new measurement of the same size."""

    def __init__(self) -> None:
        self._seconds: dict[int, float] = {}

    def record(self, tokens: int, seconds: float) -> None:
        """Take in one decode step of `tokens` tokens (all with logits) that took `seconds`."""
        old = self._seconds.get(tokens)
        self._seconds[tokens] = seconds if old is None else self.KEEP * old + (1 - self.KEEP) * seconds

    def seconds(self, tokens: int, explore: bool = False) -> float | None:
        """The expected time of a step of `tokens` tokens; None before any step of that size or smaller."""
        known = self._seconds.get(tokens)
        if known is not None:
            return known
        smaller = [size for size in self._seconds if size < tokens]
        if not smaller:
            return None
        nearest = max(smaller)
        return self._seconds[nearest] * (1 if explore else tokens / nearest)


class StepPlan:
    """One decode step being filled with guesses: its tokens so far and how many tokens it should yield."""

    def __init__(self, cost: StepCost, tokens: int, capacity: int, guesses_in_own_pass: bool = False) -> None:
        self._cost = cost
        self.tokens = tokens
        """Tokens in the step: one pending token per generating sequence, then the guesses chosen."""
        self._expected = float(tokens)
        self.room = capacity - tokens
        """Tokens the batch can still take."""
        self._own_pass = guesses_in_own_pass
        """Whether each sequence's guesses cost a decode pass of their own (llama.cpp's KV buffer per sequence,
        with several sequences generating: see single_pass in scheduler.py), rather than joining one pass."""
        self._base = cost.seconds(tokens)
        self._passes = 0.0
        """Seconds of the guesses' own passes chosen so far."""

    def choose(self, most: int, hit_rate: float, explore: bool = False, copying: bool = True) -> int:
        """How many guesses (0..most) for one more sequence make the step yield the most tokens per second.

        `copying`: the guesses continue a long match, where the answer copies
        its input and a run of guesses is mostly kept whole or fails at
        once; each is then counted as kept with chance `hit_rate`, whatever
        its place (a steeper model never guessed deep enough to find out).
        Otherwise the i-th guess counts as kept only with chance
        hit_rate**i, as it is only kept if all before it were: a shorter
        match recurs by chance in prose as well, and a miss there is likely
        from the first guess on. `explore` lets step sizes not measured yet
        be tried (see StepCost); only guesses likely to be kept should, so
        that trying costs little. The chosen guesses are counted into the step.
        """
        if self._base is None:  # no step measured yet: this one, without guesses, is the first
            return 0
        now = self._base + self._passes if self._own_pass else self._cost.seconds(self.tokens) or self._base
        best_rate, depth, added, best_kept, kept = self._expected / now, 0, 0.0, 0.0, 0.0
        for extra in range(1, min(most, self.room) + 1):
            kept += hit_rate if copying else hit_rate**extra
            if self._own_pass:
                # A pass of `extra` tokens of one sequence, priced as a lone sequence's step of that size. Not
                # explored: steps of several passes are not recorded (scheduler.py), so their cost would never
                # be learned; sizes are measured when a sequence generates alone.
                seconds = now + (self._cost.seconds(extra) or self._base)
            else:
                seconds = self._cost.seconds(self.tokens + extra, explore) or now
            rate = (self._expected + kept) / seconds
            if rate > best_rate:
                best_rate, depth, added, best_kept = rate, extra, seconds - now, kept
        self.tokens += depth
        self._expected += best_kept
        self.room -= depth
        self._passes += added
        return depth


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

    def depth(self, plan: StepPlan, most: int, explore: bool = False, copying: bool = True) -> int:
        """How many tokens to guess in the step `plan` fills, at most `most` (see StepPlan.choose); 0 lets the
        trust recover."""
        depth = plan.choose(min(most, self.settings.most_tokens), self.hit_rate, explore, copying)
        if depth == 0:
            # Without guesses there is no feedback: drift back, so a sequence whose text turns
            # repetitive later (a quote, a copied block) tries again.
            self.hit_rate += HIT_RATE_RECOVERY * (self.settings.first_hit_rate - self.hit_rate)
        return depth

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

    def draft(self, room: int, plan: StepPlan) -> list[int]:
        """Tokens that would follow the history if it repeats itself, as many as pay in `plan`; maybe []."""
        history = self.history
        end = len(history)
        for size in range(MAX_MATCH, MIN_MATCH - 1, -1):
            if end < size:
                continue
            start = self._ends[size - MIN_MATCH].get(tuple(history[end - size :]))
            if start is not None:
                trusted = min(room, GUESSES_PER_MATCHED_TOKEN * size - 1, end - start)
                # Only the longest matches (copying, where guesses are nearly always kept) try new step sizes.
                copying = size == MAX_MATCH
                return history[start : start + self.depth(plan, trusted, explore=copying, copying=copying)]
        return []
