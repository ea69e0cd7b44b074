"""Knowledge bases without a model: readers, chunks that keep their place, BM25, sync, and a kill -9 mid-index."""

from __future__ import annotations

import asyncio
import itertools
import sys
import textwrap
from pathlib import Path

import apsw
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import InvalidRequest, KnowledgeBaseNotFound
from ingle.core.knowledge import KnowledgeLibrary
from ingle.core.knowledge.chunking import CHUNK_TOKENS, chunk_blocks
from ingle.core.knowledge.documents import estimate_tokens
from ingle.core.knowledge.readers import read_document
from ingle.core.settings import Settings

HANDBOOK = """\
# Handbook

Welcome to the team.

## Leave

### Booking

Book leave in the HR portal at least two weeks ahead.
Your manager approves it within three days.

## Expenses

Keep every receipt; claims without a receipt are refused.
"""


def minimal_pdf(pages: list[str]) -> bytes:
    """A small valid PDF with one line of text per page (Helvetica), xref offsets computed."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for number, text in enumerate(pages):
        page_id, content_id = 3 + 2 * number, 4 + 2 * number
        kids.append(f"{page_id} 0 R")
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {3 + 2 * len(pages)} 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{index} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture
def library(tmp_path: Path) -> KnowledgeLibrary:
    return KnowledgeLibrary(Settings(home=tmp_path / "home"))


def test_markdown_chunks_keep_their_heading_path_and_lines() -> None:
    document = read_document("handbook.md", HANDBOOK.encode())
    chunks = chunk_blocks(document.blocks)
    booking = next(c for c in chunks if "HR portal" in c.text)
    assert booking.headings == ("Handbook", "Leave", "Booking")
    assert (booking.start_line, booking.end_line) == (9, 10)
    assert HANDBOOK.splitlines()[8].startswith("Book leave")
    expenses = next(c for c in chunks if "receipt" in c.text)
    assert expenses.headings == ("Handbook", "Expenses")


def test_each_format_is_read_into_its_structure() -> None:
    rst = read_document("guide.rst", b"Guide\n=====\n\nIntro text.\n\nInstall\n-------\n\nRun pip install.\n")
    assert [(b.headings, b.text) for b in rst.blocks] == [
        (("Guide",), "Intro text."),
        (("Guide", "Install"), "Run pip install."),
    ]
    html = read_document(
        "page.html",
        b"<html><head><title>Policy</title><script>var x = 'no';</script></head><body>"
        b"<h1>Travel</h1><p>Trains over planes.</p><h2>Hotels</h2><ul><li>Book early.</li></ul></body></html>",
    )
    assert html.title == "Policy"
    assert [(b.headings, b.text) for b in html.blocks] == [
        (("Travel",), "Trains over planes."),
        (("Travel", "Hotels"), "Book early."),
    ]
    pdf = read_document("manual.pdf", minimal_pdf(["Power on with the red switch.", "Clean the filter weekly."]))
    assert [(b.page, b.text) for b in pdf.blocks] == [
        (1, "Power on with the red switch."),
        (2, "Clean the filter weekly."),
    ]
    code = read_document("tool.py", b"import os\n\n\ndef main():\n    return 1\n\n\nclass Runner:\n    pass\n")
    assert [(b.headings, b.start_line) for b in code.blocks] == [((), 1), (("def main()",), 4), (("class Runner",), 8)]


def test_long_sections_are_split_within_the_token_budget_with_line_ranges() -> None:
    lines = [f"Line {n} says something about topic {n}." for n in range(1, 201)]
    document = read_document("long.md", ("# Long\n\n" + "\n".join(lines) + "\n").encode())
    chunks = chunk_blocks(document.blocks)
    assert len(chunks) > 1
    assert all(estimate_tokens(chunk.text) <= CHUNK_TOKENS for chunk in chunks)
    assert chunks[0].start_line == 3 and chunks[-1].end_line == 202
    for before, after in itertools.pairwise(chunks):
        assert after.start_line == before.end_line + 1
        first = int(after.text.split()[1])
        assert after.start_line == first + 2


async def test_add_a_folder_names_unreadable_files_and_indexes_the_rest(
    library: KnowledgeLibrary, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "handbook.md").write_text(HANDBOOK)
    (docs / "sub" / "manual.pdf").write_bytes(minimal_pdf(["Clean the filter weekly."]))
    (docs / "sub" / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (docs / "dangling.md").symlink_to(docs / "missing.md")
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "secret.md").write_text("not indexed")
    library.create("team")
    report = await library.add("team", [str(docs), str(tmp_path / "nowhere")])
    assert report.indexed == 2
    assert len(report.failures) == 3
    assert any("broken.pdf" in failure for failure in report.failures)
    assert any("dangling.md" in failure for failure in report.failures)
    assert any("nowhere" in failure for failure in report.failures)
    result = await library.search(["team"], "how do I book leave?")
    assert result.mode == "bm25"
    assert "BM25 only" in result.notes[0]
    top = result.hits[0].stored
    assert top.location.endswith("handbook.md") and top.chunk.headings[-1] == "Booking"
    pdf_hit = (await library.search(["team"], "filter cleaning")).hits[0].stored
    assert pdf_hit.chunk.page == 1 and pdf_hit.location.endswith("manual.pdf")
    assert (await library.search(["team"], "secret")).hits == []


async def test_a_link_in_a_folder_to_a_file_outside_it_is_not_followed(
    library: KnowledgeLibrary, tmp_path: Path
) -> None:
    docs, private = tmp_path / "docs", tmp_path / "private"
    docs.mkdir()
    private.mkdir()
    (docs / "handbook.md").write_text(HANDBOOK)
    (private / "deploy-key.md").write_text("BEGIN OPENSSH PRIVATE KEY b3BlbnNzaC1rZXk")
    (docs / "key.md").symlink_to(private / "deploy-key.md")
    (docs / "also-handbook.md").symlink_to(docs / "handbook.md")  # inside the folder: followed
    library.create("team")
    report = await library.add("team", [str(docs)])
    assert report.indexed == 2
    assert len(report.failures) == 1 and "key.md links to" in report.failures[0] and "outside" in report.failures[0]
    assert (await library.search(["team"], "OPENSSH PRIVATE KEY")).hits == []
    assert (await library.search(["team"], "how do I book leave?")).hits


async def test_sync_reindexes_changed_files_and_drops_removed_ones(library: KnowledgeLibrary, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nApples are red.\n")
    (docs / "b.md").write_text("# B\n\nBananas are yellow.\n")
    (docs / "c.txt").write_text("Cherries are dark.\n")
    library.create("fruit")
    first = await library.add("fruit", [str(docs)])
    assert (first.indexed, first.unchanged) == (3, 0)
    again = await library.add("fruit", [str(docs)])
    assert (again.indexed, again.unchanged) == (0, 3)

    (docs / "a.md").write_text("# A\n\nApples are green.\n")
    (docs / "b.md").unlink()
    (docs / "d.md").write_text("# D\n\nDates are sweet.\n")
    report = await library.sync("fruit")
    assert (report.indexed, report.unchanged, report.removed) == (2, 1, 1)
    assert (await library.search(["fruit"], "bananas")).hits == []
    assert "green" in (await library.search(["fruit"], "apples")).hits[0].stored.chunk.text
    assert library.info("fruit").stats.documents == 3


async def test_without_an_embedding_model_indexing_says_it_is_bm25_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    (tmp_path / "note.md").write_text("# Note\n\nThe server room code is 4711.\n")
    async with Engine(settings) as engine:
        library = KnowledgeLibrary(settings, engine)
        library.create("notes")
        report = await library.add("notes", [str(tmp_path / "note.md")])
        assert report.indexed == 1
        assert any("ingle pull embed" in note for note in report.notes)
        result = await library.search(["notes"], "server room code")
        assert result.mode == "bm25" and result.hits[0].stored.chunk.text.endswith("4711.")


def test_names_are_checked_and_missing_bases_are_named(library: KnowledgeLibrary) -> None:
    with pytest.raises(InvalidRequest, match="not a knowledge base name"):
        library.create("../etc")
    with pytest.raises(KnowledgeBaseNotFound, match="ingle kb create nope"):
        library.open("nope")
    library.create("ok")
    with pytest.raises(InvalidRequest, match="exists already"):
        library.create("ok")


KILLED_INDEXER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    import apsw
    from ingle.core.knowledge import index as index_module
    from ingle.core.knowledge import KnowledgeLibrary
    from ingle.core.settings import Settings

    inserted = 0

    def die_at_chunk() -> int:
        global inserted
        inserted += 1
        if inserted == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of a document's transaction
        return 0

    original_init = index_module.KnowledgeIndex.__init__

    def init(self, path):
        original_init(self, path)
        self._db.create_scalar_function("die_at_chunk", die_at_chunk, 0)
        self._db.execute("CREATE TEMP TRIGGER die AFTER INSERT ON chunks BEGIN SELECT die_at_chunk(); END")

    index_module.KnowledgeIndex.__init__ = init
    library = KnowledgeLibrary(Settings(home=Path(sys.argv[1])))
    asyncio.run(library.add("big", [sys.argv[2]]))
    """
)


async def test_indexing_killed_mid_document_resumes_without_duplicates(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for number in range(12):
        sections = "\n\n".join(f"## Part {p}\n\nDocument {number} part {p} text." for p in range(3))
        (docs / f"doc{number:02}.md").write_text(f"# Doc {number}\n\n{sections}\n")
    home = tmp_path / "home"
    library = KnowledgeLibrary(Settings(home=home))
    library.create("big")
    # 3 chunks per document: the 17th chunk is the second of the sixth document.
    killed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_INDEXER, str(home), str(docs), "17", stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(killed.communicate(), timeout=300)
    assert killed.returncode == -9, stderr.decode()
    assert library.info("big").stats.documents == 5

    report = await library.add("big", [str(docs)])
    assert (report.indexed, report.unchanged) == (7, 5)
    stats = library.info("big").stats
    assert (stats.documents, stats.chunks) == (12, 36)
    db = apsw.Connection(str(library.path("big")))
    db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")
    texts = [row[0] for row in db.execute("SELECT text FROM chunks")]
    assert len(texts) == len(set(texts))
    hits = (await library.search(["big"], "document 5 part 1")).hits
    assert hits[0].stored.chunk.text == "Document 5 part 1 text."
