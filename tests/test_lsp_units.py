"""The language server's parts without a model: settings, prompt layout, stop rules, cache, context ring."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingle.lsp.cache import CacheKey, SuggestionCache
from ingle.lsp.context import ContextRing
from ingle.lsp.postprocess import StreamStop, clean_suggestion
from ingle.lsp.prompt import Anchors, Cursor, build_prompt
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


def test_at_the_indentation_the_model_writes_the_indentation_and_the_suggestion_does_not_repeat_it() -> None:
    cursor = cursor_in("def f(x):\n    |\n")
    prompt = build_prompt(cursor, Anchors(), [], CompletionSettings())
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
