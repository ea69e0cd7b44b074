"""Where the CLI gets its engine from: the running daemon if one answers, else an in-process engine.

This is the one place that decides. Commands get an EngineApi either way
(adapters/engine_api.py) and await it the same, so three terminals running
`ingle run` share the daemon's loaded model instead of loading three copies.

The order: `--host URL` names a daemon that must answer (no fallback); else
the daemon's unix socket in this home, then `host:port` from the settings,
each probed briefly; else, unless the settings name a non-loopback host
(which means "that daemon"), the engine runs in this process. `--embedded`
or INGLE_EMBEDDED=1 skips the daemon altogether.

A daemon on `host:port` serves its own home, which the CLI cannot see. So when
--home or INGLE_HOME names another home than the configured one (the config
file's, else ~/.ingle), only that home's socket counts: `ingle --home /tmp/h rm x`
never deletes `x` from whatever store the daemon on the port holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingle.adapters.binding import is_loopback
from ingle.core.settings import Settings, configured_home

if TYPE_CHECKING:
    # The HTTP client (aiohttp) and the engine (llama.cpp) are imported when used: most
    # commands need one of them, and some (`--version`, `--help`, `list` with no daemon) neither.
    from ingle.adapters.client import IngleClient
    from ingle.adapters.engine_api import EngineApi

# A daemon on this machine answers /api/version in a few milliseconds; waiting longer only slows
# every command down when none runs.
LOCAL_PROBE_SECONDS = 0.3
# A daemon named explicitly may be across a network.
REMOTE_PROBE_SECONDS = 5.0
_ANY_ADDRESS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class EngineChoice:
    """What the global flags say about where the engine runs."""

    embedded: bool = False
    """Run the engine in this process even if a daemon runs (--embedded, INGLE_EMBEDDED=1)."""
    daemon_url: str | None = None
    """Use the daemon at this URL or host[:port] and nothing else (--host)."""
    daemon_by_port: bool = True
    """Whether a daemon found on the configured host:port may serve this command; False when --home or
    INGLE_HOME names another home than the configured one, whose daemon only its unix socket can be."""


def daemon_url_of(address: str, default_port: int) -> str:
    """`http://host:port` from a URL, `host[:port]`, `[v6][:port]` or a bare IPv6 address."""
    address = address.strip().rstrip("/")
    if "://" in address:
        return address
    port = str(default_port)
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":") or port
        return f"http://[{host}]:{port}"
    if address.count(":") > 1:
        return f"http://[{address}]:{port}"
    host, _, given = address.partition(":")
    return f"http://{host}:{given or port}"


def daemon_candidates(settings: Settings, choice: EngineChoice) -> list[IngleClient]:
    """The daemons to try, in order (clients not yet opened).

    Over TCP, managing models needs the management key: the one install.sh writes to
    management_key_file, if this user may read it. The unix socket needs none.
    """
    key = settings.api_key or settings.inference_api_key
    api_key = key.get_secret_value() if key else None
    management = settings.management_key()
    management_key = management.get_secret_value() if management else None
    from ingle.adapters.client import IngleClient

    if choice.daemon_url:
        url = daemon_url_of(choice.daemon_url, settings.port)
        return [IngleClient(url, api_key=api_key, management_key=management_key)]
    candidates = []
    socket_path = settings.unix_socket
    if socket_path is not None and socket_path.is_socket():
        candidates.append(IngleClient(socket_path=socket_path, api_key=api_key))
    if settings.port and choice.daemon_by_port:
        candidates.append(
            IngleClient(
                daemon_url_of(_local_tcp_host(settings), settings.port), api_key=api_key, management_key=management_key
            )
        )
    return candidates


def requires_daemon(settings: Settings, choice: EngineChoice) -> bool:
    """True when the user named a daemon, so running in-process instead would be a silent fallback."""
    if choice.daemon_url:
        return True
    return choice.daemon_by_port and not (settings.host in _ANY_ADDRESS or is_loopback(settings.host))


async def connect_daemon(settings: Settings, choice: EngineChoice) -> IngleClient | None:
    """An open client of the first daemon that answers, or None; DaemonUnavailable if a named one does not."""
    required = requires_daemon(settings, choice)
    if not required and not await _something_listens_locally(settings, choice):
        return None
    from ingle.adapters.client import DaemonUnavailable

    timeout = REMOTE_PROBE_SECONDS if required else LOCAL_PROBE_SECONDS
    last_error: DaemonUnavailable | None = None
    for client in daemon_candidates(settings, choice):
        await client.__aenter__()
        try:
            await client.version(timeout=timeout)
        except DaemonUnavailable as error:
            last_error = error
            await client.close()
            continue
        except BaseException:
            await client.close()
            raise
        return client
    if required and last_error is not None:
        raise last_error
    return None


async def _something_listens_locally(settings: Settings, choice: EngineChoice) -> bool:
    """Whether a local daemon may be there, asked with the standard library only.

    When none runs (the common case for `ingle list` on a laptop), the command then
    never loads the HTTP client.
    """
    socket_path = settings.unix_socket
    if socket_path is not None and socket_path.is_socket():
        return True
    if not settings.port or not choice.daemon_by_port:
        return False
    try:
        async with asyncio.timeout(LOCAL_PROBE_SECONDS):
            _, writer = await asyncio.open_connection(_local_tcp_host(settings), settings.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def port_daemon_may_serve(settings: Settings, home_flag: str | None) -> bool:
    """False when --home (HOME_FLAG) or INGLE_HOME names another home than the configured one (see the module doc)."""
    named = home_flag is not None or bool(os.environ.get("INGLE_HOME"))
    return not named or settings.home.resolve() == configured_home().resolve()


def _local_tcp_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host


@asynccontextmanager
async def open_engine(settings: Settings, choice: EngineChoice = EngineChoice()) -> AsyncIterator[EngineApi]:
    """Yield the daemon's client, or an in-process engine closed (models unloaded) afterwards."""
    client = None if choice.embedded else await connect_daemon(settings, choice)
    if client is not None:
        async with client:
            yield client
        return
    from ingle.adapters.engine_api import LocalEngine
    from ingle.core.engine import Engine

    async with Engine(settings) as engine:
        yield LocalEngine(engine)
