"""The `ingle` app: global options, command registration, and the console-script entry point."""

from __future__ import annotations

import sys
import traceback
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.text import Text

from ingle.adapters.logging_setup import configure_logging
from ingle.core.errors import IngleError, InvalidRequest
from ingle.core.settings import Settings, load_settings, settings_problem

from . import chat, doctor, kb, models, serve
from .context import CliContext, GlobalOptions, stderr_console, stdout_console
from .engine_access import EngineChoice, port_daemon_may_serve

APP_HELP = """Run open LLMs on your own hardware.

Models live in a local store (--home, INGLE_HOME, default ~/.ingle). Start with:
  ingle run          chat with the default model (pulled on first use)
  ingle pull default
  ingle list
  ingle serve        keep models loaded and serve the HTTP API

While `ingle serve` runs, the other commands go through it (--embedded runs them in-process);
with a --home other than the configured one, only through a daemon on that home's socket.

Run 'ingle COMMAND --help' for a command's options and examples.
"""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def create_app(options: GlobalOptions) -> typer.Typer:
    """Build the typer app; the callback records the global flags in OPTIONS for the entry point."""
    app = typer.Typer(
        name="ingle",
        help=APP_HELP,
        no_args_is_help=True,
        add_completion=False,
        # The entry point reports errors itself, in one sentence.
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def configure(
        ctx: typer.Context,
        home: Annotated[
            # A string, not a Path: Path("") would turn an empty --home into the current folder.
            str | None,
            typer.Option(
                help="Where models and state live, e.g. /srv/ingle. Default: INGLE_HOME, the config file, or ~/.ingle.",
            ),
        ] = None,
        verbose: Annotated[
            int,
            typer.Option(
                "--verbose",
                "-v",
                count=True,
                help="Log what the engine does and show tracebacks of unexpected errors; -vv adds llama.cpp's own log.",
            ),
        ] = 0,
        daemon: Annotated[
            str | None,
            typer.Option(
                "--host",
                metavar="URL",
                help="Use the ingle daemon at this URL or host:port, e.g. http://gpu-box:11435. "
                "Default: the local daemon if one runs, else run in-process.",
            ),
        ] = None,
        embedded: Annotated[
            bool,
            typer.Option(
                "--embedded",
                envvar="INGLE_EMBEDDED",
                help="Run the engine in this process even if a daemon is running.",
            ),
        ] = False,
        show_version: Annotated[
            bool,
            typer.Option("--version", is_eager=True, callback=_print_version, help="Print ingle's version and exit."),
        ] = False,
    ) -> None:
        """Read the global options and build the settings once for the command."""
        options.verbose = verbose > 0
        err = stderr_console()
        # Rich lines in a terminal; key=value journal lines under systemd (adapters/logging_setup.py).
        configure_logging(verbose, err)
        if ctx.invoked_subcommand == doctor.COMMAND:
            # `ingle doctor` reports a broken config as one of its checks instead of stopping here.
            ctx.obj = doctor.DoctorContext(home=home, out=stdout_console())
            return
        settings = _load_settings(home)
        ctx.obj = CliContext(
            settings=settings,
            verbose=verbose > 0,
            out=stdout_console(),
            err=err,
            engine_choice=EngineChoice(
                embedded=embedded, daemon_url=daemon, daemon_by_port=port_daemon_may_serve(settings, home)
            ),
        )

    models.register(app)
    chat.register(app)
    serve.register(app)
    doctor.register(app)
    kb.register(app)
    register_plugin_commands(app)
    return app


def register_plugin_commands(app: typer.Typer) -> None:
    """Add the commands of the folders built on adapters (`ingle bot`, …) through their entry points.

    lsp/ and bots/ depend on adapters, never the reverse (DESIGN.md), so the CLI
    finds their commands at run time instead of importing them.
    """
    for entry in sorted(entry_points(group="ingle.commands"), key=lambda entry: entry.name):
        entry.load()(app)


def _load_settings(home: str | None) -> Settings:
    """Settings from flags, INGLE_* and the config file; a bad value is a usage error in one sentence."""
    try:
        return load_settings(home=home)
    except (ValidationError, SettingsError, OSError, ValueError) as error:
        problem = settings_problem(error, {"home": home})
        if problem is None:
            raise
        report(problem[0].upper() + problem[1:])
        raise typer.Exit(EXIT_USAGE) from None


def _print_version(value: bool) -> None:
    """Option callback of --version: it runs while parsing, before any command is required."""
    if not value:
        return
    try:
        typer.echo(f"ingle {version('ingle')}")
    except PackageNotFoundError:
        typer.echo("ingle (not installed as a distribution)")
    raise typer.Exit()


def report(message: str) -> None:
    """Print one red `Error: ...` line to stderr."""
    stderr_console().print(Text(f"Error: {message}", style="red"))


def run() -> None:
    """Entry point of the `ingle` console script: run a command, map errors to exit codes."""
    options = GlobalOptions()
    app = create_app(options)
    try:
        app(prog_name="ingle")
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except InvalidRequest as error:
        # A bad option or setting (including an unsafe bind, see adapters/binding.py): a usage error.
        report(error.message)
        sys.exit(EXIT_USAGE)
    except IngleError as error:
        report(error.message)
        sys.exit(EXIT_ERROR)
    except Exception as error:
        if options.verbose:
            traceback.print_exc()
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
        hint = "" if options.verbose else "; run with --verbose for details"
        report(f"ingle hit an unexpected error: {type(error).__name__}: {detail}{hint}")
        sys.exit(EXIT_ERROR)
