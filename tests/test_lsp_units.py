"""The language server's parts without a model: settings, prompt layout, stop rules, cache, context ring."""

from __future__ import annotations

import random
from copy import copy

import pytest
from pydantic import ValidationError

from ingle.lsp.cache import CacheKey, SuggestionCache, suggestion_window
from ingle.lsp.context import ContextRing
from ingle.lsp.postprocess import StreamStop, clean_suggestion
from ingle.lsp.prompt import Anchors, Cursor, LineWindow, build_prompt
from ingle.lsp.settings import CompletionSettings


def cursor_in(text: str, marker: str = "|", filename: str = "code.py") -> Cursor:
    """A cursor where `marker` is in `text` (the marker removed)."""
    before, after = text.split(marker)
    lines = (before + after).split("\n")
    line = before.count("\n")
    return Cursor(filename=filename, lines=lines, line=line, character=len(before.split("\n")[-1]))


# --- settings -----------------------------------------------------------------------


def test_settings_accept_camel_and_snake_case_bare_or_under_ingle() -> None:
    settings = CompletionSettings().updated({"maxLines": 2, "debounce_ms": 50})
    assert (settings.max_lines, settings.debounce_ms) == (2, 50)
    nested = settings.updated({"ingle": {"enabledLanguages": ["python"], "daemonUrl": "http://x:1"}})
    assert nested.max_lines == 2 and nested.enabled_for("python") and not nested.enabled_for("rust")


def test_settings_refuse_unknown_and_out_of_range_values() -> None:
    with pytest.raises(ValidationError):
        CompletionSettings().updated({"maxLinez": 2})
    with pytest.raises(ValidationError):
        CompletionSettings().updated({"maxLines": 0})


def test_disabled_language_wins_over_star() -> None:
    settings = CompletionSettings(disabled_languages=["markdown"])
    assert settings.enabled_for("python") and not settings.enabled_for("markdown")


# --- prompt layout ------------------------------------------------------------------


def _source(lines: int) -> str:
    return "\n".join(f"value_{index} = compute({index})" for index in range(lines))


def test_typing_on_a_line_only_appends_to_the_prompt_prefix() -> None:
    settings = CompletionSettings(prefix_lines=8, suffix_lines=2, below_lines=6, anchor_lines=4)
    anchors = Anchors()
    lines = _source(60).split("\n")
    first = build_prompt(Cursor("a.py", lines, 30, 4), anchors, [], settings)
    second = build_prompt(Cursor("a.py", lines, 30, 9), anchors, [], settings)
    assert second.prefix.startswith(first.prefix)
    assert second.chunks == first.chunks
    assert first.suffix.count("\n") == 3  # the rest of the line and two more: a short suffix


def test_the_prefix_start_stays_put_while_typing_new_lines() -> None:
    settings = CompletionSettings(prefix_lines=8, suffix_lines=2, below_lines=6, anchor_lines=4)
    anchors = Anchors()
    lines = _source(60).split("\n")
    first = build_prompt(Cursor("a.py", lines, 30, 0), anchors, [], settings)
    # The user pressed Enter twice: two new lines above the old text below.
    grown = lines[:31] + ["x = 1", ""] + lines[31:]
    later = build_prompt(Cursor("a.py", grown, 32, 0), anchors, [], settings)
    assert later.prefix.startswith(first.prefix.rsplit("\n", 1)[0])
    assert later.chunks == first.chunks, "the chunk below moved down with its text and stays the same"


def test_the_prompt_re_anchors_after_moving_far() -> None:
    settings = CompletionSettings(prefix_lines=8, suffix_lines=2, below_lines=6, anchor_lines=4)
    anchors = Anchors()
    lines = _source(60).split("\n")
    build_prompt(Cursor("a.py", lines, 10, 0), anchors, [], settings)
    moved = build_prompt(Cursor("a.py", lines, 40, 0), anchors, [], settings)
    assert moved.prefix.startswith("value_32 ")
    assert "value_43 " in moved.chunks[-1].text


def test_extra_context_chunks_come_first_and_the_below_chunk_last() -> None:
    ring = ContextRing(max_chunks=4, chunk_lines=8)
    ring.pick("other.py", _source(20).split("\n"), 5)
    prompt = build_prompt(
        Cursor("a.py", _source(60).split("\n"), 5, 0), Anchors(), ring.chunks_for("a.py"), CompletionSettings()
    )
    assert [chunk.filename for chunk in prompt.chunks] == ["other.py", "a.py"]


def test_on_a_blank_line_the_file_is_continued_rather_than_filled_in() -> None:
    # Measured in the README: the default model writes the next line better without the suffix.
    cursor = cursor_in("def f(x):\n    |\n    return y\n")
    request = build_prompt(cursor, Anchors(), [], CompletionSettings()).request("m", 8)
    assert (request.prompt, request.suffix, request.raw) == ("def f(x):\n    ", None, True)
    assert request.filename == "code.py", "the engine writes the file's header after the other files"
    inside = build_prompt(cursor_in("def f(x):\n    return |\n"), Anchors(), [], CompletionSettings())
    assert inside.suffix is not None, "inside a line the rest of it matters: fill in the middle"
    first_line = build_prompt(cursor_in("|\nx = 1\n"), Anchors(), [], CompletionSettings())
    assert first_line.suffix is not None, "nothing before the cursor to continue"


def test_at_the_indentation_the_model_writes_the_indentation_and_the_suggestion_does_not_repeat_it() -> None:
    cursor = cursor_in("def f(x):\n    |\n")
    prompt = build_prompt(cursor, Anchors(), [], CompletionSettings(plain_at_line_start=False))
    assert prompt.prefix == "def f(x):\n", "a prefix ending in spaces makes the model indent twice"
    assert clean_suggestion("    return x\n", cursor, 4) == "return x"
    assert clean_suggestion("        y = x\n", cursor, 4) == "    y = x", "a deeper indentation keeps its extra part"
    assert clean_suggestion("return x\n", cursor, 4) == "return x"


# --- the context ring -----------------------------------------------------------------


def test_the_ring_keeps_the_newest_chunks_and_one_per_region() -> None:
    ring = ContextRing(max_chunks=2, chunk_lines=8)
    text = _source(100).split("\n")
    ring.pick("a.py", text, 10)
    ring.pick("a.py", text, 12)  # same region: replaces the first
    assert len(ring) == 1
    ring.pick("b.py", text, 50)
    ring.pick("c.py", text, 80)
    assert [chunk.filename for chunk in ring.chunks_for("z.py")] == ["b.py", "c.py"]
    assert ring.chunks_for("b.py")[0].filename == "c.py", "a file's own chunks are not its context"


def test_the_ring_skips_nearly_empty_chunks() -> None:
    ring = ContextRing(max_chunks=2, chunk_lines=8)
    ring.pick("a.py", ["", "x = 1", "", ""], 0)
    assert len(ring) == 0


# --- stop rules and post-processing ---------------------------------------------------


def test_a_line_in_progress_gets_one_line() -> None:
    cursor = cursor_in("def add(a, b):\n    return |\n")
    assert clean_suggestion("a + b\n\n\ndef sub(a, b):\n    return a - b", cursor, 4) == "a + b"
    stop = StreamStop(cursor, 4)
    assert not stop.feed("a + b")
    assert stop.feed("\n")


def test_a_block_ends_where_the_indentation_drops() -> None:
    cursor = cursor_in("def f(items):\n    |\n")
    raw = "total = 0\n    for item in items:\n        total += item\n    return total\nprint(f([1]))"
    assert (
        clean_suggestion(raw, cursor, 8) == "total = 0\n    for item in items:\n        total += item\n    return total"
    )
    stop = StreamStop(cursor, 8)
    assert not stop.feed("total = 0\n    for item in items:\n")
    assert stop.feed("        total += item\n    return total\nprint(f([1]))\n")


def test_the_line_limit_and_trailing_blank_lines() -> None:
    cursor = cursor_in("def f():\n    |\n")
    assert clean_suggestion("a = 1\n    b = 2\n    c = 3\n\n", cursor, 2) == "a = 1\n    b = 2"


def test_a_suggestion_stops_where_it_repeats_the_text_after_the_cursor() -> None:
    cursor = cursor_in("def f(x):\n    |\n    return y\n")
    assert clean_suggestion("y = x * 2\n    return y\n", cursor, 4) == "y = x * 2"


def test_the_closing_text_already_after_the_cursor_is_not_suggested_again() -> None:
    cursor = cursor_in("print(|)\n")
    assert clean_suggestion('"hello")', cursor, 4) == '"hello"'


def test_empty_whitespace_and_repeated_suggestions_are_dropped() -> None:
    assert clean_suggestion("   \n\n", cursor_in("x = |\n"), 4) == ""
    assert clean_suggestion(")", cursor_in("print(|)\n"), 4) == ""
    # restating the line above
    assert clean_suggestion("total += 1", cursor_in("    total += 1\n    |\n"), 4) == ""
    # restating the next line
    assert clean_suggestion("return x", cursor_in("def f(x):\n    |\n    return x\n"), 4) == ""


def test_a_block_opener_continues_on_the_next_line() -> None:
    cursor = cursor_in("def add(a, b):|\n")
    stop = StreamStop(cursor, 4)
    assert not stop.feed("\n")
    assert stop.feed("    return a + b\n")
    assert clean_suggestion(stop.text, cursor, 4) == "\n    return a + b"


# --- the cache ------------------------------------------------------------------------


def test_identical_context_is_served_from_the_cache() -> None:
    cache = SuggestionCache(8)
    cursor = cursor_in("def add(a, b):\n    return |\n")
    cache.put(CacheKey.of(cursor, "m"), "a + b")
    assert cache.get(CacheKey.of(cursor_in("def add(a, b):\n    return |\n"), "m")) == "a + b"
    assert cache.get(CacheKey.of(cursor, "other-model")) is None


def test_typing_the_suggestion_serves_its_rest() -> None:
    cache = SuggestionCache(8)
    cache.put(CacheKey.of(cursor_in("def add(a, b):\n    return |\n"), "m"), "a + b")
    assert cache.get(CacheKey.of(cursor_in("def add(a, b):\n    return a |\n"), "m")) == "+ b"
    assert cache.get(CacheKey.of(cursor_in("def add(a, b):\n    return a - |\n"), "m")) is None
    assert cache.get(CacheKey.of(cursor_in("def add(a, b):\n    return a + b|\n"), "m")) is None


def test_the_cache_forgets_the_least_recently_used() -> None:
    cache = SuggestionCache(2)
    keys = [CacheKey.of(cursor_in(f"x{index} = |\n"), "m") for index in range(3)]
    for key in keys:
        cache.put(key, "1")
    assert cache.get(keys[0]) is None and cache.get(keys[2]) == "1"


def test_the_cache_goes_by_the_lines_around_the_cursor_and_no_others() -> None:
    # Its key hashed the whole text: 40 ms a keystroke near the 100,000-line limit, and an edit anywhere (an import
    # at the top) lost every suggestion of the file.
    window = LineWindow(above=2, below=1)
    text = "a = 1\nb = 2\nc = 3\ndef add(x, y):\n    return |\nd = 4\ne = 5\n"
    cache = SuggestionCache(8)
    cache.put(CacheKey.of(cursor_in(text), "m", window), "x + y")

    def served(edited: str) -> str | None:
        return cache.get(CacheKey.of(cursor_in(edited), "m", window))

    assert served(text.replace("b = 2", "b = 9")) == "x + y", "above the window"
    assert served(text.replace("e = 5", "e = 9")) == "x + y", "below the window"
    assert served("import math\n" + text) == "x + y", "the same lines a line further down"
    assert served(text.replace("c = 3", "c = 9")) is None, "the window's top line"
    assert served(text.replace("d = 4", "d = 9")) is None, "the window's bottom line"
    assert served(text.replace("|\n", "|  # note\n")) is None, "the rest of the cursor's line"
    cache.put(CacheKey.of(cursor_in("x = |"), "m", window), "1")
    assert served("\nx = |") is None, "an empty line above is a line, not the start of the document"


def test_no_suggestion_depends_on_a_line_outside_the_cache_window() -> None:
    # The cache serves a suggestion again wherever the lines of `suggestion_window` are the same: the prompt and the
    # stop rules must read no other line, whatever the settings and however the anchors moved.
    chance = random.Random(11)
    for _ in range(200):
        settings = CompletionSettings(
            prefix_lines=chance.randint(0, 6),
            suffix_lines=chance.randint(0, 4),
            below_lines=chance.randint(0, 4),
            anchor_lines=chance.randint(1, 4),
            max_lines=chance.randint(1, 3),
        )
        window = suggestion_window(settings)
        # Runs of blank lines, which the stop rules look past for the next line of code.
        lines = [f"line_{index} = {index}" if chance.random() < 0.5 else "" for index in range(60)]
        anchors = Anchors()
        line = chance.randrange(len(lines))
        for _ in range(12):
            cursor = Cursor("a.py", lines, line, chance.randint(0, len(lines[line])))
            masked = [
                text if line - window.above <= index <= line + window.below else f"elsewhere_{index}"
                for index, text in enumerate(lines)
            ]
            elsewhere = Cursor("a.py", masked, line, cursor.character)
            assert build_prompt(elsewhere, copy(anchors), [], settings) == build_prompt(
                cursor, copy(anchors), [], settings
            )
            # What the model might write: the lines around the cursor again, which the stop rules look for.
            raw = "\n".join(lines[max(0, line - 2) : line + 12])
            assert clean_suggestion(raw, elsewhere, settings.max_lines) == clean_suggestion(
                raw, cursor, settings.max_lines
            )
            build_prompt(cursor, anchors, [], settings)
            # Typing moves the lines under the anchors: a line inserted or deleted, then the cursor moves a little.
            if chance.random() < 0.3:
                lines.insert(chance.randrange(len(lines)), f"inserted_{chance.random()}")
            elif chance.random() < 0.3 and len(lines) > 10:
                del lines[chance.randrange(len(lines))]
            line = min(len(lines) - 1, max(0, line + chance.randint(-3, 3)))
