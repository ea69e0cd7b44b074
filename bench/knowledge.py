"""Knowledge-base benchmark: indexing speed, query latency, and retrieval quality of hybrid vs BM25 vs vectors.

The corpus is real and offline: the docstrings (200 characters or more, the
first DOC_CHARS of each) of public classes and functions in packages of this
virtualenv, one Markdown document each. The questions in QUESTIONS were
written by hand from reading those docstrings, each with the one document
that answers it; no ingle code produced them.

Prints, in one run:
1. indexing docs/s and chunks/s with embeddings, and without them (BM25 only: the ceiling of the rest of
   the pipeline, reading, chunking and SQLite);
2. query latency p50/p95 for each mode;
3. recall@5 and MRR for hybrid, BM25 alone and vectors alone;
4. on the default model, how grounded answers cite: the citation marks the model wrote and those ingle
   added by attribution (core/knowledge/attribution.py), each counted right only when the number it
   cites is an excerpt from the answering document; and, as the ceiling, the share of questions whose
   retrieved excerpts include that document;
5. the chat model's streaming speed with the embedding model loaded beside it (as it stays while
   knowledge-base questions come in), against the same answers after the embedding model is unloaded.

    .venv/bin/python bench/knowledge.py [--answers 20]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from vs_llama_server import CHAT_TOKENS, STORY, engine_rate

from ingle.core.engine import Engine
from ingle.core.errors import ModelNotFound
from ingle.core.generation import ChatMessage, GenerationRequest, SamplingOptions
from ingle.core.knowledge import KnowledgeLibrary
from ingle.core.knowledge.attribution import Citation, CitationMarker
from ingle.core.knowledge.grounding import RETRIEVED_CHUNKS, cited_sources, grounded_messages
from ingle.core.settings import load_settings

PACKAGES = [
    "httpx", "aiohttp", "pydantic", "rich", "click", "jinja2", "apscheduler", "markdown_it", "pypdf", "packaging",
    "psutil", "prometheus_client",
]  # fmt: skip
DOC_CHARS = 400
CHAT_MODEL = "qwen2.5-coder:0.5b"

QUESTIONS: list[tuple[str, str]] = [
    ("How do I set a 5 second connect timeout but no other timeouts?", "httpx._config.Timeout"),
    ("Limit how many connections the HTTP client pool keeps open at once", "httpx._config.Limits"),
    ("Send requests straight to an ASGI application without a network", "httpx._transports.asgi.ASGITransport"),
    ("Call a WSGI app directly from the HTTP client", "httpx._transports.wsgi.WSGITransport"),
    ("Write my own authentication scheme by overriding the flow", "httpx._auth.Auth"),
    ("Which exception catches both failed requests and error status codes?", "httpx._exceptions.HTTPError"),
    ("How is the text encoding of a response body chosen?", "httpx._models.Response.encoding"),
    ("Stream a response body instead of reading it all into memory", "httpx._api.stream"),
    ("Percent-encode a string but keep existing %xx escapes", "httpx._urlparse.quote"),
    ("Run scheduled jobs on the asyncio event loop", "apscheduler.schedulers.asyncio.AsyncIOScheduler"),
    ("Keep the scheduled jobs in Redis", "apscheduler.jobstores.redis.RedisJobStore"),
    ("Create a trigger from a crontab line like '0 9 * * 1-5'", "apscheduler.triggers.cron.CronTrigger.from_crontab"),
    ("Run a job one single time at a given date", "apscheduler.triggers.date.DateTrigger"),
    ("Stop a job from running until I resume it", "apscheduler.schedulers.base.BaseScheduler.pause_job"),
    ("Save the stored jobs to a JSON file", "apscheduler.schedulers.base.BaseScheduler.export_jobs"),
    ("Run jobs in a pool of separate worker processes", "apscheduler.executors.pool.ProcessPoolExecutor"),
    ("Add a timedelta to a datetime correctly across daylight saving time", "apscheduler.util.datetime_utc_add"),
    ("Normalise a licence expression such as 'mit or apache-2.0'", "packaging.licenses.canonicalize_license_expression"),  # noqa: E501
    ("Parse a requirement string into name, extras, specifier and URL", "packaging.requirements.Requirement"),
    ("What environment values are used to evaluate dependency markers?", "packaging.markers.default_environment"),
    ("Read a distribution's METADATA stored as email headers", "packaging.metadata.parse_email"),
    ("Turn a dependency group from pyproject.toml into requirements", "packaging.dependency_groups.resolve_dependency_groups"),  # noqa: E501
    ("Pretty print JSON in the terminal", "rich.print_json"),
    ("Show a progress bar while looping over a list", "rich.progress.track"),
    ("A progress column that shows how much time is left", "rich.progress.TimeRemainingColumn"),
    ("Draw a horizontal line with a title in the middle", "rich.console.Console.rule"),
    ("Save what was printed to the console as an SVG image", "rich.console.Console.export_svg"),
    ("Highlight source code with colours in the terminal", "rich.syntax.Syntax"),
    ("Make every uncaught traceback print with highlighting", "rich.traceback.install"),
    ("Display a tree with guide lines between the nodes", "rich.tree.Tree"),
    ("Keep a display on screen that refreshes itself automatically", "rich.live.Live"),
    ("Replace :smiley: style codes with emoji characters", "rich.emoji.Emoji.replace"),
    ("Show a byte count as a human-readable size like 4.1 MB in a template", "jinja2.filters.do_filesizeformat"),
    ("Shorten a long string to a maximum length in a template", "jinja2.filters.do_truncate"),
    ("Output a value as JSON that is safe to put in HTML, from a template", "jinja2.filters.do_tojson"),
    ("Load templates from a dictionary of names to sources, for unit tests", "jinja2.loaders.DictLoader"),
    ("Try several template loaders in turn until one finds the template", "jinja2.loaders.ChoiceLoader"),
    ("Decide whether a template may read an attribute in the sandbox", "jinja2.sandbox.SandboxedEnvironment.is_safe_attribute"),  # noqa: E501
    ("Turn web addresses in text into clickable links", "jinja2.utils.urlize"),
    ("Render a template with async/await", "jinja2.environment.Template.render_async"),
    ("Overlay the content of one PDF page onto another", "pypdf._page.PageObject.merge_page"),
    ("Add an empty PDF page of a given width and height", "pypdf._page.PageObject.create_blank_page"),
    ("Build the Authorization header value for HTTP basic auth", "aiohttp.helpers.encode_basic_auth"),
    ("Middleware that adds or removes the trailing slash of request paths", "aiohttp.web_middlewares.normalize_path_middleware"),  # noqa: E501
    ("Connect to a server through a unix domain socket", "aiohttp.connector.UnixConnector"),
    ("Write access log lines in a configurable format", "aiohttp.web_log.AccessLogger"),
    ("Split a MIME type such as 'text/html; charset=utf-8' into its parts", "aiohttp.helpers.parse_mimetype"),
]  # fmt: skip


def _documented(node: ast.AST, prefix: str) -> list[tuple[str, str]]:
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}.{child.name}"
            doc = ast.get_docstring(child)
            if not child.name.startswith("_") and doc and len(doc) >= 200:
                found.append((name, doc))
            if isinstance(child, ast.ClassDef):
                found.extend(_documented(child, name))
    return found


def build_corpus(folder: Path) -> int:
    """Write one Markdown file per documented public class or function; the number written."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    written: set[str] = set()
    for package in PACKAGES:
        for path in sorted((site / package).rglob("*.py")):
            if "tests" in path.parts:
                continue
            module = ".".join(path.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError):
                continue
            for name, doc in _documented(tree, module):
                if name not in written:
                    written.add(name)
                    (folder / f"{name}.md").write_text(f"# {name}\n\n{doc[:DOC_CHARS]}\n", encoding="utf-8")
    missing = [target for _, target in QUESTIONS if target not in written]
    if missing:
        raise SystemExit(f"the corpus lacks the documents some questions expect: {missing}")
    return len(written)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def index(library: KnowledgeLibrary, name: str, corpus: Path) -> tuple[float, int, int]:
    library.create(name)
    started = time.perf_counter()
    report = await library.add(name, [str(corpus)])
    return time.perf_counter() - started, report.indexed, report.chunks


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=20, help="questions to answer with the default model")
    args = parser.parse_args()
    if not 1 <= args.answers <= len(QUESTIONS):
        parser.error(f"--answers must be between 1 and {len(QUESTIONS)}, the questions there are.")
    console = Console()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        corpus = root / "corpus"
        corpus.mkdir()
        documents = build_corpus(corpus)
        settings = load_settings()
        async with Engine(settings) as engine:
            # Both libraries share the engine's models but get their own knowledge folder.
            hybrid_lib = KnowledgeLibrary(settings, engine)
            hybrid_lib.folder = root / "kb"
            bm25_lib = KnowledgeLibrary(settings)
            bm25_lib.folder = root / "kb"
            await engine.embed(settings.embedding_model, ["warm up"])
            bm25_seconds, bm25_docs, bm25_chunks = await index(bm25_lib, "bm25only", corpus)
            seconds, docs, chunks = await index(hybrid_lib, "corpus", corpus)

            table = Table(title=f"Indexing {documents} documents (docstrings of {len(PACKAGES)} packages)")
            for column in ("pipeline", "docs/s", "chunks/s", "seconds"):
                table.add_column(column)
            table.add_row("ingle, BM25 + vectors", f"{docs / seconds:.1f}", f"{chunks / seconds:.1f}", f"{seconds:.1f}")
            table.add_row(
                "ceiling: BM25 only (no embeddings)",
                f"{bm25_docs / bm25_seconds:.1f}",
                f"{bm25_chunks / bm25_seconds:.1f}",
                f"{bm25_seconds:.1f}",
            )
            console.print(table)

            quality = Table(title=f"Retrieval over {len(QUESTIONS)} hand-written questions")
            for column in ("mode", "recall@5", "MRR", "p50 ms", "p95 ms"):
                quality.add_column(column)
            for mode in ("hybrid", "bm25", "vector"):
                hits_at_5, reciprocal, latencies = 0, 0.0, []
                for question, target in QUESTIONS:
                    started = time.perf_counter()
                    result = await hybrid_lib.search(["corpus"], question, 10, mode)
                    latencies.append((time.perf_counter() - started) * 1000)
                    ranked = [Path(hit.stored.location).stem for hit in result.hits]
                    if target in ranked[:5]:
                        hits_at_5 += 1
                    if target in ranked:
                        reciprocal += 1 / (ranked.index(target) + 1)
                quality.add_row(
                    mode,
                    f"{hits_at_5 / len(QUESTIONS):.2f}",
                    f"{reciprocal / len(QUESTIONS):.3f}",
                    f"{statistics.median(latencies):.0f}",
                    f"{percentile(latencies, 0.95):.0f}",
                )
            console.print(quality)

            retrieved_right = 0
            citations: list[tuple[list[Citation], set[int]]] = []
            asked = QUESTIONS[: args.answers]
            for question, target in asked:
                result = await hybrid_lib.search(["corpus"], question, RETRIEVED_CHUNKS)
                sources = cited_sources(result.hits)
                holders = {n for n, hit in enumerate(result.hits, 1) if Path(hit.stored.location).stem == target}
                retrieved_right += bool(holders)
                request = GenerationRequest(
                    model=CHAT_MODEL,
                    messages=grounded_messages([ChatMessage(role="user", content=question)], sources),
                    options=SamplingOptions(temperature=0.0, max_tokens=120),
                )
                # The stream passes through the marker as GroundedBackend passes it.
                marker = CitationMarker([source.text for source in sources])
                async for chunk in engine.generate(request):
                    marker.feed(chunk.text)
                marker.finish()
                citations.append((marker.citations, holders))
            console.print(citation_table(citations, len(asked)))
            uncited = sum(not answer_citations for answer_citations, _ in citations)
            console.print(
                f"Ceiling: the answering document's chunk was among the {RETRIEVED_CHUNKS} excerpts for "
                f"{retrieved_right}/{len(asked)} questions ({retrieved_right / len(asked):.0%}). "
                f"{uncited} answers cite nothing, so their Sources list every excerpt given."
            )
            console.print(await speed_beside_embeddings(engine, settings.embedding_model))


async def speed_beside_embeddings(engine: Engine, embedding_model: str) -> Table:
    """The chat model's speed with the embedding model loaded, then with it unloaded (same stories)."""
    topics = ["a lighthouse keeper", "a robot gardener", "the last train of the night"]
    beside = [(await engine_rate(engine, STORY.format(topic=topic), CHAT_TOKENS))[0] for topic in topics]
    await engine.unload(embedding_model)
    alone = [(await engine_rate(engine, STORY.format(topic=topic), CHAT_TOKENS))[0] for topic in topics]
    table = Table(title=f"Chat speed beside the embedding model ({len(topics)} greedy 128-token answers, median)")
    for column in ("chat model", "tok/s", "ratio"):
        table.add_column(column)
    table.add_row("with the embedding model loaded", f"{statistics.median(beside):.1f}", "")
    table.add_row("reference: alone", f"{statistics.median(alone):.1f}", "")
    table.add_row("ratio (target 1.00x)", "", f"{statistics.median(beside) / statistics.median(alone):.2f}x")
    return table


def citation_table(answers: list[tuple[list[Citation], set[int]]], asked: int) -> Table:
    """How the answers cite: a mark is right only if the excerpt it names is from the answering document."""
    table = Table(title=f"Citation marks in {asked} grounded answers on {CHAT_MODEL}")
    for column in ("marks", "answers with marks", "answers citing the answering chunk", "of those, citing only it",
                   "marks right"):  # fmt: skip
        table.add_column(column)
    for kind, keep in (
        ("written by the model", lambda c: not c.added),
        ("added by ingle (attribution)", lambda c: c.added),
        ("all, as the answer shows them", lambda c: True),
    ):
        with_marks = citing = only_right = marks = right = 0
        for citations, holders in answers:
            numbers = [c.number for c in citations if keep(c)]
            marks += len(numbers)
            right += sum(n in holders for n in numbers)
            with_marks += bool(numbers)
            if set(numbers) & holders:
                citing += 1
                only_right += set(numbers) <= holders
        table.add_row(
            kind,
            f"{with_marks}/{asked}",
            f"{citing}/{asked} ({citing / asked:.0%})",
            f"{only_right}/{citing}",
            f"{right}/{marks}" + (f" ({right / marks:.0%})" if marks else ""),
        )
    return table


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except ModelNotFound as error:
        sys.exit(
            f"{error.message} This benchmark needs the default model and the embedding model in one home: "
            "`ingle pull default` and `ingle pull embed` (or set INGLE_HOME to a home that has both)."
        )
