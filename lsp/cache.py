"""Suggestions served again without a model call.

A suggestion is stored under its context: the lines around the cursor that
it depends on (what the prompt can take of the document, and what the stop
rules compare it with: see `suggestion_window`), the rest of the cursor's
line after it, and the cursor line's text before it. Nothing else of the
document can change a suggestion, so nothing else is hashed: a keystroke
costs the same near the 100,000-line limit as in a small file (hashing the
whole text cost 40 ms there), and an edit far from the cursor (an import at
the top) still finds it. An identical context is answered from the cache;
and while the user types the first characters of a suggestion, the context
differs only in the cursor line growing by exactly those characters, so the
rest is served.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .postprocess import stop_rule_window
from .prompt import Cursor, LineWindow, prompt_window
from .settings import CompletionSettings

# How far back along the cursor line a typed-ahead suggestion is looked for (llama.vim looks 128 back).
TYPED_AHEAD_LIMIT = 128


def suggestion_window(settings: CompletionSettings) -> LineWindow:
    """The lines around the cursor's line that a suggestion made with these settings depends on."""
    return prompt_window(settings).union(stop_rule_window(settings.max_lines))


def _digest(lines: Sequence[str]) -> bytes:
    # Each line with its end, so that no two lists of lines hash alike ([""] and [] would, joined by "\n").
    hashed = hashlib.blake2b(digest_size=16)
    for line in lines:
        hashed.update(line.encode("utf-8", "surrogatepass"))
        hashed.update(b"\n")
    return hashed.digest()


@dataclass(frozen=True)
class CacheKey:
    """A completion context, with the long parts hashed."""

    scope: str
    """The document and the model: a suggestion never crosses either."""
    above: bytes
    """The window's lines above the cursor's line."""
    after: bytes
    """The cursor's line after the cursor, and the window's lines below it."""
    line_prefix: str

    @classmethod
    def of(cls, cursor: Cursor, model: str, window: LineWindow | None = None) -> CacheKey:
        """The key of a cursor's context; `window` is the settings' `suggestion_window` (the default settings'
        when not given)."""
        if window is None:
            window = suggestion_window(CompletionSettings())
        above = _digest(cursor.lines_above(window.above))
        after = _digest([cursor.line_suffix, *cursor.lines_below(window.below)])
        return cls(f"{model}\0{cursor.filename}", above, after, cursor.line_prefix)


class SuggestionCache:
    """A least-recently-used map from contexts to suggestions ("" means: nothing to suggest there)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[CacheKey, str] = OrderedDict()

    def get(self, key: CacheKey) -> str | None:
        """The suggestion for this context, or the rest of one whose first characters were typed since."""
        exact = self._entries.get(key)
        if exact is not None:
            self._entries.move_to_end(key)
            return exact
        line_prefix = key.line_prefix
        for typed in range(1, min(len(line_prefix), TYPED_AHEAD_LIMIT) + 1):
            earlier = CacheKey(key.scope, key.above, key.after, line_prefix[:-typed])
            suggestion = self._entries.get(earlier)
            if suggestion and len(suggestion) > typed and suggestion.startswith(line_prefix[-typed:]):
                self._entries.move_to_end(earlier)
                return suggestion[typed:]
        return None

    def put(self, key: CacheKey, suggestion: str) -> None:
        """Remember a suggestion, evicting the least recently used beyond the size."""
        if self.size == 0:
            return
        self._entries[key] = suggestion
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (the settings or the model changed)."""
        self._entries.clear()
