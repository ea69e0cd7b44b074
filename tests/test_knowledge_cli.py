"""`ingle kb` as a user runs it: exit codes, one line per unreadable file, results on stdout."""

from __future__ import annotations

from pathlib import Path

from .test_cli import ingle
from .test_knowledge_index import HANDBOOK


def test_kb_commands_from_create_to_rm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "handbook.md").write_text(HANDBOOK)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")

    created = ingle("kb", "create", "handbook", home=home)
    assert (created.returncode, created.stdout, created.stderr) == (0, "handbook\n", "")
    again = ingle("kb", "create", "handbook", home=home)
    assert again.returncode == 2 and "exists already" in again.stderr

    added = ingle("--embedded", "kb", "add", "handbook", str(docs), home=home, timeout=300)
    assert added.returncode == 1
    assert added.stdout.endswith("\nhandbook: 1 document indexed (3 chunks), 1 skipped.\n")
    assert "ingle pull embed" in added.stdout  # no embedding model here: BM25 only, and it says so, with the result
    skipped = [line for line in added.stderr.splitlines() if line.startswith("Skipped:")]
    assert len(skipped) == 1 and "broken.pdf is not a readable PDF" in skipped[0]

    (docs / "broken.pdf").unlink()
    synced = ingle("--embedded", "kb", "sync", "handbook", home=home, timeout=300)
    assert (synced.returncode, synced.stderr) == (0, "")  # a command that succeeds says nothing on stderr
    assert "1 unchanged" in synced.stdout

    found = ingle("kb", "search", "handbook", "when must leave be booked?", "--mode", "bm25", "-k", "1", home=home)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("[1] docs/handbook.md › Handbook › Leave › Booking (lines 9–10)\n")
    assert "HR portal" in found.stdout

    listed = ingle("kb", "list", home=home)
    assert listed.stdout.splitlines()[1].split()[:4] == ["handbook", "1", "3", "0"]
    shown = ingle("kb", "show", "handbook", home=home)
    assert str(docs) in shown.stdout and "BM25 search only" in shown.stdout

    missing = ingle("kb", "search", "nope", "anything", "--mode", "bm25", home=home)
    assert missing.returncode == 1 and "ingle kb create nope" in missing.stderr

    removed = ingle("kb", "rm", "handbook", home=home)
    assert (removed.returncode, removed.stdout) == (0, "deleted 'handbook'\n")
    assert not (home / "knowledge" / "handbook.sqlite").exists()
