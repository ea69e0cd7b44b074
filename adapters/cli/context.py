"""What every command receives: the settings and the two consoles, built once per run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated

import typer
from rich.console import Console

from ingle.core.settings import Settings

from .engine_access import EngineChoice


@dataclass
class GlobalOptions:
    """Global flags the entry point needs after a command has failed (it has no typer context then)."""

    verbose: bool = False


@dataclass
class CliContext:
    """Settings and consoles, resolved by the app callback and handed to commands via `ctx.obj`."""

    settings: Settings
    verbose: bool
    out: Console
    """Results (tables, answers, names) go to stdout, so they can be piped."""
    err: Console
    """Progress, spinners, hints and errors go to stderr."""
    engine_choice: EngineChoice = field(default_factory=EngineChoice)
    """Daemon or in-process, from --host and --embedded (see engine_access.py)."""

    def engine_choice_with(self, embedded: bool) -> EngineChoice:
        """The global choice, made in-process when a command's own --embedded (EmbeddedOption) asks for it."""
        return replace(self.engine_choice, embedded=True) if embedded else self.engine_choice


EmbeddedOption = Annotated[
    bool, typer.Option("--embedded", help="Run the model in this process instead of through the daemon.")
]
"""`--embedded` for a command that runs on its own (`ingle lsp`, `ingle bot`), also accepted after its name."""


# Width of results written to a pipe or file: rich would assume 80 columns and fold a table's
# names, which scripts then cannot grep; a table never grows wider than its content.
PIPED_WIDTH = 500


def stdout_console() -> Console:
    """A console for results; markup off because model names and texts may contain brackets."""
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    return console


def stderr_console() -> Console:
    """A console for progress and messages; soft wrap keeps each message on one line."""
    return Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def cli_context(ctx: typer.Context) -> CliContext:
    """The CliContext the app callback stored on the typer context."""
    context = ctx.find_object(CliContext)
    if context is None:
        # Only reachable if a command is invoked without the app callback (a programming error).
        raise RuntimeError("the ingle app callback did not run before this command")
    return context
