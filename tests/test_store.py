"""The model store on real files: manifests, blobs, garbage collection, damage, traversal, full disks."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from ingle.core.errors import (
    CorruptModel,
    DigestMismatch,
    InvalidDigest,
    InvalidModelName,
    ModelNotFound,
    StorageFull,
)
from ingle.core.gguf_info import read_gguf_info
from ingle.core.manifest import Manifest
from ingle.core.names import ModelName
from ingle.core.store import ModelStore

from .fakes.gguf_files import write_tiny_gguf


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for folders), to compare before and after."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def manifest_for(store: ModelStore, name: str, gguf: Path) -> Manifest:
    """Import `gguf` and record it as `name`."""
    digest = store.import_file(gguf)
    return store.put(
        Manifest(
            name=name,
            digest=digest,
            size=gguf.stat().st_size,
            source=f"file:{gguf}",
            created_at="2025-01-01T00:00:00+00:00",
            gguf=read_gguf_info(gguf),
        )
    )


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "home" / "models")


@pytest.fixture
def ggufs(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "files"
    folder.mkdir()
    return [write_tiny_gguf(folder / f"tiny{i}.gguf", seed=i) for i in range(3)]


def test_put_get_list_copy_remove(store: ModelStore, ggufs: list[Path]) -> None:
    manifest_for(store, "zeta:1b", ggufs[0])
    stored = manifest_for(store, "Alpha/Model:Q4", ggufs[1])

    # Names are case-insensitive, the tag too: one spelling is stored, any finds it.
    assert stored.name == "alpha/model:q4"
    assert [m.name for m in store.list()] == ["alpha/model:q4", "zeta:1b"]
    assert store.get("alpha/model:Q4") == stored == store.get("ALPHA/model:q4")
    assert store.get(ModelName("alpha/model", "q4")).digest == stored.digest
    assert (store.root / "manifests" / "alpha" / "model" / "q4.json").is_file()

    copied = store.copy("zeta:1b", "zeta-copy")
    assert copied.name == "zeta-copy:latest" and copied.digest == store.get("zeta:1b").digest
    assert store.remove("zeta:1b") == []  # the copy still uses the blob
    assert store.has_blob(copied.digest)
    assert store.remove("zeta-copy") == [copied.digest]
    assert not store.has_blob(copied.digest)
    assert not (store.root / "manifests" / "zeta").exists()
    with pytest.raises(ModelNotFound, match="ingle pull"):
        store.get("zeta:1b")
    with pytest.raises(ModelNotFound):
        store.remove("zeta:1b")
    assert [m.name for m in store.list()] == ["alpha/model:q4"]


def test_a_tag_stored_in_upper_case_before_is_still_found_and_replaced(store: ModelStore, ggufs: list[Path]) -> None:
    stored = manifest_for(store, "coder:q4", ggufs[0])
    older = store.root / "manifests" / "coder" / "Q4_K_M.json"
    (store.root / "manifests" / "coder" / "q4.json").rename(older)  # as an older ingle kept the tag's case
    older.write_text(older.read_text().replace('"coder:q4"', '"coder:Q4_K_M"'))
    assert store.get("coder:q4_k_m").digest == stored.digest and not store.check()
    store.copy("coder:Q4_K_M", "coder:Q4_K_M")  # written again under the lower-case name, the old file gone
    assert [p.name for p in older.parent.iterdir()] == ["q4_k_m.json"]


def test_put_replaces_atomically_and_leaves_no_temporary_files(store: ModelStore, ggufs: list[Path]) -> None:
    first = manifest_for(store, "m:1", ggufs[0])
    second = manifest_for(store, "m:1", ggufs[1])
    assert store.get("m:1").digest == second.digest != first.digest
    assert [p.name for p in (store.root / "manifests" / "m").iterdir()] == ["1.json"]
    assert json.loads((store.root / "manifests" / "m" / "1.json").read_text())["digest"] == second.digest
    # The first blob is unreferenced now and goes at the next collection.
    assert store.collect_garbage() == [first.digest]


def test_put_refuses_a_manifest_without_its_blob(store: ModelStore, ggufs: list[Path]) -> None:
    manifest = manifest_for(store, "m", ggufs[0])
    with pytest.raises(CorruptModel, match="not in the store"):
        store.put(replace(manifest, name="other", digest="sha256-" + "0" * 64))
    assert [m.name for m in store.list()] == ["m:latest"]


def test_blobs_are_verified_copies_and_read_only(store: ModelStore, ggufs: list[Path]) -> None:
    digest = store.import_file(ggufs[0])
    assert digest == "sha256-" + hashlib.sha256(ggufs[0].read_bytes()).hexdigest()
    blob = store.blob_path(digest)
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    # Changing the user's file afterwards must not change the blob.
    assert blob.stat().st_ino != ggufs[0].stat().st_ino
    ggufs[0].write_bytes(b"changed")
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest.removeprefix("sha256-")
    assert list(store.partial_dir.iterdir()) == []


def test_import_with_the_wrong_digest_leaves_nothing(store: ModelStore, ggufs: list[Path]) -> None:
    with pytest.raises(DigestMismatch):
        store.import_file(ggufs[0], expected_digest="sha256-" + "a" * 64)
    assert list(store.blobs_dir.iterdir()) == []
    assert list(store.partial_dir.iterdir()) == []


def test_a_damaged_manifest_does_not_break_list(store: ModelStore, ggufs: list[Path]) -> None:
    manifest_for(store, "good", ggufs[0])
    manifest_for(store, "broken", ggufs[1])
    (store.root / "manifests" / "broken" / "latest.json").write_text('{"name": "broken:latest", "dig')
    (store.root / "manifests" / "wrongshape").mkdir()
    (store.root / "manifests" / "wrongshape" / "latest.json").write_text("[1, 2, 3]")

    reopened = ModelStore(store.root)
    assert {p.kind for p in reopened.problems} == {"damaged"}
    assert [m.name for m in reopened.list()] == ["good:latest"]
    with pytest.raises(CorruptModel, match="ingle rm"):
        reopened.get("broken")
    # While a damaged manifest exists nothing is collected: it may point at any blob.
    assert reopened.collect_garbage() == []
    assert reopened.remove("wrongshape") == []
    reopened.remove("broken")  # removing a damaged model works and then collects its blob
    assert len(list(reopened.blobs_dir.iterdir())) == 1


def test_a_manifest_whose_blob_is_missing_is_skipped(store: ModelStore, ggufs: list[Path]) -> None:
    gone = manifest_for(store, "gone", ggufs[0])
    manifest_for(store, "here", ggufs[1])
    os.chmod(store.blob_path(gone.digest), 0o644)
    store.blob_path(gone.digest).unlink()
    reopened = ModelStore(store.root)
    assert [p.kind for p in reopened.problems] == ["dangling"]
    assert [m.name for m in reopened.list()] == ["here:latest"]
    with pytest.raises(ModelNotFound, match="missing"):
        reopened.get("gone")


def test_open_removes_temporary_files_of_dead_writers_only(store: ModelStore) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stray = [
        store.manifests_dir / f".tmp-{dead_pid}-abc",
        store.blobs_dir / f".tmp-{dead_pid}-def",
        store.partial_dir / f".tmp-{dead_pid}-0123.import",
    ]
    live = store.partial_dir / f".tmp-{os.getpid()}-4567.import"
    resumable = store.partial_path("https://example.com/x.gguf")
    for path in [*stray, live, resumable]:
        path.write_bytes(b"half")
    ModelStore(store.root)
    assert not any(p.exists() for p in stray)
    assert live.exists() and resumable.exists()


BAD_NAMES = ["../x", "a/../../b", "..", "foo:../../etc", "/etc/passwd", "a/b/c/d", ".hidden", "x:", "a//b", "a\\..\\b"]
BAD_DIGESTS = [
    "sha256-../../x",
    "sha256-" + "A" * 64,
    "sha256-abc",
    "../../etc/passwd",
    "sha256-" + "0" * 63 + "/",
    "/abs",
    "md5-" + "0" * 32,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_traversal_names_are_refused(store: ModelStore, ggufs: list[Path], tmp_path: Path, name: str) -> None:
    good = manifest_for(store, "good", ggufs[0])
    before = tree(tmp_path)
    with pytest.raises(InvalidModelName):
        store.get(name)
    with pytest.raises(InvalidModelName):
        store.remove(name)
    with pytest.raises(InvalidModelName):
        store.copy("good", name)
    with pytest.raises(InvalidModelName):
        store.put(replace(good, name=name))
    assert tree(tmp_path) == before


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_traversal_digests_are_refused(store: ModelStore, ggufs: list[Path], tmp_path: Path, digest: str) -> None:
    good = manifest_for(store, "good", ggufs[0])
    partial = store.new_temp_partial("x")
    partial.write_bytes(b"x")
    before = tree(tmp_path)
    for call in (
        lambda: store.blob_path(digest),
        lambda: store.has_blob(digest),
        lambda: store.remove_blob(digest),
        lambda: store.commit_blob(partial, digest),
        lambda: store.import_file(ggufs[1], expected_digest=digest),
        lambda: store.put(replace(good, name="other", digest=digest)),
    ):
        with pytest.raises(InvalidDigest):
            call()
    assert tree(tmp_path) == before


def test_a_manifest_naming_a_bad_digest_on_disk_is_reported_not_followed(store: ModelStore, ggufs: list[Path]) -> None:
    good = manifest_for(store, "good", ggufs[0])
    path = store.root / "manifests" / "evil" / "latest.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**good.to_json(), "name": "evil:latest", "digest": "sha256-../../../x"}))
    assert [m.name for m in store.list()] == ["good:latest"]
    assert [p.kind for p in store.problems] == ["damaged"]


def test_commit_refuses_files_outside_partial(store: ModelStore, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"data")
    with pytest.raises(InvalidDigest):
        store.commit_blob(outside, "sha256-" + hashlib.sha256(b"data").hexdigest())
    assert outside.exists() and list(store.blobs_dir.iterdir()) == []


def test_a_full_disk_during_import_raises_storage_full(tiny_disk_home: Path, tmp_path: Path, ggufs: list[Path]) -> None:
    store = ModelStore(tiny_disk_home / "models")
    manifest_for(store, "small", ggufs[0])
    big = tmp_path / "big.gguf"
    big.write_bytes(os.urandom(3 << 20))
    with pytest.raises(StorageFull, match=r"disk is full.*free \d+ MiB"):
        store.import_file(big)
    assert list(store.partial_dir.iterdir()) == []
    assert len(list(store.blobs_dir.iterdir())) == 1
    assert [m.name for m in ModelStore(tiny_disk_home / "models").list()] == ["small:latest"]


def test_a_file_size_limit_during_import_raises_storage_full(tmp_path: Path, ggufs: list[Path]) -> None:
    # EFBIG from RLIMIT_FSIZE, in a child so the limit does not touch the test process.
    big = tmp_path / "big.gguf"
    big.write_bytes(os.urandom(3 << 20))
    root = tmp_path / "home" / "models"
    script = textwrap.dedent(
        f"""
        import resource
        from pathlib import Path
        from ingle.core.errors import StorageFull
        from ingle.core.store import ModelStore
        store = ModelStore(Path({str(root)!r}))
        resource.setrlimit(resource.RLIMIT_FSIZE, ({1 << 20}, {1 << 20}))
        try:
            store.import_file(Path({str(big)!r}))
        except StorageFull as error:
            print("StorageFull:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "StorageFull: The disk is full" in result.stdout, result.stderr
    store = ModelStore(root)
    assert list(store.blobs_dir.iterdir()) == [] and list(store.partial_dir.iterdir()) == []
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY
