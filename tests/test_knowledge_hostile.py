"""Knowledge bases against hostile input: named pipes, Ctrl-C mid-PDF, compressed PDFs that expand a
thousandfold, text without whitespace, terminal escapes, and files SQLite cannot use."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import zlib
from collections.abc import AsyncGenerator
from pathlib import Path

import apsw
import pytest

from ingle.core.errors import StorageFull
from ingle.core.generation import ChatMessage, EmbeddingResult, GenerationChunk, GenerationRequest, GenerationStats
from ingle.core.knowledge import KnowledgeLibrary, readers
from ingle.core.knowledge import library as library_module
from ingle.core.knowledge.chunking import CHUNK_CHARS, CHUNK_TOKENS
from ingle.core.knowledge.documents import Chunk, estimate_tokens
from ingle.core.knowledge.grounding import RETRIEVED_CHUNKS, GroundedBackend
from ingle.core.knowledge.index import (
    KnowledgeBaseBusy,
    KnowledgeBaseDamaged,
    KnowledgeBaseStorageFull,
    KnowledgeIndex,
    storage_error,
)
from ingle.core.settings import Settings

from .test_cli import assert_one_error_line, ingle, ingle_executable

EXIT_INTERRUPTED = 130
MINIFIED = "parking.level=2;" * 12000


def shared_stream_pdf(megabytes: float, pages: int) -> bytes:
    """A small PDF whose pages all show one Flate stream that decodes to `megabytes` of text operators."""
    content = b"BT /F1 12 Tf 72 700 Td (hello world) Tj ET\n"
    data = zlib.compress(content * int(megabytes * 1e6 / len(content)), 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (5 + i) for i in range(pages)) + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(data) + data + b"\nendstream",
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 4 0 R >>"
    )
    objects += [page] * pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture
def library(tmp_path: Path) -> KnowledgeLibrary:
    return KnowledgeLibrary(Settings(home=tmp_path / "home"))


# --- 1. named pipes and other files that are not regular --------------------------------------------


def test_a_named_pipe_in_a_folder_is_skipped_by_name_and_the_rest_indexed(tmp_path: Path) -> None:
    home, docs = tmp_path / "home", tmp_path / "docs"
    docs.mkdir()
    (docs / "readme.md").write_text("# Parking\n\nThe visitor car park is on level 2.\n")
    pipes = ["pipe", "pipe.md", "pipe.txt", "pipe.log"]
    for name in pipes:
        os.mkfifo(docs / name)
    os.mkfifo(tmp_path / "given.txt")
    assert ingle("kb", "create", "f", home=home).returncode == 0

    added = ingle("--embedded", "kb", "add", "f", str(docs), str(tmp_path / "given.txt"), home=home, timeout=60)

    assert added.returncode == 1, added.stderr
    assert "f: 1 document indexed (1 chunk), 5 skipped." in added.stdout
    skipped = [line for line in added.stderr.splitlines() if line.startswith("Skipped:")]
    assert sorted(skipped) == sorted(
        f"Skipped: {path}: a named pipe, not a file ingle reads."
        for path in [*(docs / name for name in pipes), tmp_path / "given.txt"]
    )
    found = ingle("kb", "search", "f", "visitor car park", "--mode", "bm25", home=home)
    assert found.stdout.startswith("[1] docs/readme.md › Parking")


# --- 2. Ctrl-C ----------------------------------------------------------------------------------------


def test_ctrl_c_while_a_heavy_pdf_is_read_stops_at_once_and_leaves_whole_documents(tmp_path: Path) -> None:
    home, docs = tmp_path / "home", tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The visitor car park is on level 2.\n")
    for name in ("b.pdf", "c.pdf", "d.pdf"):  # each several seconds of pypdf, within the bounds on one document
        (docs / name).write_bytes(shared_stream_pdf(0.9, 12))
    assert ingle("kb", "create", "f", home=home).returncode == 0
    database = home / "knowledge" / "f.sqlite"
    process = subprocess.Popen(
        [ingle_executable(), "--embedded", "kb", "add", "f", str(docs)],
        env={**os.environ, "INGLE_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As at a terminal, whatever the test runner's own disposition of SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not _has_source(database):  # the source is recorded just before its documents are read
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        process.communicate(timeout=60)
        took = time.monotonic() - interrupted
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED
    assert took < 5, f"Ctrl-C took {took:.1f} s"
    # Every document stored is whole: one transaction each, never cut by the interruption.
    connection = apsw.Connection(str(database))
    assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert not connection.execute(
        "SELECT location FROM documents WHERE id NOT IN (SELECT document_id FROM chunks)"
    ).fetchall()
    listed = ingle("kb", "list", home=home)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[0] == "f"


def _has_source(database: Path) -> bool:
    connection = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return connection.execute("SELECT count(*) FROM sources").fetchone() != (0,)
    except apsw.BusyError:
        return False
    finally:
        connection.close()


# --- 3. hostile content is bounded ------------------------------------------------------------------


def test_a_pdf_whose_pages_expand_to_megabytes_is_indexed_without_them_and_says_so(
    library: KnowledgeLibrary, tmp_path: Path
) -> None:
    bomb = tmp_path / "out.pdf"
    bomb.write_bytes(shared_stream_pdf(5, 20))  # 18 KB on disk; 136 s of CPU and 12,920 chunks before the bounds
    library.create("kb")

    started = time.process_time()
    report = asyncio.run(library.add("kb", [str(bomb)]))

    assert time.process_time() - started < 20
    assert report.chunks == 0 and report.indexed == 1
    assert (
        f"{bomb}: indexed without 20 pages with over 1,000,000 bytes of content (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, …)."
        in (report.notes)
    )


def test_a_document_past_the_text_and_chunk_bounds_is_cut_with_a_sentence(
    library: KnowledgeLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "MAX_DOCUMENT_CHARS", 300_000)  # the real bounds cost seconds of pypdf each
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(shared_stream_pdf(0.3, 10))  # ~77,000 characters of text a page
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(f"Paragraph {n} about the parking rules." for n in range(3000)))
    library.create("kb")

    report = asyncio.run(library.add("kb", [str(pdf)]))
    # 300,000 characters end inside page 4.
    assert f"{pdf}: indexed without the end of page 4 and pages 5–10 (past ingle's limits for one document)." in (
        report.notes
    )
    index = library.open("kb")
    try:
        assert index.stats().chunks > 0 and {c.chunk.page for c in index.chunks_without_vectors(10_000)} == {1, 2, 3, 4}
    finally:
        index.close()

    big = tmp_path / "big.log"
    big.write_text("a log line that repeats\n" * 20_000)  # 480,000 characters
    report = asyncio.run(library.add("kb", [str(big)]))
    assert f"{big}: only its first 299,999 of 480,000 characters were indexed." in report.notes

    monkeypatch.setattr(library_module, "MAX_DOCUMENT_CHUNKS", 50)
    report = asyncio.run(library.add("kb", [str(notes)]))
    assert report.chunks == 50
    assert any(note.startswith(f"{notes}: only its first 50 of ") for note in report.notes)


def test_text_without_whitespace_is_cut_into_bounded_chunks(library: KnowledgeLibrary, tmp_path: Path) -> None:
    script = tmp_path / "config.js"
    script.write_text(MINIFIED)
    library.create("kb")

    report = asyncio.run(library.add("kb", [str(script)]))

    assert report.chunks > 1
    index = library.open("kb")
    try:
        chunks = [stored.chunk for stored in index.chunks(list(range(1, report.chunks + 1))).values()]
    finally:
        index.close()
    assert "".join(chunk.text for chunk in chunks) == MINIFIED
    assert all(len(c.text) <= CHUNK_CHARS and estimate_tokens(c.text) <= CHUNK_TOKENS for c in chunks)
    assert all(chunk.place() == "line 1" for chunk in chunks)
    assert max(len(c.text) for c in chunks) <= CHUNK_CHARS


class _Recorder:
    """A backend that answers "ok" and keeps the request it was sent."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.requests.append(request)
        yield GenerationChunk(text="ok", done=True, stats=GenerationStats())

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        raise NotImplementedError


def test_a_giant_chunk_from_an_older_index_cannot_fill_the_chat_prompt(library: KnowledgeLibrary) -> None:
    library.create("kb")
    index = library.open("kb")
    try:  # what a knowledge base indexed before chunks were bounded holds: one 192 KB line
        source = index.add_source("/old/config.js")
        index.put_document(source, "/old/config.js", "config.js", "x", [Chunk(MINIFIED, (), 1, 1, None)], None)
    finally:
        index.close()
    inner = _Recorder()
    question = ChatMessage(role="user", content="which parking level?")
    request = GenerationRequest(model="m", messages=[question], knowledge=["kb"])

    async def ask() -> str:
        return "".join([chunk.text async for chunk in GroundedBackend(inner, library).generate(request)])

    asyncio.run(ask())

    sent = inner.requests[0].messages
    assert sent is not None
    prompt = "".join(message.content for message in sent)
    assert len(prompt) < RETRIEVED_CHUNKS * (CHUNK_CHARS + 200) + 1000


# --- 4. terminal escapes ------------------------------------------------------------------------------


def test_search_shows_control_characters_as_escapes(tmp_path: Path) -> None:
    home, docs = tmp_path / "home", tmp_path / "docs"
    docs.mkdir()
    (docs / "trap.txt").write_text("Parking rules \x1b[2J\x1b[31mred\x1b]0;title\x07 end \x9b6n \u202ehere\n")
    assert ingle("kb", "create", "f", home=home).returncode == 0
    assert ingle("--embedded", "kb", "add", "f", str(docs), home=home, timeout=120).returncode == 0

    found = ingle("kb", "search", "f", "parking rules", "--mode", "bm25", home=home)

    assert found.returncode == 0, found.stderr
    assert not {"\x1b", "\x07", "\x9b", "\u202e"} & set(found.stdout)
    assert "    Parking rules \\x1b[2J\\x1b[31mred\\x1b]0;title\\x07 end \\x9b6n \\u202ehere\n" in found.stdout


# --- 5. files SQLite cannot use, and names ------------------------------------------------------------


def test_a_damaged_file_is_listed_as_damaged_and_can_be_removed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert ingle("kb", "create", "good", home=home).returncode == 0
    (home / "knowledge" / "bad.sqlite").write_bytes(os.urandom(70000))
    (home / "knowledge" / "dir.sqlite").mkdir()

    listed = ingle("kb", "list", home=home)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert rows == [["bad", "damaged", "-", "-", "68.4", "KiB"], ["dir", "damaged", "-", "-", "0", "B"],
                    ["good", "0", "0", "0", "64.0", "KiB"]]  # fmt: skip
    assert f"bad: {home / 'knowledge' / 'bad.sqlite'} is damaged or not a knowledge base" in listed.stderr
    assert "`ingle kb rm bad`" in listed.stderr
    assert f"dir: {home / 'knowledge' / 'dir.sqlite'} is not a knowledge base file" in listed.stderr

    shown = ingle("kb", "show", "bad", home=home)
    assert "is damaged or not a knowledge base" in assert_one_error_line(shown, 1)
    searched = ingle("kb", "search", "bad", "anything", "--mode", "bm25", home=home)
    assert "is damaged or not a knowledge base" in assert_one_error_line(searched, 1)

    removed = ingle("kb", "rm", "bad", home=home)
    assert (removed.returncode, removed.stdout) == (0, "deleted 'bad'\n")
    assert "bad" not in ingle("kb", "list", home=home).stdout


def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = ingle("kb", "create", "abc\n", home=home)
    assert "'abc\\n' is not a knowledge base name" in assert_one_error_line(created, 2)
    assert not (home / "knowledge" / "abc\n.sqlite").exists()


def test_a_writer_holding_the_lock_is_named_in_a_sentence(tmp_path: Path) -> None:
    home, docs = tmp_path / "home", tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The visitor car park is on level 2.\n")
    assert ingle("kb", "create", "f", home=home).returncode == 0
    writer = apsw.Connection(str(home / "knowledge" / "f.sqlite"))
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO meta VALUES ('held', 'by another process')")
    try:
        started = time.monotonic()
        added = ingle("--embedded", "kb", "add", "f", str(docs), home=home, timeout=60)
        took = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    line = assert_one_error_line(added, 1)
    assert line == "Error: Another process is writing to the knowledge base 'f': try again when it has finished."
    assert took < 20


def test_sqlite_failures_become_sentences_that_say_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "knowledge" / "kb.sqlite"
    busy = storage_error(path, apsw.BusyError("database is locked"))
    assert isinstance(busy, KnowledgeBaseBusy)
    full = storage_error(path, apsw.FullError("database or disk is full"))
    assert (
        isinstance(full, StorageFull)
        and full.message == f"The disk holding {path} is full: free some space and try again."
    )
    damaged = storage_error(path, apsw.NotADBError("file is not a database"))
    assert isinstance(damaged, KnowledgeBaseDamaged) and "`ingle kb rm kb`" in damaged.message
    read_only = storage_error(path, apsw.ReadOnlyError("attempt to write a readonly database"))
    assert "read-only" in read_only.message
    cannot_open = storage_error(path, apsw.CantOpenError("unable to open database file"))
    assert cannot_open.message.startswith(f"ingle cannot open {path}: check that you may read and write it")


def test_create_leaves_no_stub_when_the_disk_fills_up(
    library: KnowledgeLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FillsTheDisk(KnowledgeIndex):
        def __init__(self, path: Path) -> None:
            path.write_bytes(b"SQLite format 3\x00")  # SQLite had begun the file
            raise KnowledgeBaseStorageFull(f"The disk holding {path} is full: free some space and try again.")

    monkeypatch.setattr(library_module, "KnowledgeIndex", FillsTheDisk)
    with pytest.raises(KnowledgeBaseStorageFull):
        library.create("kb")
    assert library.names() == []
