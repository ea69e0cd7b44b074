"""Citation marks for a streamed grounded answer: the model's own `[n]` where valid, ingle's where it wrote none.

Small models rarely write citation marks (the 0.5B default cited an excerpt
in 1 answer of 20), so ingle attributes each passage it can: at the end of
each sentence or line it scores the passage's words against the excerpts the
model was given and marks the excerpt sharing the largest weighted share of
them, if that share clears MIN_SUPPORT. Words are compared as written,
lowercased (no stemming); a word is weighed by how few of the excerpts hold
it, so the words every excerpt shares (the question's, usually) count little,
and words no excerpt holds (the model's own) weigh against any mark.

The answer still streams: only the run of non-letters at its end (spaces,
punctuation, a `[n` not yet closed) is held back, since that is where a
passage ends and where a mark goes. Code (fenced or inline) is never marked
nor edited.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

MIN_SUPPORT = 0.3
"""The weighted share of a passage's words an excerpt must hold to be cited for it.

Chosen by reading the default model's answers to bench/knowledge.py's first 20
questions: passages restating their excerpt scored 0.31 to 1.0, those in the
model's own words or on another excerpt mostly under 0.25."""

MIN_SHARED_WORDS = 2
"""Words a passage must share with an excerpt to be cited for it (so `1.` of a numbered list never is)."""

HELD_LIMIT = 200
"""Characters of a run of non-letters held back at most; past it the front is let through unmarked."""

_FUNCTION_WORDS = """
    a about above after again all also am an and any are as at be been before being below between both but by
    can could did do does doing done down during each either else etc few for from further had has have having he
    her here hers him his how i if in into is it its itself just may me might more most must my need no nor not of
    off on once only or other our ours out over own same shall she should so some such than that the their theirs
    them then there these they this those through to too under until up upon us use used uses using very via was
    we were what when where which while who whom why will with within without would yes yet you your yours"""
_STOPWORDS = frozenset(_FUNCTION_WORDS.split())
"""Words too common to tell an excerpt that supports a passage from one that does not."""

_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]+")
_GAP_TOKEN = re.compile(r"(?P<fence>`{3,})|(?P<tick>`{1,2})|(?P<mark>[ \t]*\[(?P<number>\d{1,3})\])|(?P<char>.)", re.S)
_MARK_SPOT = re.compile(r"[.!?:;]*\s*$")
_SENTENCE_STOP = ".!?"
_CLOSERS = ")]\"'*_"
_STARTS_A_SENTENCE = '`*"(_#'


def content_words(text: str) -> set[str]:
    """The words of `text` that carry meaning: lowercased, without common function words and single letters."""
    return {
        word for word in _WORD.findall(text.lower()) if (len(word) > 1 or word.isdigit()) and word not in _STOPWORDS
    }


class ExcerptMatcher:
    """Finds the excerpt that supports a passage, by the weighted share of the passage's words it holds."""

    def __init__(self, excerpts: list[str]) -> None:
        self._words = [content_words(text) for text in excerpts]
        holders = Counter(word for words in self._words for word in words)
        count = len(excerpts)
        # BM25's idf over the excerpts: a word in all of them tells them apart least.
        self._weight = lambda word: math.log(1 + (count - holders[word] + 0.5) / (holders[word] + 0.5))

    def supporting(self, passage: str) -> int | None:
        """The number (from 1) of the excerpt best supporting `passage`, or None if none does well enough."""
        words = content_words(passage)
        total = sum(self._weight(word) for word in words)
        best, best_share = None, 0.0
        for number, excerpt in enumerate(self._words, start=1):
            shared = words & excerpt
            share = sum(self._weight(word) for word in shared) / total if total else 0.0
            if len(shared) >= MIN_SHARED_WORDS and share > best_share:
                best, best_share = number, share
        return best if best_share >= MIN_SUPPORT else None


@dataclass(frozen=True)
class Citation:
    """A citation mark in the answer, in the order it appears."""

    number: int
    added: bool
    """True when ingle attributed the passage; False when the model wrote the mark."""


class CitationMarker:
    """Passes a streamed answer through, keeping valid `[n]` marks, dropping invalid ones and adding missing ones.

    `feed` each piece of text and emit what it returns; at the end emit what
    `finish` returns. `citations` then lists every mark in the answer.
    """

    def __init__(self, excerpts: list[str]) -> None:
        self._matcher = ExcerptMatcher(excerpts)
        self._count = len(excerpts)
        self.citations: list[Citation] = []
        self._held = ""
        self._passage = ""
        self._passage_marked = False
        self._fenced = False
        self._inline_code = False

    def cited(self) -> list[int]:
        """The excerpt numbers cited, each once, in the order first cited."""
        return list(dict.fromkeys(citation.number for citation in self.citations))

    def feed(self, text: str) -> str:
        """The part of the answer so far that can be shown now, marks included."""
        held = self._held + text
        runs = list(_LETTERS.finditer(held))
        if not runs:
            self._held = held
            return self._release_overflow()
        shown, start = [], 0
        for run in runs:
            shown.append(self._resolve(held[start : run.start()], following=run.group()[0]))
            shown.append(run.group())
            self._passage += run.group()
            start = run.end()
        self._held = held[start:]
        return "".join(shown) + self._release_overflow()

    def finish(self) -> str:
        """The rest of the answer: what was held back, with the last passage's mark."""
        held, self._held = self._held, ""
        return self._resolve(held, following=None)

    def _release_overflow(self) -> str:
        """Let the front of an overlong run of non-letters through, so the stream never stalls on one."""
        if len(self._held) <= HELD_LIMIT:
            return ""
        front, self._held = self._held[:-16], self._held[-16:]
        return self._resolve(front, following="")

    def _resolve(self, gap: str, following: str | None) -> str:
        """`gap` (non-letters between two letters) as shown, given the letter after it (None: the answer ends;
        "": not known yet)."""
        out = ""
        after_stop = False
        for token in _GAP_TOKEN.finditer(gap):
            text = token.group()
            if token.group("fence"):
                # Code is neither attributed nor marked: a mark after a fence would break the fence.
                self._fenced, self._inline_code = not self._fenced, False
                self._passage, self._passage_marked = "", False
            elif self._fenced:
                pass
            elif token.group("tick"):
                self._inline_code = not self._inline_code
            elif self._inline_code:
                self._inline_code = text != "\n"
            elif token.group("mark"):
                number = int(token.group("number"))
                if not 1 <= number <= self._count:
                    continue  # names no excerpt: dropped
                self.citations.append(Citation(number, added=False))
                self._passage_marked = True
                out += text
                continue
            elif text == "\n" or (text.isspace() and after_stop and _starts_sentence(gap[token.end() :], following)):
                out = self._end_passage(out)
            after_stop = text in _SENTENCE_STOP or (after_stop and text in _CLOSERS)
            out += text
            self._passage += text
        if following is None:
            out = self._end_passage(out)
        return out

    def _end_passage(self, out: str) -> str:
        """`out` with the ending passage's mark put before its closing punctuation, if it needs one and has one."""
        passage, marked = self._passage, self._passage_marked
        self._passage, self._passage_marked = "", False
        if marked or self._fenced or self._inline_code:
            return out
        number = self._matcher.supporting(passage)
        if number is None:
            return out
        self.citations.append(Citation(number, added=True))
        spot = _MARK_SPOT.search(out)
        at = spot.start() if spot else len(out)
        return f"{out[:at]} [{number}]{out[at:]}"


def _starts_sentence(rest: str, following: str | None) -> bool:
    """Whether what follows a stop and a space starts a new sentence (not `e.g. the` or `v. 2`)."""
    first = rest.lstrip()[:1] or following
    return first is None or first.isupper() or (first != "" and first in _STARTS_A_SENTENCE)


def mark_citations(answer: str, excerpts: list[str]) -> tuple[str, list[int]]:
    """A whole answer with its citation marks (as `CitationMarker` streams them), and the numbers it cites."""
    marker = CitationMarker(excerpts)
    marked = marker.feed(answer) + marker.finish()
    return marked, marker.cited()
