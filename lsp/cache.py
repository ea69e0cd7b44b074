"""Suggestions served again without a model call.

A suggestion is stored under its context: the document above the cursor's
line, everything after the cursor, and the cursor line's text before it.
An identical context is answered from the cache; and while the user types
the first characters of a suggestion, the context differs only in the
cursor line growing by exactly those characters, so the rest is served.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from .prompt import Cursor

# How far back along the cursor line a typed-ahead suggestion is looked for (llama.vim looks 128 back).
TYPED_AHEAD_LIMIT = 128


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(frozen=True)
class CacheKey:
    """A completion context, with the long parts hashed."""

    scope: str
    """The document and the model: a suggestion never crosses either."""
    above: bytes
    after: bytes
    line_prefix: str

    @classmethod
    def of(cls, cursor: Cursor, model: str) -> CacheKey:
        """The key of a cursor's context."""
        return cls(
            f"{model}\0{cursor.filename}", _digest(cursor.text_before), _digest(cursor.text_after), cursor.line_prefix
        )


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
