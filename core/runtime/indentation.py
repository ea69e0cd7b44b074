"""An answer asked at a line's indentation (fill-in-the-middle or a plain continuation): token healing for
its last character.

When the text before the cursor on its line is only indentation, the prompt
ends one character short of it, and the model writes that character itself,
in a token of its choice that must then go on with something other than
whitespace (or end the answer); the answer comes back without it. A tokenizer
writes "        self" as a run of seven spaces and " self", so:

- a prompt ending in all eight spaces cuts the model's word token from its
  space, a cut it rarely saw in training, and it tends to answer with a second
  indentation (`    print(...)` where `print(...)` was due);
- a prompt ending at the line break leaves the indentation to the model, which
  may write less than the cursor has and end the block the user is typing in
  (a new `def` where the next line of a function body was asked for).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

from .llama_model import LlamaModel

_INDENTATION_CHARACTERS = " \t"
_WHITESPACE = frozenset(b" \t\r\n\f\v")


def split_indentation(prefix: str) -> tuple[str, str]:
    """`prefix` without the last character of the indentation its last line holds, and that character; the
    whole prefix and "" when the last line has other text or none (nothing is held)."""
    last_line = prefix[prefix.rfind("\n") + 1 :]
    if last_line and not last_line.strip(_INDENTATION_CHARACTERS):
        return prefix[:-1], last_line[-1]
    return prefix, ""


@dataclass(frozen=True)
class _Openings:
    """How each token of a vocabulary starts, for one indentation character."""

    length: np.ndarray
    """Bytes of the token's text."""
    run: np.ndarray
    """Leading bytes that are the indentation character."""
    then_whitespace: np.ndarray
    """The byte after that run is other whitespace (a line break, the other indentation character)."""
    ends: np.ndarray
    """End-of-generation tokens."""


_TABLES: weakref.WeakKeyDictionary[LlamaModel, dict[str, _Openings]] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def _openings(model: LlamaModel, character: str) -> _Openings:
    """The table of `model`'s vocabulary for `character`, made once per model (and gone with it)."""
    made = _TABLES.get(model, {}).get(character)
    if made is not None:  # without the lock, which another model's first table may hold for half a second
        return made
    with _TABLES_LOCK:
        tables = _TABLES.setdefault(model, {})
        if character not in tables:
            tables[character] = _read_openings(model, character)
        return tables[character]


def _read_openings(model: LlamaModel, character: str) -> _Openings:
    # One pass over the vocabulary (about half a second for 150k tokens), in the worker thread that builds
    # the first prompt that needs it (see PromptBuilder.build).
    byte = character.encode()[0]
    size = model.n_vocab
    length = np.zeros(size, np.int32)
    run = np.zeros(size, np.int32)
    then_whitespace = np.zeros(size, bool)
    ends = np.zeros(size, bool)
    for token in range(size):
        text = model.token_bytes(token)
        length[token] = len(text)
        leading = len(text) - len(text.lstrip(bytes([byte])))
        run[token] = leading
        then_whitespace[token] = leading < len(text) and text[leading] in _WHITESPACE
        ends[token] = model.is_end_of_generation(token)
    return _Openings(length, run, then_whitespace, ends)


def heal_indentation(model: LlamaModel, prompt: str) -> tuple[str, str]:
    """split_indentation(prompt), with the vocabulary's table for the held character made now (a slow first
    time, in the caller's worker thread), so that a HeldIndentation made later on the event loop finds it."""
    text, held = split_indentation(prompt)
    if held:
        _openings(model, held)
    return text, held


class HeldIndentation:
    """The indentation an answer must still write before its first other character."""

    def __init__(self, model: LlamaModel, indentation: str, stop_tokens: frozenset[int] = frozenset()) -> None:
        self._table = _openings(model, indentation[0])
        self._ends = self._table.ends.copy()
        self._ends[list(stop_tokens)] = True
        self._left = len(indentation)
        self.held = True
        """Until a token writes something other than the indentation (or ends the answer)."""

    def masked(self, logits: np.ndarray) -> np.ndarray:
        """A copy of one position's logits where every token that would break the indentation is -inf."""
        table, left = self._table, self._left
        indenting = (table.run == table.length) & (table.length >= 1) & (table.length <= left)
        opening = (table.run == left) & (table.length > left) & ~table.then_whitespace
        held = logits.copy()
        held[~(indenting | opening | self._ends)] = -np.inf
        return held

    def advance(self, token: int) -> None:
        """Account for a picked token."""
        table = self._table
        if table.run[token] == table.length[token] and not self._ends[token]:
            self._left -= int(table.length[token])
        else:
            self.held = False
