"""A pull asked for over the HTTP API cannot be aimed at the server's network or files.

The real app on a loopback port over an engine with an empty store; the
sources are the fake file server and fake Hugging Face hub on loopback, which
count as "inside the network" unless the settings list them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ingle.core.engine import Engine
from ingle.core.errors import PullRefused
from ingle.core.settings import Settings
from ingle.core.sources.network import NetworkGuard, is_public

from .conftest import settings_for
from .fakes.gguf_files import write_tiny_gguf
from .fakes.http_files import FakeFileServer, HfFile
from .servers import serving, serving_unix

REPO, FILE = "acme/tiny-coder-GGUF", "tiny-coder-Q8_0.gguf"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeFileServer]:
    with FakeFileServer() as fake:
        fake.add_file("tiny", write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes())
        fake.hf_files[f"{REPO}/main/{FILE}"] = HfFile("tiny")
        yield fake


async def api_pull(settings: Settings, spec: str) -> tuple[int, dict]:
    """POST /api/pull (not streamed) over TCP to an app with these settings; the status and the body.

    Management over TCP is opened (management_over_tcp), so what is checked here is where a pull may go.
    """
    settings = settings.model_copy(update={"management_over_tcp": True})
    async with Engine(settings) as engine, serving(settings, engine) as url, aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/pull", json={"model": spec, "stream": False}) as response:
            return response.status, await response.json()


def assert_refused(status: int, body: dict) -> str:
    assert status == 403, body
    message = body["error"]
    assert "api_pull_allowlist" in message and message.count(". ") == 0, message
    return message


@pytest.mark.parametrize(
    "spec",
    ["file:/etc/passwd", "/etc/hostname", "../../etc/shadow", "model.gguf", "https://169.254.169.254/latest/x.gguf"],
)
async def test_files_and_unlisted_urls_are_refused_with_403(tmp_path: Path, spec: str) -> None:
    assert_refused(*await api_pull(settings_for(tmp_path / "home"), spec))
    assert not (tmp_path / "home" / "models" / "blobs").exists() or not any(
        (tmp_path / "home" / "models" / "blobs").iterdir()
    )


async def test_a_url_on_the_inside_network_is_refused_even_behind_an_allowed_redirect(
    server: FakeFileServer, tmp_path: Path
) -> None:
    url = server.file_url("tiny")
    assert_refused(*await api_pull(settings_for(tmp_path / "a"), url))

    # The hub's redirect points at "localhost": another host, resolving to loopback, that nobody listed.
    server.cdn_url = server.url.replace("127.0.0.1", "localhost")
    listed = settings_for(tmp_path / "b", api_pull_allowlist=[f"{server.url}/{REPO}/"])
    message = assert_refused(*await api_pull(listed, f"{server.url}/{REPO}/resolve/main/{FILE}"))
    assert "localhost" in message
    assert server.seen("GET", "/files/") == []  # refused before connecting, not after


async def test_listed_urls_and_the_configured_hub_are_pulled(server: FakeFileServer, tmp_path: Path) -> None:
    listed = settings_for(tmp_path / "a", api_pull_allowlist=[f"{server.url}/files/"])
    status, body = await api_pull(listed, server.file_url("tiny"))
    assert (status, body["status"]) == (200, "success")
    # hf: goes through the configured endpoint, which may be an on-prem mirror on a private address.
    status, body = await api_pull(settings_for(tmp_path / "b", hf_endpoint=server.url), f"hf:{REPO}/{FILE}")
    assert (status, body["status"]) == (200, "success")


async def test_the_unix_socket_and_the_shell_are_not_limited(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home")
    gguf = write_tiny_gguf(tmp_path / "tiny-Q8_0.gguf")
    async with Engine(settings) as engine, serving_unix(settings, engine, tmp_path / "api.sock") as path:
        connector = aiohttp.UnixConnector(path=str(path))
        async with aiohttp.ClientSession(connector=connector) as session:
            body = {"model": f"file:{gguf}", "stream": False}
            async with session.post("http://localhost/api/pull", json=body) as response:
                assert response.status == 200, await response.text()
        assert engine.show("tiny:q8_0").size == gguf.stat().st_size


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
     "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254"],
)  # fmt: skip
def test_inside_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.0.223", "2606:4700:4700::1111"])
def test_internet_addresses_are_public(address: str) -> None:
    assert is_public(address)


async def test_a_name_resolving_inside_is_refused_unless_configured(tmp_path: Path) -> None:
    guard = NetworkGuard.for_settings(settings_for(tmp_path / "a"))
    with pytest.raises(PullRefused, match=r"localhost.*(127\.0\.0\.1|::1)"):
        await guard.checked_address("localhost", 443)
    mirror = NetworkGuard.for_settings(settings_for(tmp_path / "b", hf_endpoint="https://localhost:8443"))
    assert await mirror.checked_address("localhost", 8443) == "localhost"
