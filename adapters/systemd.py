"""Telling systemd how `ingle serve` is doing: the sd_notify protocol, without libsystemd.

The protocol is one datagram per message, newline-separated `KEY=value`
assignments, sent to the AF_UNIX socket named in `$NOTIFY_SOCKET` (a path, or
`@name` for the abstract namespace). See sd_notify(3). Outside systemd the
variable is unset and every method does nothing, so callers never ask whether
they run under systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("ingle.systemd")


class SystemdNotifier:
    """A datagram client of `$NOTIFY_SOCKET`; a no-op when systemd did not ask for notifications."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Read `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` as sd_notify(3) and sd_watchdog_enabled(3) do."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """True when systemd listens for notifications (the unit is `Type=notify`)."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alive pings: half of `WatchdogSec=`, as sd_watchdog_enabled(3) advises; None if off."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, **fields: str | int) -> bool:
        """Send one message, e.g. `notify(READY=1, STATUS="listening")`; False if it could not be delivered.

        A lost notification must not take the daemon down (systemd may be
        restarting, the socket gone): failures are logged and swallowed.
        """
        if self._address is None:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:
            log.warning("could not notify systemd (%s): %s", message.replace("\n", " "), error)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The service is up: systemd considers the start finished."""
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self, status: str | None = None) -> bool:
        """A configuration reload started; `ready()` ends it. MONOTONIC_USEC lets Type=notify-reload match it."""
        extra = {"STATUS": status} if status else {}
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000, **extra)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown started; systemd waits up to `TimeoutStopSec=`."""
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        """A one-line state shown by `systemctl status`."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """Keep-alive ping; systemd restarts the service if they stop for `WatchdogSec=`."""
        return self.notify(WATCHDOG=1)

    async def feed_watchdog(self) -> None:
        """Ping the watchdog from the event loop until cancelled, so a blocked loop is what stops the pings."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Close the socket; later messages open a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> str | bytes:
    # "@name" is Linux's abstract namespace: a leading NUL byte instead of '@'.
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    # WATCHDOG_PID, when present, names the process the watchdog is meant for:
    # a child that inherited the environment must not ping on its parent's behalf.
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec


def _one_line(value: str | int) -> str:
    # A newline would start a new assignment; STATUS texts come from our own messages.
    return str(value).replace("\n", " ")
