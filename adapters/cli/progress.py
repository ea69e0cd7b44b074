"""The progress display of `ingle pull`, fed by the engine's progress callback."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ingle.core.sources import PullProgress

if TYPE_CHECKING:
    from ingle.adapters.engine_api import EngineApi
    from ingle.core.manifest import Manifest


class PullProgressDisplay:
    """A line for each step of a pull and, under a step that moves bytes, a bar (bytes, speed, ETA).

    One step is shown at a time and finished before the next begins. Only a
    terminal gets it: piped or in a log, a pull that succeeds prints nothing
    on stderr, and the stored name on stdout says it is done. Use it as a
    context manager and pass the instance as `progress=` to EngineApi.pull.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._status: str | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> PullProgressDisplay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish_bar()

    def __call__(self, event: PullProgress) -> None:
        """Show one progress report."""
        if not self._console.is_terminal:
            return
        completed = event.completed or 0
        if event.status != self._status:
            self._finish_bar()
            self._status = event.status
            # The step's name gets a line of its own: file names are long and the bar needs the width.
            self._console.print(event.status)
        # A step that is already complete when it starts (like "success") needs no bar.
        if self._bar is None and event.total and completed < event.total:
            self._start_bar()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed, total=event.total)

    def _start_bar(self) -> None:
        self._bar = Progress(
            TextColumn(" "),
            BarColumn(bar_width=30),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task = self._bar.add_task("", total=None)
        self._bar.start()

    def _finish_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._task = None, None


async def pull_with_progress(
    engine: EngineApi, console: Console, spec: str, name: str | None = None, sha256: str | None = None
) -> Manifest:
    """Pull SPEC through the engine with a progress display on `console`; used by `pull` and `run`."""
    with PullProgressDisplay(console) as display:
        return await engine.pull(spec, name=name, sha256=sha256, progress=display)
