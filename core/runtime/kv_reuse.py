"""Which cached tokens a new prompt keeps, and where they move: KV cache reuse with position shift.

A sequence's KV cache holds one token per position. A new prompt keeps the
longest prefix it shares with the cache, as before. Past that point it also
keeps runs of at least `min_run` tokens that the cache holds in the same
order, moved to their new positions (llama.cpp re-rotates their keys), and
only the tokens between those runs ("holes") and after the last one are
decoded. So text inserted or removed in the middle of a prompt costs the
tokens that changed, not everything after them: the editor's cursor jumping
to another line of a file already in the prompt, or a window sliding over a
file.

A moved token's keys and values were computed next to its old neighbours,
not its new ones; llama-server's `--cache-reuse` makes the same trade, and
the typing benchmark shows its quality cost.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Runs are found through an index of this many consecutive tokens.
_KEY = 4
# Candidates checked per prompt position: plenty for code, bounded for prompts of one repeated token.
_CANDIDATES = 16


@dataclass(frozen=True)
class Move:
    """A run of cached tokens that is kept, moved from `source` to `target`."""

    source: int
    target: int
    length: int

    @property
    def delta(self) -> int:
        """How far the run moves (negative: towards the start)."""
        return self.target - self.source


@dataclass(frozen=True)
class ReusePlan:
    """What a sequence keeps of its cache for a new prompt, and what must be decoded."""

    prefix: int
    """Leading tokens kept where they are."""
    moves: tuple[Move, ...]
    prompt_length: int

    @property
    def reused(self) -> int:
        """Prompt tokens that need no decoding."""
        return self.prefix + sum(move.length for move in self.moves)

    @property
    def resume_at(self) -> int:
        """First position of the prompt's tail, decoded as usual after the kept tokens."""
        return self.moves[-1].target + self.moves[-1].length if self.moves else self.prefix

    def holes(self) -> list[tuple[int, int]]:
        """Prompt ranges [start, end) between kept tokens: decoded in place, before the tail."""
        found, start = [], self.prefix
        for move in self.moves:
            if move.target > start:
                found.append((start, move.target))
            start = move.target + move.length
        return found

    def removals(self) -> Iterator[tuple[int, int]]:
        """Cached position ranges [start, end) to drop; end -1 means "to the end"."""
        start = self.prefix
        for move in self.moves:
            if move.source > start:
                yield start, move.source
            start = move.source + move.length
        yield start, -1

    def ordered_moves(self) -> list[Move]:
        """The moves in an order where no run lands on cells another run has yet to leave.

        Runs keep their order, so runs moving towards the start go first from
        the front, and runs moving towards the end go afterwards from the back.
        """
        backwards = [move for move in self.moves if move.delta < 0]
        forwards = [move for move in self.moves if move.delta > 0]
        return backwards + forwards[::-1]

    def before(self, position: int) -> ReusePlan:
        """This plan without the moves that land at or after `position` (whose tail then starts there)."""
        return ReusePlan(self.prefix, tuple(move for move in self.moves if move.target < position), self.prompt_length)

    def with_holes_up_to(self, tokens: int) -> ReusePlan:
        """This plan without the moves that would need more than `tokens` tokens decoded in holes."""
        kept, spent, start = [], 0, self.prefix
        for move in self.moves:
            spent += move.target - start
            if spent > tokens:
                break
            kept.append(move)
            start = move.target + move.length
        return ReusePlan(self.prefix, tuple(kept), self.prompt_length)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens two token lists share."""
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


def plan_reuse(cached: Sequence[int], prompt: Sequence[int], min_run: int) -> ReusePlan:
    """The plan that reuses the most of `cached` for `prompt`; runs shorter than `min_run` are decoded.

    `min_run` 0 keeps only the common prefix (for models whose cache cannot shift).
    """
    last = len(prompt) - 1
    prefix = min(common_prefix_length(cached, prompt), last)
    if min_run <= 0 or last - prefix < min_run:
        return ReusePlan(prefix, (), len(prompt))
    key = min(_KEY, min_run)
    index = _index(cached, prefix, key)
    moves: list[Move] = []
    position, floor = prefix, prefix
    while position + min_run <= last:
        best = _longest_run(
            cached, prompt, position, last, index.get(tuple(prompt[position : position + key]), []), floor
        )
        if best is not None and best[1] >= min_run:
            source, length = best
            moves.append(Move(source, position, length))
            position, floor = position + length, source + length
        else:
            position += 1
    return ReusePlan(prefix, tuple(moves), len(prompt))


def _index(cached: Sequence[int], start: int, key: int) -> dict[tuple[int, ...], list[int]]:
    """Positions (ascending) of every `key`-token window of the cache from `start` on."""
    index: dict[tuple[int, ...], list[int]] = {}
    for position in range(start, len(cached) - key + 1):
        index.setdefault(tuple(cached[position : position + key]), []).append(position)
    return index


def _longest_run(
    cached: Sequence[int], prompt: Sequence[int], position: int, last: int, candidates: list[int], floor: int
) -> tuple[int, int] | None:
    """(source, length) of the longest cached run at or after `floor` matching the prompt at `position`."""
    best: tuple[int, int] | None = None
    first = bisect_left(candidates, floor)
    for source in candidates[first : first + _CANDIDATES]:
        length = 0
        # The last prompt token is never reused (it is decoded for its logits).
        while (
            position + length < last
            and source + length < len(cached)
            and cached[source + length] == prompt[position + length]
        ):
            length += 1
        if best is None or length > best[1]:
            best = (source, length)
    return best
