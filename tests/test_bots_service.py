"""The bots inside `ingle serve`: a bot that fails is started again, and /health and /metrics say where it stands.

The bots run as the daemon runs them (`run_configured_bots` with the application's service board), against
the fakes over real sockets: a Mattermost server that is not up yet when the bot starts, and a Telegram Bot API
that answers the first getUpdates with 409 Conflict, as it does right after a restart.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingle.adapters.cli.doctor import check_running_services
from ingle.adapters.http.app import create_app
from ingle.adapters.http.keys import SERVICES
from ingle.adapters.services import ServiceBoard, ServiceState
from ingle.bots.service import RetryPolicy, run_configured_bots
from ingle.core.engine import Engine
from ingle.core.settings import Settings

from .bot_helpers import ScriptedBackend
from .conftest import settings_for
from .fakes import poll_until, start_on_loopback
from .fakes.mattermost_api import BOT_USER_ID, FakeMattermost
from .fakes.telegram_api import FakeTelegram

ALICE = "alice000000000000000000001"
DM = f"{BOT_USER_ID}__{ALICE}"
QUICK_RETRIES = RetryPolicy(first=0.2, most=2.0)
"""Retries a test can wait for; the daemon's own policy is checked on its own."""


@asynccontextmanager
async def daemon_with_bots(
    settings: Settings, retry: RetryPolicy = QUICK_RETRIES
) -> AsyncIterator[tuple[str, ServiceBoard]]:
    """The HTTP application and the configured bots, wired as `ingle serve` wires them; yields its URL and board."""
    async with Engine(settings) as engine:
        app = create_app(settings, engine)
        runner, url = await start_on_loopback(app)
        bots = asyncio.create_task(run_configured_bots(settings, ScriptedBackend(["Hello!"]), app[SERVICES], retry))
        try:
            yield url, app[SERVICES]
        finally:
            bots.cancel()
            await asyncio.gather(bots, return_exceptions=True)
            await runner.cleanup()


def doctor_says(url: str, settings: Settings) -> list[tuple[str, bool]]:
    """What `ingle doctor`'s look at the daemon answering on `url`'s port finds: (name, ok) per service."""
    port = int(url.rsplit(":", 1)[1])
    checks = check_running_services(settings_for(settings.home, port=port, bots=settings.bots))
    return [(check.name, check.ok) for check in checks]


async def health_and_metrics(url: str) -> tuple[dict[str, str], str]:
    """The services /health reports, and the text of /metrics."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/health") as response:
            health = await response.json()
        async with session.get(f"{url}/metrics") as response:
            metrics = await response.text()
    return health["services"], metrics


def sample(metrics: str, name: str, service: str) -> float:
    """The value of metric `name` for `service` in a Prometheus text exposition."""
    found = re.search(rf'^{name}{{service="{re.escape(service)}"}} (\S+)$', metrics, re.MULTILINE)
    assert found is not None, f"{name} for {service} missing from /metrics"
    return float(found.group(1))


def state_is(board: ServiceBoard, service: str, state: ServiceState) -> Callable[[], bool]:
    """A poll condition: `service` has last reported `state`."""
    return lambda: service in board.statuses() and board.statuses()[service].state is state


def unused_port() -> socket.socket:
    """A loopback port bound but not listening (connections to it are refused), kept until the socket closes."""
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.bind(("127.0.0.1", 0))
    return reserved


async def test_a_bot_whose_server_is_down_at_start_is_retried_and_reported(tmp_path: Path) -> None:
    reserved = unused_port()
    port = reserved.getsockname()[1]
    section: dict[str, Any] = {
        "url": f"http://127.0.0.1:{port}",
        "token": "fake-mattermost-bot-token",
        "allowed_users": [ALICE],
    }
    settings = settings_for(tmp_path / "home", bots={"mattermost": section})
    async with daemon_with_bots(settings) as (url, board):
        await poll_until(lambda: board.statuses().get("bots.mattermost", None), 30, "a report")
        await poll_until(lambda: board.statuses()["bots.mattermost"].failures >= 2, 30, "two failed starts")
        services, metrics = await health_and_metrics(url)
        assert services["bots.mattermost"] in ("starting", "retrying")
        assert sample(metrics, "ingle_service_up", "bots.mattermost") == 0
        assert sample(metrics, "ingle_service_failures_total", "bots.mattermost") >= 2
        assert "Cannot reach the Mattermost server" in board.statuses()["bots.mattermost"].detail
        assert await asyncio.to_thread(doctor_says, url, settings) == [("bots.mattermost", False)]

        reserved.close()  # the server comes up, on the address the bot has been trying
        async with FakeMattermost(port=port) as server:
            server.add_user(ALICE, "alice")
            server.add_channel(DM, "D")
            await poll_until(state_is(board, "bots.mattermost", ServiceState.RUNNING), 30, "the bot to run")
            await server.user_posts(ALICE, DM, "Are you there?")
            await server.wait_until(lambda: server.bot_posts(channel_id=DM), 30, "the answer")
            services, metrics = await health_and_metrics(url)
            assert await asyncio.to_thread(doctor_says, url, settings) == [("bots.mattermost", True)]

    assert services == {"bots.mattermost": "running"}
    assert sample(metrics, "ingle_service_up", "bots.mattermost") == 1


async def test_a_409_conflict_from_get_updates_does_not_end_the_telegram_bot(tmp_path: Path) -> None:
    async with FakeTelegram() as fake:
        fake.conflict_next("getUpdates")  # the previous process's long poll is still open at Telegram
        section: dict[str, Any] = {
            "token": fake.token,
            "base_url": fake.base_url,
            "allowed_users": ["1"],
            "poll_timeout": 1,
            "use_drafts": False,
        }
        settings = settings_for(tmp_path / "home", bots={"telegram": section})
        async with daemon_with_bots(settings) as (url, board):
            await poll_until(lambda: [c for c in fake.calls_of("getUpdates") if c.status == 200], 30, "a poll")
            await fake.inject_message("Hello?", chat_id=1)
            await fake.wait_for(lambda: "Hello!" in fake.sent_texts(1), timeout=30)
            services, _ = await health_and_metrics(url)

    assert fake.calls_of("getUpdates")[0].status == 409
    assert services == {"bots.telegram": "running"}
    assert board.statuses()["bots.telegram"].failures == 1


async def test_a_wrong_section_stops_the_bot_for_good_and_says_why(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", bots={"mattermost": {"url": "http://127.0.0.1:9"}})
    async with daemon_with_bots(settings) as (url, board):
        await poll_until(state_is(board, "bots.mattermost", ServiceState.STOPPED), 30, "the bot to stop")
        services, metrics = await health_and_metrics(url)

    assert services == {"bots.mattermost": "stopped"}
    assert "needs 'token'" in board.statuses()["bots.mattermost"].detail
    assert sample(metrics, "ingle_service_up", "bots.mattermost") == 0


@pytest.mark.parametrize("failures", [1, 2, 5, 10, 100])
def test_the_daemons_retry_pause_doubles_up_to_a_minute_with_jitter(failures: int) -> None:
    policy = RetryPolicy()
    ceiling = min(60.0, 2.0 ** (failures - 1))
    pauses = [policy.wait(failures) for _ in range(50)]
    assert all(ceiling / 2 <= pause <= ceiling for pause in pauses)
    assert len(set(pauses)) > 1, "jittered"
