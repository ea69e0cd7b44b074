"""Client text that spells a control token (`<|im_start|>`) reaches the model as that text, never as the token.

A chat template writes its turn markers as text that becomes control tokens
when tokenized; a user who types the same text must not start a turn of their
own. Before rendering, every spelling of a control token in client values is
swapped for a placeholder no client can guess; the rendered prompt is then
tokenized piece by piece: the template's text with its markers as control
tokens, each placeholder as the plain text it stands for.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from ..generation import ChatMessage
from .llama_model import LlamaModel

Value = TypeVar("Value")


class ControlTextShield:
    """The placeholders of one prompt: `hide` client values before rendering, `tokenize` the rendered text."""

    def __init__(self, control_texts: Sequence[str]) -> None:
        # Longest first, so that a control text that begins with another is replaced whole.
        self._texts = sorted(set(control_texts), key=len, reverse=True)
        self._index = {text: index for index, text in enumerate(self._texts)}
        self._spelled = re.compile("|".join(map(re.escape, self._texts))) if self._texts else None
        # ASCII letters and digits only, so a template's tojson (even with ensure_ascii) keeps it intact.
        self._marker = f"ingle{secrets.token_hex(8)}x"
        self._placeholder = re.compile(rf"{self._marker}(\d+)x")

    def hide(self, value: Value) -> Value:
        """`value` (a string, or lists and dicts of them) with each control-token spelling replaced by a placeholder.

        A loop rather than recursion: JSON from a client may nest deeper than Python's stack.
        """
        top: list[Any] = [None]
        pending: list[tuple[Any, list[Any] | dict[Any, Any], Any]] = [(value, top, 0)]
        while pending:
            item, parent, key = pending.pop()
            if isinstance(item, str):
                item = self._hide_text(item)
            elif isinstance(item, list):
                copy: list[Any] = [None] * len(item)
                pending.extend((child, copy, index) for index, child in enumerate(item))
                item = copy
            elif isinstance(item, dict):
                keys = [self._hide_text(name) if isinstance(name, str) else name for name in item]
                mapping = dict.fromkeys(keys)  # the keys in their order now, the values as they come
                pending.extend(zip(item.values(), [mapping] * len(keys), keys, strict=True))
                item = mapping
            parent[key] = item
        return top[0]

    def hide_message(self, message: ChatMessage) -> ChatMessage:
        """A chat message whose every client-written field is hidden."""
        return replace(
            message,
            role=self.hide(message.role),
            content=self.hide(message.content),
            tool_calls=self.hide(message.tool_calls),
            name=self.hide(message.name),
        )

    def _hide_text(self, text: str) -> str:
        if self._spelled is None:
            return text
        return self._spelled.sub(lambda found: f"{self._marker}{self._index[found.group(0)]}x", text)

    def tokenize(self, model: LlamaModel, text: str, add_bos: bool) -> list[int]:
        """Tokens of rendered `text`: control tokens where the template wrote them, plain text where a client did."""
        pieces = self._placeholder.split(text)  # template text, placeholder index, template text, …
        tokens: list[int] = []
        for position, piece in enumerate(pieces):
            if position % 2:
                tokens += model.tokenize(self._texts[int(piece)], add_special=False, parse_special=False)
            elif piece or (position == 0 and add_bos):
                tokens += model.tokenize(piece, add_special=add_bos and position == 0, parse_special=True)
        return tokens
