"""What the daemon's services (the `ingle.services` entry points: the configured bots) say about themselves.

`ingle serve` hands every service the application's `ServiceBoard`; a service
reports each of its parts there (`bots.telegram` starting, running, retrying
after a failure, or stopped for good), and /health and /metrics read it, so a
bot that cannot reach its platform shows in monitoring, not only in the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ServiceState(StrEnum):
    """Where a service stands."""

    STARTING = "starting"
    RUNNING = "running"
    RETRYING = "retrying"
    """It failed and will start again after a pause."""
    STOPPED = "stopped"
    """It will not start again until the daemon restarts (its configuration is wrong)."""


@dataclass(frozen=True)
class ServiceStatus:
    """A service's last report."""

    state: ServiceState
    detail: str = ""
    """One sentence: why it is retrying or stopped ('' while all is well)."""
    failures: int = 0
    """How often it has failed since the daemon started."""


class ServiceBoard:
    """The last report of every service, by name; read at scrape time by /health and /metrics."""

    def __init__(self) -> None:
        self._statuses: dict[str, ServiceStatus] = {}

    def report(self, name: str, state: ServiceState, detail: str = "") -> None:
        """Record where `name` stands now; a report of RETRYING counts one more failure."""
        failures = self._statuses[name].failures if name in self._statuses else 0
        if state is ServiceState.RETRYING:
            failures += 1
        self._statuses[name] = ServiceStatus(state, detail, failures)

    def statuses(self) -> dict[str, ServiceStatus]:
        """Every service's last report, by name."""
        return dict(self._statuses)
