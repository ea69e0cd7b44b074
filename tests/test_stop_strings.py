"""Stop strings: the earliest match wins whatever the list order, and nothing of a stop leaks (issue 18, item 9).

The streaming matcher is checked against a reference that looks at the
whole text received so far after every chunk, as llama-server does.
"""

from __future__ import annotations

import codecs
import itertools
from pathlib import Path

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingle.core.engine import Engine
from ingle.core.runtime.text_output import StopMatcher, TextOutput

from .conftest import DEFAULT_MODEL, settings_for
from .servers import serving

# A small alphabet, so that random stops often occur in random texts; "é" and "😀" are several UTF-8 bytes.
ALPHABET = "ab ,\né😀"
stop_lists = st.lists(st.text(alphabet=ALPHABET, max_size=5), max_size=6)


@st.composite
def texts_and_stops(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Stops, and a text made of pieces of them and single characters, so that stops overlap often."""
    stops = draw(stop_lists)
    # Slices of other stops, anywhere in the list: stops that overlap or hold one another are the hard cases.
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if any(stops):
            whole = draw(st.sampled_from([stop for stop in stops if stop]))
            start = draw(st.integers(min_value=0, max_value=len(whole) - 1))
            end = draw(st.integers(min_value=start + 1, max_value=len(whole)))
            stops.insert(draw(st.integers(min_value=0, max_value=len(stops))), whole[start:end])
    pieces = st.text(alphabet=ALPHABET, max_size=1)
    if any(stops):
        pieces = pieces | st.sampled_from([stop for stop in stops if stop]).flatmap(
            lambda stop: st.sampled_from([stop, stop[: len(stop) // 2], stop[len(stop) // 2 :]])
        )
    return "".join(draw(st.lists(pieces, max_size=12))), stops


def reference(chunks: list[str], stops: list[str]) -> tuple[str, str | None]:
    """The output and the stop hit: after each chunk, cut at the earliest start of any stop complete in the text."""
    text = ""
    for chunk in chunks:
        text += chunk
        found = [(text.find(stop), stop) for stop in stops if stop and stop in text]
        if found:
            start = min(index for index, _ in found)
            return text[:start], next(stop for index, stop in found if index == start and text.startswith(stop, start))
    return text, None


def longest_stop_beginning_at_end(text: str, stops: list[str]) -> int:
    """How much of the end of `text` could still turn out to be a stop."""
    return max((size for stop in stops for size in range(1, len(stop)) if text.endswith(stop[:size])), default=0)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({cut % (len(text) + 1) for cut in cuts} | {0, len(text)})
    return [text[start:end] for start, end in itertools.pairwise(points)]


@given(texts_and_stops(), st.lists(st.integers(min_value=0), max_size=12))
def test_streamed_stops_match_the_reference(text_and_stops: tuple[str, list[str]], cuts: list[int]) -> None:
    text, stops = text_and_stops
    chunks = split(text, cuts)
    matcher = StopMatcher(stops)
    released, seen = "", ""
    for chunk in chunks:
        released += matcher.feed(chunk)
        seen += chunk
        if matcher.hit is None:
            # Nothing is held back that could not still become a stop, and nothing that could is shown.
            assert released == seen[: len(seen) - longest_stop_beginning_at_end(seen, stops)]
    released += matcher.finish()
    expected, hit = reference(chunks, stops)
    assert released == expected
    if hit is not None:
        assert matcher.hit is not None and len(matcher.hit) >= 1
        assert seen.startswith(matcher.hit, len(expected))
    else:
        assert matcher.hit is None


@given(texts_and_stops(), st.lists(st.integers(min_value=0), max_size=12))
def test_token_bytes_split_inside_characters_give_the_same_text(
    text_and_stops: tuple[str, list[str]], cuts: list[int]
) -> None:
    text, stops = text_and_stops
    data = text.encode()
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    pieces = [data[start:end] for start, end in itertools.pairwise(points)]
    decoder = codecs.getincrementaldecoder("utf-8")()
    output = TextOutput(stops)
    shown = "".join(output.feed(piece) for piece in pieces) + output.finish()
    expected, hit = reference([decoder.decode(piece) for piece in pieces], stops)
    assert shown == expected == output.text
    assert output.stopped == (hit is not None)


def test_the_earliest_stop_wins_whatever_the_list_order() -> None:
    # The case from the issue: "7" ends the text later than "6, 7" begins.
    for stops in (["6, 7", "7"], ["7", "6, 7"]):
        matcher = StopMatcher(stops)
        shown = "".join(matcher.feed(piece) for piece in [" 6", ",", " 7", ","]) + matcher.finish()
        assert shown == " "
        assert matcher.hit == "6, 7"


def test_a_long_stop_that_began_earlier_wins_over_a_short_one_in_the_same_piece() -> None:
    matcher = StopMatcher(["b", "xab"])
    assert matcher.feed("x") == ""
    assert matcher.feed("ab") == ""
    assert matcher.hit == "xab"


@pytest.mark.slow
async def test_the_model_s_answer_is_cut_at_the_earliest_stop_through_the_api(engine: Engine, tmp_path: Path) -> None:
    body = {"model": DEFAULT_MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 6, "temperature": 0}
    async with (
        serving(settings_for(tmp_path / "home"), engine) as base_url,
        openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client,
    ):
        whole = (await client.completions.create(**body)).choices[0].text
        assert "6, 7" in whole  # the greedy continuation the example relies on
        for stops in (["6, 7", "7"], ["7", "6, 7"]):
            answer = await client.completions.create(**body, stop=stops)
            assert answer.choices[0].text == whole[: whole.index("6, 7")]
            assert answer.choices[0].finish_reason == "stop"
