"""`ingle kb`: knowledge bases that chats and bots answer from, with sources.

Files and URLs are read by this process, with the rights of the user at the
shell; the knowledge base files live under the home. Embeddings come from the
daemon when one runs, else from an in-process engine (the global --host and
--embedded flags decide, as for every command).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from .context import CliContext, cli_context
from .engine_access import open_engine
from .formatting import human_size
from .models import _plain_table

if TYPE_CHECKING:
    from ingle.adapters.engine_api import EngineApi
    from ingle.core.knowledge import IndexProgress, IndexReport, KnowledgeLibrary, SearchResult
    from ingle.core.knowledge.retrieval import SearchMode

KB_HELP = """Knowledge bases: documents that chats and bots answer from, citing their sources.

Examples:
  ingle pull embed                      the embedding model (without it, search is BM25 only)
  ingle kb create handbook
  ingle kb add handbook ~/docs/handbook https://example.com/policy.html
  ingle kb search handbook "how do I book leave?"
  ingle kb sync handbook                re-read the sources: changed files re-indexed, removed ones dropped
"""

ADD_HELP = """Add files, folders (recursively) or URLs to a knowledge base and index them.

Markdown, reStructuredText, HTML, PDF, plain text and source code are read.
A file that cannot be read is named in one line and the rest goes on; the
command then exits with status 1. Running it again only indexes what changed.

Example:
  ingle kb add handbook ~/docs/handbook ./faq.md https://example.com/policy.html
"""

EXIT_PARTLY_FAILED = 1

PREVIEW_LINES = 4


def register(app: typer.Typer) -> None:
    """Add `ingle kb` and its subcommands to the app."""
    kb = typer.Typer(help=KB_HELP, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
    kb.command("create")(create)
    kb.command("add", help=ADD_HELP)(add)
    kb.command("sync")(sync)
    kb.command("list")(list_bases)
    kb.command("show")(show)
    kb.command("search")(search)
    kb.command("rm")(remove)
    app.add_typer(kb, name="kb")


NameArgument = Annotated[str, typer.Argument(help="The knowledge base, e.g. 'handbook'.")]


def create(ctx: typer.Context, name: NameArgument) -> None:
    """Create an empty knowledge base.

    Example: ingle kb create handbook
    """
    context = cli_context(ctx)
    _library(context).create(name)
    context.out.print(name)


def add(
    ctx: typer.Context,
    name: NameArgument,
    locations: Annotated[list[str], typer.Argument(help="Files, folders or http(s) URLs.", metavar="PATH|URL...")],
) -> None:
    """Add files, folders or URLs to a knowledge base and index them."""
    context = cli_context(ctx)
    _library(context).open(name).close()  # a missing knowledge base fails before any reading
    report = asyncio.run(_index(context, name, locations))
    _print_report(context, name, report)


def sync(ctx: typer.Context, name: NameArgument) -> None:
    """Re-read a knowledge base's sources: changed files re-indexed, removed files dropped.

    Example: ingle kb sync handbook
    """
    context = cli_context(ctx)
    _library(context).open(name).close()
    report = asyncio.run(_index(context, name, None))
    _print_report(context, name, report)


async def _index(context: CliContext, name: str, locations: list[str] | None) -> IndexReport:
    async with open_engine(context.settings, context.engine_choice) as engine:
        library = _library(context, engine)
        with _progress_bar(context) as progress:
            if locations is None:
                return await library.sync(name, progress)
            return await library.add(name, locations, progress)


class _IndexBar:
    """A rich progress bar over the files being indexed (shown only on a terminal)."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def __call__(self, event: IndexProgress) -> None:
        if self.task is None:
            self.task = self.bar.add_task("indexing", total=event.files_total, file="")
        self.bar.update(self.task, completed=event.files_done, total=event.files_total, file=event.location[-60:])


def _progress_bar(context: CliContext) -> AbstractContextManager[_IndexBar | None]:
    if not context.err.is_terminal:
        return nullcontext()
    bar = Progress(
        TextColumn("indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[file]}"),
        console=context.err,
        transient=True,
    )

    class _Running(AbstractContextManager[_IndexBar]):
        def __enter__(self) -> _IndexBar:
            bar.start()
            return _IndexBar(bar)

        def __exit__(self, *exc: object) -> None:
            bar.stop()

    return _Running()


def _print_report(context: CliContext, name: str, report: IndexReport) -> None:
    for failure in report.failures:
        context.err.print(Text(f"Skipped: {failure}", style="yellow"))
    for note in dict.fromkeys(report.notes):
        context.err.print(Text(f"Note: {note}", style="yellow"))
    parts = [f"{_count(report.indexed, 'document')} indexed ({_count(report.chunks, 'chunk')})"]
    if report.unchanged:
        parts.append(f"{report.unchanged} unchanged")
    if report.removed:
        parts.append(f"{report.removed} removed")
    if report.failures:
        parts.append(f"{len(report.failures)} skipped")
    context.out.print(f"{name}: {', '.join(parts)}.")
    if report.failures:
        raise typer.Exit(EXIT_PARTLY_FAILED)


def list_bases(ctx: typer.Context) -> None:
    """List the knowledge bases.

    Example: ingle kb list
    """
    context = cli_context(ctx)
    library = _library(context)
    table = _plain_table("NAME", "DOCUMENTS", "CHUNKS", "VECTORS", "SIZE")
    names = library.names()
    for name in names:
        stats = library.info(name).stats
        table.add_row(name, str(stats.documents), str(stats.chunks), str(stats.vectors), human_size(stats.size_bytes))
    context.out.print(table)
    if not names:
        context.err.print("No knowledge bases yet. Make one with: ingle kb create NAME")


def show(ctx: typer.Context, name: NameArgument) -> None:
    """Show a knowledge base's size, embedding model and sources.

    Example: ingle kb show handbook
    """
    context = cli_context(ctx)
    info = _library(context).info(name)
    stats = info.stats
    facts = [
        ("documents", str(stats.documents)),
        ("chunks", str(stats.chunks)),
        ("vectors", f"{stats.vectors} ({stats.embedding_model})" if stats.vectors else "none: BM25 search only"),
        ("size", human_size(stats.size_bytes)),
        ("file", str(_library(context).path(name))),
    ]
    width = max(len(key) for key, _ in facts)
    context.out.print(Text(f"  {name}", style="bold"))
    for key, value in facts:
        context.out.print(f"    {key.ljust(width)}    {value}", soft_wrap=True)
    context.out.print()
    # One line per source, whole: a table would fold long paths and URLs.
    context.out.print(Text("  Sources", style="bold"))
    for source in info.sources:
        plural = "s" if source.documents != 1 else ""
        context.out.print(
            f"    {source.location}  ({source.documents} document{plural}, added {source.added_at})", soft_wrap=True
        )


def search(
    ctx: typer.Context,
    name: NameArgument,
    question: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, max=50, help="How many chunks to show.")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid (BM25 and vectors fused by rank), bm25 or vector.")] = "hybrid",
) -> None:
    """Show the chunks of a knowledge base that best answer a question, with where they come from.

    Example: ingle kb search handbook "how do I book leave?"
    """
    context = cli_context(ctx)
    if mode not in ("hybrid", "bm25", "vector"):
        raise typer.BadParameter("use hybrid, bm25 or vector.", param_hint="--mode")
    result = asyncio.run(_search(context, name, question, limit, mode))  # type: ignore[arg-type]
    for note in result.notes:
        context.err.print(Text(f"Note: {note}", style="yellow"))
    if not result.hits:
        context.out.print(f"Nothing in '{name}' matches that question.")
        return
    from ingle.core.knowledge.grounding import source_label

    for number, hit in enumerate(result.hits, start=1):
        context.out.print(Text(f"[{number}] {source_label(hit)}", style="bold"), soft_wrap=True)
        lines = hit.stored.chunk.text.strip().splitlines()
        for line in lines[:PREVIEW_LINES]:
            context.out.print(f"    {line}", soft_wrap=True)
        if len(lines) > PREVIEW_LINES:
            context.out.print("    …")
        context.out.print()


async def _search(context: CliContext, name: str, question: str, limit: int, mode: SearchMode) -> SearchResult:
    if mode == "bm25":
        return await _library(context).search([name], question, limit, mode)
    async with open_engine(context.settings, context.engine_choice) as engine:
        return await _library(context, engine).search([name], question, limit, mode)


def remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="The knowledge bases to delete.", metavar="NAME...")],
) -> None:
    """Delete knowledge bases (the index only: the files they were built from are untouched).

    Example: ingle kb rm old-handbook
    """
    context = cli_context(ctx)
    library = _library(context)
    for name in names:
        library.open(name).close()
    for name in names:
        library.remove(name)
        context.out.print(f"deleted '{name}'")


def _library(context: CliContext, engine: EngineApi | None = None) -> KnowledgeLibrary:
    # Imported here: the knowledge base loads SQLite extensions, numpy and the document readers,
    # which the other commands never need.
    from ingle.core.knowledge import KnowledgeLibrary

    return KnowledgeLibrary(context.settings, engine)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
