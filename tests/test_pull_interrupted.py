"""Pulls that are killed, interrupted, cancelled or run out of disk leave a store that resumes cleanly."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingle.core.errors import StorageFull
from ingle.core.pull import pull
from ingle.core.settings import Settings
from ingle.core.store import ModelStore

from .fakes.gguf_files import write_tiny_gguf
from .fakes.http_files import FakeFileServer, ServedFile
from .test_cli import ingle_executable


@pytest.fixture
def server() -> Iterator[FakeFileServer]:
    with FakeFileServer() as fake:
        yield fake


HELD_AT = 256 * 1024


@pytest.fixture
def slow_model(server: FakeFileServer, tmp_path: Path) -> Iterator[tuple[ServedFile, str]]:
    """A ~2 MiB GGUF whose download stops after 256 KiB until the test calls `resume_serving`.

    Held rather than slowed: the interruption then lands mid-download however
    busy the machine is (a slow download could finish before the signal).
    """
    data = write_tiny_gguf(tmp_path / "big.gguf", rows=64 * 1024).read_bytes()
    served = server.add_file("big.gguf", data, chunk_size=16 * 1024, hold_after=HELD_AT)
    try:
        yield served, server.file_url("big.gguf")
    finally:
        served.released.set()


def resume_serving(served: ServedFile) -> None:
    """Serve the rest of the file, and the whole of it to later requests."""
    served.hold_after = None
    served.released.set()


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def interrupt_when_held(child: subprocess.Popen[str], partial: Path, signum: int) -> str:
    """Send SIGNUM to a pulling CHILD once its partial holds all the server sends before the hold; its stderr."""
    try:
        wait_for(lambda: size_of(partial) >= HELD_AT or child.poll() is not None, what="the partial to grow")
        assert child.poll() is None, child.communicate()
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return stderr


def as_from_a_terminal() -> None:
    """Give the child Ctrl-C's default disposition, as a shell in a terminal does.

    A child inherits an ignored SIGINT, and in the full suite something before these tests leaves the
    test process ignoring it; the pull then never sees the signal a user's Ctrl-C would deliver.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def assert_nothing_final(store: ModelStore) -> None:
    assert list(store.blobs_dir.iterdir()) == []
    assert list(store.manifests_dir.rglob("*.json")) == []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_pull_resumes_with_range(
    server: FakeFileServer, slow_model: tuple[ServedFile, str], tmp_path: Path, signum: int
) -> None:
    served, url = slow_model
    settings = Settings(home=tmp_path / "home")
    store = ModelStore(settings.models_dir)
    partial = store.partial_path(url)
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from ingle.core.pull import pull
        from ingle.core.settings import Settings
        from ingle.core.store import ModelStore
        settings = Settings(home=Path({str(settings.home)!r}))
        asyncio.run(pull(ModelStore(settings.models_dir), settings, {url!r}, sha256={served.sha256!r}))
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    stderr = interrupt_when_held(child, partial, signum)
    assert child.returncode != 0
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr

    assert_nothing_final(store)
    kept = size_of(partial)
    assert kept == HELD_AT

    resume_serving(served)
    manifest = asyncio.run(pull(ModelStore(settings.models_dir), settings, url, sha256=served.sha256))
    assert manifest.digest == f"sha256-{served.sha256}"
    assert hashlib.sha256(store.blob_path(manifest.digest).read_bytes()).hexdigest() == served.sha256
    resumed = server.seen("GET", "/files/")[-1]
    assert resumed.headers["Range"] == f"bytes={kept}-"
    assert not partial.exists()


def test_ctrl_c_stops_ingle_pull_with_130_and_the_next_pull_resumes(
    server: FakeFileServer, slow_model: tuple[ServedFile, str], tmp_path: Path
) -> None:
    served, url = slow_model
    home = tmp_path / "home"
    partial = ModelStore(Settings(home=home).models_dir).partial_path(url)
    command = [ingle_executable(), "--home", str(home), "--embedded", "pull", url, "--sha256", served.sha256]
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    stderr = interrupt_when_held(child, partial, signal.SIGINT)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert size_of(partial) == HELD_AT

    resume_serving(served)
    again = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "big:latest"
    assert server.seen("GET", "/files/")[-1].headers["Range"] == f"bytes={HELD_AT}-"


async def test_a_cancelled_pull_keeps_its_partial(
    server: FakeFileServer, slow_model: tuple[ServedFile, str], tmp_path: Path
) -> None:
    served, url = slow_model
    settings = Settings(home=tmp_path / "home")
    store = ModelStore(settings.models_dir)
    partial = store.partial_path(url)
    task = asyncio.create_task(pull(store, settings, url, sha256=served.sha256))
    deadline = time.monotonic() + 60
    while size_of(partial) < HELD_AT and not task.done():
        assert time.monotonic() < deadline, "the download never started"
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_final(store)
    kept = size_of(partial)
    assert kept == HELD_AT

    resume_serving(served)
    manifest = await pull(store, settings, url, sha256=served.sha256)
    assert manifest.digest == f"sha256-{served.sha256}"
    assert server.seen("GET", "/files/")[-1].headers["Range"] == f"bytes={kept}-"


async def test_a_full_disk_during_download_raises_storage_full(
    server: FakeFileServer, tiny_disk_home: Path, tmp_path: Path
) -> None:
    data = write_tiny_gguf(tmp_path / "big.gguf", rows=96 * 1024).read_bytes()  # 3 MiB
    server.add_file("big.gguf", data)
    settings = Settings(home=tiny_disk_home)
    store = ModelStore(settings.models_dir)
    with pytest.raises(StorageFull, match=r"The disk is full: .* free \d+ MiB and pull again"):
        await pull(store, settings, server.file_url("big.gguf"))
    assert_nothing_final(store)
    # What was written is kept under partial/ only, for a resume once there is room.
    assert [p.suffix for p in store.partial_dir.iterdir() if p.suffix == ".partial"] == [".partial"]
    assert ModelStore(settings.models_dir).list() == []
