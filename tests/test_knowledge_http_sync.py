"""Knowledge bases managed wholly through the daemon: one document dropped, a sync by content hash, the CLI.

A deployed server's home belongs to the service user, so `ingle kb` run by
anyone else must leave the writing to the daemon: it reads files itself, tells
the daemon what each source holds (sha256 per document) and uploads only what
the daemon asks for. BM25 only here (no embedding model): vectors are not the
point, and the tests stay quick.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingle.adapters.http.app import create_app
from ingle.core.engine import Engine
from ingle.core.knowledge import KnowledgeLibrary
from ingle.core.knowledge.library import MAX_FILES_PER_SOURCE
from tests.fakes import start_on_loopback

from .conftest import settings_for
from .servers import start_daemon
from .test_cli import assert_one_error_line, ingle

MANAGEMENT_KEY = "kb-management-key-for-tests"

LEAVE = "# Leave\n\nBook leave in the HR portal at least two weeks ahead.\n"
LEAVE_CHANGED = "# Leave\n\nBook leave in the Workday portal at least three weeks ahead.\n"
PARKING = "# Parking\n\nStaff parking is on level -2 of the garage.\n"
LUNCH = "# Lunch\n\nThe canteen serves lunch from noon until two.\n"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "management-key"
    path.write_text(MANAGEMENT_KEY + "\n")
    return path


@pytest.fixture
async def api(tmp_path: Path, key_file: Path) -> AsyncIterator[tuple[str, KnowledgeLibrary]]:
    """The real app over an empty home (no models), on a loopback port; knowledge writes need the key."""
    settings = settings_for(tmp_path / "home", management_key_file=key_file, socket_path="")
    async with Engine(settings) as engine:
        runner, url = await start_on_loopback(create_app(settings, engine))
        try:
            yield url, KnowledgeLibrary(settings)
        finally:
            await runner.cleanup()


async def call(url: str, method: str, path: str, body: Any = None, key: str | None = MANAGEMENT_KEY) -> tuple[int, Any]:
    """One request with the management key (unless `key` is None); its status and decoded body."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.request(method, f"{url}{path}", json=body) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text else None


async def upload(url: str, location: str, text: str, source: str) -> None:
    body = {"location": location, "content": text, "source": source}
    status, answer = await call(url, "POST", "/api/knowledge/handbook/documents", body)
    assert status == 200, answer


def stored(library: KnowledgeLibrary) -> dict[str, int]:
    """Source location -> documents it holds, as `show` reports them."""
    return {source.location: source.documents for source in library.info("handbook").sources}


async def test_a_sync_drops_what_is_gone_and_asks_only_for_what_changed(api: tuple[str, KnowledgeLibrary]) -> None:
    url, library = api
    assert (await call(url, "POST", "/api/knowledge", {"name": "handbook"}))[0] == 201
    documents = [
        {"location": "/docs/leave.md", "sha256": sha256(LEAVE)},
        {"location": "/docs/parking.md", "sha256": sha256(PARKING)},
    ]
    status, plan = await call(url, "POST", "/api/knowledge/handbook/sync", {"source": "/docs", "documents": documents})
    assert status == 200, plan
    assert plan["upload"] == ["/docs/leave.md", "/docs/parking.md"] and plan["unchanged"] == 0
    await upload(url, "/docs/leave.md", LEAVE, "/docs")
    await upload(url, "/docs/parking.md", PARKING, "/docs")
    assert stored(library) == {"/docs": 2}

    # leave.md changed, parking.md was deleted, lunch.md is new.
    documents = [
        {"location": "/docs/leave.md", "sha256": sha256(LEAVE_CHANGED)},
        {"location": "/docs/lunch.md", "sha256": sha256(LUNCH)},
    ]
    status, plan = await call(url, "POST", "/api/knowledge/handbook/sync", {"source": "/docs", "documents": documents})
    assert status == 200, plan
    assert (plan["upload"], plan["unchanged"], plan["removed"]) == (["/docs/leave.md", "/docs/lunch.md"], 0, 1)
    assert stored(library) == {"/docs": 1}  # parking.md is gone before anything is uploaded
    await upload(url, "/docs/leave.md", LEAVE_CHANGED, "/docs")
    await upload(url, "/docs/lunch.md", LUNCH, "/docs")

    # Unchanged now; a document the client could not read (null) is kept as it is.
    documents = [
        {"location": "/docs/leave.md", "sha256": sha256(LEAVE_CHANGED)},
        {"location": "/docs/lunch.md", "sha256": None},
    ]
    status, plan = await call(url, "POST", "/api/knowledge/handbook/sync", {"source": "/docs", "documents": documents})
    assert (status, plan["upload"], plan["unchanged"], plan["removed"]) == (200, [], 1, 0)
    assert stored(library) == {"/docs": 2}
    assert library.info("handbook").stats.chunks == 2  # none left of parking.md or the old leave.md
    status, found = await call(url, "POST", "/api/knowledge/handbook/search", {"query": "portal", "mode": "bm25"})
    assert [hit["text"] for hit in found["hits"]] == ["Book leave in the Workday portal at least three weeks ahead."]


async def test_one_document_or_a_whole_source_is_dropped(api: tuple[str, KnowledgeLibrary]) -> None:
    url, library = api
    await call(url, "POST", "/api/knowledge", {"name": "handbook"})
    await upload(url, "/docs/leave.md", LEAVE, "/docs")
    await upload(url, "/docs/parking.md", PARKING, "/docs")
    await upload(url, "https://intranet.example/lunch.html", LUNCH, "https://intranet.example/lunch.html")

    status, answer = await call(url, "DELETE", "/api/knowledge/handbook/documents", {"location": "/docs/parking.md"})
    assert (status, answer) == (200, {"removed": 1})
    assert stored(library) == {"/docs": 1, "https://intranet.example/lunch.html": 1}
    status, found = await call(url, "POST", "/api/knowledge/handbook/search", {"query": "parking", "mode": "bm25"})
    assert found["hits"] == []

    status, answer = await call(url, "DELETE", "/api/knowledge/handbook/documents", {"location": "/docs"})
    assert (status, answer) == (200, {"removed": 1})
    assert stored(library) == {"https://intranet.example/lunch.html": 1}

    status, answer = await call(url, "DELETE", "/api/knowledge/handbook/documents", {"location": "/docs/leave.md"})
    assert status == 404 and answer["error"].endswith("has no source or document '/docs/leave.md'.")
    status, answer = await call(url, "DELETE", "/api/knowledge/nope/documents", {"location": "/docs"})
    assert status == 404 and "no knowledge base 'nope'" in answer["error"]


async def test_dropping_and_syncing_need_the_management_key_over_tcp(api: tuple[str, KnowledgeLibrary]) -> None:
    url, library = api
    await call(url, "POST", "/api/knowledge", {"name": "handbook"})
    await upload(url, "/docs/leave.md", LEAVE, "/docs")
    empty_sync = {"source": "/docs", "documents": []}
    for method, path, body in [
        ("DELETE", "/api/knowledge/handbook/documents", {"location": "/docs"}),
        ("POST", "/api/knowledge/handbook/sync", empty_sync),
    ]:
        status, answer = await call(url, method, path, body, key=None)
        assert status == 403 and "management key" in answer["error"], (path, answer)
    assert stored(library) == {"/docs": 1}  # nothing dropped
    status, answer = await call(url, "POST", "/api/knowledge/handbook/sync", empty_sync)
    assert (status, answer["removed"]) == (200, 1), answer
    assert stored(library) == {"/docs": 0}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/api/knowledge/..%2Fetc/sync", {"source": "/d", "documents": []}, "is not a knowledge base name"),
        ("/api/knowledge/Handbook/documents", {"location": "/d"}, "is not a knowledge base name"),
        ("/api/knowledge/handbook/sync", {"source": "", "documents": []}, "source: String should have at least"),
        (
            "/api/knowledge/handbook/sync",
            {"source": "/d" * 2000, "documents": []},
            "source: String should have at most",
        ),
        (
            "/api/knowledge/handbook/sync",
            {"source": "/d", "documents": [{"location": "/d/a.md", "sha256": "not-a-hash"}]},
            "documents.0.sha256: String should match pattern",
        ),
        (
            "/api/knowledge/handbook/sync",
            {"source": "/d", "documents": [{"location": "/d/a.md", "sha256": None}] * (MAX_FILES_PER_SOURCE + 1)},
            f"documents: List should have at most {MAX_FILES_PER_SOURCE} items",
        ),
        ("/api/knowledge/handbook/sync", {"source": "/d"}, "documents: Field required"),
        ("/api/knowledge/handbook/documents", {"location": "/d", "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
async def test_hostile_input_is_refused_with_one_sentence(
    api: tuple[str, KnowledgeLibrary], path: str, body: Any, expected: str
) -> None:
    url, library = api
    library.create("handbook")
    method = "DELETE" if path.endswith("/documents") else "POST"
    status, answer = await call(url, method, path, body)
    assert status == 400, answer
    assert expected in answer["error"] and answer["error"].count(". ") == 0, answer
    assert stored(library) == {}


def test_ingle_kb_works_through_a_daemon_and_writes_nothing_in_the_users_home(tmp_path: Path, key_file: Path) -> None:
    server_home, user_home, docs = tmp_path / "server", tmp_path / "user", tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text(LEAVE)
    (docs / "parking.md").write_text(PARKING)
    # Over TCP only (no unix socket), as a user who is not the service's reaches a deployed daemon.
    daemon = start_daemon(server_home, "--socket", "", INGLE_MANAGEMENT_KEY_FILE=str(key_file))

    def kb(*args: str, key: Path = key_file) -> Any:
        return ingle("--host", daemon.url, "kb", *args, home=user_home, INGLE_MANAGEMENT_KEY_FILE=str(key))

    try:
        line = assert_one_error_line(kb("create", "handbook", key=tmp_path / "no-key"), 1)
        assert "management key" in line
        created = kb("create", "handbook")
        assert (created.returncode, created.stdout, created.stderr) == (0, "handbook\n", "")
        added = kb("add", "handbook", str(docs), str(tmp_path / "missing.md"))
        assert added.returncode == 1, added.stderr
        # The result is the last line; a note before it says there are no vectors (no embedding model here).
        assert added.stdout.endswith("\nhandbook: 2 documents indexed (2 chunks), 1 skipped.\n")
        assert f"Skipped: {tmp_path / 'missing.md'}: no such file or folder." in added.stderr

        (docs / "leave.md").write_text(LEAVE_CHANGED)
        (docs / "parking.md").unlink()
        (docs / "lunch.md").write_text(LUNCH)
        synced = kb("sync", "handbook")
        assert (synced.returncode, synced.stderr) == (0, "")
        assert synced.stdout.endswith("\nhandbook: 2 documents indexed (2 chunks), 1 removed.\n")
        again = kb("sync", "handbook")
        assert again.stdout.splitlines()[-1] == "handbook: 0 documents indexed (0 chunks), 2 unchanged."

        found = kb("search", "handbook", "when is lunch served?", "--mode", "bm25", "-k", "1")
        assert found.returncode == 0 and found.stdout.startswith("[1] docs/lunch.md › Lunch"), found.stdout
        shown = kb("show", "handbook")
        assert f"{docs}  (2 documents" in shown.stdout and daemon.url in shown.stdout, shown.stdout
        listed = kb("list")
        assert listed.stdout.splitlines()[1].split()[:4] == ["handbook", "2", "2", "0"]
        assert (server_home / "knowledge" / "handbook.sqlite").is_file()
        assert not (user_home / "knowledge").exists()

        removed = kb("rm", "handbook")
        assert (removed.returncode, removed.stdout) == (0, "deleted 'handbook'\n")
        assert not (server_home / "knowledge" / "handbook.sqlite").exists()
    finally:
        daemon.stop()


# --- a damaged knowledge base -------------------------------------------------------------------------


def error_sentence(answer: Any) -> str:
    """The error sentence of either error shape (Ollama's or OpenAI's)."""
    error = answer["error"]
    return error if isinstance(error, str) else error["message"]


async def test_a_damaged_knowledge_base_is_listed_with_its_problem_and_a_question_to_it_is_a_409(
    api: tuple[str, KnowledgeLibrary],
) -> None:
    url, library = api
    library.create("good")
    (library.folder / "bad.sqlite").write_bytes(os.urandom(70000))

    status, listed = await call(url, "GET", "/api/knowledge", key=None)
    assert status == 200, listed
    problems = {summary["name"]: summary["problem"] for summary in listed["knowledge_bases"]}
    assert problems["good"] is None
    problem = problems["bad"]
    assert problem == library.info("bad").problem and "is damaged or not a knowledge base" in problem
    status, shown = await call(url, "GET", "/api/knowledge/bad", key=None)
    assert (status, shown["problem"]) == (200, problem)

    question = [{"role": "user", "content": "Where do staff park?"}]
    for path, body in [
        ("/api/knowledge/bad/search", {"query": "parking", "mode": "bm25"}),
        ("/api/chat", {"model": "m", "messages": question, "knowledge": ["bad"], "stream": False}),
        ("/api/chat", {"model": "m", "messages": question, "knowledge": ["good", "bad"]}),
        ("/v1/chat/completions", {"model": "m", "messages": question, "knowledge": ["bad"], "stream": True}),
    ]:
        status, answer = await call(url, "POST", path, body, key=None)
        assert (status, error_sentence(answer)) == (409, problem), (path, answer)


def test_ingle_kb_says_a_knowledge_base_is_damaged_alike_with_or_without_a_daemon(tmp_path: Path) -> None:
    home = tmp_path / "server"
    assert ingle("kb", "create", "good", home=home).returncode == 0
    (home / "knowledge" / "bad.sqlite").write_bytes(os.urandom(70000))
    (home / "knowledge" / "dir.sqlite").mkdir()
    (tmp_path / "parking.md").write_text(PARKING)
    commands = [
        ("kb", "list"),
        ("kb", "show", "bad"),
        ("kb", "search", "bad", "parking", "--mode", "bm25"),
        ("kb", "add", "bad", str(tmp_path / "parking.md")),
        ("kb", "sync", "bad"),
    ]
    here = [ingle("--embedded", *command, home=home) for command in commands]
    daemon = start_daemon(home, "--socket", "")
    try:
        through = [ingle("--host", daemon.url, *command, home=tmp_path / "user") for command in commands]
    finally:
        daemon.stop()

    for command, local, remote in zip(commands, here, through, strict=True):
        assert (remote.returncode, remote.stdout, remote.stderr) == (local.returncode, local.stdout, local.stderr), (
            command
        )
    listed = through[0]
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[:2] for line in listed.stdout.splitlines()[1:]]
    assert rows == [["bad", "damaged"], ["dir", "damaged"], ["good", "0"]]
    assert f"bad: {home / 'knowledge' / 'bad.sqlite'} is damaged or not a knowledge base" in listed.stderr
    for failed in through[1:]:
        assert "is damaged or not a knowledge base" in assert_one_error_line(failed, 1)
