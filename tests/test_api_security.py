"""The HTTP API is safe by default: loopback only, API key, Host allowlist, CORS, size limits, safe names.

These run the real app on an ephemeral loopback port over an engine with an
empty store; nothing here needs the model. No test binds a non-loopback
address: the refusal to do so is checked on a process that exits first.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from ingle.core.engine import Engine

from .conftest import settings_for
from .servers import metric_value, serving
from .test_cli import assert_one_error_line, ingle

KEY = "s3cret-key"


def test_refuses_to_listen_beyond_loopback_without_an_api_key(tmp_path: Path) -> None:
    result = ingle("serve", "--host", "0.0.0.0", "--port", "0", home=tmp_path / "home", timeout=60)
    line = assert_one_error_line(result, 2)
    assert "0.0.0.0" in line and "API key" in line


async def test_api_key_is_required_except_for_health(
    empty_engine: Engine, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path / "home", api_key=KEY), empty_engine) as url:
        async with session.get(f"{url}/api/tags") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "API key" in (await response.json())["error"]
        async with session.get(f"{url}/api/tags", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        async with session.get(f"{url}/api/tags", headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert response.status == 200
            assert (await response.json())["models"] == []
        async with session.get(f"{url}/health") as response:
            assert response.status == 200


async def test_foreign_host_header_is_refused_without_an_api_key(
    empty_engine: Engine, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path / "home"), empty_engine) as url:
        async with session.get(f"{url}/api/tags", headers={"Host": "evil.example"}) as response:
            assert response.status == 403
            assert "evil.example" in (await response.json())["error"]
        port = url.rsplit(":", 1)[1]
        async with session.get(f"{url}/api/tags", headers={"Host": f"localhost:{port}"}) as response:
            assert response.status == 200


async def test_cors_answers_only_configured_origins(
    empty_engine: Engine, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    allowed, other = "https://editor.example", "https://other.example"
    async with serving(settings_for(tmp_path / "home", cors_origins=[allowed]), empty_engine) as url:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        async with session.options(f"{url}/api/show", headers={"Origin": allowed, **preflight}) as response:
            assert response.status in (200, 204)
            assert response.headers["Access-Control-Allow-Origin"] == allowed
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
        async with session.get(f"{url}/api/tags", headers={"Origin": allowed}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == allowed
        async with session.options(f"{url}/api/show", headers={"Origin": other, **preflight}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        async with session.get(f"{url}/api/tags", headers={"Origin": other}) as response:
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_oversized_body_is_refused_with_one_sentence(
    empty_engine: Engine, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path / "home", max_request_bytes=2048), empty_engine) as url:
        body = {"model": "qwen2.5-coder:0.5b", "prompt": "x" * 5000}
        async with session.post(f"{url}/api/generate", json=body) as response:
            assert response.status == 413
            message = (await response.json())["error"]
            assert "2048 bytes" in message and message.count(". ") == 0


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a/../../b", "x:../y"])
async def test_names_that_escape_the_store_are_refused(
    name: str, empty_engine: Engine, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path / "home", management_over_tcp=True), empty_engine) as url:
        async with session.post(f"{url}/api/show", json={"model": name}) as response:
            assert response.status == 400
            message = (await response.json())["error"]
            assert "not a valid model name" in message or "invalid tag" in message
        async with session.delete(f"{url}/api/delete", json={"model": name}) as response:
            assert response.status == 400


async def test_metrics_count_requests_by_route_and_status(
    empty_engine: Engine, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with serving(settings_for(tmp_path / "home"), empty_engine) as url:
        for _ in range(3):
            async with session.get(f"{url}/api/tags") as response:
                assert response.status == 200
        async with session.post(f"{url}/api/show", json={"model": "missing:1"}) as response:
            assert response.status == 404
        async with session.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert "# HELP ingle_http_requests_total" in text
        assert "# TYPE ingle_time_to_first_token_seconds histogram" in text
        assert "ingle_loaded_models 0.0" in text
        labels = 'method="GET",route="/api/tags",status="200"'
        assert await metric_value(session, url, "ingle_http_requests_total", labels) == 3
        labels = 'method="POST",route="/api/show",status="404"'
        assert await metric_value(session, url, "ingle_http_requests_total", labels) == 1
