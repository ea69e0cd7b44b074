"""Turns generated token bytes into text, honouring stop strings.

Tokens can end in the middle of a UTF-8 character, and a stop string can
span several tokens, so text is released only once it can no longer be part
of a stop string: the user never sees the beginning of a stop sequence.

Stops are matched with one Aho-Corasick automaton over all of them, fed each
new character once: the cost per token does not grow with the number of
stops, and the automaton's state is exactly what must be held back (the
longest tail of the text that begins some stop). A library (pyahocorasick)
finds matches but does not expose that state, so the automaton is built here.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopAutomaton:
    """Aho-Corasick automaton over a set of stop strings.

    State 0 is the empty text; the state after some text is the longest tail
    of that text that is a beginning of some stop.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._next: dict[tuple[int, str], int] = {}
        self._fallback = [0]
        """Per state: the state of its longest proper tail that is also a state (the failure link)."""
        self.depth = [0]
        """Per state: the length of the text it stands for."""
        self.longest_match = [0]
        """Per state: the length of the longest stop its text ends with (0: none)."""
        for stop in stops:
            self._insert(stop)
        self._link()

    def _insert(self, stop: str) -> None:
        state = 0
        for char in stop:
            child = self._next.get((state, char))
            if child is None:
                child = len(self.depth)
                self._next[state, char] = child
                self._fallback.append(0)
                self.depth.append(self.depth[state] + 1)
                self.longest_match.append(0)
            state = child
        self.longest_match[state] = len(stop)

    def _link(self) -> None:
        """Failure links breadth first; the states are numbered so that a parent comes before its children."""
        children: dict[int, list[tuple[str, int]]] = {}
        for (parent, char), child in self._next.items():
            children.setdefault(parent, []).append((char, child))
        queue = [child for _, child in children.get(0, [])]
        for state in queue:  # the list grows while it is walked: breadth first
            for char, child in children.get(state, []):
                self._fallback[child] = self.step(self._fallback[state], char)
                if not self.longest_match[child]:
                    self.longest_match[child] = self.longest_match[self._fallback[child]]
                queue.append(child)

    def step(self, state: int, char: str) -> int:
        """The state after `char` follows the text of `state`."""
        while True:
            child = self._next.get((state, char))
            if child is not None:
                return child
            if state == 0:
                return 0
            state = self._fallback[state]


class StopMatcher:
    """Stop-string matching over streamed text, as llama-server does it.

    When stops are complete in the text, the one that starts earliest wins,
    whatever the order of the list; the text is cut where it starts. Text is
    held back while it may still begin a stop, so nothing of the stop that
    ends the text is ever released.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = {stop: None for stop in stops if stop}  # dict: unique, in the order given
        self._automaton = StopAutomaton(list(self._stops))
        self._state = 0
        self._held = ""
        self.hit: str | None = None
        """The stop that ended the text, once one has."""

    def feed(self, text: str) -> str:
        """Add text; return the part now safe to release (nothing more once a stop was hit)."""
        if self.hit is not None or not text:
            return ""
        offset = len(self._held)
        self._held += text
        if not self._stops:
            return self._release(len(self._held))
        automaton, state = self._automaton, self._state
        cut = None
        for index, char in enumerate(text, start=offset):
            state = automaton.step(state, char)
            length = automaton.longest_match[state]
            # Among the stops complete in this text, the earliest start wins; on a tie, the one completed first.
            if length and (cut is None or index + 1 - length < cut[0]):
                cut = (index + 1 - length, length)
        self._state = state
        if cut is not None:
            start, length = cut
            self.hit = self._held[start : start + length]
            return self._release(start)
        return self._release(len(self._held) - automaton.depth[state])

    def finish(self) -> str:
        """Release what is held at the end of the text (nothing after a stop)."""
        if self.hit is not None:
            return ""
        return self._release(len(self._held))

    def _release(self, count: int) -> str:
        released = self._held[:count]
        self._held = self._held[count:] if self.hit is None else ""
        return released


class TextOutput:
    """Incremental UTF-8 decoding plus stop-string matching for one generation."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopMatcher(stop)
        self.text = ""
        """All text released so far."""
        self.decoded = 0
        """Characters decoded so far, released or held."""

    @property
    def stopped(self) -> bool:
        """Whether a stop string has ended the output."""
        return self._stops.hit is not None

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to show."""
        text = self._decoder.decode(data)
        self.decoded += len(text)
        return self._keep(self._stops.feed(text))

    def finish(self) -> str:
        """Release whatever is held back at the end of a generation."""
        tail = "" if self.stopped else self._decoder.decode(b"", final=True)
        return self._keep(self._stops.feed(tail) + self._stops.finish())

    def _keep(self, released: str) -> str:
        self.text += released
        return released
