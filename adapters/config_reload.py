"""Re-reading the config on SIGHUP: apply what is safe to change in a running daemon, name the rest.

The daemon shares one Settings object between the engine and the HTTP app.
The fields below are read where they are used (the engine reads keep_alive on
every request and the model shape on every load), so assigning them on that
object takes effect from the next request or load. Everything else is bound
once at start — sockets, the store's folder, middlewares holding the API key
and the Host allowlist, upstream clients — and needs a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.settings import Settings, settings_problem

LIVE_FIELDS = frozenset(
    {
        # the next request
        "keep_alive",
        "default_model",
        # the next model load
        "num_parallel",
        "num_ctx",
        "num_batch",
        "num_threads",
        "queue_size",
        "kv_reuse_min_tokens",
        "draft_tokens",
        "draft_model",
        "load_timeout",
        "memory_headroom_mib",
        "memory_limit_mib",
        # the next pull
        "hf_endpoint",
        "hf_token",
        "pypi_index_url",
    }
)
"""Settings a reload applies at once; the others are reported as needing a restart."""


@dataclass
class ReloadResult:
    """What a reload did: the fields applied, the changed ones that wait for a restart, or why it failed."""

    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> str:
        """One line for the log and for systemd's STATUS=."""
        if self.error:
            return f"config not reloaded, still running the previous one: {self.error}"
        parts = [f"applied {', '.join(self.applied)}" if self.applied else "nothing to apply"]
        if self.needs_restart:
            parts.append(f"restart to apply {', '.join(self.needs_restart)}")
        return "config reloaded: " + "; ".join(parts)


def reload_settings(current: Settings, load: Callable[[], Settings]) -> ReloadResult:
    """Load fresh settings with `load` and copy the live fields that changed onto `current`.

    A config that does not parse changes nothing: the daemon keeps serving with
    what it has, and the result says why.
    """
    try:
        fresh = load()
    except Exception as error:
        problem = settings_problem(error)
        if problem is None:
            raise
        return ReloadResult(error=problem)
    result = ReloadResult()
    for name in type(current).model_fields:
        new = getattr(fresh, name)
        if getattr(current, name) == new:
            continue
        if name in LIVE_FIELDS:
            setattr(current, name, new)
            result.applied.append(name)
        else:
            result.needs_restart.append(name)
    return result
