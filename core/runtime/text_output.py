"""Turns generated token bytes into text, honouring stop strings.

Tokens can end in the middle of a UTF-8 character, and a stop string can
span several tokens, so text is released only once it can no longer be part
of a stop string: the user never sees the beginning of a stop sequence.
"""

from __future__ import annotations

import codecs


class TextOutput:
    """Incremental UTF-8 decoding plus stop-string matching for one generation."""

    def __init__(self, stop: list[str]) -> None:
        self._stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False
        self.text = ""
        """All text released so far."""

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to show."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data)
        for stop in self._stop:
            index = self._held.find(stop)
            if index != -1:
                self._held = self._held[:index]
                self.stopped = True
        if self.stopped:
            return self._release(len(self._held))
        return self._release(max(0, len(self._held) - self._longest_stop_prefix_at_end()))

    def finish(self) -> str:
        """Release whatever is held back at the end of a generation."""
        if not self.stopped:
            self._held += self._decoder.decode(b"", final=True)
        return self._release(len(self._held))

    def _longest_stop_prefix_at_end(self) -> int:
        """Length of the longest tail of the held text that begins some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._held)), longest, -1):
                if self._held.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, count: int) -> str:
        released, self._held = self._held[:count], self._held[count:]
        self.text += released
        return released
