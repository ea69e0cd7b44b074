"""`ingle kb`: knowledge bases that chats and bots answer from, with sources.

Files and URLs are read by this process, with the rights of the user at the
shell. Where the knowledge bases are kept follows the rule of every command
(kb_access.py): the daemon's when one answers (or --host names it), else the
files under this home, written here with an in-process engine (--embedded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from ingle.core.errors import IngleError

from .context import CliContext, cli_context
from .formatting import human_size, shown
from .models import _plain_table

if TYPE_CHECKING:
    from ingle.core.knowledge import IndexProgress, IndexReport, KnowledgeBaseInfo

    from .kb_access import Knowledge

T = TypeVar("T")

KB_HELP = """Knowledge bases: documents that chats and bots answer from, citing their sources.

Examples:
  ingle pull embed                      the embedding model (without it, search is BM25 only)
  ingle kb create handbook
  ingle kb add handbook ~/docs/handbook https://example.com/policy.html
  ingle kb search handbook "how do I book leave?"
  ingle kb sync handbook                re-read the sources: changed files re-indexed, removed ones dropped

While `ingle serve` runs (or --host names one), these go through
the daemon and the knowledge bases live in its home; files and URLs
are still read by this command, with your rights. With no daemon,
or with --embedded, the files under this home are written here.
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
    _run(context, False, lambda knowledge: knowledge.create(name))
    context.out.print(name)


def add(
    ctx: typer.Context,
    name: NameArgument,
    locations: Annotated[list[str], typer.Argument(help="Files, folders or http(s) URLs.", metavar="PATH|URL...")],
) -> None:
    """Add files, folders or URLs to a knowledge base and index them."""
    context = cli_context(ctx)
    with _progress_bar(context) as progress:
        report = _run(context, True, lambda knowledge: _add(knowledge, name, locations, progress))
    _print_report(context, name, report)


async def _add(knowledge: Knowledge, name: str, locations: list[str], progress: _IndexBar | None) -> IndexReport:
    await knowledge.info(name)  # a missing knowledge base fails before any reading
    return await knowledge.add(name, locations, progress)


def sync(ctx: typer.Context, name: NameArgument) -> None:
    """Re-read a knowledge base's sources: changed files re-indexed, removed files dropped.

    Example: ingle kb sync handbook
    """
    context = cli_context(ctx)
    with _progress_bar(context) as progress:
        report = _run(context, True, lambda knowledge: knowledge.sync(name, progress))
    _print_report(context, name, report)


def _run(context: CliContext, embeds: bool, work: Callable[[Knowledge], Awaitable[T]]) -> T:
    """Do `work` on the knowledge bases this command reaches (kb_access.py: the daemon's, else this home's)."""
    # Imported here: the knowledge base loads SQLite extensions, numpy, the document readers and
    # the HTTP client, which the other commands never need.
    from .kb_access import open_knowledge

    async def inside() -> T:
        async with open_knowledge(context, embeds) as knowledge:
            return await work(knowledge)

    return asyncio.run(inside())


class _IndexBar:
    """A rich progress bar over the files being indexed (shown only on a terminal)."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def __call__(self, event: IndexProgress) -> None:
        if self.task is None:
            self.task = self.bar.add_task(event.stage, total=event.files_total, file="")
        self.bar.update(
            self.task,
            description=event.stage,
            completed=event.files_done,
            total=event.files_total,
            file=event.location[-60:],
        )


def _progress_bar(context: CliContext) -> AbstractContextManager[_IndexBar | None]:
    if not context.err.is_terminal:
        return nullcontext()
    bar = Progress(
        TextColumn("{task.description}"),
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
        context.err.print(Text(f"Skipped: {shown(failure)}", style="yellow"))
    # Notes go with the result on stdout: the command succeeded, and stderr is for what went wrong.
    for note in dict.fromkeys(report.notes):
        context.out.print(Text(f"Note: {shown(note)}", style="yellow"))
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
    infos = _run(context, False, lambda knowledge: knowledge.infos())
    table = _plain_table("NAME", "DOCUMENTS", "CHUNKS", "VECTORS", "SIZE")
    for info in infos:
        stats = info.stats
        if info.problem is not None:
            table.add_row(info.name, "damaged", "-", "-", human_size(stats.size_bytes))
            continue
        table.add_row(
            info.name, str(stats.documents), str(stats.chunks), str(stats.vectors), human_size(stats.size_bytes)
        )
    context.out.print(table)
    if not infos:
        context.out.print("No knowledge bases yet. Make one with: ingle kb create NAME")
    for info in infos:
        if info.problem is not None:
            context.err.print(Text(f"{info.name}: {shown(info.problem)}", style="yellow"))


def show(ctx: typer.Context, name: NameArgument) -> None:
    """Show a knowledge base's size, embedding model and sources.

    Example: ingle kb show handbook
    """
    context = cli_context(ctx)
    info, where = _run(context, False, lambda knowledge: _info_and_place(knowledge, name))
    if info.problem is not None:
        raise IngleError(info.problem)
    stats = info.stats
    facts = [
        ("documents", str(stats.documents)),
        ("chunks", str(stats.chunks)),
        ("vectors", f"{stats.vectors} ({stats.embedding_model})" if stats.vectors else "none: BM25 search only"),
        ("size", human_size(stats.size_bytes)),
        ("kept in", where),
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
            Text(f"    {shown(source.location)}  ({source.documents} document{plural}, added {source.added_at})"),
            soft_wrap=True,
        )


async def _info_and_place(knowledge: Knowledge, name: str) -> tuple[KnowledgeBaseInfo, str]:
    return await knowledge.info(name), knowledge.where


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
    result = _run(context, mode != "bm25", lambda knowledge: knowledge.search(name, question, limit, mode))  # type: ignore[arg-type]
    for note in result.notes:
        context.out.print(Text(f"Note: {note}", style="yellow"))
    if not result.hits:
        context.out.print(f"Nothing in '{name}' matches that question.")
        return
    from ingle.core.knowledge.grounding import source_label

    for number, hit in enumerate(result.hits, start=1):
        context.out.print(Text(f"[{number}] {shown(source_label(hit))}", style="bold"), soft_wrap=True)
        lines = hit.stored.chunk.text.strip().splitlines()
        for line in lines[:PREVIEW_LINES]:
            context.out.print(Text(f"    {shown(line)}"), soft_wrap=True)
        if len(lines) > PREVIEW_LINES:
            context.out.print("    …")
        context.out.print()


def remove(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="The knowledge bases to delete.", metavar="NAME...")],
) -> None:
    """Delete knowledge bases (the index only: the files they were built from are untouched).

    Example: ingle kb rm old-handbook
    """
    context = cli_context(ctx)
    _run(context, False, lambda knowledge: _remove(knowledge, names))
    for name in names:
        context.out.print(f"deleted '{name}'")


async def _remove(knowledge: Knowledge, names: list[str]) -> None:
    for name in names:
        await knowledge.info(name)  # none is deleted if one is missing
    for name in names:
        await knowledge.remove(name)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
