"""Managing models is a right: over TCP it takes the management key, api_key or management_over_tcp.

The real app on an ephemeral loopback port (and on a unix socket) over an
engine whose temporary home holds one tiny model; pulls fetch from the fake
file server on loopback, listed in api_pull_allowlist. The CLI tests run
`ingle serve` and `ingle rm` / `ingle pull` as processes.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest

from ingle.adapters.http.app import create_app
from ingle.adapters.http.security import MANAGEMENT_ROUTES
from ingle.core.engine import Engine
from ingle.core.settings import Settings

from .conftest import settings_for
from .fakes.gguf_files import write_tiny_gguf
from .fakes.http_files import FakeFileServer
from .servers import serving, serving_unix, start_daemon
from .test_cli import assert_one_error_line, ingle

MODEL = "tiny:q8_0"
MANAGEMENT_KEY = "management-key-for-tests"
INFERENCE_KEY = "inference-key-for-tests"
FULL_KEY = "the-old-api-key"
SETTING = "management_over_tcp"


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FakeFileServer]:
    """A file server on loopback with a second tiny model to pull."""
    with FakeFileServer() as fake:
        fake.add_file("fresh-Q8_0.gguf", write_tiny_gguf(tmp_path / "fresh.gguf", seed=1).read_bytes())
        yield fake


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A management key file, as install.sh writes one."""
    path = tmp_path / "credentials" / "management-key"
    path.parent.mkdir()
    path.write_text(MANAGEMENT_KEY + "\n")
    return path


def settings_with(tmp_path: Path, files: FakeFileServer, **overrides: Any) -> Settings:
    """Settings for a temporary home; no management key unless `management_key_file` is given."""
    values: dict[str, Any] = {
        "management_key_file": tmp_path / "no-management-key",
        "api_pull_allowlist": [f"{files.url}/files/"],
        "socket_path": "",
    }
    return settings_for(tmp_path / "home", **{**values, **overrides})


@asynccontextmanager
async def engine_with_model(settings: Settings, tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine over the settings' home, holding MODEL."""
    async with Engine(settings) as engine:
        await engine.pull(f"file:{write_tiny_gguf(tmp_path / 'tiny-Q8_0.gguf')}")
        yield engine


async def manage(url: str, action: str, files: FakeFileServer, key: str | None = None) -> tuple[int, Any]:
    """Do one management action over HTTP at `url`; its status and decoded body."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    requests = {
        "delete": ("DELETE", "/api/delete", {"model": MODEL}),
        "copy": ("POST", "/api/copy", {"source": MODEL, "destination": "tiny:copy"}),
        "pull": ("POST", "/api/pull", {"model": files.file_url("fresh-Q8_0.gguf"), "stream": False}),
        "create knowledge base": ("POST", "/api/knowledge", {"name": "manuals"}),
    }
    method, path, body = requests[action]
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.request(method, f"{url}{path}", json=body) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text else None


def model_names(engine: Engine) -> set[str]:
    return {manifest.name for manifest in engine.list_models()}


ACTIONS = ["delete", "copy", "pull", "create knowledge base"]


@pytest.mark.parametrize("action", ACTIONS)
async def test_managing_over_tcp_without_a_key_is_refused_with_the_setting_named(
    action: str, files: FakeFileServer, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, files)
    async with engine_with_model(settings, tmp_path) as engine, serving(settings, engine) as url:
        status, body = await manage(url, action, files)
        assert status == 403, body
        message = body["error"]
        assert SETTING in message and "management key" in message and message.count(". ") == 0, message
        assert model_names(engine) == {MODEL}  # nothing deleted, copied or pulled
        assert files.seen("GET", "/files/") == []
        async with aiohttp.ClientSession() as session, session.get(f"{url}/api/knowledge") as response:
            assert (await response.json())["knowledge_bases"] == []


@pytest.mark.parametrize("action", ACTIONS)
async def test_the_management_key_allows_managing_over_tcp(
    action: str, files: FakeFileServer, key_file: Path, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, files, management_key_file=key_file)
    async with engine_with_model(settings, tmp_path) as engine, serving(settings, engine) as url:
        status, body = await manage(url, action, files, key=MANAGEMENT_KEY)
        assert status in (200, 201), body
        expected = {
            "delete": set(),
            "copy": {MODEL, "tiny:copy"},
            "pull": {MODEL, "fresh:q8_0"},
            "create knowledge base": {MODEL},
        }
        assert model_names(engine) == expected[action]
        # Inference needs no key still: the management key alone does not lock the API.
        async with aiohttp.ClientSession() as session, session.get(f"{url}/api/tags") as response:
            assert response.status == 200


async def test_an_inference_key_may_generate_but_not_manage(
    files: FakeFileServer, key_file: Path, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path, files, management_key_file=key_file, inference_api_key=INFERENCE_KEY)
    async with engine_with_model(settings, tmp_path) as engine, serving(settings, engine) as url:
        client = ollama.AsyncClient(host=url, headers={"Authorization": f"Bearer {INFERENCE_KEY}"})
        assert [model.model for model in (await client.list()).models] == [MODEL]
        for action in ("delete", "copy", "pull"):
            status, body = await manage(url, action, files, key=INFERENCE_KEY)
            assert status == 403 and SETTING in body["error"], body
        assert model_names(engine) == {MODEL}
        # The inference key locks the API: no key at all is now a 401, and the management key works for both.
        assert (await manage(url, "copy", files))[0] == 401
        assert (await manage(url, "copy", files, key=MANAGEMENT_KEY))[0] == 200
        manager = ollama.AsyncClient(host=url, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"})
        assert len((await manager.list()).models) == 2


async def test_an_existing_api_key_keeps_the_right_to_manage(files: FakeFileServer, tmp_path: Path) -> None:
    settings = settings_with(tmp_path, files, api_key=FULL_KEY)
    async with engine_with_model(settings, tmp_path) as engine, serving(settings, engine) as url:
        assert (await manage(url, "copy", files))[0] == 401
        assert (await manage(url, "copy", files, key=FULL_KEY))[0] == 200
        assert model_names(engine) == {MODEL, "tiny:copy"}


async def test_ollama_clients_read_the_refusal(files: FakeFileServer, tmp_path: Path) -> None:
    settings = settings_with(tmp_path, files)
    async with engine_with_model(settings, tmp_path) as engine, serving(settings, engine) as url:
        client = ollama.AsyncClient(host=url)
        for attempt in (
            lambda: client.pull(files.file_url("fresh-Q8_0.gguf")),
            lambda: client.delete(MODEL),
            lambda: client.copy(MODEL, "tiny:copy"),
        ):
            with pytest.raises(ollama.ResponseError) as refused:
                await attempt()
            assert refused.value.status_code == 403
            assert SETTING in refused.value.error
        with pytest.raises(ollama.ResponseError) as refused:
            async for _ in await client.pull(files.file_url("fresh-Q8_0.gguf"), stream=True):
                pass
        assert refused.value.status_code == 403 and SETTING in refused.value.error
        assert model_names(engine) == {MODEL}


async def test_the_unix_socket_manages_without_a_key(files: FakeFileServer, tmp_path: Path) -> None:
    settings = settings_with(tmp_path, files)
    async with engine_with_model(settings, tmp_path) as engine:
        async with serving_unix(settings, engine, tmp_path / "api.sock") as path:
            connector = aiohttp.UnixConnector(path=str(path))
            async with aiohttp.ClientSession(connector=connector) as session:
                body = {"source": MODEL, "destination": "tiny:copy"}
                async with session.post("http://localhost/api/copy", json=body) as response:
                    assert response.status == 200, await response.text()
                async with session.delete("http://localhost/api/delete", json={"model": MODEL}) as response:
                    assert response.status == 200, await response.text()
        assert model_names(engine) == {"tiny:copy"}


@pytest.mark.parametrize("action", ["delete", "copy", "pull"])
async def test_the_setting_opens_management_over_tcp(action: str, files: FakeFileServer, tmp_path: Path) -> None:
    settings = settings_with(tmp_path, files, management_over_tcp=True)
    async with engine_with_model(settings, tmp_path) as engine, serving(settings, engine) as url:
        status, body = await manage(url, action, files)
        assert status == 200, body
        assert model_names(engine) != {MODEL}


async def test_the_setting_still_needs_the_configured_api_key(files: FakeFileServer, tmp_path: Path) -> None:
    settings = settings_with(tmp_path, files, management_over_tcp=True, inference_api_key=INFERENCE_KEY)
    async with engine_with_model(settings, tmp_path) as engine, serving(settings, engine) as url:
        assert (await manage(url, "copy", files))[0] == 401
        assert (await manage(url, "copy", files, key=INFERENCE_KEY))[0] == 200
        assert model_names(engine) == {MODEL, "tiny:copy"}


async def test_every_route_that_changes_state_is_classified(tmp_path: Path) -> None:
    """A new POST or DELETE route must be a management route or named here as inference, on purpose."""
    inference = {
        ("POST", "/api/generate"),
        ("POST", "/api/chat"),
        ("POST", "/api/embed"),
        ("POST", "/api/embeddings"),
        ("POST", "/api/show"),
        ("POST", "/api/knowledge/{name}/search"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/responses"),
        ("DELETE", "/v1/responses/{response_id}"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/infill"),
        ("POST", "/completion"),
        ("POST", "/completions"),
    }
    settings = settings_for(tmp_path / "home")
    async with Engine(settings) as engine:
        app = create_app(settings, engine)
        changing = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method not in ("GET", "HEAD", "OPTIONS")
        }
    unclassified = changing - inference - MANAGEMENT_ROUTES
    assert not unclassified, f"decide whether these manage the server (security.MANAGEMENT_ROUTES): {unclassified}"
    assert {("POST", "/api/pull"), ("DELETE", "/api/delete"), ("POST", "/api/copy")} <= changing & MANAGEMENT_ROUTES


def test_the_cli_finds_the_management_key_for_a_daemon_over_tcp(tmp_path: Path, key_file: Path) -> None:
    home = tmp_path / "home"
    gguf = write_tiny_gguf(tmp_path / "tiny-Q8_0.gguf")
    assert ingle("--embedded", "pull", str(gguf), home=home).returncode == 0
    # No unix socket, so the CLI reaches the daemon over TCP only.
    daemon = start_daemon(home, "--socket", "", INGLE_MANAGEMENT_KEY_FILE=str(key_file))

    def cli(*args: str, key: Path) -> subprocess.CompletedProcess[str]:
        return ingle("--host", daemon.url, *args, home=home, INGLE_MANAGEMENT_KEY_FILE=str(key))

    try:
        no_key = tmp_path / "none"
        line = assert_one_error_line(cli("rm", MODEL, key=no_key), 1)
        assert SETTING in line, line
        assert cli("pull", MODEL, key=no_key).returncode == 1

        pulled = cli("pull", MODEL, key=key_file)
        assert pulled.returncode == 0 and pulled.stderr == "", pulled.stderr
        copied = cli("cp", MODEL, "tiny:copy", key=key_file)
        assert copied.returncode == 0, copied.stderr
        removed = cli("rm", MODEL, "tiny:copy", key=key_file)
        assert removed.returncode == 0 and removed.stderr == "", removed.stderr
        assert MODEL not in cli("list", key=no_key).stdout
    finally:
        assert daemon.stop() == 0
