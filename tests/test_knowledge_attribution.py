"""Citation marks on a streamed answer: kept where the model wrote valid ones, added where it wrote none."""

from __future__ import annotations

from ingle.core.knowledge.attribution import Citation, CitationMarker, mark_citations
from ingle.core.knowledge.grounding import CitedSource, listed_sources

EXCERPTS = [
    "Staff parking is on level -2 of the garage; the gate opens with your badge.",
    "Book leave in the Workday portal at least 14 days ahead.\nYour manager approves it within three working days.",
    "Descale the coffee machine monthly with the tablets kept in the kitchen drawer.",
    "Expense claims go through Concur; attach the receipt photo before the end of the month.",
]


def streamed(answer: str, size: int = 3) -> tuple[list[str], CitationMarker]:
    """What the marker shows for `answer` fed in pieces of `size` characters, the last entry being `finish()`."""
    marker = CitationMarker(EXCERPTS)
    shown = [marker.feed(answer[start : start + size]) for start in range(0, len(answer), size)]
    return [*shown, marker.finish()], marker


def test_each_paragraph_is_marked_with_the_excerpt_that_supports_it() -> None:
    answer = (
        "Book your leave in the Workday portal 14 days ahead, and your manager approves it.\n\n"
        "The coffee machine is descaled monthly with tablets from the kitchen drawer."
    )
    shown, marker = streamed(answer)
    assert "".join(shown) == (
        "Book your leave in the Workday portal 14 days ahead, and your manager approves it [2].\n\n"
        "The coffee machine is descaled monthly with tablets from the kitchen drawer [3]."
    )
    assert marker.citations == [Citation(2, added=True), Citation(3, added=True)]


def test_the_sources_list_only_what_is_cited_in_citation_order() -> None:
    sources = [CitedSource(n, f"doc{n}.md", text) for n, text in enumerate(EXCERPTS, start=1)]
    _, cited = mark_citations(
        "Descale it monthly with the kitchen drawer tablets. Leave goes in Workday [2].", EXCERPTS
    )
    assert listed_sources(sources, cited) == "Sources:\n[3] doc3.md\n[2] doc2.md"


def test_a_passage_no_excerpt_supports_gets_no_mark_and_the_sources_stay_complete() -> None:
    answer = "I am a helpful assistant. Python lists keep their insertion order."
    marked, cited = mark_citations(answer, EXCERPTS)
    assert marked == answer
    sources = [CitedSource(n, f"doc{n}.md", text) for n, text in enumerate(EXCERPTS, start=1)]
    assert listed_sources(sources, cited).count("\n[") == len(EXCERPTS)


def test_marks_the_model_wrote_are_kept_and_not_doubled() -> None:
    answer = "Parking is on level -2 of the garage [1]. Descale the coffee machine monthly. [3] Thanks!"
    marked, cited = mark_citations(answer, EXCERPTS)
    assert marked == answer
    assert cited == [1, 3]


def test_a_mark_naming_no_excerpt_is_dropped_and_the_passage_attributed() -> None:
    marked, cited = mark_citations("Staff parking is on level -2 with your badge [7]. Hello [12].", EXCERPTS)
    assert marked == "Staff parking is on level -2 with your badge [1]. Hello."
    assert cited == [1]


def test_code_is_neither_marked_nor_edited() -> None:
    answer = "Index it as `claims[7]`:\n```\nreceipts = claims[9]\n```\nAttach the receipt photo in Concur."
    marked, _ = mark_citations(answer, EXCERPTS)
    assert marked == answer.replace("in Concur.", "in Concur [4].")


def test_the_answer_streams_while_it_is_marked() -> None:
    first = "Book leave in the Workday portal 14 days ahead. "
    shown, _ = streamed(first + "Your manager approves it within three working days.", size=len(first) + 1)
    # The first sentence is shown, mark and all, before the second has arrived.
    assert shown[0] == "Book leave in the Workday portal 14 days ahead [2]. Y"
    assert shown[-1] == " [2]."


def test_a_numbered_list_marks_its_items_not_their_numbers() -> None:
    answer = "Steps:\n1. Book leave in the Workday portal.\n2. Your manager approves it within three working days."
    marked, _ = mark_citations(answer, EXCERPTS)
    assert marked == (
        "Steps:\n1. Book leave in the Workday portal [2].\n2. Your manager approves it within three working days [2]."
    )
